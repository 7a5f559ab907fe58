#!/usr/bin/env python3
"""A real espd daemon as the hub of N IKEv2 tunnels (issue 13, "A 10,000-tunnel hub").

  [hostA] -- [gwA: espd spoke] ==IKEv2 + ESP in UDP== [gwB: espd hub] -- [hostB]
                                                         || pr0
                                 [peers: N lightweight initiators, 100.64.0.0/16 on lo]

The hub is `python -m espd run` (workers, TUN, routes, control socket) in gwB, with one
crypto map entry per peer: N + 1 entries of map HUB, each with its own peer address,
access list (hub LAN 10.2.0.0/16 <-> the peer's 10.64.0.0/10 /24) and `[ike_peer]` PSK.
The N peers are espd's IKE engine without a data plane (one IkeEngine per peer address,
the fake owner of tests/support/ike_pair.py), --procs processes in one namespace "peers",
whose addresses sit on lo and are reached from the hub by one route (one neighbour).
One extra spoke, gwA, is a real espd daemon with a host behind it.

Phases (one run per --peers count, e.g. --peers 10,10000; each on fresh namespaces):
  1. start-up: the hub's config written, `espd run` started; time until the control
     socket answers (config load, N routes, N entries);
  2. the spoke gwA establishes (start = "immediate"); the hub's VmRSS ("before");
  3. establishment: every initiator process brings up its peers, --window IKE SAs in
     flight per process (IKE_SA_INIT + IKE_AUTH with the first Child SA); the time from the
     first request to the last Child SA installed at an initiator, the rate per tenth of N,
     and the hub's count of established IKE SAs (control socket "state", timed: what
     `espd show` waits for at N tunnels);
  4. the hub's VmRSS ("after"), per tunnel: (after - before) / N;
  5. traffic: iperf3 UDP at --rate from hostA (behind gwA) to hostB (behind the hub),
     0.1 s intervals at the receiver, for --seconds without rekeys ("steady"), then for
     --seconds while the initiators rekey Child SAs at --rekey-rate per second in all
     (CREATE_CHILD_SA, the hub the responder; each a tunnel whose Child SA is not being
     rekeyed, round robin; with --lifetime S instead the hub's peer entries have a Child
     SA lifetime of S seconds and the hub rekeys on its own timers, the second phase
     starting with their first wave); per phase the median and lowest 0.1 s interval, lost
     packets, rekeys completed, and the hub's CPU from /proc/PID/stat (all its threads).
     The hub's CPU per Child SA rekey = (CPU while rekeying - CPU steady) / rekeys,
     compared between the smallest and the largest --peers;
  6. `espd reload` of the unchanged config with every tunnel up: its time, and the IKE
     SAs still up after it.

Run as root:  .venv/bin/python tests/bench/bench_hub.py [--peers 10,10000] [--procs 2]
              [--window 8] [--rekey-rate 100 | --lifetime S] [--seconds 15] [--rate 20M]
              [--no-traffic] [--json FILE]
Everything created (namespaces, daemons, initiators, iperf3, files in /tmp) is named
hb-<pid>-... or known by pid, and removed at the end, also after a failure or Ctrl-C.
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
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_ike import Proc  # a JSON-lines child in a namespace (tests/bench)
from bench_rekey import config as spoke_config  # a gateway of the two-daemon topology
from bench_rekey import kernel_drops
from benchreport import fmt, median, table  # tests/bench, beside this script

REPO = Path(__file__).resolve().parents[2]
for path in (REPO / "tests", REPO / "daemon"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

IKE = "aes256gcm16-prfsha384-x25519"
HUB, SPOKE = "192.0.2.2", "192.0.2.1"  # gwB, gwA (support.netns.Topology)
HUB_PR, PEERS_PR = "198.18.0.1", "198.18.0.2"  # the hub <-> peers link
PEER_BASE = ipaddress.ip_address("100.64.0.1")  # peer i's outer address: + i
NET_BASE = ipaddress.ip_address("10.64.0.0")  # peer i's protected /24: + 256 i
HUB_LAN, SPOKE_LAN = "10.2.0.0/16", "10.1.0.0/16"
PORT = 5201
METRICS_PORT = 9661  # the hub's exporter, inside its own namespace
MAX_PEERS = 16384  # 10.64.0.0/10 holds 16384 /24s


def peer_address(i: int) -> str:
    return str(PEER_BASE + i)


def peer_net(i: int) -> str:
    return f"{NET_BASE + 256 * i}/24"


def peer_psk(base: str, i: int) -> str:
    return f"{base}-{i}"


# -- the initiators: one process drives many peers, one IkeEngine per peer address -------

async def initiators(conf: dict) -> None:
    import resource

    from support.ike_pair import ChildSaKeys, FakeOwner
    from support.ike_standalone import PROPOSALS

    from espd.ike.engine.engine import IkeEngine
    from espd.ike.engine.transport import UdpTransport
    from espd.ike.exchanges import create_child_sa
    from espd.ike.sa.child_sa import ChildState
    from espd.ike.sa.ike_sa import Endpoint, IkeState
    from espd.ike.settings import ChildPolicy, Identity, IkeSettings, Peer, PresharedKey
    from espd.policy.selectors import TrafficSelector

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = conf["count"] + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
    loop = asyncio.get_running_loop()
    hub = ipaddress.ip_address(conf["hub"])
    state = {"installed": 0, "want": 0, "started": 0, "rekeyed": 0, "rekeys_started": 0}
    installs: list[float] = []
    done = asyncio.Event()
    hub_ts = (TrafficSelector.from_network(HUB_LAN),)
    proposal = PROPOSALS[IKE]

    class Owner(FakeOwner):
        """Counts; keeps no record per rekey (the fake owner's lists would grow)."""

        def install_child(self, keys):  # type: ignore[override]
            handle = super().install_child(keys)
            installs.append(time.time())
            state["installed"] += 1
            if state["installed"] >= state["want"]:
                done.set()
            elif state["started"] < state["want"]:
                start_next()
            return handle

        def rekey_child(self, old, keys, *, switch=True):  # type: ignore[override]
            state["rekeyed"] += 1
            return super().rekey_child(old, keys, switch=switch)

        def retire_child(self, handle, linger=0.0):  # type: ignore[override]
            super().retire_child(handle, linger)
            self.installed.pop(handle.id, None)
            self.retired.clear()
            self.log.clear()

    engines: list[tuple[IkeEngine, ChildPolicy]] = []
    owner = Owner()
    for i in range(conf["first"], conf["first"] + conf["count"]):
        local = ipaddress.ip_address(peer_address(i))
        key = bytearray(peer_psk(conf["psk"], i).encode())
        child = ChildPolicy("HUB", i + 2, (hub,), local, (("esp-gcm 256", "tunnel"),),
                            (TrafficSelector.from_network(peer_net(i)),), hub_ts,
                            start="manual")
        settings = IkeSettings(
            proposals=(proposal,),
            peers=(Peer(hub, PresharedKey(key, key), remote_id=Identity("ipv4", conf["hub"]),
                        local_id=Identity("ipv4", str(local))),),
            children=(child,), retransmit_timeout=2.0, retransmit_tries=6)
        transport = UdpTransport(loop, [Endpoint(local, 500)])
        engines.append((IkeEngine(settings, owner, transport, loop,
                                  child_sa_keys=ChildSaKeys), child))
    pending = iter(engines)

    def start_next() -> None:
        engine, child = next(pending)
        state["started"] += 1
        engine.initiate(child)

    def emit(**fields) -> None:
        print(json.dumps(fields), flush=True)

    rekeying: asyncio.Task | None = None

    async def rekey_at(rate: float) -> None:
        """Child SA rekeys at ``rate`` per second, round robin over the tunnels, each one
        whose Child SA is installed and not being rekeyed."""
        at, turn = loop.time(), 0
        while True:
            at += 1 / rate
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            for _ in range(len(engines)):
                engine, _child = engines[turn % len(engines)]
                turn += 1
                sa = next((s for s in engine.sas.values()
                           if s.state == IkeState.ESTABLISHED and s.children), None)
                child = next((c for c in sa.children.values()
                              if c.state == ChildState.INSTALLED), None) if sa else None
                if child is not None:
                    create_child_sa.start_rekey(engine, sa, child)
                    state["rekeys_started"] += 1
                    break

    emit(event="ready", pid=os.getpid())
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        command = json.loads(line)
        if command["do"] == "establish":
            state.update(want=len(engines))
            start = time.time()
            for _ in range(min(command["window"], len(engines))):
                start_next()
            try:
                await asyncio.wait_for(done.wait(), command.get("timeout", 1800))
                emit(event="established", count=state["installed"], start=start,
                     installs=installs)
            except TimeoutError:
                counters: dict = {}
                for engine, _ in engines:
                    for k, v in engine.counters.items():
                        counters[k] = counters.get(k, 0) + v
                emit(event="timeout", installed=state["installed"], counters=counters)
        elif command["do"] == "rekey":
            state["rekeyed"] = state["rekeys_started"] = 0
            rekeying = asyncio.create_task(rekey_at(command["rate"]))
            emit(event="rekeying")
        elif command["do"] == "rekeys":  # so far, without stopping
            emit(event="rekeys", started=state["rekeys_started"], done=state["rekeyed"])
        elif command["do"] == "stop-rekey":
            if rekeying is not None:
                rekeying.cancel()
                rekeying = None
            emit(event="rekeyed", started=state["rekeys_started"], done=state["rekeyed"])
        elif command["do"] == "count":
            live = sum(1 for engine, _ in engines for s in engine.sas.values()
                       if s.state == IkeState.ESTABLISHED)
            emit(event="count", live=live)
        elif command["do"] == "quit":
            break
    for engine, _ in engines:
        engine.close()


# -- the driver ----------------------------------------------------------------------------

def hub_config(n: int, psk: str, tmp: Path, lifetime: int = 0) -> str:
    """``lifetime``: the peers' entries' Child SA lifetime in seconds (0: the default)."""
    life = f"lifetime = {{ seconds = {lifetime} }}\n" if lifetime else ""
    out = [f"""[daemon]
interface = "espd0"
local = "{HUB}"
workers = 1
control_socket = "{tmp}/hub.sock"
metrics = "127.0.0.1:{METRICS_PORT}"
state_dir = "{tmp}/hub-state"

[transform_set.GCM]
transforms = ["esp-gcm 256"]

[ike]
proposals = ["{IKE}"]

[access_list.SPOKE]
rules = ["permit ip {HUB_LAN} {SPOKE_LAN}"]

[ike_peer.spoke]
address = "{SPOKE}"
psk = "{psk}"

[[crypto_map]]
name = "HUB"
seq = 1
keying = "ike"
peer = "{SPOKE}"
match_address = "SPOKE"
transform_sets = ["GCM"]
encapsulation = "udp"
start = "manual"
"""]
    for i in range(n):
        out.append(f"""
[access_list.P{i}]
rules = ["permit ip {HUB_LAN} {peer_net(i)}"]

[ike_peer.p{i}]
address = "{peer_address(i)}"
psk = "{peer_psk(psk, i)}"

[[crypto_map]]
name = "HUB"
seq = {i + 2}
keying = "ike"
peer = "{peer_address(i)}"
match_address = "P{i}"
transform_sets = ["GCM"]
start = "manual"
{life}""")
    return "".join(out)


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of the process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def hub_ike_sas(daemon) -> int:
    """Established IKE SAs the hub's control socket reports."""
    from espd.ops import control

    answer = control.request(daemon.control_socket, "state", timeout=60)
    state = answer.get("state", answer)
    return sum(1 for sa in state.get("ike", {}).get("sas", [])
               if sa.get("state") == "established")


def rekeys_done(procs) -> int:
    """Child SA rekeys the initiators have completed so far."""
    for proc in procs:
        proc.send(json.dumps({"do": "rekeys"}))
    return sum(proc.wait(("rekeys",))["done"] for proc in procs)


def drops(topo, daemons) -> dict[str, int]:
    """Every drop counter on the path: the kernel's per device and the receiver's UDP
    buffer (bench_rekey.kernel_drops), and each espd's by direction and reason."""
    out = kernel_drops(topo)
    for daemon in daemons:
        for direction, reasons in daemon.state()["drops"].items():
            for reason, n in reasons.items():
                if n:
                    out[f"{daemon.name} {direction} {reason}"] = n
    return out


def readers(topo, daemon) -> dict[str, float]:
    """Seconds one request of each kind takes at this many tunnels: the control socket's
    state (what every `espd show` builds), show crypto ipsec sa, show crypto ikev2 sa,
    stats, and one scrape of the metrics exporter."""
    from support import netns

    from espd.ops import control

    took = {}
    for command in ("state", "show_sa", "show_ike_sa", "stats"):
        t0 = time.monotonic()
        answer = control.request(daemon.control_socket, command, timeout=120)
        took[command] = time.monotonic() - t0
        if not answer.get("ok", True):
            raise RuntimeError(f"{command}: {answer}")
    t0 = time.monotonic()
    netns.scrape_metrics(topo.gw_b, METRICS_PORT, timeout=120)
    took["metrics"] = time.monotonic() - t0
    return took


def reload_unchanged(daemon, n: int) -> dict:
    """`espd reload` of the unchanged config with every tunnel up: how long the control
    socket waits for it, and whether every IKE SA is still there after it."""
    from espd.ops import control

    t0 = time.monotonic()
    answer = control.request(daemon.control_socket, "reload", timeout=600)
    took = time.monotonic() - t0
    if not answer.get("ok"):
        raise RuntimeError(f"reload refused: {answer}")
    after = hub_ike_sas(daemon)
    print(f"[{n}] reload of the unchanged config: {took:.2f} s, {len(answer['changes'])} "
          f"changes; {after} IKE SAs after it", flush=True)
    return {"reload_s": took, "reload_changes": len(answer["changes"]),
            "hub_ike_sas_after_reload": after}


def make_peers_ns(topo, n: int, tag: str) -> str:
    from support import netns

    ns = f"{tag}-pr"
    netns.add_netns(ns)
    topo.created.insert(0, ns)  # removed with the topology
    netns.add_veth(topo.gw_b, "pr0", ns, "pr0")
    netns.add_address(topo.gw_b, "pr0", f"{HUB_PR}/30")
    netns.add_address(ns, "pr0", f"{PEERS_PR}/30")
    netns.add_route(topo.gw_b, "100.64.0.0/16", PEERS_PR)
    netns.add_route(ns, f"{HUB}/32", HUB_PR)
    netns.ip(ns, "link", "set", "lo", "up")
    batch = "".join(f"address add {peer_address(i)}/32 dev lo\n" for i in range(n))
    netns.run(netns.exec_argv(ns, ["ip", "-batch", "-"]), input=batch, timeout=120)
    return ns


def iperf(topo, args, seconds: float) -> dict:
    from support import netns

    server = subprocess.Popen(netns.exec_argv(topo.host_b, [
        "iperf3", "-s", "-1", "-J", "-i", "0.1", "-p", str(PORT), "-B", netns.HOST_B4]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        client = subprocess.run(netns.exec_argv(topo.host_a, [
            "iperf3", "-c", netns.HOST_B4, "-p", str(PORT), "-u", "-b", args.rate,
            "-l", str(args.size), "-t", str(seconds), "-i", "0.1", "-J",
            "--get-server-output"]), capture_output=True, text=True, timeout=seconds + 30)
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(5)
    data = json.loads(client.stdout or "{}")
    if data.get("error"):
        raise RuntimeError(f"iperf3: {data['error']}")
    intervals = (data.get("server_output_json") or {}).get("intervals", [])
    rows = [i["sum"] for i in intervals if i["sum"].get("seconds", 0) > 0.05][2:-1]
    if not rows:
        raise RuntimeError("iperf3 server gave no intervals: " + client.stdout[-800:])
    pps = [(r["packets"] - r.get("lost_packets", 0)) / r["seconds"] for r in rows]
    return {"median_kpps": median(pps) / 1e3, "min_kpps": min(pps) / 1e3,
            "lost": sum(max(0, r.get("lost_packets", 0)) for r in rows),
            "packets": sum(r["packets"] for r in rows)}


def one_run(n: int, args) -> dict:
    from support import netns

    tag = f"hb-{os.getpid()}-{n}"
    topo = netns.Topology(tag=tag, ipv6=False)
    tmp = Path(tempfile.mkdtemp(prefix=f"{tag}-"))
    psk = secrets.token_hex(16)
    daemons: list = []
    procs: list[Proc] = []
    result: dict = {"peers": n}
    me = [sys.executable, str(Path(__file__).resolve())]
    with topo:
        try:
            t0 = time.monotonic()
            peers_ns = make_peers_ns(topo, n, tag)
            result["netns_setup_s"] = time.monotonic() - t0
            t0 = time.monotonic()
            text = hub_config(n, psk, tmp, args.lifetime)
            (tmp / "hub.toml").write_text(text)
            (tmp / "hub.toml").chmod(0o600)
            # the spoke: bench_rekey's gateway A (192.0.2.1, 10.1.0.0/16 <-> 10.2.0.0/16)
            (tmp / "spoke.toml").write_text(spoke_config("a", psk, tmp, 3600))
            (tmp / "spoke.toml").chmod(0o600)
            result["config_bytes"] = len(text)
            profile = os.environ.get("BENCH_HUB_PROFILE")  # a file: the hub under cProfile
            hub = netns.EspdProcess(topo.gw_b, str(tmp / "hub.toml"), str(tmp / "hub.sock"),
                                    str(tmp / "hub.log"), "hub", command=[
                                        sys.executable, "-m", "cProfile", "-o", profile,
                                        "-m", "espd", "run"] if profile else None)
            daemons.append(hub)
            t0 = time.monotonic()
            hub.start()
            hub.wait_ready(timeout=600)
            result["hub_start_s"] = time.monotonic() - t0
            result["hub_rss_start_kib"] = status_kib(hub.pid, "VmRSS")
            print(f"[{n}] hub ready in {result['hub_start_s']:.2f} s "
                  f"({len(text) / 1e6:.1f} MB config), RSS "
                  f"{result['hub_rss_start_kib'] / 1024:.1f} MiB", flush=True)
            spoke = netns.EspdProcess(topo.gw_a, str(tmp / "spoke.toml"),
                                      str(tmp / "gwa.sock"), str(tmp / "spoke.log"),
                                      "spoke")
            daemons.append(spoke)
            spoke.start()
            spoke.wait_ready(timeout=30)
            deadline = time.monotonic() + 30
            while netns.ping(topo.host_b, netns.HOST_A4, count=1, timeout=0.5).received == 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("the spoke's tunnel did not come up:\n" + spoke.log()
                                       + hub.log())
            # initiators: --procs processes, each a slice of the peers
            per = -(-n // args.procs)
            for k, first in enumerate(range(0, n, per)):
                proc = Proc(peers_ns, [*me, "--initiators", json.dumps({
                    "hub": HUB, "psk": psk, "first": first, "count": min(per, n - first)})],
                    str(tmp), f"init{k}")
                procs.append(proc)
            for proc in procs:
                proc.wait(("ready",), timeout=300)
            time.sleep(1.0)
            rss_before = status_kib(hub.pid, "VmRSS")
            cpu0 = cpu_seconds(hub.pid)
            t0 = time.time()
            for proc in procs:
                proc.send(json.dumps({"do": "establish", "window": args.window}))
            ends, installs = [], []
            for proc in procs:
                got = proc.wait(("established", "timeout"), timeout=args.establish_timeout)
                if got["event"] != "established":
                    raise RuntimeError(f"[{n}] establishment timed out: {got}\n"
                                       + hub.log())
                installs.extend(got["installs"])
            elapsed = max(installs) - t0
            result["establish_cpu_s"] = cpu_seconds(hub.pid) - cpu0
            installs.sort()
            tenth = max(1, n // 10)
            deciles = []
            for d in range(0, n, tenth):
                chunk = installs[d:d + tenth]
                start = installs[d - 1] if d else t0
                deciles.append(len(chunk) / max(1e-6, chunk[-1] - start))
            ends.append(elapsed)
            time.sleep(2.0)
            rss_after = status_kib(hub.pid, "VmRSS")
            t1 = time.monotonic()
            counted = hub_ike_sas(hub)
            result["state_request_s"] = time.monotonic() - t1  # what `espd show` waits on
            result.update(establish_s=elapsed, rate=n / elapsed, rate_deciles=deciles,
                          hub_ike_sas=counted, rss_before_kib=rss_before,
                          rss_after_kib=rss_after,
                          bytes_per_tunnel=(rss_after - rss_before) * 1024 / n)
            print(f"[{n}] established {n} in {elapsed:.1f} s ({n / elapsed:.1f}/s; per "
                  f"tenth: {', '.join(f'{r:.0f}' for r in deciles)}); hub shows {counted} "
                  f"IKE SAs (spoke included; its state in {result['state_request_s']:.2f} s); "
                  f"RSS {rss_before / 1024:.1f} -> "
                  f"{rss_after / 1024:.1f} MiB, {result['bytes_per_tunnel']:.0f} B/tunnel",
                  flush=True)
            result["readers_s"] = readers(topo, hub)
            print(f"[{n}] one request each: " + ", ".join(
                f"{k} {v:.2f} s" for k, v in result["readers_s"].items()), flush=True)
            if args.no_traffic:
                return result | reload_unchanged(hub, n)
            # traffic: steady, then with the rekey load
            phases = {}
            for phase in ("steady", "rekeying"):
                if phase == "rekeying" and args.lifetime:
                    # the hub's own timers: its first rekeys come 85-90% of the lifetime
                    # after the first tunnel's install, then at about the rate they came up
                    wave = installs[0] + 0.85 * args.lifetime + 1.0
                    print(f"[{n}] waiting {max(0, wave - time.time()):.0f} s for the hub's "
                          "first rekeys", flush=True)
                    time.sleep(max(0.0, wave - time.time()))
                elif phase == "rekeying":
                    for proc in procs:
                        proc.send(json.dumps({"do": "rekey", "rate": args.rekey_rate / len(procs)}))
                    for proc in procs:
                        proc.wait(("rekeying",))
                    time.sleep(1.0)  # into the rekey load before iperf3 starts
                before = drops(topo, daemons)  # seconds at 10,000 SAs: outside the window
                count0 = rekeys_done(procs)
                cpu0, w0 = cpu_seconds(hub.pid), time.monotonic()
                got = iperf(topo, args, args.seconds)
                got["hub_cpu"] = (cpu_seconds(hub.pid) - cpu0) / (time.monotonic() - w0)
                got["wall_s"] = time.monotonic() - w0
                # the rekeys completed in the same window as the CPU and the traffic
                got["rekeys"] = rekeys_done(procs) - count0
                got["drops"] = {k: v - before.get(k, 0) for k, v in drops(topo, daemons).items()
                                if v != before.get(k, 0)}
                if phase == "rekeying" and not args.lifetime:
                    for proc in procs:
                        proc.send(json.dumps({"do": "stop-rekey"}))
                    for proc in procs:
                        proc.wait(("rekeyed",))
                phases[phase] = got
                print(f"[{n}] {phase}: {fmt(got['median_kpps'])} kpps median, "
                      f"{fmt(got['min_kpps'])} lowest 0.1 s, {got['lost']} lost, hub CPU "
                      f"{got['hub_cpu'] * 100:.0f}%, rekeys {got['rekeys']}; drops: "
                      f"{got['drops'] or 'none'}", flush=True)
            for got in phases.values():
                got["rekeys_per_s"] = got["rekeys"] / got["wall_s"]
            rk, st = phases["rekeying"], phases["steady"]
            extra = rk["hub_cpu"] - st["hub_cpu"]  # CPU-s per s
            more = rk["rekeys_per_s"] - st["rekeys_per_s"]  # the steady phase may hold a few
            result["phases"] = phases
            result["cpu_us_per_rekey"] = extra / more * 1e6 if more > 0 else None
            time.sleep(1.0)
            result["hub_ike_sas_after"] = hub_ike_sas(hub)
            return result | reload_unchanged(hub, n)
        finally:
            for proc in procs:
                proc.close()
            for daemon in reversed(daemons):
                daemon.stop(timeout=120)
            if os.environ.get("BENCH_HUB_KEEP"):
                print(f"kept {tmp}", file=sys.stderr)
            else:
                shutil.rmtree(tmp, ignore_errors=True)


def report(results: list[dict], args) -> list[str]:
    lines = [f"Machine: {os.cpu_count()} CPUs (nproc), kernel {platform.release()}, Python "
             f"{platform.python_version()}; load average at the end {loadavg()}.",
             f"Hub: `espd run`, 1 worker; {IKE}, ESP esp-gcm 256, PSK per peer; initiators: "
             f"{args.procs} processes of espd's IKE engine (fake owner), {args.window} IKE "
             "SAs in flight each.", ""]
    lines += table(
        ["peers", "hub start (s)", "establish all (s)", "rate (/s)", "rate first / last tenth",
         "hub IKE SAs", "hub CPU establishing (s)", "RSS before -> after (MiB)",
         "bytes/tunnel", "state request (s)", "reload, unchanged (s)"],
        [[str(r["peers"]), fmt(r["hub_start_s"]), fmt(r["establish_s"], 1),
          fmt(r["rate"], 1), f"{r['rate_deciles'][0]:.0f} / {r['rate_deciles'][-1]:.0f}",
          str(r["hub_ike_sas"]), fmt(r["establish_cpu_s"], 1),
          f"{r['rss_before_kib'] / 1024:.1f} -> {r['rss_after_kib'] / 1024:.1f}",
          fmt(r["bytes_per_tunnel"], 0), fmt(r["state_request_s"]),
          fmt(r["reload_s"])] for r in results])
    if len(results) > 1 and results[-1]["peers"] > results[0]["peers"]:
        first, last = results[0], results[-1]
        per_entry = ((last["hub_rss_start_kib"] - first["hub_rss_start_kib"]) * 1024
                     / (last["peers"] - first["peers"]))
        lines += ["", f"hub RSS at start, before any tunnel: "
                  f"{first['hub_rss_start_kib'] / 1024:.1f} MiB with {first['peers']} entries, "
                  f"{last['hub_rss_start_kib'] / 1024:.1f} MiB with {last['peers']}: "
                  f"{per_entry:.0f} bytes per configured entry (access list, IKE peer, "
                  "crypto map entry, plan rule, route)"]
    lines += ["", *table(["peers", *(f"{k} (s)" for k in results[0]["readers_s"])],
                         [[str(r["peers"]), *(fmt(v) for v in r["readers_s"].values())]
                          for r in results])]
    with_traffic = [r for r in results if "phases" in r]
    if with_traffic:
        load = (f"rekeys by the hub's timers, Child SA lifetime {args.lifetime} s"
                if args.lifetime else
                f"rekey load {args.rekey_rate}/s asked (initiators' CREATE_CHILD_SA)")
        lines += ["", f"UDP {args.rate} of {args.size}-byte datagrams hostA -> gwA -> hub -> "
                  f"hostB, {args.seconds} s per phase, 0.1 s intervals at the receiver; {load}",
                  ""]
        rows = []
        for r in with_traffic:
            for phase in ("steady", "rekeying"):
                p = r["phases"][phase]
                rows.append([f"{r['peers']} {phase}", fmt(p["median_kpps"]),
                             fmt(p["min_kpps"]), str(p["lost"]),
                             fmt(p["rekeys_per_s"], 1),
                             f"{p['hub_cpu'] * 100:.0f}%"])
        lines += table(["peers, phase", "median kpps", "lowest 0.1 s kpps", "lost packets",
                        "rekeys/s done", "hub CPU"], rows)
        per = [(r["peers"], r["cpu_us_per_rekey"]) for r in with_traffic
               if r.get("cpu_us_per_rekey")]
        if per:
            lines += ["", *table(["peers", "hub CPU per Child SA rekey (us)"],
                                 [[str(p), fmt(c, 0)] for p, c in per])]
            if len(per) > 1 and per[0][1]:
                lines.append(f"\nratio {per[-1][0]} / {per[0][0]}: "
                             f"{per[-1][1] / per[0][1]:.2f}x (target <= 2x)")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peers", default="10,10000",
                        help="comma-separated peer counts, one run each")
    parser.add_argument("--procs", type=int, default=2, help="initiator processes")
    parser.add_argument("--window", type=int, default=8,
                        help="IKE SAs in flight per initiator process")
    parser.add_argument("--rekey-rate", type=float, default=100.0,
                        help="Child SA rekeys/s the initiators start (without --lifetime)")
    parser.add_argument("--lifetime", type=int, default=0,
                        help="instead: this Child SA lifetime (s) on the hub's peer entries, "
                        "so that the hub rekeys on its own timers; long enough for the "
                        "establishment and the steady phase to end before 85%% of it")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rate", default="20M")
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--establish-timeout", type=float, default=1800)
    parser.add_argument("--no-traffic", action="store_true",
                        help="phases 1-4 only (no iperf3, no rekey load)")
    parser.add_argument("--json")
    parser.add_argument("--initiators", help=argparse.SUPPRESS)  # internal: JSON conf
    args = parser.parse_args()
    if args.initiators:
        asyncio.run(initiators(json.loads(args.initiators)))
        return 0
    if os.geteuid() != 0:
        print("bench_hub.py: run as root (namespaces)", file=sys.stderr)
        return 2
    counts = [int(x) for x in args.peers.split(",")]
    if max(counts) > MAX_PEERS:
        print(f"bench_hub.py: at most {MAX_PEERS} peers", file=sys.stderr)
        return 2
    # Ctrl-C or SIGTERM: the finally blocks remove what was made
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    results = []
    for n in counts:
        results.append(one_run(n, args))
    print()
    print("\n".join(report(results, args)))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
