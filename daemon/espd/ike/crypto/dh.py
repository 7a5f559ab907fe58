"""Key exchange methods (transform type 4, and 6-12 as additional key exchanges).

One shape for every method, so the engine never asks which kind it holds:

    initiator:  private = group.generate()       -> send private.public_bytes (KEi)
                secret = private.shared_secret(KEr data)
    responder:  public, secret = group.respond(KEi data)   -> send public (KEr)

For Diffie-Hellman, ``respond`` is generate-then-combine; for a KEM (ML-KEM, RFC 9370 with
FIPS 203) the initiator's KE data is an encapsulation key and the responder's is the
ciphertext, so ``initiator_size`` and ``responder_size`` differ.

Public values are checked before use, and a bad one raises ``InvalidKeyExchange`` (the
engine answers INVALID_SYNTAX, RFC 7296 3.10.1; a wrong group is INVALID_KE_PAYLOAD, the
engine's check): the exact length of the KE data; ECP (RFC 5903): x || y, the point on the
curve; X25519 (RFC 8031): 32 bytes, an all-zero shared secret refused; MODP (RFC 7296 and
SP 800-56A): 1 < y < p-1, and the shared secret likewise.

MODP groups 14 and 15 use Python's ``pow``: ``cryptography`` deprecates finite-field DH (50
warns it will be removed), and these groups are a MUST of RFC 8247. The private exponent is
384 random bits (the length strongSwan uses; RFC 3526 asks for at least 2x the group's
strength, 2 x 128 for group 15). ``pow`` is not constant-time: its run time depends on the
exponent's bits. The exponent is ephemeral (one public value, one shared secret, then
dropped), so a timing observer sees two operations per secret, not the many that a timing
attack on a fixed exponent needs; X25519, the default, is constant-time in OpenSSL. The
upgrade path, if a constant-time MODP is wanted, is a BN_mod_exp_mont_consttime helper in
native/ behind the same ``ModpGroup``. A private exponent lives as a Python int, which
cannot be wiped; ECP and X25519 private keys live in OpenSSL and are freed with the object.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from espd.ike.crypto.secret import Secret

try:  # cryptography >= 47 has the API (ML-KEM-768 and -1024 both); 47 runs it only on
    # AWS-LC/BoringSSL builds, so its PyPI wheels (OpenSSL) refuse; 48.0 is the first
    # whose wheels run both (checked with 46.0.7, 47.0.0, 48.0.0, 49.0.0, 50.0.2)
    from cryptography.hazmat.primitives.asymmetric import mlkem
except ImportError:  # pragma: no cover - older cryptography
    mlkem = None

MLKEM_MIN_CRYPTOGRAPHY = "48.0"


class InvalidKeyExchange(ValueError):
    """KE data that fails the RFC's checks on public values (no secret is ever derived)."""


class KePrivate(Protocol):
    """The initiator's half of one key exchange (and a DH responder's)."""

    public_bytes: bytes

    def shared_secret(self, peer: bytes) -> Secret: ...


class KeyExchange(Protocol):
    """A key exchange method: transform type 4 (or 6-12 for additional key exchanges)."""

    ident: int  # IANA transform id
    name: str  # strongSwan-style name: "x25519", "ecp256", "modp2048", "mlkem768"
    initiator_size: int  # bytes of KEi data
    responder_size: int  # bytes of KEr data
    kem: bool
    available: bool  # False: this cryptography cannot run it (ML-KEM before 48)

    def generate(self) -> KePrivate: ...

    def respond(self, peer: bytes) -> tuple[bytes, Secret]: ...


def _check_length(name: str, data: bytes, size: int) -> None:
    if len(data) != size:
        raise InvalidKeyExchange(f"{name}: KE data is {len(data)} bytes, must be {size}")


class _DhGroup:
    """Diffie-Hellman: the responder generates a key of its own and combines."""

    kem = False
    available = True  # OpenSSL has every DH group espd offers
    initiator_size: int

    def generate(self) -> KePrivate:
        raise NotImplementedError

    @property
    def responder_size(self) -> int:
        return self.initiator_size

    def respond(self, peer: bytes) -> tuple[bytes, Secret]:
        private = self.generate()
        return private.public_bytes, private.shared_secret(peer)

    def __str__(self) -> str:
        return self.name  # type: ignore[attr-defined]


# --- Curve25519 (RFC 8031) -----------------------------------------------------------------

class X25519Private:
    def __init__(self, key: x25519.X25519PrivateKey) -> None:
        self._key = key
        self.public_bytes = key.public_key().public_bytes_raw()

    def shared_secret(self, peer: bytes) -> Secret:
        _check_length("x25519", peer, 32)
        try:
            shared = self._key.exchange(x25519.X25519PublicKey.from_public_bytes(peer))
        except ValueError:  # OpenSSL refuses an all-zero result (a low-order point)
            raise InvalidKeyExchange("x25519: the shared secret is all zeros "
                                     "(a low-order public value, RFC 8031 2)") from None
        if not any(shared):
            raise InvalidKeyExchange("x25519: the shared secret is all zeros (RFC 8031 2)")
        return Secret(shared)

    def __repr__(self) -> str:
        return "<x25519 private key>"


@dataclass(frozen=True)
class X25519Group(_DhGroup):
    ident: int = 31
    name: str = "x25519"
    initiator_size: int = 32

    def generate(self) -> X25519Private:
        return X25519Private(x25519.X25519PrivateKey.generate())


# --- NIST ECP groups (RFC 5903) ------------------------------------------------------------

class EcpPrivate:
    def __init__(self, group: EcpGroup, key: ec.EllipticCurvePrivateKey) -> None:
        self._group = group
        self._key = key
        point = key.public_key().public_bytes(serialization.Encoding.X962,
                                              serialization.PublicFormat.UncompressedPoint)
        self.public_bytes = point[1:]  # RFC 5903 7: x || y, no point-format octet

    def shared_secret(self, peer: bytes) -> Secret:
        group = self._group
        _check_length(group.name, peer, 2 * group.coordinate_size)
        try:  # OpenSSL checks that the point lies on the curve
            public = ec.EllipticCurvePublicKey.from_encoded_point(group.curve(), b"\x04" + peer)
        except ValueError:
            raise InvalidKeyExchange(f"{group.name}: the public value is not a point on "
                                     f"the curve (RFC 5903)") from None
        # RFC 5903 7: the shared secret is the x coordinate, padded to the field size
        return Secret(self._key.exchange(ec.ECDH(), public))

    def __repr__(self) -> str:
        return f"<{self._group.name} private key>"


@dataclass(frozen=True)
class EcpGroup(_DhGroup):
    ident: int
    name: str
    curve: type[ec.EllipticCurve]
    coordinate_size: int

    @property
    def initiator_size(self) -> int:  # type: ignore[override]
        return 2 * self.coordinate_size

    def generate(self) -> EcpPrivate:
        return EcpPrivate(self, ec.generate_private_key(self.curve()))


# --- MODP groups (RFC 3526) ----------------------------------------------------------------

MODP_EXPONENT_BITS = 384


class ModpPrivate:
    def __init__(self, group: ModpGroup, exponent: int) -> None:
        if not 1 < exponent < group.prime - 1:
            raise ValueError("exponent out of range")
        self._group = group
        self._exponent = exponent
        self.public_bytes = pow(group.generator, exponent, group.prime).to_bytes(
            group.initiator_size, "big")

    def shared_secret(self, peer: bytes) -> Secret:
        group = self._group
        _check_length(group.name, peer, group.initiator_size)
        y = int.from_bytes(peer, "big")
        if not 1 < y < group.prime - 1:
            raise InvalidKeyExchange(f"{group.name}: the public value must lie strictly "
                                     f"between 1 and p-1 (RFC 7296 / SP 800-56A)")
        shared = pow(y, self._exponent, group.prime)
        if not 1 < shared < group.prime - 1:
            raise InvalidKeyExchange(f"{group.name}: the shared secret is degenerate")
        # g^ir "padded with zeros ... to the length of the modulus" (RFC 7296 2.14)
        return Secret(shared.to_bytes(group.initiator_size, "big"))

    def __repr__(self) -> str:
        return f"<{self._group.name} private key>"


@dataclass(frozen=True)
class ModpGroup(_DhGroup):
    ident: int
    name: str
    prime: int
    generator: int = 2

    @property
    def initiator_size(self) -> int:  # type: ignore[override]
        return (self.prime.bit_length() + 7) // 8

    def generate(self) -> ModpPrivate:
        top = 1 << (MODP_EXPONENT_BITS - 1)  # a full-length exponent
        return ModpPrivate(self, secrets.randbits(MODP_EXPONENT_BITS) | top)


MODP_2048_PRIME = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF", 16)
MODP_3072_PRIME = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33"
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF", 16)


# --- ML-KEM (FIPS 203) as an additional key exchange (RFC 9370) ----------------------------

class MlKemPrivate:
    def __init__(self, group: MlKemGroup, key) -> None:
        self._group = group
        self._key = key
        self.public_bytes = key.public_key().public_bytes_raw()  # the encapsulation key

    def shared_secret(self, peer: bytes) -> Secret:
        """Decapsulate the responder's ciphertext. ML-KEM rejects implicitly: a forged
        ciphertext yields a pseudorandom secret, which the AUTH or ICV then fails on."""
        _check_length(self._group.name, peer, self._group.responder_size)
        return Secret(self._key.decapsulate(peer))

    def __repr__(self) -> str:
        return f"<{self._group.name} private key>"


@dataclass(frozen=True)
class MlKemGroup:
    """ML-KEM: KEi is the encapsulation key, KEr the ciphertext (FIPS 203)."""

    ident: int
    name: str
    initiator_size: int  # encapsulation key
    responder_size: int  # ciphertext
    parameter_set: str  # class name prefix in cryptography: "MLKEM768"
    kem = True

    def _classes(self):
        if mlkem is None:
            raise InvalidKeyExchange(f"{self.name} needs cryptography >= "
                                     f"{MLKEM_MIN_CRYPTOGRAPHY}")
        return (getattr(mlkem, f"{self.parameter_set}PrivateKey"),
                getattr(mlkem, f"{self.parameter_set}PublicKey"))

    @cached_property
    def available(self) -> bool:  # type: ignore[override]
        """Whether this cryptography and its backend can run the KEM (asked once)."""
        try:
            self._classes()[0].generate()
        except Exception:  # UnsupportedAlgorithm on a backend without ML-KEM
            return False
        return True

    def generate(self) -> MlKemPrivate:
        return MlKemPrivate(self, self._classes()[0].generate())

    def respond(self, peer: bytes) -> tuple[bytes, Secret]:
        """Encapsulate to the initiator's key: (ciphertext for KEr, shared secret)."""
        _check_length(self.name, peer, self.initiator_size)
        try:  # FIPS 203 7.2: the encapsulation key's modulus check
            public = self._classes()[1].from_public_bytes(peer)
        except ValueError:
            raise InvalidKeyExchange(f"{self.name}: the encapsulation key is invalid "
                                     f"(FIPS 203 7.2)") from None
        shared, ciphertext = public.encapsulate()
        return ciphertext, Secret(shared)

    def __str__(self) -> str:
        return self.name


CURVE25519 = X25519Group()
ECP_256 = EcpGroup(19, "ecp256", ec.SECP256R1, 32)
ECP_384 = EcpGroup(20, "ecp384", ec.SECP384R1, 48)
ECP_521 = EcpGroup(21, "ecp521", ec.SECP521R1, 66)
MODP_2048 = ModpGroup(14, "modp2048", MODP_2048_PRIME)
MODP_3072 = ModpGroup(15, "modp3072", MODP_3072_PRIME)
ML_KEM_768 = MlKemGroup(36, "mlkem768", 1184, 1088, "MLKEM768")
ML_KEM_1024 = MlKemGroup(37, "mlkem1024", 1568, 1568, "MLKEM1024")

GROUPS: dict[int, KeyExchange] = {g.ident: g for g in (
    CURVE25519, ECP_256, ECP_384, ECP_521, MODP_2048, MODP_3072, ML_KEM_768, ML_KEM_1024)}
