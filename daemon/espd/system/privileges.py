"""Dropping root after start: only CAP_NET_ADMIN (routes and MTU at reload) remains.

Once the TUN device and the sockets are open, espd needs no other privilege: workers
use descriptors it already holds. ``drop_to(user)`` switches every thread's uid/gid to
`user` while keeping CAP_NET_ADMIN in the permitted and effective sets (PR_SET_KEEPCAPS,
then capset), clears the bounding set of everything else so that nothing can be regained,
and sets no_new_privs. The C worker threads are started after this, so they inherit it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pwd

CAP_NET_ADMIN = 12
CAP_LAST_CAP_MAX = 63
PR_CAPBSET_DROP = 24
PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
PR_SET_DUMPABLE = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class PrivilegeError(OSError):
    pass


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise PrivilegeError(err, f"{what}: {os.strerror(err)}")


def _prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), f"prctl({option})")


def keep_out_of_core_dumps() -> None:
    """No core dump (and no ptrace by the same uid) can show the key material."""
    _prctl(PR_SET_DUMPABLE, 0)


def _capset(caps: int) -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    data[0].effective = data[0].permitted = caps & 0xFFFFFFFF
    data[1].effective = data[1].permitted = caps >> 32
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def pwd_ids(user: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(user)
    except KeyError as e:
        raise PrivilegeError(f"user {user!r} does not exist; create it (e.g. "
                             f"'useradd --system --no-create-home {user}') or remove "
                             "'user' from [daemon]") from e
    return entry.pw_uid, entry.pw_gid


def drop_to(user: str) -> tuple[int, int]:
    """Become `user` with CAP_NET_ADMIN only. Returns (uid, gid). Must run before any
    other thread exists (setuid applies to the calling thread; glibc broadcasts it to
    all threads, but nothing else may hold privileges meanwhile)."""
    uid, gid = pwd_ids(user)
    if os.geteuid() != 0:
        raise PrivilegeError(f"cannot switch to user {user!r}: espd is not running as root")
    keep = 1 << CAP_NET_ADMIN
    for cap in range(CAP_LAST_CAP_MAX + 1):  # nothing outside `keep` can come back
        if cap != CAP_NET_ADMIN and _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            if ctypes.get_errno() != 22:  # EINVAL: past the kernel's last capability
                _check(-1, f"dropping capability {cap} from the bounding set")
    _prctl(PR_SET_KEEPCAPS, 1)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    _capset(keep)
    _prctl(PR_SET_KEEPCAPS, 0)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    return uid, gid
