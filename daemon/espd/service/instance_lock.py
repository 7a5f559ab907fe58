"""One espd per state directory: an exclusive lock taken before anything is touched.

`espd run` holds ``flock(LOCK_EX)`` on ``STATE_DIR/espd.lock`` for as long as it runs; the
file holds its pid. A second `espd run` on the same config (so the same state directory,
where the sequence-number reservations live) cannot take the lock and stops at once, with
one line naming the running instance, before it creates a TUN device, a route or a socket
and before it could remove any of the first one's. The kernel drops the lock when the
process dies, kill -9 included; the file stays (unlinking a lock file races with the next
instance taking it).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "espd.lock"


class AlreadyRunning(Exception):
    """Another espd holds the lock; the message names it and says what to do."""


class InstanceLock:
    def __init__(self, state_dir: str) -> None:
        self.path = Path(state_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise AlreadyRunning (OSError if the directory is unusable)."""
        try:
            # as SequenceStore made it before: its seq/ inside is the private part, and a
            # daemon that drops root must still reach it
            self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise OSError(e.errno, f"state_dir {self.path.parent} is not usable "
                          f"({e.strerror}); espd keeps its instance lock and sequence-number "
                          "reservations there: set [daemon] state_dir to a writable "
                          "directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "a process"
            raise AlreadyRunning(
                f"another espd ({who}) is running with state_dir {self.path.parent} (it holds "
                f"{self.path}); nothing was changed: stop that one first (systemctl stop espd"
                f"{f', or kill {holder}' if holder else ''}), or give this config a state_dir "
                "of its own") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None
