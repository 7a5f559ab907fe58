"""Key Exchange payload (RFC 7296 3.4; RFC 9370 reuses it in IKE_INTERMEDIATE and
IKE_FOLLOWUP_KE): the group and the public value (or KEM key/ciphertext)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from .constants import KeGroup, PayloadType, known
from .payload import Payload
from .wire import check_u16, need, u16

_FIXED = struct.Struct("!HH")  # group, reserved


@dataclass(frozen=True)
class KeyExchange(Payload):
    """``data``'s length is the group's business (checked by the crypto side, which knows
    the group's sizes); the codec only frames it."""

    group: KeGroup | int
    data: bytes

    TYPE: ClassVar[int] = PayloadType.KE

    def encode_body(self) -> bytes:
        return _FIXED.pack(check_u16(self.group, "KE group"), 0) + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        need(body, _FIXED.size, "KE payload")
        return cls(known(KeGroup, u16(body, 0)), body[_FIXED.size :])
