"""The daemon's conversations with the world around the tunnel: NAT-T keepalives to UDP
peers, the systemd notify protocol, and a reload that tries to re-key an SPI in place."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest
from support import netns
from support.netns import HOST_B4, WAN_IF, Capture

pytestmark = pytest.mark.netns


def _keepalives(frames) -> list[tuple[str, str]]:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    out = []
    for _when, frame, _kind in frames:
        pkt = Ether(frame)
        if UDP in pkt and pkt[UDP].dport == 4500 and bytes(pkt[UDP].payload) == b"\xff":
            ip = pkt[IP] if IP in pkt else pkt[IPv6]
            out.append((ip.src, ip.dst))
    return out


def test_nat_keepalives_reach_the_udp_peer(make_tunnel):
    tunnel = make_tunnel(encapsulation="udp", extra={"nat_keepalive": 1})
    with Capture(tunnel.topo.gw_b, WAN_IF) as capture:
        time.sleep(3.2)
    seen = _keepalives(capture.frames)
    assert seen.count(("192.0.2.1", "192.0.2.2")) >= 2, seen  # gwA, once a second
    assert seen.count(("fd00:ff::1", "fd00:ff::2")) >= 2, seen  # and to its IPv6 peer
    drops = tunnel.gw_b.state()["drops"]["in"]
    assert drops.get("nat_keepalive", 0) >= 2, drops  # recognised, never parsed as ESP
    assert "malformed" not in drops and "unknown_spi" not in drops, drops


def test_no_keepalives_over_raw_esp(make_tunnel):
    tunnel = make_tunnel(extra={"nat_keepalive": 1})
    with Capture(tunnel.topo.gw_b, WAN_IF) as capture:
        time.sleep(1.5)
    assert _keepalives(capture.frames) == []


@pytest.fixture
def notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    saved = {k: os.environ.get(k) for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    os.environ["NOTIFY_SOCKET"] = path
    os.environ["WATCHDOG_USEC"] = "400000"
    try:
        yield sock
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sock.close()


def _messages(sock: socket.socket, seconds: float) -> list[dict[str, str]]:
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            continue
        out.append(dict(line.split("=", 1) for line in data.splitlines() if "=" in line))
    return out


def test_systemd_notify_protocol(make_tunnel, notify_socket):
    tunnel = make_tunnel()  # both gateways inherit NOTIFY_SOCKET and WATCHDOG_USEC
    started = _messages(notify_socket, 1.0)
    assert sum(m.get("READY") == "1" for m in started) == 2, started
    assert all("SAs on espd0" in m["STATUS"] for m in started if "READY" in m), started
    assert sum(m.get("WATCHDOG") == "1" for m in started) >= 2, "no watchdog pings"

    tunnel.gw_a.signal(signal.SIGHUP)
    reload = _messages(notify_socket, 1.0)
    reloading = [m for m in reload if m.get("RELOADING") == "1"]
    assert len(reloading) == 1, reload
    assert abs(int(reloading[0]["MONOTONIC_USEC"]) - time.clock_gettime_ns(
        time.CLOCK_MONOTONIC) // 1000) < 5_000_000
    assert any(m.get("READY") == "1" for m in reload), reload

    assert tunnel.gw_a.stop() == 0
    stopping = _messages(notify_socket, 0.5)
    assert any(m.get("STOPPING") == "1" for m in stopping), stopping
    tunnel.gw_a.start()  # the fixture stops it
    tunnel.gw_a.wait_ready(timeout=30)


def test_reload_refuses_a_new_key_on_an_old_spi(make_tunnel):
    tunnel = make_tunnel()
    gw_a = tunnel.gw_a
    config = open(gw_a.config).read()
    old = config.split('outbound = { spi = 0x2001, key = "', 1)[1][:72]
    new = "%072x" % (int(old, 16) ^ 1)
    with open(gw_a.config, "w") as f:
        f.write(config.replace(old, new))
    before = gw_a.state()["reloads"]
    gw_a.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while gw_a.state()["reloads"]["failure"] == before["failure"]:
        assert time.monotonic() < deadline, gw_a.log()
        time.sleep(0.1)
    assert "key changed but its SPI did not" in gw_a.log()
    assert old not in gw_a.log() and new not in gw_a.log()
    result = netns.ping(tunnel.topo.host_a, HOST_B4, count=2, interval=0.05, timeout=2)
    assert result.received == 2, "the old SA stopped passing traffic"
