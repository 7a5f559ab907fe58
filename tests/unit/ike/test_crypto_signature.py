"""RFC 7427 signature AUTH through the same Authenticator interface as PSK: charon's
ECDSA-SHA256 AUTH payloads of the captured certificate run verify against the gateways'
certificates; espd signs and verifies every algorithm it names; the AlgorithmIdentifier
bytes equal those `cryptography` writes into certificates; refusals fail closed."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID
from support.ike_capture import DATA, Message, load_values, payload_chain, strip_padding

from espd.ike.auth import AuthenticationFailed, signed_octets
from espd.ike.auth.signature import ALGORITHMS, SignatureAuthenticator
from espd.ike.crypto.cipher import AUTH_HMAC_SHA2_256_128, ENCR_AES_CBC, ENCRS
from espd.ike.crypto.keymat import IkeLengths, ike_ciphers, ike_keys, initial_skeyseed
from espd.ike.crypto.prf import PRF_HMAC_SHA2_256

KEYS = load_values("cert-keys.txt")
PRF = PRF_HMAC_SHA2_256
AES128 = ENCRS[(ENCR_AES_CBC, 128)]
IDI, IDR, AUTH, NONCE = 35, 36, 39, 40


def _message(name: str, src: str) -> Message:
    return Message(src, (DATA / name).read_bytes())


def _cert_key(name: str):
    return x509.load_der_x509_certificate((DATA / name).read_bytes()).public_key()


def _capture():
    init_i = _message("cert-0000-init-req.bin", "192.0.2.1")
    init_r = _message("cert-0001-init-resp.bin", "192.0.2.2")
    ni, nr = dict(init_i.payloads())[NONCE], dict(init_r.payloads())[NONCE]
    skeyseed = initial_skeyseed(PRF, ni, nr, KEYS["shared"])
    keys = ike_keys(PRF, skeyseed, ni, nr, init_r.spi_i, init_r.spi_r,
                    IkeLengths.of(PRF, AES128, AUTH_HMAC_SHA2_256_128))
    outbound, inbound = ike_ciphers(keys, AES128, AUTH_HMAC_SHA2_256_128, initiator=True)
    inner = {}
    for name, src, cipher in (("cert-0002-auth-req.bin", "192.0.2.1", outbound),
                              ("cert-0003-auth-resp.bin", "192.0.2.2", inbound)):
        aad, body, first = _message(name, src).sk_parts()
        inner[src] = dict(payload_chain(first, strip_padding(cipher.open(aad, body))))
    octets_i = signed_octets(PRF, init_i.raw, nr, keys.sk_pi, inner["192.0.2.1"][IDI])
    octets_r = signed_octets(PRF, init_r.raw, ni, keys.sk_pr, inner["192.0.2.2"][IDR])
    return skeyseed, keys, inner, octets_i, octets_r


def test_the_certificate_runs_keys_match_charon_too():
    skeyseed, keys, _, _, _ = _capture()
    assert skeyseed == KEYS["skeyseed"]
    for name in ("sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr"):
        assert getattr(keys, name) == KEYS[name], name


def test_charons_ecdsa_auth_payloads_verify_against_the_gateway_certificates():
    _, _, inner, octets_i, octets_r = _capture()
    assert octets_i.octets == KEYS["octets.i"] and octets_r.octets == KEYS["octets.r"]
    for src, octets, cert in (("192.0.2.1", octets_i, "gwa-cert.der"),
                              ("192.0.2.2", octets_r, "gwb-cert.der")):
        auth = inner[src][AUTH]
        assert auth[0] == 14  # RFC 7427 digital signature
        SignatureAuthenticator(peer_key=_cert_key(cert)).verify(octets, auth[0], auth[4:])


def test_a_wrong_certificate_tampered_octets_or_another_method_fail():
    _, _, inner, octets_i, octets_r = _capture()
    auth = inner["192.0.2.2"][AUTH]
    cases = [
        (SignatureAuthenticator(peer_key=_cert_key("gwa-cert.der")), octets_r, auth[0],
         "does not verify"),
        (SignatureAuthenticator(peer_key=_cert_key("gwb-cert.der")), octets_i, auth[0],
         "does not verify"),
        (SignatureAuthenticator(peer_key=_cert_key("gwb-cert.der")), octets_r, 2, "method 2"),
        (SignatureAuthenticator(), octets_r, auth[0], "no public key"),
    ]
    for authenticator, octets, method, message in cases:
        with pytest.raises(AuthenticationFailed, match=message):
            authenticator.verify(octets, method, auth[4:])


KEYGEN = {
    "ecdsa-sha256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ecdsa-sha384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "ecdsa-sha512": lambda: ec.generate_private_key(ec.SECP521R1()),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key(name):
    return KEYGEN[name]() if name in KEYGEN else RSA_KEY


@pytest.mark.parametrize("name", [a.name for a in ALGORITHMS])
def test_sign_then_verify_and_a_flipped_bit_fails(name):
    key = _key(name)
    octets = signed_octets(PRF, b"message", b"nonce", b"sk_p", b"\x02\0\0\0gw")
    method, data = SignatureAuthenticator(key, algorithm=name).build(octets)
    verifier = SignatureAuthenticator(peer_key=key.public_key())
    verifier.verify(octets, method, data)
    forged = bytearray(data)
    forged[-1] ^= 1
    with pytest.raises(AuthenticationFailed):
        verifier.verify(octets, method, bytes(forged))


def _self_signed(key, **sign) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "espd test")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(1)
               .not_valid_before(datetime.datetime(2020, 1, 1))
               .not_valid_after(datetime.datetime(2030, 1, 1)))
    return builder.sign(key, **sign).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("name", [a.name for a in ALGORITHMS])
def test_algorithm_identifiers_are_the_der_cryptography_writes(name):
    (algorithm,) = [a for a in ALGORITHMS if a.name == name]
    digest = {"sha256": hashes.SHA256, "sha384": hashes.SHA384,
              "sha512": hashes.SHA512}.get(algorithm.hash)
    sign: dict = {"algorithm": digest() if digest else None}
    if algorithm.kind == "pss":
        sign["rsa_padding"] = padding.PSS(padding.MGF1(digest()), digest.digest_size)
    assert algorithm.der in _self_signed(_key(name), **sign)


def test_sha1_unknown_and_mismatched_algorithms_are_refused():
    octets = signed_octets(PRF, b"m", b"n", b"k", b"i")
    peer = ec.generate_private_key(ec.SECP256R1()).public_key()
    verifier = SignatureAuthenticator(peer_key=peer)
    sha1 = bytes.fromhex("300906072a8648ce3d0401")
    ed = bytes.fromhex("300506032b6570")
    for data, message in ((bytes((len(sha1),)) + sha1 + b"sig", "SHA-1 signatures are refused"),
                          (b"\x03\x30\x01\x00sig", "unknown"),
                          (bytes((len(ed),)) + ed + b"sig", "cannot do"),
                          (b"\x20short", "too short"), (b"", "too short")):
        with pytest.raises(AuthenticationFailed, match=message):
            verifier.verify(octets, 14, data)
    with pytest.raises(ValueError, match="does not fit"):
        SignatureAuthenticator(ed25519.Ed25519PrivateKey.generate(), algorithm="ecdsa-sha256")
    with pytest.raises(ValueError, match="unknown signature algorithm"):
        SignatureAuthenticator(algorithm="dsa-sha1")
