"""ESP transforms in Child SA proposals: IANA ids <-> ``espd.config.transforms.Transform``.

The crypto map's transform sets are IOS names (``esp-gcm 256``); a Child SA proposal
carries ENCR (with a Key Length attribute where the cipher has several), INTEG unless the
cipher is an AEAD, and ESN. ``proposal_ids`` gives the ids to offer for a transform set;
``transform`` maps what a peer chose back, or None when espd's data plane has no such
transform (the proposal choice then skips it).
"""

from __future__ import annotations

from dataclasses import dataclass

from espd.config.transforms import (
    CIPHER_AES_CBC,
    CIPHER_AES_GCM,
    CIPHER_CHACHA20_POLY1305,
    CIPHER_NULL,
    INTEG_NONE,
    INTEG_SHA1_96,
    INTEG_SHA256_128,
    INTEG_SHA384_192,
    INTEG_SHA512_256,
    Transform,
    parse_transform,
)

# data plane enum -> IANA ENCR id (RFC 7296 3.3.2; ENCR_AES_GCM_16 = 16-byte ICV, RFC 4106)
_ENCR_IDS = {CIPHER_AES_CBC: 12, CIPHER_AES_GCM: 20, CIPHER_CHACHA20_POLY1305: 28,
             CIPHER_NULL: 11}
_INTEG_IDS = {INTEG_SHA1_96: 2, INTEG_SHA256_128: 12, INTEG_SHA384_192: 13,
              INTEG_SHA512_256: 14}
_ENCR_WORDS = {12: "esp-aes", 20: "esp-gcm", 28: "esp-chacha20-poly1305", 11: "esp-null"}
_INTEG_WORDS = {2: "esp-sha-hmac", 12: "esp-sha256-hmac", 13: "esp-sha384-hmac",
                14: "esp-sha512-hmac"}
_KEY_LENGTH = {12, 20}  # ciphers whose proposals carry the Key Length attribute


@dataclass(frozen=True)
class EspProposalIds:
    encr: int
    key_bits: int | None  # the Key Length attribute, None where the cipher takes none
    integ: int | None  # None for an AEAD (no INTEG transform, RFC 7296 3.3)


def proposal_ids(t: Transform) -> EspProposalIds:
    """The transform ids that offer `t` in a Child SA proposal."""
    encr = _ENCR_IDS[t.cipher]
    return EspProposalIds(encr, t.cipher_key_bits if encr in _KEY_LENGTH else None,
                          _INTEG_IDS[t.integ] if t.integ != INTEG_NONE else None)


def transform(encr: int, key_bits: int | None, integ: int | None) -> Transform | None:
    """The data plane transform for negotiated ids, or None if espd has none."""
    word = _ENCR_WORDS.get(encr)
    if word is None or (encr in _KEY_LENGTH) != (key_bits is not None):
        return None
    words = [word] + ([str(key_bits)] if key_bits is not None else [])
    if integ is not None:
        if integ not in _INTEG_WORDS:
            return None
        words.append(_INTEG_WORDS[integ])
    try:
        return parse_transform(words)
    except ValueError:  # e.g. an AEAD with INTEG, or NULL without it
        return None
