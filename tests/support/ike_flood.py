"""A bounded IKE flood from one namespace: run as ``python -m support.ike_flood`` inside
the attacker's namespace (``ip netns exec``), so its CPU is not the test's.

Three streams, each at its own rate, from source addresses drawn from ``--spoof`` (a
subnet the target routes back to the attacker's namespace, so the target's answers
leave it and are dropped there):

  init     well-formed IKE_SA_INIT requests (SA, KE, Ni) to UDP 500, a fresh SPIi each:
           what the responder would do a key exchange for without its cookies
  junk500  random bytes to UDP 500 (the decoder's reject path)
  junk4500 random bytes to UDP 4500, half behind the non-ESP marker (punted to the
           control plane as IKE), half looking like ESP with an unknown SPI

Packets are written with a raw socket (IP_HDRINCL), paced in 5 ms slices; the process
prints {"started": true} when it begins, stops after ``--seconds`` and prints one JSON
line with what it sent.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import socket
import struct
import sys
import time

from espd.ike import codec, proposals
from espd.ike.codec import ExchangeType
from espd.ike.exchanges.payloads import sa_payload
from espd.ike.settings import IkeProposal

SLICE = 0.005  # seconds between bursts


def ike_sa_init(proposal: IkeProposal) -> bytes:
    """A request the target would accept (its proposal, an x25519 KE, a nonce); SPIi is
    overwritten per packet (the first 8 bytes)."""
    header = codec.request_header(codec.SpiPair(os.urandom(8)), ExchangeType.IKE_SA_INIT, 0,
                                  original_initiator=True)
    payloads = (sa_payload(proposals.ike_offer((proposal,))),
                codec.KeyExchange(31, os.urandom(32)), codec.Nonce(os.urandom(32)))
    return codec.encode_message(codec.Message(header, payloads))


def ipv4_udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """IPv4 + UDP; the kernel fills in the IP checksum and ID, UDP checksum 0 (none)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src, dst)
    return ip + udp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--spoof", required=True, help="source subnet, e.g. 203.0.113.0/24")
    parser.add_argument("--init", type=int, default=3000, help="IKE_SA_INIT per second")
    parser.add_argument("--junk500", type=int, default=1000)
    parser.add_argument("--junk4500", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--proposal", default="aes256gcm16-prfsha384-x25519")
    args = parser.parse_args(argv)

    from espd.policy.ike_plan import _proposal  # the daemon's own reading of the text

    template = ike_sa_init(_proposal(args.proposal))
    hosts = [a.packed for a in ipaddress.ip_network(args.spoof).hosts()]
    dst = ipaddress.ip_address(args.target).packed
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    print(json.dumps({"started": True}), flush=True)  # the caller's clock starts here
    rng = random.Random(0x1CE)
    sent = {"init": 0, "junk500": 0, "junk4500": 0, "send_errors": 0}
    rates = {"init": args.init, "junk500": args.junk500, "junk4500": args.junk4500}
    start = time.monotonic()
    slices = 0
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= args.seconds:
            break
        slices += 1
        for kind, rate in rates.items():
            due = int(rate * slices * SLICE) - sent[kind]
            for _ in range(max(0, due)):
                src = rng.choice(hosts)
                sport = rng.randrange(1024, 65536)
                if kind == "init":
                    packet = ipv4_udp(src, dst, 500, 500, os.urandom(8) + template[8:])
                elif kind == "junk500":
                    packet = ipv4_udp(src, dst, sport, 500, os.urandom(rng.randrange(1, 300)))
                else:
                    body = os.urandom(rng.randrange(8, 300))
                    if rng.random() < 0.5:
                        body = b"\0\0\0\0" + body
                    packet = ipv4_udp(src, dst, sport, 4500, body)
                try:
                    sock.sendto(packet, (args.target, 0))
                except OSError:
                    sent["send_errors"] += 1
                sent[kind] += 1
        pause = start + slices * SLICE - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    sent["seconds"] = round(time.monotonic() - start, 3)
    print(json.dumps(sent), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
