"""``espd demo`` (``sudo make demo``): two espd gateways and two hosts in namespaces.

 [hostA 10.1.0.10] -- [10.1.0.1 gwA 192.0.2.1] ==ESP== [192.0.2.2 gwB 10.2.0.1] -- [10.2.0.10 hostB]
  fd00:1::10          fd00:1::1    fd00:ff::1          fd00:ff::2   fd00:2::1          fd00:2::10

It builds the four namespaces and runs the tunnel three times: keyed by hand
(config/demo/gateway-{a,b}.toml), by IKEv2 with a pre-shared key (gateway-{a,b}-ike.toml:
the first packet negotiates the SAs), and by IKEv2 with certificates (gateway-{a,b}-
cert.toml, with a lab CA that ``espd keygen --pki`` makes for the run). Each time it
starts one real ``espd run`` per gateway with per-run copies of the configs, pings and
transfers data both ways through the tunnel, prints ``espd show sa`` (and ``espd show ike
sa``) and an excerpt of the metrics, and stops the daemons. It removes everything it
created, also on failure or Ctrl-C. Exit status 0 only if traffic passed both ways, every
time.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from espd.cli.demo import namespaces
from espd.cli.demo.gateway import EspdProcess, EspdProcessError, with_daemon_settings
from espd.cli.demo.namespaces import Topology
from espd.cli.pki import PkiError

STEPS = 5  # per keying
KEYINGS = {"manual": ("gateway-a.toml", "gateway-b.toml"),
           "ike": ("gateway-a-ike.toml", "gateway-b-ike.toml"),
           "certificate": ("gateway-a-cert.toml", "gateway-b-cert.toml")}
RUNS = {"both": ("manual", "ike"), "all": ("manual", "ike", "certificate")}
BY = {"manual": "by hand", "ike": "by IKEv2 (pre-shared key)",
      "certificate": "by IKEv2 (certificates)"}
DEMO_NAMES = ("gwa.demo.test", "gwb.demo.test")  # the names the -cert configs expect
TRANSFER_BYTES = 512 * 1024
TRAFFIC = "espd.cli.demo.traffic"  # python -m TRAFFIC: ping and TCP without the binaries
METRIC_PREFIXES = ("espd_sa_packets_total", "espd_dropped_packets_total")


def default_config_dir() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:  # the source tree (editable install or a checkout)
        if (parent / "config" / "demo" / "gateway-a.toml").is_file():
            return parent / "config" / "demo"
    return Path("/usr/share/espd/demo")


def step(n: int, text: str, keying: str = "") -> None:
    print(f"[{keying + ' ' if keying else ''}{n}/{STEPS}] {text}", flush=True)


def say(text: str) -> None:
    print(f"      {text}", flush=True)


def ping_argv(dst: str, count: int) -> list[str]:
    if shutil.which("ping"):
        return ["ping", "-c", str(count), "-i", "0.2", "-W", "2", dst]
    return [sys.executable, "-m", TRAFFIC, "ping", "-c", str(count), dst]


def ping(ns: str, dst: str, what: str, count: int = 5) -> bool:
    result = namespaces.ns_run(ns, ping_argv(dst, count), check=False, timeout=count + 15)
    summary = [line for line in result.stdout.splitlines()
               if "transmitted" in line or "From" in line or "rtt" in line]
    ok = result.returncode == 0
    say(f"{'ok  ' if ok else 'FAIL'} ping {what}: {'; '.join(summary) or result.stderr.strip()}")
    return ok


def transfer(src_ns: str, dst_ns: str, dst: str, what: str, port: int) -> bool:
    """A TCP transfer of TRANSFER_BYTES from src_ns to dst, checked by size and hash."""
    receiver = subprocess.Popen(
        namespaces.exec_argv(dst_ns, [sys.executable, "-m", TRAFFIC, "tcp-recv", "--port",
                                 str(port), "--expect", str(TRANSFER_BYTES), "--timeout", "20",
                                 *(["--ipv6"] if ":" in dst else [])]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert receiver.stdout is not None
        if receiver.stdout.readline().strip() != "listening":
            say(f"FAIL transfer {what}: the receiver did not start: "
                f"{receiver.stderr.read() if receiver.stderr else ''}")
            return False
        sent = namespaces.ns_run(src_ns, [sys.executable, "-m", TRAFFIC, "tcp-send", dst,
                                     "--port", str(port), "--size", str(TRANSFER_BYTES),
                                     "--timeout", "20"], check=False, timeout=40)
        out, err = receiver.communicate(timeout=30)
    finally:
        if receiver.poll() is None:
            os.kill(receiver.pid, signal.SIGKILL)
            receiver.wait()
    sent_hash = sent.stdout.split("sha256 ")[-1].split()[0] if "sha256" in sent.stdout else "?"
    got_hash = out.split("sha256 ")[-1].split()[0] if "sha256" in out else "!"
    ok = sent.returncode == 0 and receiver.returncode == 0 and sent_hash == got_hash
    detail = sent.stdout.strip() if ok else (sent.stderr + err).strip() or out.strip()
    say(f"{'ok  ' if ok else 'FAIL'} TCP {TRANSFER_BYTES // 1024} KiB {what}: {detail}")
    return ok


def show_sa(ns: str, control_socket: str, what: Sequence[str] = ("sa",)) -> None:
    result = namespaces.ns_run(ns, [sys.executable, "-m", "espd", "show", *what, "--socket",
                               control_socket], check=False, timeout=30)
    text = result.stdout if result.returncode == 0 else result.stdout + result.stderr
    for line in text.rstrip().splitlines():
        say(line)


def metrics_excerpt(ns: str, address: str) -> None:
    host, _, port = address.rpartition(":")
    url = f"http://{host}:{port}/metrics"
    code = ("import sys, urllib.request; "
            "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())")
    result = namespaces.ns_run(ns, [sys.executable, "-c", code, url], check=False, timeout=30)
    if result.returncode != 0:
        say(f"cannot read {url}: {result.stderr.strip().splitlines()[-1:]}")
        return
    lines = [line for line in result.stdout.splitlines() if line.startswith(METRIC_PREFIXES)]
    if not lines:
        say("(no espd_sa_packets_total or espd_dropped_packets_total lines)")
    zero_drops = 0
    for line in lines:
        if line.startswith("espd_dropped_packets_total") and float(line.split()[-1]) == 0:
            zero_drops += 1  # one line per reason and direction: show the ones that count
            continue
        say(line)
    if zero_drops:
        say(f"(and {zero_drops} espd_dropped_packets_total lines at 0)")


def write_config(template: Path, out: Path, **settings: str | int) -> None:
    out.write_text(with_daemon_settings(template.read_text(), **settings))


def make_demo_pki(directory: Path) -> None:
    """What ``espd keygen --pki`` makes, for the -cert configs (paths relative to them)."""
    import ipaddress

    from espd.cli import pki

    pki.make_pki(directory, pki.Gateway(DEMO_NAMES[0], ipaddress.ip_address(
        namespaces.GW_A_WAN4)), pki.Gateway(DEMO_NAMES[1], ipaddress.ip_address(
            namespaces.GW_B_WAN4)), organization="espd demo")
    say(f"espd keygen --pki {directory}: a lab CA and certificates for {DEMO_NAMES[0]} and "
        f"{DEMO_NAMES[1]}")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(prog="espd demo", description=__doc__.splitlines()[0])
    parser.add_argument("--config-dir", type=Path, default=None,
                        help="where gateway-a.toml, gateway-b.toml and their -ike twins are")
    parser.add_argument("--keying", choices=(*KEYINGS, *RUNS), default="all",
                        help="keys written by hand, negotiated by IKEv2 with a pre-shared "
                             "key or with certificates; 'both' the first two, 'all' (the "
                             "default) the three one after the other")
    parser.add_argument("--no-ipv6", action="store_true", help="IPv4 traffic only")
    args = parser.parse_args(list(argv))
    why = namespaces.unavailable()
    if why:
        print(f"espd demo: {why}; run it as root, e.g. 'sudo make demo'", file=sys.stderr)
        return 2
    config_dir = args.config_dir or default_config_dir()
    keyings = list(RUNS.get(args.keying, (args.keying,)))
    for keying in keyings:
        for name in KEYINGS[keying]:
            if not (config_dir / name).is_file():
                print(f"espd demo: {config_dir / name} is missing; pass --config-dir",
                      file=sys.stderr)
                return 2

    old_term = signal.signal(signal.SIGTERM, _interrupt)
    topology = Topology(ipv6=not args.no_ipv6)
    workdir = Path(tempfile.mkdtemp(prefix="espd-demo-"))
    daemons: list[EspdProcess] = []
    passed = False
    try:
        print(f"creating namespaces {', '.join(topology.namespaces)}...", flush=True)
        topology.create()
        say(f"hostA {namespaces.HOST_A4} - gwA {namespaces.GW_A_LAN4}|{namespaces.GW_A_WAN4} == "
            f"gwB {namespaces.GW_B_WAN4}|{namespaces.GW_B_LAN4} - hostB {namespaces.HOST_B4}")
        passed = True
        for keying in keyings:
            passed &= run_tunnel(topology, workdir, daemons, keying,
                                 [config_dir / name for name in KEYINGS[keying]])
    except KeyboardInterrupt:
        passed = False
        print("\ninterrupted", file=sys.stderr)
    except (namespaces.NetnsError, EspdProcessError, OSError, PkiError) as e:
        passed = False
        print(f"espd demo: {e}", file=sys.stderr)
    finally:
        print("cleaning up: stopping espd, deleting namespaces...", flush=True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip this
        try:
            stop_all(daemons)
            topology.destroy()
            shutil.rmtree(workdir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, old_term)
    print(f"demo passed: traffic went both ways through the tunnel ({' and '.join(keyings)} "
          f"keys)" if passed else "demo FAILED", flush=True)
    return 0 if passed else 1


def stop_all(daemons: list[EspdProcess]) -> bool:
    """Stop every daemon started (by pid); True if each exited cleanly."""
    clean = True
    while daemons:
        daemon = daemons.pop()
        status = daemon.stop()
        if status not in (None, 0):
            clean = False
            print(f"{daemon.name}: espd exited with status {status}; its log:\n"
                  f"{daemon.log()}", file=sys.stderr)
    return clean


def run_tunnel(topology: Topology, workdir: Path, daemons: list[EspdProcess], keying: str,
               templates: list[Path]) -> bool:
    """One run of the tunnel with `keying`'s configs; the daemons are stopped after it."""
    print(f"--- the tunnel keyed {BY[keying]} ---", flush=True)
    step(1, f"writing per-run configs to {workdir}...", keying)
    if keying == "certificate":
        make_demo_pki(workdir / "pki")
    port = random.randint(20000, 40000)
    for name, ns, template in (("gwA", topology.gw_a, templates[0]),
                               ("gwB", topology.gw_b, templates[1])):
        sock = str(workdir / f"{name}-{keying}.sock")
        config = workdir / f"{name}-{keying}.toml"
        write_config(template, config, interface="espd0", control_socket=sock,
                     metrics=f"127.0.0.1:{port}",
                     state_dir=str(workdir / f"{name}-{keying}-state"))
        daemons.append(EspdProcess(ns, str(config), sock, str(workdir / f"{name}-{keying}.log"),
                              name))
        say(f"{name}: {config} (control socket {sock}, metrics 127.0.0.1:{port})")

    step(2, "starting espd on gwA and gwB...", keying)
    for daemon in daemons:
        daemon.start()
    for daemon in daemons:
        state = daemon.wait_ready()
        mtu = namespaces.link_mtu(daemon.ns, "espd0")
        say(f"{daemon.name}: espd pid {daemon.pid} ready, {len(state.get('sas', []))} SAs, "
            f"espd0 mtu {mtu}")
    if keying != "manual":
        say("no SA yet: the first packet into espd0 starts the IKEv2 negotiation (on demand)")

    step(3, "ping through the tunnel, both ways...", keying)
    results = [
        ping(topology.host_a, namespaces.HOST_B4, "hostA -> hostB (IPv4)"),
        ping(topology.host_b, namespaces.HOST_A4, "hostB -> hostA (IPv4)"),
    ]
    if topology.ipv6:
        results += [
            ping(topology.host_a, namespaces.HOST_B6, "hostA -> hostB (IPv6)"),
            ping(topology.host_b, namespaces.HOST_A6, "hostB -> hostA (IPv6)"),
        ]

    step(4, f"TCP transfer of {TRANSFER_BYTES // 1024} KiB, both ways...", keying)
    results += [
        transfer(topology.host_a, topology.host_b, namespaces.HOST_B4, "hostA -> hostB", 5201),
        transfer(topology.host_b, topology.host_a, namespaces.HOST_A4, "hostB -> hostA", 5202),
    ]

    step(5, f"espd show {'ike sa and show ' if keying != 'manual' else ''}sa on gwA, and its "
            f"metrics...", keying)
    if keying != "manual":
        show_sa(topology.gw_a, daemons[0].control_socket, ("ike", "sa", "--detail"))
        say("")
    show_sa(topology.gw_a, daemons[0].control_socket)
    say("")
    metrics_excerpt(topology.gw_a, f"127.0.0.1:{port}")
    return all(results) & stop_all(daemons)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
