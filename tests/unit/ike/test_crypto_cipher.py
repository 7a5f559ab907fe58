"""SK ciphers: charon's captured IKE_AUTH opened with the SK keys charon logged; tampering
anywhere fails closed; the AEAD construction (salt || explicit IV, AAD) checked on charon's
own AES-GCM ESP packets; every suite round-trips and never reuses an AEAD IV."""

from __future__ import annotations

import pytest
from support.ike_capture import (
    esp_packets,
    find,
    ike_messages,
    load_values,
    payload_chain,
    strip_padding,
)

from espd.ike.crypto.cipher import (
    AUTH_HMAC_SHA2_256_128,
    AUTH_HMAC_SHA2_384_192,
    AUTH_HMAC_SHA2_512_256,
    ENCR_AES_CBC,
    ENCR_AES_GCM_16,
    ENCRS,
    AeadCipher,
    IntegrityError,
)
from espd.ike.crypto.keymat import IkeLengths, ike_ciphers, ike_keys, initial_skeyseed
from espd.ike.crypto.prf import PRF_HMAC_SHA2_256

KEYS = load_values("psk-keys.txt")
MESSAGES = ike_messages("psk-trap-ike.pcap")
AES128 = ENCRS[(ENCR_AES_CBC, 128)]
IDI, IDR, AUTH = 35, 36, 39


def _auth_ciphers():
    """(initiator's outbound, initiator's inbound) keyed with the SK_* charon logged."""
    sk = {n: KEYS[f"ike1.{n}"] for n in ("sk_ei", "sk_ai", "sk_er", "sk_ar")}
    return (AES128.cipher(sk["sk_ei"], AUTH_HMAC_SHA2_256_128, sk["sk_ai"]),
            AES128.cipher(sk["sk_er"], AUTH_HMAC_SHA2_256_128, sk["sk_ar"]))


def test_captured_ike_auth_request_opens_with_sk_ei_and_its_icv_verifies():
    outbound, _ = _auth_ciphers()
    aad, body, first = find(MESSAGES, 35, 1, response=False).sk_parts()
    inner = payload_chain(first, strip_padding(outbound.open(aad, body)))
    kinds = [kind for kind, _ in inner]
    assert kinds[0] == IDI and IDR in kinds and AUTH in kinds
    assert dict(inner)[IDI] == bytes.fromhex("02000000") + b"gwa"  # ID_FQDN gwa


def test_captured_ike_auth_response_opens_with_sk_er():
    _, inbound = _auth_ciphers()
    aad, body, first = find(MESSAGES, 35, 1, response=True).sk_parts()
    inner = payload_chain(first, strip_padding(inbound.open(aad, body)))
    assert inner[0] == (IDR, bytes.fromhex("02000000") + b"gwb")


def test_own_derivation_opens_the_capture_too():
    init_i = find(MESSAGES, 34, 0, response=False)
    init_r = find(MESSAGES, 34, 0, response=True)
    ni = dict(init_i.payloads())[40]
    nr = dict(init_r.payloads())[40]
    prf = PRF_HMAC_SHA2_256
    keys = ike_keys(prf, initial_skeyseed(prf, ni, nr, KEYS["ike1.shared"]), ni, nr,
                    init_r.spi_i, init_r.spi_r,
                    IkeLengths.of(prf, AES128, AUTH_HMAC_SHA2_256_128))
    # the responder's view: inbound is keyed with SK_ei
    _, inbound = ike_ciphers(keys, AES128, AUTH_HMAC_SHA2_256_128, initiator=False)
    aad, body, _ = find(MESSAGES, 35, 1, response=False).sk_parts()
    assert inbound.open(aad, body)


@pytest.mark.parametrize("where", ["aad", "iv", "ciphertext", "icv"])
def test_a_flipped_bit_anywhere_is_an_integrity_error(where):
    outbound, _ = _auth_ciphers()
    aad, body, _ = find(MESSAGES, 35, 1, response=False).sk_parts()
    at = {"aad": 0, "iv": len(aad), "ciphertext": len(aad) + 20, "icv": -1}[where]
    message = bytearray(aad + body)
    message[at] ^= 0x01
    with pytest.raises(IntegrityError, match="ICV does not verify"):
        outbound.open(bytes(message[:len(aad)]), bytes(message[len(aad):]))


def test_wrong_key_and_truncated_bodies_fail_closed():
    outbound, inbound = _auth_ciphers()
    aad, body, _ = find(MESSAGES, 35, 1, response=False).sk_parts()
    with pytest.raises(IntegrityError):
        inbound.open(aad, body)  # SK_er cannot open what SK_ei sealed
    for cut in (0, 15, 16 + 16, len(body) - 1):
        with pytest.raises(IntegrityError):
            outbound.open(aad, body[:cut])


def test_aead_nonce_and_aad_construction_matches_charons_esp_gcm():
    """RFC 4106 ESP and RFC 5282 IKE build AES-GCM the same way: key || salt from the
    keymat, nonce = salt || 8-byte explicit IV, AAD in front. charon's ESP packets of the
    IKE_AUTH Child SA open with AeadCipher and the Child keys charon logged."""
    keys = {"192.0.2.1": KEYS["child1.key_i"], "192.0.2.2": KEYS["child1.key_r"]}
    opened = 0
    for src, esp in esp_packets("psk-trap-ike.pcap"):
        cipher = ENCRS[(ENCR_AES_GCM_16, 128)].cipher(keys[src])
        inner = cipher.open(esp[:8], esp[8:])  # AAD = SPI || sequence number
        assert inner[-1] in (4, 41)  # ESP trailer: next header IPv4 (tunnel mode)
        opened += 1
    assert opened == 2


SUITES = [
    ("aes128gcm16", None), ("aes256gcm16", None), ("chacha20poly1305", None),
    ("aes128", AUTH_HMAC_SHA2_256_128), ("aes256", AUTH_HMAC_SHA2_384_192),
    ("aes256", AUTH_HMAC_SHA2_512_256),
]


def _cipher(name, integ):
    [encr] = [e for e in ENCRS.values() if e.name == name]
    sk_e = bytes(range(encr.key_size))
    if integ:
        return encr.cipher(sk_e, integ, bytes(integ.key_size)), encr
    return encr.cipher(sk_e), encr


@pytest.mark.parametrize(("name", "integ"), SUITES)
def test_seal_then_open_round_trips_with_the_contracts_sizes(name, integ):
    sealer, encr = _cipher(name, integ)
    opener, _ = _cipher(name, integ)
    aad = b"H" * 32
    plaintext = b"P" * (sealer.block_size * 3)
    body = sealer.seal(aad, plaintext)
    assert len(body) == sealer.iv_size + len(plaintext) + sealer.icv_size
    assert opener.open(aad, body) == plaintext
    assert (sealer.iv_size, sealer.block_size) == ((8, 1) if encr.aead else (16, 16))
    assert sealer.icv_size == (integ.icv_size if integ else 16)
    with pytest.raises(IntegrityError):
        opener.open(aad + b"x", body)


@pytest.mark.parametrize(("name", "integ"), SUITES)
def test_ivs_never_repeat(name, integ):
    sealer, encr = _cipher(name, integ)
    ivs = {sealer.seal(b"", b"\0" * sealer.block_size)[:sealer.iv_size] for _ in range(200)}
    assert len(ivs) == 200
    if encr.aead:
        assert sorted(ivs)[:2] == [bytes(8), (1).to_bytes(8, "big")]  # a counter


def test_aead_refuses_to_seal_once_the_iv_counter_is_spent():
    sealer, _ = _cipher("aes256gcm16", None)
    assert isinstance(sealer, AeadCipher)
    sealer._next_iv = 2**64 - 1
    sealer.seal(b"", b"last")
    with pytest.raises(OverflowError, match="rekey"):
        sealer.seal(b"", b"one more")


def test_cbc_refuses_unpadded_plaintext_and_wrong_key_sizes():
    sealer, encr = _cipher("aes128", AUTH_HMAC_SHA2_256_128)
    with pytest.raises(ValueError, match="not padded"):
        sealer.seal(b"", b"x" * 17)
    with pytest.raises(ValueError, match="16-byte SK_e"):
        encr.cipher(b"k" * 20, AUTH_HMAC_SHA2_256_128, bytes(32))
    with pytest.raises(ValueError, match="integrity"):
        encr.cipher(b"k" * 16)


def test_cipher_repr_shows_no_key():
    sealer, _ = _cipher("aes256gcm16", None)
    assert repr(sealer) == "<aes256gcm16 SK cipher>"
