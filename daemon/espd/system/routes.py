"""Routing through pyroute2: the TUN device's MTU and state, routes into it, and the
blackhole routes that keep protected traffic from leaking when espd is not running.

Fail closed: every protected prefix gets two routes, via the TUN device (metric 0) and a
blackhole (metric BLACKHOLE_METRIC). When the TUN device disappears (espd crashed, or was
killed), its route goes with it and the blackhole takes over: the kernel drops the traffic
instead of sending it in clear along the default route. A clean stop removes both.

A process only removes what it created. Routes are added, never replaced: a route to a
protected prefix that exists already (the operator's, another program's) makes the
install fail instead of being taken over, and the functions here return what they
created, which is all the caller may remove later. One exception, by design: a blackhole
at BLACKHOLE_METRIC is espd's own mark; one left behind by an espd that died is taken
over (the instance lock, service/instance_lock.py, says that espd is gone).
"""

from __future__ import annotations

import errno
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


def underlay_mtus(peers: Iterable[str]) -> dict[str, int]:
    """MTU of the interface the kernel would use to reach each peer (DEFAULT_MTU if
    unknown), by peer. One netlink socket for all of them, and one link query per
    interface: a hub has thousands of peers behind a few interfaces."""
    mtus: dict[str, int] = {}
    links: dict[int, int] = {}
    with IPRoute() as ipr:
        for peer in peers:
            mtus[peer] = DEFAULT_MTU
            try:
                routes = ipr.route("get", dst=peer)
            except NetlinkError:
                continue
            for route in routes:
                oif = route.get_attr("RTA_OIF")
                if oif:
                    if oif not in links:
                        found = ipr.get_links(oif)
                        links[oif] = (found[0].get_attr("IFLA_MTU") if found else None) \
                            or DEFAULT_MTU
                    mtus[peer] = links[oif]
                    break
    return mtus


def covered_by(prefixes: Iterable[str]):
    """A test whether an address lies inside one of ``prefixes``: one set lookup per
    prefix length in use, not a walk of every prefix (a hub routes thousands)."""
    by_length: dict[tuple[int, int], set] = {}
    for prefix in prefixes:
        net = ipaddress.ip_network(prefix)
        by_length.setdefault((net.version, net.prefixlen), set()).add(net)

    def covered(ip) -> bool:
        return any(ipaddress.ip_network((ip, length), strict=False) in nets
                   for (version, length), nets in by_length.items() if version == ip.version)
    return covered


def pin_peers(peers: Iterable[str], prefixes: Iterable[str]) -> tuple[list[str], list[str]]:
    """Give every peer that lies inside a protected prefix a host route along its current
    underlay path, so espd's own ESP to it does not loop back into the tunnel. Call before
    the prefixes are routed into the TUN device. Returns (the host routes added, ours to
    remove; every peer that has a host route now: one that had one already keeps it)."""
    inside = covered_by(prefixes)
    pinned: list[str] = []
    covered: list[str] = []
    with IPRoute() as ipr:
        try:
            for peer in peers:
                ip = ipaddress.ip_address(peer)
                if not inside(ip):
                    continue
                try:
                    (route, *_) = ipr.route("get", dst=peer)
                except (NetlinkError, ValueError) as e:
                    raise NetlinkSetupError(f"no underlay route to peer {peer}: {e}") from e
                host = f"{peer}/{ip.max_prefixlen}"
                kwargs = {"oif": route.get_attr("RTA_OIF")}
                if route.get_attr("RTA_GATEWAY"):
                    kwargs["gateway"] = route.get_attr("RTA_GATEWAY")
                try:
                    ipr.route("add", dst=host, family=10 if ip.version == 6 else 2, **kwargs)
                except NetlinkError as e:
                    if e.code != errno.EEXIST:
                        raise NetlinkSetupError(f"cannot pin peer {peer}: {e}") from e
                else:
                    pinned.append(host)
                covered.append(peer)
        except BaseException:
            for host in pinned:
                _quiet(ipr.route, "del", dst=host, family=_family(host))
            raise
    return pinned, covered


def unpin_peers(hosts: Iterable[str]) -> None:
    with IPRoute() as ipr:
        for host in hosts:
            _quiet(ipr.route, "del", dst=host, family=_family(host))


IN6_ADDR_GEN_MODE_NONE = 1  # linux/if_link.h


def bring_up(name: str, mtu: int) -> None:
    """Up with `mtu`. No IPv6 link-local address first: the kernel would otherwise send its
    own DAD, router solicitations and MLD reports into the tunnel (no_policy drops)."""
    with IPRoute() as ipr:
        index = link_index(ipr, name)
        _quiet(ipr.link, "set", index=index, IFLA_AF_SPEC={"attrs": [("AF_INET6", {
            "attrs": [("IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE)]})]})
        ipr.link("set", index=index, mtu=mtu, state="up")


def install_routes(name: str, prefixes: Iterable[str]) -> list[str]:
    """Route each prefix into `name`, with a blackhole behind it (see the module
    docstring); returns the prefixes routed. A prefix that already has a route at the same
    metric (not espd's blackhole) fails the whole call, and what the call added is
    removed again before NetlinkSetupError says so: nothing of someone else's is replaced."""
    done: list[str] = []
    with IPRoute() as ipr:
        index = link_index(ipr, name)
        try:
            for prefix in prefixes:
                family = _family(prefix)
                try:
                    ipr.route("add", dst=prefix, family=family, type="blackhole",
                              priority=BLACKHOLE_METRIC)
                except NetlinkError as e:
                    if e.code != errno.EEXIST or not _is_our_blackhole(ipr, prefix, family):
                        raise NetlinkSetupError(_taken(prefix, name, e)) from e
                try:
                    ipr.route("add", dst=prefix, family=family, oif=index)
                except NetlinkError as e:
                    _quiet(ipr.route, "del", dst=prefix, family=family, type="blackhole",
                           priority=BLACKHOLE_METRIC)
                    raise NetlinkSetupError(_taken(prefix, name, e)) from e
                done.append(prefix)
        except BaseException:
            _remove(ipr, index, done, blackholes=True)
            raise
    return done


def _is_our_blackhole(ipr: IPRoute, prefix: str, family: int) -> bool:
    net = ipaddress.ip_network(prefix)
    for route in ipr.get_routes(family=family):
        if (route["dst_len"] == net.prefixlen and route["type"] == 6  # RTN_BLACKHOLE
                and route.get_attr("RTA_DST") == str(net.network_address)
                and route.get_attr("RTA_PRIORITY") == BLACKHOLE_METRIC):
            return True
    return False


def _taken(prefix: str, name: str, e: NetlinkError) -> str:
    if e.code == errno.EEXIST:
        return (f"cannot route {prefix} into {name}: a route to {prefix} exists already "
                f"(see `ip route show {prefix}`); espd does not replace routes it did not "
                f"make: remove that route, or protect another prefix")
    return f"cannot route {prefix} into {name}: {e}"


def remove_routes(name: str | None, prefixes: Iterable[str], blackholes: bool) -> None:
    """Withdraw the routes of `prefixes` (the blackholes too when `blackholes`): only
    prefixes that install_routes returned to this process."""
    with IPRoute() as ipr:
        index = None
        if name is not None:
            found = ipr.link_lookup(ifname=name)
            index = found[0] if found else None
        _remove(ipr, index, prefixes, blackholes)


def _remove(ipr: IPRoute, index: int | None, prefixes: Iterable[str], blackholes: bool) -> None:
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
