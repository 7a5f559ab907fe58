"""The codec against real bytes: every IKE message charon 5.9.8 put on the wire in the
captures of tests/data/ikev2/ decodes; the clear ones re-encode byte for byte; the SK
ones open with the captured keys (AES-CBC + HMAC-SHA2-256-128 from `cryptography`, an
independent implementation of the cipher contract) and their inner chains re-encode byte
for byte too."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from espd.ike.codec import (
    Authentication,
    AuthMethod,
    Certificate,
    CertificateRequest,
    Delete,
    EncrId,
    Encrypted,
    EncryptedFragment,
    ExchangeType,
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
    PrfId,
    ProtocolId,
    SecurityAssociation,
    TransformType,
    TsInitiator,
    TsResponder,
    decode_message,
    decrypt_message,
    encode_chain,
    encode_message,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "ikev2"
MESSAGES = sorted(DATA.glob("*.bin"))
KEYS = json.loads((DATA / "sk-keys.json").read_text())


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


class CapturedCbcHmac:
    """AES-CBC + HMAC-SHA2-256-128 per the SK cipher contract, from `cryptography`."""

    iv_size = 16
    icv_size = 16
    block_size = 16

    def __init__(self, sk_e: bytes, sk_a: bytes) -> None:
        self.sk_e, self.sk_a = sk_e, sk_a

    def _icv(self, data: bytes) -> bytes:
        return hmac.new(self.sk_a, data, hashlib.sha256).digest()[:16]

    def open(self, aad: bytes, body: bytes) -> bytes:
        iv, ct, icv = body[:16], body[16:-16], body[-16:]
        if not hmac.compare_digest(self._icv(aad + iv + ct), icv):
            raise AssertionError("ICV mismatch")
        decryptor = Cipher(algorithms.AES(self.sk_e), modes.CBC(iv)).decryptor()
        return decryptor.update(ct) + decryptor.finalize()


def cipher_for(run: str, raw: bytes) -> CapturedCbcHmac:
    keys = {k: bytes.fromhex(v) for k, v in KEYS[run].items() if k.startswith("sk_")}
    if raw[19] & 0x08:  # from the original initiator
        return CapturedCbcHmac(keys["sk_ei"], keys["sk_ai"])
    return CapturedCbcHmac(keys["sk_er"], keys["sk_ar"])


def test_the_captures_are_all_there():
    assert len(MESSAGES) == 56
    assert {p.name.rsplit("-", 3)[0] for p in MESSAGES} == {"psk-trap", "cert", "cookie", "ke-frag",
                                                            "frag"}


@pytest.mark.parametrize("path", MESSAGES, ids=lambda p: p.name)
def test_every_captured_message_decodes_and_reencodes_byte_for_byte(path):
    raw = path.read_bytes()
    message = decode_message(raw)
    assert message.header.exchange in set(ExchangeType)
    assert message.header.is_response == path.stem.endswith("-resp")
    assert encode_message(message) == raw
    if message.header.exchange != ExchangeType.IKE_SA_INIT:
        assert isinstance(message.payloads[-1], Encrypted | EncryptedFragment)
        assert len(message.payloads) == 1


def _transforms(sa: SecurityAssociation) -> dict[TransformType, list[int]]:
    (proposal,) = sa.proposals
    result: dict[TransformType, list[int]] = {}
    for t in proposal.transforms:
        result.setdefault(t.type, []).append(t.id)
    return result


def test_ike_sa_init_request_in_full():
    message = decode_message(load("psk-trap-0000-init-req.bin"))
    header = message.header
    assert header.spis.initiator.hex() == KEYS["ike"]["spi_i"]
    assert not header.spis.responder_known
    assert (header.message_id, header.from_initiator, header.is_response) == (0, True, False)
    sa, ke, nonce, *notifies = message.payloads
    assert isinstance(sa, SecurityAssociation) and isinstance(ke, KeyExchange)
    (proposal,) = sa.proposals
    assert (proposal.number, proposal.protocol, proposal.spi) == (1, ProtocolId.IKE, b"")
    # charon's offer is "aes128-sha256-x25519": one of each type, key length on the ENCR.
    encr = proposal.transforms_of(TransformType.ENCR)
    assert [(t.id, t.key_length) for t in encr] == [(EncrId.AES_CBC, 128)]
    assert [t.id for t in proposal.transforms_of(TransformType.INTEG)] == [
        IntegId.HMAC_SHA2_256_128
    ]
    assert [t.id for t in proposal.transforms_of(TransformType.PRF)] == [PrfId.HMAC_SHA2_256]
    assert [t.id for t in proposal.transforms_of(TransformType.KE)] == [KeGroup.CURVE25519]
    assert ke.group == KeGroup.CURVE25519 and len(ke.data) == 32
    assert isinstance(nonce, Nonce) and len(nonce.data) == 32
    assert [n.type for n in notifies] == [
        NotifyType.NAT_DETECTION_SOURCE_IP,
        NotifyType.NAT_DETECTION_DESTINATION_IP,
        NotifyType.IKEV2_FRAGMENTATION_SUPPORTED,
        NotifyType.SIGNATURE_HASH_ALGORITHMS,
        NotifyType.REDIRECT_SUPPORTED,
    ]
    assert len(message.notify(NotifyType.NAT_DETECTION_SOURCE_IP).data) == 20  # SHA-1
    hashes = message.notify(NotifyType.SIGNATURE_HASH_ALGORITHMS).data
    assert [int.from_bytes(hashes[i : i + 2], "big") for i in range(0, len(hashes), 2)] == [
        2,
        3,
        4,
        5,
    ]


def test_ike_sa_init_response_chooses_one_transform_of_each_type():
    message = decode_message(load("psk-trap-0001-init-resp.bin"))
    assert message.header.spis.responder.hex() == KEYS["ike"]["spi_r"]
    assert message.header.is_response and not message.header.from_initiator
    assert _transforms(message.first(SecurityAssociation)) == {
        TransformType.ENCR: [EncrId.AES_CBC],
        TransformType.INTEG: [IntegId.HMAC_SHA2_256_128],
        TransformType.PRF: [PrfId.HMAC_SHA2_256],
        TransformType.KE: [KeGroup.CURVE25519],
    }
    assert message.notify(NotifyType.CHILDLESS_IKEV2_SUPPORTED) is not None
    assert message.notify(NotifyType.MULTIPLE_AUTH_SUPPORTED) is not None


def test_cookie_challenge_and_retry():
    challenge = decode_message(load("cookie-0003-init-resp.bin"))
    (cookie,) = challenge.payloads
    assert isinstance(cookie, Notify) and cookie.type == NotifyType.COOKIE
    assert not cookie.is_error and 1 <= len(cookie.data) <= 64
    retry = decode_message(load("cookie-0004-init-req.bin"))
    assert retry.payloads[0] == cookie  # RFC 7296 2.6: the cookie comes first, unchanged
    assert retry.first(SecurityAssociation) is not None


def test_invalid_ke_payload_names_the_group_and_the_retry_uses_it():
    answer = decode_message(load("ke-frag-0001-init-resp.bin"))
    (notify,) = answer.payloads
    assert notify.type == NotifyType.INVALID_KE_PAYLOAD and notify.is_error
    assert answer.errors == (notify,)
    assert int.from_bytes(notify.data, "big") == KeGroup.ECP_384
    retry = decode_message(load("ke-frag-0002-init-req.bin"))
    ke = retry.first(KeyExchange)
    assert ke.group == KeGroup.ECP_384 and len(ke.data) == 96  # x || y of P-384
    response = decode_message(load("ke-frag-0003-init-resp.bin"))
    assert response.first(CertificateRequest) is not None


def test_ike_auth_fragments_are_numbered_one_to_three():
    for role, names in (("req", (4, 5, 6)), ("resp", (7, 8, 9))):
        fragments = [decode_message(load(f"ke-frag-{n:04d}-auth-{role}.bin")) for n in names]
        skf = [m.payloads[0] for m in fragments]
        assert [(f.number, f.total) for f in skf] == [(1, 3), (2, 3), (3, 3)]
        assert skf[0].first_payload != 0  # the first inner payload's type
        assert [f.first_payload for f in skf[1:]] == [0, 0]
        assert len({m.header.message_id for m in fragments}) == 1


def _decrypted(run: str, name: str) -> tuple[bytes, Message]:
    raw = load(name)
    return raw, decrypt_message(raw, cipher_for(run, raw))


def _inner_plaintext(run: str, raw: bytes) -> bytes:
    """The inner chain as charon wrote it (padding stripped), for byte comparisons."""
    cipher = cipher_for(run, raw)
    body = decode_message(raw).payloads[-1].body
    plaintext = cipher.open(raw[: len(raw) - len(body)], body)
    return plaintext[: len(plaintext) - plaintext[-1] - 1]


SK_MESSAGES = [
    ("ike", p.name)
    for p in MESSAGES
    if p.name.startswith("psk-trap") and "init" not in p.name and int(p.name[9:13]) < 618
] + [
    ("cert", p.name)
    for p in MESSAGES
    if p.name.startswith("cert") and "init" not in p.name and int(p.name[5:9]) < 1000
]


@pytest.mark.parametrize(("run", "name"), SK_MESSAGES, ids=[n for _, n in SK_MESSAGES])
def test_captured_sk_payload_opens_and_its_inner_chain_reencodes_byte_for_byte(run, name):
    raw, message = _decrypted(run, name)
    first, chain = encode_chain(message.payloads)
    assert chain == _inner_plaintext(run, raw)
    if message.payloads:
        assert first == message.payloads[0].payload_type


def test_psk_ike_auth_request_inner_payloads():
    _, message = _decrypted("ike", "psk-trap-0002-auth-req.bin")
    assert message.first(IdInitiator) == IdInitiator(IdType.FQDN, b"gwa")
    assert message.first(IdResponder) == IdResponder(IdType.FQDN, b"gwb")
    auth = message.first(Authentication)
    assert auth.method == AuthMethod.SHARED_KEY_MIC and len(auth.data) == 32  # prf output
    (proposal,) = message.first(SecurityAssociation).proposals
    assert proposal.protocol == ProtocolId.ESP and len(proposal.spi) == 4
    assert [(t.type, t.id) for t in proposal.transforms] == [
        (TransformType.ENCR, EncrId.AES_GCM_16),
        (TransformType.ESN, 0),
    ]
    (tsi,) = message.first(TsInitiator).selectors
    (tsr,) = message.first(TsResponder).selectors
    assert (tsi.start, tsi.end) == (
        ipaddress.ip_address("10.1.0.0"),
        ipaddress.ip_address("10.1.255.255"),
    )
    assert (tsr.start, tsr.end, tsr.ip_protocol, tsr.start_port, tsr.end_port) == (
        ipaddress.ip_address("10.2.0.0"),
        ipaddress.ip_address("10.2.255.255"),
        0,
        0,
        65535,
    )
    assert message.notify(NotifyType.INITIAL_CONTACT) is not None


def test_child_rekey_and_delete_name_the_old_spi():
    _, auth = _decrypted("ike", "psk-trap-0002-auth-req.bin")
    old_spi = auth.first(SecurityAssociation).proposals[0].spi
    _, rekey = _decrypted("ike", "psk-trap-0084-ccsa-req.bin")
    rekey_sa = rekey.notify(NotifyType.REKEY_SA)
    assert (rekey_sa.protocol, rekey_sa.spi) == (ProtocolId.ESP, old_spi)
    _, delete = _decrypted("ike", "psk-trap-0086-info-req.bin")
    assert delete.payloads == (Delete(ProtocolId.ESP, (old_spi,)),)


def test_ike_sa_rekey_and_its_delete():
    _, rekey = _decrypted("ike", "psk-trap-0092-ccsa-req.bin")
    (proposal,) = rekey.first(SecurityAssociation).proposals
    assert proposal.protocol == ProtocolId.IKE and len(proposal.spi) == 8
    assert rekey.first(KeyExchange).group == KeGroup.CURVE25519
    _, delete = _decrypted("ike", "psk-trap-0094-info-req.bin")
    assert delete.payloads == (Delete(ProtocolId.IKE, ()),)
    _, answer = _decrypted("ike", "psk-trap-0095-info-resp.bin")
    assert answer.payloads == ()


def test_certificate_ike_auth_carries_cert_certreq_and_a_digital_signature():
    _, message = _decrypted("cert", "cert-0002-auth-req.bin")
    cert = message.first(Certificate)
    assert cert.encoding == 4 and cert.data[:1] == b"\x30"  # a DER SEQUENCE
    (ca_hash,) = message.first(CertificateRequest).authorities
    assert len(ca_hash) == 20
    auth = message.first(Authentication)
    assert auth.method == AuthMethod.DIGITAL_SIGNATURE
    assert auth.data[0] == len(auth.data[1 : 1 + auth.data[0]])  # RFC 7427 ASN.1 length
    assert message.first(IdInitiator).data == b"gwa.ik.test"


def test_liveness_check_is_an_empty_informational():
    _, request = _decrypted("cert", "cert-0004-info-req.bin")
    assert request.header.exchange == ExchangeType.INFORMATIONAL and request.payloads == ()
