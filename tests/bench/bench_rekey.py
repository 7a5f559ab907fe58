#!/usr/bin/env python3
"""The data plane's packet rate through Child SA rekeys: two espd daemons keyed by IKEv2,
a steady UDP flow between their hosts, and the receiver's count per 100 ms.

  [hostA] -- [gwA espd] ==IKEv2 + ESP== [gwB espd] -- [hostB: iperf3 -s]

Two runs of --seconds each, side by side in one process, alternating --rounds times:
  - "steady": Child SA lifetime 3600 s, so no rekey during the run;
  - "rekeying": lifetime --lifetime s on both gateways, so each rekeys on its own timer
    (85-90% of the lifetime) about every --lifetime * 0.9 s, and some rekeys collide.
iperf3 sends UDP at --rate (datagrams of --size bytes); the iperf3 server counts what
arrived, and lost packets, per 0.1 s interval. Reported per kind: the median interval's
rate, the lowest interval's rate, the lost packets in all, and the rekeys (log lines
"rekeyed" of gwA). The target: no dip beyond one batch (the lowest interval within a few
percent of the median of the steady run) and no packet lost.

Run as root:  .venv/bin/python tests/bench/bench_rekey.py [--rounds 3] [--seconds 15]
              [--lifetime 4] [--rate 200M] [--size 1000] [--json results.json]
Everything created (namespaces, daemons, iperf3, files in /tmp) is named br-<pid>-... or
known by pid, and removed at the end, also after a failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
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

from support import netns  # noqa: E402

PORT = 5201


def config(side: str, psk: str, tmp: Path, lifetime: int) -> str:
    local, peer = ("192.0.2.1", "192.0.2.2") if side == "a" else ("192.0.2.2", "192.0.2.1")
    mine, theirs = ("10.1.0.0/16", "10.2.0.0/16") if side == "a" else ("10.2.0.0/16",
                                                                       "10.1.0.0/16")
    return f"""
[daemon]
interface = "espd0"
local = "{local}"
workers = 1
control_socket = "{tmp}/gw{side}.sock"
metrics = ""
state_dir = "{tmp}/gw{side}-state"

[access_list.LAN]
rules = ["permit ip {mine} {theirs}"]

[transform_set.GCM]
transforms = ["esp-gcm 256"]

[ike]
proposals = ["aes256gcm16-prfsha384-x25519"]

[ike_peer.other]
address = "{peer}"
psk = "{psk}"

[[crypto_map]]
name = "VPN"
seq = 10
keying = "ike"
peer = "{peer}"
match_address = "LAN"
transform_sets = ["GCM"]
encapsulation = "udp"
start = "{'immediate' if side == 'a' else 'manual'}"
lifetime = {{ seconds = {lifetime} }}
"""


def kernel_drops(topo) -> dict[str, int]:
    """Drops the kernel counted on every device of the path (a TUN queue that overflowed
    while espd's worker had no CPU shows here, not in espd's counters)."""
    out = {}
    for ns in (topo.host_a, topo.gw_a, topo.gw_b, topo.host_b):
        r = subprocess.run(netns.exec_argv(ns, ["ip", "-s", "-j", "link"]),
                           capture_output=True, text=True, timeout=10)
        for link in json.loads(r.stdout or "[]"):
            stats = link.get("stats64", {})
            for way in ("rx", "tx"):
                n = stats.get(way, {}).get("dropped", 0)
                if n:
                    out[f"{ns.rsplit('-', 1)[-1]} {link['ifname']} {way}_dropped"] = n
    r = subprocess.run(netns.exec_argv(topo.host_b, ["cat", "/proc/net/snmp"]),
                       capture_output=True, text=True, timeout=10)
    udp = [line.split()[1:] for line in r.stdout.splitlines() if line.startswith("Udp:")]
    counters = dict(zip(udp[0], udp[1], strict=True)) if len(udp) == 2 else {}
    if int(counters.get("RcvbufErrors", 0)):
        out["hb udp RcvbufErrors (the receiver was late)"] = int(counters["RcvbufErrors"])
    return out


def one_run(kind: str, lifetime: int, args: argparse.Namespace) -> dict:
    tag = f"br-{os.getpid()}-{secrets.randbelow(10**5)}"
    topo = netns.Topology(tag=tag, ipv6=False)
    tmp = Path(tempfile.mkdtemp(prefix=f"{tag}-"))
    psk = secrets.token_hex(16)
    daemons: list[netns.EspdProcess] = []
    server = None
    with topo:
        try:
            for side, ns in (("a", topo.gw_a), ("b", topo.gw_b)):
                path = tmp / f"gw{side}.toml"
                path.write_text(config(side, psk, tmp, lifetime))
                path.chmod(0o600)
                daemon = netns.EspdProcess(ns, str(path), str(tmp / f"gw{side}.sock"),
                                           str(tmp / f"gw{side}.log"), f"gw{side}")
                daemons.append(daemon)
                daemon.start()
            for daemon in daemons:
                daemon.wait_ready(timeout=30)
            deadline = time.monotonic() + 15
            while netns.ping(topo.host_a, netns.HOST_B4, count=1, timeout=0.5).received == 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("the tunnel did not come up:\n" + daemons[0].log())
            server = subprocess.Popen(netns.exec_argv(topo.host_b, [
                "iperf3", "-s", "-1", "-J", "-i", "0.1", "-p", str(PORT), "-B", netns.HOST_B4]),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)
            before = daemons[0].log().count(" rekeyed: ")
            client = subprocess.run(netns.exec_argv(topo.host_a, [
                "iperf3", "-c", netns.HOST_B4, "-p", str(PORT), "-u", "-b", args.rate,
                "-l", str(args.size), "-t", str(args.seconds), "-i", "0.1", "-J",
                "--get-server-output"]), capture_output=True, text=True,
                timeout=args.seconds + 30)
            rekeys = daemons[0].log().count(" rekeyed: ") - before
            drops = kernel_drops(topo)  # where a loss happened, if not in espd
            # what each espd dropped, by reason
            for daemon in daemons:
                for direction, reasons in daemon.state()["drops"].items():
                    for reason, n in reasons.items():
                        if n:
                            key = f"{daemon.name} {direction} {reason}"
                            drops[key] = drops.get(key, 0) + n
            data = json.loads(client.stdout)
            if data.get("error"):
                raise RuntimeError(f"iperf3: {data['error']}")
            intervals = (data.get("server_output_json") or {}).get("intervals", [])
            if not intervals:
                raise RuntimeError("iperf3 server gave no intervals: " + client.stdout[-800:])
            rows = [i["sum"] for i in intervals if i["sum"].get("seconds", 0) > 0.05]
            rows = rows[2:-1]  # iperf3's start-up and its last, partial interval
            pps = [(r["packets"] - r.get("lost_packets", 0)) / r["seconds"] for r in rows]
            lost = sum(max(0, r.get("lost_packets", 0)) for r in rows)
            return {"kind": kind, "lifetime": lifetime, "rekeys": rekeys,
                    "median_kpps": median(pps) / 1e3, "min_kpps": min(pps) / 1e3,
                    "lost": lost, "intervals": len(rows), "espd_drops": drops}
        finally:
            if server is not None and server.poll() is None:
                server.terminate()
                server.wait(5)
            for daemon in daemons:
                daemon.stop()
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--lifetime", type=int, default=4)
    parser.add_argument("--rate", default="200M")
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_rekey: run as root (namespaces)", file=sys.stderr)
        return 2
    results = []
    for round_ in range(args.rounds):
        order = [("steady", 3600), ("rekeying", args.lifetime)]
        if round_ % 2:
            order.reverse()
        for kind, lifetime in order:
            result = one_run(kind, lifetime, args)
            results.append(result)
            print(f"round {round_ + 1} {kind}: {fmt(result['median_kpps'])} kpps median, "
                  f"{fmt(result['min_kpps'])} lowest 0.1 s, {result['lost']} lost, "
                  f"{result['rekeys']} rekeys; drops: {result['espd_drops'] or 'none'}",
                  flush=True)
    rows = []
    for kind in ("steady", "rekeying"):
        mine = [r for r in results if r["kind"] == kind]
        rows.append([kind, fmt(median([r["median_kpps"] for r in mine])),
                     fmt(median([r["min_kpps"] for r in mine])),
                     str(sum(r["lost"] for r in mine)),
                     str(sum(r["rekeys"] for r in mine))])
    steady = median([r["median_kpps"] for r in results if r["kind"] == "steady"])
    lowest = median([r["min_kpps"] for r in results if r["kind"] == "rekeying"])
    print(f"\nUDP {args.rate} of {args.size}-byte datagrams, {args.rounds} rounds of "
          f"{args.seconds} s each, 0.1 s intervals at the receiver")
    print("\n".join(table(["run", "median kpps", "lowest interval kpps", "lost packets",
                           "rekeys (gwA)"], rows)))
    if steady:
        print(f"\nlowest interval while rekeying / steady median: {lowest / steady:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
