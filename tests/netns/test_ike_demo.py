"""The demo's IKE configs (config/demo/gateway-{a,b}-ike.toml) on two real espd daemons:
the first packet negotiates (on demand), IPv4 and IPv6 each get an IKE SA, traffic flows
both ways, nothing leaves in clear, show sees it; gwA runs as nobody (UDP 500 is bound
before root is dropped).

  [hostA 10.1.0.10] -- [gwA 192.0.2.1 espd, user nobody] ==IKEv2 + ESP== [gwB 192.0.2.2 espd]
  -- [hostB 10.2.0.10]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from support import netns
from support.netns import HOST_A4, HOST_B4, HOST_B6, WAN_IF, Capture, analyze

from espd.ops import control

pytestmark = pytest.mark.netns

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo"
PSK = "espd-demo-only-psk-0123456789"


def ping_until(ns: str, dst: str, timeout: float = 10.0) -> netns.PingResult:
    """Ping until replies come (the first packets only start the negotiation)."""
    deadline = time.monotonic() + timeout
    result = None
    while time.monotonic() < deadline:
        result = netns.ping(ns, dst, count=3, interval=0.1, timeout=1)
        if result.received == 3:
            return result
    raise AssertionError(f"ping {dst} from {ns} never got through: {result}")


def ike_state(daemon: netns.EspdProcess) -> dict:
    return control.request(daemon.control_socket, "state")["state"]["ike"]


def start_espd(ns: str, side: str, workdir: Path, **extra: str) -> netns.EspdProcess:
    sock = str(workdir / f"gw{side}.sock")
    settings = dict(control_socket=sock, metrics="", state_dir=str(workdir / f"gw{side}"),
                    **extra)
    path = workdir / f"gw{side}.toml"
    if extra.get("user"):  # a daemon that drops root must still read its config
        workdir.chmod(0o755)
    path.write_text(netns.with_daemon_settings((DEMO / f"gateway-{side}-ike.toml").read_text(),
                                               **settings))
    path.chmod(0o644)
    daemon = netns.EspdProcess(ns, str(path), sock, str(workdir / f"gw{side}.log"), f"gw{side}")
    daemon.start()
    daemon.wait_ready(timeout=30)
    return daemon


@pytest.fixture
def site(netns_ok):
    topo = netns.Topology(tag=f"espd-{os.getpid()}-ikd{time.monotonic_ns() % 10**6}")
    workdir = Path(tempfile.mkdtemp(prefix="espd-ike-"))
    daemons: list[netns.EspdProcess] = []
    topo.create()
    try:
        yield topo, workdir, daemons
    finally:
        problems = []
        for daemon in daemons:
            status = daemon.stop()
            print(f"--- {daemon.name} log (status {status})\n{daemon.log()}")
            if status != 0:
                problems.append(f"{daemon.name} exited with {status}")
        topo.destroy()
        shutil.rmtree(workdir, ignore_errors=True)
        assert not problems, problems


def test_demo_ike_configs_negotiate_on_the_first_packet_and_nothing_leaves_in_clear(site):
    topo, workdir, daemons = site
    daemons.append(start_espd(topo.gw_a, "a", workdir, user="nobody"))
    daemons.append(start_espd(topo.gw_b, "b", workdir))
    assert ike_state(daemons[0])["sas"] == []  # nothing until traffic needs it
    with Capture(topo.gw_b, WAN_IF) as capture:
        ping_until(topo.host_a, HOST_B4)
        ping_until(topo.host_b, HOST_A4)  # back through the same Child SA
        ping_until(topo.host_a, HOST_B6)  # the IPv6 entry negotiates its own IKE SA
    analysis = analyze(capture.frames)
    assert not analysis.cleartext, analysis.cleartext[:3]
    assert analysis.esp, "no ESP on the underlay"
    ike_a, ike_b = ike_state(daemons[0]), ike_state(daemons[1])
    assert sorted(sa["state"] for sa in ike_a["sas"]) == ["established", "established"]
    assert {sa["role"] for sa in ike_a["sas"]} == {"initiator"}
    assert {sa["role"] for sa in ike_b["sas"]} == {"responder"}
    assert all(sa["suite"] == "aes256gcm16-prfsha384-x25519" for sa in ike_a["sas"])
    children = [c for sa in ike_a["sas"] for c in sa["children"]]
    assert sorted(tuple(c["entry"]) for c in children) == [("demo", 10), ("demo", 20)]
    spis = {p.spi for p in analysis.esp}
    assert spis <= {c["spi_in"] for c in children} | {c["spi_out"] for c in children}
    state = control.request(daemons[0].control_socket, "state")["state"]
    negotiated = [sa for sa in state["sas"] if sa.get("origin") == "ike"]
    assert len(negotiated) == 4  # two Child SAs, an inbound and an outbound SA each
    text = control.request(daemons[0].control_socket, "show_ike_sa")["text"]
    assert "READY" in text and "192.0.2.2/500" in text
    assert PSK not in daemons[0].log() and PSK not in daemons[1].log()
    assert "running as nobody" in daemons[0].log()


def espd_cli(daemon: netns.EspdProcess, *words: str) -> str:
    result = subprocess.run([sys.executable, "-m", "espd", *words, "--socket",
                             daemon.control_socket], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_operator_commands_show_clear_and_initiate(site):
    topo, workdir, daemons = site
    gw_a = start_espd(topo.gw_a, "a", workdir)
    daemons += [gw_a, start_espd(topo.gw_b, "b", workdir)]
    proposals = espd_cli(gw_a, "show", "ike", "proposal")
    assert "IKEv2 proposal: 1 (aes256gcm16-prfsha384-x25519)" in proposals
    assert "DPD: 10 s, retry 2 s, periodic" in proposals
    assert "Transform set GCM256: { esp-gcm 256 }" in espd_cli(gw_a, "show", "transform-set")
    ping_until(topo.host_a, HOST_B4)

    cleared = espd_cli(gw_a, "clear", "sa", "192.0.2.2")
    assert "Child SA demo 10" in cleared and "deleted" in cleared
    deadline = time.monotonic() + 5  # the view of the engine refreshes every second
    while time.monotonic() < deadline and ike_state(gw_a)["sas"][0]["children"]:
        time.sleep(0.1)
    (ike_sa,) = ike_state(gw_a)["sas"]
    assert ike_sa["children"] == []  # the IKE SA stays (IOS clear crypto sa)
    negotiated = [s for s in control.request(gw_a.control_socket, "state")["state"]["sas"]
                  if s.get("origin") == "ike"]
    assert negotiated == []  # and its SAs are out of the data plane: fail closed

    started = espd_cli(gw_a, "initiate", "demo", "10")
    assert "initiating" in started or "Child SA already" in started
    ping_until(topo.host_a, HOST_B4)

    assert "deleted" in espd_cli(gw_a, "clear", "ike", "sa")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and ike_state(gw_a)["sas"]:
        time.sleep(0.1)
    assert ike_state(gw_a)["sas"] == []
    ping_until(topo.host_a, HOST_B4)  # the next packet negotiates again (on demand)
