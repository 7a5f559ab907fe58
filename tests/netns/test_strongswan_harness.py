"""The strongSwan harness itself, charon against charon (no espd yet): the peer the IKE
interop tests use comes up in a namespace, negotiates, carries a ping through its userspace
data plane, and reports through vici events. Few and fast on purpose.

  [hostA 10.1.0.10] -- [gwA 192.0.2.1 charon] ==ESP in UDP 4500== [charon 192.0.2.2 gwB] --
  [hostB 10.2.0.10]
"""

from __future__ import annotations

import dataclasses
import secrets
import subprocess

import pytest
from support import netns, tshark
from support.pki import Pki
from support.strongswan import (
    DEBIAN,
    STRONGSWAN6,
    CharonError,
    first_sa_keys,
    site_to_site,
)

pytestmark = pytest.mark.netns


@pytest.fixture
def topology(make_topology):
    return make_topology(ipv6=False)


@pytest.fixture
def charons(make_charon):
    """charons(topo, version_a, version_b, **kwargs) -> (gwA charon, gwB charon)."""

    def make(topo: netns.Topology, version_a: str, version_b: str, **kwargs) -> tuple:
        return (make_charon(topo.gw_a, "gwa", version_a, **kwargs),
                make_charon(topo.gw_b, "gwb", version_b, **kwargs))

    return make


def ping_through(topo: netns.Topology, ip: int = 4) -> None:
    a, b = (netns.HOST_A4, netns.HOST_B4) if ip == 4 else (netns.HOST_A6, netns.HOST_B6)
    for src, dst in ((topo.host_a, b), (topo.host_b, a)):
        result = netns.ping(src, dst, count=3, interval=0.05, timeout=2)
        assert result.received == 3, f"ping {dst} from {src} through the tunnel: {result}"


HYBRID = "aes256gcm16-prfsha384-x25519-ke1_mlkem768"
CLASSIC = "aes256gcm16-prfsha384-x25519"


@pytest.mark.parametrize("version_a,version_b,offer_a,offer_b,expect_ke", [
    ("5.9.8", "5.9.8", ["aes128gcm16-prfsha256-x25519"], ["aes128gcm16-prfsha256-x25519"],
     None),
    ("6.0.6", "6.0.6", [HYBRID], [HYBRID], "ML_KEM_768"),
    # 6.0.6 offers hybrid first; 5.9.8 knows no ML-KEM and picks the classic proposal
    ("6.0.6", "5.9.8", [HYBRID, CLASSIC], [CLASSIC], None),
], ids=["5.9.8-5.9.8", "6.0.6-6.0.6-mlkem", "6.0.6-5.9.8"])
def test_psk_tunnel_carries_ping(topology, charons, version_a, version_b, offer_a, offer_b,
                                 expect_ke):
    gwa, gwb = charons(topology, version_a, version_b)
    psk = secrets.token_hex(16)
    for charon, side, offer in ((gwa, "a", offer_a), (gwb, "b", offer_b)):
        charon.load([site_to_site(side, psk, proposals=offer)])
    with gwb.events() as responder:
        gwa.initiate("net")
        up = responder.wait_up("child-updown")
    (ike,) = gwa.list_sas()
    sa = ike["gw"]
    assert sa["state"] == "ESTABLISHED" and sa["remote-host"] == "192.0.2.2", sa
    assert sa["encr-alg"] == "AES_GCM_16", sa
    assert sa["dh-group"] == "CURVE_25519", sa
    assert sa.get("ake1") == expect_ke, f"additional key exchange: {sa}"
    child = next(iter(up.children().values()))
    assert child["encap"] == "yes" and child["local-ts"] == ["10.2.0.0/16"], child
    ping_through(topology)
    (child_a,) = gwa.child_sas()
    assert int(child_a["packets-out"]) >= 3 and int(child_a["packets-in"]) >= 3, child_a


def test_strongswan6_traps_and_sends_raw_esp(topology, charons, tmp_path):
    """6.0.6's libipsec can do what 5.9.8's cannot: start on the first packet (trap) and
    carry ESP without UDP (raw_esp plus encap = no)."""
    gwa, gwb = charons(topology, "6.0.6", "6.0.6", raw_esp=True)
    psk = secrets.token_hex(16)
    gwa.load([site_to_site("a", psk, encap=False, start_action="trap")])
    gwb.load([site_to_site("b", psk, encap=False)])
    pcap = str(tmp_path / "underlay.pcap")
    with tshark.PcapCapture(topology.gw_b, netns.WAN_IF, pcap), gwa.events() as events:
        netns.ping(topology.host_a, netns.HOST_B4, count=1, timeout=1)  # the trigger
        events.wait_up("child-updown")
        ping_through(topology)
    (child,) = gwa.child_sas()
    assert child.get("encap", "no") == "no", child  # vici leaves "encap" out when off
    esp = [p for p in tshark.dissect(pcap) if "esp" in p.protocols]
    assert len(esp) >= 12 and all("udp" not in p.protocols for p in esp), \
        [p.protocols for p in esp[:3]]


@pytest.mark.parametrize("version,kind,settings,method", [
    ("5.9.8", "ecdsa-p256", {}, r"ECDSA_WITH_SHA256_DER"),
    ("6.0.6", "ed25519", {}, r"ED25519"),
    ("6.0.6", "rsa", {"rsa_pss": True}, r"RSA_EMSA_PSS"),
], ids=["5.9.8-ecdsa", "6.0.6-ed25519", "6.0.6-rsa-pss"])
def test_certificates_and_small_fragments(topology, charons, tmp_path, version, kind,
                                          settings, method):
    """Gateway certificates under an intermediate CA (support.pki), IKE_AUTH split into
    RFC 7383 fragments of at most 400 bytes."""
    pki = Pki(str(tmp_path / "pki"))
    root = pki.ca("ca")
    sub = pki.ca("sub", issuer=root)
    gw = {side: pki.gateway(f"gw{side}", sub, kind, identity=f"gw{side}.ik.test")
          for side in "ab"}
    gwa, gwb = charons(topology, version, version,
                       settings={"fragment_size": 400, **settings})
    for charon, side, other in ((gwa, "a", "b"), (gwb, "b", "a")):
        conn = site_to_site(side, None, local_auth="pubkey", remote_auth="pubkey",
                            local_id=f"gw{side}.ik.test", remote_id=f"gw{other}.ik.test",
                            local_certs=[f"gw{side}.pem"], remote_cacerts=["ca.pem"],
                            fragmentation="yes")
        charon.load([conn], certs=[gw[side].cert_path, sub.cert_path],
                    cacerts=[root.cert_path], keys=[gw[side].key_path])
    gwa.initiate("net")
    ping_through(topology)
    gwb.wait_log(rf"authentication of 'gwa.ik.test' with ({method})\S* successful")
    gwa.wait_log(r"splitting IKE message \(\d+ bytes\) into \d+ fragments")
    gwb.wait_log(r"IKE_AUTH request 1 \[ EF\(1/\d+\) \]")


@pytest.mark.parametrize("version", ["5.9.8", "6.0.6"])
def test_a_revoked_certificate_is_refused(topology, charons, tmp_path, version):
    pki = Pki(str(tmp_path / "pki"))
    root = pki.ca("ca")
    gw = {side: pki.gateway(f"gw{side}", root, identity=f"gw{side}.ik.test") for side in "ab"}
    crl = pki.crl(root, [gw["a"]])
    gwa, gwb = charons(topology, version, version)
    for charon, side, other in ((gwa, "a", "b"), (gwb, "b", "a")):
        conn = site_to_site(side, None, local_auth="pubkey", remote_auth="pubkey",
                            local_id=f"gw{side}.ik.test", remote_id=f"gw{other}.ik.test",
                            local_certs=[f"gw{side}.pem"], remote_cacerts=["ca.pem"])
        charon.load([conn], certs=[gw[side].cert_path], cacerts=[root.cert_path],
                    keys=[gw[side].key_path], crls=[crl] if side == "b" else [])
    with pytest.raises(CharonError, match="initiate net failed"):
        gwa.initiate("net", timeout=5)
    gwb.wait_log(r"certificate was revoked on .*, reason: unspecified")
    gwa.wait_log(r"received AUTHENTICATION_FAILED notify error")


def test_a_killed_peer_comes_back(topology, charons):
    """kill() is a crash (no DELETE goes out); restart() brings the same charon back with
    its connections, and the survivor's next initiate builds a new tunnel."""
    gwa, gwb = charons(topology, "5.9.8", "5.9.8")
    psk = secrets.token_hex(16)
    for charon, side in ((gwa, "a"), (gwb, "b")):
        charon.load([site_to_site(side, psk)])
    gwa.initiate("net")
    old_pid = gwb.pid
    gwb.kill()
    assert not gwb.alive() and len(gwa.list_sas()) == 1  # gwa never heard of it
    gwb.restart()
    assert gwb.pid != old_pid and gwb.list_sas() == []
    gwa.terminate(ike="gw", force=True)  # the new charon would never answer the DELETE
    gwa.initiate("net")
    ping_through(topology)


def test_ipv6_tunnel_over_ipv6(make_topology, charons):
    topo = make_topology(ipv6=True)
    gwa, gwb = charons(topo, "5.9.8", "5.9.8")
    psk = secrets.token_hex(16)
    for charon, side in ((gwa, "a"), (gwb, "b")):
        charon.load([site_to_site(side, psk, ip=6)])
    gwa.initiate("net")
    (child,) = gwb.child_sas()
    assert child["local-ts"] == ["fd00:2::/64"] and child["remote-ts"] == ["fd00:1::/64"]
    ping_through(topo, ip=6)


def test_wrong_psk_fails_with_a_log_line_and_no_sa(topology, charons):
    gwa, gwb = charons(topology, "5.9.8", "5.9.8")
    gwa.load([site_to_site("a", secrets.token_hex(16))])
    gwb.load([site_to_site("b", secrets.token_hex(16))])
    with pytest.raises(CharonError, match="initiate net failed"):
        gwa.initiate("net", timeout=5)
    gwb.wait_log(r"tried 1 shared key for 'gwb' - 'gwa', but MAC mismatched")
    gwb.wait_log(r"generating IKE_AUTH response 1 \[ N\(AUTH_FAILED\) \]")
    gwa.wait_log(r"received AUTHENTICATION_FAILED notify error")
    assert gwa.list_sas() == [] and gwb.list_sas() == []


def test_events_report_child_rekey_and_delete(topology, charons):
    gwa, gwb = charons(topology, "5.9.8", "5.9.8")
    psk = secrets.token_hex(16)
    for charon, side in ((gwa, "a"), (gwb, "b")):
        charon.load([site_to_site(side, psk)])
    with gwa.events() as events:
        gwa.initiate("net")
        events.wait_up("ike-updown")
        first = events.wait_up("child-updown")
        old_spi = next(iter(first.children().values()))["spi-in"]
        gwb.rekey(child="net")
        rekey = events.wait("child-rekey", timeout=10)
        ping_through(topology)
        gwb.terminate(ike="gw")
        events.wait_down("ike-updown")
    (rekeyed,) = rekey.children().values()
    assert rekeyed["old"]["spi-in"] == old_spi and rekeyed["new"]["spi-in"] != old_spi, rekeyed
    assert gwa.list_sas() == [] and gwb.list_sas() == []


@pytest.mark.parametrize("ike_proposal,esp_proposal", [
    ("aes128gcm16-prfsha256-x25519", "aes128gcm16"),
    ("aes256-sha256-modp2048", "aes256-sha256"),
])
def test_capture_decrypts_with_charons_keys(topology, charons, tmp_path, ike_proposal,
                                            esp_proposal):
    """Capture the underlay in gwB's namespace while charon negotiates and pings go
    through; tshark, given the keys charon logged, checks every IKE ICV and decrypts ESP."""
    why = tshark.unavailable()
    if why:
        pytest.skip(why)
    gwa, gwb = charons(topology, "5.9.8", "5.9.8", key_dump=True)
    psk = secrets.token_hex(16)
    for charon, side in ((gwa, "a"), (gwb, "b")):
        charon.load([site_to_site(side, psk, proposals=[ike_proposal],
                                  esp_proposals=[esp_proposal])])
    pcap = str(tmp_path / "underlay.pcap")
    with tshark.PcapCapture(topology.gw_b, netns.WAN_IF, pcap) as capture:
        gwa.initiate("net")
        ping_through(topology)
    assert capture.frames >= 4 + 12  # 4 IKE messages, 3 pings each way seen both ways
    ike_keys, esp_keys = first_sa_keys(gwa)
    packets = tshark.dissect(pcap, tshark.options([ike_keys], esp_keys))
    ike = tshark.ike_integrity(packets)
    assert len(ike.encrypted) == 2 and ike.correct == ike.encrypted, ike  # IKE_AUTH pair
    esp = tshark.esp_decrypted(packets, {netns.HOST_A4, netns.HOST_B4})
    assert len(esp.esp) >= 12 and esp.decrypted == esp.esp, esp
    assert {proto for *_, proto in esp.inner} == {"icmp"}
    if "gcm" not in esp_proposal:  # tshark checks HMAC ICVs (not AES-GCM's)
        assert esp.icv_good == esp.esp, esp
        bad = [dataclasses.replace(sa, auth_key=bytes([sa.auth_key[0] ^ 1]) + sa.auth_key[1:])
               for sa in esp_keys]
        worse = tshark.esp_decrypted(tshark.dissect(pcap, tshark.options(esp=bad)))
        assert worse.decrypted == [] and all("ICV incorrect" in w for w in worse.wrong), worse


@pytest.mark.parametrize("peer", [DEBIAN, STRONGSWAN6], ids=lambda p: p.version)
def test_installed_peer_is_the_version_the_harness_names(peer):
    why = peer.unavailable()
    if why:
        pytest.skip(why)
    out = subprocess.run([peer.charon, "--version"], capture_output=True, text=True,
                         timeout=10).stdout
    assert f"strongSwan {peer.version}" in out, out
