"""Packets for the tests, built by hand: the Internet checksum and IPv4, IPv6, UDP, TCP
headers. One place, so a test says what it sends, not how a header is laid out.

Every builder returns bytes; lengths are filled in, checksums where the field names it.
"""

from __future__ import annotations

import ipaddress
import struct

IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6 = 1, 6, 17, 58
DF = 0x4000  # IPv4 flags/fragment field: Don't Fragment


def checksum(data: bytes, start: int = 0) -> int:
    """The Internet checksum (RFC 1071) of ``data``, padded to even length; ``start`` is a
    partial sum to fold in (a pseudo-header's)."""
    if len(data) % 2:
        data += b"\0"
    s = start + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_header(src: str | bytes, dst: str | bytes, proto: int, payload_len: int, *,
                ident: int = 0x1234, flags_frag: int = 0, ttl: int = 64, tos: int = 0,
                options: bytes = b"") -> bytes:
    """An IPv4 header (options padded by the caller to 4 bytes) with its checksum."""
    ihl = 5 + len(options) // 4
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, tos, ihl * 4 + payload_len,
                              ident & 0xFFFF, flags_frag, ttl, proto, 0, _v4(src), _v4(dst))
                  + options)
    struct.pack_into("!H", h, 10, checksum(bytes(h)))
    return bytes(h)


def ipv4(src: str | bytes, dst: str | bytes, proto: int, payload: bytes, **fields) -> bytes:
    """An IPv4 packet carrying ``payload``; ``fields`` as for ipv4_header."""
    return ipv4_header(src, dst, proto, len(payload), **fields) + payload


def ipv6(src: str, dst: str, nh: int, payload: bytes, *, hop_limit: int = 64) -> bytes:
    """An IPv6 packet carrying ``payload`` (extension headers are part of the payload)."""
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), nh, hop_limit,
                       ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed) + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP datagram with checksum 0 (none, which IPv4 allows)."""
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp_syn(sport: int, dport: int, payload: bytes = b"") -> bytes:
    """A TCP SYN segment (seq 1, window 1024) with checksum 0."""
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 1024, 0, 0) + payload


def _v4(address: str | bytes) -> bytes:
    return address if isinstance(address, bytes) else ipaddress.IPv4Address(address).packed


def natted(packet: bytes, sport: int, src: str | None = None) -> bytes:
    """An IPv4 ESP-in-UDP packet as a NAT forwards it: another UDP source port (and source
    address). Its UDP checksum is 0 (RFC 3948); the IP header checksum is redone."""
    p = bytearray(packet)
    if src is not None:
        p[12:16] = _v4(src)
        p[10:12] = b"\0\0"
        p[10:12] = struct.pack("!H", checksum(bytes(p[:20])))
    struct.pack_into("!H", p, (p[0] & 0x0F) * 4, sport)
    return bytes(p)
