"""The drop log on a running gateway: forged ESP from the peer's namespace, built with
scapy and sent at gateway B, shows up in B's log with the right SPI and outer source,
and a flood of thousands gives a few rate-limited lines whose counts add up to the
drops the data plane counted (docs/operations.md, "Drop log").
"""

from __future__ import annotations

import os
import re
import socket
import time

import pytest
from support.netns import (
    GW_A_WAN4,
    GW_A_WAN6,
    GW_B_WAN4,
    GW_B_WAN6,
    HOST_B4,
    HOST_B6,
    WAN_IF,
    Capture,
    analyze,
    ping,
    socket_in,
)

pytestmark = pytest.mark.netns

INTERVAL = 2  # [daemon] drop_log_interval for these tests
IN_SPI = 0x2001  # gateway B's inbound SA from gateway A (config/demo/gateway-b.toml)
IN_SPI6 = 0x2002  # and over IPv6
FORGED_SPI = 0x1234ABCD
LINE = re.compile(r"WARNING inbound (\w+) from (\S+?) to (\S+?)(?: spi 0x([0-9a-f]{8}))?"
                  r"(?: \((\d+) more suppressed in \d+ s\))?$")
NOT_SAMPLED = re.compile(r"WARNING (\d+) inbound drops not sampled in \d+ s "
                         r"\(data-plane rate limit\): (.*)$")


def outer(esp: bytes, udp: bool) -> bytes:
    """ESP (or ESP in UDP 4500) from gateway A to gateway B, as scapy builds it."""
    from scapy.layers.inet import IP, UDP
    from scapy.packet import Raw

    if udp:
        return bytes(IP(src=GW_A_WAN4, dst=GW_B_WAN4) / UDP(sport=4500, dport=4500) / Raw(esp))
    return bytes(IP(src=GW_A_WAN4, dst=GW_B_WAN4, proto=50) / Raw(esp))


class Sender:
    """Sends ESP (or ESP in UDP 4500) from gateway A's namespace to gateway B: IPv4 whole
    (scapy's header, IPPROTO_RAW), IPv6 on a raw socket of the upper protocol (the kernel
    writes the IPv6 header; scapy's UDP header carries the checksum IPv6 requires)."""

    def __init__(self, ns: str, family: int, udp: bool) -> None:
        self.family, self.udp = family, udp
        if family == 4:
            self.sock = socket_in(ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        else:
            self.sock = socket_in(ns, socket.AF_INET6, socket.SOCK_RAW, 17 if udp else 50)
            self.sock.bind((GW_A_WAN6, 0))

    def send(self, esp_bytes: bytes) -> None:
        if self.family == 4:
            self.sock.sendto(outer(esp_bytes, self.udp), (GW_B_WAN4, 0))
            return
        from scapy.layers.inet import UDP
        from scapy.layers.inet6 import IPv6
        from scapy.packet import Raw

        payload = esp_bytes
        if self.udp:
            pkt = IPv6(bytes(IPv6(src=GW_A_WAN6, dst=GW_B_WAN6) / UDP(sport=4500, dport=4500)
                             / Raw(esp_bytes)))
            payload = bytes(pkt[UDP])
        self.sock.sendto(payload, (GW_B_WAN6, 0))

    def close(self) -> None:
        self.sock.close()


def esp(spi: int, seq: int, body: bytes) -> bytes:
    from scapy.layers.ipsec import ESP

    return bytes(ESP(spi=spi, seq=seq, data=body))


def lines(log: str) -> list[tuple[str, str, int | None, int]]:
    """(reason, source, spi, records) of every drop-log line about one source (each sent
    to one of gateway B's addresses, of the source's family)."""
    out = []
    for line in log.splitlines():
        m = LINE.search(line)
        if m:
            reason, src, dst, spi, more = m.groups()
            v6 = src.startswith("[") or src.count(":") > 1
            assert dst == (GW_B_WAN6 if v6 else GW_B_WAN4), line
            out.append((reason, src, int(spi, 16) if spi else None,
                        int(more) if more else 1))
    return out


def not_sampled(log: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in log.splitlines():
        m = NOT_SAMPLED.search(line)
        if m:
            for part in m.group(2).split(", "):
                reason, n = part.split()
                out[reason] = out.get(reason, 0) + int(n)
    return out


def wait_for(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def genuine_packet(tunnel, udp: bool, family: int = 4):
    """One ESP packet gateway A really sent to gateway B (captured on B's side)."""
    with Capture(tunnel.topo.gw_b, WAN_IF) as capture:
        result = ping(tunnel.topo.host_a, HOST_B4 if family == 4 else HOST_B6, count=2,
                      interval=0.1)
    assert result.received == 2, result
    src, spi = (GW_A_WAN4, IN_SPI) if family == 4 else (GW_A_WAN6, IN_SPI6)
    sent = [p for p in analyze(capture.frames).esp
            if p.outer_src == src and p.spi == spi and p.udp == udp]
    assert sent, "no ESP from gateway A captured"
    return sent[-1]


@pytest.mark.parametrize("encapsulation,family", [("esp", 4), ("udp", 4), ("esp", 6),
                                                  ("udp", 6)])
def test_forged_esp_is_logged_with_spi_and_source(make_tunnel, encapsulation, family):
    udp = encapsulation == "udp"
    tunnel = make_tunnel(encapsulation=encapsulation, extra={"drop_log_interval": INTERVAL})
    gw_b = tunnel.gw_b
    spi = IN_SPI if family == 4 else IN_SPI6
    replayed = genuine_packet(tunnel, udp, family)
    tx = Sender(tunnel.topo.gw_a, family, udp)
    try:
        forged = {
            "unknown_spi": esp(FORGED_SPI, 1, os.urandom(64)),
            # the SA's own SPI, a sequence number ahead of the window, a wrong ICV
            "auth_failed": esp(spi, replayed.seq + 1000, os.urandom(64)),
            "replay_dup": replayed.esp,  # accepted once already
            "malformed": FORGED_SPI.to_bytes(4, "big"),  # no sequence number
        }
        before = gw_b.state()["drops"]["in"]
        for payload in forged.values():
            tx.send(payload)
    finally:
        tx.close()
    address = GW_A_WAN4 if family == 4 else GW_A_WAN6
    source = (f"{address}:4500" if family == 4 else f"[{address}]:4500") if udp else address
    expected = {("unknown_spi", source, FORGED_SPI, 1), ("auth_failed", source, spi, 1),
                ("replay_dup", source, spi, 1), ("malformed", source, None, 1)}
    got = wait_for(lambda: expected <= set(lines(gw_b.log(tail=1 << 20))), timeout=5)
    assert got, f"drop-log lines missing; log:\n{gw_b.log()}"
    after = gw_b.state()["drops"]["in"]
    for reason in forged:  # and the counters counted each once
        assert after.get(reason, 0) - before.get(reason, 0) == 1, (reason, before, after)
    log = gw_b.log(tail=1 << 20)
    assert sorted(lines(log)) == sorted(expected), log  # one line each, nothing else
    for key in tunnel.keys(gw_b).values():  # keys never in the log
        assert key[1].hex() not in log


def test_a_flood_gives_a_few_lines_that_add_up(make_tunnel):
    tunnel = make_tunnel(extra={"drop_log_interval": INTERVAL})
    gw_b = tunnel.gw_b
    flood = {"unknown_spi": (outer(esp(FORGED_SPI, 1, os.urandom(64)), False), 5000),
             "auth_failed": (outer(esp(IN_SPI, 1 << 20, os.urandom(64)), False), 3000)}
    tx = socket_in(tunnel.topo.gw_a, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    before = gw_b.state()["drops"]["in"]
    start = time.monotonic()
    try:
        for i in range(5000):
            for packet, count in flood.values():
                if i < count:
                    tx.sendto(packet, (GW_B_WAN4, 0))
    finally:
        tx.close()
    sent_in = time.monotonic() - start

    def added_up():
        after = gw_b.state()["drops"]["in"]
        log = gw_b.log(tail=1 << 20)
        logged = {reason: sum(n for r, _src, _spi, n in lines(log) if r == reason)
                  for reason in flood}
        skipped = not_sampled(log)
        counted = {reason: after.get(reason, 0) - before.get(reason, 0) for reason in flood}
        done = all(counted[r] and logged[r] + skipped.get(r, 0) == counted[r] for r in flood)
        return (counted, logged, skipped, log) if done else None

    got = wait_for(added_up, timeout=4 * INTERVAL + 5)
    assert got, f"the log's counts never matched the drop counters; log:\n{gw_b.log()}"
    counted, logged, skipped, log = got
    assert counted["unknown_spi"] > 4000 and counted["auth_failed"] > 2000, counted
    drop_lines = [line for line in log.splitlines() if LINE.search(line)]
    # per reason: the first record at once, then one line per interval while it lasts
    # (and one at the end); the rest not sampled by C, summed per interval
    bound = 2 * (2 + int(sent_in / INTERVAL))
    assert len(drop_lines) <= bound, (sent_in, drop_lines)
    assert len([line for line in log.splitlines() if NOT_SAMPLED.search(line)]) <= \
        2 + int(sent_in / INTERVAL), log
    assert all(src == GW_A_WAN4 for _r, src, _spi, _n in lines(log))
    assert {spi for r, _src, spi, _n in lines(log) if r == "unknown_spi"} == {FORGED_SPI}
    assert {spi for r, _src, spi, _n in lines(log) if r == "auth_failed"} == {IN_SPI}
    assert sum(skipped.values()) > 7000, skipped  # C sampled only a few


def test_a_reload_to_interval_zero_turns_the_log_off(make_tunnel):
    import signal

    tunnel = make_tunnel(extra={"drop_log_interval": INTERVAL})
    gw_b = tunnel.gw_b
    tx = socket_in(tunnel.topo.gw_a, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        tx.sendto(outer(esp(FORGED_SPI, 1, os.urandom(64)), False), (GW_B_WAN4, 0))
        assert wait_for(lambda: lines(gw_b.log(tail=1 << 20)), timeout=5), gw_b.log()
        config = open(gw_b.config).read()
        with open(gw_b.config, "w") as f:
            f.write(config.replace(f"drop_log_interval = {INTERVAL}", "drop_log_interval = 0"))
        before = gw_b.state()["reloads"]["success"]
        gw_b.signal(signal.SIGHUP)
        assert wait_for(lambda: gw_b.state()["reloads"]["success"] > before, timeout=10)
        time.sleep(1.5)  # a drop-log turn reads the new interval
        drops = gw_b.state()["drops"]["in"].get("unknown_spi", 0)
        for spi in range(0x5000, 0x5010):  # other SPIs: each would open a line of its own
            tx.sendto(outer(esp(spi, 1, os.urandom(64)), False), (GW_B_WAN4, 0))
        assert wait_for(lambda: gw_b.state()["drops"]["in"].get("unknown_spi", 0) >= drops + 16,
                        timeout=5)
        time.sleep(2 * INTERVAL + 1.5)  # lines would be out by now
    finally:
        tx.close()
    assert [spi for _r, _src, spi, _n in lines(gw_b.log(tail=1 << 20))] == [FORGED_SPI], \
        gw_b.log()
