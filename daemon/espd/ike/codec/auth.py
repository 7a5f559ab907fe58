"""Authentication payload (RFC 7296 3.8): method and authentication data.

auth method (1) | reserved (3) | authentication data
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from .constants import AuthMethod, PayloadType, known
from .payload import Payload
from .wire import check_u8, need

_FIXED = struct.Struct("!B3x")


@dataclass(frozen=True)
class Authentication(Payload):
    """For DIGITAL_SIGNATURE (RFC 7427) ``data`` starts with the ASN.1 algorithm
    identifier; splitting it is the authenticator's job."""

    method: AuthMethod | int
    data: bytes

    TYPE: ClassVar[int] = PayloadType.AUTH

    def encode_body(self) -> bytes:
        return _FIXED.pack(check_u8(self.method, "auth method")) + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        need(body, _FIXED.size + 1, "authentication payload")
        return cls(known(AuthMethod, body[0]), body[_FIXED.size :])
