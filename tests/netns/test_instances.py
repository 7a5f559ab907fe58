"""A second `espd run` beside a running one (an operator testing by hand, issue 10): it
must fail before it touches anything, with one line naming the running instance, and the
first daemon's routes, blackholes and traffic must be exactly as they were.

  [hostA] -- [gwA: espd, and a second espd tried beside it] ==== [gwB] -- [hostB]
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from support import netns
from support.netns import HOST_B4, HOST_B6

pytestmark = pytest.mark.netns


def _routes(ns: str) -> str:
    return netns.ip(ns, "-4", "route", "show").stdout + netns.ip(ns, "-6", "route",
                                                                 "show").stdout


def _second(tunnel, config: str, name: str) -> tuple[int, str]:
    """Run another espd in gwA's namespace on `config`; its exit status and log."""
    first = tunnel.gw_a
    log = str(Path(tunnel.workdir) / f"{name}.log")
    second = netns.EspdProcess(first.ns, config, first.control_socket, log, name, first.command)
    second.start()
    try:
        status = second.proc.wait(20)
    finally:
        second.stop()
    return status, second.log()


def _intact(tunnel, routes_before: str) -> None:
    first = tunnel.gw_a
    assert first.proc.poll() is None, first.log()
    assert _routes(tunnel.topo.gw_a) == routes_before
    assert first.state()["sas"], "the first daemon stopped answering"
    for dst in (HOST_B4, HOST_B6):
        result = netns.ping(tunnel.topo.host_a, dst, count=3, interval=0.1, timeout=2)
        assert result.received == 3, (dst, result)


def test_a_second_instance_on_the_same_config_touches_nothing(make_tunnel):
    tunnel = make_tunnel()
    first = tunnel.gw_a
    before = _routes(tunnel.topo.gw_a)
    assert "espd0" in before and "blackhole 10.2.0.0/16" in before, before
    status, log = _second(tunnel, first.config, "gwA-again")
    assert status == 1, log
    lines = [line for line in log.splitlines() if "ERROR" in line]
    assert len(lines) == 1, log
    assert re.search(rf"another espd \(pid {first.pid}\) is running", lines[0]), lines[0]
    _intact(tunnel, before)
    assert Path(first.control_socket).exists()


def test_a_second_instance_on_the_same_interface_touches_nothing(make_tunnel):
    """Another state directory (so no lock in common), the same TUN interface name: it
    must not attach to the first one's device, nor replace or remove its routes."""
    tunnel = make_tunnel()
    first = tunnel.gw_a
    before = _routes(tunnel.topo.gw_a)
    other = Path(tunnel.workdir) / "gwA-other.toml"
    other.write_text(netns.with_daemon_settings(
        Path(first.config).read_text(), state_dir=str(Path(tunnel.workdir) / "other-state"),
        control_socket=str(Path(tunnel.workdir) / "other.sock"), metrics=""))
    status, log = _second(tunnel, str(other), "gwA-other")
    assert status == 1, log
    assert "interface espd0 exists already" in log, log
    _intact(tunnel, before)
    time.sleep(0.2)
    _intact(tunnel, before)
