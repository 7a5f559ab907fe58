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

import logging
import os
import threading
import time

from espd import __version__
from espd.config.load import load
from espd.config.model import Config
from espd.dataplane import SA, Dataplane
from espd.keying.sequence_store import RESERVE_BLOCK, SequenceStore
from espd.ops.control import ControlServer, make_handler
from espd.ops.metrics import start_exporter
from espd.policy.plan import Plan, SaSpec, build_plan, wipe_keys
from espd.service import reload, state_view
from espd.service.sockets import NATT_PORT, Sockets, open_sockets
from espd.system.privileges import drop_to, pwd_ids
from espd.system.routes import (
    bring_up,
    install_routes,
    pin_peers,
    remove_routes,
    underlay_mtu,
    unpin_peers,
)
from espd.system.tun import close_tun, open_tun

log = logging.getLogger("espd")

DEFAULT_TUN_MTU = 1400
HANDOVER = 1 << 16  # sequence numbers an SA being replaced may still send meanwhile
MIN_TUN_MTU = 1280  # IPv6's minimum: below it IPv6 inner traffic cannot pass


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
        """Hand the state directory to `user`, then drop root (system/privileges.py)."""
        if threading.active_count() != 1:
            raise RuntimeError("internal: threads exist before dropping privileges")
        # what runs later must be imported now: the interpreter's files may be root's
        import encodings.idna  # noqa: F401  (host names in socket addresses)

        import espd.ops.show  # noqa: F401  (control replies)
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
        """Load the config again and swap it in (service/reload.py)."""
        return reload.reload(self, source)

    def plan_diff(self, path: str) -> list[str]:
        """What reloading `path` would change (service/reload.py)."""
        return reload.plan_diff(self, path)

    # --- what the control socket and the metrics read ---

    def state(self) -> dict:
        return state_view.snapshot(self)

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
