#!/usr/bin/env python3
"""espd soak: two gateways in network namespaces under traffic, reloads and restarts.

    python tests/soak/soak.py --minutes 30          (root; see docs/soak.md)
    python tests/soak/soak.py --minutes 1 --restart-at 30

What runs, for --minutes:
  - UDP flows with sequence-numbered payloads both ways, IPv4 and IPv6, plus a ping each
    second (alternating IPv4/IPv6, alternating directions);
  - a SIGHUP reload of both gateways every --reload-every seconds, alternating between two
    valid configs that keep every SA (an extra ACL line); every --replace-every seconds one
    of them (alternating gateways) also changes entry 20's replay window, which replaces
    that entry's two SAs;
  - a restart of one gateway (--restart-gateway) every --restart-every seconds, first at
    --restart-at: SIGTERM then start, and every --kill9-every-th time kill -9 instead;
  - a capture of gwB's underlay link for the whole run, analysed as it arrives (no frame
    is kept: per SPI a bitmap of the sequence numbers seen);
  - RSS of both daemons every --sample-every seconds; progress every --progress-every s.

At the end it checks, and exits 1 (listing what failed) unless all hold:
  - zero cleartext packets of the protected subnets on the underlay, nothing unexplained;
  - zero repeated (SPI, sequence number) pairs (the keys never change in a run);
  - no inner datagram delivered twice;
  - RSS drift after warm-up below --max-rss-drift for every daemon lifetime long enough;
  - counters consistent: per daemon, all-time I/O totals (TUN reads = sent + send errors +
    outbound drops; ESP received = TUN writes + TUN errors + inbound drops), per-SA drops
    never above the global ones, and in a final quiet window per SPI: sender's SA packets
    = receiver's SA packets + its drops = ESP seen on the wire, and datagrams delivered;
  - every reload sent was counted as a success, none as a failure;
  - traffic loss outside the restart windows below --max-loss.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "daemon"))
sys.path.insert(0, str(REPO / "tests"))  # tests/support

from support import netns  # noqa: E402
from support.netns import (  # noqa: E402
    GW_A_WAN4,
    GW_A_WAN6,
    GW_B_WAN4,
    GW_B_WAN6,
    HOST_A4,
    HOST_A6,
    HOST_B4,
    HOST_B6,
    WAN_IF,
)

DEMO = REPO / "config" / "demo"
REMOTE = {"a": ("10.2.0.0/16", "fd00:2::/64"), "b": ("10.1.0.0/16", "fd00:1::/64")}
OPERATOR_BLACKHOLE_METRIC = 8192  # the operator's own "never in clear" routes
IN_FLIGHT = 2 * 32 * 4  # batches of 32, a few workers: what a live counter may lag by


CHECKS = ("underlay", "sequence_numbers", "delivery", "rss", "counters", "reloads", "loss",
          "daemons")  # what the report's "checks" group failures by


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- bitmaps -----------------------------------------------------------------------------------

class SparseBitmap:
    """Set of non-negative integers in 64 Ki-bit blocks: ~8 KiB per block that is touched."""

    BLOCK = 1 << 16

    def __init__(self) -> None:
        self.blocks: dict[int, bytearray] = {}
        self.count = 0
        self.highest = -1

    def add(self, n: int) -> bool:
        """Set n; False if it was set already."""
        block = self.blocks.get(n >> 16)
        if block is None:
            block = self.blocks[n >> 16] = bytearray(self.BLOCK // 8)
        i, bit = (n & 0xFFFF) >> 3, 1 << (n & 7)
        if block[i] & bit:
            return False
        block[i] |= bit
        self.count += 1
        self.highest = max(self.highest, n)
        return True

    def __contains__(self, n: int) -> bool:
        block = self.blocks.get(n >> 16)
        return bool(block and block[(n & 0xFFFF) >> 3] & (1 << (n & 7)))

    def count_range(self, low: int, high: int) -> int:
        """How many of low..high-1 are set."""
        return sum(1 for n in range(low, high) if n in self)


# -- traffic -----------------------------------------------------------------------------------

class Flow:
    """Sequence-numbered UDP datagrams at a steady rate; delivery tracked in a bitmap."""

    def __init__(self, name: str, src_ns: str, dst_ns: str, dst: str, port: int,
                 interval: float, size: int = 200) -> None:
        family = socket.AF_INET6 if ":" in dst else socket.AF_INET
        self.name, self.dst, self.port, self.interval, self.size = name, dst, port, interval, size
        self.rx = netns.socket_in(dst_ns, family, socket.SOCK_DGRAM)
        self.rx.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
        self.rx.bind((dst, port))
        self.rx.settimeout(0.2)
        self.tx = netns.socket_in(src_ns, family, socket.SOCK_DGRAM)
        self.sent = 0
        self.send_errors = 0
        self.received = SparseBitmap()
        self.duplicates = 0
        self.paused = threading.Event()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._send, daemon=True, name=f"tx-{name}"),
                        threading.Thread(target=self._recv, daemon=True, name=f"rx-{name}")]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _send(self) -> None:
        pad = b"s" * max(0, self.size - 8)
        next_at = time.monotonic()
        while not self.stopping.is_set():
            if self.paused.is_set():
                time.sleep(0.01)
                next_at = time.monotonic()
                continue
            try:
                self.tx.sendto(self.sent.to_bytes(8, "big") + pad, (self.dst, self.port))
            except OSError:
                self.send_errors += 1  # e.g. unreachable: counted as lost
            self.sent += 1
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1:
                next_at = time.monotonic()  # starved: do not burst to catch up

    def _recv(self) -> None:
        while True:
            try:
                data = self.rx.recv(65535)
            except TimeoutError:
                if self.stopping.is_set():
                    return
                continue
            except OSError:
                return
            if not self.received.add(int.from_bytes(data[:8], "big")):
                self.duplicates += 1

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(5)
        self.tx.close()
        self.rx.close()


class Pinger:
    """One ping per second, alternating between the four (source, destination) pairs."""

    def __init__(self, topo: netns.Topology) -> None:
        self.pairs = [(topo.host_a, HOST_B4), (topo.host_b, HOST_A6),
                      (topo.host_b, HOST_A4), (topo.host_a, HOST_B6)]
        self.sent = self.received = 0
        self.paused = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="pinger")

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self.stopping.wait(1.0):
            if self.paused.is_set():
                continue
            ns, dst = self.pairs[i % len(self.pairs)]
            i += 1
            try:
                result = netns.ping(ns, dst, count=1, timeout=1.0)
            except OSError:
                continue
            self.sent += result.sent
            self.received += result.received

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)


# -- the underlay capture, analysed as it arrives -----------------------------------------------

def _protected(family: int, address: bytes) -> bool:
    if family == 4:
        return address[0] == 10 and address[1] in (1, 2)  # 10.1.0.0/16, 10.2.0.0/16
    return address[:8] in (bytes.fromhex("fd00000100000000"), bytes.fromhex("fd00000200000000"))


_ND_TYPES = set(range(130, 144))  # MLD, router and neighbour discovery
PACKET_STATISTICS = 6  # SOL_PACKET option: struct tpacket_stats {tp_packets, tp_drops}
SOL_PACKET = 263


class UnderlayStats:
    """Underlay frames sorted as they come: counters and per-SPI sequence bitmaps only."""

    def __init__(self) -> None:
        self.frames = 0
        self.esp = 0
        self.esp_per_spi: dict[int, int] = {}
        self.seqs: dict[int, SparseBitmap] = {}
        self.repeats: list[tuple[int, int]] = []  # (spi, seq) seen twice (first 100)
        self.repeat_count = 0
        self.cleartext = 0
        self.cleartext_samples: list[str] = []
        self.icmp_about_esp = 0
        self.ignored = 0  # ARP, neighbour discovery, MLD
        self.unexplained = 0
        self.unexplained_samples: list[str] = []
        self.kernel_drops = 0

    def frame(self, frame: bytes) -> None:
        self.frames += 1
        try:
            self._frame(frame)
        except (IndexError, struct.error):
            self._unexplained(frame, "truncated")

    def _unexplained(self, frame: bytes, why: str) -> None:
        self.unexplained += 1
        if len(self.unexplained_samples) < 20:
            self.unexplained_samples.append(f"{why}: {frame[:64].hex()}")

    def _frame(self, frame: bytes) -> None:
        ethertype = int.from_bytes(frame[12:14], "big")
        ip = frame[14:]
        if ethertype == 0x0806:  # ARP
            self.ignored += 1
            return
        if ethertype == 0x0800:
            family, hlen, proto = 4, (ip[0] & 0x0F) * 4, ip[9]
            src, dst = ip[12:16], ip[16:20]
        elif ethertype == 0x86DD:
            family, hlen, proto = 6, 40, ip[6]
            src, dst = ip[8:24], ip[24:40]
        else:
            self._unexplained(frame, f"ethertype {ethertype:#x}")
            return
        if _protected(family, src) or _protected(family, dst):
            self.cleartext += 1
            if len(self.cleartext_samples) < 20:
                self.cleartext_samples.append(
                    f"IPv{family} {socket.inet_ntop(_af(family), src)} -> "
                    f"{socket.inet_ntop(_af(family), dst)} proto {proto}")
            return
        payload = ip[hlen:]
        if family == 6 and proto == 0:  # hop-by-hop: MLD
            self.ignored += 1
            return
        if proto == 50:
            self._esp(payload)
            return
        if proto == 17 and 4500 in (int.from_bytes(payload[0:2], "big"),
                                    int.from_bytes(payload[2:4], "big")):
            body = payload[8:]
            if len(body) < 8 or body[:4] == b"\0\0\0\0":
                self.ignored += 1  # NAT-T keepalive or IKE
            else:
                self._esp(body)
            return
        if (family == 4 and proto == 1) or (family == 6 and proto == 58):
            kind = payload[0]
            if family == 6 and kind in _ND_TYPES:
                self.ignored += 1
                return
            if self._icmp_error_about_esp(family, payload):
                self.icmp_about_esp += 1
                return
        self._unexplained(frame, f"IPv{family} proto {proto}")

    def _icmp_error_about_esp(self, family: int, icmp: bytes) -> bool:
        kind, quoted = icmp[0], icmp[8:]
        if family == 4:
            if kind not in (3, 11, 12) or len(quoted) < 20:
                return False
            inner_proto, inner = quoted[9], quoted
            src, dst = inner[12:16], inner[16:20]
        else:
            if kind not in (1, 2, 3, 4) or len(quoted) < 40:
                return False
            inner_proto, src, dst = quoted[6], quoted[8:24], quoted[24:40]
        if _protected(family, src) or _protected(family, dst):
            self.cleartext += 1  # an ICMP error carrying a cleartext protected header
            return True
        return inner_proto in (50, 17)

    def _esp(self, esp: bytes) -> None:
        spi, seq = struct.unpack("!II", esp[:8])
        self.esp += 1
        self.esp_per_spi[spi] = self.esp_per_spi.get(spi, 0) + 1
        bitmap = self.seqs.get(spi)
        if bitmap is None:
            bitmap = self.seqs[spi] = SparseBitmap()
        if not bitmap.add(seq):
            self.repeat_count += 1
            if len(self.repeats) < 100:
                self.repeats.append((spi, seq))


class UnderlayMonitor(UnderlayStats):
    """Every frame on one interface of a namespace (gwB's wan0), analysed on arrival."""

    def __init__(self, ns: str, ifname: str) -> None:
        super().__init__()
        self.sock = netns.capture_socket(ns, ifname, 32 << 20)
        self.sock.settimeout(0.2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="capture")

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        time.sleep(0.3)
        self.stopping.set()
        self.thread.join(5)
        self.poll_drops()
        self.sock.close()

    def poll_drops(self) -> None:
        try:
            raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            self.kernel_drops += struct.unpack("II", raw)[1]  # reading resets them
        except OSError:
            pass

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                data = self.sock.recv(65535 + netns.VNET_HDR.size)
            except TimeoutError:
                continue
            except OSError:
                return
            for frame in netns.wire_frames(data):
                self.frame(frame)


def _af(family: int) -> int:
    return socket.AF_INET if family == 4 else socket.AF_INET6


# -- configs -----------------------------------------------------------------------------------

def gateway_config(side: str, settings: dict, extra_acl: bool, wide_window: bool) -> str:
    text = (DEMO / f"gateway-{side}.toml").read_text()
    if extra_acl:  # a rule that changes the SPD, not the SAs
        text, n = re.subn(r'rules = \["(permit ip [^"]+)"\]',
                          r'rules = ["\1", "deny ip host 10.9.9.9 host 10.9.9.10"]', text,
                          count=1)
        assert n == 1, "config/demo changed: no IPv4 ACL line to extend"
    if wide_window:  # entry 20 (the second entry): its in and out SAs are replaced
        first = text.index("replay_window = 1024")
        second = text.index("replay_window = 1024", first + 1)
        text = text[:second] + "replay_window = 2048" + text[second + len("replay_window = 1024"):]
    return netns.with_daemon_settings(text, **settings)


class TomlLiteral:
    """A value with_daemon_settings writes as is (it would write a bool as "True")."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    tmp.replace(path)


# -- the gateways -----------------------------------------------------------------------------

@dataclass
class ProcessHistory:
    """One process of one gateway: its RSS samples and how it ended."""

    pid: int
    started: float
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds into run, KiB)
    ended: str = ""


@dataclass
class Gateway:
    side: str
    daemon: netns.EspdProcess
    path: Path
    settings: dict
    extra_acl: bool = False
    wide_window: bool = False
    reloads_sent: int = 0  # to the current process
    reloads_ok: int = 0  # finished processes, summed
    reloads_failed: int = 0
    reloads_sent_total: int = 0
    lifetimes: list[ProcessHistory] = field(default_factory=list)
    last_state: dict | None = None

    def write(self) -> None:
        write_atomically(self.path, gateway_config(self.side, self.settings, self.extra_acl,
                                                   self.wide_window))


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def harden(topo: netns.Topology) -> None:
    """Default routes across the underlay, and the operator's static blackholes behind
    espd's routes (docs/operations.md): without a default route nothing could leak in this
    topology, and "zero cleartext" would prove nothing."""
    for ns, side, v4, v6 in ((topo.gw_a, "a", GW_B_WAN4, GW_B_WAN6),
                             (topo.gw_b, "b", GW_A_WAN4, GW_A_WAN6)):
        netns.add_route(ns, "default", v4)
        netns.add_route(ns, "default", v6)
        for prefix in REMOTE[side]:
            netns.ip(ns, "-6" if ":" in prefix else "-4", "route", "replace", "blackhole",
                     prefix, "metric", str(OPERATOR_BLACKHOLE_METRIC))


# -- the run -----------------------------------------------------------------------------------

class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.duration = args.minutes * 60
        self.topo = netns.Topology(tag=f"espd-{os.getpid()}-soak")
        self.workdir = Path(args.workdir or tempfile.mkdtemp(prefix="espd-soak-"))
        self.gateways: dict[str, Gateway] = {}
        self.flows: list[Flow] = []
        self.pinger: Pinger | None = None
        self.monitor: UnderlayMonitor | None = None
        self.t0 = 0.0
        self.restarts: list[dict] = []
        self.windows: list[tuple[float, float]] = []  # restart windows (run seconds)
        self.excluded: dict[str, list[tuple[int, int]]] = {}  # flow -> seq ranges
        self.replacements = 0
        self.checks: dict[str, list[str]] = {name: [] for name in CHECKS}
        self.notes: list[str] = []
        self.progress: list[dict] = []
        self.invariant_violations: list[str] = []

    def fail(self, check: str, message: str) -> None:
        self.checks[check].append(message)

    @property
    def failures(self) -> list[str]:
        return [f"{check}: {m}" for check, messages in self.checks.items() for m in messages]

    def now(self) -> float:
        return time.monotonic() - self.t0

    # --- setup and teardown ---

    def setup(self) -> None:
        why = netns.unavailable()
        if why:
            raise SystemExit(f"soak: {why}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.topo.create()
        harden(self.topo)
        port = 20000 + (os.getpid() * 11) % 20000
        command = None
        if os.environ.get("ESPD_TEST_DAEMON"):
            import shlex

            command = shlex.split(os.environ["ESPD_TEST_DAEMON"])
        for i, (side, ns) in enumerate((("a", self.topo.gw_a), ("b", self.topo.gw_b))):
            name = f"gw{side.upper()}"
            settings = dict(interface="espd0", control_socket=str(self.workdir / f"{name}.sock"),
                            metrics=f"127.0.0.1:{port + i}",
                            state_dir=str(self.workdir / f"{name}-state"))
            if self.args.offload != "default":
                settings["offload"] = TomlLiteral(str(self.args.offload == "on").lower())
            path = self.workdir / f"{name}.toml"
            daemon = netns.EspdProcess(ns, str(path), settings["control_socket"],
                                  str(self.workdir / f"{name}.log"), name, command)
            gateway = Gateway(side, daemon, path, settings)
            gateway.write()
            self.gateways[side] = gateway
        self.t0 = time.monotonic()
        for gateway in self.gateways.values():
            self._start(gateway)

    def _start(self, gateway: Gateway) -> None:
        gateway.daemon.start()
        gateway.last_state = gateway.daemon.wait_ready(timeout=30)
        gateway.reloads_sent = 0
        gateway.lifetimes.append(ProcessHistory(gateway.daemon.pid, self.now()))

    def teardown(self) -> None:
        for flow in self.flows:
            if not flow.stopping.is_set():
                flow.stop()
        if self.pinger:
            self.pinger.stop()
        if self.monitor and not self.monitor.stopping.is_set():
            self.monitor.stop()
        for gateway in self.gateways.values():
            status = gateway.daemon.stop()
            if status not in (0, None):
                self.fail("daemons", f"gw{gateway.side.upper()} exited {status} on the final "
                                     f"SIGTERM; log tail:\n{gateway.daemon.log(2000)}")
        self.topo.destroy()
        if not self.args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # --- what happens during the run ---

    def start_traffic(self) -> None:
        t, a = self.topo, self.args
        interval = 1.0 / a.rate
        self.flows = [
            Flow("A->B v4", t.host_a, t.host_b, HOST_B4, 7601, interval),
            Flow("B->A v4", t.host_b, t.host_a, HOST_A4, 7602, interval),
            Flow("A->B v6", t.host_a, t.host_b, HOST_B6, 7603, interval),
            Flow("B->A v6", t.host_b, t.host_a, HOST_A6, 7604, interval),
        ]
        self.excluded = {f.name: [] for f in self.flows}
        self.monitor = UnderlayMonitor(t.gw_b, WAN_IF)
        self.monitor.start()
        for flow in self.flows:
            flow.start()
        self.pinger = Pinger(t)
        self.pinger.start()

    def reload(self, gateway: Gateway, tick: int) -> None:
        gateway.extra_acl = not gateway.extra_acl
        if self.args.replace_every and tick % self.args.replace_every == 0:
            # alternate gateways: every other replacement lands on each
            if (tick // self.args.replace_every) % 2 == (0 if gateway.side == "a" else 1):
                gateway.wide_window = not gateway.wide_window
                self.replacements += 1
        gateway.write()
        gateway.daemon.reload()
        gateway.reloads_sent += 1
        gateway.reloads_sent_total += 1

    def restart(self, gateway: Gateway, number: int) -> None:
        kill9 = self.args.kill9_every and number % self.args.kill9_every == 0
        how = "kill -9" if kill9 else "SIGTERM"
        daemon = gateway.daemon
        self._close_reload_books(gateway)
        began = self.now()
        marks = {f.name: f.sent for f in self.flows}
        if kill9:
            daemon.signal(signal.SIGKILL)
            daemon.proc.wait(10)
            status = "killed"
        else:
            status = daemon.stop()
            if status != 0:
                self.fail("daemons", f"gw{gateway.side.upper()} exited {status} on SIGTERM "
                                     f"(restart {number}); log:\n{daemon.log(3000)}")
        gateway.lifetimes[-1].ended = how
        down = self.now()
        self._start(gateway)
        ready = self.now()
        time.sleep(1.0)  # traffic settles (neighbour entries, the first packets)
        ended = self.now()
        for flow in self.flows:
            self.excluded[flow.name].append((max(0, marks[flow.name] - 50), flow.sent))
        self.windows.append((began, ended))
        self.restarts.append({"gateway": f"gw{gateway.side.upper()}", "how": how,
                              "at_s": round(began, 1), "exit": status,
                              "down_s": round(ready - down, 2)})
        log(f"restart {number}: gw{gateway.side.upper()} {how}, back up after "
            f"{ready - began:.2f} s (pid {daemon.pid})")

    def _wait_reloads(self, gateway: Gateway) -> dict | None:
        """The state once every reload sent to the current process has finished. Reloads
        run on the daemon's event loop, one after another, and `state` no longer waits for
        the one under way: on a loaded machine the last few may need a while."""
        deadline = time.monotonic() + 20
        state = None
        while time.monotonic() < deadline:
            try:
                state = gateway.daemon.state()
            except Exception:
                break
            done = state["reloads"]["success"] + state["reloads"]["failure"]
            if done >= gateway.reloads_sent:
                break
            time.sleep(0.05)
        return state

    def _close_reload_books(self, gateway: Gateway) -> None:
        """Before a process goes (or at the end): add up the reloads it counted."""
        sent = gateway.reloads_sent
        state = self._wait_reloads(gateway)
        if state is not None:
            gateway.reloads_ok += state["reloads"]["success"]
            gateway.reloads_failed += state["reloads"]["failure"]
            gateway.last_state = state
            lost = sent - state["reloads"]["success"] - state["reloads"]["failure"]
            if lost > 0:
                self.fail("reloads", f"gw{gateway.side.upper()}: {lost} of {sent} SIGHUPs "
                                     f"never finished a reload")
        gateway.reloads_sent = 0

    def sample(self) -> None:
        for gateway in self.gateways.values():
            life = gateway.lifetimes[-1]
            kib = rss_kib(life.pid)
            if kib is not None:
                life.rss.append((round(self.now(), 1), kib))
            try:
                state = gateway.daemon.state()
            except Exception as e:
                self.fail("daemons", f"gw{gateway.side.upper()} did not answer 'state' at "
                                     f"{self.now():.0f} s: {e}")
                continue
            gateway.last_state = state
            for problem in io_invariants(state, tolerance=IN_FLIGHT):
                self.invariant_violations.append(
                    f"{self.now():.0f} s gw{gateway.side.upper()}: {problem}")
        if self.monitor:
            self.monitor.poll_drops()

    def report_progress(self) -> None:
        m = self.monitor
        sent = sum(f.sent for f in self.flows)
        got = sum(f.received.count for f in self.flows)
        parts = []
        for side, gateway in self.gateways.items():
            life = gateway.lifetimes[-1]
            rss = life.rss[-1][1] // 1024 if life.rss else 0
            st = gateway.last_state or {}
            reloads = st.get("reloads", {})
            parts.append(f"gw{side.upper()} pid {life.pid} rss {rss} MiB reloads "
                         f"{gateway.reloads_ok + reloads.get('success', 0)}/"
                         f"{gateway.reloads_failed + reloads.get('failure', 0)}f "
                         f"send_err {st.get('io', {}).get('send_errors', 0)}")
        line = (f"{self.now():6.0f} s | datagrams {got}/{sent} "
                f"({100 * (1 - got / max(sent, 1)):.2f}% lost, incl. restarts) | "
                f"ping {self.pinger.received}/{self.pinger.sent} | ESP {m.esp} "
                f"cleartext {m.cleartext} repeats {m.repeat_count} other "
                f"{m.unexplained} | restarts {len(self.restarts)} replacements "
                f"{self.replacements} | " + " | ".join(parts))
        log(line)
        self.progress.append({"t": round(self.now()), "sent": sent, "received": got,
                              "esp": m.esp, "cleartext": m.cleartext})

    def run(self) -> None:
        a = self.args
        self.start_traffic()
        time.sleep(1.0)
        tick = 0
        next_tick = time.monotonic() + a.reload_every
        next_sample = next_progress = 0.0
        next_restart = a.restart_at if a.restart_at is not None else a.restart_every
        restart_number = 0
        targets = ["a", "b"] if a.restart_gateway == "both" else [a.restart_gateway]
        while self.now() < self.duration:
            if next_restart and self.now() >= next_restart and \
                    self.now() < self.duration - 10:
                restart_number += 1
                side = targets[(restart_number - 1) % len(targets)]
                self.restart(self.gateways[side], restart_number)
                next_restart = self.now() + a.restart_every if a.restart_every else 0
            if self.now() >= next_sample:
                self.sample()
                next_sample = self.now() + a.sample_every
            if self.now() >= next_progress:
                self.report_progress()
                next_progress = self.now() + a.progress_every
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:  # behind (a restart, a stall): no catching up with SIGHUPs back to back,
                next_tick = time.monotonic()  # which the kernel may merge into one signal
            next_tick += a.reload_every
            if a.reload_every:
                tick += 1
                for gateway in self.gateways.values():
                    self.reload(gateway, tick)
                for gateway in self.gateways.values():
                    alive = gateway.daemon.proc.poll() is None
                    if not alive:
                        self.fail("daemons", f"gw{gateway.side.upper()} died "
                                             f"({gateway.daemon.proc.returncode}) at "
                                             f"{self.now():.0f} s; log:\n"
                                             f"{gateway.daemon.log(3000)}")
                        raise RuntimeError("a gateway died")
        self.sample()
        self.report_progress()

    # --- the end: a quiet window, then the checks ---

    def quiet_window(self) -> dict:
        """Stop the flows, let everything drain, then send a known burst with nothing else
        going on and compare the counters on both sides of the wire."""
        for gateway in self.gateways.values():
            self._wait_reloads(gateway)
        self.pinger.stop()
        for flow in self.flows:
            flow.paused.set()
        time.sleep(1.5)
        before = {s: g.daemon.state() for s, g in self.gateways.items()}
        esp_before = dict(self.monitor.esp_per_spi)
        marks = {f.name: (f.sent, f.received.count) for f in self.flows}
        for flow in self.flows:
            flow.paused.clear()
        time.sleep(self.args.quiet_seconds)
        for flow in self.flows:
            flow.paused.set()
        time.sleep(1.5)
        after = {s: g.daemon.state() for s, g in self.gateways.items()}
        esp_after = dict(self.monitor.esp_per_spi)
        checks = window_checks(before, after, esp_before, esp_after)
        delivered = {f.name: (f.sent - marks[f.name][0], f.received.count - marks[f.name][1])
                     for f in self.flows}
        checks["delivered"] = delivered
        for name, (sent, got) in delivered.items():
            if got != sent:
                checks["problems"].append(f"quiet window {name}: {got} of {sent} delivered")
        for side, state in after.items():
            for problem in io_invariants(state, tolerance=0):
                checks["problems"].append(f"quiet, gw{side.upper()}: {problem}")
            for problem in drop_invariants(state):
                checks["problems"].append(f"gw{side.upper()}: {problem}")
        return checks

    def finish(self) -> dict:
        quiet = self.quiet_window()
        for gateway in self.gateways.values():
            self._close_reload_books(gateway)
        for flow in self.flows:
            flow.stop()
        self.monitor.stop()
        m = self.monitor
        a = self.args
        report: dict = {"minutes": a.minutes, "duration_s": round(self.now(), 1)}
        # traffic
        flows = {}
        total_sent = total_got = total_ex_sent = total_ex_got = dups = 0
        for flow in self.flows:
            sent, got = flow.sent, flow.received.count
            ex_sent = ex_got = 0
            for low, high in self.excluded[flow.name]:
                ex_sent += high - low
                ex_got += flow.received.count_range(low, high)
            flows[flow.name] = {
                "sent": sent, "received": got, "duplicates": flow.duplicates,
                "loss_pct": round(100 * (1 - got / max(sent, 1)), 3),
                "loss_outside_restarts_pct": round(
                    100 * (1 - (got - ex_got) / max(sent - ex_sent, 1)), 3),
            }
            total_sent += sent
            total_got += got
            total_ex_sent += ex_sent
            total_ex_got += ex_got
            dups += flow.duplicates
        loss = 100 * (1 - total_got / max(total_sent, 1))
        loss_outside = 100 * (1 - (total_got - total_ex_got) / max(total_sent - total_ex_sent, 1))
        report["traffic"] = {"flows": flows, "loss_pct": round(loss, 3),
                             "loss_outside_restarts_pct": round(loss_outside, 3),
                             "ping_sent": self.pinger.sent,
                             "ping_received": self.pinger.received}
        # underlay
        report["underlay"] = {
            "frames": m.frames, "esp": m.esp, "cleartext": m.cleartext,
            "cleartext_samples": m.cleartext_samples, "repeated_spi_seq": m.repeat_count,
            "repeat_samples": [(hex(s), q) for s, q in m.repeats[:20]],
            "icmp_errors_about_esp": m.icmp_about_esp, "ignored_arp_nd": m.ignored,
            "unexplained": m.unexplained, "unexplained_samples": m.unexplained_samples,
            "capture_kernel_drops": m.kernel_drops,
            "per_spi": {hex(spi): {"packets": m.esp_per_spi[spi],
                                   "distinct_seq": bm.count, "highest_seq": bm.highest,
                                   "seq_space_used_pct": round(100 * bm.highest / 2**32, 2)}
                        for spi, bm in sorted(m.seqs.items())},
        }
        # RSS
        rss_report = {}
        for side, gateway in self.gateways.items():
            lives = []
            for life in gateway.lifetimes:
                lives.append(rss_summary(life, a.warmup))
            rss_report[f"gw{side.upper()}"] = lives
        report["rss"] = rss_report
        # reloads
        report["reloads"] = {
            f"gw{s.upper()}": {"sent": g.reloads_sent_total, "success": g.reloads_ok,
                               "failure": g.reloads_failed}
            for s, g in self.gateways.items()}
        report["sa_replacements"] = self.replacements
        report["restarts"] = self.restarts
        report["quiet_window"] = quiet
        report["invariant_violations_during_run"] = self.invariant_violations[:50]
        report["final_state"] = {
            f"gw{s.upper()}": {"io": (g.last_state or {}).get("io"),
                               "drops": (g.last_state or {}).get("drops")}
            for s, g in self.gateways.items()}
        # the checks
        def f(check: str):
            return self.checks[check]

        if m.cleartext:
            f("underlay").append(f"{m.cleartext} cleartext packets on the underlay: "
                                 f"{m.cleartext_samples[:5]}")
        if m.unexplained:
            f("underlay").append(f"{m.unexplained} unexplained frames on the underlay: "
                     f"{m.unexplained_samples[:5]}")
        if m.repeat_count:
            f("sequence_numbers").append(f"{m.repeat_count} repeated (SPI, sequence number) pairs: "
                     f"{[(hex(s), q) for s, q in m.repeats[:10]]}")
        if dups:
            f("delivery").append(f"{dups} inner datagrams delivered twice")
        if m.esp < total_sent // 2:
            f("underlay").append(f"only {m.esp} ESP packets seen for {total_sent} datagrams sent")
        for name, lives in rss_report.items():
            for life in lives:
                drift = life.get("drift_pct")
                if drift is not None and drift > a.max_rss_drift:
                    f("rss").append(f"{name} pid {life['pid']}: RSS drifted {drift:.1f}% after "
                             f"warm-up ({life['warm_kib']} -> {life['last_kib']} KiB)")
        if not any(life.get("drift_pct") is not None for lives in rss_report.values()
                   for life in lives):
            f("rss").append("no daemon lived long enough to measure RSS drift")
        for name, r in report["reloads"].items():
            if r["failure"]:
                f("reloads").append(f"{name}: {r['failure']} reloads failed")
            if r["success"] != r["sent"]:
                f("reloads").append(f"{name}: {r['sent']} reloads sent, {r['success']} succeeded")
        f("counters").extend(quiet["problems"])
        if self.invariant_violations:
            f("counters").append(f"{len(self.invariant_violations)} counter invariant "
                                 f"violations during the run, first: "
                                 f"{self.invariant_violations[:3]}")
        if loss_outside > a.max_loss:
            f("loss").append(f"{loss_outside:.2f}% of datagrams lost outside restart windows "
                     f"(bound {a.max_loss}%)")
        if a.restart_at is not None or a.restart_every:
            if not self.restarts and self.duration > 20:
                f("daemons").append("no restart happened")
        report["checks"] = self.checks
        report["failures"] = self.failures
        report["notes"] = self.notes
        report["ok"] = not f
        return report


def rss_summary(life: ProcessHistory, warmup: float) -> dict:
    samples = life.rss
    out: dict = {"pid": life.pid, "started_s": round(life.started, 1), "ended": life.ended or
                 "end of run", "samples": len(samples)}
    if not samples:
        return out
    values = [kib for _, kib in samples]
    out.update(first_kib=values[0], last_kib=values[-1], max_kib=max(values))
    warm = [kib for t, kib in samples if t - life.started >= warmup]
    if len(warm) >= 3:
        base = min(warm[:3])  # right after warm-up; min() takes out transient peaks
        last = min(warm[-3:])
        out.update(warm_kib=base, drift_pct=round(100 * (last - base) / base, 2),
                   last_kib=values[-1])
    return out


def io_invariants(state: dict, tolerance: int) -> list[str]:
    """All-time totals of one daemon: what went in came out, was dropped, or failed."""
    io, drops = state["io"], state["drops"]
    out_drops = sum(drops.get("out", {}).values())
    in_drops = sum(drops.get("in", {}).values())
    problems = []
    accounted = io["net_tx"] + io["send_errors"] + out_drops
    if abs(io["tun_rx"] - accounted) > tolerance:
        problems.append(f"tun_rx {io['tun_rx']} != net_tx {io['net_tx']} + send_errors "
                        f"{io['send_errors']} + outbound drops {out_drops} (= {accounted})")
    accounted = io["tun_tx"] + io["tun_errors"] + in_drops
    if abs(io["net_rx"] - accounted) > tolerance:
        hint = (" (tun_tx counts TUN writes, and with offload on, datagrams coalesced into "
                "one write count once)" if io["net_rx"] > accounted else "")
        problems.append(f"net_rx {io['net_rx']} != tun_tx {io['tun_tx']} + tun_errors "
                        f"{io['tun_errors']} + inbound drops {in_drops} (= {accounted}){hint}")
    return problems


def drop_invariants(state: dict) -> list[str]:
    """Per-SA drops are also counted globally: never more on the SAs than in total."""
    problems = []
    for direction in ("in", "out"):
        per_sa: dict[str, int] = {}
        for sa in state["sas"]:
            if sa["direction"] == direction:
                for reason, n in sa["drops"].items():
                    per_sa[reason] = per_sa.get(reason, 0) + n
        total = state["drops"].get(direction, {})
        for reason, n in per_sa.items():
            if n > total.get(reason, 0):
                problems.append(f"{direction} drops '{reason}': SAs {n} > global "
                                f"{total.get(reason, 0)}")
    return problems


def window_checks(before: dict, after: dict, esp_before: dict, esp_after: dict) -> dict:
    """Per SPI over the quiet window: sender's SA packets = receiver's SA packets + its
    drops = ESP packets seen on the wire; per daemon: the SA drops = the global drops."""
    problems: list[str] = []
    rows = []

    def sas(state: dict) -> dict:
        return {(sa["spi"], sa["direction"]): sa for sa in state["sas"]}

    for sender, receiver in (("a", "b"), ("b", "a")):
        s0, s1 = sas(before[sender]), sas(after[sender])
        r0, r1 = sas(before[receiver]), sas(after[receiver])
        for (spi, direction), sa in s1.items():
            if direction != "out":
                continue
            if (spi, "out") not in s0 or (spi, "in") not in r0 or (spi, "in") not in r1:
                problems.append(f"SPI {spi:#x}: replaced or missing in the quiet window")
                continue
            out = sa["packets"] - s0[(spi, "out")]["packets"]
            inbound = r1[(spi, "in")]["packets"] - r0[(spi, "in")]["packets"]
            dropped = (sum(r1[(spi, "in")]["drops"].values()) -
                       sum(r0[(spi, "in")]["drops"].values()))
            wire = esp_after.get(spi, 0) - esp_before.get(spi, 0)
            rows.append({"spi": hex(spi), "from": f"gw{sender.upper()}", "out": out,
                         "in": inbound, "in_drops": dropped, "on_wire": wire})
            if out != inbound + dropped:
                problems.append(f"SPI {spi:#x}: gw{sender.upper()} sent {out}, "
                                f"gw{receiver.upper()} got {inbound} + dropped {dropped}")
            if wire != out:
                problems.append(f"SPI {spi:#x}: gw{sender.upper()} counted {out}, the wire "
                                f"saw {wire}")
    drops = {}
    for side in ("a", "b"):
        for direction in ("in", "out"):
            g0 = sum(before[side]["drops"].get(direction, {}).values())
            g1 = sum(after[side]["drops"].get(direction, {}).values())
            b0 = sas(before[side])
            sa_delta = sum(sum(sa["drops"].values()) - sum(b0[k]["drops"].values())
                           for k, sa in sas(after[side]).items()
                           if k[1] == direction and k in b0)
            drops[f"gw{side.upper()} {direction}"] = {"global": g1 - g0, "per_sa": sa_delta}
            if g1 - g0 != sa_delta:
                problems.append(f"gw{side.upper()} {direction}: {g1 - g0} drops globally, "
                                f"{sa_delta} on SAs in the quiet window")
    return {"per_spi": rows, "drops": drops, "problems": problems}


# -- entry point -------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--rate", type=float, default=200.0,
                   help="datagrams per second per flow (4 flows)")
    p.add_argument("--reload-every", type=float, default=1.0, help="seconds between SIGHUPs")
    p.add_argument("--replace-every", type=int, default=10,
                   help="every N-th reload also replaces an SA (0: never)")
    p.add_argument("--restart-every", type=float, default=180.0,
                   help="seconds between gateway restarts (0: only --restart-at)")
    p.add_argument("--restart-at", type=float, default=None,
                   help="seconds into the run of the first restart (default: --restart-every)")
    p.add_argument("--restart-gateway", choices=("a", "b", "both"), default="a",
                   help="which gateway restarts (the other one runs the whole soak, for "
                        "its RSS drift)")
    p.add_argument("--kill9-every", type=int, default=3,
                   help="every N-th restart is kill -9 instead of SIGTERM (0: never)")
    p.add_argument("--sample-every", type=float, default=10.0, help="RSS/state sampling, s")
    p.add_argument("--progress-every", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=120.0,
                   help="seconds of a daemon's life before its RSS baseline")
    p.add_argument("--max-rss-drift", type=float, default=10.0, help="percent")
    p.add_argument("--max-loss", type=float, default=1.0,
                   help="percent of datagrams lost outside restart windows")
    p.add_argument("--quiet-seconds", type=float, default=2.0,
                   help="traffic in the final quiet window where counters are compared")
    p.add_argument("--offload", choices=("default", "on", "off"), default="default",
                   help="[daemon] offload (TUN segmentation/coalescing) of both gateways")
    p.add_argument("--workdir", help="configs, logs, state (default: a new temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the workdir afterwards")
    p.add_argument("--json", help="write the report here as JSON")
    args = p.parse_args(argv)
    if args.minutes <= 2 and "--warmup" not in (argv if argv is not None else sys.argv):
        args.warmup = min(args.warmup, args.minutes * 60 / 4)
    return args


def run(args: argparse.Namespace) -> dict:
    soak = Soak(args)
    report: dict
    try:
        soak.setup()
        log(f"topology {soak.topo.tag}, workdir {soak.workdir}, {args.minutes} min, "
            f"gwA pid {soak.gateways['a'].daemon.pid}, gwB pid {soak.gateways['b'].daemon.pid}")
        soak.run()
        report = soak.finish()
    except BaseException as e:
        soak.fail("daemons", f"soak aborted: {type(e).__name__}: {e}")
        report = {"ok": False}
        if not isinstance(e, Exception):
            raise
    finally:
        soak.teardown()
    report["checks"] = soak.checks  # teardown may have added to them
    report["failures"] = soak.failures
    report["ok"] = not report["failures"]
    return report


def print_report(report: dict) -> None:
    log("=== soak report ===")
    if "traffic" in report:
        t, u = report["traffic"], report["underlay"]
        log(f"duration {report['duration_s']} s; datagrams lost {t['loss_pct']}% overall, "
            f"{t['loss_outside_restarts_pct']}% outside restart windows; ping "
            f"{t['ping_received']}/{t['ping_sent']}")
        for name, flow in t["flows"].items():
            log(f"  {name}: {flow}")
        log(f"underlay: {u['esp']} ESP, {u['cleartext']} cleartext, "
            f"{u['repeated_spi_seq']} repeated (SPI, seq), {u['unexplained']} unexplained, "
            f"{u['icmp_errors_about_esp']} ICMP errors about ESP, capture drops "
            f"{u['capture_kernel_drops']}")
        for spi, row in u["per_spi"].items():
            log(f"  SPI {spi}: {row}")
        for name, lives in report["rss"].items():
            for life in lives:
                log(f"RSS {name}: {life}")
        log(f"reloads: {report['reloads']}; SA replacements {report['sa_replacements']}")
        for restart in report["restarts"]:
            log(f"restart: {restart}")
        q = report["quiet_window"]
        for row in q["per_spi"]:
            log(f"quiet window: {row}")
        log(f"quiet window drops: {q['drops']}; delivered {q['delivered']}")
        log(f"final io/drops: {report['final_state']}")
    if report["failures"]:
        log("FAILED:")
        for failure in report["failures"]:
            log(f"  - {failure}")
    else:
        log("PASSED: every invariant held")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
