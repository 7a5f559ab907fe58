"""espd(8) and espd.toml(5) cannot drift from the code: every command and option of the
argparse parser is in espd(8), every key the TOML loader accepts is in espd.toml(5) and
every key there is one the loader accepts, and groff renders both without a warning."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from support.cli_tree import commands

from espd.config.toml_schema import _KNOWN as SCHEMA

REPO = Path(__file__).resolve().parents[2]
ESPD_8 = REPO / "man/espd.8"
ESPD_TOML_5 = REPO / "man/espd.toml.5"
TOP = "top"  # the page's name for the loader's "" (top-level) table


def documented_keys(page: Path) -> dict[str, list[str]]:
    """schema section -> the '.TP' '.B key' entries after its '.\\" schema: NAME' line."""
    sections: dict[str, list[str]] = {}
    current = None
    lines = page.read_text().splitlines()
    for i, line in enumerate(lines):
        found = re.fullmatch(r'\.\\" schema: (\S+)', line)
        if found:
            current = sections.setdefault(found.group(1), [])
        elif current is not None and line == ".TP" and i + 1 < len(lines):
            key = re.fullmatch(r"\.B (\S+)", lines[i + 1])
            if key:
                current.append(key.group(1).replace("\\-", "-"))
        elif line.startswith((".SH", ".SS")):
            current = None
    return sections


def _marker(section: str) -> str:
    return f'.\\" schema: {section or TOP}'


def test_espd_toml_5_describes_exactly_the_loaders_keys() -> None:
    page = documented_keys(ESPD_TOML_5)
    problems = []
    for section, keys in SCHEMA.items():
        name = section or TOP
        if name not in page:
            problems.append(
                f"the loader has a table '{name}' (espd.config.toml_schema._KNOWN) that "
                f"{ESPD_TOML_5.relative_to(REPO)} lacks: add a section for it ('.SH' or "
                f"'.SS' heading) with the line\n    {_marker(section)}\n  and one\n"
                f"    .TP\n    .B KEY\n    TYPE, DEFAULT. WHAT IT DOES.\n  for each of its keys: "
                f"{', '.join(keys)}")
            continue
        for key in keys:
            if key not in page[name]:
                problems.append(
                    f"{ESPD_TOML_5.relative_to(REPO)} does not describe key '{key}' of "
                    f"'{name}', which the loader accepts: after the line '{_marker(section)}' "
                    f"add\n    .TP\n    .B {key.replace('-', chr(92) + '-')}\n"
                    f"    TYPE, DEFAULT. WHAT IT DOES.")
        for key in page[name]:
            if key not in keys:
                problems.append(
                    f"{ESPD_TOML_5.relative_to(REPO)} describes key '{key}' under "
                    f"'{_marker(section)}', but the loader does not accept it: remove it "
                    f"or add it to _KNOWN['{section}']")
    for name in set(page) - {s or TOP for s in SCHEMA}:
        problems.append(f"{ESPD_TOML_5.relative_to(REPO)} has a '.\\\" schema: {name}' section "
                        f"the loader does not know; remove it or rename it")
    assert not problems, "\n".join(problems)


def test_the_drift_check_sees_a_missing_key(tmp_path: Path) -> None:
    text = ESPD_TOML_5.read_text().replace(".TP\n.B nat_keepalive\n", "")
    (tmp_path / "page.5").write_text(text)
    assert "nat_keepalive" not in documented_keys(tmp_path / "page.5")["daemon"]
    assert "nat_keepalive" in documented_keys(ESPD_TOML_5)["daemon"]


def test_espd_8_names_every_command_and_option() -> None:
    text = ESPD_8.read_text().replace("\\-", "-")
    missing = []
    for command, options in commands().items():
        words = command.split()
        if words and not re.search(rf"^\.B(?:R|I)? {re.escape(command)}\b", text, re.M) \
                and not re.search(rf"\b{re.escape(words[-1])}\b", text):
            missing.append(f"command '{command}'")
        for option in sorted(options - {"-h", "--help"}):
            if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text):
                missing.append(f"option '{option}' of '{command or 'espd'}'")
    assert not missing, f"{ESPD_8.relative_to(REPO)} lacks: " + ", ".join(missing)
    section = text.split(".SH COMMANDS", 1)[1].split(".SH OPTIONS", 1)[0]
    for command in commands():
        if command and " " not in command and command != "show":
            assert re.search(rf"^\.BI? \"?{command}\b", section, re.M), \
                f"espd(8) COMMANDS has no entry for '{command}'"


def test_groff_renders_without_warnings() -> None:
    for page in (ESPD_8, ESPD_TOML_5):
        result = subprocess.run(["groff", "-ww", "-man", "-Tutf8", "-z", str(page)],
                                capture_output=True, text=True)
        assert result.returncode == 0 and result.stderr == "", f"{page}: {result.stderr}"
        shown = subprocess.run(["man", "--warnings=w", "-l", str(page)], capture_output=True,
                               text=True, env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin",
                                               "MAN_KEEP_FORMATTING": "0"})
        assert shown.returncode == 0 and shown.stderr == "", f"{page}: {shown.stderr}"
        plain = re.sub(".\b", "", shown.stdout)  # overstrike bold/underline
        assert "NAME" in plain and "SEE ALSO" in plain
