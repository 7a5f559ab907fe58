"""Following a peer behind a NAT (RFC 7296 2.23), the IKE engine with the real SA owner on
a real data plane: A is behind the NAT (NAT detection is made to say so), B is not and
follows A to a new port on authenticated ESP (the data plane's peer_moved event) and on
authenticated IKE; forged or replayed packets from a new port move nothing, and A (behind
the NAT) never follows B."""

from __future__ import annotations

import asyncio
import ipaddress
import struct

import pytest
from support.ike_pair import A, inner, real_pair, until
from support.packets import natted

from espd.dataplane import DropError
from espd.ike.exchanges import ike_sa_init, informational
from espd.ike.sa.ike_sa import Endpoint, IkeState

NEW_PORT = 40123


@pytest.fixture(autouse=True)
def a_behind_nat(monkeypatch):
    """NAT detection as if A's packets went through a NAT: A finds itself behind one,
    B finds A behind one (loopback has none)."""
    def detected(message, spi_i, spi_r, local, remote):
        return (True, False) if local.address == A else (False, True)
    monkeypatch.setattr(ike_sa_init, "nat_detected", detected)


async def established(loop, tmp_path):
    a, b = real_pair(loop, tmp_path)
    sa_a = a.engine.initiate(a.engine.settings.children[0])
    await until(lambda: a.owner.snapshot.sas and b.owner.snapshot.sas)
    [sa_b] = [s for s in b.engine.sas.values() if s.state == IkeState.ESTABLISHED]
    assert (sa_a.nat_local, sa_a.nat_remote, sa_b.nat_local, sa_b.nat_remote) == \
        (True, False, False, True)
    return a, b, sa_a, sa_b


def outbound(side):
    [view] = [v for v in side.owner.snapshot.sas if v.spec.direction == "out"]
    return view


def test_authenticated_esp_from_a_new_port_moves_the_child_sa_and_the_ike_sa(tmp_path):
    async def main():
        loop = asyncio.get_running_loop()
        a, b, _, sa_b = await established(loop, tmp_path)
        home = sa_b.remote
        assert outbound(b).spec.encap == "udp" and outbound(b).ports[1] == home.port
        assert outbound(a).keepalive and not outbound(b).keepalive  # A is behind the NAT
        packet = a.owner.dp.protect(inner("10.1.0.10", "10.2.0.10"))
        forged = bytearray(natted(packet, NEW_PORT))
        forged[-1] ^= 1
        with pytest.raises(DropError, match="auth_failed"):
            b.owner.dp.decap(bytes(forged))
        b.owner.drain_events()
        assert sa_b.remote == home and b.owner.dp.remote(outbound(b).sa) == (str(A), home.port)
        assert b.owner.dp.decap(natted(packet, NEW_PORT)) == inner("10.1.0.10", "10.2.0.10")
        b.owner.drain_events()  # peer_moved -> the owner moves the pair, tells the engine
        assert sa_b.remote == Endpoint(A, NEW_PORT)
        assert b.engine.counters["peer_moves_esp"] == 1
        view = outbound(b)
        assert view.ports[1] == NEW_PORT and view.spec.peer == str(A)
        assert {b.owner.dp.remote(v.sa) for v in b.owner.snapshot.sas} == {(str(A), NEW_PORT)}
        back = b.owner.dp.protect(inner("10.2.0.10", "10.1.0.10"))
        assert struct.unpack("!H", back[22:24])[0] == NEW_PORT  # ESP goes there now

    asyncio.run(main())


def test_authenticated_ike_from_a_new_port_moves_it_and_a_forged_one_does_not(tmp_path):
    async def main():
        loop = asyncio.get_running_loop()
        a, b, sa_a, sa_b = await established(loop, tmp_path)
        sent = []
        real_send = a.transport.send
        a.engine.transport.send = lambda local, remote, data: sent.append(data)
        informational.start_dpd(a.engine, sa_a)
        [request] = sent
        forged = bytearray(request)
        forged[-1] ^= 1
        moved_from = Endpoint(A, NEW_PORT)
        b.engine.receive(bytes(forged), sa_b.local, moved_from)
        assert b.engine.counters["integrity_failures"] == 1
        assert sa_b.remote != moved_from and b.engine.counters["peer_moves_ike"] == 0
        b.engine.receive(request, sa_b.local, moved_from)
        assert sa_b.remote == moved_from and b.engine.counters["peer_moves_ike"] == 1
        assert {b.owner.dp.remote(v.sa) for v in b.owner.snapshot.sas} == {(str(A), NEW_PORT)}
        # the same request again from yet another port is a retransmission: answered,
        # never followed (RFC 7296 2.23: only new packets move an SA)
        b.engine.receive(request, sa_b.local, Endpoint(A, NEW_PORT + 1))
        assert sa_b.remote == moved_from
        a.engine.transport.send = real_send

    asyncio.run(main())


def test_the_side_behind_the_nat_does_not_follow(tmp_path):
    async def main():
        loop = asyncio.get_running_loop()
        a, b, sa_a, sa_b = await established(loop, tmp_path)
        home = sa_a.remote
        sent = []
        b.engine.transport.send = lambda local, remote, data: sent.append(data)
        informational.start_dpd(b.engine, sa_b)
        [request] = sent
        a.engine.receive(request, sa_a.local, Endpoint(sa_a.remote.address, NEW_PORT))
        assert sa_a.remote == home and a.engine.counters["peer_moves_refused"] == 1
        packet = b.owner.dp.protect(inner("10.2.0.10", "10.1.0.10"))
        assert a.owner.dp.decap(natted(packet, NEW_PORT))  # accepted ("address" check)...
        a.owner.drain_events()
        assert sa_a.remote == home  # ...but never followed: no follow_peer on A's SAs
        assert {a.owner.dp.remote(v.sa) for v in a.owner.snapshot.sas} == \
            {(str(home.address), home.port)}

    asyncio.run(main())


def test_authenticated_ike_from_a_new_address_moves_it_and_esp_from_there_passes(tmp_path):
    """A new address (a NAT with an address pool): ESP from there fails the source check
    ("address") before its ICV, so IKE moves the SA; then ESP from there is accepted."""
    async def main():
        loop = asyncio.get_running_loop()
        a, b, sa_a, sa_b = await established(loop, tmp_path)
        elsewhere = Endpoint(ipaddress.ip_address("127.0.0.3"), NEW_PORT)
        packet = a.owner.dp.protect(inner("10.1.0.10", "10.2.0.10"))
        with pytest.raises(DropError, match="wrong_source"):
            b.owner.dp.decap(natted(packet, NEW_PORT, str(elsewhere.address)))
        sent = []
        a.engine.transport.send = lambda local, remote, data: sent.append(data)
        informational.start_dpd(a.engine, sa_a)
        assert b.engine.ike_sas_of(A) == [sa_b] and not b.engine.ike_sas_of(elsewhere.address)
        b.engine.receive(sent[0], sa_b.local, elsewhere)
        assert sa_b.remote == elsewhere
        # the engine's index by peer address (reauthentication looks SAs up there) follows
        assert b.engine.ike_sas_of(elsewhere.address) == [sa_b] and not b.engine.ike_sas_of(A)
        assert {b.owner.dp.remote(v.sa) for v in b.owner.snapshot.sas} == \
            {("127.0.0.3", NEW_PORT)}
        later = a.owner.dp.protect(inner("10.1.0.10", "10.2.0.10"))
        assert b.owner.dp.decap(natted(later, NEW_PORT, str(elsewhere.address))) == \
            inner("10.1.0.10", "10.2.0.10")

    asyncio.run(main())
