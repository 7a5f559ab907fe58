"""Each payload class: encode then decode gives the same object, the bytes are laid out as
RFC 7296 draws them, and the header and flag helpers set the bits the RFC names."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from espd.ike.codec import (
    Attribute,
    Authentication,
    AuthMethod,
    CertEncoding,
    Certificate,
    CertificateRequest,
    Delete,
    EncrId,
    Encrypted,
    EsnId,
    ExchangeType,
    HashAlgorithm,
    Header,
    HeaderFlags,
    IdInitiator,
    IdResponder,
    IdType,
    KeGroup,
    KeyExchange,
    Message,
    Nonce,
    Notify,
    NotifyType,
    OpaqueSelector,
    ParseError,
    PayloadType,
    PrfId,
    Proposal,
    ProtocolId,
    SecurityAssociation,
    SpiPair,
    TrafficSelector,
    Transform,
    TransformAttr,
    TransformType,
    TsInitiator,
    TsResponder,
    UnknownPayload,
    VendorId,
    decode_chain,
    decode_message,
    encode_chain,
    encode_message,
    invalid_ke_payload,
    is_error_notify,
    request_header,
    requested_group,
    signature_hash_algorithms,
    u16_list,
)
from espd.ike.codec.constants import TRANSFORM_IDS
from espd.ike.codec.natt import add_non_esp_marker, strip_non_esp_marker

SPIS = SpiPair(bytes.fromhex("0102030405060708"), bytes.fromhex("1112131415161718"))

IKE_PROPOSAL = Proposal(
    1,
    ProtocolId.IKE,
    b"",
    (
        Transform(
            TransformType.ENCR, EncrId.AES_GCM_16, (Attribute(TransformAttr.KEY_LENGTH, 256),)
        ),
        Transform(TransformType.PRF, PrfId.HMAC_SHA2_384),
        Transform(TransformType.KE, KeGroup.CURVE25519),
        Transform(TransformType.ADDITIONAL_KEY_EXCHANGE_1, KeGroup.ML_KEM_768),
    ),
)
ESP_PROPOSAL = Proposal(
    2,
    ProtocolId.ESP,
    b"\xde\xad\xbe\xef",
    (
        Transform(TransformType.ENCR, EncrId.AES_CBC, (Attribute(TransformAttr.KEY_LENGTH, 128),)),
        Transform(TransformType.INTEG, 12),
        Transform(TransformType.ESN, EsnId.ESN),
        Transform(TransformType.ESN, EsnId.NO_ESN),
    ),
)

PAYLOADS = [
    SecurityAssociation((IKE_PROPOSAL, ESP_PROPOSAL)),
    SecurityAssociation(
        (Proposal(1, 99, b"x" * 3, (Transform(77, 1234, (Attribute(5, b"tlv"),)),)),)
    ),
    KeyExchange(KeGroup.ECP_256, bytes(range(64))),
    KeyExchange(4242, b""),
    Nonce(bytes(16)),
    Nonce(bytes(range(256))),
    IdInitiator(IdType.FQDN, b"gwa.example.net"),
    IdResponder(IdType.IPV4_ADDR, bytes([192, 0, 2, 2])),
    IdResponder(IdType.DER_ASN1_DN, b"\x30\x00", reserved=b"\x01\x02\x03"),
    Authentication(AuthMethod.SHARED_KEY_MIC, bytes(32)),
    Authentication(AuthMethod.DIGITAL_SIGNATURE, b"\x0c0\n\x06\x08*\x86H\xce=\x04\x03\x02sig"),
    Certificate(CertEncoding.X509_SIGNATURE, b"\x30\x82\x01\x00"),
    CertificateRequest(CertEncoding.X509_SIGNATURE, bytes(40)),
    CertificateRequest(CertEncoding.X509_SIGNATURE),
    Notify(NotifyType.COOKIE, b"c" * 32),
    Notify(NotifyType.REKEY_SA, b"", ProtocolId.ESP, b"\x01\x02\x03\x04"),
    Notify(NotifyType.INVALID_KE_PAYLOAD, (19).to_bytes(2, "big")),
    Notify(50000, b"private status"),
    Delete(ProtocolId.IKE),
    Delete(ProtocolId.ESP, (b"\x01\x02\x03\x04", b"\x05\x06\x07\x08")),
    VendorId(b"strongSwan"),
    TsInitiator((TrafficSelector.from_network("10.1.0.0/16"),)),
    TsResponder(
        (
            TrafficSelector(
                ipaddress.ip_address("2001:db8::1"),
                ipaddress.ip_address("2001:db8::ff"),
                6,
                443,
                443,
            ),
            TrafficSelector(
                ipaddress.ip_address("10.0.0.1"),
                ipaddress.ip_address("10.0.0.1"),
                1,
                0x0800,
                0x08FF,
            ),
            OpaqueSelector(10, 0, b"\x00\x00label"),
        )
    ),
    UnknownPayload(PayloadType.CP, b"\x01\x00\x00\x00"),
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: type(p).__name__)
def test_payload_encode_then_decode_is_identity(payload):
    first, chain = encode_chain([payload])
    assert first == payload.payload_type
    (decoded,) = decode_chain(first, chain)
    assert decoded == payload
    assert decoded.encode_body() == payload.encode_body()


def test_a_chain_links_each_payload_to_the_next():
    first, chain = encode_chain(PAYLOADS)
    assert first == PayloadType.SA
    assert decode_chain(first, chain) == tuple(PAYLOADS)
    offset, seen = 0, []
    while offset < len(chain):
        seen.append(chain[offset])
        offset += int.from_bytes(chain[offset + 2 : offset + 4], "big")
    assert seen == [p.payload_type for p in PAYLOADS[1:]] + [PayloadType.NONE]


def test_ke_payload_layout():
    body = KeyExchange(KeGroup.CURVE25519, b"\xaa" * 32).encode_body()
    assert body == b"\x00\x1f\x00\x00" + b"\xaa" * 32


def test_notify_layout_with_an_spi():
    body = Notify(NotifyType.REKEY_SA, b"", ProtocolId.ESP, b"\x01\x02\x03\x04").encode_body()
    assert body == bytes([3, 4]) + (16393).to_bytes(2, "big") + b"\x01\x02\x03\x04"


def test_transform_layout_with_a_key_length():
    sa = SecurityAssociation(
        (Proposal(1, ProtocolId.IKE, b"", (Transform(1, 12, (Attribute(14, 128),)),)),)
    )
    assert sa.encode_body().hex() == (
        "0000"
        "0014"
        "01"
        "01"
        "00"
        "01"  # last proposal, length 20, #1, IKE, no SPI, 1 transform
        "0000"
        "000c"
        "01"
        "00"
        "000c"  # last transform, length 12, ENCR, AES-CBC
        "800e"
        "0080"  # TV attribute Key Length = 128
    )


def test_traffic_selector_layout():
    body = TsInitiator((TrafficSelector.from_network("10.1.0.0/16", 17),)).encode_body()
    assert body.hex() == "01000000071100100000ffff0a0100000a01ffff"


def test_delete_layout():
    assert (
        Delete(ProtocolId.ESP, (b"\x01\x02\x03\x04",)).encode_body()
        == b"\x03\x04\x00\x01\x01\x02\x03\x04"
    )
    assert Delete(ProtocolId.IKE).encode_body() == b"\x01\x00\x00\x00"


def test_key_length_and_transforms_of():
    encr = IKE_PROPOSAL.transforms_of(TransformType.ENCR)
    assert [t.key_length for t in encr] == [256]
    assert IKE_PROPOSAL.transforms_of(TransformType.INTEG) == ()
    assert Transform(TransformType.PRF, PrfId.HMAC_SHA2_256).key_length is None


def test_decoded_ids_are_enum_members_when_known_and_ints_when_not():
    first, chain = encode_chain([SecurityAssociation((IKE_PROPOSAL,))])
    (sa,) = decode_chain(first, chain)
    kinds = [type(t.id) for t in sa.proposals[0].transforms]
    assert kinds == [EncrId, PrfId, KeGroup, KeGroup]
    first, chain = encode_chain([Notify(40000), KeyExchange(999, b"")])
    notify, ke = decode_chain(first, chain)
    assert type(notify.type) is int and notify.type == 40000
    assert type(ke.group) is int


def test_transform_id_registries_cover_every_transform_type():
    assert set(TRANSFORM_IDS) == set(TransformType)
    assert TransformType.ADDITIONAL_KEY_EXCHANGE_7 == 12
    assert TRANSFORM_IDS[TransformType.ADDITIONAL_KEY_EXCHANGE_3] is KeGroup


def test_registry_values_the_engine_depends_on():
    assert (ExchangeType.IKE_INTERMEDIATE, ExchangeType.IKE_FOLLOWUP_KE) == (43, 44)
    assert (PayloadType.SK, PayloadType.SKF) == (46, 53)
    assert (KeGroup.ML_KEM_512, KeGroup.ML_KEM_768, KeGroup.ML_KEM_1024) == (35, 36, 37)
    assert (NotifyType.INTERMEDIATE_EXCHANGE_SUPPORTED, NotifyType.ADDITIONAL_KEY_EXCHANGE) == (
        16438,
        16441,
    )
    assert (
        NotifyType.USE_TRANSPORT_MODE == 16391 and NotifyType.ESP_TFC_PADDING_NOT_SUPPORTED == 16394
    )


def test_error_and_status_notifies():
    assert NotifyType.AUTHENTICATION_FAILED.is_error
    assert not NotifyType.INITIAL_CONTACT.is_error
    assert is_error_notify(8200) and not is_error_notify(40000)
    assert Notify(NotifyType.TS_UNACCEPTABLE).is_error


def test_identification_helpers():
    assert IdInitiator.address(ipaddress.ip_address("192.0.2.1")) == IdInitiator(
        IdType.IPV4_ADDR, b"\xc0\x00\x02\x01"
    )
    assert IdResponder.address(ipaddress.ip_address("2001:db8::1")).id_type == IdType.IPV6_ADDR
    assert IdInitiator.fqdn("gw.example").data == b"gw.example"
    assert IdInitiator.rfc822("a@b.example").id_type == IdType.RFC822_ADDR


def test_certreq_authorities_split_into_sha1_hashes():
    hashes = (b"\x01" * 20, b"\x02" * 20)
    request = CertificateRequest.for_authorities(hashes)
    assert request.authorities == hashes
    with pytest.raises(ValueError):
        CertificateRequest.for_authorities((b"short",))


def test_request_and_response_headers_set_the_flags_rfc_7296_names():
    request = request_header(SPIS, ExchangeType.IKE_AUTH, 1, original_initiator=True)
    assert request.flags == HeaderFlags.INITIATOR
    assert request.from_initiator and not request.is_response
    response = request.response(original_initiator=False)
    assert response.flags == HeaderFlags.RESPONSE
    assert (response.spis, response.exchange, response.message_id) == (
        SPIS,
        ExchangeType.IKE_AUTH,
        1,
    )
    # a request the original responder sends (it rekeys, say) has neither flag; the
    # original initiator's answer carries I and R
    their_request = request_header(SPIS, ExchangeType.CREATE_CHILD_SA, 7, original_initiator=False)
    assert their_request.flags == HeaderFlags(0)
    assert their_request.response(original_initiator=True).flags == (
        HeaderFlags.INITIATOR | HeaderFlags.RESPONSE
    )


def test_header_layout():
    header = Header(SPIS, ExchangeType.INFORMATIONAL, 0x01020304, HeaderFlags.RESPONSE)
    wire = encode_message(Message(header, ()))
    assert wire.hex() == (SPIS.initiator.hex() + SPIS.responder.hex() + "00202520010203040000001c")
    assert decode_message(wire) == Message(header, ())


def test_reserved_header_flags_survive_a_round_trip():
    header = Header(SPIS, ExchangeType.INFORMATIONAL, 5, HeaderFlags(0x08 | 0x01))
    wire = encode_message(Message(header, ()))
    assert decode_message(wire).header.flags == HeaderFlags(0x09)


def test_spi_pair_is_two_eight_byte_spis():
    with pytest.raises(ValueError):
        SpiPair(b"short")
    assert not SpiPair(bytes(8)).responder_known and SPIS.responder_known


def test_encoders_refuse_values_that_do_not_fit():
    with pytest.raises(ValueError):
        Nonce(b"too short").encode_body()
    with pytest.raises(ValueError):
        Notify(70000).encode_body()
    with pytest.raises(ValueError):
        Delete(ProtocolId.ESP, (b"\x01\x02\x03\x04", b"\x01")).encode_body()
    with pytest.raises(ValueError):
        SecurityAssociation(()).encode_body()
    with pytest.raises(ValueError):
        TsInitiator(()).encode_body()
    with pytest.raises(ValueError):
        encode_message(Message(Header(SPIS, 37, 1 << 32), ()))


def test_unknown_non_critical_payload_is_kept_and_critical_one_refused():
    first, chain = encode_chain(
        [Notify(NotifyType.INITIAL_CONTACT), UnknownPayload(200, b"opaque")]
    )
    assert decode_chain(first, chain)[1] == UnknownPayload(200, b"opaque")
    first, chain = encode_chain(
        [Notify(NotifyType.INITIAL_CONTACT), UnknownPayload(200, b"x", True)]
    )
    with pytest.raises(ParseError) as e:
        decode_chain(first, chain)
    assert e.value.notify == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD
    assert e.value.data == bytes([200])


def test_critical_bit_on_a_known_payload_is_ignored():
    first, chain = encode_chain([VendorId(b"v")])
    flagged = chain[:1] + b"\x80" + chain[2:]
    assert decode_chain(first, flagged) == (VendorId(b"v"),)


def test_notify_data_helpers():
    notify = invalid_ke_payload(KeGroup.ECP_384)
    assert notify.data == b"\x00\x14" and requested_group(notify) == 20
    with pytest.raises(ParseError):
        requested_group(Notify(NotifyType.INVALID_KE_PAYLOAD, b"\x00"))
    hashes = signature_hash_algorithms((HashAlgorithm.SHA2_256, HashAlgorithm.IDENTITY))
    assert u16_list(hashes.data, "hashes") == (2, 5)
    with pytest.raises(ParseError):
        u16_list(b"\x00\x02\x00", "hashes")


def test_non_esp_marker_is_added_and_stripped():
    message = (
        Path(__file__).resolve().parents[2] / "data/ikev2/psk-trap-0002-auth-req.bin"
    ).read_bytes()
    datagram = add_non_esp_marker(message)
    assert datagram[:4] == bytes(4) and strip_non_esp_marker(datagram) == message
    assert strip_non_esp_marker(b"\xff") is None  # NAT keepalive
    assert strip_non_esp_marker(b"\x00\x00\x12\x34" + bytes(40)) is None  # ESP, SPI 0x1234
    assert strip_non_esp_marker(bytes(4)) is None


def test_the_codec_never_imports_cryptography():
    code = (
        "import sys, espd.ike.codec; print(any(m.startswith('cryptography') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_encoders_refuse_chains_and_fields_the_wire_cannot_carry():
    with pytest.raises(ValueError, match="limit"):
        encode_chain([VendorId(b"v")] * 65)
    with pytest.raises(ValueError, match="last payload"):
        encode_chain([Encrypted(0, b""), VendorId(b"v")])
    with pytest.raises(ValueError, match="bytes"):
        encode_chain([VendorId(bytes(0x10000))])
    with pytest.raises(ValueError, match="format bit"):
        Attribute(0x800E, 128).encode()
    with pytest.raises(ValueError, match="limit"):
        Proposal(1, ProtocolId.ESP, b"", (Transform(1, 12),) * 129).encode(last=True)
    with pytest.raises(ValueError, match="IP version"):
        TrafficSelector(ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("::1")).encode()
    with pytest.raises(ValueError, match="reserved"):
        IdInitiator(IdType.FQDN, b"x", reserved=b"").encode_body()
    with pytest.raises(ValueError, match="limit"):
        Delete(ProtocolId.ESP, (b"\x00" * 4,) * 1025).encode_body()
    with pytest.raises(ValueError, match="one octet"):
        Notify(NotifyType.COOKIE, protocol=300).encode_body()
    header = Header(SPIS, ExchangeType.INFORMATIONAL, 1)
    with pytest.raises(ValueError, match="limit"):
        encode_message(Message(header, (VendorId(bytes(0xFFF0)), VendorId(bytes(0xFFF0)))))


def test_message_lookups():
    message = Message(
        Header(SPIS, ExchangeType.INFORMATIONAL, 1),
        (Notify(NotifyType.INITIAL_CONTACT), Notify(NotifyType.TS_UNACCEPTABLE), VendorId(b"v")),
    )
    assert message.first(Nonce) is None and message.notify(NotifyType.COOKIE) is None
    assert message.all(Notify) == message.payloads[:2]
    assert message.errors == (Notify(NotifyType.TS_UNACCEPTABLE),)
