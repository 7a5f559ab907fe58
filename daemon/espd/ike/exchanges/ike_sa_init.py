"""IKE_SA_INIT (RFC 7296 1.2): proposals, key exchange, nonces, NAT detection.

    initiator                                 responder
    HDR, [N(COOKIE),] SAi1, KEi, Ni,
         N(NAT_D_SRC), N(NAT_D_DST),
         N(FRAGMENTATION_SUPPORTED)   -->
                                      <--  HDR, SAr1, KEr, Nr, N(NAT_D_SRC), N(NAT_D_DST),
                                               [N(FRAGMENTATION_SUPPORTED)]
                                      <--  or HDR, N(COOKIE) / N(INVALID_KE_PAYLOAD) /
                                               N(NO_PROPOSAL_CHOSEN)

As initiator: a COOKIE is echoed first in a retry, an INVALID_KE_PAYLOAD is honoured
with the group asked for if we offered it; AUTH later covers the LAST request sent.
As responder: espd.ike.engine.admission decides first (COOKIE, caps: no DH, no state);
an INVALID_KE_PAYLOAD answer costs no DH either; no state is kept for a request that
fails; the answer to a retransmitted request is the cached one (the half-open table is
keyed by the peer and its SPI). N(IKEV2_FRAGMENTATION_SUPPORTED) goes out in every request
and in a response to a request that had it (engine/fragmentation.py). Additional key
exchanges (RFC 9370) chosen here run in IKE_INTERMEDIATE (exchanges/ike_intermediate.py)
before IKE_AUTH.
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from espd.ike import codec, proposals
from espd.ike.codec import ExchangeType, HashAlgorithm, NotifyType
from espd.ike.crypto import keymat, suites
from espd.ike.crypto.dh import InvalidKeyExchange
from espd.ike.engine import admission, fragmentation
from espd.ike.exchanges import ike_intermediate, ppk
from espd.ike.exchanges.payloads import (
    nat_detected,
    nat_notifies,
    notify,
    proposals_of,
    sa_payload,
)
from espd.ike.proposals import ProposalError
from espd.ike.sa.ike_sa import Endpoint, IkeSa, IkeState
from espd.ike.settings import ChildPolicy

if TYPE_CHECKING:
    from espd.ike.engine.engine import IkeEngine

NONCE_SIZE = 32
MAX_KE_RETRIES = 3
MAX_COOKIE_RETRIES = 3


@dataclass(frozen=True)
class Suite:
    """The algorithms of a chosen IKE proposal."""

    encr: object
    integ: object | None
    prf: object
    group: object
    additional: tuple = ()  # RFC 9370 additional key exchanges, in the order they run

    @functools.cached_property  # once per shared Suite, not once per IKE SA's view
    def name(self) -> str:
        parts = [self.encr.name, *([self.integ.name] if self.integ else []),  # type: ignore
                 self.prf.name, self.group.name,  # type: ignore[attr-defined]
                 *(f"ke{n}_{k.name}" for n, k in enumerate(self.additional, 1))]
        return "-".join(parts)


def suite_of(chosen: proposals.Proposal) -> Suite:
    """Crypto objects for a chosen proposal; ProposalError if espd lacks one of them.
    One Suite per set of transforms, shared by the SAs that chose it (it is immutable)."""
    suite = _suites.get(chosen.transforms)
    if suite is None:
        suite = _suite_of(chosen)
        if len(_suites) >= 64:
            _suites.clear()
        _suites[chosen.transforms] = suite
    return suite


_suites: dict[tuple, Suite] = {}


def _suite_of(chosen: proposals.Proposal) -> Suite:
    encr_t, prf_t = chosen.one(proposals.ENCR), chosen.one(proposals.PRF)
    integ_t, ke_t = chosen.one(proposals.INTEG), chosen.one(proposals.KE)
    encr = suites.encr(encr_t.id, encr_t.key_bits or None) if encr_t else None
    prf = suites.prf(prf_t.id) if prf_t else None
    integ = suites.integ(integ_t.id) if integ_t else None
    group = suites.group(ke_t.id) if ke_t else None
    if encr is None or prf is None or group is None or (integ_t and integ is None) \
            or (not encr.aead and integ is None):
        raise ProposalError(f"espd does not implement every algorithm of {chosen}")
    additional = tuple(suites.group(ident) for ident in proposals.additional_groups(chosen))
    if any(k is None or not k.available for k in additional):
        raise ProposalError(f"espd cannot run every key exchange of {chosen}")
    return Suite(encr, integ, prf, group, additional)


def derive(engine: IkeEngine, sa: IkeSa, suite: Suite, shared: bytearray) -> None:
    """SKEYSEED and SK_* (RFC 7296 2.14), the SK ciphers, and the key log line."""
    skeyseed = keymat.initial_skeyseed(suite.prf, sa.nonce_i, sa.nonce_r, shared)
    try:
        sa.keys = keymat.ike_keys(suite.prf, skeyseed, sa.nonce_i, sa.nonce_r, sa.spi_i,
                                  sa.spi_r, keymat.IkeLengths.of(suite.prf, suite.encr,
                                                                 suite.integ))
    finally:
        skeyseed.wipe()
        shared[:] = bytes(len(shared))
    install_keys(engine, sa, suite)


def install_keys(engine: IkeEngine, sa: IkeSa, suite: Suite) -> None:
    sa.prf = suite.prf
    sa.suite = suite
    sa.sk_out, sa.sk_in = keymat.ike_ciphers(sa.keys, suite.encr, suite.integ, sa.initiator)
    if engine.keylog is not None and not sa.additional_pending:  # the final keys only
        engine.keylog.ike_sa(sa.spi_i, sa.spi_r, suite.encr.name,
                             suite.integ.name if suite.integ else None, sa.keys)


# --- initiator ---------------------------------------------------------------------


def start(engine: IkeEngine, policy: ChildPolicy, peer_index: int) -> IkeSa | None:
    address = policy.peers[peer_index]
    peer = engine.settings.peer(address)
    if peer is None:
        engine.rate_log.warning("nopeer", "IKE: %s %d: no pre-shared key for peer %s; "
                                "add it to the IKE peers", policy.map_name, policy.seq, address)
        return None
    sa = IkeSa(engine.new_ike_spi(), codec.header.ZERO_SPI, True,
               Endpoint(policy.local, engine.settings.port), Endpoint(address, peer.port),
               IkeState.INIT_SENT, ident=engine.new_ident())
    sa.policy, sa.peer, sa.created = policy, peer, engine.now()
    sa.nonce_i = secrets.token_bytes(NONCE_SIZE)
    groups = proposals.acceptable_groups(proposals.ike_offer(engine.settings.proposals))
    engine.register(sa)
    engine.schedule(sa, "half-open", engine.settings.half_open_timeout,
                    engine.ike_failed, sa, "not established in time")
    log_start(sa, policy)
    _send(engine, sa, groups[0])
    return sa


def certificate_notifies(engine: IkeEngine, responder: bool = False) -> list:
    """With a certificate configured: N(SIGNATURE_HASH_ALGORITHMS) (RFC 7427 4: without
    it a peer signs with the older methods, not method 14), and, as responder, the CERTREQ
    naming our CAs (RFC 7296 1.2; the initiator's goes in IKE_AUTH)."""
    settings = engine.settings
    if settings.certificate is None or settings.trust is None:
        return []
    hashes = (HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512,
              HashAlgorithm.IDENTITY)
    out: list = [notify(NotifyType.SIGNATURE_HASH_ALGORITHMS,
                        b"".join(h.to_bytes(2, "big") for h in hashes))]
    if responder:
        out.append(codec.CertificateRequest.for_authorities(settings.trust.authority_hashes()))
    return out


def log_start(sa: IkeSa, policy: ChildPolicy) -> None:
    from espd.ike.engine.engine import log

    log.info("%s: initiating for crypto map %s %d", sa, policy.map_name, policy.seq)


def _send(engine: IkeEngine, sa: IkeSa, group_id: int) -> None:
    group = suites.group(group_id)
    sa.ke_private, sa.ke_group = group.generate(), group_id
    payloads: list = [notify(NotifyType.COOKIE, sa.cookie)] if sa.cookie else []
    fake = isinstance(sa.policy, ChildPolicy) and sa.policy.encapsulation == "udp"
    payloads += [
        sa_payload(_offer_first(engine, group_id)),
        codec.KeyExchange(group_id, sa.ke_private.public_bytes),
        codec.Nonce(sa.nonce_i),
        *nat_notifies(sa.spi_i, sa.spi_r, sa.local, sa.remote, fake=fake),
        fragmentation.supported(),
        *certificate_notifies(engine),
        *ike_intermediate.init_notifies(engine),
        *ppk.init_notifies(sa.peer),  # type: ignore[arg-type]
    ]
    header = codec.request_header(codec.SpiPair(sa.spi_i), ExchangeType.IKE_SA_INIT, 0,
                                  original_initiator=True)
    datagram = codec.encode_message(codec.Message(header, tuple(payloads)))
    sa.init_request = datagram
    engine.resend_init(sa, datagram, on_response)


def _offer_first(engine: IkeEngine, group_id: int) -> tuple[proposals.Proposal, ...]:
    """Our offer with ``group_id`` moved first in every proposal that has it, so the KE
    we send matches the responder's most likely choice."""
    out = []
    for prop in proposals.ike_offer(engine.settings.proposals):
        kes = prop.of_type(proposals.KE)
        if any(t.id == group_id for t in kes):
            rest = tuple(t for t in prop.transforms if t.type != proposals.KE)
            ordered = tuple(sorted(kes, key=lambda t: t.id != group_id))
            prop = proposals.Proposal(prop.number, prop.protocol, prop.spi, rest + ordered)
        out.append(prop)
    return tuple(out)


def on_response(engine: IkeEngine, sa: IkeSa, message: codec.Message) -> None:
    cookie = message.notify(NotifyType.COOKIE)
    if cookie is not None:
        engine.counters["cookies_honoured"] += 1
        if sa.cookie_retries >= MAX_COOKIE_RETRIES or not 1 <= len(cookie.data) <= 64:
            engine.ike_failed(sa, "responder keeps asking for cookies")
            return
        sa.cookie_retries += 1
        sa.cookie = cookie.data
        _send(engine, sa, sa.ke_group)
        return
    invalid_ke = message.notify(NotifyType.INVALID_KE_PAYLOAD)
    if invalid_ke is not None:
        _honour_invalid_ke(engine, sa, invalid_ke)
        return
    if message.errors:
        from espd.ike.exchanges.payloads import errors_text

        offered = proposals.describe(proposals.ike_offer(engine.settings.proposals))
        engine.ike_failed(sa, f"peer refused IKE_SA_INIT: {errors_text(message)} "
                              f"(we offered {offered})")
        return
    _established_init(engine, sa, message)


def _honour_invalid_ke(engine: IkeEngine, sa: IkeSa, invalid_ke: codec.Notify) -> None:
    asked = int.from_bytes(invalid_ke.data[:2], "big") if len(invalid_ke.data) >= 2 else 0
    ours = proposals.acceptable_groups(proposals.ike_offer(engine.settings.proposals))
    if asked not in ours or sa.ke_retries >= MAX_KE_RETRIES:
        engine.ike_failed(sa, f"peer asks for KE group {asked}, which we do not offer "
                              f"(we offer {', '.join(map(str, ours))})")
        return
    sa.ke_retries += 1
    engine.counters["invalid_ke_honoured"] += 1
    _send(engine, sa, asked)


def _established_init(engine: IkeEngine, sa: IkeSa, message: codec.Message) -> None:
    sa_reply, ke, nonce = (message.first(codec.SecurityAssociation),
                           message.first(codec.KeyExchange), message.first(codec.Nonce))
    if sa_reply is None or ke is None or nonce is None \
            or not message.header.spis.responder_known:
        engine.ike_failed(sa, "IKE_SA_INIT response lacks SA, KE or Nonce")
        return
    try:
        chosen = proposals.check_chosen(proposals.ike_offer(engine.settings.proposals),
                                        proposals_of(sa_reply))
        suite = suite_of(chosen)
    except ProposalError as err:
        engine.ike_failed(sa, str(err))
        return
    if ke.group != proposals.ke_group(chosen) or ke.group != sa.ke_group:
        engine.ike_failed(sa, f"responder's KE is group {ke.group}, not the one agreed")
        return
    if suite.additional and not ike_intermediate.supported(message):
        engine.ike_failed(sa, "responder chose additional key exchanges without "
                              "INTERMEDIATE_EXCHANGE_SUPPORTED (RFC 9370 2.2.1)")
        return
    try:
        shared = sa.ke_private.shared_secret(ke.data)
    except InvalidKeyExchange as err:
        engine.ike_failed(sa, f"responder's KE payload is invalid: {err}")
        return
    sa.ke_private = None
    sa.spi_r, sa.nonce_r, sa.proposal = message.header.spis.responder, nonce.data, chosen
    sa.fragmentation = fragmentation.offered(message)  # we offered it in our request
    sa.ppk_negotiated = ppk.negotiated(sa.peer, message)  # type: ignore[arg-type]
    wanted = ppk.configured(sa.peer)  # type: ignore[arg-type]
    if wanted is not None and wanted.required and not sa.ppk_negotiated:
        engine.counters["ppk_refused"] += 1
        engine.ike_failed(sa, f"PPK {ppk.describe(wanted.ident)} is required (ppk_required),"
                              f" but the responder did not answer USE_PPK (RFC 8784): it has"
                              f" no PPK for us or does not support PPKs")
        return
    ike_intermediate.prepare(sa, suite)
    derive(engine, sa, suite, shared)
    sa.nat_local, sa.nat_remote = nat_detected(message, sa.spi_i, sa.spi_r, sa.local,
                                               sa.remote)
    forced = isinstance(sa.policy, ChildPolicy) and sa.policy.encapsulation == "udp"
    if sa.nat or forced:  # RFC 7296 2.23: IKE_AUTH and later go to UDP 4500
        sa.local = Endpoint(sa.local.address, engine.settings.nat_port)
        sa.remote = Endpoint(sa.remote.address, engine.settings.nat_port)
    ike_intermediate.advance(engine, sa)  # IKE_INTERMEDIATE exchanges, then IKE_AUTH


# --- responder ---------------------------------------------------------------------


def on_request(engine: IkeEngine, message: codec.Message, data: bytes, local: Endpoint,
               remote: Endpoint) -> None:
    header = message.header
    if header.spis.responder_known or header.message_id != 0:
        engine.counters["malformed"] += 1
        return
    known = engine.half_open.get((remote, header.spis.initiator))
    if known is not None:
        if known.init_request == data and known.responses.last_response:
            engine.counters["retransmitted_requests"] += 1
            for datagram in known.responses.last_response:
                engine.transport.send(local, remote, datagram)
        return
    engine.counters["ike_sa_init_requests"] += 1
    if not admission.admit(engine, message, local, remote):
        return  # a COOKIE sent or the request dropped: no DH, no state

    def refuse(kind: NotifyType, payload: bytes = b"") -> None:
        reply = codec.Message(header.response(original_initiator=False),
                              (notify(kind, payload),))
        engine.transport.send(local, remote, codec.encode_message(reply))

    offer, ke, nonce = (message.first(codec.SecurityAssociation),
                        message.first(codec.KeyExchange), message.first(codec.Nonce))
    if offer is None or ke is None or nonce is None:
        engine.counters["ike_sa_init_refused"] += 1
        engine.rate_log.warning("initsyntax", "IKE: IKE_SA_INIT from %s without SA, KE or "
                                "Ni: INVALID_SYNTAX", remote)
        refuse(NotifyType.INVALID_SYNTAX)
        return
    try:
        chosen = proposals.choose(proposals_of(offer),
                                  proposals.ike_offer(engine.settings.proposals))
        suite = suite_of(chosen)
    except ProposalError as err:
        engine.rate_log.warning("noprop", "IKE: IKE_SA_INIT from %s: NO_PROPOSAL_CHOSEN: %s",
                                remote, err)
        engine.counters["no_proposal_chosen"] += 1
        refuse(NotifyType.NO_PROPOSAL_CHOSEN)
        return
    if suite.additional and not ike_intermediate.supported(message):
        engine.rate_log.warning("noprop", "IKE: IKE_SA_INIT from %s: NO_PROPOSAL_CHOSEN: "
                                "additional key exchanges offered without "
                                "INTERMEDIATE_EXCHANGE_SUPPORTED", remote)
        engine.counters["no_proposal_chosen"] += 1
        refuse(NotifyType.NO_PROPOSAL_CHOSEN)
        return
    if ke.group != suite.group.ident:
        engine.counters["invalid_ke_sent"] += 1
        refuse(NotifyType.INVALID_KE_PAYLOAD, suite.group.ident.to_bytes(2, "big"))
        return
    try:
        public, shared = suite.group.respond(ke.data)
    except InvalidKeyExchange as err:
        engine.counters["ike_sa_init_refused"] += 1
        engine.rate_log.warning("ke", "IKE: IKE_SA_INIT from %s: bad KE payload: %s",
                                remote, err)
        refuse(NotifyType.INVALID_SYNTAX)
        return
    sa = IkeSa(header.spis.initiator, engine.new_ike_spi(), False, local, remote,
               IkeState.INIT_DONE, ident=engine.new_ident(), proposal=chosen,
               nonce_i=nonce.data, nonce_r=secrets.token_bytes(NONCE_SIZE))
    sa.created = sa.last_heard = engine.now()
    sa.peer = engine.settings.peer(remote.address)
    sa.init_request = data
    # the request's NAT_DETECTION hashes cover its own header: SPIr still zero
    sa.nat_local, sa.nat_remote = nat_detected(message, sa.spi_i, header.spis.responder,
                                               local, remote)
    ike_intermediate.prepare(sa, suite)
    derive(engine, sa, suite, shared)
    fake = any(p.encapsulation == "udp" for p in engine.settings.children_for(remote.address))
    sa.fragmentation = fragmentation.offered(message)
    sa.ppk_negotiated = ppk.negotiated(sa.peer, message)
    response_header = codec.Header(codec.SpiPair(sa.spi_i, sa.spi_r),
                                   ExchangeType.IKE_SA_INIT, 0, codec.HeaderFlags.RESPONSE)
    reply = codec.Message(response_header, (
        sa_payload([chosen]), codec.KeyExchange(suite.group.ident, public),
        codec.Nonce(sa.nonce_r), *nat_notifies(sa.spi_i, sa.spi_r, local, remote, fake=fake),
        *([fragmentation.supported()] if sa.fragmentation else []),
        *certificate_notifies(engine, responder=True),
        *ike_intermediate.init_notifies(engine, message),
        *ppk.init_notifies(sa.peer, message)))
    datagram = codec.encode_message(reply)
    sa.init_response = datagram
    sa.responses.answered(0, (datagram,))
    engine.register(sa)
    engine.add_half_open(sa)
    engine.schedule(sa, "half-open", engine.settings.half_open_timeout,
                    engine.ike_failed, sa, "IKE_AUTH never came")
    engine.transport.send(local, remote, datagram)
