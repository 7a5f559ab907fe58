"""The espd command (espd.cli.main): check, keygen, and the client commands against real sockets."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from espd.cli import main as cli
from espd.config.load import load
from espd.config.model import ConfigError, Location, Problem
from espd.config.transforms import parse_transform
from espd.ops.control import ControlServer, make_handler

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "espd.example.toml"
CANARY = "c0ffee" * 12

SA = {"map": "armadillo", "seq": 10, "peer": "192.0.2.2", "local": "192.0.2.1",
      "direction": "in", "spi": 4096, "transform": "esp-gcm 256", "mode": "tunnel",
      "encap": "esp", "replay_window": 1024, "esn": False, "packets": 10, "bytes": 840,
      "encaps": 0, "encrypt": 0, "digest": 0, "decaps": 10, "decrypt": 10, "verify": 10,
      "sequence": 10, "drops": {"replay_dup": 1}, "lifetime_remaining_seconds": 3590,
      "lifetime_remaining_bytes": 4718591160, "soft_expired": False, "hard_expired": False,
      "seq_cycled": False}
STATE = {
    "version": "0.1.0", "openssl": "OpenSSL 3.0.13", "crypto_features": "aes-ni",
    "workers": 2, "interface": "espd0", "uptime_seconds": 12.5,
    "config_path": "/etc/espd/espd.toml", "reloads": {"success": 3, "failure": 1},
    "io": {"tun_rx": 0, "tun_tx": 0, "net_rx": 0, "net_tx": 0, "send_errors": 0,
           "recv_errors": 0, "tun_errors": 0},
    "drops": {"in": {"auth_failed": 2}, "out": {"no_policy": 5}},
    "maps": [{"map": "armadillo", "seq": 10, "peer": "192.0.2.2", "local": "192.0.2.1",
              "match_address": "101", "transform_set": "STRONG", "transform": "esp-gcm 256",
              "mode": "tunnel", "encap": "esp", "lifetime_seconds": 3600,
              "lifetime_kilobytes": 4608000, "replay_window": 1024, "esn": False,
              "inbound_spi": 4096, "outbound_spi": 8192,
              "local_ident": ["10.1.0.0/16"], "remote_ident": ["10.2.0.0/16"]}],
    "sas": [SA],
    "acls": [{"acl": "101", "index": 0, "text": "permit ip 10.1.0.0 0.0.255.255 10.2.0.0 "
              "0.0.255.255", "map": "armadillo", "seq": 10, "hits": 42}],
}

BROKEN = """\
[daemon]
local = "192.0.2.1"

[access_list.101]
rules = ["permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255"]

[transform_set.OLD]
transforms = ["esp-3des", "esp-md5-hmac"]
"""


class StandInDaemon:
    """A real control server standing in for espd; records the requests it answered."""

    def __init__(self, path: str, reload_problems: list[Problem] | None = None) -> None:
        self.path = path
        self.requests: list[dict] = []
        self.reload_problems = reload_problems
        handle = make_handler(lambda: STATE, self._reload, self._plan_diff)
        self.server = ControlServer(path, lambda req: self.requests.append(req) or handle(req))

    def _reload(self) -> list[str]:
        if self.reload_problems:
            raise ConfigError(self.reload_problems)
        return ["replace crypto map armadillo 10 in SPI 0x00001000 (new key; its counters "
                "and window start anew)"]

    def _plan_diff(self, path: str) -> list[str]:
        return ["add crypto map armadillo 20 in SPI 0x00001001"]


@pytest.fixture
def sock(tmp_path: Path) -> str:
    return str(tmp_path / "espd" / "control.sock")


@pytest.fixture
def daemon(sock: str) -> Iterator[StandInDaemon]:
    d = StandInDaemon(sock)
    d.server.start()
    yield d
    d.server.stop()


def _config_with_socket(tmp_path: Path, sock: str) -> Path:
    text = EXAMPLE.read_text().replace('control_socket = "/run/espd/control.sock"',
                                       f'control_socket = "{sock}"')
    path = tmp_path / "espd.toml"
    path.write_text(text)
    return path


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == "espd 0.1.0\n"


# --- check ---

def test_check_accepts_the_example_and_summarises_it(
        sock: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "-c", str(EXAMPLE), "--socket", sock]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"{EXAMPLE}: OK: 2 crypto map entries (4 SAs), 2 access lists "
                      f"(3 rules), 2 transform sets")
    assert out[1] == ("  crypto map armadillo 10: 192.0.2.1 -> 192.0.2.2, esp-gcm 256, "
                      "tunnel, esp, match address 101, SPI in 0x00001000 out 0x00002000")
    assert out[3].startswith(f"not compared with a running daemon: cannot reach espd at "
                             f"{sock}: no such socket")


def test_check_reports_every_error_as_file_line_and_fails(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(BROKEN)
    assert cli.main(["check", "-c", str(path)]) == 1
    captured = capsys.readouterr()
    errors = captured.err.splitlines()
    assert errors[0].startswith(f"{path}:8: ")
    assert "esp-3des" in errors[0] and "esp-gcm 256" in errors[0]
    assert errors[-1] == f"{path}: 1 error; not usable"
    assert captured.out == ""


def test_check_prints_warnings_with_their_line(
        tmp_path: Path, sock: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "any.toml"
    path.write_text(EXAMPLE.read_text().replace(
        '"permit ip 10.1.0.0/16 10.3.0.0/16",', '"permit ip 10.1.0.0/16 any",'))
    line = 1 + path.read_text().splitlines().index('    "permit ip 10.1.0.0/16 any",'
                                                   '                      # CIDR works too')
    assert cli.main(["check", "-c", str(path), "--socket", sock]) == 0
    assert capsys.readouterr().err.startswith(f"{path}:{line}: warning: access list 101 uses 'any'")


def _with_state_dir(tmp_path: Path, state_dir: str) -> Path:
    path = tmp_path / "espd.toml"
    text = EXAMPLE.read_text()
    assert 'state_dir = "/var/lib/espd"' in text
    path.write_text(text.replace('state_dir = "/var/lib/espd"', f'state_dir = "{state_dir}"'))
    return path


@pytest.mark.parametrize("where, said", [
    ("file/state", "{tmp}/file is not a directory, so {tmp}/file/state cannot be created"),
    ("dir-with-file-seq", "{tmp}/dir-with-file-seq/seq exists and is not a directory"),
    ("/proc/espd-state", "cannot create a directory in /proc ("),
])
def test_check_fails_on_a_state_dir_run_would_refuse(
        tmp_path: Path, sock: str, where: str, said: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "dir-with-file-seq").mkdir()
    (tmp_path / "dir-with-file-seq" / "seq").write_text("")
    state = where if where.startswith("/") else str(tmp_path / where)
    path = _with_state_dir(tmp_path, state)
    assert cli.main(["check", "-c", str(path), "--socket", sock]) == 1
    captured = capsys.readouterr()
    first, last = captured.err.splitlines()
    assert first.startswith(f"{path}: state_dir {state} is not usable: "
                            f"{said.format(tmp=tmp_path)}")
    assert first.endswith("espd run would refuse it (it keeps its instance lock and "
                          "sequence-number reservations there): set [daemon] state_dir to a "
                          "writable directory")
    assert last == f"{path}: 1 error; not usable"
    assert captured.out == ""


@pytest.mark.parametrize("made", ["", "state", "state/seq"])
def test_check_accepts_a_usable_state_dir_and_leaves_nothing_behind(
        tmp_path: Path, sock: str, made: str, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "run").mkdir()
    if made:
        (tmp_path / "run" / made).mkdir(parents=True)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    path = _with_state_dir(tmp_path / "run", str(tmp_path / "run" / "state"))
    assert cli.main(["check", "-c", str(path), "--socket", sock]) == 0
    assert capsys.readouterr().err == ""
    path.unlink()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_check_as_another_user_only_warns_about_a_state_dir_it_may_not_write() -> None:
    """Root's /var/lib/espd (0700) is not a user's to probe: not an error for that user."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to another user")
    with tempfile.TemporaryDirectory(prefix="espd-check-") as top:  # pytest's is root's only
        _check_as_nobody(Path(top))


def _check_as_nobody(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    tmp_path.chmod(0o755)
    path = _with_state_dir(tmp_path, str(state))
    path.chmod(0o644)
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
         "espd", "check", "-c", str(path), "--socket", str(tmp_path / "none.sock")],
        capture_output=True, text=True, timeout=60, cwd="/",
        env={**os.environ, "PYTHONPATH": str(REPO / "daemon")})
    assert result.returncode == 0, result.stderr
    assert result.stderr == (f"{path}: warning: state_dir {state}: cannot write in {state} "
                             "(Permission denied) as uid 65534; espd run, started as root, may "
                             "still use it: run this check as root to know\n")


def test_check_shows_what_a_reload_of_the_running_daemon_would_change(
        daemon: StandInDaemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(EXAMPLE.parent)
    assert cli.main(["check", "-c", EXAMPLE.name, "--socket", daemon.path]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == ["a reload would make 1 change:",
                        "  add crypto map armadillo 20 in SPI 0x00001001"]
    assert daemon.requests == [{"command": "plan_diff", "config": str(EXAMPLE)}]


def test_check_finds_the_daemon_through_the_config_control_socket(
        tmp_path: Path, daemon: StandInDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config_with_socket(tmp_path, daemon.path)
    assert cli.main(["check", "-c", str(path)]) == 0
    assert "a reload would make 1 change:" in capsys.readouterr().out
    assert daemon.requests[0]["config"] == str(path)


# --- client commands ---

@pytest.mark.parametrize("command", [["show", "sa"], ["show", "sa", "--json"], ["show", "map"],
                                     ["show", "acl"], ["stats"], ["reload"]])
def test_client_commands_exit_2_when_the_daemon_is_not_running(
        command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "nothing.sock")
    assert cli.main([*command, "--socket", missing]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"espd: cannot reach espd at {missing}: no such socket (is espd "
                            f"running? start it with `systemctl start espd` or "
                            f"`espd run -c FILE`)\n")
    assert captured.out == ""


def test_client_commands_find_the_socket_through_the_config(
        tmp_path: Path, daemon: StandInDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config_with_socket(tmp_path, daemon.path)
    assert cli.main(["show", "sa", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("interface: espd0\n"
                          "    Crypto map tag: armadillo, local addr. 192.0.2.1\n")
    assert "      spi: 0x00001000(4096)\n" in out
    assert daemon.requests == [{"command": "show_sa"}]


def test_show_sa_json_prints_the_sa_list(daemon: StandInDaemon,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["show", "sa", "--json", "--socket", daemon.path]) == 0
    assert json.loads(capsys.readouterr().out) == [SA]


@pytest.mark.parametrize(("command", "first_line"), [
    (["show", "map"], 'Crypto Map "armadillo" 10 ipsec-manual'),
    (["show", "acl"], "Crypto map armadillo 10, access list 101:"),
    (["stats"], "espd 0.1.0, up 0:00:12, config /etc/espd/espd.toml"),
])
def test_show_map_acl_and_stats_print_the_daemon_text(
        command: list[str], first_line: str, daemon: StandInDaemon,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*command, "--socket", daemon.path]) == 0
    assert capsys.readouterr().out.splitlines()[0] == first_line


def test_reload_prints_the_changes(daemon: StandInDaemon,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["reload", "--socket", daemon.path]) == 0
    assert capsys.readouterr().out == (
        "reloaded: 1 change\n  replace crypto map armadillo 10 in SPI 0x00001000 (new key; "
        "its counters and window start anew)\n")


def test_a_failed_reload_prints_every_problem_and_exits_1(
        sock: str, capsys: pytest.CaptureFixture[str]) -> None:
    d = StandInDaemon(sock, [Problem(Location("/etc/espd/espd.toml", 8), "esp-3des: refused")])
    d.server.start()
    try:
        assert cli.main(["reload", "--socket", sock]) == 1
    finally:
        d.server.stop()
    captured = capsys.readouterr()
    assert captured.err == ("reload failed; the running configuration is unchanged: the "
                            "configuration has 1 problem\n"
                            "  /etc/espd/espd.toml:8: esp-3des: refused\n")
    assert captured.out == ""


def test_client_output_never_carries_key_material(
        daemon: StandInDaemon, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SA, "key", CANARY)
    for command in (["show", "sa"], ["show", "sa", "--json"], ["show", "map"], ["show", "acl"],
                    ["stats"]):
        assert cli.main([*command, "--socket", daemon.path]) == 0
        captured = capsys.readouterr()
        assert CANARY not in captured.out + captured.err


# --- keygen ---

def _ends(output: str, marker: str) -> dict[str, str]:
    """{local address: that end's text} from keygen output."""
    parts = re.split(rf"^{re.escape(marker)} ==== on (\S+) ====$", output, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _keygen(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert cli.main(["keygen", "--peer-a", "192.0.2.1", "--peer-b", "192.0.2.2", *args]) == 0
    return capsys.readouterr().out


def _assert_mirrored(a_path: Path, b_path: Path, transform: str) -> None:
    a, b = load(str(a_path)).crypto_maps[0], load(str(b_path)).crypto_maps[0]
    assert (str(a.local), str(a.peer)) == ("192.0.2.1", "192.0.2.2")
    assert (str(b.local), str(b.peer)) == ("192.0.2.2", "192.0.2.1")
    assert a.inbound == b.outbound and a.outbound == b.inbound
    assert a.inbound.spi != a.outbound.spi and min(a.inbound.spi, a.outbound.spi) >= 0x100
    assert a.inbound.key != a.outbound.key
    expected = parse_transform(transform)
    for key in (a.inbound, a.outbound):
        assert len(key.key) == expected.key_len
        assert len(key.auth_key or b"") == expected.auth_key_len


@pytest.mark.parametrize("transform", ["esp-gcm 256", "esp-aes 256 esp-sha256-hmac",
                                       "esp-chacha20-poly1305"])
def test_keygen_toml_ends_load_and_mirror_each_other(
        transform: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ends = _ends(_keygen(capsys, "--transform", transform, "--map", "HQ", "--seq", "5"), "#")
    assert sorted(ends) == ["192.0.2.1", "192.0.2.2"]
    files = []
    for local, (src, dst) in (("192.0.2.1", ("10.1", "10.2")), ("192.0.2.2", ("10.2", "10.1"))):
        path = tmp_path / f"{local}.toml"
        path.write_text(f'[access_list.101]\nrules = ["permit ip {src}.0.0/16 {dst}.0.0/16"]\n'
                        + ends[local])
        files.append(path)
    _assert_mirrored(*files, transform)
    assert load(str(files[0])).crypto_maps[0].key == ("HQ", 5)


def test_keygen_ios_ends_load_and_mirror_each_other(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    transform = "esp-aes 128 esp-sha512-hmac"
    ends = _ends(_keygen(capsys, "--format", "ios", "--transform", transform, "--acl", "110"),
                 "!")
    files = []
    for local, (src, dst) in (("192.0.2.1", ("10.1", "10.2")), ("192.0.2.2", ("10.2", "10.1"))):
        path = tmp_path / f"{local}.ios"
        path.write_text(f"! {local}\n" + ends[local] + "\n"
                        f"access-list 110 permit ip {src}.0.0 0.0.255.255 {dst}.0.0 0.0.255.255\n"
                        f"interface GigabitEthernet0/0\n ip address {local} 255.255.255.0\n"
                        f" crypto map VPN\n")
        files.append(path)
    _assert_mirrored(*files, transform)


def test_keygen_makes_fresh_keys_every_time(capsys: pytest.CaptureFixture[str]) -> None:
    first, second = _keygen(capsys), _keygen(capsys)
    keys = re.compile(r'key = "([0-9a-f]+)"')
    assert set(keys.findall(first)).isdisjoint(keys.findall(second))


def test_keygen_refuses_a_forbidden_transform(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keygen", "--peer-a", "192.0.2.1", "--peer-b", "192.0.2.2",
                     "--transform", "esp-des esp-md5-hmac"]) == 2
    assert "esp-des" in capsys.readouterr().err


def test_keygen_refuses_peers_of_different_ip_versions(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keygen", "--peer-a", "192.0.2.1", "--peer-b", "2001:db8::2"]) == 2
    assert "--peer-a 192.0.2.1 is IPv4 but --peer-b 2001:db8::2 is IPv6" in \
        capsys.readouterr().err


@pytest.mark.parametrize("args, said", [
    (["--seq", "0"], "--seq 0 is out of range"),
    (["--map", "bad name!"], "--map 'bad name!' is not a valid name"),
    (["--acl", "a b"], "--acl 'a b' is not a valid name")])
def test_keygen_refuses_what_check_would_reject(args, said,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keygen", "--peer-a", "192.0.2.1", "--peer-b", "192.0.2.2", *args]) == 2
    assert said in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["toml", "ios"])
def test_keygen_at_the_edge_of_what_it_accepts_writes_what_check_accepts(
        fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name, acl = "a." + "x" * 58 + "_:-Z", "b." + "y" * 62
    ends = _ends(_keygen(capsys, "--format", fmt, "--seq", "65535", "--map", name,
                         "--acl", acl), "#" if fmt == "toml" else "!")
    path = tmp_path / f"a.{fmt}"
    if fmt == "toml":
        path.write_text(f'[access_list."{acl}"]\nrules = ["permit ip 10.1.0.0/16 '
                        f'10.2.0.0/16"]\n' + ends["192.0.2.1"])
    else:
        path.write_text("!\n" + ends["192.0.2.1"] + f"\nip access-list extended {acl}\n"
                        " permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255\n"
                        f"interface Gi0/0\n ip address 192.0.2.1 255.255.255.0\n"
                        f" crypto map {name}\n")
    assert cli.main(["check", "-c", str(path), "--socket", str(tmp_path / "none")]) == 0
    assert load(str(path)).crypto_maps[0].key == (name, 65535)


def test_keygen_refuses_the_same_address_twice_saying_so(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keygen", "--peer-a", "192.0.2.1", "--peer-b", "192.0.2.1"]) == 2
    assert "are both 192.0.2.1; give each end its own" in capsys.readouterr().err


# --- run and demo hand over to their modules ---

def test_run_hands_the_config_path_to_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    main_loop = types.ModuleType("espd.service.main_loop")
    main_loop.run = lambda path: calls.append(path) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "espd.service.main_loop", main_loop)
    monkeypatch.setattr(importlib.import_module("espd.service"), "main_loop", main_loop,
                        raising=False)
    assert cli.main(["run", "-c", "/etc/espd/espd.toml"]) == 0
    assert calls == ["/etc/espd/espd.toml"]


def test_demo_hands_over_to_the_demo_module(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = types.ModuleType("espd.cli.demo.steps")
    seen: list = []
    steps.main = lambda argv: seen.append(argv) or 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "espd.cli.demo.steps", steps)
    monkeypatch.setattr(importlib.import_module("espd.cli.demo"), "steps", steps,
                        raising=False)
    assert cli.main(["demo"]) == 3
    assert cli.main(["demo", "--keying", "ike", "--no-ipv6"]) == 3
    assert seen == [["--keying", "all"], ["--keying", "ike", "--no-ipv6"]]
