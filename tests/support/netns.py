"""What the namespace tests, benchmarks and the soak share: the demo's namespaces and
gateways (re-exported from espd.cli.demo), and test-only traffic, capture and analysis.

 [hostA 10.1.0.10] -- [10.1.0.1 gwA 192.0.2.1] ==ESP== [192.0.2.2 gwB 10.2.0.1] -- [10.2.0.10 hostB]
  fd00:1::10          fd00:1::1    fd00:ff::1          fd00:ff::2   fd00:2::1          fd00:2::10
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from espd.cli.demo.gateway import (  # noqa: F401  (re-exported for the tests)
    EspdProcess,
    EspdProcessError,
    state_of,
    toml_string,
    with_daemon_settings,
)
from espd.cli.demo.namespaces import (  # noqa: F401  (re-exported for the tests)
    GW_A_LAN4,
    GW_A_LAN6,
    GW_A_WAN4,
    GW_A_WAN6,
    GW_B_LAN4,
    GW_B_LAN6,
    GW_B_WAN4,
    GW_B_WAN6,
    HOST_A4,
    HOST_A6,
    HOST_B4,
    HOST_B6,
    LAN_IF,
    NETNS_DIR,
    WAN_IF,
    NetnsError,
    Topology,
    add_address,
    add_netns,
    add_route,
    add_veth,
    delete_netns,
    exec_argv,
    ip,
    link_mtu,
    ns_run,
    run,
    run_tag,
    socket_in,
    sysctl,
    unavailable,
)
from espd.cli.demo.traffic import (  # noqa: F401  (re-exported for the tests)
    PingResult,
    ping,
)
from support.packets import checksum

PROTECTED = ("10.1.0.0/16", "10.2.0.0/16", "fd00:1::/64", "fd00:2::/64")
_PROTECTED_NETS = [ipaddress.ip_network(n) for n in PROTECTED]
ETH_P_ALL = 0x0003


def ios_wrapper(ios_path: str, **settings: str | int) -> str:
    """A TOML file that includes the IOS config ``ios_path`` with per-run daemon settings."""
    return with_daemon_settings(f"include_ios = [{toml_string(os.path.abspath(ios_path))}]\n",
                                **settings)


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


def scrape_metrics(ns: str, port: int, timeout: float = 5.0) -> str:
    """GET /metrics from 127.0.0.1:port inside namespace `ns`."""
    import http.client

    sock = socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
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
            struct.pack_into("!H", hdr, 24, checksum(bytes(hdr[14:14 + ip_len])))
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
    addr = ipaddress.ip_address(address)
    return any(addr in net for net in _PROTECTED_NETS)


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


def _read_exact(conn: socket.socket, size: int) -> bytes:
    chunks, have = [], 0
    while have < size:
        chunk = conn.recv(min(65536, size - have))
        if not chunk:
            break
        chunks.append(chunk)
        have += len(chunk)
    return b"".join(chunks)


def tcp_transfer(client_ns: str, server_ns: str, server_addr: str, size: int = 1 << 20,
                 port: int = 5201, timeout: float = 20.0) -> tuple[str, str]:
    """``size`` random bytes from ``client_ns`` to ``server_addr`` in ``server_ns`` and
    ``size`` others back, over one TCP connection; each direction's SHA-256 must match
    what was sent (an AssertionError names what arrived short or different). Returns the
    two digests (up, down)."""
    import hashlib

    family = socket.AF_INET6 if ":" in server_addr else socket.AF_INET
    up, down = os.urandom(size), os.urandom(size)
    got: dict = {}
    server = socket_in(server_ns, family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((server_addr, port))
    server.listen(1)
    server.settimeout(timeout)

    def serve() -> None:
        try:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(timeout)
                got["up"] = _read_exact(conn, size)
                conn.sendall(down)
        except OSError as e:
            got["error"] = e

    thread = threading.Thread(target=serve, name="tcp-transfer")
    thread.start()
    try:
        client = socket_in(client_ns, family, socket.SOCK_STREAM)
        with client:
            client.settimeout(timeout)
            client.connect((server_addr, port))
            client.sendall(up)
            back = _read_exact(client, size)
    finally:
        try:
            server.shutdown(socket.SHUT_RDWR)  # wakes an accept() still waiting
        except OSError:
            pass
        thread.join(timeout + 5)
        server.close()
    received = got.get("up", b"")
    assert "error" not in got, got.get("error")
    sha = [hashlib.sha256(x).hexdigest() for x in (up, received, down, back)]
    assert sha[0] == sha[1], f"upstream: {len(received)} of {size} bytes, sha256 {sha[1]}"
    assert sha[2] == sha[3], f"downstream: {len(back)} of {size} bytes, sha256 {sha[3]}"
    return sha[0], sha[2]
