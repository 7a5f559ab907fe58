"""CREATE_CHILD_SA (RFC 7296 1.3): a new Child SA, a Child SA rekey, an IKE SA rekey.

    new child:   HDR, SK{SA, Ni, [KEi,] TSi, TSr}       --> <-- SK{SA, Nr, [KEr,] TSi, TSr}
    child rekey: HDR, SK{N(REKEY_SA), SA, Ni, [KEi,] TSi, TSr}  --> <-- the same answer
    IKE rekey:   HDR, SK{SA, Ni, KEi}                   --> <-- SK{SA, Nr, KEr}

With RFC 9370 additional key exchanges in the chosen proposal, the answer also carries
N(ADDITIONAL_KEY_EXCHANGE) and IKE_FOLLOWUP_KE exchanges follow (exchanges/followup_ke.py);
the new SA is made from all the secrets once they are done.

Make-before-break: a rekeyed Child SA's successor goes to the owner's ``rekey_child``
(new inbound live first, then the outbound switches), and the initiator of the rekey
deletes the old Child SA with an INFORMATIONAL afterwards.

Collisions (2.8.1): when both ends rekey one Child SA at once, both exchanges complete;
the SA made by the exchange holding the lowest of the four nonces is redundant and its
creator deletes it (without ever installing it, so the outbound never points at it); the
winner deletes the old SA. Rekey versus delete: a request to rekey a Child SA that we are
deleting gets TEMPORARY_FAILURE, one for an SA we do not have CHILD_SA_NOT_FOUND. An IKE
SA rekey request while ours is in flight gets TEMPORARY_FAILURE (2.25); the peer retries.
"""

from __future__ import annotations

import logging
import random
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from espd.ike import codec, proposals
from espd.ike.codec import ExchangeType, NotifyType, ProtocolId
from espd.ike.crypto import keymat, suites
from espd.ike.exchanges import child_setup, followup_ke, ike_sa_init
from espd.ike.exchanges.payloads import errors_text, notify, proposals_of, sa_payload
from espd.ike.proposals import ProposalError
from espd.ike.sa.child_sa import ChildSa, ChildState
from espd.ike.sa.collision import Collision, we_lose
from espd.ike.sa.ike_sa import Endpoint, IkeSa, IkeState
from espd.ike.settings import ChildPolicy

if TYPE_CHECKING:
    from espd.ike.engine.engine import IkeEngine

log = logging.getLogger("espd.ike")

NONCE_SIZE = 32
RETRY_DELAY = (1.0, 3.0)  # seconds, after TEMPORARY_FAILURE
OLD_IKE_SA_GRACE = 30.0  # seconds a rekeyed IKE SA waits for the peer's DELETE


@dataclass
class _Pending:
    """Our CREATE_CHILD_SA in flight."""

    policy: ChildPolicy
    child: ChildSa
    nonce_i: bytes
    group: int = 0
    ke_private: object | None = field(default=None, repr=False)
    rekey_of: ChildSa | None = None
    ke_retried: bool = False
    additional: tuple[int, ...] = ()  # RFC 9370 additional key exchanges offered


# --- initiator: new Child SA and Child SA rekey ----------------------------------------


def start_new_child(engine: IkeEngine, sa: IkeSa, policy: ChildPolicy) -> None:
    engine.queue_request(sa, lambda: _send(engine, sa, policy, None, policy.pfs))


def start_rekey(engine: IkeEngine, sa: IkeSa, child: ChildSa) -> None:
    if child.state == ChildState.INSTALLED and sa.state == IkeState.REKEYING:
        # the IKE SA rekey first (the peer would refuse ours meanwhile): ask again under
        # whichever IKE SA then holds the Child SA
        engine.schedule_child_rekey(sa, child, 0, delay=random.uniform(*RETRY_DELAY))
        return
    if child.state != ChildState.INSTALLED or sa.state != IkeState.ESTABLISHED:
        return
    policy = child_setup.policy_of(engine, child.entry)
    if policy is None:
        engine.delete_child(sa, child, notify_peer=True, reason="crypto map entry removed")
        return
    child.state = ChildState.REKEYING
    child.collision = None
    engine.queue_request(sa, lambda: _send(engine, sa, policy, child, policy.pfs))


def _send(engine: IkeEngine, sa: IkeSa, policy: ChildPolicy, rekey_of: ChildSa | None,
          group: int, ke_retried: bool = False) -> None:
    if sa.state != IkeState.ESTABLISHED or (rekey_of is not None
                                            and rekey_of.state != ChildState.REKEYING):
        return
    additional = policy.pfs_additional if group and group == policy.pfs else ()
    child, child_payloads = child_setup.offer(engine, sa, policy, group, additional)
    pending = _Pending(policy, child, secrets.token_bytes(NONCE_SIZE), group,
                       rekey_of=rekey_of, ke_retried=ke_retried, additional=additional)
    payloads: list = [child_setup.rekey_notify(rekey_of)] if rekey_of is not None else []
    payloads += [child_payloads[0], codec.Nonce(pending.nonce_i)]
    if group:
        pending.ke_private = suites.group(group).generate()
        payloads.append(codec.KeyExchange(group, pending.ke_private.public_bytes))
    payloads += child_payloads[1:]
    engine.send_request(sa, ExchangeType.CREATE_CHILD_SA, payloads,
                        lambda engine, sa, message: _on_response(engine, sa, message, pending))


def _on_response(engine: IkeEngine, sa: IkeSa, message: codec.Message,
                 pending: _Pending) -> None:
    old = pending.rekey_of
    what = f"rekey of {old}" if old is not None else \
        f"new Child SA for {pending.policy.map_name} {pending.policy.seq}"
    if _deleted_meanwhile(pending):
        if message.errors or message.first(codec.Nonce) is None:
            log.info("%s: %s: the peer deleted it meanwhile; answer %s, nothing to retry",
                     sa, what, errors_text(message) or "incomplete")
            return
        old = None  # the successor it made anyway stands, as a new Child SA
    if message.notify(NotifyType.TEMPORARY_FAILURE) is not None:
        if old is not None and old.collision is not None:
            _collision_settled_by_peer(engine, sa, old)
            return
        delay = random.uniform(*RETRY_DELAY)
        log.info("%s: %s: peer answered TEMPORARY_FAILURE; retrying in %.1f s", sa, what,
                 delay)
        engine.counters["temporary_failures"] += 1
        if old is not None:
            old.state = ChildState.INSTALLED
            engine.schedule(sa, f"retry-{old.spi_in}", delay,
                            lambda: start_rekey(engine, sa, old))
        else:
            engine.schedule(sa, f"retry-{pending.policy.key}", delay,
                            lambda: start_new_child(engine, sa, pending.policy))
        return
    if message.notify(NotifyType.CHILD_SA_NOT_FOUND) is not None and old is not None:
        log.info("%s: %s: peer no longer has it (CHILD_SA_NOT_FOUND); negotiating a new "
                 "Child SA", sa, what)
        engine.drop_child(sa, old, "peer lost it")
        start_new_child(engine, sa, pending.policy)
        return
    invalid_ke = message.notify(NotifyType.INVALID_KE_PAYLOAD)
    if invalid_ke is not None and not pending.ke_retried and len(invalid_ke.data) >= 2:
        asked = int.from_bytes(invalid_ke.data[:2], "big")
        if suites.group(asked) is not None:
            engine.counters["invalid_ke_honoured"] += 1
            engine.queue_request(sa, lambda: _send(engine, sa, pending.policy, old, asked,
                                                   ke_retried=True))
            return
    nonce = message.first(codec.Nonce)
    try:
        if message.errors:
            raise child_setup.ChildRefused(message.errors[0].type, f"peer refused: "
                                           f"{errors_text(message)}")
        if nonce is None:
            raise child_setup.ChildRefused(NotifyType.INVALID_SYNTAX, "answer has no nonce")
        shared = _pfs_secret(pending, message)
        extra = _additional_chosen(pending, message)
    except child_setup.ChildRefused as err:
        _child_failed(engine, sa, pending, what, str(err))
        return
    if shared is not None:
        pending.child.key_exchanges = followup_ke.names(suites.group(pending.group), extra)
    if extra:
        followup_ke.run(
            engine, sa, extra, message,
            lambda found: _complete(engine, sa, message, pending, nonce, shared, found),
            lambda why: _child_failed(engine, sa, pending, what, why))
        return
    _complete(engine, sa, message, pending, nonce, shared, [])


def _deleted_meanwhile(pending: _Pending) -> bool:
    """The Child SA being rekeyed was dropped while the rekey was in flight (the peer's
    DELETE crossed our request): from now on the exchange is a new Child SA's, so the
    dropped one is never marked, retried or deleted again (it stays DELETED)."""
    old = pending.rekey_of
    if old is None or old.state != ChildState.DELETED:
        return False
    pending.rekey_of = None
    return True


def _child_failed(engine: IkeEngine, sa: IkeSa, pending: _Pending, what: str,
                  why: str) -> None:
    engine.counters["child_failures"] += 1
    log.warning("%s: %s failed: %s", sa, what, why)
    engine.emit("failed", sa, pending.child, why)
    old = pending.rekey_of
    if old is not None and old.state == ChildState.REKEYING:
        old.state = ChildState.INSTALLED  # it runs on to its hard limit


def _additional_chosen(pending: _Pending, message: codec.Message) -> list:
    """The RFC 9370 additional key exchanges the answer chose (run by IKE_FOLLOWUP_KE)."""
    if not pending.additional:
        return []
    answer = message.first(codec.SecurityAssociation)
    if answer is None:
        raise child_setup.ChildRefused(NotifyType.INVALID_SYNTAX, "answer has no SA payload")
    chosen = child_setup.chosen_answer(pending.policy, pending.child, answer, pending.group,
                                       pending.additional)
    return [suites.group(ident) for ident in proposals.additional_groups(chosen)]


def _complete(engine: IkeEngine, sa: IkeSa, message: codec.Message, pending: _Pending,
              nonce: codec.Nonce, shared, found: list) -> None:
    """The CREATE_CHILD_SA answer (and its IKE_FOLLOWUP_KE secrets) is in: settle a
    collision, check the answer and install."""
    _deleted_meanwhile(pending)
    old = pending.rekey_of
    what = f"rekey of {old}" if old is not None else \
        f"new Child SA for {pending.policy.map_name} {pending.policy.seq}"
    try:
        if old is not None and old.collision is not None and we_lose(
                pending.nonce_i, nonce.data, old.collision):
            _lost_collision(engine, sa, pending, old)
            return
        child_setup.accept(engine, sa, pending.child, message, pending.nonce_i, nonce.data,
                           ke_group=pending.group, shared=shared, rekey_of=old,
                           additional=pending.additional, secrets=tuple(found))
    except child_setup.ChildRefused as err:
        followup_ke.wipe(found)
        _child_failed(engine, sa, pending, what, str(err))
        return
    if old is not None:
        engine.counters["child_rekeys"] += 1
        old.state, old.rekeyed_by = ChildState.REKEYED, pending.child
        engine.delete_child(sa, old, notify_peer=True, reason="rekeyed")


def _pfs_secret(pending: _Pending, message: codec.Message) -> bytearray | None:
    if not pending.group:
        return None
    ke = message.first(codec.KeyExchange)
    if ke is None or ke.group != pending.group:
        raise child_setup.ChildRefused(NotifyType.INVALID_SYNTAX,
                                       f"answer lacks the PFS KE of group {pending.group}")
    try:
        return pending.ke_private.shared_secret(ke.data)
    except ValueError as err:
        raise child_setup.ChildRefused(NotifyType.INVALID_SYNTAX,
                                       f"bad KE payload: {err}") from None


def _lost_collision(engine: IkeEngine, sa: IkeSa, pending: _Pending, old: ChildSa) -> None:
    """Our new SA is redundant: never installed; tell the peer to drop its half. The peer
    won, so it deletes the old SA; its successor is ours already."""
    engine.counters["rekey_collisions_lost"] += 1
    log.info("%s: rekey collision on %s lost (nonce rule); keeping the peer's successor",
             sa, old)
    _collision_settled_by_peer(engine, sa, old)
    spi = pending.child.spi_in.to_bytes(4, "big")
    engine.queue_request(sa, lambda: engine.send_request(
        sa, ExchangeType.INFORMATIONAL, [codec.Delete(ProtocolId.ESP, (spi,))],
        lambda *_: None))


def _collision_settled_by_peer(engine: IkeEngine, sa: IkeSa, old: ChildSa) -> None:
    """The peer's successor stands; the peer deletes the old SA."""
    old.state = ChildState.REKEYED
    old.rekeyed_by = old.collision.successor if old.collision else None


# --- responder ------------------------------------------------------------------------


def on_request(engine: IkeEngine, sa: IkeSa, message: codec.Message, local: Endpoint,
               remote: Endpoint) -> None:
    offer = message.first(codec.SecurityAssociation)
    nonce = message.first(codec.Nonce)
    if offer is None or nonce is None:
        engine.respond(sa, message, [notify(NotifyType.INVALID_SYNTAX)], local, remote)
        return
    if offer.proposals and offer.proposals[0].protocol == ProtocolId.IKE:
        _on_ike_rekey_request(engine, sa, message, nonce.data, local, remote)
        return
    if sa.state != IkeState.ESTABLISHED:
        engine.respond(sa, message, [notify(NotifyType.TEMPORARY_FAILURE)], local, remote)
        return
    rekey = message.notify(NotifyType.REKEY_SA)
    old = None
    if rekey is not None:
        spi = int.from_bytes(rekey.spi, "big") if len(rekey.spi) == 4 else -1
        old = next((c for c in sa.children.values() if c.spi_out == spi), None)
        if old is None:
            engine.counters["child_sa_not_found"] += 1
            engine.rate_log.warning("childnotfound", "%s: peer asked to rekey a Child SA "
                                    "we do not have (CHILD_SA_NOT_FOUND)", sa)
            engine.respond(sa, message, [notify(NotifyType.CHILD_SA_NOT_FOUND, b"",
                                                ProtocolId.ESP, rekey.spi)], local, remote)
            return
        if old.state in (ChildState.DELETING, ChildState.DELETED, ChildState.REKEYED):
            engine.respond(sa, message, [notify(NotifyType.TEMPORARY_FAILURE)], local, remote)
            return
    elif _live_children(sa) >= engine.settings.limits.child_sas_per_ike_sa:
        engine.counters["child_sas_refused"] += 1
        engine.rate_log.warning("childcap", "%s: peer's CREATE_CHILD_SA refused: the IKE SA "
                                "holds %d Child SAs already (NO_ADDITIONAL_SAS; [ike.limits] "
                                "child_sas_per_ike_sa)", sa, _live_children(sa))
        engine.respond(sa, message, [notify(NotifyType.NO_ADDITIONAL_SAS)], local, remote)
        return
    nonce_r = secrets.token_bytes(NONCE_SIZE)
    try:
        payloads, child = child_setup.answer(engine, sa, message, nonce.data, nonce_r,
                                             in_ike_auth=False, rekey_of=old)
    except child_setup.ChildRefused as err:
        engine.counters["child_failures"] += 1
        engine.rate_log.warning("childrefused", "%s: peer's CREATE_CHILD_SA refused: %s",
                                sa, err)
        engine.respond(sa, message, [notify(err.notify, err.data)], local, remote)
        return
    payloads.insert(1, codec.Nonce(nonce_r))

    def made() -> None:
        if old is not None:
            if old.state == ChildState.REKEYING:  # both ends rekey it: settle at our answer
                old.collision = Collision(nonce.data, nonce_r, child)
                engine.counters["rekey_collisions"] += 1
            else:
                old.state, old.rekeyed_by = ChildState.REKEYED, child
            engine.counters["child_rekeys"] += 1

    if child.deferred is not None:  # RFC 9370: IKE_FOLLOWUP_KE exchanges come first
        methods, install, discard = child.deferred
        child.deferred = None

        def finish(found: list) -> list:
            if old is not None and old.state in (ChildState.DELETING, ChildState.DELETED):
                return [notify(NotifyType.TEMPORARY_FAILURE)]
            try:
                install(found)
            except child_setup.ChildRefused as err:
                return [notify(err.notify, err.data)]
            made()
            return []

        def abort(why: str) -> None:
            discard()
            engine.counters["child_failures"] += 1
            log.warning("%s: peer's CREATE_CHILD_SA abandoned: %s", sa, why)

        payloads.insert(2, followup_ke.expect(engine, sa, methods, finish, abort))
    else:
        made()
    engine.respond(sa, message, payloads, local, remote)


def _live_children(sa: IkeSa) -> int:
    """Child SAs that count against the cap: not on their way out after a rekey/delete."""
    return sum(c.state in (ChildState.CREATING, ChildState.INSTALLED, ChildState.REKEYING)
               for c in sa.children.values())


# --- IKE SA rekey (RFC 7296 1.3.2, 2.18) ----------------------------------------------


def start_ike_rekey(engine: IkeEngine, sa: IkeSa) -> None:
    if sa.state != IkeState.ESTABLISHED or sa.reauth is not None:
        return  # a reauthentication replaces it (or is making it) anyway
    sa.state = IkeState.REKEYING
    spi = engine.new_ike_spi()
    nonce_i = secrets.token_bytes(NONCE_SIZE)
    group = proposals.ke_group(sa.proposal)
    private = suites.group(group).generate()
    offer = _ike_offer_first(engine, sa, spi)

    def send() -> None:
        engine.send_request(sa, ExchangeType.CREATE_CHILD_SA, [
            sa_payload(offer), codec.Nonce(nonce_i),
            codec.KeyExchange(group, private.public_bytes)],
            lambda engine, sa, message: _on_ike_rekey_response(
                engine, sa, message, spi, nonce_i, private, offer))

    engine.queue_request(sa, send)


def _ike_offer_first(engine: IkeEngine, sa: IkeSa, spi: bytes) -> tuple:
    """Our IKE proposals with the current suite first (same PRF and group: RFC 7296 2.18
    keys SKEYSEED with the old PRF; the KE we send is for the current group)."""
    current = proposals.Proposal(1, proposals.PROTO_IKE, spi, sa.proposal.transforms)
    return (current,)


def _on_ike_rekey_response(engine: IkeEngine, sa: IkeSa, message: codec.Message,
                           spi: bytes, nonce_i: bytes, private, offer) -> None:
    if sa.state != IkeState.REKEYING:
        return
    sa.state = IkeState.ESTABLISHED
    answer, nonce, ke = (message.first(codec.SecurityAssociation), message.first(codec.Nonce),
                         message.first(codec.KeyExchange))
    if message.errors or answer is None or nonce is None or ke is None:
        if sa.collision is not None:  # the peer did not see the collision: its rekey stands
            log.info("%s: IKE SA rekey collision unseen by the peer (it answered %s): %s "
                     "stands", sa, errors_text(message) or "incompletely",
                     sa.collision.successor)
            _ike_collision_settled_by_peer(engine, sa)
            return
        delay = random.uniform(*RETRY_DELAY)
        log.info("%s: IKE SA rekey refused (%s); retrying in %.1f s", sa,
                 errors_text(message) or "incomplete answer", delay)
        engine.schedule(sa, "ike-rekey", delay, lambda: start_ike_rekey(engine, sa))
        return
    try:
        chosen = proposals.check_chosen(offer, proposals_of(answer))
        suite = ike_sa_init.suite_of(chosen)
        if not _fresh_ike_spi(sa, chosen.spi) or ke.group != suite.group.ident:
            raise ProposalError("peer's IKE SA rekey answer has a bad SPI or KE group")
        shared = private.shared_secret(ke.data)
    except (ProposalError, ValueError) as err:
        log.warning("%s: IKE SA rekey failed: %s", sa, err)
        if sa.collision is not None:
            _ike_collision_settled_by_peer(engine, sa)
        return

    def done(found: list) -> None:
        sa.state = IkeState.ESTABLISHED
        new = _new_ike_sa(engine, sa, spi, chosen.spi, True, chosen, nonce_i, nonce.data,
                          suite, shared, found)
        collision, sa.collision = sa.collision, None
        theirs = collision.successor if collision is not None else None
        if theirs is not None and theirs.state != IkeState.DELETED:
            if we_lose(nonce_i, nonce.data, collision):
                engine.counters["ike_rekey_collisions_lost"] += 1
                log.info("%s: IKE SA rekey collision lost (nonce rule): %s is redundant, "
                         "%s stands", sa, new, theirs)
                engine.delete_ike_sa(new, "redundant: IKE SA rekey collision lost")
                sa.collision = collision
                _ike_collision_settled_by_peer(engine, sa)
                return
            log.info("%s: IKE SA rekey collision won (nonce rule): %s stands, the peer "
                     "deletes its redundant %s", sa, new, theirs)
            engine.schedule(theirs, "redundant", OLD_IKE_SA_GRACE,  # unless it never does
                            lambda: engine.remove_ike_sa(theirs))
        _hand_over(engine, sa, new)
        engine.delete_ike_sa(sa, "rekeyed")

    def failed(why: str) -> None:
        sa.state = IkeState.ESTABLISHED
        shared[:] = bytes(len(shared))
        log.warning("%s: IKE SA rekey failed: %s; the IKE SA runs on", sa, why)
        if sa.collision is not None:
            _ike_collision_settled_by_peer(engine, sa)

    if suite.additional:  # RFC 9370 2.2.4: IKE_FOLLOWUP_KE exchanges, then the new SA
        sa.state = IkeState.REKEYING
        followup_ke.run(engine, sa, list(suite.additional), message, done, failed)
        return
    done([])


def _on_ike_rekey_request(engine: IkeEngine, sa: IkeSa, message: codec.Message,
                          nonce_i: bytes, local: Endpoint, remote: Endpoint) -> None:
    # our own IKE SA rekey in flight: answer as usual and settle by the nonce rule when
    # our answer comes (2.8.2); one collision at a time
    colliding = sa.state == IkeState.REKEYING and sa.collision is None
    if (sa.state != IkeState.ESTABLISHED and not colliding) or sa.reauth is not None or any(
            c.state == ChildState.REKEYING for c in sa.children.values()):
        engine.respond(sa, message, [notify(NotifyType.TEMPORARY_FAILURE)], local, remote)
        return
    offer, ke = message.first(codec.SecurityAssociation), message.first(codec.KeyExchange)
    try:
        chosen = proposals.choose(proposals_of(offer),
                                  proposals.ike_offer(engine.settings.proposals))
        suite = ike_sa_init.suite_of(chosen)
    except ProposalError as err:
        log.warning("%s: peer's IKE SA rekey: NO_PROPOSAL_CHOSEN: %s", sa, err)
        engine.respond(sa, message, [notify(NotifyType.NO_PROPOSAL_CHOSEN)], local, remote)
        return
    if ke is None or ke.group != suite.group.ident:
        engine.respond(sa, message, [notify(NotifyType.INVALID_KE_PAYLOAD,
                                            suite.group.ident.to_bytes(2, "big"))],
                       local, remote)
        return
    if not _fresh_ike_spi(sa, chosen.spi):
        engine.counters["ike_rekey_refused"] += 1
        engine.rate_log.warning("ikerekeyrefused", "%s: peer's IKE SA rekey refused: its "
                                "new SPI is malformed, zero or the current one", sa)
        engine.respond(sa, message, [notify(NotifyType.INVALID_SYNTAX)], local, remote)
        return
    if colliding and suite.additional:  # RFC 9370 collisions are not settled: 2.25 instead
        engine.respond(sa, message, [notify(NotifyType.TEMPORARY_FAILURE)], local, remote)
        return
    try:
        public, shared = suite.group.respond(ke.data)
    except ValueError as err:
        engine.counters["ike_rekey_refused"] += 1
        engine.rate_log.warning("ikerekeyrefused", "%s: peer's IKE SA rekey refused: bad "
                                "KE payload: %s", sa, err)
        engine.respond(sa, message, [notify(NotifyType.INVALID_SYNTAX)], local, remote)
        return
    spi, nonce_r = engine.new_ike_spi(), secrets.token_bytes(NONCE_SIZE)
    reply = proposals.Proposal(chosen.number, chosen.protocol, spi, chosen.transforms)

    def finish(found: list) -> list:
        if sa.state != IkeState.ESTABLISHED and not (colliding and sa.state ==
                                                     IkeState.REKEYING):
            shared[:] = bytes(len(shared))
            return [notify(NotifyType.TEMPORARY_FAILURE)]
        new = _new_ike_sa(engine, sa, chosen.spi, spi, False, chosen, nonce_i, nonce_r,
                          suite, shared, found)
        if sa.state == IkeState.REKEYING:  # the Child SAs stay until our answer decides
            sa.collision = Collision(nonce_i, nonce_r, new)
            engine.counters["ike_rekey_collisions"] += 1
            log.info("%s: IKE SA rekey collision: the peer's rekey made %s while ours is "
                     "in flight", sa, new)
            return []
        _hand_over(engine, sa, new)
        _await_peer_delete(engine, sa)
        return []

    def abort(why: str) -> None:
        shared[:] = bytes(len(shared))
        log.warning("%s: peer's IKE SA rekey abandoned: %s", sa, why)

    payloads: list = [sa_payload([reply]), codec.Nonce(nonce_r)]
    if suite.additional:  # RFC 9370 2.2.4: the new SA once IKE_FOLLOWUP_KE is done
        payloads.append(followup_ke.expect(engine, sa, list(suite.additional), finish,
                                            abort))
    payloads.append(codec.KeyExchange(suite.group.ident, public))
    if not suite.additional:
        finish([])
    engine.respond(sa, message, payloads, local, remote)


def _fresh_ike_spi(sa: IkeSa, spi: bytes) -> bool:
    """The peer's SPI for the new IKE SA: 8 bytes, not zero (RFC 7296 3.1) and not one of
    the current IKE SA's (a rekey makes a new SA; reusing the SPIs would make both SAs'
    messages look alike in logs, captures and the peer's lookup)."""
    return len(spi) == 8 and spi != bytes(8) and spi not in sa.spis


def _new_ike_sa(engine: IkeEngine, old: IkeSa, spi_i: bytes, spi_r: bytes, initiator: bool,
                chosen, nonce_i: bytes, nonce_r: bytes, suite, shared: bytearray,
                additional: list = ()) -> IkeSa:
    """The rekeyed IKE SA: SKEYSEED = prf_old(SK_d_old, g^ir | Ni | Nr [| SK(1)..SK(n)])
    (RFC 9370 2.2.4: the secrets of the IKE_FOLLOWUP_KE exchanges, in order)."""
    new = IkeSa(spi_i, spi_r, initiator, old.local, old.remote, IkeState.ESTABLISHED,
                ident=engine.new_ident(), proposal=chosen, nonce_i=nonce_i, nonce_r=nonce_r)
    new.key_exchanges = followup_ke.names(suite.group, suite.additional)
    new.ppk_used, new.ppk_id = old.ppk_used, old.ppk_id  # keyed from SK_d' (RFC 8784 3)
    try:
        skeyseed = keymat.rekey_skeyseed(old.prf, old.keys.sk_d, shared, nonce_i, nonce_r,
                                         additional)
    finally:
        followup_ke.wipe(list(additional))
    try:
        new.keys = keymat.ike_keys(suite.prf, skeyseed, nonce_i, nonce_r, spi_i, spi_r,
                                   keymat.IkeLengths.of(suite.prf, suite.encr, suite.integ))
    finally:
        skeyseed.wipe()
        shared[:] = bytes(len(shared))
    ike_sa_init.install_keys(engine, new, suite)
    new.setup_done()  # never authenticates: SK_p and the nonces have no use
    new.peer, new.policy, new.peer_id = old.peer, old.policy, old.peer_id
    new.peer_certificate = old.peer_certificate  # a rekey does not authenticate again
    new.nat_local, new.nat_remote = old.nat_local, old.nat_remote
    new.fragmentation = old.fragmentation  # RFC 7383 2.3: a rekeyed IKE SA keeps it
    new.created = new.established = new.last_heard = engine.now()
    engine.register(new)
    engine.schedule_ike_timers(new)
    return new


def _hand_over(engine: IkeEngine, old: IkeSa, new: IkeSa) -> None:
    """The Child SAs move to the new IKE SA (RFC 7296 2.18): the rekey is done."""
    for spi, child in list(old.children.items()):
        new.children[spi] = child
        engine.index_child(new, child)
    old.children.clear()
    engine.touch(new)
    old.rekeyed_by = new
    engine.counters["ike_rekeys"] += 1
    log.info("%s rekeyed as %s", old, new)


def _await_peer_delete(engine: IkeEngine, old: IkeSa) -> None:
    """The peer initiated the rekey that stands: it deletes the old IKE SA, or we drop it
    ourselves after a grace period."""
    old.state = IkeState.DELETING
    old.queue = None
    engine.schedule(old, "rekeyed", OLD_IKE_SA_GRACE, lambda: engine.remove_ike_sa(old))


def _ike_collision_settled_by_peer(engine: IkeEngine, sa: IkeSa) -> None:
    """The peer's new IKE SA stands (it won, or it never saw the collision): the Child SAs
    go there and the peer deletes the old IKE SA."""
    collision, sa.collision = sa.collision, None
    theirs = collision.successor
    if theirs.state == IkeState.DELETED:  # gone already: the old IKE SA runs on
        sa.state = IkeState.ESTABLISHED
        return
    _hand_over(engine, sa, theirs)
    _await_peer_delete(engine, sa)


def collision_on_removal(engine: IkeEngine, sa: IkeSa) -> None:
    """An IKE SA removed while a rekey collision on it was undecided (the peer deleted it:
    it never saw the collision, or decided first): the peer's new IKE SA takes the Child
    SAs instead of their being deleted with the old one."""
    collision, sa.collision = sa.collision, None
    theirs = collision.successor if collision is not None else None
    if theirs is not None and theirs.state != IkeState.DELETED:
        log.info("%s: IKE SA rekey collision unseen by the peer (it deleted this IKE SA "
                 "first): %s stands", sa, theirs)
        _hand_over(engine, sa, theirs)
