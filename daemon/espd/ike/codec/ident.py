"""Identification payloads IDi and IDr (RFC 7296 3.5): ID type and identification data.

    ID type (1) | reserved (3) | identification data

The AUTH computation signs the body exactly as sent (RFC 7296 2.15, "IDx'"), so
``encode_body`` of a decoded payload gives back the received bytes (reserved octets are
kept as received: RFC 7296 says to ignore them, and AUTH covers them).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import ClassVar, Self

from .constants import IdType, PayloadType, known
from .payload import Payload
from .wire import check_u8, need

_FIXED = struct.Struct("!B3s")


@dataclass(frozen=True)
class _Identification(Payload):
    id_type: IdType | int
    data: bytes
    reserved: bytes = field(default=bytes(3), repr=False)

    def encode_body(self) -> bytes:
        if len(self.reserved) != 3:
            raise ValueError("the identification payload's reserved field is 3 bytes")
        return _FIXED.pack(check_u8(self.id_type, "ID type"), self.reserved) + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        need(body, _FIXED.size + 1, "identification payload")
        id_type, reserved = _FIXED.unpack_from(body)
        return cls(known(IdType, id_type), body[_FIXED.size :], reserved)

    @classmethod
    def address(cls, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Self:
        """ID_IPV4_ADDR / ID_IPV6_ADDR for ``addr``."""
        kind = IdType.IPV4_ADDR if addr.version == 4 else IdType.IPV6_ADDR
        return cls(kind, addr.packed)

    @classmethod
    def fqdn(cls, name: str) -> Self:
        """ID_FQDN (ASCII, no terminating NUL)."""
        return cls(IdType.FQDN, name.encode("ascii"))

    @classmethod
    def rfc822(cls, address: str) -> Self:
        """ID_RFC822_ADDR, e.g. ``gw@example.net``."""
        return cls(IdType.RFC822_ADDR, address.encode("ascii"))


@dataclass(frozen=True)
class IdInitiator(_Identification):
    """IDi: the initiator's identity."""

    TYPE: ClassVar[int] = PayloadType.IDi


@dataclass(frozen=True)
class IdResponder(_Identification):
    """IDr: the responder's identity (or, from the initiator, the one it wants)."""

    TYPE: ClassVar[int] = PayloadType.IDr
