"""Line coverage of espd.ike's engine and exchange handlers by the corpora of the
exchanges and pending targets (the seeds and tests/fuzz/work/TARGET), with the standard
library's ``trace`` (no dependency). Run from the repository root, naming the targets
(default: both):
    PYTHONPATH=daemon:tests/fuzz .venv/bin/python tests/fuzz/exchange_coverage.py [TARGET...]
"""

from __future__ import annotations

import sys
import trace
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FILES = sorted((ROOT / "daemon" / "espd" / "ike" / "exchanges").glob("*.py")) + [
    ROOT / "daemon" / "espd" / "ike" / "engine" / "engine.py",
    ROOT / "daemon" / "espd" / "ike" / "engine" / "fragmentation.py"]


HANDLERS = ("_receive", "_request", "_response", "_answer_retransmit", "on_request",
            "on_response", "answer", "accept", "_on_response", "_complete",
            "_on_ike_rekey_request", "_on_ike_rekey_response", "_established_init",
            "check_peer_spi", "install", "receive", "_next")
TARGETS = ("exchanges", "pending")


def functions(path: Path):
    """(name, executable lines) of every function in ``path`` (module-level statements
    run at import, before tracing, so they are left out)."""
    def walk(code):
        for const in code.co_consts:
            if hasattr(const, "co_lines"):
                yield const
                yield from walk(const)
    module = compile(path.read_text(), str(path), "exec")
    for code in walk(module):
        lines = {n for _s, _e, n in code.co_lines() if n is not None}
        lines.discard(code.co_firstlineno)  # the def line ran at import
        if lines:
            yield code.co_name, lines


def main() -> None:
    import importlib

    from exchange_victim import OracleViolation

    targets = sys.argv[1:] or TARGETS
    tracer = trace.Trace(count=1, trace=0, ignoredirs=[sys.prefix, sys.exec_prefix])
    inputs = []
    for target in targets:
        victim = importlib.import_module(
            {"exchanges": "exchange_victim", "pending": "pending_victim"}[target])
        paths = [p for d in (HERE / "corpus" / target, HERE / "work" / target)
                 if d.is_dir() for p in sorted(d.iterdir())]
        inputs += paths
        for path in paths:
            try:
                tracer.runfunc(victim.run_one, path.read_bytes())
            except OracleViolation as err:
                print(f"{target}/{path.name}: {err}")
    counts = tracer.results().counts
    total_run = total_lines = 0
    print(f"{len(inputs)} inputs of {', '.join(targets)}; lines inside functions run / "
          f"present")
    for path in FILES:
        ran = {n for (f, n) in counts if f == str(path)}
        run = lines = 0
        for name, body in functions(path):
            run, lines = run + len(body & ran), lines + len(body)
            if name in HANDLERS:
                print(f"    {path.stem}.{name}: {len(body & ran)}/{len(body)}")
        total_run, total_lines = total_run + run, total_lines + lines
        if lines:
            print(f"  {path.relative_to(ROOT)}: {run}/{lines} ({100 * run / lines:.0f}%)")
    print(f"  total: {total_run}/{total_lines} ({100 * total_run / total_lines:.0f}%)")


if __name__ == "__main__":
    main()
