"""A throw-away PKI for certificate tests: CAs, gateway certificates and CRLs, as PEM files.

Made with ``cryptography`` at test time (nothing long-lived is committed), in a directory
the caller owns. Keys: ``ecdsa-p256``, ``ecdsa-p384``, ``rsa`` (2048 bits; RSA-PSS or
PKCS#1 v1.5 is the signer's choice, not the key's) and ``ed25519``. Gateway certificates
carry the identity in the SAN (DNS name, IP address or e-mail) unless ``san=False`` (IOS
certificates often have none: the subject DN then is the identity).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

KEY_TYPES = ("ecdsa-p256", "ecdsa-p384", "rsa", "ed25519")


def new_key(kind: str):
    if kind == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {kind!r}; one of {', '.join(KEY_TYPES)}")


def _hash_for(key):
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


@dataclass
class Issued:
    """A certificate with its key, and where both were written."""

    name: str
    cert: x509.Certificate
    key: object
    cert_path: str
    key_path: str

    @property
    def subject(self) -> str:
        """The subject DN as strongSwan writes an ID_DER_ASN1_DN identity."""
        return ", ".join(f"{a.rfc4514_attribute_name.upper()}={a.value}"
                         for rdn in self.cert.subject.rdns for a in rdn)


class Pki:
    def __init__(self, directory: str) -> None:
        self.dir = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.now = datetime.datetime.now(datetime.UTC)

    def _write(self, name: str, cert: x509.Certificate, key) -> Issued:
        cert_path = os.path.join(self.dir, f"{name}.pem")
        key_path = os.path.join(self.dir, f"{name}.key")
        with open(cert_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        return Issued(name, cert, key, cert_path, key_path)

    def _builder(self, subject: x509.Name, issuer: x509.Name, public_key, days: int,
                 not_before: datetime.datetime | None) -> x509.CertificateBuilder:
        start = not_before or self.now - datetime.timedelta(minutes=5)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(start)
                .not_valid_after(start + datetime.timedelta(days=days)))

    def ca(self, name: str = "ca", kind: str = "ecdsa-p256", issuer: Issued | None = None,
           days: int = 30) -> Issued:
        """A CA certificate: self-signed, or an intermediate under ``issuer``."""
        key = new_key(kind)
        subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "espd test"),
                             x509.NameAttribute(NameOID.COMMON_NAME, f"espd test {name}")])
        signer = issuer.key if issuer else key
        builder = (self._builder(subject, issuer.cert.subject if issuer else subject,
                                 key.public_key(), days, None)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                   .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                                False, False), True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                                  False))
        if issuer:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                False)
        return self._write(name, builder.sign(signer, _hash_for(signer)), key)

    def gateway(self, name: str, issuer: Issued, kind: str = "ecdsa-p256", *,
                identity: str | None = None, san: bool = True, days: int = 30,
                not_before: datetime.datetime | None = None) -> Issued:
        """A gateway certificate for ``identity`` (default ``name``): a DNS name, an IP
        address or user@domain, in the SAN; CN=identity in the subject either way."""
        key = new_key(kind)
        identity = identity or name
        subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "espd test"),
                             x509.NameAttribute(NameOID.COMMON_NAME, identity)])
        builder = (self._builder(subject, issuer.cert.subject, key.public_key(), days,
                                 not_before)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
                   .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                                False, False), True)
                   .add_extension(
                       x509.AuthorityKeyIdentifier.from_issuer_public_key(
                           issuer.key.public_key()), False))
        if san:
            try:
                general: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(identity))
            except ValueError:
                general = (x509.RFC822Name(identity) if "@" in identity
                           else x509.DNSName(identity))
            builder = builder.add_extension(x509.SubjectAlternativeName([general]), False)
        return self._write(name, builder.sign(issuer.key, _hash_for(issuer.key)), key)

    def crl(self, issuer: Issued, revoked: list[Issued], name: str | None = None) -> str:
        """A CRL of ``issuer`` revoking ``revoked``; its path (PEM)."""
        builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
                   .last_update(self.now - datetime.timedelta(minutes=5))
                   .next_update(self.now + datetime.timedelta(days=1))
                   .add_extension(x509.CRLNumber(1), False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       issuer.key.public_key()), False))
        for cert in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(cert.cert.serial_number)
                .revocation_date(self.now - datetime.timedelta(minutes=1)).build())
        crl = builder.sign(issuer.key, _hash_for(issuer.key))
        path = os.path.join(self.dir, f"{name or issuer.name}.crl.pem")
        with open(path, "wb") as f:
            f.write(crl.public_bytes(serialization.Encoding.PEM))
        return path
