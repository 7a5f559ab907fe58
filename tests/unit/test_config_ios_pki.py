"""IOS certificate authentication: 'crypto pki trustpoint', its 'crypto pki certificate
chain' as 'show running-config' prints it (hex DER), the IKEv2 profile's 'pki trustpoint'
and 'authentication local|remote rsa-sig'; the key from LABEL.key beside the file. Real
certificates from support.pki, loaded into the engine's settings."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from espd.config.ios import parse_ios
from espd.config.model import ConfigError
from espd.policy.ike_plan import ike_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.pki import Pki  # noqa: E402


def hex_block(cert) -> str:
    """A certificate as IOS prints it in a chain: 8-digit words, 8 words a line."""
    der = cert.public_bytes(serialization.Encoding.DER).hex().upper()
    words = [der[i:i + 8] for i in range(0, len(der), 8)]
    return "\n".join("  " + " ".join(words[i:i + 8]) for i in range(0, len(words), 8))


def router(tmp_path: Path, *, ca_cert=None, pki: Pki | None = None, ca=None,
           me: str = "gwa", peer: str = "gwb", my_address: str = "20.20.20.20",
           peer_address: str = "20.20.20.21", **change: str) -> tuple[str, str, object]:
    """(IOS text, its path, (pki, ca, gw)); the key pair GW-KEY beside it as GW-KEY.key."""
    pki = pki or Pki(str(tmp_path / "pki"))
    ca = ca or pki.ca()
    gw = pki.gateway(f"{me}.example", ca)
    tmp_path = tmp_path / me
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "router.ios"
    key = tmp_path / "GW-KEY.key"
    key.write_bytes(Path(gw.key_path).read_bytes())
    os.chmod(key, 0o600)
    nets = ["60.60.60.0", "50.50.50.0"] if me == "gwa" else ["50.50.50.0", "60.60.60.0"]
    text = f"""\
hostname gwa
crypto pki trustpoint LAB-CA
 enrollment terminal
 subject-name CN=gwa.example
 revocation-check none
 rsakeypair GW-KEY
!
crypto pki certificate chain LAB-CA
 certificate {gw.cert.serial_number:X}
{hex_block(gw.cert)}
  \tquit
 certificate ca {ca.cert.serial_number:X}
{hex_block(ca_cert or ca.cert)}
  \tquit
crypto ikev2 profile GWB
 match identity remote fqdn {peer}.example
 match identity remote address {peer_address} 255.255.255.255
 identity local dn
 authentication local rsa-sig
 authentication remote rsa-sig
 pki trustpoint LAB-CA
crypto ipsec transform-set GCM esp-gcm 256
crypto map VPN 10 ipsec-isakmp
 set peer {peer_address}
 set transform-set GCM
 set ikev2-profile GWB
 match address 101
interface Serial0
 ip address {my_address} 255.255.255.0
 crypto map VPN
access-list 101 permit ip {nets[0]} 0.0.0.255 {nets[1]} 0.0.0.255
"""
    for old, new in change.items():
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    return text, str(path), (pki, ca, gw)


def problems(text: str, path: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_ios(text, path)
    return [f"{p.where.line}: {p.message}" for p in e.value.problems]


def test_a_trustpoint_and_its_chain_give_the_engine_its_certificate(tmp_path: Path):
    text, path, (_, ca, gw) = router(tmp_path)
    config = parse_ios(text, path)
    assert config.ike.certificate.certificate == gw.cert
    assert config.ike.trust.anchors == (ca.cert,)
    (peer,) = config.ike_peers
    assert peer.auth == "certificate" and str(peer.address) == "20.20.20.21"
    assert str(peer.local_id) == f"dn:{gw.cert.subject.rfc4514_string()}"  # identity local dn
    assert str(peer.remote_id) == "fqdn:gwb.example"
    settings = ike_settings(config)
    assert settings.peers[0].auth == "certificate" and settings.certificate is not None
    (warning,) = config.warnings  # enrollment is noted, not acted on
    assert warning.where.line == 3 and "espd does not enroll" in warning.message


def test_without_identity_local_the_certificates_san_is_claimed(tmp_path: Path):
    text, path, _ = router(tmp_path, **{" identity local dn\n": ""})
    assert str(parse_ios(text, path).ike_peers[0].local_id) == "fqdn:gwa.example"


@pytest.mark.parametrize(("change", "expected"), [
    ({" revocation-check none": " revocation-check crl"},
     "5: crypto pki trustpoint LAB-CA: 'revocation-check crl': espd does not fetch CRLs or "
     "ask OCSP, and will not pretend to check; write 'revocation-check none', or use the "
     "TOML form's [ike] crl files"),
    ({"\n pki trustpoint LAB-CA": "\n pki trustpoint OTHER"},
     "pki trustpoint OTHER: no 'crypto pki trustpoint OTHER' is defined"),
    ({" rsakeypair GW-KEY": " rsakeypair NO-KEY"},
     "pki trustpoint LAB-CA: the private key of key pair 'NO-KEY' is read from NO-KEY.key "
     "next to the configuration (IOS keeps it out of the running config)"),
    ({" authentication remote rsa-sig": " authentication remote pre-share"},
     "espd authenticates both ways alike"),
    ({"\n pki trustpoint LAB-CA\n": "\n"},
     "crypto ikev2 profile GWB: authentication with signatures needs 'pki trustpoint NAME'"),
    ({" match identity remote address 20.20.20.21 255.255.255.255\n": ""},
     "certificate authentication needs 'match identity remote address A'"),
    ({"crypto pki certificate chain LAB-CA": "crypto pki certificate chain OTHER-CA"},
     "pki trustpoint LAB-CA: no 'crypto pki certificate chain LAB-CA' holds its "
     "certificates"),
])
def test_ios_certificate_mistakes_are_refused_with_located_fixes(tmp_path, change, expected):
    text, path, _ = router(tmp_path, **change)
    found = problems(text, path)
    assert any(expected in p for p in found), found


def test_a_broken_hex_dump_is_refused_at_its_certificate(tmp_path: Path):
    text, path, (_, _, gw) = router(tmp_path)
    lines = text.splitlines()
    at = lines.index(f" certificate {gw.cert.serial_number:X}") + 2
    lines[at] = lines[at].replace("0", "Z", 1)
    found = problems("\n".join(lines) + "\n", path)
    assert any(f"certificate {gw.cert.serial_number:X} is not a DER X.509 certificate in hex"
               in p for p in found), found


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path: Path):
    text, path, (pki, ca, _) = router(tmp_path)
    other = pki.gateway("other", ca)
    key = tmp_path / "gwa" / "GW-KEY.key"
    key.write_bytes(Path(other.key_path).read_bytes())
    found = problems(text, path)
    assert any("the private key does not belong to the certificate" in p for p in found), found


def test_a_key_file_others_can_read_is_refused(tmp_path: Path):
    text, path, _ = router(tmp_path)
    os.chmod(tmp_path / "gwa" / "GW-KEY.key", 0o644)
    found = problems(text, path)
    assert any("GW-KEY.key" in p and "chmod 600" in p for p in found), found


def test_the_seed_eras_crypto_ca_identity_is_refused_with_its_replacement(tmp_path: Path):
    text, path, _ = router(tmp_path, **{"crypto pki trustpoint LAB-CA":
                                        "crypto ca identity LAB\ncrypto pki trustpoint LAB-CA"})
    found = problems(text, path)
    assert any("2: 'crypto ca identity' is IOS 12.0's trustpoint command; espd reads 'crypto "
               "pki trustpoint NAME'" in p for p in found), found


def test_isakmp_rsa_sig_names_the_ikev2_profile_to_write(tmp_path: Path):
    text, path, _ = router(tmp_path, **{"hostname gwa\n": "hostname gwa\ncrypto isakmp "
                                        "policy 10\n encr aes 256\n authentication rsa-sig\n"})
    found = problems(text, path)
    assert any("for certificates write a 'crypto ikev2 profile' with 'authentication local "
               "rsa-sig'" in p for p in found), found


def test_two_ios_routers_with_certificates_negotiate(tmp_path: Path):
    """Both ends configured in IOS only (trustpoint, chain, profile), loaded, and their
    engines negotiating over loopback: signatures, chains and identities for real."""
    import asyncio

    from support.ike_pair import A, B, negotiate

    pki = Pki(str(tmp_path / "pki"))
    ca = pki.ca()
    configs = []
    for me, peer, mine, theirs in (("gwa", "gwb", A, B), ("gwb", "gwa", B, A)):
        text, path, _ = router(tmp_path, pki=pki, ca=ca, me=me, peer=peer,
                               my_address=str(mine), peer_address=str(theirs),
                               **{" identity local dn\n": ""})  # the SAN: matches fqdn
        configs.append(parse_ios(text, path))
    a_settings, b_settings = (ike_settings(c) for c in configs)

    got = asyncio.run(negotiate(a_settings, b_settings))
    a_children, b_children = got.children
    peer_id = got.peer_id
    assert (a_children, b_children) == (1, 1)
    assert str(peer_id) == "fqdn:gwb.example"  # 'match identity remote fqdn', proven
