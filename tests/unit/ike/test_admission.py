"""Responder admission (RFC 7296 2.6): COOKIE challenges and caps before any DH, against
hostile IKE_SA_INIT requests from spoofed sources (real codec, real engine)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from dataclasses import replace

from support.ike_pair import GCM_X25519, pair, until

from espd.ike import codec, proposals
from espd.ike.codec import ExchangeType, NotifyType
from espd.ike.engine.admission import CookieJar
from espd.ike.exchanges.payloads import sa_payload
from espd.ike.sa.ike_sa import Endpoint, IkeState
from espd.ike.settings import Limits


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def request(spi: bytes, nonce: bytes, cookie: bytes | None = None) -> bytes:
    payloads = [codec.Notify(NotifyType.COOKIE, cookie)] if cookie is not None else []
    payloads += [sa_payload(proposals.ike_offer((GCM_X25519,))),
                 codec.KeyExchange(31, os.urandom(32)), codec.Nonce(nonce)]
    header = codec.request_header(codec.SpiPair(spi), ExchangeType.IKE_SA_INIT, 0,
                                  original_initiator=True)
    return codec.encode_message(codec.Message(header, tuple(payloads)))


def test_threshold_zero_demands_a_cookie_and_the_initiator_still_gets_in():
    async def main():
        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        b.engine.settings = replace(b.settings, limits=Limits(cookie_threshold=0))
        sa = a.engine.initiate(a.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        assert sa.state == IkeState.ESTABLISHED
        assert b.engine.counters["cookies_sent"] == 1
        assert b.engine.counters["cookies_accepted"] == 1
        assert a.engine.counters["cookies_honoured"] == 1
        assert not b.engine.half_open and not b.engine.half_open_by_source
        a.engine.close()
        b.engine.close()
    run(main())


def test_hostile_init_requests_per_source_threshold_wrong_cookie_and_caps():
    async def main():
        loop = asyncio.get_running_loop()
        _a, b = pair(loop)
        b.engine.settings = replace(b.settings, limits=Limits(
            cookie_threshold=100, cookie_threshold_per_source=2, half_open_per_source=3,
            ike_sas=10))
        sent = []
        b.engine.transport.send = lambda local, remote, data: sent.append((remote, data))
        local = Endpoint(b.settings.children[0].local, b.settings.port)
        x = Endpoint(ipaddress.ip_address("198.51.100.7"), 500)
        y = Endpoint(ipaddress.ip_address("198.51.100.8"), 500)

        def send(remote, spi, nonce, cookie=None):
            sent.clear()
            b.engine.receive(request(spi, nonce, cookie), local, remote)
            [(to, data)] = sent
            assert to == remote
            return codec.decode_message(data)

        for i in range(2):  # below the per-source threshold: DH and a half-open SA
            reply = send(x, bytes([1, i]) * 4, bytes(32))
            assert reply.first(codec.KeyExchange) is not None
        assert b.engine.half_open_by_source[x.address] == 2
        spi, nonce = bytes([2]) * 8, os.urandom(32)
        challenge = send(x, spi, nonce).notify(NotifyType.COOKIE)  # third: cookie only
        assert challenge is not None and len(b.engine.sas) == 2
        [only] = codec.decode_message(sent[0][1]).payloads
        assert isinstance(only, codec.Notify)
        wrong = bytes([challenge.data[0]]) + bytes(len(challenge.data) - 1)
        assert send(x, spi, nonce, wrong).notify(NotifyType.COOKIE) is not None
        assert b.engine.counters["cookies_rejected"] == 1
        # a cookie bound to another nonce or source does not pass
        assert send(x, spi, os.urandom(32), challenge.data).notify(NotifyType.COOKIE)
        assert send(y, bytes([9]) * 8, bytes(32)).first(codec.KeyExchange) is not None
        assert send(x, spi, nonce, challenge.data).first(codec.KeyExchange) is not None
        assert b.engine.counters["cookies_accepted"] == 1
        assert b.engine.half_open_by_source[x.address] == 3
        spi4, nonce4 = bytes([4]) * 8, os.urandom(32)  # over the per-source cap: dropped
        cookie4 = send(x, spi4, nonce4).notify(NotifyType.COOKIE).data
        sent.clear()
        b.engine.receive(request(spi4, nonce4, cookie4), local, x)
        assert not sent and b.engine.counters["half_open_refused"] == 1
        assert len(b.engine.sas) == 4 and b.engine.counters["internal_errors"] == 0
        for sa in list(b.engine.sas.values()):  # half-open SAs time out (here: now)
            b.engine.ike_failed(sa, "test")
        assert not b.engine.half_open and not b.engine.half_open_by_source
        b.engine.close()
    run(main())


def test_half_open_sas_time_out():
    async def main():
        loop = asyncio.get_running_loop()
        _a, b = pair(loop)
        b.engine.settings = replace(b.settings, half_open_timeout=0.2)
        b.engine.transport.send = lambda *args: None
        local = Endpoint(b.settings.children[0].local, b.settings.port)
        b.engine.receive(request(bytes([5]) * 8, bytes(32)), local,
                         Endpoint(ipaddress.ip_address("203.0.113.5"), 500))
        assert len(b.engine.half_open) == 1
        await until(lambda: not b.engine.half_open and not b.engine.sas, timeout=2)
        assert not b.engine.half_open_by_source
        b.engine.close()
    run(main())


def test_cookie_secret_rotation_accepts_the_previous_secret_only():
    now = [0.0]
    jar = CookieJar(100.0, lambda: now[0])
    peer = Endpoint(ipaddress.ip_address("192.0.2.9"), 500)
    nonce, spi = os.urandom(32), os.urandom(8)
    cookie = jar.make(nonce, peer, spi)
    assert jar.valid(cookie, nonce, peer, spi)
    assert not jar.valid(cookie, nonce, Endpoint(ipaddress.ip_address("192.0.2.10"), 500), spi)
    assert not jar.valid(cookie[:-1], nonce, peer, spi)
    now[0] = 150.0  # one rotation: the previous secret is still accepted
    fresh = jar.make(nonce, peer, spi)
    assert fresh[0] != cookie[0] and jar.valid(cookie, nonce, peer, spi)
    now[0] = 260.0  # two rotations: the first cookie is stale
    assert not jar.valid(cookie, nonce, peer, spi)
    assert jar.valid(fresh, nonce, peer, spi)
    now[0] = 1000.0  # idle long: both old secrets gone
    assert not jar.valid(fresh, nonce, peer, spi)


def test_a_reload_forgets_half_open_sas_of_no_peer_without_a_word():
    """A flood's half-open SAs (sources no peer has) are dropped by a reload locally: no
    DELETE to a spoofed address, no retransmissions of one."""
    async def main():
        loop = asyncio.get_running_loop()
        _a, b = pair(loop)
        sent = []
        b.engine.transport.send = lambda *args: sent.append(args)
        local = Endpoint(b.settings.children[0].local, b.settings.port)
        for i in range(3):
            b.engine.receive(request(bytes([7, i]) * 4, bytes(32)), local,
                             Endpoint(ipaddress.ip_address(f"203.0.113.{i + 1}"), 500))
        assert len(b.engine.half_open) == 3 and len(sent) == 3
        sent.clear()
        b.engine.reconfigure(b.settings)
        assert not b.engine.half_open and not b.engine.sas and not sent
        assert b.engine.counters["requests_INFORMATIONAL"] == 0
        b.engine.close()
    run(main())
