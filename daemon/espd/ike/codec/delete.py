"""Delete payload (RFC 7296 3.11): the SAs of one protocol the sender removed.

    protocol (1) | SPI size (1) | number of SPIs (2) | SPIs

For the IKE SA: protocol IKE, SPI size 0, no SPIs (the header names the SA).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from .constants import PayloadType, ProtocolId, known
from .errors import ParseError
from .limits import MAX_DELETE_SPIS
from .payload import Payload
from .wire import check_u8, need

_FIXED = struct.Struct("!BBH")
ESP_SPI_SIZE = 4


@dataclass(frozen=True)
class Delete(Payload):
    protocol: ProtocolId | int
    spis: tuple[bytes, ...] = ()

    TYPE: ClassVar[int] = PayloadType.DELETE

    def encode_body(self) -> bytes:
        size = len(self.spis[0]) if self.spis else 0
        if any(len(s) != size for s in self.spis):
            raise ValueError("all SPIs of one Delete payload have the same size")
        if len(self.spis) > MAX_DELETE_SPIS:
            raise ValueError(f"{len(self.spis)} SPIs in one Delete (limit {MAX_DELETE_SPIS})")
        fixed = _FIXED.pack(check_u8(self.protocol, "protocol"), size, len(self.spis))
        return fixed + b"".join(self.spis)

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        need(body, _FIXED.size, "delete payload")
        protocol, size, count = _FIXED.unpack_from(body)
        if count > MAX_DELETE_SPIS:
            raise ParseError(f"delete payload lists {count} SPIs (limit {MAX_DELETE_SPIS})")
        spis = body[_FIXED.size :]
        if len(spis) != size * count:
            raise ParseError(
                f"delete payload: {count} SPIs of {size} bytes need {size * count} bytes, "
                f"{len(spis)} present"
            )
        if count and not size:
            raise ParseError(f"delete payload lists {count} SPIs of size 0")
        return cls(
            known(ProtocolId, protocol),
            tuple(spis[i : i + size] for i in range(0, len(spis), size)) if size else (),
        )
