"""IKE_AUTH (RFC 7296 1.2, 2.15): identities, AUTH, and the first Child SA.

    initiator                                      responder
    HDR, SK{IDi, [IDr,] AUTH, [N(USE_TRANSPORT_MODE),] SAi2, TSi, TSr}  -->
                                     <--  HDR, SK{IDr, AUTH, [N(..),] SAr2, TSi, TSr}
                                     <--  or HDR, SK{N(AUTHENTICATION_FAILED)}
                                     <--  or HDR, SK{IDr, AUTH, N(NO_PROPOSAL_CHOSEN |
                                              TS_UNACCEPTABLE)}: the IKE SA stands, the
                                              Child SA does not

Each side's AUTH covers its own IKE_SA_INIT message as sent, the other's nonce and
prf(SK_p, its ID payload body). A failure is one log line naming the peer and what did
not match (identities, method, or the key), never the key.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from espd.ike import codec
from espd.ike.auth import AuthenticationFailed, signed_octets
from espd.ike.codec import ExchangeType, NotifyType
from espd.ike.exchanges import child_setup, ike_intermediate, ppk
from espd.ike.exchanges.payloads import (
    address_identity,
    identity_of,
    identity_payload,
    notify,
    same_identity,
)
from espd.ike.sa.ike_sa import Endpoint, IkeSa, IkeState
from espd.ike.settings import ChildPolicy, Peer

if TYPE_CHECKING:
    from espd.ike.engine.engine import IkeEngine

log = logging.getLogger("espd.ike")


def _local_identity(sa: IkeSa, peer: Peer | None):
    return peer.local_id if peer is not None and peer.local_id else address_identity(sa.local)


def _octets(sa: IkeSa, *, initiator_side: bool, id_body: bytes, message_id: int,
            keys=None):
    """The signed octets of one side (RFC 7296 2.15): its IKE_SA_INIT message, the other
    side's nonce, prf(SK_p of that side, its ID body) [, IntAuth (RFC 9242 3.3.2) after
    IKE_INTERMEDIATE exchanges; ``message_id`` is IKE_AUTH's]. ``keys``: the SK_p to use
    when not the SA's (RFC 8784: the PPK-mixed ones)."""
    trailer = ike_intermediate.trailer(sa, message_id)
    keys = keys if keys is not None else sa.keys
    if initiator_side:
        return signed_octets(sa.prf, sa.init_request, sa.nonce_r, keys.sk_pi, id_body,
                             trailer)
    return signed_octets(sa.prf, sa.init_response, sa.nonce_i, keys.sk_pr, id_body,
                         trailer)


def _established(engine: IkeEngine, sa: IkeSa, peer_id) -> None:
    sa.state = IkeState.ESTABLISHED
    sa.established = sa.last_heard = engine.now()
    peer = sa.peer
    # the configured identity object when it is the one, not a copy per SA
    sa.peer_id = peer.remote_id if peer is not None and getattr(peer, "remote_id", None) \
        == peer_id else peer_id
    sa.cancel_timer("half-open")
    engine.forget_half_open(sa)
    suite = getattr(sa.suite, "name", "?")
    used = f", PPK {ppk.describe(sa.ppk_id)}" if sa.ppk_used else ""
    log.info("%s established (%s%s, peer id %s, local %s%s)", sa, suite, used, peer_id,
             sa.local, ", NAT detected" if sa.nat else "")
    engine.counters["ike_sas_established"] += 1
    if sa.ppk_used:
        engine.counters["ppk_used"] += 1
    elif ppk.configured(peer) is not None:
        engine.counters["ppk_not_used"] += 1
    engine.schedule_ike_timers(sa)


# --- initiator ------------------------------------------------------------------------


def start(engine: IkeEngine, sa: IkeSa) -> None:
    peer: Peer = sa.peer  # type: ignore[assignment]
    policy: ChildPolicy = sa.policy  # type: ignore[assignment]
    idi = identity_payload(codec.IdInitiator, _local_identity(sa, peer))
    octets = _octets(sa, initiator_side=True, id_body=idi.encode_body(),
                     message_id=sa.requests.next_id)
    authenticator = engine.authenticator(peer)
    method, data = authenticator.build(octets)
    ppk_notifies: list = []
    if sa.ppk_negotiated and peer.ppk is not None:
        # RFC 8784 3: AUTH over SK_pi'; the unmixed AUTH only where a PPK is optional
        sa.ppk_pending = ppk.mixed(sa, engine.ppk_key(peer))
        ppk_notifies.append(ppk.identity_notify(peer.ppk))
        if not peer.ppk.required:
            ppk_notifies.append(notify(NotifyType.NO_PPK_AUTH, data))
        method, data = authenticator.build(_octets(
            sa, initiator_side=True, id_body=idi.encode_body(),
            message_id=sa.requests.next_id, keys=sa.ppk_pending))
    payloads: list = [idi, *_certificates(authenticator), *ppk_notifies]
    if hasattr(authenticator, "cert_request"):  # strongSwan sends its certificate if asked
        payloads.append(authenticator.cert_request())
    # IDr (optional) names whom we want; a DN we may hold in either spelling (auth/names.py)
    # would be sent in one of them, so a DN is only checked when the responder sends it
    if peer.remote_id is not None and peer.remote_id.kind != "dn":
        payloads.append(identity_payload(codec.IdResponder, peer.remote_id))
    payloads.append(codec.Authentication(method, data))
    child, child_payloads = child_setup.offer(engine, sa, policy)
    sa.first_child = child
    payloads += child_payloads
    sa.state = IkeState.AUTH_SENT
    engine.send_request(sa, ExchangeType.IKE_AUTH, payloads, on_response)


def on_response(engine: IkeEngine, sa: IkeSa, message: codec.Message) -> None:
    peer: Peer = sa.peer  # type: ignore[assignment]
    if message.notify(NotifyType.AUTHENTICATION_FAILED) is not None:
        engine.counters["auth_failures"] += 1
        engine.ike_failed(sa, f"peer {sa.remote.address} refused our authentication "
                              f"(AUTHENTICATION_FAILED): check that both sides have the same "
                              f"pre-shared key (or trust each other's CA) and the identities "
                              f"each expects")
        return
    idr, auth = message.first(codec.IdResponder), message.first(codec.Authentication)
    if idr is None or auth is None:
        engine.ike_failed(sa, "IKE_AUTH response without IDr or AUTH: "
                              f"{_errors(message) or 'malformed'}")
        return
    peer_id = identity_of(idr)
    problem = _check_identity(peer, peer_id) or _initiator_ppk(engine, sa, peer, message)
    if problem is None:
        octets = _octets(sa, initiator_side=False, id_body=idr.encode_body(),
                         message_id=message.header.message_id)
        problem = _verify(engine, sa, peer, octets, auth, message, peer_id)
    if problem is not None:
        engine.counters["auth_failures"] += 1
        _tell_auth_failed(engine, sa)
        engine.ike_failed(sa, f"peer {sa.remote.address} failed authentication "
                              f"(AUTHENTICATION_FAILED): {problem}")
        return
    _established(engine, sa, peer_id)
    child, sa.first_child = sa.first_child, None
    try:
        child_setup.accept(engine, sa, child, message, sa.nonce_i, sa.nonce_r)
    except child_setup.ChildRefused as err:
        engine.counters["child_failures"] += 1
        log.warning("%s: first Child SA for %s %d failed: %s; the IKE SA stays up", sa,
                    child.entry[0], child.entry[1], err)
        engine.emit("failed", sa, child, str(err))
    sa.setup_done()


def _initiator_ppk(engine: IkeEngine, sa: IkeSa, peer: Peer, message: codec.Message):
    """RFC 8784 3: the responder's PPK_IDENTITY says it used the PPK: the mixed keys
    become the SA's (it signed with SK_pr', Child SAs key from SK_d'); without it the
    unmixed keys stay, unless ours is required. What is wrong, or None."""
    pending, sa.ppk_pending = sa.ppk_pending, None
    if pending is None:
        return None
    if message.notify(NotifyType.PPK_IDENTITY) is not None:
        ppk.adopt(sa, pending, peer.ppk.ident)  # type: ignore[union-attr]
        return None
    pending.wipe()  # type: ignore[attr-defined]
    if peer.ppk is not None and peer.ppk.required:
        engine.counters["ppk_refused"] += 1
        return (f"PPK {ppk.describe(peer.ppk.ident)} is required (ppk_required), but the "
                f"responder did not use it (no PPK_IDENTITY in its IKE_AUTH)")
    log.warning("%s: peer %s did not use PPK %s (it has no PPK of that id): authenticated "
                "with NO_PPK_AUTH, without post-quantum protection", sa, sa.remote.address,
                ppk.describe(peer.ppk.ident))  # type: ignore[union-attr]
    return None


def _responder_ppk(engine: IkeEngine, sa: IkeSa, peer: Peer, message: codec.Message, auth):
    """RFC 8784 3, the responder's choice: (the AUTH to verify, the keys to verify it
    with, a problem). With the PPK_ID the initiator names, AUTH over SK_pi' is checked
    (a wrong PPK fails, no fallback); without it NO_PPK_AUTH stands in, unless this side
    requires a PPK."""
    wanted = ppk.configured(peer)
    if wanted is None:
        return auth, None, None  # we answered no USE_PPK: plain RFC 7296
    if not sa.ppk_negotiated:
        if wanted.required:
            engine.counters["ppk_refused"] += 1
            return auth, None, (f"PPK {ppk.describe(wanted.ident)} is required "
                                f"(ppk_required), but the initiator sent no USE_PPK")
        return auth, None, None
    ident = ppk.parse_identity(message)
    if ident is not None and ident == wanted.ident:
        return auth, ppk.mixed(sa, engine.ppk_key(peer)), None
    named = "no PPK_IDENTITY" if ident is None else f"PPK_ID {ppk.describe(ident)}"
    if wanted.required:
        engine.counters["ppk_refused"] += 1
        return auth, None, (f"PPK {ppk.describe(wanted.ident)} is required (ppk_required), "
                            f"but the initiator sent {named}")
    fallback = message.notify(NotifyType.NO_PPK_AUTH)
    if fallback is None:
        return auth, None, (f"the initiator sent {named}, which is not our PPK "
                            f"{ppk.describe(wanted.ident)}, and no NO_PPK_AUTH")
    log.warning("%s: initiator %s sent %s, not our PPK %s: authenticating with "
                "NO_PPK_AUTH, without post-quantum protection", sa, sa.remote.address,
                named, ppk.describe(wanted.ident))
    return codec.Authentication(auth.method, fallback.data), None, None


def _tell_auth_failed(engine: IkeEngine, sa: IkeSa) -> None:
    """RFC 7296 2.21.2: an INFORMATIONAL with AUTHENTICATION_FAILED, not waited for."""
    try:
        engine.send_request(sa, ExchangeType.INFORMATIONAL,
                            [notify(NotifyType.AUTHENTICATION_FAILED)], lambda *_: None)
    except RuntimeError:
        pass


def _notify_name(kind: int) -> str:
    try:
        return NotifyType(kind).name
    except ValueError:
        return str(kind)


def _errors(message: codec.Message) -> str:
    from espd.ike.exchanges.payloads import errors_text

    return errors_text(message)


def _certificates(authenticator) -> list:
    """Our CERT payloads (end certificate first), for certificate authentication."""
    return authenticator.cert_payloads() if hasattr(authenticator, "cert_payloads") else []


def _verify(engine: IkeEngine, sa: IkeSa, peer: Peer, octets, auth, message: codec.Message,
            peer_id) -> str | None:
    """The peer's AUTH (and, with certificates, its CERT payloads and identity); what did
    not hold, or None. A verified certificate is kept on the SA (public: for show)."""
    authenticator = engine.authenticator(peer)
    try:
        if hasattr(authenticator, "cert_payloads"):
            sa.peer_certificate = authenticator.verify(
                octets, auth.method, auth.data, certificates=message.all(codec.Certificate),
                peer_id=peer_id)
        else:
            authenticator.verify(octets, auth.method, auth.data)
    except AuthenticationFailed as err:
        return str(err)
    return None


def _check_identity(peer: Peer | None, peer_id) -> str | None:
    if peer is None:
        return "no IKE peer is configured for this address"
    if peer.remote_id is not None:
        if peer_id is None or not same_identity(peer.remote_id, peer_id):
            return f"peer identifies as {peer_id}, but {peer.remote_id} is expected"
    return None


# --- responder ------------------------------------------------------------------------


def on_request(engine: IkeEngine, sa: IkeSa, message: codec.Message, local: Endpoint,
               remote: Endpoint) -> None:
    idi, auth = message.first(codec.IdInitiator), message.first(codec.Authentication)
    if idi is None or auth is None:
        engine.respond(sa, message, [notify(NotifyType.INVALID_SYNTAX)], local, remote)
        engine.ike_failed(sa, "IKE_AUTH request without IDi or AUTH")
        return
    # RFC 7296 2.23: after NAT detection the peer floats; answer where it now is
    before, sa.local, sa.remote = sa.remote.address, local, remote
    engine.peer_address_changed(sa, before)
    peer = sa.peer if sa.peer is not None else engine.settings.peer(remote.address)
    peer_id = identity_of(idi)
    problem = _check_identity(peer, peer_id)
    mixed = None
    if problem is None:
        auth, mixed, problem = _responder_ppk(engine, sa, peer, message, auth)
    if problem is None:
        octets = _octets(sa, initiator_side=True, id_body=idi.encode_body(),
                         message_id=message.header.message_id, keys=mixed)
        problem = _verify(engine, sa, peer, octets, auth, message, peer_id)
        if problem is not None and mixed is not None:
            problem += (f" (with PPK {ppk.describe(peer.ppk.ident)}: "  # type: ignore
                        f"do both sides have the same PPK?)")
    if problem is not None and mixed is not None:
        mixed.wipe()
        mixed = None
    if problem is None and mixed is not None:
        ppk.adopt(sa, mixed, peer.ppk.ident)  # type: ignore[union-attr]
    if problem is not None:
        engine.counters["auth_failures"] += 1
        engine.respond(sa, message, [notify(NotifyType.AUTHENTICATION_FAILED)], local, remote)
        engine.ike_failed(sa, f"peer {remote.address} (id {peer_id}) failed authentication "
                              f"(AUTHENTICATION_FAILED): {problem}")
        return
    sa.peer = peer
    idr = identity_payload(codec.IdResponder, _local_identity(sa, peer))
    octets = _octets(sa, initiator_side=False, id_body=idr.encode_body(),
                     message_id=message.header.message_id)
    authenticator = engine.authenticator(peer)
    method, data = authenticator.build(octets)
    payloads: list = [idr, *_certificates(authenticator), codec.Authentication(method, data)]
    if sa.ppk_used:  # RFC 8784 3: tells the initiator the PPK was used (no data)
        payloads.append(notify(NotifyType.PPK_IDENTITY))
    _established(engine, sa, peer_id)
    try:
        child_payloads, _child = child_setup.answer(engine, sa, message, sa.nonce_i,
                                                    sa.nonce_r, in_ike_auth=True)
        payloads += child_payloads
    except child_setup.ChildRefused as err:
        engine.counters["child_failures"] += 1
        log.warning("%s: first Child SA refused (%s): %s; the IKE SA stays up", sa,
                    _notify_name(err.notify), err)
        payloads.append(notify(err.notify, err.data))
    engine.respond(sa, message, payloads, local, remote)
    sa.setup_done()
