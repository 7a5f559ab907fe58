"""How much of a loop turn received IKE may take, and who goes first (issue 13: floods).

Every IKE receive path (each UDP 500 socket, ``READ_BATCH`` datagrams at most; the data
plane's punt queue of UDP 4500 IKE, which holds 256) reads a batch per loop turn and
hands it to ``Intake.take``, which

  1. handles every datagram whose source is the address of a configured IKE peer at
     once, in arrival order (bounded by the batch; a flood spoofing a peer's address is
     held to cookies and caps by engine/admission.py);
  2. queues the others in a backlog, bounded in datagrams and bytes like a socket
     buffer (when it is full the oldest are dropped, counted ``shed``);
  3. handles the backlog, oldest first, while the turn's ``budget`` of CPU time lasts
     (shared by every path in the turn); what is left waits for the next turn, for
     which it schedules itself.

Reading ahead is what lets a peer's datagram pass a flood: it is found in the batch
and handled in the turn it was read, instead of waiting behind the flood in a kernel
queue (or being dropped when that queue is full). No espd peer is among the others:
peers are configured by address, and an IKE SA with an address no peer has never
passes IKE_AUTH.

Invariant: per loop turn, received IKE costs at most one budget (plus the one datagram
that began inside it) for sources that are no peer, and one batch per path for sources
that are; data-plane events, timers (the systemd watchdog, retransmissions), reloads and
control-socket actions wait at most about that long behind a flood.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterable

# datagrams read from a UDP 500 socket per loop turn: enough to empty the kernel's queue
# even when turns are slow (a busy host), so a peer's datagram is read, not dropped
# there; reading costs a few microseconds a datagram, handling one ten times that
READ_BATCH = 1024
TURN_BUDGET = 0.003  # CPU seconds per loop turn for datagrams from no configured peer
BACKLOG = 1024  # datagrams from no configured peer waiting for a later turn, at most
BACKLOG_BYTES = 1 << 20  # and their bytes

# data, local (the path's), remote as the socket gave it: (host text, port); turned into
# Endpoints only by the handler, so a datagram that is shed costs no address parsing
Datagram = tuple[bytes, object, tuple[str, int]]
Handler = Callable[[bytes, object, tuple[str, int]], None]


class Intake:
    """``known(host)``: whether a source address (text, as the kernel writes it) is a
    configured peer's; ``counters`` gets ``shed``; ``clock`` measures the budget (the
    loop thread's CPU seconds)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, known: Callable[[str], bool],
                 counters, budget: float = TURN_BUDGET,
                 clock: Callable[[], float] = time.thread_time,
                 backlog: int = BACKLOG, backlog_bytes: int = BACKLOG_BYTES) -> None:
        self.loop, self.known, self.counters = loop, known, counters
        self.budget, self.clock = budget, clock
        self.limit, self.limit_bytes = backlog, backlog_bytes
        self.backlog: collections.deque[tuple[Datagram, Handler]] = collections.deque()
        self.backlog_bytes = 0
        self._left = budget
        self._turn_open = False
        self._resume: asyncio.Handle | None = None

    def _open_turn(self) -> None:
        """The first use in a loop turn refills the budget; the reset is queued with
        call_soon, so it runs at the start of the next turn, before its readers."""
        if not self._turn_open:
            self._turn_open = True
            self._left = self.budget
            self.loop.call_soon(self._close_turn)

    def _close_turn(self) -> None:
        self._turn_open = False

    def take(self, batch: Iterable[Datagram], handle: Handler) -> None:
        self._open_turn()
        for datagram in batch:
            if self.known(datagram[2][0]):
                handle(*datagram)
                continue
            self.backlog.append((datagram, handle))
            self.backlog_bytes += len(datagram[0])
            while len(self.backlog) > self.limit or self.backlog_bytes > self.limit_bytes:
                dropped, _ = self.backlog.popleft()
                self.backlog_bytes -= len(dropped[0])
                self.counters["shed"] += 1
        self._work()

    def _work(self) -> None:
        began = self.clock()
        try:
            while self.backlog and self.clock() - began < self._left:
                datagram, handle = self.backlog.popleft()
                self.backlog_bytes -= len(datagram[0])
                handle(*datagram)
        finally:
            self._left = max(0.0, self._left - (self.clock() - began))
            if self.backlog and self._resume is None:
                self._resume = self.loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        """Queued by a turn that left a backlog; runs early in the next turn, with that
        turn's budget (peers' datagrams read later in the turn need none)."""
        self._resume = None
        self._open_turn()
        self._work()

    def close(self) -> None:
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        self.backlog.clear()
        self.backlog_bytes = 0
