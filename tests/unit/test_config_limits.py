"""How much espd reads for a configuration: at most 4 MiB for a config and everything it
includes, together; past that, one clear error naming the file and the limit, at once
(issue 10: `espd check -c /dev/zero` used to grow to 13 GB)."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

from espd.config.load import load
from espd.config.model import ConfigError
from espd.config.read import MAX_CONFIG_BYTES

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "config" / "demo" / "gateway-a.toml"


def _limited_memory() -> None:  # in the child: 1 GiB of address space, no more
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_check_of_dev_zero_fails_fast_naming_the_limit():
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "espd", "check", "-c", "/dev/zero"],
                            capture_output=True, text=True, timeout=60,
                            preexec_fn=_limited_memory)
    took = time.monotonic() - start
    assert result.returncode == 1, result
    assert "/dev/zero" in result.stderr and "at most 4 MiB" in result.stderr, result.stderr
    assert took < 20, f"took {took:.1f} s"


def _padded(text: str, size: int) -> str:
    pad = "# padding padding padding padding padding padding padding padding padding\n"
    return pad * (size // len(pad)) + text


def test_a_config_just_under_the_limit_loads(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text(_padded(DEMO.read_text(), MAX_CONFIG_BYTES - 8192))
    assert len(load(str(path)).crypto_maps) == 2


def test_includes_count_against_the_same_budget(tmp_path):
    ios = (REPO / "config" / "demo" / "gateway-a.ios").read_text()
    (tmp_path / "router.ios").write_text(
        "!\n" * ((MAX_CONFIG_BYTES // 2) // 2) + ios)  # half the budget
    main = tmp_path / "main.toml"
    main.write_text(_padded('include_ios = ["router.ios"]\n', MAX_CONFIG_BYTES * 2 // 3))
    try:
        load(str(main))
    except ConfigError as e:
        (problem,) = e.problems
        assert "router.ios" in str(problem) and "bytes read before it" in str(problem)
        assert "at most 4 MiB" in str(problem)
    else:
        raise AssertionError("two files over the budget together were read")


def test_line_endings_read_as_before(tmp_path):
    path = tmp_path / "crlf.toml"
    path.write_bytes(DEMO.read_text().replace("\n", "\r\n").encode())
    assert len(load(str(path)).crypto_maps) == 2
