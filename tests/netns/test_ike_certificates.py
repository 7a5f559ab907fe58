"""espd the daemon authenticating with X.509 certificates against strongSwan charon 5.9.8
and 6.0.6, each side initiating; a revoked certificate is refused with the reason.

  [hostA] -- [gwA espd daemon, gwa.ik.test] ==IKEv2 + ESP in UDP== [gwB charon,
  gwb.ik.test] -- [hostB]

The PKI (support.pki) is a root CA and an intermediate under it; both gateways' ECDSA
certificates come from the intermediate, each side sends its certificate with the
intermediate and trusts only the root.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import netns
from support.pki import Pki
from support.strongswan import (
    DEBIAN,
    STRONGSWAN6,
    Charon,
    CharonError,
    close_with_espd,
    site_to_site,
)

pytestmark = pytest.mark.netns


def espd_config(tmp: Path, cert: str, key: str, ca: str, start: str,
                crl: str | None = None, metrics: str = "",
                local_id: str | None = None, remote_id: str = "fqdn:gwb.ik.test") -> str:
    local_line = f'local_id = "{local_id}"' if local_id else ""
    crl_line = f'crl = ["{crl}"]' if crl else ""
    return f"""
[daemon]
interface = "espd0"
local = "192.0.2.1"
workers = 1
control_socket = "{tmp}/gwA.sock"
metrics = "{metrics}"
state_dir = "{tmp}/gwA-state"

[access_list.LAN]
rules = ["permit ip 10.1.0.0/16 10.2.0.0/16"]

[transform_set.GCM]
transforms = ["esp-gcm 128"]

[ike]
proposals = ["aes128gcm16-prfsha256-x25519"]
certificate = "{cert}"
private_key = "{key}"
ca = ["{ca}"]
{crl_line}

[ike_peer.gwb]
address = "192.0.2.2"
auth = "certificate"
remote_id = "{remote_id}"
{local_line}

[[crypto_map]]
name = "VPN"
seq = 10
keying = "ike"
peer = "192.0.2.2"
match_address = "LAN"
transform_sets = ["GCM"]
start = "{start}"
"""


def site(tmp: Path, version, *, espd_revoked: bool = False, charon_revoked: bool = False,
         start: str = "manual"):
    """The PKI, a started espd daemon in gwA and a loaded charon in gwB."""
    pki = Pki(str(tmp / "pki"))
    root = pki.ca("ca")
    sub = pki.ca("sub", issuer=root)
    gwa = pki.gateway("gwa", sub, identity="gwa.ik.test")
    gwb = pki.gateway("gwb", sub, identity="gwb.ik.test")
    chain = tmp / "gwa-chain.pem"  # ours first, then the intermediate we send with it
    chain.write_bytes(Path(gwa.cert_path).read_bytes() + Path(sub.cert_path).read_bytes())
    crl = pki.crl(sub, [gwb]) if charon_revoked else None
    return pki, root, sub, gwa, gwb, chain, crl


def check_certificates_shown(ns: str, port: int, sock: Path, gwa, sub, root) -> None:
    """The expiry metric has a series per loaded certificate, counting down to its
    notAfter; ``espd show certificates`` lists the same three."""
    expiry = {}
    for family in text_string_to_metric_families(netns.scrape_metrics(ns, port)):
        for sample in family.samples:
            if sample.name == "espd_certificate_expiry_seconds":
                expiry[sample.labels["role"]] = sample
    assert set(expiry) == {"local", "intermediate", "ca"}, expiry
    now = time.time()
    for role, issued in (("local", gwa), ("intermediate", sub), ("ca", root)):
        assert expiry[role].labels["subject"] == issued.cert.subject.rfc4514_string()
        left = issued.cert.not_valid_after_utc.timestamp() - now
        assert abs(expiry[role].value - left) < 30, (role, expiry[role], left)
    shown = subprocess.run([sys.executable, "-m", "espd", "show", "certificates",
                            "--socket", str(sock)], capture_output=True, text=True, timeout=20)
    assert shown.returncode == 0, shown.stderr
    for title, issued in (("Certificate", gwa), ("Intermediate CA Certificate (sent)", sub),
                          ("CA Certificate (trusted)", root)):
        assert f"{title}\n  Status: Available, expires in " in shown.stdout, shown.stdout
        assert f"Serial Number (hex): {issued.cert.serial_number:X}" in shown.stdout
    detail = subprocess.run([sys.executable, "-m", "espd", "show", "ike", "sa", "--detail",
                             "--socket", str(sock)], capture_output=True, text=True, timeout=20)
    assert detail.returncode == 0, detail.stderr
    assert "Auth sign: CERT (RFC 7427 signature)" in detail.stdout, detail.stdout
    assert "Remote certificate: CN=gwb.ik.test" in detail.stdout, detail.stdout
    assert f"issuer {sub.cert.subject.rfc4514_string()}, valid " in detail.stdout


@pytest.mark.parametrize("ids", ["fqdn", "dn"])
@pytest.mark.parametrize("initiator", ["charon", "espd"])
@pytest.mark.parametrize("peer", [DEBIAN, STRONGSWAN6], ids=["5.9.8", "6.0.6"])
def test_certificates_authenticate_both_ways_and_traffic_passes(netns_ok, peer, initiator,
                                                                ids):
    """ids "dn": both sides identify by subject DN (ID_DER_ASN1_DN); espd's are written as
    strongSwan writes them (C=..., CN=... last), its own local_id in RFC 4514 order."""
    if peer.unavailable():
        pytest.skip(peer.unavailable())
    topo = netns.Topology(tag=f"espd-{os.getpid()}-ct{secrets.randbelow(10**6)}", ipv6=False)
    tmp = Path(tempfile.mkdtemp(prefix="espd-cert-"))
    with topo:
        charon = Charon(topo.gw_b, "gwb", peer).start()
        daemon = None
        try:
            _, root, sub, gwa, gwb, chain, _ = site(tmp, peer)
            dn = ids == "dn"
            charon.load([site_to_site("b", None, local_auth="pubkey", remote_auth="pubkey",
                                      local_id=gwb.subject if dn else "gwb.ik.test",
                                      remote_id=gwa.subject if dn else "gwa.ik.test",
                                      local_certs=["gwb.pem"], remote_cacerts=["ca.pem"],
                                      proposals=["aes128gcm16-prfsha256-x25519"],
                                      esp_proposals=["aes128gcm16"])],
                        certs=[gwb.cert_path, sub.cert_path], cacerts=[root.cert_path],
                        keys=[gwb.key_path])
            path = tmp / "gwA.toml"
            port = 20000 + (os.getpid() * 11 + secrets.randbelow(1000)) % 20000
            path.write_text(espd_config(
                tmp, str(chain), gwa.key_path, root.cert_path,
                "manual" if initiator == "charon" else "on-demand", metrics=f"127.0.0.1:{port}",
                local_id=f"dn:{gwa.cert.subject.rfc4514_string()}" if dn else None,
                remote_id=f"dn:{gwb.subject}" if dn else "fqdn:gwb.ik.test"))
            daemon = netns.EspdProcess(topo.gw_a, str(path), str(tmp / "gwA.sock"),
                                       str(tmp / "gwA.log"), "gwA")
            daemon.start()
            daemon.wait_ready(timeout=30)
            with charon.events() as events:
                if initiator == "charon":
                    charon.initiate("net")
                else:
                    netns.ping(topo.host_a, netns.HOST_B4, count=1, timeout=1)
                events.wait_up("child-updown", timeout=15)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                result = netns.ping(topo.host_a, netns.HOST_B4, count=3, interval=0.05,
                                    timeout=2)
                if result.received == 3:
                    break
            assert result.received == 3, (result, daemon.log())
            charon.wait_log(rf"authentication of '{gwa.subject if dn else 'gwa.ik.test'}' "
                            r"with (ECDSA_WITH_SHA256_DER|ECDSA-256 signature)\S* successful")
            state = daemon.state()
            expected = (f"dn:{gwb.cert.subject.rfc4514_string()}" if dn
                        else "fqdn:gwb.ik.test")
            assert state["ike"]["sas"][0]["peer_id"] == expected, state["ike"]
            check_certificates_shown(topo.gw_a, port, tmp / "gwA.sock", gwa, sub, root)
        finally:
            close_with_espd(daemon, charon, tmp)


def test_a_revoked_peer_certificate_is_refused_with_the_reason(netns_ok):
    if DEBIAN.unavailable():
        pytest.skip(DEBIAN.unavailable())
    topo = netns.Topology(tag=f"espd-{os.getpid()}-cr{secrets.randbelow(10**6)}", ipv6=False)
    tmp = Path(tempfile.mkdtemp(prefix="espd-cert-"))
    with topo:
        charon = Charon(topo.gw_b, "gwb", DEBIAN).start()
        daemon = None
        try:
            _, root, sub, gwa, gwb, chain, crl = site(tmp, DEBIAN, charon_revoked=True)
            charon.load([site_to_site("b", None, local_auth="pubkey", remote_auth="pubkey",
                                      local_id="gwb.ik.test", remote_id="gwa.ik.test",
                                      local_certs=["gwb.pem"], remote_cacerts=["ca.pem"],
                                      proposals=["aes128gcm16-prfsha256-x25519"],
                                      esp_proposals=["aes128gcm16"])],
                        certs=[gwb.cert_path, sub.cert_path], cacerts=[root.cert_path],
                        keys=[gwb.key_path])
            path = tmp / "gwA.toml"
            path.write_text(espd_config(tmp, str(chain), gwa.key_path, root.cert_path,
                                        "manual", crl=crl))
            daemon = netns.EspdProcess(topo.gw_a, str(path), str(tmp / "gwA.sock"),
                                       str(tmp / "gwA.log"), "gwA")
            daemon.start()
            daemon.wait_ready(timeout=30)
            with pytest.raises(CharonError, match="initiate net failed"):
                charon.initiate("net", timeout=5)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and "is revoked" not in daemon.log():
                time.sleep(0.1)
            assert "certificate CN=gwb.ik.test" in daemon.log() and \
                "is revoked by CN=espd test sub" in daemon.log(), daemon.log()
            charon.wait_log(r"received AUTHENTICATION_FAILED notify error")
        finally:
            if daemon is not None:
                status = daemon.stop()
                print(daemon.log())
                assert status == 0
            charon.close()
            shutil.rmtree(tmp, ignore_errors=True)
