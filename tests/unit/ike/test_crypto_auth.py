"""PSK authentication against charon's captured IKE_AUTH: the signed octets rebuilt from the
pcap equal the ones charon logged, and the AUTH computed with the PSK equals the AUTH
payload on the wire, both ways. Keys per direction; failures never show a key."""

from __future__ import annotations

import hmac

import pytest
from support.ike_capture import find, ike_messages, load_values, payload_chain, strip_padding

from espd.ike.auth import (
    AuthenticationFailed,
    PskAuthenticator,
    int_auth,
    int_auth_trailer,
    signed_octets,
)
from espd.ike.crypto.cipher import AUTH_HMAC_SHA2_256_128, ENCR_AES_CBC, ENCRS
from espd.ike.crypto.keymat import IkeLengths, ike_ciphers, ike_keys, initial_skeyseed
from espd.ike.crypto.prf import PRF_HMAC_SHA2_256

PSK = b"ikeprobe-secret-0123456789"
KEYS = load_values("psk-keys.txt")
MESSAGES = ike_messages("psk-trap-ike.pcap")
PRF = PRF_HMAC_SHA2_256
AES128 = ENCRS[(ENCR_AES_CBC, 128)]
IDI, IDR, AUTH, NONCE = 35, 36, 39, 40


def _exchange():
    """Everything the engine would hold after IKE_SA_INIT and decrypting IKE_AUTH."""
    init_i, init_r = (find(MESSAGES, 34, 0, response=r) for r in (False, True))
    ni, nr = dict(init_i.payloads())[NONCE], dict(init_r.payloads())[NONCE]
    keys = ike_keys(PRF, initial_skeyseed(PRF, ni, nr, KEYS["ike1.shared"]), ni, nr,
                    init_r.spi_i, init_r.spi_r, IkeLengths.of(PRF, AES128,
                                                              AUTH_HMAC_SHA2_256_128))
    outbound, inbound = ike_ciphers(keys, AES128, AUTH_HMAC_SHA2_256_128, initiator=True)
    inner = {}
    for response, cipher in ((False, outbound), (True, inbound)):
        aad, body, first = find(MESSAGES, 35, 1, response=response).sk_parts()
        inner[response] = dict(payload_chain(first, strip_padding(cipher.open(aad, body))))
    return init_i.raw, init_r.raw, ni, nr, keys, inner


def test_initiator_signed_octets_and_auth_match_the_wire():
    message1, _, _, nr, keys, inner = _exchange()
    octets = signed_octets(PRF, message1, nr, keys.sk_pi, inner[False][IDI])
    assert octets.octets == KEYS["auth.i.octets"]
    method, data = PskAuthenticator(PSK).build(octets)
    wire = inner[False][AUTH]
    assert (method, data) == (wire[0], wire[4:]) == (2, KEYS["auth.i"])


def test_responder_auth_verifies_and_matches_the_wire():
    _, message2, ni, _, keys, inner = _exchange()
    octets = signed_octets(PRF, message2, ni, keys.sk_pr, inner[True][IDR])
    assert octets.octets == KEYS["auth.r.octets"]
    wire = inner[True][AUTH]
    PskAuthenticator(PSK).verify(octets, wire[0], wire[4:])  # raises if it does not verify
    assert PskAuthenticator(PSK).build(octets)[1] == wire[4:] == KEYS["auth.r"]


def test_keys_per_direction_local_builds_remote_verifies():
    message1, message2, ni, nr, keys, inner = _exchange()
    mine = signed_octets(PRF, message1, nr, keys.sk_pi, inner[False][IDI])
    theirs = signed_octets(PRF, message2, ni, keys.sk_pr, inner[True][IDR])
    wire = inner[True][AUTH]
    split = PskAuthenticator(b"our own key", remote=PSK)
    split.verify(theirs, wire[0], wire[4:])
    assert split.build(mine)[1] != KEYS["auth.i"]
    with pytest.raises(AuthenticationFailed):
        PskAuthenticator(PSK, remote=b"our own key").verify(theirs, wire[0], wire[4:])


def test_wrong_key_identity_or_method_fail_and_never_show_the_key():
    _, message2, ni, _, keys, inner = _exchange()
    wire = inner[True][AUTH]
    cases = [
        (PskAuthenticator(b"ikeprobe-secret-0123456788"), inner[True][IDR], wire[0]),
        (PskAuthenticator(PSK), bytes.fromhex("02000000") + b"gwx", wire[0]),  # other ID
        (PskAuthenticator(PSK), inner[True][IDR], 14),  # a signature method
    ]
    for auth, id_body, method in cases:
        with pytest.raises(AuthenticationFailed) as error:
            auth.verify(signed_octets(PRF, message2, ni, keys.sk_pr, id_body), method, wire[4:])
        assert b"ikeprobe" not in str(error.value).encode() and "secret" not in str(error.value)
    assert repr(PskAuthenticator(PSK)) == "<PskAuthenticator>"


def test_signed_octets_append_rfc9242_int_auth():
    message1, _, _, nr, keys, inner = _exchange()
    plain = signed_octets(PRF, message1, nr, keys.sk_pi, inner[False][IDI])
    with_int = signed_octets(PRF, message1, nr, keys.sk_pi, inner[False][IDI], b"I" * 70)
    assert with_int.octets == plain.octets + b"I" * 70


def test_empty_keys_are_refused_and_wipe_zeroes_them():
    with pytest.raises(ValueError, match="empty"):
        PskAuthenticator(b"")
    with pytest.raises(ValueError, match="empty"):
        PskAuthenticator(PSK, remote=b"")
    key = bytearray(PSK)
    auth = PskAuthenticator(key)
    key[:] = bytes(len(key))  # the caller wipes its copy: the authenticator has its own
    assert auth.build(signed_octets(PRF, b"m", b"n", b"k", b"i"))[1]
    auth.wipe()
    assert not any(auth._local) and not any(auth._remote)


def test_int_auth_chains_and_the_trailer_ends_with_the_ike_auth_message_id():
    first = int_auth(PRF, b"k" * 32, b"", b"A1", b"P1")
    assert first == hmac.digest(b"k" * 32, b"A1P1", "sha256")
    second = int_auth(PRF, b"k" * 32, first, b"A2")
    assert second == hmac.digest(b"k" * 32, first + b"A2", "sha256")
    assert int_auth_trailer(b"i" * 32, b"r" * 32, 2) == b"i" * 32 + b"r" * 32 + b"\0\0\0\2"
