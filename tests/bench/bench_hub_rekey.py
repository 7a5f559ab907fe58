#!/usr/bin/env python3
"""The cost of one Child SA rekey while 10 and while 10,000 tunnels are up (issue 13, "A
10,000-tunnel hub": at 10,000 at most 2x the cost at 10). No network: espd's real SA owner
(keying/owner.py) over a real data plane (no workers), as a hub has it.

Per tunnel count N, in a fresh process: one crypto map entry per peer (its own policy and
one PROTECT rule 10.0.0.0/16 -> the peer's /24, applied as a plan), then N negotiated Child
SA pairs installed with ``install_child`` (esp-gcm 256, one peer address each). Then
--rekeys times, over random tunnels, one rekey the way the IKE engine performs it as the
initiator (exchanges/child_setup.py, engine.drop_child):

  rekey     ``rekey_child(old, keys, switch=True)``: the new inbound SA live, then the
            entry's outbound slot switched to the new outbound SA (SA creation and key
            schedules included: they are part of every rekey);
  retire    ``retire_child(old, linger=REKEYED_LINGER)``: the old pair lingers;
  linger    the ``housekeeping`` turn that retires it once its linger is over (the
            linger is shortened to 1 us so the next turn does it).

The owner's ``on_change`` does what the daemon's does (service/daemon.py
``publish_view``): a new View-like pair of the owner's snapshot and the IKE engine's
(``IkeEngine.snapshot``), the engine holding N established IKE SAs, one per tunnel, each
with its Child SA; before each rekey the rekeyed tunnel's IKE SA is touched, as the
exchange that rekeys it does. So a rekey includes the daemon's two View replacements.
``--ike-view full`` does instead what the daemon did before the engine's views were
cached per IKE SA: every view rebuilt and turned into plain data on each change.

Each phase is timed with time.process_time_ns (CPU) and time.perf_counter_ns (wall); the
table shows the median and p99 of their sum per rekey, the ratio at 10,000 vs 10, and each
phase's median. Also: the owner's install time per tunnel, RSS per installed Child SA pair
(VmRSS after the installs minus before, / N), and one idle ``housekeeping`` turn (the
daemon runs one per second whatever happens; not part of a rekey), and what a reader
(show, metrics) pays to turn the View into plain data (the tuples and dicts of every SA:
on its own thread, once per request).

    .venv/bin/python tests/bench/bench_hub_rekey.py [--tunnels 10,10000] [--rekeys 200]
        [--ike-view incremental|full] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchreport import fmt, median, table  # tests/bench, beside this script

REPO = Path(__file__).resolve().parents[2]
for path in (REPO / "tests", REPO / "daemon"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

MAP = "HUB"
PHASES = ("rekey", "retire", "linger")
LINGER = 1e-6  # s; the engine's REKEYED_LINGER is 2 s: shortened so the next turn retires


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class _NoTransport:
    """The IKE engine's transport for a hub that exchanges nothing (no socket)."""

    def attach(self, receiver, intake=None) -> None:
        pass

    def send(self, local, remote, data) -> None:
        pass

    def close(self) -> None:
        pass


def ike_hub(n: int):
    """An IKE engine holding n established IKE SAs with one installed Child SA each (made
    directly, no exchange: only what show and the metrics read of them matters here)."""
    import asyncio
    import ipaddress

    from support.ike_pair import settings_pair

    from espd.ike.engine.engine import IkeEngine
    from espd.ike.sa.child_sa import ChildSa, ChildState
    from espd.ike.sa.ike_sa import Endpoint, IkeSa, IkeState

    loop = asyncio.new_event_loop()
    engine = IkeEngine(settings_pair(500)[0], owner=None, transport=_NoTransport(),
                       loop=loop, child_sa_keys=object)
    sas = []
    for i in range(n):
        sa = IkeSa(os.urandom(8), os.urandom(8), True,
                   Endpoint(ipaddress.ip_address("192.0.2.1"), 500),
                   Endpoint(ipaddress.ip_address(f"198.{18 + (i >> 16)}.{(i >> 8) & 255}."
                                                 f"{i & 255}"), 500),
                   IkeState.ESTABLISHED, ident=engine.new_ident(), established=1.0)
        child = ChildSa((MAP, i + 1), 0x100 + i, 0x100 + i, transform="esp-gcm 256",
                        state=ChildState.INSTALLED, created=1.0)
        sa.children[child.spi_in] = child
        engine.register(sa)
        sas.append(sa)
    engine.resync()
    return engine, sas


def one(n: int, rekeys: int, seed: int, profile: str | None, ike_view: str) -> dict:
    """One tunnel count, in this process; the measurements as a dict (us, bytes)."""
    from espd.dataplane import Dataplane, Rule
    from espd.ike.engine.view import plain_state
    from espd.keying.manual import ManualKeying
    from espd.keying.owner import ChildSaKeys, SaOwner
    from espd.keying.sequence_store import SequenceStore
    from espd.policy.plan import Plan, RuleSpec

    rng = random.Random(seed)
    spis = iter(range(0x10000, 2**32))

    def peer(i: int) -> str:  # 198.18.0.0/15 (RFC 2544), one address per tunnel
        return f"198.{18 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"

    def remote_net(i: int) -> str:
        return f"10.{128 + (i >> 8)}.{i & 255}.0/24"

    def keys(i: int) -> ChildSaKeys:
        return ChildSaKeys(
            entry=(MAP, i + 1), ike_sa=f"ike-{i}", transform="esp-gcm 256", mode="tunnel",
            encap="esp", local="192.0.2.1", peer=peer(i), spi_in=next(spis),
            key_in=bytearray(os.urandom(36)), auth_key_in=None, spi_out=next(spis),
            key_out=bytearray(os.urandom(36)), auth_key_out=None)

    with tempfile.TemporaryDirectory(prefix="espd-hub-rekey-") as state:
        owner = SaOwner(Dataplane(), SequenceStore(state))
        rules = tuple(RuleSpec(Rule.from_prefixes("10.0.0.0/16", remote_net(i), policy=i + 1),
                               MAP, i + 1, f"PEER{i}", 0, "permit ip any any", True)
                      for i in range(n))
        ManualKeying(owner).apply(Plan(sas=(), rules=rules,
                                       routes=tuple(remote_net(i) for i in range(n)),
                                       unroutable=()))
        batch = [keys(i) for i in range(n)]
        gc.collect()
        rss_before = rss_kib()
        t0 = time.perf_counter_ns()
        handles = [owner.install_child(k) for k in batch]
        install_ns = time.perf_counter_ns() - t0
        del batch
        gc.collect()
        rss_after = rss_kib()
        assert len(owner.snapshot.sas) == 2 * n
        engine, ike_sas = ike_hub(n)
        views: list[tuple] = []
        if ike_view == "full":  # the daemon before: O(IKE SAs) on the loop per change
            owner.on_change = lambda snapshot: views.append(
                (snapshot, plain_state(engine.resync())))
        else:
            owner.on_change = lambda snapshot: views.append((snapshot, engine.snapshot()))

        idle = []
        for _ in range(20):
            c = time.process_time_ns()
            owner.housekeeping()
            idle.append(time.process_time_ns() - c)

        cpu: dict[str, list[int]] = {p: [] for p in PHASES}
        wall: dict[str, list[int]] = {p: [] for p in PHASES}
        prof = None
        if profile:
            import cProfile

            prof = cProfile.Profile()
        for _ in range(rekeys):
            i = rng.randrange(n)
            new = keys(i)
            old = handles[i]
            engine.touch(ike_sas[i])  # the CREATE_CHILD_SA exchange did, on its IKE SA
            if prof:
                prof.enable()
            c0, w0 = time.process_time_ns(), time.perf_counter_ns()
            handles[i] = owner.rekey_child(old, new, switch=True)
            c1, w1 = time.process_time_ns(), time.perf_counter_ns()
            owner.retire_child(old, linger=LINGER)  # the engine passes REKEYED_LINGER
            c2, w2 = time.process_time_ns(), time.perf_counter_ns()
            owner.housekeeping()
            c3, w3 = time.process_time_ns(), time.perf_counter_ns()
            if prof:
                prof.disable()
            for p, dc, dw in zip(PHASES, (c1 - c0, c2 - c1, c3 - c2),
                                 (w1 - w0, w2 - w1, w3 - w2), strict=True):
                cpu[p].append(dc)
                wall[p].append(dw)
        assert len(owner.snapshot.sas) == 2 * n, "a rekeyed pair was not retired"
        assert len(views) >= 2 * rekeys, "the daemon's View was not replaced per change"
        sa_view, ike_view = views[-1]
        c = time.process_time_ns()
        plain = ike_view if isinstance(ike_view, dict) else plain_state(ike_view)
        assert len(sa_view.sas) == 2 * n and len(plain["sas"]) == n
        reader_ns = time.process_time_ns() - c
        if prof:
            prof.dump_stats(f"{profile}.{n}")
    total_cpu = [sum(x) for x in zip(*(cpu[p] for p in PHASES), strict=True)]
    total_wall = [sum(x) for x in zip(*(wall[p] for p in PHASES), strict=True)]
    us = 1e-3
    return {
        "tunnels": n, "rekeys": rekeys,
        "cpu_median_us": median(total_cpu) * us, "cpu_p99_us": percentile(total_cpu, .99) * us,
        "wall_median_us": median(total_wall) * us,
        "wall_p99_us": percentile(total_wall, .99) * us,
        "phase_cpu_median_us": {p: median(cpu[p]) * us for p in PHASES},
        "install_us_per_tunnel": install_ns * us / n,
        "rss_bytes_per_pair": (rss_after - rss_before) * 1024 / n,
        "rss_mib": [rss_before / 1024, rss_after / 1024],
        "housekeeping_idle_us": median(idle) * us,
        "reader_us": reader_ns * us,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tunnels", default="10,10000")
    parser.add_argument("--rekeys", type=int, default=200)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--profile", help="cProfile the timed rekeys into PREFIX.<tunnels>")
    parser.add_argument("--ike-view", choices=("incremental", "full"), default="incremental")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child run
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.rekeys, args.seed, args.profile, args.ike_view)))
        return 0
    counts = [int(x) for x in args.tunnels.split(",")]
    results = []
    for n in counts:  # each in a fresh process: its RSS and heap start alike
        cmd = [sys.executable, __file__, "--one", str(n), "--rekeys", str(args.rekeys),
               "--seed", str(args.seed), "--ike-view", args.ike_view] + (
                   ["--profile", args.profile] if args.profile else [])
        results.append(json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                 text=True).stdout))
    low, high = results[0], results[-1]
    ratio = high["cpu_median_us"] / low["cpu_median_us"]
    print(f"Child SA rekey through the SA owner ({args.rekeys} rekeys over random tunnels; "
          f"us per rekey; IKE view {args.ike_view}; {os.cpu_count()} CPUs, kernel "
          f"{platform.release()})")
    print()
    head = ["tunnels", "CPU median", "CPU p99", "wall median", "wall p99",
            "rekey / retire / linger (CPU median)", "install/tunnel", "RSS/pair (B)",
            "idle housekeeping", "reader (one show)"]
    rows = [[str(r["tunnels"]), fmt(r["cpu_median_us"], 1), fmt(r["cpu_p99_us"], 1),
             fmt(r["wall_median_us"], 1), fmt(r["wall_p99_us"], 1),
             " / ".join(fmt(r["phase_cpu_median_us"][p], 1) for p in PHASES),
             fmt(r["install_us_per_tunnel"], 1), fmt(r["rss_bytes_per_pair"], 0),
             fmt(r["housekeeping_idle_us"], 1), fmt(r["reader_us"], 0)] for r in results]
    print("\n".join(table(head, rows)))
    print()
    verdict = "PASS" if ratio <= 2 else "MISS"
    print(f"{verdict}  rekey CPU at {high['tunnels']} vs {low['tunnels']} tunnels (median): "
          f"{ratio:.2f}x  target <= 2x")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results,
                                               "ratio": ratio}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
