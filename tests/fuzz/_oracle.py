"""What the config-parser harnesses (fuzz_config.py, fuzz_ios.py) hold every input to.

A parser given any text either returns a Config or raises espd.config.model.ConfigError, and:
  - every problem is located: ``FILE:LINE: message`` with LINE >= 1 and FILE the path the
    parser was given (or a file it included from the fixture directory);
  - no message repeats key material of the input: the hex after ``key =``/``auth_key =``
    (TOML) or ``cipher``/``authenticator`` (IOS), in any 16-digit stretch, unless that
    stretch also occurs in the input outside a key field (a name may legitimately be hex);
  - it returns within the libFuzzer -timeout (a hang is a bug; run.sh passes -timeout).
Anything else raises OracleViolation, which atheris reports as a crash.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile

from espd.config.model import ConfigError

# Key fields. TOML: key = "HEX" / auth_key = 'HEX' (also inline tables); IOS: the hex words
# after "cipher" and "authenticator" on a "set session-key" line, each word also as the
# IOS reader takes it abbreviated ("set ses inb esp 4096 ci HEX au HEX").
_TOML_KEY = re.compile(r"""(?:^|[\s{,.])(?:auth_)?key\s*=\s*["']{1,3}([0-9A-Fa-f:\s-]+)""")
_IOS_LINE = re.compile(r"(?mi)^[ \t]*set[ \t]+ses[\w-]*\b.*$")
_IOS_KEY = re.compile(r"(?i)\b(?:c|ci[\w-]*|a|au[\w-]*)[ \t]+([0-9A-Fa-f]+)")
_HEX = re.compile(r"[0-9A-Fa-f]+")
WINDOW = 16  # hex digits: 8 key bytes
_LOCATED = re.compile(r"^(?P<file>.+?):(?P<line>[1-9][0-9]*): \S")

# A 64-hex-digit canary the seeds carry in key fields (tests/fuzz/corpus/{config,ios}).
CANARY = "c0ffee00" * 8


# Bugs found, triaged and reported, each with its reproducer in tests/fuzz/regressions/:
# with FUZZ_SUPPRESS_KNOWN=1 (run.sh sets it for campaigns, not for the regression replay)
# a violation whose text matches one of these is not reported again, so a campaign goes
# past it. Remove an entry once its bug is fixed.
KNOWN: dict[str, re.Pattern[str]] = {
    # e.g. (fixed in af4faa1, like every bug found so far; see regressions/README.md):
    # "ios-key-echoed-in-acl-error":
    #     re.compile(r"key material .* access-list [^:]*: '.*session-key"),
}
SUPPRESS_KNOWN = os.environ.get("FUZZ_SUPPRESS_KNOWN") == "1"


class OracleViolation(AssertionError):
    """A parser broke its contract on this input."""


def _violation(text: str) -> OracleViolation | None:
    if SUPPRESS_KNOWN and any(rx.search(text) for rx in KNOWN.values()):
        return None
    return OracleViolation(text)


def fixture_dir() -> str:
    """A directory with the files the dictionaries name: an IOS include and key files."""
    d = tempfile.mkdtemp(prefix="espd-fuzz-")
    here = os.path.dirname(os.path.abspath(__file__))
    files = {
        "inc.ios": open(os.path.join(here, "corpus", "ios", "small.ios"), encoding="utf-8").read(),
        "in.key": "c0ffee02" + CANARY[8:40] + "\n",  # esp-gcm 128: 40 hex digits
        "out.key": "c0ffee03" + CANARY[8:40] + "\n",
        "sha256.key": "c0ffee04" + CANARY[8:] + "\n",  # 64 hex digits
    }
    for name, text in files.items():
        path = os.path.join(d, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    return d


def key_values(text: str) -> list[str]:
    """The hex digits of every key field in text (TOML and IOS syntax both)."""
    found = [(m.group(1), m.span(1)) for m in _TOML_KEY.finditer(text)]
    for line in _IOS_LINE.finditer(text):
        found += [(m.group(1), (line.start() + m.start(1), line.start() + m.end(1)))
                  for m in _IOS_KEY.finditer(line.group(0))]
    values = []
    for raw, span in found:
        digits = "".join(_HEX.findall(raw))
        if len(digits) >= WINDOW:
            values.append((digits, span))
    return values


def leaked(text: str, message: str) -> str | None:
    """A 16-digit stretch of a key of text that message repeats, or None."""
    keys = key_values(text)
    if not keys:
        return None
    rest = text
    for _, (a, b) in sorted(keys, key=lambda k: -k[1][0]):
        rest = rest[:a] + " " * (b - a) + rest[b:]
    low_msg, low_rest = message.lower(), rest.lower()
    for digits, _ in keys:
        digits = digits.lower()
        for i in range(len(digits) - WINDOW + 1):
            piece = digits[i:i + WINDOW]
            if piece in low_msg and piece not in low_rest:
                return piece
    return None


def check(parse, text: str, path: str, fixtures: str) -> None:
    """Run parse(); hold its outcome to the contract above."""
    try:
        parse()
    except ConfigError as e:
        if not e.problems:
            raise OracleViolation("ConfigError with no problems") from e
        for p in e.problems:
            s = str(p)
            m = _LOCATED.match(s)
            if not m:
                raise OracleViolation(f"problem not located as FILE:LINE: {s!r}") from e
            if m.group("file") != path and os.path.dirname(m.group("file")) != fixtures:
                raise OracleViolation(f"problem located in another file: {s!r}") from e
            piece = leaked(text, s)
            if piece and (v := _violation(f"key material {piece} in message: {s!r}")):
                raise v from e
    except RecursionError as e:  # report it under its own name: it is not a ConfigError
        raise OracleViolation(f"RecursionError escaped the parser: {e}") from e
