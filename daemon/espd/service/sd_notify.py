"""systemd's notify protocol: READY=1, RELOADING=1, WATCHDOG=1, STOPPING=1.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("espd")


def sd_notify(message: str) -> None:
    """Send a state line to systemd ($NOTIFY_SOCKET), if we run under it."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(message.encode(), address)
    except OSError as e:
        log.warning("cannot notify systemd: %s", e)
