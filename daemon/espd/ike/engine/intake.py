"""How much of a loop turn received IKE may take, and who goes first (issue 13: floods).

Every IKE receive path (each UDP 500 socket, the data plane's punt queue of UDP 4500
IKE) reads a batch of at most ``READ_BATCH`` datagrams per loop turn (reading is cheap:
it keeps the kernel's queue from overflowing, so a peer's datagram is not lost behind a
flood) and hands it to ``Intake.take``, which

  1. handles every datagram whose source is the address of a configured IKE peer, in
     arrival order (bounded by the batch: a flood spoofing a peer's address is capped
     by the admission rules, engine/admission.py);
  2. handles the others, in arrival order, while the turn's ``budget`` lasts (shared by
     every path of the turn);
  3. drops the rest, counted ``shed``. No espd peer can be among them: peers are
     configured by address, and an IKE SA with an address no peer has never passes
     IKE_AUTH.

Invariant: per loop turn, received IKE costs at most one budget (plus one datagram's
work that began inside it) for sources that are no peer, and one batch per path for
sources that are; so data-plane events, timers (the systemd watchdog, retransmissions),
reloads and control-socket actions wait at most about that long behind a flood.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from espd.ike.sa.ike_sa import Endpoint

READ_BATCH = 256  # datagrams read per path per loop turn (the punt queue holds 256)
TURN_BUDGET = 0.010  # seconds per loop turn for datagrams from no configured peer

Datagram = tuple[bytes, Endpoint, Endpoint]  # data, local, remote
Handler = Callable[[bytes, Endpoint, Endpoint], None]


class Intake:
    """``known(address)``: whether a source address is a configured peer's; ``counters``
    gets ``shed``; ``clock`` measures the budget (seconds)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, known: Callable[[object], bool],
                 counters, budget: float = TURN_BUDGET,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.loop, self.known, self.counters = loop, known, counters
        self.budget, self.clock = budget, clock
        self._left = budget
        self._turn_open = False

    def _open_turn(self) -> None:
        """The first take of a loop turn refills the budget; the reset is queued with
        call_soon, so it runs at the start of the next turn, before its readers."""
        if not self._turn_open:
            self._turn_open = True
            self._left = self.budget
            self.loop.call_soon(self._close_turn)

    def _close_turn(self) -> None:
        self._turn_open = False

    def take(self, batch: Iterable[Datagram], handle: Handler) -> None:
        self._open_turn()
        others: list[Datagram] = []
        for datagram in batch:
            if self.known(datagram[2].address):
                handle(*datagram)
            else:
                others.append(datagram)
        if not others:
            return
        began = self.clock()
        for done, datagram in enumerate(others):
            if self.clock() - began >= self._left:
                self.counters["shed"] += len(others) - done
                self._left = 0.0
                return
            handle(*datagram)
        self._left = max(0.0, self._left - (self.clock() - began))
