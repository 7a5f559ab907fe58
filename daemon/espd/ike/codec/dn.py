"""ID_DER_ASN1_DN identification data (RFC 7296 3.5): the DER of an X.501 Name.

    Name ::= SEQUENCE OF RelativeDistinguishedName
    RelativeDistinguishedName ::= SET OF SEQUENCE { type OBJECT IDENTIFIER, value ANY }

``cryptography`` encodes a Name (``Name.public_bytes``) but reads one only inside a
certificate, so the peer's DN is read here: definite lengths only, every length checked
against what is left, nesting bounded by the grammar above (no recursion on input), at most
MAX_ATTRIBUTES attributes. Values of the string types a DN carries are decoded; any other
is refused (a DN identity is matched against a certificate's subject, and these are the
types a certificate's subject uses).
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from .errors import ParseError

MAX_ATTRIBUTES = 32
_SEQUENCE, _SET, _OID = 0x30, 0x31, 0x06
_STRINGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be",
            0x1C: "utf-32-be"}  # UTF8, Printable, IA5, Teletex (as latin-1), BMP, Universal


def decode_dn(data: bytes) -> x509.Name:
    """The Name ``data`` holds, or ParseError saying what is wrong."""
    tag, body, rest = _tlv(data, 0, "DN")
    if tag != _SEQUENCE or rest != len(data):
        raise ParseError("ID_DER_ASN1_DN: not a single DER SEQUENCE")
    rdns, count, at = [], 0, 0
    while at < len(body):
        tag, rdn, at = _tlv(body, at, "RDN")
        if tag != _SET:
            raise ParseError("ID_DER_ASN1_DN: an RDN is not a SET")
        attributes, inner = [], 0
        while inner < len(rdn):
            tag, pair, inner = _tlv(rdn, inner, "attribute")
            count += 1
            if tag != _SEQUENCE or count > MAX_ATTRIBUTES:
                raise ParseError("ID_DER_ASN1_DN: bad or too many attributes")
            attributes.append(_attribute(pair))
        if not attributes:
            raise ParseError("ID_DER_ASN1_DN: an empty RDN")
        rdns.append(x509.RelativeDistinguishedName(attributes))
    return x509.Name(rdns)


def _attribute(pair: bytes) -> x509.NameAttribute:
    tag, oid, at = _tlv(pair, 0, "attribute type")
    if tag != _OID or not oid:
        raise ParseError("ID_DER_ASN1_DN: an attribute type is not an OID")
    tag, value, end = _tlv(pair, at, "attribute value")
    if end != len(pair) or tag not in _STRINGS:
        raise ParseError("ID_DER_ASN1_DN: an attribute value is not a string")
    try:
        text = value.decode(_STRINGS[tag])
        return x509.NameAttribute(ObjectIdentifier(_dotted(oid)), text)
    except (UnicodeDecodeError, ValueError) as e:
        raise ParseError(f"ID_DER_ASN1_DN: a bad attribute ({e})") from None


def _tlv(data: bytes, at: int, what: str) -> tuple[int, bytes, int]:
    """(tag, value, offset after it) of the DER element at ``at``; short or long definite
    lengths of at most 3 length octets (a DN in an IKE payload is below 64 KiB)."""
    if at + 2 > len(data):
        raise ParseError(f"ID_DER_ASN1_DN: {what} truncated")
    tag, first = data[at], data[at + 1]
    at += 2
    if first & 0x80:
        octets = first & 0x7F
        if not 1 <= octets <= 3 or at + octets > len(data):
            raise ParseError(f"ID_DER_ASN1_DN: {what} has a bad length")
        length = int.from_bytes(data[at:at + octets], "big")
        at += octets
    else:
        length = first
    if at + length > len(data):
        raise ParseError(f"ID_DER_ASN1_DN: {what} overruns the payload")
    return tag, data[at:at + length], at + length


def _dotted(oid: bytes) -> str:
    """Dotted text of a DER OID's content octets (X.690 8.19)."""
    arcs, value = [], 0
    for i, byte in enumerate(oid):
        if value == 0 and byte == 0x80:
            raise ValueError("non-minimal OID encoding")
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
        elif i == len(oid) - 1:
            raise ValueError("truncated OID")
    first = min(arcs[0] // 40, 2)
    return ".".join(map(str, [first, arcs[0] - 40 * first, *arcs[1:]]))
