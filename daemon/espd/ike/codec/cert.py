"""Certificate and Certificate Request payloads (RFC 7296 3.6, 3.7).

CERT:    encoding (1) | certificate data (DER for X509_SIGNATURE)
CERTREQ: encoding (1) | certification authority (for X.509: concatenated SHA-1
         hashes of each trusted CA's SubjectPublicKeyInfo, 20 bytes each)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

from .constants import CertEncoding, PayloadType, known
from .errors import ParseError
from .payload import Payload
from .wire import check_u8, need

SHA1_SIZE = 20


@dataclass(frozen=True)
class Certificate(Payload):
    encoding: CertEncoding | int
    data: bytes

    TYPE: ClassVar[int] = PayloadType.CERT

    def encode_body(self) -> bytes:
        return bytes([check_u8(self.encoding, "cert encoding")]) + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        need(body, 2, "certificate payload")
        return cls(known(CertEncoding, body[0]), body[1:])


@dataclass(frozen=True)
class CertificateRequest(Payload):
    """An empty ``data`` asks for a certificate from any CA (charon sends that when it
    trusts none by hash)."""

    encoding: CertEncoding | int
    data: bytes = b""

    TYPE: ClassVar[int] = PayloadType.CERTREQ

    @classmethod
    def for_authorities(cls, spki_sha1s: tuple[bytes, ...]) -> Self:
        """An X.509 request naming each trusted CA by the SHA-1 of its public key info."""
        if any(len(h) != SHA1_SIZE for h in spki_sha1s):
            raise ValueError("CA hashes are SHA-1 digests of 20 bytes")
        return cls(CertEncoding.X509_SIGNATURE, b"".join(spki_sha1s))

    @property
    def authorities(self) -> tuple[bytes, ...]:
        """For X509_SIGNATURE, the 20-byte CA hashes (``decode_body`` checked the size)."""
        return tuple(self.data[i : i + SHA1_SIZE] for i in range(0, len(self.data), SHA1_SIZE))

    def encode_body(self) -> bytes:
        return bytes([check_u8(self.encoding, "cert encoding")]) + self.data

    @classmethod
    def decode_body(cls, body: bytes) -> Self:
        need(body, 1, "certificate request payload")
        encoding, data = known(CertEncoding, body[0]), body[1:]
        if encoding == CertEncoding.X509_SIGNATURE and len(data) % SHA1_SIZE:
            raise ParseError(
                f"certificate request of {len(data)} bytes is not a list of 20-byte SHA-1 hashes"
            )
        return cls(encoding, data)
