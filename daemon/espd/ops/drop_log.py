"""The drop log: inbound drops a forger can cause (unknown SPI, bad ICV, replays, malformed
packets), logged with the outer source and the SPI, as IOS logs them.

Two rate limits, one behind the other:

- C (native/droplog.c): each worker samples at most 32 records a second (bursts of 64)
  into a ring of its own; the rest it only counts by reason. A flood costs the workers a
  counter increment per packet and never a wait.
- Here: one line per (direction, reason, source address) at most once per ``interval``
  seconds. The first record of a key is logged at once; further ones in the interval are
  counted and reported when it ends ("(37 more suppressed in 10 s)"), and while they keep
  coming the key stays quiet for another interval. At most ``max_lines`` keys are followed
  at a time (spoofed sources cannot flood the log); records of others are summed in one
  line per interval. What C did not
  sample is summed by reason in one line per interval.

A line holds the reason, direction, addresses, UDP port and SPI: nothing of the payload and
never key material (the records carry none). Only the loop's thread calls ``turn``.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger("espd.drops")

DEFAULT_INTERVAL = 10  # seconds; [daemon] drop_log_interval
MAX_LINES = 20  # (reason, source) keys followed at once; records of others are summed


@dataclass
class _Key:
    """What a (direction, reason, source) has done in its current interval."""

    since: float  # when its interval began
    more: int  # records since the line that opened the interval
    sport: int | None  # of the latest record
    spi: int | None
    dst: str | None


def describe(direction: str, reason: str, src: str | None, sport: int | None,
             spi: int | None, dst: str | None = None) -> str:
    """'inbound auth_failed from 192.0.2.7:4500 to 192.0.2.1 spi 0x1234abcd' (IPv6 in
    brackets when a port follows; 'an unknown source' when the outer header gave none; no
    spi for a packet too short to have one)."""
    if src is None:
        where = "an unknown source"
    elif sport is None:
        where = src
    else:
        where = f"[{src}]:{sport}" if ipaddress.ip_address(src).version == 6 else f"{src}:{sport}"
    text = f"{'inbound' if direction == 'in' else 'outbound'} {reason} from {where}"
    if dst is not None:
        text += f" to {dst}"
    return text if spi is None else f"{text} spi 0x{spi:08x}"


class DropLog:
    """Turns the data plane's drop records into rate-limited log lines."""

    def __init__(self, interval: float = DEFAULT_INTERVAL, max_lines: int = MAX_LINES,
                 logger: logging.Logger = log, clock=time.monotonic) -> None:
        self.interval = interval
        self.max_lines = max_lines
        self.log = logger
        self.clock = clock
        self.keys: dict[tuple[str, str, str | None], _Key] = {}
        self.window = clock()  # the interval of the two summed lines below
        self.over: dict[tuple[str, str, str | None], int] = {}  # beyond max_lines: records
        self.suppressed_seen: dict[str, int] = {}  # the data plane's counters, last read
        self.suppressed: dict[str, int] = {}  # their growth in this window

    def turn(self, dp, interval: float | None = None) -> None:
        """Drain `dp` (a Dataplane) and log what is due; `interval` (the configured one,
        read at each turn so a reload changes it) 0 turns the log off."""
        if interval is not None:
            self.interval = interval
        records = dp.drop_records()
        counters = dp.drop_records_suppressed()
        if not self.interval:
            self.keys.clear()
            self.over.clear()
            self.suppressed.clear()
            self.suppressed_seen = counters
            return
        self.feed(records, counters)

    def feed(self, records: Iterable, counters: dict[str, int],
             now: float | None = None) -> None:
        """Take records (DropRecord-like: direction, reason, src, sport, spi, dst) and the
        data plane's not-sampled counters (free-running, by reason); log what is due."""
        now = self.clock() if now is None else now
        for reason, value in counters.items():
            grown = value - self.suppressed_seen.get(reason, 0)
            if grown > 0:
                self.suppressed[reason] = self.suppressed.get(reason, 0) + grown
        self.suppressed_seen = dict(counters)
        self._expire(now)
        for r in records:
            self._record(r, now)

    def flush(self, now: float | None = None) -> None:
        """Log every count still pending (at shutdown)."""
        now = self.clock() if now is None else now
        self._expire(now + self.interval + 1, elapsed_to=now)

    # -- internals -------------------------------------------------------------------------

    def _record(self, r, now: float) -> None:
        key = (r.direction, r.reason, r.src)
        state = self.keys.get(key)
        if state is not None:
            state.more += 1
            state.sport, state.spi, state.dst = r.sport, r.spi, getattr(r, "dst", None)
            return
        if len(self.keys) >= self.max_lines:  # bounds the lines (and memory) per interval
            self.over[key] = self.over.get(key, 0) + 1
            return
        dst = getattr(r, "dst", None)
        self.keys[key] = _Key(now, 0, r.sport, r.spi, dst)
        self.log.warning("%s", describe(r.direction, r.reason, r.src, r.sport, r.spi, dst))

    def _expire(self, now: float, elapsed_to: float | None = None) -> None:
        end = now if elapsed_to is None else elapsed_to
        for key, state in list(self.keys.items()):
            if now - state.since < self.interval:
                continue
            if not state.more:
                del self.keys[key]  # quiet for a whole interval: its next record logs at once
                continue
            direction, reason, src = key
            self.log.warning("%s (%d more suppressed in %d s)",
                             describe(direction, reason, src, state.sport, state.spi,
                                      state.dst),
                             state.more, max(1, round(end - state.since)))
            state.since, state.more = now, 0  # still coming: quiet for another interval
        if now - self.window < self.interval:
            return
        seconds = max(1, round(end - self.window))
        if self.over:
            self.log.warning("%d more drop records from %d other (reason, source) pairs "
                             "not logged in %d s (at most %d followed at once)",
                             sum(self.over.values()), len(self.over), seconds, self.max_lines)
        if self.suppressed:
            by_reason = ", ".join(f"{reason} {n}" for reason, n in sorted(self.suppressed.items()))
            self.log.warning("%d inbound drops not sampled in %d s (data-plane rate limit): %s",
                             sum(self.suppressed.values()), seconds, by_reason)
        self.window = now
        self.over.clear()
        self.suppressed.clear()
