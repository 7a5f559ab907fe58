"""The IKE engine's timers: one heap of deadlines behind one loop timer.

A hub keeps a timer or two per tunnel for as long as it is up (IKE SA rekey, Child SA
rekey). As an asyncio TimerHandle each cost the handle, its argument tuple, a new bound
method and its deadline; a ``Deadline`` here is about 90 B less (measured: issue 13,
bytes per tunnel, docs/performance.md), and the loop holds only the one TimerHandle, for
the earliest of them.

Semantics are the loop's own: a deadline's callback runs on a loop turn at or after its
time (``loop.time()`` clock), never before; deadlines that fall due together run in the
order of their times, and equal times in the order they were added; a cancelled one
never runs (also when cancelled by a callback run before it in the same turn); a
callback that raises does not stop the others (the exception goes to the loop's
exception handler, as a TimerHandle's would). Rescheduling is cancel and add.

Owner: the loop's thread is the only one that adds, cancels or runs deadlines (the
engine lives there); nothing here is locked.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

# cancelled deadlines are dropped from the heap once they are more than half of it (and
# at least this many), as asyncio does with its cancelled TimerHandles
_MIN_COMPACT = 100


class _Due:
    """What a deadline taken off the heap to run in this turn points to: cancelling it
    then only keeps it from running (it is no longer counted in the heap)."""

    @staticmethod
    def _cancelled_one() -> None:
        pass


_DUE = _Due()


class Deadline:
    """One pending call; ``cancel()`` as a TimerHandle's."""

    __slots__ = ("when", "_seq", "_callback", "_args", "_heap")

    def __init__(self, when: float, seq: int, callback: Callable[..., object], args: tuple,
                 heap: Deadlines) -> None:
        self.when = when
        self._seq = seq
        self._callback = callback
        self._args = args
        self._heap: Deadlines | _Due | None = heap  # None once run or cancelled

    def __lt__(self, other: Deadline) -> bool:
        return (self.when, self._seq) < (other.when, other._seq)

    def cancelled(self) -> bool:
        """True once cancelled or run (it will not run again)."""
        return self._heap is None

    def cancel(self) -> None:
        heap, self._heap = self._heap, None
        if heap is not None:
            self._callback = self._args = None  # type: ignore[assignment]
            heap._cancelled_one()


class Deadlines:
    def __init__(self, loop: asyncio.AbstractEventLoop, context=None) -> None:
        self.loop = loop
        self._context = context
        self._heap: list[Deadline] = []
        self._seq = itertools.count()
        self._cancelled = 0
        self._timer: asyncio.TimerHandle | None = None  # the loop's, for the earliest
        self._armed_for = float("inf")

    def __len__(self) -> int:
        """The deadlines still pending (not run, not cancelled)."""
        return len(self._heap) - self._cancelled

    def call_later(self, delay: float, callback: Callable[..., object], *args: object
                   ) -> Deadline:
        return self.call_at(self.loop.time() + delay, callback, *args)

    def call_at(self, when: float, callback: Callable[..., object], *args: object
                ) -> Deadline:
        deadline = Deadline(when, next(self._seq), callback, args, self)
        heapq.heappush(self._heap, deadline)
        if when < self._armed_for:
            self._arm(when)
        return deadline

    def close(self) -> None:
        """Cancel every pending deadline and the loop timer."""
        for deadline in self._heap:
            deadline._heap = None
            deadline._callback = deadline._args = None  # type: ignore[assignment]
        self._heap.clear()
        self._cancelled = 0
        self._disarm()

    def _cancelled_one(self) -> None:
        self._cancelled += 1
        if self._cancelled > _MIN_COMPACT and self._cancelled * 2 > len(self._heap):
            self._heap = [d for d in self._heap if d._heap is not None]
            heapq.heapify(self._heap)
            self._cancelled = 0
        # the loop timer stays armed for a cancelled earliest one: _run finds nothing
        # due then and re-arms (one wake-up, as a cancelled TimerHandle would not cost)

    def _arm(self, when: float) -> None:
        self._disarm()
        self._armed_for = when
        self._timer = self.loop.call_at(when, self._run, context=self._context)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_for = float("inf")

    def _run(self) -> None:
        self._timer, self._armed_for = None, float("inf")
        heap = self._heap
        # what the loop runs in this turn: due now, with its clock resolution (as
        # BaseEventLoop._run_once takes its TimerHandles)
        end = self.loop.time() + self.loop._clock_resolution  # type: ignore[attr-defined]
        due = []
        while heap and heap[0].when < end:
            deadline = heapq.heappop(heap)
            if deadline._heap is None:
                self._cancelled -= 1
            else:
                deadline._heap = _DUE
                due.append(deadline)
        try:
            for deadline in due:
                if deadline._heap is None:  # cancelled by a callback before it
                    continue
                deadline._heap = None
                callback, args = deadline._callback, deadline._args
                deadline._callback = deadline._args = None  # type: ignore[assignment]
                try:
                    callback(*args)
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    self.loop.call_exception_handler({
                        "message": f"Exception in IKE timer callback {callback!r}",
                        "exception": exc})
        finally:
            self._rearm()

    def _rearm(self) -> None:
        heap = self._heap
        while heap and heap[0]._heap is None:
            heapq.heappop(heap)
            self._cancelled -= 1
        if heap and heap[0].when < self._armed_for:
            self._arm(heap[0].when)
