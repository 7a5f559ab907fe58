"""The Encrypted (SK, RFC 7296 3.14) and Encrypted Fragment (SKF, RFC 7383 2.5) payloads,
and the padding inside them. Sealing and opening whole messages is in ``message.py``
(SK) and ``fragments.py`` (SKF); both use the cipher object of TEAM.md's contract:

    SK body  = IV | ciphertext(inner payloads | padding | pad length (1)) | ICV
    SKF body = fragment number (2) | total fragments (2) | IV | ciphertext | ICV

The associated data (AEAD) and the integrity-checked prefix (CBC + HMAC) are the same
bytes: the message from the IKE header's first octet up to the IV, i.e. the header, any
payloads before SK/SKF, the SK/SKF generic header and, for SKF, the fragment fields.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Protocol, Self

from .constants import PayloadType
from .errors import ParseError
from .payload import Payload
from .wire import check_u16, need

_FRAGMENT = struct.Struct("!HH")


class SkCipher(Protocol):
    """What ``espd.ike.crypto`` hands the codec per IKE SA, direction and suite."""

    iv_size: int
    icv_size: int
    block_size: int  # the plaintext (with padding and pad length) is a multiple of this

    def seal(self, aad: bytes, plaintext: bytes) -> bytes:
        """IV || ciphertext || ICV; ciphertext is as long as plaintext."""
        ...

    def open(self, aad: bytes, body: bytes) -> bytes:
        """The plaintext of IV || ciphertext || ICV, or raise the crypto side's
        IntegrityError; never unauthenticated bytes."""
        ...


@dataclass(frozen=True)
class Encrypted(Payload):
    """SK as received or sent: ``first_payload`` is the type of the first inner payload
    (the generic header's next-payload field), ``body`` is IV || ciphertext || ICV.
    Always the last payload of its message."""

    first_payload: int
    body: bytes

    TYPE: ClassVar[int] = PayloadType.SK

    def encode_body(self) -> bytes:
        return self.body

    @classmethod
    def decode_framed(cls, first_payload: int, body: bytes) -> Self:
        return cls(first_payload, body)


@dataclass(frozen=True)
class EncryptedFragment(Payload):
    """SKF: fragment ``number`` of ``total`` (1-based). ``first_payload`` is the first
    inner payload's type in fragment 1 and 0 in the others (RFC 7383 2.5)."""

    first_payload: int
    number: int
    total: int
    body: bytes

    TYPE: ClassVar[int] = PayloadType.SKF

    def encode_body(self) -> bytes:
        fields = _FRAGMENT.pack(
            check_u16(self.number, "fragment number"), check_u16(self.total, "total fragments")
        )
        return fields + self.body

    @classmethod
    def decode_framed(cls, first_payload: int, body: bytes) -> Self:
        need(body, _FRAGMENT.size, "encrypted fragment payload")
        number, total = _FRAGMENT.unpack_from(body)
        if not 1 <= number <= total:
            raise ParseError(f"fragment number {number} of {total}", notify=None)
        return cls(first_payload, number, total, body[_FRAGMENT.size :])


def pad(inner: bytes, block_size: int) -> bytes:
    """``inner`` with zero padding and the pad length octet appended, so the result fills
    whole blocks (RFC 7296 3.14: the padding may hold any value; at most 255 octets)."""
    if not 1 <= block_size <= 256:
        raise ValueError(f"cipher block size {block_size}")
    padding = -(len(inner) + 1) % block_size
    return inner + bytes(padding) + bytes([padding])


def unpad(plaintext: bytes) -> bytes:
    """The inner payload bytes of an opened SK/SKF plaintext (authenticated already, so
    a bad pad length is the peer's syntax error)."""
    need(plaintext, 1, "decrypted SK payload")
    padding = plaintext[-1]
    if padding + 1 > len(plaintext):
        raise ParseError(f"pad length {padding} exceeds the {len(plaintext)}-byte plaintext")
    return plaintext[: len(plaintext) - padding - 1]


def check_sealed(body: bytes, cipher: SkCipher, what: str) -> None:
    """Lengths before ``open``: room for the IV, the ICV and at least the pad length octet,
    and whole cipher blocks between them. A failure means the message cannot be
    authenticated, so it is dropped without an answer (``notify`` None)."""
    overhead = cipher.iv_size + cipher.icv_size
    encrypted = len(body) - overhead
    if encrypted < 1:
        raise ParseError(f"{what} of {len(body)} bytes (IV and ICV need {overhead})", None)
    if encrypted % cipher.block_size:
        raise ParseError(
            f"{what}: {encrypted} encrypted bytes are not whole {cipher.block_size}-byte blocks",
            None,
        )
