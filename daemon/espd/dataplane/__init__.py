"""The data plane: the cffi binding (binding.py) is the only code that touches ffi.

``from espd.dataplane import Dataplane, DropError`` is the way in; everything above speaks
in SAs, rules and bytes.
"""

from espd.dataplane.binding import (
    DROP_HELP,
    DROP_REASONS,
    EVENT_KINDS,
    HEADROOM,
    SA,
    TAILROOM,
    Dataplane,
    DataplaneError,
    DropError,
    Event,
    Lifetime,
    Replay,
    Rule,
)

__all__ = [
    "DROP_HELP",
    "DROP_REASONS",
    "EVENT_KINDS",
    "HEADROOM",
    "SA",
    "TAILROOM",
    "Dataplane",
    "DataplaneError",
    "DropError",
    "Event",
    "Lifetime",
    "Replay",
    "Rule",
]
