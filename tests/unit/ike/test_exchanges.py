"""Each exchange between two espd engines over loopback UDP (real codec and crypto, a
fake SA owner that records the Child SA keys)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace

from support.ike_pair import B, pair, until

from espd.ike.sa.ike_sa import IkeState


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def keys_match(a, b) -> None:
    """Each side's outbound keys are the other's inbound keys, SPIs crossed."""
    [ia], [ib] = a.owner.live(), b.owner.live()
    assert ia.spec.spi_out == ib.spec.spi_in and ia.spec.spi_in == ib.spec.spi_out
    assert ia.key_out == ib.key_in and ia.key_in == ib.key_out
    assert ia.auth_out == ib.auth_in
    assert ia.spec.encap == ib.spec.encap and ia.spec.mode == ib.spec.mode
    assert len(ia.key_out) == 36  # esp-gcm 256: key + 4-byte salt
    assert ia.key_out != ia.key_in


def test_ike_sa_init_and_ike_auth_bring_up_a_child_sa():
    async def main():
        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        sa = a.engine.initiate(a.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        keys_match(a, b)
        assert sa.state == IkeState.ESTABLISHED
        [peer_sa] = b.engine.sas.values()
        assert peer_sa.state == IkeState.ESTABLISHED and peer_sa.spis == sa.spis
        [ia] = a.owner.live()
        assert ia.spec.transform == "esp-gcm 256" and ia.spec.mode == "tunnel"
        assert ia.spec.encap == "esp" and ia.spec.entry == ("vpn", 10)
        assert not sa.nat and not peer_sa.nat  # loopback: no NAT either way
        assert all(k == bytearray(len(k)) for k in (ia.spec.key_in, ia.spec.key_out))
        view = a.engine.snapshot()
        [shown] = view.ike_sas
        assert shown.state == "established" and shown.role == "initiator"
        assert shown.suite == "aes256gcm16-prfsha384-x25519"
        assert str(shown.remote).endswith(":" + str(a.settings.port))
        assert [c.transform for c in shown.children] == ["esp-gcm 256"]
        assert view.by_state() == {"established": 1}
        text = repr(view)
        assert ia.key_out.hex() not in text and ia.key_in.hex() not in text
        a.engine.close()
        b.engine.close()
    run(main())


def test_cbc_suite_and_modp2048_with_hmac_child():
    async def main():
        from support.ike_pair import CBC_MODP

        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        for s in (a, b):
            s.engine.settings = replace(s.settings, proposals=(CBC_MODP,), children=(
                replace(s.settings.children[0],
                        transforms=(("esp-aes 256 esp-sha256-hmac", "tunnel"),)),))
        a.engine.initiate(a.engine.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        [ia], [ib] = a.owner.live(), b.owner.live()
        assert ia.spec.transform == "esp-aes 256 esp-sha256-hmac"
        assert ia.key_out == ib.key_in and ia.auth_out == ib.auth_in and len(ia.auth_out) == 32
        assert str(next(iter(a.engine.sas.values())).suite.name) == \
            "aes128-sha256-prfsha256-modp2048"
    run(main())


def test_retransmitted_requests_are_answered_from_the_cache():
    async def main():
        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        dropped = []
        deliver = a.transport.receiver

        def lossy(data, local, remote):  # the initiator loses the first two responses
            if len(dropped) < 2:
                dropped.append(data)
                return
            deliver(data, local, remote)
        a.transport.receiver = lossy
        a.engine.initiate(a.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        keys_match(a, b)
        assert a.engine.counters["retransmissions"] >= 2
        assert b.engine.counters["retransmitted_requests"] >= 2
        assert len(b.engine.sas) == 1  # one IKE SA, however often INIT came
        assert len(b.owner.installed) == 1  # IKE_AUTH processed once
    run(main())


def test_invalid_ke_payload_is_honoured_with_the_group_asked_for():
    async def main():
        from support.ike_pair import GCM_X25519

        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        a.engine.settings = replace(a.settings, proposals=(replace(GCM_X25519,
                                                                   groups=(31, 19)),))
        b.engine.settings = replace(b.settings, proposals=(replace(GCM_X25519,
                                                                   groups=(19,)),))
        sa = a.engine.initiate(a.engine.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        keys_match(a, b)
        assert b.engine.counters["invalid_ke_sent"] == 1
        assert a.engine.counters["invalid_ke_honoured"] == 1
        assert sa.suite.group.ident == 19
    run(main())


def test_cookie_is_echoed_in_the_retried_ike_sa_init():
    async def main():
        from espd.ike import codec
        from espd.ike.codec import NotifyType

        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        cookie = b"\x42" * 20
        seen = []
        deliver = b.transport.receiver

        def challenge(data, local, remote):  # the responder wants a cookie first
            message = codec.decode_message(data)
            if message.header.exchange == codec.ExchangeType.IKE_SA_INIT:
                echoed = message.notify(NotifyType.COOKIE)
                seen.append(echoed.data if echoed else None)
                if echoed is None:
                    reply = codec.Message(message.header.response(original_initiator=False),
                                          (codec.Notify(NotifyType.COOKIE, cookie),))
                    b.transport.send(local, remote, codec.encode_message(reply))
                    return
                assert message.payloads[0] == codec.Notify(NotifyType.COOKIE, cookie)
            deliver(data, local, remote)
        b.transport.receiver = challenge
        a.engine.initiate(a.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        keys_match(a, b)
        assert seen == [None, cookie]  # AUTH covered the second INIT: it verified
    run(main())


def test_no_proposal_chosen_fails_and_names_both_offers(caplog):
    async def main():
        from support.ike_pair import CBC_MODP

        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        b.engine.settings = replace(b.settings, proposals=(CBC_MODP,))
        sa = a.engine.initiate(a.settings.children[0])
        await until(lambda: sa.state == IkeState.DELETED)
        assert not a.owner.installed and not b.engine.sas
        assert b.engine.counters["no_proposal_chosen"] == 1
    run(main())
    text = caplog.text
    assert "NO_PROPOSAL_CHOSEN" in text
    assert "peer offered AES_GCM_16_256/PRF_HMAC_SHA2_384/CURVE25519" in text
    assert "we accept AES_CBC_128/PRF_HMAC_SHA2_256/HMAC_SHA2_256_128/MODP_2048" in text


def test_wrong_psk_is_authentication_failed_both_ways_without_the_key(caplog):
    async def main():
        from espd.ike.settings import PresharedKey

        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        other = bytearray(b"not-the-same-secret")
        b.engine.settings = replace(b.settings, peers=(replace(
            b.settings.peers[0], psk=PresharedKey(other, other)),))
        sa = a.engine.initiate(a.settings.children[0])
        await until(lambda: sa.state == IkeState.DELETED and not b.engine.sas)
        assert not a.owner.installed and not b.owner.installed
        assert a.engine.counters["auth_failures"] == 1
        assert b.engine.counters["auth_failures"] == 1
    run(main())
    lines = [r.getMessage() for r in caplog.records if "AUTHENTICATION_FAILED" in r.getMessage()]
    assert len(lines) == 2, lines  # one line per side
    assert all("ikeprobe" not in line and "not-the-same" not in line for line in lines)
    assert any("refused our authentication" in line for line in lines)
    assert any("failed authentication" in line for line in lines)


def test_child_sa_failure_keeps_the_ike_sa():
    async def main():
        from espd.policy.selectors import TrafficSelector

        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        b.engine.settings = replace(b.settings, children=(replace(
            b.settings.children[0],
            local_ts=(TrafficSelector.from_network("10.9.0.0/16"),)),))
        sa = a.engine.initiate(a.settings.children[0])
        await until(lambda: any(e.kind == "failed" for e in a.engine.events))
        assert sa.state == IkeState.ESTABLISHED and not a.owner.installed
        assert "TS_UNACCEPTABLE" in a.engine.events[-1].reason
        [peer_sa] = b.engine.sas.values()
        assert peer_sa.state == IkeState.ESTABLISHED
    run(main())


def test_responder_narrows_the_initiators_selectors():
    async def main():
        from espd.policy.selectors import TrafficSelector

        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        a.engine.settings = replace(a.settings, children=(replace(
            a.settings.children[0],
            remote_ts=(TrafficSelector.from_network("10.0.0.0/8"),)),))
        a.engine.initiate(a.engine.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        [ia] = a.owner.live()
        local, remote = ia.spec.traffic_selectors
        assert remote == (TrafficSelector.from_network("10.2.0.0/16"),)
    run(main())


def test_transport_mode_is_negotiated():
    async def main():
        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        for s in (a, b):
            s.engine.settings = replace(s.settings, children=(replace(
                s.settings.children[0], transforms=(("esp-gcm 128", "transport"),)),))
        a.engine.initiate(a.engine.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        assert a.owner.live()[0].spec.mode == b.owner.live()[0].spec.mode == "transport"
        assert len(a.owner.live()[0].key_out) == 20
    run(main())


def test_forced_udp_encapsulation_floats_to_the_nat_port():
    async def main():
        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        a.engine.settings = replace(a.settings, children=(replace(
            a.settings.children[0], encapsulation="udp"),))
        sa = a.engine.initiate(a.engine.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        assert sa.remote.port == a.settings.nat_port and sa.local.port == a.settings.nat_port
        [peer_sa] = b.engine.sas.values()
        assert peer_sa.remote.port == b.settings.nat_port  # answered where AUTH came from
        for s in (a, b):
            spec = s.owner.live()[0].spec
            assert spec.encap == "udp" and spec.remote_port == s.settings.nat_port
        keys_match(a, b)
    run(main())


def test_nat_port_traffic_can_go_through_the_data_plane_path():
    """The daemon's shape: UDP 4500 out through a send_ike callable (the data plane adds
    the marker), in through the owner's on_ike_datagram."""
    async def main():
        from espd.ike.codec.natt import strip_non_esp_marker
        from espd.ike.engine.transport import UdpTransport
        from espd.ike.sa.ike_sa import Endpoint

        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        a.engine.settings = replace(a.settings, children=(replace(
            a.settings.children[0], encapsulation="udp"),))
        punted = []

        def send_ike(local, peer, port, data):  # what Dataplane.send_ike does, on loopback
            punted.append(data)
            a.transport.sockets[Endpoint(a.settings.children[0].local,
                                         a.settings.nat_port)].sendto(
                bytes(4) + data, (peer, port))
        a.transport.send_nat = send_ike
        a.engine.initiate(a.engine.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        assert punted and all(strip_non_esp_marker(bytes(4) + d) == d for d in punted)
        assert isinstance(a.transport, UdpTransport)
        keys_match(a, b)
    run(main())


def test_hosting_subscribes_the_engine_and_starts_immediate_entries():
    async def main():
        from support.ike_pair import ChildSaKeys, FakeOwner, settings_pair, side

        from espd.ike.engine.hosting import host

        loop = asyncio.get_running_loop()
        port = 29000 + os.getpid() % 500 * 2
        a_settings, b_settings = settings_pair(port)
        a_settings = replace(a_settings, children=(replace(a_settings.children[0],
                                                           start="immediate"),))
        b = side(loop, B, b_settings)

        class Owner(FakeOwner):
            clients: list = []

            def subscribe(self, client):
                self.clients.append(client)
        owner = Owner()
        engine = host(loop, owner, a_settings, send_ike=None, child_sa_keys=ChildSaKeys)
        assert owner.clients == [engine]
        await until(lambda: owner.live() and b.owner.live())
        engine.reconfigure(replace(a_settings, children=()))  # the map entry is removed
        await until(lambda: not owner.live() and not b.owner.live())
        engine.close()
    run(main())


def test_esn_is_negotiated_when_both_sides_allow_it():
    async def main():
        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        a.engine.settings = replace(a.settings, children=(replace(
            a.settings.children[0], esn=True),))
        b.engine.settings = replace(b.settings, children=(replace(
            b.settings.children[0], esn=True),))
        a.engine.initiate(a.engine.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        assert a.owner.live()[0].spec.esn and b.owner.live()[0].spec.esn
    run(main())


def test_esn_falls_back_when_the_responder_does_not_offer_it():
    async def main():
        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        a.engine.settings = replace(a.settings, children=(replace(
            a.settings.children[0], esn=True),))
        a.engine.initiate(a.engine.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        assert not a.owner.live()[0].spec.esn and not b.owner.live()[0].spec.esn
    run(main())


def test_the_engine_keeps_its_own_copy_of_the_psk():
    """The configuration's key buffers are wiped once the engine started (as the daemon
    does); authentication still works, from the engine's copies."""
    async def main():
        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        for s in (a, b):
            for peer in s.settings.peers:
                peer.psk.local[:] = bytes(len(peer.psk.local))
                peer.psk.remote[:] = bytes(len(peer.psk.remote))
        a.engine.initiate(a.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        a.engine.close()
        assert not a.engine._authenticators  # wiped and dropped at close
    run(main())


def test_an_unknown_critical_payload_is_answered_naming_its_type():
    """RFC 7296 2.5: UNSUPPORTED_CRITICAL_PAYLOAD carries the one-octet type of the
    payload that was not understood; the IKE SA stays up."""
    from espd.ike import codec
    from espd.ike.codec import ExchangeType, NotifyType

    async def main():
        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        sa = a.engine.initiate(a.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live() and not sa.requests.busy)
        answers = []
        a.engine.send_request(sa, ExchangeType.INFORMATIONAL,
                              [codec.UnknownPayload(222, b"?", critical=True)],
                              lambda engine, sa, message: answers.append(message))
        await until(lambda: answers)
        [answer] = answers
        refused = answer.notify(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD)
        assert refused is not None and refused.data == bytes([222])
        assert b.engine.counters["malformed"] == 1
        [peer_sa] = b.engine.sas.values()
        assert peer_sa.state == IkeState.ESTABLISHED
        a.engine.close()
        b.engine.close()
    run(main())
