"""Every input the fuzzers found a bug with stays fixed: each config parser answers it with
a located ConfigError whose lines all start with FILE:LINE and never quote key material."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from espd.config import ios, toml
from espd.config.model import ConfigError

REGRESSIONS = Path(__file__).resolve().parents[1] / "fuzz" / "regressions"
CASES = sorted(p for p in REGRESSIONS.glob("*/*")
               if p.is_file() and p.parent.name in ("config", "ios"))
# (regressions/exchanges: tests/unit/ike/test_fuzz_exchanges.py)


def test_there_are_regression_inputs():
    assert {p.parent.name for p in CASES} == {"config", "ios"}


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fuzz_regression_is_a_clean_config_error(path):
    text = path.read_text(errors="replace")
    parse = ios.parse_ios if path.parent.name == "ios" else toml.parse_toml
    with pytest.raises(ConfigError) as e:
        parse(text, "x.conf")
    message = str(e.value)
    assert message
    assert all(line.startswith("x.conf:") for line in message.splitlines()), message
    assert not re.search(r"[0-9a-fA-F]{16,}", message), "key material in an error"
