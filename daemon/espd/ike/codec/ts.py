"""Traffic Selector payloads TSi and TSr (RFC 7296 3.13).

    payload  = #TSs (1) | reserved (3) | selector+
    selector = TS type (1) | IP protocol (1) | length (2) | start port (2) | end port (2)
               | start address | end address      (IPv4: 16 bytes in all, IPv6: 40)

A selector of a type espd does not parse (FC_ADDR_RANGE, SECLABEL, ...) is kept as an
``OpaqueSelector``; narrowing decides what to do with it.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from .constants import PayloadType, TsType, known
from .errors import ParseError
from .limits import MAX_SELECTORS
from .payload import Payload
from .wire import check_u8, check_u16, need, need_at, u16

_FIXED = struct.Struct("!B3x")
_SELECTOR = struct.Struct("!BBHHH")
_SIZES = {TsType.IPV4_ADDR_RANGE: 16, TsType.IPV6_ADDR_RANGE: 40}
ANY_PROTOCOL = 0
ALL_PORTS = (0, 0xFFFF)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class TrafficSelector:
    """An address range with a protocol (0: any) and a port range (0-65535: any; for ICMP
    the ports carry type and code, RFC 7296 3.13.1)."""

    start: Address
    end: Address
    ip_protocol: int = ANY_PROTOCOL
    start_port: int = ALL_PORTS[0]
    end_port: int = ALL_PORTS[1]

    @property
    def ts_type(self) -> TsType:
        return TsType.IPV4_ADDR_RANGE if self.start.version == 4 else TsType.IPV6_ADDR_RANGE

    @classmethod
    def from_network(cls, network: str, ip_protocol: int = ANY_PROTOCOL) -> Self:
        """The whole of ``network`` (e.g. ``10.1.0.0/16``), all ports."""
        net = ipaddress.ip_network(network, strict=False)
        return cls(net.network_address, net.broadcast_address, ip_protocol)

    def encode(self) -> bytes:
        if self.start.version != self.end.version:
            raise ValueError("a traffic selector's start and end are of one IP version")
        fixed = _SELECTOR.pack(
            self.ts_type,
            check_u8(self.ip_protocol, "IP protocol"),
            _SIZES[self.ts_type],
            check_u16(self.start_port, "start port"),
            check_u16(self.end_port, "end port"),
        )
        return fixed + self.start.packed + self.end.packed


@dataclass(frozen=True)
class OpaqueSelector:
    """A selector of a type espd does not parse: its type and the bytes after the
    4-byte type/protocol/length prefix."""

    ts_type: int
    ip_protocol: int
    body: bytes

    def encode(self) -> bytes:
        length = check_u16(4 + len(self.body), "selector length")
        return struct.pack("!BBH", check_u8(self.ts_type, "TS type"), self.ip_protocol, length) + (
            self.body
        )


Selector = TrafficSelector | OpaqueSelector


def _decode_selector(data: bytes, offset: int) -> tuple[Selector, int]:
    """The selector at ``offset`` of ``data`` and the offset after it."""
    need_at(data, offset, 4, "traffic selector")
    kind, protocol, length = data[offset], data[offset + 1], u16(data, offset + 2)
    end_offset = offset + length
    if not 4 <= length <= len(data) - offset:
        raise ParseError(f"traffic selector length {length} with {len(data) - offset} bytes left")
    size = _SIZES.get(kind)  # type: ignore[call-overload]
    if size is None:
        body = data[offset + 4 : end_offset]
        return OpaqueSelector(known(TsType, kind), protocol, body), end_offset
    if length != size:
        raise ParseError(f"traffic selector of type {kind} has length {length}, must be {size}")
    _, _, _, start_port, end_port = _SELECTOR.unpack_from(data, offset)
    first = offset + _SELECTOR.size
    half = (size - _SELECTOR.size) // 2
    address = ipaddress.IPv4Address if kind == TsType.IPV4_ADDR_RANGE else ipaddress.IPv6Address
    start = address(data[first : first + half])
    end = address(data[first + half : end_offset])
    return TrafficSelector(start, end, protocol, start_port, end_port), end_offset


@dataclass(frozen=True)
class _TrafficSelectors(Payload):
    selectors: tuple[Selector, ...]

    @property
    def elements(self) -> int:
        return 1 + len(self.selectors)

    def encode_body(self) -> bytes:
        if not 1 <= len(self.selectors) <= MAX_SELECTORS:
            raise ValueError(f"a TS payload holds 1-{MAX_SELECTORS} selectors")
        return _FIXED.pack(len(self.selectors)) + b"".join(s.encode() for s in self.selectors)

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        need(body, _FIXED.size, "traffic selector payload")
        count = body[0]
        if not 1 <= count <= MAX_SELECTORS:
            raise ParseError(f"TS payload with {count} selectors (1-{MAX_SELECTORS} allowed)")
        selectors: list[Selector] = []
        offset = _FIXED.size
        for _ in range(count):
            selector, offset = _decode_selector(body, offset)
            selectors.append(selector)
        if offset != len(body):
            raise ParseError(f"{len(body) - offset} bytes after the last traffic selector")
        return cls(tuple(selectors))


@dataclass(frozen=True)
class TsInitiator(_TrafficSelectors):
    """TSi: the initiator-side traffic (source of initiator-to-responder packets)."""

    TYPE: ClassVar[int] = PayloadType.TSi


@dataclass(frozen=True)
class TsResponder(_TrafficSelectors):
    """TSr: the responder-side traffic."""

    TYPE: ClassVar[int] = PayloadType.TSr
