"""espd the daemon, keyed by IKEv2, against strongSwan charon 5.9.8: the negotiated Child
SA goes through the SA owner into the data plane and carries traffic both ways.

  [hostA 10.1.0.10] -- [gwA espd daemon] ==IKE + ESP in UDP 4500== [gwB charon] --
  [hostB 10.2.0.10]

charon initiates (espd answers), and espd initiates on the first packet (start =
"on-demand": the acquire from the data plane, as IOS does); Child SA rekeys under
traffic lose nothing; and two espd daemons negotiate raw ESP with ESN on demand. A reload
that inserts an entry before the negotiated one keeps its Child SA and IKE SA, and the
Child SA still carries traffic both ways (its inbound SA checks its own entry's rules).
"""

from __future__ import annotations

import contextlib
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
from support.ike_configs import psk_gateway
from support.strongswan import DEBIAN, Charon, close_with_espd, site_to_site

from espd.ops import control

pytestmark = pytest.mark.netns


def config(psk: str, start: str, tmp: Path, ike: str = "") -> str:
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
transforms = ["esp-gcm 128"]

[ike]
proposals = ["aes128gcm16-prfsha256-x25519"]
{ike}

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
"""


def espd_show(ns: str, sock: str, *what: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "espd", "show",
                           *what, "--socket", sock], capture_output=True, text=True,
                          timeout=20).stdout


@pytest.mark.parametrize("initiator", ["charon", "espd-on-demand"])
def test_daemon_negotiates_with_charon_and_carries_traffic(netns_ok, initiator):
    if DEBIAN.unavailable():
        pytest.skip(DEBIAN.unavailable())
    topo = netns.Topology(tag=f"espd-{os.getpid()}-id{secrets.randbelow(10**6)}", ipv6=False)
    tmp = Path(tempfile.mkdtemp(prefix="espd-ike-"))
    psk = secrets.token_hex(16)
    with topo:
        charon = Charon(topo.gw_b, "gwb", DEBIAN).start()
        daemon = None
        try:
            charon.load([site_to_site("b", psk, proposals=["aes128gcm16-prfsha256-x25519"],
                                      esp_proposals=["aes128gcm16"])])
            path = tmp / "gwA.toml"
            path.write_text(config(psk, "on-demand" if initiator != "charon" else "manual",
                                   tmp))
            path.chmod(0o600)
            sock = str(tmp / "gwA.sock")
            daemon = netns.EspdProcess(topo.gw_a, str(path), sock, str(tmp / "gwA.log"), "gwA")
            daemon.start()
            daemon.wait_ready(timeout=30)
            with charon.events() as events:
                if initiator == "charon":
                    charon.initiate("net")
                else:  # the first packet hits the PROTECT rule without an SA: acquire
                    netns.ping(topo.host_a, netns.HOST_B4, count=1, timeout=1)
                events.wait_up("child-updown", timeout=15)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                result = netns.ping(topo.host_a, netns.HOST_B4, count=3, interval=0.05,
                                    timeout=2)
                if result.received == 3:
                    break
            assert result.received == 3, (result, daemon.log())
            back = netns.ping(topo.host_b, netns.HOST_A4, count=3, interval=0.05, timeout=2)
            assert back.received == 3, back
            state = daemon.state()
            assert {sa["encap"] for sa in state["sas"]} == {"udp"}
            assert len(state["sas"]) == 2 and state["ike"]["sas"][0]["state"] == "established"
            shown = espd_show(topo.gw_a, sock, "ike", "sa", "--detail")
            assert "READY" in shown and "192.0.2.2/4500" in shown, shown
            assert "esp-gcm 128" in shown, shown
            as_json = json.loads(espd_show(topo.gw_a, sock, "ike", "sa", "--json"))
            assert as_json[0]["peer_id"] == "fqdn:gwb"
            (ike_sa,) = charon.list_sas()
            child = next(iter(ike_sa["gw"]["child-sas"].values()))
            spis = {sa["spi"] for sa in state["sas"]}
            assert {int(child["spi-in"], 16), int(child["spi-out"], 16)} == spis
            assert psk not in daemon.log()
        finally:
            close_with_espd(daemon, charon, tmp)


def espd_config(side: str, psk: str, tmp: Path, ike: str = "", **entry: str) -> str:
    local, peer = ("192.0.2.1", "192.0.2.2") if side == "a" else ("192.0.2.2", "192.0.2.1")
    mine, theirs = ("10.1.0.0/16", "10.2.0.0/16") if side == "a" else ("10.2.0.0/16",
                                                                       "10.1.0.0/16")
    return psk_gateway(f"gw{side}", tmp, psk, local, peer, mine, theirs, ike=ike,
                       entry="\n".join(f"{k} = {v}" for k, v in entry.items()))


@contextlib.contextmanager
def espd_pair(tag: str, a: dict, b: dict, ike: tuple[str, str] = ("", "")):
    """Two espd daemons in a fresh topology (espd_config with the entry settings `a` and
    `b`, and the [ike] lines `ike`), serving: yields (topology, [gwA, gwB]). Afterwards
    each is stopped by pid (and must exit 0), its log printed, its files and the
    namespaces removed."""
    topo = netns.Topology(tag=f"espd-{os.getpid()}-{tag}{secrets.randbelow(10**6)}",
                          ipv6=False)
    tmp = Path(tempfile.mkdtemp(prefix="espd-ike-"))
    psk = secrets.token_hex(16)
    daemons = []
    with topo:
        try:
            for side, ns, entry, lines in (("a", topo.gw_a, a, ike[0]),
                                           ("b", topo.gw_b, b, ike[1])):
                path = tmp / f"gw{side}.toml"
                path.write_text(espd_config(side, psk, tmp, lines, **entry))
                path.chmod(0o600)
                daemon = netns.EspdProcess(ns, str(path), str(tmp / f"gw{side}.sock"),
                                           str(tmp / f"gw{side}.log"), f"gw{side}")
                daemons.append(daemon)
                daemon.start()
            for daemon in daemons:
                daemon.wait_ready(timeout=30)
            yield topo, daemons
        finally:
            for daemon in daemons:
                status = daemon.stop()
                print(daemon.log())
                assert status == 0
            shutil.rmtree(tmp, ignore_errors=True)


def first_echo(topo) -> None:
    """Until an echo comes back through the tunnel (at most 10 s: the IKE SA comes up)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if netns.ping(topo.host_a, netns.HOST_B4, count=1, timeout=0.5).received:
            return


def test_espd_with_espd_raw_esp_esn_on_demand(netns_ok):
    """Two espd daemons keyed by IKEv2: raw ESP (encapsulation "esp"), ESN, and the first
    packet from either side negotiates (what 5.9.8's charon cannot do)."""
    entry = dict(encapsulation='"esp"', esn="true", start='"on-demand"')
    with espd_pair("ee", a=entry, b=entry) as (topo, daemons):
        netns.ping(topo.host_a, netns.HOST_B4, count=1, timeout=1)  # the acquire
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            result = netns.ping(topo.host_a, netns.HOST_B4, count=3, interval=0.05,
                                timeout=2)
            if result.received == 3:
                break
        assert result.received == 3, (result, daemons[0].log(), daemons[1].log())
        back = netns.ping(topo.host_b, netns.HOST_A4, count=3, interval=0.05, timeout=2)
        assert back.received == 3
        for daemon in daemons:
            state = daemon.state()
            assert {(sa["encap"], sa["esn"]) for sa in state["sas"]} == {("esp", True)}
        a_spis = {sa["spi"] for sa in daemons[0].state()["sas"]}
        assert a_spis == {sa["spi"] for sa in daemons[1].state()["sas"]}


def test_child_sa_rekeys_under_traffic_lose_nothing(netns_ok):
    """charon rekeys the Child SA twice while pings flow through espd's data plane:
    make-before-break, so every echo comes back, and espd ends with one SA pair."""
    if DEBIAN.unavailable():
        pytest.skip(DEBIAN.unavailable())
    topo = netns.Topology(tag=f"espd-{os.getpid()}-rk{secrets.randbelow(10**6)}", ipv6=False)
    tmp = Path(tempfile.mkdtemp(prefix="espd-ike-"))
    psk = secrets.token_hex(16)
    with topo:
        charon = Charon(topo.gw_b, "gwb", DEBIAN).start()
        daemon = None
        try:
            charon.load([site_to_site("b", psk, proposals=["aes128gcm16-prfsha256-x25519"],
                                      esp_proposals=["aes128gcm16"])])
            path = tmp / "gwA.toml"
            path.write_text(config(psk, "manual", tmp))
            path.chmod(0o600)
            daemon = netns.EspdProcess(topo.gw_a, str(path), str(tmp / "gwA.sock"),
                                  str(tmp / "gwA.log"), "gwA")
            daemon.start()
            daemon.wait_ready(timeout=30)
            with charon.events() as events:
                charon.initiate("net")
                events.wait_up("child-updown", timeout=15)
                results = []
                pinger = threading.Thread(target=lambda: results.append(netns.ping(
                    topo.host_a, netns.HOST_B4, count=150, interval=0.01, timeout=3)))
                pinger.start()
                for _ in range(2):
                    time.sleep(0.4)
                    charon.rekey(child="net")
                    events.wait("child-rekey", timeout=10)
                pinger.join(30)
            # espd answers both rekeys: it keeps sending on the old SA until charon's
            # DELETE of it (RFC 7296 2.8), and takes what charon sent on the old SA
            # before it switched for a moment longer: not one echo is lost
            assert results and results[0].received == 150, results
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and len(daemon.state()["sas"]) != 2:
                time.sleep(0.1)
            assert len(daemon.state()["sas"]) == 2, daemon.state()["sas"]
        finally:
            if daemon is not None:
                status = daemon.stop()
                print(daemon.log())
                assert status == 0
            charon.close()
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("limit", [
    pytest.param("{ seconds = 5 }", id="seconds"),
    pytest.param("{ seconds = 3600, packets = 300 }", id="packets"),
    pytest.param("{ seconds = 3600, kilobytes = 120 }", id="kilobytes"),
])
def test_espd_rekeys_on_its_own_lifetimes_under_traffic_lose_nothing(netns_ok, limit):
    """Two espd daemons, each rekeying the Child SA on its own lifetime (a timer at 85-90%
    of the seconds, or the data plane's soft event at 90% of the packets or kilobytes),
    under a continuous ping: every echo comes back, nothing protected is in clear on the
    underlay, and several rekeys (some of them colliding: both ends use the same lifetime)
    went through."""
    with espd_pair("lt", a=dict(lifetime=limit, start='"immediate"'),
                   b=dict(lifetime=limit, start='"manual"')) as (topo, daemons):
        first_echo(topo)
        with netns.Capture(topo.gw_b, netns.WAN_IF) as capture:
            result = netns.ping(topo.host_a, netns.HOST_B4, count=1200, size=200,
                                interval=0.01, timeout=3)
        logs = [d.log() for d in daemons]
        assert result.received == 1200, (result, logs)
        analysis = netns.analyze(capture.frames)
        assert not analysis.cleartext, analysis.cleartext[:3]
        spis = {p.spi for p in analysis.esp}
        rekeys = sum(log.count(" rekeyed: ") for log in logs)
        assert rekeys >= 2 and len(spis) >= 6, (rekeys, len(spis), logs)
        for daemon in daemons:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and len(daemon.state()["sas"]) != 2:
                time.sleep(0.1)
            assert len(daemon.state()["sas"]) == 2, daemon.state()["sas"]
        print(f"{limit}: {rekeys} rekeys, {len(spis)} SPIs on the wire")


def test_inserting_an_entry_keeps_the_negotiated_child_and_ike_sa(netns_ok):
    """gwA reloads with an IKE-keyed VPN 5 before the negotiated VPN 10: VPN 10's Child SA
    (its SPIs, counters going on exactly) and its IKE SA stay, and carry traffic both
    ways; gwB sees nothing new."""
    inserted = """
[access_list.OTHER]
rules = ["permit ip 10.1.0.0/16 10.7.0.0/16"]

[[crypto_map]]
name = "VPN"
seq = 5
keying = "ike"
peer = "192.0.2.2"
match_address = "OTHER"
transform_sets = ["GCM"]
start = "manual"
"""

    def entries(daemon) -> dict:
        return {(sa["seq"], sa["direction"]): sa for sa in daemon.state()["sas"]}

    def pings_both_ways(count: int = 5) -> None:
        for ns, dst in ((topo.host_a, netns.HOST_B4), (topo.host_b, netns.HOST_A4)):
            result = netns.ping(ns, dst, count=count, interval=0.05, timeout=2)
            assert result.received == count, (dst, result, daemons[0].log())

    with espd_pair("ri", a=dict(encapsulation='"esp"', start='"immediate"'),
                   b=dict(encapsulation='"esp"', start='"manual"')) as (topo, daemons):
        first_echo(topo)
        gw_a = daemons[0]
        pings_both_ways()
        before, (ike_before,) = entries(gw_a), gw_a.state()["ike"]["sas"]
        assert set(before) == {(10, "out"), (10, "in")}, before
        peer_before = entries(daemons[1])

        path = Path(gw_a.config)
        path.write_text(path.read_text() + inserted)
        answer = control.request(gw_a.control_socket, "reload", timeout=30)
        assert answer["ok"] is True, (answer, gw_a.log())
        pings_both_ways()
        after, (ike_after,) = entries(gw_a), gw_a.state()["ike"]["sas"]
        assert set(after) == set(before), after
        for key, sa in before.items():  # 5 echo requests and 5 replies each way
            went_on = (sa["spi"], sa["packets"] + 10, sa["sequence"] + 10)
            assert (after[key]["spi"], after[key]["packets"], after[key]["sequence"]) \
                == went_on, (key, sa, after[key])  # inbound: the highest seen
        same = ("tunnel_id", "spi_i", "spi_r", "state")
        assert {k: ike_after[k] for k in same} == {k: ike_before[k] for k in same}
        (child,) = ike_after["children"]
        assert (child["spi_in"], child["spi_out"]) == (before[(10, "in")]["spi"],
                                                       before[(10, "out")]["spi"])
        assert {k: sa["spi"] for k, sa in entries(daemons[1]).items()} == \
            {k: sa["spi"] for k, sa in peer_before.items()}


def test_tun_mtu_comes_from_the_ike_entries_transform_sets(netns_ok):
    """Before any SA exists, each espd sets espd0's MTU from its IKE-keyed entry's transform
    set (esp-gcm 256: 57 bytes over IPv4, 8 more when "auto" may float to UDP): 1443 and
    1435, not the 1400 of a daemon without SAs. Once negotiated, a DF packet of exactly
    that MTU passes each way in one unfragmented ESP packet of at most 1500 bytes, and one
    byte more gets "fragmentation needed" with that MTU."""
    with espd_pair("mtu", a=dict(encapsulation='"esp"', start='"immediate"'),
                   b=dict(encapsulation='"auto"', start='"manual"')) as (topo, daemons):
        mtus = [netns.link_mtu(ns, "espd0") for ns in (topo.gw_a, topo.gw_b)]
        assert mtus == [1443, 1435], mtus
        first_echo(topo)
        with netns.Capture(topo.gw_b, netns.WAN_IF) as capture:
            fits = netns.ping(topo.host_a, netns.HOST_B4, count=2, size=1443 - 28, df=True,
                              timeout=2)
            back = netns.ping(topo.host_b, netns.HOST_A4, count=2, size=1435 - 28, df=True,
                              timeout=2)
            over = netns.ping(topo.host_a, netns.HOST_B4, count=1, size=1443 - 27, df=True,
                              timeout=2)
        assert fits.received == 2 and back.received == 2, (fits, back)
        assert over.received == 0 and over.frag_needed_mtu == 1443, over
        analysis = netns.analyze(capture.frames)
        assert not analysis.cleartext and not analysis.other, analysis
        assert analysis.esp and max(len(p.esp) + 20 for p in analysis.esp) == 1500


def test_reauthentication_under_traffic_loses_nothing(netns_ok):
    """gwA reauthenticates (reauth_time = 30: after 25.5-27 s) while a ping runs every
    10 ms: a new IKE SA with IKE_AUTH, a new Child SA installed in place of the old one on
    both sides, then the old IKE SA deleted. Every echo comes back, nothing protected is
    in clear on the underlay, and each side ends with one IKE SA and one Child SA pair."""
    with espd_pair("ra", a=dict(start='"immediate"'), b=dict(start='"manual"'),
                   ike=("reauth_time = 30", "")) as (topo, daemons):
        first_echo(topo)
        with netns.Capture(topo.gw_b, netns.WAN_IF) as capture:
            result = netns.ping(topo.host_a, netns.HOST_B4, count=3300, size=200,
                                interval=0.01, timeout=3)
        logs = [d.log() for d in daemons]
        assert " reauthenticated as " in logs[0], logs[0]
        assert result.received == 3300, (result, logs)
        analysis = netns.analyze(capture.frames)
        assert not analysis.cleartext, analysis.cleartext[:3]
        spis = {p.spi for p in analysis.esp}
        assert len(spis) == 4, spis  # the old pair, then the new
        for daemon in daemons:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and len(daemon.state()["sas"]) != 2:
                time.sleep(0.1)
            assert len(daemon.state()["sas"]) == 2, daemon.state()["sas"]
        ike_sas = [len(json.loads(espd_show(d.ns, d.control_socket, "ike", "sa", "--json")))
                   for d in daemons]
        print(f"reauthentication: {result.received}/3300 echoes, {len(spis)} SPIs, "
              f"IKE SAs after: {ike_sas}")
        assert ike_sas == [1, 1], ike_sas


@pytest.mark.parametrize("reauthenticator", ["espd", "charon"])
def test_reauthentication_against_charon_under_traffic(netns_ok, reauthenticator):
    """charon reauthenticates (reauth_time = 25, make_before_break = yes) under a ping
    every 10 ms: espd answers a second IKE_SA_INIT + IKE_AUTH from the same peer, installs
    the new Child SA as the old one's successor (its outbound waits for charon's traffic
    on the new SA or the old one's deletion), and charon deletes the old IKE SA; every
    echo comes back. Or espd reauthenticates (reauth_time = 30): charon answers a second
    IKE_SA_INIT + IKE_AUTH from the same peer (unique = no), espd switches to the new
    Child SA and deletes the old IKE SA 1 s later. Either way charon ends with one IKE SA
    and one Child SA, the ones espd holds. Every echo comes back,
    except that charon, as IKE_AUTH responder, sends on its new outbound SA as soon as it
    answers, before espd has read the answer and installed the inbound half: an echo reply
    charon sends in that sub-millisecond window is dropped as unknown_spi on exactly that
    SPI (seen once in six runs before the DELETE delay, never in six after). That one
    loss is charon's to fix, and only it is tolerated (when espd reauthenticates)."""
    if DEBIAN.unavailable():
        pytest.skip(DEBIAN.unavailable())
    topo = netns.Topology(tag=f"espd-{os.getpid()}-rc{secrets.randbelow(10**6)}", ipv6=False)
    tmp = Path(tempfile.mkdtemp(prefix="espd-ike-"))
    psk = secrets.token_hex(16)
    with topo:
        by_charon = reauthenticator == "charon"
        charon = Charon(topo.gw_b, "gwb", DEBIAN, settings={"make_before_break": "yes"}
                        if by_charon else None).start()
        daemon = None
        try:
            charon.load([site_to_site(
                "b", psk, proposals=["aes128gcm16-prfsha256-x25519"],
                esp_proposals=["aes128gcm16"], reauth_time=25 if by_charon else 0,
                extra={"rand_time": 0} if by_charon else {})])
            path = tmp / "gwA.toml"
            path.write_text(config(psk, "manual", tmp, "" if by_charon else "reauth_time = 30"))
            path.chmod(0o600)
            daemon = netns.EspdProcess(topo.gw_a, str(path), str(tmp / "gwA.sock"),
                                       str(tmp / "gwA.log"), "gwA")
            daemon.start()
            daemon.wait_ready(timeout=30)
            with charon.events() as events:
                charon.initiate("net")
                events.wait_up("child-updown", timeout=15)
            first_echo(topo)
            before = {sa["spi"] for sa in daemon.state()["sas"]}
            result = netns.ping(topo.host_a, netns.HOST_B4, count=3300, size=200,
                                interval=0.01, timeout=3)
            log = daemon.log()
            if by_charon:
                assert "IKE SA #1 " in log and ": deleted by the peer" in log, log
            else:
                assert " reauthenticated as " in log, log
            assert not before & {sa["spi"] for sa in daemon.state()["sas"]}
            print(f"reauthentication by {reauthenticator} with charon: "
                  f"{result.received}/3300 echoes")
            new_in = next(sa["spi"] for sa in daemon.state()["sas"] if sa["direction"] == "in")
            early = f"unknown_spi from 192.0.2.2:4500 to 192.0.2.1 spi 0x{new_in:08x}"
            assert result.received == 3300 or (not by_charon and result.received == 3299
                                               and early in log), (
                result, log)
            assert _wait_until(lambda: len(charon.list_sas()) == 1, 5), charon.list_sas()
            (ike_sa,) = charon.list_sas()
            children = [c for c in ike_sa["gw"]["child-sas"].values()
                        if c["state"] == "INSTALLED"]
            assert len(children) == 1, ike_sa
            spis = {sa["spi"] for sa in daemon.state()["sas"]}
            assert {int(children[0]["spi-in"], 16), int(children[0]["spi-out"], 16)} == spis
        finally:
            close_with_espd(daemon, charon, tmp)


def _wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()
