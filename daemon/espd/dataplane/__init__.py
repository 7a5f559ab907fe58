"""The data plane: the cffi binding (binding.py, and constants.py for the numbers the C
side fixes) is the only code that touches ffi.

``from espd.dataplane import Dataplane, DropError`` is the way in; everything above speaks
in SAs, rules and bytes. Test hooks (a frozen clock, sequence numbers set from outside, the
replay window alone) are fenced off in ``espd.dataplane.testing``.
"""

from typing import Any

_EXPORTS = (
    "DROP_HELP", "DROP_REASONS", "EVENT_KINDS", "HEADROOM", "SA", "TAILROOM", "Dataplane",
    "DataplaneError", "DropError", "DropRecord", "Event", "Lifetime", "PuntedDatagram", "Rule",
)


def __getattr__(name: str) -> Any:
    # The binding loads on first use: espd.dataplane.constants (which the binding's own
    # imports need) must be importable without it.
    if name in _EXPORTS:
        from espd.dataplane import binding

        return getattr(binding, name)
    raise AttributeError(f"module 'espd.dataplane' has no attribute {name!r}")


__all__ = list(_EXPORTS)
