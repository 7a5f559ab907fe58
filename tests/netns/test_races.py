"""Reloads that hand an outbound SA over, hammered together with reservation events: no
(SPI, sequence number) pair may ever appear twice on the wire (with AES-GCM it is the
nonce under one key).

  [hostA] -- [gwA, reloaded constantly] ==underlay, captured on gwB's wan0== [gwB] -- [hostB]

gwA alternates between two configs that differ only in the entries' replay window: every
reload replaces both outbound SAs by new ones with the same SPI and key (a "handover":
the old SA is capped, the new one resumes above the cap). Reloads arrive by SIGHUP and by
the control socket at once. Tiny reservation blocks (the ESPD_TEST_RESERVE_BLOCK test
hook) make the data plane ask for the next block every few packets, so `seq_reserve`
events for an SA being handed over arrive while it is handed over.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from pathlib import Path

import pytest
from support.netns import GW_A_WAN4, GW_A_WAN6, HOST_B4, HOST_B6, WAN_IF, Capture, UdpFlow, analyze

from espd.ops import control

pytestmark = pytest.mark.netns

BLOCK = 64  # sequence numbers per reservation: a seq_reserve event every 32 packets
HAMMER_SECONDS = 20.0
EXTRA_ENTRIES = 4  # tunnels to nowhere: every reload hands them over too, which takes time


@pytest.fixture
def tiny_reservations(monkeypatch):
    monkeypatch.setenv("ESPD_TEST_RESERVE_BLOCK", str(BLOCK))


def _extra_entries(count: int) -> str:
    """`count` more crypto map entries towards gwB's address for subnets nobody uses."""
    out = []
    for i in range(count):
        out.append(f"""
[access_list.X{i}]
rules = ["permit ip 10.1.0.0/16 10.3.{i}.0/24"]

[[crypto_map]]
name = "extra"
seq = {10 + i}
peer = "192.0.2.2"
match_address = "X{i}"
transform_set = "GCM256"
encapsulation = "esp"
replay_window = 1024
inbound = {{ spi = 0x{0x3000 + i:x}, key = "{os.urandom(36).hex()}" }}
outbound = {{ spi = 0x{0x4000 + i:x}, key = "{os.urandom(36).hex()}" }}
""")
    return "".join(out)


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.{threading.get_ident()}.tmp"
    Path(tmp).write_text(text)
    os.replace(tmp, path)


def _hammer(gw, configs: list[str], stop: threading.Event, how: str, counts: dict) -> None:
    """Reload `gw` over and over, alternating configs; `how` is "sighup" or "control"."""
    i = 0
    while not stop.is_set():
        _write_atomically(gw.config, configs[i % 2])
        if how == "sighup":
            gw.reload()
            time.sleep(1.0)  # the main thread must also be free for events
        else:
            answer = control.request(gw.control_socket, "reload", timeout=30)
            counts["control_ok" if answer.get("ok") else "control_failed"] += 1
        i += 1


def test_handover_reloads_and_reservations_never_repeat_a_sequence_number(
        tiny_reservations, make_tunnel):
    tunnel = make_tunnel()
    topo, gw_a = tunnel.topo, tunnel.gw_a
    base = Path(gw_a.config).read_text() + _extra_entries(EXTRA_ENTRIES)
    other = base.replace("replay_window = 1024", "replay_window = 2048")
    assert other != base, "the demo config changed: find another setting to alternate"
    out_spis = {sa["spi"] for sa in gw_a.state()["sas"] if sa["direction"] == "out"}
    _write_atomically(gw_a.config, base)
    gw_a.reload()
    counts: collections.Counter = collections.Counter()
    stop = threading.Event()
    with Capture(topo.gw_b, WAN_IF) as capture, \
            UdpFlow(topo.host_a, topo.host_b, HOST_B4, port=7401, interval=0.00005) as flow4, \
            UdpFlow(topo.host_a, topo.host_b, HOST_B6, port=7402, interval=0.0001) as flow6:
        hammers = [threading.Thread(target=_hammer, args=(gw_a, [base, other], stop, how,
                                                          counts), daemon=True)
                   for how in ("sighup", "control")]
        for thread in hammers:
            thread.start()
        time.sleep(HAMMER_SECONDS)
        stop.set()
        for thread in hammers:
            thread.join(30)
        time.sleep(0.5)
        delivered = (flow4.count(), flow6.count())
    state = gw_a.state()
    assert gw_a.proc.poll() is None, gw_a.log()
    reloads = state["reloads"]
    assert reloads["success"] >= 50, (reloads, dict(counts))
    sequences = {sa["spi"]: sa["sequence"] for sa in state["sas"]
                 if sa["direction"] == "out" and sa["spi"] in out_spis}
    assert min(sequences.values()) > 20 * BLOCK, f"too few reservations to prove much: " \
                                                 f"{sequences}"
    assert min(delivered) > 1000, f"too little traffic through the tunnel: {delivered}"

    analysis = analyze(capture.frames)
    assert not analysis.cleartext, analysis.cleartext[:5]
    sent = [(p.spi, p.seq) for p in analysis.esp if p.outer_src in (GW_A_WAN4, GW_A_WAN6)]
    assert {spi for spi, _ in sent} == out_spis, sent[:5]
    repeated = [pair for pair, n in collections.Counter(sent).items() if n > 1]
    assert not repeated, (
        f"{len(repeated)} (SPI, sequence number) pairs sent more than once (nonce reuse) "
        f"among {len(sent)} packets over {reloads['success']} reloads: "
        f"{[(hex(spi), seq) for spi, seq in sorted(repeated)[:10]]}")
