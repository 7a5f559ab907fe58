"""Reload: load the config again, refuse what a running daemon cannot apply, swap it in.

A reload builds the next table set beside the live one and swaps it in one step; a config
that does not load leaves the running tables untouched.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

from espd.config.load import load
from espd.config.model import Config, ConfigError, Location, Problem
from espd.dataplane import DataplaneError
from espd.policy.plan import Plan, build_plan, describe_changes, wipe_keys
from espd.service.sockets import NATT_PORT, udp_families
from espd.system.routes import (
    bring_up,
    install_routes,
    remove_routes,
)

if TYPE_CHECKING:
    from espd.service.daemon import Daemon

log = logging.getLogger("espd")


class ReloadFailed(Exception):
    """A reload that loaded but could not be applied; the old tables keep running."""


def reload(daemon: Daemon, source: str) -> list[str]:
    """Load the config again and swap it in; returns the changes. Raises ConfigError
    or ReloadFailed, and then the old tables keep running untouched."""
    with daemon.lock:
        try:
            config = load(daemon.config_path)
            plan = build_plan(config)
            try:
                check_reloadable(daemon, config, plan)
            except ConfigError:
                wipe_keys(plan)
                raise
            changes = describe_changes(daemon.plan, plan)
            daemon._publish(plan)
        except ConfigError as e:
            daemon.reloads["failure"] += 1
            for p in e.problems:
                log.error("reload (%s) refused, old configuration still running: %s",
                          source, p)
            raise
        except (DataplaneError, OSError, ValueError) as e:
            daemon.reloads["failure"] += 1
            log.error("reload (%s) failed, old configuration still running: %s", source, e)
            raise ReloadFailed(str(e)) from e
        withdrawn = [r for r in daemon.routes if r not in plan.routes]
        if withdrawn:
            remove_routes(config.settings.interface, withdrawn, blackholes=True)
        install_routes(config.settings.interface, plan.routes)
        daemon.routes = plan.routes
        daemon.config, daemon.plan = config, plan
        mtu = daemon.tun_mtu()
        if mtu != daemon.mtu:
            bring_up(config.settings.interface, mtu)
            changes.append(f"tunnel MTU {daemon.mtu} -> {mtu}")
            daemon.mtu = mtu
        daemon._warn(config, plan)
        daemon.reloads["success"] += 1
        log.info("reload (%s): %s", source, "; ".join(changes) or "no changes")
        return changes

def check_reloadable(daemon: Daemon, config: Config, plan: Plan) -> None:
    """Refuse what a running daemon cannot apply, instead of accepting and ignoring it."""
    problems = []
    old, new = daemon.config.settings, config.settings
    for name in ("interface", "workers", "control_socket", "metrics", "state_dir",
                 "offload", "user"):
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
    pinned = {host.split("/")[0] for host in daemon.pinned}
    for peer in daemon._peers(plan):  # a new peer, or a new prefix around an old one
        ip = ipaddress.ip_address(peer)
        if daemon.tun_fds and peer not in pinned and any(
                ip in ipaddress.ip_network(r) for r in plan.routes
                if ipaddress.ip_network(r).version == ip.version):
            problems.append(f"peer {peer} would lie inside a protected prefix; restart "
                            "espd so it can route it around the tunnel")
    if problems:
        raise ConfigError([Problem(Location(daemon.config_path), p) for p in problems])

def plan_diff(daemon: Daemon, path: str) -> list[str]:
    """What reloading `path` would change (ConfigError if it does not load)."""
    new = build_plan(load(path))
    try:
        with daemon.lock:
            return describe_changes(daemon.plan, new)
    finally:
        wipe_keys(new)
