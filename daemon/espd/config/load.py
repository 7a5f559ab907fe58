"""Read a config file and hand it to the right front end: IOS if it starts like an IOS
config, else espd TOML (format sniffing by content, not by file name).

A file whose first meaningful line is neither (no IOS command, no TOML table or key) is
read as TOML, and its errors say so and why, with the line where IOS commands start if
there is one: the operator sees which reader judged the file.
"""

from __future__ import annotations

import re

from espd.config import ios, ios_words
from espd.config.model import (
    Config,
    ConfigError,
    Location,
    Problem,
    quote,
)
from espd.config.read import read_budget, read_text
from espd.config.toml import parse_toml

# first words of what IOS prints before or around commands ("Building configuration...",
# "Current configuration : N bytes") and global commands espd skips
_IOS_WORDS = ios_words.GLOBAL_ONLY | {"no", "current", "building", "do"}
_TOML_KEY = re.compile(r"""[\w"'.-]+\s*=""")


def load(path: str) -> Config:
    """Read ``path`` as IOS if it starts like an IOS config, else as espd TOML. It and its
    includes share one size budget (config/read.py)."""
    with read_budget():
        text = read_text(path, Location(path))
        kind, first = judge(text)
        if kind == "ios":
            return ios.parse_ios(text, path)
        try:
            return parse_toml(text, path)
        except ConfigError as e:
            if kind == "toml":
                raise
            raise ConfigError([_read_as_toml(p, first, text) for p in e.problems]) from None


def looks_like_ios(text: str) -> bool:
    """True if the first meaningful line is an IOS command or a '!' comment."""
    return judge(text)[0] == "ios"


def judge(text: str) -> tuple[str, str]:
    """("ios" | "toml" | "neither", the first meaningful line); an empty file is TOML."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[") or _TOML_KEY.match(stripped):
            return "toml", stripped
        return ("ios" if stripped.startswith("!") or _is_ios_command(stripped) else
                "neither"), stripped
    return "toml", ""


def _is_ios_command(line: str) -> bool:
    words = line.split()
    if words[0].lower() in _IOS_WORDS:
        return True
    try:
        return ios_words.first_keyword(words, ios_words.GLOBAL) is not None
    except ios_words.Ambiguous:
        return True  # an IOS abbreviation, if a short one: the IOS reader says which


def _read_as_toml(problem: Problem, first: str, text: str) -> Problem:
    """``problem`` of a file that was read as TOML only because it starts like neither."""
    why = (f"read as TOML (its first line, {quote(first)}, is no IOS command espd knows "
           f"and no TOML table or key)")
    later = next(((number, line.strip()) for number, line in enumerate(text.splitlines(), 1)
                  if line[:1].strip() and _is_ios_command(line.strip())
                  and line.strip() != first), None)
    hint = ""
    if later:
        hint = (f"; from line {later[0]} on it reads like IOS ({quote(later[1])}): for an "
                f"IOS configuration, delete what comes before that line or start the file "
                f"with a '!' line")
    return Problem(problem.where, f"{why}: {problem.message}{hint}")
