"""Suites: names both ways, negotiated ids to algorithms, RFC 8247 refusals with a
replacement named, ESP transform ids <-> the data plane's transforms."""

from __future__ import annotations

import pytest

from espd.config.transforms import parse_transform
from espd.ike.crypto import esp, suites
from espd.ike.crypto.dh import CURVE25519, ECP_256, ML_KEM_768, MODP_2048
from espd.ike.crypto.keymat import ike_keys
from espd.ike.crypto.prf import PRF_HMAC_SHA2_256, PRF_HMAC_SHA2_384
from espd.ike.crypto.suites import SuiteError, parse_suite

ISSUE_SUITES = ["aes256gcm16-prfsha384-x25519", "aes128gcm16-prfsha256-ecp256",
                "chacha20poly1305-prfsha256-x25519", "aes256-sha256-prfsha256-modp2048"]


@pytest.mark.parametrize("name", ISSUE_SUITES + [
    "aes128-sha384-prfsha384-ecp384", "aes256-sha512-prfsha512-ecp521",
    "aes256gcm16-prfsha512-modp3072", "aes256gcm16-prfsha384-x25519-ke1_mlkem768",
    "aes256gcm16-prfsha384-ecp384-ke1_mlkem1024-ke2_mlkem768"])
def test_names_round_trip(name):
    assert parse_suite(name).name == name
    assert str(parse_suite(name.upper())) == name


def test_parsed_suites_hold_the_algorithms():
    s = parse_suite("aes256gcm16-prfsha384-x25519")
    assert (s.encr.ident, s.encr.key_bits, s.integ, s.prf, s.ke) == (
        20, 256, None, PRF_HMAC_SHA2_384, CURVE25519)
    s = parse_suite("aes256-sha256-modp2048")  # strongSwan: the PRF follows the integrity
    assert (s.encr.ident, s.integ.ident, s.prf, s.ke) == (12, 12, PRF_HMAC_SHA2_256, MODP_2048)
    assert s.name == "aes256-sha256-prfsha256-modp2048"
    assert parse_suite("aes128gcm-prfsha256-curve25519").name == "aes128gcm16-prfsha256-x25519"
    assert parse_suite("aes256gcm16-prfsha384-x25519-ke1_mlkem768").additional == (ML_KEM_768,)


@pytest.mark.parametrize("name", ISSUE_SUITES)
def test_a_suite_keys_both_directions_of_an_ike_sa(name):
    s = parse_suite(name)
    keys = ike_keys(s.prf, b"s" * s.prf.size, b"i" * 32, b"r" * 32, b"I" * 8, b"R" * 8,
                    s.lengths)
    i_out, i_in = s.ciphers(keys, initiator=True)
    r_out, r_in = s.ciphers(keys, initiator=False)
    plaintext = b"p" * i_out.block_size * 2
    assert r_in.open(b"hdr", i_out.seal(b"hdr", plaintext)) == plaintext
    assert i_in.open(b"hdr", r_out.seal(b"hdr", plaintext)) == plaintext
    assert len(keys.sk_ei) == s.encr.key_size  # GCM and ChaCha: + 4-byte salt
    assert len(keys.sk_ai) == (s.integ.key_size if s.integ else 0)


@pytest.mark.parametrize(("name", "status", "instead"), [
    ("3des-sha256-modp2048", "MAY in RFC 8247", "aes256gcm16"),
    ("des-sha256-modp2048", "MUST NOT in RFC 8247", "aes256gcm16"),
    ("aes128-md5-modp2048", "MUST NOT in RFC 8247", "sha256"),
    ("aes128-sha1-modp2048", "MUST- in RFC 8247", "sha256"),
    ("aes128-sha256-prfsha1-modp2048", "MUST- in RFC 8247", "prfsha256"),
    ("aes128-sha256-prfmd5-modp2048", "MUST NOT in RFC 8247", "prfsha256"),
    ("aes128-sha256-modp768", "MUST NOT in RFC 8247", "x25519"),
    ("aes128-sha256-modp1024", "MUST NOT in RFC 8247", "x25519"),
    ("aes128-sha256-modp1536", "SHOULD NOT in RFC 8247", "x25519"),
    ("aes128-sha256-modp2048s256", "SHOULD NOT in RFC 8247", "x25519"),
    ("aes128-sha256-prfaesxcbc-x25519", "not implemented", "prfsha256"),
    ("aes128-sha256-mlkem512", "not implemented", "mlkem768"),
])
def test_refused_algorithms_name_their_status_and_a_replacement(name, status, instead):
    with pytest.raises(SuiteError) as error:
        parse_suite(name)
    assert status in str(error.value) and f"use '{instead}'" in str(error.value)


@pytest.mark.parametrize(("name", "message"), [
    ("aes256gcm16-sha256-prfsha256-x25519", "AEAD and takes no integrity"),
    ("aes256-prfsha256-x25519", "needs an integrity algorithm"),
    ("aes256gcm16-x25519", "needs a PRF"),
    ("aes256gcm16-prfsha256", "needs an encryption algorithm and a key exchange"),
    ("aes256gcm16-prfsha256-x25519-ecp256", "two of one kind"),
    ("aes256gcm16-prfsha256-x25519-ke2_mlkem768", "ke1_NAME, ke2_NAME"),
    ("aes256gcm16-prfsha256-x25519-rot13", "unknown IKE algorithm"),
    ("aes192-sha256-x25519", "use 'aes256'"),
])
def test_malformed_suites_say_what_to_write(name, message):
    with pytest.raises(SuiteError, match=message):
        parse_suite(name)


def test_negotiated_ids_map_to_algorithms_or_none():
    assert suites.encr(20, 256).name == "aes256gcm16"
    assert suites.encr(28, None).name == "chacha20poly1305"  # RFC 7634: no Key Length
    assert suites.encr(12, None) is None and suites.encr(12, 192) is None
    assert suites.encr(3, None) is None
    assert suites.integ(12).icv_size == 16 and suites.integ(2) is None
    assert suites.prf(6) is PRF_HMAC_SHA2_384 and suites.prf(2) is None
    assert suites.group(19) is ECP_256 and suites.group(2) is None


def test_refusal_explains_ids_for_the_no_proposal_chosen_log_line():
    assert "MUST NOT in RFC 8247; use x25519" in suites.refusal(suites.KE, 2)
    assert "192-bit key is not offered" in suites.refusal(suites.ENCR, 12, 192)
    assert "use 128 or 256 bits" in suites.refusal(suites.ENCR, 12, 192)
    assert "transform type 9 7 is not supported" in suites.refusal(9, 7)


def test_ios_words_map_onto_the_same_names():
    words = [suites.IOS_ENCRYPTION["aes-gcm-256"], suites.IOS_PRF["sha384"],
             suites.ios_group(31)]
    assert parse_suite("-".join(words)).name == "aes256gcm16-prfsha384-x25519"
    assert suites.ios_group(2) == "modp1024"  # refused by parse_suite, with the reason
    with pytest.raises(SuiteError, match="MUST NOT"):
        parse_suite(f"aes128-sha256-{suites.ios_group(2)}")
    with pytest.raises(SuiteError, match="group 99"):
        suites.ios_group(99)


@pytest.mark.parametrize("spec", ["esp-gcm 128", "esp-gcm 256", "esp-chacha20-poly1305",
                                  "esp-aes 128 esp-sha256-hmac", "esp-aes 256 esp-sha512-hmac",
                                  "esp-aes 192 esp-sha384-hmac", "esp-null esp-sha256-hmac",
                                  "esp-aes esp-sha-hmac"])
def test_esp_transform_ids_round_trip(spec):
    t = parse_transform(spec)
    ids = esp.proposal_ids(t)
    assert esp.transform(ids.encr, ids.key_bits, ids.integ) == t


def test_esp_ids_the_data_plane_cannot_run_map_to_none():
    assert esp.proposal_ids(parse_transform("esp-gcm 256")) == esp.EspProposalIds(20, 256, None)
    assert esp.proposal_ids(parse_transform("esp-chacha20-poly1305")).key_bits is None
    assert esp.transform(3, None, 2) is None  # 3DES
    assert esp.transform(20, 256, 12) is None  # AEAD with INTEG
    assert esp.transform(12, None, 12) is None  # AES-CBC without Key Length
    assert esp.transform(12, 128, 1) is None  # HMAC-MD5
    assert esp.transform(11, None, None) is None  # NULL without integrity


def test_negotiated_ids_make_a_suite_or_say_which_transform_is_refused():
    s = suites.negotiated(20, 256, None, 6, 31)
    assert s.name == "aes256gcm16-prfsha384-x25519"
    assert suites.negotiated(28, 0, 0, 5, 19, (36,)).name == \
        "chacha20poly1305-prfsha256-ecp256-ke1_mlkem768"
    assert suites.negotiated(12, 128, 12, 5, 14).name == "aes128-sha256-prfsha256-modp2048"
    for ids, reason in (((3, None, 12, 5, 14), "3DES"), ((12, 128, 1, 5, 14), "MD5"),
                        ((12, 128, 12, 2, 14), "PRF_HMAC_SHA1"), ((12, 128, 12, 5, 2), "group 2"),
                        ((20, 256, None, 5, 31, (35,)), "ML-KEM-512"),
                        ((20, 256, 12, 5, 31), "AEAD")):
        with pytest.raises(SuiteError, match=reason):
            suites.negotiated(*ids)


def test_a_kem_this_cryptography_cannot_run_is_refused_at_config_and_negotiation(monkeypatch):
    from espd.ike.crypto.dh import ML_KEM_1024

    monkeypatch.setitem(ML_KEM_1024.__dict__, "available", False)  # as before cryptography 47
    with pytest.raises(SuiteError, match="needs cryptography >= 48"):
        parse_suite("aes256gcm16-prfsha384-x25519-ke1_mlkem1024")
    with pytest.raises(SuiteError, match="needs cryptography >= 48"):
        suites.negotiated(20, 256, None, 6, 31, (37,))
    assert parse_suite("aes256gcm16-prfsha384-x25519-ke1_mlkem768").additional == (ML_KEM_768,)
