"""The control socket (espd.ops.control): a real server on a temporary socket, and its client."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from espd.config.model import ConfigError, Location, Problem
from espd.ops.control import MAX_REQUEST, ControlError, ControlServer, make_handler, request

CANARY = "c0ffee" * 12

STATE = {
    "version": "0.1.0", "openssl": "OpenSSL 3.0.13", "crypto_features": "aes-ni",
    "workers": 1, "interface": "espd0", "uptime_seconds": 1.0, "config_path": "/x.toml",
    "reloads": {"success": 0, "failure": 0},
    "io": {"tun_rx": 0, "tun_tx": 0, "net_rx": 0, "net_tx": 0, "send_errors": 0,
           "recv_errors": 0, "tun_errors": 0},
    "drops": {"in": {}, "out": {"no_policy": 5}},
    "maps": [{"map": "m", "seq": 1, "peer": "192.0.2.2", "local": "192.0.2.1",
              "match_address": "101", "transform_set": "T", "transform": "esp-gcm 256",
              "mode": "tunnel", "encap": "esp", "lifetime_seconds": 3600,
              "lifetime_kilobytes": 4608000, "replay_window": 64, "esn": False,
              "inbound_spi": 4096, "outbound_spi": 8192,
              "local_ident": ["10.1.0.0/16"], "remote_ident": ["10.2.0.0/16"]}],
    "sas": [{"map": "m", "seq": 1, "peer": "192.0.2.2", "local": "192.0.2.1",
             "direction": "in", "spi": 4096, "transform": "esp-gcm 256", "mode": "tunnel",
             "encap": "esp", "replay_window": 64, "esn": False, "packets": 3, "bytes": 252,
             "encaps": 0, "encrypt": 0, "digest": 0, "decaps": 3, "decrypt": 3, "verify": 3,
             "sequence": 3, "drops": {}, "lifetime_remaining_seconds": 3599,
             "lifetime_remaining_bytes": 4718591748, "soft_expired": False,
             "hard_expired": False, "seq_cycled": False}],
    "acls": [{"acl": "101", "index": 0, "text": "permit ip 10.1.0.0 0.0.255.255 10.2.0.0 "
              "0.0.255.255", "map": "m", "seq": 1, "hits": 3}],
}


def _echo(req: dict) -> dict:
    if req.get("command") == "boom":
        raise RuntimeError("handler exploded")
    return {"ok": True, "echo": req}


@pytest.fixture
def sock_path(tmp_path: Path) -> str:
    return str(tmp_path / "run" / "c.sock")


@pytest.fixture
def server(sock_path: str) -> Iterator[ControlServer]:
    srv = ControlServer(sock_path, _echo)
    srv.start()
    yield srv
    srv.stop()


def _raw(path: str, data: bytes) -> list[dict]:
    """Send raw bytes, read until the server closes or a line per request came back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    return [json.loads(line) for line in received.splitlines()]


def test_request_round_trips_a_command_and_its_arguments(server: ControlServer,
                                                         sock_path: str) -> None:
    answer = request(sock_path, "plan_diff", config="/etc/espd/espd.toml")
    assert answer == {"ok": True, "echo": {"command": "plan_diff",
                                           "config": "/etc/espd/espd.toml"}}


def test_one_connection_serves_one_answer_per_request_line(server: ControlServer,
                                                           sock_path: str) -> None:
    answers = _raw(sock_path, b'{"command": "state"}\n\n{"command": "stats"}\n')
    assert [a["echo"]["command"] for a in answers] == ["state", "stats"]


def test_a_handler_exception_becomes_an_error_answer(server: ControlServer,
                                                     sock_path: str) -> None:
    assert request(sock_path, "boom") == {"ok": False, "error": "handler exploded"}
    assert request(sock_path, "state")["ok"] is True  # the server lives on


def test_bad_requests_are_answered_not_crashed_on(server: ControlServer,
                                                  sock_path: str) -> None:
    answers = _raw(sock_path, b"not json\n[1, 2]\n")
    assert answers[0]["ok"] is False and "not JSON" in answers[0]["error"]
    assert answers[1] == {"ok": False,
                          "error": 'request must be a JSON object such as {"command": "state"}'}


def test_a_request_over_64_kib_is_refused(server: ControlServer, sock_path: str) -> None:
    answers = _raw(sock_path, b'{"command": "' + b"x" * MAX_REQUEST + b'"}\n')
    assert answers == [{"ok": False, "error": f"request longer than {MAX_REQUEST} bytes refused"}]


def test_a_request_of_exactly_64_kib_is_served(server: ControlServer, sock_path: str) -> None:
    head = b'{"command": "state", "pad": "'
    line = head + b"x" * (MAX_REQUEST - len(head) - 2) + b'"}'
    assert len(line) == MAX_REQUEST
    assert _raw(sock_path, line + b"\n")[0]["ok"] is True


def test_handlers_run_concurrently(sock_path: str) -> None:
    release = threading.Event()

    def handler(req: dict) -> dict:
        if req["command"] == "reload":
            release.wait(5)
        return {"ok": True, "command": req["command"]}

    srv = ControlServer(sock_path, handler)
    srv.start()
    try:
        slow: list[dict] = []
        waiter = threading.Thread(target=lambda: slow.append(request(sock_path, "reload")))
        waiter.start()
        assert request(sock_path, "state", timeout=2) == {"ok": True, "command": "state"}
        release.set()
        waiter.join(5)
        assert slow == [{"ok": True, "command": "reload"}]
    finally:
        release.set()
        srv.stop()


def test_start_creates_a_private_directory_and_a_group_socket(server: ControlServer,
                                                             sock_path: str) -> None:
    assert stat.S_IMODE(os.stat(os.path.dirname(sock_path)).st_mode) == 0o750
    mode = os.lstat(sock_path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660


def test_stop_removes_the_socket(sock_path: str) -> None:
    srv = ControlServer(sock_path, _echo)
    srv.start()
    srv.stop()
    assert not os.path.exists(sock_path)
    with pytest.raises(ControlError, match="no such socket"):
        request(sock_path, "state")


def test_start_replaces_a_stale_socket(sock_path: str) -> None:
    os.makedirs(os.path.dirname(sock_path))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(sock_path)  # left behind, nobody listening
    srv = ControlServer(sock_path, _echo)
    srv.start()
    try:
        assert request(sock_path, "state")["ok"] is True
    finally:
        srv.stop()


def test_start_refuses_a_socket_another_daemon_serves(server: ControlServer,
                                                      sock_path: str) -> None:
    with pytest.raises(ControlError, match="another espd is already listening"):
        ControlServer(sock_path, _echo).start()
    assert request(sock_path, "state")["ok"] is True  # the first one is untouched


def test_start_refuses_to_remove_a_file_that_is_not_a_socket(sock_path: str) -> None:
    os.makedirs(os.path.dirname(sock_path))
    Path(sock_path).write_text("precious")
    with pytest.raises(ControlError, match="is not a socket"):
        ControlServer(sock_path, _echo).start()
    assert Path(sock_path).read_text() == "precious"


def test_client_explains_a_missing_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "none.sock")
    with pytest.raises(ControlError) as e:
        request(path, "state")
    assert str(e.value) == (
        f"cannot reach espd at {path}: no such socket (is espd running? start it with "
        f"`systemctl start espd` or `espd run -c FILE`)")


def test_client_explains_a_stale_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(path)
    with pytest.raises(ControlError, match="nothing is listening; the socket is left over"):
        request(path, "state")


def test_client_times_out_on_a_daemon_that_does_not_answer(tmp_path: Path) -> None:
    path = str(tmp_path / "mute.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(path)
        mute.listen(1)  # connects succeed, nobody ever answers
        with pytest.raises(ControlError, match=r"no answer within 0\.2 seconds"):
            request(path, "state", timeout=0.2)


def test_client_explains_permission_denied(server: ControlServer, sock_path: str) -> None:
    if os.geteuid() != 0:
        os.chmod(sock_path, 0)
        with pytest.raises(ControlError, match="permission denied; run as root or as a member"):
            request(sock_path, "state")
        return
    # Root passes every permission check: ask from a child that dropped to nobody.
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.setgid(65534)
            os.setuid(65534)
            request(sock_path, "state")
            message = "connected"
        except ControlError as e:
            message = str(e)
        except BaseException as e:
            message = repr(e)
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as f:
        message = f.read().decode()
    assert message.startswith(f"cannot reach espd at {sock_path}: permission denied; "
                              f"run as root or as a member of the group")


def _handler(reload_error: bool = False) -> tuple[object, list[str]]:
    calls: list[str] = []

    def reload() -> list[str]:
        calls.append("reload")
        if reload_error:
            raise ConfigError([Problem(Location("/etc/espd/espd.toml", 7), "bad transform"),
                               Problem(Location("/etc/espd/espd.toml", 9), "bad key")])
        return ["add crypto map m 2 in SPI 0x00001001"]

    def plan_diff(path: str) -> list[str]:
        calls.append(path)
        return []

    return make_handler(lambda: STATE, reload, plan_diff), calls


def test_made_handler_answers_every_command() -> None:
    handle, calls = _handler()
    assert handle({"command": "state"}) == {"ok": True, "state": STATE}
    show_sa = handle({"command": "show_sa"})
    assert "      spi: 0x00001000(4096)" in show_sa["text"].splitlines()
    assert show_sa["sas"] == STATE["sas"]
    assert handle({"command": "show_map"})["text"].startswith('Crypto Map "m" 1 ipsec-manual')
    assert "(3 matches)" in handle({"command": "show_acl"})["text"]
    assert "    no_policy: 5" in handle({"command": "stats"})["text"]
    assert handle({"command": "reload"}) == {
        "ok": True, "changes": ["add crypto map m 2 in SPI 0x00001001"]}
    assert handle({"command": "plan_diff", "config": "/etc/espd/new.toml"}) == {
        "ok": True, "changes": []}
    assert calls == ["reload", "/etc/espd/new.toml"]


def test_made_handler_lists_every_config_problem_of_a_failed_reload() -> None:
    handle, _ = _handler(reload_error=True)
    assert handle({"command": "reload"}) == {
        "ok": False, "error": "the configuration has 2 problems",
        "errors": ["/etc/espd/espd.toml:7: bad transform", "/etc/espd/espd.toml:9: bad key"]}


def test_made_handler_refuses_relative_paths_and_unknown_commands() -> None:
    handle, calls = _handler()
    assert handle({"command": "plan_diff", "config": "espd.toml"})["ok"] is False
    answer = handle({"command": "shutdown"})
    assert answer["ok"] is False and "unknown command 'shutdown'" in answer["error"]
    assert calls == []


def test_answers_over_the_socket_carry_no_key_material(sock_path: str) -> None:
    state = json.loads(json.dumps(STATE))
    state["sas"][0]["key"] = CANARY
    handle = make_handler(lambda: state, list, lambda path: [])
    srv = ControlServer(sock_path, handle)
    srv.start()
    try:
        for command in ("show_sa", "show_map", "show_acl", "stats"):
            assert CANARY not in json.dumps(request(sock_path, command))
    finally:
        srv.stop()
