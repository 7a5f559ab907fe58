"""ESP in UDP on ports other than 4500, end to end through real sockets.

IKE behind a NAT learns the peer's port from the NAT's mapping, which is rarely 4500, and
a NAT-T socket may be bound anywhere: the SA's ports are honoured on send (source = the
socket's port, destination = the SA's remote port) and on receive (destination = the
socket's port, compared with the SA's local port). Two data planes, each with its own
NAT-T socket on an ephemeral loopback port, pass traffic both ways.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import struct

from espd.dataplane import Dataplane, Rule

HOST = "127.0.0.1"


def csum(b: bytes) -> int:
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def inner(src: str, dst: str, n: int) -> bytes:
    udp = struct.pack("!HHHH", 1234, 80, 8 + 40, 0) + bytes([n]) * 40
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n, 0x4000, 64, 17, 0,
                              ipaddress.IPv4Address(src).packed,
                              ipaddress.IPv4Address(dst).packed))
    struct.pack_into("!H", h, 10, csum(bytes(h)))
    return bytes(h) + udp


class Gateway:
    def __init__(self, net: str, far: str) -> None:
        self.dp = Dataplane()
        self.natt = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.natt.bind((HOST, 0))
        self.port = self.natt.getsockname()[1]
        self.tun_dp, self.tun = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.net, self.far = net, far

    def key(self, out_key: bytes, in_key: bytes, spi_out: int, spi_in: int,
            peer_port: int) -> None:
        ports = {"encap": "udp", "sport": self.port, "dport": peer_port, "local": HOST,
                 "peer": HOST, "transform": "esp-gcm 256"}
        sa_out = self.dp.create_sa(spi=spi_out, direction="out", key=out_key, policy=1, **ports)
        sa_in = self.dp.create_sa(spi=spi_in, direction="in", key=in_key, policy=1, **ports)
        self.dp.publish([sa_in, sa_out], [
            (Rule.from_prefixes(self.net, self.far, policy=1), sa_out)])
        self.dp.start_workers([self.tun_dp.fileno()], udp4=self.natt.fileno(),
                              send4=-1)

    def close(self) -> None:
        self.dp.stop_workers()
        for s in (self.natt, self.tun_dp, self.tun):
            s.close()


def receive(tun: socket.socket) -> bytes:
    assert select.select([tun], [], [], 5)[0], "nothing came out of the tunnel"
    return tun.recv(65536)


def test_udp_sa_on_ports_other_than_4500_carries_traffic_both_ways() -> None:
    a, b = Gateway("10.1.0.0/16", "10.2.0.0/16"), Gateway("10.2.0.0/16", "10.1.0.0/16")
    try:
        assert 4500 not in (a.port, b.port)
        k1, k2 = os.urandom(36), os.urandom(36)
        a.key(k1, k2, 0x3001, 0x3002, b.port)
        b.key(k2, k1, 0x3002, 0x3001, a.port)
        for n in range(3):
            a.tun.send(inner("10.1.0.1", "10.2.0.1", n))
            assert receive(b.tun) == inner("10.1.0.1", "10.2.0.1", n)
            b.tun.send(inner("10.2.0.1", "10.1.0.1", n))
            assert receive(a.tun) == inner("10.2.0.1", "10.1.0.1", n)
        for gw in (a, b):
            (sa_in,) = [s for s in gw.dp.sas if s.direction == "in"]
            assert gw.dp.stats(sa_in)["packets"] == 3
    finally:
        a.close()
        b.close()
