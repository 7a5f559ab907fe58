"""IKEv2 pseudorandom functions and prf+ (RFC 7296 2.13).

    prf+ (K,S) = T1 | T2 | T3 | ...
    T1 = prf (K, S | 0x01),  Tn = prf (K, Tn-1 | S | n)

For an HMAC PRF this is exactly HKDF-Expand (RFC 5869) with PRK = K and info = S, and it
is bounded the same way: the counter is one octet, so at most 255 blocks.

Supported: PRF_HMAC_SHA2_256/384/512 (RFC 4868). PRF_AES128_XCBC and PRF_AES128_CMAC are
refused by ``espd.ike.crypto.suites`` (espd implements no AES-MAC PRF: every peer that offers
them also offers HMAC-SHA2-256, the MUST of RFC 8247); HMAC-MD5 and HMAC-SHA1 likewise.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from espd.ike.crypto.secret import Secret

PRF_PLUS_MAX_BLOCKS = 255  # the counter octet of RFC 7296 2.13


@dataclass(frozen=True)
class Prf:
    """One negotiated PRF (transform type 2)."""

    ident: int  # IANA transform id
    name: str  # strongSwan-style name: "prfsha256"
    digest: str  # hashlib name
    size: int  # output length, and the preferred key length of SK_d, SK_pi, SK_pr

    def __call__(self, key: bytes | bytearray, data: bytes | bytearray) -> Secret:
        """prf(key, data): HMAC of `data` under `key` (any key length, RFC 2104)."""
        return Secret(hmac.digest(key, data, self.digest))

    def plus(self, key: bytes | bytearray, seed: bytes | bytearray, length: int) -> Secret:
        """prf+(key, seed), the first `length` bytes (RFC 7296 2.13)."""
        blocks = -(-length // self.size)
        if length < 0 or blocks > PRF_PLUS_MAX_BLOCKS:
            raise ValueError(
                f"prf+ with {self.name} gives at most {PRF_PLUS_MAX_BLOCKS * self.size} "
                f"bytes, not {length}"
            )
        out = Secret(blocks * self.size)
        # Tn-1 | S | n in one buffer sized once (S can hold g^ir: no copy left behind)
        message = Secret(self.size + len(seed) + 1)
        message[self.size:-1] = seed
        with memoryview(message) as whole:
            for n in range(1, blocks + 1):
                message[-1] = n
                block = hmac.digest(key, whole[self.size:] if n == 1 else whole, self.digest)
                out[(n - 1) * self.size:n * self.size] = block
                message[:self.size] = block
        message.wipe()
        out[length:] = bytes(len(out) - length)  # zero the unused tail, then drop it
        del out[length:]
        return out

    def __str__(self) -> str:
        return self.name


PRF_HMAC_SHA2_256 = Prf(5, "prfsha256", "sha256", 32)
PRF_HMAC_SHA2_384 = Prf(6, "prfsha384", "sha384", 48)
PRF_HMAC_SHA2_512 = Prf(7, "prfsha512", "sha512", 64)

PRFS: dict[int, Prf] = {p.ident: p for p in (PRF_HMAC_SHA2_256, PRF_HMAC_SHA2_384,
                                             PRF_HMAC_SHA2_512)}
