"""Line coverage of espd.ike's engine and exchange handlers by the exchanges corpus (the
seeds and tests/fuzz/work/exchanges), with the standard library's ``trace`` (no
dependency). Run from the repository root (run.sh does: ``run.sh 0 exchanges-cov``):
    PYTHONPATH=daemon:tests/fuzz .venv/bin/python tests/fuzz/exchange_coverage.py
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


HANDLERS = ("_receive", "_request", "_answer_retransmit", "on_request", "answer",
            "_on_ike_rekey_request", "check_peer_spi", "install", "receive")


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
    import exchange_victim

    inputs = [p for d in (HERE / "corpus" / "exchanges", HERE / "work" / "exchanges")
              if d.is_dir() for p in sorted(d.iterdir())]
    tracer = trace.Trace(count=1, trace=0, ignoredirs=[sys.prefix, sys.exec_prefix])
    for path in inputs:
        try:
            tracer.runfunc(exchange_victim.run_one, path.read_bytes())
        except exchange_victim.OracleViolation as err:
            print(f"{path.name}: {err}")
    counts = tracer.results().counts
    total_run = total_lines = 0
    print(f"{len(inputs)} inputs; lines inside functions run / present")
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
