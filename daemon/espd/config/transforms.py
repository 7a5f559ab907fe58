"""ESP transforms, named as Cisco IOS names them.

One vocabulary for the config files, the Python API and the show output:
``esp-gcm 256``, ``esp-chacha20-poly1305``, ``esp-aes 256 esp-sha256-hmac``,
``esp-null esp-sha-hmac``. Parsing is pure; the numeric ids match ``enum espdp_cipher``
and ``enum espdp_integ`` in native/espdp.h.

Transforms that RFC 8221 forbids, or that espd does not implement, are refused with a
message that names their status and the transform to write instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# enum espdp_cipher / enum espdp_integ, and every length, come from the data plane
from espd.dataplane.constants import (
    CIPHER_AES_CBC,
    CIPHER_AES_GCM,
    CIPHER_CHACHA20_POLY1305,
    CIPHER_NULL,
    INTEG_NONE,
    INTEG_SHA1_96,
    INTEG_SHA256_128,
    INTEG_SHA384_192,
    INTEG_SHA512_256,
    transform_lengths,
)

RECOMMENDED = "esp-gcm 256"


class TransformError(ValueError):
    """A transform set that espd refuses; the message says what to write instead."""


@dataclass(frozen=True)
class Transform:
    """One ESP transform: a cipher and, unless it is an AEAD, an integrity algorithm."""

    name: str  # canonical IOS spelling, e.g. "esp-aes 256 esp-sha256-hmac"
    cipher: int  # enum espdp_cipher
    cipher_key_bits: int  # 0 for esp-null
    integ: int  # enum espdp_integ
    key_len: int  # bytes of cipher key material, salt included for AEADs
    auth_key_len: int  # bytes of HMAC key, 0 for AEADs
    iv_len: int
    icv_len: int

    @property
    def aead(self) -> bool:
        return self.cipher in (CIPHER_AES_GCM, CIPHER_CHACHA20_POLY1305)

    @property
    def encrypts(self) -> bool:
        return self.cipher != CIPHER_NULL

    def __str__(self) -> str:
        return self.name


_INTEG = {
    "esp-sha-hmac": INTEG_SHA1_96,  # RFC 2404, HMAC-SHA1-96
    "esp-sha256-hmac": INTEG_SHA256_128,  # RFC 4868
    "esp-sha384-hmac": INTEG_SHA384_192,
    "esp-sha512-hmac": INTEG_SHA512_256,
}

_AES_BITS = (128, 192, 256)

# Refused names -> why (RFC 8221 status) and what to use instead.
_REFUSED = {
    "esp-des": "DES is MUST NOT in RFC 8221 (56-bit key, broken)",
    "esp-3des": "3DES is SHOULD NOT in RFC 8221 (64-bit block, Sweet32) and espd does not offer it",
    "esp-rfc1829": "esp-rfc1829 is the obsolete DES-CBC of RFC 1829; DES is MUST NOT in RFC 8221",
    "esp-md5-hmac": "HMAC-MD5-96 is MUST NOT in RFC 8221",
    "esp-seal": "SEAL is not an IPsec algorithm in RFC 8221",
    "esp-gmac": "ENCR_NULL_AUTH_AES_GMAC is not implemented by espd",
    "comp-lzs": "IP compression (IPComp) is not implemented by espd",
}


def _refuse_ah(word: str) -> TransformError:
    return TransformError(
        f"{word}: AH transforms are not supported; espd is ESP-only, and RFC 8221 "
        f"recommends ESP with an AEAD cipher instead of AH; use '{RECOMMENDED}'"
    )


def _cipher(words: list[str]) -> tuple[int, int]:
    """Consume the cipher words; return (cipher, key bits)."""
    head = words.pop(0)
    bits = 128
    if head in ("esp-aes", "esp-gcm") and words and words[0].isdigit():
        bits = int(words.pop(0))
        if bits not in _AES_BITS:
            raise TransformError(f"{head} {bits}: AES key size must be 128, 192 or 256")
    if head == "esp-gcm":
        return CIPHER_AES_GCM, bits  # RFC 4106: key || 4-byte salt
    if head == "esp-chacha20-poly1305":
        return CIPHER_CHACHA20_POLY1305, 256  # RFC 7634: key || 4-byte salt
    if head == "esp-aes":
        return CIPHER_AES_CBC, bits  # RFC 3602
    if head == "esp-null":
        return CIPHER_NULL, 0
    raise TransformError(f"{head}: unknown ESP cipher; use '{RECOMMENDED}'")


def parse_transform(spec: str | Iterable[str]) -> Transform:
    """Parse an IOS transform set ("esp-aes 256 esp-sha256-hmac") into a Transform."""
    words = spec.lower().split() if isinstance(spec, str) else [w.lower() for w in spec]
    if not words:
        raise TransformError(f"empty transform set; use '{RECOMMENDED}'")
    for word in words:
        if word.startswith("ah-"):
            raise _refuse_ah(word)
        if word in _REFUSED:
            raise TransformError(f"{word}: {_REFUSED[word]}; use '{RECOMMENDED}'")
    integ_words = [w for w in words if w in _INTEG]
    cipher_words = [w for w in words if w not in _INTEG]
    if not cipher_words:
        raise TransformError(
            f"{' '.join(words)}: an integrity-only set needs 'esp-null' to say so, "
            f"e.g. 'esp-null {integ_words[0]}'; better, use '{RECOMMENDED}'"
        )
    cipher, bits = _cipher(cipher_words)
    if cipher_words:
        raise TransformError(
            f"{' '.join(cipher_words)}: unexpected in transform set '{' '.join(words)}'"
        )
    if len(integ_words) > 1:
        raise TransformError(
            f"{' '.join(integ_words)}: a transform set takes one integrity algorithm"
        )
    canonical = {
        CIPHER_AES_GCM: f"esp-gcm {bits}",
        CIPHER_AES_CBC: f"esp-aes {bits}",
        CIPHER_CHACHA20_POLY1305: "esp-chacha20-poly1305",
        CIPHER_NULL: "esp-null",
    }[cipher]
    if cipher in (CIPHER_AES_GCM, CIPHER_CHACHA20_POLY1305):
        if integ_words:
            raise TransformError(
                f"{canonical} {integ_words[0]}: {canonical} is an AEAD and carries its own "
                f"integrity check; drop '{integ_words[0]}'"
            )
        return _transform(canonical, cipher, bits, INTEG_NONE)
    if not integ_words:
        what = "ENCR_NULL" if cipher == CIPHER_NULL else "a non-AEAD cipher"
        raise TransformError(
            f"{canonical}: RFC 8221 forbids {what} without integrity; "
            f"add 'esp-sha256-hmac', or use '{RECOMMENDED}'"
        )
    return _transform(f"{canonical} {integ_words[0]}", cipher, bits, _INTEG[integ_words[0]])


def _transform(name: str, cipher: int, bits: int, integ: int) -> Transform:
    """The Transform with the lengths the data plane uses for it."""
    lengths = transform_lengths(cipher, bits, integ)
    if lengths is None:  # parse_transform only builds what the data plane implements
        raise TransformError(f"{name}: not supported by the data plane; use '{RECOMMENDED}'")
    return Transform(name, cipher, bits, integ, lengths.key_len, lengths.auth_key_len,
                     lengths.iv_len, lengths.icv_len)
