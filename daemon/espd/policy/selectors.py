"""Traffic selectors: what a crypto ACL permits, in the shape IKE negotiates (RFC 7296 3.13).

A selector is one IP protocol (0: any), one inclusive port range and one inclusive address
range of one IP version. A side of a Child SA is a tuple of selectors (their union). The
crypto ACL's permit entries give both sides: sources are the local side, destinations the
remote side, and every port range of an entry is its own selector.

Narrowing (RFC 7296 2.9) is intersection: the responder answers with the parts of what
the initiator proposed that its own policy also covers, or TS_UNACCEPTABLE when a side
comes out empty. Invariant: a narrowed side never covers a packet that the local policy
does not cover.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

TS_IPV4_ADDR_RANGE, TS_IPV6_ADDR_RANGE = 7, 8  # RFC 7296 3.13.1
ANY_PROTOCOL = 0
PORTS_ALL = (0, 65535)


class SelectorError(ValueError):
    """An ACL entry that no traffic selector can express; the message says what to write."""


@dataclass(frozen=True, order=True)
class TrafficSelector:
    """Invariant: ``start <= end``, same IP version; ``start_port <= end_port``."""

    protocol: int  # IP protocol, 0 for any
    start_port: int
    end_port: int
    start: IPAddress
    end: IPAddress

    def __post_init__(self) -> None:
        if self.start.version != self.end.version or self.start > self.end:
            raise SelectorError(f"address range {self.start}-{self.end} is empty or mixed")
        if not 0 <= self.start_port <= self.end_port <= 65535:
            raise SelectorError(f"port range {self.start_port}-{self.end_port} is invalid")

    @property
    def version(self) -> int:
        return self.start.version

    @property
    def ts_type(self) -> int:
        return TS_IPV4_ADDR_RANGE if self.version == 4 else TS_IPV6_ADDR_RANGE

    @classmethod
    def from_network(cls, network: str, protocol: int = ANY_PROTOCOL,
                     ports: tuple[int, int] = PORTS_ALL) -> TrafficSelector:
        net = ipaddress.ip_network(network, strict=False)
        return cls(protocol, ports[0], ports[1], net.network_address, net.broadcast_address)

    def contains(self, other: TrafficSelector) -> bool:
        return intersect(self, other) == other

    def __str__(self) -> str:
        span = _range_text(self.start, self.end)
        proto = "" if self.protocol == ANY_PROTOCOL else f" proto {self.protocol}"
        ports = "" if (self.start_port, self.end_port) == PORTS_ALL else (
            f" port {self.start_port}" if self.start_port == self.end_port
            else f" ports {self.start_port}-{self.end_port}")
        return f"{span}{proto}{ports}"


def _range_text(start: IPAddress, end: IPAddress) -> str:
    nets = list(ipaddress.summarize_address_range(start, end))
    if len(nets) == 1:
        return str(nets[0])
    return f"{start}-{end}"


def intersect(a: TrafficSelector, b: TrafficSelector) -> TrafficSelector | None:
    """The selector both cover, or None."""
    if a.version != b.version:
        return None
    if a.protocol and b.protocol and a.protocol != b.protocol:
        return None
    start, end = max(a.start, b.start), min(a.end, b.end)
    low, high = max(a.start_port, b.start_port), min(a.end_port, b.end_port)
    if start > end or low > high:
        return None
    return TrafficSelector(a.protocol or b.protocol, low, high, start, end)


def narrow(proposed: Iterable[TrafficSelector],
           allowed: Iterable[TrafficSelector]) -> tuple[TrafficSelector, ...]:
    """RFC 7296 2.9: every piece of ``proposed`` that ``allowed`` covers, without repeats.

    Empty means TS_UNACCEPTABLE for this side.
    """
    allowed = tuple(allowed)
    out: list[TrafficSelector] = []
    for offer in proposed:
        for mine in allowed:
            piece = intersect(offer, mine)
            if piece is not None and not any(p.contains(piece) for p in out):
                out = [p for p in out if not piece.contains(p)] + [piece]
    return tuple(out)


def covers(allowed: Iterable[TrafficSelector], side: Iterable[TrafficSelector]) -> bool:
    """True when every selector of ``side`` lies inside one selector of ``allowed``.

    The initiator's check of the responder's answer: narrowing may shrink, never widen.
    """
    allowed = tuple(allowed)
    return all(any(mine.contains(ts) for mine in allowed) for ts in side)


class _Match(Protocol):  # espd's AddressMatch: IOS address + wildcard
    address: IPAddress
    wildcard: IPAddress


class _Entry(Protocol):  # espd's AclEntry
    action: str
    protocol: int | None
    src: _Match
    src_ports: tuple[tuple[int, int], ...]
    dst: _Match
    dst_ports: tuple[tuple[int, int], ...]
    text: str


def from_acl(entries: Iterable[_Entry]) -> tuple[tuple[TrafficSelector, ...],
                                                  tuple[TrafficSelector, ...]]:
    """(local side, remote side) from the permit entries of a crypto ACL.

    Deny entries do not become selectors (the data plane discards what they match). An
    address whose wildcard is not contiguous cannot be a range: refused.
    """
    local: list[TrafficSelector] = []
    remote: list[TrafficSelector] = []
    for entry in entries:
        if entry.action != "permit":
            continue
        protocol = entry.protocol or ANY_PROTOCOL
        for ts in _side(entry.src, entry.src_ports, protocol, entry.text):
            if ts not in local:
                local.append(ts)
        for ts in _side(entry.dst, entry.dst_ports, protocol, entry.text):
            if ts not in remote:
                remote.append(ts)
    return tuple(local), tuple(remote)


def _side(match: _Match, ports: tuple[tuple[int, int], ...], protocol: int,
          text: str) -> list[TrafficSelector]:
    start, end = _address_range(match, text)
    return [TrafficSelector(protocol, low, high, start, end) for low, high in ports or
            (PORTS_ALL,)]


def _address_range(match: _Match, text: str) -> tuple[IPAddress, IPAddress]:
    wildcard = int(match.wildcard)
    if wildcard & (wildcard + 1):
        raise SelectorError(
            f"'{text}': wildcard {match.wildcard} is not contiguous, so no IKE traffic "
            f"selector can express it; write one entry per contiguous block (e.g. "
            f"'{match.address} 0.0.0.255')")
    start = int(match.address)
    return _same_version(match.address, start), _same_version(match.address, start | wildcard)


def _same_version(like: IPAddress, value: int) -> IPAddress:
    return ipaddress.IPv4Address(value) if like.version == 4 else ipaddress.IPv6Address(value)
