"""Bounded reads from received bytes: every read checks the length first and fails with
ParseError, so callers never index past what arrived."""

from __future__ import annotations

import struct

from .errors import ParseError

U16 = struct.Struct("!H")


def need(data: bytes, size: int, what: str) -> None:
    """Fail unless ``data`` holds at least ``size`` bytes for ``what``."""
    if len(data) < size:
        raise ParseError(f"{what}: {len(data)} bytes, need at least {size}")


def need_at(data: bytes, offset: int, size: int, what: str) -> None:
    """Fail unless ``data`` holds ``size`` bytes from ``offset`` on (no copy is made)."""
    if len(data) - offset < size:
        raise ParseError(f"{what}: {len(data) - offset} bytes, need at least {size}")


def u16(data: bytes, offset: int) -> int:
    """Big-endian 16-bit field at ``offset`` (the caller has checked the length)."""
    return U16.unpack_from(data, offset)[0]


def check_u8(value: int, what: str) -> int:
    """An encoder's guard: ``value`` fits one octet."""
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{what} {value} does not fit in one octet")
    return value


def check_u16(value: int, what: str) -> int:
    """An encoder's guard: ``value`` fits two octets."""
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{what} {value} does not fit in two octets")
    return value
