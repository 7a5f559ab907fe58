"""Canary keys: no output of a running espd carries a key, and what is left of a removed
SA's key in the daemon's memory.

Two real gateways in network namespaces (tests/support/netns.py) run three crypto map entries:

  canary 10  IPv4  esp-gcm 256                   keys inline in the config
  canary 20  IPv6  esp-aes 256 esp-sha256-hmac   keys and auth keys in key files
  spare 30   IPv4  esp-gcm 256                   random keys; stays when the others go

The canary keys are distinctive (c0ffee...). Every channel espd writes to (its log, the
metrics, every CLI command, every control-socket answer, the texts of refused reloads) is
searched for them in lowercase and uppercase hex, base64 and Python's bytes repr.

The memory tests read the daemon's memory through /proc/PID/maps + /proc/PID/mem (root),
while the SAs are live and again after a reload removed them, and sort every copy found
by what holds it: a Python bytes or str object (recognised by its object header, the
type pointer of this interpreter's bytes/str types), or anything else (the C data plane's
SA, OpenSSL's key schedules and HMAC state, or raw leftovers).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support import netns
from support.netns import HOST_A4, HOST_A6, HOST_B4, HOST_B6, UdpFlow, udp_exchange
from support.packets import ipv4

from espd.config.load import load as load_config
from espd.config.model import ConfigError
from espd.dataplane import SA, Dataplane
from espd.dataplane import Lifetime as SaLifetime
from espd.ops import control
from espd.policy.plan import build_plan, describe_changes

# -- the keys -----------------------------------------------------------------------------------

GCM_AB = "c0ffee" * 12  # canary 10, A -> B: gwA outbound, gwB inbound (36 bytes incl. salt)
GCM_BA = "ba5eba11" * 9  # canary 10, B -> A
CBC_AB = "deadbeef" * 8  # canary 20, A -> B: AES-256 key
CBC_AB_AUTH = "feedface" * 8  # canary 20, A -> B: HMAC-SHA256 key
CBC_BA = "5ca1ab1e" * 8
CBC_BA_AUTH = "d15ea5e5" * 8
SPARE_AB = hashlib.sha256(b"espd spare ab").hexdigest() + "00000001"
SPARE_BA = hashlib.sha256(b"espd spare ba").hexdigest() + "00000002"

CANARIES = {  # name -> hex key: every key of the two canary entries
    "gcm A->B (inline)": GCM_AB, "gcm B->A (inline)": GCM_BA,
    "cbc A->B (key_file)": CBC_AB, "cbc A->B auth (auth_key_file)": CBC_AB_AUTH,
    "cbc B->A (key_file)": CBC_BA, "cbc B->A auth (auth_key_file)": CBC_BA_AUTH,
}
INLINE = ("gcm A->B (inline)", "gcm B->A (inline)")


def secret_forms(hex_key: str) -> dict[str, str]:
    """Ways a key could be printed: hex both cases, base64 at every alignment, bytes repr."""
    raw = bytes.fromhex(hex_key)
    forms = {"hex": hex_key.lower(), "HEX": hex_key.upper(),
             "base64": base64.b64encode(raw).decode(),
             "urlsafe-base64": base64.urlsafe_b64encode(raw).decode().rstrip("="),
             "repr": repr(raw)[2:-1], "hex:colons": raw.hex(":")}
    for shift in (1, 2):  # the key inside a longer base64 text: the part only it decides
        forms[f"base64+{shift}"] = base64.b64encode(bytes(shift) + raw).decode()[4:-4]
    return forms


def leaks(text: str, keys: dict[str, str] | None = None) -> list[str]:
    found = []
    for name, hex_key in (keys or CANARIES).items():
        for form, needle in secret_forms(hex_key).items():
            if needle in text:
                found.append(f"{name} as {form}")
    if "c0ffee" in text.lower():
        found.append("the c0ffee canary (partial)")
    return found


def test_secret_forms_find_what_they_should():
    raw = bytes.fromhex(CBC_AB_AUTH)
    for text in (CBC_AB_AUTH, CBC_AB_AUTH.upper(), base64.b64encode(b"x" + raw).decode(),
                 base64.b64encode(b"xy" + raw).decode(), repr(raw), str(list(raw)) + repr(raw),
                 json.dumps({"k": base64.b64encode(raw).decode()})):
        assert leaks(text), text
    assert not leaks("crypto map canary 20 in SPI 0x00002002")


# -- configs ------------------------------------------------------------------------------------

@dataclass
class Side:
    name: str  # "a" or "b"
    local4: str
    peer4: str
    local6: str
    peer6: str
    lan4: str
    remote4: str
    lan6: str
    remote6: str
    spare_remote: str

    def keys(self, ab: str, ba: str) -> tuple[str, str]:
        """(inbound, outbound) of a pair whose A->B key is ``ab``."""
        return (ba, ab) if self.name == "a" else (ab, ba)


SIDE_A = Side("a", netns.GW_A_WAN4, netns.GW_B_WAN4, netns.GW_A_WAN6, netns.GW_B_WAN6,
              "10.1.0.0/16", "10.2.0.0/16", "fd00:1::/64", "fd00:2::/64", "10.3.0.0/16")
SIDE_B = Side("b", netns.GW_B_WAN4, netns.GW_A_WAN4, netns.GW_B_WAN6, netns.GW_A_WAN6,
              "10.2.0.0/16", "10.1.0.0/16", "fd00:2::/64", "fd00:1::/64", "10.4.0.0/16")


def write_key(path: Path, hex_key: str) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(hex_key + "\n")
    return path.name


def gateway_toml(side: Side, workdir: Path, settings: dict[str, str], *,
                 canaries: bool = True, v6_lifetime: int | None = None,
                 gcm_override: str | None = None) -> str:
    """The config of one gateway; key files are written next to it (relative paths)."""
    gcm_in, gcm_out = side.keys(GCM_AB, GCM_BA)
    if gcm_override is not None:
        gcm_in = gcm_override
    cbc_in, cbc_out = side.keys(CBC_AB, CBC_BA)
    auth_in, auth_out = side.keys(CBC_AB_AUTH, CBC_BA_AUTH)
    spare_in, spare_out = side.keys(SPARE_AB, SPARE_BA)
    spi = (lambda ab, ba: side.keys(ab, ba))  # noqa: E731 - (inbound, outbound) SPIs
    files = {}
    for label, value in (("in20", cbc_in), ("out20", cbc_out), ("in20auth", auth_in),
                         ("out20auth", auth_out)):
        files[label] = write_key(workdir / f"{side.name}-{label}.key", value)
    lifetime = (f"lifetime = {{ seconds = {v6_lifetime}, kilobytes = 100000 }}\n"
                if v6_lifetime else "")
    text = f"""\
[daemon]
interface = "espd0"
workers = 2
local = "{side.local4}"

[access_list.LAN4]
rules = ["permit ip {side.lan4} {side.remote4}"]

[access_list.LAN6]
rules = ["permit ipv6 {side.lan6} {side.remote6}"]

[access_list.SPARE]
rules = ["permit ip {side.lan4} {side.spare_remote}"]

[transform_set.GCM256]
transforms = ["esp-gcm 256"]

[transform_set.CBC]
transforms = ["esp-aes 256", "esp-sha256-hmac"]

[[crypto_map]]
name = "spare"
seq = 30
peer = "{side.peer4}"
match_address = "SPARE"
transform_set = "GCM256"
inbound = {{ spi = {spi(0x1030, 0x2030)[0]:#x}, key = "{spare_in}" }}
outbound = {{ spi = {spi(0x1030, 0x2030)[1]:#x}, key = "{spare_out}" }}
"""
    if canaries:
        text += f"""
[[crypto_map]]
name = "canary"
seq = 10
peer = "{side.peer4}"
match_address = "LAN4"
transform_set = "GCM256"
replay_window = 1024
inbound = {{ spi = {spi(0x1010, 0x2010)[0]:#x}, key = "{gcm_in}" }}
outbound = {{ spi = {spi(0x1010, 0x2010)[1]:#x}, key = "{gcm_out}" }}

[[crypto_map]]
name = "canary"
seq = 20
peer = "{side.peer6}"
local = "{side.local6}"
match_address = "LAN6"
transform_set = "CBC"
{lifetime}
[crypto_map.inbound]
spi = {spi(0x1020, 0x2020)[0]:#x}
key_file = "{files['in20']}"
auth_key_file = "{files['in20auth']}"

[crypto_map.outbound]
spi = {spi(0x1020, 0x2020)[1]:#x}
key_file = "{files['out20']}"
auth_key_file = "{files['out20auth']}"
"""
    return netns.with_daemon_settings(text, **settings)


# -- the tunnel ---------------------------------------------------------------------------------

_counter = itertools.count(1)


@dataclass
class CanaryTunnel:
    topo: netns.Topology
    workdir: Path
    gw_a: netns.EspdProcess
    gw_b: netns.EspdProcess
    port: int
    settings: dict[str, dict[str, str]] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)  # whole logs, once stopped

    @property
    def daemons(self) -> tuple[netns.EspdProcess, netns.EspdProcess]:
        return self.gw_a, self.gw_b

    def write(self, daemon: netns.EspdProcess, **options) -> None:
        side = SIDE_A if daemon is self.gw_a else SIDE_B
        text = gateway_toml(side, self.workdir, self.settings[daemon.name], **options)
        tmp = Path(daemon.config).with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(daemon.config)


@contextmanager
def canary_tunnel(v6_lifetime: int | None = None) -> Iterator[CanaryTunnel]:
    """Both gateways up with the canary config; stopped by pid, namespaces deleted."""
    why = netns.unavailable()
    if why:
        pytest.skip(f"network-namespace tests: {why}")
    command = shlex.split(os.environ.get("ESPD_TEST_DAEMON", "")) or None
    topo = netns.Topology(tag=f"espd-{os.getpid()}-k{next(_counter)}")
    workdir = Path(tempfile.mkdtemp(prefix="espd-keys-"))
    port = 20000 + (os.getpid() * 11 + next(_counter)) % 20000
    daemons: list[netns.EspdProcess] = []
    problems = []
    tunnel = None
    try:
        topo.create()
        for name, ns in (("gwA", topo.gw_a), ("gwB", topo.gw_b)):
            sock = str(workdir / f"{name}.sock")
            daemons.append(netns.EspdProcess(ns, str(workdir / f"{name}.toml"), sock,
                                        str(workdir / f"{name}.log"), name, command))
        tunnel = CanaryTunnel(topo, workdir, daemons[0], daemons[1], port)
        for daemon in daemons:
            tunnel.settings[daemon.name] = dict(
                control_socket=daemon.control_socket, metrics=f"127.0.0.1:{port}",
                state_dir=str(workdir / f"{daemon.name}-state"))
            tunnel.write(daemon, v6_lifetime=v6_lifetime)
        for daemon in daemons:
            daemon.start()
        for daemon in daemons:
            daemon.wait_ready(timeout=30)
        yield tunnel
    finally:
        for daemon in daemons:
            if daemon.proc is None:
                continue
            status = daemon.stop()
            if tunnel is not None:
                tunnel.logs[daemon.name] = Path(daemon.log_path).read_text(errors="replace")
            print(f"--- {daemon.name} log (pid {daemon.pid}, status {status})\n{daemon.log()}")
            if status != 0:
                problems.append(f"{daemon.name} exited with {status} on SIGTERM")
        topo.destroy()
        shutil.rmtree(workdir, ignore_errors=True)
    assert not problems, problems


def assert_traffic(tunnel: CanaryTunnel) -> None:
    topo = tunnel.topo
    for src, dst in ((topo.host_a, HOST_B4), (topo.host_b, HOST_A4), (topo.host_a, HOST_B6),
                     (topo.host_b, HOST_A6)):
        result = netns.ping(src, dst, count=3, interval=0.05, timeout=2)
        assert result.received == 3, f"ping {dst} from {src}: {result}"
    assert udp_exchange(topo.host_a, topo.host_b, HOST_B4, count=100, port=7401) >= 98
    assert udp_exchange(topo.host_b, topo.host_a, HOST_A6, count=100, port=7402) >= 98


def forge_at_gw_b(tunnel: CanaryTunnel) -> None:
    """A canary-keyed ESP packet gwA sent, captured and sent again at gwB from gwA's
    namespace, once as it was (replay_dup) and once with a sequence number ahead of the
    window, which the ICV covers (auth_failed),
    so gwB's drop log (ops/drop_log.py) writes its lines into the log scanned below."""
    topo = tunnel.topo
    with netns.Capture(topo.gw_b, netns.WAN_IF) as capture:
        assert netns.ping(topo.host_a, HOST_B4, count=2, interval=0.05).received == 2
    sent = [p for p in netns.analyze(capture.frames).esp
            if p.outer_src == netns.GW_A_WAN4 and not p.udp]
    assert sent, "no ESP from gwA captured"
    genuine = sent[-1].esp
    ahead = genuine[:4] + (sent[-1].seq + 1000).to_bytes(4, "big") + genuine[8:]
    tx = netns.socket_in(topo.gw_a, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        for esp in (genuine, ahead):
            tx.sendto(ipv4(netns.GW_A_WAN4, netns.GW_B_WAN4, 50, esp), (netns.GW_B_WAN4, 0))
    finally:
        tx.close()
    for reason in ("replay_dup", "auth_failed"):
        wait_log(tunnel.gw_b, rf"inbound {reason} from 192\.0\.2\.1 to 192\.0\.2\.2 spi 0x", 5,
                 lambda: None)


# -- every output channel -----------------------------------------------------------------------

def espd_cli(*args: str, ok: bool = True) -> str:
    result = subprocess.run([sys.executable, "-m", "espd", *args], capture_output=True,
                            text=True, timeout=90)
    if ok:
        assert result.returncode == 0, f"espd {' '.join(args)}: {result.stderr}"
    else:
        assert result.returncode != 0, f"espd {' '.join(args)} succeeded: {result.stdout}"
    return f"$ espd {' '.join(args)} (exit {result.returncode})\n{result.stdout}{result.stderr}"


def raw_request(sock: str, command: str, **args) -> str:
    """The control socket's JSON line, as sent (not decoded and re-encoded)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(60)
        s.connect(sock)
        s.sendall(json.dumps({"command": command, **args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode()


def wait_reloads(daemon: netns.EspdProcess, key: str, before: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while daemon.state()["reloads"][key] <= before:
        assert time.monotonic() < deadline, f"{daemon.name}: no {key} reload; {daemon.log()}"
        time.sleep(0.05)


def wait_log(daemon: netns.EspdProcess, pattern: str, timeout: float, poke) -> None:
    """Wait for ``pattern`` in the log, calling ``poke`` meanwhile (lifetimes are checked
    when an SA is used)."""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, Path(daemon.log_path).read_text(errors="replace")):
        assert time.monotonic() < deadline, f"{daemon.name}: no '{pattern}' in its log:\n" \
                                            f"{daemon.log()}"
        poke()
        time.sleep(0.2)


@pytest.mark.netns
def test_no_output_channel_carries_a_key():
    lifetime = 12  # canary 20: soft expiry at 10 s, hard at 12 s
    channels: dict[str, str] = {}
    with canary_tunnel(v6_lifetime=lifetime) as tunnel:
        gw_a = tunnel.gw_a
        sock = gw_a.control_socket
        assert_traffic(tunnel)
        forge_at_gw_b(tunnel)
        for daemon, ns in ((tunnel.gw_a, tunnel.topo.gw_a), (tunnel.gw_b, tunnel.topo.gw_b)):
            metrics = netns.scrape_metrics(ns, tunnel.port)
            assert 'espd_sa_packets_total{' in metrics
            channels[f"{daemon.name} metrics"] = metrics
            for command in ("state", "show_sa", "show_map", "show_acl", "stats"):
                channels[f"{daemon.name} control {command}"] = raw_request(
                    daemon.control_socket, command)
        shown = json.loads(espd_cli("show", "sa", "--json", "--socket", sock).split("\n", 1)[1])
        assert {(sa["map"], sa["seq"]) for sa in shown} == {("canary", 10), ("canary", 20),
                                                           ("spare", 30)}
        for args in (("show", "sa"), ("show", "sa", "--json"), ("show", "map"),
                     ("show", "acl"), ("stats",)):
            channels[" ".join(args)] = espd_cli(*args, "--socket", sock)
        channels["check (good)"] = espd_cli("check", "-c", gw_a.config, "--socket", sock)
        channels["check -c (finds the socket)"] = espd_cli("show", "sa", "-c", gw_a.config)
        channels["reload (no change)"] = espd_cli("reload", "--socket", sock)
        channels["control plan_diff"] = raw_request(sock, "plan_diff", config=gw_a.config)
        config = Path(gw_a.config)
        good = config.read_text()

        # a SIGHUP with a wrong-length inline key: refused, logged, old tables keep running
        tunnel.write(gw_a, gcm_override=GCM_BA[:-2], v6_lifetime=lifetime)
        failed = gw_a.state()["reloads"]["failure"]
        gw_a.signal(signal.SIGHUP)
        wait_reloads(gw_a, "failure", failed)
        channels["reload (wrong-length key)"] = espd_cli("reload", "--socket", sock, ok=False)
        channels["control reload (wrong-length key)"] = raw_request(sock, "reload")
        channels["check (wrong-length key)"] = espd_cli("check", "-c", gw_a.config, "--socket",
                                                        sock, ok=False)
        assert "70 hex digits" in channels["reload (wrong-length key)"]

        # not hex: an inline key with a stray character
        tunnel.write(gw_a, gcm_override=GCM_BA[:-1] + "g", v6_lifetime=lifetime)
        channels["reload (not hex)"] = espd_cli("reload", "--socket", sock, ok=False)
        channels["control plan_diff (not hex)"] = raw_request(sock, "plan_diff",
                                                             config=gw_a.config)

        # a key file one byte short, and one with the key as a TOML line
        config.write_text(good)
        key_path = tunnel.workdir / "a-in20.key"
        key_path.write_text(CBC_BA[:-2] + "\n")
        channels["reload (short key file)"] = espd_cli("reload", "--socket", sock, ok=False)
        assert "holds 62 hex digits" in channels["reload (short key file)"]
        key_path.write_text(f'key = "{CBC_BA}"\n')
        channels["control reload (key file not hex)"] = raw_request(sock, "reload")
        key_path.chmod(0o644)
        channels["reload (key file mode 644)"] = espd_cli("reload", "--socket", sock, ok=False)
        assert "chmod 600" in channels["reload (key file mode 644)"]
        write_key(key_path, CBC_BA)
        key_path.chmod(0o600)
        channels["reload (restored)"] = espd_cli("reload", "--socket", sock)
        assert "no changes" in gw_a.log() or "0 changes" in channels["reload (restored)"]

        # a reload that removes the canary entries and one that brings them back
        tunnel.write(gw_a, canaries=False)
        channels["reload (remove canaries)"] = espd_cli("reload", "--socket", sock)
        assert "remove crypto map canary 10" in channels["reload (remove canaries)"]
        tunnel.write(gw_a, v6_lifetime=lifetime)
        channels["reload (add canaries)"] = espd_cli("reload", "--socket", sock)

        # the lifetime runs out on gwB (gwA restarted its canary SAs by the reloads)
        def poke() -> None:
            netns.ping(tunnel.topo.host_a, HOST_B6, count=1, timeout=0.2)

        wait_log(tunnel.gw_b, r"canary 20 .*soft lifetime reached", lifetime + 10, poke)
        wait_log(tunnel.gw_b, r"canary 20 .*hard lifetime reached", lifetime + 10, poke)
        channels["show sa (expired)"] = espd_cli("show", "sa", "--socket",
                                                 tunnel.gw_b.control_socket)
    for name, log in tunnel.logs.items():  # stopped: the whole log, start to "stopped"
        channels[f"{name} log"] = log
        assert "stopped" in log, log[-2000:]
    assert "refused, old configuration still running" in channels["gwA log"]
    assert "hard lifetime reached" in channels["gwB log"]
    found = {name: hits for name, text in channels.items() if (hits := leaks(text))}
    assert not found, found
    assert len(channels) >= 30, sorted(channels)


# -- repr and str of everything built from canary keys --------------------------------------

def _objects_of(config) -> list[object]:
    plan = build_plan(config)
    objects: list[object] = [config, config.settings, *config.warnings, plan, *plan.sas,
                             *plan.rules, *(r.rule for r in plan.rules)]
    for entry in config.crypto_maps:
        objects += [entry, entry.inbound, entry.outbound, entry.lifetime, entry.where,
                    entry.peer, entry.local]
    for acl in config.access_lists.values():
        objects += [acl, acl.where, *acl.entries]
        objects += [m for e in acl.entries for m in (e.src, e.dst, e.where)]
    for tset in config.transform_sets.values():
        objects += [tset, tset.transform, tset.where]
    for sa in plan.sas:
        objects += [sa.hard, sa.soft]
    return objects


def test_repr_and_str_of_every_object_built_from_canary_keys(tmp_path):
    path = tmp_path / "gwA.toml"
    path.write_text(gateway_toml(SIDE_A, tmp_path, {"control_socket": str(tmp_path / "s")},
                                 v6_lifetime=30))
    config = load_config(str(path))
    objects = _objects_of(config)
    assert len([o for o in objects if type(o).__name__ == "SaSpec"]) == 6
    assert len([o for o in objects if type(o).__name__ == "ManualKey"]) == 6
    texts = [f"{type(o).__name__}: {o!r} {o!s} {o}" for o in objects]
    texts.append(repr(objects))  # containers repr their items
    texts += describe_changes(None, build_plan(config))
    dp = Dataplane(1)
    for spec in build_plan(config).sas:
        sa = dp.create_sa(spi=spec.spi, direction=spec.direction, transform=spec.transform,
                          key=spec.key, auth_key=spec.auth_key, mode=spec.mode,
                          local=spec.local, peer=spec.peer, encap=spec.encap,
                          replay_window=spec.replay_window, esn=spec.esn, soft=spec.soft,
                          hard=spec.hard, policy=spec.policy, cookie=1)
        assert isinstance(sa, SA)
        texts += [repr(sa), str(sa), f"{sa}", repr(vars(sa)) if hasattr(sa, "__dict__") else ""]
    texts.append(repr(SaLifetime(1, 2, 3)))
    found = {text[:60]: hits for text in texts if (hits := leaks(text))}
    assert not found, found


def test_config_errors_with_canary_keys_print_no_key(tmp_path):
    path = tmp_path / "gwA.toml"
    text = gateway_toml(SIDE_A, tmp_path, {}, gcm_override=GCM_BA[:-2])
    for broken in (text, text.replace(GCM_AB, GCM_AB[:-1] + "Z"),
                   text.replace(f'"{GCM_AB}"', f'"{GCM_BA}"')):  # a shared key
        path.write_text(broken)
        with pytest.raises(ConfigError) as e:
            load_config(str(path))
        rendered = f"{e.value}\n{e.value!r}\n{e.value.problems!r}"
        assert not leaks(rendered), (leaks(rendered), rendered)


# -- the daemon's memory ------------------------------------------------------------------------

@dataclass(frozen=True)
class Region:
    start: int
    end: int
    perms: str
    offset: int
    path: str


def regions(pid: int) -> list[Region]:
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in parts[0].split("-"))
            path = parts[5].strip() if len(parts) > 5 else ""
            out.append(Region(start, end, parts[1], int(parts[2], 16), path))
    return out


def type_address(pid: int, type_object: type) -> int | None:
    """Where ``type_object`` (a static type of this interpreter) lives in process ``pid``,
    if it runs the same interpreter binary: same file, same offset into it."""
    here = id(type_object)
    mine = next((r for r in regions(os.getpid()) if r.start <= here < r.end and r.path), None)
    if mine is None:
        return None
    for region in regions(pid):
        if region.path == mine.path and region.offset == mine.offset:
            return region.start + here - mine.start
    return None


NOT_PYTHON = "not a Python object (C data plane, OpenSSL, or a raw buffer)"


@dataclass
class Hit:
    key: str  # CANARIES name
    form: str  # "raw" | "hex" | "HEX" | "cipher key" (the key without its GCM salt)
    address: int
    region: Region
    holder: str  # "Python bytes ...", "Python str ...", or NOT_PYTHON

    def __str__(self) -> str:
        where = self.region.path or "anonymous"
        return f"{self.key} {self.form} at {self.address:#x} in {where} " \
               f"({self.region.perms}): {self.holder}"


def scan(pid: int, keys: dict[str, str]) -> list[Hit]:
    """Every copy of ``keys`` in process ``pid``'s readable memory, sorted by holder."""
    bytes_type = type_address(pid, bytes)
    str_type = type_address(pid, str)
    needles: list[tuple[str, str, bytes]] = []
    for name, hex_key in keys.items():
        raw = bytes.fromhex(hex_key)
        needles += [(name, "raw", raw), (name, "hex", hex_key.lower().encode()),
                    (name, "HEX", hex_key.upper().encode())]
        if len(raw) == 36:  # GCM: the AES key alone is what OpenSSL's key schedule starts with
            needles.append((name, "cipher key", raw[:32]))
    hits = []
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for region in regions(pid):
            if "r" not in region.perms or region.path in ("[vvar]", "[vsyscall]", "[vvar_vclock]"):
                continue
            try:
                mem.seek(region.start)
                data = mem.read(region.end - region.start)
            except OSError:
                continue
            whole: dict[str, list[int]] = {}  # where each key's raw material was found
            for name, form, needle in needles:
                at = data.find(needle)
                while at >= 0:
                    inside = any(start <= at < start + 36 for start in whole.get(name, ()))
                    if form == "raw":
                        whole.setdefault(name, []).append(at)
                    if not (form == "cipher key" and inside):  # the same copy, counted once
                        holder = _holder(data, at, form, len(needle), bytes_type, str_type)
                        hits.append(Hit(name, form, region.start + at, region, holder))
                    at = data.find(needle, at + 1)
    return hits


def _word(data: bytes, at: int) -> int | None:
    return int.from_bytes(data[at:at + 8], "little") if 0 <= at and at + 8 <= len(data) else None


def _holder(data: bytes, at: int, form: str, length: int, bytes_type: int | None,
            str_type: int | None) -> str:
    """Recognise the CPython 3.11 object whose contents hold the hit, by its header
    (refcnt, type, size, ...; live or freed: freeing a small object overwrites its first
    word only). Bytes data starts 32 bytes into the object, compact ASCII str data 48.
    Raw keys are looked for in small bytes objects (a key, or plan._fingerprint's
    key || 0 || auth_key), hex in str or bytes texts up to a config file's size."""
    binary = form in ("raw", "cipher key")
    kinds = [("bytes", bytes_type, 32)] + ([] if binary else [("str", str_type, 48)])
    for back in range(0, min(at, 256 if binary else 1 << 14) + 1, 8):
        start = at - back
        for kind, type_address, header in kinds:
            if type_address is None or back < header or _word(data, start + 8) != type_address:
                continue
            if (_word(data, start + 16) or 0) >= back - header + length:
                exact = "exactly the key" if back == header else "inside a longer one"
                return f"Python {kind} ({exact})"
    return NOT_PYTHON


@dataclass
class MemoryFindings:
    live: list[Hit]
    removed: list[Hit]
    after_churn: list[Hit]
    pid: int


@pytest.fixture(scope="module")
def memory_findings() -> Iterator[MemoryFindings]:
    """Run gwA with the canaries, pass traffic, scan; remove the canary entries by a reload
    and scan as soon as it answered; churn the daemon's allocator (many requests and
    reloads; espd has no way to run gc.collect() from outside, but this many allocations
    run CPython's cyclic collector through its thresholds), then scan again."""
    with canary_tunnel() as tunnel:
        gw_a = tunnel.gw_a
        assert_traffic(tunnel)
        with UdpFlow(tunnel.topo.host_a, tunnel.topo.host_b, HOST_B4, 7403, interval=0.005):
            time.sleep(0.5)  # both workers key their own contexts
        time.sleep(0.5)
        live = scan(gw_a.pid, CANARIES)
        tunnel.write(gw_a, canaries=False)
        changes = control.request(gw_a.control_socket, "reload", timeout=60)
        assert changes.get("ok"), changes
        assert any("remove crypto map canary 10" in c for c in changes["changes"]), changes
        removed = scan(gw_a.pid, CANARIES)
        for i in range(60):
            control.request(gw_a.control_socket, "state")
            control.request(gw_a.control_socket, "show_sa")
            if i % 3 == 0:
                control.request(gw_a.control_socket, "reload", timeout=60)
        time.sleep(1.5)
        after_churn = scan(gw_a.pid, CANARIES)
        report = ["", f"== gwA (pid {gw_a.pid}) copies of the canary keys =="]
        for title, hits in (("live", live), ("as soon as the reload that removed them answered",
                                             removed),
                            ("after 60 requests and 20 reloads", after_churn)):
            report.append(f"-- {title}: {len(hits)}")
            report += [f"   {hit}" for hit in hits]
        print("\n".join(report))
        findings_path = os.environ.get("ESPD_MEMORY_REPORT")
        if findings_path:
            Path(findings_path).write_text("\n".join(report) + "\n")
        yield MemoryFindings(live, removed, after_churn, gw_a.pid)


def _summary(hits: list[Hit]) -> dict[tuple[str, str, str], int]:
    counts: dict[tuple[str, str, str], int] = {}
    for hit in hits:
        where = hit.region.path or "anonymous"
        key = (hit.key, f"{hit.form} in {where}", hit.holder)
        counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.mark.netns
def test_live_sas_are_found_in_memory_so_the_scan_works(memory_findings):
    """While the SAs run, their keys are in the C data plane (SA and OpenSSL contexts):
    the scan must see them there, or its negative results below mean nothing. Python holds
    none: the loaders return keys as bytearrays, which the daemon zeroes in place once the
    data plane has its own copies (plan.wipe_keys)."""
    live = memory_findings.live
    in_c = {h.key for h in live if h.holder == NOT_PYTHON and h.form == "raw"}
    assert in_c == set(CANARIES), _summary(live)
    in_python = {h.key for h in live if h.holder.startswith("Python")}
    assert in_python == set(), _summary(live)


@pytest.mark.netns
def test_removed_key_bytes_leave_the_data_plane(memory_findings):
    """What the C data plane guarantees: once an SA is removed (and reclaimed), no raw copy
    of its key is left outside Python objects: the SA's key and auth key are cleansed, and
    OpenSSL's contexts (key schedules, HMAC keys) freed with cleansing."""
    c_side = [h for h in memory_findings.removed + memory_findings.after_churn
              if h.holder == NOT_PYTHON and h.form in ("raw", "cipher key")]
    assert not c_side, "\n".join(str(h) for h in c_side)


@pytest.mark.netns
def test_removed_keys_are_gone_from_all_of_the_daemons_memory(memory_findings):
    """No raw copy of a removed key anywhere, Python or C, once the reload that removed
    the SAs has answered: the C side cleanses on release, and on the Python side the key
    buffers were zeroed as soon as the data plane had its copies. Hex TEXT of an inline key
    is the one thing Python cannot wipe (the config file's text and tomllib's strings are
    immutable str, freed right after loading): it may linger in freed heap memory until
    reused, which is why key_file is the production advice; key_file keys never exist as
    text (next test)."""
    for title, left in (("right after the reload", memory_findings.removed),
                        ("after churning the allocator", memory_findings.after_churn)):
        left = [h for h in left if not (h.key in INLINE and h.form in ("hex", "HEX"))]
        assert not left, f"{title}:\n" + "\n".join(str(h) for h in left)


@pytest.mark.netns
def test_no_live_python_object_holds_removed_inline_key_text(memory_findings):
    """What lingers of an inline key's text is freed memory, never a live Python object."""
    for left in (memory_findings.removed, memory_findings.after_churn):
        held = [h for h in left if h.holder.startswith("Python")]
        assert not held, "\n".join(str(h) for h in held)


@pytest.mark.netns
def test_key_files_leave_no_hex_text_in_memory(memory_findings):
    """Key files are read into a bytearray that is wiped: no hex text of a key_file key
    exists in the daemon, live or removed (inline keys are another matter: see above)."""
    hex_hits = [h for h in memory_findings.live + memory_findings.removed
                + memory_findings.after_churn
                if h.form in ("hex", "HEX") and h.key not in INLINE]
    assert not hex_hits, "\n".join(str(h) for h in hex_hits)
