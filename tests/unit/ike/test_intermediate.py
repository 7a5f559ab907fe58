"""RFC 9242 IKE_INTERMEDIATE with RFC 9370 additional key exchanges (ML-KEM) between two
espd engines over loopback UDP (real codec and crypto, a fake SA owner)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from support.ike_pair import GCM_X25519, pair, until

from espd.ike.codec import ExchangeType
from espd.ike.crypto.dh import ML_KEM_768, ML_KEM_1024
from espd.ike.sa.ike_sa import IkeState

pytestmark = pytest.mark.skipif(not (ML_KEM_768.available and ML_KEM_1024.available),
                                reason="this cryptography has no ML-KEM")

HYBRID_768 = replace(GCM_X25519, additional=((36,),))
HYBRID_1024 = replace(GCM_X25519, additional=((37,),))
TWO_MORE = replace(GCM_X25519, additional=((36,), (37,)))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def with_proposals(side, *proposals):
    side.engine.settings = replace(side.engine.settings, proposals=proposals)


def exchanges_seen(side) -> list:
    seen = []
    deliver = side.transport.receiver

    def spy(data, local, remote):
        from espd.ike import codec

        header = codec.decode_message(data).header
        seen.append((header.exchange, header.message_id, header.is_response))
        deliver(data, local, remote)
    side.transport.receiver = spy
    return seen


def keys_match(a, b) -> None:
    [ia], [ib] = a.owner.live(), b.owner.live()
    assert ia.key_out == ib.key_in and ia.key_in == ib.key_out and ia.key_out != ia.key_in


@pytest.mark.parametrize("offer, names", [
    (HYBRID_768, ["x25519 (IKE_SA_INIT)", "mlkem768 (IKE_INTERMEDIATE)"]),
    (HYBRID_1024, ["x25519 (IKE_SA_INIT)", "mlkem1024 (IKE_INTERMEDIATE)"]),
    (TWO_MORE, ["x25519 (IKE_SA_INIT)", "mlkem768 (IKE_INTERMEDIATE)",
                "mlkem1024 (IKE_INTERMEDIATE)"]),
])
def test_additional_key_exchanges_run_in_ike_intermediate_before_ike_auth(offer, names):
    async def main():
        a, b = pair(asyncio.get_running_loop())
        with_proposals(a, offer)
        with_proposals(b, offer)
        seen = exchanges_seen(b)
        sa = a.engine.initiate(a.engine.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        keys_match(a, b)
        [peer_sa] = b.engine.sas.values()
        extra = len(names) - 1
        assert sa.state == peer_sa.state == IkeState.ESTABLISHED
        # requests at the responder: INIT (0), one IKE_INTERMEDIATE each (1..n), IKE_AUTH
        # (ML-KEM-1024's 1568-byte KE goes in RFC 7383 fragments: one entry per message)
        requests = [(x, mid) for x, mid, resp in seen if not resp]
        assert list(dict.fromkeys(requests)) == [
            (ExchangeType.IKE_SA_INIT, 0),
            *[(ExchangeType.IKE_INTERMEDIATE, n) for n in range(1, extra + 1)],
            (ExchangeType.IKE_AUTH, extra + 1)]
        for side_sa in (sa, peer_sa):
            assert list(side_sa.key_exchanges) == names
            assert side_sa.intermediates == extra and not side_sa.additional_pending
        assert sa.suite.name == peer_sa.suite.name == "aes256gcm16-prfsha384-x25519-" + \
            "-".join(f"ke{n}_{k.split()[0]}" for n, k in enumerate(names[1:], 1))
        # both sides derived the same final keys (the AUTH over IntAuth verified too)
        assert bytes(sa.keys.sk_d) == bytes(peer_sa.keys.sk_d)
        [shown] = a.engine.snapshot().ike_sas
        assert list(shown.key_exchanges) == names
        fragmented = a.engine.counters["messages_fragmented"]
        assert fragmented == (0 if offer is HYBRID_768 else 1)  # the ML-KEM-1024 KEi
        a.engine.close()
        b.engine.close()
    run(main())


def crossed(a, b) -> None:
    live_a = {i.spec.spi_in: i for i in a.owner.live()}
    live_b = {i.spec.spi_out: i for i in b.owner.live()}
    assert live_a.keys() == live_b.keys() and live_a
    for spi, ia in live_a.items():
        assert ia.key_in == live_b[spi].key_out and ia.key_out == live_b[spi].key_in


async def hybrid_up(loop, pfs_additional=(36,)):
    a, b = pair(loop)
    for side in (a, b):
        s = side.engine.settings
        side.engine.settings = replace(s, proposals=(HYBRID_768,), children=(
            replace(s.children[0], pfs=31, pfs_additional=pfs_additional),))
    sa = a.engine.initiate(a.engine.settings.children[0])
    await until(lambda: a.owner.live() and b.owner.live())
    [peer_sa] = b.engine.sas.values()
    return a, b, sa, peer_sa


@pytest.mark.parametrize("who", ["initiator", "responder"])
def test_child_rekey_with_pfs_runs_ike_followup_ke(who):
    async def main():
        a, b, sa, peer_sa = await hybrid_up(asyncio.get_running_loop())
        seen_a, seen_b = exchanges_seen(a), exchanges_seen(b)
        rekeyer, its_sa = (a, sa) if who == "initiator" else (b, peer_sa)
        [old] = its_sa.children.values()
        before = {i.key_out for i in a.owner.live()}
        from espd.ike.exchanges import create_child_sa

        create_child_sa.start_rekey(rekeyer.engine, its_sa, old)
        await until(lambda: len(a.owner.retired) == 1 and len(b.owner.retired) == 1)
        crossed(a, b)
        assert not {i.key_out for i in a.owner.live()} & before
        answering = seen_b if who == "initiator" else seen_a
        requests = [x for x, _mid, resp in answering if not resp]
        assert requests[:2] == [ExchangeType.CREATE_CHILD_SA, ExchangeType.IKE_FOLLOWUP_KE]
        for side_sa in (sa, peer_sa):
            [child] = side_sa.children.values()
            assert child.key_exchanges == ("x25519 (CREATE_CHILD_SA)",
                                           "mlkem768 (IKE_FOLLOWUP_KE)")
            assert not side_sa.followups
        [shown] = a.engine.snapshot().ike_sas
        assert list(shown.children[0].key_exchanges) == [
            "x25519 (CREATE_CHILD_SA)", "mlkem768 (IKE_FOLLOWUP_KE)"]
        a.engine.close()
        b.engine.close()
    run(main())


@pytest.mark.parametrize("who", ["initiator", "responder"])
def test_ike_sa_rekey_runs_ike_followup_ke_and_moves_the_children(who):
    async def main():
        a, b, sa, peer_sa = await hybrid_up(asyncio.get_running_loop())
        rekeyer, its_sa = (a, sa) if who == "initiator" else (b, peer_sa)
        [child] = sa.children.values()
        from espd.ike.exchanges import create_child_sa

        create_child_sa.start_ike_rekey(rekeyer.engine, its_sa)
        await until(lambda: sa.state == IkeState.DELETED and peer_sa.state == IkeState.DELETED)
        [new_a], [new_b] = a.engine.sas.values(), b.engine.sas.values()
        assert new_a.spis == new_b.spis != sa.spis
        assert bytes(new_a.keys.sk_d) == bytes(new_b.keys.sk_d)
        for new in (new_a, new_b):
            assert new.key_exchanges == ("x25519 (CREATE_CHILD_SA)",
                                         "mlkem768 (IKE_FOLLOWUP_KE)")
            assert new.suite.name == "aes256gcm16-prfsha384-x25519-ke1_mlkem768"
        assert child.spi_in in new_a.children and not a.owner.retired
        # one ML-KEM in IKE_INTERMEDIATE, one in the IKE SA rekey's IKE_FOLLOWUP_KE
        assert a.engine.counters["additional_key_exchanges"] == 2
        assert b.engine.counters["additional_key_exchanges"] == 2
        # the new IKE SA carries a Child SA rekey (with its own IKE_FOLLOWUP_KE)
        create_child_sa.start_rekey(a.engine, new_a, child)
        await until(lambda: len(a.owner.retired) == 1 and len(b.owner.retired) == 1)
        crossed(a, b)
        a.engine.close()
        b.engine.close()
    run(main())


def test_a_responder_without_additional_key_exchanges_takes_the_classic_offer():
    async def main():
        a, b = pair(asyncio.get_running_loop())
        with_proposals(a, HYBRID_768, GCM_X25519)
        with_proposals(b, GCM_X25519)
        sa = a.engine.initiate(a.engine.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        assert sa.suite.name == "aes256gcm16-prfsha384-x25519"
        assert sa.key_exchanges == ("x25519 (IKE_SA_INIT)",) and sa.intermediates == 0
    run(main())


def test_a_hybrid_only_offer_to_a_classic_responder_is_no_proposal_chosen():
    async def main():
        a, b = pair(asyncio.get_running_loop())
        with_proposals(a, HYBRID_768)
        with_proposals(b, GCM_X25519)
        sa = a.engine.initiate(a.engine.settings.children[0])
        await until(lambda: sa.state == IkeState.DELETED)
        assert "NO_PROPOSAL_CHOSEN" in sa.failure
        assert not a.owner.installed and not b.owner.installed
    run(main())


def test_a_classic_answer_to_a_hybrid_only_offer_is_refused(monkeypatch):
    """Fail closed: the initiator insists on the additional key exchange it asked for."""
    async def main():
        from espd.ike import proposals

        a, b = pair(asyncio.get_running_loop())
        with_proposals(a, HYBRID_768)
        with_proposals(b, HYBRID_768)
        real = proposals.choose

        def strip_addke(offered, accepted, what="IKE"):  # a responder dropping ADDKE1
            chosen = real(offered, accepted, what)
            return proposals.Proposal(chosen.number, chosen.protocol, chosen.spi, tuple(
                t for t in chosen.transforms if t.type not in proposals.ADDKE))
        monkeypatch.setattr(proposals, "choose", strip_addke)
        sa = a.engine.initiate(a.engine.settings.children[0])
        await until(lambda: sa.state == IkeState.DELETED)
        assert "not what we offered" in sa.failure and not a.owner.installed
    run(main())


def test_ike_auth_before_the_additional_key_exchange_is_refused(monkeypatch):
    async def main():
        from espd.ike.exchanges import ike_auth, ike_intermediate

        a, b = pair(asyncio.get_running_loop())
        with_proposals(a, HYBRID_768)
        with_proposals(b, HYBRID_768)
        monkeypatch.setattr(ike_intermediate, "advance",  # an initiator skipping it
                            lambda engine, sa: ike_auth.start(engine, sa))
        sa = a.engine.initiate(a.engine.settings.children[0])
        await until(lambda: sa.state == IkeState.DELETED and not b.engine.sas)
        assert not a.owner.installed and not b.owner.installed
    run(main())


def test_ike_followup_ke_with_an_unknown_link_is_state_not_found():
    async def main():
        from espd.ike import codec
        from espd.ike.codec import NotifyType

        a, b, sa, peer_sa = await hybrid_up(asyncio.get_running_loop())
        answers = []
        a.engine.send_request(sa, ExchangeType.IKE_FOLLOWUP_KE, [
            codec.KeyExchange(36, ML_KEM_768.generate().public_bytes),
            codec.Notify(NotifyType.ADDITIONAL_KEY_EXCHANGE, b"forged!!")],
            lambda engine, sa, message: answers.append(message))
        await until(lambda: answers)
        assert answers[0].notify(NotifyType.STATE_NOT_FOUND) is not None
        assert b.engine.counters["followup_state_not_found"] == 1
        assert peer_sa.state == IkeState.ESTABLISHED  # nothing else changed
    run(main())


def test_the_keys_are_rfc9370s_from_the_secrets_of_both_exchanges(monkeypatch):
    """In-process KDF check: the responder's X25519 and ML-KEM secrets are recorded as
    they are made; SKEYSEED, SKEYSEED(1) and SK_* derived from them by hand are the keys
    both engines hold, and the PSK AUTH verified over octets ending in IntAuth. What the
    SAs held is read as IKE_AUTH ends (``setup_done``, which then keeps SK_d alone)."""
    from espd.ike.crypto import dh, keymat
    from espd.ike.sa.ike_sa import IkeSa

    made = []
    held: dict[bool, dict] = {}  # by role: the SA's state as IKE_AUTH ended
    real_done = IkeSa.setup_done

    def record(sa):
        held[sa.initiator] = dict(
            nonces=(sa.nonce_i, sa.nonce_r), int_auth=(sa.int_auth_i, sa.int_auth_r),
            **{name: bytes(getattr(sa.keys, name)) for name in ("sk_d", "sk_pi", "sk_ei")})
        real_done(sa)
    monkeypatch.setattr(IkeSa, "setup_done", record)
    for cls in (dh.X25519Group, dh.MlKemGroup):
        real = cls.respond

        def spy(self, peer, real=real):
            public, secret = real(self, peer)
            made.append(bytes(secret))
            return public, secret
        monkeypatch.setattr(cls, "respond", spy)

    async def main():
        a, b = pair(asyncio.get_running_loop())
        with_proposals(a, HYBRID_768)
        with_proposals(b, HYBRID_768)
        sa = a.engine.initiate(a.engine.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        x25519, mlkem = made
        assert len(x25519) == 32 and len(mlkem) == 32
        prf, lengths = sa.suite.prf, keymat.IkeLengths.of(sa.suite.prf, sa.suite.encr, None)
        (ni, nr), spis = held[True]["nonces"], sa.spis
        assert held[False]["nonces"] == (ni, nr)
        first = keymat.ike_keys(prf, keymat.initial_skeyseed(prf, ni, nr, x25519), ni, nr,
                                *spis, lengths)
        final = keymat.ike_keys(prf, keymat.additional_skeyseed(prf, first.sk_d, mlkem, ni, nr),
                                ni, nr, *spis, lengths)
        [peer_sa] = b.engine.sas.values()
        for side in held.values():
            assert side["sk_d"] == bytes(final.sk_d) != bytes(first.sk_d)
            assert side["sk_pi"] == bytes(final.sk_pi)
            assert side["sk_ei"] == bytes(final.sk_ei)
        for established in (sa, peer_sa):  # SK_d kept (it keys what follows), the rest not
            assert bytes(established.keys.sk_d) == bytes(final.sk_d)
            assert not established.keys.sk_pi and not established.nonce_i
        int_auth_i, int_auth_r = held[True]["int_auth"]
        assert len(int_auth_i) == len(int_auth_r) == prf.size
        assert held[False]["int_auth"] == (int_auth_i, int_auth_r)
    run(main())


def test_show_names_the_key_exchanges_and_the_proposal_its_additional_ones():
    from espd.ops.show_ike import render_ike_proposal, render_ike_sa

    sa = {"tunnel_id": 1, "local": "192.0.2.1:4500", "remote": "192.0.2.2:4500",
          "state": "established", "role": "initiator", "suite": "x", "auth": "psk",
          "peer_id": "fqdn:gwb", "spi_i": "00" * 8, "spi_r": "11" * 8, "nat": False,
          "lifetime": 86400, "active": 3.0,
          "key_exchanges": ["x25519 (IKE_SA_INIT)", "mlkem768 (IKE_INTERMEDIATE)"],
          "children": [{"entry": ["VPN", 10], "spi_in": 256, "spi_out": 257,
                        "transform": "esp-gcm 256", "mode": "tunnel", "encap": "udp",
                        "state": "installed", "local_ts": [], "remote_ts": [], "age": 1.0,
                        "key_exchanges": ["x25519 (CREATE_CHILD_SA)",
                                          "mlkem768 (IKE_FOLLOWUP_KE)"]}]}
    assert "Key exchanges: x25519 (IKE_SA_INIT), mlkem768 (IKE_INTERMEDIATE)" in \
        render_ike_sa([sa])
    assert "PFS: x25519 (CREATE_CHILD_SA), mlkem768 (IKE_FOLLOWUP_KE)" in \
        render_ike_sa([sa], detail=True)
    text = render_ike_proposal({"ike_config": {"proposals": [
        "aes256gcm16-prfsha384-x25519-ke1_mlkem1024"]}})
    assert "Additional KE 1: MLKEM1024/Group 37 (RFC 9370)" in text


def test_the_key_log_holds_the_final_keys_once(tmp_path):
    async def main():
        a, b = pair(asyncio.get_running_loop())
        path = tmp_path / "keys"
        a.engine.close()
        from support.ike_pair import side

        a = side(asyncio.get_running_loop(), a.settings.children[0].local,
                 replace(a.settings, proposals=(HYBRID_768,), key_log=str(path)))
        with_proposals(b, HYBRID_768)
        sa = a.engine.initiate(a.engine.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        rows = [line for line in path.read_text().splitlines() if "ikev2_decryption" in line]
        assert len(rows) == 1 and bytes(sa.keys.sk_ei).hex() in rows[0]
        a.engine.close()
        b.engine.close()
    run(main())


def test_a_lost_ike_intermediate_response_is_answered_again_from_the_cache():
    """The responder has already moved to the new keys when the retransmission comes:
    it answers from its cache (under the old keys), it does not exchange again."""
    async def main():
        from espd.ike import codec

        a, b = pair(asyncio.get_running_loop())
        with_proposals(a, HYBRID_768)
        with_proposals(b, HYBRID_768)
        dropped = []
        deliver = a.transport.receiver

        def lossy(data, local, remote):
            exchange = codec.decode_message(data).header.exchange
            if exchange == ExchangeType.IKE_INTERMEDIATE and len(dropped) < 2:
                dropped.append(data)
                return
            deliver(data, local, remote)
        a.transport.receiver = lossy
        sa = a.engine.initiate(a.engine.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        keys_match(a, b)
        assert len(dropped) == 2 and dropped[0] == dropped[1]
        assert b.engine.counters["retransmitted_requests"] == 2
        assert b.engine.counters["additional_key_exchanges"] == 1
        assert sa.intermediates == 1
    run(main())


def test_a_responder_drops_its_followup_state_when_no_ike_followup_ke_comes(monkeypatch):
    async def main():
        from espd.ike.exchanges import create_child_sa, followup_ke

        a, b, sa, peer_sa = await hybrid_up(asyncio.get_running_loop())
        monkeypatch.setattr(followup_ke, "WAIT_TIMEOUT", 0.2)
        monkeypatch.setattr(followup_ke, "run", lambda *args: None)  # a silent initiator
        [old] = sa.children.values()
        create_child_sa.start_rekey(a.engine, sa, old)
        await until(lambda: peer_sa.followups)
        await until(lambda: not peer_sa.followups, timeout=3)
        assert b.engine.counters["child_failures"] == 1
        assert len(b.owner.installed) == 1 and not b.owner.retired  # nothing half-made
        [kept] = peer_sa.children.values()
        assert kept.state.value == "installed"
    run(main())


def test_certificate_signatures_cover_the_int_auth_octets_too(tmp_path):
    """RFC 7427 signature AUTH (ECDSA) signs the same octets, IntAuth trailer included."""
    from support.pki import Pki
    from test_certificates import cert_settings, negotiate, own

    from espd.ike.auth.certificates import TrustStore

    pki = Pki(str(tmp_path / "pki"))
    ca = pki.ca()
    trust = TrustStore((ca.cert,))
    a, b = cert_settings(own(pki.gateway("gwa", ca)), own(pki.gateway("gwb", ca)), trust, trust)
    a, b = (replace(s, proposals=(HYBRID_768,)) for s in (a, b))
    got = asyncio.run(negotiate(a, b))
    assert got.state == IkeState.ESTABLISHED and got.children == (1, 1)
    assert got.sa.intermediates == 1 and str(got.peer_id) == "fqdn:gwb"


def test_a_responder_without_pfs_takes_the_initiators_additional_key_exchange():
    async def main():
        from espd.ike.exchanges import create_child_sa

        a, b, sa, peer_sa = await hybrid_up(asyncio.get_running_loop())
        s = b.engine.settings
        b.engine.settings = replace(s, children=(replace(s.children[0], pfs=0,
                                                         pfs_additional=()),))
        [old] = sa.children.values()
        create_child_sa.start_rekey(a.engine, sa, old)
        await until(lambda: len(a.owner.retired) == 1 and len(b.owner.retired) == 1)
        crossed(a, b)
        [child] = peer_sa.children.values()
        assert child.key_exchanges == ("x25519 (CREATE_CHILD_SA)", "mlkem768 (IKE_FOLLOWUP_KE)")
    run(main())
