"""Read a config file (TOML or an included IOS file) as UTF-8 text, or a located error.

What is read is capped: a configuration and every file it includes together may hold at
most MAX_CONFIG_BYTES (`load` opens one budget for them all; a file read outside a load
has the cap to itself). A path that is no config (``/dev/zero``, a log) fails at the cap,
at once, instead of filling memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from espd.config.model import ConfigError, Location, Problem

MAX_CONFIG_BYTES = 4 << 20  # 4 MiB: a config and its includes, together
_budget: ContextVar[list[int] | None] = ContextVar("espd_config_budget", default=None)


@contextlib.contextmanager
def read_budget() -> Iterator[None]:
    """Count every read_text inside against one MAX_CONFIG_BYTES budget."""
    token = _budget.set([MAX_CONFIG_BYTES])
    try:
        yield
    finally:
        _budget.reset(token)


def read_text(path: str, where: Location) -> str:
    budget = _budget.get()
    left = budget[0] if budget is not None else MAX_CONFIG_BYTES
    try:
        with open(path, "rb") as f:
            data = f.read(left + 1)
    except OSError as e:
        raise ConfigError([Problem(where, f"cannot read {path}: {e.strerror}")]) from None
    if len(data) > left:
        before = MAX_CONFIG_BYTES - left
        also = f" with the {before} bytes read before it" if before else ""
        raise ConfigError([Problem(where, (
            f"cannot read {path}: it is larger than espd reads{also} (at most "
            f"{MAX_CONFIG_BYTES >> 20} MiB, {MAX_CONFIG_BYTES} bytes, for a configuration "
            "and every file it includes, together); check the path, or make the "
            "configuration smaller"))]) from None
    if budget is not None:
        budget[0] -= len(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([Problem(where, f"cannot read {path}: not UTF-8 text")]) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # as text mode reads it
