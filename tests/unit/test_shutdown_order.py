"""Shutdown waits for the readers on other threads before it frees what they read
(issue 9: `shutdown` stopped workers while control and metrics handlers could still be
inside `state()`): the control server's stop returns only once its handlers ended, and
the daemon's Readers gate refuses new readers and waits for those in flight."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import pytest

from espd.ops.control import ControlError, ControlServer, request
from espd.service.daemon import Readers, Stopping


def test_control_stop_waits_for_a_handler_in_flight():
    inside, release = threading.Event(), threading.Event()
    finished: list[float] = []

    def handler(req: dict) -> dict:
        inside.set()
        release.wait(5)
        time.sleep(0.2)
        finished.append(time.monotonic())
        return {"ok": True}

    path = str(Path(tempfile.mkdtemp(prefix="espd-stop-")) / "c.sock")
    server = ControlServer(path, handler)
    server.start()
    def ask() -> None:
        try:
            request(path, "state", timeout=5)
        except ControlError:
            pass  # stop shuts the connection: the answer may not reach the client

    client = threading.Thread(target=ask, daemon=True)
    client.start()
    assert inside.wait(5)
    stopped: list[float] = []
    stopper = threading.Thread(target=lambda: (server.stop(), stopped.append(time.monotonic())))
    stopper.start()
    time.sleep(0.2)
    assert not stopped, "stop returned while a handler was still running"
    release.set()
    stopper.join(10)
    assert finished and stopped and stopped[0] >= finished[0]


def test_readers_gate_refuses_new_readers_and_waits_for_the_others():
    gate = Readers()
    release = threading.Event()

    def read() -> None:
        with gate:
            release.wait(5)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.1)
    assert gate.close(0.2) is False  # still inside
    with pytest.raises(Stopping):
        with gate:
            pass
    release.set()
    reader.join(5)
    assert gate.close(1.0) is True
