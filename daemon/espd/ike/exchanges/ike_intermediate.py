"""IKE_INTERMEDIATE (RFC 9242) carrying the additional key exchanges of RFC 9370, between
IKE_SA_INIT and IKE_AUTH.

    initiator                                  responder
    HDR, SAi1(ADDKE1..), KEi, Ni, N(INTERMEDIATE_EXCHANGE_SUPPORTED)  -->
                         <--  HDR, SAr1(ADDKE1..), KEr, Nr, N(INTERMEDIATE_EXCHANGE_SUPPORTED)
    HDR(MID 1), SK{KEi(1)}   -->
                             <--  HDR(MID 1), SK{KEr(1)}
    ... one exchange per negotiated additional key exchange, in transform type order ...
    HDR(MID n+1), SK{IDi, AUTH, ...}  --> IKE_AUTH, its AUTH over octets ending in IntAuth

After exchange n both sides replace every SK_* (RFC 9370 2.2.2):
    SKEYSEED(n) = prf(SK_d(n-1), SK(n) | Ni | Nr);  SK_*(n) = prf+(SKEYSEED(n), Ni | Nr | SPIs)
Each IKE_INTERMEDIATE message is chained into IntAuth (RFC 9242 3.3.1) under the SK_p in
force when it was protected, i.e. before its exchange updates the keys; IKE_AUTH's signed
octets then end with IntAuth_iN | IntAuth_rN | IKE_AUTH message ID (``trailer``).

Invariants: IKE_AUTH is neither sent nor accepted while an additional key exchange is
pending; a wrong or missing KE fails the IKE SA (fail closed, RFC 9370 2.2.2).
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from espd.ike import codec
from espd.ike.auth import int_auth, int_auth_trailer
from espd.ike.codec import ExchangeType, NotifyType
from espd.ike.crypto import keymat
from espd.ike.crypto.dh import InvalidKeyExchange
from espd.ike.exchanges.payloads import notify
from espd.ike.sa.ike_sa import Endpoint, IkeSa

if TYPE_CHECKING:
    from espd.ike.engine.engine import IkeEngine

log = logging.getLogger("espd.ike")


# --- IKE_SA_INIT's part (called from ike_sa_init) --------------------------------------

def wanted(engine: IkeEngine) -> bool:
    """Whether any of our IKE proposals has an additional key exchange."""
    return any(any(ids) for prop in engine.settings.proposals for ids in prop.additional)


def init_notifies(engine: IkeEngine, request: codec.Message | None = None) -> list:
    """N(INTERMEDIATE_EXCHANGE_SUPPORTED) for IKE_SA_INIT: as initiator when we propose
    additional key exchanges; as responder when the initiator sent it (RFC 9242 3)."""
    if request is None:
        return [notify(NotifyType.INTERMEDIATE_EXCHANGE_SUPPORTED)] if wanted(engine) else []
    if supported(request):
        return [notify(NotifyType.INTERMEDIATE_EXCHANGE_SUPPORTED)]
    return []


def supported(message: codec.Message) -> bool:
    return message.notify(NotifyType.INTERMEDIATE_EXCHANGE_SUPPORTED) is not None


def prepare(sa: IkeSa, suite) -> None:
    """After IKE_SA_INIT's keys: the additional key exchanges still to run."""
    sa.additional_pending = list(suite.additional) if suite.additional else ()
    sa.intermediates, sa.int_auth_i, sa.int_auth_r = 0, b"", b""
    # one tuple per group, shared by every IKE SA it keys (thousands on a hub)
    sa.key_exchanges = _init_key_exchanges(suite.group.name)


@functools.lru_cache(maxsize=64)
def _init_key_exchanges(group: str) -> tuple[str, ...]:
    return (f"{group} (IKE_SA_INIT)",)


def pending(sa: IkeSa) -> bool:
    return bool(sa.additional_pending)


def trailer(sa: IkeSa, auth_message_id: int) -> bytes:
    """What IKE_AUTH's signed octets end with: IntAuth after IKE_INTERMEDIATE exchanges
    (RFC 9242 3.3.2), nothing without them."""
    if not sa.intermediates:
        return b""
    return int_auth_trailer(sa.int_auth_i, sa.int_auth_r, auth_message_id)


def _chain(sa: IkeSa, message: codec.Message, from_initiator: bool) -> None:
    """Fold one IKE_INTERMEDIATE message (as if sent in the clear) into IntAuth_i or _r,
    under the SK_p of the keys that protect it."""
    data = codec.intermediate_auth_data(message)
    if from_initiator:
        sa.int_auth_i = int_auth(sa.prf, sa.keys.sk_pi, sa.int_auth_i, data)
    else:
        sa.int_auth_r = int_auth(sa.prf, sa.keys.sk_pr, sa.int_auth_r, data)


def _rekey(engine: IkeEngine, sa: IkeSa, method, shared) -> None:
    """SKEYSEED(n) from the previous SK_d and this exchange's secret; every SK_* replaced,
    the old keys wiped."""
    from espd.ike.exchanges import ike_sa_init

    suite = sa.suite
    skeyseed = keymat.additional_skeyseed(suite.prf, sa.keys.sk_d, shared, sa.nonce_i,
                                          sa.nonce_r)
    try:
        keys = keymat.ike_keys(suite.prf, skeyseed, sa.nonce_i, sa.nonce_r, sa.spi_i,
                               sa.spi_r, keymat.IkeLengths.of(suite.prf, suite.encr,
                                                              suite.integ))
    finally:
        skeyseed.wipe()
        shared[:] = bytes(len(shared))
    old, sa.keys = sa.keys, keys
    for cipher in (sa.sk_out, sa.sk_in):
        wipe = getattr(cipher, "wipe", None)
        if wipe is not None:
            wipe()
    old.wipe()
    sa.additional_pending.pop(0)
    ike_sa_init.install_keys(engine, sa, suite)  # (the key log: once none is pending)
    sa.intermediates += 1
    sa.key_exchanges += (f"{method.name} (IKE_INTERMEDIATE)",)
    engine.counters["additional_key_exchanges"] += 1


# --- initiator ------------------------------------------------------------------------

def advance(engine: IkeEngine, sa: IkeSa) -> None:
    """After IKE_SA_INIT or an IKE_INTERMEDIATE: the next additional key exchange, or,
    with none left, IKE_AUTH."""
    from espd.ike.exchanges import ike_auth

    if not sa.additional_pending:
        ike_auth.start(engine, sa)
        return
    method = sa.additional_pending[0]
    private = method.generate()
    payloads = [codec.KeyExchange(method.ident, private.public_bytes)]
    header = codec.request_header(codec.SpiPair(sa.spi_i, sa.spi_r),
                                  ExchangeType.IKE_INTERMEDIATE, sa.requests.next_id,
                                  original_initiator=sa.initiator)
    _chain(sa, codec.Message(header, tuple(payloads)), from_initiator=True)
    engine.send_request(sa, ExchangeType.IKE_INTERMEDIATE, payloads,
                        lambda engine, sa, message: _on_response(engine, sa, message, method,
                                                                 private))


def _on_response(engine: IkeEngine, sa: IkeSa, message: codec.Message, method,
                 private) -> None:
    if message.errors:
        from espd.ike.exchanges.payloads import errors_text

        engine.ike_failed(sa, f"peer refused IKE_INTERMEDIATE ({method.name}): "
                              f"{errors_text(message)}")
        return
    ke = message.first(codec.KeyExchange)
    if ke is None or ke.group != method.ident:
        engine.ike_failed(sa, f"IKE_INTERMEDIATE response lacks the {method.name} KE")
        return
    _chain(sa, message, from_initiator=False)
    try:
        shared = private.shared_secret(ke.data)
    except InvalidKeyExchange as err:
        engine.ike_failed(sa, f"responder's {method.name} KE payload is invalid: {err}")
        return
    _rekey(engine, sa, method, shared)
    advance(engine, sa)


# --- responder ------------------------------------------------------------------------

def on_request(engine: IkeEngine, sa: IkeSa, message: codec.Message, local: Endpoint,
               remote: Endpoint) -> None:
    before, sa.local, sa.remote = sa.remote.address, local, remote  # RFC 7296 2.23: 4500
    engine.peer_address_changed(sa, before)
    ke = message.first(codec.KeyExchange)
    if not sa.additional_pending:  # nothing to exchange (RFC 9242 allows empty ones)
        if ke is not None:
            _refuse(engine, sa, message, local, remote, "a KE payload but no additional "
                    "key exchange was negotiated")
            return
        _chain(sa, message, from_initiator=True)
        _answer(engine, sa, message, [], local, remote)
        return
    method = sa.additional_pending[0]
    if ke is None or ke.group != method.ident:
        _refuse(engine, sa, message, local, remote, f"IKE_INTERMEDIATE without the "
                f"{method.name} KE that was negotiated next")
        return
    try:
        public, shared = method.respond(ke.data)
    except InvalidKeyExchange as err:
        _refuse(engine, sa, message, local, remote, f"bad {method.name} KE payload: {err}")
        return
    _chain(sa, message, from_initiator=True)
    _answer(engine, sa, message, [codec.KeyExchange(method.ident, public)], local, remote)
    _rekey(engine, sa, method, shared)


def _answer(engine: IkeEngine, sa: IkeSa, request: codec.Message, payloads: list,
            local: Endpoint, remote: Endpoint) -> None:
    header = request.header.response(original_initiator=sa.initiator)
    _chain(sa, codec.Message(header, tuple(payloads)), from_initiator=False)
    engine.respond(sa, request, payloads, local, remote)


def _refuse(engine: IkeEngine, sa: IkeSa, request: codec.Message, local: Endpoint,
            remote: Endpoint, why: str) -> None:
    engine.respond(sa, request, [notify(NotifyType.INVALID_SYNTAX)], local, remote)
    engine.ike_failed(sa, why)


def auth_allowed(engine: IkeEngine, sa: IkeSa, request: codec.Message, local: Endpoint,
                 remote: Endpoint) -> bool:
    """The responder's gate before IKE_AUTH: every negotiated key exchange has run."""
    if not sa.additional_pending:
        return True
    _refuse(engine, sa, request, local, remote, "IKE_AUTH before the additional key "
            f"exchanges ({', '.join(m.name for m in sa.additional_pending)})")
    return False
