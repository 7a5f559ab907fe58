"""The espd daemon: one instance's lifecycle and what it holds.

Order of start (each step undone on failure and at exit, in reverse):
  0. load the config (only reading), then take the instance lock (instance_lock.py): a
     second espd on the same state directory stops here, having touched nothing
  1. plan it; the SA owner builds the data plane's first table set (keying/)
  2. TUN device (created here; one that exists is refused), MTU, fail-closed routes
  3. sockets: raw ESP (IPv4/IPv6), UDP 4500 when a map uses it, raw send sockets
  4. C worker threads; control socket; Prometheus exporter; READY=1 to systemd
At exit a process removes only what it created: the routes and host routes it added
(system/routes.py returns them), the TUN device by closing its queues.

Threads (the rules of keying/owner.py): everything here runs on the event loop's thread,
except `state()` and `post_reload()`, which control-socket and metrics threads call.
They read `self.view`, an immutable View replaced whole after every change, or post to
the loop; shutdown stops them, and waits for those in flight, before the workers stop.
Invariants: the loop's thread is the View's only writer; a View's SA and IKE snapshots
are of one moment (built in one call on the loop, no await between); replacing it costs
O(what changed) (keying/cow_table.py), and readers take it once per request and make
its lists and plain data themselves (state_view.py), never the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from espd import __version__
from espd.config.load import load
from espd.config.model import Config
from espd.dataplane import Dataplane, crypto_backend
from espd.ike.engine.engine import IkeEngine
from espd.ike.engine.hosting import follow, host
from espd.ike.engine.view import Snapshot as IkeSnapshot
from espd.keying.manual import ManualKeying
from espd.keying.owner import SaOwner, Snapshot
from espd.keying.sequence_store import SequenceStore
from espd.ops.control import ControlServer, make_handler
from espd.ops.metrics import start_exporter
from espd.policy.ids import PolicyIds
from espd.policy.ike_plan import ike_settings, ike_udp_families, wipe_ike_keys
from espd.policy.plan import Plan, build_plan, wipe_keys
from espd.policy.tun_mtu import planned_overheads
from espd.service import ike_actions, reload, state_view
from espd.service.instance_lock import InstanceLock
from espd.service.sockets import NATT_PORT, Sockets, open_sockets
from espd.system.nexthops import NextHops
from espd.system.privileges import drop_to, pwd_ids
from espd.system.routes import (
    bring_up,
    install_routes,
    pin_peers,
    remove_routes,
    underlay_mtus,
    unpin_peers,
)
from espd.system.tun import close_tun, open_tun

log = logging.getLogger("espd")

DEFAULT_TUN_MTU = 1400
MIN_TUN_MTU = 1280  # IPv6's minimum: below it IPv6 inner traffic cannot pass
RELOAD_TIMEOUT = 60.0  # seconds a control-socket reload may take (cli.RELOAD_TIMEOUT too)
ACTION_TIMEOUT = 5.0  # seconds an IKE action (initiate, clear) may take to be started
DRAIN_TIMEOUT = 5.0  # seconds shutdown waits for readers still in flight
IKE_VIEW_INTERVAL = 1.0  # seconds between refreshes of what show ike sa reads


@dataclass(frozen=True)
class View:
    """What readers on other threads see of the daemon: replaced whole, never changed."""

    config: Config
    plan: Plan
    sas: Snapshot
    reloads: tuple[int, int]  # (success, failure)
    mtu: int
    routes: tuple[str, ...]
    # the IKE engine's snapshot at the same moment as `sas` (None without IKE): one
    # object, so a reader never pairs Child SAs of one moment with IKE SAs of another.
    # Both are immutable and cost O(what changed) to replace; readers turn them into
    # lists and plain data on their own thread (state_view.py)
    ike: IkeSnapshot | None = None


class Stopping(Exception):
    """The daemon is stopping: a request that arrives now is refused."""

    def __init__(self) -> None:
        super().__init__("espd is stopping")


class Readers:
    """Counts calls in flight from other threads, so shutdown can wait for them."""

    def __init__(self) -> None:
        self._busy = 0
        self._closed = False
        self._cond = threading.Condition()

    def __enter__(self) -> Readers:
        with self._cond:
            if self._closed:
                raise Stopping()
            self._busy += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()

    def close(self, timeout: float) -> bool:
        """Refuse new calls; wait for those in flight. False if some are still running."""
        with self._cond:
            self._closed = True
            return self._cond.wait_for(lambda: self._busy == 0, timeout)


ROUTES_LOGGED = 8  # prefixes named in the "up" line; a hub routes thousands


def routes_text(routes: tuple[str, ...] | list[str]) -> str:
    """The routes for the "up" log line: the first few, then how many in all."""
    if not routes:
        return "none"
    text = ", ".join(routes[:ROUTES_LOGGED])
    return text if len(routes) <= ROUTES_LOGGED else f"{text} ... ({len(routes)} in all)"


class Daemon:
    def __init__(self, config_path: str, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.config_path = os.path.abspath(config_path)
        config = load(self.config_path)
        self.instance = InstanceLock(config.settings.state_dir)
        self.instance.acquire()  # before anything is touched (instance_lock.py)
        try:
            self._setup(config, loop)
        except BaseException:
            self.instance.release()
            raise

    def _setup(self, config: Config, loop: asyncio.AbstractEventLoop | None) -> None:
        settings = config.settings
        self.loop = loop
        self.workers = settings.workers or os.cpu_count() or 1
        # before the first SA: an SA keeps the AEAD backend it was created with
        self.crypto_backend = crypto_backend.select(settings.crypto_backend)
        self.dp = Dataplane(self.workers)
        self.seqstore = SequenceStore(settings.state_dir)
        self.owner = SaOwner(self.dp, self.seqstore)
        self.manual = ManualKeying(self.owner)
        self.started = time.monotonic()
        self.reloads = {"success": 0, "failure": 0}
        self.keepalives_sent = 0  # RFC 3948 NAT keepalives (metrics)
        self.reload_lock = asyncio.Lock()
        self.stopping = False
        self.readers = Readers()
        self._posted: set[concurrent.futures.Future] = set()
        self._post_lock = threading.Lock()  # posting vs. shutdown's cancelling
        self.tun_fds: list[int] = []
        self.routes: tuple[str, ...] = ()  # installed by this process: ours to remove
        self.pinned: list[str] = []  # host routes keeping peers out of the tunnel, ours too
        self.pinned_peers: set[str] = set()  # peers with a host route, ours or not
        self.mtu = DEFAULT_TUN_MTU
        self.sockets = Sockets()
        self.nexthops: NextHops | None = None  # send_path = "packet"
        self.control: ControlServer | None = None
        self.stop_metrics = None
        self.ike: IkeEngine | None = None  # hosted once the loop serves (start_ike)
        self.policy_ids = PolicyIds()  # an entry's id for the daemon's life (policy/ids.py)
        plan = build_plan(config, self.policy_ids)
        try:
            self.manual.apply(plan)
        finally:
            wipe_keys(plan)  # the data plane holds its own copies now
        self.config, self.plan = config, plan
        self.publish_view()
        self.owner.on_change = lambda _snapshot: self.publish_view()  # e.g. IKE's children

    # --- IKE (espd.ike; docs/ike-engine.md) ---

    def start_ike(self) -> None:
        """Host the IKE engine when the config has IKE-keyed entries (on the loop's
        thread; at start, before privileges drop, since UDP 500 is a privileged port):
        UDP 500 of its own, UDP 4500 through the data plane. What it starts before the
        loop runs (start = "immediate") is answered once the loop serves."""
        settings = ike_settings(self.config)
        if settings is None:
            return
        self.ike = host(self.loop or asyncio.get_event_loop(), self.owner, settings,
                        send_ike=self.owner.send_ike)
        wipe_ike_keys(self.config)  # the engine holds its own copies
        self.ike.observers.append(lambda _event: self._refresh_ike_state())
        self._ike_view_turn()
        log.info("IKE: %d crypto map entries keyed by IKEv2, %d peers",
                 len(settings.children), len(settings.peers))

    def reconfigure_ike(self, config: Config) -> None:
        """After a reload: the engine follows the new config (or stops, or starts)."""
        settings = ike_settings(config)
        if self.ike is not None and settings is None:
            self.stop_ike()
        elif self.ike is not None and settings is not None:
            for problem in follow(self.ike, settings):  # e.g. a new local address
                log.error("%s; restart espd to listen there", problem)
            self.ike.reconfigure(settings)
            wipe_ike_keys(config)
        elif settings is not None:
            self.start_ike()

    def stop_ike(self) -> None:
        if self.ike is not None:
            self.ike.close()
            self.ike = None
        self.view = dataclasses.replace(self.view, ike=None)

    def _ike_view_turn(self) -> None:
        """Refresh what show and metrics read of the engine (its state changes without
        the SA owner's noticing, e.g. while an IKE SA is negotiated)."""
        if self.ike is None:
            return
        self._refresh_ike_state()
        self.ike.loop.call_later(IKE_VIEW_INTERVAL, self._ike_view_turn)

    def _ike_snapshot(self, resync: bool = False) -> IkeSnapshot | None:
        """O(IKE SAs touched since the last one) (engine.snapshot); `resync`: all of them,
        after what may touch any (a reload, an operator's action)."""
        if self.ike is None:
            return None
        return self.ike.resync() if resync else self.ike.snapshot()

    def _refresh_ike_state(self, resync: bool = False) -> None:
        """Replace the View with the engine's state of now (same SAs, config, plan)."""
        if self.ike is not None:
            self.view = dataclasses.replace(self.view, ike=self._ike_snapshot(resync))

    def publish_view(self) -> None:
        """Replace the View readers see (after every change, on the loop's thread). The
        loop's thread is its only writer; readers take `self.view` once per request."""
        self.view = View(self.config, self.plan, self.owner.snapshot,
                         (self.reloads["success"], self.reloads["failure"]), self.mtu,
                         self.routes, self._ike_snapshot())

    def tun_mtu(self, outbound=None, config: Config | None = None) -> int:
        """The TUN MTU the outbound SAs and the IKE-keyed entries' transform sets allow
        (`outbound`: the owner's records, e.g. a change's; by default the live ones;
        `config`: by default the running one)."""
        pairs = ([(i.spec.peer, i.sa) for i in outbound] if outbound is not None else
                 [(v.spec.peer, v.sa) for v in self.owner.snapshot.outbound()])
        overheads = [(peer, self.dp.sa_overhead(sa)) for peer, sa in pairs]
        overheads += planned_overheads(config or self.config)
        links = underlay_mtus({p for p, _ in overheads})
        mtus = [links[peer] - overhead for peer, overhead in overheads]
        return max(MIN_TUN_MTU, min(mtus)) if mtus else DEFAULT_TUN_MTU

    # --- lifecycle ---

    def start_workers(self, vnet: int) -> None:
        """The data plane's workers on the open sockets. With receive_path = "ring" a kernel
        that refuses the TPACKET_V3 ring leaves the raw ESP sockets as they were: espd says
        so and receives on them (docs/configuration.md)."""
        s = self.sockets
        while True:
            try:
                self.dp.start_workers(
                    self.tun_fds, esp4=s.fd("esp4"), esp6=s.fd("esp6"), udp4=s.fd("udp4"),
                    udp6=s.fd("udp6"), send4=s.fd("send4"), send6=s.fd("send6"),
                    vnet_hdr=vnet, packet=s.fd("packet"), ring=s.fd("ring"),
                    ring_skip_ifindex=socket.if_nametoindex(self.config.settings.interface))
                return
            except OSError as e:
                if not s.ring:
                    raise
                log.warning("receive_path ring: the kernel refused the receive ring (%s); "
                            "receiving raw ESP on the raw sockets", e.strerror or e)
                s.ring.close()
                s.ring = None

    def start(self) -> None:
        settings = self.config.settings
        try:
            self.tun_fds, vnet = open_tun(settings.interface, self.workers, settings.offload)
            self.mtu = self.tun_mtu()
            bring_up(settings.interface, self.mtu)
            self.pinned, covered = pin_peers(self.peers(self.plan), self.plan.routes)
            self.pinned_peers = set(covered)
            self.routes = tuple(install_routes(settings.interface, self.plan.routes))
            self.sockets = open_sockets(self.plan, ike_udp_families(self.config),
                                        packet=settings.send_path == "packet",
                                        ring=settings.receive_path == "ring")
            handler = make_handler(self.state, lambda: self.post_reload("control socket"),
                                   self.plan_diff, self.post_action)
            self.control = ControlServer(settings.control_socket, handler)
            self.control.bind()
            self.start_ike()  # binds UDP 500, a privileged port: before root is dropped
            if self.sockets.packet:  # opens root-only files: before root is dropped
                self.nexthops = NextHops(lambda: self.peers(self.plan), self.dp.set_nexthops)
            if settings.user:  # before any thread: capabilities are per thread
                self._become(settings.user)
            self.start_workers(vnet)
            if self.nexthops:  # a thread: after privileges drop (system/nexthops.py)
                self.nexthops.start()
            self.publish_view()
            self.control.serve()
            if settings.metrics_address:
                self.stop_metrics = start_exporter(settings.metrics_address, self.state)
        except BaseException:
            self.shutdown()
            raise
        self.warn(self.config, self.plan)
        log.info("espd %s up: interface %s mtu %d, %d workers, %d SAs, %d rules, routes %s",
                 __version__, settings.interface, self.mtu, self.workers,
                 len(self.owner.snapshot.sas), len(self.plan.rules), routes_text(self.routes))

    def _become(self, user: str) -> None:
        """Hand the state directory to `user`, then drop root (system/privileges.py)."""
        if threading.active_count() != 1:
            raise RuntimeError("internal: threads exist before dropping privileges")
        # what runs later must be imported now: the interpreter's files may be root's
        import concurrent.futures.thread  # noqa: F401  (the reload parser's thread)
        import encodings.idna  # noqa: F401  (host names in socket addresses)

        import espd.ops.show  # noqa: F401  (control replies)
        uid, gid = pwd_ids(user)
        for root, dirs, files in os.walk(self.seqstore.dir):
            for name in [root, *(os.path.join(root, f) for f in dirs + files)]:
                os.chown(name, uid, gid)
        drop_to(user)
        log.info("running as %s (uid %d) with CAP_NET_ADMIN only", user, uid)

    @staticmethod
    def peers(plan: Plan) -> list[str]:
        """Every peer address: manual SAs' and (plan.negotiated_peers) IKE-keyed entries',
        each kept out of the tunnel by a host route if a protected prefix covers it."""
        return sorted({spec.peer for spec in plan.sas} | set(plan.negotiated_peers))

    @staticmethod
    def warn(config: Config, plan: Plan) -> None:
        for warning in config.warnings:
            log.warning("%s", warning)
        for dst in plan.unroutable:
            log.warning("destination %s has a non-contiguous wildcard: no route can carry it; "
                        "route its addresses into %s yourself", dst, config.settings.interface)

    def begin_stopping(self) -> None:
        """Refuse new requests; cancel those posted to the loop (their handlers answer
        "espd is stopping" at once). A reload under way stops at its next step."""
        with self._post_lock:
            self.stopping = True
            for future in list(self._posted):
                future.cancel()

    def shutdown(self) -> None:
        """Undo start, in reverse; safe to call more than once. Readers on other threads
        are stopped and waited for first: nothing they read is freed under them."""
        self.begin_stopping()
        if self.control:
            self.control.stop(timeout=DRAIN_TIMEOUT)
            self.control = None
        if self.stop_metrics:
            self.stop_metrics()
            self.stop_metrics = None
        if not self.readers.close(DRAIN_TIMEOUT):
            log.warning("a state reader is still running after %.0f s; stopping anyway",
                        DRAIN_TIMEOUT)
        self.stop_ike()
        if self.nexthops:
            self.nexthops.stop()
            self.nexthops = None
        self.dp.stop_workers()
        self.owner.record_last_used()
        self.sockets.close()
        if self.routes:
            remove_routes(self.config.settings.interface, self.routes, blackholes=True)
            self.routes = ()
        unpin_peers(self.pinned)
        self.pinned = []
        close_tun(self.tun_fds)

    def close(self) -> None:
        """After shutdown: let the next espd take the state directory."""
        self.instance.release()

    # --- requests from other threads ---

    def post_reload(self, source: str) -> list[str]:
        """Reload on the loop, from a control-socket thread; waits for the result."""
        with self.readers:
            with self._post_lock:
                if self.loop is None or self.stopping:
                    raise Stopping()
                future = asyncio.run_coroutine_threadsafe(reload.reload(self, source),
                                                          self.loop)
                self._posted.add(future)
            try:
                return future.result(RELOAD_TIMEOUT)
            except concurrent.futures.CancelledError:
                raise Stopping() from None
            except concurrent.futures.TimeoutError:
                future.cancel()
                raise RuntimeError(f"the reload did not finish within {RELOAD_TIMEOUT:.0f} "
                                   "seconds; see the daemon's log") from None
            finally:
                self._posted.discard(future)

    def post_action(self, action: str, args: dict) -> dict:
        """An operator's IKE action (service/ike_actions.py) run on the loop, from a
        control-socket thread; waits for it. The answer is the control socket's."""
        with self.readers:
            with self._post_lock:
                if self.loop is None or self.stopping:
                    raise Stopping()
                future = asyncio.run_coroutine_threadsafe(self._action(action, args),
                                                          self.loop)
                self._posted.add(future)
            try:
                return future.result(ACTION_TIMEOUT)
            except concurrent.futures.CancelledError:
                raise Stopping() from None
            except concurrent.futures.TimeoutError:
                future.cancel()
                return {"ok": False, "error": f"{action} did not finish within "
                        f"{ACTION_TIMEOUT:.0f} seconds; see the daemon's log"}
            finally:
                self._posted.discard(future)

    async def _action(self, action: str, args: dict) -> dict:
        try:
            answer = {"ok": True, **ike_actions.run(self, action, args)}
        except ike_actions.ActionError as e:
            return {"ok": False, "error": str(e)}
        self._refresh_ike_state(resync=True)
        return answer

    def plan_diff(self, path: str) -> list[str]:
        """What reloading `path` would change (service/reload.py); reads the View."""
        with self.readers:
            return reload.plan_diff(self, path)

    def state(self) -> dict:
        """The state dict (service/state_view.py), from the View and live counters."""
        with self.readers:
            return state_view.state(self, self.view)

    # --- timers ---

    def send_nat_keepalives(self) -> None:
        """One 0xFF byte from the NAT-T socket (the source port ESP uses) to each peer that
        needs one (RFC 3948 2.3): every manual UDP-encapsulating peer, and the peer of
        each IKE Child SA over UDP whose IKE SA found us behind a NAT (SaView.keepalive),
        at the port it has now (it may have moved: RFC 7296 2.23)."""
        peers = {(v.spec.peer, v.ports[1]) for v in self.owner.snapshot.outbound()
                 if v.keepalive}
        for peer, port in sorted(peers):
            sock = self.sockets.udp6 if ":" in peer else self.sockets.udp4
            if sock is None:
                continue
            try:
                sock.sendto(b"\xff", (peer, port or NATT_PORT))
                self.keepalives_sent += 1
            except OSError as e:
                log.warning("NAT keepalive to %s port %d failed: %s", peer, port, e)
