"""The AF_PACKET send path (``[daemon] send_path = "packet"``, system/nexthops.py,
native/nexthop.h) between two real espd gateways: traffic flows, the packets really leave
on the AF_PACKET socket, and an unresolved neighbour sends them back to the raw socket.

Two counters tell the paths apart, one of them the kernel's: espd's ``net_tx_packet``
(packets the AF_PACKET socket took), and gateway A's IPv4 ``OutTransmits``
(/proc/net/snmp, Linux 6.3+; ``OutRequests`` before), which counts every packet through
``ip_output``: the raw socket's ESP packets and the forwarded ones into the TUN device
(espd's ``tun_rx``), not AF_PACKET frames.
"""

from __future__ import annotations

import time

import pytest
from support import netns
from support.netns import GW_B_WAN4, HOST_B4, HOST_B6, WAN_IF, udp_exchange

pytestmark = pytest.mark.netns


def ip_output(ns: str) -> int:
    """Packets through namespace ns's IPv4 output path (/proc/net/snmp is per namespace)."""
    names, values = [line.split() for line in netns.ns_run(ns, ["cat", "/proc/net/snmp"])
                     .stdout.splitlines() if line.startswith("Ip:")][:2]
    name = "OutTransmits" if "OutTransmits" in names else "OutRequests"
    return int(values[names.index(name)])


def io(daemon: netns.EspdProcess) -> dict[str, int]:
    return daemon.state()["io"]


def wait_for(what, predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def phase(tunnel, dst: str, port: int, count: int = 200) -> tuple[int, dict[str, int], int]:
    """count datagrams host A -> host B: how many arrived, gateway A's io deltas, and how
    many packets besides those forwarded into the TUN device went through its IPv4
    output path."""
    gw_a = tunnel.gw_a
    before, snmp = io(gw_a), ip_output(tunnel.topo.gw_a)
    received = udp_exchange(tunnel.topo.host_a, tunnel.topo.host_b, dst, count=count, port=port)
    after, snmp = io(gw_a), ip_output(tunnel.topo.gw_a) - snmp
    d = {k: after[k] - before[k] for k in after}
    return received, d, snmp - d["tun_rx"]


def test_packet_path_carries_traffic_and_falls_back_when_the_neighbour_is_unresolved(
        make_tunnel):
    tunnel = make_tunnel("toml", "esp", extra={"send_path": "packet"})
    topo, gw_a = tunnel.topo, tunnel.gw_a
    netns.ping(topo.host_a, HOST_B4, count=3, interval=0.05, timeout=2)  # resolves neighbours
    netns.ping(topo.host_a, HOST_B6, count=3, interval=0.05, timeout=2)
    wait_for("gateway A's next-hop table", lambda: phase(tunnel, HOST_B4, 7201, 20)[1]
             ["net_tx_packet"] > 0)

    # 1. both IP versions flow through AF_PACKET; the kernel's IP output path saw none
    for dst, port in ((HOST_B4, 7202), (HOST_B6, 7203)):
        received, d, snmp = phase(tunnel, dst, port)
        assert received >= 196, f"{dst}: {received} of 200 arrived with send_path = packet"
        assert d["net_tx"] >= 200 and d["net_tx_packet"] == d["net_tx"], d
        assert d["send_errors"] == 0, d
        if dst == HOST_B4:
            assert snmp < 20, f"{snmp} IPv4 packets went through the IP output path"

    # 2. gateway B stops answering ARP and gateway A forgets it: the neighbour is
    # unresolved, so the packets go to the raw socket (where the kernel tries to resolve)
    netns.sysctl(topo.gw_b, f"net.ipv4.conf.{WAN_IF}.arp_ignore", 8)
    netns.ip(topo.gw_a, "neigh", "del", GW_B_WAN4, "dev", WAN_IF)
    time.sleep(1.5)  # the refresher sees the neighbour go (notification; else 1 s poll)
    received, d, snmp = phase(tunnel, HOST_B4, 7204)
    assert d["net_tx"] >= 200 and d["net_tx_packet"] == 0, d
    assert snmp >= 190, f"only {snmp} packets through the IP output path on the raw socket"
    assert received < 200, "delivered although gateway B's address could not resolve"

    # 3. ARP answers again: the raw path's traffic resolves the neighbour, and the
    # packets return to AF_PACKET
    netns.sysctl(topo.gw_b, f"net.ipv4.conf.{WAN_IF}.arp_ignore", 0)
    wait_for("the AF_PACKET path again", lambda: phase(tunnel, HOST_B4, 7205, 20)[1]
             ["net_tx_packet"] > 0)
    received, d, snmp = phase(tunnel, HOST_B4, 7206)
    assert received >= 196 and d["net_tx_packet"] == d["net_tx"] >= 200, (received, d)
    state = gw_a.state()
    assert state["io"]["net_tx_packet"] > 0


def test_packet_path_works_after_root_is_dropped(make_tunnel):
    """The AF_PACKET socket and the root-only /proc/net/ip*_tables_names are opened before
    [daemon] user drops root; the refresher then needs only CAP_NET_ADMIN (probes)."""
    tunnel = make_tunnel("toml", "esp", extra={"send_path": "packet", "user": "nobody"})
    netns.ping(tunnel.topo.host_a, HOST_B4, count=3, interval=0.05, timeout=2)
    wait_for("the AF_PACKET path as nobody", lambda: phase(tunnel, HOST_B4, 7301, 20)[1]
             ["net_tx_packet"] > 0)
    received, d, snmp = phase(tunnel, HOST_B4, 7302)
    assert received >= 196 and d["net_tx_packet"] == d["net_tx"] >= 200, (received, d)
    assert "running as nobody" in tunnel.gw_a.log()
    assert "Traceback" not in tunnel.gw_a.log(), tunnel.gw_a.log()
