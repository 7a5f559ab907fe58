"""Read a config file and hand it to the right front end: IOS if it starts like an IOS
config, else espd TOML (format sniffing by content, not by file name).
"""

from __future__ import annotations

import re

from espd.config import ios
from espd.config.model import (
    Config,
    Location,
)
from espd.config.read import read_budget, read_text
from espd.config.toml import parse_toml

_IOS_WORDS = frozenset((
    "access-list", "crypto", "interface", "hostname", "version", "ip", "ipv6", "service",
    "enable", "no", "end", "current", "building", "boot", "username", "line", "router",
))
_TOML_KEY = re.compile(r"""[\w"'.-]+\s*=""")


def load(path: str) -> Config:
    """Read ``path`` as IOS if it starts like an IOS config, else as espd TOML. It and its
    includes share one size budget (config/read.py)."""
    with read_budget():
        text = read_text(path, Location(path))
        if looks_like_ios(text):
            return ios.parse_ios(text, path)
        return parse_toml(text, path)


def looks_like_ios(text: str) -> bool:
    """True if the first meaningful line is an IOS command or a '!' comment."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[") or _TOML_KEY.match(stripped):
            return False
        return stripped.startswith("!") or stripped.split()[0].lower() in _IOS_WORDS
    return False
