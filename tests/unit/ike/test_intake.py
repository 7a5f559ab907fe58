"""What one loop turn of received IKE may cost (engine/intake.py): configured peers
first, everyone else on a per-turn time budget, the rest shed; through real UDP sockets
and the real engine."""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import os
import socket

from support.ike_pair import GCM_X25519, pair, until

from espd.ike import codec, proposals
from espd.ike.codec import ExchangeType
from espd.ike.engine import transport as transport_module
from espd.ike.engine.intake import Intake
from espd.ike.engine.transport import UdpTransport
from espd.ike.exchanges.payloads import sa_payload
from espd.ike.sa.ike_sa import Endpoint

PEER, STRANGER = "127.0.0.2", "127.0.0.3"
HERE = Endpoint(ipaddress.ip_address("127.0.0.1"), 500)


def datagram(source: str, tag: bytes):
    return (tag, HERE, (source, 500))


class Clock:
    """A clock each handled datagram moves on by ``cost`` seconds."""

    def __init__(self, cost: float) -> None:
        self.now, self.cost = 0.0, cost

    def __call__(self) -> float:
        return self.now

    def handler(self, got: list):
        def handle(data, _local, _remote):
            got.append(data)
            self.now += self.cost
        return handle


def test_peers_first_the_rest_on_the_turns_budget_then_in_later_turns():
    async def main():
        loop = asyncio.get_running_loop()
        clock, counters, got = Clock(0.004), collections.Counter(), []
        intake = Intake(loop, {PEER}.__contains__, counters, budget=0.010, clock=clock)
        batch = [datagram(STRANGER, b"s%d" % i) for i in range(5)]
        batch.insert(3, datagram(PEER, b"p1"))
        batch.append(datagram(PEER, b"p2"))
        intake.take(batch, clock.handler(got))
        # the peer's datagrams went first (in order) whatever they cost; strangers were
        # handled at 0, 4 and 8 ms of the budget; at 12 ms the other two wait
        assert got == [b"p1", b"p2", b"s0", b"s1", b"s2"]
        assert len(intake.backlog) == 2 and not counters["shed"]
        got.clear()  # same turn: the budget is spent, a peer still gets through at once
        intake.take([datagram(STRANGER, b"s5"), datagram(PEER, b"p3")], clock.handler(got))
        assert got == [b"p3"]
        await asyncio.sleep(0)  # the next turn: a budget for the backlog, oldest first
        assert got == [b"p3", b"s3", b"s4", b"s5"] and not intake.backlog
        assert not counters["shed"]
        intake.close()
    asyncio.run(main())


def test_the_backlog_is_bounded_in_datagrams_and_bytes_and_sheds_the_oldest():
    async def main():
        loop = asyncio.get_running_loop()
        counters, got = collections.Counter(), []
        intake = Intake(loop, {PEER}.__contains__, counters, budget=0.0, backlog=3,
                        backlog_bytes=10)
        handle = Clock(0.0).handler(got)
        intake.take([datagram(STRANGER, b"%d" % i) for i in range(5)], handle)
        assert [d[0] for d, _ in intake.backlog] == [b"2", b"3", b"4"]
        assert counters["shed"] == 2 and intake.backlog_bytes == 3
        intake.take([datagram(STRANGER, b"x" * 9)], handle)  # 12 bytes: two go
        assert [d[0] for d, _ in intake.backlog] == [b"4", b"x" * 9]
        assert counters["shed"] == 4 and intake.backlog_bytes == 10 and not got
        intake.close()
        assert not intake.backlog and intake._resume is None
    asyncio.run(main())


def test_a_peers_datagram_behind_a_flood_is_read_and_handled_in_the_same_turn(monkeypatch):
    """Hundreds of strangers' datagrams wait in the socket ahead of the peer's: one turn
    reads a batch of them and the peer's is handled in it, although the strangers get
    no budget (nor backlog: each is shed); what the turn did not read waits for the
    next turn."""
    READ_BATCH = 200  # (smaller than espd's, to fit a default socket buffer)
    monkeypatch.setattr(transport_module, "READ_BATCH", READ_BATCH)

    async def main():
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        transport = UdpTransport(loop, [Endpoint(HERE.address, port)])
        counters, got = collections.Counter(), []
        turns: list[int] = []
        intake = Intake(loop, {PEER}.__contains__, counters, budget=0.0, backlog=0)
        transport.attach(lambda data, local, remote: got.append(data), intake)
        real_take = intake.take
        intake.take = lambda batch, handle: (turns.append(len(batch)),
                                             real_take(batch, handle))
        flood = READ_BATCH + 20
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            stranger.bind((STRANGER, 0))
            peer.bind((PEER, 0))
            for i in range(READ_BATCH - 10):
                stranger.sendto(b"x%d" % i, ("127.0.0.1", port))
            peer.sendto(b"peer", ("127.0.0.1", port))
            for i in range(READ_BATCH - 10, flood):
                stranger.sendto(b"x%d" % i, ("127.0.0.1", port))
            await until(lambda: counters["shed"] == flood, timeout=5)
        assert got == [b"peer"]
        assert turns[0] == READ_BATCH and sum(turns) == flood + 1, turns
        transport.close()
    asyncio.run(main())


def init_request() -> bytes:
    header = codec.request_header(codec.SpiPair(os.urandom(8)), ExchangeType.IKE_SA_INIT, 0,
                                  original_initiator=True)
    payloads = (sa_payload(proposals.ike_offer((GCM_X25519,))),
                codec.KeyExchange(31, os.urandom(32)), codec.Nonce(os.urandom(32)))
    return codec.encode_message(codec.Message(header, payloads))


def test_the_engine_puts_punted_udp_4500_through_its_intake():
    """The SA owner's batch of punted datagrams: the configured peer's IKE_SA_INIT is
    answered at once, a stranger's with no budget or backlog left is shed (counted,
    exported as `shed`)."""
    async def main():
        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        sent = []
        b.engine.transport.send = lambda local, remote, data: sent.append(remote)
        b.engine.intake.budget, b.engine.intake.limit = 0.0, 0
        local = b.settings.children[0].local
        peer = a.settings.children[0].local
        b.engine.on_ike_datagrams([
            (str(local), 4500, "203.0.113.9", 4500, init_request()),
            (str(local), 4500, str(peer), 4500, init_request())])
        assert [r.address for r in sent] == [peer]
        assert b.engine.counters["shed"] == 1
        assert b.engine.counters["ike_sa_init_requests"] == 1
        a.engine.close()
        b.engine.close()
    asyncio.run(main())
