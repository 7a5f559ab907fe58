"""Crypto maps keyed by IKEv2: the TOML schema ([ike], [ike_peer.*], keying = "ike"), the IOS
import (crypto ikev2 proposal/policy/keyring/profile, isakmp mapped onto IKEv2), and the
translation to the IKE engine's settings (espd.policy.ike_plan)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from espd.config.ios import parse_ios
from espd.config.load import load
from espd.config.model import ConfigError, Dpd, IkeIdentity, parse_identity
from espd.config.toml import parse_toml
from espd.policy.ike_plan import ike_settings, wipe_ike_keys
from espd.policy.plan import build_plan
from espd.policy.selectors import TrafficSelector

CANARY_PSK = "canary-psk-c0ffee-0123456789"

TOML = f"""\
[daemon]
local = "192.0.2.1"

[ike]
proposals = ["aes256gcm16-prfsha384-x25519", "aes256-sha256-modp2048"]
lifetime = 28800
dpd = {{ interval = 10, retry = 3, mode = "on-demand" }}

[ike_peer.gwb]
address = "192.0.2.2"
psk = "{CANARY_PSK}"
remote_id = "fqdn:gwb.example.net"

[access_list.LAN]
rules = ["permit tcp 10.1.0.0/16 10.2.0.0/16 eq 5201", "permit ip 10.1.0.0/16 10.3.0.0/16"]

[transform_set.GCM]
transforms = ["esp-gcm 256"]

[transform_set.CBC]
transforms = ["esp-aes 256", "esp-sha256-hmac"]

[[crypto_map]]
name = "vpn"
seq = 10
keying = "ike"
peer = "192.0.2.2"
match_address = "LAN"
transform_sets = ["GCM", "CBC"]
pfs = "group19"
start = "immediate"
lifetime = {{ seconds = 1800, kilobytes = 100000, packets = 5000000 }}
"""


NO_KEY = ("23: crypto map vpn 10: no pre-shared key for peer 192.0.2.2; add '[ike_peer.NAME]' "
          "with 'address = \"192.0.2.2\"' and 'psk_file = \"/etc/espd/NAME.psk\"' (IOS: "
          "'crypto ikev2 keyring' with 'peer', 'address 192.0.2.2' and 'pre-shared-key ...')")


def refusal_toml(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_toml(text, "c.toml")
    assert CANARY_PSK not in str(e.value) and "c0ffee" not in str(e.value)
    return [f"{p.where.line}: {p.message}" for p in e.value.problems]


def test_toml_ike_entry_loads_and_translates_to_engine_settings():
    config = parse_toml(TOML, "c.toml")
    (entry,) = config.crypto_maps
    assert entry.keying == "ike" and entry.inbound is None and entry.outbound is None
    assert entry.transform_sets == ("GCM", "CBC") and entry.encapsulation == "auto"
    assert (entry.pfs, entry.start, entry.lifetime.packets) == ("ecp256", "immediate", 5000000)
    assert config.ike.proposals == ("aes256gcm16-prfsha384-x25519",
                                    "aes256-sha256-prfsha256-modp2048")
    assert config.ike.dpd == Dpd(10, 3, "on-demand") and config.ike.lifetime == 28800
    (peer,) = config.ike_peers
    assert peer.remote_id == IkeIdentity("fqdn", "gwb.example.net")
    assert CANARY_PSK not in repr(peer) and CANARY_PSK not in repr(config)

    settings = ike_settings(config)
    assert settings is not None
    gcm, cbc = settings.proposals
    assert (gcm.encryption, gcm.prf, gcm.integrity, gcm.groups) == (((20, 256),), (6,), (), (31,))
    assert (cbc.encryption, cbc.prf, cbc.integrity, cbc.groups) == (((12, 256),), (5,), (12,),
                                                                   (14,))
    (child,) = settings.children
    assert child.transforms == (("esp-gcm 256", "tunnel"), ("esp-aes 256 esp-sha256-hmac",
                                                            "tunnel"))
    assert (child.pfs, child.start, child.encapsulation) == (19, "immediate", "auto")
    assert child.local_ts == (TrafficSelector.from_network("10.1.0.0/16", 6, (0, 65535)),
                              TrafficSelector.from_network("10.1.0.0/16"))
    assert child.remote_ts == (TrafficSelector.from_network("10.2.0.0/16", 6, (5201, 5201)),
                               TrafficSelector.from_network("10.3.0.0/16"))
    (engine_peer,) = settings.peers
    assert bytes(engine_peer.psk.local) == CANARY_PSK.encode()
    assert settings.dpd.mode == "on-demand" and settings.ike_lifetime == 28800
    assert settings.reauth_time == 0  # off unless asked for
    with_reauth = parse_toml(TOML.replace("lifetime = 28800", "lifetime = 28800\n"
                                          "reauth_time = 43200"))
    assert ike_settings(with_reauth).reauth_time == 43200
    # the plan gives the entry rules but no SAs: IKE installs them
    plan = build_plan(config)
    assert plan.sas == () and all(r.protects for r in plan.rules) and len(plan.rules) == 2
    wipe_ike_keys(config)
    assert set(engine_peer.psk.local) == {0}  # the same buffer: wiped once


@pytest.mark.parametrize(("change", "expected"), [
    (('keying = "ike"', 'keying = "ike"\ninbound = { spi = 0x1001, key = "00" }'),
     ['27: crypto_map vpn 10: keying = "ike" negotiates its keys; remove \'inbound\' '
      '(or write keying = "manual")']),
    (('pfs = "group19"', 'pfs = "group2"'),
     ["30: crypto_map pfs: 'group2': group 2 (1024-bit MODP) is MUST NOT in RFC 8247; use "
      "'x25519' (e.g. 'aes256gcm16-prfsha384-x25519')"]),
    (('"aes256-sha256-modp2048"', '"3des-md5-modp1024"'),
     ["5: ike.proposals: 3des: ENCR_3DES is only MAY in RFC 8247, kept for old peers, and its "
      "64-bit block is open to Sweet32; espd does not offer it; use 'aes256gcm16' (e.g. "
      "'aes256gcm16-prfsha384-x25519')"]),
    ((f'psk = "{CANARY_PSK}"', 'psk = "short"'),
     ["11: ike_peer.gwb: the pre-shared key has 5 bytes; use 8 to 1024 (a short key falls to "
      "an offline guess from one captured exchange), e.g. from 'head -c 24 /dev/urandom | "
      "base64'",
      NO_KEY]),  # the peer was refused, so the entry has no key for it either
    (('address = "192.0.2.2"', 'address = "192.0.2.9"'), [NO_KEY]),
    (('remote_id = "fqdn:gwb.example.net"', 'remote_id = "ipv4:gwb"'),
     ["12: ike_peer.gwb.remote_id: 'gwb' is not an IP address", NO_KEY]),
    (("lifetime = 28800", "lifetime = 28800\nreauth_time = 10"),
     ["7: ike.reauth_time must be 0 (off) or from 30 to 31536000 seconds, not 10; write "
      "e.g. 'reauth_time = 86400'"]),
    (('start = "immediate"', 'start = "now"'),
     ["31: crypto_map.start: 'now' is not allowed; write \"on-demand\" or \"immediate\" or "
      "\"manual\""]),
    (('peer = "192.0.2.2"', 'peer = "192.0.2.2"\npeers = ["192.0.2.3"]'),
     ["28: crypto_map vpn 10 has both 'peer' and 'peers'; keep one"]),
    (('"permit ip 10.1.0.0/16 10.3.0.0/16"', '"permit ip 10.1.0.0 0.0.255.0 10.3.0.0/16"'),
     ["15: crypto map vpn 10: access list LAN: 'permit ip 10.1.0.0 0.0.255.0 10.3.0.0/16' has "
      "a non-contiguous wildcard; IKE traffic selectors are address ranges, so an IKE-keyed "
      "entry needs prefixes (e.g. 0.0.0.255)"]),
])
def test_toml_ike_mistakes_are_refused_with_located_fixes(change, expected):
    old, new = change
    assert old in TOML
    assert refusal_toml(TOML.replace(old, new, 1)) == expected


def test_manual_entry_cannot_list_several_peers():
    text = TOML.replace('keying = "ike"', 'keying = "manual"').replace(
        'transform_sets = ["GCM", "CBC"]', 'transform_set = "GCM"').replace(
        'pfs = "group19"\nstart = "immediate"\n', '').replace(
        'peer = "192.0.2.2"', 'peers = ["192.0.2.2", "192.0.2.3"]')
    assert ("27: crypto_map vpn 10: a manually keyed entry takes one peer; write 'peer = ...', "
            "or keying = \"ike\" to list several") in refusal_toml(text)


def test_psk_file_is_read_with_the_key_file_checks(tmp_path: Path):
    secret = tmp_path / "gwb.psk"
    secret.write_text(CANARY_PSK + "\n")
    os.chmod(secret, 0o644)
    text = TOML.replace(f'psk = "{CANARY_PSK}"', 'psk_file = "gwb.psk"')
    with pytest.raises(ConfigError) as e:
        parse_toml(text, str(tmp_path / "c.toml"))
    assert f"run 'chmod 600 {secret}'" in str(e.value)
    assert CANARY_PSK not in str(e.value)
    os.chmod(secret, 0o600)
    config = parse_toml(text, str(tmp_path / "c.toml"))
    assert bytes(config.ike_peers[0].psk_local) == CANARY_PSK.encode()  # newline stripped


@pytest.mark.parametrize(("text", "kind", "value"), [
    ("192.0.2.1", "ipv4", "192.0.2.1"), ("fd00::1", "ipv6", "fd00::1"),
    ("gw.example.net", "fqdn", "gw.example.net"), ("ops@example.net", "rfc822", "ops@example.net"),
    ("key-id:0a1b", "key-id", "0a1b"), ("fqdn:gw", "fqdn", "gw"),
])
def test_identities(text, kind, value):
    assert parse_identity(text) == IkeIdentity(kind, value)


IOS = f"""\
hostname goss-e4-2513
crypto ikev2 proposal MODERN
 encryption aes-gcm-256 aes-gcm-128
 prf sha384
 group 31
crypto ikev2 policy MODERN
 proposal MODERN
crypto ikev2 keyring PEERS
 peer goss-c2
  address 20.20.20.21
  pre-shared-key local {CANARY_PSK}
  pre-shared-key remote other-direction-key
crypto ikev2 profile C2
 match identity remote fqdn goss-c2.example
 identity local fqdn goss-e4.example
 authentication local pre-share
 authentication remote pre-share
 keyring local PEERS
 lifetime 28800
 dpd 10 3 periodic
crypto ipsec transform-set BearPapa esp-gcm 256
crypto ipsec transform-set BearCub esp-chacha20-poly1305
crypto map armadillo 1 ipsec-isakmp
 set peer 20.20.20.21
 set transform-set BearPapa BearCub
 set pfs group19
 set ikev2-profile C2
 set security-association lifetime seconds 3600
 match address 101
interface Serial0
 ip address 20.20.20.20 255.255.255.0
 crypto map armadillo
access-list 101 permit ip 60.60.60.0 0.0.0.255 50.50.50.0 0.0.0.255
"""


def test_ios_ikev2_profile_keyring_and_map():
    config = parse_ios(IOS, "r.ios")
    (entry,) = config.crypto_maps
    assert (entry.keying, entry.transform_sets, entry.pfs) == ("ike", ("BearPapa", "BearCub"),
                                                               "ecp256")
    assert entry.local == ipaddress.ip_address("20.20.20.20")
    assert config.ike.proposals == ("aes256gcm16-prfsha384-x25519",
                                    "aes128gcm16-prfsha384-x25519")
    assert config.ike.lifetime == 28800 and config.ike.dpd == Dpd(10, 3, "periodic")
    (peer,) = config.ike_peers
    assert bytes(peer.psk_local) == CANARY_PSK.encode()
    assert bytes(peer.psk_remote) == b"other-direction-key"
    assert (str(peer.local_id), str(peer.remote_id)) == ("fqdn:goss-e4.example",
                                                         "fqdn:goss-c2.example")
    assert config.warnings == ()


def test_ios_isakmp_policy_is_mapped_onto_ikev2_with_a_warning():
    text = IOS.split("crypto ipsec transform-set")[0].split("crypto ikev2 proposal")[0] + (
        "crypto isakmp policy 10\n encryption aes 256\n hash sha256\n group 14\n"
        " authentication pre-share\n lifetime 3600\n"
        f"crypto isakmp key {CANARY_PSK} address 20.20.20.21\n"
        "crypto isakmp keepalive 10 3 periodic\n"
    ) + "crypto ipsec transform-set" + IOS.split("crypto ipsec transform-set", 1)[1].replace(
        " set ikev2-profile C2\n", "")
    config = parse_ios(text, "r.ios")
    assert config.ike.proposals == ("aes256-sha256-prfsha256-modp2048",)
    assert config.ike.lifetime == 3600 and config.ike.dpd == Dpd(10, 3, "periodic")
    (warning,) = config.warnings
    assert warning.where.line == 2 and warning.message.startswith(
        "IKEv1 is deprecated (RFC 9395) and espd speaks IKEv2 only: this isakmp policy is "
        "offered as the IKEv2 proposal 'aes256-sha256-prfsha256-modp2048'; the peer must "
        "speak IKEv2 too")
    assert bytes(config.ike_peers[0].psk_local) == CANARY_PSK.encode()


@pytest.mark.parametrize(("change", "expected"), [
    ((" authentication remote pre-share", " authentication remote rsa-sig"),
     ["17: crypto ikev2 profile C2: authentication local pre-share and remote rsa-sig: "
      "espd authenticates both ways alike; write 'authentication local rsa-sig' and "
      "'authentication remote rsa-sig' (or pre-share for both)"]),
    ((" keyring local PEERS", " keyring local NOPE"),
     ["18: crypto ikev2 profile C2: keyring 'NOPE' is not defined; add 'crypto ikev2 keyring "
      "NOPE'",
      "23: crypto map armadillo 1: no pre-shared key for peer 20.20.20.21; add "
      "'[ike_peer.NAME]' with 'address = \"20.20.20.21\"' and 'psk_file = "
      "\"/etc/espd/NAME.psk\"' (IOS: 'crypto ikev2 keyring' with 'peer', 'address "
      "20.20.20.21' and 'pre-shared-key ...')"]),
    ((" group 31", " group 5"),
     ["2: crypto ikev2 proposal MODERN: modp1536: group 5 "
      "(1536-bit MODP) is SHOULD NOT in RFC 8247; use 'x25519' (e.g. "
      "'aes256gcm16-prfsha384-x25519')"]),
    ((" set ikev2-profile C2", " set ikev2-profile C3"),
     ["27: crypto map armadillo 1: set ikev2-profile C3: the profile is not defined; add "
      "'crypto ikev2 profile C3'"]),
    (("  address 20.20.20.21", "  address 0.0.0.0 0.0.0.0"),
     ["9: crypto ikev2 keyring PEERS peer goss-c2 needs 'address A' (espd matches IKE peers "
      "by address)",
      "10: crypto ikev2 keyring PEERS peer goss-c2: address 0.0.0.0 0.0.0.0: espd matches IKE "
      "peers by their exact address; write the peer's address without a mask (or with "
      "255.255.255.255)"]),
])
def test_ios_ike_mistakes_are_refused_with_located_fixes(change, expected):
    old, new = change
    assert old in IOS
    with pytest.raises(ConfigError) as e:
        parse_ios(IOS.replace(old, new, 1), "r.ios")
    assert CANARY_PSK not in str(e.value)
    problems = [f"{p.where.line}: {p.message}" for p in e.value.problems]
    assert problems[:len(expected)] == expected


def test_modernised_seed_twins_negotiate_with_each_other():
    root = Path(__file__).resolve().parents[2] / "config"
    e4, c2 = load(str(root / "goss-e4-2513.ios")), load(str(root / "goss-c2-2513.ios"))
    (a,), (b,) = e4.crypto_maps, c2.crypto_maps
    assert a.keying == b.keying == "ike"
    assert (str(a.local), str(a.peer), str(b.local), str(b.peer)) == (
        "20.20.20.20", "20.20.20.21", "20.20.20.21", "20.20.20.20")
    assert e4.ike.proposals == c2.ike.proposals
    assert bytes(e4.ike_peers[0].psk_local) == bytes(c2.ike_peers[0].psk_remote)
    sa, sb = ike_settings(e4), ike_settings(c2)
    assert sa.children[0].local_ts == sb.children[0].remote_ts


def test_ike_limits_load_translate_and_refuse_out_of_range():
    default = ike_settings(parse_toml(TOML, "c.toml"))
    assert default.limits.cookie_threshold == 32
    assert default.limits.cookie_threshold_per_source == 8
    assert 'mode = "on-demand" }\n' in TOML
    text = TOML.replace('mode = "on-demand" }', 'mode = "on-demand" }\nlimits = { '
                        'cookie_threshold = 0, half_open_per_source = 5, ike_sas = 100, '
                        'child_sas_per_ike_sa = 7 }')
    limits = ike_settings(parse_toml(text, "c.toml")).limits
    assert (limits.cookie_threshold, limits.half_open_per_source, limits.ike_sas) == (0, 5, 100)
    assert limits.half_open == 1024 and limits.cookie_secret_lifetime == 120
    assert limits.child_sas_per_ike_sa == 7 and default.limits.child_sas_per_ike_sa == 64
    assert any("child_sas_per_ike_sa" in line for line in refusal_toml(
        text.replace("child_sas_per_ike_sa = 7", "child_sas_per_ike_sa = 0")))
    bad = refusal_toml(text.replace("ike_sas = 100", "ike_sas = 0, cookies = 1"))
    assert any("ike.limits" in line and "cookies" in line for line in bad)
    assert any("ike_sas" in line for line in bad)


def test_fragment_size_loads_translates_and_refuses_out_of_range():
    assert ike_settings(parse_toml(TOML, "c.toml")).fragment_size == 1280  # charon's default
    text = TOML.replace("lifetime = 28800\n", "lifetime = 28800\nfragment_size = 400\n", 1)
    assert ike_settings(parse_toml(text, "c.toml")).fragment_size == 400
    assert refusal_toml(text.replace("= 400", "= 100")) == [
        "7: ike.fragment_size must be from 256 to 65535 bytes (an RFC 7383 fragment's whole IP "
        "datagram), not 100; write e.g. 'fragment_size = 1280'"]
    assert refusal_toml(text.replace("= 400", '= "big"'))[0].startswith("7: ike.fragment_size")


def test_ios_crypto_ikev2_fragmentation_sets_the_fragment_size():
    assert parse_ios(IOS, "r.ios").ike.fragment_size == 1280  # espd's default without it
    assert "crypto ikev2 proposal MODERN\n" in IOS
    with_mtu = IOS.replace("crypto ikev2 proposal MODERN\n",
                           "crypto ikev2 fragmentation mtu 1000\ncrypto ikev2 proposal MODERN\n")
    assert parse_ios(with_mtu, "r.ios").ike.fragment_size == 1000
    bare = with_mtu.replace(" mtu 1000", "")
    assert parse_ios(bare, "r.ios").ike.fragment_size == 576  # IOS's default
    with pytest.raises(ConfigError) as e:
        parse_ios(with_mtu.replace("mtu 1000", "mtu 100"), "r.ios")
    assert [f"{p.where.line}: {p.message}" for p in e.value.problems] == [
        "2: 'crypto ikev2 fragmentation mtu 100': write 'crypto ikev2 fragmentation' or "
        "'crypto ikev2 fragmentation mtu N' with N from 256 to 1500 (bytes of each fragment's "
        "IP datagram)"]


# --- certificate authentication ([ike] certificate, private_key, ca, crl; auth) ----------

def cert_toml(tmp_path: Path, **change: str) -> tuple[str, object]:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from support.pki import Pki

    pki = Pki(str(tmp_path / "pki"))
    ca = pki.ca()
    gw = pki.gateway("gwa.example", ca)
    ike = (f'[ike]\ncertificate = "{gw.cert_path}"\nprivate_key = "{gw.key_path}"\n'
           f'ca = "{ca.cert_path}"\n')
    text = TOML.replace("[ike]\n", ike).replace(f'psk = "{CANARY_PSK}"', 'auth = "certificate"')
    for old, new in change.items():
        text = text.replace(old, new)
    return text, (pki, ca, gw)


def test_a_certificate_peer_loads_and_reaches_the_engine(tmp_path: Path):
    text, (_, ca, gw) = cert_toml(tmp_path)
    config = parse_toml(text, str(tmp_path / "c.toml"))
    [peer] = config.ike_peers
    assert peer.auth == "certificate" and peer.psk_local == bytearray()
    assert str(peer.local_id) == "fqdn:gwa.example"  # the certificate's SAN
    settings = ike_settings(config)
    assert settings.peers[0].auth == "certificate" and settings.peers[0].psk is None
    assert settings.certificate.certificate == gw.cert
    assert settings.trust.anchors == (ca.cert,)


@pytest.mark.parametrize(("change", "expected"), [
    ({'auth = "certificate"': 'auth = "certificate"\npsk = "abcdefghijkl"'},
     "ike_peer.gwb authenticates with certificates (auth = \"certificate\"); remove 'psk'"),
    ({'auth = "certificate"': 'auth = "certificate"\nlocal_id = "fqdn:other.example"'},
     "ike_peer.gwb: local_id fqdn:other.example is not in espd's certificate (CN=gwa.example"),
    ({'auth = "certificate"': 'auth = "rsa-sig"'},
     "ike_peer.gwb.auth: 'rsa-sig' is not allowed; write \"psk\" or \"certificate\""),
    ({"ca = ": "cax = "}, "unknown key 'ike.cax'; did you mean 'ca'?"),
    ({"ca = ": "rsa_pss = true\nca = "}, "ike.certificate: rsa_pss applies to RSA keys, and "
                                        "this one is not"),
    ({"ca = ": "rsa_pss = 1\nca = "}, "rsa_pss"),
])
def test_certificate_mistakes_are_refused_with_located_fixes(tmp_path: Path, change, expected):
    text, _ = cert_toml(tmp_path, **change)
    with pytest.raises(ConfigError) as e:
        parse_toml(text, str(tmp_path / "c.toml"))
    assert any(expected in p.message for p in e.value.problems), e.value.problems


@pytest.mark.parametrize("rsa_pss", [False, True])
def test_an_rsa_key_signs_pkcs1_unless_rsa_pss_is_set(tmp_path: Path, rsa_pss: bool):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    from espd.ike.auth.base import SignedOctets
    from espd.ike.auth.certificates import CertificateAuthenticator
    from espd.ike.auth.signature import ALGORITHMS

    text, (pki, ca, _) = cert_toml(tmp_path)
    gw = pki.gateway("gwr.example", ca, "rsa")
    text = text.replace(str(tmp_path / "pki" / "gwa.example"),
                        str(tmp_path / "pki" / "gwr.example"))
    text = text.replace("[ike]\n", "[ike]\nrsa_pss = true\n" if rsa_pss else "[ike]\n")
    settings = ike_settings(parse_toml(text, str(tmp_path / "c.toml")))
    assert settings.certificate.rsa_pss is rsa_pss
    octets = SignedOctets(None, b"the signed octets")  # type: ignore[arg-type]
    method, data = CertificateAuthenticator(settings.certificate, settings.trust).build(octets)
    [algorithm] = [a for a in ALGORITHMS if a.der == data[1:1 + data[0]]]
    assert method == 14 and algorithm.name == ("rsa-pss-sha256" if rsa_pss else "rsa-sha256")
    pad = (padding.PSS(padding.MGF1(hashes.SHA256()), 32) if rsa_pss
           else padding.PKCS1v15())  # the peer's check, with cryptography, not espd
    gw.cert.public_key().verify(data[1 + data[0]:], octets.octets, pad, hashes.SHA256())


def test_certificate_files_are_checked(tmp_path: Path):
    text, (pki, ca, gw) = cert_toml(tmp_path)
    other = pki.gateway("other", ca)
    wrong_key = text.replace(gw.key_path, other.key_path)
    with pytest.raises(ConfigError, match="the private key does not belong to the certificate"):
        parse_toml(wrong_key, str(tmp_path / "c.toml"))
    os.chmod(gw.key_path, 0o644)
    with pytest.raises(ConfigError, match=f"run 'chmod 600 {gw.key_path}'"):
        parse_toml(text, str(tmp_path / "c.toml"))
    os.chmod(gw.key_path, 0o600)
    ed_ca = pki.ca("edca", "ed25519")  # no chain could reach it (auth/certificates.py)
    with pytest.raises(ConfigError, match=r"ike\.ca\.0: .* has an Ed25519 key"):
        parse_toml(text.replace(ca.cert_path, ed_ca.cert_path), str(tmp_path / "c.toml"))
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="holds no PEM certificate"):
        parse_toml(text.replace(ca.cert_path, str(tmp_path / "junk.pem")),
                   str(tmp_path / "c.toml"))
    no_key = text.replace(f'private_key = "{gw.key_path}"\n', "")
    with pytest.raises(ConfigError, match="needs 'certificate', 'private_key' and 'ca'; add "
                                          "'private_key'"):
        parse_toml(no_key, str(tmp_path / "c.toml"))
    no_pki = TOML.replace(f'psk = "{CANARY_PSK}"', 'auth = "certificate"')
    with pytest.raises(ConfigError, match="needs espd's certificate: set 'certificate'"):
        parse_toml(no_pki, str(tmp_path / "c.toml"))


def test_hybrid_proposals_and_pfs_with_additional_key_exchanges_reach_the_engine():
    """RFC 9370 in the config: `ke1_mlkem768` in [ike] proposals becomes an ADDKE1
    transform, a crypto map's pfs "x25519-ke1_mlkem1024" a PFS group plus ADDKE1."""
    from espd.ike.crypto.dh import ML_KEM_768

    if not ML_KEM_768.available:
        pytest.skip("this cryptography has no ML-KEM")
    text = TOML.replace('"aes256-sha256-modp2048"',
                        '"aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke2_mlkem1024"').replace(
        'pfs = "group19"', 'pfs = "X25519-ke1_mlkem1024"')
    settings = ike_settings(parse_toml(text, "c.toml"))
    classic, hybrid = settings.proposals
    assert classic.additional == () and hybrid.additional == ((36,), (37,))
    assert hybrid.groups == (31,)
    [child] = settings.children
    assert (child.pfs, child.pfs_additional) == (31, (37,))
    assert refusal_toml(TOML.replace('pfs = "group19"', 'pfs = "x25519-ke2_mlkem768"')) == [
        "30: crypto_map pfs: 'x25519-ke2_mlkem768': additional key exchanges are written "
        "ke1_NAME, ke2_NAME, ... in order, e.g. 'x25519-ke1_mlkem768'"]
    assert refusal_toml(TOML.replace('"aes256-sha256-modp2048"',
                                     '"aes256gcm16-prfsha384-x25519-ke1_mlkem512"')) == [
        "5: ike.proposals: mlkem512: ML-KEM-512 (35) is not implemented by espd; use "
        "'mlkem768' (e.g. 'aes256gcm16-prfsha384-x25519')"]
