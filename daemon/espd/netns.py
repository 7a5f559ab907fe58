"""Network-namespace helpers shared by ``espd demo`` and the namespace tests.

Everything here works on names this process created: namespaces are named with a per-run
tag (``espd-<pid>-...``), veth pairs are created directly inside them (the root namespace
is never touched), and daemons are stopped by the pid we started. The topology is

 [hostA 10.1.0.10] -- [10.1.0.1 gwA 192.0.2.1] ==ESP== [192.0.2.2 gwB 10.2.0.1] -- [10.2.0.10 hostB]
  fd00:1::10          fd00:1::1    fd00:ff::1          fd00:ff::2   fd00:2::1          fd00:2::10

Run as ``python -m espd.netns ping|tcp-recv|tcp-send ...`` (inside a namespace through
``ip netns exec``) it is also the small traffic tool the demo uses when ping or iperf3 are
not installed.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import hashlib
import ipaddress
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"

# -- addresses of the standard four-namespace topology ------------------------------------

HOST_A4, GW_A_LAN4, GW_A_WAN4 = "10.1.0.10", "10.1.0.1", "192.0.2.1"
HOST_B4, GW_B_LAN4, GW_B_WAN4 = "10.2.0.10", "10.2.0.1", "192.0.2.2"
HOST_A6, GW_A_LAN6, GW_A_WAN6 = "fd00:1::10", "fd00:1::1", "fd00:ff::1"
HOST_B6, GW_B_LAN6, GW_B_WAN6 = "fd00:2::10", "fd00:2::1", "fd00:ff::2"
LAN_IF, WAN_IF = "lan0", "wan0"  # names inside the namespaces, unique per namespace only
PROTECTED = ("10.1.0.0/16", "10.2.0.0/16", "fd00:1::/64", "fd00:2::/64")
_PROTECTED_NETS = [ipaddress.ip_network(n) for n in PROTECTED]
ETH_P_ALL = 0x0003


class NetnsError(RuntimeError):
    pass


def run_tag() -> str:
    """A name prefix unique to this process: espd-<pid>."""
    return f"espd-{os.getpid()}"


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 30,
        input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``argv``, capturing text output; raise NetnsError with its stderr on failure."""
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                                input=input)
    except subprocess.TimeoutExpired as e:
        raise NetnsError(f"{' '.join(argv)}: no answer within {timeout} s") from e
    if check and result.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed ({result.returncode}): "
                         f"{(result.stderr or result.stdout).strip()}")
    return result


def unavailable() -> str | None:
    """Why namespace tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root (creates network namespaces)"
    if shutil.which("ip") is None:
        return "needs iproute2's 'ip' command"
    try:
        result = run(["ip", "netns", "list"], check=False, timeout=10)
    except (NetnsError, OSError) as e:
        return f"'ip netns' is unavailable: {e}"
    if result.returncode != 0:
        return f"'ip netns' is unavailable: {result.stderr.strip()}"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    return None


# -- namespaces, links, addresses -------------------------------------------------------------

def exec_argv(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def ns_run(ns: str, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    """Run ``argv`` inside namespace ``ns``."""
    return run(exec_argv(ns, argv), **kwargs)


def ip(ns: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["ip", *(["-n", ns] if ns else []), *args], check=check)


def add_netns(name: str) -> None:
    ip(None, "netns", "add", name)
    ip(name, "link", "set", "lo", "up")


def delete_netns(name: str) -> None:
    """Delete namespace ``name`` if it exists (its veth ends go with it)."""
    if os.path.exists(os.path.join(NETNS_DIR, name)):
        ip(None, "netns", "delete", name, check=False)


def sysctl(ns: str, key: str, value: str | int) -> None:
    if shutil.which("sysctl"):
        ns_run(ns, ["sysctl", "-q", "-w", f"{key}={value}"])
    else:  # procps is not installed: /proc/sys is per namespace too
        path = "/proc/sys/" + key.replace(".", "/")
        ns_run(ns, ["sh", "-c", 'echo "$1" > "$2"', "sysctl", str(value), path])


def add_veth(ns1: str, if1: str, ns2: str, if2: str, mtu: int | None = None) -> None:
    """A veth pair created inside ``ns1`` with its peer in ``ns2``, both up."""
    ip(ns1, "link", "add", if1, "type", "veth", "peer", "name", if2, "netns", ns2)
    for ns, name in ((ns1, if1), (ns2, if2)):
        if mtu:
            ip(ns, "link", "set", name, "mtu", str(mtu))
        ip(ns, "link", "set", name, "up")


def add_address(ns: str, ifname: str, cidr: str) -> None:
    extra = ["nodad"] if ":" in cidr else []  # no duplicate address detection delay
    ip(ns, "addr", "add", cidr, "dev", ifname, *extra)


def add_route(ns: str, dest: str, via: str) -> None:
    ip(ns, "-6" if ":" in via else "-4", "route", "replace", dest, "via", via)


def link_mtu(ns: str, ifname: str) -> int:
    out = ip(ns, "link", "show", ifname).stdout
    found = re.search(r"\bmtu (\d+)", out)
    if not found:
        raise NetnsError(f"no MTU in 'ip -n {ns} link show {ifname}': {out!r}")
    return int(found.group(1))


def _libc_setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def socket_in(ns: str, family: int, type_: int, proto: int = 0) -> socket.socket:
    """A socket that lives in namespace ``ns``; usable from any thread of this process.

    A socket belongs to the namespace of the thread that created it; a short-lived thread
    enters ``ns`` (setns only moves the calling thread) and creates it.
    """
    result: list = []

    def make() -> None:
        try:
            fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY)
            try:
                _libc_setns(fd)
            finally:
                os.close(fd)
            result.append(socket.socket(family, type_, proto))
        except BaseException as e:  # handed to the caller
            result.append(e)

    thread = threading.Thread(target=make, name=f"setns-{ns}")
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


@dataclass
class Topology:
    """host A - gateway A == underlay == gateway B - host B, in four fresh namespaces."""

    tag: str = field(default_factory=run_tag)
    underlay_mtu: int = 1500
    ipv6: bool = True

    def __post_init__(self) -> None:
        self.host_a = f"{self.tag}-ha"
        self.gw_a = f"{self.tag}-ga"
        self.gw_b = f"{self.tag}-gb"
        self.host_b = f"{self.tag}-hb"
        self.created: list[str] = []

    @property
    def namespaces(self) -> tuple[str, str, str, str]:
        return self.host_a, self.gw_a, self.gw_b, self.host_b

    def create(self) -> None:
        """Build everything; on failure, remove what was built and re-raise."""
        try:
            self._create()
        except BaseException:
            self.destroy()
            raise

    def _create(self) -> None:
        for ns in self.namespaces:
            if os.path.exists(os.path.join(NETNS_DIR, ns)):
                raise NetnsError(f"namespace {ns} exists already; remove it with "
                                 f"'ip netns delete {ns}' if no espd run owns it")
            add_netns(ns)
            self.created.append(ns)
            if self.ipv6:
                # no duplicate address detection: a tentative link-local address holds
                # back neighbour solicitations (so forwarded packets) for a second or two
                for scope in ("all", "default"):
                    sysctl(ns, f"net.ipv6.conf.{scope}.accept_dad", 0)
        for gw in (self.gw_a, self.gw_b):
            sysctl(gw, "net.ipv4.ip_forward", 1)
            if self.ipv6:
                sysctl(gw, "net.ipv6.conf.all.forwarding", 1)
        add_veth(self.host_a, LAN_IF, self.gw_a, LAN_IF)
        add_veth(self.gw_a, WAN_IF, self.gw_b, WAN_IF, self.underlay_mtu)
        add_veth(self.gw_b, LAN_IF, self.host_b, LAN_IF)
        for ns, ifname, v4, v6 in (
            (self.host_a, LAN_IF, f"{HOST_A4}/24", f"{HOST_A6}/64"),
            (self.gw_a, LAN_IF, f"{GW_A_LAN4}/24", f"{GW_A_LAN6}/64"),
            (self.gw_a, WAN_IF, f"{GW_A_WAN4}/24", f"{GW_A_WAN6}/64"),
            (self.gw_b, WAN_IF, f"{GW_B_WAN4}/24", f"{GW_B_WAN6}/64"),
            (self.gw_b, LAN_IF, f"{GW_B_LAN4}/24", f"{GW_B_LAN6}/64"),
            (self.host_b, LAN_IF, f"{HOST_B4}/24", f"{HOST_B6}/64"),
        ):
            add_address(ns, ifname, v4)
            if self.ipv6:
                add_address(ns, ifname, v6)
        add_route(self.host_a, "default", GW_A_LAN4)
        add_route(self.host_b, "default", GW_B_LAN4)
        if self.ipv6:
            add_route(self.host_a, "default", GW_A_LAN6)
            add_route(self.host_b, "default", GW_B_LAN6)

    def destroy(self) -> None:
        for ns in reversed(self.created):
            delete_netns(ns)
        self.created.clear()

    def __enter__(self) -> Topology:
        self.create()
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()


# -- configs ---------------------------------------------------------------------------------

def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def with_daemon_settings(text: str, **settings: str | int) -> str:
    """``text`` (espd TOML) with the given ``[daemon]`` keys set, other lines untouched."""
    values = {k: (_toml_string(v) if isinstance(v, str) else str(v)) for k, v in
              settings.items()}
    lines = text.splitlines()
    out: list[str] = []
    in_daemon = False
    header = None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            if in_daemon:  # leaving [daemon]: add keys it did not have
                out.extend(f"{k} = {v}" for k, v in values.items())
                values.clear()
            in_daemon = stripped.split("#")[0].strip() == "[daemon]"
            if in_daemon:
                header = len(out)
        elif in_daemon:
            key = stripped.split("=", 1)[0].strip()
            if "=" in stripped and key in values:
                out.append(f"{key} = {values.pop(key)}")
                continue
        out.append(line)
    if values:
        if header is None:
            out.append("")
            out.append("[daemon]")
        out.extend(f"{k} = {v}" for k, v in values.items())
    return "\n".join(out) + "\n"


def ios_wrapper(ios_path: str, **settings: str | int) -> str:
    """A TOML file that includes the IOS config ``ios_path`` with per-run daemon settings."""
    return with_daemon_settings(f"include_ios = [{_toml_string(os.path.abspath(ios_path))}]\n",
                                **settings)


# -- the daemon ------------------------------------------------------------------------------

class DaemonError(RuntimeError):
    pass


def state_of(answer: dict) -> dict:
    """The state dict from a control-socket answer to "state" ({"state": ...} or flat)."""
    if answer.get("ok") is False:
        raise DaemonError(f"espd refused 'state': {answer.get('error')}")
    state = answer.get("state")
    return state if isinstance(state, dict) else answer


class Daemon:
    """One ``espd run`` in a namespace, started and stopped by its pid."""

    def __init__(self, ns: str, config: str, control_socket: str, log_path: str,
                 name: str = "espd", command: Sequence[str] | None = None) -> None:
        self.ns = ns
        # what runs "espd run": this interpreter's espd unless told otherwise
        self.command = list(command or [sys.executable, "-m", "espd", "run"])
        self.config = config
        self.control_socket = control_socket
        self.log_path = log_path
        self.name = name
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            # "ip netns exec" execs the command in place: the pid is the daemon's own
            self.proc = subprocess.Popen(
                exec_argv(self.ns, [*self.command, "-c", self.config]),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)

    def log(self, tail: int = 4000) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-tail:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 20.0) -> dict:
        """Poll the control socket until ``state`` answers; return the state."""
        from espd import control

        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DaemonError(f"{self.name} (pid {self.pid}) exited with status "
                                  f"{self.proc.returncode} before it was ready; its log:\n"
                                  f"{self.log()}")
            if os.path.exists(self.control_socket):
                try:
                    return state_of(control.request(self.control_socket, "state"))
                except Exception as e:  # not listening yet
                    last = e
            time.sleep(0.1)
        raise DaemonError(f"{self.name} (pid {self.pid}) did not answer on "
                          f"{self.control_socket} within {timeout:.0f} s"
                          f"{f' (last error: {last})' if last else ''}; its log:\n{self.log()}")

    def state(self) -> dict:
        from espd import control

        return state_of(control.request(self.control_socket, "state"))

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.pid, signum)

    def reload(self) -> None:
        self.signal(signal.SIGHUP)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, SIGKILL if it does not go; return its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


# -- traffic ---------------------------------------------------------------------------------

@dataclass
class PingResult:
    sent: int = 0
    received: int = 0
    errors: list[str] = field(default_factory=list)  # ICMP errors and local send errors
    frag_needed_mtu: int | None = None  # from ICMP "fragmentation needed" / "packet too big"


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ping(ns: str | None, dst: str, count: int = 3, size: int = 56, interval: float = 0.2,
         timeout: float = 2.0, df: bool = False) -> PingResult:
    """ICMP echo from namespace ``ns`` (None: this one) without the ping binary.

    ``size`` is the payload length as in ``ping -s``; ``df`` sets Don't Fragment
    (``ping -M do``). ICMP errors, including fragmentation-needed with its MTU, are noted.
    """
    v6 = ":" in dst
    family = socket.AF_INET6 if v6 else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    sock = (socket_in(ns, family, socket.SOCK_RAW, proto) if ns
            else socket.socket(family, socket.SOCK_RAW, proto))
    result = PingResult()
    ident = (os.getpid() ^ threading.get_ident()) & 0xFFFF
    payload = (b"espd-ping" * (size // 9 + 1))[:size]
    with sock:
        if df:
            level, option = ((socket.IPPROTO_IPV6, 23) if v6  # IPV6_MTU_DISCOVER
                             else (socket.IPPROTO_IP, 10))  # IP_MTU_DISCOVER
            sock.setsockopt(level, option, 2)  # IP_PMTUDISC_DO
        elif v6:
            sock.setsockopt(socket.IPPROTO_IPV6, 23, 0)  # IPV6_PMTUDISC_DONT: fragment
        replies: set[int] = set()
        for seq in range(1, count + 1):
            header = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, ident, seq)
            packet = header + payload
            if not v6:  # the kernel computes ICMPv6 checksums itself
                packet = header[:2] + struct.pack("!H", _checksum(packet)) + packet[4:]
            try:
                sock.sendto(packet, (dst, 0))
                result.sent += 1
            except OSError as e:
                result.errors.append(f"send: {e.strerror}")
            end = time.monotonic() + (interval if seq < count else timeout)
            while (left := end - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    data = sock.recv(65535)
                except TimeoutError:
                    break
                except OSError as e:
                    result.errors.append(f"recv: {e.strerror}")
                    continue
                errors = len(result.errors)
                _note_icmp(data, v6, ident, replies, result)
                if seq == count and (seq in replies or len(result.errors) > errors):
                    break  # the last one answered, or an ICMP error came back for it
        result.received = len(replies)
    return result


def _note_icmp(data: bytes, v6: bool, ident: int, replies: set[int], result: PingResult) -> None:
    icmp = data if v6 else data[(data[0] & 0x0F) * 4:]
    if len(icmp) < 8:
        return
    kind, code = icmp[0], icmp[1]
    if kind == (129 if v6 else 0):
        if struct.unpack("!H", icmp[4:6])[0] == ident:
            replies.add(struct.unpack("!H", icmp[6:8])[0])
        return
    # an error quoting one of our echo requests
    quoted = icmp[8:]
    inner = quoted[40:] if v6 else quoted[(quoted[0] & 0x0F) * 4:] if quoted else b""
    if len(inner) < 8 or inner[0] != (128 if v6 else 8) or \
            struct.unpack("!H", inner[4:6])[0] != ident:
        return
    if (not v6 and kind == 3 and code == 4) or (v6 and kind == 2):
        mtu = struct.unpack("!H", icmp[6:8])[0] if not v6 else struct.unpack("!I", icmp[4:8])[0]
        result.frag_needed_mtu = mtu
        result.errors.append(f"fragmentation needed (mtu = {mtu})")
    else:
        result.errors.append(f"ICMP type {kind} code {code}")


def _tcp_recv(port: int, family: int, expect: int, timeout: float) -> int:
    with socket.socket(family, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
        server.listen(1)
        server.settimeout(timeout)
        print("listening", flush=True)
        conn, peer = server.accept()
        digest = hashlib.sha256()
        received = 0
        with conn:
            conn.settimeout(timeout)
            while chunk := conn.recv(65536):
                digest.update(chunk)
                received += len(chunk)
            print(f"received {received} bytes from {peer[0]} sha256 {digest.hexdigest()}",
                  flush=True)
    return 0 if received == expect or expect < 0 else 1


def _pattern(size: int) -> bytes:
    block = hashlib.sha256(b"espd demo").digest() * 2048
    return (block * (size // len(block) + 1))[:size]


def _tcp_send(host: str, port: int, size: int, timeout: float) -> int:
    data = _pattern(size)
    start = time.monotonic()
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)  # wait for the receiver to close
    elapsed = time.monotonic() - start
    print(f"sent {size} bytes to {host} sha256 {hashlib.sha256(data).hexdigest()} in "
          f"{elapsed:.2f} s", flush=True)
    return 0


# -- traffic and capture for the tests --------------------------------------------------------

class UdpFlow:
    """Sequence-numbered UDP datagrams from one namespace to another, at a steady rate."""

    def __init__(self, src_ns: str, dst_ns: str, dst: str, port: int, size: int = 200,
                 interval: float = 0.002, limit: int | None = None) -> None:
        family = socket.AF_INET6 if ":" in dst else socket.AF_INET
        self.dst, self.port, self.size, self.interval = dst, port, size, interval
        self.rx = socket_in(dst_ns, family, socket.SOCK_DGRAM)
        # a receiver thread starved of CPU must not turn into "loss in the tunnel"
        self.rx.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (root)
        self.rx.bind((dst, port))
        self.rx.settimeout(0.2)
        self.tx = socket_in(src_ns, family, socket.SOCK_DGRAM)
        self.sent = 0
        self.limit = limit
        self.received: set[int] = set()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._send, daemon=True),
                        threading.Thread(target=self._recv, daemon=True)]

    def __enter__(self) -> UdpFlow:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _send(self) -> None:
        pad = b"x" * max(0, self.size - 8)
        next_at = time.monotonic()
        while not self.stopping.is_set() and self.sent != self.limit:
            try:
                self.tx.sendto(self.sent.to_bytes(8, "big") + pad, (self.dst, self.port))
            except OSError:
                pass  # e.g. unreachable while a route is being replaced: counted as lost
            self.sent += 1
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)

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
            self.received.add(int.from_bytes(data[:8], "big"))

    def count(self) -> int:
        return len(self.received)

    def stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        time.sleep(0.3)  # let the last datagrams arrive
        for thread in self.threads:
            thread.join(5)
        self.tx.close()
        self.rx.close()


def udp_exchange(src_ns: str, dst_ns: str, dst: str, count: int = 200,
                 size: int = 1000, port: int = 7000) -> int:
    """Send ``count`` datagrams of ``size`` bytes; return how many arrived."""
    with UdpFlow(src_ns, dst_ns, dst, port, size=size, interval=0.0005, limit=count) as flow:
        deadline = time.monotonic() + 10
        while flow.sent < count and time.monotonic() < deadline:
            time.sleep(0.02)
        deadline = time.monotonic() + 1.5  # for the last ones to arrive
        while flow.count() < count and time.monotonic() < deadline:
            time.sleep(0.02)
    return flow.count()


def scrape_metrics(ns: str, port: int) -> str:
    """GET /metrics from 127.0.0.1:port inside namespace `ns`."""
    import http.client

    sock = socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.sock = sock
    connection.request("GET", "/metrics")
    response = connection.getresponse()
    if response.status != 200:
        raise NetnsError(f"GET /metrics in {ns} answered {response.status}")
    return response.read().decode()


# -- capture -------------------------------------------------------------------------------

SOL_PACKET, PACKET_VNET_HDR = 263, 15
VNET_HDR = struct.Struct("=BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_off
VIRTIO_NET_HDR_GSO_UDP_L4 = 5


def capture_socket(ns: str, ifname: str, buffer: int) -> socket.socket:
    """An AF_PACKET socket on one interface of a namespace whose frames carry a
    virtio_net_hdr (read them with wire_frames): a GSO packet, as espd's UDP_SEGMENT sends
    are until a device splits them, shows up as one frame and is split like the wire."""
    sock = socket_in(ns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:  # root may go past net.core.rmem_max
        sock.setsockopt(socket.SOL_SOCKET, 33, buffer)  # SO_RCVBUFFORCE
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    sock.bind((ifname, 0))
    return sock


def wire_frames(data: bytes) -> list[bytes]:
    """The Ethernet frames a frame read from capture_socket stands for: itself, or the
    segments of a UDP GSO packet (IP total length, IPv4 header checksum and UDP length
    rewritten per segment; the UDP checksum is left as the stack gave it)."""
    _flags, gso_type, _hdr_len, gso_size, _cs, _co = VNET_HDR.unpack_from(data)
    frame = data[VNET_HDR.size:]
    if gso_type & 0x7F != VIRTIO_NET_HDR_GSO_UDP_L4 or not gso_size or len(frame) < 34:
        return [frame]
    v6 = frame[14] >> 4 == 6
    ip_len = 40 if v6 else (frame[14] & 0x0F) * 4
    head, payload = frame[:14 + ip_len + 8], frame[14 + ip_len + 8:]
    out = []
    for at in range(0, len(payload), gso_size):
        piece = payload[at:at + gso_size]
        hdr = bytearray(head)
        struct.pack_into("!H", hdr, 14 + ip_len + 4, 8 + len(piece))
        if v6:
            struct.pack_into("!H", hdr, 18, 8 + len(piece))
        else:
            struct.pack_into("!HH", hdr, 16, ip_len + 8 + len(piece), 0)
            struct.pack_into("!H", hdr, 24, _checksum(bytes(hdr[14:14 + ip_len])))
        out.append(bytes(hdr) + piece)
    return out


class Capture:
    """Every frame on one interface of a namespace (both directions), via AF_PACKET, as
    on the wire (GSO packets split)."""

    def __init__(self, ns: str, ifname: str) -> None:
        self.sock = capture_socket(ns, ifname, 16 << 20)
        self.sock.settimeout(0.1)
        self.frames: list[tuple[float, bytes, int]] = []  # (time, frame, pkttype)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Capture:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                data, address = self.sock.recvfrom(65536 + VNET_HDR.size)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            self.frames.extend((now, frame, address[2]) for frame in wire_frames(data))

    def stop(self) -> list[tuple[float, bytes, int]]:
        if not self.stopping.is_set():
            time.sleep(0.2)
            self.stopping.set()
            self.thread.join(5)
            self.sock.close()
        return self.frames


@dataclass
class EspPacket:
    time: float
    outer_src: str
    outer_dst: str
    udp: bool
    spi: int
    seq: int
    esp: bytes  # the ESP header onwards


@dataclass
class Analysis:
    esp: list[EspPacket] = field(default_factory=list)
    cleartext: list[str] = field(default_factory=list)  # protected addresses in clear
    other: list[str] = field(default_factory=list)  # anything else that is neither


def _protected(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in net for net in _PROTECTED_NETS)


def analyze(frames, since: float = 0.0) -> Analysis:
    """Sort underlay frames: ESP (or ESP in UDP 4500), cleartext of the protected subnets,
    and anything else (ARP, IPv6 neighbour discovery and MLD are expected and ignored)."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP, Ether

    result = Analysis()
    for when, frame, _pkttype in frames:
        if when < since:
            continue
        pkt = Ether(frame)
        if ARP in pkt:
            continue
        if IP in pkt:
            outer, proto = pkt[IP], pkt[IP].proto
            payload = bytes(outer.payload)
        elif IPv6 in pkt:
            outer, proto = pkt[IPv6], pkt[IPv6].nh
            payload = bytes(outer.payload)
            if proto == 0 or proto == 58:  # hop-by-hop (MLD) or ICMPv6
                icmp_type = payload[8] if proto == 0 and len(payload) > 8 else \
                    payload[0] if payload else 0
                if proto == 0 or 130 <= icmp_type <= 143:  # MLD, router/neighbour disc.
                    continue
        else:
            result.other.append(pkt.summary())
            continue
        if _protected(outer.src) or _protected(outer.dst):
            result.cleartext.append(pkt.summary())
            continue
        udp = False
        if proto == 17 and UDP in pkt and 4500 in (pkt[UDP].sport, pkt[UDP].dport):
            payload = bytes(pkt[UDP].payload)
            if len(payload) < 8 or payload[:4] == b"\0\0\0\0":  # keepalive or IKE
                continue
            udp = True
        elif proto != 50:
            result.other.append(pkt.summary())
            continue
        spi, seq = int.from_bytes(payload[:4], "big"), int.from_bytes(payload[4:8], "big")
        result.esp.append(EspPacket(when, outer.src, outer.dst, udp, spi, seq, payload))
    return result


def decrypt(packet: EspPacket, key: bytes):
    """The inner packet of an AES-GCM-256 ESP packet, decrypted by scapy with ``key``."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.ipsec import ESP, SecurityAssociation

    outer = (IPv6(src=packet.outer_src, dst=packet.outer_dst, nh=50) if ":" in packet.outer_src
             else IP(src=packet.outer_src, dst=packet.outer_dst, proto=50))
    sa = SecurityAssociation(ESP, spi=packet.spi, crypt_algo="AES-GCM", crypt_key=key,
                             auth_algo="NULL", auth_key=None)
    decrypted = sa.decrypt(outer / ESP(packet.esp))
    # tunnel mode: scapy keeps the outer header in front of the inner packet
    return decrypted.payload if isinstance(decrypted.payload, (IP, IPv6)) else decrypted


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m espd.netns",
                                     description="traffic helpers for espd's netns demo")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ping", help="ICMP echo without the ping binary")
    p.add_argument("dst")
    p.add_argument("-c", "--count", type=int, default=5)
    p.add_argument("-s", "--size", type=int, default=56)
    p.add_argument("--df", action="store_true", help="set Don't Fragment (ping -M do)")
    r = sub.add_parser("tcp-recv", help="accept one TCP connection, print its size and hash")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--ipv6", action="store_true")
    r.add_argument("--expect", type=int, default=-1)
    r.add_argument("--timeout", type=float, default=30)
    s = sub.add_parser("tcp-send", help="send SIZE bytes of a fixed pattern over TCP")
    s.add_argument("host")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--size", type=int, default=512 * 1024)
    s.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args(argv)
    try:
        if args.command == "ping":
            result = ping(None, args.dst, args.count, args.size, interval=0.2, df=args.df)
            for error in result.errors:
                print(f"From {args.dst}: {error}")
            loss = 100 * (result.sent - result.received) // max(result.sent, 1)
            print(f"{result.sent} packets transmitted, {result.received} received, "
                  f"{loss}% packet loss")
            return 0 if result.received == args.count else 1
        if args.command == "tcp-recv":
            family = socket.AF_INET6 if args.ipv6 else socket.AF_INET
            return _tcp_recv(args.port, family, args.expect, args.timeout)
        return _tcp_send(args.host, args.port, args.size, args.timeout)
    except OSError as e:
        if e.errno == errno.EPERM:
            print("needs root (raw sockets)", file=sys.stderr)
        print(f"{args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
