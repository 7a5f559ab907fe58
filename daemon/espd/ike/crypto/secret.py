"""Secret: key material that can be wiped and never prints itself.

Every key this package derives (SKEYSEED, SK_*, Child SA keys, shared secrets) is a
``Secret``: a bytearray, so it works wherever bytes do (hmac, cryptography, cffi's
``from_buffer``) and can be zeroed in place once its last user has it (``wipe()``; the
data plane keeps its own copy, as with manual keys). Its repr and str show the length only,
so a key that reaches a log line, an f-string or an exception shows no byte of itself.

Limits, stated where they are enforced: slicing a Secret returns a plain bytearray (wipe
it too, or slice with ``Secret.cut``); immutable ``bytes`` made on the way (hmac digests,
``cryptography`` outputs) cannot be wiped and are left to the garbage collector.
"""

from __future__ import annotations


class Secret(bytearray):
    """Key bytes: a bytearray whose repr and str never show the bytes."""

    def __repr__(self) -> str:
        return f"<Secret {len(self)} bytes>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def cut(self, start: int, length: int) -> Secret:
        """The `length` bytes at `start`, as a Secret of their own."""
        if start < 0 or length < 0 or start + length > len(self):
            raise ValueError(f"cut [{start}:{start + length}] out of a {len(self)}-byte secret")
        return Secret(memoryview(self)[start:start + length])

    def wipe(self) -> None:
        """Overwrite the bytes with zeros in place (a bytearray never moves while its size
        stays the same: an assignment of as many bytes copies into the same buffer)."""
        self[:] = bytes(len(self))

