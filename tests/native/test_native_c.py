"""Compile and run every standalone C test in tests/native (test_*.c).

Each C file names what it links in its first lines:

    // sources: native/spd.c native/replay.c
    // libs: -lcrypto

`sources` is required (paths relative to the repository root); `libs` is optional. The
program must exit 0 and print a last line `N passed, 0 failed`. It is built with
AddressSanitizer and UndefinedBehaviorSanitizer when the compiler has them ($CC, else cc).
A test of concurrent code adds `// tsan: yes` and runs a second time under
ThreadSanitizer (when the compiler has it).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IPSECMB_SOURCE = "native/crypto_ipsecmb.c"
C_TESTS = sorted((ROOT / "tests" / "native").glob("test_*.c"))
HEADER_LINES = 10
DIRECTIVE = re.compile(r"^\s*(?://|/?\*)\s*(sources|libs|tsan):\s*(.*?)\s*(?:\*/)?\s*$")
SUMMARY = re.compile(r"^(\d+) passed, 0 failed$")
WARNINGS = ["-Wall", "-Wextra", "-Werror"]
SANITIZERS = ["-fsanitize=address,undefined"]
TSAN = ["-fsanitize=thread"]
RUN_TIMEOUT = 600


def directives(c_file: Path) -> dict[str, list[str]]:
    """The `sources:` and `libs:` lists from the first lines of a C test."""
    found: dict[str, list[str]] = {"sources": [], "libs": [], "tsan": []}
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


def _env(flags: list[str]) -> dict[str, str]:
    """The environment to run a test built with `flags`: make test-asan preloads the ASan
    runtime, which a ThreadSanitizer program must not get."""
    env = dict(os.environ, UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    if flags == TSAN:
        env.pop("LD_PRELOAD", None)
        env["TSAN_OPTIONS"] = "halt_on_error=1"
    return env


def _works(compiler: str, flags: list[str], d: Path) -> bool:
    """Whether a trivial program builds and runs with these flags."""
    src, exe = d / "t.c", d / "t"
    src.write_text("int main(void) { return 0; }\n")
    build = subprocess.run([compiler, *flags, str(src), "-o", str(exe)], capture_output=True,
                           env=_env(flags))
    run = subprocess.run([str(exe)], capture_output=True, env=_env(flags))
    return build.returncode == 0 and run.returncode == 0


@pytest.fixture(scope="session")
def sanitizer_flags(compiler: str, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The sanitizer flags if a trivial program builds and runs with them, else none."""
    return SANITIZERS if _works(compiler, SANITIZERS, tmp_path_factory.mktemp("sancheck")) else []


@pytest.mark.parametrize("c_file", C_TESTS, ids=[p.name for p in C_TESTS])
def test_c_program_passes(
    c_file: Path, compiler: str, sanitizer_flags: list[str], tmp_path: Path
) -> None:
    build_and_run(c_file, compiler, sanitizer_flags, tmp_path)


TSAN_TESTS = [p for p in C_TESTS if directives(p)["tsan"] == ["yes"]]


@pytest.mark.parametrize("c_file", TSAN_TESTS, ids=[p.name for p in TSAN_TESTS])
def test_c_program_passes_under_tsan(c_file: Path, compiler: str, tmp_path: Path) -> None:
    if not _works(compiler, TSAN, tmp_path):
        pytest.skip(f"{compiler} cannot build and run -fsanitize=thread here")
    build_and_run(c_file, compiler, TSAN, tmp_path)


def ipsecmb_flags() -> tuple[list[str], list[str]]:
    """native/build.py's answer to "is libipsec-mb there" (cflags, ldflags)."""
    spec = importlib.util.spec_from_file_location("espd_native_build", ROOT / "native" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ipsecmb_flags()


def build_and_run(c_file: Path, compiler: str, flags: list[str], tmp_path: Path) -> None:
    d = directives(c_file)
    assert d["sources"], (
        f"{c_file.name}: name the files it links in its first {HEADER_LINES} lines, "
        "e.g. `// sources: native/spd.c`"
    )
    for src in d["sources"]:
        assert (ROOT / src).is_file(), f"{c_file.name}: sources: {src} does not exist"
    exe = tmp_path / c_file.stem
    # a test that links the libipsec-mb backend gets it built in exactly when the data
    # plane would (native/build.py), so it runs on both backends wherever both exist
    imb_cflags, imb_libs = ipsecmb_flags() if IPSECMB_SOURCE in d["sources"] else ([], [])
    cmd = [
        compiler, "-O1", "-g", *flags, *WARNINGS, *imb_cflags, "-I", "native",
        *d["sources"], str(c_file.relative_to(ROOT)), "-o", str(exe), *d["libs"], *imb_libs,
    ]  # fmt: skip
    build = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert build.returncode == 0, f"{' '.join(cmd)}\n{build.stderr}"

    run = subprocess.run(
        [str(exe)], cwd=ROOT, capture_output=True, text=True, env=_env(flags),
        timeout=RUN_TIMEOUT,
    )
    lines = run.stdout.strip().splitlines()
    report = (
        f"exit {run.returncode}\nstdout tail:\n{run.stdout[-2000:]}\nstderr:\n{run.stderr[-4000:]}"
    )
    assert run.returncode == 0, report
    assert lines and SUMMARY.match(lines[-1]), report
