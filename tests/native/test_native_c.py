"""Compile and run every standalone C test in tests/native (test_*.c).

Each C file names what it links in its first lines:

    // sources: native/spd.c native/replay.c
    // libs: -lcrypto

`sources` is required (paths relative to the repository root); `libs` is optional. The
program must exit 0 and print a last line `N passed, 0 failed`. It is built with
AddressSanitizer and UndefinedBehaviorSanitizer when the compiler has them ($CC, else cc).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
C_TESTS = sorted((ROOT / "tests" / "native").glob("test_*.c"))
HEADER_LINES = 10
DIRECTIVE = re.compile(r"^\s*(?://|/?\*)\s*(sources|libs):\s*(.*?)\s*(?:\*/)?\s*$")
SUMMARY = re.compile(r"^(\d+) passed, 0 failed$")
WARNINGS = ["-Wall", "-Wextra", "-Werror"]
SANITIZERS = ["-fsanitize=address,undefined"]
RUN_TIMEOUT = 600


def directives(c_file: Path) -> dict[str, list[str]]:
    """The `sources:` and `libs:` lists from the first lines of a C test."""
    found: dict[str, list[str]] = {"sources": [], "libs": []}
    with c_file.open() as f:
        for _, line in zip(range(HEADER_LINES), f, strict=False):
            m = DIRECTIVE.match(line)
            if m:
                found[m.group(1)] += m.group(2).replace(",", " ").split()
    return found


@pytest.fixture(scope="session")
def compiler() -> str:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler ({cc})")
    return cc


@pytest.fixture(scope="session")
def sanitizer_flags(compiler: str, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The sanitizer flags if a trivial program builds and runs with them, else none."""
    d = tmp_path_factory.mktemp("sancheck")
    src, exe = d / "t.c", d / "t"
    src.write_text("int main(void) { return 0; }\n")
    build = subprocess.run([compiler, *SANITIZERS, str(src), "-o", str(exe)], capture_output=True)
    if build.returncode != 0 or subprocess.run([str(exe)], capture_output=True).returncode:
        return []
    return SANITIZERS


@pytest.mark.parametrize("c_file", C_TESTS, ids=[p.name for p in C_TESTS])
def test_c_program_passes(
    c_file: Path, compiler: str, sanitizer_flags: list[str], tmp_path: Path
) -> None:
    d = directives(c_file)
    assert d["sources"], (
        f"{c_file.name}: name the files it links in its first {HEADER_LINES} lines, "
        "e.g. `// sources: native/spd.c`"
    )
    for src in d["sources"]:
        assert (ROOT / src).is_file(), f"{c_file.name}: sources: {src} does not exist"
    exe = tmp_path / c_file.stem
    cmd = [
        compiler, "-O1", "-g", *sanitizer_flags, *WARNINGS, "-I", "native",
        *d["sources"], str(c_file.relative_to(ROOT)), "-o", str(exe), *d["libs"],
    ]  # fmt: skip
    build = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert build.returncode == 0, f"{' '.join(cmd)}\n{build.stderr}"

    env = dict(os.environ, UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    run = subprocess.run(
        [str(exe)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT
    )
    lines = run.stdout.strip().splitlines()
    report = (
        f"exit {run.returncode}\nstdout tail:\n{run.stdout[-2000:]}\nstderr:\n{run.stderr[-4000:]}"
    )
    assert run.returncode == 0, report
    assert lines and SUMMARY.match(lines[-1]), report
