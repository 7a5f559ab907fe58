"""What espd tells an operator of its certificates: the inventory (show certificates, the
expiry metric) and the warnings at load, from real certificates of a throw-away PKI."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from prometheus_client.core import GaugeMetricFamily
from support.pki import Pki

from espd.ike.auth.certificates import TrustStore, load_crl, own_certificate
from espd.ike.auth.inventory import certificate_inventory, expiry_warnings
from espd.ops.metrics import StateCollector
from espd.ops.show_ike import render_certificates

DAY = 86400


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(str(tmp_path / "pki"))


def inventory(pki: Pki, **gateway):
    root = pki.ca("root", days=3650)
    sub = pki.ca("sub", issuer=root, days=365)
    gw = pki.gateway("gw.example", sub, days=gateway.pop("days", 90), **gateway)
    crl = load_crl(open(pki.crl(root, [sub]), "rb").read(), "crl")
    own = own_certificate([gw.cert, sub.cert], gw.key, "gw")
    return certificate_inventory(own, TrustStore((root.cert,), (crl,))), gw, sub, root


def test_the_inventory_lists_ours_then_the_intermediates_then_the_cas(pki):
    got, gw, sub, root = inventory(pki, kind="rsa")
    assert [c["role"] for c in got] == ["local", "intermediate", "ca"]
    local = got[0]
    assert local["subject"] == gw.cert.subject.rfc4514_string()
    assert local["issuer"] == sub.cert.subject.rfc4514_string()
    assert local["serial"] == f"{gw.cert.serial_number:X}"
    assert local["san"] == ["DNS:gw.example"] and local["key"] == "RSA 2048"
    assert local["not_after"] == gw.cert.not_valid_after_utc.timestamp()
    assert got[1]["key"] == "ECDSA secp256r1"
    assert got[2]["crls"] == [{"last_update": pytest.approx(pki.now.timestamp() - 300),
                               "next_update": pytest.approx(pki.now.timestamp() + DAY),
                               "revoked": 1}]
    assert "key" in local and not any("PRIVATE" in str(v) for c in got for v in c.values())


def test_nothing_configured_is_an_empty_inventory():
    assert certificate_inventory(None, None) == []


def test_a_certificate_far_from_expiry_is_not_warned_about(pki):
    got, *_ = inventory(pki)
    assert expiry_warnings(got, pki.now.timestamp()) == []


def test_expired_soon_expiring_and_not_yet_valid_certificates_are_warned_about(pki):
    now = pki.now.timestamp()
    soon, *_ = inventory(pki, days=10)
    (text,) = expiry_warnings(soon, now)
    assert "local certificate CN=gw.example" in text and "expires in 9 days" in text
    assert "renew it and reload espd" in text
    (text,) = [t for t in expiry_warnings(soon, now + 11 * DAY) if "CRL" not in t]
    assert "expired 1 day ago" in text and "peers will refuse our authentication" in text
    future, *_ = inventory(pki, not_before=pki.now + datetime.timedelta(days=2))
    (text,) = expiry_warnings(future, now)
    assert "is not valid until" in text


def test_an_overdue_crl_and_an_expired_ca_are_warned_about(pki):
    got, *_ = inventory(pki)
    texts = expiry_warnings(got, pki.now.timestamp() + 3651 * DAY)
    assert any("ca certificate" in t and "no certificate that chains to it is accepted" in t
               for t in texts)
    assert any("the CRL of" in t and "still accepted" in t for t in texts)


def test_show_certificates_gives_status_serial_and_crl(pki):
    got, gw, *_ = inventory(pki, days=10)
    text = render_certificates({"certificates": got}, now=pki.now.timestamp())
    blocks = text.split("\n")
    assert blocks[0] == "Certificate"
    assert "  Status: Available, expires in 9 d 23 h: renew it" in blocks
    assert f"  Certificate Serial Number (hex): {gw.cert.serial_number:X}" in blocks
    assert "Intermediate CA Certificate (sent)" in blocks
    assert "CA Certificate (trusted)" in blocks
    assert any(line.startswith("  CRL: 1 revoked, issued ") for line in blocks)
    later = render_certificates({"certificates": got}, now=pki.now.timestamp() + 20 * DAY)
    assert "  Status: Expired 10 d 0 h ago" in later.split("\n")
    assert "overdue" in later
    assert "no certificates loaded" in render_certificates({"certificates": []})


def test_the_expiry_metric_counts_down_to_each_certificates_not_after(pki):
    got, gw, *_ = inventory(pki)
    families = list(StateCollector(lambda: {"certificates": got}).collect())
    (family,) = [f for f in families if f.name == "espd_certificate_expiry_seconds"]
    assert isinstance(family, GaugeMetricFamily)
    by_role = {s.labels["role"]: s for s in family.samples}
    assert set(by_role) == {"local", "intermediate", "ca"}
    local = by_role["local"]
    assert local.labels["subject"] == "CN=gw.example,O=espd test,C=CH"
    assert local.labels["serial"] == f"{gw.cert.serial_number:X}"
    expected = gw.cert.not_valid_after_utc.timestamp() - datetime.datetime.now(
        datetime.UTC).timestamp()
    assert abs(local.value - expected) < 5
