"""Key files: ``key_file`` / ``auth_key_file`` in a crypto map's inbound and outbound tables.

Real files in tmp_path with real modes and owners (the tests run as root, or skip what
needs it). Every refusal is FILE:LINE of the config plus what to do, and never the key.
"""

from __future__ import annotations

import base64
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from espd.cli import main as cli
from espd.config.key_files import KEY_FILE_MAX, read_key_file
from espd.config.load import load
from espd.config.model import ConfigError, ManualKey
from espd.policy.plan import build_plan, describe_changes

CANARY = "c0ffee" * 12  # 36 bytes: esp-gcm 256 key + salt, never to be printed
OTHER = "5a" * 36
CBC_KEY = "deadbeef" * 8  # esp-aes 256: 32 bytes
CBC_AUTH = "facade" * 10 + "abba"  # esp-sha256-hmac: 32 bytes
CBC_OUT_KEY = "0badc0de" * 8
CBC_OUT_AUTH = "feed" * 16
SECRETS = (CANARY, CBC_KEY, CBC_AUTH)

AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, seteuid)")

# line 13 holds inbound (IN_LINE); in CBC the inbound table's keys start at line 19
BASE = """\
[daemon]
local = "192.0.2.1"

[access_list.101]
rules = ["permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255"]

[transform_set.STRONG]
transforms = ["esp-gcm 256"]

[[crypto_map]]
name = "armadillo"
seq = 10
inbound = {{ spi = 0x1000, {inbound} }}
outbound = {{ spi = 0x2000, key = "{other}" }}
peer = "192.0.2.2"
match_address = "101"
transform_set = "STRONG"
"""
IN_LINE = 13

CBC = """\
[daemon]
local = "192.0.2.1"

[access_list.101]
rules = ["permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255"]

[transform_set.CBC]
transforms = ["esp-aes 256", "esp-sha256-hmac"]

[[crypto_map]]
name = "cbc"
seq = 10
peer = "192.0.2.2"
match_address = "101"
transform_set = "CBC"

[crypto_map.inbound]
spi = 0x1000
{inbound}

[crypto_map.outbound]
spi = 0x2000
key = "{out_key}"
auth_key = "{out_auth}"
"""
CBC_IN_LINE = 19  # the first line of the inbound table's body after "spi"


def secret_forms(hex_key: str) -> list[str]:
    raw = bytes.fromhex(hex_key)
    return [hex_key.lower(), hex_key.upper(), base64.b64encode(raw).decode(),
            raw.hex(" "), repr(raw)[2:-1]]


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        for form in secret_forms(secret):
            assert form not in text, f"key material ({form[:12]}...) in: {text}"
    assert "c0ffee" not in text.lower()


def key_file(directory: Path, name: str, content: str | bytes, mode: int = 0o600) -> Path:
    path = directory / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode)
    return path


def write_config(directory: Path, inbound: str, text: str = BASE) -> Path:
    path = directory / "espd.toml"
    if text is BASE:
        path.write_text(BASE.format(inbound=inbound, other=OTHER))
    else:
        path.write_text(text.format(inbound=inbound, out_key=CBC_OUT_KEY, out_auth=CBC_OUT_AUTH))
    return path


def refused(config: Path) -> list[str]:
    """The problems of loading ``config``, without the 'FILE:' prefix; checks no key leaks."""
    with pytest.raises(ConfigError) as e:
        load(str(config))
    text = str(e.value)
    assert_no_secret(text)
    assert_no_secret(repr(e.value))
    lines = text.split("\n")
    assert all(line.startswith(f"{config}:") for line in lines), lines
    return [line.removeprefix(f"{config}:") for line in lines]


def inbound_key(config: Path) -> ManualKey:
    return load(str(config)).crypto_maps[0].inbound


# -- accepted ---------------------------------------------------------------------------------

def test_key_file_gives_the_same_config_as_the_inline_key(tmp_path):
    key_file(tmp_path, "in.key", CANARY + "\n")
    from_file = load(str(write_config(tmp_path, 'key_file = "in.key"')))
    inline = load(str(write_config(tmp_path, f'key = "{CANARY}"')))
    assert from_file == inline
    assert from_file.crypto_maps[0].inbound.key == bytes.fromhex(CANARY)
    assert_no_secret(repr(from_file))
    assert_no_secret(str(from_file))


@pytest.mark.parametrize("content", [
    CANARY,
    CANARY + "\n",
    "\n  " + CANARY.upper() + "\r\n\n",
    " ".join(CANARY[i:i + 8] for i in range(0, len(CANARY), 8)) + "\n",
    "\n".join(CANARY[i:i + 24] for i in range(0, len(CANARY), 24)) + "\n",
    "\t" + CANARY[:36] + "\n\t" + CANARY[36:] + "\n",
], ids=["bare", "newline", "upper-crlf", "groups-of-8", "three-lines", "tabs"])
def test_whitespace_and_case_in_key_files_are_tolerated(tmp_path, content):
    key_file(tmp_path, "in.key", content)
    assert inbound_key(write_config(tmp_path, 'key_file = "in.key"')).key == \
        bytes.fromhex(CANARY)


def test_relative_key_file_is_relative_to_the_config_not_the_cwd(tmp_path, monkeypatch):
    etc = tmp_path / "etc"
    (etc / "keys").mkdir(parents=True)
    key_file(etc / "keys", "in.key", CANARY)
    config = write_config(etc, 'key_file = "keys/in.key"')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert inbound_key(config).key == bytes.fromhex(CANARY)
    # a relative config path works the same: the key file is next to the config
    monkeypatch.chdir(tmp_path)
    assert inbound_key(Path("etc") / "espd.toml").key == bytes.fromhex(CANARY)


def test_absolute_key_file(tmp_path):
    path = key_file(tmp_path, "in.key", CANARY)
    sub = tmp_path / "conf"
    sub.mkdir()
    assert inbound_key(write_config(sub, f'key_file = "{path}"')).key == bytes.fromhex(CANARY)


def test_auth_key_file_for_cbc_hmac_with_inline_or_file_cipher_key(tmp_path):
    key_file(tmp_path, "in.key", CBC_KEY + "\n")
    key_file(tmp_path, "in.auth", CBC_AUTH + "\n")
    both = load(str(write_config(tmp_path, 'key_file = "in.key"\nauth_key_file = "in.auth"',
                                 CBC)))
    mixed = load(str(write_config(tmp_path, f'key = "{CBC_KEY}"\nauth_key_file = "in.auth"',
                                  CBC)))
    inline = load(str(write_config(tmp_path, f'key = "{CBC_KEY}"\nauth_key = "{CBC_AUTH}"',
                                   CBC)))
    assert both == mixed == inline
    sa = both.crypto_maps[0].inbound
    assert (sa.key, sa.auth_key) == (bytes.fromhex(CBC_KEY), bytes.fromhex(CBC_AUTH))
    assert_no_secret(repr(both))


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700, 0o601, 0o611])
def test_owner_only_modes_are_accepted(tmp_path, mode):
    key_file(tmp_path, "in.key", CANARY, mode)
    assert inbound_key(write_config(tmp_path, 'key_file = "in.key"')).key == \
        bytes.fromhex(CANARY)


@AS_ROOT
def test_a_file_owned_by_the_daemons_own_non_root_user_is_accepted(tmp_path, monkeypatch):
    path = key_file(tmp_path, "in.key", CANARY)
    os.chown(path, 4321, 4321)
    monkeypatch.setattr(os, "geteuid", lambda: 4321)
    assert inbound_key(write_config(tmp_path, 'key_file = "in.key"')).key == \
        bytes.fromhex(CANARY)


def test_a_changed_key_file_is_a_new_key_at_reload(tmp_path):
    path = key_file(tmp_path, "in.key", CANARY)
    config = write_config(tmp_path, 'key_file = "in.key"')
    before = build_plan(load(str(config)))
    path.write_text("ab" * 36)
    after = build_plan(load(str(config)))
    changes = describe_changes(before, after)
    assert changes == ["replace crypto map armadillo 10 in SPI 0x00001000 (new key; its "
                       "counters and window start anew)"]
    assert_no_secret("\n".join(changes) + repr(before) + repr(after))


def test_read_key_file_returns_the_key(tmp_path):
    path = key_file(tmp_path, "k", "\n" + CBC_AUTH.upper() + "\n")
    assert read_key_file(str(path)) == bytes.fromhex(CBC_AUTH)


# -- refused, located, with what to do --------------------------------------------------------

@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o644, 0o666, 0o660])
def test_group_or_world_access_is_refused_with_chmod_600(tmp_path, mode):
    path = key_file(tmp_path, "in.key", CANARY, mode)
    problems = refused(write_config(tmp_path, 'key_file = "in.key"'))
    assert problems == [
        f"{IN_LINE}: crypto_map.inbound.key_file: key file {path} is readable or writable "
        f"by group or others (mode {mode:04o}); run 'chmod 600 {path}'"]


@AS_ROOT
def test_a_file_owned_by_someone_else_is_refused_with_chown(tmp_path):
    path = key_file(tmp_path, "in.key", CANARY)
    os.chown(path, 4321, 0)
    assert refused(write_config(tmp_path, 'key_file = "in.key"')) == [
        f"{IN_LINE}: crypto_map.inbound.key_file: key file {path} is owned by uid 4321, not by "
        f"root; run 'chown root {path}'"]


@AS_ROOT
def test_wrong_owner_and_mode_are_both_reported(tmp_path, monkeypatch):
    path = key_file(tmp_path, "in.key", CANARY, 0o644)
    os.chown(path, 4321, 0)
    monkeypatch.setattr(os, "geteuid", lambda: 1234)  # espd running as uid 1234
    assert refused(write_config(tmp_path, 'key_file = "in.key"')) == [
        f"{IN_LINE}: crypto_map.inbound.key_file: key file {path} is owned by uid 4321, not by "
        f"root or espd's user (uid 1234); run 'chown 1234 {path}'",
        f"{IN_LINE}: crypto_map.inbound.key_file: key file {path} is readable or writable by "
        f"group or others (mode 0644); run 'chmod 600 {path}'"]


def test_a_symlink_is_refused_and_named_as_such(tmp_path):
    target = key_file(tmp_path, "real.key", CANARY)
    (tmp_path / "in.key").symlink_to(target)
    path = tmp_path / "in.key"
    assert refused(write_config(tmp_path, 'key_file = "in.key"')) == [
        f"{IN_LINE}: crypto_map.inbound.key_file: key file {path} is a symlink; espd does not "
        f"follow symlinks to keys: point key_file at the file itself ({target})"]


def test_a_dangling_symlink_is_refused_as_a_symlink(tmp_path):
    (tmp_path / "in.key").symlink_to(tmp_path / "gone.key")
    problems = refused(write_config(tmp_path, 'key_file = "in.key"'))
    assert len(problems) == 1 and "is a symlink" in problems[0], problems


def test_a_missing_file_is_refused_with_how_to_create_it(tmp_path):
    path = tmp_path / "in.key"
    assert refused(write_config(tmp_path, 'key_file = "in.key"')) == [
        f"{IN_LINE}: crypto_map.inbound.key_file: cannot read key file {path}: No such file or "
        f"directory; fix the path (a relative path starts at the config file's directory) or "
        f"create it holding the key's 72 hex digits and run 'chmod 600 {path}'"]


@AS_ROOT
def test_an_unreadable_file_is_refused():
    # pytest's tmp_path is under a directory only root may search: use one in /tmp
    directory = Path(tempfile.mkdtemp(prefix="espd-keys-"))
    try:
        directory.chmod(0o755)
        path = key_file(directory, "in.key", CANARY, 0o000)
        os.chown(path, 4321, 4321)
        config = write_config(directory, 'key_file = "in.key"')
        config.chmod(0o644)
        os.seteuid(4321)  # an espd that runs as uid 4321: its own file, but mode 000
        try:
            problems = refused(config)
        finally:
            os.seteuid(0)
    finally:
        shutil.rmtree(directory)
    assert problems == [
        f"{IN_LINE}: crypto_map.inbound.key_file: cannot read key file {path}: Permission "
        f"denied; run espd as root or as the file's owner"]


def test_a_directory_or_fifo_is_refused_without_blocking(tmp_path):
    (tmp_path / "dir.key").mkdir(mode=0o700)
    os.mkfifo(tmp_path / "fifo.key", 0o600)
    for name in ("dir.key", "fifo.key"):
        path = tmp_path / name
        assert refused(write_config(tmp_path, f'key_file = "{name}"')) == [
            f"{IN_LINE}: crypto_map.inbound.key_file: key file {path} is not a regular file; "
            f"point key_file at a file holding the key"]


@pytest.mark.parametrize("content,digits", [
    (CANARY[:-8], 64), (CANARY + "c0ff", 76), ("", 0), ("\n\n", 0)])
def test_wrong_length_says_the_expected_hex_digits(tmp_path, content, digits):
    path = key_file(tmp_path, "in.key", content + "\n")
    assert refused(write_config(tmp_path, 'key_file = "in.key"')) == [
        f"{IN_LINE}: crypto_map armadillo 10: inbound key file {path} holds {digits} hex digits; "
        f"esp-gcm 256 needs 72 hex digits (32 bytes of key followed by the 4-byte salt, 36 bytes "
        f"in all)"]


def test_wrong_length_of_an_auth_key_file(tmp_path):
    key_file(tmp_path, "in.key", CBC_KEY)
    path = key_file(tmp_path, "in.auth", CBC_AUTH[:40])
    config = write_config(tmp_path, 'key_file = "in.key"\nauth_key_file = "in.auth"', CBC)
    assert refused(config) == [
        f"{CBC_IN_LINE + 1}: crypto_map cbc 10: inbound authentication key file {path} holds 40 "
        f"hex digits; esp-sha256-hmac needs 64 hex digits"]


def test_an_auth_key_file_on_an_aead_is_refused(tmp_path):
    key_file(tmp_path, "in.key", CANARY)
    key_file(tmp_path, "in.auth", CBC_AUTH)
    config = write_config(tmp_path, 'key_file = "in.key", auth_key_file = "in.auth"')
    assert refused(config) == [
        f"{IN_LINE}: crypto_map armadillo 10: inbound SA has an authentication key, but "
        f"esp-gcm 256 is an AEAD and needs none; drop auth_key_file"]


@pytest.mark.parametrize("content", [
    "0x" + CANARY,
    f'key = "{CANARY}"',
    CANARY[:-1] + "g",
    CANARY.replace("c0", "c0:", 3),
    "\u00e9" + CANARY,
    CANARY.encode() + b"\x00",
], ids=["0x", "toml-line", "g", "colons", "non-ascii", "nul"])
def test_not_hex_is_refused_without_quoting_the_file(tmp_path, content):
    path = key_file(tmp_path, "in.key", content)
    assert refused(write_config(tmp_path, 'key_file = "in.key"')) == [
        f"{IN_LINE}: crypto_map.inbound.key_file: key file {path} holds characters other than "
        f"hex digits and whitespace; write only the key's 72 hex digits (0-9, a-f), without "
        f"'0x' or 'key ='"]


def test_an_odd_number_of_hex_digits_is_refused(tmp_path):
    path = key_file(tmp_path, "in.key", CANARY[:-1])
    assert refused(write_config(tmp_path, 'key_file = "in.key"')) == [
        f"{IN_LINE}: crypto_map.inbound.key_file: key file {path} holds an odd number of hex "
        f"digits (71); write the key's 72 hex digits"]


def test_a_file_too_large_for_a_key_is_refused(tmp_path):
    path = key_file(tmp_path, "in.key", (CANARY + "\n") * (KEY_FILE_MAX // 72 + 1))
    assert refused(write_config(tmp_path, 'key_file = "in.key"')) == [
        f"{IN_LINE}: crypto_map.inbound.key_file: key file {path} is larger than "
        f"{KEY_FILE_MAX} bytes, too large for a key; write only the key's 72 hex digits"]


def test_key_and_key_file_together_are_refused(tmp_path):
    key_file(tmp_path, "in.key", CANARY)
    config = write_config(tmp_path, f'key = "{CANARY}", key_file = "in.key"')
    assert refused(config) == [
        f"{IN_LINE}: crypto_map.inbound has both 'key' and 'key_file'; keep one of them"]


def test_auth_key_and_auth_key_file_together_are_refused(tmp_path):
    key_file(tmp_path, "in.auth", CBC_AUTH)
    config = write_config(
        tmp_path, f'key = "{CBC_KEY}"\nauth_key = "{CBC_AUTH}"\nauth_key_file = "in.auth"', CBC)
    assert refused(config) == [
        f"{CBC_IN_LINE + 2}: crypto_map.inbound has both 'auth_key' and 'auth_key_file'; keep "
        f"one of them"]


def test_neither_key_nor_key_file_says_both_ways(tmp_path):
    config = write_config(tmp_path, 'key = "00"')
    config.write_text(config.read_text().replace(', key = "00"', ""))
    assert refused(config) == [
        f"{IN_LINE}: crypto_map.inbound needs 'key' or 'key_file', e.g. 'key = \"<72 hex "
        f"digits>\"' or 'key_file = \"/etc/espd/inbound.key\"'"]


def test_key_file_must_be_a_string(tmp_path):
    assert refused(write_config(tmp_path, "key_file = 42")) == [
        f"{IN_LINE}: crypto_map.inbound.key_file must be a string, not an integer; write e.g. "
        f"'key_file = \"/etc/espd/inbound.key\"'"]


def test_every_broken_key_file_is_reported_at_once(tmp_path):
    loose = key_file(tmp_path, "in.key", CBC_KEY, 0o644)
    key_file(tmp_path, "in.auth", "not hex at all")
    config = write_config(tmp_path, 'key_file = "in.key"\nauth_key_file = "in.auth"', CBC)
    problems = refused(config)
    assert [p.split(":", 1)[0] for p in problems] == [str(CBC_IN_LINE), str(CBC_IN_LINE + 1)]
    assert f"run 'chmod 600 {loose}'" in problems[0]
    assert "holds characters other than hex digits" in problems[1]


# -- no key in any output -----------------------------------------------------------------

def test_espd_check_with_key_files_prints_no_key(tmp_path, capsys):
    key_file(tmp_path, "in.key", CBC_KEY)
    key_file(tmp_path, "in.auth", CBC_AUTH)
    config = write_config(tmp_path, 'key_file = "in.key"\nauth_key_file = "in.auth"', CBC)
    assert cli.main(["check", "-c", str(config), "--socket", str(tmp_path / "none")]) == 0
    out = capsys.readouterr()
    assert "OK: 1 crypto map entry" in out.out
    assert_no_secret(out.out + out.err)
    (tmp_path / "in.key").write_text(CBC_KEY[:-2])  # one byte short
    assert cli.main(["check", "-c", str(config), "--socket", str(tmp_path / "none")]) == 1
    out = capsys.readouterr()
    assert "holds 62 hex digits; esp-aes 256 needs 64 hex digits" in out.err
    assert_no_secret(out.out + out.err)


def test_the_key_file_is_not_left_readable_by_the_loader(tmp_path):
    """Loading never loosens or touches the file."""
    path = key_file(tmp_path, "in.key", CANARY)
    before = path.stat()
    load(str(write_config(tmp_path, 'key_file = "in.key"')))
    after = path.stat()
    assert stat.S_IMODE(after.st_mode) == 0o600
    assert (after.st_mtime_ns, after.st_uid) == (before.st_mtime_ns, before.st_uid)
