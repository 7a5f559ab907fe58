"""Hostile and broken messages against an established IKE SA (issue 13).

Two real engines over loopback make the IKE SA; then a forger (support/ike_forge.py)
speaks as the initiator with the SA's real keys where a valid ICV is needed, and hands
each message to the responder's engine. Every case checks: the answer RFC 7296 asks for
(or none), a counter, and that the established SA is as it was: keys, message ID windows,
the cached response, Child SAs and what the SA owner holds. A request that is answered
moves the response window by exactly one (RFC 7296 2.3); nothing else may change.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest
from support.ike_forge import Forger, established, fingerprint, raw_payload, until

from espd.ike import codec
from espd.ike import proposals as p
from espd.ike.codec import ExchangeType, NotifyType, PayloadType, ProtocolId
from espd.ike.crypto import suites
from espd.ike.exchanges.payloads import sa_payload, to_wire_selectors

INFO, CHILD, AUTH = ExchangeType.INFORMATIONAL, ExchangeType.CREATE_CHILD_SA, \
    ExchangeType.IKE_AUTH


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def hostile(check, **settings):
    """Run ``check(forger, pair)`` against a freshly established pair."""
    async def main():
        pair = await established(asyncio.get_running_loop(), **settings)
        try:
            forger = Forger(pair)
            await check(forger, pair)
        finally:
            pair.close()
    run(main())


def unchanged_but_answered(before: tuple, after: tuple) -> None:
    """The SA is as it was except that the response window moved on by one (the request
    was answered, RFC 7296 2.3) and the new response is cached."""
    # fields 7..9 of fingerprint: expected_id, last_id, last_response
    assert after[7] == before[7] + 1 and after[8] == before[7]
    assert after[:7] == before[:7] and after[10:] == before[10:]


def only_notify(forger: Forger, replies: list[bytes]) -> codec.Notify:
    [reply] = replies
    message = forger.open(reply)
    assert message.header.is_response
    [notify] = message.payloads
    assert isinstance(notify, codec.Notify)
    return notify


def child_offer(pair, spi: int, *, group: int = 0, rekey_of: int | None = None) -> list:
    """A CREATE_CHILD_SA request's payloads for the pair's crypto map entry (as the
    initiator a would send them), ESP SPI ``spi``; ``group``: a PFS KE of that group
    (its payload is added by the caller)."""
    policy = pair.a.settings.children[0]
    offer = p.esp_offer(policy, spi.to_bytes(4, "big"), group)
    payloads: list = []
    if rekey_of is not None:
        payloads.append(codec.Notify(NotifyType.REKEY_SA, b"", ProtocolId.ESP,
                                     rekey_of.to_bytes(4, "big")))
    payloads += [sa_payload(offer), codec.Nonce(b"\x11" * 32)]
    return payloads


def selectors(pair) -> list:
    policy = pair.a.settings.children[0]
    return [codec.TsInitiator(to_wire_selectors(policy.local_ts)),
            codec.TsResponder(to_wire_selectors(policy.remote_ts))]


def counted(pair, name: str, before: int = 0) -> None:
    assert pair.b.engine.counters[name] == before + 1, dict(pair.b.engine.counters)


def refused(f: Forger, pair, payloads: list, answer: NotifyType,
            counter: str = "child_failures") -> codec.Notify:
    """Send a CREATE_CHILD_SA request: answered with one ``answer`` notify, counted, and
    nothing changed but the response window."""
    before = fingerprint(pair.b, pair.sa_b)
    notify = only_notify(f, f.send(f.request(CHILD, payloads)))
    assert notify.type == answer
    unchanged_but_answered(before, fingerprint(pair.b, pair.sa_b))
    counted(pair, counter)
    return notify


# --- framing inside SK (authenticated, so answered with INVALID_SYNTAX) -------------------


NONCE = bytes(range(32))


@pytest.mark.parametrize("case", [
    "truncated",          # the nonce says 36 bytes, 20 are there
    "overlong",           # bytes after the last payload
    "length-overflow",    # 0xFFFF with a few bytes left
    "length-below-header",  # 3: would walk backwards or stay in place
    "length-zero",
    "loop",               # the last payload names a next one that is not there
    "never-ends",         # 70 empty payloads, each naming another (MAX_PAYLOADS 64)
])
def test_malformed_inner_chain_is_answered_invalid_syntax_and_changes_nothing(case):
    async def check(f: Forger, pair):
        nonce = raw_payload(PayloadType.NONE, NONCE)
        inner = {
            "truncated": raw_payload(PayloadType.NONE, NONCE[:16], length=36),
            "overlong": nonce + b"\x00\x00\x00",
            "length-overflow": raw_payload(PayloadType.NONE, NONCE, length=0xFFFF),
            "length-below-header": raw_payload(PayloadType.NONE, NONCE, length=3),
            "length-zero": raw_payload(PayloadType.NONE, NONCE, length=0),
            "loop": raw_payload(PayloadType.NONCE, NONCE),
            "never-ends": raw_payload(PayloadType.VENDOR_ID, b"") * 70,
        }[case]
        first = PayloadType.VENDOR_ID if case == "never-ends" else PayloadType.NONCE
        before = fingerprint(pair.b, pair.sa_b)
        replies = f.send(f.sealed_raw(INFO, first, inner))
        assert only_notify(f, replies).type == NotifyType.INVALID_SYNTAX
        unchanged_but_answered(before, fingerprint(pair.b, pair.sa_b))
        counted(pair, "malformed")
    hostile(check)


def test_unknown_critical_payload_gets_unsupported_critical_payload():
    async def check(f: Forger, pair):
        inner = raw_payload(PayloadType.NONE, b"\x01\x02", critical=True)
        before = fingerprint(pair.b, pair.sa_b)
        replies = f.send(f.sealed_raw(INFO, 222, inner))
        notify = only_notify(f, replies)
        assert notify.type == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD
        assert notify.data == bytes([222])  # RFC 7296 3.10.1: the payload type
        unchanged_but_answered(before, fingerprint(pair.b, pair.sa_b))
        # non-critical unknown payloads are skipped (RFC 7296 2.5): a DPD answered empty
        f.take_id()
        replies = f.send(f.sealed_raw(INFO, 222, raw_payload(PayloadType.NONE, b"\x01")))
        [reply] = replies
        assert f.open(reply).payloads == ()
    hostile(check)


def test_unknown_critical_payload_in_the_clear_is_dropped_unanswered():
    async def check(f: Forger, pair):
        sealed = f.request(INFO, [])
        # a critical payload of unknown type in front of SK: not authenticated, so no answer
        head, sk = sealed[:28], sealed[28:]
        extra = raw_payload(PayloadType.SK, b"zz", critical=True)
        data = bytearray(head[:16] + bytes([199]) + head[17:24] +
                         (len(sealed) + len(extra)).to_bytes(4, "big")) + extra + sk
        before = fingerprint(pair.b, pair.sa_b)
        assert f.send(bytes(data)) == []
        assert fingerprint(pair.b, pair.sa_b) == before
        counted(pair, "malformed")
    hostile(check)


# --- who and when: SPIs, message IDs, responses ------------------------------------------


@pytest.mark.parametrize("which", ["responder", "initiator", "both-swapped"])
def test_wrong_spis_are_dropped_unanswered(which):
    async def check(f: Forger, pair):
        i, r = f.spis.initiator, f.spis.responder
        spis = {"responder": codec.SpiPair(i, bytes(8 * [7])),
                "initiator": codec.SpiPair(bytes(8 * [7]), r),
                "both-swapped": codec.SpiPair(r, i)}[which]
        before = fingerprint(pair.b, pair.sa_b)
        assert f.send(f.request(INFO, [], spis=spis)) == []
        assert fingerprint(pair.b, pair.sa_b) == before
        counted(pair, "unknown_spi")
    hostile(check)


@pytest.mark.parametrize("offset", [1, 2, 1000, None])
def test_out_of_window_message_ids_are_dropped_unanswered(offset):
    async def check(f: Forger, pair):
        mid = 2**32 - 1 if offset is None else f.next_id + offset
        before = fingerprint(pair.b, pair.sa_b)
        assert f.send(f.request(INFO, [], message_id=mid)) == []
        assert fingerprint(pair.b, pair.sa_b) == before
        counted(pair, "stale_requests")
        # the window still takes the ID it expects
        assert len(f.send(f.request(INFO, []))) == 1
    hostile(check)


@pytest.mark.parametrize("mid", ["next", "last", "old"])
def test_responses_never_requested_are_dropped(mid):
    async def check(f: Forger, pair):
        ours = pair.sa_b.requests.next_id
        message_id = {"next": ours, "last": max(ours - 1, 0), "old": ours + 5}[mid]
        before = fingerprint(pair.b, pair.sa_b)
        assert pair.sa_b.requests.outstanding is None
        assert f.send(f.request(INFO, [codec.Delete(ProtocolId.IKE)], message_id=message_id,
                                response=True)) == []
        assert fingerprint(pair.b, pair.sa_b) == before
        counted(pair, "unexpected_responses")
    hostile(check)


def test_replayed_request_is_answered_from_the_cache_but_a_forged_copy_is_not():
    async def check(f: Forger, pair):
        request = f.request(INFO, [])  # DPD
        [answer] = f.send(request)
        f.take_id()
        before = fingerprint(pair.b, pair.sa_b)
        assert f.send(request) == [answer]  # a real retransmission: the cached bytes
        counted(pair, "retransmitted_requests")
        assert fingerprint(pair.b, pair.sa_b) == before
        # the same message ID, header and length, but not sealed with SK_ai: no reflection
        forged = bytearray(request)
        forged[-1] ^= 1
        flipped_body = bytearray(request)
        flipped_body[40] ^= 0x80
        other_keys = f.request(INFO, [], message_id=f.next_id - 1,
                               cipher=pair.sa_a.sk_in)  # the wrong direction's keys
        for copy in (bytes(forged), bytes(flipped_body), other_keys):
            assert f.send(copy) == [], "a forged copy made espd re-send (reflector)"
        assert pair.b.engine.counters["retransmitted_requests"] == 1
        assert pair.b.engine.counters["integrity_failures"] == 3
        assert fingerprint(pair.b, pair.sa_b) == before
    hostile(check)


# --- exchanges that must not touch the SA ------------------------------------------------


def test_ike_auth_on_an_established_sa_is_dropped():
    async def check(f: Forger, pair):
        before = fingerprint(pair.b, pair.sa_b)
        idi = codec.IdInitiator(codec.IdType.IPV4_ADDR, bytes([127, 0, 0, 1]))
        auth = codec.Authentication(codec.AuthMethod.SHARED_KEY_MIC, bytes(48))
        assert f.send(f.request(AUTH, [idi, auth])) == []
        assert fingerprint(pair.b, pair.sa_b) == before
        counted(pair, "malformed")
    hostile(check)


def test_ike_auth_with_a_valid_mac_but_a_wrong_identity_fails_alone():
    """A second IKE SA from the same peer authenticates with the right key under an
    identity the responder does not expect: AUTHENTICATION_FAILED (RFC 7296 2.21.2), that
    half-open SA gone, the established one untouched."""
    from espd.ike.settings import Identity

    async def main():
        loop = asyncio.get_running_loop()
        pair = await established(loop)
        try:
            b_peer = replace(pair.b.settings.peers[0],
                             remote_id=Identity("ipv4", "127.0.0.1"))
            pair.b.engine.settings = replace(pair.b.engine.settings, peers=(b_peer,))
            before = fingerprint(pair.b, pair.sa_b)
            a_peer = replace(pair.a.settings.peers[0],
                             local_id=Identity("fqdn", "mallory.example"))
            pair.a.engine.settings = replace(pair.a.engine.settings, peers=(a_peer,))
            second = pair.a.engine.initiate(pair.a.engine.settings.children[0])
            await until(lambda: second.failure != "")
            assert "AUTHENTICATION_FAILED" in second.failure
            assert pair.b.engine.counters["auth_failures"] == 1
            assert [s for s in pair.b.engine.sas.values()] == [pair.sa_b]
            assert fingerprint(pair.b, pair.sa_b) == before
        finally:
            pair.close()
    run(main())


def test_create_child_sa_rekeying_a_child_sa_that_does_not_exist():
    async def check(f: Forger, pair):
        [child] = pair.sa_b.children.values()
        payloads = child_offer(pair, 0x5000, rekey_of=child.spi_in)  # b's SPI, not a's
        notify = refused(f, pair, payloads + selectors(pair), NotifyType.CHILD_SA_NOT_FOUND,
                         "child_sa_not_found")
        assert notify.protocol == ProtocolId.ESP  # RFC 7296 3.10.1: the SPI asked for
        assert notify.spi == child.spi_in.to_bytes(4, "big")
    hostile(check)


def test_delete_of_someone_elses_spi_deletes_nothing():
    """Another IKE SA's Child SA, our own inbound SPI, an SPI nobody has, a wrong-size
    SPI: answered with an empty INFORMATIONAL (RFC 7296 1.4.1), nothing deleted."""
    async def main():
        loop = asyncio.get_running_loop()
        pair = await established(loop)
        try:
            second = pair.a.engine.initiate(pair.a.settings.children[0])
            await until(lambda: len(pair.b.owner.live()) == 2)
            other_b = next(s for s in pair.b.engine.sas.values() if s is not pair.sa_b)
            [other_child] = other_b.children.values()
            [own] = pair.sa_b.children.values()
            f = Forger(pair)
            before = fingerprint(pair.b, pair.sa_b)
            before_other = fingerprint(pair.b, other_b)
            for spis in ((other_child.spi_out.to_bytes(4, "big"),),
                         (own.spi_in.to_bytes(4, "big"),), (b"\x00\x00\x99\x99",),
                         (b"\x01\x02",)):
                [reply] = f.send(f.request(INFO, [codec.Delete(ProtocolId.ESP, spis)]))
                assert f.open(reply).payloads == ()
                f.take_id()
                after = fingerprint(pair.b, pair.sa_b)
                assert after[:7] == before[:7] and after[10:] == before[10:]
                assert fingerprint(pair.b, other_b)[:7] == before_other[:7]
            assert pair.b.engine.counters["delete_unknown_spi"] == 4
            assert len(pair.b.owner.live()) == 2 and second.state.value == "established"
        finally:
            pair.close()
    run(main())


@pytest.mark.parametrize("reuse", ["rekey", "new"])
def test_child_sa_reusing_an_spi_in_use_is_refused(reuse):
    """The peer's SPI for a new or rekeyed Child SA is one its current Child SA already
    has (our outbound SPI): two outbound SAs with one SPI would make DELETE and the data
    plane ambiguous. Refused; nothing installed."""
    async def check(f: Forger, pair):
        [child] = pair.sa_b.children.values()
        payloads = child_offer(pair, child.spi_out,
                               rekey_of=child.spi_out if reuse == "rekey" else None)
        refused(f, pair, payloads + selectors(pair), NotifyType.INVALID_SYNTAX)
    hostile(check)


def test_ike_sa_rekey_reusing_the_current_spi_is_refused():
    async def check(f: Forger, pair):
        group = suites.group(31)
        private = group.generate()
        offer = p.Proposal(1, p.PROTO_IKE, pair.sa_b.spi_i, pair.sa_b.proposal.transforms)
        payloads = [sa_payload([offer]), codec.Nonce(NONCE),
                    codec.KeyExchange(31, private.public_bytes)]
        refused(f, pair, payloads, NotifyType.INVALID_SYNTAX, "ike_rekey_refused")
        assert len(pair.b.engine.sas) == 1
    hostile(check)


# --- key exchange public values (RFC 7296 2.14, RFC 8031 2, RFC 5903) --------------------


BAD_KE = {
    "x25519-short": (31, bytes(31)),
    "x25519-long": (31, bytes(33)),
    "x25519-all-zero": (31, bytes(32)),  # a low-order point: all-zero shared secret
    "x25519-order-8": (31, bytes.fromhex(
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")),
    "ecp256-not-on-curve": (19, (1).to_bytes(32, "big") * 2),
    "ecp256-short": (19, bytes(63)),
    "modp2048-one": (14, (1).to_bytes(256, "big")),
    "modp2048-p-1": (14, None),
    "modp2048-zero": (14, bytes(256)),
}


@pytest.mark.parametrize("case", sorted(BAD_KE))
def test_bad_key_exchange_public_value_in_create_child_sa(case):
    async def check(f: Forger, pair):
        group, data = BAD_KE[case]
        if data is None:
            data = (suites.group(group).prime - 1).to_bytes(256, "big")
        payloads = child_offer(pair, 0x6000, group=group)
        payloads.append(codec.KeyExchange(group, data))
        refused(f, pair, payloads + selectors(pair), NotifyType.INVALID_SYNTAX)
    hostile(check)


def test_bad_key_exchange_public_value_in_an_ike_sa_rekey():
    async def check(f: Forger, pair):
        offer = p.Proposal(1, p.PROTO_IKE, b"\x33" * 8, pair.sa_b.proposal.transforms)
        payloads = [sa_payload([offer]), codec.Nonce(NONCE), codec.KeyExchange(31, bytes(32))]
        refused(f, pair, payloads, NotifyType.INVALID_SYNTAX, "ike_rekey_refused")
        assert len(pair.b.engine.sas) == 1
    hostile(check)


def test_wrong_group_ke_in_create_child_sa_with_pfs_gets_invalid_ke_payload():
    async def main():
        loop = asyncio.get_running_loop()
        from support.ike_pair import settings_pair

        _a, b = settings_pair(0)
        b = replace(b, children=(replace(b.children[0], pfs=19),))
        pair = await established(loop, None, b)
        try:
            f = Forger(pair)
            payloads = child_offer(pair, 0x7000, group=19)
            payloads.append(codec.KeyExchange(31, suites.group(31).generate().public_bytes))
            notify = refused(f, pair, payloads + selectors(pair),
                             NotifyType.INVALID_KE_PAYLOAD)
            assert notify.data == (19).to_bytes(2, "big")  # RFC 7296 1.3: the group we want
        finally:
            pair.close()
    run(main())


# --- logging ------------------------------------------------------------------------------


def test_a_flood_of_hostile_requests_is_logged_rate_limited(caplog):
    async def check(f: Forger, pair):
        [child] = pair.sa_b.children.values()
        with caplog.at_level(logging.WARNING, logger="espd.ike"):
            for _ in range(50):
                f.send(f.request(CHILD, child_offer(pair, child.spi_out) + selectors(pair)))
                f.take_id()
                f.send(f.sealed_raw(INFO, PayloadType.NONCE, b"\x00\x00\x00\x03"))
                f.take_id()
                f.send(f.request(INFO, [], message_id=f.next_id + 7))
        lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert pair.b.engine.counters["child_failures"] == 50
        assert pair.b.engine.counters["malformed"] == 50
        assert pair.b.engine.counters["stale_requests"] == 50
        assert len(lines) <= 15, [r.getMessage() for r in lines]
        assert pair.b.engine.rate_log.suppressed >= 85
    hostile(check)


# --- IKE_SA_INIT and the SA that is up -----------------------------------------------------


@pytest.mark.parametrize("case", ["x25519-all-zero", "x25519-short", "no-nonce"])
def test_ike_sa_init_with_a_bad_public_value_is_refused_statelessly(case):
    """RFC 8031 2 / RFC 7296 2.14: INVALID_SYNTAX in the clear, no half-open IKE SA, the
    established one untouched."""
    async def check(f: Forger, pair):
        data = {"x25519-all-zero": bytes(32), "x25519-short": bytes(31),
                "no-nonce": suites.group(31).generate().public_bytes}[case]
        payloads = [sa_payload(p.ike_offer(pair.b.settings.proposals)),
                    codec.KeyExchange(31, data)]
        if case != "no-nonce":
            payloads.append(codec.Nonce(NONCE))
        header = codec.request_header(codec.SpiPair(b"\x66" * 8, bytes(8)),
                                      ExchangeType.IKE_SA_INIT, 0, original_initiator=True)
        before = fingerprint(pair.b, pair.sa_b)
        [reply] = f.send(codec.encode_message(codec.Message(header, tuple(payloads))))
        answer = codec.decode_message(reply)
        assert answer.header.is_response and answer.header.spis.initiator == b"\x66" * 8
        assert [n.type for n in answer.all(codec.Notify)] == [NotifyType.INVALID_SYNTAX]
        assert not pair.b.engine.half_open and list(pair.b.engine.sas.values()) == [
            pair.sa_b]
        assert fingerprint(pair.b, pair.sa_b) == before
        counted(pair, "ike_sa_init_refused")
    hostile(check)


def test_a_forged_response_to_our_outstanding_request_is_dropped():
    """The victim's DPD is outstanding: a response with its message ID but no valid ICV
    neither completes nor cancels it; the real one does."""
    from espd.ike.exchanges import informational

    async def check(f: Forger, pair):
        informational.start_dpd(pair.b.engine, pair.sa_b)
        [dpd] = f.sent
        mid = f.open(dpd).header.message_id
        before = fingerprint(pair.b, pair.sa_b)
        forged = bytearray(f.request(INFO, [], message_id=mid, response=True))
        forged[-3] ^= 0x10
        assert f.send(bytes(forged)) == []
        assert pair.sa_b.requests.outstanding is not None
        assert fingerprint(pair.b, pair.sa_b) == before
        counted(pair, "integrity_failures")
        f.send(f.request(INFO, [], message_id=mid, response=True))
        assert pair.sa_b.requests.outstanding is None
    hostile(check)


def test_a_forged_copy_of_a_fragmented_request_is_not_answered():
    """RFC 7383 2.6.1: fragment 1 of a retransmitted request gets the cached response;
    fragment 1 with the same message ID but not sealed with the SA's keys gets nothing."""
    async def check(f: Forger, pair):
        pair.sa_b.fragmentation = True
        payloads = [codec.Notify(NotifyType.INITIAL_CONTACT, b"x" * 600)]
        fragments = codec.encrypt_fragments(f.header(INFO), payloads, f.sk_out, 300)
        assert len(fragments) >= 2
        replies = [r for fragment in fragments for r in f.send(fragment)]
        assert len(replies) == 1
        f.take_id()
        before = fingerprint(pair.b, pair.sa_b)
        assert f.send(fragments[0]) == replies  # a real retransmission
        assert f.send(fragments[1]) == []  # only fragment 1 answers
        forged = bytearray(fragments[0])
        forged[-1] ^= 1
        assert f.send(bytes(forged)) == []
        assert pair.b.engine.counters["retransmitted_requests"] == 1
        counted(pair, "integrity_failures")
        assert fingerprint(pair.b, pair.sa_b) == before
    hostile(check)


def test_an_authenticated_peer_cannot_make_child_sas_without_end():
    """Each CREATE_CHILD_SA for a new Child SA installs one in the data plane: past
    [ike.limits] child_sas_per_ike_sa the answer is NO_ADDITIONAL_SAS (RFC 7296 3.10.1)
    and nothing more is installed; a rekey of one that exists still works."""
    from support.ike_pair import settings_pair

    from espd.ike.settings import Limits

    _a, b = settings_pair(0)
    b = replace(b, limits=Limits(child_sas_per_ike_sa=3))

    async def check(f: Forger, pair):
        for spi in (0x8001, 0x8002):
            [reply] = f.send(f.request(CHILD, child_offer(pair, spi) + selectors(pair)))
            assert isinstance(f.open(reply).payloads[0], codec.SecurityAssociation)
            f.take_id()
        assert len(pair.b.owner.live()) == 3
        refused(f, pair, child_offer(pair, 0x8003) + selectors(pair),
                NotifyType.NO_ADDITIONAL_SAS, "child_sas_refused")
        f.take_id()
        assert len(pair.b.owner.live()) == 3
        [child] = [c for c in pair.sa_b.children.values() if c.spi_out == 0x8001]
        [reply] = f.send(f.request(CHILD, child_offer(pair, 0x8004, rekey_of=0x8001) +
                                   selectors(pair)))
        assert isinstance(f.open(reply).payloads[0], codec.SecurityAssociation)
        assert child.rekeyed_by is not None
    hostile(check, b_settings=b)
