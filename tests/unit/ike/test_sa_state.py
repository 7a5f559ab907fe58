"""IKE SA state: message ID windows of one, the response cache, key wiping."""

from __future__ import annotations

import ipaddress

import pytest

from espd.ike.crypto.keymat import IkeKeys
from espd.ike.crypto.secret import Secret
from espd.ike.sa.child_sa import ChildSa
from espd.ike.sa.ike_sa import Endpoint, IkeSa, IkeState
from espd.ike.sa.windows import Outstanding, RequestWindow, ResponseWindow


def test_request_window_holds_one_request():
    window = RequestWindow()
    assert window.take_id() == 0
    window.sent(Outstanding(0, 34, (b"x",)))
    with pytest.raises(RuntimeError):
        window.take_id()
    assert not window.matches(1, 34) and window.matches(0, 34)
    assert not window.matches(0, 35)  # a response is of its request's exchange type
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


def test_wipe_zeroes_the_ike_keys_in_place():
    keys = IkeKeys(*(Secret(b"\xaa" * 32) for _ in range(7)))
    held = [keys.sk_d, keys.sk_ei, keys.sk_pr]
    sa = IkeSa(b"\1" * 8, b"\2" * 8, True, Endpoint(ipaddress.ip_address("192.0.2.1"), 500),
               Endpoint(ipaddress.ip_address("192.0.2.2"), 500), IkeState.ESTABLISHED,
               keys=keys)
    sa.children[0x1234] = ChildSa(("vpn", 10), 0x1234)
    assert "aa" not in repr(sa) and "bb" not in repr(sa.children[0x1234])
    sa.wipe()
    assert all(key == bytearray(32) for key in held)
    assert sa.keys is None and sa.sk_in is None and sa.sk_out is None
    assert str(sa.remote) == "192.0.2.2:500"
