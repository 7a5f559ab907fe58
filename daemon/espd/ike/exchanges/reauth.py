"""Reauthentication, make-before-break (RFC 7296 2.8.3): ``[ike] reauth_time``.

An IKE SA rekey keeps the authentication of the first IKE_AUTH forever; reauthentication
proves both identities again (a revoked certificate or a changed key then ends the
tunnel). The side whose timer fires:

    1. starts a new IKE SA to the same peer: IKE_SA_INIT + IKE_AUTH with the first Child
       SA's entry, then CREATE_CHILD_SA on the new IKE SA for each further entry;
    2. installs each new Child SA in place of the old one of its entry (child_setup:
       the old one's successor): the peer answered, so its new inbound SA is live, and
       our outbound switches at once; the peer, a responder that sees a second Child SA
       for an entry it has one for already, makes only the new inbound live and keeps
       sending on the old until our traffic arrives on the new or the old is deleted;
    3. once every entry of the old IKE SA has its new Child SA (or failed to get one),
       deletes the old IKE SA 1 s later (what is in flight on the old SAs arrives first);
       on our side its Child SAs linger 2 s more.

Invariant: no entry is without an installed Child SA at any step (the old one serves
until its successor is live), so nothing is dropped and nothing leaves in clear. If the
new IKE SA fails, the old one runs on and reauthentication is tried again later.

Both ends reauthenticating at once is not settled: two new IKE SAs come up, each end
deletes the old one, and one entry ends with a Child SA pair under each new IKE SA; the
outbound uses the later, the other lives to its lifetime. Traffic flows all along; the
jitter on ``reauth_time`` makes it rare.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from espd.ike.exchanges import child_setup
from espd.ike.sa.child_sa import ChildState
from espd.ike.sa.ike_sa import IkeSa, IkeState

if TYPE_CHECKING:
    from espd.ike.engine.engine import IkeEngine
    from espd.ike.sa.child_sa import ChildSa

log = logging.getLogger("espd.ike")

RETRY_DELAY = (30.0, 60.0)  # seconds before a failed reauthentication is tried again
# seconds between the last new Child SA and the old IKE SA's DELETE: what we sent on the
# old outbound SAs just before they switched is still in flight, and a peer may drop its
# old inbound SAs the moment the old IKE SA goes (charon does)
DELETE_DELAY = 1.0


@dataclass(eq=False)
class Reauth:
    """One reauthentication in progress, held by both IKE SAs (``IkeSa.reauth``)."""

    old: IkeSa
    new: IkeSa | None = None
    pending: set[tuple[str, int]] = field(default_factory=set)  # entries still to move
    more_started: bool = False  # the CREATE_CHILD_SAs for the entries after the first


def start(engine: IkeEngine, old: IkeSa) -> None:
    if old.state != IkeState.ESTABLISHED or old.reauth is not None:
        return
    policies = []
    for child in old.children.values():
        policy = child_setup.policy_of(engine, child.entry)
        if policy is not None and child.state == ChildState.INSTALLED and \
                policy not in policies:
            policies.append(policy)
    first = next((p for p in policies if old.remote.address in p.peers), None)
    if first is None:  # nothing to carry over: no new IKE SA until traffic asks for one
        log.info("%s: reauthentication due, no Child SA to carry over; deleting it", old)
        engine.delete_ike_sa(old, "reauthentication without Child SAs")
        return
    reauth = Reauth(old, pending={p.key for p in policies})
    old.reauth = reauth
    new = engine.initiate(first, first.peers.index(old.remote.address))
    if new is None:
        _failed(engine, reauth, "cannot start a new IKE SA")
        return
    reauth.new, new.reauth = new, reauth
    log.info("%s: reauthenticating as %s", old, new)
    engine.counters["reauths_started"] += 1


def on_child_event(engine: IkeEngine, sa: IkeSa, kind: str, child: ChildSa | None) -> None:
    """A Child SA came up (or failed) under a new IKE SA of a reauthentication."""
    reauth = sa.reauth
    if reauth is None or reauth.new is not sa or child is None or kind not in (
            "up", "failed"):
        return
    if not reauth.more_started:  # IKE_AUTH's Child SA: the new IKE SA is established
        from espd.ike.exchanges import create_child_sa

        reauth.more_started = True
        for policy in engine.settings.children:
            if policy.key in reauth.pending and policy.key != child.entry:
                create_child_sa.start_new_child(engine, sa, policy)
    reauth.pending.discard(child.entry)
    if not reauth.pending:
        _done(engine, reauth)


def replaced(engine: IkeEngine, sa: IkeSa, child: ChildSa) -> ChildSa | None:
    """The installed Child SA a new one of the same entry replaces: one under another
    IKE SA with the same peer (a reauthentication, ours or the peer's), or None."""
    # only the IKE SAs of this peer (an index), not every Child SA of a hub
    for other_sa in engine.ike_sas_of(sa.remote.address):
        if other_sa is sa:
            continue
        for other in other_sa.children.values():
            if other.entry == child.entry and other.state == ChildState.INSTALLED and \
                    other.handle is not None and other.rekeyed_by is None:
                return other
    return None


def on_removed(engine: IkeEngine, sa: IkeSa) -> None:
    """An IKE SA of a reauthentication is gone: a new one that failed leaves the old one
    running (and tried again later); an old one gone first ends the reauthentication."""
    reauth = sa.reauth
    if reauth is None:
        return
    if reauth.new is sa and reauth.old.reauth is reauth:
        _failed(engine, reauth, sa.failure or "the new IKE SA was deleted")
    elif reauth.old is sa and reauth.new is not None:
        reauth.new.reauth = None


def _done(engine: IkeEngine, reauth: Reauth) -> None:
    old, new = reauth.old, reauth.new
    old.reauth = None
    if new is not None:
        new.reauth = None
    engine.counters["reauths"] += 1
    log.info("%s reauthenticated as %s", old, new)
    engine.schedule(old, "reauthenticated", DELETE_DELAY,
                    lambda: engine.delete_ike_sa(old, "reauthenticated"))


def _failed(engine: IkeEngine, reauth: Reauth, why: str) -> None:
    old = reauth.old
    old.reauth = None
    delay = random.uniform(*RETRY_DELAY)
    log.warning("%s: reauthentication failed (%s); the IKE SA runs on, next try in %.0f s",
                old, why, delay)
    engine.counters["reauth_failures"] += 1
    if old.state == IkeState.ESTABLISHED:
        engine.schedule(old, "ike-reauth", delay, lambda: start(engine, old))
