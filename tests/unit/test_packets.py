"""The shared packet builders (tests/support/packets.py) against RFC 1071 and scapy."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from support.packets import DF, IPPROTO_TCP, IPPROTO_UDP, checksum, ipv4, ipv6, tcp_syn, udp


def test_checksum_matches_the_rfc1071_worked_example() -> None:
    # RFC 1071 3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2 (one's complement)
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == ~0xDDF2 & 0xFFFF


def test_checksum_pads_odd_lengths_and_folds_a_partial_sum() -> None:
    assert checksum(b"\x12") == checksum(b"\x12\x00")
    assert checksum(b"\x00\x01", start=0xFFFF) == checksum(b"\xff\xff\x00\x01")


def test_ipv4_header_is_what_scapy_builds_and_verifies() -> None:
    payload = udp(1234, 80, b"hello")
    got = ipv4("10.0.0.1", "10.1.0.1", IPPROTO_UDP, payload, ident=7, flags_frag=DF, tos=0xB8)
    want = IP(src="10.0.0.1", dst="10.1.0.1", id=7, flags="DF", tos=0xB8, ttl=64) / \
        UDP(sport=1234, dport=80, chksum=0) / b"hello"
    assert got == bytes(want)
    assert checksum(got[:20]) == 0


def test_ipv6_and_tcp_syn_are_what_scapy_builds() -> None:
    got = ipv6("fd00::1", "fd01::1", IPPROTO_TCP, tcp_syn(1000, 22))
    want = IPv6(src="fd00::1", dst="fd01::1", hlim=64) / \
        TCP(sport=1000, dport=22, seq=1, flags="S", window=1024, chksum=0)
    assert got == bytes(want)
