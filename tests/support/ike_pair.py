"""Two espd IKE engines on loopback with a fake SA owner each: real datagrams, the real
codec and crypto, and an owner that records what it was asked to install.

    initiator 127.0.0.1:PORT  <-- UDP -->  responder 127.0.0.2:PORT
              (and PORT+1 as each side's "4500", non-ESP marker included)
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import os
import struct
from dataclasses import dataclass, replace

from espd.dataplane import Dataplane, Rule
from espd.ike import proposals as p
from espd.ike.engine.engine import IkeEngine
from espd.ike.engine.transport import UdpTransport
from espd.ike.sa.ike_sa import Endpoint, IkeState
from espd.ike.settings import (
    ChildPolicy,
    Identity,
    IkeProposal,
    IkeSettings,
    Peer,
    PresharedKey,
)
from espd.keying.manual import ManualKeying
from espd.keying.owner import ChildSaKeys, SaOwner  # the real contract type, not a copy
from espd.keying.sequence_store import SequenceStore
from espd.policy.plan import Plan, RuleSpec
from espd.policy.selectors import TrafficSelector
from support.packets import IPPROTO_UDP, ipv4, udp

A, B = ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("127.0.0.2")
GCM_X25519 = IkeProposal(((p.ENCR_AES_GCM_16, 256),), (p.PRF_HMAC_SHA2_384,), (), (31,))
CBC_MODP = IkeProposal(((p.ENCR_AES_CBC, 128),), (p.PRF_HMAC_SHA2_256,),
                       (p.AUTH_HMAC_SHA2_256_128,), (14,))
_ports = itertools.count(20000 + (os.getpid() % 500) * 40, 2)


@dataclass(frozen=True)
class Handle:
    id: int
    entry: tuple[str, int]
    spi_in: int
    spi_out: int


@dataclass
class Installed:
    """What the owner saw, with key copies taken before the engine wiped them."""

    handle: Handle
    spec: ChildSaKeys
    key_in: bytes
    key_out: bytes
    auth_in: bytes
    auth_out: bytes
    replaced: Handle | None = None


class FakeOwner:
    """Records install/rekey/retire in order; the outbound slot per entry is tracked the
    way keying/owner.py does it (rekey switches it, retire of its holder empties it)."""

    def __init__(self) -> None:
        self.installed: dict[int, Installed] = {}
        self.retired: list[Handle] = []
        self.log: list[tuple[str, int]] = []
        self.slots: dict[tuple[str, int], Handle | None] = {}
        self.pending: dict[int, Handle] = {}  # successor id -> the SA it waits to replace
        self.moves: list[tuple[Handle, str, int]] = []  # move_child calls (NAT follow)
        self._ids = itertools.count(1)

    def _record(self, keys: ChildSaKeys, replaced: Handle | None, switch: bool = True
                ) -> Handle:
        handle = Handle(next(self._ids), keys.entry, keys.spi_in, keys.spi_out)
        self.installed[handle.id] = Installed(
            handle, keys, bytes(keys.key_in), bytes(keys.key_out),
            bytes(keys.auth_key_in or b""), bytes(keys.auth_key_out or b""), replaced)
        if switch:
            self.slots[keys.entry] = handle
        else:  # a rekey responder's successor: the slot waits for the old one's DELETE
            self.pending[handle.id] = replaced
        return handle

    def install_child(self, keys: ChildSaKeys) -> Handle:
        self.log.append(("install", keys.spi_in))
        return self._record(keys, None)

    def rekey_child(self, old: Handle, keys: ChildSaKeys, *, switch: bool = True) -> Handle:
        assert old.id in self.installed and old not in self.retired
        self.log.append(("rekey" if switch else "rekey-pending", keys.spi_in))
        return self._record(keys, old, switch)

    def switch_child(self, handle: Handle) -> bool:
        before = self.pending.pop(handle.id, None)
        if before is None or self.slots.get(handle.entry) not in (before, None):
            return False
        self.slots[handle.entry] = handle
        return True

    def retire_child(self, handle: Handle, linger: float = 0.0) -> None:
        assert handle not in self.retired, "retired twice"
        self.log.append(("retire", handle.spi_in))
        self.retired.append(handle)
        self.pending.pop(handle.id, None)
        if self.slots.get(handle.entry) == handle:
            successor = next((c for c, before in self.pending.items() if before == handle),
                             None)
            self.slots[handle.entry] = None
            if successor is not None:
                self.slots[handle.entry] = self.installed[successor].handle
        self.pending = {c: b for c, b in self.pending.items() if b != handle}

    def move_child(self, handle: Handle, peer: str, port: int) -> bool:
        self.moves.append((handle, peer, port))
        return True

    def child_usage(self, handle: Handle) -> dict:
        return {"bytes_in": 0, "bytes_out": 0, "packets_in": 0, "packets_out": 0,
                "last_in": None}

    def live(self) -> list[Installed]:
        gone = {h.id for h in self.retired}
        return [i for i in self.installed.values() if i.handle.id not in gone]


def policy(local: ipaddress.IPv4Address, peers: tuple, local_net: str, remote_net: str,
           **kw) -> ChildPolicy:
    base = dict(map_name="vpn", seq=10, peers=peers, local=local,
                transforms=(("esp-gcm 256", "tunnel"),),
                local_ts=(TrafficSelector.from_network(local_net),),
                remote_ts=(TrafficSelector.from_network(remote_net),), start="manual")
    base.update(kw)
    return ChildPolicy(**base)


@dataclass
class Side:
    engine: IkeEngine
    owner: FakeOwner
    transport: UdpTransport
    settings: IkeSettings


def settings_pair(port: int, **kw) -> tuple[IkeSettings, IkeSettings]:
    key = bytearray(b"ikeprobe-secret-0123456789")
    a_peer = Peer(B, PresharedKey(key, key), port=port, remote_id=Identity("ipv4", str(B)))
    b_peer = Peer(A, PresharedKey(key, key), port=port)
    common = dict(proposals=(GCM_X25519,), retransmit_timeout=0.05, retransmit_tries=4,
                  port=port, nat_port=port + 1, half_open_timeout=5.0)
    common.update(kw.pop("common", {}))
    a = IkeSettings(peers=(a_peer,), children=(policy(A, (B,), "10.1.0.0/16",
                                                      "10.2.0.0/16"),), **common)
    b = IkeSettings(peers=(b_peer,), children=(policy(B, (A,), "10.2.0.0/16",
                                                      "10.1.0.0/16"),), **common)
    return a, b


def side(loop: asyncio.AbstractEventLoop, address, settings: IkeSettings) -> Side:
    transport = UdpTransport(loop, [Endpoint(address, settings.port),
                                    Endpoint(address, settings.nat_port)],
                             nat_ports=(settings.nat_port,))
    owner = FakeOwner()
    engine = IkeEngine(settings, owner, transport, loop, child_sa_keys=ChildSaKeys)
    return Side(engine, owner, transport, settings)


def pair(loop: asyncio.AbstractEventLoop, a: IkeSettings | None = None,
         b: IkeSettings | None = None) -> tuple[Side, Side]:
    port = next(_ports)
    sa, sb = settings_pair(port)
    a = replace(a, port=port, nat_port=port + 1, peers=tuple(
        replace(x, port=port) for x in a.peers)) if a else sa
    b = replace(b, port=port, nat_port=port + 1, peers=tuple(
        replace(x, port=port) for x in b.peers)) if b else sb
    return side(loop, A, a), side(loop, B, b)


async def until(condition, timeout: float = 5.0, step: float = 0.005) -> None:
    """Wait for ``condition()`` to be true; AssertionError after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


async def established(a: Side, b: Side, timeout: float = 5.0):
    """`a` initiates its first entry; both ends' IKE SAs once each owner has a live Child SA."""
    sa = a.engine.initiate(a.settings.children[0])
    await until(lambda: a.owner.live() and b.owner.live(), timeout=timeout)
    [peer] = b.engine.sas.values()
    return sa, peer


class Outcome:
    """How one negotiation ended (read before the engines closed)."""

    def __init__(self, a, b, sa) -> None:
        self.a, self.b, self.sa = a, b, sa
        self.state, self.peer_id = sa.state, sa.peer_id  # before the engines close
        self.children = (len(a.owner.live()), len(b.owner.live()))


async def negotiate(a_settings, b_settings) -> Outcome:
    """a initiates its first child towards b; until both have a Child SA or a's IKE SA
    is deleted (then b is given time to take our DELETE)."""
    loop = asyncio.get_running_loop()
    a, b = pair(loop, a_settings, b_settings)
    sa = a.engine.initiate(a.settings.children[0])
    try:
        await until(lambda: (a.owner.live() and b.owner.live()) or sa.state ==
                    IkeState.DELETED, timeout=5)
        if sa.state == IkeState.DELETED:  # the responder installed before we refused it:
            try:                          # our DELETE is on its way to it
                await until(lambda: not b.owner.live(), timeout=2)
            except AssertionError:
                pass  # Outcome.children says it stayed
        return Outcome(a, b, sa)
    finally:
        a.engine.close()
        b.engine.close()


# --- with the real SA owner on a real data plane (no workers: Python pushes packets) ---


def inner(src: str, dst: str) -> bytes:
    return ipv4(src, dst, IPPROTO_UDP, udp(1234, 80, bytes(32)), ident=0)


def owner_for(tmp_path, name: str, local_net: str, remote_net: str) -> SaOwner:
    """An owner whose crypto map entry vpn 10 has a PROTECT rule and no SA yet."""
    owner = SaOwner(Dataplane(), SequenceStore(str(tmp_path / name)), reserve_block=64)
    rule = Rule.from_prefixes(local_net, remote_net, policy=7)
    ManualKeying(owner).apply(Plan(sas=(), rules=(
        RuleSpec(rule, "vpn", 10, "LAN", 0, "permit ip any any", True),),
        routes=(remote_net,), unroutable=()))
    return owner


def spi_of(wire: bytes) -> int:
    return struct.unpack("!I", wire[20:24])[0]


def real_pair(loop, tmp_path, **policy) -> tuple[Side, Side]:
    """Two engines whose owners are real SaOwners (entry vpn 10: 10.1/16 <-> 10.2/16)."""
    a, b = pair(loop)
    for s, name, nets in ((a, "a", ("10.1.0.0/16", "10.2.0.0/16")),
                          (b, "b", ("10.2.0.0/16", "10.1.0.0/16"))):
        s.owner = owner_for(tmp_path, name, *nets)
        s.engine.owner = s.owner
        s.engine.child_sa_keys = ChildSaKeys
        s.owner.subscribe(s.engine)
        if policy:
            s.engine.settings = replace(s.settings, children=(replace(
                s.settings.children[0], **policy),))
    return a, b
