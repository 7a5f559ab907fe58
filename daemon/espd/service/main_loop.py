"""``espd run``: signals, the main loop (events, reservations, keepalives, watchdog), exit.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import time

from espd.config.model import ConfigError
from espd.service.daemon import Daemon
from espd.service.reload import ReloadFailed
from espd.service.sd_notify import sd_notify
from espd.system.privileges import keep_out_of_core_dumps

log = logging.getLogger("espd")


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
