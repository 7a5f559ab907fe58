"""Following a peer behind a NAT to its new address or port (RFC 7296 2.23).

A NAT that restarts (or loses its mapping) gives the peer's packets a new source port, and
maybe a new address. Only a packet that proves it is the peer's, and new, may move an IKE
SA: an IKE message whose ICV verified (a new request, or the response to our outstanding
request), or an ESP packet that authenticated and passed anti-replay (the data plane's
``peer_moved`` event, which the SA owner applied to that Child SA pair already).

Invariants:
  - Only the side that is not behind a NAT, with a peer that is, follows (``follows``);
    a side behind a NAT never does, since one forged-but-replayed packet would otherwise
    let an attacker redirect its traffic (RFC 7296 2.23).
  - The IKE SA and every Child SA of it move together: IKE messages, retransmissions
    included, go to ``sa.remote``; each Child SA's outbound goes there through
    ``owner.move_child`` (the data plane's ``espdp_sa_set_remote``).
  - The address family never changes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from espd.ike.sa.ike_sa import Endpoint, IkeSa, IkeState

if TYPE_CHECKING:
    from espd.ike.engine.engine import IkeEngine

log = logging.getLogger("espd.ike")

ESTABLISHED = (IkeState.ESTABLISHED, IkeState.REKEYING, IkeState.DELETING)


def follows(sa: IkeSa) -> bool:
    """RFC 7296 2.23: the peer is behind a NAT and we are not."""
    return sa.nat_remote and not sa.nat_local


def follow(engine: IkeEngine, sa: IkeSa, remote: Endpoint, via: str) -> bool:
    """An authenticated, new message of `sa`'s peer came from `remote` ("ike" or "esp"):
    move the IKE SA and its Child SAs there if `sa` follows. True if it moved."""
    if remote == sa.remote or sa.state not in ESTABLISHED:
        return False
    if not follows(sa) or remote.address.version != sa.remote.address.version:
        engine.counters["peer_moves_refused"] += 1
        engine.rate_log.warning(
            "moved", "IKE: %s: authenticated %s from %s not followed (%s)", sa,
            via.upper(), remote, "this side is behind a NAT" if sa.nat_local else
            "the peer is not behind a NAT" if not sa.nat_remote else "another family")
        return False
    before, sa.remote = sa.remote, remote
    engine.peer_address_changed(sa, before.address)
    engine.counters[f"peer_moves_{via}"] += 1
    log.info("%s: peer moved from %s to %s (authenticated %s; RFC 7296 2.23)", sa, before,
             remote, via.upper())
    for child in list(sa.children.values()):
        if child.handle is not None and child.encap == "udp":
            engine.owner.move_child(child.handle, str(remote.address), remote.port)
    engine.emit("moved", sa, None, f"{before} -> {remote} ({via})")  # show reads it at once
    return True
