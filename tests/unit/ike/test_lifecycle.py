"""After IKE_AUTH: CREATE_CHILD_SA (new, rekey, PFS, IKE SA rekey, collisions), DELETE both
ways, DPD, and hostile input — two espd engines over loopback, fake SA owners."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from support.ike_pair import established, pair, until

from espd.ike.exchanges import create_child_sa
from espd.ike.sa.child_sa import ChildState
from espd.ike.sa.ike_sa import IkeState


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def up(loop, a_settings=None, b_settings=None, **kw):
    a, b = pair(loop)
    if a_settings:
        a.engine.settings = a_settings(a.settings)
    if b_settings:
        b.engine.settings = b_settings(b.settings)
    sa = a.engine.initiate(a.engine.settings.children[0])
    await until(lambda: a.owner.live() and b.owner.live())
    [peer_sa] = b.engine.sas.values()
    return a, b, sa, peer_sa


def crossed(a, b) -> None:
    """Every live SA pair on one side has its mirror on the other, keys equal."""
    live_a = {i.spec.spi_in: i for i in a.owner.live()}
    live_b = {i.spec.spi_out: i for i in b.owner.live()}
    assert live_a.keys() == live_b.keys()
    for spi, ia in live_a.items():
        assert ia.key_in == live_b[spi].key_out and ia.key_out == live_b[spi].key_in


def test_child_rekey_is_make_before_break_and_deletes_the_old_sa():
    async def main():
        loop = asyncio.get_running_loop()
        a, b, sa, peer_sa = await up(loop)
        [old] = sa.children.values()
        old_handle = old.handle
        create_child_sa.start_rekey(a.engine, sa, old)
        await until(lambda: len(a.owner.retired) == 1 and len(b.owner.retired) == 1)
        assert a.owner.log == [("install", old.spi_in), ("rekey", a.owner.log[1][1]),
                               ("retire", old.spi_in)]
        [new] = a.owner.live()
        assert new.replaced == old_handle and a.owner.slots[("vpn", 10)] == new.handle
        assert b.owner.live()[0].replaced is not None  # the responder rekeyed, too
        crossed(a, b)
        assert new.key_out != a.owner.installed[old_handle.id].key_out
        assert a.engine.counters["child_rekeys"] == b.engine.counters["child_rekeys"] == 1
    run(main())


def test_pfs_rekey_and_a_new_child_sa():
    async def main():
        loop = asyncio.get_running_loop()

        def pfs(s):
            return replace(s, children=(replace(s.children[0], pfs=19),))
        a, b, sa, _ = await up(loop, pfs, pfs)
        [old] = sa.children.values()
        create_child_sa.start_rekey(a.engine, sa, old)
        await until(lambda: len(a.owner.retired) == 1 and len(b.owner.retired) == 1)
        crossed(a, b)
        create_child_sa.start_new_child(a.engine, sa, a.engine.settings.children[0])
        await until(lambda: len(a.owner.live()) == 2 and len(b.owner.live()) == 2)
        crossed(a, b)
    run(main())


def test_responder_rekeys_too_and_the_initiator_answers():
    async def main():
        loop = asyncio.get_running_loop()
        a, b, sa, peer_sa = await up(loop)
        [old] = peer_sa.children.values()
        create_child_sa.start_rekey(b.engine, peer_sa, old)
        await until(lambda: len(a.owner.retired) == 1 and len(b.owner.retired) == 1)
        crossed(a, b)
    run(main())


def test_simultaneous_child_rekeys_leave_one_pair_by_the_nonce_rule():
    async def main():
        loop = asyncio.get_running_loop()
        a, b, sa, peer_sa = await up(loop)
        [old_a] = sa.children.values()
        [old_b] = peer_sa.children.values()
        create_child_sa.start_rekey(a.engine, sa, old_a)
        create_child_sa.start_rekey(b.engine, peer_sa, old_b)
        await until(lambda: len(a.owner.live()) == 1 and len(b.owner.live()) == 1
                    and not sa.requests.busy and not peer_sa.requests.busy
                    and all(c.state == ChildState.INSTALLED for c in sa.children.values())
                    and all(c.state == ChildState.INSTALLED
                            for c in peer_sa.children.values()), timeout=10)
        crossed(a, b)
        [survivor_a] = a.owner.live()
        assert a.owner.slots[("vpn", 10)] == survivor_a.handle
        assert b.owner.slots[("vpn", 10)] == b.owner.live()[0].handle
        collided = a.engine.counters["rekey_collisions"] + b.engine.counters["rekey_collisions"]
        assert collided >= 1
    run(main())


def test_ike_sa_rekey_moves_the_child_sas():
    async def main():
        loop = asyncio.get_running_loop()
        a, b, sa, peer_sa = await up(loop)
        [child] = sa.children.values()
        create_child_sa.start_ike_rekey(a.engine, sa)
        await until(lambda: sa.state == IkeState.DELETED and peer_sa.state == IkeState.DELETED)
        [new_a], [new_b] = a.engine.sas.values(), b.engine.sas.values()
        assert new_a.spis == new_b.spis and new_a.spis != sa.spis
        assert new_a.state == new_b.state == IkeState.ESTABLISHED
        assert child.spi_in in new_a.children and not a.owner.retired  # children kept
        # the new IKE SA works: rekey the child under it
        create_child_sa.start_rekey(a.engine, new_a, child)
        await until(lambda: len(a.owner.retired) == 1 and len(b.owner.retired) == 1)
        crossed(a, b)
    run(main())


async def one_ike_sa_each(a, b, timeout: float = 5.0):
    """Until each side holds exactly one live IKE SA, established and idle; those two."""
    def settled() -> bool:
        live = [[x for x in side.engine.sas.values() if x.state != IkeState.DELETED]
                for side in (a, b)]
        return all(len(x) == 1 and x[0].state == IkeState.ESTABLISHED
                   and not x[0].requests.busy and not x[0].timers.keys() & {"redundant"}
                   for x in live)
    await until(settled, timeout=timeout)
    [new_a], [new_b] = a.engine.sas.values(), b.engine.sas.values()
    return new_a, new_b


def test_simultaneous_ike_sa_rekeys_leave_one_ike_sa_by_the_nonce_rule():
    """Both ends rekey the IKE SA at once, round after round, until each end has lost at
    least once: both exchanges complete (no TEMPORARY_FAILURE), the loser deletes its
    redundant new IKE SA, the winner's new IKE SA holds the Child SA on both sides, and
    nothing reaches the SA owner (a Child SA is never touched by an IKE SA rekey)."""
    async def main():
        loop = asyncio.get_running_loop()
        a, b, sa, peer_sa = await up(loop)
        [child] = sa.children.values()
        lost = {"a": 0, "b": 0}
        for _round in range(20):
            before = {k: s.engine.counters["ike_rekey_collisions_lost"]
                      for k, s in (("a", a), ("b", b))}
            create_child_sa.start_ike_rekey(a.engine, sa)
            create_child_sa.start_ike_rekey(b.engine, peer_sa)
            new_a, new_b = await one_ike_sa_each(a, b)
            assert sa.state == peer_sa.state == IkeState.DELETED
            assert new_a.spis == new_b.spis and new_a.spis != sa.spis
            losers = [k for k, s in (("a", a), ("b", b))
                      if s.engine.counters["ike_rekey_collisions_lost"] > before[k]]
            assert len(losers) == 1, losers  # both ends applied the same rule
            lost[losers[0]] += 1
            # the surviving IKE SA is the one the winner initiated
            assert new_a.initiator == (losers[0] == "b") and new_b.initiator == (
                losers[0] == "a")
            assert list(new_a.children.values()) == [child]
            assert a.engine.children[child.spi_in] == (new_a, child)
            assert len(new_b.children) == 1
            sa, peer_sa = new_a, new_b
            if lost["a"] and lost["b"]:
                break
        assert lost["a"] and lost["b"], lost
        rounds = lost["a"] + lost["b"]
        for side in (a, b):
            assert side.engine.counters["ike_rekey_collisions"] == rounds
            assert side.engine.counters["ike_rekeys"] == rounds  # one per round, not two
            assert side.engine.counters["temporary_failures"] == 0
            assert not side.owner.retired and len(side.owner.live()) == 1
        # the surviving IKE SA works: rekey the Child SA under it
        create_child_sa.start_rekey(a.engine, sa, child)
        await until(lambda: len(a.owner.retired) == 1 and len(b.owner.retired) == 1)
        crossed(a, b)
    run(main())


def test_child_rekey_due_during_an_ike_sa_rekey_runs_under_the_new_ike_sa():
    async def main():
        loop = asyncio.get_running_loop()
        a, b, sa, _ = await up(loop)
        [child] = sa.children.values()
        create_child_sa.start_ike_rekey(a.engine, sa)
        create_child_sa.start_rekey(a.engine, sa, child)  # put off, not dropped
        assert child.state == ChildState.INSTALLED and child.rekey_timer is not None
        await until(lambda: len(a.owner.retired) == 1 and len(b.owner.retired) == 1,
                    timeout=6)
        [new_a] = a.engine.sas.values()
        assert new_a is not sa and len(new_a.children) == 1 and child not in \
            new_a.children.values()
        crossed(a, b)
    run(main())


def drop_first(side, exchange: int, response: bool) -> None:
    """Make `side` lose the first datagram it sends of that exchange type and direction
    (IKE header: exchange type at byte 18, the Response flag 0x20 at 19)."""
    send, dropped = side.transport.send, []

    def lossy(local, remote, data: bytes) -> None:
        if not dropped and len(data) > 19 and data[18] == exchange and bool(
                data[19] & 0x20) == response:
            dropped.append(data)
            return
        send(local, remote, data)
    side.transport.send = lossy


@pytest.mark.parametrize("lost", ["request", "request and delete"])
def test_ike_rekey_collision_seen_by_one_side_only(lost):
    """b's rekey request is lost, so b sees a's rekey while its own is in flight but a sees
    no collision: a finishes a normal rekey and deletes the old IKE SA. b lets a's new IKE
    SA stand, on a's DELETE of the old one or (that DELETE lost too) on TEMPORARY_FAILURE
    for its retransmitted request; either way the Child SA moves, it is not deleted."""
    async def main():
        loop = asyncio.get_running_loop()
        a, b, sa, peer_sa = await up(loop)
        [child] = sa.children.values()
        [peer_child] = peer_sa.children.values()
        drop_first(b, 36, response=False)  # CREATE_CHILD_SA request
        if lost == "request and delete":
            drop_first(a, 37, response=False)  # INFORMATIONAL request: the DELETE
        create_child_sa.start_ike_rekey(b.engine, peer_sa)
        create_child_sa.start_ike_rekey(a.engine, sa)
        new_a, new_b = await one_ike_sa_each(a, b)
        assert new_a.spis == new_b.spis and new_a.initiator and not new_b.initiator
        assert list(new_a.children.values()) == [child]
        assert list(new_b.children.values()) == [peer_child]
        assert b.engine.children[peer_child.spi_in] == (new_b, peer_child)
        assert a.engine.counters["ike_rekey_collisions"] == 0
        assert b.engine.counters["ike_rekey_collisions"] == 1
        assert a.engine.counters["ike_rekeys"] == b.engine.counters["ike_rekeys"] == 1
        assert not a.owner.retired and not b.owner.retired
        create_child_sa.start_rekey(b.engine, new_b, peer_child)
        await until(lambda: len(a.owner.retired) == 1 and len(b.owner.retired) == 1)
        crossed(a, b)
    run(main())


def test_delete_from_either_side_removes_the_sas_at_once():
    async def main():
        loop = asyncio.get_running_loop()
        a, b, sa, peer_sa = await up(loop)
        [child] = peer_sa.children.values()
        b.engine.delete_child(peer_sa, child, notify_peer=True, reason="test")
        await until(lambda: not a.owner.live() and not b.owner.live())
        assert a.owner.slots[("vpn", 10)] is None  # fail closed until a new child
        assert sa.state == IkeState.ESTABLISHED
        create_child_sa.start_new_child(a.engine, sa, a.engine.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        a.engine.delete_ike_sa(sa)
        await until(lambda: not a.engine.sas and not b.engine.sas)
        assert not a.owner.live() and not b.owner.live()
    run(main())


def test_dead_peer_detection_deletes_the_sas():
    async def main():
        loop = asyncio.get_running_loop()
        from espd.ike.settings import Dpd

        a, b, sa, _ = await up(loop, lambda s: replace(s, dpd=Dpd(interval=0.1)))
        await asyncio.sleep(0.3)
        assert a.engine.counters["dpd_sent"] >= 1 and b.engine.counters["dpd_answered"] >= 1
        assert sa.state == IkeState.ESTABLISHED  # a live peer answers
        b.transport.close()  # the peer dies
        await until(lambda: sa.state == IkeState.DELETED, timeout=10)
        assert not a.owner.live() and a.engine.counters["peers_dead"] == 1
    run(main())


def test_next_peer_is_tried_when_the_first_is_dead():
    async def main():
        import ipaddress

        from espd.ike.settings import Peer

        loop = asyncio.get_running_loop()
        dead = ipaddress.ip_address("127.0.0.9")
        a, b = pair(loop)
        policy = replace(a.settings.children[0], peers=(dead, *a.settings.children[0].peers))
        a.engine.settings = replace(a.settings, children=(policy,), peers=(
            Peer(dead, a.settings.peers[0].psk, port=a.settings.port),
            *a.settings.peers))
        a.engine.initiate(policy)
        await until(lambda: a.owner.live() and b.owner.live(), timeout=10)
        assert a.engine.counters["peers_dead"] == 1
    run(main())


def test_acquire_starts_negotiation_on_demand():
    async def main():
        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        a.engine.settings = replace(a.settings, children=(replace(
            a.settings.children[0], start="on-demand"),))
        a.engine.on_acquire(("vpn", 10), "10.1.0.5", "10.2.0.7", 1, 0, 0)
        a.engine.on_acquire(("vpn", 10), "10.1.0.5", "10.2.0.7", 1, 0, 0)  # no second SA
        await until(lambda: a.owner.live() and b.owner.live())
        assert len(a.engine.sas) == 1 and len(a.owner.installed) == 1
    run(main())


def test_malformed_replayed_and_forged_messages_change_nothing():
    async def main():
        from espd.ike import codec

        loop = asyncio.get_running_loop()
        captured = []
        a, b = pair(loop)
        send = a.transport.send

        def tap(local, remote, data):
            captured.append(data)
            send(local, remote, data)
        a.transport.send = tap
        sa, peer_sa = await established(a, b)
        here, there = sa.local, sa.remote
        auth_request = captured[-1]
        next_id = bytearray(auth_request)
        next_id[20:24] = (2).to_bytes(4, "big")  # in window, but the ICV covers the header
        for garbage in (b"", b"\x00" * 3, b"\xff" * 28, auth_request[:40], bytes(next_id),
                        b"x" * 70000):
            b.engine.receive(garbage, there, here)
        b.engine.receive(auth_request, there, here)  # a replayed IKE_AUTH
        forged = bytearray(auth_request)
        forged[20:24] = (7).to_bytes(4, "big")  # message ID out of window
        b.engine.receive(bytes(forged), there, here)
        wrong_spi = bytes(8) + auth_request[8:]
        b.engine.receive(wrong_spi, there, here)
        await asyncio.sleep(0.05)
        assert peer_sa.state == IkeState.ESTABLISHED and len(b.owner.installed) == 1
        counters = b.engine.counters
        assert counters["malformed"] >= 3 and counters["integrity_failures"] >= 1
        assert counters["retransmitted_requests"] >= 1 and counters["stale_requests"] >= 1
        assert counters["unknown_spi"] >= 1 and counters["internal_errors"] == 0
        # a message nobody asked for: a response with no request outstanding
        reply = codec.decode_message(auth_request)
        header = reply.header.response(original_initiator=False)
        b.engine.receive(codec.encode_message(codec.Message(header, reply.payloads)),
                         there, here)
        assert b.engine.counters["internal_errors"] == 0
    run(main())


def test_rekey_of_an_sa_the_peer_lacks_gets_child_sa_not_found_and_a_new_child():
    async def main():
        from espd.ike.sa.child_sa import ChildSa

        loop = asyncio.get_running_loop()
        a, b, sa, peer_sa = await up(loop)
        [real] = sa.children.values()
        ghost = ChildSa(real.entry, a.engine.new_child_spi(), spi_out=0x4242,
                        state=ChildState.INSTALLED, handle=real.handle)
        sa.children[ghost.spi_in] = ghost
        a.engine.index_child(sa, ghost)
        create_child_sa.start_rekey(a.engine, sa, ghost)
        await until(lambda: ghost.state == ChildState.DELETED
                    and len(a.owner.installed) == 2 and len(b.owner.installed) == 2)
        assert ghost.spi_in not in sa.children
    run(main())


def test_rekey_of_an_sa_being_deleted_gets_temporary_failure():
    async def main():
        loop = asyncio.get_running_loop()
        a, b, sa, peer_sa = await up(loop)
        [child] = sa.children.values()
        [theirs] = peer_sa.children.values()
        theirs.state = ChildState.DELETING  # the peer is about to delete it
        create_child_sa.start_rekey(a.engine, sa, child)
        await until(lambda: a.engine.counters["temporary_failures"] == 1)
        assert child.state == ChildState.INSTALLED and len(a.owner.installed) == 1
        assert sa.state == IkeState.ESTABLISHED
    run(main())


def test_hostile_ike_sa_init_requests_are_refused_without_state():
    async def main():
        import os

        from support.ike_pair import GCM_X25519

        from espd.ike import codec, proposals
        from espd.ike.codec import ExchangeType, NotifyType
        from espd.ike.exchanges.payloads import sa_payload

        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        answers = []
        send = b.transport.send
        b.transport.send = lambda local, remote, data: (answers.append(
            codec.decode_message(data)), send(local, remote, data))
        here = next(e for e in b.transport.endpoints if e.port == b.settings.port)
        there = next(e for e in a.transport.endpoints if e.port == a.settings.port)

        def init(*payloads):
            header = codec.request_header(codec.SpiPair(os.urandom(8)),
                                          ExchangeType.IKE_SA_INIT, 0,
                                          original_initiator=True)
            b.engine.receive(codec.encode_message(codec.Message(header, payloads)),
                             there, here)
            return answers[-1].errors[0].type if answers else None

        offer = sa_payload(proposals.ike_offer([GCM_X25519]))
        nonce = codec.Nonce(os.urandom(32))
        assert init(offer, codec.KeyExchange(31, b"short"), nonce) == \
            NotifyType.INVALID_SYNTAX  # X25519 takes 32 bytes
        assert init(offer, codec.KeyExchange(31, bytes(32)), nonce) == \
            NotifyType.INVALID_SYNTAX  # the all-zero point (RFC 8031)
        assert init(offer, nonce) == NotifyType.INVALID_SYNTAX  # no KE at all
        assert init(offer, codec.KeyExchange(19, os.urandom(64)), nonce) == \
            NotifyType.INVALID_KE_PAYLOAD
        assert answers[-1].errors[0].data == (31).to_bytes(2, "big")
        assert not b.engine.sas and not b.engine.half_open  # no state for any of them
        assert b.engine.counters["internal_errors"] == 0
    run(main())


def test_delete_naming_someone_elses_spi_changes_nothing():
    async def main():
        from espd.ike import codec
        from espd.ike.codec import ExchangeType, ProtocolId

        loop = asyncio.get_running_loop()
        a, b, sa, peer_sa = await up(loop)
        a.engine.send_request(sa, ExchangeType.INFORMATIONAL,
                              [codec.Delete(ProtocolId.ESP, ((0x12345678).to_bytes(4, "big"),))],
                              lambda *_: None)
        await until(lambda: not sa.requests.busy)
        assert len(b.owner.live()) == 1 and len(a.owner.live()) == 1
    run(main())


def test_every_message_espd_emits_is_dissected_by_scapy():
    """An independent parser (scapy.contrib.ikev2) reads every datagram of a whole life:
    IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA, INFORMATIONAL; headers, lengths and the
    payload chain of the clear messages."""
    from scapy.contrib.ikev2 import IKEv2
    from scapy.packet import Raw

    async def main():
        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        sent: list[bytes] = []
        for s in (a, b):
            def tap(local, remote, data, send=s.transport.send):
                sent.append(data)
                send(local, remote, data)
            s.transport.send = tap
        sa = a.engine.initiate(a.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        [child] = sa.children.values()
        create_child_sa.start_rekey(a.engine, sa, child)
        await until(lambda: len(a.owner.retired) == 1 and len(b.owner.retired) == 1)
        create_child_sa.start_ike_rekey(a.engine, sa)
        await until(lambda: sa.state == IkeState.DELETED)
        [new] = a.engine.sas.values()
        a.engine.delete_ike_sa(new)
        await until(lambda: not a.engine.sas and not b.engine.sas)
        return sent

    sent = run(main())
    exchanges = set()
    for data in sent:
        packet = IKEv2(data)
        assert packet.length == len(data)
        exchanges.add(packet.exch_type)
        if packet.exch_type == 34:  # clear: every payload must parse, nothing left over
            names = [layer.__name__ for layer in packet.layers()]
            assert "IKEv2_SA" in names or "IKEv2_Notify" in names, names
            assert "IKEv2_KE" in names and "IKEv2_Nonce" in names
            assert not packet.haslayer(Raw), packet.show(dump=True)
        else:
            assert packet.next_payload == 46  # SK
    assert exchanges == {34, 35, 36, 37}


def test_on_demand_dpd_stays_quiet_while_esp_comes_in():
    async def main():
        import time

        from espd.ike.settings import Dpd

        loop = asyncio.get_running_loop()
        a, b, sa, _ = await up(loop, lambda s: replace(s, dpd=Dpd(interval=0.1,
                                                                  mode="on-demand")))
        a.owner.child_usage = lambda handle: {"last_in": time.monotonic()}  # ESP arrives
        await asyncio.sleep(0.35)
        assert a.engine.counters["dpd_sent"] == 0
        a.owner.child_usage = lambda handle: {"last_in": None}  # ESP stops
        await until(lambda: a.engine.counters["dpd_sent"] >= 1)
        assert sa.state == IkeState.ESTABLISHED
    run(main())


def test_half_open_ike_sa_times_out_on_the_responder():
    async def main():
        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        b.engine.settings = replace(b.settings, half_open_timeout=0.2)
        deliver = b.transport.receiver
        b.transport.receiver = lambda data, local, remote: (
            deliver(data, local, remote) if data[18] == 34 else None)  # IKE_SA_INIT only
        a.engine.initiate(a.settings.children[0])
        await until(lambda: len(b.engine.half_open) == 1)
        await until(lambda: not b.engine.half_open and not b.engine.sas)
    run(main())


def test_reauthentication_is_make_before_break(monkeypatch):
    """[ike] reauth_time on a only: a new IKE SA (IKE_SA_INIT + IKE_AUTH) carries a new
    Child SA, installed in place of the old one (the peer's outbound waits for it), and
    only then is the old IKE SA deleted: the entry always has a live pair on both sides.
    (The old IKE SA's DELETE waits 0.1 s here, not 1 s: before the next reauthentication
    of a 1 s reauth_time.)"""
    from espd.ike.exchanges import reauth

    monkeypatch.setattr(reauth, "DELETE_DELAY", 0.1)

    async def main():
        loop = asyncio.get_running_loop()
        a, b, sa, peer_sa = await up(loop, a_settings=lambda s: replace(s, reauth_time=1))
        [old] = sa.children.values()
        [old_b] = peer_sa.children.values()
        await until(lambda: a.engine.counters["reauths"] == 1
                    and peer_sa.state == IkeState.DELETED, timeout=5)
        assert sa.state == IkeState.DELETED
        [new_a], [new_b] = a.engine.sas.values(), b.engine.sas.values()
        assert new_a.spis == new_b.spis and new_a.spis != sa.spis
        assert new_a.peer_id is not None and new_b.peer_id is not None  # authenticated
        # the index by peer address that found the replaced Child SA holds only the new ones
        assert a.engine.ike_sas_of(new_a.remote.address) == [new_a]
        assert b.engine.ike_sas_of(new_b.remote.address) == [new_b]
        [child] = new_a.children.values()
        assert child is not old and old.rekeyed_by is child
        # a: the successor took the slot at once, then the old pair went;
        # b: the successor's outbound waited, and took the slot as the old pair went
        assert a.owner.log == [("install", old.spi_in), ("rekey", child.spi_in),
                               ("retire", old.spi_in)]
        [new_child_b] = new_b.children.values()
        assert b.owner.log == [("install", old_b.spi_in),
                               ("rekey-pending", new_child_b.spi_in),
                               ("retire", old_b.spi_in)]
        assert a.owner.slots[("vpn", 10)].spi_in == child.spi_in
        assert b.owner.slots[("vpn", 10)].spi_in == new_child_b.spi_in
        crossed(a, b)
        assert b.engine.counters["reauths"] == 0  # b never reauthenticated
    run(main())


def test_failed_reauthentication_keeps_the_old_ike_sa():
    """The peer never answers the new IKE_SA_INIT: the old IKE SA and its Child SA run
    on, untouched, and the failure is counted (another try comes later)."""
    async def main():
        loop = asyncio.get_running_loop()
        a, b, sa, _ = await up(loop, a_settings=lambda s: replace(s, reauth_time=1))
        send = a.transport.send
        a.transport.send = lambda local, remote, data: None if len(data) > 18 and \
            data[18] == 34 else send(local, remote, data)  # IKE_SA_INIT never leaves
        await until(lambda: a.engine.counters["reauth_failures"] == 1, timeout=5)
        assert sa.state == IkeState.ESTABLISHED and sa.reauth is None
        assert [x for x in a.engine.sas.values() if x.state != IkeState.DELETED] == [sa]
        assert not a.owner.retired and not b.owner.retired and "ike-reauth" in sa.timers
        crossed(a, b)
    run(main())


def test_both_ends_reauthenticating_at_once_lose_nothing(monkeypatch):
    """Not settled (exchanges/reauth.py): both new IKE SAs come up, each end deletes the
    old one, and the entry keeps a Child SA pair under each new IKE SA. What matters holds:
    every live pair has its mirror on the other side, each side's outbound slot holds a
    live pair, and no moment left the entry without one (nothing retired before its
    successor was in)."""
    from espd.ike.exchanges import reauth

    monkeypatch.setattr(reauth, "DELETE_DELAY", 0.1)

    async def main():
        loop = asyncio.get_running_loop()
        a, b, sa, peer_sa = await up(loop)
        reauth.start(a.engine, sa)
        reauth.start(b.engine, peer_sa)
        await until(lambda: sa.state == IkeState.DELETED and peer_sa.state == IkeState.DELETED
                    and a.engine.counters["reauths"] == 1
                    and b.engine.counters["reauths"] == 1, timeout=5)
        await asyncio.sleep(0.2)
        crossed(a, b)
        for side in (a, b):
            live = {i.handle for i in side.owner.live()}
            assert side.owner.slots[("vpn", 10)] in live
            assert len([x for x in side.engine.sas.values()
                        if x.state == IkeState.ESTABLISHED]) == 2  # the redundant one too
            first_retire = next(i for i, e in enumerate(side.owner.log) if e[0] == "retire")
            assert any(e[0].startswith("rekey") for e in side.owner.log[:first_retire])
    run(main())
