"""``espd demo --keying certificate``, as an operator runs it: the demo makes a lab CA with
what ``espd keygen --pki`` makes, starts two real daemons on gateway-{a,b}-cert.toml, and
passes traffic both ways through a tunnel IKEv2 authenticated with certificates."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.netns


def test_the_demo_shows_a_certificate_tunnel(netns_ok):
    run = subprocess.run([sys.executable, "-m", "espd", "demo", "--keying", "certificate",
                          "--no-ipv6"], capture_output=True, text=True, timeout=180)
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert "--- the tunnel keyed by IKEv2 (certificates) ---" in out
    assert "a lab CA and certificates for gwa.demo.test and gwb.demo.test" in out
    assert "Auth sign: CERT (RFC 7427 signature)" in out, out
    assert "Remote certificate: CN=gwb.demo.test,O=espd demo" in out, out
    assert "demo passed: traffic went both ways through the tunnel (certificate keys)" in out
    assert "PRIVATE KEY" not in out + run.stderr
