"""The espd daemon: lifecycle, reload, and the state that `show` and the metrics read.

Order of start (each step undone on failure and at exit, in reverse):
  1. load the config and plan it; build the data plane's first table set
  2. TUN device (one queue per worker), MTU, fail-closed routes into it
  3. sockets: raw ESP (IPv4/IPv6), UDP 4500 when a map uses it, raw send sockets
  4. C worker threads; control socket; Prometheus exporter; READY=1 to systemd
A reload builds the next table set beside the live one and swaps it in one step; a config
that does not load leaves the running tables untouched.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import selectors
import signal
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from espd import __version__
from espd.config import load
from espd.control import ControlServer, make_handler
from espd.dataplane import SA, Dataplane, DataplaneError
from espd.metrics import start_exporter
from espd.model import Config, ConfigError, Location, Problem
from espd.netlink import (
    bring_up,
    install_routes,
    pin_peers,
    remove_routes,
    underlay_mtu,
    unpin_peers,
)
from espd.plan import Plan, SaSpec, build_plan, describe_changes, wipe_keys
from espd.privileges import drop_to, keep_out_of_core_dumps, pwd_ids
from espd.seqstore import RESERVE_BLOCK, SequenceStore
from espd.tun import close_tun, open_tun

log = logging.getLogger("espd")

NATT_PORT = 4500
SOCKET_BUFFER = 4 << 20
DEFAULT_TUN_MTU = 1400
HANDOVER = 1 << 16  # sequence numbers an SA being replaced may still send meanwhile
MIN_TUN_MTU = 1280  # IPv6's minimum: below it IPv6 inner traffic cannot pass


def sd_notify(message: str) -> None:
    """Send a state line to systemd ($NOTIFY_SOCKET), if we run under it."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(message.encode(), address)
    except OSError as e:
        log.warning("cannot notify systemd: %s", e)


@dataclass
class Sockets:
    esp4: socket.socket | None = None
    esp6: socket.socket | None = None
    udp4: socket.socket | None = None
    udp6: socket.socket | None = None
    send4: socket.socket | None = None
    send6: socket.socket | None = None

    def fd(self, name: str) -> int:
        s = getattr(self, name)
        return s.fileno() if s else -1

    def close(self) -> None:
        for name in ("esp4", "esp6", "udp4", "udp6", "send4", "send6"):
            s = getattr(self, name)
            if s:
                s.close()
                setattr(self, name, None)


def _udp_families(plan: Plan) -> set[int]:
    return {6 if ":" in sa.peer else 4 for sa in plan.sas if sa.encap == "udp"}


def open_sockets(plan: Plan) -> Sockets:
    """Raw ESP receive and raw send sockets for both IP versions (a reload may add a peer
    of either), UDP 4500 only for the versions the plan encapsulates in UDP."""
    udp_families = _udp_families(plan)
    s = Sockets()
    try:
        for fam, af in ((4, socket.AF_INET), (6, socket.AF_INET6)):
            if fam == 6 and not socket.has_ipv6:
                continue
            esp = socket.socket(af, socket.SOCK_RAW, socket.IPPROTO_ESP)
            esp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            send = socket.socket(af, socket.SOCK_RAW, socket.IPPROTO_RAW)
            send.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            setattr(s, f"esp{fam}", esp)
            setattr(s, f"send{fam}", send)
            if fam in udp_families:
                u = socket.socket(af, socket.SOCK_DGRAM)
                if af == socket.AF_INET6:
                    u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
                u.bind(("::" if fam == 6 else "0.0.0.0", NATT_PORT))
                setattr(s, f"udp{fam}", u)
    except OSError:
        s.close()
        raise
    return s


class Daemon:
    def __init__(self, config_path: str) -> None:
        self.config_path = os.path.abspath(config_path)
        self.config: Config = load(self.config_path)
        self.plan: Plan = build_plan(self.config)
        settings = self.config.settings
        self.workers = settings.workers or os.cpu_count() or 1
        self.dp = Dataplane(self.workers)
        self.seqstore = SequenceStore(settings.state_dir)
        self.seq_limits: dict[SaSpec, int] = {}  # persisted reservation per outbound SA
        self.reserve_failed: set[SaSpec] = set()  # retried every loop turn
        self.sas: dict[SaSpec, SA] = {}
        self.cookies: dict[int, SaSpec] = {}
        self.next_cookie = 1
        self.lock = threading.RLock()  # reloads against state reads
        self.reloads = {"success": 0, "failure": 0}
        self.started = time.monotonic()
        self.tun_fds: list[int] = []
        self.routes: tuple[str, ...] = ()
        self.pinned: list[str] = []  # host routes keeping peers out of the tunnel
        self.mtu = DEFAULT_TUN_MTU
        self.sockets = Sockets()
        self.control: ControlServer | None = None
        self.stop_metrics = None
        self._publish(self.plan)

    # --- tables ---

    def _sa_for(self, spec: SaSpec) -> SA:
        sa = self.sas.get(spec)
        if sa is None:
            cookie = self.next_cookie
            self.next_cookie += 1
            sa = self.dp.create_sa(
                spi=spec.spi, direction=spec.direction, transform=spec.transform, key=spec.key,
                auth_key=spec.auth_key, mode=spec.mode, local=spec.local, peer=spec.peer,
                encap=spec.encap, replay_window=spec.replay_window, esn=spec.esn,
                soft=spec.soft, hard=spec.hard, policy=spec.policy, cookie=cookie,
            )
            self.cookies[cookie] = spec
            if spec.direction == "out":
                last = self._handover(spec)
                if last is None:
                    last = self.seqstore.last(spec.peer, spec.spi)
                self.seq_limits[spec] = last
                self._reserve(spec, sa, last)  # a failure here fails the load
        return sa

    def _handover(self, spec: SaSpec) -> int | None:
        """An outbound SA replaced only for its settings (same peer, SPI and key) passes its
        sequence number on instead of skipping its whole reservation: the old SA is capped
        HANDOVER numbers above where it stands, and the new one resumes above the cap."""
        for old, sa in self.sas.items():
            if (old.direction, old.peer, old.spi, old.fingerprint) == (
                    "out", spec.peer, spec.spi, spec.fingerprint):
                cap = min(self.dp.stats(sa)["seq"] + HANDOVER, self.seq_limits[old])
                self.dp.reserve(sa, resume_after=0, limit=cap, warn_at=cap)
                return cap
        return None

    def _reserve(self, spec: SaSpec, sa: SA, resume_after: int) -> None:
        """Persist the next block of sequence numbers for `spec`, then let the SA use it."""
        seq_max = 2**64 - 1 if spec.esn else 2**32 - 1
        limit = min(self.seq_limits[spec] + RESERVE_BLOCK, seq_max)
        self.seqstore.reserve(spec.peer, spec.spi, limit)
        self.dp.reserve(sa, resume_after=resume_after, limit=limit,
                        warn_at=max(resume_after, limit - RESERVE_BLOCK // 2))
        self.seq_limits[spec] = limit

    def extend_reservations(self, specs) -> None:
        for spec in specs:
            sa = self.sas.get(spec)
            if sa is None:
                self.reserve_failed.discard(spec)
                continue
            try:
                self._reserve(spec, sa, 0)
                self.reserve_failed.discard(spec)
            except OSError as e:
                if spec not in self.reserve_failed:
                    log.error("%s: cannot persist sequence reservation (%s); it stops sending "
                              "at %d until this succeeds", spec.label, e, self.seq_limits[spec])
                self.reserve_failed.add(spec)

    def _publish(self, plan: Plan) -> None:
        """Swap in `plan`'s tables; SAs whose spec is unchanged keep their state. The plan's
        keys are wiped afterwards, published or not: the data plane keeps its own copies."""
        try:
            self._swap_in(plan)
        finally:
            wipe_keys(plan)

    def _swap_in(self, plan: Plan) -> None:
        sas = {spec: self._sa_for(spec) for spec in plan.sas}
        out_sa = {(s.map_name, s.seq): sa for s, sa in sas.items() if s.direction == "out"}
        rules = [(r.rule, out_sa.get((r.map_name, r.seq)) if r.protects else None)
                 for r in plan.rules]
        self.dp.publish(list(sas.values()), rules)
        self.sas = sas
        self.cookies = {c: s for c, s in self.cookies.items() if s in sas}
        self.seq_limits = {s: n for s, n in self.seq_limits.items() if s in sas}
        self.dp.reclaim()

    def tun_mtu(self) -> int:
        mtus = [underlay_mtu(spec.peer) - self.dp.sa_overhead(sa)
                for spec, sa in self.sas.items() if spec.direction == "out"]
        return max(MIN_TUN_MTU, min(mtus)) if mtus else DEFAULT_TUN_MTU

    # --- lifecycle ---

    def start(self) -> None:
        settings = self.config.settings
        try:
            self.tun_fds, vnet = open_tun(settings.interface, self.workers, settings.offload)
            self.mtu = self.tun_mtu()
            bring_up(settings.interface, self.mtu)
            self.pinned = pin_peers(self._peers(self.plan), self.plan.routes)
            self.routes = self.plan.routes
            install_routes(settings.interface, self.routes)
            self.sockets = open_sockets(self.plan)
            handler = make_handler(self.state, lambda: self.reload("control socket"),
                                   self.plan_diff)
            self.control = ControlServer(settings.control_socket, handler)
            self.control.bind()
            if settings.user:  # before any thread: capabilities are per thread
                self._become(settings.user)
            s = self.sockets
            self.dp.start_workers(self.tun_fds, esp4=s.fd("esp4"), esp6=s.fd("esp6"),
                                  udp4=s.fd("udp4"), udp6=s.fd("udp6"), send4=s.fd("send4"),
                                  send6=s.fd("send6"), vnet_hdr=vnet)
            self.control.serve()
            if settings.metrics_address:
                self.stop_metrics = start_exporter(settings.metrics_address, self.state)
        except BaseException:
            self.shutdown()
            raise
        self._warn(self.config, self.plan)
        log.info("espd %s up: interface %s mtu %d, %d workers, %d SAs, %d rules, routes %s",
                 __version__, settings.interface, self.mtu, self.workers, len(self.sas),
                 len(self.plan.rules), ", ".join(self.routes) or "none")

    def _become(self, user: str) -> None:
        """Hand the state directory to `user`, then drop root (privileges.py)."""
        if threading.active_count() != 1:
            raise RuntimeError("internal: threads exist before dropping privileges")
        # what runs later must be imported now: the interpreter's files may be root's
        import encodings.idna  # noqa: F401  (host names in socket addresses)

        import espd.show  # noqa: F401  (control replies)
        uid, gid = pwd_ids(user)
        for root, dirs, files in os.walk(self.seqstore.dir):
            for name in [root, *(os.path.join(root, f) for f in dirs + files)]:
                os.chown(name, uid, gid)
        drop_to(user)
        log.info("running as %s (uid %d) with CAP_NET_ADMIN only", user, uid)

    @staticmethod
    def _peers(plan: Plan) -> list[str]:
        return sorted({spec.peer for spec in plan.sas})

    @staticmethod
    def _warn(config: Config, plan: Plan) -> None:
        for warning in config.warnings:
            log.warning("%s", warning)
        for dst in plan.unroutable:
            log.warning("destination %s has a non-contiguous wildcard: no route can carry it; "
                        "route its addresses into %s yourself", dst, config.settings.interface)

    def shutdown(self) -> None:
        """Undo start, in reverse; safe to call more than once."""
        if self.control:
            self.control.stop()
            self.control = None
        if self.stop_metrics:
            self.stop_metrics()
            self.stop_metrics = None
        self.dp.stop_workers()
        self._persist_last_sequence_numbers()
        self.sockets.close()
        if self.routes:
            remove_routes(self.config.settings.interface, self.routes, blackholes=True)
            self.routes = ()
        unpin_peers(self.pinned)
        self.pinned = []
        close_tun(self.tun_fds)

    def _persist_last_sequence_numbers(self) -> None:
        """With no worker running, record each outbound SA's last used sequence number, so
        a clean restart resumes right after it instead of after the whole reservation."""
        for spec, sa in self.sas.items():
            if spec.direction != "out" or spec not in self.seq_limits:
                continue
            try:
                self.seqstore.reserve(spec.peer, spec.spi, self.dp.stats(sa)["seq"])
            except OSError as e:
                log.warning("%s: last sequence number not recorded (%s); the next start "
                            "skips to the reservation instead", spec.label, e)

    def reload(self, source: str) -> list[str]:
        """Load the config again and swap it in; returns the changes. Raises ConfigError
        or ReloadFailed, and then the old tables keep running untouched."""
        with self.lock:
            try:
                config = load(self.config_path)
                plan = build_plan(config)
                try:
                    self._check_reloadable(config, plan)
                except ConfigError:
                    wipe_keys(plan)
                    raise
                changes = describe_changes(self.plan, plan)
                self._publish(plan)
            except ConfigError as e:
                self.reloads["failure"] += 1
                for p in e.problems:
                    log.error("reload (%s) refused, old configuration still running: %s",
                              source, p)
                raise
            except (DataplaneError, OSError, ValueError) as e:
                self.reloads["failure"] += 1
                log.error("reload (%s) failed, old configuration still running: %s", source, e)
                raise ReloadFailed(str(e)) from e
            withdrawn = [r for r in self.routes if r not in plan.routes]
            if withdrawn:
                remove_routes(config.settings.interface, withdrawn, blackholes=True)
            install_routes(config.settings.interface, plan.routes)
            self.routes = plan.routes
            self.config, self.plan = config, plan
            mtu = self.tun_mtu()
            if mtu != self.mtu:
                bring_up(config.settings.interface, mtu)
                changes.append(f"tunnel MTU {self.mtu} -> {mtu}")
                self.mtu = mtu
            self._warn(config, plan)
            self.reloads["success"] += 1
            log.info("reload (%s): %s", source, "; ".join(changes) or "no changes")
            return changes

    def _check_reloadable(self, config: Config, plan: Plan) -> None:
        """Refuse what a running daemon cannot apply, instead of accepting and ignoring it."""
        problems = []
        old, new = self.config.settings, config.settings
        for name in ("interface", "workers", "control_socket", "metrics", "state_dir",
                     "offload", "user"):
            if getattr(old, name) != getattr(new, name):
                problems.append(f"[daemon] {name} cannot change at reload "
                                f"({getattr(old, name)!r} -> {getattr(new, name)!r}); "
                                "restart espd to apply it")
        before = {(s.direction, s.spi, s.peer): s for s in self.plan.sas}
        for spec in plan.sas:
            old_spec = before.get((spec.direction, spec.spi, spec.peer))
            if old_spec and old_spec.fingerprint != spec.fingerprint:
                problems.append(f"{spec.label}: its key changed but its SPI did not; a new key "
                                "needs a new SPI (on both gateways), or the peer cannot tell "
                                "old packets from new ones")
        for fam in sorted(_udp_families(plan)):
            if getattr(self.sockets, f"udp{fam}") is None and self.tun_fds:
                problems.append(f"encapsulation = \"udp\" for an IPv{fam} peer needs the "
                                f"UDP {NATT_PORT} socket, which opens at start: restart espd")
        pinned = {host.split("/")[0] for host in self.pinned}
        for peer in self._peers(plan):  # a new peer, or a new prefix around an old one
            ip = ipaddress.ip_address(peer)
            if self.tun_fds and peer not in pinned and any(
                    ip in ipaddress.ip_network(r) for r in plan.routes
                    if ipaddress.ip_network(r).version == ip.version):
                problems.append(f"peer {peer} would lie inside a protected prefix; restart "
                                "espd so it can route it around the tunnel")
        if problems:
            raise ConfigError([Problem(Location(self.config_path), p) for p in problems])

    def plan_diff(self, path: str) -> list[str]:
        """What reloading `path` would change (ConfigError if it does not load)."""
        new = build_plan(load(path))
        try:
            with self.lock:
                return describe_changes(self.plan, new)
        finally:
            wipe_keys(new)

    # --- what the control socket and the metrics read ---

    def state(self) -> dict:
        with self.lock:
            sas = [self._sa_state(spec, sa) for spec, sa in self.sas.items()]
            hits = self.dp.rule_hits()
            acls = []
            seen: dict[tuple, int] = {}
            for i, r in enumerate(self.plan.rules):
                key = (r.acl, r.acl_line, r.map_name, r.seq)
                if key in seen:  # one ACL line compiled into several rules
                    acls[seen[key]]["hits"] += hits[i] if i < len(hits) else 0
                    continue
                seen[key] = len(acls)
                acls.append({"acl": r.acl, "index": r.acl_line, "text": r.text,
                             "map": r.map_name, "seq": r.seq,
                             "hits": hits[i] if i < len(hits) else 0})
            return {
                "version": __version__, "openssl": ssl.OPENSSL_VERSION,
                "crypto_features": self.dp.crypto_features(), "workers": self.workers,
                "interface": self.config.settings.interface,
                "uptime_seconds": round(time.monotonic() - self.started, 3),
                "config_path": self.config_path, "reloads": dict(self.reloads),
                "io": self.dp.io_stats(), "drops": self.dp.global_drops(),
                "maps": self._maps_state(), "sas": sas, "acls": acls,
            }

    def _sa_state(self, spec: SaSpec, sa: SA) -> dict:
        st = self.dp.stats(sa)
        hard = spec.hard  # None below: no hard limit (see plan._lifetimes)
        remaining_s = max(0, hard.seconds - int(st["age_seconds"])) if hard.seconds else None
        remaining_b = max(0, hard.bytes - st["lifetime_bytes"]) if hard.bytes else None
        return {
            "map": spec.map_name, "seq": spec.seq, "peer": spec.peer, "local": spec.local,
            "direction": spec.direction, "spi": spec.spi, "transform": spec.transform,
            "mode": spec.mode, "encap": spec.encap, "replay_window": spec.replay_window,
            "esn": spec.esn, "packets": st["packets"], "bytes": st["bytes"],
            **{k: st[k] for k in ("encaps", "encrypt", "digest", "decaps", "decrypt", "verify")},
            "sequence": st["seq"], "drops": st["drops"],
            "lifetime_remaining_seconds": remaining_s, "lifetime_remaining_bytes": remaining_b,
            "soft_expired": st["soft_expired"], "hard_expired": st["hard_expired"],
            "seq_cycled": st["seq_cycled"],
        }

    def _maps_state(self) -> list[dict]:
        out = []
        for entry in self.config.crypto_maps:
            tset = self.config.transform_sets[entry.transform_set]
            acl = self.config.access_lists[entry.match_address]
            permits = [e for e in acl.entries if e.action == "permit"]
            out.append({
                "map": entry.map_name, "seq": entry.seq, "peer": str(entry.peer),
                "local": str(entry.local), "match_address": entry.match_address,
                "transform_set": entry.transform_set, "transform": tset.transform.name,
                "mode": tset.mode, "encap": entry.encapsulation,
                "lifetime_seconds": entry.lifetime.seconds,
                "lifetime_kilobytes": entry.lifetime.kilobytes,
                "replay_window": entry.replay_window, "esn": entry.esn,
                "inbound_spi": entry.inbound.spi, "outbound_spi": entry.outbound.spi,
                "local_ident": [str(e.src) for e in permits],
                "remote_ident": [str(e.dst) for e in permits],
            })
        return out

    def send_nat_keepalives(self) -> None:
        """One 0xFF byte from port 4500 to every UDP-encapsulating peer (RFC 3948 2.3)."""
        peers = {spec.peer for spec in self.sas if spec.direction == "out" and spec.encap == "udp"}
        for peer in peers:
            sock = self.sockets.udp6 if ":" in peer else self.sockets.udp4
            if sock is None:
                continue
            try:
                sock.sendto(b"\xff", (peer, NATT_PORT))
            except OSError as e:
                log.warning("NAT keepalive to %s failed: %s", peer, e)

    # --- events from the data plane ---

    def drain_events(self) -> None:
        for event in self.dp.events():
            spec = self.cookies.get(event.cookie)
            what = spec.label if spec else f"SPI 0x{event.spi:08X} {event.direction}"
            if event.kind == "soft_expired":
                log.warning("%s: soft lifetime reached; rekey soon (new SPI and key)", what)
            elif event.kind == "hard_expired":
                log.error("%s: hard lifetime reached; its traffic is dropped until rekeyed", what)
            elif event.kind == "seq_reserve" and spec:
                self.extend_reservations([spec])
            elif event.kind == "seq_cycled":
                log.error("%s: sequence numbers used up; its traffic is dropped until rekeyed",
                          what)
            else:
                log.warning("data plane event %s (%d)", event.kind, event.value)


class ReloadFailed(Exception):
    """A reload that loaded but could not be applied; the old tables keep running."""


class Signals:
    """Signals turned into a queue the main loop drains, installed before anything starts:
    a SIGTERM that arrives while espd starts up still stops it cleanly."""

    def __init__(self) -> None:
        self.pending: list[int] = []
        self.rsock, self.wsock = socket.socketpair()
        self.rsock.setblocking(False)
        self.wsock.setblocking(False)
        self.old_fd = signal.set_wakeup_fd(self.wsock.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: self.pending.append(signum))

    def drain(self) -> None:
        try:
            self.rsock.recv(4096)
        except BlockingIOError:
            pass

    def close(self) -> None:
        signal.set_wakeup_fd(self.old_fd)
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        self.rsock.close()
        self.wsock.close()


def _main_loop(daemon: Daemon, signals: Signals) -> None:
    watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
    interval = min(1.0, watchdog_usec / 2e6) if watchdog_usec else 1.0
    interval = min(interval, daemon.config.settings.nat_keepalive or interval)
    sel = selectors.DefaultSelector()
    sel.register(signals.rsock, selectors.EVENT_READ)
    sel.register(daemon.dp.event_fd(), selectors.EVENT_READ)
    next_keepalive = time.monotonic()
    try:
        while True:
            if not signals.pending:
                sel.select(timeout=interval)
            keepalive = daemon.config.settings.nat_keepalive  # RFC 3948 4: NAT mappings
            if keepalive and time.monotonic() >= next_keepalive:
                daemon.send_nat_keepalives()
                next_keepalive = time.monotonic() + keepalive
            signals.drain()
            daemon.drain_events()
            if daemon.reserve_failed:
                daemon.extend_reservations(list(daemon.reserve_failed))
            daemon.dp.reclaim()
            if watchdog_usec:
                sd_notify("WATCHDOG=1")
            while signals.pending:
                signum = signals.pending.pop(0)
                if signum == signal.SIGHUP:
                    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
                    sd_notify(f"RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading")
                    try:
                        daemon.reload("SIGHUP")
                    except (ConfigError, ReloadFailed):
                        pass  # logged and counted; the old configuration keeps running
                    sd_notify(f"READY=1\nSTATUS={_status(daemon)}")
                else:
                    log.info("signal %s: stopping", signal.Signals(signum).name)
                    return
    finally:
        sel.close()


def _status(daemon: Daemon) -> str:
    return (f"{len(daemon.sas)} SAs on {daemon.config.settings.interface}, "
            f"{daemon.reloads['success']} reloads, {daemon.reloads['failure']} failed")


def run(config_path: str) -> int:
    """`espd run -c FILE`: run the daemon in the foreground until SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="espd[%(process)d]: %(levelname)s %(message)s")
    try:
        keep_out_of_core_dumps()  # this process holds keys
    except OSError as e:
        log.warning("cannot turn off core dumps (%s); keys could end up in one", e)
    signals = Signals()
    try:
        try:
            daemon = Daemon(config_path)
            daemon.start()
        except ConfigError as e:
            for problem in e.problems:
                log.error("%s", problem)
            return 1
        except Exception as e:  # every start failure ends in one clear line and exit 1
            log.error("cannot start: %s", e)
            return 1
        sd_notify(f"READY=1\nSTATUS={_status(daemon)}")
        try:
            _main_loop(daemon, signals)
        finally:
            sd_notify("STOPPING=1")
            daemon.shutdown()
            log.info("stopped")
        return 0
    finally:
        signals.close()
