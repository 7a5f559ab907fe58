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
        assert [(x, mid) for x, mid, resp in seen if not resp] == [
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
        a.engine.close()
        b.engine.close()
    run(main())
