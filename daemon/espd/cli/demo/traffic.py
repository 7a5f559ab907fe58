"""Traffic without ping or iperf3: ICMP echo, and a TCP transfer checked by size and hash.

Run as ``python -m espd.cli.demo.traffic ping|tcp-recv|tcp-send ...`` inside a namespace
(through ``ip netns exec``) it is the small traffic tool ``espd demo`` uses when ping or
iperf3 are not installed.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from espd.cli.demo.namespaces import socket_in


@dataclass
class PingResult:
    sent: int = 0
    received: int = 0
    errors: list[str] = field(default_factory=list)  # ICMP errors and local send errors
    frag_needed_mtu: int | None = None  # from ICMP "fragmentation needed" / "packet too big"


def internet_checksum(data: bytes) -> int:
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
                packet = header[:2] + struct.pack("!H", internet_checksum(packet)) + packet[4:]
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m espd.cli.demo.traffic",
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
