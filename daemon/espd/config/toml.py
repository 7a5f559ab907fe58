"""The TOML front end: tomllib parses, SchemaLoader checks and builds the Config.

Every problem is reported at once, as ``FILE:LINE: what is wrong; what to write instead``.
tomllib gives no positions, so ``TomlLines`` re-scans the accepted text to find the line of
every key, table and array element.
"""

from __future__ import annotations

import re
import tomllib

from espd.config.model import (
    Config,
    ConfigError,
    Location,
    Problem,
)
from espd.config.toml_lines import TomlLines
from espd.config.toml_schema import SchemaLoader


def parse_toml(text: str, path: str = "<string>") -> Config:
    """Validate TOML ``text`` read from ``path`` (includes are relative to it)."""
    try:
        document = tomllib.loads(text)
    except RecursionError:
        problem = Problem(Location(path, 1), "invalid TOML: arrays or inline tables nested too "
                                             "deeply; espd's configuration needs at most 3 levels")
        raise ConfigError([problem]) from None
    except tomllib.TOMLDecodeError as e:
        found = re.search(r"\(at line (\d+), column \d+\)", str(e))
        line = int(found.group(1)) if found else text.count("\n") + 1
        what = re.sub(r"\s*\(at .*\)$", "", str(e))
        problem = Problem(Location(path, line), f"invalid TOML: {what}; see "
                                                f"config/espd.example.toml for the syntax")
        raise ConfigError([problem]) from None
    return SchemaLoader(path, TomlLines(text)).config(document)
