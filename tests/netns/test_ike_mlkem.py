"""Post-quantum hybrid key exchange (RFC 9370 over RFC 9242 IKE_INTERMEDIATE) between the
espd daemon and strongSwan charon 6.0.6, each side initiating: X25519 in IKE_SA_INIT,
ML-KEM-768 (or -1024, in RFC 7383 fragments) in IKE_INTERMEDIATE, traffic both ways through
the data plane, and ``show ike sa`` naming the key exchanges that ran. Charon 5.9.8 knows
no additional key exchanges: offered a hybrid and a classic proposal, it settles on the
classic one.

  [hostA 10.1.0.10] -- [gwA espd daemon] ==IKE + ESP in UDP 4500== [gwB charon] --
  [hostB 10.2.0.10]
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from support import netns
from support.strongswan import DEBIAN, STRONGSWAN6, Charon, site_to_site

from espd.ike.crypto.dh import ML_KEM_768, ML_KEM_1024

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(not (ML_KEM_768.available and ML_KEM_1024.available),
                                 reason="this cryptography has no ML-KEM")]

HYBRID = "aes256gcm16-prfsha384-x25519-ke1_mlkem768"
CLASSIC = "aes256gcm16-prfsha384-x25519"


def config(psk: str, start: str, tmp: Path, proposals: list[str], pfs: str = "",
           lifetime: str = "") -> str:
    pfs_line = f'pfs = "{pfs}"' if pfs else ""
    pfs_line += f"\nlifetime = {lifetime}" if lifetime else ""
    return f"""
[daemon]
interface = "espd0"
local = "192.0.2.1"
workers = 1
control_socket = "{tmp}/gwA.sock"
metrics = ""
state_dir = "{tmp}/gwA-state"

[access_list.LAN]
rules = ["permit ip 10.1.0.0/16 10.2.0.0/16"]

[transform_set.GCM]
transforms = ["esp-gcm 256"]

[ike]
proposals = {json.dumps(proposals)}

[ike_peer.gwb]
address = "192.0.2.2"
psk = "{psk}"
local_id = "fqdn:gwa"
remote_id = "fqdn:gwb"

[[crypto_map]]
name = "VPN"
seq = 10
keying = "ike"
peer = "192.0.2.2"
match_address = "LAN"
transform_sets = ["GCM"]
start = "{start}"
{pfs_line}
"""


def espd_show(ns: str, sock: str, *what: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "espd", "show",
                           *what, "--socket", sock], capture_output=True, text=True,
                          timeout=20).stdout


class Site:
    """espd in gwA, a charon in gwB (``charon``: Charon keyword arguments), torn down by
    pid and name afterwards."""

    def __init__(self, peer, psk: str, tmp: Path, topo, **charon) -> None:
        self.peer, self.psk, self.tmp, self.topo = peer, psk, tmp, topo
        self.charon = Charon(topo.gw_b, "gwb", peer, **charon).start()
        self.daemon = None
        self.sock = str(tmp / "gwA.sock")

    def start_espd(self, text: str) -> None:
        path = self.tmp / "gwA.toml"
        path.write_text(text)
        path.chmod(0o600)
        self.daemon = netns.EspdProcess(self.topo.gw_a, str(path), self.sock,
                                        str(self.tmp / "gwA.log"), "gwA")
        self.daemon.start()
        self.daemon.wait_ready(timeout=30)

    def pings(self, count: int = 3) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            result = netns.ping(self.topo.host_a, netns.HOST_B4, count=count, interval=0.05,
                                timeout=2)
            if result.received == count:
                break
        assert result.received == count, (result, self.daemon.log())
        back = netns.ping(self.topo.host_b, netns.HOST_A4, count=count, interval=0.05,
                          timeout=2)
        assert back.received == count, back

    def close(self) -> None:
        try:
            if self.daemon is not None:
                status = self.daemon.stop()
                print(self.daemon.log())
                assert status == 0
        finally:
            print(self.charon.describe(tail=4000))
            self.charon.close()


def _site(peer, tag: str):
    topo = netns.Topology(tag=f"espd-{os.getpid()}-{tag}{secrets.randbelow(10**6)}",
                          ipv6=False)
    return topo, Path(tempfile.mkdtemp(prefix="espd-pq-")), secrets.token_hex(16)


@pytest.mark.parametrize("kem", ["mlkem768", "mlkem1024"])
@pytest.mark.parametrize("initiator", ["charon", "espd"])
def test_hybrid_key_exchange_with_charon6_both_ways_carries_traffic(netns_ok, initiator, kem):
    if STRONGSWAN6.unavailable():
        pytest.skip(STRONGSWAN6.unavailable())
    topo, tmp, psk = _site(STRONGSWAN6, "pq")
    suite = f"{CLASSIC}-ke1_{kem}"
    # ML-KEM-1024's KE payloads (1568 bytes) do not fit a 1500-byte MTU, and the data
    # plane's UDP 4500 socket sends with DF: both sides send them in RFC 7383 fragments
    with topo:
        site = Site(STRONGSWAN6, psk, tmp, topo)
        try:
            site.charon.load([site_to_site("b", psk, proposals=[suite],
                                           esp_proposals=["aes256gcm16"])])
            site.start_espd(config(psk, "manual" if initiator == "charon" else "on-demand",
                                   tmp, [suite]))
            with site.charon.events() as events:
                if initiator == "charon":
                    site.charon.initiate("net")
                else:  # the first packet: acquire
                    netns.ping(topo.host_a, netns.HOST_B4, count=1, timeout=1)
                events.wait_up("child-updown", timeout=15)
            site.pings()
            (ike_sa,) = site.charon.list_sas()
            assert ike_sa["gw"]["ake1"] == kem.upper().replace("MLKEM", "ML_KEM_"), ike_sa
            [shown] = site.daemon.state()["ike"]["sas"]
            assert shown["suite"] == suite
            assert shown["key_exchanges"] == ["x25519 (IKE_SA_INIT)",
                                              f"{kem} (IKE_INTERMEDIATE)"]
            text = espd_show(topo.gw_a, site.sock, "ike", "sa")
            assert f"Key exchanges: x25519 (IKE_SA_INIT), {kem} (IKE_INTERMEDIATE)" in text
            site.charon.wait_log(r"IKE_INTERMEDIATE")
            counters = site.daemon.state()["ike"]["counters"]
            if kem == "mlkem1024":  # KEi or KEr from espd, and charon's the other way
                assert counters.get("messages_fragmented", 0) >= 1, counters
                assert counters.get("messages_reassembled", 0) >= 1, counters
            assert psk not in site.daemon.log()
        finally:
            site.close()
            shutil.rmtree(tmp, ignore_errors=True)


def test_hybrid_offer_to_charon5_falls_back_to_the_classic_proposal(netns_ok):
    if DEBIAN.unavailable():
        pytest.skip(DEBIAN.unavailable())
    topo, tmp, psk = _site(DEBIAN, "pqf")
    with topo:
        site = Site(DEBIAN, psk, tmp, topo)
        try:
            site.charon.load([site_to_site("b", psk, proposals=[CLASSIC],
                                           esp_proposals=["aes256gcm16"])])
            site.start_espd(config(psk, "on-demand", tmp, [HYBRID, CLASSIC]))
            with site.charon.events() as events:
                netns.ping(topo.host_a, netns.HOST_B4, count=1, timeout=1)
                events.wait_up("child-updown", timeout=15)
            site.pings()
            [shown] = site.daemon.state()["ike"]["sas"]
            assert shown["suite"] == CLASSIC and shown["key_exchanges"] == [
                "x25519 (IKE_SA_INIT)"], shown
        finally:
            site.close()
            shutil.rmtree(tmp, ignore_errors=True)


def test_rekeys_with_ike_followup_ke_by_either_side_give_charons_keys(netns_ok):
    """espd's engine (standalone) and charon 6.0.6 with PFS X25519 + ML-KEM-768: each side
    rekeys the Child SA and the IKE SA (CREATE_CHILD_SA + IKE_FOLLOWUP_KE), and every
    Child SA's keys are the ones charon derived (its key dump), so the IKE_FOLLOWUP_KE
    secret went into KEYMAT, and the rekeyed IKE SAs' SK_d are right."""
    if STRONGSWAN6.unavailable():
        pytest.skip(STRONGSWAN6.unavailable())
    from test_ike_charon import Engine, charon_child_keys

    topo, tmp, psk = _site(STRONGSWAN6, "pqr")
    with topo:
        charon = Charon(topo.gw_b, "gwb", STRONGSWAN6, key_dump=True).start()
        engine = None
        try:
            charon.load([site_to_site("b", psk, proposals=[HYBRID],
                                      esp_proposals=["aes256gcm16-x25519-ke1_mlkem768"])])
            engine = Engine(topo.gw_a, {
                "local": "192.0.2.1", "peer": "192.0.2.2", "psk": psk, "local_id": "gwa",
                "remote_id": "gwb", "proposals": [HYBRID], "esp": ["esp-gcm 256"],
                "pfs": 31, "pfs_additional": [36], "local_net": "10.1.0.0/16",
                "remote_net": "10.2.0.0/16"})
            children = []  # (espd initiated the exchange, install/rekey event)
            with charon.events() as events:
                started = time.monotonic()
                engine.send("initiate")
                children.append((True, engine.wait("install")))
                took = time.monotonic() - started
                events.wait_up("child-updown")
                engine.send("rekey-child")  # espd: CREATE_CHILD_SA + IKE_FOLLOWUP_KE
                children.append((True, engine.wait("rekey")))
                engine.wait("retire")
                events.wait("child-rekey")
                charon.rekey(child="net")  # charon does
                children.append((False, engine.wait("rekey")))
                engine.wait("retire")
                engine.send("rekey-ike")  # espd rekeys the IKE SA, ML-KEM in IKE_FOLLOWUP_KE
                events.wait("ike-rekey")
                charon.rekey(ike="gw")  # and charon does
                events.wait("ike-rekey")
                charon.rekey(child="net")  # a Child SA keyed from the twice-rekeyed SK_d
                children.append((False, engine.wait("rekey")))
                engine.wait("retire")
            keys = charon_child_keys(charon.log())
            assert len(keys) == len(children), (keys, children)
            for (ours, child), (key_i, key_r) in zip(children, keys, strict=True):
                assert (child["key_out"], child["key_in"]) == \
                    ((key_i, key_r) if ours else (key_r, key_i))
            log = charon.log()
            assert log.count("IKE_FOLLOWUP_KE request") >= 5, log[-3000:]  # 3 Child, 2 IKE
            (ike_sa,) = charon.list_sas()
            assert ike_sa["gw"]["ake1"] == "ML_KEM_768", ike_sa
            assert not any(e.get("level") == "ERROR" for e in engine.seen)
            print(f"espd-initiated IKE_SA_INIT + IKE_INTERMEDIATE(ML-KEM-768) + IKE_AUTH "
                  f"to the first Child SA: {took * 1000:.1f} ms")
        finally:
            if engine is not None:
                engine.close()
            print(charon.describe(tail=4000))
            charon.close()
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("kem", ["mlkem768", "mlkem1024"])
def test_rekeys_under_traffic_with_ml_kem_followups_lose_nothing(netns_ok, kem):
    """The daemon with pfs = "x25519-ke1_KEM" and a 6 s Child SA lifetime under a
    continuous ping: charon rekeys the Child SA and the IKE SA, espd rekeys the Child SA on
    its own lifetime, each with IKE_FOLLOWUP_KE; every echo comes back. ML-KEM-1024's
    IKE_FOLLOWUP_KE messages (about 1.6 KB) cross in RFC 7383 fragments both ways."""
    hybrid = f"{CLASSIC}-ke1_{kem}"
    if STRONGSWAN6.unavailable():
        pytest.skip(STRONGSWAN6.unavailable())
    topo, tmp, psk = _site(STRONGSWAN6, "pqt")
    with topo:
        site = Site(STRONGSWAN6, psk, tmp, topo)
        try:
            site.charon.load([site_to_site(
                "b", psk, proposals=[hybrid], esp_proposals=[f"aes256gcm16-x25519-ke1_{kem}"])])
            site.start_espd(config(psk, "manual", tmp, [hybrid], pfs=f"x25519-ke1_{kem}",
                                   lifetime="{ seconds = 6 }"))
            with site.charon.events() as events:
                site.charon.initiate("net")
                events.wait_up("child-updown", timeout=15)
                site.pings()
                results = []
                pinger = threading.Thread(target=lambda: results.append(netns.ping(
                    topo.host_a, netns.HOST_B4, count=800, interval=0.01, timeout=3)))
                pinger.start()
                time.sleep(0.5)
                site.charon.rekey(child="net")
                events.wait("child-rekey", timeout=10)
                time.sleep(0.5)
                site.charon.rekey(ike="gw")
                events.wait("ike-rekey", timeout=10)
                # espd's own rekey, at 85-90% of 6 s after the last Child SA came up
                events.wait("child-rekey", timeout=10)
                pinger.join(30)
            assert results and results[0].received == 800, (results, site.daemon.log())
            log = site.daemon.log()
            assert log.count(" rekeyed: ") >= 2 and " rekeyed as " in log, log
            [shown] = site.daemon.state()["ike"]["sas"]
            assert shown["key_exchanges"] == ["x25519 (CREATE_CHILD_SA)",
                                              f"{kem} (IKE_FOLLOWUP_KE)"], shown
            assert [c["key_exchanges"] for c in shown["children"]] == [
                ["x25519 (CREATE_CHILD_SA)", f"{kem} (IKE_FOLLOWUP_KE)"]], shown
            text = espd_show(topo.gw_a, site.sock, "ike", "sa", "--detail")
            assert f"PFS: x25519 (CREATE_CHILD_SA), {kem} (IKE_FOLLOWUP_KE)" in text, text
            if kem == "mlkem1024":  # 3 rekeys, each IKE_FOLLOWUP_KE's request and response
                counters = site.daemon.state()["ike"]["counters"]
                assert counters.get("messages_fragmented", 0) >= 3, counters
                assert counters.get("messages_reassembled", 0) >= 3, counters
                site.charon.wait_log(r"IKE_FOLLOWUP_KE (request|response) \d+ \[ EF\(2/2\) \]")
        finally:
            site.close()
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("initiator", ["charon", "espd"])
def test_certificates_with_a_hybrid_key_exchange_against_charon6(netns_ok, initiator):
    """RFC 7427 ECDSA signatures over the IntAuth octets: charon verifies espd's, espd
    charon's, with an intermediate CA sent in CERT payloads, then traffic."""
    if STRONGSWAN6.unavailable():
        pytest.skip(STRONGSWAN6.unavailable())
    from test_ike_certificates import espd_config
    from test_ike_certificates import site as pki_site

    topo, tmp, _ = _site(STRONGSWAN6, "pqc")
    with topo:
        site = Site(STRONGSWAN6, "", tmp, topo)
        try:
            _, root, sub, gwa, gwb, chain, _ = pki_site(tmp, STRONGSWAN6)
            site.charon.load([site_to_site(
                "b", None, local_auth="pubkey", remote_auth="pubkey", local_id="gwb.ik.test",
                remote_id="gwa.ik.test", local_certs=["gwb.pem"], remote_cacerts=["ca.pem"],
                proposals=[HYBRID], esp_proposals=["aes128gcm16"])],
                certs=[gwb.cert_path, sub.cert_path], cacerts=[root.cert_path],
                keys=[gwb.key_path])
            text = espd_config(tmp, str(chain), gwa.key_path, root.cert_path,
                               "manual" if initiator == "charon" else "on-demand")
            assert 'proposals = ["aes128gcm16-prfsha256-x25519"]' in text
            site.start_espd(text.replace('proposals = ["aes128gcm16-prfsha256-x25519"]',
                                         f'proposals = ["{HYBRID}"]'))
            with site.charon.events() as events:
                if initiator == "charon":
                    site.charon.initiate("net")
                else:
                    netns.ping(topo.host_a, netns.HOST_B4, count=1, timeout=1)
                events.wait_up("child-updown", timeout=15)
            site.pings()
            site.charon.wait_log(r"authentication of 'gwa.ik.test' with "
                                 r"(ECDSA_WITH_SHA256_DER|ECDSA-256 signature)\S* successful")
            [shown] = site.daemon.state()["ike"]["sas"]
            assert shown["key_exchanges"] == ["x25519 (IKE_SA_INIT)",
                                              "mlkem768 (IKE_INTERMEDIATE)"], shown
            assert shown["peer_id"] == "fqdn:gwb.ik.test"
        finally:
            site.close()
            shutil.rmtree(tmp, ignore_errors=True)
