"""The IKE engine with the real SA owner on a real data plane (no workers, so Python may
push packets): what two engines negotiate over loopback UDP goes into each side's data
plane, and packets sealed by one open at the other, both ways, through rekeys; the
first packet with no SA raises an acquire that starts the negotiation (IOS on-demand)."""

from __future__ import annotations

import asyncio

import pytest
from support.ike_pair import inner, real_pair, spi_of, until

from espd.dataplane import DropError
from espd.ike.engine import engine as engine_module
from espd.ike.exchanges import create_child_sa
from espd.ike.sa.child_sa import ChildState


def passes_both_ways(a, b) -> tuple[int, int]:
    there = a.owner.dp.protect(inner("10.1.0.10", "10.2.0.10"))
    assert b.owner.dp.decap(there) == inner("10.1.0.10", "10.2.0.10")
    back = b.owner.dp.protect(inner("10.2.0.10", "10.1.0.10"))
    assert a.owner.dp.decap(back) == inner("10.2.0.10", "10.1.0.10")
    return spi_of(there), spi_of(back)


def test_negotiated_child_sas_carry_packets_both_ways_through_a_rekey(tmp_path, monkeypatch):
    monkeypatch.setattr(engine_module, "REKEYED_LINGER", 0.05)

    async def main():
        loop = asyncio.get_running_loop()
        a, b = real_pair(loop, tmp_path)
        sa = a.engine.initiate(a.engine.settings.children[0])
        await until(lambda: a.owner.snapshot.sas and b.owner.snapshot.sas)
        first = passes_both_ways(a, b)
        [child] = sa.children.values()
        assert first == (child.spi_out, child.spi_in)
        old_back = b.owner.dp.protect(inner("10.2.0.10", "10.1.0.10"))
        create_child_sa.start_rekey(a.engine, sa, child)
        await until(lambda: not sa.requests.busy and child.state == ChildState.DELETED)
        second = passes_both_ways(a, b)  # b switched at a's DELETE of the old SA
        assert second[0] != first[0] and second[1] != first[1]
        assert a.owner.dp.decap(old_back)  # the old inbound lingers for packets in flight
        await asyncio.sleep(0.1)
        a.owner.housekeeping()
        b.owner.housekeeping()
        assert len(a.owner.snapshot.sas) == 2 and len(b.owner.snapshot.sas) == 2
        with pytest.raises(DropError, match="unknown_spi"):
            a.owner.dp.decap(old_back)  # ...and then goes
        assert {v.origin for v in a.owner.snapshot.sas} == {"ike"}
        assert {v.ike_sa for v in a.owner.snapshot.sas} == {str(sa.ident)}
    asyncio.run(asyncio.wait_for(main(), 20))


def test_the_rekey_responder_sends_on_the_old_sa_until_the_initiators_delete(tmp_path):
    """RFC 7296 2.8: the responder of a Child SA rekey cannot know when the initiator has
    the new inbound SA; it keeps its outbound on the old SA until the DELETE comes."""
    async def main():
        loop = asyncio.get_running_loop()
        a, b = real_pair(loop, tmp_path)
        sa = a.engine.initiate(a.engine.settings.children[0])
        await until(lambda: a.owner.snapshot.sas and b.owner.snapshot.sas)
        first = passes_both_ways(a, b)
        [child] = sa.children.values()
        held: list = []
        deliver = a.engine.delete_child
        a.engine.delete_child = lambda *args, **kw: held.append((args, kw))
        create_child_sa.start_rekey(a.engine, sa, child)
        await until(lambda: held and not sa.requests.busy)
        assert len(b.owner.snapshot.sas) == 4  # b's new inbound is live...
        assert passes_both_ways(a, b)[1] == first[1]  # ...but it answers on the old SA
        new_spi = next(c.spi_out for c in sa.children.values() if c is not child)
        assert passes_both_ways(a, b)[0] == new_spi  # the initiator switched at once
        del a.engine.delete_child
        assert a.engine.delete_child == deliver
        deliver(*held[0][0], **held[0][1])  # now the DELETE of the old SA goes out
        await until(lambda: not sa.requests.busy and child.state == ChildState.DELETED)
        second = passes_both_ways(a, b)
        assert second[1] not in (first[1],) and second[0] == new_spi
    asyncio.run(asyncio.wait_for(main(), 20))


def test_cbc_hmac_and_transport_mode_through_the_data_plane(tmp_path):
    async def main():
        loop = asyncio.get_running_loop()
        a, b = real_pair(loop, tmp_path,
                         transforms=(("esp-aes 256 esp-sha512-hmac", "tunnel"),))
        a.engine.initiate(a.engine.settings.children[0])
        await until(lambda: a.owner.snapshot.sas and b.owner.snapshot.sas)
        passes_both_ways(a, b)
        assert {v.spec.transform for v in a.owner.snapshot.sas} == \
            {"esp-aes 256 esp-sha512-hmac"}
    asyncio.run(asyncio.wait_for(main(), 20))


def test_the_first_packet_without_an_sa_negotiates_one(tmp_path):
    async def main():
        loop = asyncio.get_running_loop()
        a, b = real_pair(loop, tmp_path, start="on-demand")
        with pytest.raises(DropError, match="no_sa"):
            a.owner.dp.protect(inner("10.1.0.10", "10.2.0.10"))  # fail closed...
        a.owner.drain_events()  # ...and the acquire reaches the engine
        assert a.engine.counters["acquires"] == 1 and len(a.engine.sas) == 1
        await until(lambda: a.owner.snapshot.sas and b.owner.snapshot.sas)
        passes_both_ways(a, b)
    asyncio.run(asyncio.wait_for(main(), 20))


def test_delete_from_the_peer_empties_the_slot(tmp_path):
    async def main():
        loop = asyncio.get_running_loop()
        a, b = real_pair(loop, tmp_path)
        sa = a.engine.initiate(a.engine.settings.children[0])
        await until(lambda: a.owner.snapshot.sas and b.owner.snapshot.sas)
        [peer_sa] = b.engine.sas.values()
        b.engine.delete_ike_sa(peer_sa)
        await until(lambda: not a.owner.snapshot.sas and not b.owner.snapshot.sas)
        with pytest.raises(DropError, match="no_sa"):
            a.owner.dp.protect(inner("10.1.0.10", "10.2.0.10"))
        assert not a.engine.sas and sa.keys is None
    asyncio.run(asyncio.wait_for(main(), 20))
