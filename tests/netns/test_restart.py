"""Restarts of a gateway under traffic: nothing in clear while it is down, and no (SPI,
sequence number) ever sent twice with the same key, after a clean stop or a kill -9.

  [hostA] -- [gwA, restarted] ==underlay, captured on gwB's wan0== [gwB] -- [hostB]
"""

from __future__ import annotations

import signal
import time

import pytest
from support import netns
from support.netns import HOST_B4, WAN_IF, Capture, UdpFlow, analyze

from espd.keying.sequence_store import RESERVE_BLOCK

pytestmark = pytest.mark.netns


def _out_spis(daemon: netns.EspdProcess) -> set[int]:
    return {sa["spi"] for sa in daemon.state()["sas"] if sa["direction"] == "out"}


def _restart_under_traffic(tunnel, how: int) -> tuple[list, list, float, float]:
    """Run a UDP flow A -> B, stop gwA with `how`, keep sending while it is down, start it
    again. Returns (seqs before, seqs after) of gwA's IPv4 outbound SPI and the down window."""
    topo = tunnel.topo
    spi = min(_out_spis(tunnel.gw_a))  # crypto map entry 10: the IPv4 one
    with Capture(topo.gw_b, WAN_IF) as capture, \
            UdpFlow(topo.host_a, topo.host_b, HOST_B4, port=7301, interval=0.002) as flow:
        time.sleep(1.0)
        assert flow.count() > 50, "no traffic through the tunnel before the restart"
        down = time.monotonic()
        if how == signal.SIGKILL:
            tunnel.gw_a.signal(signal.SIGKILL)
            tunnel.gw_a.proc.wait(5)
        else:
            assert tunnel.gw_a.stop() == 0, tunnel.gw_a.log()
        time.sleep(1.0)  # traffic keeps coming while gwA is gone
        up = time.monotonic()
        tunnel.gw_a.start()
        tunnel.gw_a.wait_ready(timeout=30)
        received_before = flow.count()
        time.sleep(1.5)
        assert flow.count() > received_before + 50, "traffic did not resume after restart"
    analysis = analyze(capture.frames)
    assert not analysis.cleartext, f"in clear while gwA restarted: {analysis.cleartext[:5]}"
    assert not analysis.other, analysis.other[:5]
    from_a = [p for p in analysis.esp if p.spi == spi]
    before = [p.seq for p in from_a if p.time < down]
    after = [p.seq for p in from_a if p.time > up]
    return before, after, down, up


def test_kill9_restart_resumes_above_the_reservation(make_tunnel):
    tunnel = make_tunnel()
    before, after, _, _ = _restart_under_traffic(tunnel, signal.SIGKILL)
    assert before and after
    assert min(after) > max(before), "a sequence number was sent twice with the same key"
    # kill -9 gave no chance to record the last number: it resumes above the reservation
    assert min(after) > RESERVE_BLOCK >= max(before)
    assert len(set(before + after)) == len(before + after)


def test_clean_restart_resumes_right_after_the_last_number(make_tunnel):
    tunnel = make_tunnel()
    before, after, _, _ = _restart_under_traffic(tunnel, signal.SIGTERM)
    assert before and after
    assert min(after) > max(before)
    # a clean stop records the last number used: no reservation is skipped
    assert min(after) < RESERVE_BLOCK, (max(before), min(after))


def test_blackhole_routes_keep_traffic_from_leaking_while_down(make_tunnel):
    tunnel = make_tunnel()
    topo = tunnel.topo
    tunnel.gw_a.signal(signal.SIGKILL)
    tunnel.gw_a.proc.wait(5)
    routes = netns.ip(topo.gw_a, "route", "show").stdout
    assert "blackhole 10.2.0.0/16" in routes, routes
    assert "espd0" not in routes, routes  # the TUN device died with the daemon
    with Capture(topo.gw_b, WAN_IF) as capture:
        result = netns.ping(topo.host_a, HOST_B4, count=3, interval=0.1, timeout=0.5)
    assert result.received == 0
    analysis = analyze(capture.frames)
    assert not analysis.cleartext, analysis.cleartext[:5]
    tunnel.gw_a.start()  # the fixture stops it cleanly
    tunnel.gw_a.wait_ready(timeout=30)
