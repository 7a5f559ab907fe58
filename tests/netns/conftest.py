"""Fixtures for the namespace tests: two real espd gateways between two hosts.

Every test gets its own four namespaces (named espd-<pid>-<n>-..., see
tests/support/netns.py), its own per-run configs, control sockets and state directories,
and its daemons are stopped by pid and the namespaces deleted afterwards, pass or fail.

ESPD_TEST_DAEMON, if set, is the command that runs "espd run" (e.g. an installed
"/usr/local/bin/espd run"); "-c CONFIG" is appended.
"""

from __future__ import annotations

import itertools
import os
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import netns

from espd.config.load import load as load_config

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "config" / "demo"
_counter = itertools.count(1)


@pytest.fixture(scope="session")
def netns_ok() -> None:
    why = netns.unavailable()
    if why:
        pytest.skip(f"network-namespace tests: {why}")


# -- configs -------------------------------------------------------------------------------

def variant(text: str, encapsulation: str = "esp", lifetime: str | None = None) -> str:
    """A demo TOML config with another encapsulation and/or lifetime on every entry."""
    lines = []
    for line in text.splitlines():
        if line.startswith("encapsulation = "):
            line = f'encapsulation = "{encapsulation}"'
            if lifetime:
                line += f"\nlifetime = {lifetime}"
        lines.append(line)
    return "\n".join(lines) + "\n"


# -- the tunnel ----------------------------------------------------------------------------

@dataclass
class Tunnel:
    topo: netns.Topology
    workdir: Path
    gw_a: netns.EspdProcess
    gw_b: netns.EspdProcess
    metrics_port: int
    kind: str
    encapsulation: str
    started: float = 0.0

    @property
    def daemons(self) -> tuple[netns.EspdProcess, netns.EspdProcess]:
        return self.gw_a, self.gw_b

    def keys(self, daemon: netns.EspdProcess) -> dict[int, tuple[str, bytes]]:
        """SPI -> (direction, key) as ``daemon``'s config file says (the key incl. salt)."""
        loaded = load_config(daemon.config)
        out = {}
        for entry in loaded.crypto_maps:
            out[entry.inbound.spi] = ("in", entry.inbound.key)
            out[entry.outbound.spi] = ("out", entry.outbound.key)
        return out


def _start(topo: netns.Topology, workdir: Path, kind: str, encapsulation: str,
           lifetime: str | None, extra: dict | None = None) -> Tunnel:
    command = shlex.split(os.environ.get("ESPD_TEST_DAEMON", "")) or None
    port = 20000 + (os.getpid() * 7 + next(_counter)) % 20000
    daemons = []
    for name, ns, side in (("gwA", topo.gw_a, "a"), ("gwB", topo.gw_b, "b")):
        sock = str(workdir / f"{name}.sock")
        settings = dict(interface="espd0", control_socket=sock, metrics=f"127.0.0.1:{port}",
                        state_dir=str(workdir / f"{name}-state"), **(extra or {}))
        path = workdir / f"{name}.toml"
        if kind == "ios":
            assert encapsulation == "esp" and lifetime is None, "IOS has no such setting"
            path.write_text(netns.ios_wrapper(str(DEMO / f"gateway-{side}.ios"), **settings))
        else:
            text = variant((DEMO / f"gateway-{side}.toml").read_text(), encapsulation, lifetime)
            path.write_text(netns.with_daemon_settings(text, **settings))
        if extra and "user" in extra:  # a daemon that drops root must still read these
            workdir.chmod(0o755)
            path.chmod(0o644)
        daemons.append(netns.EspdProcess(ns, str(path), sock, str(workdir / f"{name}.log"), name,
                                    command))
    tunnel = Tunnel(topo, workdir, daemons[0], daemons[1], port, kind, encapsulation)
    tunnel.started = time.monotonic()
    for daemon in daemons:
        daemon.start()
    for daemon in daemons:
        daemon.wait_ready(timeout=30)
    return tunnel


@pytest.fixture
def make_tunnel(netns_ok):
    """make_tunnel(kind="toml"|"ios", encapsulation="esp"|"udp", lifetime=None) -> Tunnel."""
    made: list[tuple[netns.Topology, list[netns.EspdProcess], Path]] = []

    def make(kind: str = "toml", encapsulation: str = "esp",
             lifetime: str | None = None, extra: dict | None = None) -> Tunnel:
        topo = netns.Topology(tag=f"espd-{os.getpid()}-{next(_counter)}")
        workdir = Path(tempfile.mkdtemp(prefix="espd-t-"))
        entry = (topo, [], workdir)
        made.append(entry)
        topo.create()
        tunnel = None
        try:
            tunnel = _start(topo, workdir, kind, encapsulation, lifetime, extra)
        finally:
            # daemons started (even if one failed to come up) are stopped at teardown
            entry[1].extend(d for d in (tunnel.daemons if tunnel else ()) if d.proc)
            if tunnel is None:
                for path in workdir.glob("*.log"):
                    print(f"--- {path.name}\n{path.read_text(errors='replace')}")
        return tunnel

    yield make
    problems = []
    for topo, daemons, workdir in made:
        for daemon in daemons:
            status = daemon.stop()
            if status != 0:
                problems.append(f"{daemon.name} exited with {status} on SIGTERM; log:\n"
                                f"{daemon.log()}")
            print(f"--- {daemon.name} log (pid {daemon.pid}, status {status})\n"
                  f"{daemon.log()}")  # pytest shows it when the test fails
        topo.destroy()
        shutil.rmtree(workdir, ignore_errors=True)
    assert not problems, "\n".join(problems)


# -- strongSwan charon as the peer (tests/support/strongswan.py, docs/testing.md) -----------

@pytest.fixture
def make_topology(netns_ok):
    """make_topology(ipv6=True) -> a fresh netns.Topology, destroyed at teardown."""
    made: list[netns.Topology] = []

    def make(ipv6: bool = True, underlay_mtu: int = 1500) -> netns.Topology:
        topo = netns.Topology(tag=f"espd-{os.getpid()}-{next(_counter)}", ipv6=ipv6,
                              underlay_mtu=underlay_mtu)
        made.append(topo)
        topo.create()
        return topo

    yield make
    for topo in made:
        topo.destroy()


@pytest.fixture
def make_charon(netns_ok):
    """make_charon(ns, name, version="5.9.8", **Charon kwargs) -> a started Charon; the
    test skips if that strongSwan is not installed. Stopped (by pid) and its files removed
    at teardown, its log printed (pytest shows it when the test fails)."""
    from support.strongswan import PEERS, Charon

    made: list = []

    def make(ns: str, name: str, version: str = "5.9.8", **kwargs):
        peer = PEERS[version]
        why = peer.unavailable()
        if why:
            pytest.skip(why)
        charon = Charon(ns, name, peer, **kwargs)
        made.append(charon)
        return charon.start()

    yield make
    for charon in made:
        print(charon.describe(tail=6000))
        charon.close()
