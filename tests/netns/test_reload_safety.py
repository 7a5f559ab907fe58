"""Reloads that fail late or take long (issue 10):

- a reload that loads and plans but cannot install its routes (a route the operator made
  holds one of the new prefixes) applies nothing: the routes it added are gone again, the
  operator's route is untouched, the old SAs run on, the failure is counted, and the
  daemon lives, whether the reload came by the control socket or by SIGHUP;
- a reload of a big (but allowed) config is parsed off the event loop: while it is parsed
  the control socket answers and the systemd watchdog keeps being pinged;
- an SA's identity is its crypto map entry, not the entry's place: inserting `demo 5`
  before `demo 10`, then `demo 15` between `demo 10` and `demo 20`, then removing both
  keeps the SAs of demo 10 and 20, their packet counters and outbound sequence numbers
  going on exactly (a replaced SA would count anew, its successor skip 2^16 numbers by
  the handover), with traffic flowing after each reload.

  [hostA] -- [gwA, reloaded] ==== [gwB] -- [hostB]
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from support import netns
from support.netns import HOST_B4, HOST_B6

from espd.ops import control

pytestmark = pytest.mark.netns

OPERATOR_ROUTE = "blackhole 10.9.0.0/16"


def _entry(seq: int, prefix: str, spi_in: int, spi_out: int, name: str = "extra") -> str:
    return f"""
[access_list.EXTRA{seq}]
rules = ["permit ip 10.1.0.0/16 {prefix}"]

[[crypto_map]]
name = "{name}"
seq = {seq}
peer = "192.0.2.2"
match_address = "EXTRA{seq}"
transform_set = "GCM256"
inbound = {{ spi = 0x{spi_in:x}, key = "{os.urandom(36).hex()}" }}
outbound = {{ spi = 0x{spi_out:x}, key = "{os.urandom(36).hex()}" }}
"""


def _routes(ns: str) -> str:
    return netns.ip(ns, "-4", "route", "show").stdout + netns.ip(ns, "-6", "route",
                                                                 "show").stdout


def _spis(state: dict) -> set[tuple[int, str]]:
    return {(sa["spi"], sa["direction"]) for sa in state["sas"]}


def _wait_reloads(daemon, total: int, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = daemon.state()
        if sum(state["reloads"].values()) >= total:
            return state
        time.sleep(0.05)
    raise AssertionError(f"no reload result within {timeout} s:\n{daemon.log()}")


def _traffic_flows(tunnel) -> None:
    for dst in (HOST_B4, HOST_B6):
        result = netns.ping(tunnel.topo.host_a, dst, count=3, interval=0.1, timeout=2)
        assert result.received == 3, (dst, result)


def test_a_reload_that_cannot_route_rolls_back_completely(make_tunnel):
    tunnel = make_tunnel()
    gw_a, ns = tunnel.gw_a, tunnel.topo.gw_a
    config = Path(gw_a.config)
    good = config.read_text()
    netns.ip(ns, "route", "add", *OPERATOR_ROUTE.split())  # the operator's, metric 0
    routes_before = _routes(ns)
    state_before = gw_a.state()
    # entry 30 adds 10.8.0.0/16 (free), entry 31 adds 10.9.0.0/16 (held by the operator)
    config.write_text(good + _entry(30, "10.8.0.0/16", 0x3001, 0x4001)
                      + _entry(31, "10.9.0.0/16", 0x3002, 0x4002))

    answer = control.request(gw_a.control_socket, "reload", timeout=30)
    assert answer["ok"] is False, answer
    assert "a route to 10.9.0.0/16 exists already" in answer["error"], answer
    gw_a.reload()  # and once by SIGHUP: the same failure, and the daemon lives on
    state = _wait_reloads(gw_a, 2)
    time.sleep(0.3)
    assert gw_a.proc.poll() is None, gw_a.log()
    state = gw_a.state()
    assert state["reloads"] == {"success": 0, "failure": 2}, state["reloads"]
    assert _spis(state) == _spis(state_before), "SAs of the failed reload went live"
    assert _routes(ns) == routes_before  # 10.8.0.0/16 gone again, the operator's untouched
    assert OPERATOR_ROUTE in _routes(ns)
    _traffic_flows(tunnel)

    # the operator moves the route away: the same reload goes through, complete
    netns.ip(ns, "route", "del", *OPERATOR_ROUTE.split())
    gw_a.reload()
    state = _wait_reloads(gw_a, 3)
    assert state["reloads"] == {"success": 1, "failure": 2}, gw_a.log()
    assert (0x4002, "out") in _spis(state)
    routes = _routes(ns)
    assert "10.8.0.0/16 dev espd0" in routes and "10.9.0.0/16 dev espd0" in routes, routes
    # and back: only the routes this daemon made are withdrawn
    config.write_text(good)
    gw_a.reload()
    state = _wait_reloads(gw_a, 4)
    assert state["reloads"]["success"] == 2, gw_a.log()
    assert _routes(ns) == routes_before.replace(OPERATOR_ROUTE + " \n", "")
    _traffic_flows(tunnel)


# -- a big reload -----------------------------------------------------------------------------

@pytest.fixture
def watchdog(tmp_path, monkeypatch):
    """NOTIFY_SOCKET and a 400 ms watchdog for the daemons started after it; yields the
    WATCHDOG=1 pings heard, as (sender's pid, time)."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # who sent each message
    sock.settimeout(0.05)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    pings: list[tuple[int, float]] = []  # (sender's pid, when)
    stop = threading.Event()
    creds = struct.Struct("=iII")  # struct ucred

    def listen() -> None:  # read all the time: a full queue would cost messages
        while not stop.is_set():
            try:
                data, ancillary, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except TimeoutError:
                continue
            except OSError:
                return
            pid = next((creds.unpack(d[:12])[0] for level, kind, d in ancillary
                        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS), 0)
            if b"WATCHDOG=1" in data:
                pings.append((pid, time.monotonic()))

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    yield pings
    stop.set()
    thread.join(5)
    sock.close()


def _big_ios(path: Path, size: int) -> None:
    """An IOS file of `size` bytes: one long access list no crypto map uses."""
    lines, total, i = [], 0, 0
    while total < size:
        line = (f"access-list 150 permit ip host 10.50.{i // 250 % 250}.{i % 250 + 1} "
                f"host 10.60.{i // 250 % 250}.{i % 250 + 1}\n")
        lines.append(line)
        total += len(line)
        i += 1
    path.write_text("".join(lines))


def test_a_big_reload_is_parsed_while_the_daemon_keeps_serving(watchdog, make_tunnel):
    tunnel = make_tunnel()
    gw_a = tunnel.gw_a
    big = Path(tunnel.workdir) / "big.ios"
    _big_ios(big, (4 << 20) - 300_000)  # just under the limit (with the main file)
    config = Path(gw_a.config)
    config.write_text(f'include_ios = ["{big}"]\n' + config.read_text())
    latencies: list[float] = []
    started = time.monotonic()
    gw_a.reload()
    while True:
        t = time.monotonic()
        state = gw_a.state()  # the control socket, while the reload is being parsed
        latencies.append(time.monotonic() - t)
        if sum(state["reloads"].values()):
            break
        assert time.monotonic() - started < 60, gw_a.log()
        time.sleep(0.05)
    took = time.monotonic() - started
    assert state["reloads"] == {"success": 1, "failure": 0}, gw_a.log()
    assert took > 0.5, f"the reload took only {took:.2f} s: too quick to show anything"
    assert max(latencies) < min(1.0, took / 2), \
        f"the control socket stalled {max(latencies):.2f} s during a {took:.2f} s reload"
    during = [t for pid, t in watchdog if pid == gw_a.pid and started <= t <= started + took]
    gaps = [b - a for a, b in zip([started, *during], [*during, started + took], strict=False)]
    assert len(during) >= 2 and max(gaps) < 1.0, \
        f"watchdog pings during a {took:.2f} s reload: gaps {gaps}"
    _traffic_flows(tunnel)


# -- identity: the entry, not its place -------------------------------------------------------

PINGS = 5


def _by_entry(state: dict) -> dict[tuple[str, int, str], dict]:
    return {(sa["map"], sa["seq"], sa["direction"]): sa for sa in state["sas"]}


def _went_on(before: dict, after: dict, sent: int) -> None:
    """`after` is the SA of `before`: same SPI, its counters went on by exactly `sent`."""
    label = f"{before['map']} {before['seq']} {before['direction']}"
    assert after["spi"] == before["spi"], label
    assert after["packets"] == before["packets"] + sent, (label, before, after)
    # out: the very next numbers (no handover skip); in: the highest seen goes on
    assert after["sequence"] == before["sequence"] + sent, (label, before, after)


def test_inserting_and_removing_entries_keeps_the_unchanged_sas(make_tunnel):
    tunnel = make_tunnel()
    gw_a = tunnel.gw_a
    config = Path(gw_a.config)
    good = config.read_text()
    five = _entry(5, "10.7.0.0/16", 0x5001, 0x6001, name="demo")  # the same keys twice
    steps = [("insert demo 5 first", good + five),
             ("insert demo 15 in the middle",
              good + five + _entry(15, "10.8.0.0/16", 0x5002, 0x6002, name="demo")),
             ("remove both", good)]
    kept = [("demo", seq, d) for seq in (10, 20) for d in ("out", "in")]
    for what, text in steps:
        before = _by_entry(gw_a.state())
        config.write_text(text)
        answer = control.request(gw_a.control_socket, "reload", timeout=30)
        assert answer["ok"] is True, (what, answer, gw_a.log())
        for dst in (HOST_B4, HOST_B6):
            result = netns.ping(tunnel.topo.host_a, dst, count=PINGS, interval=0.05, timeout=2)
            assert result.received == PINGS, (what, dst, result)
        after = _by_entry(gw_a.state())
        for key in kept:
            assert key in after, (what, key, sorted(after))
            _went_on(before[key], after[key], PINGS)
    assert {key[:2] for key in after} == {("demo", 10), ("demo", 20)}
