"""Nonce payload (Ni, Nr; RFC 7296 3.9): 16 to 256 random bytes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

from .constants import PayloadType
from .errors import ParseError
from .payload import Payload

NONCE_MIN = 16  # RFC 7296 3.9: between 16 and 256 octets
NONCE_MAX = 256


@dataclass(frozen=True)
class Nonce(Payload):
    data: bytes

    TYPE: ClassVar[int] = PayloadType.NONCE

    def encode_body(self) -> bytes:
        if not NONCE_MIN <= len(self.data) <= NONCE_MAX:
            raise ValueError(f"a nonce is {NONCE_MIN}-{NONCE_MAX} bytes, not {len(self.data)}")
        return self.data

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        if not NONCE_MIN <= len(body) <= NONCE_MAX:
            raise ParseError(f"nonce of {len(body)} bytes (RFC 7296: {NONCE_MIN}-{NONCE_MAX})")
        return cls(body)
