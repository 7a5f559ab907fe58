"""The soak in short: one minute of traffic both ways, a reload every second (an SA
replaced every ten), a gateway restarted at 30 s; then every invariant of
tests/soak/soak.py, one test each, on that one run (~70 s in all). docs/soak.md has more.
"""

from __future__ import annotations

import pytest
from support import netns

pytestmark = pytest.mark.netns

import soak  # noqa: E402  (tests/soak is on sys.path: pytest's rootdir-relative import)


@pytest.fixture(scope="module")
def report():
    why = netns.unavailable()
    if why:
        pytest.skip(f"soak: {why}")
    result = soak.run(soak.parse_args(["--minutes", "1", "--restart-at", "30",
                                       "--restart-every", "0"]))
    soak.print_report(result)  # shown when a test fails
    return result


def _check(report: dict, name: str) -> None:
    assert "checks" in report, report.get("failures")
    assert not report["checks"]["daemons"], report["checks"]["daemons"]
    assert not report["checks"][name], "\n".join(report["checks"][name])


def test_soak_ran(report):
    _check(report, "daemons")
    assert len(report["restarts"]) == 1 and report["restarts"][0]["exit"] == 0
    assert report["sa_replacements"] >= 4
    assert report["traffic"]["ping_received"] >= 0.9 * report["traffic"]["ping_sent"] > 40


def test_no_cleartext_on_the_underlay(report):
    _check(report, "underlay")
    assert report["underlay"]["cleartext"] == 0
    assert report["underlay"]["capture_kernel_drops"] == 0, "the capture missed frames"


def test_no_repeated_spi_and_sequence_number(report):
    _check(report, "sequence_numbers")
    assert len(report["underlay"]["per_spi"]) == 4


def test_no_datagram_delivered_twice(report):
    _check(report, "delivery")


def test_rss_does_not_drift(report):
    _check(report, "rss")


def test_counters_are_consistent(report):
    _check(report, "counters")


def test_every_reload_succeeded(report):
    _check(report, "reloads")
    assert all(r["sent"] >= 50 for r in report["reloads"].values()), report["reloads"]


def test_loss_outside_restarts(report):
    _check(report, "loss")
    assert report["traffic"]["loss_pct"] < 5, report["traffic"]


# -- the soak's own underlay parser, against frames built by scapy (no root needed) ----------

def _frames():
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.inet6 import ICMPv6ND_NS, ICMPv6ParamProblem, IPv6
    from scapy.layers.ipsec import ESP
    from scapy.layers.l2 import ARP, Ether

    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    esp = ESP(spi=0x2001, seq=7, data=b"x" * 40)
    return {
        "esp4": eth / IP(src="192.0.2.1", dst="192.0.2.2") / esp,
        "esp6": eth / IPv6(src="fd00:ff::1", dst="fd00:ff::2") / ESP(spi=0x2002, seq=1,
                                                                      data=b"y" * 40),
        "esp_in_udp": eth / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=4500, dport=4500)
        / esp,
        "clear4": eth / IP(src="10.1.0.10", dst="10.2.0.10") / UDP(dport=7000) / b"hello",
        "clear6": eth / IPv6(src="fd00:2::10", dst="fd00:1::10") / UDP(dport=7000) / b"hi",
        "icmp_about_esp": eth / IP(src="192.0.2.2", dst="192.0.2.1") / ICMP(type=3, code=2)
        / IP(src="192.0.2.1", dst="192.0.2.2", proto=50) / b"\0\0\x20\x01\0\0\0\x07",
        "icmp_about_clear": eth / IP(src="192.0.2.2", dst="192.0.2.1") / ICMP(type=3, code=3)
        / IP(src="10.1.0.10", dst="10.2.0.10", proto=17) / (b"\0" * 8),
        "icmp6_about_esp": eth / IPv6(src="fd00:ff::2", dst="fd00:ff::1")
        / ICMPv6ParamProblem(code=1, ptr=6) / IPv6(src="fd00:ff::1", dst="fd00:ff::2", nh=50)
        / (b"\0" * 8),
        "arp": eth / ARP(psrc="192.0.2.1", pdst="192.0.2.2"),
        "nd": eth / IPv6(src="fd00:ff::1", dst="ff02::1:ff00:2") / ICMPv6ND_NS(tgt="fd00:ff::2"),
        "tcp_between_gateways": eth / IP(src="192.0.2.1", dst="192.0.2.2") / (b"\x45" * 20),
    }


def test_underlay_parser_sorts_frames():
    frames = {name: bytes(pkt) for name, pkt in _frames().items()}
    stats = soak.UnderlayStats()
    for name in ("esp4", "esp6", "esp_in_udp", "icmp_about_esp", "icmp6_about_esp", "arp",
                 "nd"):
        stats.frame(frames[name])
    assert (stats.cleartext, stats.unexplained, stats.repeat_count) == (0, 0, 1)  # esp_in_udp
    assert stats.esp == 3 and stats.icmp_about_esp == 2 and stats.ignored == 2
    assert stats.repeats == [(0x2001, 7)]
    for name in ("clear4", "clear6", "icmp_about_clear"):
        stats.frame(frames[name])
    assert stats.cleartext == 3, stats.cleartext_samples
    stats.frame(frames["tcp_between_gateways"])
    assert stats.unexplained == 1


def test_sparse_bitmap():
    bitmap = soak.SparseBitmap()
    for n in (0, 1, 65535, 65536, 2**24 + 5, 2**32 - 1):
        assert bitmap.add(n)
    assert not bitmap.add(65536)
    assert bitmap.count == 6 and bitmap.highest == 2**32 - 1
    assert bitmap.count_range(0, 65537) == 4 and len(bitmap.blocks) == 4
