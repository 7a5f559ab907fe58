"""Two real espd gateways in network namespaces: traffic, what the underlay sees, reloads,
lifetimes, path MTU, metrics and the systemd unit.

  [hostA 10.1.0.10] -- [gwA 192.0.2.1] ==underlay, captured on gwB's wan0== [gwB 192.0.2.2] --
  [hostB 10.2.0.10], IPv6 inner fd00:1::/64 <-> fd00:2::/64 over an IPv6 underlay fd00:ff::/64.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import netns
from support.netns import (
    HOST_A4,
    HOST_A6,
    HOST_B4,
    HOST_B6,
    WAN_IF,
    Capture,
    UdpFlow,
    analyze,
    decrypt,
    udp_exchange,
)

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.netns


def assert_ping(ns: str, dst: str, count: int = 3) -> None:
    result = netns.ping(ns, dst, count=count, interval=0.05, timeout=2)
    assert result.received == count, f"ping {dst} from {ns}: {result}"


def check_underlay(analysis, keys: dict[int, tuple[str, bytes]], encapsulation: str,
                   sample: int = 50) -> dict[int, int]:
    """No cleartext, nothing but ESP; decrypt up to ``sample`` packets per SPI with the
    configured keys; return packets seen per SPI."""
    assert not analysis.cleartext, f"protected traffic in clear on the underlay: " \
                                   f"{analysis.cleartext[:5]}"
    assert not analysis.other, f"neither ESP nor UDP 4500 on the underlay: {analysis.other[:5]}"
    per_spi: dict[int, int] = {}
    for packet in analysis.esp:
        assert packet.udp == (encapsulation == "udp"), packet
        assert packet.spi in keys, f"SPI {packet.spi:#x} is not configured: {packet}"
        per_spi[packet.spi] = per_spi.get(packet.spi, 0) + 1
        if per_spi[packet.spi] > sample:
            continue
        inner = decrypt(packet, keys[packet.spi][1])
        src, dst = inner.src, inner.dst
        assert {src, dst} in ({HOST_A4, HOST_B4}, {HOST_A6, HOST_B6}), inner.summary()
    return per_spi


# -- traffic both ways, underlay only ESP ---------------------------------------------------

@pytest.mark.parametrize("kind,encapsulation", [
    ("toml", "esp"),
    ("toml", "udp"),
    ("ios", "esp"),
])
def test_traffic_both_ways(make_tunnel, kind, encapsulation):
    tunnel = make_tunnel(kind, encapsulation)
    topo = tunnel.topo
    with Capture(topo.gw_b, WAN_IF) as capture:
        for src_ns, dst in ((topo.host_a, HOST_B4), (topo.host_b, HOST_A4),
                            (topo.host_a, HOST_B6), (topo.host_b, HOST_A6)):
            assert_ping(src_ns, dst)
        got = {
            "A->B v4": udp_exchange(topo.host_a, topo.host_b, HOST_B4, port=7001),
            "B->A v4": udp_exchange(topo.host_b, topo.host_a, HOST_A4, port=7002),
            "A->B v6": udp_exchange(topo.host_a, topo.host_b, HOST_B6, port=7003),
            "B->A v6": udp_exchange(topo.host_b, topo.host_a, HOST_A6, port=7004),
        }
    for what, received in got.items():
        assert received >= 196, f"{what}: {received} of 200 datagrams arrived"
    per_spi = check_underlay(analyze(capture.frames), tunnel.keys(tunnel.gw_b), encapsulation)
    # all four SAs of the pair carried traffic: v4 and v6, both ways
    assert len(per_spi) == 4, {hex(s): n for s, n in per_spi.items()}
    outer = {(p.outer_src, p.outer_dst) for p in analyze(capture.frames).esp}
    assert outer == {(netns.GW_A_WAN4, netns.GW_B_WAN4), (netns.GW_B_WAN4, netns.GW_A_WAN4),
                     (netns.GW_A_WAN6, netns.GW_B_WAN6), (netns.GW_B_WAN6, netns.GW_A_WAN6)}
    for daemon in tunnel.daemons:
        sas = daemon.state()["sas"]
        assert all(sa["packets"] > 0 for sa in sas), [(sa["spi"], sa["direction"],
                                                       sa["packets"]) for sa in sas]


# -- ESP in UDP: UDP GSO sends, UDP GRO receives ---------------------------------------------

def _bursts(topo, dst: str, port: int, count: int = 3000, burst: int = 20) -> int:
    """count datagrams of 300 bytes, back to back in bursts of `burst` with a pause after
    each (shorter than gateway A's TUN queue, so none is dropped there): gateway A reads
    several per batch and runs of equal-size ESP packets to one peer form. Returns how
    many arrived."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    rx = netns.socket_in(topo.host_b, family, socket.SOCK_DGRAM)
    tx = netns.socket_in(topo.host_a, family, socket.SOCK_DGRAM)
    try:
        rx.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
        rx.bind((dst, port))
        rx.settimeout(1.0)
        for n in range(count):
            tx.sendto(n.to_bytes(4, "big") + bytes(296), (dst, port))
            if n % burst == burst - 1:
                time.sleep(0.003)
        got = set()
        with contextlib.suppress(TimeoutError):
            while len(got) < count:
                got.add(int.from_bytes(rx.recv(2048)[:4], "big"))
        return len(got)
    finally:
        rx.close()
        tx.close()


def _io(daemon: netns.EspdProcess) -> dict[str, int]:
    return daemon.state()["io"]


@pytest.mark.parametrize("dst", [HOST_B4, HOST_B6])
def test_udp_encapsulation_sends_gso_runs_and_receives_gro_aggregates(make_tunnel, dst):
    tunnel = make_tunnel("toml", "udp")
    topo = tunnel.topo
    gw_a, gw_b = tunnel.daemons
    assert_ping(topo.host_a, dst)
    a0, b0 = _io(gw_a), _io(gw_b)
    with Capture(topo.gw_b, WAN_IF) as capture:
        received = _bursts(topo, dst, 7101)
    a1, b1 = _io(gw_a), _io(gw_b)
    assert received == 3000, f"{received} of 3000 datagrams arrived"
    gso, gro = a1["net_tx_gso"] - a0["net_tx_gso"], b1["net_rx_gro"] - b0["net_rx_gro"]
    assert gso > 0 and gro > 0, (a1, b1)
    assert gso <= a1["net_tx"] - a0["net_tx"] and gro <= b1["net_rx"] - b0["net_rx"]
    assert a1["send_errors"] == a0["send_errors"] and b1["recv_errors"] == b0["recv_errors"]
    # On the wire (GSO frames split as a device would): one ESP packet per datagram, and
    # they decrypt with the configured keys.
    per_spi = check_underlay(analyze(capture.frames), tunnel.keys(gw_b), "udp", sample=300)
    assert sum(per_spi.values()) >= received


# -- reloads under traffic --------------------------------------------------------------------

def _wait_reload(daemon: netns.EspdProcess, key: str, before: int, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = daemon.state()
        if state["reloads"][key] > before:
            return state
        time.sleep(0.01)
    raise AssertionError(f"{daemon.name}: no {key} reload within {timeout} s; "
                         f"log:\n{daemon.log()}")


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _counters(daemon: netns.EspdProcess) -> dict[tuple, int]:
    return {(sa["seq"], sa["direction"]): sa["packets"] for sa in daemon.state()["sas"]}


def test_reloads_under_traffic(make_tunnel):
    tunnel = make_tunnel()
    topo, gw_a = tunnel.topo, tunnel.gw_a
    config = Path(gw_a.config)
    good = config.read_text()
    flows = [UdpFlow(topo.host_a, topo.host_b, HOST_B4, 7101),
             UdpFlow(topo.host_b, topo.host_a, HOST_A4, 7102),
             UdpFlow(topo.host_a, topo.host_b, HOST_B6, 7103, interval=0.005)]
    checkpoints = []
    with Capture(topo.gw_b, WAN_IF) as capture:
        for flow in flows:
            flow.__enter__()
        try:
            time.sleep(0.3)
            state = gw_a.state()
            for i in range(100):
                if i == 50:  # a broken config: refused, the running tables stay
                    _write(config, good + "\n[[crypto_map]\nthis is not TOML\n")
                    failed = state["reloads"]["failure"]
                    gw_a.reload()
                    state = _wait_reload(gw_a, "failure", failed)
                    before = [flow.count() for flow in flows]
                    time.sleep(0.3)
                    after = [flow.count() for flow in flows]
                    assert all(b > a for a, b in zip(before, after, strict=True)), \
                        f"traffic stopped after a failed reload: {before} -> {after}"
                # the same SAs, the file changed (a comment): their state carries over
                _write(config, good + f"\n# reload {i}\n")
                done = state["reloads"]["success"]
                gw_a.reload()
                state = _wait_reload(gw_a, "success", done)
                if i % 10 == 0:
                    tunnel.gw_b.reload()
                    checkpoints.append(_counters(gw_a))
                    time.sleep(0.05)
        finally:
            for flow in flows:
                flow.stop()
    final = gw_a.state()
    assert final["reloads"]["failure"] >= 1
    assert final["reloads"]["success"] >= 100
    # SA counters kept counting through the reloads (never reset, always rising)
    checkpoints.append(_counters(gw_a))
    for key in ((10, "out"), (10, "in"), (20, "out")):  # the SAs the flows use
        series = [c[key] for c in checkpoints]
        assert series == sorted(series) and series[-1] > series[0], (key, series)
    for flow in flows:
        assert flow.sent > 100
        loss = 1 - flow.count() / flow.sent
        missing = sorted(set(range(flow.sent)) - flow.received)
        assert loss < 0.05, f"{flow.dst}: {flow.count()} of {flow.sent} arrived; " \
                            f"missing {missing[:40]}"
    analysis = analyze(capture.frames)
    check_underlay(analysis, tunnel.keys(tunnel.gw_b), "esp", sample=20)
    # sequence numbers keep rising per SPI: no reuse, no restart from 1
    by_spi: dict[int, list[int]] = {}
    for packet in analysis.esp:
        by_spi.setdefault(packet.spi, []).append(packet.seq)
    assert len(by_spi) >= 3, sorted(by_spi)
    for spi, seqs in by_spi.items():
        assert len(set(seqs)) == len(seqs), f"SPI {spi:#x}: sequence numbers reused"
        running = 0
        for seq in seqs:
            assert seq > running - 256, f"SPI {spi:#x}: sequence fell from {running} to {seq}"
            running = max(running, seq)
        assert seqs[-1] > seqs[0]


# -- hard lifetime ----------------------------------------------------------------------------

def test_hard_lifetime_stops_traffic(make_tunnel):
    seconds = 3
    tunnel = make_tunnel(lifetime=f"{{ seconds = {seconds}, kilobytes = 100000 }}")
    topo = tunnel.topo
    result = netns.ping(topo.host_a, HOST_B4, count=1, timeout=1)
    before_expiry = time.monotonic() - tunnel.started < seconds
    if before_expiry:
        assert result.received == 1, f"no traffic before the lifetime ran out: {result}"
    # wait past it, by the SAs' own clocks (they start when the daemon loads its config)
    deadline = time.monotonic() + seconds + 15
    while any(sa["lifetime_remaining_seconds"] != 0 and not sa["hard_expired"]
              for daemon in tunnel.daemons for sa in daemon.state()["sas"]):
        assert time.monotonic() < deadline, tunnel.gw_a.state()["sas"]
        time.sleep(0.1)
    time.sleep(0.5)
    with Capture(topo.gw_b, WAN_IF) as capture:
        for src_ns, dst in ((topo.host_a, HOST_B4), (topo.host_b, HOST_A4),
                            (topo.host_a, HOST_B6)):
            result = netns.ping(src_ns, dst, count=2, interval=0.1, timeout=0.5)
            assert result.received == 0, f"traffic after the hard lifetime: {dst}: {result}"
        received = udp_exchange(topo.host_a, topo.host_b, HOST_B4, count=50, port=7201)
        assert received == 0
    analysis = analyze(capture.frames)
    assert not analysis.cleartext, analysis.cleartext[:5]
    assert not analysis.other, analysis.other[:5]
    assert not analysis.esp, f"{len(analysis.esp)} ESP packets with expired SAs"
    sas = tunnel.gw_a.state()["sas"]
    assert all(sa["hard_expired"] for sa in sas if sa["direction"] == "out"), sas


# -- path MTU ---------------------------------------------------------------------------------

def test_df_oversized_gets_fragmentation_needed_with_tunnel_mtu(make_tunnel):
    tunnel = make_tunnel()
    topo = tunnel.topo
    tun_mtu = netns.link_mtu(topo.gw_a, "espd0")
    assert netns.link_mtu(topo.gw_a, WAN_IF) == 1500
    assert 1280 <= tun_mtu < 1500 - 50, f"TUN MTU {tun_mtu} leaves no room for ESP"
    with Capture(topo.gw_b, WAN_IF) as capture:
        # ping -M do -s 1450: a 1478-byte packet with DF set
        result = netns.ping(topo.host_a, HOST_B4, count=1, size=1450, df=True, timeout=2)
        assert result.received == 0, result
        assert result.frag_needed_mtu == tun_mtu, \
            f"host A got {result.errors}, expected fragmentation needed (mtu = {tun_mtu})"
        # the same over IPv6: packet too big
        result6 = netns.ping(topo.host_a, HOST_B6, count=1, size=1450, df=True, timeout=2)
        assert result6.frag_needed_mtu == tun_mtu, result6
        # what fits the tunnel MTU passes, DF and all
        fits = netns.ping(topo.host_a, HOST_B4, count=2, size=tun_mtu - 28, df=True)
        assert fits.received == 2, fits
    analysis = analyze(capture.frames)
    assert not analysis.cleartext and not analysis.other, analysis
    assert all(len(p.esp) + 20 <= 1500 for p in analysis.esp)


# -- metrics agree with show sa ---------------------------------------------------------------

def test_metrics_agree_with_show_sa_json(make_tunnel):
    import json

    from prometheus_client.parser import text_string_to_metric_families

    tunnel = make_tunnel()
    topo = tunnel.topo
    assert_ping(topo.host_a, HOST_B4, count=5)
    assert_ping(topo.host_b, HOST_A6, count=4)
    udp_exchange(topo.host_a, topo.host_b, HOST_B4, count=100, port=7301)
    time.sleep(0.3)  # quiet: the counters stand still from here
    text = netns.scrape_metrics(topo.gw_a, tunnel.metrics_port)
    shown = netns.ns_run(topo.gw_a, [sys.executable, "-m", "espd", "show", "sa", "--json",
                                     "--socket", tunnel.gw_a.control_socket])
    sas = json.loads(shown.stdout)
    if isinstance(sas, dict):
        sas = sas.get("sas", sas)
    assert len(sas) == 4, sas
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    assert "espd_sa_packets_total" in samples, sorted(samples)
    assert "espd_dropped_packets_total" in samples or any(
        name.startswith("espd_dropped_packets") for name in samples), sorted(samples)
    metric = {
        (s.labels["map"], str(s.labels["seq"]), s.labels["direction"]): s.value
        for s in samples["espd_sa_packets_total"]
    }
    octets = {
        (s.labels["map"], str(s.labels["seq"]), s.labels["direction"]): s.value
        for s in samples.get("espd_sa_bytes_total", [])
    }
    for sa in sas:
        key = (sa["map"], str(sa["seq"]), sa["direction"])
        assert metric.get(key) == sa["packets"], (key, metric, sa)
        if octets:
            assert octets.get(key) == sa["bytes"], (key, octets, sa)
    by_key = {(sa["seq"], sa["direction"]): sa["packets"] for sa in sas}
    assert by_key[(10, "out")] >= 105 and by_key[(10, "in")] >= 5, by_key
    assert by_key[(20, "in")] >= 4 and by_key[(20, "out")] >= 4, by_key


# -- the systemd unit -------------------------------------------------------------------------

def test_systemd_unit_verifies(tmp_path):
    analyze_cmd = shutil.which("systemd-analyze")
    if analyze_cmd is None:
        pytest.skip("systemd-analyze is not installed")
    unit = REPO / "systemd" / "espd.service"
    assert unit.is_file(), f"{unit} is missing"
    # ExecStart= names where espd is installed (/usr/local/bin/espd); verify checks that
    # the binary exists, so point a copy at this tree's espd instead
    espd = Path(sys.executable).parent / "espd"
    text = unit.read_text()
    if espd.exists():
        text = text.replace("/usr/local/bin/espd", str(espd))
    copy = tmp_path / "espd.service"
    copy.write_text(text)
    version = subprocess.run([analyze_cmd, "--version"], capture_output=True, text=True)
    found = re.match(r"systemd (\d+)", version.stdout)
    if found and int(found.group(1)) >= 253:  # the drop-ins need Type=notify-reload
        (tmp_path / "espd.service.d").mkdir()
        for dropin in (REPO / "systemd").glob("*.conf"):
            (tmp_path / "espd.service.d" / dropin.name).write_text(dropin.read_text())
    result = subprocess.run([analyze_cmd, "verify", "--man=no", str(copy)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), \
        f"systemd-analyze verify: {result.stderr or result.stdout}"
