"""Data-plane microbenchmarks (`make bench`): build tests/bench/bench_dp.c, run it, report.

bench_dp is a C program over the public API in native/espdp.h (plus OpenSSL directly for
the baseline), compiled with every native/*.c and the data plane's own flags (those of
native/build.py, without sanitizers). Each section runs in its own process, pinned to one
CPU, so that a crash in one section (or memory freed by another) cannot spoil the rest.

This is a report, not a test: it exits 0 when a target is missed (and says MISS), and
non-zero only when the benchmark cannot be built.

    .venv/bin/python tests/bench/bench_dataplane.py [--reps 7] [--ms 50] [--cpu N]
                                                    [--only SECTION] [--json FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NATIVE = ROOT / "native"
SOURCE = Path(__file__).resolve().parent / "bench_dp.c"
BINARY = ROOT / "build" / "bench_dp"
WORKERS_SOURCE = Path(__file__).resolve().parent / "bench_workers.c"
WORKERS_BINARY = ROOT / "build" / "bench_workers"
SECTIONS = ("rss", "crypto", "classify", "sad", "tables", "checksum")

TRANSFORMS = (
    "esp-gcm 128",
    "esp-gcm 256",
    "esp-chacha20-poly1305",
    "esp-aes 128 esp-sha256-hmac",
    "esp-aes 256 esp-sha512-hmac",
)


def pkg_config(flag: str) -> list[str]:
    try:
        out = subprocess.run(
            ["pkg-config", flag, "libcrypto"], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return [] if flag == "--cflags" else ["-lcrypto"]
    return shlex.split(out)


def ipsecmb_flags() -> tuple[list[str], list[str]]:
    """native/build.py's answer to "is libipsec-mb there" (cflags, ldflags)."""
    spec = importlib.util.spec_from_file_location("espd_native_build", NATIVE / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ipsecmb_flags()


def build(source: Path = SOURCE, binary: Path = BINARY) -> None:
    """Compile a benchmark with the flags of native/build.py (no sanitizers), libipsec-mb
    included when the data plane would include it."""
    cflags = ["-std=gnu11", "-O2", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter",
              "-fvisibility=hidden", "-D_GNU_SOURCE"]
    imb_cflags, imb_libs = ipsecmb_flags()
    cflags += pkg_config("--cflags") + imb_cflags + shlex.split(os.environ.get("ESPD_CFLAGS", ""))
    sources = sorted(str(p) for p in NATIVE.glob("*.c")) + [str(source)]
    binary.parent.mkdir(exist_ok=True)
    cmd = [os.environ.get("CC", "cc"), *cflags, f"-I{NATIVE}", *sources, "-o", str(binary),
           *pkg_config("--libs"), *imb_libs, "-lpthread"]
    print("building:", " ".join(shlex.quote(c) for c in cmd[:8]), "... -o", BINARY, flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.stderr.write(r.stdout + r.stderr)
        raise SystemExit(f"{source.name} did not build (exit {r.returncode})")
    if r.stderr.strip():
        sys.stderr.write(r.stderr)


def run_section(section: str, args: argparse.Namespace, backend: str = "openssl") -> dict:
    cmd = [str(BINARY), "--only", section, "--reps", str(args.reps), "--ms", str(args.ms),
           "--backend", backend]
    if args.cpu is not None:
        cmd += ["--cpu", str(args.cpu)]
    print(f"\n== {section}" + (f" (AEAD backend {backend})" if section == "crypto" else ""),
          flush=True)
    # progress goes straight to our stderr; the JSON is the last line of stdout
    r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
    if r.returncode or not lines:
        how = f"signal {-r.returncode}" if r.returncode < 0 else f"exit {r.returncode}"
        print(f"!! section {section} failed ({how})", flush=True)
        if r.returncode == 3:  # bench_dp: that backend is not built in
            how = f"crypto backend {backend} not available"
        return {"error": {section if backend == "openssl" else f"{section} {backend}": how}}
    return json.loads(lines[-1])


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu_model": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
            "machine": platform.machine()}


def verdict(ok: bool | None) -> str:
    return "n/a " if ok is None else "PASS" if ok else "MISS"


def fmt(v: float | None, unit: str = "", digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}{unit}"


def crypto_table(backend: str, rows: list[dict], res: dict,
                 ) -> list[tuple[str, str, float | None, bool | None]]:
    """One backend's crypto table; returns its targets."""
    targets: list[tuple[str, str, float | None, bool | None]] = []
    crypto = {(r["transform"], r["size"], r["dir"]): r for r in rows}
    arch = res.get("ipsecmb_arch", "?") if backend == "ipsec-mb" else ""
    print(f"\nESP, tunnel mode, IPv4, raw ESP, batches of 32, AEADs on {backend}"
          f"{f' ({arch})' if arch else ''}: ns per packet (espd / bare OpenSSL)")
    print(f"  {'transform':<28} {'inner':>6} | {'encap':>8} {'bare seal':>9} {'ratio':>6} | "
          f"{'decap':>8} {'bare open':>9} {'ratio':>6}")
    print("  " + "-" * 90)
    for t in TRANSFORMS:
        for size in (64, 512, 1400):
            e, d = crypto.get((t, size, "encap")), crypto.get((t, size, "decap"))
            if not e and not d:
                continue
            print(f"  {t:<28} {size:>5}B | "
                  f"{fmt(e and e['espd_ns']):>8} {fmt(e and e['bare_ns']):>9} "
                  f"{fmt(e and e['ratio'], 'x', 2):>6} | "
                  f"{fmt(d and d['espd_ns']):>8} {fmt(d and d['bare_ns']):>9} "
                  f"{fmt(d and d['ratio'], 'x', 2):>6}")
    for size, goal in ((1400, 1.10), (64, 1.25)):  # issue 14
        r = crypto.get(("esp-gcm 128", size, "encap"))
        v = r["ratio"] if r else None
        targets.append((f"encap {size} B esp-gcm 128 vs bare seal [{backend}]", f"<= {goal}x", v,
                        None if v is None else v <= goal))
    return targets


def report(res: dict) -> list[tuple[str, str, float | None, bool | None]]:
    """Print the tables; return the targets as (name, goal, value, ok)."""
    m = res["machine"]
    print("\n" + "=" * 100)
    print("espd data plane microbenchmarks (one core, median of "
          f"{res.get('reps', '?')} repetitions of ~{res.get('target_ms', '?')} ms each)")
    print(f"  CPU      {m['cpu_model']} ({m['cpus']} CPUs, pinned to CPU {res.get('cpu', '?')})")
    print(f"  kernel   {m['kernel']} {m['machine']}")
    print(f"  OpenSSL  {res.get('openssl', '?')}")
    print(f"  features {res.get('features', '?')}")
    print(f"  clock    clock_gettime {fmt(res.get('clock_ns'))} ns, once per batch of "
          f"{res.get('batch', 32)} packets (~1 ns/packet, in every number alike)")
    if res.get("batches"):
        print(f"  preempted batches counted as their repetition's median: "
              f"{res['trimmed']} of {res['batches']} "
              f"({100.0 * res['trimmed'] / res['batches']:.2f}%)")
    targets: list[tuple[str, str, float | None, bool | None]] = []

    for backend, rows in res.get("crypto_backends", {"openssl": res.get("crypto", [])}).items():
        targets += crypto_table(backend, rows, res)

    cl = {(r["rules"], r["case"]): r for r in res.get("classify", [])}
    if cl:
        print("\nClassification: ns per espdp_classify() call (64-byte IPv4 packet)")
        print(f"  {'entries':>8} | {'middle rule':>11} {'last rule':>10} {'broad only':>10}")
        print("  " + "-" * 46)
        for n in (10, 1000, 10000):
            row = [cl.get((n, c)) for c in ("middle", "last", "broad")]
            cells = [("-" if r is None else f"{r['ns']:.1f}" + (" WRONG" if r["wrong"] else ""))
                     for r in row]
            print(f"  {n:>8} | {cells[0]:>11} {cells[1]:>10} {cells[2]:>10}")
        print("  middle: rule ~n/2; last: the last specific rule (n-2); broad only: the final "
              "permit 10/8 -> any")
        if any(r["wrong"] for r in cl.values()):
            print("  !! espdp_classify returned a rule other than the one expected (WRONG)")
    for case in ("last", "middle"):
        a, b = cl.get((10, case)), cl.get((10000, case))
        v = b["ns"] / a["ns"] if a and b else None
        ok = None if v is None else v <= 3.0 and not (a["wrong"] or b["wrong"])
        targets.append((f"classify 10,000 vs 10 entries ({case} rule)", "<= 3x", v, ok))

    sad = {(r["sas"], r["active"]): r for r in res.get("sad", [])}
    if sad:
        print("\nInbound SA lookup: decap ns per packet (64-byte inner, esp-gcm 128, window 1024,"
              " random SPI among the active SAs)")
        for (n, a), r in sorted(sad.items()):
            print(f"  {n:>7} SAs installed, {a:>7} active: {r['ns']:7.1f} ns")
    base = sad.get((10, 10))
    for (n, a), name in (((100000, 100000), "decap 100,000 vs 10 SAs (all active)"),
                         ((100000, 10), "decap 100,000 vs 10 SAs (10 active)")):
        r = sad.get((n, a))
        v = r["ns"] / base["ns"] if r and base else None
        targets.append((name, "<= 2x" if a == n else "(info)", v,
                        None if v is None or a != n else v <= 2.0))

    tables = {(r["tunnels"], r["op"]): r for r in res.get("tables", [])}
    if tables:
        print("\nSA changes: one pair changed in the live set vs the whole set republished "
              "(us; SA keying not included)")
        print(f"  {'tunnels':>8} {'SAs':>6} | {'op':<8} {'median':>9} {'p99':>9} {'max':>9}")
        print("  " + "-" * 58)
        for (n, op), r in sorted(tables.items()):
            print(f"  {n:>8} {2 * n:>6} | {op:<8} {r['median_ns'] / 1e3:9.2f} "
                  f"{r['p99_ns'] / 1e3:9.2f} {r['max_ns'] / 1e3:9.2f}")
    for op in ("install", "replace", "retire"):
        small, big = tables.get((10, op)), tables.get((10000, op))
        v = big["median_ns"] / small["median_ns"] if small and big else None
        targets.append((f"{op} at 10,000 vs 10 tunnels (median)", "<= 2x", v,
                        None if v is None else v <= 2.0))
        pub = tables.get((10000, "publish"))
        v = pub["median_ns"] / big["median_ns"] if pub and big else None
        targets.append((f"republish / {op} at 10,000 tunnels", ">= 50x", v,
                        None if v is None else v >= 50.0))

    cs = res.get("checksum")
    if cs:
        runs = {(r["bytes"], r["kind"]): r["ns"] for r in cs["runs"]}
        print(f"\nInternet checksum: ns per call ({cs['impl']} code; portable = the scalar loop)")
        print(f"  {'bytes':>6} | {'ip_sum':>8} {'portable':>9} {'ratio':>6} | "
              f"{'copy+sum fused':>14} {'memcpy, portable sum':>20} {'ratio':>6}")
        print("  " + "-" * 80)
        for n in sorted({b for b, _ in runs}):
            a, p_, f, m = (runs.get((n, k)) for k in ("ip_sum", "portable", "sum_copy",
                                                       "memcpy+portable"))
            print(f"  {n:>6} | {a:8.1f} {p_:9.1f} {a / p_:6.2f} | {f:14.1f} {m:20.1f} "
                  f"{f / m:6.2f}")
        a, p_ = runs.get((1448, "sum_copy")), runs.get((1448, "memcpy+portable"))
        targets.append(("TSO segment copy+sum fused vs apart (1448 B)", "(info)",
                        a / p_ if a and p_ else None, None))

    rss = res.get("rss")
    if rss:
        print(f"\nMemory per SA ({rss['sas']:,} SAs, esp-gcm 128, created and published)")
        print(f"  inbound (window 1024): RSS {rss['in_rss_per_sa']:.0f} B/SA, "
              f"heap in use {rss['in_heap_per_sa']:.0f} B/SA")
        print(f"  outbound:              RSS {rss['out_rss_per_sa']:.0f} B/SA, "
              f"heap in use {rss['out_heap_per_sa']:.0f} B/SA")
        targets.append(("RSS per inbound SA", "<= 2048 B", rss["in_rss_per_sa"],
                        rss["in_rss_per_sa"] <= 2048))
        targets.append(("RSS per outbound SA", "<= 2048 B", rss["out_rss_per_sa"],
                        rss["out_rss_per_sa"] <= 2048))
    else:
        targets.append(("RSS per inbound SA", "<= 2048 B", None, None))
    if "workers" in res:
        w = res["workers"]
        targets.append(("2 workers vs 1, two SAs (data plane)", ">= 1.6x", w["ratio_own"],
                        w["ratio_own"] >= 1.6))
        targets.append(("2 workers vs 1, one shared SA", "(info)", w["ratio_shared"], None))

    print("\nTargets")
    for name, goal, v, ok in targets:
        val = "-" if v is None else f"{v:.0f} B" if goal.endswith("B") else f"{v:.2f}x"
        print(f"  {verdict(ok) if goal != '(info)' else 'info':<5} {name:<44} {val:>9}  "
              f"target {goal}")
    for section, how in res.get("error", {}).items():
        print(f"  FAIL  section {section} did not complete ({how}): see its output above")
    return targets


def run_workers(runs: int = 5) -> dict:
    """bench_workers: one vs two worker threads sealing on two CPUs; medians of `runs`."""
    build(WORKERS_SOURCE, WORKERS_BINARY)
    print("\n== workers (two CPUs, data plane only)", flush=True)
    samples: dict[str, list[float]] = {}
    for _ in range(runs):
        out = subprocess.run([str(WORKERS_BINARY), "1000"], stdout=subprocess.PIPE, text=True)
        line = next(x for x in out.stdout.splitlines() if x.startswith("JSON "))
        for key, value in json.loads(line[5:]).items():
            samples.setdefault(key, []).append(value)
    med = {k: sorted(v)[len(v) // 2] for k, v in samples.items()}
    print(f"  workers SAs   Mpps  vs one (1400 B esp-gcm 128; medians of {runs} runs)")
    for name, workers, sas in (("one", 1, 1), ("two_own_sas", 2, 2), ("two_one_sa", 2, 1)):
        print(f"  {workers:7} {sas:3} {med[name] / 1e6:6.3f}  {med[name] / med['one']:.2f}x")
    return {**med, "ratio_own": med["two_own_sas"] / med["one"],
            "ratio_shared": med["two_one_sa"] / med["one"]}


def merge(res: dict, out: dict) -> None:
    for key, value in out.items():
        if key == "error":
            res.setdefault("error", {}).update(value)
        elif key in ("batches", "trimmed"):
            res[key] = res.get(key, 0) + value
        elif key == "ipsecmb_arch" and value == "none" and "ipsecmb_arch" in res:
            continue
        else:
            res[key] = value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7, help="repetitions per measurement (median)")
    ap.add_argument("--ms", type=float, default=50.0, help="timed ms per repetition")
    ap.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last)")
    ap.add_argument("--only", choices=SECTIONS, action="append", help="run only this section")
    ap.add_argument("--backend", choices=("openssl", "ipsec-mb"), action="append",
                    help="AEAD backend of the crypto rows (default: both; one missing from "
                         "the build is reported, not fatal)")
    ap.add_argument("--json", type=Path, default=ROOT / "build" / "bench_dataplane.json",
                    help="where to save all numbers")
    args = ap.parse_args()
    args.backend = args.backend or ["openssl", "ipsec-mb"]

    build()
    res: dict = {"machine": machine()}
    for section in args.only or SECTIONS:
        backends = args.backend if section == "crypto" else ["openssl"]
        for backend in backends:
            out = run_section(section, args, backend)
            if section == "crypto" and "crypto" in out:
                res.setdefault("crypto_backends", {})[backend] = out["crypto"]
                if backend != "openssl":
                    out.pop("crypto")
            merge(res, out)
    if not args.only and (os.cpu_count() or 1) >= 2:
        res["workers"] = run_workers()
    targets = report(res)
    res["targets"] = [{"name": n, "goal": g, "value": v, "pass": ok} for n, g, v, ok in targets]
    try:
        args.json.parent.mkdir(exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1) + "\n")
        print(f"\nall numbers: {args.json}")
    except OSError as e:
        print(f"\n(could not save {args.json}: {e})")
    print("JSON " + json.dumps(res, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
