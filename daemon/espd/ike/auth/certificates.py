"""Certificate authentication (RFC 7296 2.15 and 3.6/3.7, signatures as RFC 7427).

    ours:    CERT(our certificate), CERT(each intermediate), AUTH(signature, our key)
    theirs:  CERT payloads -> chain to one of our trust anchors at the current time
             (cryptography's RFC 5280 path validation), no certificate of it revoked by a
             CRL of its issuer that we hold, the identity in IDi/IDr named by the end
             certificate, then the AUTH signature checked with its public key

A CERTREQ names our trust anchors by the SHA-1 of their SubjectPublicKeyInfo: strongSwan
sends its certificate only when asked (``send_cert = ifasked``). Every refusal is an
AuthenticationFailed that says what did not hold (expired, unknown CA, revoked, identity
not in the certificate), never key material. The private key never leaves this object.

Identities matched against the end certificate: ``fqdn`` a SAN dNSName, ``ipv4``/``ipv6``
a SAN iPAddress, ``rfc822`` a SAN rfc822Name (case-insensitive for names, as RFC 5280
compares them); with no SAN of that kind, the subject's CN (what IOS certificates carry).
``dn`` the subject DN, or a SAN directoryName (auth/names.py: either spelling).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

from espd.ike.auth.base import AuthenticationFailed, SignedOctets
from espd.ike.auth.names import dn_matches
from espd.ike.auth.signature import AUTH_DIGITAL_SIGNATURE, PrivateKey, SignatureAuthenticator
from espd.ike.codec.cert import Certificate, CertificateRequest
from espd.ike.codec.constants import CertEncoding

MAX_PEER_CERTIFICATES = 8  # CERT payloads we look at: the end certificate and intermediates
# cryptography's path validation applies the WebPKI's key algorithms to every CA in a
# chain: RSA and ECDSA only. A CA with an EdDSA key fails it whatever else holds, so we
# say so instead of its internal error (an Ed25519 end certificate is fine)
_EDDSA = (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)


def eddsa_ca_problem(cert: x509.Certificate) -> str | None:
    """Why ``cert`` cannot be a CA (trust anchor or intermediate) here, or None."""
    key = cert.public_key()
    if not isinstance(key, _EDDSA):
        return None
    kind = "Ed25519" if isinstance(key, ed25519.Ed25519PublicKey) else "Ed448"
    return (f"CA certificate {_subject(cert)} has an {kind} key: espd's path validation "
            f"(cryptography's, with the WebPKI's algorithms) accepts only RSA and ECDSA CA "
            f"keys; an {kind} gateway certificate under an RSA or ECDSA CA works")


class CertificateError(ValueError):
    """A certificate, key or CRL that cannot be used as configured (config time)."""


@dataclass(frozen=True, repr=False)
class TrustStore:
    """The CAs we trust, and the CRLs we hold for them (or for intermediates below them)."""

    anchors: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...] = ()

    def authority_hashes(self) -> tuple[bytes, ...]:
        """What a CERTREQ names: SHA-1 of each anchor's SubjectPublicKeyInfo (RFC 7296 3.7)."""
        return tuple(hashlib.sha1(a.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
            .digest() for a in self.anchors)

    def verify(self, leaf: x509.Certificate, intermediates: Sequence[x509.Certificate],
               now: datetime.datetime) -> list[x509.Certificate]:
        """The validated chain (end certificate first), or AuthenticationFailed."""
        if leaf.not_valid_after_utc < now:
            raise AuthenticationFailed(f"peer's certificate ({_subject(leaf)}) expired on "
                                       f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
        if leaf.not_valid_before_utc > now:
            raise AuthenticationFailed(f"peer's certificate ({_subject(leaf)}) is not valid "
                                       f"before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
        policy = verification.ExtensionPolicy
        verifier = (verification.PolicyBuilder().store(verification.Store(list(self.anchors)))
                    .time(now).max_chain_depth(MAX_PEER_CERTIFICATES)
                    .extension_policies(ca_policy=policy.webpki_defaults_ca(),
                                        ee_policy=policy.permit_all())
                    .build_client_verifier())
        try:
            chain = verifier.verify(leaf, list(intermediates)).chain
        except verification.VerificationError as err:
            eddsa = [p for c in intermediates if (p := eddsa_ca_problem(c)) is not None]
            raise AuthenticationFailed(
                f"peer's certificate ({_subject(leaf)}, issued by {_issuer(leaf)}) does not "
                f"chain to a trusted CA ({eddsa[0] if eddsa else err})") from None
        for cert, issuer in zip(chain, chain[1:], strict=False):
            self._not_revoked(cert, issuer, now)
        return list(chain)

    def _not_revoked(self, cert: x509.Certificate, issuer: x509.Certificate,
                     now: datetime.datetime) -> None:
        for crl in self.crls:
            if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer.public_key()):
                continue
            revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if revoked is not None:
                raise AuthenticationFailed(
                    f"certificate {_subject(cert)} (serial {cert.serial_number:x}) is revoked "
                    f"by {_subject(issuer)}'s CRL since {revoked.revocation_date_utc:%Y-%m-%d}")


@dataclass(frozen=True, repr=False)
class OwnCertificate:
    """Our end certificate, the intermediates we send with it, and its private key."""

    chain: tuple[x509.Certificate, ...]
    key: PrivateKey = field(repr=False)
    rsa_pss: bool = False  # an RSA key signs RSASSA-PSS, not PKCS#1 v1.5

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]

    def __repr__(self) -> str:
        return f"OwnCertificate({_subject(self.certificate)}, {len(self.chain) - 1} intermediates)"


def signature_algorithm(key: PrivateKey, rsa_pss: bool = False) -> str:
    """The RFC 7427 algorithm we sign with for ``key``: for RSA PKCS#1 v1.5 (RFC 8247's
    MUST, what every peer verifies) or, with ``rsa_pss``, RSASSA-PSS (its SHOULD), both
    with SHA-256; the hash matches the curve for ECDSA, as RFC 5480 advises."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, rsa.RSAPrivateKey):
        return "rsa-pss-sha256" if rsa_pss else "rsa-sha256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {256: "ecdsa-sha256", 384: "ecdsa-sha384"}.get(key.curve.key_size,
                                                                "ecdsa-sha512")
    raise CertificateError(f"a {type(key).__name__} cannot sign IKE AUTH payloads")


def identity_matches(cert: x509.Certificate, kind: str, value: str) -> bool:
    """Whether the end certificate names identity ``kind:value`` (module docstring)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if kind in ("ipv4", "ipv6"):
        wanted = ipaddress.ip_address(value)
        names = san.get_values_for_type(x509.IPAddress) if san else []
        return wanted in names if names else _cn(cert) == str(wanted)
    if kind == "dn":
        directories = san.get_values_for_type(x509.DirectoryName) if san else []
        return any(dn_matches(value, name) for name in (cert.subject, *directories))
    general = {"fqdn": x509.DNSName, "rfc822": x509.RFC822Name}.get(kind)
    if general is None:
        return False  # key-id: a certificate cannot vouch for one
    names = san.get_values_for_type(general) if san else []
    if names:
        return value.lower() in (n.lower() for n in names)
    return (_cn(cert) or "").lower() == value.lower()


class CertificateAuthenticator:
    """AUTH method 14 with our certificate's key; the peer's AUTH checked with the key of
    a certificate it sent that chains to ``trust`` and names its identity."""

    method = AUTH_DIGITAL_SIGNATURE

    def __init__(self, own: OwnCertificate, trust: TrustStore,
                 clock: Callable[[], datetime.datetime] | None = None) -> None:
        self._own = own
        self._trust = trust
        self._signer = SignatureAuthenticator(
            private_key=own.key, algorithm=signature_algorithm(own.key, own.rsa_pss))
        self._clock = clock or (lambda: datetime.datetime.now(datetime.UTC))

    def cert_payloads(self) -> list[Certificate]:
        return [Certificate(CertEncoding.X509_SIGNATURE,
                            c.public_bytes(serialization.Encoding.DER)) for c in self._own.chain]

    def cert_request(self) -> CertificateRequest:
        return CertificateRequest.for_authorities(self._trust.authority_hashes())

    def build(self, octets: SignedOctets) -> tuple[int, bytes]:
        return self._signer.build(octets)

    def verify(self, octets: SignedOctets, method: int, data: bytes, *,
               certificates: Sequence[Certificate] = (), peer_id=None) -> x509.Certificate:
        """The peer's end certificate, verified; else AuthenticationFailed."""
        x509s = [c for c in certificates if c.encoding == CertEncoding.X509_SIGNATURE]
        if not x509s:
            raise AuthenticationFailed("peer sent no X.509 certificate (CERT payload); it "
                                       "must send its certificate (strongSwan: send_cert)")
        try:
            parsed = [x509.load_der_x509_certificate(c.data)
                      for c in x509s[:MAX_PEER_CERTIFICATES]]
        except ValueError:
            raise AuthenticationFailed("peer's CERT payload is not a DER X.509 "
                                       "certificate") from None
        leaf = parsed[0]
        self._trust.verify(leaf, parsed[1:], self._clock())
        if peer_id is None or not identity_matches(leaf, peer_id.kind, peer_id.value):
            raise AuthenticationFailed(f"peer identifies as {peer_id}, but its certificate "
                                       f"({_subject(leaf)}{_san_text(leaf)}) does not name it")
        SignatureAuthenticator(peer_key=leaf.public_key()).verify(octets, method, data)
        return leaf

    def wipe(self) -> None:
        """Nothing to zero here: the key object belongs to the configuration generation."""

    def __repr__(self) -> str:
        return f"<CertificateAuthenticator {_subject(self._own.certificate)}>"


# --- loading (config time) -------------------------------------------------------------


def load_certificates(pem: bytes, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        certs = []
    if not certs:
        raise CertificateError(f"{what} holds no PEM certificate ('-----BEGIN CERTIFICATE-----')")
    return certs


def load_trust_anchors(pem: bytes, what: str) -> list[x509.Certificate]:
    """CA certificates to trust: refused here when no chain could ever reach them."""
    certs = load_certificates(pem, what)
    for cert in certs:
        if problem := eddsa_ca_problem(cert):
            raise CertificateError(f"{what}: {problem}")
    return certs


def load_crl(pem: bytes, what: str) -> x509.CertificateRevocationList:
    try:
        return x509.load_pem_x509_crl(pem)
    except ValueError:
        try:
            return x509.load_der_x509_crl(pem)
        except ValueError:
            raise CertificateError(f"{what} is not a CRL (PEM or DER)") from None


def own_certificate(chain: list[x509.Certificate], key: PrivateKey, what: str,
                    rsa_pss: bool = False) -> OwnCertificate:
    """Our certificate (first in the file) and key must belong together; ``rsa_pss``
    only for an RSA key (anything else would silently ignore it)."""
    public = chain[0].public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo) != public:
        raise CertificateError(f"{what}: the private key does not belong to the certificate "
                               f"({_subject(chain[0])})")
    signature_algorithm(key)
    if rsa_pss and not isinstance(key, rsa.RSAPrivateKey):
        raise CertificateError(f"{what}: rsa_pss applies to RSA keys, and this one is not "
                               f"(ECDSA and Ed25519 keys sign as they always do): remove "
                               f"rsa_pss")
    return OwnCertificate(tuple(chain), key, rsa_pss)


def describe(cert: x509.Certificate) -> str:
    """Subject, SAN and validity, for show output and messages."""
    return (f"{_subject(cert)}{_san_text(cert)}, valid {cert.not_valid_before_utc:%Y-%m-%d} "
            f"to {cert.not_valid_after_utc:%Y-%m-%d}")


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _issuer(cert: x509.Certificate) -> str:
    return cert.issuer.rfc4514_string() or "(empty issuer)"


def _cn(cert: x509.Certificate) -> str | None:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else None


def _san_text(cert: x509.Certificate) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    names = [str(getattr(n, "value", n)) for n in san]
    return f", SAN {', '.join(names)}" if names else ""
