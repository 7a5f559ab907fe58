"""A Child SA (ESP) negotiated under an IKE SA: its SPIs, keys and place in the owner.

Lifecycle: CREATING (our CREATE_CHILD_SA or IKE_AUTH in flight) -> INSTALLED (the owner
holds it) -> REKEYING (a rekey of it in flight) -> REKEYED (a successor is installed; this
one waits for its DELETE) -> DELETING -> DELETED. The engine keeps no Child SA keys: they
go from KEYMAT to the owner and are wiped once installed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from espd.ike.proposals import Proposal
from espd.policy.selectors import TrafficSelector


class ChildState(enum.Enum):
    CREATING = "creating"
    INSTALLED = "installed"
    REKEYING = "rekeying"
    REKEYED = "rekeyed"
    DELETING = "deleting"
    DELETED = "deleted"


@dataclass(eq=False, slots=True)  # slots: one per Child SA, thousands on a hub
class ChildSa:
    """Invariant: ``spi_in`` is unique among the live Child SAs of this engine (we chose
    it); ``handle`` is set exactly while the owner holds the SA pair."""

    entry: tuple[str, int]  # crypto map (name, seq)
    spi_in: int
    spi_out: int = 0
    proposal: Proposal | None = None
    transform: str = ""  # espd ESP transform name
    mode: str = "tunnel"
    encap: str = "esp"  # "esp" | "udp"
    esn: bool = False
    local_ts: tuple[TrafficSelector, ...] = ()
    remote_ts: tuple[TrafficSelector, ...] = ()
    state: ChildState = ChildState.CREATING
    handle: object | None = None  # the SA owner's ChildHandle
    created: float = 0.0  # loop time
    rekey_timer: object | None = None
    expire_timer: object | None = None
    rekeyed_by: ChildSa | None = None  # the successor, once a rekey made one
    initiated_by_us: bool = True  # who created it
    collision: object | None = None  # sa/collision.Collision: the peer's rekey of it met ours
    key_exchanges: tuple[str, ...] = ()  # its PFS: "x25519 (CREATE_CHILD_SA)", ...
    # a responder's Child SA waiting for IKE_FOLLOWUP_KE: (methods, install(secrets),
    # discard() wiping the CREATE_CHILD_SA secret if it never comes)
    deferred: object | None = None

    def wipe(self) -> None:
        """Nothing to zero: a Child SA's keys go from KEYMAT to the owner and are wiped
        there (exchanges/child_setup.py); the engine never keeps them."""

    def cancel_timers(self) -> None:
        for timer in (self.rekey_timer, self.expire_timer):
            if timer is not None:
                timer.cancel()  # type: ignore[attr-defined]
        self.rekey_timer = self.expire_timer = None

    def __str__(self) -> str:
        return f"child {self.spi_in:08x}/{self.spi_out:08x} ({self.entry[0]} {self.entry[1]})"
