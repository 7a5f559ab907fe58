"""What every payload class shares, and the opaque payload for types espd does not parse.

A payload class is a frozen dataclass with ``TYPE`` (its PayloadType), ``encode_body()``
(the bytes after the 4-byte generic payload header) and ``decode_body(body)`` (the inverse;
raises only ParseError). The generic header itself (next payload, critical bit, length) is
written and checked by the payload chain (``chain.py``), never by a payload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

from .constants import PayloadType

GENERIC_HEADER_SIZE = 4
CRITICAL = 0x80  # in the generic header's second octet (RFC 7296 3.2)


class Payload:
    """Base of all payload classes (see the module text)."""

    TYPE: ClassVar[int]

    @property
    def payload_type(self) -> int:
        return self.TYPE

    @property
    def elements(self) -> int:
        """What decoding this payload cost, counted against the chain's MAX_ELEMENTS: one,
        plus one per proposal, transform or selector it holds."""
        return 1

    def encode_body(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        raise NotImplementedError


@dataclass(frozen=True)
class UnknownPayload(Payload):
    """A payload whose type espd does not parse, received with the critical bit clear:
    kept byte for byte (so a decoded message re-encodes unchanged) and ignored by the
    engine (RFC 7296 2.5). A critical one never gets this far: the chain refuses it with
    UNSUPPORTED_CRITICAL_PAYLOAD."""

    kind: int
    body: bytes
    critical: bool = False

    TYPE: ClassVar[int] = PayloadType.NONE

    @property
    def payload_type(self) -> int:
        return self.kind

    def encode_body(self) -> bytes:
        return self.body
