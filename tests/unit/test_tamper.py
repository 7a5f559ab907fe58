"""Every single-bit change to an ESP packet is rejected, for the right reason.

For each transform one genuine packet is flipped at every bit of its SPI, sequence
number, IV, encrypted payload and ICV, one bit at a time, and fed to the receiver:

  SPI            -> unknown_spi (only one inbound SA exists)
  sequence       -> what the anti-replay window says about the flipped number
                    (replay_old left of the window or 0, replay_dup on a number already
                    received), otherwise auth_failed (the sequence number is authenticated)
  IV/payload/ICV -> auth_failed

Afterwards the receiver's window top has not moved, nothing was decapsulated, and the
untouched packet still decapsulates.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import pytest
from support.packets import IPPROTO_UDP, checksum, ipv4, udp

from espd.dataplane import Dataplane, DropError
from espd.dataplane.testing import set_seq

# every test here runs on each AEAD backend (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("crypto_backend")

M32 = 1 << 32
WINDOW = 64
OUTER = 20  # the outer IPv4 header: ESP starts here

TRANSFORMS = {
    "esp-gcm 128": (20, 0),
    "esp-chacha20-poly1305": (36, 0),
    "esp-aes 256 esp-sha256-hmac": (32, 32),
    "esp-null esp-sha-hmac": (0, 20),
}


def inner_packet(n: int, size: int = 60) -> bytes:
    payload = struct.pack("!I", n % M32) + os.urandom(size - 32)
    return ipv4("10.0.0.1", "10.1.0.1", IPPROTO_UDP, udp(5000, 53, payload), ident=n)


@dataclass
class Receiver:
    """What the receiver's window holds, to predict the reason for a flipped number."""

    top: int
    seen: set[int]
    esn: bool

    def infer(self, seql: int) -> int | None:  # RFC 4303 A2.1
        tl, th = self.top % M32, self.top >> 32
        bottom = (tl - WINDOW + 1) % M32
        if tl >= WINDOW - 1:
            seqh = th if seql >= bottom else th + 1
        else:
            seqh = th - 1 if seql >= bottom else th
        return seqh << 32 | seql if 0 <= seqh < M32 else None

    def reason_for_seq(self, seql: int) -> str:
        s = self.infer(seql) if self.esn else seql
        if s is None or s == 0:
            return "replay_old"
        if s > self.top:
            return "auth_failed"
        if self.top - s >= WINDOW:
            return "replay_old"
        if s in self.seen:
            return "replay_dup"
        return "auth_failed"


def setup(transform: str, esn: bool, base: int, size: int):
    """Sender and receiver; packets base+1 .. base+40 sealed, most of them received."""
    key_len, auth_len = TRANSFORMS[transform]
    key, auth = os.urandom(key_len), os.urandom(auth_len) or None
    a, b = Dataplane(), Dataplane()
    out = a.add_sa(spi=0x1001, direction="out", transform=transform, key=key, auth_key=auth,
                   local="192.0.2.1", peer="192.0.2.2", esn=esn)
    inb = b.add_sa(spi=0x1001, direction="in", transform=transform, key=key, auth_key=auth,
                   local="192.0.2.2", peer="192.0.2.1", esn=esn, replay_window=WINDOW)
    set_seq(out, base)
    set_seq(inb, base)  # an empty window with its top at base
    inners = {base + i: inner_packet(base + i, size) for i in range(1, 41)}
    sealed = {s: a.encap(out, p) for s, p in inners.items()}
    for s in sealed:
        assert struct.unpack("!I", sealed[s][OUTER + 4:OUTER + 8])[0] == s % M32
    targets = (base + 9, base + 24)
    received = [s for s in sorted(sealed) if s <= base + 27 and s not in targets]
    for s in received:
        assert b.decap(sealed[s]) == inners[s]
    rx = Receiver(top=base + 27, seen=set(received), esn=esn)
    return b, inb, sealed, inners, targets, rx


def flip_all(b: Dataplane, pkt: bytes, rx: Receiver) -> dict[str, int]:
    """Flip every bit of the ESP part of pkt; check each verdict. Returns reason counts."""
    esp_len = len(pkt) - OUTER
    seql = struct.unpack("!I", pkt[OUTER + 4:OUTER + 8])[0]
    flipped, expected = [], []
    for bit in range(esp_len * 8):
        i, mask = OUTER + bit // 8, 0x80 >> (bit % 8)
        q = bytearray(pkt)
        q[i] ^= mask
        flipped.append(bytes(q))
        if bit < 32:
            expected.append("unknown_spi")
        elif bit < 64:
            expected.append(rx.reason_for_seq(seql ^ (1 << (63 - bit))))
        else:
            expected.append("auth_failed")
    counts: dict[str, int] = {}
    for start in range(0, len(flipped), 256):
        results = b.decap_batch(flipped[start:start + 256])
        for j, r in enumerate(results, start=start):
            assert isinstance(r, DropError), f"bit {j} of the ESP part was accepted"
            assert r.reason == expected[j], (j, r.reason, expected[j])
            counts[r.reason] = counts.get(r.reason, 0) + 1
    return counts


CASES = [(t, False, 1000) for t in TRANSFORMS] + [
    ("esp-gcm 128", True, M32 - 15),  # ESN, the window spanning the 2^32 boundary
    ("esp-aes 256 esp-sha256-hmac", True, 3 * M32 - 15),
    ("esp-null esp-sha-hmac", True, M32 - 15),
]


@pytest.mark.parametrize("size", [60, 1400], ids=["small", "big"])
@pytest.mark.parametrize(("transform", "esn", "base"), CASES,
                         ids=[f"{t}-{'esn' if e else '32'}" for t, e, _ in CASES])
def test_every_bit_flip_is_rejected(transform, esn, base, size):
    b, inb, sealed, inners, targets, rx = setup(transform, esn, base, size)
    before = b.stats(inb)
    assert before["seq"] == rx.top
    total: dict[str, int] = {}
    for t in targets:
        for k, v in flip_all(b, sealed[t], rx).items():
            total[k] = total.get(k, 0) + v
    after = b.stats(inb)
    assert after["seq"] == before["seq"], "a rejected packet moved the window"
    for name in ("packets", "bytes", "decaps", "decrypt", "verify", "lifetime_bytes",
                 "lifetime_packets"):
        assert after[name] == before[name], name
    sa_drops = {k: v for k, v in total.items() if k != "unknown_spi"}
    assert after["drops"] == sa_drops
    assert total["unknown_spi"] == 32 * len(targets)
    assert b.global_drops()["in"]["unknown_spi"] == 32 * len(targets)
    assert total["auth_failed"] > 0
    if not esn:  # the chosen numbers make flips land left of the window and on duplicates
        assert total["replay_old"] > 0 and total["replay_dup"] > 0
    # the genuine packets still pass, once
    for t in targets:
        assert b.decap(sealed[t]) == inners[t]
        with pytest.raises(DropError) as e:
            b.decap(sealed[t])
        assert e.value.reason == "replay_dup"
    assert b.stats(inb)["seq"] == rx.top


@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_flips_of_a_fresh_packet_ahead_of_window(transform):
    """The packet under attack is the next one: every seq flip lands ahead, behind, or on
    received numbers; the window must end exactly where the genuine traffic left it."""
    b, inb, sealed, inners, targets, rx = setup(transform, False, 1000, 60)
    nxt = 1028
    counts = flip_all(b, sealed[nxt], rx)
    assert sum(counts.values()) == (len(sealed[nxt]) - OUTER) * 8
    assert b.stats(inb)["seq"] == 1027
    assert b.decap(sealed[nxt]) == inners[nxt]
    assert b.stats(inb)["seq"] == 1028


def test_truncated_icv_and_appended_bytes_rejected():
    b, inb, sealed, inners, targets, rx = setup("esp-gcm 128", False, 1000, 60)
    pkt = sealed[targets[0]]

    def with_len(p: bytes) -> bytes:
        q = bytearray(p)
        struct.pack_into("!H", q, 2, len(q))
        struct.pack_into("!H", q, 10, 0)
        struct.pack_into("!H", q, 10, checksum(bytes(q[:20])))
        return bytes(q)

    last_flipped = pkt[:-1] + bytes([pkt[-1] ^ 1])
    for bad in (with_len(pkt[:-4]), with_len(pkt + b"\0\0\0\0"), with_len(last_flipped)):
        with pytest.raises(DropError) as e:
            b.decap(bad)
        assert e.value.reason == "auth_failed"  # GCM: 4-byte alignment still holds
    assert b.stats(inb)["seq"] == rx.top
    assert b.decap(pkt) == inners[targets[0]]
