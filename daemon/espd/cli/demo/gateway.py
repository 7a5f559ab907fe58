"""One ``espd run`` in a namespace, started and stopped by its pid; its per-run config.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from espd.cli.demo.namespaces import exec_argv


def toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def with_daemon_settings(text: str, **settings: str | int) -> str:
    """``text`` (espd TOML) with the given ``[daemon]`` keys set, other lines untouched."""
    values = {k: (toml_string(v) if isinstance(v, str) else str(v)) for k, v in
              settings.items()}
    lines = text.splitlines()
    out: list[str] = []
    in_daemon = False
    header = None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            if in_daemon:  # leaving [daemon]: add keys it did not have
                out.extend(f"{k} = {v}" for k, v in values.items())
                values.clear()
            in_daemon = stripped.split("#")[0].strip() == "[daemon]"
            if in_daemon:
                header = len(out)
        elif in_daemon:
            key = stripped.split("=", 1)[0].strip()
            if "=" in stripped and key in values:
                out.append(f"{key} = {values.pop(key)}")
                continue
        out.append(line)
    if values:
        if header is None:
            out.append("")
            out.append("[daemon]")
        out.extend(f"{k} = {v}" for k, v in values.items())
    return "\n".join(out) + "\n"


# -- the daemon ------------------------------------------------------------------------------

class EspdProcessError(RuntimeError):
    pass


def state_of(answer: dict) -> dict:
    """The state dict from a control-socket answer to "state" ({"state": ...} or flat)."""
    if answer.get("ok") is False:
        raise EspdProcessError(f"espd refused 'state': {answer.get('error')}")
    state = answer.get("state")
    return state if isinstance(state, dict) else answer


class EspdProcess:
    """One ``espd run`` in a namespace, started and stopped by its pid."""

    def __init__(self, ns: str, config: str, control_socket: str, log_path: str,
                 name: str = "espd", command: Sequence[str] | None = None) -> None:
        self.ns = ns
        # what runs "espd run": this interpreter's espd unless told otherwise
        self.command = list(command or [sys.executable, "-m", "espd", "run"])
        self.config = config
        self.control_socket = control_socket
        self.log_path = log_path
        self.name = name
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            # "ip netns exec" execs the command in place: the pid is the daemon's own
            self.proc = subprocess.Popen(
                exec_argv(self.ns, [*self.command, "-c", self.config]),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)

    def log(self, tail: int = 4000) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-tail:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 20.0) -> dict:
        """Poll the control socket until ``state`` answers; return the state."""
        from espd.ops import control

        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EspdProcessError(f"{self.name} (pid {self.pid}) exited with status "
                                  f"{self.proc.returncode} before it was ready; its log:\n"
                                  f"{self.log()}")
            if os.path.exists(self.control_socket):
                try:
                    return state_of(control.request(self.control_socket, "state"))
                except Exception as e:  # not listening yet
                    last = e
            time.sleep(0.1)
        raise EspdProcessError(f"{self.name} (pid {self.pid}) did not answer on "
                          f"{self.control_socket} within {timeout:.0f} s"
                          f"{f' (last error: {last})' if last else ''}; its log:\n{self.log()}")

    def state(self) -> dict:
        from espd.ops import control

        return state_of(control.request(self.control_socket, "state"))

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.pid, signum)

    def reload(self) -> None:
        self.signal(signal.SIGHUP)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, SIGKILL if it does not go; return its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode
