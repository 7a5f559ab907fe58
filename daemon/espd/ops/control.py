"""espd's control socket: JSON lines over a Unix stream socket, server and client.

Protocol: the client writes one JSON object per line, ``{"command": NAME, ...arguments}``;
the server answers each with one JSON object on one line, ``{"ok": true, ...}`` or
``{"ok": false, "error": "...", ["errors": [...]]}``. Commands (see ``make_handler``):

  state       {"state": STATE}                      the daemon's state dict
  show_sa     {"text": ..., "sas": [SA, ...]}       show crypto ipsec sa, and its JSON
  show_map    {"text": ...}                         show crypto map
  show_acl    {"text": ...}                         access lists with hit counts
  show_ike_sa {"text": ..., "ike_sas": [...]}       show crypto ikev2 sa ("detail": true)
  show_ike_proposal, show_transform_set {"text"}    the configured IKE proposals, sets
  initiate, clear_ike_sa, clear_sa {"done": [...]}  IKE actions ("map"/"seq", "peer")
  stats       {"text": ...}                         global counters
  reload      {"changes": [...]}                    reload the daemon's config file
  plan_diff   {"changes": [...]}                    what reloading "config" would change

Access control is the file system's: the socket is 0660 in a 0750 directory, so root and
the members of the socket's group may talk to the daemon. Answers never carry keys.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import socket
import stat
import threading
from collections.abc import Callable

from espd.config.model import ConfigError

DEFAULT_SOCKET = "/run/espd/control.sock"
MAX_REQUEST = 64 * 1024  # bytes in one request line, newline excluded
DEFAULT_TIMEOUT = 10.0  # seconds a client waits for connect and answer
IDLE_TIMEOUT = 60.0  # seconds the server keeps a silent connection
_START_HINT = "is espd running? start it with `systemctl start espd` or `espd run -c FILE`"

Handler = Callable[[dict], dict]


class ControlError(Exception):
    """The daemon cannot be reached or did not answer; the message says what to do."""


class Refused(Exception):
    """A request the daemon will not carry out; the message says why (the answer's error)."""


class ControlServer:
    """Serves ``handler`` on a Unix socket at ``path``, one daemon thread per connection.

    The handler gets each request dict and returns the answer dict; an exception it raises
    becomes ``{"ok": false, "error": str(exception)}``. Handlers run concurrently, each
    connection on a thread of its own; ``stop`` returns only once every one has ended, so
    nothing a handler reads is torn down under it.
    """

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._listener: socket.socket | None = None
        self._accepter: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        """Bind, listen and serve; raise ControlError if the path is taken by something live."""
        self.bind()
        self.serve()

    def bind(self) -> None:
        """Bind and listen (needs the socket's directory to be writable: call it before
        dropping privileges); serve() then starts answering."""
        parent = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(parent):
            os.makedirs(parent, exist_ok=True)
            os.chmod(parent, 0o750)
        self._remove_stale()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bind under a strict umask so the socket is never reachable by others, even for
        # the instant before the chmod below; the umask is process-wide but only tightens.
        old_umask = os.umask(0o177)
        try:
            listener.bind(self.path)
        except OSError:
            listener.close()
            raise
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o660)
        listener.listen(16)
        self._listener = listener

    def serve(self) -> None:
        assert self._listener is not None, "bind() first"
        self._accepter = threading.Thread(target=self._accept_loop, args=(self._listener,),
                                          name="espd-control", daemon=True)
        self._accepter.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close open connections, wait (up to `timeout` seconds) for the
        handlers still running, and remove the socket file."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        listener.close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._accepter is not None:
            self._accepter.join(timeout=timeout)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:  # in-flight handlers finish their answer
            thread.join(timeout=timeout)
        with contextlib.suppress(FileNotFoundError, PermissionError):  # dropped privileges
            os.unlink(self.path)

    def _remove_stale(self) -> None:
        """Unlink a socket left by a dead daemon; refuse a live one or a non-socket."""
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ControlError(f"{self.path} exists and is not a socket; remove it or set "
                               f"[daemon] control_socket to another path")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.path)
        except ConnectionRefusedError:
            os.unlink(self.path)
            return
        finally:
            probe.close()
        raise ControlError(f"another espd is already listening at {self.path}; stop it "
                           f"first, or set [daemon] control_socket to another path")

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # shut down by stop()
                return
            thread = threading.Thread(target=self._serve, args=(conn,),
                                      name="espd-control-conn", daemon=True)
            with self._lock:
                self._connections.add(conn)
                self._threads.add(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(IDLE_TIMEOUT)
            buffer = b""
            while True:
                newline = buffer.find(b"\n")
                if newline < 0:
                    if len(buffer) > MAX_REQUEST:
                        _send(conn, _refusal(f"request longer than {MAX_REQUEST} bytes refused"))
                        return
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                    continue
                line, buffer = buffer[:newline], buffer[newline + 1:]
                if len(line) > MAX_REQUEST:
                    _send(conn, _refusal(f"request longer than {MAX_REQUEST} bytes refused"))
                    return
                if line.strip():
                    _send(conn, self._answer(line))
        except OSError:
            return
        finally:
            with self._lock:
                self._connections.discard(conn)
                self._threads.discard(threading.current_thread())
            conn.close()

    def _answer(self, line: bytes) -> dict:
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError) as e:
            return _refusal(f"request is not JSON: {e}")
        if not isinstance(request, dict):
            return _refusal('request must be a JSON object such as {"command": "state"}')
        try:
            answer = self.handler(request)
        except Exception as e:  # any handler failure goes back to the client
            return _refusal(str(e) or type(e).__name__)
        if not isinstance(answer, dict):
            return _refusal(f"internal error: handler answered {type(answer).__name__}")
        return answer


def _refusal(message: str) -> dict:
    return {"ok": False, "error": message}


def _send(conn: socket.socket, answer: dict) -> None:
    try:
        data = json.dumps(answer, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        data = json.dumps(_refusal(f"internal error: answer is not JSON: {e}"))
    conn.sendall(data.encode() + b"\n")


def make_handler(
    state: Callable[[], dict],
    reload: Callable[[], list[str]],
    plan_diff: Callable[[str], list[str]],
    act: Callable[[str, dict], dict] | None = None,
) -> Handler:
    """The daemon's request handler over its three capabilities.

    ``state()`` returns the STATE dict; ``reload()`` reloads the daemon's config file and
    returns the changes it made; ``plan_diff(path)`` returns what reloading ``path`` would
    change. Both raise ConfigError when the file cannot be used; the answer then lists
    every problem under "errors".
    """
    from espd.ops import show  # the renderers; imported here so clients need not load them

    renderers = {"show_map": show.render_map, "show_acl": show.render_acl,
                 "stats": show.render_stats}

    def handle(request: dict) -> dict:
        command = request.get("command")
        try:
            if command == "state":
                return {"ok": True, "state": state()}
            if command == "show_sa":
                current = state()
                return {"ok": True, "text": show.render_sa(current),
                        "sas": show.sa_json(current)}
            if command in ("show_ike_proposal", "show_transform_set", "show_certificates"):
                from espd.ops import show_ike

                render = {"show_ike_proposal": show_ike.render_ike_proposal,
                          "show_transform_set": show_ike.render_transform_set,
                          "show_certificates": show_ike.render_certificates}[command]
                current = state()
                return {"ok": True, "text": render(current),
                        "certificates": current.get("certificates", [])}
            if command in ("initiate", "clear_ike_sa", "clear_sa") and act is not None:
                return act(command, request)  # {"ok": ..., "done"|"error": ...}
            if command == "show_ike_sa":
                from espd.ops.show_ike import render_ike_sa

                ike_sas = state().get("ike", {}).get("sas", [])
                return {"ok": True, "ike_sas": ike_sas,
                        "text": render_ike_sa(ike_sas, bool(request.get("detail")))}
            if command in renderers:
                return {"ok": True, "text": renderers[command](state())}
            if command == "reload":
                return {"ok": True, "changes": reload()}
            if command == "plan_diff":
                path = request.get("config")
                if not isinstance(path, str) or not os.path.isabs(path):
                    return _refusal('plan_diff needs "config": an absolute path')
                return {"ok": True, "changes": plan_diff(path)}
        except Refused as e:
            return _refusal(str(e))
        except ConfigError as e:
            count = len(e.problems)
            return {"ok": False, "error": f"the configuration has {count} "
                    f"problem{'s' if count != 1 else ''}",
                    "errors": [str(p) for p in e.problems]}
        known = ("state, show_sa, show_ike_sa, show_ike_proposal, show_transform_set, "
                 "show_certificates, show_map, show_acl, stats, reload, plan_diff, initiate, "
                 "clear_ike_sa, clear_sa")
        return _refusal(f"unknown command {command!r}; known: {known}")

    return handle


def request(path: str, command: str, *, timeout: float = DEFAULT_TIMEOUT, **args: object) -> dict:
    """Send one request to the daemon at ``path`` and return its answer.

    Raises ControlError, with what to do about it, when the daemon cannot be reached or
    does not answer within ``timeout`` seconds. An answer with "ok": false is returned.
    """
    payload = json.dumps({"command": command, **args}).encode() + b"\n"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(payload)
        data = _read_line(sock)
    except FileNotFoundError:
        raise ControlError(f"cannot reach espd at {path}: no such socket ({_START_HINT})") from None
    except ConnectionRefusedError:
        raise ControlError(f"cannot reach espd at {path}: nothing is listening; the socket "
                           f"is left over from an espd that stopped ({_START_HINT})") from None
    except PermissionError:
        raise ControlError(f"cannot reach espd at {path}: permission denied; run as root or "
                           f"as a member of {_group_of(path)}") from None
    except TimeoutError:
        raise ControlError(f"cannot reach espd at {path}: no answer within {timeout:g} "
                           f"seconds; the daemon may be stuck (see `journalctl -u espd`)") from None
    except OSError as e:
        raise ControlError(f"cannot reach espd at {path}: {e.strerror or e}") from None
    finally:
        sock.close()
    if not data:
        raise ControlError(f"espd at {path} closed the connection without answering")
    try:
        answer = json.loads(data)
    except ValueError:
        raise ControlError(f"espd at {path} sent an answer that is not JSON") from None
    if not isinstance(answer, dict):
        raise ControlError(f"espd at {path} sent an answer that is not a JSON object")
    return answer


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _group_of(path: str) -> str:
    """'the group NAME that owns the socket', as well as can be told without access."""
    for candidate in (path, os.path.dirname(path) or "."):
        try:
            gid = os.stat(candidate).st_gid
        except OSError:
            continue
        try:
            name = grp.getgrgid(gid).gr_name
        except KeyError:
            name = str(gid)
        return f"the group '{name}' that owns {candidate}"
    return "the group that owns the socket"
