"""A gateway that drops root after start: it keeps CAP_NET_ADMIN and nothing else, can
never regain root, and still passes traffic, reloads and records its sequence numbers."""

from __future__ import annotations

import pwd
import signal
import time

import pytest
from support import netns
from support.netns import HOST_A4, HOST_B4

pytestmark = pytest.mark.netns

CAP_NET_ADMIN = 1 << 12


def _threads_status(pid: int) -> list[dict[str, str]]:
    import os

    return [_status_of(f"/proc/{pid}/task/{tid}/status") for tid in os.listdir(f"/proc/{pid}/task")]


def _status_of(path: str) -> dict[str, str]:
    with open(path) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def test_dropped_daemon_keeps_only_net_admin_and_still_works(make_tunnel):
    nobody = pwd.getpwnam("nobody")
    tunnel = make_tunnel(extra={"user": "nobody"})
    topo, gw_a = tunnel.topo, tunnel.gw_a
    threads = _threads_status(gw_a.pid)
    assert len(threads) >= 3, "the C workers and the control thread should be running"
    for st in threads:  # every thread, the C workers included
        assert st["Uid"].split() == [str(nobody.pw_uid)] * 4, st["Uid"]
        assert st["Gid"].split() == [str(nobody.pw_gid)] * 4, st["Gid"]
        assert int(st["CapEff"], 16) == CAP_NET_ADMIN, st["CapEff"]
        assert int(st["CapPrm"], 16) == CAP_NET_ADMIN, st["CapPrm"]
        assert int(st["CapBnd"], 16) == CAP_NET_ADMIN, st["CapBnd"]  # nothing to regain
        assert st["NoNewPrivs"] == "1"  # not even through a setuid binary
        assert st["Groups"].strip() == ""
    assert "running as nobody" in gw_a.log()

    for src, dst in ((topo.host_a, HOST_B4), (topo.host_b, HOST_A4)):
        result = netns.ping(src, dst, count=3, interval=0.05, timeout=2)
        assert result.received == 3, result

    before = gw_a.state()["reloads"]["success"]
    gw_a.signal(signal.SIGHUP)  # reading the config and replacing routes as nobody
    deadline = time.monotonic() + 10
    while gw_a.state()["reloads"]["success"] == before:
        assert time.monotonic() < deadline, gw_a.log()
        time.sleep(0.1)
    assert gw_a.state()["reloads"]["failure"] == 0, gw_a.log()
    result = netns.ping(topo.host_a, HOST_B4, count=2, interval=0.05, timeout=2)
    assert result.received == 2, result

    # every operator interface still answers: nothing it needs is loaded too late to read
    from espd.ops import control

    for command in ("show_sa", "show_map", "show_acl", "stats", "state"):
        answer = control.request(gw_a.control_socket, command)
        assert answer["ok"], (command, answer)
    assert "espd_sa_packets_total" in netns.scrape_metrics(topo.gw_a, tunnel.metrics_port)
    assert "Traceback" not in gw_a.log(), gw_a.log()

    seq_dir = tunnel.workdir / "gwA-state" / "seq"
    files = sorted(seq_dir.glob("out-*"))
    assert files and all(f.stat().st_uid == nobody.pw_uid for f in files)
    sent = {sa["spi"]: sa["sequence"] for sa in gw_a.state()["sas"] if sa["direction"] == "out"}
    assert gw_a.stop() == 0, gw_a.log()
    recorded = {int(f.name.rsplit("-", 1)[1], 16): int(f.read_text()) for f in files}
    assert recorded == sent, "the clean stop did not record the last sequence numbers"
    gw_a.start()  # the fixture stops it
    gw_a.wait_ready(timeout=30)
