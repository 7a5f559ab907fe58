#!/usr/bin/env python3
"""Tunnel throughput: espd against wireguard-go and strongSwan (kernel-libipsec), side by side.

Four fresh network namespaces, one topology for every configuration:

  [hostA 10.1.0.10]--[10.1.0.1 gwA 192.0.2.1]==veth, MTU 1500==[192.0.2.2 gwB 10.2.0.1]--
                                                                              [10.2.0.10 hostB]

Each configuration runs in turn on the same namespaces, the gateways' tunnel daemons
started before and stopped after it:

  plain         veth routing, no tunnel (the ceiling)
  wireguard-go  userspace WireGuard, one wireguard-go per gateway
  strongswan    charon with kernel-libipsec (userspace ESP), IKEv2 PSK, aes128gcm16, ESP in UDP
  espd-esp-w1   espd, esp-gcm 128, raw ESP (IP protocol 50), 1 worker      (and -w2: 2 workers)
  espd-udp-w1   espd, esp-gcm 128, ESP in UDP 4500, 1 worker               (and -w2: 2 workers)
  espd-pkt-w1   espd, esp-gcm 128, raw ESP sent on AF_PACKET (send_path = "packet"), 1 worker
  espd-ring-w1  espd, esp-gcm 128, raw ESP received on a TPACKET_V3 ring (receive_path = "ring")
  espd-pktring-w1  the same, also sent on AF_PACKET (send_path = "packet"), 1 worker
  espd-udpimb-w1   espd-udp-w1 with the AEAD on libipsec-mb (crypto_backend = "ipsec-mb";
                   skipped when this espd is built without it)
  espd-espimb-w1   espd-esp-w1 with crypto_backend = "ipsec-mb"

and iperf3 from host A to host B measures, each --repeat times for --seconds: TCP one
stream, TCP four streams, UDP with 1300-byte payloads (Gbit/s delivered, from the
receiver) and UDP with 64-byte payloads (packets per second delivered). Medians are
printed, with the ratios of espd to wireguard-go and to strongSwan, and the CPU time the
tunnel daemons spend per delivered packet (from /proc; "perf stat" cycles too where the
CPU exposes counters).

Run as root:  .venv/bin/python tests/bench/bench_tunnel.py [--only espd,wireguard-go]
              [--repeat 3] [--seconds 5] [--json results.json] [--profile]
Missing peers (wireguard-go, wireguard-tools, strongSwan, iperf3) are installed from
Debian with apt-get. Everything created (namespaces, daemons, files in /tmp) is named
bt-<pid>-... and removed at the end, also after a failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchreport import fmt, median, table  # tests/bench, beside this script

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "daemon") not in sys.path:  # espd.ops.control, also when run by another Python
    sys.path.append(str(REPO / "daemon"))
NETNS_DIR = "/run/netns"

HOST_A, GW_A_LAN, GW_A_WAN = "10.1.0.10", "10.1.0.1", "192.0.2.1"
HOST_B, GW_B_LAN, GW_B_WAN = "10.2.0.10", "10.2.0.1", "192.0.2.2"
NET_A, NET_B = "10.1.0.0/24", "10.2.0.0/24"
IPERF_PORT = 5201
CHARON = "/usr/lib/ipsec/charon"
LIBIPSEC_PLUGIN = "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so"

APT = {  # what to check -> Debian package
    "iperf3": "iperf3",
    "wireguard-go": "wireguard-go",
    "wg": "wireguard-tools",
    CHARON: "strongswan-charon",
    LIBIPSEC_PLUGIN: "libcharon-extra-plugins",
    "swanctl": "strongswan-swanctl",
    "ping": "iputils-ping",
}

TESTS = [  # name, label, iperf3 arguments, unit
    ("tcp1", "TCP x1", [], "Gbit/s"),
    ("tcp4", "TCP x4", ["-P", "4"], "Gbit/s"),
    ("udp1300", "UDP 1300 B", ["-u", "-b", "0", "-l", "1300"], "Gbit/s"),
    ("udp64", "UDP 64 B", ["-u", "-b", "0", "-l", "64"], "kpps"),
]
PROFILE_TEST = "udp1300"  # the test during which CPU per packet and perf are taken


class BenchError(RuntimeError):
    pass


class Interrupted(BaseException):
    pass


def log(message: str) -> None:
    print(message, flush=True)


def run(argv: list[str], *, check: bool = True, timeout: float = 60, env: dict | None = None,
        quiet: bool = False) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{' '.join(argv)}: no answer within {timeout} s") from e
    if check and result.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({result.returncode}): "
                         f"{(result.stderr or result.stdout).strip()[-2000:]}")
    return result


def in_ns(ns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def ip(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["ip", "-n", ns, *args], check=check)


# -- dependencies and machine ----------------------------------------------------------------

def have(what: str) -> bool:
    return os.path.exists(what) if what.startswith("/") else shutil.which(what) is not None


def install_missing() -> None:
    missing = sorted({pkg for what, pkg in APT.items() if not have(what)})
    if not missing:
        return
    log(f"installing Debian packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], timeout=600, env=env)
    run(["apt-get", "install", "-y", "-qq", *missing], timeout=1200, env=env)


def perf_cycles_supported() -> tuple[bool, str]:
    if not have("perf"):
        return False, "perf is not installed (Debian package linux-perf)"
    try:
        r = run(["perf", "stat", "-x,", "-e", "cycles", "true"], check=False, timeout=20)
    except BenchError as e:
        return False, str(e)
    out = r.stderr + r.stdout
    if r.returncode != 0 or "not supported" in out or "<not counted>" in out:
        line = next((x for x in out.splitlines() if "cycles" in x), out.strip()[:200])
        return False, f"'perf stat -e cycles true' gives: {line.strip()}" \
                      " (no hardware counters, e.g. a VM without vPMU)"
    return True, ""


def first_line(argv: list[str]) -> str:
    try:
        r = run(argv, check=False, timeout=10)
    except (BenchError, OSError):
        return "unknown"
    text = (r.stdout or r.stderr).strip()
    return text.splitlines()[0].strip() if text else "unknown"


def deb_version(package: str) -> str:
    r = run(["dpkg-query", "-W", "-f", "${Version}", package], check=False)
    return r.stdout.strip() if r.returncode == 0 else "not installed"


def machine() -> dict:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    hypervisor = ""
    lscpu = run(["lscpu"], check=False).stdout if have("lscpu") else ""
    found = re.search(r"Hypervisor vendor:\s*(\S+)", lscpu)
    if found:
        hypervisor = found.group(1)
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "hypervisor": hypervisor or "none",
        "kernel": os.uname().release,
        "openssl": first_line(["openssl", "version"]),
        "python": sys.version.split()[0],
        "wireguard-go": first_line(["wireguard-go", "--version"]),
        "wireguard-tools": deb_version("wireguard-tools"),
        "strongswan": f"{first_line([CHARON, '--version'])} "
                      f"(strongswan-charon {deb_version('strongswan-charon')})",
        "iperf3": first_line(["iperf3", "--version"]),
        "espd": _espd_version(),
    }


def _espd_version() -> str:
    r = run([espd_python(), "-c", "import espd; print(espd.__version__)"], check=False)
    version = r.stdout.strip() or "unknown"
    head = run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], check=False)
    return f"{version} (git {head.stdout.strip() or '?'} + working tree)"


def native_fingerprint() -> str:
    """sha256 prefix and mtime of the espd data-plane module the daemons will load."""
    import glob
    import hashlib

    found = sorted(glob.glob(str(REPO / "daemon" / "espd" / "_native*.so")))
    if not found:
        return "no _native module in daemon/espd"
    with open(found[0], "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(found[0])))
    return f"{os.path.basename(found[0])} sha256 {digest}, built {stamp}"


def espd_python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


# -- processes and CPU accounting --------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """tid -> (name, CPU seconds) for every thread of ``pid``."""
    out: dict[int, tuple[str, float]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
            name = text[text.index("(") + 1:text.rindex(")")]
            fields = text.rsplit(")", 1)[1].split()
            out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / CLK_TCK)
        except (OSError, ValueError, IndexError):
            continue
    return out


def system_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return total - idle, total


@dataclass
class Proc:
    """A process we started, stopped by its pid."""

    label: str
    popen: subprocess.Popen
    log_path: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, n: int = 3000) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10) -> None:
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(5)
            except ProcessLookupError:
                pass


def start(label: str, argv: list[str], log_path: str, env: dict | None = None) -> Proc:
    with open(log_path, "ab") as out:
        # "ip netns exec", "unshare" and "sh -c 'exec ...'" all exec in place: the pid we
        # get is the daemon's own
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 env=env, start_new_session=True)
    return Proc(label, popen, log_path)


# -- topology -----------------------------------------------------------------------------------

class Topology:
    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.ha, self.ga, self.gb, self.hb = (f"{tag}-{x}" for x in ("ha", "ga", "gb", "hb"))
        self.created: list[str] = []

    @property
    def namespaces(self) -> list[str]:
        return [self.ha, self.ga, self.gb, self.hb]

    def create(self) -> None:
        for ns in self.namespaces:
            if os.path.exists(os.path.join(NETNS_DIR, ns)):
                raise BenchError(f"namespace {ns} exists already")
            run(["ip", "netns", "add", ns])
            self.created.append(ns)
            ip(ns, "link", "set", "lo", "up")
        for gw in (self.ga, self.gb):
            run(in_ns(gw, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]))
        for a, ifa, b, ifb in ((self.ha, "lan0", self.ga, "lan0"),
                               (self.ga, "wan0", self.gb, "wan0"),
                               (self.gb, "lan0", self.hb, "lan0")):
            ip(a, "link", "add", ifa, "type", "veth", "peer", "name", ifb, "netns", b)
            for ns, name in ((a, ifa), (b, ifb)):
                ip(ns, "link", "set", name, "mtu", "1500")
                ip(ns, "link", "set", name, "up")
        for ns, ifname, cidr in ((self.ha, "lan0", f"{HOST_A}/24"),
                                 (self.ga, "lan0", f"{GW_A_LAN}/24"),
                                 (self.ga, "wan0", f"{GW_A_WAN}/24"),
                                 (self.gb, "wan0", f"{GW_B_WAN}/24"),
                                 (self.gb, "lan0", f"{GW_B_LAN}/24"),
                                 (self.hb, "lan0", f"{HOST_B}/24")):
            ip(ns, "addr", "add", cidr, "dev", ifname)
        ip(self.ha, "route", "add", "default", "via", GW_A_LAN)
        ip(self.hb, "route", "add", "default", "via", GW_B_LAN)

    def clear_routes(self) -> None:
        """Remove every route the gateways have to the other side's LAN, of any type and in
        any table, and strongSwan's policy rule: nothing crosses without the next tunnel."""
        for gw, remote in ((self.ga, NET_B), (self.gb, NET_A)):
            for _ in range(10):
                out = ip(gw, "route", "show", "table", "all", "exact", remote,
                         check=False).stdout
                lines = [line.split() for line in out.splitlines() if line.strip()]
                if not lines:
                    break
                for words in lines:
                    ip(gw, "route", "del", *words, check=False)
            while ip(gw, "rule", "del", "table", "220", check=False).returncode == 0:
                pass
            ip(gw, "route", "flush", "table", "220", check=False)

    def netns_inodes(self) -> set[int]:
        if not hasattr(self, "_inodes"):
            self._inodes = {os.stat(os.path.join(NETNS_DIR, ns)).st_ino
                            for ns in self.created}
        return self._inodes

    def route_dev(self) -> str:
        """The device gateway A sends host B's traffic to."""
        out = ip(self.ga, "route", "get", HOST_B, "from", HOST_A, "iif", "lan0",
                 check=False).stdout
        found = re.search(r"\bdev (\S+)", out)
        return found.group(1) if found else f"? ({out.strip()})"

    def destroy(self) -> None:
        for ns in reversed(self.created):
            run(["ip", "netns", "delete", ns], check=False)
        self.created.clear()

    def reachable(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = run(in_ns(self.ha, ["ping", "-c", "1", "-W", "1", HOST_B]), check=False)
            if r.returncode == 0:
                return True
            time.sleep(0.2)
        return False


# -- the configurations ---------------------------------------------------------------------

@dataclass
class Tunnel:
    """One configuration: start() brings it up on the topology, stop() takes it down."""

    name: str
    label: str
    kind: str  # plain | wireguard-go | strongswan | espd
    encapsulation: str = ""
    workers: int = 0
    send_path: str = "raw"  # espd: [daemon] send_path
    receive_path: str = "raw"  # espd: [daemon] receive_path
    crypto_backend: str = "openssl"  # espd: [daemon] crypto_backend
    procs: list[Proc] = field(default_factory=list)  # daemons, gateway A's first

    def start(self, topo: Topology, tmp: str) -> None:
        getattr(self, f"_start_{self.kind.replace('-', '_')}")(topo, os.path.join(tmp, self.name))

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()

    def check_alive(self) -> None:
        for proc in self.procs:
            if not proc.alive():
                raise BenchError(f"{proc.label} (pid {proc.pid}) exited with status "
                                 f"{proc.popen.returncode}; its log:\n{proc.log_tail()}")

    # plain routing
    def _start_plain(self, topo: Topology, _tmp: str) -> None:
        ip(topo.ga, "route", "add", NET_B, "via", GW_B_WAN)
        ip(topo.gb, "route", "add", NET_A, "via", GW_A_WAN)

    # wireguard-go
    def _start_wireguard_go(self, topo: Topology, tmp: str) -> None:
        os.makedirs(tmp, mode=0o700)
        keys = {}
        for side in ("a", "b"):
            private = run(["wg", "genkey"]).stdout.strip()
            public = subprocess.run(["wg", "pubkey"], input=private, capture_output=True,
                                    text=True, check=True).stdout.strip()
            path = os.path.join(tmp, f"{side}.key")
            with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
                f.write(private + "\n")
            keys[side] = (path, public)
        # the UAPI sockets live in /var/run/wireguard, shared by all namespaces: names unique
        # to this run keep them apart
        tag = topo.tag.replace("-", "")[:12]
        env = dict(os.environ, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD="1",
                   LOG_LEVEL="error")
        sides = (("a", "b", topo.ga, NET_B, GW_B_WAN), ("b", "a", topo.gb, NET_A, GW_A_WAN))
        for side, _other, ns, _remote, _endpoint in sides:
            ifname = f"{tag}{side}"
            self.procs.append(start(f"wireguard-go gw{side.upper()}",
                                    in_ns(ns, ["wireguard-go", "-f", ifname]),
                                    os.path.join(tmp, f"wg-{side}.log"), env))
        for side, other, ns, remote, endpoint in sides:
            ifname = f"{tag}{side}"
            sock = f"/var/run/wireguard/{ifname}.sock"
            deadline = time.monotonic() + 10
            while not os.path.exists(sock):
                self.check_alive()
                if time.monotonic() > deadline:
                    raise BenchError(f"wireguard-go made no {sock} within 10 s")
                time.sleep(0.05)
            run(in_ns(ns, ["wg", "set", ifname, "listen-port", "51820", "private-key",
                           keys[side][0], "peer", keys[other][1], "allowed-ips", remote,
                           "endpoint", f"{endpoint}:51820"]))
            ip(ns, "link", "set", ifname, "mtu", "1420", "up")
            ip(ns, "route", "add", remote, "dev", ifname)

    # strongSwan, charon with kernel-libipsec
    def _start_strongswan(self, topo: Topology, tmp: str) -> None:
        os.makedirs(tmp, mode=0o700)
        psk = secrets.token_hex(32)
        sides = (("a", topo.ga, GW_A_WAN, GW_B_WAN, NET_A, NET_B),
                 ("b", topo.gb, GW_B_WAN, GW_A_WAN, NET_B, NET_A))
        self.uris = {}
        for side, ns, local, remote, local_ts, remote_ts in sides:
            d = os.path.join(tmp, side)
            rundir = os.path.join(d, "run")  # /run of this charon: its pid file
            os.makedirs(rundir)
            uri = f"unix://{d}/charon.vici"
            self.uris[side] = (ns, uri, os.path.join(d, "swanctl.conf"),
                               os.path.join(d, "strongswan.conf"))
            with open(os.path.join(d, "strongswan.conf"), "w") as f:
                f.write(STRONGSWAN_CONF.format(uri=uri, log=os.path.join(d, "charon.log"),
                                               plugins=CHARON_PLUGINS))
            other = "b" if side == "a" else "a"
            with open(os.path.join(d, "swanctl.conf"), "w") as f:
                f.write(SWANCTL_CONF.format(local=local, remote=remote, local_ts=local_ts,
                                            remote_ts=remote_ts, me=f"gw{side}",
                                            peer=f"gw{other}", psk=psk))
            env = dict(os.environ, STRONGSWAN_CONF=os.path.join(d, "strongswan.conf"))
            # charon's pid file is /var/run/charon.pid, fixed at build time: each charon
            # gets a private mount namespace with its own directory bound over /run
            argv = in_ns(ns, ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                              f'mount --bind "$0" /run && exec {CHARON}', rundir])
            self.procs.append(start(f"charon gw{side.upper()}", argv,
                                    os.path.join(d, "charon.out"), env))
        for side, (_ns, uri, conf, sconf) in self.uris.items():
            sock = uri[len("unix://"):]
            deadline = time.monotonic() + 15
            while not os.path.exists(sock):
                self.check_alive()
                if time.monotonic() > deadline:
                    raise BenchError(f"charon made no {sock} within 15 s; log:\n"
                                     f"{self.procs[0].log_tail()}")
                time.sleep(0.1)
            env = dict(os.environ, STRONGSWAN_CONF=sconf)
            r = subprocess.run(["swanctl", "--load-all", "--noprompt", "--file", conf,
                                "--uri", uri], capture_output=True, text=True, env=env,
                               timeout=30)
            if r.returncode != 0:
                raise BenchError(f"swanctl --load-all on gw{side.upper()} failed: "
                                 f"{(r.stderr + r.stdout).strip()[-1500:]}")
        ns, uri, conf, sconf = self.uris["a"]
        env = dict(os.environ, STRONGSWAN_CONF=sconf)
        r = subprocess.run(["swanctl", "--initiate", "--child", "net", "--timeout", "20",
                            "--uri", uri], capture_output=True, text=True, env=env,
                           timeout=40)
        if r.returncode != 0:
            raise BenchError(f"swanctl --initiate failed: {(r.stderr + r.stdout)[-2000:]}")

    # espd
    def _start_espd(self, topo: Topology, tmp: str) -> None:
        from espd.ops import control  # noqa: F401  (fails early if espd is not importable)

        self.native = native_fingerprint()  # the data plane under test, as the daemons load it

        os.makedirs(tmp, mode=0o700)
        k_ab, k_ba = secrets.token_hex(20), secrets.token_hex(20)  # esp-gcm 128: key + salt
        spi_ab, spi_ba = 0x1000 + secrets.randbelow(0x1000), 0x3000 + secrets.randbelow(0x1000)
        sides = (("a", topo.ga, GW_A_WAN, GW_B_WAN, NET_A, NET_B, (spi_ba, k_ba), (spi_ab, k_ab)),
                 ("b", topo.gb, GW_B_WAN, GW_A_WAN, NET_B, NET_A, (spi_ab, k_ab), (spi_ba, k_ba)))
        self.sockets = []
        for side, ns, local, peer, net_l, net_r, inbound, outbound in sides:
            d = os.path.join(tmp, side)
            os.makedirs(os.path.join(d, "state"))
            sock = os.path.join(d, "control.sock")
            path = os.path.join(d, "espd.toml")
            with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
                f.write(ESPD_CONF.format(
                    local=local, peer=peer, workers=self.workers, sock=sock,
                    state=os.path.join(d, "state"), net_l=net_l, net_r=net_r,
                    encapsulation=self.encapsulation, send_path=self.send_path,
                    receive_path=self.receive_path, crypto_backend=self.crypto_backend,
                    in_spi=inbound[0], in_key=inbound[1],
                    out_spi=outbound[0], out_key=outbound[1]))
            self.procs.append(start(f"espd gw{side.upper()}",
                                    in_ns(ns, [espd_python(), "-m", "espd", "run", "-c", path]),
                                    os.path.join(d, "espd.log")))
            self.sockets.append(sock)
        for sock in self.sockets:
            wait_espd(sock, self)


def wait_espd(sock: str, tunnel: Tunnel, timeout: float = 30) -> dict:
    from espd.ops import control

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        tunnel.check_alive()
        if os.path.exists(sock):
            try:
                answer = control.request(sock, "state")
                if answer.get("ok", True):
                    return answer
            except Exception as e:  # not listening yet
                last = e
        time.sleep(0.1)
    raise BenchError(f"espd did not answer 'state' on {sock} within {timeout:.0f} s "
                     f"(last error: {last})")


CHARON_PLUGINS = ("random nonce openssl aes sha1 sha2 hmac gcm pem pkcs1 x509 pubkey kdf "
                  "kernel-libipsec kernel-netlink socket-default vici")  # libipsec first
STRONGSWAN_CONF = """\
# per-run strongswan.conf: userspace ESP (kernel-libipsec), vici on a private socket
charon {{
    load = {plugins}
    install_routes = yes
    install_virtual_ip = no
    retransmit_tries = 3
    plugins {{
        vici {{
            socket = {uri}
        }}
    }}
    syslog {{
        daemon {{
            default = -1
        }}
    }}
    filelog {{
        main {{
            path = {log}
            default = 1
            ike = 1
            knl = 1
            flush_line = yes
        }}
    }}
}}
swanctl {{
    load = pem pkcs1 x509 revocation constraints pubkey openssl random
}}
"""

SWANCTL_CONF = """\
connections {{
    bench {{
        version = 2
        local_addrs = {local}
        remote_addrs = {remote}
        encap = yes
        proposals = aes128gcm16-prfsha256-ecp256
        rekey_time = 0
        dpd_delay = 0
        local {{
            auth = psk
            id = {me}
        }}
        remote {{
            auth = psk
            id = {peer}
        }}
        children {{
            net {{
                local_ts = {local_ts}
                remote_ts = {remote_ts}
                esp_proposals = aes128gcm16
                mode = tunnel
                rekey_time = 0
                rekey_bytes = 0
                rekey_packets = 0
                life_time = 86400
            }}
        }}
    }}
}}
secrets {{
    ike-bench {{
        id-1 = {me}
        id-2 = {peer}
        secret = 0x{psk}
    }}
}}
"""

ESPD_CONF = """\
# per-run espd config of bench_tunnel.py: keys made for this run only
[daemon]
interface = "espd0"
local = "{local}"
workers = {workers}
control_socket = "{sock}"
metrics = ""
state_dir = "{state}"
send_path = "{send_path}"
receive_path = "{receive_path}"
crypto_backend = "{crypto_backend}"

[access_list.BENCH]
rules = ["permit ip {net_l} {net_r}"]

[transform_set.GCM128]
transforms = ["esp-gcm 128"]

[[crypto_map]]
name = "bench"
seq = 10
peer = "{peer}"
match_address = "BENCH"
transform_set = "GCM128"
encapsulation = "{encapsulation}"
replay_window = 1024
lifetime = {{ seconds = 31536000, kilobytes = 1099511627776 }}
inbound = {{ spi = {in_spi}, key = "{in_key}" }}
outbound = {{ spi = {out_spi}, key = "{out_key}" }}
"""

CONFIGS = [
    Tunnel("plain", "plain routing", "plain"),
    Tunnel("wireguard-go", "wireguard-go", "wireguard-go"),
    Tunnel("strongswan", "strongSwan libipsec", "strongswan"),
    Tunnel("espd-esp-w1", "espd esp w1", "espd", "esp", 1),
    Tunnel("espd-esp-w2", "espd esp w2", "espd", "esp", 2),
    Tunnel("espd-udp-w1", "espd udp w1", "espd", "udp", 1),
    Tunnel("espd-udp-w2", "espd udp w2", "espd", "udp", 2),
    Tunnel("espd-pkt-w1", "espd esp packet w1", "espd", "esp", 1, send_path="packet"),
    Tunnel("espd-ring-w1", "espd esp ring w1", "espd", "esp", 1, receive_path="ring"),
    Tunnel("espd-pktring-w1", "espd esp packet+ring w1", "espd", "esp", 1, send_path="packet",
           receive_path="ring"),
    Tunnel("espd-udpimb-w1", "espd udp ipsec-mb w1", "espd", "udp", 1, crypto_backend="ipsec-mb"),
    Tunnel("espd-espimb-w1", "espd esp ipsec-mb w1", "espd", "esp", 1, crypto_backend="ipsec-mb"),
]


# -- measuring -------------------------------------------------------------------------------

def iperf(topo: Topology, extra: list[str], seconds: int) -> dict:
    argv = in_ns(topo.ha, ["iperf3", "-c", HOST_B, "-p", str(IPERF_PORT), "-t", str(seconds),
                           "-J", "--get-server-output", *extra])
    r = run(argv, check=False, timeout=seconds + 40)
    try:
        data = json.loads(r.stdout)
    except json.JSONDecodeError as e:
        raise BenchError(f"iperf3 gave no JSON ({r.returncode}): "
                         f"{(r.stderr or r.stdout)[-500:]}") from e
    if data.get("error"):
        raise BenchError(f"iperf3: {data['error']}")
    return data


def receiver_side(data: dict, udp: bool) -> dict:
    """Bits/s, packets and seconds as the receiving end (the iperf3 server) counted them."""
    end = data.get("end", {})
    server = (data.get("server_output_json") or {}).get("end", {})
    if udp:
        s = server.get("sum") or {}
        if s:
            packets = s.get("packets", 0) - s.get("lost_packets", 0)
            return {"bps": s.get("bits_per_second", 0.0), "packets": packets,
                    "seconds": s.get("seconds", 0.0), "sent_packets": s.get("packets", 0),
                    "lost_percent": s.get("lost_percent", 0.0)}
        s = end.get("sum_received") or end.get("sum") or {}
        packets = s.get("packets", 0) - s.get("lost_packets", 0)
        return {"bps": s.get("bits_per_second", 0.0), "packets": packets,
                "seconds": s.get("seconds", 0.0), "sent_packets": s.get("packets", 0),
                "lost_percent": s.get("lost_percent", 0.0)}
    s = end.get("sum_received") or {}
    return {"bps": s.get("bits_per_second", 0.0), "seconds": s.get("seconds", 0.0),
            "bytes": s.get("bytes", 0)}


def value_of(test: str, rx: dict) -> float:
    if test == "udp64":
        return rx["packets"] / rx["seconds"] / 1e3 if rx.get("seconds") else 0.0
    return rx["bps"] / 1e9


def system_split() -> list[int]:
    """user, nice, system, idle, iowait, irq, softirq, steal jiffies of all CPUs."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:9]]


def foreign_cpu(our_netns: set[int]) -> float:
    """CPU seconds so far of the processes that are not this benchmark's: outside its
    namespaces, not this process or its children, not kernel threads. Reaped children
    count with their parent (cutime), so other people's test runs show up."""
    me = os.getpid()
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino in our_netns:
                continue
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        ppid = int(fields[1])
        if ppid in (me, 2) or int(entry) == 2:
            continue
        total += sum(int(x) for x in fields[11:15]) / CLK_TCK
    return total


@dataclass
class Sampler:
    """CPU seconds of the tunnel daemons (per thread) and of the whole machine over a run."""

    procs: list[Proc]
    our_netns: set[int] = field(default_factory=set)

    def __enter__(self) -> Sampler:
        self.t0 = time.monotonic()
        self.sys0 = system_busy()
        self.split0 = system_split()
        self.foreign0 = foreign_cpu(self.our_netns)
        self.p0 = {p.label: proc_cpu(p.pid) for p in self.procs}
        self.th0 = {p.label: thread_cpu(p.pid) for p in self.procs}
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.monotonic() - self.t0
        busy, total = system_busy()
        self.machine_busy = (busy - self.sys0[0]) / max(1, total - self.sys0[1])
        split = [b - a for a, b in zip(self.split0, system_split(), strict=True)]
        whole = max(1, sum(split))
        self.split = {"user": (split[0] + split[1]) / whole, "system": split[2] / whole,
                      "softirq": (split[5] + split[6]) / whole,
                      "idle": (split[3] + split[4]) / whole, "steal": split[7] / whole}
        # CPUs' worth of other people's work during this run
        self.foreign = max(0.0, foreign_cpu(self.our_netns) - self.foreign0) / self.wall
        self.cpu = {p.label: proc_cpu(p.pid) - self.p0[p.label] for p in self.procs}
        self.threads = {}
        for p in self.procs:
            before = self.th0[p.label]
            rows = []
            for tid, (name, sec) in thread_cpu(p.pid).items():
                spent = sec - before.get(tid, (name, 0.0))[1]
                if spent > 0:
                    rows.append({"tid": tid, "main": tid == p.pid, "name": name,
                                 "cpu_s": round(spent, 3)})
            self.threads[p.label] = sorted(rows, key=lambda r: -r["cpu_s"])


class PerfStat:
    """perf stat -e cycles on the tunnel daemons, where the CPU has counters."""

    def __init__(self, procs: list[Proc], seconds: int, out: str) -> None:
        self.procs, self.seconds, self.out = procs, seconds, out
        self.popen: subprocess.Popen | None = None

    def __enter__(self) -> PerfStat:
        pids = ",".join(str(p.pid) for p in self.procs)
        self.popen = subprocess.Popen(
            ["perf", "stat", "-x,", "-e", "cycles", "-p", pids, "-o", self.out, "--",
             "sleep", str(self.seconds)], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        return self

    def __exit__(self, *exc) -> None:
        self.cycles = None
        if self.popen is None:
            return
        try:
            self.popen.wait(self.seconds + 15)
        except subprocess.TimeoutExpired:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)
            return
        try:
            with open(self.out) as f:
                for line in f:
                    parts = line.strip().split(",")
                    if len(parts) > 2 and "cycles" in parts[2] and parts[0].isdigit():
                        self.cycles = int(parts[0])
        except OSError:
            pass


SYSCALLS = ("read", "write", "recvmmsg", "sendmmsg", "epoll_wait")


class SyscallCount:
    """Per espd gateway: its read/write/recvmmsg/sendmmsg calls (perf stat on the syscall
    tracepoints, no hardware counters needed) and its data plane's I/O counters over one
    run, giving packets per system call: gateway A's TUN reads and sends, gateway B's
    receives and TUN writes."""

    def __init__(self, tunnel: Tunnel, out: str) -> None:
        self.tunnel, self.out = tunnel, out
        self.popens: list[subprocess.Popen] = []
        self.result: dict = {}

    def __enter__(self) -> SyscallCount:
        events = ",".join(f"syscalls:sys_enter_{c}" for c in SYSCALLS)
        self.io0 = espd_io(self.tunnel)
        for i, p in enumerate(self.tunnel.procs[:2]):
            self.popens.append(subprocess.Popen(
                ["perf", "stat", "-x,", "-e", events, "-p", str(p.pid), "-o",
                 f"{self.out}-{i}.txt"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True))
        return self

    def __exit__(self, *exc) -> None:
        for popen in self.popens:
            with contextlib.suppress(ProcessLookupError):
                os.kill(popen.pid, signal.SIGINT)
        for popen in self.popens:
            try:
                popen.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(popen.pid, signal.SIGKILL)
        io1 = espd_io(self.tunnel)
        calls = []
        for i in range(len(self.popens)):
            c = {}
            with contextlib.suppress(OSError), open(f"{self.out}-{i}.txt") as f:
                for line in f:
                    parts = line.strip().split(",")
                    if len(parts) > 2 and parts[0].isdigit():
                        c[parts[2].split("sys_enter_", 1)[-1]] = int(parts[0])
            calls.append(c)
        if len(calls) < 2 or len(io1) < 2:
            return

        def per(io_key: str, side: int, call: str) -> float | None:
            n = calls[side].get(call)
            d = io1[side].get(io_key, 0) - self.io0[side].get(io_key, 0)
            return round(d / n, 1) if n else None

        self.result = {"A tun read": per("tun_rx", 0, "read"),
                       "A send": per("net_tx", 0, "sendmmsg"),
                       "B recv": per("net_rx", 1, "recvmmsg") if calls[1].get("recvmmsg")
                       else per("net_rx", 1, "epoll_wait"),  # the ring: per wakeup
                       "B tun write": per("tun_tx", 1, "write"), "calls": calls}


def profile(proc: Proc, seconds: int, out_dir: str) -> str:
    """perf record (cpu-clock: no hardware counters needed; DWARF call graphs) of one
    daemon; returns its time by library and the symbols with the most inclusive time."""
    os.makedirs(out_dir, exist_ok=True)
    data = os.path.join(out_dir, f"perf-{proc.label.replace(' ', '-')}-{proc.pid}.data")
    r = run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "--call-graph",
             "dwarf,16384", "-p", str(proc.pid), "-o", data, "--", "sleep", str(seconds)],
            check=False, timeout=seconds + 60)
    if r.returncode != 0:
        return f"perf record failed: {(r.stderr or r.stdout).strip()[-300:]}"
    text = [f"      -- {proc.label}: self time by library --"]
    rep = run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso",
               "--percent-limit", "1", "-g", "none"], check=False, timeout=300)
    text.extend(x for x in rep.stdout.splitlines()[:60] if x.strip() and not x.startswith("#"))
    text.append(f"      -- {proc.label}: inclusive time (children), top symbols --")
    rep = run(["perf", "report", "-i", data, "--stdio", "--children", "--sort", "sym",
               "--percent-limit", "4", "-g", "none"], check=False, timeout=300)
    text.extend([x for x in rep.stdout.splitlines() if x.strip() and not x.startswith("#")][:30])
    return "\n".join(text)


def profile_run(tunnel: Tunnel, topo: Topology, extra: list[str], seconds: int,
                out_dir: str) -> str:
    """One more iperf3 run with every daemon of ``tunnel`` under perf record."""
    import threading

    texts: dict[str, str] = {}

    def record(proc: Proc) -> None:
        texts[proc.label] = profile(proc, max(2, seconds - 1), out_dir)

    threads = [threading.Thread(target=record, args=(p,)) for p in tunnel.procs]
    for th in threads:
        th.start()
    try:
        iperf(topo, extra, seconds)
    except BenchError as e:
        log(f"      failed: {e}")
    for th in threads:
        th.join()
    return "\n".join(texts[p.label] for p in tunnel.procs if p.label in texts)


# -- the benchmark ---------------------------------------------------------------------------



def run_config(tunnel: Tunnel, topo: Topology, tmp: str, args, step: list[int], total: int,
               perf_ok: bool) -> dict:
    result: dict = {"name": tunnel.name, "label": tunnel.label, "status": "ok", "tests": {}}
    topo.clear_routes()
    t0 = time.monotonic()
    try:
        tunnel.start(topo, tmp)
        if not topo.reachable(30):
            tunnel.check_alive()
            raise BenchError(f"host B ({HOST_B}) not reachable from host A through "
                             f"{tunnel.label} within 30 s")
    except BenchError as e:
        tunnel.stop()
        step[0] += len(args.test_list)
        result.update(status="not run", reason=str(e))
        log(f"      {tunnel.label}: NOT RUN: {e}")
        return result
    dev = topo.route_dev()
    result["route_dev"] = dev
    expect = {"plain": "wan0", "wireguard-go": topo.tag.replace("-", "")[:12] + "a",
              "strongswan": "ipsec0", "espd": "espd0"}[tunnel.kind]
    if dev != expect:
        tunnel.stop()
        step[0] += len(args.test_list)
        result.update(status="not run", reason=f"gateway A routes host B's traffic to {dev}, "
                                                f"not {expect}")
        log(f"      {tunnel.label}: NOT RUN: {result['reason']}")
        return result
    if getattr(tunnel, "native", None):
        result["espd_native"] = tunnel.native
        log(f"      data plane: {tunnel.native}")
    log(f"      {tunnel.label} up in {time.monotonic() - t0:.1f} s, traffic via {dev} "
        f"(daemons: {', '.join(f'{p.label} pid {p.pid}' for p in tunnel.procs) or 'none'})")
    try:
        for test, label, extra, unit in args.test_list:
            step[0] += 1
            runs = []
            for i in range(1, args.repeat + 1):
                log(f"[{step[0]}/{total}] {tunnel.label} {label} run {i}/{args.repeat} ...")
                tunnel.check_alive()
                perf = None
                count = (SyscallCount(tunnel, os.path.join(tmp, f"sys-{tunnel.name}-{test}"))
                         if tunnel.kind == "espd" and perf_tool() and
                         i == (args.repeat + 1) // 2 else None)
                with Sampler(tunnel.procs, topo.netns_inodes()) as sample, \
                        (count or contextlib.nullcontext()):
                    if perf_ok and tunnel.procs and test == PROFILE_TEST:
                        perf = PerfStat(tunnel.procs, args.seconds,
                                        os.path.join(tmp, f"perf-{tunnel.name}-{i}.txt"))
                        perf.__enter__()
                    try:
                        data = iperf(topo, extra, args.seconds)
                    except BenchError as e:
                        log(f"      failed: {e}")
                        data = None
                    finally:
                        if perf:
                            perf.__exit__(None, None, None)
                if data is None:
                    runs.append({"error": True})
                    continue
                udp = test.startswith("udp")
                rx = receiver_side(data, udp)
                value = value_of(test, rx)
                one = {"value": value, "receiver": rx, "wall_s": round(sample.wall, 2),
                       "machine_busy": round(sample.machine_busy, 3),
                       "machine_split": {k: round(v, 3) for k, v in sample.split.items()},
                       "foreign_cpus": round(sample.foreign, 2),
                       "daemon_cpu_s": {k: round(v, 3) for k, v in sample.cpu.items()},
                       "iperf_cpu": data.get("end", {}).get("cpu_utilization_percent")}
                if udp and rx.get("packets"):
                    cpu = sum(sample.cpu.values())
                    # CPU accounting covers the whole iperf3 run (incl. setup): per packet
                    # it is an upper bound
                    one["daemon_us_per_packet"] = cpu / rx["packets"] * 1e6 if cpu else None
                    if perf and perf.cycles:
                        one["cycles_per_packet"] = perf.cycles / rx["packets"]
                if tunnel.kind == "espd" and test == PROFILE_TEST:
                    one["threads"] = sample.threads
                if count and count.result:
                    one["per_call"] = count.result
                    log("      packets per system call (this run): " + ", ".join(
                        f"{k} {v}" for k, v in count.result.items() if k != "calls"))
                runs.append(one)
                extra_txt = ""
                if udp:
                    kpps = rx.get("packets", 0) / max(rx.get("seconds") or 1, 1e-9) / 1e3
                    extra_txt = (f", {kpps:.0f} kpps delivered, loss "
                                 f"{rx.get('lost_percent', 0):.1f}%")
                cpu_txt = ", ".join(f"{k} {v:.2f}s" for k, v in sample.cpu.items())
                sp = sample.split
                log(f"      {value:.3f} {unit}{extra_txt}; machine busy "
                    f"{sample.machine_busy * 100:.0f}% (user {sp['user'] * 100:.0f}%, sys "
                    f"{sp['system'] * 100:.0f}%, softirq {sp['softirq'] * 100:.0f}%), "
                    f"others {sample.foreign:.2f} CPUs"
                    f"{'; CPU ' + cpu_txt if cpu_txt else ''}")
                time.sleep(0.5)
            if args.profile and tunnel.kind == "espd" and test == PROFILE_TEST and perf_tool():
                log(f"      profiling the espd daemons (perf record -e cpu-clock) during one "
                    f"more {label} run ...")
                result["profile"] = profile_run(tunnel, topo, extra, args.seconds,
                                                args.profile_dir or tmp)
                log(result["profile"])
            values = [r["value"] for r in runs if "value" in r]
            result["tests"][test] = {
                "median": median(values), "unit": unit, "runs": runs,
                "daemon_us_per_packet": median([r.get("daemon_us_per_packet") for r in runs]),
                "cycles_per_packet": median([r.get("cycles_per_packet") for r in runs]),
            }
        if tunnel.kind == "espd":  # which send path carried the packets
            result["espd_io"] = espd_io(tunnel)
            log(f"      gateway A sent {result['espd_io'][0].get('net_tx', 0)} packets, "
                f"{result['espd_io'][0].get('net_tx_packet', 0)} of them on AF_PACKET; "
                f"gateway B received {result['espd_io'][1].get('net_rx', 0)}, "
                f"{result['espd_io'][1].get('net_rx_ring', 0)} of them through the ring")
    finally:
        tunnel.stop()
    return result


def per_call_table(results: list[dict]) -> str:
    rows = []
    for r in results:
        for test, t in r.get("tests", {}).items():
            for one in t.get("runs", []):
                pc = one.get("per_call")
                if pc:
                    rows.append(f"| {r['label']:<20} | {test:<8} | {pc['A tun read']!s:>10} | "
                                f"{pc['A send']!s:>8} | {pc['B recv']!s:>8} | "
                                f"{pc['B tun write']!s:>11} |")
    if not rows:
        return ""
    head = (f"| {'configuration':<20} | {'test':<8} | {'A TUN read':>10} | {'A send':>8} | "
            f"{'B recv':>8} | {'B TUN write':>11} |")
    return "\n".join([head, "|" + "|".join("-" * (len(c) + 0) for c in head.split("|")[1:-1])
                      + "|", *rows])


def espd_io(tunnel: Tunnel) -> list[dict]:
    """Each gateway's data-plane I/O counters (gateway A's first)."""
    from espd.ops import control

    out = []
    for sock in tunnel.sockets:
        try:
            out.append(control.request(sock, "state").get("state", {}).get("io", {}))
        except Exception as e:  # noqa: BLE001 - a report, not a test
            out.append({"error": str(e)})
    return out


def perf_tool() -> bool:
    return have("perf")




def report(results: list[dict], info: dict, args, perf_note: str) -> str:
    out = []
    out.append(f"Machine: {info['cpu']}, {info['cpus']} CPUs (hypervisor: {info['hypervisor']}), "
               f"kernel {info['kernel']}")
    out.append(f"{info['openssl']}; {info['wireguard-go']}; {info['strongswan']}; "
               f"{info['iperf3']}; espd {info['espd']}")
    out.append(f"iperf3 host A -> host B, {args.seconds} s per run, median of {args.repeat}; "
               "UDP figures are what the receiver got")
    out.append("")
    head = ["configuration", "TCP x1 Gbit/s", "TCP x4 Gbit/s", "UDP 1300 Gbit/s",
            "UDP 64 kpps", "µs CPU/pkt*", "others' CPUs**"]
    rows = []
    for r in results:
        if r["status"] != "ok":
            rows.append([r["label"], "not run", "", "", "", "", ""])
            continue
        t = collections.defaultdict(dict, r["tests"])  # absent tests (--tests) print "-"
        foreign = median([x.get("foreign_cpus") for v in t.values() for x in v["runs"]])
        rows.append([r["label"], fmt(t["tcp1"].get("median")), fmt(t["tcp4"].get("median")),
                     fmt(t["udp1300"].get("median")), fmt(t["udp64"].get("median"), 0),
                     fmt(t["udp1300"].get("daemon_us_per_packet"))
                     if r["name"] != "plain" else "-", fmt(foreign)])
    out.extend(table(head, rows))
    out.append("* CPU time (user+system, both gateways' tunnel daemons together) per packet "
               "delivered in the UDP 1300 test, from /proc/PID/stat")
    out.append(f"** median CPU use of processes outside the benchmark while it ran (0 = quiet "
               f"machine), of {info['cpus']} CPUs")
    cyc = [(r["label"], r["tests"]["udp1300"]["cycles_per_packet"]) for r in results
           if r["status"] == "ok" and r["tests"].get("udp1300", {}).get("cycles_per_packet")]
    if cyc:
        out.append("cycles per packet (perf stat, both daemons, UDP 1300): " +
                   ", ".join(f"{n} {c:.0f}" for n, c in cyc))
    else:
        out.append(f"cycles per packet: unsupported here: {perf_note}")
    # ratios
    by = {r["name"]: r for r in results if r["status"] == "ok"}
    refs = [(n, lab) for n, lab in (("wireguard-go", "wg-go"), ("strongswan", "strongSwan"),
                                    ("plain", "plain"))]
    espds = [r for r in results if r["status"] == "ok" and r["name"].startswith("espd")]
    if espds and any(n in by for n, _ in refs):
        out.append("")
        out.append("Ratios (espd / reference; >1 means espd is faster)")
        head2 = ["espd configuration", "vs", "TCP x1", "TCP x4", "UDP 1300", "UDP 64"]
        rows2 = []
        for e in espds:
            for n, lab in refs:
                if n not in by:
                    rows2.append([e["label"], lab, "n/a", "n/a", "n/a", "n/a"])
                    continue
                cells = []
                for test, *_ in TESTS:
                    a = e["tests"].get(test, {}).get("median")
                    b = by[n]["tests"].get(test, {}).get("median")
                    cells.append(f"{a / b:.2f}" if a and b else "-")
                rows2.append([e["label"], lab, *cells])
        out.extend(table(head2, rows2))
    missing = [r for r in results if r["status"] != "ok"]
    for r in missing:
        out.append(f"not run: {r['label']}: {r['reason']}")
    return "\n".join(out)




def espd_threads_summary(results: list[dict]) -> str:
    out = []
    for r in results:
        if r["status"] != "ok" or not r["name"].startswith("espd"):
            continue
        runs = [x for x in r["tests"].get("udp1300", {}).get("runs", []) if "threads" in x]
        if not runs:
            continue
        one = runs[len(runs) // 2]
        parts = []
        for label, rows in one["threads"].items():
            busy = [f"{'main' if t['main'] else 'tid ' + str(t['tid'])} {t['cpu_s']:.2f}s"
                    for t in rows[:4]]
            parts.append(f"{label}: {', '.join(busy) or 'idle'}")
        iperf_cpu = one.get("iperf_cpu") or {}
        out.append(f"  {r['label']} (UDP 1300, {one['wall_s']} s, machine busy "
                   f"{one['machine_busy'] * 100:.0f}%): " + "; ".join(parts) +
                   f"; iperf3 sender {iperf_cpu.get('host_total', 0):.0f}% / receiver "
                   f"{iperf_cpu.get('remote_total', 0):.0f}% of one CPU")
    return "\n".join(out)


def select(only: list[str] | None) -> list[Tunnel]:
    if not only:
        return list(CONFIGS)
    wanted = [w.strip() for o in only for w in o.split(",") if w.strip()]
    chosen = [c for c in CONFIGS if any(c.name == w or c.name.startswith(w + "-") or
                                        c.name.startswith(w) for w in wanted)]
    if not chosen:
        raise SystemExit(f"--only {','.join(wanted)} matches nothing; names: "
                         f"{', '.join(c.name for c in CONFIGS)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only these configurations (comma-separated, prefixes "
                             f"allowed): {', '.join(c.name for c in CONFIGS)}")
    parser.add_argument("--tests", metavar="NAMES",
                        help="run only these tests (comma-separated): "
                             f"{', '.join(t[0] for t in TESTS)}")
    parser.add_argument("--repeat", type=int, default=3, help="runs per test (median)")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per iperf3 run")
    parser.add_argument("--json", metavar="FILE", help="save all results as JSON")
    parser.add_argument("--profile", action="store_true",
                        help="perf record (cpu-clock) espd gateway A during one extra UDP "
                             "1300 run per espd configuration and print its top symbols")
    parser.add_argument("--profile-dir", metavar="DIR",
                        help="keep the perf.data files of --profile in DIR")
    parser.add_argument("--no-install", action="store_true",
                        help="do not apt-get install missing peers")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        log("bench_tunnel needs root (it creates network namespaces)")
        return 2
    if not os.path.exists("/dev/net/tun"):
        log("bench_tunnel needs /dev/net/tun")
        return 2
    configs = select(args.only)
    wanted_tests = set((args.tests or ",".join(t[0] for t in TESTS)).split(","))
    args.test_list = [t for t in TESTS if t[0] in wanted_tests]
    if not args.test_list or wanted_tests - {t[0] for t in TESTS}:
        raise SystemExit(f"--tests {args.tests}: names are {', '.join(t[0] for t in TESTS)}")
    if not args.no_install:
        install_missing()
    perf_ok, perf_note = perf_cycles_supported()
    info = machine()
    log("== espd tunnel benchmark ==")
    for k, v in info.items():
        log(f"  {k:16} {v}")
    log(f"  {'perf cycles':16} {'supported' if perf_ok else 'unsupported: ' + perf_note}")

    def on_term(signum, frame):
        raise Interrupted()

    old_term = signal.signal(signal.SIGTERM, on_term)
    tag = f"bt-{os.getpid()}"
    tmp = tempfile.mkdtemp(prefix=f"{tag}-")
    topo = Topology(tag)
    iperf_server: Proc | None = None
    results: list[dict] = []
    total = len(configs) * len(args.test_list)
    step = [0]
    interrupted = False
    try:
        topo.create()
        iperf_server = start("iperf3 server", in_ns(topo.hb, ["iperf3", "-s", "-p",
                                                             str(IPERF_PORT)]),
                             os.path.join(tmp, "iperf3-server.log"))
        time.sleep(0.5)
        for tunnel in configs:
            log(f"== {tunnel.label} ==")
            results.append(run_config(tunnel, topo, tmp, args, step, total, perf_ok))
    except (KeyboardInterrupt, Interrupted):
        interrupted = True
        log("interrupted; cleaning up")
    finally:
        for tunnel in configs:
            tunnel.stop()
        if iperf_server:
            iperf_server.stop()
        topo.destroy()
        tag_nospace = tag.replace("-", "")[:12]
        for side in "ab":  # wireguard-go's UAPI sockets, if it left them behind
            sock = f"/var/run/wireguard/{tag_nospace}{side}.sock"
            if os.path.exists(sock):
                os.unlink(sock)
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGTERM, old_term)
    if not results:
        return 130 if interrupted else 1
    text = report(results, info, args, perf_note)
    log("")
    log(text)
    per_call = per_call_table(results)
    if per_call:
        log("")
        log("espd packets per system call (middle run of each test; gateway A reads the TUN"
            " and sends, gateway B receives and writes the TUN):")
        log(per_call)
    threads = espd_threads_summary(results)
    if threads:
        log("")
        log("espd CPU per thread during UDP 1300 (middle run):")
        log(threads)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "seconds": args.seconds, "repeat": args.repeat,
                       "perf_cycles": perf_ok or perf_note, "results": results,
                       "table": text}, f, indent=2)
        log(f"results saved to {args.json}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
