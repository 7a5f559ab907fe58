#!/usr/bin/env python3
"""The IKE responder's own cost, in one process, without sockets: CPU time per IKE SA +
first Child SA establishment, a profile of that work, and memory per established IKE SA.

Two espd IKE engines (PSK, aes256gcm16-prfsha384-x25519, ESP esp-gcm 256, FQDN IDs, as
in bench_ike.py) exchange datagrams through an in-memory transport: each datagram the
initiator sends is handed to the responder's ``receive`` directly and vice versa, so
the numbers are the engines' Python and crypto work only (no kernel, no event loop
turns). Only the responder's ``receive`` calls are timed (time.process_time, which a
loaded machine does not inflate the way it inflates wall time), per establishment,
reported as the median of --rounds rounds of --count establishments.

  --profile     cProfile of the responder's receive calls, by own time and by
                cumulative time, and the share of the crypto primitives (OpenSSL calls
                through the cryptography package) in the responder's CPU time
  --sas N       N IKE SAs kept up at the responder (the initiator forgets its side):
                the responder process's RSS delta per IKE SA (the initiator's side is
                freed, so this is close to the responder's own, allocator slack included)
  --trace       with --sas: tracemalloc's bytes per IKE SA (everything Python allocated
                for them: engine state, keys, the owner's record), by source line
  --owner       "fake" (default: a minimal owner recording a handle per Child SA) or
                "dataplane" (espd's real SaOwner over a real data plane, no workers,
                as ike_standalone.py: each Child SA with its OpenSSL contexts)

Both engines' snapshot() is taken after every datagram each receives, outside the timed
part, and the responder's last one is kept, as the daemon does (service/daemon.py: a new
View on every IKE event and owner change): that frees what the engine keeps for the next
snapshot (removed SAs in `_stale`) and counts the per-IKE-SA views the daemon holds.

    .venv/bin/python tests/bench/bench_ike_cpu.py [--rounds 5] [--count 200]
                     [--profile] [--sas 2000] [--owner fake|dataplane]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import heapq
import ipaddress
import json
import operator
import pstats
import sys
import tempfile
import time
import tracemalloc
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for path in (REPO / "tests", REPO / "daemon"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from benchreport import median  # noqa: E402  (tests/bench, beside this script)

from espd.ike import proposals as p  # noqa: E402
from espd.ike.engine.engine import IkeEngine  # noqa: E402
from espd.ike.engine.transport import Transport  # noqa: E402
from espd.ike.sa.ike_sa import Endpoint, IkeState  # noqa: E402
from espd.ike.settings import (  # noqa: E402
    ChildPolicy,
    Identity,
    IkeProposal,
    IkeSettings,
    Peer,
    PresharedKey,
)
from espd.keying.owner import ChildSaKeys  # noqa: E402
from espd.policy.selectors import TrafficSelector  # noqa: E402

A, B = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")
SUITE = IkeProposal(((p.ENCR_AES_GCM_16, 256),), (p.PRF_HMAC_SHA2_384,), (), (31,))
CRYPTO_MODULES = ("cryptography", "_hashlib", "hmac", "_openssl", "_rust")


class Wire(Transport):
    """Datagrams into a shared queue; the pump hands each to the other engine."""

    def __init__(self, queue: deque, me: str) -> None:
        self.queue, self.me = queue, me
        self.receiver = None

    def attach(self, receiver, intake=None) -> None:
        self.receiver = receiver

    def send(self, local: Endpoint, remote: Endpoint, data: bytes) -> None:
        self.queue.append((self.me, data, local, remote))

    def close(self) -> None:
        pass


class Handle:
    __slots__ = ("entry", "spi_in", "spi_out")

    def __init__(self, keys) -> None:
        self.entry, self.spi_in, self.spi_out = keys.entry, keys.spi_in, keys.spi_out


class LeanOwner:
    """Keeps one small handle per Child SA: the engine's memory is what is measured."""

    def __init__(self) -> None:
        self.live: dict[int, Handle] = {}
        self.installs = 0

    def install_child(self, keys) -> Handle:
        handle = Handle(keys)
        self.live[keys.spi_in] = handle
        self.installs += 1
        return handle

    def rekey_child(self, old, keys, *, switch: bool = True) -> Handle:
        return self.install_child(keys)

    def switch_child(self, handle) -> bool:
        return True

    def retire_child(self, handle, linger: float = 0.0) -> None:
        self.live.pop(handle.spi_in, None)

    def child_usage(self, handle) -> dict:
        return {"last_in": None}


def dataplane_owner(state_dir: str):
    from support.ike_standalone import dataplane_owner as make

    return make({"state_dir": state_dir, "local_net": "10.2.0.0/16",
                 "remote_net": "10.1.0.0/16"})


class Pair:
    def __init__(self, owner: str) -> None:
        self.loop = asyncio.new_event_loop()  # never run: timers are only scheduled
        self.queue: deque = deque()
        key = bytearray(b"bench-ike-cpu-0123456789abcdef")
        common = dict(proposals=(SUITE,), retransmit_timeout=30.0, half_open_timeout=60.0)
        self.policy = ChildPolicy("vpn", 10, (B,), A, (("esp-gcm 256", "tunnel"),),
                                  (TrafficSelector.from_network("10.1.0.0/16"),),
                                  (TrafficSelector.from_network("10.2.0.0/16"),),
                                  start="manual")
        a = IkeSettings(peers=(Peer(B, PresharedKey(key, key),
                                    remote_id=Identity("fqdn", "gwb"),
                                    local_id=Identity("fqdn", "gwa")),),
                        children=(self.policy,), **common)
        b = IkeSettings(peers=(Peer(A, PresharedKey(key, key),
                                    remote_id=Identity("fqdn", "gwa"),
                                    local_id=Identity("fqdn", "gwb")),),
                        children=(ChildPolicy("vpn", 10, (A,), B,
                                              (("esp-gcm 256", "tunnel"),),
                                              (TrafficSelector.from_network("10.2.0.0/16"),),
                                              (TrafficSelector.from_network("10.1.0.0/16"),),
                                              start="manual"),), **common)
        self.init_owner = LeanOwner()
        self.tmp = None
        if owner == "dataplane":
            self.tmp = tempfile.TemporaryDirectory(prefix="bench-ike-cpu-")
            self.resp_owner = dataplane_owner(self.tmp.name)
        else:
            self.resp_owner = LeanOwner()
        self.initiator = IkeEngine(a, self.init_owner, Wire(self.queue, "i"), self.loop,
                                   child_sa_keys=ChildSaKeys)
        self.responder = IkeEngine(b, self.resp_owner, Wire(self.queue, "r"), self.loop,
                                   child_sa_keys=ChildSaKeys)
        self.responder_cpu = 0.0
        self.view = self.responder.snapshot()  # what the daemon's View holds

    def pump(self, profile: cProfile.Profile | None = None, timed: bool = True) -> None:
        clock = time.process_time
        while self.queue:
            who, data, local, remote = self.queue.popleft()
            if who == "i" and not timed:
                self.responder.receive(data, remote, local)
            elif who == "i":  # to the responder: timed
                if profile is not None:
                    profile.enable()
                start = clock()
                # through operator.call, a C function nothing else calls: what callgrind
                # counts with --toggle-collect=_operator_call is the responder's alone
                operator.call(self.responder.receive, data, remote, local)
                self.responder_cpu += clock() - start
                if profile is not None:
                    profile.disable()
            else:
                self.initiator.receive(data, remote, local)
                self.initiator.snapshot()
                continue
            self.view = self.responder.snapshot()

    def establish(self, count: int, profile=None, keep: bool = False) -> float:
        """``count`` establishments one after another; the responder's CPU seconds."""
        self.responder_cpu = 0.0
        for _ in range(count):
            sa = self.initiator.initiate(self.policy)
            self.pump(profile)
            if sa.state != IkeState.ESTABLISHED:
                raise RuntimeError(f"not established: {sa.state} {sa.failure} "
                                   f"{dict(self.responder.counters)}")
            if keep:  # the initiator forgets its side; the responder's stays up
                self.initiator.remove_ike_sa(sa)
            else:
                self.initiator.delete_ike_sa(sa)
                self.pump(timed=False)
            self.initiator.snapshot()
            self.loop_turn()
        self.loop_turn(force=True)
        return self.responder_cpu

    def loop_turn(self, force: bool = False) -> None:
        """What a running loop's turn does with cancelled timers (BaseEventLoop._run_once:
        dropped once they are more than half of at least 100); this loop never runs, and
        without it the initiator's cancelled TimerHandles piled up until the end of
        `establish`, inflating the RSS peak (ours: private ok)."""
        loop = self.loop
        cancelled = loop._timer_cancelled_count
        if force or (len(loop._scheduled) > 100 and cancelled * 2 > len(loop._scheduled)):
            kept = []
            for handle in loop._scheduled:
                if handle.cancelled():
                    handle._scheduled = False
                else:
                    kept.append(handle)
            heapq.heapify(kept)
            loop._scheduled, loop._timer_cancelled_count = kept, 0

    def close(self) -> None:
        self.initiator.close()
        self.responder.close()
        self.loop.close()
        if self.tmp is not None:
            self.tmp.cleanup()


def crypto_floor(count: int) -> float:
    """CPU seconds per establishment of the responder's cryptographic primitives alone,
    the calls the engine makes for one (counted with --profile): X25519 key generation and
    exchange, 14 HMAC-SHA-384 (SKEYSEED, prf+ for SK_* and KEYMAT, the AUTH payloads, the
    NAT detection hashes are SHA-1), two AES-GCM-256 contexts, one open, one seal, and the
    random SPIs and nonce."""
    import hashlib
    import hmac
    import os
    import secrets

    from cryptography.hazmat.primitives.asymmetric import x25519
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    peer = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
    key, data, nonce = bytes(48), bytes(120), bytes(12)
    sealed = AESGCM(bytes(32)).encrypt(nonce, bytes(280), bytes(32))
    start = time.process_time()
    for _ in range(count):
        private = x25519.X25519PrivateKey.generate()
        private.public_key().public_bytes_raw()
        private.exchange(x25519.X25519PublicKey.from_public_bytes(peer))
        for _ in range(14):
            hmac.digest(key, data, "sha384")
        for _ in range(4):
            hashlib.sha1(data).digest()
        AESGCM(bytes(32)).decrypt(nonce, sealed, bytes(32))
        AESGCM(bytes(32)).encrypt(nonce, bytes(200), bytes(32))
        secrets.token_bytes(32), secrets.token_bytes(8), os.urandom(4)
    return (time.process_time() - start) / count


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def crypto_share(stats: pstats.Stats) -> tuple[float, float]:
    """(seconds in crypto primitives, total seconds) by own time of each function."""
    crypto = total = 0.0
    for (filename, _line, name), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():
        total += tt
        if any(m in filename for m in CRYPTO_MODULES) or (
                filename == "~" and any(m in name for m in (
                    "_hashlib", "openssl", "Hmac", "X25519", "AESGCM", "derive",
                    "exchange", "encrypt", "decrypt", "generate", "public_bytes",
                    "from_public_bytes", "hmac", "digest"))):
            crypto += tt
    return crypto, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--sas", type=int, default=0)
    parser.add_argument("--trace", action="store_true",
                        help="with --sas: tracemalloc's bytes per IKE SA, by line")
    parser.add_argument("--owner", choices=("fake", "dataplane"), default="fake")
    parser.add_argument("--no-floor", action="store_true", help="no crypto floor "
                        "(for callgrind: valgrind --tool=callgrind --collect-atstart=no "
                        "--toggle-collect=_operator_call counts the responder's instructions)")
    parser.add_argument("--json")
    args = parser.parse_args()
    results: dict = {}

    pair = Pair(args.owner)
    try:
        pair.establish(20)  # warm-up: imports, caches
        rounds = [pair.establish(args.count) / args.count * 1e6 for _ in range(args.rounds)]
        results["us_per_establishment"] = rounds
        print(f"responder CPU per IKE SA + Child SA establishment: {median(rounds):.0f} us "
              f"(median of {args.rounds} x {args.count}; rounds "
              f"{', '.join(f'{r:.0f}' for r in rounds)})", flush=True)
        if not args.no_floor:
            floor = [crypto_floor(args.count) * 1e6 for _ in range(args.rounds)]
            results["crypto_floor_us"] = floor
            print(f"crypto primitives alone: {median(floor):.0f} us per establishment "
                  f"({median(floor) / median(rounds):.0%} of the responder's CPU time)",
                  flush=True)
        if args.profile:
            profile = cProfile.Profile()
            pair.establish(args.count, profile)
            stats = pstats.Stats(profile)
            crypto, total = crypto_share(stats)
            results["crypto_share"] = crypto / total if total else None
            print(f"profile: {total / args.count * 1e6:.0f} us per establishment under "
                  f"cProfile, crypto primitives {crypto / total:.0%} of it")
            stats.sort_stats("tottime").print_stats(args.top)
            stats.sort_stats("cumulative").print_stats(args.top)
        if args.sas:
            gc.collect()
            if args.trace:
                tracemalloc.start()
                before = tracemalloc.take_snapshot()
            before_rss = rss()
            pair.establish(args.sas, keep=True)
            gc.collect()
            after_rss = rss()
            up = len(pair.responder.sas)
            results["memory"] = {"sas": up, "rss_bytes_per_sa": (after_rss - before_rss) / up}
            print(f"{up} IKE SAs up at the responder ({args.owner} owner): RSS "
                  f"{before_rss / 2**20:.1f} -> {after_rss / 2**20:.1f} MiB, "
                  f"{(after_rss - before_rss) / up:.0f} bytes per IKE SA"
                  + (" (tracemalloc's own overhead included)" if args.trace else ""))
            if args.trace:
                diff = tracemalloc.take_snapshot().compare_to(before, "lineno")
                grown = sum(d.size_diff for d in diff)
                results["memory"]["tracemalloc_bytes_per_sa"] = grown / up
                print(f"tracemalloc: {grown / up:.0f} bytes per IKE SA allocated by Python "
                      "(OpenSSL's own allocations not included), by line:")
                for stat in diff[:args.top]:
                    print(f"  {stat.size_diff / up:8.0f} B/SA  {stat.traceback}")
                tracemalloc.stop()
    finally:
        pair.close()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
