"""ID_DER_ASN1_DN: the DER reader against cryptography's encoder, hostile encodings, and
the two spellings of a configured DN."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from espd.config.model import parse_identity
from espd.ike import codec
from espd.ike.auth.names import dn_matches, parse_dn
from espd.ike.codec.dn import MAX_ATTRIBUTES, decode_dn
from espd.ike.exchanges.payloads import identity_of, identity_payload, same_identity
from espd.ike.settings import Identity

NAME = x509.Name([
    x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "CH")]),
    x509.RelativeDistinguishedName([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Zürich Ops, Inc.")]),
    x509.RelativeDistinguishedName([  # a multi-valued RDN
        x509.NameAttribute(NameOID.COMMON_NAME, "gw.example"),
        x509.NameAttribute(NameOID.SERIAL_NUMBER, "42")]),
    x509.RelativeDistinguishedName([
        x509.NameAttribute(NameOID.EMAIL_ADDRESS, "ops@example")]),  # an IA5String
])


def test_the_reader_gives_back_what_cryptography_encoded():
    assert decode_dn(NAME.public_bytes()) == NAME


def test_an_identity_payload_round_trips_a_dn():
    text = NAME.rfc4514_string()
    payload = identity_payload(codec.IdInitiator, Identity("dn", text))
    assert payload.id_type == codec.IdType.DER_ASN1_DN
    assert payload.data == NAME.public_bytes()
    got = identity_of(codec.IdInitiator.decode_body(payload.encode_body()))
    assert got.kind == "dn" and parse_dn(got.value) == NAME  # (a SET's order is DER's)
    assert same_identity(Identity("dn", text), got)


@pytest.mark.parametrize("data", [
    b"", b"\x30", b"\x30\x05\x31\x03", b"\x31\x00",  # truncated, overrun, not a SEQUENCE
    b"\x30\x00\x00",  # trailing bytes
    b"\x30\x84\x00\x00\x00\x00",  # 4 length octets
    b"\x30\x02\x31\x00",  # an empty RDN
    b"\x30\x04\x31\x02\x02\x00",  # an attribute that is not a SEQUENCE
    b"\x30\x09\x31\x07\x30\x05\x04\x01\x01\x13\x00",  # the type is not an OID
    b"\x30\x0a\x31\x08\x30\x06\x06\x01\x55\x02\x01\x01",  # an INTEGER value
    b"\x30\x0b\x31\x09\x30\x07\x06\x02\x55\x83\x13\x01\x41",  # truncated OID
    b"\x30\x0a\x31\x08\x30\x06\x06\x01\x55\x0c\x01\xff",  # invalid UTF-8
])
def test_hostile_encodings_are_parse_errors(data):
    with pytest.raises(codec.ParseError):
        decode_dn(data)
    assert identity_of(codec.IdInitiator(codec.IdType.DER_ASN1_DN, data)) is None


def test_too_many_attributes_are_refused():
    many = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"u{i}")
                      for i in range(MAX_ATTRIBUTES + 1)])
    with pytest.raises(codec.ParseError, match="too many"):
        decode_dn(many.public_bytes())


def test_a_configured_dn_matches_in_either_spelling_and_nothing_else():
    name = x509.Name.from_rfc4514_string("CN=gw,O=Example,C=CH")
    assert dn_matches("CN=gw,O=Example,C=CH", name)
    assert dn_matches("C=CH, O=Example, CN=gw", name)
    assert not dn_matches("CN=gw,O=Example", name)
    assert not dn_matches("CN=gw,O=Example,C=DE", name)
    assert not dn_matches("O=Example,CN=gw,C=CH", name)  # neither spelling
    expected = parse_identity("dn:C=CH, O=Example, CN=gw")
    assert expected.kind == "dn" and expected.value == "C=CH,O=Example,CN=gw"
    assert same_identity(Identity("dn", expected.value), Identity("dn", name.rfc4514_string()))


@pytest.mark.parametrize("text", ["dn:", "dn:garbage", "dn:CN"])
def test_a_bad_dn_in_the_configuration_says_what_to_write(text):
    with pytest.raises(ValueError, match="dn:CN=gw.example.net"):
        parse_identity(text)
    with pytest.raises(ValueError):
        parse_dn(text[3:])
