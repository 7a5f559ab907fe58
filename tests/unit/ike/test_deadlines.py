"""The IKE engine's deadline heap (engine/deadlines.py) on a real event loop: order by
time, ties in the order added, cancel (also from a callback of the same turn), cancel
and add again (a reschedule), never early, one loop timer, a raising callback, close."""

from __future__ import annotations

import asyncio

from espd.ike.engine.deadlines import _MIN_COMPACT, Deadlines


def run(coro):
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def test_order_by_time_and_ties_in_the_order_added():
    async def main():
        loop = asyncio.get_running_loop()
        heap = Deadlines(loop)
        seen = []
        now = loop.time()
        for name, at in (("c", 0.03), ("a", 0.01), ("b1", 0.02), ("b2", 0.02), ("b3", 0.02)):
            heap.call_at(now + at, seen.append, name)
        tie = now + 0.015
        for n in range(5):
            heap.call_at(tie, seen.append, f"t{n}")
        await asyncio.sleep(0.06)
        assert seen == ["a", "t0", "t1", "t2", "t3", "t4", "b1", "b2", "b3", "c"]
        assert len(heap) == 0
    run(main())


def test_never_before_its_time_and_one_loop_timer():
    async def main():
        loop = asyncio.get_running_loop()
        heap = Deadlines(loop)
        ran = []
        for delay in (0.05, 0.02, 0.04, 0.01, 0.03):
            when = loop.time() + delay
            heap.call_at(when, lambda w=when: ran.append(loop.time() >= w))
        armed = [h for h in loop._scheduled if not h.cancelled()]
        assert len(armed) == 1  # the earliest one's
        await asyncio.sleep(0.08)
        assert ran == [True] * 5
    run(main())


def test_cancel_and_reschedule():
    async def main():
        loop = asyncio.get_running_loop()
        heap = Deadlines(loop)
        seen = []
        first = heap.call_later(0.01, seen.append, "first")
        later = heap.call_later(0.02, seen.append, "later")
        assert not first.cancelled() and len(heap) == 2
        first.cancel()
        first.cancel()  # twice: no effect
        assert first.cancelled() and len(heap) == 1
        later.cancel()
        again = heap.call_later(0.03, seen.append, "again")  # the reschedule of `later`
        await asyncio.sleep(0.05)
        assert seen == ["again"] and again.cancelled()  # run: not pending any more
        again.cancel()  # after it ran: no effect
        assert len(heap) == 0
    run(main())


def test_a_callback_cancels_one_due_in_the_same_turn_and_adds_one():
    async def main():
        loop = asyncio.get_running_loop()
        heap = Deadlines(loop)
        seen = []
        when = loop.time() + 0.01
        handles = {}

        def first():
            seen.append("first")
            handles["second"].cancel()
            heap.call_later(0, seen.append, "added")

        heap.call_at(when, first)
        handles["second"] = heap.call_at(when, seen.append, "second")
        heap.call_at(when, seen.append, "third")
        await asyncio.sleep(0.03)
        assert seen == ["first", "third", "added"]
        assert len(heap) == 0 and heap._cancelled == 0
    run(main())


def test_an_earlier_deadline_rearms_and_a_cancelled_earliest_is_skipped():
    async def main():
        loop = asyncio.get_running_loop()
        heap = Deadlines(loop)
        seen = []
        heap.call_later(0.05, seen.append, "late")
        early = heap.call_later(0.01, seen.append, "early")
        assert heap._armed_for == early.when
        early.cancel()
        heap.call_later(0.02, seen.append, "middle")
        await asyncio.sleep(0.07)
        assert seen == ["middle", "late"] and len(heap) == 0
    run(main())


def test_a_raising_callback_does_not_stop_the_others():
    async def main():
        loop = asyncio.get_running_loop()
        errors = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        heap = Deadlines(loop)
        seen = []
        when = loop.time() + 0.01
        heap.call_at(when, lambda: 1 / 0)
        heap.call_at(when, seen.append, "after")
        heap.call_at(when + 0.01, seen.append, "next turn")
        await asyncio.sleep(0.04)
        assert seen == ["after", "next turn"]
        assert len(errors) == 1 and isinstance(errors[0]["exception"], ZeroDivisionError)
    run(main())


def test_cancelled_deadlines_are_dropped_once_they_are_most_of_the_heap():
    async def main():
        loop = asyncio.get_running_loop()
        heap = Deadlines(loop)
        seen = []
        keep = heap.call_later(0.01, seen.append, "kept")
        many = [heap.call_later(100 + n, seen.append, n) for n in range(3 * _MIN_COMPACT)]
        for deadline in many:
            deadline.cancel()
        assert len(heap._heap) < len(many)  # compacted
        assert len(heap) == 1 and not keep.cancelled()
        await asyncio.sleep(0.03)
        assert seen == ["kept"] and len(heap) == 0
    run(main())


def test_close_cancels_every_deadline_and_the_loop_timer():
    async def main():
        loop = asyncio.get_running_loop()
        heap = Deadlines(loop)
        seen = []
        pending = [heap.call_later(0.01 * n, seen.append, n) for n in range(1, 4)]
        heap.close()
        assert all(d.cancelled() for d in pending) and len(heap) == 0
        assert not [h for h in loop._scheduled if not h.cancelled()]
        await asyncio.sleep(0.05)
        assert seen == []
        heap.call_later(0.01, seen.append, "after close")  # usable again
        await asyncio.sleep(0.03)
        assert seen == ["after close"]
    run(main())
