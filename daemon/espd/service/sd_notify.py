"""systemd's notify protocol: READY=1, RELOADING=1, WATCHDOG=1, STOPPING=1.

Called on the event loop, so it never blocks: a receiver whose queue is full (systemd not
reading) costs that one message, and only the first failure of a run of them is logged.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("espd")

_failing = False


def sd_notify(message: str) -> None:
    """Send a state line to systemd ($NOTIFY_SOCKET), if we run under it."""
    global _failing
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                           | socket.SOCK_NONBLOCK) as s:
            s.sendto(message.encode(), address)
    except OSError as e:
        if not _failing:
            log.warning("cannot notify systemd: %s", e)
        _failing = True
        return
    _failing = False
