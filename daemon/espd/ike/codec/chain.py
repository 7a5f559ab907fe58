"""The payload chain (RFC 7296 3.2): generic headers, next-payload links, the critical bit.

    generic header = next payload (1) | C (1 bit) + reserved (7) | payload length (2)

Decoding is one linear walk over the bytes that remain, each step consuming a payload
length of at least 4: it ends within ``len(data) / 4`` steps (and at MAX_PAYLOADS), so a
chain that loops or never ends cannot exist. Its cost is bounded too: every payload and
the proposals, transforms and selectors it holds count against MAX_ELEMENTS, checked
after each payload (whose own limits bound its size), so a 64 KiB message of nothing but
traffic selectors is refused after a few hundred. SK and SKF end the chain: their
next-payload field names the first payload inside them, and nothing may follow them.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from .auth import Authentication
from .cert import Certificate, CertificateRequest
from .constants import NotifyType, PayloadType
from .delete import Delete
from .encrypted import Encrypted, EncryptedFragment
from .errors import ParseError
from .ident import IdInitiator, IdResponder
from .ke import KeyExchange
from .limits import MAX_ELEMENTS, MAX_PAYLOADS
from .nonce import Nonce
from .notify import Notify
from .payload import CRITICAL, GENERIC_HEADER_SIZE, Payload, UnknownPayload
from .sa import SecurityAssociation
from .ts import TsInitiator, TsResponder
from .vendor import VendorId
from .wire import need_at

_GENERIC = struct.Struct("!BBH")

PAYLOAD_CLASSES: dict[int, type[Payload]] = {
    cls.TYPE: cls
    for cls in (
        SecurityAssociation,
        KeyExchange,
        IdInitiator,
        IdResponder,
        Certificate,
        CertificateRequest,
        Authentication,
        Nonce,
        Notify,
        Delete,
        VendorId,
        TsInitiator,
        TsResponder,
    )
}
FRAMED_CLASSES: dict[int, type[Encrypted] | type[EncryptedFragment]] = {
    PayloadType.SK: Encrypted,
    PayloadType.SKF: EncryptedFragment,
}


def _trailing_next(payload: Payload) -> int:
    if isinstance(payload, Encrypted | EncryptedFragment):
        return payload.first_payload
    return PayloadType.NONE


def encode_chain(payloads: Sequence[Payload]) -> tuple[int, bytes]:
    """(type of the first payload, the chained payloads). SK/SKF may only come last."""
    if len(payloads) > MAX_PAYLOADS:
        raise ValueError(f"{len(payloads)} payloads in one chain (limit {MAX_PAYLOADS})")
    parts: list[bytes] = []
    for i, payload in enumerate(payloads):
        last = i == len(payloads) - 1
        if isinstance(payload, Encrypted | EncryptedFragment) and not last:
            raise ValueError("SK and SKF are the last payload of a message")
        body = payload.encode_body()
        next_type = payloads[i + 1].payload_type if not last else _trailing_next(payload)
        flags = CRITICAL if isinstance(payload, UnknownPayload) and payload.critical else 0
        length = GENERIC_HEADER_SIZE + len(body)
        if length > 0xFFFF:
            raise ValueError(f"payload of type {payload.payload_type} is {length} bytes")
        parts.append(_GENERIC.pack(next_type, flags, length) + body)
    first = payloads[0].payload_type if payloads else PayloadType.NONE
    return first, b"".join(parts)


def decode_chain(first: int, data: bytes, *, framed: bool = True) -> tuple[Payload, ...]:
    """Every payload of the chain starting with type ``first`` that fills ``data``
    exactly. ``framed`` False refuses SK/SKF (inside an SK payload they cannot nest).
    Unknown types: kept as UnknownPayload when non-critical, else ParseError with
    UNSUPPORTED_CRITICAL_PAYLOAD and the type as data. Raises only ParseError."""
    payloads: list[Payload] = []
    offset, kind, elements = 0, first, 0
    while kind != PayloadType.NONE:
        if len(payloads) == MAX_PAYLOADS:
            raise ParseError(f"more than {MAX_PAYLOADS} payloads in one chain")
        need_at(data, offset, GENERIC_HEADER_SIZE, f"payload {len(payloads) + 1} header")
        next_kind, flags, length = _GENERIC.unpack_from(data, offset)
        if not GENERIC_HEADER_SIZE <= length <= len(data) - offset:
            raise ParseError(
                f"payload {len(payloads) + 1} (type {kind}) has length {length} with "
                f"{len(data) - offset} bytes left"
            )
        body = data[offset + GENERIC_HEADER_SIZE : offset + length]
        offset += length
        framed_cls = FRAMED_CLASSES.get(kind)
        if framed_cls is not None:
            if not framed:
                raise ParseError(f"payload type {kind} inside an encrypted payload")
            if offset != len(data):
                raise ParseError(f"{len(data) - offset} bytes after the SK/SKF payload")
            payloads.append(framed_cls.decode_framed(next_kind, body))
            return tuple(payloads)
        cls = PAYLOAD_CLASSES.get(kind)
        if cls is not None:
            payloads.append(cls.decode_body(body))
        elif flags & CRITICAL:
            raise ParseError(
                f"unsupported critical payload of type {kind}",
                NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD,
                bytes([kind]),
            )
        else:
            payloads.append(UnknownPayload(kind, body, critical=False))
        elements += payloads[-1].elements
        if elements > MAX_ELEMENTS:
            raise ParseError(
                f"more than {MAX_ELEMENTS} payloads, proposals, transforms and selectors"
            )
        kind = next_kind
    if offset != len(data):
        raise ParseError(f"{len(data) - offset} bytes after the last payload")
    return tuple(payloads)
