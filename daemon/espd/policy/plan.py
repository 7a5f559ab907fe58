"""From a Config to what the data plane runs: SAs, classification rules, routes.

Pure functions over the frozen model. Policy semantics (fail closed):
  - crypto map entries are matched in (map name, seq) order, their ACL entries in order,
    and the first matching ACL entry decides;
  - ``permit`` protects with that entry's outbound SA;
  - ``deny``, and traffic that matches nothing, is discarded. (IOS would send a denied
    packet in clear; espd never does: every packet routed into its interface is either
    protected or dropped.)
An inbound SA accepts only inner packets that its entry's ACL, mirrored, permits.

Reloads carry SA state over: an SA whose identity (its crypto map entry and everything
that shapes its packets, its keys included through a keyed fingerprint) did not change
keeps its sequence number, replay window and counters. An entry's position is no part of
that identity: its policy id comes from a PolicyIds (policy/ids.py) the daemon keeps for
its life, so inserting or removing other entries changes no unchanged entry's SAs.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from dataclasses import dataclass, field

from espd.config.model import (
    AclEntry,
    AddressMatch,
    Config,
    CryptoMapEntry,
    ManualKey,
    MapLifetime,
    PortRange,
    peer_source_check,
    wipe,
)
from espd.dataplane import Lifetime, Rule
from espd.policy.ids import PolicyIds

# Keys are compared across reloads through this process-local keyed hash, never stored twice.
_FINGERPRINT_KEY = os.urandom(32)
SOFT_LIFETIME_FRACTION = 0.9  # soft expiry event at 90 % of each hard limit


@dataclass(frozen=True, slots=True)  # slots: one per SA, thousands on a hub
class SaSpec:
    """One SA as the data plane will run it. Keys stay out of repr and equality."""

    map_name: str
    seq: int
    direction: str
    spi: int
    transform: str
    mode: str
    local: str
    peer: str
    encap: str
    replay_window: int
    esn: bool
    hard: Lifetime
    soft: Lifetime
    policy: int
    # equality covers every field but the raw keys; the fingerprint stands in for them
    key: bytes | bytearray = field(repr=False, compare=False)
    auth_key: bytes | bytearray | None = field(repr=False, compare=False)
    fingerprint: bytes = field(repr=False, default=b"")
    source_check: str = "strict"  # inbound: what the outer source must be (SOURCE_CHECKS)
    follow_peer: bool = False  # inbound IKE Child SA: report a peer that moved (RFC 7296 2.23)

    @property
    def label(self) -> str:
        return f"crypto map {self.map_name} {self.seq} {self.direction} SPI 0x{self.spi:08X}"


@dataclass(frozen=True)
class RuleSpec:
    rule: Rule
    map_name: str
    seq: int
    acl: str
    acl_line: int  # index of the entry in its access list (0-based)
    text: str
    protects: bool  # permit -> the entry's outbound SA


@dataclass(frozen=True)
class Plan:
    sas: tuple[SaSpec, ...]
    rules: tuple[RuleSpec, ...]
    routes: tuple[str, ...]  # remote prefixes routed into the TUN device
    unroutable: tuple[str, ...]  # permitted destinations that are not prefixes
    negotiated_peers: tuple[str, ...] = ()  # peers of IKE-keyed entries (no SAs planned)


def fingerprint_keys(key: bytes | bytearray, auth_key: bytes | bytearray | None) -> bytes:
    """A process-local keyed hash of an SA's keys: equal keys, equal fingerprints. 16
    bytes (HMAC-SHA-256 cut to 128 bits: collisions stay out of reach) rather than 64 hex
    digits: every SA holds one, and a hub holds tens of thousands."""
    # fed piece by piece: a concatenation would leave one more copy of the keys in memory
    mac = hmac.new(_FINGERPRINT_KEY, key, hashlib.sha256)
    mac.update(b"\x00")
    mac.update(auth_key or b"")
    return mac.digest()[:16]


def _fingerprint(key: ManualKey) -> bytes:
    return fingerprint_keys(key.key, key.auth_key)


def _lifetimes(entry: CryptoMapEntry) -> tuple[Lifetime, Lifetime]:
    """(hard, soft) limits. A manually keyed SA cannot be rekeyed by espd, so each IOS
    default (3600 s, 4608000 KB; IOS itself ignores lifetimes on manual SAs) only raises
    the soft warning; a value that differs from the default is enforced as a hard limit.
    (A value written equal to the default is indistinguishable from it: it warns.)
    Packets have no default (0: none); a packet count is a hard limit, warned at 90 %."""
    default = MapLifetime()
    seconds, kilobytes = entry.lifetime.seconds, entry.lifetime.kilobytes
    packets = entry.lifetime.packets
    soft = Lifetime(
        seconds=int(seconds * SOFT_LIFETIME_FRACTION),
        bytes=min(int(kilobytes * 1024 * SOFT_LIFETIME_FRACTION), 2**64 - 1),
        packets=max(int(packets * SOFT_LIFETIME_FRACTION), 1) if packets else 0,
    )
    hard = Lifetime(
        seconds=seconds if seconds != default.seconds else 0,
        bytes=min(kilobytes * 1024, 2**64 - 1) if kilobytes != default.kilobytes else 0,
        packets=packets,
    )
    return hard, soft


def _sa_specs(config: Config, entry: CryptoMapEntry, policy: int) -> tuple[SaSpec, SaSpec]:
    tset = config.transform_sets[entry.transform_set]
    hard, soft = _lifetimes(entry)
    specs = []
    for direction, key in (("in", entry.inbound), ("out", entry.outbound)):
        specs.append(SaSpec(
            map_name=entry.map_name, seq=entry.seq, direction=direction, spi=key.spi,
            transform=tset.transform.name, mode=tset.mode, local=str(entry.local),
            peer=str(entry.peer), encap=entry.encapsulation, replay_window=entry.replay_window,
            esn=entry.esn, hard=hard, soft=soft, policy=policy, key=key.key,
            auth_key=key.auth_key, fingerprint=_fingerprint(key),
            source_check=peer_source_check(entry.peer_source, entry.encapsulation, False),
        ))
    return specs[0], specs[1]


def _port_masks(low: int, high: int) -> list[tuple[int, int]]:
    """Cover [low, high] with value/mask pairs (the classic range-to-prefix split)."""
    out = []
    while low <= high:
        size = low & -low if low else 1 << 16
        while size > high - low + 1:
            size >>= 1
        out.append((low, 0xFFFF & ~(size - 1)))
        low += size
    return out


def _port_choices(ports: tuple[PortRange, ...]) -> list[tuple[int, int]]:
    if not ports:
        return [(0, 0)]
    return [vm for low, high in ports for vm in _port_masks(low, high)]


def _masked(match: AddressMatch) -> tuple[bytes, bytes]:
    bits = match.address.max_prefixlen
    mask = ((1 << bits) - 1) & ~int(match.wildcard)
    return match.address.packed, mask.to_bytes(bits // 8, "big")


def compile_entry(acl_entry: AclEntry, policy: int) -> list[Rule]:
    """One ACL entry as data-plane rules (several when port ranges need splitting)."""
    src, src_mask = _masked(acl_entry.src)
    dst, dst_mask = _masked(acl_entry.dst)
    action = "protect" if acl_entry.action == "permit" else "discard"
    rules = []
    for sport, sport_mask in _port_choices(acl_entry.src_ports):
        for dport, dport_mask in _port_choices(acl_entry.dst_ports):
            rules.append(Rule(
                family=acl_entry.version, action=action, src=src, src_mask=src_mask, dst=dst,
                dst_mask=dst_mask, proto=acl_entry.protocol or 0,
                proto_mask=0xFF if acl_entry.protocol is not None else 0, sport=sport,
                sport_mask=sport_mask, dport=dport, dport_mask=dport_mask, policy=policy,
            ))
    return rules


def build_plan(config: Config, ids: PolicyIds | None = None) -> Plan:
    """`config` as the data plane runs it. `ids` numbers the entries (the daemon's own,
    across reloads); without it, a fresh one: 1, 2, ... in SPD order."""
    ids = ids if ids is not None else PolicyIds()
    sas: list[SaSpec] = []
    rules: list[RuleSpec] = []
    routes: dict[str, None] = {}
    unroutable: dict[str, None] = {}
    negotiated: dict[str, None] = {}
    for entry in config.crypto_maps:
        policy = ids.of((entry.map_name, entry.seq))
        if entry.manual:  # IKE-keyed entries get their SAs when a negotiation installs them
            sas.extend(_sa_specs(config, entry, policy))
        else:
            negotiated.update((str(p), None) for p in entry.peers)
        acl = config.access_lists[entry.match_address]
        for index, acl_entry in enumerate(acl.entries):
            for rule in compile_entry(acl_entry, policy):
                rules.append(RuleSpec(rule, entry.map_name, entry.seq, acl.name, index,
                                      acl_entry.text, acl_entry.action == "permit"))
            if acl_entry.action != "permit":
                continue
            plen = acl_entry.dst.prefixlen
            if plen is None:
                unroutable[str(acl_entry.dst)] = None
                continue
            net = ipaddress.ip_network(f"{acl_entry.dst.address}/{plen}")
            # "any" becomes two halves: more specific than the default route, which it
            # therefore neither replaces nor has to restore
            for half in net.subnets(1) if plen == 0 else (net,):
                routes[str(half)] = None
    return Plan(tuple(sas), tuple(rules), tuple(routes), tuple(unroutable), tuple(negotiated))


def wipe_keys(plan: Plan) -> None:
    """Zero the plan's key material in place (shared with its Config's ManualKeys): call it
    once the data plane holds its own copies. Fingerprints stay for later comparisons."""
    for spec in plan.sas:
        wipe(spec.key)
        wipe(spec.auth_key)


def describe_changes(old: Plan | None, new: Plan) -> list[str]:
    """What a reload from `old` to `new` would change, one line per change."""
    if old is None:
        return [f"add {sa.label}" for sa in new.sas]
    before = {(sa.map_name, sa.seq, sa.direction): sa for sa in old.sas}
    after = {(sa.map_name, sa.seq, sa.direction): sa for sa in new.sas}
    lines = []
    for key, sa in after.items():
        if key not in before:
            lines.append(f"add {sa.label}")
        elif before[key] != sa:
            what = "new key" if before[key].fingerprint != sa.fingerprint else "changed settings"
            lines.append(f"replace {sa.label} ({what}; its counters and window start anew)")
    lines += [f"remove {sa.label}" for key, sa in before.items() if key not in after]
    if [r.rule for r in old.rules] != [r.rule for r in new.rules]:
        lines.append(f"access lists: {len(old.rules)} -> {len(new.rules)} compiled rules")
    added = sorted(set(new.routes) - set(old.routes))
    removed = sorted(set(old.routes) - set(new.routes))
    lines += [f"route {r} into the tunnel" for r in added]
    lines += [f"withdraw route {r}" for r in removed]
    return lines
