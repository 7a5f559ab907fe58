"""IKE SA state: message ID windows of one, the response cache, key wiping."""

from __future__ import annotations

import ipaddress

import pytest

from espd.ike.sa.child_sa import ChildKeys, ChildSa
from espd.ike.sa.ike_sa import Endpoint, IkeKeys, IkeSa, IkeState
from espd.ike.sa.windows import Outstanding, RequestWindow, ResponseWindow


def test_request_window_holds_one_request():
    window = RequestWindow()
    assert window.take_id() == 0
    window.sent(Outstanding(0, 34, (b"x",)))
    with pytest.raises(RuntimeError):
        window.take_id()
    assert not window.matches(1) and window.matches(0)
    assert window.done().message_id == 0
    assert window.take_id() == 1


def test_response_window_answers_a_retransmission_from_its_cache():
    window = ResponseWindow()
    assert window.classify(0) == "new"
    assert window.classify(1) == "stale"
    window.answered(0, (b"answer",))
    assert window.classify(0) == "retransmit" and window.last_response == (b"answer",)
    assert window.classify(1) == "new"
    assert window.classify(5) == "stale"


def test_wipe_zeroes_ike_and_child_keys_in_place():
    keys = IkeKeys(*(bytearray(b"\xaa" * 32) for _ in range(7)))
    held = [keys.sk_d, keys.sk_ei, keys.sk_pr]
    child_keys = ChildKeys(*(bytearray(b"\xbb" * 20) for _ in range(4)))
    child_held = child_keys.encr_out
    sa = IkeSa(
        b"\1" * 8,
        b"\2" * 8,
        True,
        Endpoint(ipaddress.ip_address("192.0.2.1"), 500),
        Endpoint(ipaddress.ip_address("192.0.2.2"), 500),
        IkeState.ESTABLISHED,
        keys=keys,
    )
    sa.children[0x1234] = ChildSa(("vpn", 10), 0x1234, keys=child_keys)
    assert "aa" not in repr(sa) and "bb" not in repr(sa.children[0x1234])
    sa.wipe()
    assert all(key == bytearray(32) for key in held)
    assert child_held == bytearray(20)
    assert sa.keys is None and sa.children[0x1234].keys is None
    assert str(sa.remote) == "192.0.2.2:500"
