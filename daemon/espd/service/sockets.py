"""The sockets the data plane's workers use: raw ESP in, raw IP out, UDP 4500, and with
``send_path = "packet"`` an AF_PACKET socket out (system/nexthops.py), with
``receive_path = "ring"`` one in (native/ring.h).
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

from espd.dataplane import constants
from espd.policy.plan import Plan

log = logging.getLogger("espd")


NATT_PORT = constants.NATT_PORT  # RFC 3948, as native/espdp.h fixes it
SOCKET_BUFFER = 4 << 20


@dataclass
class Sockets:
    esp4: socket.socket | None = None
    esp6: socket.socket | None = None
    udp4: socket.socket | None = None
    udp6: socket.socket | None = None
    send4: socket.socket | None = None
    send6: socket.socket | None = None
    packet: socket.socket | None = None  # AF_PACKET SOCK_DGRAM, protocol 0: never receives
    ring: socket.socket | None = None  # AF_PACKET SOCK_DGRAM, unbound: the raw ESP RX ring

    def fd(self, name: str) -> int:
        s = getattr(self, name)
        return s.fileno() if s else -1

    def close(self) -> None:
        for name in ("esp4", "esp6", "udp4", "udp6", "send4", "send6", "packet", "ring"):
            s = getattr(self, name)
            if s:
                s.close()
                setattr(self, name, None)


def udp_families(plan: Plan) -> set[int]:
    return {6 if ":" in sa.peer else 4 for sa in plan.sas if sa.encap == "udp"}


def open_sockets(plan: Plan, ike_udp: frozenset[int] | set[int] = frozenset(),
                 packet: bool = False, ring: bool = False) -> Sockets:
    """Raw ESP receive and raw send sockets for both IP versions (a reload may add a peer
    of either), UDP 4500 only for the versions the plan encapsulates in UDP or IKE may
    (``ike_udp``: NAT traversal floats IKE and ESP there), and with `packet` the AF_PACKET
    send socket (opened now: it needs CAP_NET_RAW, which [daemon] user drops), with `ring`
    the AF_PACKET socket of the receive ring (the same)."""
    udp = udp_families(plan) | set(ike_udp)
    s = Sockets()
    try:
        for fam, af in ((4, socket.AF_INET), (6, socket.AF_INET6)):
            if fam == 6 and not socket.has_ipv6:
                continue
            esp = socket.socket(af, socket.SOCK_RAW, socket.IPPROTO_ESP)
            esp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            send = socket.socket(af, socket.SOCK_RAW, socket.IPPROTO_RAW)
            send.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            setattr(s, f"esp{fam}", esp)
            setattr(s, f"send{fam}", send)
            if fam in udp:
                u = socket.socket(af, socket.SOCK_DGRAM)
                if af == socket.AF_INET6:
                    u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
                u.bind(("::" if fam == 6 else "0.0.0.0", NATT_PORT))
                setattr(s, f"udp{fam}", u)
        if packet:
            # protocol 0: the socket receives nothing (no copy of every incoming frame)
            s.packet = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
            s.packet.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        if ring:  # bound by the data plane once its ring and filter are set (native/ring.h)
            try:
                s.ring = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
            except OSError as e:
                log.warning("receive_path ring: no AF_PACKET socket (%s); receiving raw ESP "
                            "on the raw sockets", e.strerror or e)
    except OSError:
        s.close()
        raise
    return s
