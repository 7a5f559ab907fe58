"""``espd keygen --pki DIR``: a small CA and two gateway certificates, for a lab, the demo or
a first certificate tunnel, with the ``[ike]`` lines each end needs.

    DIR/ca.pem  ca.key         the CA (ECDSA P-256, 10 years); its key only signs here
    DIR/gw-a.pem  gw-a.key     gateway A: CN and SAN = its name, SAN IP = its address
    DIR/gw-b.pem  gw-b.key     gateway B, likewise (ECDSA P-256, 1 year)

Keys are written 0600 (created so: never readable in between), nothing is overwritten, and
no key is printed. A production CA keeps its key offline; this one is for labs.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS, GATEWAY_DAYS = 3650, 365
FILES = ("ca.pem", "ca.key", "gw-a.pem", "gw-a.key", "gw-b.pem", "gw-b.key")


class PkiError(Exception):
    """Why the PKI cannot be written (a file exists, the directory is unusable)."""


@dataclass(frozen=True)
class Gateway:
    name: str  # a DNS name: CN and SAN dNSName, the IKE identity fqdn:NAME
    address: ipaddress.IPv4Address | ipaddress.IPv6Address


def make_pki(directory: Path, a: Gateway, b: Gateway, organization: str = "espd lab") -> None:
    """Write FILES into ``directory`` (created 0700 if missing); PkiError if any exists."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise PkiError(f"cannot create {directory}: {e.strerror}") from None
    existing = [name for name in FILES if (directory / name).exists()]
    if existing:
        raise PkiError(f"{directory} already holds {', '.join(existing)}; espd keygen --pki "
                       f"overwrites nothing: remove them or choose another directory")
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"{organization} CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=CA_DAYS))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    _write(directory / "ca.pem", _pem(ca), private=False)
    _write(directory / "ca.key", _key_pem(ca_key), private=True)
    for stem, gateway in (("gw-a", a), ("gw-b", b)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                    x509.NameAttribute(NameOID.COMMON_NAME, gateway.name)]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now)
                .not_valid_after(now + datetime.timedelta(days=GATEWAY_DAYS))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                             False, False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .add_extension(x509.SubjectAlternativeName([
                    x509.DNSName(gateway.name), x509.IPAddress(gateway.address)]),
                    critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        _write(directory / f"{stem}.pem", _pem(cert), private=False)
        _write(directory / f"{stem}.key", _key_pem(key), private=True)


def ike_lines(directory: Path, stem: str, peer: Gateway) -> str:
    """The TOML an end needs: [ike] with its files, and an [ike_peer] for the other end."""
    peer_stem = "gw-b" if stem == "gw-a" else "gw-a"
    return "\n".join([
        "[ike]",
        f'certificate = "{directory / f"{stem}.pem"}"',
        f'private_key = "{directory / f"{stem}.key"}"',
        f'ca = ["{directory / "ca.pem"}"]',
        "",
        f"[ike_peer.{peer_stem.replace('-', '_')}]",
        f'address = "{peer.address}"',
        'auth = "certificate"',
        f'remote_id = "fqdn:{peer.name}"',
    ])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Create ``path`` exclusively, 0600 for a key (from the first byte) else 0644."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600 if private else 0o644)
    except OSError as e:
        raise PkiError(f"cannot create {path}: {e.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
