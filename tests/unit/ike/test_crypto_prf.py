"""PRFs and prf+: RFC 4231 HMAC vectors, prf+ equal to HKDF-Expand (an independent
implementation in `cryptography`), the 255-block bound, and the RFC 7296 2.13 recurrence."""

from __future__ import annotations

import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from espd.ike.crypto.prf import PRF_HMAC_SHA2_256, PRF_HMAC_SHA2_384, PRF_HMAC_SHA2_512, PRFS

# RFC 4231 test case 2 (key "Jefe")
RFC4231_2 = {
    5: "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    6: "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e"
       "8e2240ca5e69e2c78b3239ecfab21649",
    7: "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
       "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
}
HASHES = {5: hashes.SHA256(), 6: hashes.SHA384(), 7: hashes.SHA512()}


@pytest.mark.parametrize("ident", sorted(PRFS))
def test_prf_is_hmac_rfc4231(ident):
    prf = PRFS[ident]
    assert prf(b"Jefe", b"what do ya want for nothing?").hex() == RFC4231_2[ident]
    assert prf.size == len(bytes.fromhex(RFC4231_2[ident]))


@pytest.mark.parametrize("ident", sorted(PRFS))
@pytest.mark.parametrize("length", [1, 31, 32, 33, 48, 64, 65, 200, 1000])
def test_prf_plus_is_hkdf_expand(ident, length):
    prf = PRFS[ident]
    key, seed = b"K" * prf.size, bytes(range(80))
    expected = HKDFExpand(HASHES[ident], length, seed).derive(key)
    assert prf.plus(key, seed, length) == expected


def test_prf_plus_follows_the_rfc7296_recurrence():
    key, seed = b"k" * 32, b"seed"
    t1 = hmac.digest(key, seed + b"\x01", "sha256")
    t2 = hmac.digest(key, t1 + seed + b"\x02", "sha256")
    assert PRF_HMAC_SHA2_256.plus(key, seed, 64) == t1 + t2


@pytest.mark.parametrize("prf", [PRF_HMAC_SHA2_256, PRF_HMAC_SHA2_384, PRF_HMAC_SHA2_512])
def test_prf_plus_stops_at_255_blocks(prf):
    assert len(prf.plus(b"k", b"s", 255 * prf.size)) == 255 * prf.size
    with pytest.raises(ValueError, match="at most"):
        prf.plus(b"k", b"s", 255 * prf.size + 1)


def test_prf_output_never_prints_its_bytes():
    out = PRF_HMAC_SHA2_256(b"k", b"m")
    assert repr(out) == str(out) == f"{out}" == "<Secret 32 bytes>"
