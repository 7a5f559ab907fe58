"""RFC 7383 IKE fragmentation between two espd engines over loopback UDP (real codec and
crypto): negotiation, fragments out of order, repeated, lost, forged, too many and too
large; the responder's cached response is the whole fragment set."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from support.ike_pair import established, pair, settings_pair, until

from espd.ike import codec
from espd.ike.codec import ExchangeType
from espd.ike.codec.fragments import _seal_fragment
from espd.ike.codec.limits import MAX_FRAGMENTS, MAX_REASSEMBLY_SIZE
from espd.ike.engine import fragmentation
from espd.ike.sa.ike_sa import IkeState

SMALL = 200  # bytes of IP datagram: every IKE_AUTH of the pair needs several fragments


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def small(size: int = SMALL, **kw):
    a, b = settings_pair(0)
    return (replace(a, fragment_size=size, **kw), replace(b, fragment_size=size, **kw))


def skf_number(data: bytes) -> int | None:
    """The fragment number of a datagram as sent (UDP 4500 ones carry the marker)."""
    try:
        message = codec.decode_message(data[4:] if data[:4] == bytes(4) else data)
    except codec.ParseError:
        return None
    return fragmentation.number_of(message)


class Wire:
    """Wraps one side's transport.send: ``rule(data, count)`` returns the datagrams to send
    instead (``count``: how many SKF datagrams went through this wrapper before)."""

    def __init__(self, side, rule) -> None:
        self.sent_skf: list[bytes] = []
        self._send = side.transport.send
        self.rule = rule
        side.transport.send = self.send

    def send(self, local, remote, data) -> None:
        out = [data]
        if skf_number(data) is not None:
            out = self.rule(data, len(self.sent_skf))
            self.sent_skf.append(data)
        for datagram in out:
            self._send(local, remote, datagram)


def keys_match(a, b) -> None:
    [ia], [ib] = a.owner.live(), b.owner.live()
    assert ia.key_out == ib.key_in and ia.key_in == ib.key_out


def test_fragmentation_is_negotiated_and_ike_auth_goes_out_in_fragments_both_ways():
    async def main():
        a, b = pair(asyncio.get_running_loop(), *small())
        wire_a, wire_b = Wire(a, lambda d, n: [d]), Wire(b, lambda d, n: [d])
        sa, peer = await established(a, b)
        keys_match(a, b)
        assert sa.fragmentation and peer.fragmentation
        for side, wire in ((a, wire_a), (b, wire_b)):
            counters = side.engine.counters
            assert counters["messages_fragmented"] == 1  # its IKE_AUTH message
            assert counters["fragments_sent"] == len(wire.sent_skf) >= 2
            assert counters["messages_reassembled"] == 1  # the other's
            assert all(len(d) <= SMALL - 28 for d in wire.sent_skf)  # IPv4 + UDP headers
        assert b.engine.counters["fragments_received"] == len(wire_a.sent_skf)
        assert len(peer.responses.last_response) == len(wire_b.sent_skf)  # the cached set
        assert not sa.reassembly and not peer.reassembly
        # a small message still goes whole: DPD's empty INFORMATIONAL
        before = len(wire_a.sent_skf)
        from espd.ike.exchanges import informational
        informational.start_dpd(a.engine, sa)
        await until(lambda: not sa.requests.busy)
        assert len(wire_a.sent_skf) == before
        a.engine.close()
        b.engine.close()
    run(main())


def test_without_the_peers_notify_nothing_is_fragmented(monkeypatch):
    monkeypatch.setattr(fragmentation, "offered", lambda message: False)
    async def main():
        a, b = pair(asyncio.get_running_loop(), *small())
        wire_a, wire_b = Wire(a, lambda d, n: [d]), Wire(b, lambda d, n: [d])
        sa, peer = await established(a, b)
        assert not sa.fragmentation and not peer.fragmentation
        assert wire_a.sent_skf == wire_b.sent_skf == []
        assert a.engine.counters["messages_fragmented"] == 0
        # an SKF from a peer that did not negotiate fragmentation is dropped, not held
        header = codec.request_header(codec.SpiPair(sa.spi_i, sa.spi_r),
                                      ExchangeType.INFORMATIONAL, sa.requests.next_id,
                                      original_initiator=True)
        [datagram] = codec.encrypt_fragments(header, [], sa.sk_out, 1000)
        b.engine.receive(datagram, peer.local, peer.remote)
        assert b.engine.counters["malformed"] == 1 and not peer.reassembly
        a.engine.close()
        b.engine.close()
    run(main())


def test_fragments_out_of_order_and_repeated_are_reassembled_once():
    async def main():
        a, b = pair(asyncio.get_running_loop(), *small(150))
        held: list[bytes] = []

        def reverse_and_repeat(data, n):  # hold a's IKE_AUTH set: back to front, each twice
            held.append(data)
            if len(held) < a.engine.counters["fragments_sent"]:
                return []
            return [d for d in reversed(held) for _ in (1, 2)]
        Wire(a, reverse_and_repeat)
        await established(a, b)
        keys_match(a, b)
        counters = b.engine.counters
        total = a.engine.counters["fragments_sent"]
        assert total >= 3
        # every copy but the last was held or ignored as a repeat; the last copy of fragment
        # 1 came after the message was complete: a retransmission, answered from the cache
        assert counters["fragments_received"] == 2 * total - 1
        assert counters["messages_reassembled"] == 1 and len(b.owner.installed) == 1
        assert counters["retransmitted_requests"] == 1
        a.engine.close()
        b.engine.close()
    run(main())


def test_a_fragment_with_a_bad_icv_is_dropped_alone_and_the_retransmission_completes():
    async def main():
        a, b = pair(asyncio.get_running_loop(), *small())

        def forge_second(data, n):
            if n == 1:  # fragment 2 of the first transmission: flip a bit of its ICV
                return [data[:-1] + bytes([data[-1] ^ 1])]
            return [data]
        Wire(a, forge_second)
        sa, peer = await established(a, b)
        keys_match(a, b)
        assert b.engine.counters["integrity_failures"] == 1
        assert a.engine.counters["retransmissions"] == 1
        assert b.engine.counters["messages_reassembled"] == 1
        assert sa.state == peer.state == IkeState.ESTABLISHED
        a.engine.close()
        b.engine.close()
    run(main())


def test_an_incomplete_message_is_dropped_after_the_timeout_and_a_retransmission_recovers():
    async def main():
        a, b = small(retransmit_timeout=0.6, fragment_timeout=0.2)
        a, b = pair(asyncio.get_running_loop(), a, b)
        Wire(a, lambda data, n: [] if n == 1 else [data])  # the first set loses fragment 2
        sa = a.engine.initiate(a.settings.children[0])
        await until(lambda: b.engine.sas and next(iter(b.engine.sas.values())).reassembly)
        [peer] = b.engine.sas.values()
        held = peer.reassembly[False]
        assert held.received == held.total - 1
        await until(lambda: b.engine.counters["reassembly_timeouts"] == 1, timeout=2)
        assert not peer.reassembly and "reassembly-request" not in peer.timers
        await until(lambda: a.owner.live() and b.owner.live(), timeout=5)
        keys_match(a, b)
        assert sa.state == IkeState.ESTABLISHED
        a.engine.close()
        b.engine.close()
    run(main())


def test_a_lost_response_set_is_resent_whole_for_fragment_one_of_the_retransmission():
    async def main():
        a, b = pair(asyncio.get_running_loop(), *small())
        # b's first response set is lost on the way to a
        wire_b = Wire(b, lambda data, n: [] if a.engine.counters["retransmissions"] == 0
                      else [data])
        sa, peer = await established(a, b)
        keys_match(a, b)
        response_set = len(peer.responses.last_response)
        assert response_set >= 2
        assert a.engine.counters["retransmissions"] == 1
        assert b.engine.counters["retransmitted_requests"] == 1  # not once per fragment
        assert len(wire_b.sent_skf) == 2 * response_set  # the set, then the set again
        assert len(b.owner.installed) == 1  # IKE_AUTH was processed once
        a.engine.close()
        b.engine.close()
    run(main())


async def _established_small():
    a, b = pair(asyncio.get_running_loop(), *small())
    sa, peer = await established(a, b)
    header = codec.request_header(codec.SpiPair(sa.spi_i, sa.spi_r), ExchangeType.INFORMATIONAL,
                                  sa.requests.next_id, original_initiator=True)
    return a, b, sa, peer, header


def test_more_fragments_than_the_limit_are_refused():
    async def main():
        a, b, sa, peer, header = await _established_small()
        too_many = _seal_fragment(header, 0, 1, MAX_FRAGMENTS + 1, b"x", sa.sk_out)
        b.engine.receive(too_many, peer.local, peer.remote)
        assert b.engine.counters["malformed"] == 1 and not peer.reassembly
        # the window is untouched: the real request with that message ID goes through
        from espd.ike.exchanges import informational
        informational.start_dpd(a.engine, sa)
        await until(lambda: not sa.requests.busy)
        assert sa.state == IkeState.ESTABLISHED
        a.engine.close()
        b.engine.close()
    run(main())


def test_fragments_adding_up_past_the_reassembly_limit_are_dropped():
    async def main():
        a, b, sa, peer, header = await _established_small()
        chunk = bytes(MAX_REASSEMBLY_SIZE // 2 + 64)
        for number in (1, 2):
            fragment = _seal_fragment(header, 0, number, 3, chunk, sa.sk_out)
            b.engine.receive(fragment, peer.local, peer.remote)
        assert b.engine.counters["fragments_received"] >= 2
        assert b.engine.counters["malformed"] == 1
        assert not peer.reassembly and "reassembly-request" not in peer.timers
        from espd.ike.exchanges import informational
        informational.start_dpd(a.engine, sa)
        await until(lambda: not sa.requests.busy)
        assert sa.state == IkeState.ESTABLISHED
        a.engine.close()
        b.engine.close()
    run(main())


def test_fragments_of_a_message_outside_the_window_are_not_kept():
    async def main():
        a, b, sa, peer, header = await _established_small()
        ahead = replace(header, message_id=header.message_id + 5)
        fragment = _seal_fragment(ahead, 0, 1, 2, b"x" * 16, sa.sk_out)
        b.engine.receive(fragment, peer.local, peer.remote)
        assert b.engine.counters["stale_requests"] == 1 and not peer.reassembly
        a.engine.close()
        b.engine.close()
    run(main())


@pytest.mark.parametrize(("size", "local", "nat", "expected"), [
    (1280, "192.0.2.1", False, 1252), (1280, "192.0.2.1", True, 1248),
    (1280, "2001:db8::1", True, 1228), (400, "192.0.2.1", True, 368)])
def test_the_fragment_size_counts_the_whole_ip_datagram(size, local, nat, expected):
    import ipaddress

    from espd.ike.sa.ike_sa import Endpoint
    endpoint = Endpoint(ipaddress.ip_address(local), 4500 if nat else 500)
    assert fragmentation.message_limit(size, endpoint, 4500) == expected


def test_a_rekeyed_ike_sa_keeps_fragmentation_and_its_rekeys_go_in_fragments():
    async def main():
        from espd.ike.exchanges import create_child_sa

        a, b = pair(asyncio.get_running_loop(), *small(150))
        sa, peer = await established(a, b)
        [child] = sa.children.values()
        create_child_sa.start_ike_rekey(a.engine, sa)  # SA, KE, Nonce: several fragments
        await until(lambda: sa.state == IkeState.DELETED and peer.state == IkeState.DELETED)
        [new_a], [new_b] = a.engine.sas.values(), b.engine.sas.values()
        assert new_a.fragmentation and new_b.fragmentation
        assert a.engine.counters["messages_fragmented"] >= 2  # IKE_AUTH and the rekey
        assert b.engine.counters["messages_reassembled"] >= 2
        reassembled = b.engine.counters["messages_reassembled"]
        create_child_sa.start_rekey(a.engine, new_a, child)  # under the new IKE SA's keys
        await until(lambda: len(a.owner.retired) == 1 and len(b.owner.retired) == 1)
        assert b.engine.counters["messages_reassembled"] > reassembled
        a.engine.close()
        b.engine.close()
    run(main())
