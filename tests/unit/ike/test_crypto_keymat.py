"""Key derivation against charon 5.9.8's own key output on a captured PSK run, and against
NIST CAVP SP 800-135 IKEv2 KDF vectors.

The capture (psk-trap-ike.pcap): IKE_SA_INIT, IKE_AUTH, a Child SA rekey (mid 2), an IKE SA
rekey (mid 4), INFORMATIONALs on the new IKE SA; suite AES_CBC_128/HMAC_SHA2_256_128/
PRF_HMAC_SHA2_256/CURVE_25519, Child SAs AES_GCM_16_128. psk-keys.txt holds what charon
logged: the X25519 shared secrets, SKEYSEEDs, SK_* and the Child SA keys.
"""

from __future__ import annotations

import hmac
import struct
from types import SimpleNamespace

import pytest
from support.ike_capture import (
    Message,
    find,
    ike_messages,
    load_values,
    payload_chain,
    strip_padding,
)

from espd.config.transforms import parse_transform
from espd.ike.crypto.cipher import AUTH_HMAC_SHA2_256_128, ENCR_AES_CBC, ENCRS
from espd.ike.crypto.keymat import (
    IkeLengths,
    additional_skeyseed,
    child_keys,
    ike_ciphers,
    ike_keys,
    initial_skeyseed,
    ppk_keys,
    rekey_skeyseed,
)
from espd.ike.crypto.prf import PRF_HMAC_SHA2_256, Prf
from espd.ike.crypto.secret import Secret

KEYS = load_values("psk-keys.txt")
MESSAGES = ike_messages("psk-trap-ike.pcap")
SA_INIT, AUTH, CREATE_CHILD_SA, INFORMATIONAL = 34, 35, 36, 37
NONCE, SA, KE, DELETE = 40, 33, 34, 42
AES128 = ENCRS[(ENCR_AES_CBC, 128)]
LENGTHS = IkeLengths.of(PRF_HMAC_SHA2_256, AES128, AUTH_HMAC_SHA2_256_128)
SK_NAMES = ("sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr")


def _payload(payloads: list[tuple[int, bytes]], kind: int) -> bytes:
    [body] = [b for k, b in payloads if k == kind]
    return body


def _initial_keys():
    init_i = find(MESSAGES, SA_INIT, 0, response=False)
    init_r = find(MESSAGES, SA_INIT, 0, response=True)
    ni, nr = _payload(init_i.payloads(), NONCE), _payload(init_r.payloads(), NONCE)
    skeyseed = initial_skeyseed(PRF_HMAC_SHA2_256, ni, nr, KEYS["ike1.shared"])
    keys = ike_keys(PRF_HMAC_SHA2_256, skeyseed, ni, nr, init_r.spi_i, init_r.spi_r, LENGTHS)
    return ni, nr, skeyseed, keys


def _decrypt(message: Message, keys, initiator_sent: bool) -> list[tuple[int, bytes]]:
    outbound, inbound = ike_ciphers(keys, AES128, AUTH_HMAC_SHA2_256_128, initiator=True)
    cipher = outbound if initiator_sent else inbound
    aad, body, first = message.sk_parts()
    return payload_chain(first, strip_padding(cipher.open(aad, body)))


def test_skeyseed_and_every_sk_key_match_charon():
    _, _, skeyseed, keys = _initial_keys()
    assert skeyseed == KEYS["ike1.skeyseed"]
    for name in SK_NAMES:
        assert getattr(keys, name) == KEYS[f"ike1.{name}"], name


def test_nonces_parsed_from_the_pcap_are_charons_child_sa_seed():
    ni, nr, _, _ = _initial_keys()
    assert ni + nr == KEYS["child1.seed"]


def test_ike_auth_child_sa_keys_match_charon_in_the_data_planes_shape():
    ni, nr, _, keys = _initial_keys()
    esp = parse_transform("esp-gcm 128")
    child = child_keys(PRF_HMAC_SHA2_256, keys.sk_d, ni, nr, esp)
    assert child.initiator_to_responder.key == KEYS["child1.key_i"]  # 16-byte key + salt
    assert child.responder_to_initiator.key == KEYS["child1.key_r"]
    assert len(child.initiator_to_responder.auth_key) == esp.auth_key_len == 0
    assert child.outbound(initiator=True) is child.initiator_to_responder
    assert child.inbound(initiator=False) is child.initiator_to_responder


def test_child_sa_rekey_keys_from_the_decrypted_create_child_sa_nonces():
    _, _, _, keys = _initial_keys()
    request = _decrypt(find(MESSAGES, CREATE_CHILD_SA, 2, response=False), keys, True)
    response = _decrypt(find(MESSAGES, CREATE_CHILD_SA, 2, response=True), keys, False)
    ni, nr = _payload(request, NONCE), _payload(response, NONCE)
    assert ni + nr == KEYS["child2.seed"]
    child = child_keys(PRF_HMAC_SHA2_256, keys.sk_d, ni, nr, parse_transform("esp-gcm 128"))
    assert child.initiator_to_responder.key == KEYS["child2.key_i"]
    assert child.responder_to_initiator.key == KEYS["child2.key_r"]


def _proposal_spi(sa_body: bytes) -> bytes:
    """The SPI of the (single) proposal of an IKE SA payload: the new IKE SPI."""
    spi_size = sa_body[6]
    return sa_body[8:8 + spi_size]


def test_ike_sa_rekey_skeyseed_and_keys_match_charon():
    _, _, _, old = _initial_keys()
    request = _decrypt(find(MESSAGES, CREATE_CHILD_SA, 4, response=False), old, True)
    response = _decrypt(find(MESSAGES, CREATE_CHILD_SA, 4, response=True), old, False)
    ni, nr = _payload(request, NONCE), _payload(response, NONCE)
    spi_i, spi_r = _proposal_spi(_payload(request, SA)), _proposal_spi(_payload(response, SA))
    assert struct.unpack("!H", _payload(request, KE)[:2])[0] == 31  # X25519 again

    skeyseed = rekey_skeyseed(PRF_HMAC_SHA2_256, old.sk_d, KEYS["ike2.shared"], ni, nr)
    assert skeyseed == KEYS["ike2.skeyseed"]
    new = ike_keys(PRF_HMAC_SHA2_256, skeyseed, ni, nr, spi_i, spi_r, LENGTHS)
    for name in SK_NAMES:
        assert getattr(new, name) == KEYS[f"ike2.{name}"], name

    # the rekeyed SA's keys open the DELETE that charon sent on it (mid 0 of the new SA)
    info = find(MESSAGES, INFORMATIONAL, 0, response=False, spi_i=spi_i)
    assert [kind for kind, _ in _decrypt(info, new, initiator_sent=True)] == [DELETE]


def test_keys_are_secrets_that_wipe_and_never_print():
    _, _, skeyseed, keys = _initial_keys()
    text = f"{keys!r} {keys.sk_d} {skeyseed!r} {skeyseed}"
    assert KEYS["ike1.sk_d"].hex() not in text and "Secret 32 bytes" in text
    assert isinstance(keys.sk_ei, Secret)
    keys.wipe()
    assert all(not any(getattr(keys, name)) for name in SK_NAMES)


# NIST CAVP SP 800-135 IKEv2 KDF, HMAC-SHA1 cases (the only ones at hand): the derivation
# functions are generic over the PRF, so a SHA-1 Prf made here exercises them. espd itself
# refuses PRF_HMAC_SHA1 (see suites).
CAVP = load_values("cavp-ikev2-kdf-sha1.txt")
SHA1_PRF = Prf(2, "prfsha1", "sha1", 20)


@pytest.mark.parametrize("v", ["a", "b"])
def test_cavp_skeyseed_keymat_and_rekey(v):
    c = {k.split(".", 1)[1]: val for k, val in CAVP.items() if k.startswith(v + ".")}
    skeyseed = initial_skeyseed(SHA1_PRF, c["ni"], c["nr"], c["gir"])
    assert skeyseed == c["skeyseed"]
    seed = c["ni"] + c["nr"] + c["spii"] + c["spir"]
    dkm = SHA1_PRF.plus(skeyseed, seed, len(c["dkm"]))
    assert dkm == c["dkm"]
    sk_d = dkm[:SHA1_PRF.size]
    assert rekey_skeyseed(SHA1_PRF, sk_d, c["gir_new"], c["ni"], c["nr"]) == c["skeyseed_rekey"]
    if "dkm_child" in c:
        half = SimpleNamespace(key_len=len(c["dkm_child"]) // 2, auth_key_len=0)
        plain = child_keys(SHA1_PRF, sk_d, c["ni"], c["nr"], half)
        assert plain.initiator_to_responder.key + plain.responder_to_initiator.key == \
            c["dkm_child"]
        pfs = child_keys(SHA1_PRF, sk_d, c["ni"], c["nr"], half, shared=c["gir_new"])
        assert pfs.initiator_to_responder.key + pfs.responder_to_initiator.key == \
            c["dkm_child_dh"]


def test_child_keys_split_encryption_before_integrity_initiator_first():
    esp = parse_transform("esp-aes 256 esp-sha256-hmac")
    sk_d, ni, nr = bytes(range(32)), b"\1" * 32, b"\2" * 32
    keymat = PRF_HMAC_SHA2_256.plus(sk_d, ni + nr, 2 * (32 + 32))
    child = child_keys(PRF_HMAC_SHA2_256, sk_d, ni, nr, esp)
    i2r, r2i = child.initiator_to_responder, child.responder_to_initiator
    assert (i2r.key, i2r.auth_key, r2i.key, r2i.auth_key) == (
        keymat[0:32], keymat[32:64], keymat[64:96], keymat[96:128])


def test_child_keys_with_pfs_and_additional_key_exchanges_follow_rfc9370_order():
    esp = parse_transform("esp-gcm 256")
    sk_d, ni, nr, g, k1, k2 = b"d" * 32, b"i" * 32, b"r" * 32, b"g" * 32, b"1" * 32, b"2" * 32
    child = child_keys(PRF_HMAC_SHA2_256, sk_d, ni, nr, esp, shared=g, additional=(k1, k2))
    expected = PRF_HMAC_SHA2_256.plus(sk_d, g + ni + nr + k1 + k2, 72)
    assert child.initiator_to_responder.key == expected[:36]
    assert child.responder_to_initiator.key == expected[36:]
    assert len(child.initiator_to_responder.key) == esp.key_len == 36


def test_ike_keys_refuse_spis_that_are_not_eight_bytes():
    with pytest.raises(ValueError, match="8 bytes"):
        ike_keys(PRF_HMAC_SHA2_256, b"s" * 32, b"i" * 32, b"r" * 32, b"x" * 4, b"y" * 8,
                 LENGTHS)


def test_additional_key_exchange_skeyseeds_follow_rfc9370():
    sk_d, ni, nr, k1, k2, g = b"d" * 32, b"i" * 32, b"r" * 32, b"1" * 1088, b"2" * 32, b"g" * 32
    prf = PRF_HMAC_SHA2_256
    # IKE_INTERMEDIATE: SKEYSEED(n) = prf(SK_d(n-1), SK(n) | Ni | Nr)
    assert additional_skeyseed(prf, sk_d, k1, ni, nr) == hmac.digest(sk_d, k1 + ni + nr,
                                                                     "sha256")
    # IKE SA rekey with IKE_FOLLOWUP_KE: prf(SK_d, g^ir | Ni | Nr | SK(1) | SK(2))
    assert rekey_skeyseed(prf, sk_d, g, ni, nr, (k1, k2)) == hmac.digest(
        sk_d, g + ni + nr + k1 + k2, "sha256")


def test_derived_child_keys_open_charons_esp_in_the_real_data_plane():
    """The Child SA keys espd derives, in the shape the data plane takes, decapsulate the
    ESP packets charon sent under them (tunnel mode, AES-GCM-128), and keep doing so
    after the Python copies are wiped (the data plane holds its own)."""
    from scapy.all import IP, Raw
    from support.ike_capture import esp_packets

    from espd.dataplane import Dataplane

    ni, nr, _, keys = _initial_keys()
    esp = parse_transform("esp-gcm 128")
    child = child_keys(PRF_HMAC_SHA2_256, keys.sk_d, ni, nr, esp)
    sender_keys = {"192.0.2.1": child.initiator_to_responder,
                   "192.0.2.2": child.responder_to_initiator}
    opened = 0
    for src, packet in esp_packets("psk-trap-ike.pcap"):
        dst = "192.0.2.2" if src == "192.0.2.1" else "192.0.2.1"
        dp = Dataplane()
        dp.add_sa(spi=struct.unpack("!I", packet[:4])[0], direction="in", transform=esp,
                  key=sender_keys[src].key, mode="tunnel", local=dst, peer=src)
        dp.commit()
        sender_keys[src].wipe()
        inner = IP(dp.decap(bytes(IP(src=src, dst=dst, proto=50) / Raw(packet))))
        expected = ("10.1.0.1", "10.2.0.1") if src == "192.0.2.1" else ("10.2.0.1", "10.1.0.1")
        assert (inner.src, inner.dst) == expected  # the ping between the two sites
        opened += 1
    assert opened == 2 and not any(child.initiator_to_responder.key)


def test_ppk_mixes_sk_d_and_sk_p_only_into_copies_of_their_own():
    _, _, _, keys = _initial_keys()
    ppk = b"P" * 32
    mixed = ppk_keys(PRF_HMAC_SHA2_256, ppk, keys)
    for name in ("sk_d", "sk_pi", "sk_pr"):  # RFC 8784 3: prf+(PPK, key), same length
        assert getattr(mixed, name) == PRF_HMAC_SHA2_256.plus(ppk, getattr(keys, name), 32)
    keys.wipe()
    assert mixed.sk_ei == KEYS["ike1.sk_ei"] and mixed.sk_ai == KEYS["ike1.sk_ai"]
