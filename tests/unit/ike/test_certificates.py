"""Certificate authentication between two espd engines over loopback UDP (real codec,
crypto and X.509 path validation; a throw-away PKI from support.pki): what establishes,
and each way a certificate is refused, with the reason the log gives."""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import replace
from pathlib import Path

import pytest
from support.ike_pair import negotiate, pair, settings_pair, until
from support.pki import Pki

from espd.ike import codec
from espd.ike.auth.certificates import (
    CertificateError,
    OwnCertificate,
    TrustStore,
    identity_matches,
    load_crl,
    load_trust_anchors,
    own_certificate,
)
from espd.ike.sa.ike_sa import IkeState
from espd.ike.settings import Identity


def cert_settings(pki_a, pki_b, trust_a, trust_b, id_a="gwa", id_b="gwb"):
    """Settings for sides a and b of ike_pair, authenticating with certificates."""
    a, b = settings_pair(0)
    a = replace(a, certificate=pki_a, trust=trust_a, peers=(replace(
        a.peers[0], psk=None, auth="certificate", local_id=Identity("fqdn", id_a),
        remote_id=Identity("fqdn", "gwb")),))
    b = replace(b, certificate=pki_b, trust=trust_b, peers=(replace(
        b.peers[0], psk=None, auth="certificate", local_id=Identity("fqdn", id_b),
        remote_id=Identity("fqdn", "gwa")),))
    return a, b


def own(issued, *extra) -> OwnCertificate:
    return own_certificate([issued.cert, *(e.cert for e in extra)], issued.key, issued.name)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(str(tmp_path / "pki"))


@pytest.mark.parametrize("kind", ["ecdsa-p256", "ecdsa-p384", "rsa", "ed25519"])
def test_certificates_of_each_key_type_establish(pki, kind):
    ca = pki.ca()
    gwa, gwb = pki.gateway("gwa", ca), pki.gateway("gwb", ca, kind=kind)
    trust = TrustStore((ca.cert,))
    got = asyncio.run(negotiate(*cert_settings(own(gwa), own(gwb), trust, trust)))
    assert got.state == IkeState.ESTABLISHED and got.children == (1, 1)
    assert str(got.peer_id) == "fqdn:gwb"


def test_an_intermediate_is_sent_and_the_chain_ends_at_the_root(pki, caplog):
    root = pki.ca()
    mid = pki.ca("mid", issuer=root)
    gwa, gwb = pki.gateway("gwa", root), pki.gateway("gwb", mid)
    trust = TrustStore((root.cert,))
    got = asyncio.run(negotiate(*cert_settings(own(gwa), own(gwb, mid), trust, trust)))
    assert got.state == IkeState.ESTABLISHED and got.children == (1, 1)
    # without the intermediate in its CERT payloads b cannot be verified
    got = asyncio.run(negotiate(*cert_settings(own(gwa), own(gwb), trust, trust)))
    assert got.state == IkeState.DELETED and got.children == (0, 0)
    assert "does not chain to a trusted CA" in caplog.text


def refused(caplog, a_settings, b_settings) -> str:
    got = asyncio.run(negotiate(a_settings, b_settings))
    assert got.state == IkeState.DELETED and got.children == (0, 0)
    assert got.a.engine.counters["auth_failures"] == 1
    return caplog.text


def test_a_certificate_from_a_ca_we_do_not_trust_is_refused(pki, caplog):
    ca, other = pki.ca(), pki.ca("other")
    gwa, gwb = pki.gateway("gwa", ca), pki.gateway("gwb", other)
    text = refused(caplog, *cert_settings(own(gwa), own(gwb), TrustStore((ca.cert,)),
                                          TrustStore((ca.cert, other.cert))))
    assert "peer's certificate (CN=gwb" in text and "does not chain to a trusted CA" in text


def test_an_expired_certificate_is_refused(pki, caplog):
    ca = pki.ca()
    gwa = pki.gateway("gwa", ca)
    gwb = pki.gateway("gwb", ca, days=1, not_before=pki.now - datetime.timedelta(days=3))
    trust = TrustStore((ca.cert,))
    text = refused(caplog, *cert_settings(own(gwa), own(gwb), trust, trust))
    assert "certificate (CN=gwb,O=espd test,C=CH) expired on" in text


def test_a_revoked_certificate_is_refused(pki, caplog):
    ca = pki.ca()
    gwa, gwb = pki.gateway("gwa", ca), pki.gateway("gwb", ca)
    crl = load_crl(Path(pki.crl(ca, [gwb])).read_bytes(), "crl")
    text = refused(caplog, *cert_settings(own(gwa), own(gwb), TrustStore((ca.cert,), (crl,)),
                                          TrustStore((ca.cert,))))
    assert "is revoked by CN=espd test ca" in text


def test_an_eddsa_ca_is_refused_at_load_and_named_when_a_peer_sends_one(pki, caplog):
    """cryptography's path validation takes only RSA and ECDSA CA keys (WebPKI): an
    Ed25519 root is refused as a trust anchor, and a chain through an Ed25519
    intermediate fails naming it, not with the validator's internal error."""
    ed_root = pki.ca("edroot", "ed25519")
    with pytest.raises(CertificateError, match="ca.pem: CA certificate CN=espd test edroot,"
                                               ".* has an Ed25519 key: espd's path "
                                               "validation .* accepts only RSA and ECDSA"):
        load_trust_anchors(Path(ed_root.cert_path).read_bytes(), "ca.pem")
    root = pki.ca()
    assert load_trust_anchors(Path(root.cert_path).read_bytes(), "ca.pem") == [root.cert]
    mid = pki.ca("edmid", "ed25519", issuer=root)
    gwa, gwb = pki.gateway("gwa", root), pki.gateway("gwb", mid)
    trust = TrustStore((root.cert,))
    text = refused(caplog, *cert_settings(own(gwa), own(gwb, mid), trust, trust))
    assert "does not chain to a trusted CA (CA certificate CN=espd test edmid" in text
    assert "has an Ed25519 key" in text


def test_an_identity_the_certificate_does_not_name_is_refused(pki, caplog):
    ca = pki.ca()
    gwa, gwb = pki.gateway("gwa", ca), pki.gateway("gwx", ca)  # a valid cert, not gwb's
    trust = TrustStore((ca.cert,))
    text = refused(caplog, *cert_settings(own(gwa), own(gwb), trust, trust, id_b="gwb"))
    assert "peer identifies as fqdn:gwb, but its certificate (CN=gwx" in text
    assert "SAN gwx) does not name it" in text


def test_certificate_requests_name_the_trusted_cas(pki):
    ca = pki.ca()
    gwa, gwb = pki.gateway("gwa", ca), pki.gateway("gwb", ca)
    trust = TrustStore((ca.cert,))
    a_settings, b_settings = cert_settings(own(gwa), own(gwb), trust, trust)
    seen: list[codec.Message] = []

    async def main():
        loop = asyncio.get_running_loop()
        a, b = pair(loop, a_settings, b_settings)
        deliver = a.transport.receiver

        def spy(data, local, remote):
            message = codec.decode_message(data)
            if message.header.exchange == codec.ExchangeType.IKE_SA_INIT:
                seen.append(message)
            deliver(data, local, remote)
        a.transport.receiver = spy
        sa = a.engine.initiate(a.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        assert sa.state == IkeState.ESTABLISHED
        a.engine.close()
        b.engine.close()
    asyncio.run(main())
    [response] = seen
    [request] = response.all(codec.CertificateRequest)
    assert request.authorities == trust.authority_hashes()
    assert response.notify(codec.NotifyType.SIGNATURE_HASH_ALGORITHMS).data == \
        bytes.fromhex("0002000300040005")


def test_identities_are_matched_in_the_san_or_else_the_common_name(pki):
    ca = pki.ca()
    dns, ip = pki.gateway("gw.example", ca), pki.gateway("ip", ca, identity="192.0.2.7")
    mail, bare = pki.gateway("m", ca, identity="ops@example"), pki.gateway("b", ca, san=False)
    assert identity_matches(dns.cert, "fqdn", "GW.example")
    assert not identity_matches(dns.cert, "fqdn", "other.example")
    assert identity_matches(ip.cert, "ipv4", "192.0.2.7")
    assert not identity_matches(ip.cert, "ipv4", "192.0.2.8")
    assert identity_matches(mail.cert, "rfc822", "ops@example")
    assert identity_matches(bare.cert, "fqdn", "b")  # no SAN: the CN
    assert not identity_matches(dns.cert, "key-id", "0a0b")


def test_a_key_that_is_not_the_certificates_is_refused_at_load(pki):
    ca = pki.ca()
    gwa, gwb = pki.gateway("gwa", ca), pki.gateway("gwb", ca)
    with pytest.raises(CertificateError, match="does not belong to the certificate"):
        own_certificate([gwa.cert], gwb.key, "gwa.pem")


@pytest.mark.parametrize("spelling", ["rfc4514", "strongswan"])
def test_distinguished_name_identities_establish_in_either_spelling(pki, spelling):
    ca = pki.ca()
    gwa, gwb = pki.gateway("gwa", ca), pki.gateway("gwb", ca)
    trust = TrustStore((ca.cert,))
    dn_b = gwb.cert.subject.rfc4514_string() if spelling == "rfc4514" else gwb.subject
    a, b = cert_settings(own(gwa), own(gwb), trust, trust)
    a = replace(a, peers=(replace(a.peers[0], local_id=Identity(
        "dn", gwa.cert.subject.rfc4514_string()), remote_id=Identity("dn", dn_b)),))
    b = replace(b, peers=(replace(b.peers[0], local_id=Identity(
        "dn", gwb.cert.subject.rfc4514_string()), remote_id=Identity("dn", gwa.subject)),))
    got = asyncio.run(negotiate(a, b))
    assert got.state == IkeState.ESTABLISHED and got.children == (1, 1)
    assert str(got.peer_id) == f"dn:{gwb.cert.subject.rfc4514_string()}"


def test_a_distinguished_name_the_certificate_does_not_carry_is_refused(pki, caplog):
    ca = pki.ca()
    gwa, gwb = pki.gateway("gwa", ca), pki.gateway("gwb", ca)
    trust = TrustStore((ca.cert,))
    a, b = cert_settings(own(gwa), own(gwb), trust, trust)
    # gwb claims gwa's DN: its certificate does not name it
    b = replace(b, peers=(replace(b.peers[0], local_id=Identity(
        "dn", gwa.cert.subject.rfc4514_string())),))
    a = replace(a, peers=(replace(a.peers[0], remote_id=Identity(
        "dn", gwa.cert.subject.rfc4514_string())),))
    got = asyncio.run(negotiate(a, b))
    assert got.state == IkeState.DELETED and got.children == (0, 0)
    assert "does not name it" in caplog.text


def test_dn_identities_match_the_subject_or_a_directory_name(pki):
    ca = pki.ca()
    gw = pki.gateway("gw.example", ca)
    subject = gw.cert.subject.rfc4514_string()
    assert identity_matches(gw.cert, "dn", subject)
    assert identity_matches(gw.cert, "dn", gw.subject)  # C=..., O=..., CN=... (strongSwan)
    assert not identity_matches(gw.cert, "dn", "CN=gw.example,O=espd test,C=DE")
    assert not identity_matches(gw.cert, "dn", "CN=gw.example")  # a part is not the name


def test_show_ike_sa_detail_names_the_peers_verified_certificate(pki):
    from espd.ike.engine.view import ike_sa_view, plain_ike_sa
    from espd.ops.show_ike import render_ike_sa

    ca = pki.ca()
    gwa, gwb = pki.gateway("gwa", ca), pki.gateway("gwb", ca)
    trust = TrustStore((ca.cert,))
    got = asyncio.run(negotiate(*cert_settings(own(gwa), own(gwb), trust, trust)))
    assert got.state == IkeState.ESTABLISHED
    view = ike_sa_view(got.sa, 3600)
    assert view.auth == "certificate"
    assert view.peer_certificate["serial"] == f"{gwb.cert.serial_number:X}"
    assert view.peer_certificate["issuer"] == ca.cert.subject.rfc4514_string()
    text = render_ike_sa([plain_ike_sa(view, view.established)], detail=True)
    assert "Auth sign: CERT (RFC 7427 signature), Auth verify: CERT" in text
    assert f"Remote certificate: {gwb.cert.subject.rfc4514_string()}, serial " \
           f"{gwb.cert.serial_number:X}" in text
    assert f"issuer {ca.cert.subject.rfc4514_string()}, valid " in text
