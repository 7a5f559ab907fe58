"""Cross-check against an independent IKEv2 implementation, scapy's scapy.contrib.ikev2:
scapy dissects what espd's encoder writes (every payload type scapy knows) to the same
field values, and re-building its dissection gives espd's bytes back; espd decodes what
scapy builds to the same payloads."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from scapy.contrib import ikev2 as sc

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
    EncryptedFragment,
    ExchangeType,
    Header,
    HeaderFlags,
    IdInitiator,
    IdResponder,
    IdType,
    IntegId,
    KeGroup,
    KeyExchange,
    Message,
    Nonce,
    Notify,
    NotifyType,
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
    decode_message,
    encode_message,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "ikev2"
CERT_DER = (DATA / "gwa-cert.der").read_bytes()
SPIS = SpiPair(bytes.fromhex("0011223344556677"), bytes.fromhex("8899aabbccddeeff"))
V4 = ipaddress.ip_address
KEY128 = (Attribute(TransformAttr.KEY_LENGTH, 128),)
KEY256 = (Attribute(TransformAttr.KEY_LENGTH, 256),)

IKE_OFFER = Proposal(
    1,
    ProtocolId.IKE,
    b"",
    (
        Transform(TransformType.ENCR, EncrId.AES_GCM_16, KEY256),
        Transform(TransformType.ENCR, EncrId.AES_CBC, KEY128),
        Transform(TransformType.INTEG, IntegId.HMAC_SHA2_256_128),
        Transform(TransformType.PRF, PrfId.HMAC_SHA2_384),
        Transform(TransformType.KE, KeGroup.CURVE25519),
        Transform(TransformType.KE, KeGroup.MODP_2048),
    ),
)
ESP_OFFER = Proposal(
    2,
    ProtocolId.ESP,
    b"\x01\x02\x03\x04",
    (
        Transform(TransformType.ENCR, EncrId.AES_GCM_16, KEY128),
        Transform(TransformType.ESN, 0),
    ),
)
PLAIN = (
    SecurityAssociation((IKE_OFFER, ESP_OFFER)),
    KeyExchange(KeGroup.CURVE25519, bytes(range(32))),
    Nonce(bytes(range(100, 132))),
    Notify(NotifyType.NAT_DETECTION_SOURCE_IP, b"\xaa" * 20),
    Notify(NotifyType.REKEY_SA, b"", ProtocolId.ESP, b"\xca\xfe\xba\xbe"),
    Notify(NotifyType.SIGNATURE_HASH_ALGORITHMS, b"\x00\x02\x00\x03\x00\x04"),
    VendorId(b"espd test vendor id"),
    IdInitiator(IdType.FQDN, b"gwa.ik.test"),
    IdResponder(IdType.IPV4_ADDR, V4("192.0.2.2").packed),
    Certificate(CertEncoding.X509_SIGNATURE, CERT_DER),
    CertificateRequest(CertEncoding.X509_SIGNATURE, b"\x19" * 20 + b"\x20" * 20),
    Authentication(AuthMethod.SHARED_KEY_MIC, b"\x5a" * 32),
    TsInitiator((TrafficSelector.from_network("10.1.0.0/16"),)),
    TsResponder(
        (
            TrafficSelector(V4("10.2.0.1"), V4("10.2.0.9"), 6, 80, 443),
            TrafficSelector(V4("2001:db8::"), V4("2001:db8::ffff"), 17, 500, 500),
        )
    ),
    Delete(ProtocolId.ESP, (b"\x11\x11\x11\x11", b"\x22\x22\x22\x22")),
    Delete(ProtocolId.IKE),
)
HEADER = Header(SPIS, ExchangeType.CREATE_CHILD_SA, 0x1234, HeaderFlags.INITIATOR)


def layers(packet) -> list:
    """scapy's payload layers after the IKEv2 header, in order."""
    result, layer = [], packet.payload
    while layer.__class__.__name__.startswith("IKEv2_"):
        result.append(layer)
        layer = layer.payload
    return result


def scapy_transforms(proposal) -> list[tuple[int, int, int | None]]:
    out, t = [], proposal.trans
    while t is not None and t.__class__.__name__ == "IKEv2_Transform":
        out.append((t.transform_type, t.transform_id, t.key_length))
        t = t.payload if t.payload.__class__.__name__ == "IKEv2_Transform" else None
    return out


def scapy_proposals(sa) -> list:
    out, p = [], sa.prop
    while p is not None and p.__class__.__name__ == "IKEv2_Proposal":
        out.append(p)
        p = p.payload if p.payload.__class__.__name__ == "IKEv2_Proposal" else None
    return out


def test_scapy_dissects_espd_messages_to_the_same_fields():
    wire = encode_message(Message(HEADER, PLAIN))
    packet = sc.IKEv2(wire)
    assert (packet.init_SPI, packet.resp_SPI) == (SPIS.initiator, SPIS.responder)
    assert (packet.exch_type, packet.id, packet.length, int(packet.flags)) == (
        36,
        0x1234,
        len(wire),
        8,
    )
    got = layers(packet)
    assert [type(x).__name__ for x in got] == [
        "IKEv2_SA", "IKEv2_KE", "IKEv2_Nonce", "IKEv2_Notify", "IKEv2_Notify", "IKEv2_Notify",
        "IKEv2_VendorID", "IKEv2_IDi", "IKEv2_IDr", "IKEv2_CERT", "IKEv2_CERTREQ", "IKEv2_AUTH",
        "IKEv2_TSi", "IKEv2_TSr", "IKEv2_Delete", "IKEv2_Delete",
    ]  # fmt: skip
    (
        sa,
        ke,
        nonce,
        natd,
        rekey,
        hashes,
        vid,
        idi,
        idr,
        cert,
        certreq,
        auth,
        tsi,
        tsr,
        d_esp,
        d_ike,
    ) = got
    proposals = scapy_proposals(sa)
    assert [(p.proposal, p.proto, p.SPIsize, p.trans_nb, p.SPI) for p in proposals] == [
        (1, 1, 0, 6, b""),
        (2, 3, 4, 2, b"\x01\x02\x03\x04"),
    ]
    assert scapy_transforms(proposals[0]) == [
        (1, 20, 256), (1, 12, 128), (3, 12, None), (2, 6, None), (4, 31, None), (4, 14, None)
    ]  # fmt: skip
    assert scapy_transforms(proposals[1]) == [(1, 20, 128), (5, 0, None)]
    assert (ke.group, ke.ke) == (31, bytes(range(32)))
    assert nonce.nonce == bytes(range(100, 132))
    assert (natd.type, natd.notify, natd.SPIsize) == (16388, b"\xaa" * 20, 0)
    assert (rekey.type, rekey.proto, rekey.SPIsize, rekey.SPI) == (16393, 3, 4, b"\xca\xfe\xba\xbe")
    assert hashes.notify == b"\x00\x02\x00\x03\x00\x04"
    assert vid.vendorID == b"espd test vendor id"
    assert (idi.IDtype, idi.ID) == (2, b"gwa.ik.test")
    assert (idr.IDtype, idr.ID) == (1, "192.0.2.2")
    assert cert.cert_encoding == 4 and bytes(cert.cert_data) == CERT_DER
    assert (certreq.cert_encoding, certreq.cert_authority) == (4, b"\x19" * 20 + b"\x20" * 20)
    assert (auth.auth_type, auth.load) == (2, b"\x5a" * 32)
    (ts,) = tsi.traffic_selector
    assert (ts.TS_type, ts.starting_address_v4, ts.ending_address_v4) == (
        7,
        "10.1.0.0",
        "10.1.255.255",
    )
    assert (ts.IP_protocol_ID, ts.start_port, ts.end_port, ts.length) == (0, 0, 65535, 16)
    v4, v6 = tsr.traffic_selector
    assert (v4.IP_protocol_ID, v4.start_port, v4.end_port) == (6, 80, 443)
    assert (v6.TS_type, v6.length, v6.starting_address_v6, v6.ending_address_v6) == (
        8, 40, "2001:db8::", "2001:db8::ffff"
    )  # fmt: skip
    assert (d_esp.proto, d_esp.SPIsize, d_esp.SPInum, d_esp.SPI) == (
        3, 4, 2, [b"\x11\x11\x11\x11", b"\x22\x22\x22\x22"]
    )  # fmt: skip
    assert (d_ike.proto, d_ike.SPIsize, d_ike.SPInum) == (1, 0, 0)
    for layer in got:
        assert layer.length == len(bytes(layer)) - len(bytes(layer.payload))


def test_scapy_rebuilds_espd_bytes_exactly():
    wire = encode_message(Message(HEADER, PLAIN))
    assert bytes(sc.IKEv2(wire)) == wire


@pytest.mark.parametrize("path", sorted(DATA.glob("*-init-*.bin")), ids=lambda p: p.name)
def test_scapy_and_espd_agree_on_every_captured_ike_sa_init(path):
    raw = path.read_bytes()
    assert bytes(sc.IKEv2(raw)) == raw == encode_message(decode_message(raw))
    ours = decode_message(raw).payloads
    theirs = layers(sc.IKEv2(raw))
    assert [p.payload_type for p in ours] == [
        {"IKEv2_SA": 33, "IKEv2_KE": 34, "IKEv2_Nonce": 40, "IKEv2_Notify": 41,
         "IKEv2_CERTREQ": 38, "IKEv2_VendorID": 43}[type(x).__name__]
        for x in theirs
    ]  # fmt: skip


def test_espd_decodes_what_scapy_builds():
    # scapy computes neither a proposal's transform count, nor an IPv6 selector's length
    # (its default is 20, the RFC says 40), nor a transform's length when it carries a key
    # length (it drops the attribute then): those three are given here.
    packet = (
        sc.IKEv2(
            init_SPI=SPIS.initiator, resp_SPI=SPIS.responder, exch_type=35, flags="Response", id=1
        )
        / sc.IKEv2_IDr(IDtype=2, ID=b"gwb.ik.test")
        / sc.IKEv2_AUTH(auth_type=14, load=b"\x0csignature")
        / sc.IKEv2_SA(
            prop=sc.IKEv2_Proposal(
                proposal=1, proto=3, SPI=b"\x0a\x0b\x0c\x0d", trans_nb=2,
                trans=sc.IKEv2_Transform(
                    transform_type=1, transform_id=20, length=12, key_length=256
                )
                / sc.IKEv2_Transform(transform_type=5, transform_id=1),
            )
        )
        / sc.IKEv2_TSi(traffic_selector=[sc.IPv4TrafficSelector(
            IP_protocol_ID=0, starting_address_v4="10.1.0.0", ending_address_v4="10.1.255.255")])
        / sc.IKEv2_TSr(traffic_selector=[sc.IPv6TrafficSelector(
            IP_protocol_ID=58, length=40, start_port=0x8000, end_port=0x80FF,
            starting_address_v6="2001:db8:2::", ending_address_v6="2001:db8:2::ffff")])
        / sc.IKEv2_Notify(type=16391)
        / sc.IKEv2_Notify(type=16393, proto=3, SPI=b"\x01\x02\x03\x04")
        / sc.IKEv2_CERT(cert_encoding=4, cert_data=CERT_DER)
        / sc.IKEv2_CERTREQ(cert_encoding=4, cert_authority=b"\x33" * 20)
        / sc.IKEv2_KE(group=36, ke=b"\x44" * 1184)
        / sc.IKEv2_Nonce(nonce=b"\x55" * 32)
        / sc.IKEv2_VendorID(vendorID=b"scapy")
        / sc.IKEv2_Delete(proto=3, SPI=[b"\x66\x66\x66\x66"], SPInum=1)
    )  # fmt: skip
    wire = bytes(packet)
    message = decode_message(wire)
    assert message.header == Header(SPIS, ExchangeType.IKE_AUTH, 1, HeaderFlags.RESPONSE)
    assert message.payloads == (
        IdResponder(IdType.FQDN, b"gwb.ik.test"),
        Authentication(AuthMethod.DIGITAL_SIGNATURE, b"\x0csignature"),
        SecurityAssociation(
            (
                Proposal(
                    1,
                    ProtocolId.ESP,
                    b"\x0a\x0b\x0c\x0d",
                    (Transform(TransformType.ENCR, EncrId.AES_GCM_16, KEY256), Transform(5, 1)),
                ),
            )
        ),
        TsInitiator((TrafficSelector.from_network("10.1.0.0/16"),)),
        TsResponder(
            (TrafficSelector(V4("2001:db8:2::"), V4("2001:db8:2::ffff"), 58, 0x8000, 0x80FF),)
        ),
        Notify(NotifyType.USE_TRANSPORT_MODE),
        Notify(NotifyType.REKEY_SA, b"", ProtocolId.ESP, b"\x01\x02\x03\x04"),
        Certificate(CertEncoding.X509_SIGNATURE, CERT_DER),
        CertificateRequest(CertEncoding.X509_SIGNATURE, b"\x33" * 20),
        KeyExchange(KeGroup.ML_KEM_768, b"\x44" * 1184),
        Nonce(b"\x55" * 32),
        VendorId(b"scapy"),
        Delete(ProtocolId.ESP, (b"\x66\x66\x66\x66",)),
    )
    assert encode_message(message) == wire


def test_sk_and_skf_framing_agree_with_scapy():
    sk = encode_message(Message(HEADER, (Encrypted(PayloadType.IDi, b"\x77" * 48),)))
    packet = sc.IKEv2(sk)
    (enc,) = layers(packet)
    assert (type(enc).__name__, enc.next_payload, enc.load) == (
        "IKEv2_Encrypted",
        PayloadType.IDi,
        b"\x77" * 48,
    )
    skf = encode_message(Message(HEADER, (EncryptedFragment(35, 2, 3, b"\x88" * 40),)))
    (frag,) = layers(sc.IKEv2(skf))
    assert (frag.frag_number, frag.frag_total, frag.load, frag.next_payload) == (
        2,
        3,
        b"\x88" * 40,
        35,
    )
    built = bytes(
        sc.IKEv2(init_SPI=SPIS.initiator, resp_SPI=SPIS.responder, exch_type=35, id=1)
        / sc.IKEv2_Encrypted_Fragment(
            next_payload=0, frag_number=3, frag_total=3, load=b"\x99" * 33
        )
    )
    (ours,) = decode_message(built).payloads
    assert ours == EncryptedFragment(0, 3, 3, b"\x99" * 33)


def test_payloads_espd_does_not_parse_stay_opaque_and_byte_exact():
    # CP, EAP and GSPM: scapy knows them, espd keeps them as non-critical unknowns
    packet = (
        sc.IKEv2(init_SPI=SPIS.initiator, resp_SPI=SPIS.responder, exch_type=35, id=1)
        / sc.IKEv2_CP(CFGType=1)
        / sc.IKEv2_EAP(load=b"\x01\x02\x00\x05\x01")
        / sc.IKEv2_GSPM(load=b"gspm")
    )
    wire = bytes(packet)
    message = decode_message(wire)
    assert message.payloads == (
        UnknownPayload(PayloadType.CP, b"\x01\x00\x00\x00"),
        UnknownPayload(PayloadType.EAP, b"\x01\x02\x00\x05\x01"),
        UnknownPayload(PayloadType.GSPM, b"gspm"),
    )
    assert encode_message(message) == wire
    critical = bytes(
        sc.IKEv2(init_SPI=SPIS.initiator, resp_SPI=SPIS.responder, exch_type=35, id=1)
        / sc.IKEv2_EAP(flags="critical", load=b"\x01\x02\x00\x05\x01")
    )
    with pytest.raises(ParseError) as e:
        decode_message(critical)
    assert (e.value.notify, e.value.data) == (NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, b"\x30")
