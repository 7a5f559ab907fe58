"""Read a config file (TOML or an included IOS file) as UTF-8 text, or a located error."""

from __future__ import annotations

from espd.config.model import ConfigError, Location, Problem


def read_text(path: str, where: Location) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise ConfigError([Problem(where, f"cannot read {path}: {reason}")]) from None
