"""RFC 7383 fragments charon 5.9.8 sent to charon 5.9.8 (fragment_size = 400, certificate
IKE_AUTH, AES-CBC + HMAC-SHA2-256; tests/data/ikev2/frag-*, keys from charon's own log):
espd derives the same keys, opens each fragment on its own, reassembles them in any order
into the IKE_AUTH whose AUTH verifies, refuses a forged fragment alone, and cuts the same
message into fragments of exactly charon's sizes."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from cryptography import x509
from support.ike_capture import DATA, Message, load_values

from espd.ike import codec
from espd.ike.auth import signed_octets
from espd.ike.auth.signature import SignatureAuthenticator
from espd.ike.crypto.cipher import AUTH_HMAC_SHA2_256_128, ENCR_AES_CBC, ENCRS, IntegrityError
from espd.ike.crypto.keymat import IkeLengths, ike_ciphers, ike_keys, initial_skeyseed
from espd.ike.crypto.prf import PRF_HMAC_SHA2_256
from espd.ike.engine.fragmentation import message_limit
from espd.ike.sa.ike_sa import Endpoint

KEYS = load_values("frag-keys.txt")
PRF = PRF_HMAC_SHA2_256
AES128 = ENCRS[(ENCR_AES_CBC, 128)]
NONCE = 40
REQUEST = [f"frag-{n:04d}-auth-req.bin" for n in (2, 3, 4)]
RESPONSE = [f"frag-{n:04d}-auth-resp.bin" for n in (5, 6, 7)]
CHARON_FRAGMENT_SIZE = 400


def raw(name: str) -> bytes:
    return (DATA / name).read_bytes()


def keys_and_ciphers():
    """SK_* from the logged shared secret and the captured nonces (espd's keymat), and the
    initiator's (gwa's) outbound and inbound SK ciphers."""
    init_i = Message("192.0.2.1", raw("frag-0000-init-req.bin"))
    init_r = Message("192.0.2.2", raw("frag-0001-init-resp.bin"))
    ni, nr = dict(init_i.payloads())[NONCE], dict(init_r.payloads())[NONCE]
    skeyseed = initial_skeyseed(PRF, ni, nr, bytearray(KEYS["shared"]))
    keys = ike_keys(PRF, skeyseed, ni, nr, init_r.spi_i, init_r.spi_r,
                    IkeLengths.of(PRF, AES128, AUTH_HMAC_SHA2_256_128))
    outbound, inbound = ike_ciphers(keys, AES128, AUTH_HMAC_SHA2_256_128, initiator=True)
    return skeyseed, keys, outbound, inbound, ni, nr


def test_espd_derives_the_keys_charon_logged():
    skeyseed, keys, *_ = keys_and_ciphers()
    assert skeyseed == KEYS["skeyseed"]
    for name in ("sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr"):
        assert getattr(keys, name) == KEYS[name], name


def test_charons_fragments_are_numbered_and_fit_its_fragment_size():
    for names in (REQUEST, RESPONSE):
        skf = [codec.decode_message(raw(n)).payloads[-1] for n in names]
        assert [(f.number, f.total) for f in skf] == [(1, 3), (2, 3), (3, 3)]
        assert skf[0].first_payload != 0 and {f.first_payload for f in skf[1:]} == {0}
        # 4500: IPv4 + UDP + non-ESP marker = 32 bytes besides the IKE message
        assert max(len(raw(n)) for n in names) + 32 <= CHARON_FRAGMENT_SIZE


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_each_fragment_opens_alone_and_any_order_reassembles_ike_auth(order):
    _, keys, outbound, inbound, ni, nr = keys_and_ciphers()
    messages = {}
    for names, cipher in ((REQUEST, outbound), (RESPONSE, inbound)):
        fragments = [codec.decrypt_fragment(raw(names[i]), cipher) for i in order]
        reassembly = codec.Reassembly(fragments[0].header.message_id, 0.0)
        results = [reassembly.add(f) for f in fragments]
        assert results[:2] == [None, None] and results[2] is not None
        messages[names is REQUEST] = results[2]
    request, response = messages[True], messages[False]
    assert request.header.exchange == codec.ExchangeType.IKE_AUTH
    assert [type(p).__name__ for p in request.payloads[:2]] == ["IdInitiator", "Certificate"]
    assert request.first(codec.IdInitiator).data == b"gwa.ik.test"
    assert request.first(codec.Certificate).data == raw("gwa-cert.der")
    assert response.first(codec.IdResponder).data == b"gwb.ik.test"
    assert response.first(codec.TsInitiator) is not None
    # the reassembled AUTH payloads verify against the certificates over the signed octets
    # espd computes, which are charon's
    init_i, init_r = raw("frag-0000-init-req.bin"), raw("frag-0001-init-resp.bin")
    for message, init, nonce, sk_p, ident, cert, logged in (
            (request, init_i, nr, keys.sk_pi, codec.IdInitiator, "gwa-cert.der", "octets.i"),
            (response, init_r, ni, keys.sk_pr, codec.IdResponder, "gwb-cert.der", "octets.r")):
        octets = signed_octets(PRF, init, nonce, sk_p, message.first(ident).encode_body())
        assert octets.octets == KEYS[logged]
        auth = message.first(codec.Authentication)
        peer_key = x509.load_der_x509_certificate(raw(cert)).public_key()
        SignatureAuthenticator(peer_key=peer_key).verify(octets, auth.method, auth.data)


def test_a_forged_fragment_fails_alone():
    _, _, outbound, *_ = keys_and_ciphers()
    forged = bytearray(raw(REQUEST[1]))
    forged[100] ^= 0x01
    with pytest.raises(IntegrityError):
        codec.decrypt_fragment(bytes(forged), outbound)
    for name in (REQUEST[0], REQUEST[2]):
        assert codec.decrypt_fragment(raw(name), outbound).data


def test_espd_cuts_the_message_into_charons_fragment_sizes():
    _, _, outbound, inbound, *_ = keys_and_ciphers()
    local = Endpoint(ipaddress.ip_address("192.0.2.1"), 4500)
    limit = message_limit(CHARON_FRAGMENT_SIZE, local, 4500)
    for names, cipher in ((REQUEST, outbound), (RESPONSE, inbound)):
        fragments = [codec.decrypt_fragment(raw(n), cipher) for n in names]
        whole = codec.reassemble(fragments)
        ours = codec.encrypt_fragments(whole.header, whole.payloads, cipher, limit)
        assert [len(d) for d in ours] == [len(raw(n)) for n in names]
        again = codec.reassemble([codec.decrypt_fragment(d, cipher) for d in ours])
        assert again == whole
