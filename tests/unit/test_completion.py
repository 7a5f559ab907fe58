"""The bash completion (contrib/bash-completion/espd) offers exactly what the argparse
parser accepts: run by a real bash, word by word, as readline would call it."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from support.cli_tree import commands

REPO = Path(__file__).resolve().parents[2]
COMPLETION = REPO / "contrib/bash-completion/espd"


def complete(line: str, cwd: Path | None = None) -> list[str]:
    """What _espd offers for the last word of ``line`` ('' after a trailing space)."""
    words = shlex.split(line) + ([""] if line.endswith(" ") else [])
    script = (f"source {shlex.quote(str(COMPLETION))}\n"
              f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\n"
              f"COMP_CWORD={len(words) - 1}\n"
              "_espd\n"
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    out = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, text=True,
                         check=True, cwd=cwd).stdout
    return [w for w in out.splitlines() if w]


def _long(options: set[str]) -> set[str]:
    return {o for o in options if o.startswith("--")}


def test_commands_and_show_targets() -> None:
    tree = commands()
    top = {c for c in tree if c and " " not in c}
    assert set(complete("espd ")) == top | {"--version", "--help"}
    targets = {c.split()[1] for c in tree if c.startswith("show ")}
    assert set(complete("espd show ")) == targets | {"--help"}
    assert complete("espd sh") == ["show"]
    assert complete("espd show s") == ["sa"]


def test_each_commands_options_are_the_parsers() -> None:
    for command, options in commands().items():
        if not command or command == "show":
            continue
        offered = set(complete(f"espd {command} -"))
        assert offered == _long(options), (command, offered, _long(options))


def test_values() -> None:
    assert complete("espd keygen --format ") == ["toml", "ios"]
    assert complete("espd keygen --transform esp-g") == ["esp-gcm\\ 256", "esp-gcm\\ 128"]
    assert complete("espd keygen --peer-a ") == []


def test_config_files(tmp_path: Path) -> None:
    (tmp_path / "gw.toml").write_text("")
    (tmp_path / "other").mkdir()
    assert set(complete("espd check -c ", cwd=tmp_path)) == {"gw.toml", "other"}
    assert complete("espd show sa --config g", cwd=tmp_path) == ["gw.toml"]


def test_map_names_without_a_daemon_are_nothing_and_quick() -> None:
    assert complete("espd keygen --map ") == []  # no daemon at the default socket
