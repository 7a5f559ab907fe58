"""What certificates a configuration loaded, as plain data: for ``espd show certificates``,
the metric ``espd_certificate_expiry_seconds`` and the expiry warnings at load.

Only public facts of a certificate are here (subject, issuer, serial, SAN, validity, key
type and size); the private key is never touched. Times are POSIX seconds so the plain
data crosses the control socket as JSON, and the expiry is computed where it is read
(a scrape, a show), not frozen at load.
"""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

EXPIRY_WARNING_DAYS = 14  # warned about at load; the same as contrib's EspdCertificateExpiresSoon

ROLES = ("local", "intermediate", "ca")  # what the certificate is to this gateway


def certificate_inventory(own: object | None, trust: object | None) -> list[dict]:
    """One dict per certificate: ours, the intermediates we send, the CAs we trust; and
    for the CAs, the CRLs we hold of them. ``own`` is an OwnCertificate, ``trust`` a
    TrustStore (typed loosely: config.model holds them as objects)."""
    out: list[dict] = []
    if own is not None:
        chain = own.chain  # type: ignore[attr-defined]
        out.append(_entry(chain[0], "local"))
        out += [_entry(cert, "intermediate") for cert in chain[1:]]
    if trust is not None:
        crls = trust.crls  # type: ignore[attr-defined]
        for anchor in trust.anchors:  # type: ignore[attr-defined]
            entry = _entry(anchor, "ca")
            entry["crls"] = [_crl(crl) for crl in crls if crl.issuer == anchor.subject]
            out.append(entry)
    return out


def expiry_warnings(inventory: list[dict], now: float) -> list[str]:
    """A sentence for each certificate that has expired, is not valid yet, or expires
    within EXPIRY_WARNING_DAYS; and for each CRL past its nextUpdate."""
    out = []
    for cert in inventory:
        what = f"{cert['role']} certificate {cert['subject']} (serial {cert['serial']})"
        left = cert["not_after"] - now
        if left < 0:
            out.append(f"{what} expired {_days(-left)} ago, on {_date(cert['not_after'])}: "
                       f"{_consequence(cert['role'])}")
        elif left < EXPIRY_WARNING_DAYS * 86400:
            out.append(f"{what} expires in {_days(left)}, on {_date(cert['not_after'])}: "
                       f"renew it and reload espd")
        if cert["not_before"] > now:
            out.append(f"{what} is not valid until {_date(cert['not_before'])}: "
                       f"{_consequence(cert['role'])} until then")
        for crl in cert.get("crls", ()):
            if crl["next_update"] is not None and crl["next_update"] < now:
                out.append(f"the CRL of {cert['subject']} was due for renewal on "
                           f"{_date(crl['next_update'])}: certificates it revoked since "
                           f"then are still accepted; fetch a new one and reload espd")
    return out


def _consequence(role: str) -> str:
    if role == "ca":
        return "no certificate that chains to it is accepted"
    return "peers will refuse our authentication"


def certificate_facts(cert: x509.Certificate) -> dict:
    """Subject, issuer, serial (hex) and validity (POSIX s): what show names a certificate
    by, here and for a peer's verified certificate (ike/engine/view.py)."""
    return {
        "subject": cert.subject.rfc4514_string() or "(empty subject)",
        "issuer": cert.issuer.rfc4514_string() or "(empty issuer)",
        "serial": f"{cert.serial_number:X}",
        "not_before": cert.not_valid_before_utc.timestamp(),
        "not_after": cert.not_valid_after_utc.timestamp(),
    }


def _entry(cert: x509.Certificate, role: str) -> dict:
    return {"role": role, **certificate_facts(cert), "san": _san(cert), "key": _key(cert)}


def _crl(crl: x509.CertificateRevocationList) -> dict:
    nxt = crl.next_update_utc
    return {"last_update": crl.last_update_utc.timestamp(),
            "next_update": nxt.timestamp() if nxt is not None else None,
            "revoked": len(crl)}


def _san(cert: x509.Certificate) -> list[str]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    kinds = {x509.DNSName: "DNS", x509.IPAddress: "IP", x509.RFC822Name: "email",
             x509.UniformResourceIdentifier: "URI", x509.DirectoryName: "DirName"}
    return [f"{kinds.get(type(n), type(n).__name__)}:{getattr(n, 'value', n)}" for n in names]


def _key(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size}"
    return type(key).__name__


def _date(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _days(seconds: float) -> str:
    days = int(seconds // 86400)
    if days >= 1:
        return f"{days} day{'s' if days != 1 else ''}"
    hours = int(seconds // 3600)
    return f"{hours} hour{'s' if hours != 1 else ''}" if hours else "less than an hour"
