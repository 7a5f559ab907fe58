"""The strongSwan harness itself, charon against charon (no espd yet): the peer the IKE
interop tests use comes up in a namespace, negotiates, carries a ping through its userspace
data plane, and reports through vici events. Few and fast on purpose.

  [hostA 10.1.0.10] -- [gwA 192.0.2.1 charon] ==ESP in UDP 4500== [charon 192.0.2.2 gwB] --
  [hostB 10.2.0.10]
"""

from __future__ import annotations

import os
import secrets
import subprocess

import pytest
from support import netns
from support.strongswan import DEBIAN, PEERS, STRONGSWAN6, Charon, site_to_site

pytestmark = pytest.mark.netns


@pytest.fixture
def topology(netns_ok):
    topo = netns.Topology(tag=f"espd-{os.getpid()}-ss{secrets.randbelow(10**6)}", ipv6=False)
    with topo:
        yield topo


@pytest.fixture
def charons():
    """charons(topo, version_a, version_b, **settings) -> (gwA charon, gwB charon)."""
    made: list[Charon] = []

    def make(topo: netns.Topology, version_a: str, version_b: str, **kwargs) -> tuple:
        pair = []
        for ns, name, version in ((topo.gw_a, "gwa", version_a), (topo.gw_b, "gwb", version_b)):
            peer = PEERS[version]
            why = peer.unavailable()
            if why:
                pytest.skip(why)
            charon = Charon(ns, name, peer, **kwargs)
            made.append(charon)
            pair.append(charon.start())
        return tuple(pair)

    yield make
    for charon in made:
        print(charon.describe(tail=6000))  # shown when the test fails
        charon.close()


def ping_through(topo: netns.Topology) -> None:
    for src, dst in ((topo.host_a, netns.HOST_B4), (topo.host_b, netns.HOST_A4)):
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


@pytest.mark.parametrize("peer", [DEBIAN, STRONGSWAN6], ids=lambda p: p.version)
def test_installed_peer_is_the_version_the_harness_names(peer):
    why = peer.unavailable()
    if why:
        pytest.skip(why)
    out = subprocess.run([peer.charon, "--version"], capture_output=True, text=True,
                         timeout=10).stdout
    assert f"strongSwan {peer.version}" in out, out
