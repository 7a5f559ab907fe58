"""Security Association payload (RFC 7296 3.3): proposals, transforms, attributes.

    SA        = proposal+
    proposal  = last (1: 0 last, 2 more) | reserved (1) | length (2)
                | number (1) | protocol (1) | SPI size (1) | #transforms (1) | SPI | transform+
    transform = last (1: 0 last, 3 more) | reserved (1) | length (2)
                | type (1) | reserved (1) | transform id (2) | attribute*
    attribute = AF|type (2) | value (2, AF set: TV)   or   type (2) | length (2) | value (TLV)

The codec checks syntax (lengths, "last" markers, the transform count, bounds); what the
proposals mean (numbering, SPI sizes per protocol, required transform types) is for the
proposal chooser.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from .constants import TRANSFORM_IDS, PayloadType, ProtocolId, TransformAttr, TransformType, known
from .errors import ParseError
from .limits import MAX_ATTRIBUTES, MAX_PROPOSALS, MAX_SA_TRANSFORMS, MAX_TRANSFORMS
from .payload import Payload
from .wire import check_u8, check_u16, need_at

_PROPOSAL = struct.Struct("!BBHBBBB")
_TRANSFORM = struct.Struct("!BBHBBH")
_ATTR = struct.Struct("!HH")
_AF_TV = 0x8000
_LAST, _MORE_PROPOSALS, _MORE_TRANSFORMS = 0, 2, 3


@dataclass(frozen=True)
class Attribute:
    """A transform attribute: ``value`` is an int for the 2-byte TV form (Key Length is
    TV), bytes for the TLV form."""

    type: TransformAttr | int
    value: int | bytes

    def encode(self) -> bytes:
        check_u16(self.type, "attribute type")
        if self.type & _AF_TV:
            raise ValueError(f"attribute type {self.type} has the format bit set")
        if isinstance(self.value, int):
            return _ATTR.pack(self.type | _AF_TV, check_u16(self.value, "attribute value"))
        return _ATTR.pack(self.type, check_u16(len(self.value), "attribute length")) + self.value


def _decode_attributes(data: bytes) -> tuple[Attribute, ...]:
    attributes: list[Attribute] = []
    offset = 0
    while offset < len(data):
        if len(attributes) == MAX_ATTRIBUTES:
            raise ParseError(f"more than {MAX_ATTRIBUTES} attributes in one transform")
        need_at(data, offset, _ATTR.size, "transform attribute")
        kind, field = _ATTR.unpack_from(data, offset)
        offset += _ATTR.size
        if kind & _AF_TV:
            attributes.append(Attribute(known(TransformAttr, kind & ~_AF_TV), field))
            continue
        if offset + field > len(data):
            raise ParseError(f"attribute length {field} exceeds its transform")
        attributes.append(Attribute(known(TransformAttr, kind), data[offset : offset + field]))
        offset += field
    return tuple(attributes)


@dataclass(frozen=True)
class Transform:
    """One algorithm offer or choice. ``id`` is an EncrId/PrfId/IntegId/KeGroup/EsnId
    member when known for ``type``, else the int."""

    type: TransformType | int
    id: int
    attributes: tuple[Attribute, ...] = ()

    @property
    def key_length(self) -> int | None:
        """The Key Length attribute in bits (RFC 7296 3.3.5), or None when absent."""
        for attribute in self.attributes:
            if attribute.type == TransformAttr.KEY_LENGTH and isinstance(attribute.value, int):
                return attribute.value
        return None

    def encode(self, last: bool) -> bytes:
        attributes = b"".join(a.encode() for a in self.attributes)
        length = check_u16(_TRANSFORM.size + len(attributes), "transform length")
        marker = _LAST if last else _MORE_TRANSFORMS
        kind = check_u8(self.type, "transform type")
        fixed = _TRANSFORM.pack(marker, 0, length, kind, 0, check_u16(self.id, "transform id"))
        return fixed + attributes

    @classmethod
    def decode(cls, data: bytes, offset: int) -> tuple[Self, bool, int]:
        """The transform at ``offset`` of ``data``: (transform, is last, end offset)."""
        need_at(data, offset, _TRANSFORM.size, "transform")
        marker, _, length, kind, _, transform_id = _TRANSFORM.unpack_from(data, offset)
        if marker not in (_LAST, _MORE_TRANSFORMS):
            raise ParseError(f"transform 'last substruc' is {marker} (0 or 3 expected)")
        if not _TRANSFORM.size <= length <= len(data) - offset:
            raise ParseError(f"transform length {length} with {len(data) - offset} bytes left")
        ids = TRANSFORM_IDS.get(kind)
        transform = cls(
            known(TransformType, kind),
            known(ids, transform_id) if ids else transform_id,
            _decode_attributes(data[offset + _TRANSFORM.size : offset + length]),
        )
        return transform, marker == _LAST, offset + length


@dataclass(frozen=True)
class Proposal:
    """``spi`` is empty in IKE_SA_INIT, 8 bytes in an IKE SA rekey, 4 for ESP/AH."""

    number: int
    protocol: ProtocolId | int
    spi: bytes
    transforms: tuple[Transform, ...]

    def transforms_of(self, kind: TransformType) -> tuple[Transform, ...]:
        """The transforms of one type, in the order offered."""
        return tuple(t for t in self.transforms if t.type == kind)

    def encode(self, last: bool) -> bytes:
        if len(self.transforms) > MAX_TRANSFORMS:
            raise ValueError(f"{len(self.transforms)} transforms (limit {MAX_TRANSFORMS})")
        count = len(self.transforms)
        body = b"".join(t.encode(i == count - 1) for i, t in enumerate(self.transforms))
        length = check_u16(_PROPOSAL.size + len(self.spi) + len(body), "proposal length")
        fixed = _PROPOSAL.pack(
            _LAST if last else _MORE_PROPOSALS,
            0,
            length,
            check_u8(self.number, "proposal number"),
            check_u8(self.protocol, "protocol"),
            check_u8(len(self.spi), "SPI size"),
            count,
        )
        return fixed + self.spi + body

    @classmethod
    def decode(cls, data: bytes, offset: int) -> tuple[Self, bool, int]:
        """The proposal at ``offset`` of ``data``: (proposal, is last, end offset)."""
        need_at(data, offset, _PROPOSAL.size, "proposal")
        marker, _, length, number, protocol, spi_size, count = _PROPOSAL.unpack_from(data, offset)
        if marker not in (_LAST, _MORE_PROPOSALS):
            raise ParseError(f"proposal 'last substruc' is {marker} (0 or 2 expected)")
        if not _PROPOSAL.size + spi_size <= length <= len(data) - offset:
            raise ParseError(f"proposal length {length} with {len(data) - offset} bytes left")
        if count > MAX_TRANSFORMS:
            raise ParseError(f"proposal with {count} transforms (limit {MAX_TRANSFORMS})")
        spi_end = offset + _PROPOSAL.size + spi_size
        body = data[spi_end : offset + length]  # one copy; transforms are read in place
        transforms: list[Transform] = []
        at, last = 0, count == 0
        while not last:
            if len(transforms) == count:
                raise ParseError(f"proposal {number} has more transforms than its count {count}")
            transform, last, at = Transform.decode(body, at)
            transforms.append(transform)
        if len(transforms) != count or at != len(body):
            raise ParseError(
                f"proposal {number}: {len(transforms)} transforms in {at} of {len(body)} "
                f"bytes, count says {count}"
            )
        spi = data[offset + _PROPOSAL.size : spi_end]
        proposal = cls(number, known(ProtocolId, protocol), spi, tuple(transforms))
        return proposal, marker == _LAST, offset + length


@dataclass(frozen=True)
class SecurityAssociation(Payload):
    """An offer (several proposals, numbered from 1) or a choice (exactly one)."""

    proposals: tuple[Proposal, ...]

    TYPE: ClassVar[int] = PayloadType.SA

    @property
    def elements(self) -> int:
        return 1 + sum(1 + len(p.transforms) for p in self.proposals)

    def encode_body(self) -> bytes:
        if not 1 <= len(self.proposals) <= MAX_PROPOSALS:
            raise ValueError(f"an SA payload holds 1-{MAX_PROPOSALS} proposals")
        count = len(self.proposals)
        return b"".join(p.encode(i == count - 1) for i, p in enumerate(self.proposals))

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        proposals: list[Proposal] = []
        offset, last, transforms = 0, False, 0
        while not last:
            if len(proposals) == MAX_PROPOSALS:
                raise ParseError(f"more than {MAX_PROPOSALS} proposals in one SA payload")
            proposal, last, offset = Proposal.decode(body, offset)
            proposals.append(proposal)
            transforms += len(proposal.transforms)
            if transforms > MAX_SA_TRANSFORMS:
                raise ParseError(f"more than {MAX_SA_TRANSFORMS} transforms in one SA payload")
        if offset != len(body):
            raise ParseError(f"{len(body) - offset} bytes after the last proposal")
        return cls(tuple(proposals))
