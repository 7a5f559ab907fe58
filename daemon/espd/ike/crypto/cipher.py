"""SK payload ciphers: one object per IKE SA direction, keyed with SK_e (+ SK_a).

The contract with ``espd.ike.codec`` (TEAM.md): the codec pads the inner payloads to a
whole ``block_size`` (pad bytes + pad length octet), then calls

    seal(aad, plaintext) -> IV || ciphertext || ICV
    open(aad, body)      -> plaintext         (body = IV || ciphertext || ICV)

``open`` raises ``IntegrityError`` for a bad ICV (or a body too short to hold IV and ICV)
and never returns unauthenticated bytes.

- AEAD (RFC 5282 for AES-GCM, RFC 7634 for ChaCha20-Poly1305): SK_e is key || 4-byte salt;
  the nonce is salt || 8-byte explicit IV; ``aad`` is the IKE header and the SK (or SKF)
  generic payload header. The explicit IV is a per-key counter: a cipher object never
  seals twice under one IV, and refuses to seal once the counter is spent.
- AES-CBC + HMAC-SHA2 (RFC 3602, RFC 4868, RFC 7296 3.14): a random 16-byte IV per
  message; the ICV is the truncated HMAC under SK_a over ``aad || IV || ciphertext`` (the
  whole message up to the ICV); ``open`` checks it in constant time before decrypting.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from espd.ike.crypto.secret import Secret

AEAD_SALT_SIZE = 4  # RFC 5282 / RFC 7634: the salt at the end of SK_e
AEAD_IV_SIZE = 8
AEAD_ICV_SIZE = 16  # ENCR_AES_GCM_16 and ChaCha20-Poly1305
AES_BLOCK = 16
_IV_COUNTER_LIMIT = 1 << 64
_AEAD_KEY_SIZES = {AESGCM: (16, 24, 32), ChaCha20Poly1305: (32,)}


class IntegrityError(Exception):
    """An SK payload whose ICV does not verify: drop the message (RFC 7296 2.21.1 says
    to log and otherwise ignore it)."""


class SkCipher(Protocol):
    """What the codec needs from an SK cipher (see the module docstring)."""

    iv_size: int
    icv_size: int
    block_size: int

    def seal(self, aad: bytes, plaintext: bytes) -> bytes: ...

    def open(self, aad: bytes, body: bytes) -> bytes: ...


class AeadCipher:
    """AES-GCM-16 or ChaCha20-Poly1305 with a 4-byte salt and an 8-byte counter IV.

    The OpenSSL context is made per message, not kept: a kept AESGCM object holds
    about 2.6 KB of OpenSSL state, two per IKE SA, for the few messages an established
    IKE SA carries (making one costs about 1 us, a tenth of an AUTH exchange's HMACs).
    The key lives in a Secret of this object's own, which ``wipe`` zeroes."""

    __slots__ = ("name", "_algorithm", "_key", "_next_iv")
    iv_size = AEAD_IV_SIZE
    icv_size = AEAD_ICV_SIZE
    block_size = 1  # no block alignment: padding may be empty (RFC 5282 3)

    def __init__(self, name: str, algorithm: type[AESGCM] | type[ChaCha20Poly1305],
                 key_and_salt: bytes | bytearray) -> None:
        self.name = name
        self._algorithm = algorithm
        if len(key_and_salt) - AEAD_SALT_SIZE not in _AEAD_KEY_SIZES[algorithm]:
            raise ValueError(f"{name}: a {len(key_and_salt) - AEAD_SALT_SIZE}-byte key")
        self._key = Secret(key_and_salt)  # key || 4-byte salt
        self._next_iv = 0

    def _context_key(self) -> memoryview:
        return memoryview(self._key)[:-AEAD_SALT_SIZE]

    def _nonce(self, iv: bytes) -> bytes:
        return bytes(self._key[-AEAD_SALT_SIZE:]) + iv

    def seal(self, aad: bytes, plaintext: bytes) -> bytes:
        if self._next_iv >= _IV_COUNTER_LIMIT:
            raise OverflowError(f"{self.name}: all 2^64 IVs of this key are used; rekey")
        iv = self._next_iv.to_bytes(AEAD_IV_SIZE, "big")
        self._next_iv += 1
        with self._context_key() as key:
            return iv + self._algorithm(key).encrypt(self._nonce(iv), plaintext, aad)

    def open(self, aad: bytes, body: bytes) -> bytes:
        if len(body) < AEAD_IV_SIZE + AEAD_ICV_SIZE:
            raise IntegrityError(f"{self.name}: {len(body)} bytes cannot hold IV and ICV")
        iv = bytes(body[:AEAD_IV_SIZE])
        try:
            with self._context_key() as key:
                return self._algorithm(key).decrypt(self._nonce(iv),
                                                    bytes(body[AEAD_IV_SIZE:]), aad)
        except InvalidTag:
            raise IntegrityError(f"{self.name}: ICV does not verify") from None

    def wipe(self) -> None:
        self._key.wipe()

    def __repr__(self) -> str:
        return f"<{self.name} SK cipher>"


@dataclass(frozen=True)
class Integ:
    """An HMAC-SHA2 integrity transform (RFC 4868): key size = hash size, ICV truncated."""

    ident: int  # IANA transform type 3 id
    name: str  # strongSwan-style: "sha256"
    digest: str
    key_size: int
    icv_size: int

    def __str__(self) -> str:
        return self.name


AUTH_HMAC_SHA2_256_128 = Integ(12, "sha256", "sha256", 32, 16)
AUTH_HMAC_SHA2_384_192 = Integ(13, "sha384", "sha384", 48, 24)
AUTH_HMAC_SHA2_512_256 = Integ(14, "sha512", "sha512", 64, 32)
INTEGS: dict[int, Integ] = {i.ident: i for i in (AUTH_HMAC_SHA2_256_128,
                                                 AUTH_HMAC_SHA2_384_192,
                                                 AUTH_HMAC_SHA2_512_256)}


class CbcHmacCipher:
    """AES-CBC with a random IV, then HMAC-SHA2 over the whole message up to the ICV."""

    __slots__ = ("name", "icv_size", "_aes", "_integ", "_sk_a")

    iv_size = AES_BLOCK
    block_size = AES_BLOCK

    def __init__(self, name: str, sk_e: bytes | bytearray, integ: Integ,
                 sk_a: bytes | bytearray) -> None:
        if len(sk_a) != integ.key_size:
            raise ValueError(f"{integ.name} takes a {integ.key_size}-byte key")
        self.name = name
        self.icv_size = integ.icv_size
        self._aes = algorithms.AES(bytes(sk_e))
        self._integ = integ
        self._sk_a = bytes(sk_a)

    def _icv(self, aad: bytes, iv_and_ciphertext: bytes) -> bytes:
        mac = hmac.new(self._sk_a, aad, self._integ.digest)
        mac.update(iv_and_ciphertext)
        return mac.digest()[:self.icv_size]

    def seal(self, aad: bytes, plaintext: bytes) -> bytes:
        if len(plaintext) % AES_BLOCK:
            raise ValueError(f"{self.name}: plaintext of {len(plaintext)} bytes is not padded "
                             f"to the {AES_BLOCK}-byte block")
        iv = os.urandom(AES_BLOCK)
        encryptor = Cipher(self._aes, modes.CBC(iv)).encryptor()
        body = iv + encryptor.update(plaintext) + encryptor.finalize()
        return body + self._icv(aad, body)

    def open(self, aad: bytes, body: bytes) -> bytes:
        crypted = len(body) - AES_BLOCK - self.icv_size
        if crypted < AES_BLOCK or crypted % AES_BLOCK:
            raise IntegrityError(f"{self.name}: {len(body)} bytes are not IV, whole blocks "
                                 f"and a {self.icv_size}-byte ICV")
        signed, icv = bytes(body[:-self.icv_size]), bytes(body[-self.icv_size:])
        if not hmac.compare_digest(self._icv(aad, signed), icv):
            raise IntegrityError(f"{self.name}: ICV does not verify")
        decryptor = Cipher(self._aes, modes.CBC(signed[:AES_BLOCK])).decryptor()
        return decryptor.update(signed[AES_BLOCK:]) + decryptor.finalize()

    def __repr__(self) -> str:
        return f"<{self.name} SK cipher>"


@dataclass(frozen=True)
class Encr:
    """An IKE SA encryption transform (type 1) at one key size."""

    ident: int  # IANA transform id
    name: str  # strongSwan-style: "aes256gcm16", "aes128", "chacha20poly1305"
    key_bits: int
    aead: bool

    @property
    def key_size(self) -> int:
        """Bytes of SK_e: the key, plus the salt for an AEAD (RFC 5282 / RFC 7634)."""
        return self.key_bits // 8 + (AEAD_SALT_SIZE if self.aead else 0)

    def cipher(self, sk_e: bytes | bytearray, integ: Integ | None = None,
               sk_a: bytes | bytearray = b"") -> SkCipher:
        """The SK cipher for one direction; `integ` and `sk_a` only for AES-CBC."""
        if len(sk_e) != self.key_size:
            raise ValueError(f"{self.name} takes a {self.key_size}-byte SK_e")
        if self.aead:
            if integ is not None:
                raise ValueError(f"{self.name} is an AEAD: it takes no integrity transform")
            algorithm = ChaCha20Poly1305 if self.ident == ENCR_CHACHA20_POLY1305 else AESGCM
            return AeadCipher(self.name, algorithm, sk_e)
        if integ is None:
            raise ValueError(f"{self.name} needs an integrity transform")
        return CbcHmacCipher(f"{self.name}-{integ.name}", sk_e, integ, sk_a)

    def __str__(self) -> str:
        return self.name


ENCR_AES_CBC, ENCR_AES_GCM_16, ENCR_CHACHA20_POLY1305 = 12, 20, 28  # IANA transform ids

ENCRS: dict[tuple[int, int], Encr] = {
    (e.ident, e.key_bits): e for e in (
        Encr(ENCR_AES_CBC, "aes128", 128, False),
        Encr(ENCR_AES_CBC, "aes256", 256, False),
        Encr(ENCR_AES_GCM_16, "aes128gcm16", 128, True),
        Encr(ENCR_AES_GCM_16, "aes256gcm16", 256, True),
        Encr(ENCR_CHACHA20_POLY1305, "chacha20poly1305", 256, True),
    )
}
