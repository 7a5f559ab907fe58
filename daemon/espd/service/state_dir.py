"""Would `espd run` be able to use this state_dir? Asked by `espd check`, which changes nothing.

`run` creates the directory (InstanceLock), writes its lock file there and the
sequence-number reservations under seq/ (SequenceStore), and refuses to start if it
cannot. The probe tries what run does, on a scratch name it removes at once: a file in
each existing directory, or a directory in the nearest existing parent of one that does
not exist yet. Only the caller's own credentials are tried, so a check run by a user who
is not root cannot speak for a daemon started as root: a permission refusal is then only
a warning (see `fatal`).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from espd.service.instance_lock import LOCK_NAME


def problem(state_dir: str) -> OSError | None:
    """Why run could not use ``state_dir`` (an OSError naming the path), or None."""
    top = Path(state_dir)
    for path in (top, top / "seq"):
        if path.is_dir():
            error = _try(path, _file)
        elif path.exists() or path.is_symlink():
            error = OSError(errno.ENOTDIR, f"{path} exists and is not a directory")
        else:
            parent = _nearest_existing(path)
            error = (_try(parent, _directory) if parent.is_dir() else
                     OSError(errno.ENOTDIR, f"{parent} is not a directory, so {path} cannot "
                                            "be created"))
        if error is not None:
            return error
        if not path.is_dir():
            break  # run creates it and what is below it
    lock = top / LOCK_NAME
    if lock.exists():
        try:
            os.close(os.open(lock, os.O_RDWR | os.O_CLOEXEC))  # no flock: never disturbs
        except OSError as e:
            return OSError(e.errno, f"cannot open {lock} for writing ({e.strerror})")
    return None


def fatal(error: OSError) -> bool:
    """A permission refusal seen by a user other than root may not hold for the daemon."""
    return os.geteuid() == 0 or error.errno not in (errno.EACCES, errno.EPERM)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _scratch(directory: Path) -> Path:
    return directory / f".espd-check-{os.getpid()}"


def _file(directory: Path) -> None:
    scratch = _scratch(directory)
    os.close(os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    scratch.unlink()


def _directory(directory: Path) -> None:
    scratch = _scratch(directory)
    scratch.mkdir(mode=0o700)
    scratch.rmdir()


def _try(directory: Path, probe) -> OSError | None:
    try:
        probe(directory)
    except OSError as e:
        what = "create a directory" if probe is _directory else "write"
        return OSError(e.errno, f"cannot {what} in {directory} ({e.strerror})")
    return None
