"""tests/bench/bench_hub.py at a small scale: a real espd hub with 20 IKE crypto map
entries (one per peer address, each with its own PSK and access list) establishes all 20
tunnels from the lightweight initiators, shows them (and its spoke's) on the control
socket, and the bench leaves no namespace behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import netns

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_hub.py"


@pytest.mark.usefixtures("netns_ok")
def test_hub_establishes_every_peer(tmp_path):
    out = tmp_path / "hub.json"
    proc = subprocess.Popen([sys.executable, str(BENCH), "--peers", "20", "--procs", "2",
                             "--no-traffic", "--json", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:  # SIGINT: the bench's finally blocks clean up
            proc.send_signal(2)
            proc.communicate(timeout=60)
    assert proc.returncode == 0, log[-4000:]
    (result,) = json.loads(out.read_text())["results"]
    assert result["peers"] == 20
    assert result["hub_ike_sas"] == 21  # the 20 peers and the spoke gwA
    assert result["bytes_per_tunnel"] > 0
    left = [ns for ns in os.listdir(netns.NETNS_DIR) if ns.startswith(f"hb-{proc.pid}-")]
    assert not left, left
