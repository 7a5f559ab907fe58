"""Policy ids: the number by which the data plane names a crypto map entry.

The data plane keys two things on it (native/espdp.h): the PROTECT rules an outbound SA
serves (install, replace and retire find them by the SA's policy), and the rules an
inbound SA checks inner packets against. Both are fixed in the C SA when it is created.
So the id must name the same entry for as long as any SA may carry it; an entry's place
in the SPD is not that (inserting `LAB 5` before `LAB 10` would hand LAB 10's id to LAB 5,
and every live SA would have to be created again, its counters and window lost).

Invariants, for the life of one PolicyIds (the daemon holds one for its life):
  - an entry, (map name, seq), keeps the id it got first, whatever is inserted or removed
    around it, and across its own removal and return;
  - a new entry gets an id never given before: an id never names two entries;
  - 0 is never given (the data plane's "no policy").
It grows by one small record per entry ever configured in this process.
"""

from __future__ import annotations

import threading

Entry = tuple[str, int]  # (crypto map name, seq)
MAX_ID = 2**32 - 1  # the data plane's uint32_t


class PolicyIdsExhausted(Exception):
    """More distinct crypto map entries than the data plane can number; restart espd."""


class PolicyIds:
    def __init__(self, given: dict[Entry, int] | None = None) -> None:
        self._ids: dict[Entry, int] = dict(given or {})
        # the reload parser's thread gives ids while a control thread may copy them
        self._lock = threading.Lock()

    def of(self, entry: Entry) -> int:
        """`entry`'s id: the one it has, or the next one never given."""
        with self._lock:
            found = self._ids.get(entry)
            if found is not None:
                return found
            if len(self._ids) >= MAX_ID:
                raise PolicyIdsExhausted(
                    f"{len(self._ids)} distinct crypto map entries configured since espd "
                    "started: no policy id is left; restart espd")
            self._ids[entry] = len(self._ids) + 1  # ids are never taken back: all distinct
            return self._ids[entry]

    def copy(self) -> PolicyIds:
        """A copy to plan with that gives this one nothing (plan_diff: a preview)."""
        with self._lock:
            return PolicyIds(self._ids)
