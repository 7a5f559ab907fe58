"""Next hops for the AF_PACKET send path (``[daemon] send_path = "packet"``).

The data plane sends a sealed outer packet on its AF_PACKET socket only to a destination
in the table pushed from here (native/nexthop.h): the device and Ethernet address of the
next hop the kernel itself would use, and the MTU. A peer gets an entry only when the
answer is certain; every other packet, and all of them when something on the host would
have changed the kernel's answer or seen the packet on its way out, takes the raw socket,
where the kernel routes, filters and fragments as before. Certain means, all of:

- no policy routing: the kernel's default rules only (local, main, default), so no VRF
  (l3mdev) rule either;
- no netfilter hook on the IP output path: no nftables chain of family ip, ip6 or inet on
  the output or postrouting hook, and no iptables-legacy table in this namespace;
- the route: a unicast route of the main table with one next hop (no multipath), no
  lightweight-tunnel encapsulation, out of an Ethernet device that is up and is no
  master's port;
- the neighbour: REACHABLE, PERMANENT or NOARP, or in PROBE because this module asked for
  the probe (the kernel, too, keeps sending to a neighbour being probed). STALE, DELAY,
  INCOMPLETE, FAILED or no entry: raw path (whose traffic makes the kernel resolve it).

Neighbours stay confirmed: packets on the AF_PACKET socket do not confirm a neighbour
(the kernel sees no traffic to it) and it would go STALE after its reachable time. Once a
used neighbour's last confirmation is older than a quarter of base_reachable_time (half
the shortest reachable time the kernel draws), this module asks the kernel for a unicast
probe (NUD_PROBE, as ``ip neigh change ... nud probe``); the answer confirms it. A STALE
neighbour is probed at once, so the raw path carries its traffic only until the answer.

Refreshed on rtnetlink notifications (links, addresses, routes, rules, neighbours; at
most ten times a second) and at least every second (nftables has no notification here;
neighbour ages).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger("espd")

MAX_ENTRIES = 64  # ESPDP_NEXTHOP_MAX
INTERVAL = 1.0  # seconds between refreshes without notifications
MIN_GAP = 0.1  # seconds between refreshes however many notifications come
PROBE_GRACE = 3.0  # seconds a neighbour in PROBE that we asked for keeps its entry
RTM_F_FIB_MATCH = 0x2000  # route get: the FIB entry itself (multipath shows)
RT_TABLE_MAIN = 254
DEFAULT_RULES = {(None, 255), (32766, 254), (32767, 253)}  # (priority, table)
RTN_UNICAST = 1
ARPHRD_ETHER = 1
IFF_UP = 1
NUD_REACHABLE, NUD_STALE, NUD_PROBE, NUD_NOARP, NUD_PERMANENT = 0x02, 0x04, 0x10, 0x40, 0x80
NF_FAMILIES = {1, 2, 10}  # inet, ip, ip6: the families whose hooks see IP output
NF_OUTPUT_HOOKS = {3, 4}  # NF_INET_LOCAL_OUT, NF_INET_POST_ROUTING
USER_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# (destination, ifindex, next-hop MAC bytes, MTU): what Dataplane.set_nexthops takes
Entry = tuple[str, int, bytes, int]


LEGACY_TABLES = ("ip_tables_names", "ip6_tables_names")  # in /proc/net: root only (0440)


def open_legacy_tables() -> dict[str, object]:
    """/proc/net/ip{,6}_tables_names, opened now (as root, before [daemon] user drops it):
    re-read from the start they show the tables of this namespace at that moment.
    A file that cannot be opened is None: then nothing can be told (raw path)."""
    files: dict[str, object] = {}
    for name in LEGACY_TABLES:
        try:
            files[name] = open(f"/proc/net/{name}")  # noqa: SIM115 - kept open on purpose
        except FileNotFoundError:
            files[name] = "absent"  # no ip_tables in this kernel: no legacy tables
        except OSError:
            files[name] = None
    return files


def netfilter_output_hooks(legacy: dict[str, object]) -> str | None:
    """Why the IP output path may be filtered here (a reason), or None when it is not."""
    for name, f in legacy.items():
        if f is None:
            return f"/proc/net/{name} cannot be read"
        if f != "absent":
            f.seek(0)
            if f.read().strip():
                return f"iptables-legacy tables ({name})"
    try:
        from pyroute2.nftables.main import NFTables

        with NFTables(nfgen_family=0) as nft:  # 0: every family
            chains = nft.get_chains()
    except NetlinkError as e:
        if e.code in (errno.EPROTONOSUPPORT, errno.ENOENT):
            return None  # no nf_tables in this kernel: no chains
        return f"nftables cannot be read ({e})"
    except Exception as e:  # noqa: BLE001 - any doubt means the raw path
        return f"nftables cannot be read ({e})"
    for chain in chains:
        hook = chain.get_attr("NFTA_CHAIN_HOOK")
        if not hook or chain["nfgen_family"] not in NF_FAMILIES:
            continue
        num = dict(hook.get("attrs", [])).get("NFTA_HOOK_HOOKNUM")
        if num in NF_OUTPUT_HOOKS:
            return f"nftables chain {chain.get_attr('NFTA_CHAIN_NAME')} on an output hook"
    return None


def policy_rules(ipr: IPRoute) -> str | None:
    """Why routing here depends on more than the destination, or None."""
    for family in (socket.AF_INET, socket.AF_INET6):
        for rule in ipr.get_rules(family=family):
            key = (rule.get_attr("FRA_PRIORITY"), rule.get_attr("FRA_TABLE") or rule["table"])
            if key not in DEFAULT_RULES:
                return f"policy routing rule {key}"
    return None


def _base_reachable(family: int, dev: str) -> float:
    v = "ipv6" if family == 6 else "ipv4"
    try:
        with open(f"/proc/sys/net/{v}/neigh/{dev}/base_reachable_time_ms") as f:
            return int(f.read()) / 1000
    except (OSError, ValueError):
        return 30.0


class NextHops:
    """Resolves `peers()` and pushes the table to `push` (Dataplane.set_nexthops) from a
    thread of its own; `stats` says what the last refresh found, for tests and logs."""

    def __init__(self, peers: Callable[[], Iterable[str]], push: Callable[[list[Entry]], None]):
        self.peers = peers
        self.push = push
        self.table: list[Entry] = []
        self.reason: str | None = "not resolved yet"  # why some or all take the raw path
        self.probed: dict[tuple[str, int], float] = {}  # (next hop, ifindex) -> when
        self.legacy = open_legacy_tables()  # before privileges drop (see there)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- one refresh ---

    def resolve(self, ipr: IPRoute) -> list[Entry]:
        """The entries that are certain now (and probes for neighbours getting old)."""
        why = netfilter_output_hooks(self.legacy) or policy_rules(ipr)
        if why:
            self.reason = why
            return []
        out: list[Entry] = []
        reasons = []
        for peer in sorted(set(self.peers())):
            entry, why = self._peer(ipr, peer)
            if entry and len(out) < MAX_ENTRIES:
                out.append(entry)
            elif why:
                reasons.append(f"{peer}: {why}")
        self.reason = "; ".join(reasons) or None
        return out

    def _peer(self, ipr: IPRoute, peer: str) -> tuple[Entry | None, str | None]:
        family = ipaddress.ip_address(peer).version
        try:
            fib = ipr.route("get", dst=peer, flags=RTM_F_FIB_MATCH)[0]
            route = ipr.route("get", dst=peer)[0]
        except (NetlinkError, IndexError) as e:
            return None, f"no route ({e})"
        table = fib.get_attr("RTA_TABLE") or fib["table"]
        if fib["type"] != RTN_UNICAST or table != RT_TABLE_MAIN:
            return None, f"route type {fib['type']} in table {table}"
        if fib.get_attr("RTA_MULTIPATH") or fib.get_attr("RTA_ENCAP") or \
                route.get_attr("RTA_ENCAP"):
            return None, "multipath or encapsulating route"
        oif = route.get_attr("RTA_OIF")
        links = ipr.get_links(oif) if oif else []
        if not links:
            return None, "no output device"
        link = links[0]
        mac = link.get_attr("IFLA_ADDRESS") or ""
        if link["ifi_type"] != ARPHRD_ETHER or link.get_attr("IFLA_MASTER") or \
                not link["flags"] & IFF_UP or len(mac.split(":")) != 6:
            return None, "output device is not a plain Ethernet device that is up"
        mtu = link.get_attr("IFLA_MTU") or 0
        metrics = route.get_attr("RTA_METRICS")
        if metrics and metrics.get_attr("RTAX_MTU"):
            mtu = min(mtu, metrics.get_attr("RTAX_MTU"))
        via = route.get_attr("RTA_GATEWAY") or peer
        neigh = ipr.get_neighbours(dst=via, ifindex=oif)
        if not neigh or not neigh[0].get_attr("NDA_LLADDR"):
            return None, f"neighbour {via} unresolved"
        n = neigh[0]
        state, lladdr = n["state"], n.get_attr("NDA_LLADDR")
        key = (via, oif)
        asked = time.monotonic() - self.probed.get(key, -1e9) < PROBE_GRACE
        if state & NUD_STALE:
            self._probe(ipr, via, oif)
        if not (state & (NUD_REACHABLE | NUD_PERMANENT | NUD_NOARP) or
                (state & NUD_PROBE and asked)):
            return None, f"neighbour {via} not confirmed (state {state:#x})"
        if state & NUD_REACHABLE and not asked:
            age = (n.get_attr("NDA_CACHEINFO") or {}).get("ndm_confirmed", 0) / USER_HZ
            if age > _base_reachable(family, link.get_attr("IFLA_IFNAME")) / 4:
                self._probe(ipr, via, oif)
        return (peer, oif, bytes.fromhex(lladdr.replace(":", "")), mtu), None

    def _probe(self, ipr: IPRoute, via: str, oif: int) -> None:
        try:
            ipr.neigh("change", dst=via, ifindex=oif, state=NUD_PROBE)
            self.probed[(via, oif)] = time.monotonic()
        except NetlinkError as e:
            log.debug("asking the kernel to probe neighbour %s: %s", via, e)

    def refresh(self, ipr: IPRoute) -> None:
        before = self.reason
        try:
            table = self.resolve(ipr)
        except Exception as e:  # noqa: BLE001 - never guess: the raw path for all
            self.reason = f"resolution failed: {e}"
            table = []
        if table != self.table or self.reason != before:
            self.push(table)
            log.info("send path: AF_PACKET to %s%s",
                     ", ".join(f"{e[0]} via ifindex {e[1]}" for e in table) or "no peer",
                     f" (raw socket: {self.reason})" if self.reason else "")
            self.table = table

    # --- the thread ---

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="espd-nexthops", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
            self._thread = None
        if self.table:
            self.push([])
            self.table = []
        for f in self.legacy.values():
            if f not in (None, "absent"):
                f.close()

    def _run(self) -> None:
        with IPRoute() as ipr, IPRoute() as mon:
            mon.bind()  # links, addresses, routes, rules, neighbours
            while not self._stop.is_set():
                self.refresh(ipr)
                ready, _, _ = select.select([mon.fileno()], [], [], INTERVAL)
                if ready:
                    mon.get()  # what changed does not matter: everything is re-read
                    # a burst of notifications (a routing daemon's churn) costs at most
                    # ten refreshes a second
                    self._stop.wait(MIN_GAP)
