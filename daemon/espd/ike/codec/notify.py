"""Notify payload (RFC 7296 3.10): protocol, SPI, notify type and data.

protocol (1) | SPI size (1) | notify type (2) | SPI | data
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from .constants import NotifyType, PayloadType, ProtocolId, is_error_notify, known
from .errors import ParseError
from .payload import Payload
from .wire import check_u8, check_u16, need, u16

_FIXED = struct.Struct("!BBH")


@dataclass(frozen=True)
class Notify(Payload):
    """A notification. ``protocol`` is 0 (NONE) with an empty ``spi`` for notifies about
    the IKE SA (RFC 7296 3.10: sent as zero, ignored on receipt when the SPI is empty);
    ESP/AH with the 4-byte SPI for REKEY_SA and the like."""

    type: NotifyType | int
    data: bytes = b""
    protocol: ProtocolId | int = ProtocolId.NONE
    spi: bytes = b""

    TYPE: ClassVar[int] = PayloadType.NOTIFY

    @property
    def is_error(self) -> bool:
        return is_error_notify(self.type)

    def encode_body(self) -> bytes:
        fixed = _FIXED.pack(
            check_u8(self.protocol, "notify protocol"),
            check_u8(len(self.spi), "notify SPI size"),
            check_u16(self.type, "notify type"),
        )
        return fixed + self.spi + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        need(body, _FIXED.size, "notify payload")
        protocol, spi_size, notify_type = _FIXED.unpack_from(body)
        end = _FIXED.size + spi_size
        if end > len(body):
            raise ParseError(f"notify SPI size {spi_size} exceeds the payload ({len(body)} bytes)")
        return cls(
            known(NotifyType, notify_type),
            body[end:],
            known(ProtocolId, protocol),
            body[_FIXED.size : end],
        )


def u16_list(data: bytes, what: str) -> tuple[int, ...]:
    """Notify data that is a list of 2-octet values (SIGNATURE_HASH_ALGORITHMS, RFC 7427;
    the group of INVALID_KE_PAYLOAD, RFC 7296 3.10.1)."""
    if len(data) % 2:
        raise ParseError(f"{what}: {len(data)} bytes is not a list of 2-octet values")
    return tuple(u16(data, i) for i in range(0, len(data), 2))


def invalid_ke_payload(group: int) -> Notify:
    """INVALID_KE_PAYLOAD naming the group the responder wants."""
    return Notify(NotifyType.INVALID_KE_PAYLOAD, struct.pack("!H", check_u16(group, "group")))


def requested_group(notify: Notify) -> int:
    """The group an INVALID_KE_PAYLOAD asks for (exactly 2 octets of data)."""
    if len(notify.data) != 2:
        raise ParseError(f"INVALID_KE_PAYLOAD with {len(notify.data)} bytes of data (2 expected)")
    return u16(notify.data, 0)


def signature_hash_algorithms(algorithms: tuple[int, ...]) -> Notify:
    """SIGNATURE_HASH_ALGORITHMS (RFC 7427 4) announcing ``algorithms`` (HashAlgorithm)."""
    data = b"".join(struct.pack("!H", check_u16(a, "hash algorithm")) for a in algorithms)
    return Notify(NotifyType.SIGNATURE_HASH_ALGORITHMS, data)
