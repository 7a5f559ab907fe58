"""Routing through pyroute2: the TUN device's MTU and state, routes into it, and the
blackhole routes that keep protected traffic from leaking when espd is not running.

Fail closed: every protected prefix gets two routes, via the TUN device (metric 0) and a
blackhole (metric BLACKHOLE_METRIC). When the TUN device disappears (espd crashed, or was
killed), its route goes with it and the blackhole takes over: the kernel drops the traffic
instead of sending it in clear along the default route. A clean stop removes both.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

BLACKHOLE_METRIC = 4096
DEFAULT_MTU = 1500


class NetlinkSetupError(RuntimeError):
    pass


def _family(prefix: str) -> int:
    return 10 if ipaddress.ip_network(prefix).version == 6 else 2


def link_index(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise NetlinkSetupError(f"interface {name} does not exist")
    return found[0]


def underlay_mtu(peer: str) -> int:
    """MTU of the interface the kernel would use to reach `peer` (DEFAULT_MTU if unknown)."""
    with IPRoute() as ipr:
        try:
            routes = ipr.route("get", dst=peer)
        except NetlinkError:
            return DEFAULT_MTU
        for route in routes:
            oif = route.get_attr("RTA_OIF")
            if oif:
                links = ipr.get_links(oif)
                if links:
                    return links[0].get_attr("IFLA_MTU") or DEFAULT_MTU
    return DEFAULT_MTU


def pin_peers(peers: Iterable[str], prefixes: Iterable[str]) -> list[str]:
    """Give every peer that lies inside a protected prefix a host route along its current
    underlay path, so espd's own ESP to it does not loop back into the tunnel. Call before
    the prefixes are routed into the TUN device; returns the host routes added."""
    nets = [ipaddress.ip_network(p) for p in prefixes]
    pinned = []
    with IPRoute() as ipr:
        for peer in peers:
            ip = ipaddress.ip_address(peer)
            if not any(ip in net for net in nets if net.version == ip.version):
                continue
            try:
                (route, *_) = ipr.route("get", dst=peer)
            except (NetlinkError, ValueError) as e:
                raise NetlinkSetupError(f"no underlay route to peer {peer}: {e}") from e
            host = f"{peer}/{ip.max_prefixlen}"
            kwargs = {"oif": route.get_attr("RTA_OIF")}
            if route.get_attr("RTA_GATEWAY"):
                kwargs["gateway"] = route.get_attr("RTA_GATEWAY")
            ipr.route("replace", dst=host, family=10 if ip.version == 6 else 2, **kwargs)
            pinned.append(host)
    return pinned


def unpin_peers(hosts: Iterable[str]) -> None:
    with IPRoute() as ipr:
        for host in hosts:
            _quiet(ipr.route, "del", dst=host, family=_family(host))


def bring_up(name: str, mtu: int) -> None:
    with IPRoute() as ipr:
        ipr.link("set", index=link_index(ipr, name), mtu=mtu, state="up")


def install_routes(name: str, prefixes: Iterable[str]) -> None:
    """Route each prefix into `name`, with a blackhole behind it (see the module docstring)."""
    with IPRoute() as ipr:
        index = link_index(ipr, name)
        for prefix in prefixes:
            family = _family(prefix)
            try:
                ipr.route("replace", dst=prefix, family=family, type="blackhole",
                          priority=BLACKHOLE_METRIC)
                ipr.route("replace", dst=prefix, family=family, oif=index)
            except NetlinkError as e:
                raise NetlinkSetupError(f"cannot route {prefix} into {name}: {e}") from e


def remove_routes(name: str | None, prefixes: Iterable[str], blackholes: bool) -> None:
    """Withdraw the routes of `prefixes` (the blackholes too when `blackholes`)."""
    with IPRoute() as ipr:
        index = None
        if name is not None:
            found = ipr.link_lookup(ifname=name)
            index = found[0] if found else None
        for prefix in prefixes:
            family = _family(prefix)
            if index is not None:
                _quiet(ipr.route, "del", dst=prefix, family=family, oif=index)
            if blackholes:
                _quiet(ipr.route, "del", dst=prefix, family=family, type="blackhole",
                       priority=BLACKHOLE_METRIC)


def _quiet(fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except NetlinkError:
        pass  # already gone
