"""Reload: load the config again, refuse what a running daemon cannot apply, swap it in.

A reload runs in three steps, and either applies completely or leaves everything as it was:
  1. parse and plan, on a worker thread (`load_and_plan`: touches nothing but the policy
     ids it gives new entries): the loop keeps serving the watchdog, the control socket
     and data-plane events meanwhile; unchanged entries keep their ids (policy/ids.py);
  2. on the loop: refuse what a running daemon cannot apply; prepare the owner's change
     (new SAs created, reservations persisted, handed-over SAs capped); add the routes of
     new prefixes (their packets meet the old tables and are dropped: fail closed) and
     lower the MTU if it must go down;
  3. commit: one table swap. Then withdraw the routes the new config no longer protects
     (only now: until the swap the old config protects them) and raise the MTU if it may.
A failure in step 2 or in the swap undoes, in reverse, what was done: routes added are
removed, the MTU restored, the change aborted (caps given back). What fails after the swap
(a route that will not go, an MTU that will not rise) cannot leak: the route still leads
into the tunnel, whose tables drop what they do not protect; it is logged, and the route
stays ours to remove at exit. Every reload is counted, success or failure; none ever
raises out of the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from espd.config.load import load
from espd.config.model import Config, ConfigError, Location, Problem
from espd.ops.control import Refused
from espd.policy.ids import PolicyIds
from espd.policy.plan import Plan, build_plan, describe_changes, wipe_keys
from espd.service.sockets import NATT_PORT, udp_families
from espd.system.routes import (
    bring_up,
    covered_by,
    install_routes,
    remove_routes,
)

if TYPE_CHECKING:
    from espd.service.daemon import Daemon

log = logging.getLogger("espd")

_parser = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="espd-parse")
# pyroute2's blocking calls cannot run on a thread whose asyncio loop is running
_netlink = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                 thread_name_prefix="espd-netlink")


async def _off_loop(fn: Callable, *args: object):
    return await asyncio.get_running_loop().run_in_executor(_netlink, fn, *args)


class ReloadFailed(Exception):
    """A reload that loaded but could not be applied; the old tables keep running."""


def load_and_plan(path: str, ids: PolicyIds) -> tuple[Config, Plan]:
    """Step 1, off the loop: read, validate and plan `path` (ConfigError if unusable).
    Entries keep their policy ids from `ids` (the daemon's); a new entry gets a new one,
    kept even if this reload fails (unused, and never given to another entry)."""
    config = load(path)
    return config, build_plan(config, ids)


async def reload(daemon: Daemon, source: str,
                 started: Callable[[], None] | None = None) -> list[str]:
    """Load the config again and swap it in; returns the changes. Raises ConfigError or
    ReloadFailed, and then the old configuration keeps running, untouched. `started` is
    called once this reload has its turn, just before it reads the file."""
    async with daemon.reload_lock:  # one reload at a time; the others wait their turn
        if started is not None:
            started()
        if daemon.stopping:
            raise ReloadFailed("espd is stopping")
        try:
            loop = asyncio.get_running_loop()
            config, plan = await loop.run_in_executor(_parser, load_and_plan,
                                                      daemon.config_path, daemon.policy_ids)
        except ConfigError as e:
            _failed(daemon)
            for p in e.problems:
                log.error("reload (%s) refused, old configuration still running: %s",
                          source, p)
            raise
        except Exception as e:
            _failed(daemon)
            log.error("reload (%s) failed, old configuration still running: %s", source, e)
            raise ReloadFailed(str(e)) from e
        if daemon.stopping:  # SIGTERM came while parsing: apply nothing
            wipe_keys(plan)
            raise ReloadFailed("espd is stopping")
        return await apply(daemon, config, plan, source)


def _failed(daemon: Daemon) -> None:
    daemon.reloads["failure"] += 1
    daemon.publish_view()


async def apply(daemon: Daemon, config: Config, plan: Plan, source: str) -> list[str]:
    """Steps 2 and 3, on the loop (netlink calls on a thread of their own)."""
    try:
        try:
            check_reloadable(daemon, config, plan)
            changes = describe_changes(daemon.plan, plan)
            await _swap(daemon, config, plan, changes)
        finally:
            wipe_keys(plan)  # the data plane holds its own copies, or nothing was kept
    except ConfigError as e:
        _failed(daemon)
        for p in e.problems:
            log.error("reload (%s) refused, old configuration still running: %s", source, p)
        raise
    except Exception as e:
        _failed(daemon)
        log.error("reload (%s) failed, old configuration still running: %s", source, e)
        raise ReloadFailed(str(e)) from e
    daemon.reloads["success"] += 1
    try:
        daemon.reconfigure_ike(config)
    except Exception:  # the SAs reloaded fine; IKE keeps its old settings
        log.exception("reload (%s): the IKE engine could not take the new settings", source)
    daemon.publish_view()
    daemon.warn(config, plan)
    log.info("reload (%s): %s", source, "; ".join(changes) or "no changes")
    return changes


async def _swap(daemon: Daemon, config: Config, plan: Plan, changes: list[str]) -> None:
    """Other loop callbacks (events, IKE) may run at each await: the owner's change merges
    onto whatever is live when it commits, and caps stay caps (keying/owner.py rule 4)."""
    interface = config.settings.interface
    running = bool(daemon.tun_fds)  # a daemon that never started has no routes to keep
    undo: list[Callable[[], None]] = []
    change = daemon.manual.prepare(plan)
    wipe_keys(plan)  # the data plane has its copies of every new key
    undo.append(lambda: daemon.owner.abort(change))
    added: list[str] = []
    try:
        new_mtu = (await _off_loop(daemon.tun_mtu, change.outbound(), config) if running
                   else daemon.mtu)
        added = [r for r in plan.routes if r not in daemon.routes]
        if running and added:
            created = await _off_loop(install_routes, interface, added)  # all or nothing
            undo.append(lambda: remove_routes(interface, created, blackholes=True))
        old_mtu = daemon.mtu
        if running and new_mtu < old_mtu:  # down before the swap: no packet too big
            await _off_loop(bring_up, interface, new_mtu)
            undo.append(lambda: bring_up(interface, old_mtu))
        daemon.owner.commit(change)  # the commit point
    except BaseException:
        daemon.owner.abort(change)  # on the loop, first: the owner's rule 1
        for step in reversed(undo[1:]):
            try:
                await _off_loop(step)
            except Exception as e:  # keep undoing the rest
                log.error("reload: undoing a step failed: %s", e)
        raise
    withdrawn = [r for r in daemon.routes if r not in plan.routes]
    kept = [r for r in daemon.routes if r in plan.routes]
    daemon.routes = tuple(kept + (added if running else []))
    if running and withdrawn:
        try:
            await _off_loop(remove_routes, interface, withdrawn, True)
        except Exception as e:  # still into the tunnel, whose tables drop it: no leak
            daemon.routes += tuple(withdrawn)
            log.error("reload: cannot withdraw routes %s (%s); they stay, leading into %s, "
                      "where nothing protects them now, so their packets are dropped",
                      ", ".join(withdrawn), e, interface)
    if running and new_mtu > daemon.mtu:
        try:
            await _off_loop(bring_up, interface, new_mtu)
        except Exception as e:  # a lower MTU than possible is safe
            log.error("reload: cannot raise the tunnel MTU to %d (%s); it stays %d",
                      new_mtu, e, daemon.mtu)
            new_mtu = daemon.mtu
    if new_mtu != daemon.mtu:
        changes.append(f"tunnel MTU {daemon.mtu} -> {new_mtu}")
        daemon.mtu = new_mtu
    daemon.config, daemon.plan = config, plan


def check_reloadable(daemon: Daemon, config: Config, plan: Plan) -> None:
    """Refuse what a running daemon cannot apply, instead of accepting and ignoring it."""
    problems = []
    old, new = daemon.config.settings, config.settings
    for name in ("interface", "workers", "control_socket", "metrics", "state_dir",
                 "offload", "user", "send_path", "receive_path",
                 "crypto_backend"):
        if getattr(old, name) != getattr(new, name):
            problems.append(f"[daemon] {name} cannot change at reload "
                            f"({getattr(old, name)!r} -> {getattr(new, name)!r}); "
                            "restart espd to apply it")
    before = {(s.direction, s.spi, s.peer): s for s in daemon.plan.sas}
    for spec in plan.sas:
        old_spec = before.get((spec.direction, spec.spi, spec.peer))
        if old_spec and old_spec.fingerprint != spec.fingerprint:
            problems.append(f"{spec.label}: its key changed but its SPI did not; a new key "
                            "needs a new SPI (on both gateways), or the peer cannot tell "
                            "old packets from new ones")
    for fam in sorted(udp_families(plan)):
        if getattr(daemon.sockets, f"udp{fam}") is None and daemon.tun_fds:
            problems.append(f"encapsulation = \"udp\" for an IPv{fam} peer needs the "
                            f"UDP {NATT_PORT} socket, which opens at start: restart espd")
    pinned = daemon.pinned_peers
    routed = covered_by(plan.routes)  # not a walk of every prefix per peer: a hub has 10,000
    for peer in daemon.peers(plan):  # a new peer, or a new prefix around an old one
        if daemon.tun_fds and peer not in pinned and routed(ipaddress.ip_address(peer)):
            problems.append(f"peer {peer} would lie inside a protected prefix; restart "
                            "espd so it can route it around the tunnel")
    if problems:
        raise ConfigError([Problem(Location(daemon.config_path), p) for p in problems])

def plan_diff(daemon: Daemon, path: str) -> list[str]:
    """What reloading `path` would change (ConfigError if it does not load). Runs on a
    control-socket thread: it reads the View only.

    Only the daemon's own configuration file is read (and, through it, what it includes):
    a client must not make the daemon open other files with its privileges. `path` is
    compared after resolving links; the daemon then reads its own path, not the client's."""
    if os.path.realpath(path) != os.path.realpath(daemon.config_path):
        raise Refused(f"this daemon compares only its own configuration "
                      f"({daemon.config_path}), not {path}; run 'espd check -c "
                      f"{daemon.config_path}'")
    new = build_plan(load(daemon.config_path), daemon.policy_ids.copy())  # gives no ids
    try:
        return describe_changes(daemon.view.plan, new)
    finally:
        wipe_keys(new)
