"""Vendor ID payload (RFC 7296 3.12): opaque bytes, informational only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

from .constants import PayloadType
from .payload import Payload


@dataclass(frozen=True)
class VendorId(Payload):
    data: bytes

    TYPE: ClassVar[int] = PayloadType.VENDOR_ID

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        return cls(body)
