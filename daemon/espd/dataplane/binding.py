"""The data plane, driven from Python: the only module that touches the cffi bindings.

Everything above this module (the daemon, tools, tests) speaks in SAs, rules and bytes.
Every C status is checked and turned into an exception; C objects are owned through
``ffi.gc``. Key bytes go straight into the data plane and are never kept here.

Two ways to change what the data plane does:

- Staged, whole: ``add_sa``, ``remove_sa``, ``add_rule`` are staged and become live together
  in one atomic table swap at ``commit()`` (or ``publish`` of a complete set); packet
  operations commit pending changes first. Manual keying and reloads use this.
- Incremental, one SA at a time: ``install``, ``replace``, ``retire`` change the live set
  in place, O(1) at any number of SAs (IKE: a Child SA created, rekeyed, deleted). They
  keep this object's view (``sas``, the rules' SAs) in step, so a later commit or
  publish carries them.

Ownership: one thread, the control plane's SA owner (``espd.keying``), makes every change
of either kind; the C side serialises writers with a lock, but the order of installs,
rekeys and retires is the owner's to keep. Packet calls, stats, events and punted
datagrams may be read from the owner's thread; worker threads run in C.

Packets pushed from Python (``encap``/``decap`` and their batches) run on a worker's slot
(its epoch and its OpenSSL contexts), so they are refused while the C workers run: a
worker's slot has exactly one thread (tests and tools use them on an idle data plane).
"""

from __future__ import annotations

import functools
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from espd import _native  # type: ignore[attr-defined]
from espd.config.transforms import Transform, parse_transform
from espd.dataplane.constants import DROP_SLOTS as _DROP_SLOTS
from espd.dataplane.constants import HEADROOM, TAILROOM
from espd.dataplane.constants import SA_FLAGS as _SA_FLAGS

ffi, lib = _native.ffi, _native.lib

DROP_REASONS: tuple[str, ...] = tuple(
    ffi.string(lib.espdp_drop_name(i)).decode() for i in range(lib.espdp_drop_count())
)
DROP_HELP: dict[str, str] = {
    name: ffi.string(lib.espdp_drop_help(i)).decode() for i, name in enumerate(DROP_REASONS)
}
EVENT_KINDS: tuple[str, ...] = tuple(
    ffi.string(lib.espdp_event_name(i)).decode() for i in range(lib.espdp_event_kind_count())
)

_DIRECTIONS = {"in": lib.ESPDP_DIR_IN, "out": lib.ESPDP_DIR_OUT}
_MODES = {"tunnel": lib.ESPDP_MODE_TUNNEL, "transport": lib.ESPDP_MODE_TRANSPORT}
_ENCAPS = {"esp": lib.ESPDP_ENCAP_ESP, "udp": lib.ESPDP_ENCAP_UDP}
# receive_path = "ring": 64 blocks of 64 KiB (4 MiB, as the raw sockets' SO_RCVBUF); a block
# is handed over when full (~44 packets of 1,400 B) or 1 ms after its first packet
RING_BLOCK, RING_TIMEOUT_MS = 1 << 16, 1
# what an inbound SA requires of the outer source: see enum espdp_source_check
SOURCE_CHECKS = {"strict": lib.ESPDP_SOURCE_STRICT, "address": lib.ESPDP_SOURCE_ADDRESS,
                 "any": lib.ESPDP_SOURCE_ANY}


class DataplaneError(Exception):
    """The data plane refused a configuration."""


class DropError(Exception):
    """A packet was dropped; ``reason`` is the drop reason's name (see DROP_REASONS)."""

    def __init__(self, reason: str, sa: SA | None = None) -> None:
        self.reason = reason
        self.sa = sa
        where = f" on SA 0x{sa.spi:08X} {sa.direction}" if sa else ""
        super().__init__(f"packet dropped{where}: {reason} ({DROP_HELP.get(reason, '?')})")


def _check(status: int, what: str) -> None:
    if status != lib.ESPDP_OK:
        raise DataplaneError(f"{what}: {ffi.string(lib.espdp_status_str(status)).decode()}")


def _addr(value: str | ipaddress.IPv4Address | ipaddress.IPv6Address, out: object) -> int:
    ip = ipaddress.ip_address(value)
    out.family = ip.version  # type: ignore[attr-defined]
    ffi.memmove(out.bytes, ip.packed, len(ip.packed))  # type: ignore[attr-defined]
    return ip.version


@functools.lru_cache(maxsize=64)
def _parsed_transform(name: str) -> Transform:
    """One immutable Transform per name, shared by every SA of it (a hub has thousands);
    a name that does not parse raises every time (lru_cache keeps no exceptions)."""
    return parse_transform(name)


@dataclass(frozen=True, slots=True)
class Lifetime:
    """SA lifetime limits; 0 means no limit. Bytes count protected (inner) payload."""

    seconds: int = 0
    bytes: int = 0
    packets: int = 0


@dataclass(frozen=True, eq=False, slots=True)  # slots: one per SA, thousands on a hub
class SA:
    """A security association in the data plane. Holds no key material."""

    spi: int
    direction: str
    transform: Transform
    mode: str
    encap: str
    local: str
    peer: str
    replay_window: int
    esn: bool
    policy: int
    cookie: int
    _handle: object = field(repr=False, compare=False)

    def __str__(self) -> str:
        return f"SA 0x{self.spi:08X} {self.direction} {self.transform} {self.peer}"


@dataclass(frozen=True)
class Rule:
    """An access-list entry compiled to value/mask pairs; first match wins.

    ``action`` is "protect" (send through ``sa``) or "discard". ``policy`` names the crypto
    map entry: an inbound SA with the same policy accepts only inner packets that this
    rule, mirrored, would protect.
    """

    family: int
    action: str
    src: bytes
    src_mask: bytes
    dst: bytes
    dst_mask: bytes
    proto: int = 0
    proto_mask: int = 0
    sport: int = 0
    sport_mask: int = 0
    dport: int = 0
    dport_mask: int = 0
    policy: int = 0

    @classmethod
    def from_prefixes(
        cls,
        src: str,
        dst: str,
        *,
        action: str = "protect",
        proto: int | None = None,
        sport: int | None = None,
        dport: int | None = None,
        policy: int = 0,
    ) -> Rule:
        s, d = ipaddress.ip_network(src, strict=False), ipaddress.ip_network(dst, strict=False)
        if s.version != d.version:
            raise DataplaneError(f"rule {src} -> {dst}: source and destination families differ")
        return cls(
            family=s.version, action=action,
            src=s.network_address.packed, src_mask=s.netmask.packed,
            dst=d.network_address.packed, dst_mask=d.netmask.packed,
            proto=proto or 0, proto_mask=0xFF if proto is not None else 0,
            sport=sport or 0, sport_mask=0xFFFF if sport is not None else 0,
            dport=dport or 0, dport_mask=0xFFFF if dport is not None else 0,
            policy=policy,
        )


@dataclass(frozen=True)
class Event:
    """A data-plane event. SA events name the SA (spi, direction, cookie). An ``acquire``
    (a PROTECT rule without an SA met a packet; at most one per rule and second) names the
    rule (``value`` is its index), its ``policy`` and the packet's selector: ``proto``,
    ``src``/``dst`` addresses and ``sport``/``dport`` (0 without ports). A ``peer_moved``
    (an inbound SA with follow_peer took an authenticated packet from elsewhere; at most
    one per SA and second) names the SA and the new ``src`` and ``sport``."""

    kind: str
    spi: int
    direction: str
    cookie: int
    value: int
    policy: int = 0
    proto: int = 0
    src: str | None = None
    dst: str | None = None
    sport: int = 0
    dport: int = 0


@dataclass(frozen=True)
class PuntedDatagram:
    """An IKE message that arrived on the data plane's NAT-T socket: ``data`` without the
    non-ESP marker, from ``src``:``sport`` to ``dst``:``dport`` (the local socket)."""

    src: str
    sport: int
    dst: str
    dport: int
    data: bytes


@dataclass(frozen=True)
class DropRecord:
    """A sampled inbound drop (native/droplog.h): the reason, the outer source ``src`` and
    destination ``dst`` (None if the outer header had none), the UDP ``sport`` (None for
    raw ESP), the ``spi`` (None for ``malformed``), and when: ``time`` in seconds of
    CLOCK_MONOTONIC (the clock of ``time.monotonic``). Nothing of the payload, never key
    material."""

    reason: str
    direction: str
    src: str | None
    sport: int | None
    spi: int | None
    time: float
    worker: int
    dst: str | None = None


def _ip(family: int, raw) -> str:
    return str(ipaddress.ip_address(bytes(raw[0:4] if family == 4 else raw[0:16])))


class Dataplane:
    """One data plane instance with `workers` per-worker crypto context slots."""

    def __init__(self, workers: int = 1) -> None:
        dp = lib.espdp_new(workers)
        if dp == ffi.NULL:
            raise DataplaneError(f"cannot create a data plane with {workers} workers")
        self._dp = ffi.gc(dp, lib.espdp_free)
        # The staged/live set as Python sees it. Indexed so that install, replace and
        # retire cost O(the rules of one policy), not O(SAs + rules), on a hub:
        self._sas: dict[SA, None] = {}  # insertion-ordered
        self._rules: list[tuple[Rule, SA | None]] = []
        self._bound: dict[SA, set[int]] = {}  # SA -> indices of the rules it serves
        self._protect: dict[int, list[int]] = {}  # policy -> indices of its PROTECT rules
        self._dirty = True  # staged changes not yet live
        self._commit_failed = False  # the staged changes were refused; wait for new ones
        self._workers_running = False  # then Python may not push packets (module docstring)

    # --- configuration ---

    def add_sa(self, **spec) -> SA:
        """Create an SA (keywords as for create_sa) and stage it for the next commit."""
        sa = self.create_sa(**spec)
        self._sas[sa] = None
        self._staged()
        return sa

    def create_sa(
        self,
        *,
        spi: int,
        direction: str,
        transform: str | Transform,
        key: bytes,
        auth_key: bytes | None = None,
        mode: str = "tunnel",
        local: str,
        peer: str,
        encap: str = "esp",
        source_check: str = "strict",
        follow_peer: bool = False,
        sport: int = 4500,
        dport: int = 4500,
        replay_window: int = 1024,
        esn: bool = False,
        soft: Lifetime | None = None,
        hard: Lifetime | None = None,
        policy: int = 0,
        cookie: int = 0,
    ) -> SA:
        """Create an SA without staging it (``publish`` places it in a table set).
        ``follow_peer`` (inbound, UDP, anti-replay on): authenticated new packets from
        another address or port raise ``peer_moved`` events (RFC 7296 2.23)."""
        t = transform if isinstance(transform, Transform) else _parsed_transform(transform)
        for name, table, value in (("direction", _DIRECTIONS, direction), ("mode", _MODES, mode),
                                   ("encap", _ENCAPS, encap),
                                   ("source_check", SOURCE_CHECKS, source_check)):
            if value not in table:
                raise DataplaneError(f"{name} must be one of {', '.join(table)}, not {value!r}")
        if not 0 < spi < 2**32:
            raise DataplaneError(f"SPI {spi} is out of range")
        auth_key = auth_key or b""
        if len(key) != t.key_len or len(auth_key) != t.auth_key_len:
            raise DataplaneError(
                f"{t}: key must be {t.key_len} bytes and auth_key {t.auth_key_len} bytes, "
                f"not {len(key)} and {len(auth_key)}"
            )
        cfg = ffi.new("struct espdp_sa_config *")
        cfg.spi = spi
        cfg.direction = _DIRECTIONS[direction]
        cfg.mode = _MODES[mode]
        cfg.encap = _ENCAPS[encap]
        cfg.source_check = SOURCE_CHECKS[source_check]
        cfg.follow_peer = int(follow_peer)
        cfg.esn = int(esn)
        cfg.cipher = t.cipher
        cfg.cipher_key_bits = t.cipher_key_bits
        cfg.integ = t.integ
        cfg.sport, cfg.dport = sport, dport
        cfg.replay_window = replay_window
        cfg.policy = policy
        cfg.cookie = cookie
        if _addr(local, cfg.local) != _addr(peer, cfg.peer):
            raise DataplaneError(f"local {local} and peer {peer} are of different families")
        for lim, src in ((cfg.soft, soft), (cfg.hard, hard)):
            if src is not None:
                lim.seconds, lim.bytes, lim.packets = src.seconds, src.bytes, src.packets
        out = ffi.new("espdp_sa **")
        _check(
            lib.espdp_sa_create(self._dp, cfg, ffi.from_buffer(key), len(key),
                                ffi.from_buffer(auth_key), len(auth_key), out),
            f"SA 0x{spi:08X} {direction}",
        )
        handle = ffi.gc(out[0], lib.espdp_sa_release)
        return SA(spi, direction, t, mode, encap, str(local), str(peer), replay_window, esn,
                  policy, cookie, handle)

    def remove_sa(self, sa: SA) -> None:
        del self._sas[sa]
        self._unbind(sa)
        self._staged()

    def add_rule(self, rule: Rule, sa: SA | None = None) -> int:
        """Append a classification rule; returns its index (its place in match order)."""
        self._rules.append((rule, sa))
        self._index_rule(len(self._rules) - 1)
        self._staged()
        return len(self._rules) - 1

    def _index_rule(self, i: int) -> None:
        rule, sa = self._rules[i]
        if sa is not None:
            self._bound.setdefault(sa, set()).add(i)
        if rule.action == "protect":
            self._protect.setdefault(rule.policy, []).append(i)

    def _unbind(self, sa: SA) -> None:
        """The rules `sa` served have no SA now."""
        for i in self._bound.pop(sa, ()):
            self._rules[i] = (self._rules[i][0], None)

    # --- incremental changes (the SA owner's calls; see the module docstring) ---

    def install(self, inbound: SA | None, outbound: SA | None) -> None:
        """Make an SA pair live without rebuilding anything: `inbound` enters the SAD, then
        `outbound` serves every PROTECT rule whose policy is its policy (which must have
        no SA yet: use replace). Either may be None. Both come from create_sa.
        Fails whole (DataplaneError, nothing changed) or succeeds whole."""
        self._ensure_committed()
        _check(lib.espdp_sa_install(self._dp, _handle(inbound), _handle(outbound)),
               f"installing {_pair(inbound, outbound)}")
        self._adopt(inbound, outbound)

    def replace(self, inbound: SA | None, outbound: SA) -> None:
        """Rekey make-before-break: the new `inbound` is live first, then the rules of
        `outbound`'s policy switch to `outbound`. The old outbound SA stops sending at
        once (it stays in ``sas`` until retired); the old inbound SA keeps accepting
        packets in flight until ``retire``."""
        self._ensure_committed()
        _check(lib.espdp_sa_replace(self._dp, _handle(inbound), outbound._handle),
               f"replacing with {_pair(inbound, outbound)}")
        self._adopt(inbound, outbound)

    def retire(self, sa: SA) -> None:
        """Take one SA out of the live set: inbound leaves the SAD, outbound leaves the
        rules it serves (their packets then drop no_sa and raise acquire). Freed once no
        worker can hold it."""
        self._ensure_committed()
        bound = bool(self._bound.get(sa))
        if sa.direction == "out" and not bound:
            if sa in self._sas:  # replaced earlier: serves no rule, only forget it
                del self._sas[sa]
                return
        _check(lib.espdp_sa_retire(self._dp, sa._handle), f"retiring {sa}")
        self._sas.pop(sa, None)
        self._unbind(sa)

    @property
    def sas(self) -> tuple[SA, ...]:
        """Every SA of the set (live, or staged for the next commit)."""
        return tuple(self._sas)

    def _adopt(self, inbound: SA | None, outbound: SA | None) -> None:
        for sa in (inbound, outbound):
            if sa is not None and sa not in self._sas:
                self._sas[sa] = None
        if outbound is not None:
            for i in self._protect.get(outbound.policy, ()):
                rule, before = self._rules[i]
                if before is outbound:
                    continue
                if before is not None:
                    self._bound[before].discard(i)
                    if not self._bound[before]:
                        del self._bound[before]
                self._rules[i] = (rule, outbound)
                self._bound.setdefault(outbound, set()).add(i)

    def commit(self) -> None:
        """Make the staged SAs and rules live in one atomic swap. On failure the live set
        stays as it was and the staged changes stay staged, to be fixed; packet calls then
        keep using the live set instead of retrying the same failing commit."""
        try:
            self.publish(self._sas, self._rules)
        except DataplaneError:
            self._commit_failed = True
            raise

    def publish(self, sas: Iterable[SA], rules: Sequence[tuple[Rule, SA | None]]) -> None:
        """Build a complete table set and swap it in; on error the live set is untouched.
        The published set becomes the staged set that later add_* calls extend."""
        sas, rules = list(sas), list(rules)
        table = lib.espdp_table_new(self._dp)
        if table == ffi.NULL:
            raise DataplaneError("out of memory building the table set")
        try:
            for sa in sas:
                _check(lib.espdp_table_add_sa(table, sa._handle), str(sa))
            for i, (rule, sa) in enumerate(rules):
                handle = sa._handle if sa else ffi.NULL
                _check(lib.espdp_table_add_rule(table, _c_rule(rule), handle), f"rule {i}")
            _check(lib.espdp_publish(self._dp, table), "publishing the table set")
        except BaseException:
            lib.espdp_table_free(table)  # a no-op once published
            raise
        self._sas, self._rules, self._dirty = dict.fromkeys(sas), rules, False
        self._bound, self._protect = {}, {}
        for i in range(len(rules)):
            self._index_rule(i)

    def _staged(self) -> None:
        self._dirty = True
        self._commit_failed = False

    def _ensure_committed(self) -> None:
        if self._dirty and not self._commit_failed:
            self.commit()

    # --- packets ---

    def encap(self, sa: SA | None, packet: bytes) -> bytes:
        """Protect one inner IP packet with `sa` (None: classify it); the outer packet."""
        return _one(self.encap_batch([packet], sa))

    def protect(self, packet: bytes) -> bytes:
        """Classify one packet through the live rules and protect it."""
        return self.encap(None, packet)

    def decap(self, packet: bytes) -> bytes:
        """Verify and decapsulate one outer IP packet; the inner packet or DropError."""
        return _one(self.decap_batch([packet]))

    def encap_batch(self, packets: Sequence[bytes], sa: SA | None = None,
                    worker: int = 0) -> list[bytes | DropError]:
        self._ensure_committed()
        return self._run(lib.espdp_encap_batch, packets, sa, worker)

    def decap_batch(self, packets: Sequence[bytes], worker: int = 0) -> list[bytes | DropError]:
        self._ensure_committed()
        return self._run(lib.espdp_decap_batch, packets, None, worker)

    def _run(self, fn, packets: Sequence[bytes], sa: SA | None, worker: int) -> list:
        if self._workers_running:
            raise DataplaneError("packets from Python would share worker slot "
                                 f"{worker} (its epoch and crypto contexts) with a running "
                                 "worker thread; stop the workers first")
        n = len(packets)  # (a worker the data plane lacks: C drops all as "internal")
        if n == 0:
            return []
        sizes = [HEADROOM + len(p) + TAILROOM for p in packets]
        buf = ffi.new("uint8_t[]", sum(sizes))
        pkts = ffi.new("struct espdp_pkt[]", n)
        base = 0
        for i, p in enumerate(packets):
            pkts[i].buf = buf + base
            pkts[i].cap = sizes[i]
            pkts[i].off = HEADROOM
            pkts[i].len = len(p)
            pkts[i].sa = sa._handle if sa else ffi.NULL
            ffi.memmove(buf + base + HEADROOM, p, len(p))
            base += sizes[i]
        fn(self._dp, worker, pkts, n)
        by_handle = {s._handle: s for s in self._sas}
        out: list[bytes | DropError] = []
        for i in range(n):
            p = pkts[i]
            if p.result == 0:
                out.append(bytes(ffi.buffer(p.buf + p.off, p.len)))
            else:
                used = sa or (by_handle.get(p.sa) if p.sa != ffi.NULL else None)
                out.append(DropError(DROP_REASONS[p.result], used))
        return out

    def classify(self, packet: bytes) -> int | None:
        """Index of the first live rule matching `packet`, or None."""
        self._ensure_committed()
        r = lib.espdp_classify(self._dp, packet, len(packet))
        return None if r < 0 else r

    # --- state ---

    def stats(self, sa: SA) -> dict:
        s = ffi.new("struct espdp_sa_stats *")
        lib.espdp_sa_stats(sa._handle, s)
        out = {name: getattr(s, name) for name in (
            "packets", "bytes", "encaps", "encrypt", "digest", "decaps", "decrypt", "verify",
            "seq")}
        out["age_seconds"] = s.age_ns / 1e9
        out["lifetime_bytes"] = s.life_bytes
        out["lifetime_packets"] = s.life_packets
        for name, bit in _SA_FLAGS.items():
            out[name] = bool(s.flags & bit)
        out["drops"] = {DROP_REASONS[i]: s.drops[i]
                        for i in range(1, len(DROP_REASONS)) if s.drops[i]}
        return out

    def global_drops(self) -> dict[str, dict[str, int]]:
        """Every drop by direction and reason, SA-less ones included."""
        raw = ffi.new("uint64_t[]", 2 * _DROP_SLOTS)
        lib.espdp_global_drops(self._dp, raw, 2 * _DROP_SLOTS)
        return {
            direction: {DROP_REASONS[i]: raw[d * _DROP_SLOTS + i]
                        for i in range(1, len(DROP_REASONS)) if raw[d * _DROP_SLOTS + i]}
            for direction, d in (("in", 0), ("out", 1))
        }

    def rule_hits(self) -> list[int]:
        n = len(self._rules) or 1
        raw = ffi.new("uint64_t[]", n)
        got = lib.espdp_rule_hits(self._dp, raw, n)
        return [raw[i] for i in range(min(got, n))]

    # --- workers ---

    def start_workers(self, tun_fds: Sequence[int], *, esp4: int = -1, esp6: int = -1,
                      udp4: int = -1, udp6: int = -1, send4: int = -1, send6: int = -1,
                      batch: int = 64, vnet_hdr: int = 0, packet: int = -1,
                      ring: int = -1, ring_skip_ifindex: int = 0) -> None:
        """Start the C worker threads on these descriptors (the caller keeps them open).
        `ring`: an unbound AF_PACKET SOCK_DGRAM socket to receive raw ESP through a
        TPACKET_V3 ring (native/ring.h), frames from `ring_skip_ifindex` (the TUN device)
        left to the kernel; OSError if the kernel refuses the ring (nothing started)."""
        self._ensure_committed()
        fds = ffi.new("int[]", list(tun_fds))
        io = ffi.new("struct espdp_io_config *")
        io.tun_fds, io.ntun = fds, len(tun_fds)
        io.esp4_fd, io.esp6_fd, io.udp4_fd, io.udp6_fd = esp4, esp6, udp4, udp6
        io.send4_fd, io.send6_fd = send4, send6
        io.batch = batch
        io.tun_vnet_hdr = int(vnet_hdr)
        io.packet_fd = packet  # AF_PACKET send path; its table: set_nexthops
        io.rx_ring_fd = ring
        io.rx_ring_block, io.rx_ring_timeout_ms = RING_BLOCK, RING_TIMEOUT_MS
        io.rx_ring_skip_ifindex = ring_skip_ifindex
        status = lib.espdp_workers_start(self._dp, io)
        if status == lib.ESPDP_ERR_IO:
            err = ffi.errno
            raise OSError(err, f"receive ring: {os.strerror(err)}")
        _check(status, "starting workers")
        self._workers_running = True

    def stop_workers(self) -> None:
        lib.espdp_workers_stop(self._dp)
        self._workers_running = False

    def io_stats(self) -> dict[str, int]:
        s = ffi.new("struct espdp_io_stats *")
        lib.espdp_io_stats(self._dp, s)
        return {name: getattr(s, name) for name in (
            "tun_rx", "tun_tx", "net_rx", "net_tx", "send_errors", "recv_errors", "tun_errors",
            "net_tx_gso", "net_rx_gro", "net_tx_packet", "net_rx_ring", "net_rx_ring_drops")}

    def set_nexthops(self, entries: Sequence[tuple[str, int, bytes, int]]) -> None:
        """Replace the AF_PACKET send path's table: (outer destination, ifindex, next-hop
        MAC, MTU) per entry; [] sends everything on the raw sockets."""
        n = len(entries)
        arr = ffi.new("struct espdp_nexthop[]", max(n, 1))
        for i, (addr, ifindex, mac, mtu) in enumerate(entries):
            ip = ipaddress.ip_address(addr)
            arr[i].family = ip.version
            ffi.memmove(arr[i].addr, ip.packed, len(ip.packed))
            arr[i].ifindex = ifindex
            ffi.memmove(arr[i].mac, mac, 6)
            arr[i].mtu = mtu
        _check(lib.espdp_nexthops_set(self._dp, arr, n), "setting next hops")

    def reclaim(self) -> int:
        """Free retired tables no worker can see; returns how many still wait."""
        return lib.espdp_reclaim(self._dp)

    def sa_overhead(self, sa: SA) -> int:
        info = ffi.new("struct espdp_sa_info *")
        lib.espdp_sa_info(sa._handle, info)
        return info.overhead

    @staticmethod
    def sa_crypto_backend(sa: SA) -> str:
        """The AEAD backend `sa` was created with ("openssl" for non-AEAD transforms)."""
        info = ffi.new("struct espdp_sa_info *")
        lib.espdp_sa_info(sa._handle, info)
        return next((n for n, c in CRYPTO_BACKEND_CODES.items() if c == info.crypto_backend),
                    "unknown")

    @property
    def workers(self) -> int:
        return lib.espdp_nworkers(self._dp)

    def event_fd(self) -> int:
        return lib.espdp_event_fd(self._dp)

    def events(self, limit: int = 1024) -> list[Event]:
        """Take up to about `limit` queued events, oldest first (the event fd stays
        readable while more wait: a caller that stops at `limit` is called again)."""
        buf = ffi.new("struct espdp_event[]", 64)
        out: list[Event] = []
        while True:
            if len(out) >= limit:
                return out
            n = lib.espdp_events_read(self._dp, buf, 64)
            for i in range(n):
                e = buf[i]
                kind = EVENT_KINDS[e.kind] if e.kind < len(EVENT_KINDS) else str(e.kind)
                extra = {}
                if kind == "acquire":
                    extra = dict(policy=e.policy, proto=e.proto, src=_ip(e.family, e.src),
                                 dst=_ip(e.family, e.dst), sport=e.sport, dport=e.dport)
                elif kind == "peer_moved":
                    extra = dict(src=_ip(e.family, e.src), sport=e.sport)
                out.append(Event(kind, e.spi, "out" if e.direction else "in", e.cookie,
                                 e.value, **extra))
            if n < 64:
                return out

    # --- the drop log (native/droplog.c) ---

    def drop_records(self, limit: int = 4096) -> list[DropRecord]:
        """Take up to ``limit`` sampled drop records, each worker's oldest first. One reader
        at a time (C takes a lock); the daemon's is its loop (ops/drop_log.py)."""
        buf = ffi.new("struct espdp_drop_record[]", 256)
        out: list[DropRecord] = []
        while len(out) < limit:
            n = lib.espdp_drop_records_read(self._dp, buf, min(256, limit - len(out)))
            for i in range(n):
                r = buf[i]
                out.append(DropRecord(
                    DROP_REASONS[r.reason] if r.reason < len(DROP_REASONS) else str(r.reason),
                    "out" if r.direction else "in",
                    _ip(r.family, r.src) if r.family in (4, 6) else None,
                    r.sport if r.flags & lib.ESPDP_DROP_RECORD_PORT else None,
                    r.spi if r.flags & lib.ESPDP_DROP_RECORD_SPI else None,
                    r.time_ns / 1e9, r.worker,
                    _ip(r.family, r.dst) if r.family in (4, 6) else None))
            if n < 256:
                break
        return out

    def drop_records_suppressed(self) -> dict[str, int]:
        """Drops of a sampled reason that were not recorded (rate limit or full ring), by
        reason, since the data plane started."""
        raw = ffi.new("uint64_t[]", _DROP_SLOTS)
        lib.espdp_drop_records_suppressed(self._dp, raw, _DROP_SLOTS)
        return {DROP_REASONS[i]: raw[i] for i in range(1, len(DROP_REASONS)) if raw[i]}

    # --- IKE on the NAT-T socket ---

    def punt_fd(self) -> int:
        """An fd that is readable while punted IKE datagrams wait (poll it, then punted())."""
        return lib.espdp_punt_fd(self._dp)

    def punted(self, limit: int = 256) -> list[PuntedDatagram]:
        """Take up to `limit` waiting IKE datagrams, oldest first."""
        meta = ffi.new("struct espdp_punted *")
        buf = ffi.new("uint8_t[]", 65536)
        out: list[PuntedDatagram] = []
        while len(out) < limit and lib.espdp_punt_read(self._dp, meta, buf, 65536):
            out.append(PuntedDatagram(_ip(meta.family, meta.src), meta.sport,
                                      _ip(meta.family, meta.dst), meta.dport,
                                      bytes(ffi.buffer(buf, meta.len))))
        return out

    def punt_stats(self) -> dict[str, int]:
        """punted: queued for the control plane so far; dropped: the queue was full;
        queued: waiting now."""
        s = ffi.new("struct espdp_punt_stats *")
        lib.espdp_punt_stats(self._dp, s)
        return {"punted": s.punted, "dropped": s.dropped, "queued": s.queued}

    def send_ike(self, local: str, peer: str, port: int, data: bytes) -> None:
        """Send one IKE message to peer:port from local, on the workers' own NAT-T socket
        (the source port the peer's NAT mapping knows), the non-ESP marker in front.
        Needs running workers with a NAT-T socket of that family."""
        src, dst = ffi.new("struct espdp_addr *"), ffi.new("struct espdp_addr *")
        if _addr(local, src) != _addr(peer, dst):
            raise DataplaneError(f"send_ike: local {local} and peer {peer} differ in family")
        status = lib.espdp_send_ike(self._dp, src, dst, port, data, len(data))
        if status == lib.ESPDP_ERR_IO:
            err = ffi.errno
            raise OSError(err, f"send_ike to {peer}:{port}: {os.strerror(err)}")
        _check(status, f"send_ike to {peer}:{port}")

    def reserve(self, sa: SA, *, resume_after: int, limit: int, warn_at: int) -> None:
        """Let `sa` send sequence numbers above `resume_after` up to `limit` (persisted by
        the caller first), raising a seq_reserve event at `warn_at` (see seqstore.py)."""
        _check(lib.espdp_sa_reserve(sa._handle, resume_after, limit, warn_at), str(sa))

    def set_remote(self, sa: SA, peer: str, port: int) -> None:
        """Send to (outbound) or expect packets from (inbound) `peer`:`port` from now on;
        the address family stays the SA's (RFC 7296 2.23, the SA owner's call)."""
        addr = ffi.new("struct espdp_addr *")
        if not 0 < port < 65536:
            raise DataplaneError(f"port {port} is out of range")
        _addr(peer, addr)
        _check(lib.espdp_sa_set_remote(sa._handle, addr, port), f"{sa}: remote {peer}:{port}")

    @staticmethod
    def remote(sa: SA) -> tuple[str, int]:
        """Where `sa` sends to or expects packets from now: (address, UDP port)."""
        addr = ffi.new("struct espdp_addr *")
        port = ffi.new("uint16_t *")
        lib.espdp_sa_remote(sa._handle, addr, port)
        return _ip(addr.family, addr.bytes), port[0]

    @staticmethod
    def crypto_features() -> str:
        return ffi.string(lib.espdp_crypto_features()).decode().strip()


# --- the AEAD backend (process-wide; dataplane/crypto_backend.py is the way in) ---

CRYPTO_BACKEND_CODES = {"openssl": lib.ESPDP_CRYPTO_OPENSSL, "ipsec-mb": lib.ESPDP_CRYPTO_IPSECMB}


def crypto_backend_available(name: str) -> bool:
    code = CRYPTO_BACKEND_CODES.get(name)
    return code is not None and bool(lib.espdp_crypto_backend_available(code))


def crypto_backend_set(name: str) -> bool:
    return lib.espdp_crypto_backend_set(CRYPTO_BACKEND_CODES[name]) == lib.ESPDP_OK


def crypto_backend_get() -> str:
    code = lib.espdp_crypto_backend_get()
    return next((n for n, c in CRYPTO_BACKEND_CODES.items() if c == code), "unknown")


def crypto_ipsecmb_arch() -> str:
    return ffi.string(lib.espdp_crypto_ipsecmb_arch()).decode()


def _handle(sa: SA | None):
    return sa._handle if sa is not None else ffi.NULL


def _pair(inbound: SA | None, outbound: SA | None) -> str:
    return " and ".join(str(sa) for sa in (inbound, outbound) if sa is not None) or "nothing"


def _c_rule(rule: Rule):
    r = ffi.new("struct espdp_rule *")
    r.family = rule.family
    if rule.action not in ("protect", "discard"):
        raise DataplaneError(f"rule action must be protect or discard, not {rule.action!r}")
    r.action = lib.ESPDP_ACTION_PROTECT if rule.action == "protect" else lib.ESPDP_ACTION_DISCARD
    r.proto, r.proto_mask = rule.proto, rule.proto_mask
    for name in ("src", "src_mask", "dst", "dst_mask"):
        value = getattr(rule, name)
        ffi.memmove(getattr(r, name), value, len(value))
    r.sport, r.sport_mask = rule.sport, rule.sport_mask
    r.dport, r.dport_mask = rule.dport, rule.dport_mask
    r.policy = rule.policy
    return r


def _one(results: list[bytes | DropError]) -> bytes:
    (result,) = results
    if isinstance(result, DropError):
        raise result
    return result
