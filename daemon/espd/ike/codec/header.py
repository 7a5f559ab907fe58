"""The IKE header (RFC 7296 3.1): the SPI pair, version, exchange type, flags, message ID.

    0  initiator's SPI (8) | responder's SPI (8)
    16 next payload (1) | version (1) | exchange type (1) | flags (1)
    20 message ID (4) | 24 length (4)          -> 28 bytes

``next payload`` and ``length`` describe the payload chain, so they are not fields of
``Header``: ``encode_header`` takes them from the chain being written and
``decode_header`` returns them next to the header.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from .constants import (
    IKE_MAJOR_VERSION,
    IKE_VERSION,
    ExchangeType,
    HeaderFlags,
    NotifyType,
    known,
)
from .errors import ParseError
from .limits import MAX_MESSAGE_SIZE
from .wire import need

HEADER_SIZE = 28
SPI_SIZE = 8
ZERO_SPI = bytes(SPI_SIZE)
_HEADER = struct.Struct("!8s8sBBBBII")
# the flag bits as plain ints: IntFlag's & is Python code, int's is not (hot path)
_RESPONSE, _INITIATOR = int(HeaderFlags.RESPONSE), int(HeaderFlags.INITIATOR)


@dataclass(frozen=True)
class SpiPair:
    """The IKE SA's two 8-byte SPIs; ``responder`` is all zeros in the first IKE_SA_INIT
    request (and in a COOKIE or INVALID_KE_PAYLOAD answer to it)."""

    initiator: bytes
    responder: bytes = ZERO_SPI

    def __post_init__(self) -> None:
        if len(self.initiator) != SPI_SIZE or len(self.responder) != SPI_SIZE:
            raise ValueError("IKE SPIs are 8 bytes each")

    @property
    def responder_known(self) -> bool:
        return self.responder != ZERO_SPI


@dataclass(frozen=True)
class Header:
    """One message's header. ``flags`` keeps reserved bits as received; ``version`` is the
    whole version octet (major in the high nibble; decode refuses a major other than 2)."""

    spis: SpiPair
    exchange: ExchangeType | int
    message_id: int
    flags: HeaderFlags = HeaderFlags(0)
    version: int = IKE_VERSION

    @property
    def is_response(self) -> bool:
        """The R flag: this message answers the request with the same message ID."""
        return bool(int(self.flags) & _RESPONSE)

    @property
    def from_initiator(self) -> bool:
        """The I flag: sent by the original initiator of the IKE SA (RFC 7296 2.2)."""
        return bool(int(self.flags) & _INITIATOR)

    def response(self, *, original_initiator: bool) -> Header:
        """The header of the response to this request: same SPIs, exchange and message ID,
        R set, I set when the responder of this exchange is the IKE SA's original
        initiator, version 2.0 and no reserved bits."""
        flags = HeaderFlags.RESPONSE
        if original_initiator:
            flags |= HeaderFlags.INITIATOR
        return replace(self, flags=flags, version=IKE_VERSION)


def request_header(
    spis: SpiPair, exchange: ExchangeType, message_id: int, *, original_initiator: bool
) -> Header:
    """The header of a request we send: I set when we are the IKE SA's original
    initiator (RFC 7296 2.2: the roles stay as the IKE SA was set up, even after rekeys
    started by the other side), R clear."""
    flags = HeaderFlags.INITIATOR if original_initiator else HeaderFlags(0)
    return Header(spis, exchange, message_id, flags)


def encode_header(header: Header, next_payload: int, length: int) -> bytes:
    """The 28-byte header for a message of ``length`` bytes whose first payload is of type
    ``next_payload``."""
    if not 0 <= header.message_id <= 0xFFFFFFFF:
        raise ValueError(f"message ID {header.message_id} does not fit in 32 bits")
    if not HEADER_SIZE <= length <= MAX_MESSAGE_SIZE:
        raise ValueError(f"IKE message of {length} bytes (the limit is {MAX_MESSAGE_SIZE})")
    return _HEADER.pack(
        header.spis.initiator,
        header.spis.responder,
        next_payload,
        header.version,
        header.exchange,
        int(header.flags) & 0xFF,
        header.message_id,
        length,
    )


def decode_header(data: bytes) -> tuple[Header, int, int]:
    """Parse the header at the start of ``data``: returns (header, first payload type,
    length field). Checks the version and that the length field is exactly ``len(data)``
    (an IKE message fills its UDP payload), so the payload chain may trust it."""
    need(data, HEADER_SIZE, "IKE header")
    if len(data) > MAX_MESSAGE_SIZE:
        raise ParseError(f"IKE message of {len(data)} bytes (the limit is {MAX_MESSAGE_SIZE})")
    spi_i, spi_r, next_payload, version, exchange, flags, message_id, length = _HEADER.unpack_from(
        data
    )
    if version >> 4 != IKE_MAJOR_VERSION:
        raise ParseError(
            f"IKE major version {version >> 4} (espd speaks 2)", NotifyType.INVALID_MAJOR_VERSION
        )
    if length != len(data):
        raise ParseError(f"IKE header length {length}, but the message has {len(data)} bytes")
    header = Header(
        SpiPair(spi_i, spi_r),
        known(ExchangeType, exchange),
        message_id,
        HeaderFlags(flags),
        version,
    )
    return header, next_payload, length
