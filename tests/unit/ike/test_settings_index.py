"""IkeSettings' look-ups by dict (peer, children_for, child) give what a walk of the
configuration in order gave: the first match, entries in configuration order, and
nothing for what is not configured."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from support.ike_pair import A, B, policy, settings_pair

C = ipaddress.ip_address("127.0.0.3")


def test_lookups_match_a_walk_in_configuration_order():
    base, _ = settings_pair(500)
    first = policy(A, (B, C), "10.1.0.0/16", "10.2.0.0/16", seq=10)
    second = policy(A, (C, C), "10.1.0.0/16", "10.3.0.0/16", seq=20)
    shadow = policy(A, (B,), "10.1.0.0/16", "10.4.0.0/16", seq=10)  # same key: never found
    again = replace(base.peers[0], port=4242)  # a second peer at B: never found
    s = replace(base, peers=(base.peers[0], again), children=(first, second, shadow))
    assert s.peer(B) is base.peers[0] and s.peer(C) is None
    assert s.children_for(B) == (first, shadow)
    assert s.children_for(C) == (first, second)  # each once, though `second` names C twice
    assert s.children_for(ipaddress.ip_address("127.0.0.9")) == ()
    assert s.child(("vpn", 10)) is first and s.child(["vpn", 20]) is second
    assert s.child(("vpn", 30)) is None
    changed = replace(s, children=(second,))  # a new generation: its own indexes
    assert changed.child(("vpn", 10)) is None and changed.children_for(B) == ()
