"""Test hooks into the data plane, fenced off from the shipped API: the daemon never
imports this module (the C entry points it calls sit in espdp.h's "Test hooks" section).
Tests, benchmarks and fuzzers set state near the edges (sequence numbers, lifetime usage),
freeze the clock, and drive the anti-replay window alone.
"""

from __future__ import annotations

from espd.dataplane.binding import DROP_REASONS, SA, Dataplane, DataplaneError, ffi, lib


def set_clock(dp: Dataplane, now_ns: int | None) -> None:
    """Freeze `dp`'s clock at `now_ns`; None returns it to the real clock."""
    lib.espdp_set_clock(dp._dp, -1 if now_ns is None else now_ns)


def set_seq(sa: SA, seq: int) -> None:
    """Outbound: the last sequence number used; inbound: an empty window with its top
    at `seq`."""
    lib.espdp_sa_test_set_seq(sa._handle, seq)


def set_usage(sa: SA, bytes_: int, packets: int) -> None:
    """The lifetime usage `sa` has counted so far."""
    lib.espdp_sa_test_set_usage(sa._handle, bytes_, packets)


class Replay:
    """A standalone anti-replay window (for property tests of the C implementation)."""

    def __init__(self, window: int, esn: bool = False) -> None:
        r = lib.espdp_replay_new(window, int(esn))
        if r == ffi.NULL:
            raise DataplaneError(f"replay window {window} is out of range")
        self._r = ffi.gc(r, lib.espdp_replay_free)
        self._seq = ffi.new("uint64_t *")

    def check(self, seql: int) -> tuple[str | None, int]:
        """(None or the drop reason, the inferred 64-bit sequence number)."""
        r = lib.espdp_replay_check(self._r, seql, self._seq)
        return (DROP_REASONS[r] if r else None), self._seq[0]

    def advance(self, seq: int) -> str | None:
        r = lib.espdp_replay_advance(self._r, seq)
        return DROP_REASONS[r] if r else None

    @property
    def top(self) -> int:
        return lib.espdp_replay_top(self._r)
