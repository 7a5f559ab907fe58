"""Network namespaces, veth pairs and addresses for ``espd demo`` (and the namespace tests).

Everything here works on names this process created: namespaces are named with a per-run
tag (``espd-<pid>-...``), veth pairs are created directly inside them (the root namespace
is never touched). The topology is

 [hostA 10.1.0.10] -- [10.1.0.1 gwA 192.0.2.1] ==ESP== [192.0.2.2 gwB 10.2.0.1] -- [10.2.0.10 hostB]
  fd00:1::10          fd00:1::1    fd00:ff::1          fd00:ff::2   fd00:2::1          fd00:2::10
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import socket
import subprocess
import threading
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
