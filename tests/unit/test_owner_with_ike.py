"""The SA owner's contract with IKE, end to end: two espd IKE engines on loopback, each
with a REAL SaOwner over a real data plane (no fake owner). After IKE_AUTH each owner
has installed the Child SA into its entry's empty slot, and what one data plane seals
the other opens; after a Child SA rekey (make-before-break, then DELETE) both run the
new pair only. Packets go through Python (no workers run)."""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from dataclasses import replace

from support import ike_pair
from support.ike_pair import A, B, until

from espd.dataplane import Dataplane, DropError, Rule
from espd.ike.engine.engine import IkeEngine
from espd.ike.engine.transport import UdpTransport
from espd.ike.exchanges import create_child_sa
from espd.ike.sa.ike_sa import Endpoint
from espd.keying.manual import ManualKeying
from espd.keying.owner import SaOwner
from espd.keying.sequence_store import SequenceStore
from espd.policy.plan import Plan, RuleSpec

POLICY = 3  # the entry's policy id: its rules and its Child SAs share it


def inner(src: str, dst: str) -> bytes:
    udp = struct.pack("!HHHH", 1234, 80, 8 + 32, 0) + bytes(32)
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                              ipaddress.IPv4Address(src).packed,
                              ipaddress.IPv4Address(dst).packed))
    total = sum(struct.unpack("!10H", bytes(h)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    struct.pack_into("!H", h, 10, ~total & 0xFFFF)
    return bytes(h) + udp


def spi(wire: bytes) -> int:
    return struct.unpack("!I", wire[20:24])[0]


def owner_for(state_dir: str, local_net: str, remote_net: str) -> SaOwner:
    owner = SaOwner(Dataplane(), SequenceStore(state_dir))
    rule = Rule.from_prefixes(local_net, remote_net, policy=POLICY)
    text = f"permit ip {local_net} {remote_net}"
    ManualKeying(owner).apply(Plan(sas=(), rules=(RuleSpec(rule, "vpn", 10, "LAN", 0, text,
                                                           True),),
                                   routes=(remote_net,), unroutable=()))
    return owner


def test_negotiated_child_sas_run_through_real_owners(tmp_path):
    async def main():
        loop = asyncio.get_running_loop()
        port = next(ike_pair._ports)
        # raw ESP both ways: with "auto" the responder sees a NAT on loopback (its check of
        # the request's NAT_DETECTION hashes uses its own new SPI, not the request's zero)
        settings = [replace(s, children=tuple(replace(c, encapsulation="esp")
                                              for c in s.children))
                    for s in ike_pair.settings_pair(port)]
        nets = (("10.1.0.0/16", "10.2.0.0/16"), ("10.2.0.0/16", "10.1.0.0/16"))
        sides = []
        for n, (address, s, (local_net, remote_net)) in enumerate(zip((A, B), settings, nets,
                                                                      strict=True)):
            transport = UdpTransport(loop, [Endpoint(address, s.port),
                                            Endpoint(address, s.nat_port)],
                                     nat_ports=(s.nat_port,))
            owner = owner_for(str(tmp_path / f"side{n}"), local_net, remote_net)
            engine = IkeEngine(s, owner, transport, loop)  # the owner's own ChildSaKeys
            owner.subscribe(engine)
            sides.append((owner, engine, s))
        (oa, ea, sa_settings), (ob, eb, _) = sides
        a_to_b, b_to_a = inner("10.1.0.10", "10.2.0.10"), inner("10.2.0.10", "10.1.0.10")
        try:
            with_no_sa = None
            try:
                oa.dp.protect(a_to_b)
            except DropError as e:
                with_no_sa = e.reason
            assert with_no_sa == "no_sa"  # the slot is empty until IKE fills it
            sa = ea.initiate(sa_settings.children[0])
            await until(lambda: oa.snapshot.sas and ob.snapshot.sas)
            wire = oa.dp.protect(a_to_b)
            assert ob.dp.decap(wire) == a_to_b
            assert oa.dp.decap(ob.dp.protect(b_to_a)) == b_to_a
            first = spi(wire)
            assert {v.origin for v in oa.snapshot.sas} == {"ike"}

            [old] = sa.children.values()
            create_child_sa.start_rekey(ea, sa, old)
            # make-before-break, then DELETE of the old pair on both sides
            await until(lambda: len(oa.snapshot.sas) == 2 and len(ob.snapshot.sas) == 2
                        and spi(oa.dp.protect(a_to_b)) != first, timeout=10)
            wire = oa.dp.protect(a_to_b)
            assert ob.dp.decap(wire) == a_to_b
            assert oa.dp.decap(ob.dp.protect(b_to_a)) == b_to_a
            assert first not in {v.spec.spi for v in oa.snapshot.sas}
        finally:
            ea.close()
            eb.close()

    asyncio.run(asyncio.wait_for(main(), 30))
