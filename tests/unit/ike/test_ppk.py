"""RFC 8784 post-quantum preshared keys: the key derivation (against HMAC computed here),
and the negotiation matrix between two espd engines over loopback UDP (real codec and
crypto, a fake SA owner): both, one or neither side with a PPK, required or optional, a
wrong PPK and an unknown PPK_ID."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from dataclasses import replace

import pytest
from support.ike_pair import established, negotiate, pair, settings_pair, until

from espd.ike.codec import NotifyType
from espd.ike.crypto import keymat
from espd.ike.crypto.prf import PRF_HMAC_SHA2_256, PRF_HMAC_SHA2_384, PRF_HMAC_SHA2_512
from espd.ike.crypto.secret import Secret
from espd.ike.sa.ike_sa import IkeState
from espd.ike.settings import PostQuantumKey

PPK = bytes(range(32, 64))
OTHER = bytes(range(64, 96))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


# --- derivation ----------------------------------------------------------------------


@pytest.mark.parametrize("prf, digest", [(PRF_HMAC_SHA2_256, hashlib.sha256),
                                         (PRF_HMAC_SHA2_384, hashlib.sha384),
                                         (PRF_HMAC_SHA2_512, hashlib.sha512)])
def test_ppk_keys_are_prf_plus_of_the_ppk_over_sk_d_sk_pi_sk_pr(prf, digest):
    """RFC 8784 3: SK_x' = prf+(PPK, SK_x); SK_x is one PRF output long, so prf+ is its
    first block T1 = HMAC(PPK, SK_x | 0x01) (RFC 7296 2.13), computed here with hmac."""
    size = digest().digest_size
    sk = {name: Secret(bytes([i]) * size) for i, name in enumerate(
        ("sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr"), start=1)}
    keys = keymat.IkeKeys(**sk)
    mixed = keymat.ppk_keys(prf, PPK, keys)
    for name in ("sk_d", "sk_pi", "sk_pr"):
        expected = hmac.new(PPK, bytes(sk[name]) + b"\x01", digest).digest()
        assert bytes(getattr(mixed, name)) == expected
    for name in ("sk_ai", "sk_ar", "sk_ei", "sk_er"):  # SK_a and SK_e are not touched
        assert bytes(getattr(mixed, name)) == bytes(sk[name])
    keys.wipe()  # the mixed keys are copies of their own
    assert bytes(mixed.sk_ei) == bytes([4]) * size


def test_a_known_answer_for_sha256():
    """A fixed vector (computed once with Python's hmac, kept as text): a change in prf+
    or in the argument order (PPK is the key, SK_d the data) fails here."""
    keys = keymat.IkeKeys(*(Secret(bytes([i]) * 32) for i in range(1, 8)))
    mixed = keymat.ppk_keys(PRF_HMAC_SHA2_256, b"\x00" * 32, keys)
    assert bytes(mixed.sk_d).hex() == hmac.new(b"\x00" * 32, b"\x01" * 32 + b"\x01",
                                               hashlib.sha256).hexdigest()
    assert bytes(mixed.sk_d) != bytes(PRF_HMAC_SHA2_256.plus(bytes(keys.sk_d), b"\x00" * 32,
                                                             32))


# --- negotiation ---------------------------------------------------------------------


def with_ppk(settings, ident: bytes | None, key: bytes = PPK, required: bool = True):
    ppk = PostQuantumKey(ident, bytearray(key), required) if ident is not None else None
    return replace(settings, peers=tuple(replace(p, ppk=ppk) for p in settings.peers))


def outcome(a_ppk, b_ppk):
    """Negotiate with a = initiator, b = responder; (a's SA state, a's SA, b's SAs)."""
    a, b = settings_pair(0)
    a, b = with_ppk(a, *a_ppk) if a_ppk else a, with_ppk(b, *b_ppk) if b_ppk else b
    return run(negotiate(a, b))


def test_both_with_the_same_ppk_use_it_and_key_from_sk_d_prime():
    async def main():
        a, b = settings_pair(0)
        a, b = with_ppk(a, b"ppk-1"), with_ppk(b, b"ppk-1")
        a, b = pair(asyncio.get_running_loop(), a, b)
        seen = []
        deliver = b.transport.receiver

        def spy(data, local, remote):
            seen.append(data)
            deliver(data, local, remote)
        b.transport.receiver = spy
        sa, peer_sa = await established(a, b)
        assert sa.ppk_used and peer_sa.ppk_used and sa.ppk_id == peer_sa.ppk_id == b"ppk-1"
        assert bytes(sa.keys.sk_d) == bytes(peer_sa.keys.sk_d)  # SK_d' on both
        [ia], [ib] = a.owner.live(), b.owner.live()
        assert ia.key_out == ib.key_in and ia.key_in == ib.key_out
        from espd.ike import codec
        init = codec.decode_message(seen[0])
        assert init.notify(NotifyType.USE_PPK) is not None
        assert a.engine.counters["ppk_used"] == b.engine.counters["ppk_used"] == 1
        from espd.ike.engine.view import ike_sa_view, plain_ike_sa
        from espd.ops.show_ike import render_ike_sa
        view = ike_sa_view(sa, 86400)
        assert view.ppk == "ppk-1"
        text = render_ike_sa([plain_ike_sa(view, view.established)])
        assert "Post-quantum preshared key: ppk-1 (RFC 8784)" in text
        assert PPK.hex() not in text and repr(PPK) not in repr(a.settings)
        a.engine.close()
        b.engine.close()
    run(main())


def test_the_established_sk_d_is_the_mixed_one_on_both_sides(monkeypatch):
    """What each side mixes is its own unmixed SK_d; what both keep (and key the Child
    SAs from) is HMAC(PPK, SK_d | 0x01), computed here."""
    from espd.ike.exchanges import ppk as ppk_exchange

    unmixed = []
    real = ppk_exchange.keymat.ppk_keys

    def spy(prf, key, keys):
        unmixed.append(bytes(keys.sk_d))
        return real(prf, key, keys)
    monkeypatch.setattr(ppk_exchange.keymat, "ppk_keys", spy)

    async def main():
        a, b = settings_pair(0)
        a, b = pair(asyncio.get_running_loop(), with_ppk(a, b"ppk-1"), with_ppk(b, b"ppk-1"))
        sa, peer_sa = await established(a, b)
        assert len(unmixed) == 2 and unmixed[0] == unmixed[1]
        expected = hmac.new(PPK, unmixed[0] + b"\x01", hashlib.sha384).digest()
        assert bytes(sa.keys.sk_d) == bytes(peer_sa.keys.sk_d) == expected != unmixed[0]
        a.engine.close()
        b.engine.close()
    run(main())


@pytest.mark.parametrize("a_required, b_required", [(False, False), (True, False),
                                                    (False, True), (True, True)])
def test_both_with_the_ppk_use_it_whether_required_or_not(a_required, b_required):
    result = outcome((b"ppk-1", PPK, a_required), (b"ppk-1", PPK, b_required))
    assert result.state == IkeState.ESTABLISHED and result.children == (1, 1)
    assert result.sa.ppk_used


def test_optional_on_the_initiator_and_no_ppk_at_the_responder_falls_back_to_no_ppk_auth():
    result = outcome((b"ppk-1", PPK, False), None)
    assert result.state == IkeState.ESTABLISHED and result.children == (1, 1)
    assert not result.sa.ppk_used
    assert result.a.engine.counters["ppk_not_used"] == 1


def test_optional_on_the_responder_and_no_ppk_at_the_initiator_runs_without_it():
    result = outcome(None, (b"ppk-1", PPK, False))
    assert result.state == IkeState.ESTABLISHED and result.children == (1, 1)
    assert not result.sa.ppk_used
    assert result.b.engine.counters["ppk_not_used"] == 1


def test_required_on_the_initiator_and_no_ppk_at_the_responder_is_refused(caplog):
    with caplog.at_level(logging.INFO, "espd.ike"):
        result = outcome((b"ppk-1", PPK, True), None)
    assert result.state == IkeState.DELETED and result.children == (0, 0)
    assert "did not answer USE_PPK" in caplog.text
    assert result.a.engine.counters["ppk_refused"] == 1


def test_required_on_the_responder_and_no_ppk_at_the_initiator_is_authentication_failed(
        caplog):
    with caplog.at_level(logging.INFO, "espd.ike"):
        result = outcome(None, (b"ppk-1", PPK, True))
    assert result.state == IkeState.DELETED and result.children == (0, 0)
    assert "initiator sent no USE_PPK" in caplog.text
    assert "AUTHENTICATION_FAILED" in caplog.text
    assert result.b.engine.counters["ppk_refused"] == 1
    assert result.a.engine.counters["auth_failures"] == 1


@pytest.mark.parametrize("a_required", [True, False])
def test_a_wrong_ppk_is_authentication_failed_even_when_optional(caplog, a_required):
    """The responder has a PPK of that PPK_ID: it checks AUTH with it and does not fall
    back to NO_PPK_AUTH (RFC 8784 3), so different keys under one PPK_ID fail."""
    with caplog.at_level(logging.INFO, "espd.ike"):
        result = outcome((b"ppk-1", PPK, a_required), (b"ppk-1", OTHER, False))
    assert result.state == IkeState.DELETED and result.children == (0, 0)
    assert "do both sides have the same PPK?" in caplog.text
    assert result.a.engine.counters["auth_failures"] >= 1
    assert PPK.hex() not in caplog.text and OTHER.hex() not in caplog.text


def test_an_unknown_ppk_id_with_no_ppk_auth_is_accepted_where_optional():
    result = outcome((b"ppk-1", PPK, False), (b"ppk-2", OTHER, False))
    assert result.state == IkeState.ESTABLISHED and result.children == (1, 1)
    assert not result.sa.ppk_used


def test_an_unknown_ppk_id_is_refused_where_the_responder_requires_its_ppk(caplog):
    with caplog.at_level(logging.INFO, "espd.ike"):
        result = outcome((b"ppk-1", PPK, False), (b"ppk-2", OTHER, True))
    assert result.state == IkeState.DELETED and result.children == (0, 0)
    assert "but the initiator sent PPK_ID ppk-1" in caplog.text


def test_an_unknown_ppk_id_without_no_ppk_auth_is_refused(caplog):
    """The initiator requires its PPK (no NO_PPK_AUTH sent); the responder has another."""
    with caplog.at_level(logging.INFO, "espd.ike"):
        result = outcome((b"ppk-1", PPK, True), (b"ppk-2", OTHER, False))
    assert result.state == IkeState.DELETED and result.children == (0, 0)
    assert "and no NO_PPK_AUTH" in caplog.text


def test_an_ike_sa_rekey_keeps_the_ppk_protection():
    async def main():
        a, b = settings_pair(0)
        a, b = pair(asyncio.get_running_loop(), with_ppk(a, b"ppk-1"), with_ppk(b, b"ppk-1"))
        sa, peer_sa = await established(a, b)
        from espd.ike.exchanges import create_child_sa

        create_child_sa.start_ike_rekey(a.engine, sa)
        await until(lambda: sa.state == IkeState.DELETED and peer_sa.state == IkeState.DELETED)
        [new_a], [new_b] = a.engine.sas.values(), b.engine.sas.values()
        assert bytes(new_a.keys.sk_d) == bytes(new_b.keys.sk_d)
        for new in (new_a, new_b):  # keyed from SK_d': the protection carries over
            assert new.ppk_used and new.ppk_id == b"ppk-1"
        a.engine.close()
        b.engine.close()
    run(main())
