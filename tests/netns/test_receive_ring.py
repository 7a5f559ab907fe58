"""The TPACKET_V3 receive ring (``[daemon] receive_path = "ring"``, native/ring.h) between
two real espd gateways: raw ESP of both IP versions arrives through the ring, the kernel's
own copy of each packet raises no ICMP error (the muted raw ESP sockets count as its
receiver), and a kernel that refuses the ring leaves espd on the raw sockets.

The kernel's ICMP counters are per namespace: /proc/net/snmp (``Icmp: OutDestUnreachs``,
where a protocol unreachable for protocol 50 would count) and /proc/net/snmp6
(``Icmp6OutDestUnreachs``, ``Icmp6OutParmProblems``: the unknown next header).
"""

from __future__ import annotations

import time

import pytest
from support import netns
from support.netns import HOST_B4, HOST_B6, udp_exchange

from espd.ops import show

pytestmark = pytest.mark.netns

ICMP_ERRORS = ("Icmp:OutDestUnreachs", "Icmp6OutDestUnreachs", "Icmp6OutParmProblems")


def icmp_errors(ns: str) -> dict[str, int]:
    out = {}
    lines = netns.ns_run(ns, ["cat", "/proc/net/snmp"]).stdout.splitlines()
    names, values = [line.split() for line in lines if line.startswith("Icmp:")][:2]
    out["Icmp:OutDestUnreachs"] = int(values[names.index("OutDestUnreachs")])
    for line in netns.ns_run(ns, ["cat", "/proc/net/snmp6"]).stdout.splitlines():
        name, _, value = line.partition(" ")
        if name in ICMP_ERRORS:
            out[name] = int(value)
    return out


def drops_in(daemon: netns.EspdProcess) -> dict[str, int]:
    return {r: n for r, n in daemon.state()["drops"].get("in", {}).items() if n}


def traffic(tunnel, port: int) -> dict:
    """UDP host A -> host B and pings both ways, for IPv4 and IPv6 (the demo config's
    inner IPv6 goes in IPv6 ESP): what arrived and each gateway's io deltas."""
    before = [d.state()["io"] for d in tunnel.daemons]
    got = {dst: udp_exchange(tunnel.topo.host_a, tunnel.topo.host_b, dst, count=200,
                             port=port + i)
           for i, dst in enumerate((HOST_B4, HOST_B6))}
    for dst in (HOST_B4, HOST_B6):
        netns.ping(tunnel.topo.host_a, dst, count=5, interval=0.05, timeout=2)
    after = [d.state()["io"] for d in tunnel.daemons]
    return {"got": got, "io": [{k: a[k] - b[k] for k in a} for a, b in zip(after, before,
                                                                          strict=True)]}


def test_ring_receives_both_ip_versions_without_icmp_errors(make_tunnel):
    tunnel = make_tunnel("toml", "esp", extra={"receive_path": "ring"})
    topo = tunnel.topo
    icmp0 = [icmp_errors(ns) for ns in (topo.gw_a, topo.gw_b)]
    t = traffic(tunnel, 7401)
    assert all(n >= 196 for n in t["got"].values()), t["got"]
    a, b = t["io"]
    assert b["net_rx"] >= 410 and b["net_rx_ring"] == b["net_rx"], b  # 400 UDP + 10 pings
    assert a["net_rx"] >= 10 and a["net_rx_ring"] == a["net_rx"], a  # the echo replies
    assert b["recv_errors"] == 0 and b["tun_tx"] >= 410, b
    assert b["net_rx_ring_drops"] == 0, b
    for daemon in tunnel.daemons:
        assert not drops_in(daemon), (daemon.name, drops_in(daemon))
    icmp1 = [icmp_errors(ns) for ns in (topo.gw_a, topo.gw_b)]
    assert icmp1 == icmp0, f"ICMP errors sent while espd received on the ring: {icmp0} {icmp1}"
    assert "refused the receive ring" not in tunnel.gw_b.log()
    assert "of which received on the TPACKET_V3 ring" in show.render_stats(tunnel.gw_b.state())


def test_ring_refused_by_the_kernel_falls_back_to_the_raw_sockets(make_tunnel):
    """net.core.optmem_max (per namespace since Linux 6.9) below the size of the ring's
    socket filter: the kernel refuses to attach it, so there is no ring; espd says so and
    receives on the raw ESP sockets, which are not muted."""
    tunnel = make_tunnel("toml", "esp", extra={"receive_path": "ring"})
    topo, gw_b = tunnel.topo, tunnel.gw_b
    assert gw_b.stop() == 0, gw_b.log()
    old = netns.ns_run(topo.gw_b, ["cat", "/proc/sys/net/core/optmem_max"]).stdout.strip()
    netns.sysctl(topo.gw_b, "net.core.optmem_max", 64)
    if netns.ns_run(topo.gw_b, ["cat", "/proc/sys/net/core/optmem_max"]).stdout.strip() != "64":
        pytest.skip("net.core.optmem_max is not per namespace here (Linux < 6.9)")
    try:
        gw_b.start()
        gw_b.wait_ready(timeout=30)
        time.sleep(0.2)
        assert "refused the receive ring" in gw_b.log(), gw_b.log()
        icmp0 = icmp_errors(topo.gw_b)
        t = traffic(tunnel, 7411)
        assert all(n >= 196 for n in t["got"].values()), t["got"]
        b = t["io"][1]
        assert b["net_rx"] >= 410 and b["net_rx_ring"] == 0, b
        assert not drops_in(gw_b), drops_in(gw_b)
        assert icmp_errors(topo.gw_b) == icmp0
    finally:
        assert gw_b.stop() == 0, gw_b.log()
        netns.sysctl(topo.gw_b, "net.core.optmem_max", old)
        gw_b.start()  # the fixture stops it cleanly
        gw_b.wait_ready(timeout=30)


def test_ring_works_after_root_is_dropped(make_tunnel):
    """The AF_PACKET socket is opened before [daemon] user drops root; the ring, its filter
    and the bind are set up by the workers afterwards, without CAP_NET_RAW."""
    tunnel = make_tunnel("toml", "esp", extra={"receive_path": "ring", "user": "nobody"})
    t = traffic(tunnel, 7421)
    assert all(n >= 196 for n in t["got"].values()), t["got"]
    b = t["io"][1]
    assert b["net_rx"] >= 410 and b["net_rx_ring"] == b["net_rx"], b
    assert "running as nobody" in tunnel.gw_b.log()
    assert "refused the receive ring" not in tunnel.gw_b.log(), tunnel.gw_b.log()
