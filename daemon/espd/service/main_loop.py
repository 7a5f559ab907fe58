"""``espd run``: the daemon's one asyncio event loop, on the main thread, until SIGTERM.

What runs on the loop (and only there: keying/owner.py's rule 1):
  - signals (loop.add_signal_handler, installed before anything starts, so a SIGTERM
    that arrives while espd starts still stops it): SIGHUP reloads, SIGTERM/SIGINT stop;
  - the data plane's event fd (loop.add_reader): reservations, lifetimes, acquires; and
    its punt fd: IKE datagrams from UDP 4500, for the SA owner's clients; with the IKE
    engine's UDP 500 sockets, each reader takes a bounded batch per turn, and the IKE
    engine's intake (ike/engine/intake.py) bounds what handling them may cost, so a
    flood delays the rest of the loop by about one bounded turn;
  - timers (loop.call_later): the systemd watchdog, NAT keepalives, a 1 s housekeeping
    turn (failed reservations retried, retired tables freed), a 1 s drop-log turn (the
    workers' sampled drop records drained and logged, ops/drop_log.py: its one reader);
  - reloads, from SIGHUP or posted by the control socket (service/reload.py), one at a
    time; their parsing runs on a worker thread, so none of the above waits for it.
Each SIGHUP is one reload (one that came during start-up runs once the loop does), up to
MAX_WAITING_RELOADS waiting; more than that join the last one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

from espd.config.model import ConfigError
from espd.ops.drop_log import DropLog
from espd.service import reload
from espd.service.daemon import Daemon
from espd.service.instance_lock import AlreadyRunning
from espd.service.sd_notify import sd_notify
from espd.system.privileges import keep_out_of_core_dumps

log = logging.getLogger("espd")

HOUSEKEEPING = 1.0  # seconds between housekeeping turns
MAX_WAITING_RELOADS = 8  # SIGHUPs queued beyond that join the last one


class MainLoop:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.daemon: Daemon | None = None
        self.stop = asyncio.Event()
        self.sighups_waiting = 0  # SIGHUPs whose reload has not started yet
        self.timers: dict[str, asyncio.TimerHandle] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

    def close(self) -> None:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            self.loop.remove_signal_handler(sig)

    # --- signals ---

    def _on_stop_signal(self, signum: int) -> None:
        if not self.stop.is_set():
            log.info("signal %s: stopping", signal.Signals(signum).name)
        self.stop.set()

    def _on_sighup(self) -> None:
        if self.sighups_waiting >= MAX_WAITING_RELOADS:
            log.warning("SIGHUP: %d reloads wait already; this one joins them",
                        self.sighups_waiting)
            return
        self.sighups_waiting += 1
        if self.daemon is not None:  # else serve() starts it: a SIGHUP during start-up
            self.loop.create_task(self._sighup_reload())

    async def _sighup_reload(self) -> None:
        daemon = self.daemon
        assert daemon is not None
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        sd_notify(f"RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading")

        def started() -> None:
            self.sighups_waiting -= 1

        try:
            await reload.reload(daemon, "SIGHUP", started)
        except (ConfigError, reload.ReloadFailed):
            pass  # logged and counted; the old configuration keeps running
        except Exception:  # never out of the loop: logged, counted, old config running
            log.exception("reload (SIGHUP) failed")
        sd_notify(f"READY=1\nSTATUS={_status(daemon)}")

    # --- timers ---

    def _every(self, name: str, seconds: float, fn) -> None:
        """Call fn every `seconds` on the loop; a failure is logged, the timer goes on."""
        def tick() -> None:
            try:
                fn()
            except Exception:
                log.exception("periodic %s failed", name)
            self.timers[name] = self.loop.call_later(seconds, tick)
        self.timers[name] = self.loop.call_later(seconds, tick)

    def _keepalive_turn(self) -> None:
        daemon = self.daemon
        assert daemon is not None
        interval = daemon.config.settings.nat_keepalive  # RFC 3948 4: NAT mappings
        if interval:
            try:
                daemon.send_nat_keepalives()
            except Exception:
                log.exception("NAT keepalives failed")
        self.timers["keepalive"] = self.loop.call_later(interval or HOUSEKEEPING,
                                                        self._keepalive_turn)

    async def serve(self, daemon: Daemon) -> None:
        """Run `daemon` until a stop signal; its shutdown is the caller's."""
        self.daemon = daemon
        owner = daemon.owner
        owner.bind_thread()
        self.loop.add_reader(daemon.dp.event_fd(), owner.drain_events)
        self.loop.add_reader(daemon.dp.punt_fd(), owner.drain_punted)
        watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        if watchdog_usec:
            sd_notify("WATCHDOG=1")
            self._every("watchdog", min(1.0, watchdog_usec / 2e6),
                        lambda: sd_notify("WATCHDOG=1"))
        self._every("housekeeping", HOUSEKEEPING, owner.housekeeping)
        drop_log = DropLog(daemon.config.settings.drop_log_interval)
        # the interval is read at each turn: a reload changes it
        self._every("drop_log", HOUSEKEEPING, lambda: drop_log.turn(
            daemon.dp, daemon.config.settings.drop_log_interval))
        self.loop.call_soon(self._keepalive_turn)
        sd_notify(f"READY=1\nSTATUS={_status(daemon)}")
        for _ in range(self.sighups_waiting):  # SIGHUPs that came during start-up
            self.loop.create_task(self._sighup_reload())
        try:
            await self.stop.wait()
        finally:
            daemon.begin_stopping()
            async with daemon.reload_lock:  # a reload under way finishes or rolls back
                pass
            self.loop.remove_reader(daemon.dp.event_fd())
            self.loop.remove_reader(daemon.dp.punt_fd())
            for timer in self.timers.values():
                timer.cancel()
            try:  # what the drop log still counts, before the workers stop
                drop_log.turn(daemon.dp, daemon.config.settings.drop_log_interval)
                drop_log.flush()
            except Exception:
                log.exception("drop log at stop failed")


def _status(daemon: Daemon) -> str:
    success, failure = daemon.view.reloads
    return (f"{len(daemon.view.sas.table)} SAs on {daemon.config.settings.interface}, "
            f"{success} reloads, {failure} failed")


def run(config_path: str) -> int:
    """`espd run -c FILE`: run the daemon in the foreground until SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="espd[%(process)d]: %(levelname)s %(message)s")
    try:
        keep_out_of_core_dumps()  # this process holds keys
    except OSError as e:
        log.warning("cannot turn off core dumps (%s); keys could end up in one", e)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = MainLoop(loop)  # signals first: a SIGTERM during start-up still stops us
    try:
        try:
            daemon = Daemon(config_path, loop)
        except ConfigError as e:
            for problem in e.problems:
                log.error("%s", problem)
            return 1
        except AlreadyRunning as e:
            log.error("cannot start: %s", e)
            return 1
        except Exception as e:  # every start failure ends in one clear line and exit 1
            log.error("cannot start: %s", e)
            return 1
        try:
            try:
                daemon.start()
            except Exception as e:
                log.error("cannot start: %s", e)
                return 1
            try:
                loop.run_until_complete(main.serve(daemon))
            finally:
                sd_notify("STOPPING=1")
                daemon.shutdown()
                log.info("stopped")
        finally:
            daemon.close()
        return 0
    finally:
        main.close()
        _cancel_pending(loop)
        loop.close()


def _cancel_pending(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left on the loop (a reload waiting for its parse) and let it end."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
