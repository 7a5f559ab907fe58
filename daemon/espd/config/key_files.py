"""Key files: a key held in hex by a file only root or espd's user can read.

The file is read into a buffer that is wiped; only the returned key is left.
"""

from __future__ import annotations

import binascii
import errno
import os
import stat

from espd.config.model import (
    wipe,
)

KEY_FILE_MAX = 4096  # bytes; the longest key (HMAC-SHA512, 64 bytes) is 128 hex digits
_HEX_DIGITS = b"0123456789abcdefABCDEF"
_BLANKS = b" \t\r\n\v\f"
_NOT_A_FILE = "key file {path} is not a regular file; point key_file at a file holding the key"


class KeyFileError(Exception):
    """A key file espd refuses to read; ``problems`` say what to do (never the key)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def read_key_file(path: str, wanted: str = "the key in hex") -> bytearray:
    """The key held in hex by ``path``: a regular file, not a symlink, owned by root or by
    this process's user, not readable or writable by group or others. Whitespace is
    ignored. ``wanted`` ("the key's 72 hex digits") goes into the advice. Raises
    KeyFileError.

    The file is read into a bytearray that is wiped before returning, so no str or bytes
    copy of the hex text is left behind; only the returned key exists."""
    return _read_protected(path, wanted, lambda buf, size: _parse_hex(buf, size, path, wanted))


def read_secret_file(path: str) -> bytearray:
    """A pre-shared key (text, as IOS writes it) held by ``path``, with the same checks as
    read_key_file; a trailing newline (and trailing whitespace) is not part of the key."""
    def parse(buf: bytearray, size: int) -> bytearray:
        while size and buf[size - 1] in _BLANKS:
            size -= 1
        with memoryview(buf) as view:
            return bytearray(view[:size])  # the only copy: buf is wiped by the caller

    return _read_protected(path, "the pre-shared key", parse)


def read_private_key_file(path: str):
    """A PEM private key (certificate authentication) held by ``path``, with the same
    checks as read_key_file. Returns the key object."""
    from cryptography.hazmat.primitives import serialization

    def parse(buf: bytearray, size: int):
        try:
            return serialization.load_pem_private_key(bytes(buf[:size]), password=None)
        except (ValueError, TypeError) as e:
            reason = "it is encrypted; store it without a passphrase" if \
                isinstance(e, TypeError) else "it is not an unencrypted PEM private key"
            raise KeyFileError([f"key file {path} cannot be used: {reason}"]) from None

    return _read_protected(path, "the PEM private key", parse)


def _read_protected(path: str, wanted: str, parse) -> bytearray:
    try:
        mode = os.lstat(path).st_mode  # a device or FIFO is refused before it is opened
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            raise KeyFileError([_NOT_A_FILE.format(path=path)])
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise KeyFileError([_open_problem(path, e, wanted)]) from None
    buf = bytearray(KEY_FILE_MAX + 1)
    try:
        info = os.fstat(fd)
        _check_key_file(path, info)
        with open(fd, "rb", buffering=0, closefd=False) as f:
            size = 0
            while size < len(buf) and (n := f.readinto(memoryview(buf)[size:])):
                size += n
        if size > KEY_FILE_MAX:
            raise KeyFileError([f"key file {path} is larger than {KEY_FILE_MAX} bytes, too "
                                f"large for a key; write only {wanted}"])
        return parse(buf, size)
    finally:
        os.close(fd)
        wipe(buf)


def _open_problem(path: str, e: OSError, wanted: str) -> str:
    if e.errno == errno.ELOOP:
        return (f"key file {path} is a symlink; espd does not follow symlinks to keys: point "
                f"key_file at the file itself ({os.path.realpath(path)})")
    if e.errno == errno.ENOENT:
        return (f"cannot read key file {path}: {e.strerror}; fix the path (a relative path "
                f"starts at the config file's directory) or create it holding {wanted} and "
                f"run 'chmod 600 {path}'")
    if e.errno == errno.EACCES:
        return (f"cannot read key file {path}: {e.strerror}; run espd as root or as the "
                f"file's owner")
    return f"cannot read key file {path}: {e.strerror}"


def _check_key_file(path: str, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError([_NOT_A_FILE.format(path=path)])
    problems = []
    euid = os.geteuid()
    if info.st_uid not in (0, euid):
        owners = "root" if euid == 0 else f"root or espd's user (uid {euid})"
        problems.append(f"key file {path} is owned by uid {info.st_uid}, not by {owners}; "
                        f"run 'chown {'root' if euid == 0 else euid} {path}'")
    if info.st_mode & 0o066:
        problems.append(f"key file {path} is readable or writable by group or others (mode "
                        f"{stat.S_IMODE(info.st_mode):04o}); run 'chmod 600 {path}'")
    if problems:
        raise KeyFileError(problems)


def _parse_hex(buf: bytearray, size: int, path: str, wanted: str) -> bytes:
    text = buf[:size]
    digits = text.translate(None, _BLANKS)
    others = digits.translate(None, _HEX_DIGITS)
    try:
        if others:
            raise KeyFileError([f"key file {path} holds characters other than hex digits and "
                                f"whitespace; write only {wanted} (0-9, a-f), without '0x' "
                                f"or 'key ='"])
        if len(digits) % 2:
            raise KeyFileError([f"key file {path} holds an odd number of hex digits "
                                f"({len(digits)}); write {wanted}"])
        return bytearray(binascii.unhexlify(digits))
    finally:
        for scratch in (text, digits, others):
            wipe(scratch)
