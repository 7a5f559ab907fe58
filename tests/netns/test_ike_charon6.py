"""The espd daemon against strongSwan charon 6.0.6 (and Debian's 5.9.8 where the case
applies to it): gateway certificates of every key kind, refused certificates, on-demand
starts from either side, and raw ESP (IP protocol 50, no UDP).

  [hostA 10.1.0.10] -- [gwA espd daemon] ==IKEv2 + ESP== [gwB charon] -- [hostB 10.2.0.10]

The rest of the matrix lives where it started: the PSK proposals in test_ike_charon.py
(key agreement with both versions), fragments of 400 bytes in test_ike_fragmentation.py,
ECDSA P-256 certificates (FQDN and DN identities) in test_ike_certificates.py and ML-KEM
with its rekeys in test_ike_mlkem.py. Certificates here come from support.pki: one root
CA and an intermediate (ECDSA P-256) under it, the gateways' certificates from the
intermediate; each side sends its certificate with the intermediate and trusts the root.
"""

from __future__ import annotations

import datetime
import re
import shutil
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from support import netns
from support.pki import Pki
from support.strongswan import DEBIAN, STRONGSWAN6, CharonError, site_to_site
from test_ike_certificates import espd_config as certificate_config
from test_ike_mlkem import Site, _site
from test_ike_mlkem import config as psk_config

pytestmark = pytest.mark.netns

PEERS = pytest.mark.parametrize("peer", [DEBIAN, STRONGSWAN6], ids=["5.9.8", "6.0.6"])
SUITE = "aes128gcm16-prfsha256-x25519"
PSK_ESP = "aes256gcm16"  # test_ike_mlkem.config's transform set; certificates use GCM 128
AUTH_FAILED = "received AUTHENTICATION_FAILED notify error"
ESPD_REFUSED = "refused our authentication (AUTHENTICATION_FAILED)"


def _need(peer) -> None:
    if peer.unavailable():
        pytest.skip(peer.unavailable())


def _wait_in_log(daemon, text: str, timeout: float = 8.0) -> str:
    deadline = time.monotonic() + timeout
    while text not in (log := daemon.log(tail=20000)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert text in log, log
    return log


class CertSite:
    """The PKI, charon loaded with its certificate in gwB, and espd's configuration."""

    def __init__(self, site: Site, kind: str = "ecdsa-p256", *, charon_expired: bool = False,
                 espd_expired: bool = False) -> None:
        self.site = site
        pki = Pki(str(site.tmp / "pki"))
        self.root = pki.ca("ca")
        self.sub = pki.ca("sub", issuer=self.root)
        lapsed = {"not_before": pki.now - datetime.timedelta(days=10), "days": 1}
        self.gwa = pki.gateway("gwa", self.sub, kind, identity="gwa.ik.test",
                               **(lapsed if espd_expired else {}))
        self.gwb = pki.gateway("gwb", self.sub, kind, identity="gwb.ik.test",
                               **(lapsed if charon_expired else {}))
        self.pki = pki
        self.chain = site.tmp / "gwa-chain.pem"  # ours first, then the intermediate
        self.chain.write_bytes(Path(self.gwa.cert_path).read_bytes()
                               + Path(self.sub.cert_path).read_bytes())

    def load_charon(self, remote_id: str = "gwa.ik.test", crls=()) -> None:
        self.site.charon.load(
            [site_to_site("b", None, local_auth="pubkey", remote_auth="pubkey",
                          local_id="gwb.ik.test", remote_id=remote_id, local_certs=["gwb.pem"],
                          remote_cacerts=["ca.pem"], proposals=[SUITE],
                          esp_proposals=["aes128gcm16"])],
            certs=[self.gwb.cert_path, self.sub.cert_path], cacerts=[self.root.cert_path],
            keys=[self.gwb.key_path], crls=list(crls))

    def start_espd(self, start: str, crl: str | None = None,
                   remote_id: str = "fqdn:gwb.ik.test", rsa_pss: bool = False) -> None:
        text = certificate_config(self.site.tmp, str(self.chain), self.gwa.key_path,
                                  self.root.cert_path, start, crl=crl, remote_id=remote_id)
        self.site.start_espd(text.replace("[ike]\n", "[ike]\nrsa_pss = true\n") if rsa_pss
                             else text)


def _run(peer, tag: str, body, **charon) -> None:
    """``body(site)`` with espd in gwA and a started charon ``peer`` in gwB."""
    _need(peer)
    topo, tmp, psk = _site(peer, tag)
    with topo:
        site = Site(peer, psk, tmp, topo, **charon)
        try:
            body(site)
        finally:
            site.close()
            shutil.rmtree(tmp, ignore_errors=True)


def _up(site: Site, initiator: str) -> None:
    """The first Child SA, started by ``initiator``; then pings both ways."""
    with site.charon.events() as events:
        if initiator == "charon":
            site.charon.initiate("net")
        else:  # the first packet at espd: acquire
            netns.ping(site.topo.host_a, netns.HOST_B4, count=1, timeout=1)
        events.wait_up("child-updown", timeout=15)
    site.pings()


# -- certificates of every key kind ----------------------------------------------------------

# kind -> (charon settings, how charon names espd's signature, how it names its own);
# RSA keys sign PKCS#1 v1.5 (RFC 8247's MUST) unless both sides are told RSASSA-PSS
KINDS = {
    "ecdsa-p384": ({}, r"ECDSA_WITH_SHA384_DER", r"ECDSA_WITH_SHA384_DER"),
    "ed25519": ({}, r"ED25519", r"ED25519"),
    "rsa-pss": ({"rsa_pss": True}, r"RSA_EMSA_PSS", r"RSA_EMSA_PSS"),
    "rsa-pkcs1": ({}, r"RSA_EMSA_PKCS1_SHA2_256", r"RSA_EMSA_PKCS1_SHA2_256"),
}


@pytest.mark.parametrize("initiator", ["charon", "espd"])
@pytest.mark.parametrize("kind", list(KINDS))
@PEERS
def test_gateway_certificates_of_each_kind_both_ways(netns_ok, peer, kind, initiator):
    """RFC 7427 signatures with the gateways' P-384, Ed25519 or RSA keys (RSASSA-PSS or
    PKCS#1 v1.5), each side verifying the other's through the intermediate to the root,
    then traffic."""
    settings, espd_signs, charon_signs = KINDS[kind]

    def body(site: Site) -> None:
        certs = CertSite(site, "rsa" if kind.startswith("rsa") else kind)
        certs.load_charon()
        certs.start_espd("manual" if initiator == "charon" else "on-demand",
                         rsa_pss=kind == "rsa-pss")
        _up(site, initiator)
        site.charon.wait_log(rf"authentication of 'gwa.ik.test' with ({espd_signs})\S* "
                             r"successful")
        site.charon.wait_log(rf"authentication of 'gwb.ik.test' \(myself\) with "
                             rf"({charon_signs})\S* successful")
        [shown] = site.daemon.state()["ike"]["sas"]
        assert shown["peer_id"] == "fqdn:gwb.ik.test", shown

    _run(peer, "ck", body, settings=settings)


# -- refused certificates --------------------------------------------------------------------

# case -> (what espd logs when it refuses charon's certificate, what charon logs when it
# refuses espd's)
REFUSALS = {
    "revoked": ("is revoked by CN=espd test sub", r"certificate was revoked on .*, reason: "),
    "expired": ("expired on", r"certificate invalid \(valid from .* to .*\)"),
    "identity": ("peer identifies as fqdn:gwb.ik.test, but fqdn:gwc.ik.test is expected",
                 r"no matching peer config found"),
}


@pytest.mark.parametrize("refuser", ["espd", "charon"])
@pytest.mark.parametrize("case", list(REFUSALS))
@PEERS
def test_refused_certificates_fail_with_authentication_failed_and_the_reason(
        netns_ok, peer, case, refuser):
    """A revoked (CRL of the intermediate), expired or misnamed peer certificate: the side
    that checks it answers or tells AUTHENTICATION_FAILED and logs why; no Child SA."""
    espd_says, charon_says = REFUSALS[case]

    def body(site: Site) -> None:
        certs = CertSite(site, charon_expired=case == "expired" and refuser == "espd",
                         espd_expired=case == "expired" and refuser == "charon")
        if refuser == "espd":  # charon initiates, espd (responder) refuses
            crl = certs.pki.crl(certs.sub, [certs.gwb]) if case == "revoked" else None
            certs.load_charon()
            certs.start_espd("manual", crl=crl, remote_id="fqdn:gwc.ik.test"
                             if case == "identity" else "fqdn:gwb.ik.test")
            with pytest.raises(CharonError, match="initiate net failed"):
                site.charon.initiate("net", timeout=5)
            _wait_in_log(site.daemon, espd_says)
            site.charon.wait_log(AUTH_FAILED)
        else:  # espd initiates on the first packet, charon (responder) refuses
            crls = [certs.pki.crl(certs.sub, [certs.gwa])] if case == "revoked" else []
            certs.load_charon(remote_id="gwc.ik.test" if case == "identity"
                              else "gwa.ik.test", crls=crls)
            certs.start_espd("on-demand")
            netns.ping(site.topo.host_a, netns.HOST_B4, count=1, timeout=1)
            site.charon.wait_log(charon_says)
            _wait_in_log(site.daemon, ESPD_REFUSED)
        assert site.charon.child_sas() == []
        assert not [sa for sa in site.daemon.state()["ike"]["sas"]
                    if sa["state"] == "established"]

    _run(peer, "cr", body)


# -- on demand -------------------------------------------------------------------------------

@pytest.mark.parametrize("peer,first_packet_at", [
    pytest.param(STRONGSWAN6, "charon", id="6.0.6-charon-trap"),
    pytest.param(STRONGSWAN6, "espd", id="6.0.6-espd"),
    pytest.param(DEBIAN, "espd", id="5.9.8-espd")])  # 5.9.8's libipsec cannot trap
def test_the_first_packet_starts_the_negotiation_and_only_it_may_be_lost(netns_ok, peer,
                                                                         first_packet_at):
    """charon's start_action = trap or espd's start = "on-demand": eight echoes 250 ms
    apart from the LAN behind that gateway; the first one may fall while IKE runs (about
    40 ms unloaded: neither side holds packets without an SA), every later one comes
    back, and the IKE SA was started by the gateway that saw the first packet."""
    count = 8

    def body(site: Site) -> None:
        trap = first_packet_at == "charon"
        site.charon.load([site_to_site("b", site.psk, proposals=[SUITE],
                                       esp_proposals=[PSK_ESP],
                                       start_action="trap" if trap else "none")])
        site.start_espd(psk_config(site.psk, "manual" if trap else "on-demand", site.tmp,
                                   [SUITE]))
        assert site.charon.child_sas() == [] and site.daemon.state()["ike"]["sas"] == []
        with site.charon.events() as events:
            source, target = ((site.topo.host_b, netns.HOST_A4) if trap
                              else (site.topo.host_a, netns.HOST_B4))
            result = netns.ping(source, target, count=count, interval=0.25, timeout=2)
            events.wait_up("child-updown", timeout=5)
        assert result.received >= count - 1, (result, site.daemon.log())
        [shown] = site.daemon.state()["ike"]["sas"]
        assert shown["state"] == "established", shown
        log = site.charon.log()
        initiated = re.search(r"> initiating IKE_SA gw\[\d+\] to ", log) is not None
        assert initiated == trap, log[-3000:]
        if trap:
            assert "acquire" in log, log[-3000:]

    _run(peer, "od", body)


# -- reauthentication -----------------------------------------------------------------------

@PEERS
def test_charons_reauthentication_replaces_the_ike_sa_under_traffic(netns_ok, peer):
    """``swanctl --rekey --reauth``: a new IKE SA (IKE_SA_INIT + IKE_AUTH) with a new
    Child SA, the old one deleted. 6.0.6 makes before it breaks (nothing lost); 5.9.8
    deletes first, so the echoes of the gap (a few 10 ms apart) may fall. Afterwards espd
    has one IKE SA and, once the replaced Child SA's linger is over, exactly the Child SA
    charon has."""

    def body(site: Site) -> None:
        site.charon.load([site_to_site("b", site.psk, proposals=[SUITE],
                                       esp_proposals=[PSK_ESP])])
        site.start_espd(psk_config(site.psk, "manual", site.tmp, [SUITE]))
        with site.charon.events() as events:
            site.charon.initiate("net")
            events.wait_up("child-updown", timeout=15)
            site.pings()
            [before] = site.daemon.state()["ike"]["sas"]
            results: list = []
            pinger = threading.Thread(target=lambda: results.append(netns.ping(
                site.topo.host_a, netns.HOST_B4, count=300, interval=0.01, timeout=3)))
            pinger.start()
            time.sleep(0.5)
            site.charon.swanctl("--rekey", "--ike", "gw", "--reauth")
            events.wait("ike-updown", lambda e: not e.up, timeout=10)  # the old one
            pinger.join(20)
        lost = 300 - results[0].received if results else 300
        assert lost == 0 if peer.major >= 6 else lost <= 10, (results, site.daemon.log())
        [after] = site.daemon.state()["ike"]["sas"]
        assert after["state"] == "established" and after["spi_i"] != before["spi_i"], after
        [child] = site.charon.child_sas()
        wanted = {int(child["spi-in"], 16), int(child["spi-out"], 16)}
        deadline = time.monotonic() + 6  # a replaced Child SA lingers 2 s (reauth.py)
        while (spis := {sa["spi"] for sa in site.daemon.state()["sas"]}) != wanted \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert spis == wanted, (spis, wanted, site.daemon.log())
        site.pings()

    _run(peer, "ra", body)


# -- raw ESP ---------------------------------------------------------------------------------

def _esp_on_the_wire(frames) -> tuple[int, int]:
    """(IP protocol 50 packets, ESP-in-UDP packets) among IPv4 frames of a capture."""
    raw = udp = 0
    for _, frame, _ in frames:
        if frame[12:14] != b"\x08\x00" or len(frame) < 42:
            continue
        ihl = (frame[14] & 0x0F) * 4
        if frame[23] == 50:
            raw += 1
        elif frame[23] == 17:
            sport, dport = struct.unpack_from("!HH", frame, 14 + ihl)
            marker = frame[14 + ihl + 8:14 + ihl + 12]
            if 4500 in (sport, dport) and len(marker) == 4 and marker != bytes(4):
                udp += 1
    return raw, udp


@pytest.mark.parametrize("initiator", ["charon", "espd"])
def test_raw_esp_with_charon6_carries_ping_and_tcp_both_ways(netns_ok, initiator):
    """charon 6.0.6 with encap = no and kernel-libipsec's raw_esp, espd with
    encapsulation = "esp": the Child SA is IP protocol 50 both ways, pings and a TCP
    transfer (1 MiB each way, SHA-256 checked) pass, and no ESP goes in UDP."""

    def body(site: Site) -> None:
        site.charon.load([site_to_site("b", site.psk, proposals=[SUITE],
                                       esp_proposals=[PSK_ESP], encap=False)])
        # the crypto map is the configuration's last table: this line lands in it
        site.start_espd(psk_config(site.psk, "manual" if initiator == "charon"
                                   else "on-demand", site.tmp, [SUITE])
                        + 'encapsulation = "esp"\n')
        with netns.Capture(site.topo.gw_a, netns.WAN_IF) as capture:
            _up(site, initiator)
            netns.tcp_transfer(site.topo.host_a, site.topo.host_b, netns.HOST_B4)
            netns.tcp_transfer(site.topo.host_b, site.topo.host_a, netns.HOST_A4)
        raw, udp = _esp_on_the_wire(capture.frames)
        assert raw >= 200 and udp == 0, (raw, udp)
        state = site.daemon.state()
        assert {sa["encap"] for sa in state["sas"]} == {"esp"}, state["sas"]
        [child] = site.charon.child_sas()
        assert child.get("encap", "no") == "no", child  # vici leaves "encap" out when off
        assert int(child["bytes-in"]) > 1 << 20 and int(child["bytes-out"]) > 1 << 20, child

    _run(STRONGSWAN6, "re", body, raw_esp=True)


def test_raw_esp_rekeys_by_both_sides_under_traffic_lose_nothing(netns_ok):
    """Raw ESP through Child SA rekeys by charon and by espd (its own 6 s lifetime) and an
    IKE SA rekey by charon, PFS X25519, under a continuous ping: every echo comes back
    and every new Child SA is protocol 50 again, never ESP in UDP."""

    def body(site: Site) -> None:
        site.charon.load([site_to_site("b", site.psk, proposals=[SUITE],
                                       esp_proposals=[f"{PSK_ESP}-x25519"], encap=False)])
        site.start_espd(psk_config(site.psk, "manual", site.tmp, [SUITE], pfs="x25519",
                                   lifetime="{ seconds = 6 }") + 'encapsulation = "esp"\n')
        with netns.Capture(site.topo.gw_a, netns.WAN_IF) as capture, \
                site.charon.events() as events:
            site.charon.initiate("net")
            events.wait_up("child-updown", timeout=15)
            site.pings()
            results: list = []
            pinger = threading.Thread(target=lambda: results.append(netns.ping(
                site.topo.host_a, netns.HOST_B4, count=700, interval=0.01, timeout=3)))
            pinger.start()
            time.sleep(0.5)
            site.charon.rekey(child="net")
            events.wait("child-rekey", timeout=10)
            site.charon.rekey(ike="gw")
            events.wait("ike-rekey", timeout=10)
            events.wait("child-rekey", timeout=10)  # espd's, at 85-90% of 6 s
            pinger.join(30)
        assert results and results[0].received == 700, (results, site.daemon.log())
        assert site.daemon.log().count(" rekeyed") >= 2, site.daemon.log()
        raw, udp = _esp_on_the_wire(capture.frames)
        assert raw >= 1400 and udp == 0, (raw, udp)
        assert {sa["encap"] for sa in site.daemon.state()["sas"]} == {"esp"}
        for child in site.charon.child_sas():
            assert child.get("encap", "no") == "no", child

    _run(STRONGSWAN6, "rr", body, raw_esp=True)


def test_tcp_transfer_helper_notices_a_blackhole(netns_ok):
    """tcp_transfer fails (it cannot pass by accident) when nothing carries the traffic:
    without a tunnel the hosts cannot reach each other."""
    topo, tmp, _ = _site(DEBIAN, "tb")
    with topo:
        with pytest.raises((OSError, AssertionError, socket.timeout)):
            netns.tcp_transfer(topo.host_a, topo.host_b, netns.HOST_B4, size=4096,
                               timeout=1.0)
    shutil.rmtree(tmp, ignore_errors=True)
