"""What IKE_AUTH and CREATE_CHILD_SA share: a Child SA's proposals, traffic selectors,
mode, keys (RFC 7296 2.17) and its installation through the SA owner.

Initiator: ``offer`` builds SA/TSi/TSr (+USE_TRANSPORT_MODE) for a crypto map entry;
``accept`` checks the answer (one of our proposals, selectors no wider than ours) and
installs. Responder: ``answer`` picks the crypto map entry whose selectors the offer
narrows to something non-empty, picks the proposal, installs, and returns the payloads,
or an error notify (NO_PROPOSAL_CHOSEN, TS_UNACCEPTABLE, INVALID_KE_PAYLOAD).

Keys: the exchange's initiator-to-responder ESP keys come first in KEYMAT; they are our
outbound keys when we initiated the exchange. Invariant: keys are wiped once the owner
has installed them (it copies them into the data plane).
"""

from __future__ import annotations

import functools
import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from espd.ike import codec, proposals
from espd.ike.codec import NotifyType, ProtocolId
from espd.ike.crypto import keymat, suites
from espd.ike.engine import nat_follow
from espd.ike.exchanges.payloads import (
    from_wire_selectors,
    notify,
    proposals_of,
    sa_payload,
    to_wire_selectors,
)
from espd.ike.proposals import ProposalError
from espd.ike.sa.child_sa import ChildSa, ChildState
from espd.ike.sa.ike_sa import IkeSa
from espd.ike.settings import ChildLifetime, ChildPolicy
from espd.policy.selectors import covers, narrow

log = logging.getLogger("espd.ike")  # the engine's logger (getLogger returns that one)

if TYPE_CHECKING:
    from espd.dataplane import Lifetime
    from espd.ike.engine.engine import IkeEngine


class ChildRefused(Exception):
    """The Child SA cannot be made; ``notify`` is what the responder answers."""

    def __init__(self, notify_type: NotifyType, why: str, data: bytes = b"") -> None:
        super().__init__(why)
        self.notify = notify_type
        self.data = data


@dataclass
class Pfs:
    """A CREATE_CHILD_SA's key exchange: our private half (initiator) or the secret."""

    group: int
    private: object | None = None


def policy_of(engine: IkeEngine, entry: tuple[str, int]) -> ChildPolicy | None:
    return engine.settings.child(entry)  # by dict: this runs on every Child SA rekey


# --- initiator ------------------------------------------------------------------------


def offer(engine: IkeEngine, sa: IkeSa, policy: ChildPolicy, ke_group: int = 0,
          additional: tuple[int, ...] = ()) -> tuple[ChildSa, list]:
    child = ChildSa(policy.key, engine.new_child_spi(), mode=policy.transforms[0][1],
                    local_ts=policy.local_ts, remote_ts=policy.remote_ts)
    spi = child.spi_in.to_bytes(4, "big")
    payloads: list = [sa_payload(proposals.esp_offer(policy, spi, ke_group, additional)),
                      codec.TsInitiator(to_wire_selectors(policy.local_ts)),
                      codec.TsResponder(to_wire_selectors(policy.remote_ts))]
    if child.mode == "transport":
        payloads.append(notify(NotifyType.USE_TRANSPORT_MODE))
    return child, payloads


def accept(engine: IkeEngine, sa: IkeSa, child: ChildSa, message: codec.Message,
           nonce_i: bytes, nonce_r: bytes, *, ke_group: int = 0, shared: bytes | None = None,
           rekey_of: ChildSa | None = None, additional: tuple[int, ...] = (),
           secrets: tuple = ()) -> None:
    """Check the responder's answer and install; raises ChildRefused with the reason.
    ``additional`` are the RFC 9370 key exchanges we offered, ``secrets`` theirs."""
    policy = policy_of(engine, child.entry)
    if policy is None:
        raise ChildRefused(NotifyType.NO_PROPOSAL_CHOSEN, "crypto map entry is gone")
    if message.errors:
        from espd.ike.exchanges.payloads import errors_text

        raise ChildRefused(message.errors[0].type, f"peer refused the Child SA: "
                           f"{errors_text(message)}")
    answer = message.first(codec.SecurityAssociation)
    if answer is None:
        raise ChildRefused(NotifyType.INVALID_SYNTAX, "answer has no SA payload")
    chosen = chosen_answer(policy, child, answer, ke_group, additional)
    if len(proposals.additional_groups(chosen)) != len(secrets):
        raise ChildRefused(NotifyType.INVALID_SYNTAX, "the additional key exchanges did "
                           "not all run")
    check_peer_spi(sa, chosen.spi)
    tsi = from_wire_selectors(message.first(codec.TsInitiator))
    tsr = from_wire_selectors(message.first(codec.TsResponder))
    if not tsi or not tsr or not covers(policy.local_ts, tsi) or \
            not covers(policy.remote_ts, tsr):
        raise ChildRefused(NotifyType.TS_UNACCEPTABLE, "peer's traffic selectors are wider "
                           "than ours or empty")
    transport = message.notify(NotifyType.USE_TRANSPORT_MODE) is not None
    if (child.mode == "transport") != transport:
        raise ChildRefused(NotifyType.NO_PROPOSAL_CHOSEN,
                           f"we asked for {child.mode} mode, peer answered otherwise")
    child.local_ts, child.remote_ts = shared_selectors(tsi, policy.local_ts), \
        shared_selectors(tsr, policy.remote_ts)
    _settle(engine, sa, child, chosen, policy)
    install(engine, sa, child, policy, nonce_i, nonce_r, we_initiated=True, shared=shared,
            rekey_of=rekey_of, additional=secrets)


def chosen_answer(policy: ChildPolicy, child: ChildSa, answer: codec.SecurityAssociation,
                  ke_group: int, additional: tuple[int, ...]) -> proposals.Proposal:
    """The responder's ESP choice, checked against our offer; ChildRefused otherwise."""
    spi = child.spi_in.to_bytes(4, "big")
    try:
        return proposals.check_chosen(proposals.esp_offer(policy, spi, ke_group, additional),
                                      proposals_of(answer), "ESP")
    except ProposalError as err:
        raise ChildRefused(NotifyType.NO_PROPOSAL_CHOSEN, str(err)) from None


# --- responder ------------------------------------------------------------------------


def answer(engine: IkeEngine, sa: IkeSa, message: codec.Message, nonce_i: bytes,
           nonce_r: bytes, *, in_ike_auth: bool, rekey_of: ChildSa | None = None
           ) -> tuple[list, ChildSa]:
    """The payloads of a successful answer and the installed Child SA, or ChildRefused."""
    offer_sa = message.first(codec.SecurityAssociation)
    tsi_p, tsr_p = message.first(codec.TsInitiator), message.first(codec.TsResponder)
    if offer_sa is None or tsi_p is None or tsr_p is None:
        raise ChildRefused(NotifyType.INVALID_SYNTAX, "request lacks SA, TSi or TSr")
    tsi, tsr = from_wire_selectors(tsi_p), from_wire_selectors(tsr_p)
    candidates = ([policy_of(engine, rekey_of.entry)] if rekey_of is not None
                  else list(engine.settings.children_for(sa.remote.address)))
    policy, narrowed = None, None
    for candidate in candidates:
        if candidate is None:
            continue
        remote_side, local_side = narrow(tsi, candidate.remote_ts), narrow(tsr,
                                                                          candidate.local_ts)
        if remote_side and local_side:
            policy, narrowed = candidate, (remote_side, local_side)
            break
    if policy is None or narrowed is None:
        raise ChildRefused(NotifyType.TS_UNACCEPTABLE,
                           f"no crypto map entry for peer {sa.remote.address} covers TSi "
                           f"{_side(tsi)} TSr {_side(tsr)}")
    offered = proposals_of(offer_sa)
    ke = message.first(codec.KeyExchange)
    child = ChildSa(policy.key, engine.new_child_spi(), initiated_by_us=False)
    spi = child.spi_in.to_bytes(4, "big")
    accepted = _accepted(policy, spi, in_ike_auth, ke, offered)
    try:
        chosen = proposals.choose(offered, accepted, "ESP")
    except ProposalError as err:
        raise ChildRefused(NotifyType.NO_PROPOSAL_CHOSEN, str(err)) from None
    check_peer_spi(sa, chosen.spi)
    group = proposals.ke_group(chosen)
    payloads: list = []
    shared = None
    if group:
        if ke is None or ke.group != group:
            raise ChildRefused(NotifyType.INVALID_KE_PAYLOAD, f"PFS needs KE group {group}",
                               group.to_bytes(2, "big"))
        try:
            public, shared = suites.group(group).respond(ke.data)
        except ValueError as err:
            raise ChildRefused(NotifyType.INVALID_SYNTAX, f"bad KE payload: {err}") from None
        payloads.append(codec.KeyExchange(group, public))
    wants_transport = message.notify(NotifyType.USE_TRANSPORT_MODE) is not None
    child.mode = "transport" if wants_transport and policy.transforms[0][1] == "transport" \
        else "tunnel"
    if policy.transforms[0][1] == "transport" and not wants_transport:
        raise ChildRefused(NotifyType.NO_PROPOSAL_CHOSEN, "crypto map entry is transport "
                           "mode; the peer asked for tunnel mode")
    child.local_ts = shared_selectors(narrowed[1], policy.local_ts)
    child.remote_ts = shared_selectors(narrowed[0], policy.remote_ts)
    _settle(engine, sa, child, chosen, policy)
    extra = [suites.group(ident) for ident in proposals.additional_groups(chosen)]
    if group:
        from espd.ike.exchanges.followup_ke import names

        child.key_exchanges = names(suites.group(group), extra)
    if extra:  # RFC 9370 2.2.4: installed once the IKE_FOLLOWUP_KE exchanges are done
        def finish(secrets: list) -> None:
            install(engine, sa, child, policy, nonce_i, nonce_r, we_initiated=False,
                    shared=shared, rekey_of=rekey_of, additional=tuple(secrets))

        def discard() -> None:
            if isinstance(shared, bytearray):
                shared[:] = bytes(len(shared))
        child.deferred = (extra, finish, discard)
    else:
        install(engine, sa, child, policy, nonce_i, nonce_r, we_initiated=False,
                shared=shared, rekey_of=rekey_of)
    reply_sa = proposals.Proposal(chosen.number, chosen.protocol, spi, chosen.transforms)
    payloads = [sa_payload([reply_sa]), *payloads,
                codec.TsInitiator(to_wire_selectors(narrowed[0])),
                codec.TsResponder(to_wire_selectors(narrowed[1]))]
    if child.mode == "transport":
        payloads.append(notify(NotifyType.USE_TRANSPORT_MODE))
    return payloads, child


def check_peer_spi(sa: IkeSa, spi: bytes) -> None:
    """The peer's inbound SPI for a new Child SA (our outbound SPI): 4 bytes, not one of
    the reserved values below 256 (RFC 4303 2.1), and not one that a Child SA of this IKE
    SA still has, the one being rekeyed included: two outbound SAs with one SPI would make
    the peer's DELETE and its inbound traffic ambiguous. ChildRefused otherwise."""
    value = int.from_bytes(spi, "big")
    if len(spi) != 4 or value < 256:
        raise ChildRefused(NotifyType.INVALID_SYNTAX, "peer's ESP SPI is invalid")
    if any(c.spi_out == value and c.state != ChildState.DELETED
           for c in sa.children.values()):
        raise ChildRefused(NotifyType.INVALID_SYNTAX, f"peer's ESP SPI {value:08x} is in use "
                           "by one of its Child SAs already")


def _accepted(policy: ChildPolicy, spi: bytes, in_ike_auth: bool,
              ke: codec.KeyExchange | None, offered=()) -> tuple[proposals.Proposal, ...]:
    """Our acceptable ESP proposals: without KE in IKE_AUTH; with our PFS group (and its
    additional key exchanges) in CREATE_CHILD_SA, or, if we require none, with or without
    the peer's group and the additional key exchanges it offers that we can run."""
    if in_ike_auth:
        return proposals.esp_offer(policy, spi)
    if policy.pfs:
        return proposals.esp_offer(policy, spi, policy.pfs, policy.pfs_additional)
    plain = proposals.esp_offer(policy, spi)
    if ke is not None and suites.group(int(ke.group)) is not None:
        theirs = _runnable_additional(offered)  # first: the peer may offer them or NONE
        hybrid = proposals.esp_offer(policy, spi, int(ke.group), theirs) if theirs else ()
        return plain + hybrid + proposals.esp_offer(policy, spi, int(ke.group))
    return plain


def _runnable_additional(offered) -> tuple[int, ...]:
    """Per ADDKE type of the peer's first ESP proposal: its first method we can run."""
    out: list[int] = []
    first = next(iter(offered), None)
    for kind in proposals.ADDKE if first is not None else ():
        usable = [t.id for t in first.of_type(kind) if t.id and suites.group(t.id) is not None
                  and suites.group(t.id).available]
        if not usable:
            break
        out.append(usable[0])
    return tuple(out)


def shared_selectors(selectors: tuple, configured: tuple) -> tuple:
    """``selectors`` with each one equal to a configured selector replaced by that one
    (the policy's objects, shared by all its Child SAs, instead of copies per SA); the
    whole tuple is the policy's own when they are all equal."""
    if selectors == configured:
        return configured
    return tuple(next((c for c in configured if c == s), s) for s in selectors)


def _side(selectors) -> str:
    return ", ".join(str(ts) for ts in selectors) or "nothing"


# --- both -----------------------------------------------------------------------------


def _settle(engine: IkeEngine, sa: IkeSa, child: ChildSa, chosen: proposals.Proposal,
            policy: ChildPolicy) -> None:
    child.proposal = chosen
    child.spi_out = int.from_bytes(chosen.spi, "big")
    child.transform = proposals.esp_transform_name(chosen)
    child.esn = proposals.esn_chosen(chosen)
    if policy.encapsulation == "udp" or (policy.encapsulation == "auto" and sa.nat):
        child.encap = "udp"
    else:
        child.encap = "esp"


def install(engine: IkeEngine, sa: IkeSa, child: ChildSa, policy: ChildPolicy,
            nonce_i: bytes, nonce_r: bytes, *, we_initiated: bool,
            shared: bytes | bytearray | None, rekey_of: ChildSa | None,
            additional: tuple = ()) -> None:
    """Derive the Child SA's keys and hand them to the owner (rekey: make-before-break);
    ``additional`` are the secrets of RFC 9370 IKE_FOLLOWUP_KE exchanges, in order."""

    shape = _shape(child.transform)
    keys = keymat.child_keys(sa.prf, sa.keys.sk_d, nonce_i, nonce_r, shape, shared,
                             additional)
    for secret in (shared, *additional):
        if isinstance(secret, bytearray):
            secret[:] = bytes(len(secret))
    out, into = keys.outbound(we_initiated), keys.inbound(we_initiated)
    if engine.keylog is not None:
        engine.keylog.esp_sa(sa.local.address, sa.remote.address, child.spi_out,
                             child.transform, out.key, out.auth_key)
        engine.keylog.esp_sa(sa.remote.address, sa.local.address, child.spi_in,
                             child.transform, into.key, into.auth_key)
    soft, hard = _lifetimes(policy.lifetime, 1.0 - engine.settings.rekey_margin)
    spec = engine.child_sa_keys(
        entry=child.entry, ike_sa=str(sa.ident), transform=child.transform, mode=child.mode,
        # our address is one text for all Child SAs (interned), not a copy per SA
        encap=child.encap, local=sys.intern(str(sa.local.address)),
        peer=str(sa.remote.address),
        spi_in=child.spi_in, key_in=bytearray(into.key),
        auth_key_in=bytearray(into.auth_key) if into.auth_key else None,
        spi_out=child.spi_out, key_out=bytearray(out.key),
        auth_key_out=bytearray(out.auth_key) if out.auth_key else None, esn=child.esn,
        replay_window=policy.replay_window,
        soft=soft, hard=hard,
        local_port=sa.local.port if child.encap == "udp" else 4500,
        remote_port=sa.remote.port if child.encap == "udp" else 4500,
        traffic_selectors=(child.local_ts, child.remote_ts), nat_detected=sa.nat,
        peer_source=policy.peer_source, follow_peer=nat_follow.follows(sa),
        nat_keepalive=sa.nat_local)
    keys.wipe()
    from espd.ike.exchanges import reauth

    try:
        if rekey_of is not None and rekey_of.handle is not None:
            # RFC 7296 2.8: the rekey's responder keeps sending on the old SA until the
            # initiator shows it has the new one (its DELETE of the old, or traffic)
            child.handle = engine.owner.rekey_child(rekey_of.handle, spec,
                                                    switch=we_initiated)
        elif (before := reauth.replaced(engine, sa, child)) is not None:
            # a reauthentication's Child SA (RFC 7296 2.8.3) replaces the old IKE SA's
            # one of its entry make-before-break, as a rekey would
            child.handle = engine.owner.rekey_child(before.handle, spec,
                                                    switch=we_initiated)
            before.state, before.rekeyed_by = ChildState.REKEYED, child
            if before.rekey_timer is not None:
                before.rekey_timer.cancel()  # type: ignore[attr-defined]
                before.rekey_timer = None
        else:
            child.handle = engine.owner.install_child(spec)
    finally:
        spec.wipe()
    child.state = ChildState.INSTALLED
    child.created = engine.now()
    sa.children[child.spi_in] = child
    engine.index_child(sa, child)
    engine.schedule_child_rekey(sa, child, policy.lifetime.seconds)
    if log.isEnabledFor(logging.INFO):  # the selectors' text is not made for nothing
        verb = "rekeyed" if rekey_of is not None else "up"
        log.info("%s %s %s: %s %s, %s <-> %s%s", sa, child, verb, child.transform,
                 child.mode, _side(child.local_ts), _side(child.remote_ts),
                 " (UDP-encapsulated)" if child.encap == "udp" else "")
    engine.emit("rekeyed" if rekey_of is not None else "up", sa, child)


@functools.lru_cache(maxsize=64)
def _shape(transform: str):
    """The data plane's Transform of an espd transform name, parsed once per name."""
    from espd.config.transforms import parse_transform

    return parse_transform(transform)


def rekey_notify(child: ChildSa) -> codec.Notify:
    return notify(NotifyType.REKEY_SA, b"", ProtocolId.ESP, child.spi_in.to_bytes(4, "big"))


@functools.lru_cache(maxsize=64)
def _lifetimes(life: ChildLifetime, margin: float) -> tuple[Lifetime, Lifetime]:
    """(soft, hard) data-plane limits of an entry's lifetime: immutable, so one pair is
    shared by all of the entry's Child SAs (a hub holds thousands) instead of two each."""
    from espd.dataplane import Lifetime

    return (Lifetime(0, int(life.kilobytes * 1024 * margin), int(life.packets * margin)),
            Lifetime(life.seconds, life.kilobytes * 1024, life.packets))
