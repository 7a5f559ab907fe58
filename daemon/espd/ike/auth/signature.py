"""RFC 7427 digital signature authentication (AUTH method 14), the shape certificates take.

    Authentication Data = ASN.1 length (1 octet) | AlgorithmIdentifier (DER) | Signature

over the same signed octets as PSK (``espd.ike.auth.base``). The signer holds a private
key; the verifier holds the peer's public key, taken from a certificate chain that the
certificate code (the next issue) has already verified and matched to the peer's ID.
This module only signs and checks signatures: no chain, no identity, no revocation.

Algorithms (RFC 7427 appendix A, RFC 8420): ECDSA with SHA-256/384/512, RSASSA-PSS with
SHA-256/384/512 (MGF1 with the same hash, salt = hash length), RSA PKCS#1 v1.5 with SHA-2,
Ed25519. SHA-1 signatures are refused (RFC 8247 4). The AlgorithmIdentifier is matched as
exact DER bytes, so an encoding espd does not know is refused rather than guessed at.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from espd.ike.auth.base import AuthenticationFailed, SignedOctets

AUTH_DIGITAL_SIGNATURE = 14  # RFC 7427 3

_HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


def _der(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text.replace(" ", ""))


@dataclass(frozen=True)
class SignatureAlgorithm:
    name: str
    der: bytes  # the AlgorithmIdentifier, exactly as RFC 7427 appendix A encodes it
    kind: str  # "ecdsa" | "pss" | "pkcs1" | "ed25519"
    hash: str | None


# RFC 7427 appendix A (and RFC 8420 for Ed25519): the DER of each AlgorithmIdentifier
_PSS_PARAMS = {  # RSASSA-PSS-params: hash, MGF1 with the same hash, salt length
    "sha256": "30 34 a0 0f 30 0d 06 09 60 86 48 01 65 03 04 02 01 05 00 a1 1c 30 1a 06 09 2a"
              " 86 48 86 f7 0d 01 01 08 30 0d 06 09 60 86 48 01 65 03 04 02 01 05 00 a2 03 02"
              " 01 20",
    "sha384": "30 34 a0 0f 30 0d 06 09 60 86 48 01 65 03 04 02 02 05 00 a1 1c 30 1a 06 09 2a"
              " 86 48 86 f7 0d 01 01 08 30 0d 06 09 60 86 48 01 65 03 04 02 02 05 00 a2 03 02"
              " 01 30",
    "sha512": "30 34 a0 0f 30 0d 06 09 60 86 48 01 65 03 04 02 03 05 00 a1 1c 30 1a 06 09 2a"
              " 86 48 86 f7 0d 01 01 08 30 0d 06 09 60 86 48 01 65 03 04 02 03 05 00 a2 03 02"
              " 01 40",
}
ALGORITHMS = [
    SignatureAlgorithm("ecdsa-sha256", _der("30 0a 06 08 2a 86 48 ce 3d 04 03 02"), "ecdsa",
                       "sha256"),
    SignatureAlgorithm("ecdsa-sha384", _der("30 0a 06 08 2a 86 48 ce 3d 04 03 03"), "ecdsa",
                       "sha384"),
    SignatureAlgorithm("ecdsa-sha512", _der("30 0a 06 08 2a 86 48 ce 3d 04 03 04"), "ecdsa",
                       "sha512"),
    SignatureAlgorithm("rsa-sha256", _der("30 0d 06 09 2a 86 48 86 f7 0d 01 01 0b 05 00"),
                       "pkcs1", "sha256"),
    SignatureAlgorithm("rsa-sha384", _der("30 0d 06 09 2a 86 48 86 f7 0d 01 01 0c 05 00"),
                       "pkcs1", "sha384"),
    SignatureAlgorithm("rsa-sha512", _der("30 0d 06 09 2a 86 48 86 f7 0d 01 01 0d 05 00"),
                       "pkcs1", "sha512"),
    *(SignatureAlgorithm(f"rsa-pss-{h}", _der("30 41 06 09 2a 86 48 86 f7 0d 01 01 0a "
                                             + params), "pss", h)
      for h, params in _PSS_PARAMS.items()),
    SignatureAlgorithm("ed25519", _der("30 05 06 03 2b 65 70"), "ed25519", None),
]
_BY_DER = {a.der: a for a in ALGORITHMS}
_SHA1 = {  # recognised only to be refused by name
    _der("30 09 06 07 2a 86 48 ce 3d 04 01"): "ecdsa-with-SHA1",
    _der("30 0d 06 09 2a 86 48 86 f7 0d 01 01 05 05 00"): "sha1WithRSAEncryption",
}

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


def _pss(hash_name: str) -> padding.PSS:
    algorithm = _HASHES[hash_name]()
    return padding.PSS(padding.MGF1(algorithm), algorithm.digest_size)


def _sign(key: PrivateKey, algorithm: SignatureAlgorithm, data: bytes) -> bytes:
    if algorithm.kind == "ed25519":
        return key.sign(data)  # type: ignore[call-arg]
    digest = _HASHES[algorithm.hash]()  # type: ignore[index]
    if algorithm.kind == "ecdsa":
        return key.sign(data, ec.ECDSA(digest))  # type: ignore[call-arg]
    pad = _pss(algorithm.hash) if algorithm.kind == "pss" else padding.PKCS1v15()  # type: ignore[arg-type]
    return key.sign(data, pad, digest)  # type: ignore[call-arg]


def _verify(key: PublicKey, algorithm: SignatureAlgorithm, signature: bytes, data: bytes) -> None:
    if algorithm.kind == "ed25519":
        key.verify(signature, data)  # type: ignore[call-arg]
        return
    digest = _HASHES[algorithm.hash]()  # type: ignore[index]
    if algorithm.kind == "ecdsa":
        key.verify(signature, data, ec.ECDSA(digest))  # type: ignore[call-arg]
        return
    pad = _pss(algorithm.hash) if algorithm.kind == "pss" else padding.PKCS1v15()  # type: ignore[arg-type]
    key.verify(signature, data, pad, digest)  # type: ignore[call-arg]


def _fits(algorithm: SignatureAlgorithm, key: PrivateKey | PublicKey) -> bool:
    wanted = {"ecdsa": (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey),
              "pss": (rsa.RSAPrivateKey, rsa.RSAPublicKey),
              "pkcs1": (rsa.RSAPrivateKey, rsa.RSAPublicKey),
              "ed25519": (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)}
    return isinstance(key, wanted[algorithm.kind])


class SignatureAuthenticator:
    """RFC 7427 AUTH: sign with `private_key` as `algorithm`; verify the peer's AUTH with
    `peer_key` (its certificate's public key) in whichever known algorithm it names."""

    method = AUTH_DIGITAL_SIGNATURE

    def __init__(self, private_key: PrivateKey | None = None, peer_key: PublicKey | None = None,
                 algorithm: str = "ecdsa-sha256") -> None:
        [self._algorithm] = [a for a in ALGORITHMS if a.name == algorithm] or [None]
        if self._algorithm is None:
            raise ValueError(f"{algorithm}: unknown signature algorithm; use one of "
                             f"{', '.join(a.name for a in ALGORITHMS)}")
        if private_key is not None and not _fits(self._algorithm, private_key):
            raise ValueError(f"{algorithm} does not fit a {type(private_key).__name__}")
        self._private = private_key
        self._peer = peer_key

    def build(self, octets: SignedOctets) -> tuple[int, bytes]:
        if self._private is None:
            raise ValueError("no private key to sign with")
        signature = _sign(self._private, self._algorithm, octets.octets)
        der = self._algorithm.der
        return AUTH_DIGITAL_SIGNATURE, bytes((len(der),)) + der + signature

    def verify(self, octets: SignedOctets, method: int, data: bytes) -> None:
        if method != AUTH_DIGITAL_SIGNATURE:
            raise AuthenticationFailed(f"peer authenticated with AUTH method {method}, "
                                       f"expected {AUTH_DIGITAL_SIGNATURE} (RFC 7427)")
        if self._peer is None:
            raise AuthenticationFailed("no public key of the peer to verify its AUTH with")
        if not data or len(data) < 1 + data[0]:
            raise AuthenticationFailed("AUTH data too short for its AlgorithmIdentifier")
        der, signature = bytes(data[1:1 + data[0]]), bytes(data[1 + data[0]:])
        if der in _SHA1:
            raise AuthenticationFailed(f"peer signed with {_SHA1[der]}: SHA-1 signatures are "
                                       f"refused (RFC 8247 4)")
        algorithm = _BY_DER.get(der)
        if algorithm is None:
            raise AuthenticationFailed(f"peer's signature algorithm {der.hex()} is unknown")
        if not _fits(algorithm, self._peer):
            raise AuthenticationFailed(f"peer signed with {algorithm.name}, which its "
                                       f"certificate's {type(self._peer).__name__} cannot do")
        try:
            _verify(self._peer, algorithm, signature, octets.octets)
        except InvalidSignature:
            raise AuthenticationFailed(f"peer's {algorithm.name} signature does not verify "
                                       f"against its certificate's key") from None

    def __repr__(self) -> str:
        return f"<SignatureAuthenticator {self._algorithm.name}>"
