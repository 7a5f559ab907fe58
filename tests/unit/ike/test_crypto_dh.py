"""Key exchange groups: known answers (RFC 7748 X25519, RFC 5903 ECP-256), MODP against
`cryptography`'s own (deprecated) FFDH as an independent implementation and its primes
re-derived from RFC 3526's formula, charon's real ECP-384 public values accepted, ML-KEM
both ways, and every invalid public value of RFC 7296 / 5903 / 8031 refused."""

from __future__ import annotations

import random
import warnings

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from support.ike_capture import load_values

from espd.ike.crypto.dh import (
    CURVE25519,
    ECP_256,
    ECP_384,
    ECP_521,
    GROUPS,
    ML_KEM_768,
    ML_KEM_1024,
    MODP_2048,
    MODP_3072,
    EcpPrivate,
    InvalidKeyExchange,
    ModpPrivate,
    X25519Private,
)
from espd.ike.crypto.secret import Secret

# RFC 7748 6.1
ALICE = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
ALICE_PUBLIC = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
BOB_PUBLIC = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
X25519_SHARED = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"

# RFC 5903 8.1 (256-bit random ECP group)
ECP256_I = "c88f01f510d9ac3f70a292daa2316de544e9aab8afe84049c62a9c57862d1433"
ECP256_GI = ("dad0b65394221cf9b051e1feca5787d098dfe637fc90b9ef945d0c3772581180"
             "5271a0461cdb8252d61f1c456fa3e59ab1f45b33accf5f58389e0577b8990bb3")
ECP256_GR = ("d12dfb5289c8d4f81208b70270398c342296970a0bccb74c736fc7554494bf63"
             "56fbf3ca366cc23e8157854c13c58d6aac23f046ada30f8353e74f33039872ab")
ECP256_GIR = "d6840f6b42f6edafd13116e0e12565202fef8e9ece7dce03812464d04b9442de"


def test_x25519_rfc7748_known_answer():
    alice = X25519Private(x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(ALICE)))
    assert alice.public_bytes.hex() == ALICE_PUBLIC
    shared = alice.shared_secret(bytes.fromhex(BOB_PUBLIC))
    assert isinstance(shared, Secret) and shared.hex() == X25519_SHARED


def test_ecp256_rfc5903_known_answer_in_x_y_encoding():
    private = EcpPrivate(ECP_256, ec.derive_private_key(int(ECP256_I, 16), ec.SECP256R1()))
    assert private.public_bytes.hex() == ECP256_GI  # x || y, no 0x04 octet
    assert private.shared_secret(bytes.fromhex(ECP256_GR)).hex() == ECP256_GIR  # x only


ECP384 = load_values("ke-frag-ecp384.txt")


@pytest.mark.parametrize("who", ["initiator", "responder"])
def test_charons_ecp384_public_values_are_accepted(who):
    peer = ECP384[f"ecp384.{who}"]
    assert len(peer) == ECP_384.initiator_size == 96
    shared = ECP_384.generate().shared_secret(peer)
    assert len(shared) == 48


@pytest.mark.parametrize("who", ["initiator", "responder"])
def test_charons_ecp384_point_moved_off_the_curve_is_refused(who):
    peer = bytearray(ECP384[f"ecp384.{who}"])
    peer[-1] ^= 1  # y + 1 (or - 1): no longer on the curve
    with pytest.raises(InvalidKeyExchange, match="not a point on the curve"):
        ECP_384.generate().shared_secret(bytes(peer))


@pytest.mark.parametrize("group", list(GROUPS.values()), ids=lambda g: g.name)
def test_both_sides_agree_and_sizes_are_the_ke_payloads(group):
    if group.kem and not group.available:
        pytest.skip(f"{group.name}: this cryptography backend has no ML-KEM")
    initiator = group.generate()
    assert len(initiator.public_bytes) == group.initiator_size
    response, responder_secret = group.respond(initiator.public_bytes)
    assert len(response) == group.responder_size
    assert initiator.shared_secret(response) == responder_secret
    assert group.ident in (31, 19, 20, 21, 14, 15, 36, 37)
    assert "private key" in repr(initiator)


def test_mlkem_768_and_1024_are_available_in_this_venv():
    """cryptography >= 48 (the pq extra in pyproject); the venv's 50 has both parameter sets."""
    assert ML_KEM_768.available and ML_KEM_1024.available
    assert (ML_KEM_768.initiator_size, ML_KEM_768.responder_size) == (1184, 1088)
    assert ML_KEM_768.kem and not CURVE25519.kem


def _rfc3526_prime(bits: int, pi_bits: int, offset: int) -> int:
    """p = 2^n - 2^(n-64) - 1 + 2^64 * ([2^(n-130) pi] + offset), pi by Machin's formula."""
    extra = 64
    one = 1 << (pi_bits + extra)

    def atan_inv(x: int) -> int:
        total = term = one // x
        n, sign = 1, -1
        while term:
            term //= x * x
            n += 2
            total += sign * (term // n)
            sign = -sign
        return total

    pi = (16 * atan_inv(5) - 4 * atan_inv(239)) >> extra
    return 2**bits - 2**(bits - 64) - 1 + 2**64 * (pi + offset)


def test_modp_primes_are_rfc3526s():
    assert MODP_2048.prime == _rfc3526_prime(2048, 1918, 124476)
    assert MODP_3072.prime == _rfc3526_prime(3072, 2942, 1690314)


@pytest.mark.parametrize("group", [MODP_2048, MODP_3072], ids=lambda g: g.name)
def test_modp_agrees_with_cryptographys_ffdh(group):
    from cryptography.hazmat.primitives.asymmetric import dh

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FFDH is deprecated there: that is why espd has its own
        params = dh.DHParameterNumbers(group.prime, 2).parameters()
        theirs = params.generate_private_key()
        their_public = theirs.public_key().public_numbers().y.to_bytes(group.initiator_size,
                                                                        "big")
        ours = group.generate()
        mine = dh.DHPublicNumbers(int.from_bytes(ours.public_bytes, "big"),
                                  params.parameter_numbers()).public_key()
        expected = theirs.exchange(mine).rjust(group.initiator_size, b"\0")
    assert ours.shared_secret(their_public) == expected


@pytest.mark.parametrize("bad", ["0", "1", "p-1", "p", "p+1", "max"])
def test_modp_public_values_outside_1_p_minus_1_are_refused(bad):
    p = MODP_2048.prime
    y = {"0": 0, "1": 1, "p-1": p - 1, "p": p, "p+1": p + 1, "max": 2**2048 - 1}[bad]
    with pytest.raises(InvalidKeyExchange, match="between 1 and p-1"):
        MODP_2048.generate().shared_secret(y.to_bytes(256, "big"))


def test_modp_exponent_is_384_random_bits():
    exponents = {MODP_2048.generate()._exponent for _ in range(8)}
    assert len(exponents) == 8 and all(e.bit_length() == 384 for e in exponents)
    with pytest.raises(ValueError):
        ModpPrivate(MODP_2048, 1)


# X25519 points of small order (RFC 7748 5; the list from the curve's 8-torsion): each
# makes the shared secret all zeros, which RFC 8031 2 requires to be refused.
LOW_ORDER = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
]


@pytest.mark.parametrize("point", LOW_ORDER)
def test_x25519_low_order_public_values_are_refused(point):
    with pytest.raises(InvalidKeyExchange, match="all zeros"):
        CURVE25519.generate().shared_secret(bytes.fromhex(point))
    with pytest.raises(InvalidKeyExchange):
        CURVE25519.respond(bytes.fromhex(point))


@pytest.mark.parametrize("group", [CURVE25519, ECP_256, ECP_384, ECP_521, MODP_2048,
                                   MODP_3072], ids=lambda g: g.name)
@pytest.mark.parametrize("delta", [-1, 1])
def test_ke_data_of_the_wrong_length_is_refused(group, delta):
    peer = group.generate().public_bytes
    data = peer[:-1] if delta < 0 else peer + b"\0"
    with pytest.raises(InvalidKeyExchange, match=f"must be {group.initiator_size}"):
        group.generate().shared_secret(data)


@pytest.mark.parametrize("group", [ECP_256, ECP_384, ECP_521], ids=lambda g: g.name)
def test_ecp_points_off_the_curve_are_refused(group):
    rng = random.Random(group.ident)
    for data in (bytes(group.initiator_size), b"\xff" * group.initiator_size,
                 rng.randbytes(group.initiator_size)):
        with pytest.raises(InvalidKeyExchange):
            group.generate().shared_secret(data)


def test_mlkem_rejects_wrong_lengths_and_a_forged_ciphertext_gives_another_secret():
    initiator = ML_KEM_768.generate()
    with pytest.raises(InvalidKeyExchange):
        ML_KEM_768.respond(initiator.public_bytes[:-1])
    ciphertext, secret = ML_KEM_768.respond(initiator.public_bytes)
    with pytest.raises(InvalidKeyExchange):
        initiator.shared_secret(ciphertext + b"\0")
    forged = bytearray(ciphertext)
    forged[0] ^= 1
    assert initiator.shared_secret(bytes(forged)) != secret  # implicit rejection


def test_mlkem_1024_rejects_an_encapsulation_key_that_fails_the_modulus_check():
    with pytest.raises(InvalidKeyExchange, match="invalid"):
        ML_KEM_1024.respond(b"\xff" * ML_KEM_1024.initiator_size)
