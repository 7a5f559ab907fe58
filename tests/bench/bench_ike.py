#!/usr/bin/env python3
"""IKE establishment rate: espd's IKE engine against strongSwan charon 5.9.8 as the responder,
and memory per established IKE SA in espd's engine.

Two fresh namespaces (support.netns.Topology, no hosts used):

  [gwA 192.0.2.1 initiator: espd's IKE engine] ==UDP 500/4500== [gwB 192.0.2.2 responder]

The responder in gwB is, in turn, espd's engine (tests/support/ike_standalone.py with
espd's real SA owner over a real data plane, no workers: each Child SA gets its crypto
contexts and the PROTECT rule) and charon (kernel-libipsec, so it also installs each Child
SA in its userspace data plane and a route). The SAME initiator process drives both: espd's
engine, keeping --window IKE SAs in flight (charon blocks a peer with more than 5 half-open
SAs by default), each an IKE_SA_INIT + IKE_AUTH with the first Child SA, PSK,
aes256gcm16-prfsha384-x25519, ESP aes256gcm16. A round is --count establishments; the rate
is count / (first IKE_SA_INIT sent -> last Child SA installed at the initiator). After a
round the initiator deletes its IKE SAs and waits for the DELETE responses. Each round
runs both responders, each started fresh, in alternating order, on one initiator process.

Memory: a fresh espd responder's RSS (/proc/PID/status VmRSS) before and after --sas more IKE
SAs (each with its Child SA) that stay up, divided by --sas: everything the Python process
holds per IKE SA (engine state, keys, the owner's records, and the data plane's two SAs
with their OpenSSL contexts).

Run as root:  .venv/bin/python tests/bench/bench_ike.py [--rounds 5] [--count 300]
              [--window 4] [--sas 10000] [--json results.json]
Everything created (namespaces, processes, files in /tmp) is named bi-<pid>-... or known by
pid, and removed at the end, also after a failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchreport import fmt, median, table  # tests/bench, beside this script

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
for path in (TESTS, REPO / "daemon"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

IKE = "aes256gcm16-prfsha384-x25519"
ESP_CHARON, ESP_ESPD = "aes256gcm16", "esp-gcm 256"
GW_A, GW_B = "192.0.2.1", "192.0.2.2"
STANDALONE = TESTS / "support" / "ike_standalone.py"


# -- the initiator: runs inside gwA, one JSON line per command on stdout ------------------

async def initiator(conf: dict) -> None:
    from support.ike_pair import ChildSaKeys, FakeOwner
    from support.ike_standalone import PROPOSALS

    from espd.ike.engine.engine import IkeEngine
    from espd.ike.engine.transport import UdpTransport
    from espd.ike.sa.ike_sa import Endpoint
    from espd.ike.settings import (
        ChildPolicy,
        Identity,
        IkeSettings,
        Peer,
        PresharedKey,
    )
    from espd.policy.selectors import TrafficSelector

    loop = asyncio.get_running_loop()
    local, peer = ipaddress.ip_address(GW_A), ipaddress.ip_address(GW_B)
    key = bytearray(conf["psk"].encode())
    done = asyncio.Event()
    state = {"installed": 0, "want": 0}

    class CountingOwner(FakeOwner):
        def install_child(self, keys):  # type: ignore[override]
            return self._counted(super().install_child(keys))

        def rekey_child(self, old, keys, *, switch=True):  # type: ignore[override]
            # every IKE SA here has the same peer and entry: the engine installs each new
            # first Child SA as the successor of the one before (exchanges/reauth.py)
            return self._counted(super().rekey_child(old, keys, switch=switch))

        def _counted(self, handle):
            state["installed"] += 1
            if state["installed"] >= state["want"]:
                done.set()
            elif state["started"] < state["want"]:
                state["started"] += 1
                engine.initiate(child)
            return handle

    child = ChildPolicy("vpn", 10, (peer,), local, ((ESP_ESPD, "tunnel"),),
                        (TrafficSelector.from_network("10.1.0.0/16"),),
                        (TrafficSelector.from_network("10.2.0.0/16"),), start="manual")
    settings = IkeSettings(
        proposals=(PROPOSALS[IKE],),
        peers=(Peer(peer, PresharedKey(key, key), remote_id=Identity("fqdn", "gwb"),
                    local_id=Identity("fqdn", "gwa")),),
        children=(child,), retransmit_timeout=1.0, retransmit_tries=5)
    transport = UdpTransport(loop, [Endpoint(local, 500), Endpoint(local, 4500)])
    owner = CountingOwner()
    engine = IkeEngine(settings, owner, transport, loop, child_sa_keys=ChildSaKeys)
    print(json.dumps({"event": "ready"}), flush=True)

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        command = json.loads(line)
        if command["do"] == "establish":  # count more IKE SAs, window in flight
            done.clear()
            base = state["installed"]
            state.update(want=base + command["count"], started=base)
            start = time.perf_counter()
            for _ in range(min(command["window"], command["count"])):
                state["started"] += 1
                engine.initiate(child)
            try:
                await asyncio.wait_for(done.wait(), command.get("timeout", 120))
                elapsed = time.perf_counter() - start
                print(json.dumps({"event": "established", "count": command["count"],
                                  "seconds": elapsed}), flush=True)
            except TimeoutError:
                print(json.dumps({"event": "timeout", "installed": state["installed"] - base,
                                  "counters": dict(engine.counters)}), flush=True)
        elif command["do"] == "delete":
            for sa in list(engine.sas.values()):
                engine.delete_ike_sa(sa)
            deadline = loop.time() + 60
            while engine.sas and loop.time() < deadline:
                await asyncio.sleep(0.02)
            print(json.dumps({"event": "deleted", "left": len(engine.sas)}), flush=True)
        elif command["do"] == "quit":
            break
    engine.close()


# -- the driver: runs in the root namespace -----------------------------------------------

class Proc:
    """A JSON-lines child in a namespace; stdout to a file (never a full pipe)."""

    def __init__(self, ns: str, argv: list[str], workdir: str, name: str) -> None:
        self.out_path = os.path.join(workdir, f"{name}.out")
        self.out = open(self.out_path, "w")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv],
                                     stdin=subprocess.PIPE, stdout=self.out,
                                     stderr=subprocess.STDOUT, text=True)
        self.seen = 0

    def wait(self, events: tuple[str, ...], timeout: float = 180.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.out_path) as f:
                lines = f.read().splitlines()
            for line in lines[self.seen:]:
                self.seen += 1
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if item.get("event") in events:
                    return item
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args} exited {self.proc.returncode}:\n"
                                   + "\n".join(lines[-20:]))
            time.sleep(0.02)
        raise RuntimeError(f"no {events} from {self.proc.args} in {timeout:.0f} s")

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def rss(self) -> int:
        """VmRSS in bytes of the Python process (ip netns exec execs in place)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit" if "ike_standalone" in str(self.proc.args)
                          else json.dumps({"do": "quit"}))
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.out.close()


def one_round(init: Proc, args, label: str) -> float:
    init.send(json.dumps({"do": "establish", "count": args.count, "window": args.window}))
    got = init.wait(("established", "timeout"))
    if got["event"] != "established":
        raise RuntimeError(f"{label}: {got}")
    init.send(json.dumps({"do": "delete"}))
    if init.wait(("deleted",))["left"]:
        raise RuntimeError(f"{label}: IKE SAs left after delete")
    rate = got["count"] / got["seconds"]
    print(f"  {label}: {rate:.1f} establishments/s", flush=True)
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--sas", type=int, default=10000)
    parser.add_argument("--json")
    parser.add_argument("--initiator", help=argparse.SUPPRESS)  # internal: JSON conf
    args = parser.parse_args()
    if args.initiator:
        asyncio.run(initiator(json.loads(args.initiator)))
        return 0
    if os.geteuid() != 0:
        print("bench_ike.py: needs root (network namespaces)", file=sys.stderr)
        return 2

    from support import netns
    from support.strongswan import DEBIAN, Charon, site_to_site

    if DEBIAN.unavailable():
        print(f"bench_ike.py: {DEBIAN.unavailable()}", file=sys.stderr)
        return 2
    psk = secrets.token_hex(16)
    workdir = tempfile.mkdtemp(prefix=f"bi-{os.getpid()}-")
    results: dict = {"espd": [], "charon": []}
    topo = netns.Topology(tag=f"bi-{os.getpid()}", ipv6=False)
    procs: list[Proc] = []
    charon = None
    me = [sys.executable, str(Path(__file__).resolve())]
    init_conf = json.dumps({"psk": psk})
    try:
        topo.create()
        def espd_responder(name: str) -> Proc:
            proc = Proc(topo.gw_b, [sys.executable, str(STANDALONE), json.dumps({
                "local": GW_B, "peer": GW_A, "psk": psk, "local_id": "gwb",
                "remote_id": "gwa", "proposals": [IKE], "esp": [ESP_ESPD],
                "local_net": "10.2.0.0/16", "remote_net": "10.1.0.0/16",
                "owner": "dataplane", "state_dir": f"{workdir}/{name}-state"})],
                workdir, name)
            procs.append(proc)
            proc.wait(("ready",))
            return proc

        def new_initiator(name: str) -> Proc:
            proc = Proc(topo.gw_a, [*me, "--initiator", init_conf], workdir, name)
            procs.append(proc)
            proc.wait(("ready",))
            return proc

        # 1. the rounds, espd and charon as the responder in turn (the order swapped every
        # round, so that a change in the machine's load hits both alike), one initiator
        init = new_initiator("initiator")
        for i in range(args.rounds):
            for who in (("espd", "charon") if i % 2 == 0 else ("charon", "espd")):
                if who == "espd":
                    resp = espd_responder(f"espd-responder-{i}")
                    results["espd"].append(one_round(init, args, f"round {i + 1} espd"))
                    resp.close()
                else:
                    charon = Charon(topo.gw_b, "bi-gwb", DEBIAN).start()
                    charon.load([site_to_site("b", psk, proposals=[IKE],
                                              esp_proposals=[ESP_CHARON])])
                    results["charon"].append(one_round(init, args, f"round {i + 1} charon"))
                    charon.close()
                    charon = None
        init.close()
        # 3. memory: a fresh espd responder and initiator, --sas IKE SAs that stay up
        resp = espd_responder("espd-memory")
        init = new_initiator("initiator-memory")
        time.sleep(0.5)
        before = resp.rss()
        init.send(json.dumps({"do": "establish", "count": args.sas, "window": args.window,
                              "timeout": 600}))
        got = init.wait(("established", "timeout"), timeout=620)
        if got["event"] != "established":
            raise RuntimeError(f"memory run: {got}")
        time.sleep(0.5)
        after = resp.rss()
        results["memory"] = {"sas": args.sas, "rss_before": before, "rss_after": after,
                             "bytes_per_sa": (after - before) / args.sas,
                             "rate": args.sas / got["seconds"]}
        print(f"  espd responder: {results['memory']['bytes_per_sa']:.0f} bytes per IKE SA "
              f"at {args.sas}", flush=True)
    finally:
        for proc in reversed(procs):
            proc.close()
        if charon is not None:
            charon.close()
        topo.destroy()
        shutil.rmtree(workdir, ignore_errors=True)  # ours: made by mkdtemp above

    espd, ours = median(results["espd"]), median(results["charon"])
    mem = results["memory"]
    lines = [
        f"Machine: {os.cpu_count()} CPUs (nproc), kernel {platform.release()}, "
        f"Python {platform.python_version()}, charon {DEBIAN.version}. Shared, loaded "
        "machine: other engineers were running test suites.",
        f"Conditions: PSK, {IKE}, ESP {ESP_CHARON}, initiator espd's engine in gwA, "
        f"{args.window} IKE SAs in flight, {args.count} establishments per round, "
        f"{args.rounds} rounds, medians.",
        "",
        *table(["responder", "IKE SA + Child SA /s (median)", "rounds"],
               [["espd engine", fmt(espd, 1), ", ".join(fmt(r, 1) for r in results["espd"])],
                ["charon 5.9.8", fmt(ours, 1),
                 ", ".join(fmt(r, 1) for r in results["charon"])],
                ["espd / charon", fmt(espd / ours if espd and ours else None), ""]]),
        "",
        *table(["espd responder memory", "value"],
               [["IKE SAs (each with its Child SA) up", str(mem["sas"])],
                ["RSS before -> after (MiB)", f"{mem['rss_before'] / 2**20:.1f} -> "
                                              f"{mem['rss_after'] / 2**20:.1f}"],
                ["bytes per IKE SA (RSS delta / SAs)", fmt(mem["bytes_per_sa"], 0)],
                ["establishments/s during this run", fmt(mem["rate"], 1)]]),
    ]
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
