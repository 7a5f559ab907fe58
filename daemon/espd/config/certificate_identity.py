"""The identity espd claims with its certificate (both front ends): the one written, if the
certificate names it, else the certificate's first subjectAltName, else its CN."""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.x509.oid import NameOID

from espd.config.model import IkeIdentity


def certificate_identity(cert: x509.Certificate, written: IkeIdentity | None
                         ) -> tuple[IkeIdentity | None, str | None]:
    """(identity to send, problem): a written DN is sent as the certificate's subject."""
    from espd.ike.auth import certificates

    if written is None:
        return default_identity(cert), None
    if not certificates.identity_matches(cert, written.kind, written.value):
        return None, (f"{written} is not in espd's certificate ({certificates.describe(cert)})"
                      f"; write one it names, or leave it out")
    if written.kind == "dn":
        return IkeIdentity("dn", cert.subject.rfc4514_string()), None
    return written, None


def default_identity(cert: x509.Certificate) -> IkeIdentity | None:
    try:
        for name in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value:
            if isinstance(name, x509.DNSName):
                return IkeIdentity("fqdn", name.value)
            if isinstance(name, x509.IPAddress) and isinstance(
                    name.value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
                return IkeIdentity(f"ipv{name.value.version}", str(name.value))
            if isinstance(name, x509.RFC822Name):
                return IkeIdentity("rfc822", name.value)
    except x509.ExtensionNotFound:
        pass
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return IkeIdentity("fqdn", str(cn[0].value)) if cn else None
