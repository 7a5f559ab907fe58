"""peer_moved: the data plane reports a peer whose NAT mapping changed, only once the packet
is authenticated and new (RFC 7296 2.23), at most once per SA and second, and
``set_remote`` moves where an outbound SA sends and what an inbound SA's source check
expects. The compiled data plane, packets through Dataplane.encap/decap.
"""

from __future__ import annotations

import ipaddress
import os
import struct

import pytest
from support.packets import ipv4, natted, udp

from espd.dataplane import Dataplane, DataplaneError, DropError
from espd.dataplane.testing import set_clock

A, B = "192.0.2.1", "198.51.100.2"  # A is behind the NAT; B follows it
SECOND = 1_000_000_000


def inner(n: int) -> bytes:
    return ipv4("10.1.0.1", "10.2.0.1", 17, udp(1234, 80, struct.pack("!I", n) + bytes(20)))


def pair(source_check: str = "address", follow: bool = True):
    """A's outbound SA and B's inbound SA (same key), B's outbound SA back to A."""
    key = os.urandom(36)
    a, b = Dataplane(), Dataplane()
    common = dict(transform="esp-gcm 256", encap="udp", sport=4500, dport=4500)
    out_a = a.create_sa(spi=0x5001, direction="out", key=key, local=A, peer=B, **common)
    in_b = b.create_sa(spi=0x5001, direction="in", key=key, local=B, peer=A,
                       source_check=source_check, follow_peer=follow, **common)
    out_b = b.create_sa(spi=0x5002, direction="out", key=os.urandom(36), local=B, peer=A,
                        **common)
    a.publish([out_a], [])
    b.publish([in_b, out_b], [])
    set_clock(b, 10 * SECOND)
    return a, out_a, b, in_b, out_b


def moves(dp: Dataplane) -> list:
    return [e for e in dp.events() if e.kind == "peer_moved"]


def test_an_authenticated_packet_from_a_new_port_is_reported_once_with_its_source() -> None:
    a, out_a, b, in_b, _ = pair()
    assert b.decap(a.encap(out_a, inner(1))) == inner(1)
    assert moves(b) == []  # from the remote it has: nothing to report
    for n in range(2, 6):  # a burst from the new port: one event
        assert b.decap(natted(a.encap(out_a, inner(n)), 31000)) == inner(n)
    events = moves(b)
    assert [(e.spi, e.direction, e.src, e.sport, e.cookie) for e in events] == \
        [(0x5001, "in", A, 31000, 0)]
    assert b.remote(in_b) == (A, 4500)  # reported, not applied: that is the owner's call


def test_the_report_is_rate_limited_per_sa_and_second() -> None:
    a, out_a, b, _, _ = pair()
    b.decap(natted(a.encap(out_a, inner(1)), 31000))
    assert len(moves(b)) == 1
    set_clock(b, 10 * SECOND + SECOND // 2)
    b.decap(natted(a.encap(out_a, inner(2)), 31001))
    assert moves(b) == []  # within the second
    set_clock(b, 11 * SECOND)
    b.decap(natted(a.encap(out_a, inner(3)), 31002))
    assert [e.sport for e in moves(b)] == [31002]


def test_a_forged_packet_from_a_new_port_moves_nothing() -> None:
    a, out_a, b, in_b, _ = pair()
    forged = bytearray(natted(a.encap(out_a, inner(1)), 31000))
    forged[-1] ^= 1  # the ICV
    with pytest.raises(DropError) as err:
        b.decap(bytes(forged))
    assert err.value.reason == "auth_failed"
    assert moves(b) == []
    assert b.remote(in_b) == (A, 4500)


def test_a_replayed_packet_from_a_new_port_moves_nothing() -> None:
    a, out_a, b, _, _ = pair()
    old = a.encap(out_a, inner(1))
    assert b.decap(old) == inner(1)
    with pytest.raises(DropError) as err:
        b.decap(natted(old, 31000))  # authentic, but seen: RFC 7296 2.23 says never
    assert err.value.reason == "replay_dup"
    assert moves(b) == []


def test_without_follow_peer_nothing_is_reported() -> None:
    a, out_a, b, _, _ = pair(follow=False)
    assert b.decap(natted(a.encap(out_a, inner(1)), 31000)) == inner(1)
    assert moves(b) == []


def test_set_remote_moves_the_outbound_destination_and_the_inbound_source_check() -> None:
    a, out_a, b, in_b, out_b = pair(source_check="strict")
    moved = natted(a.encap(out_a, inner(1)), 31000, src="203.0.113.9")
    with pytest.raises(DropError) as err:
        b.decap(moved)
    assert err.value.reason == "wrong_source"  # strict: not yet where it expects the peer
    b.set_remote(in_b, "203.0.113.9", 31000)
    b.set_remote(out_b, "203.0.113.9", 31000)
    assert b.decap(natted(a.encap(out_a, inner(2)), 31000, src="203.0.113.9")) == inner(2)
    assert b.remote(in_b) == b.remote(out_b) == ("203.0.113.9", 31000)
    sent = b.encap(out_b, inner(3))
    assert sent[16:20] == ipaddress.IPv4Address("203.0.113.9").packed
    assert struct.unpack("!HH", sent[20:24]) == (4500, 31000)
    with pytest.raises(DropError) as err:  # and the old source is the wrong one now
        b.decap(a.encap(out_a, inner(4)))
    assert err.value.reason == "wrong_source"


def test_set_remote_refuses_another_family_and_port_zero() -> None:
    _, _, b, in_b, _ = pair()
    with pytest.raises(DataplaneError):
        b.set_remote(in_b, "2001:db8::1", 4500)
    with pytest.raises(DataplaneError):
        b.set_remote(in_b, A, 0)
    assert b.remote(in_b) == (A, 4500)


def test_follow_peer_needs_an_inbound_udp_sa_with_anti_replay() -> None:
    dp = Dataplane()
    common = dict(transform="esp-gcm 256", key=os.urandom(36), local=B, peer=A,
                  follow_peer=True)
    for bad in (dict(direction="out", encap="udp"), dict(direction="in", encap="esp"),
                dict(direction="in", encap="udp", replay_window=0)):
        with pytest.raises(DataplaneError):
            dp.create_sa(spi=0x5100, **common, **bad)
