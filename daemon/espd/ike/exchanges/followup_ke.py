"""IKE_FOLLOWUP_KE (RFC 9370 2.2.4): the additional key exchanges of a CREATE_CHILD_SA
(new Child SA, Child SA rekey, IKE SA rekey), after its KE.

    initiator                                  responder
    HDR, SK{SA(KE, ADDKE1..), Ni, KEi, ...}  -->
                    <--  HDR, SK{SA, Nr, KEr, N(ADDITIONAL_KEY_EXCHANGE)(link), ...}
    HDR(IKE_FOLLOWUP_KE), SK{KEi(1), N(ADDITIONAL_KEY_EXCHANGE)(link)}  -->
                    <--  HDR(IKE_FOLLOWUP_KE), SK{KEr(1) [, N(ADDITIONAL_KEY_EXCHANGE)(link)]}
    ... one exchange per negotiated additional key exchange; the link is in every
    response but the last ...

The SA the CREATE_CHILD_SA negotiated is made only when the last exchange is done, its
keys from all the secrets (keymat: SK(1) | ... | SK(n) after the nonces). The responder
keeps the exchange's state under a random link (bounded per IKE SA); an IKE_FOLLOWUP_KE
with an unknown link gets STATE_NOT_FOUND, and a state is dropped after WAIT_TIMEOUT
without one. Any failure abandons the SA being made (fail closed): nothing half-keyed is
installed.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from espd.ike import codec
from espd.ike.codec import ExchangeType, NotifyType
from espd.ike.crypto.dh import InvalidKeyExchange
from espd.ike.exchanges.payloads import errors_text, notify
from espd.ike.sa.ike_sa import Endpoint, IkeSa

if TYPE_CHECKING:
    from espd.ike.engine.engine import IkeEngine

log = logging.getLogger("espd.ike")

LINK_SIZE = 8
MAX_PENDING = 4  # responder states per IKE SA (a window of one needs one)
WAIT_TIMEOUT = 30.0  # seconds a responder state waits for the next IKE_FOLLOWUP_KE

Done = Callable[[list], None]  # the secrets SK(1)..SK(n), in order
Failed = Callable[[str], None]


def names(ke_method, additional) -> tuple[str, ...]:
    """For show: what keyed an SA made by CREATE_CHILD_SA."""
    return (f"{ke_method.name} (CREATE_CHILD_SA)",
            *(f"{m.name} (IKE_FOLLOWUP_KE)" for m in additional))


def wipe(secrets_: list) -> None:
    for secret in secrets_:
        if isinstance(secret, bytearray):
            secret[:] = bytes(len(secret))


# --- initiator ------------------------------------------------------------------------

def run(engine: IkeEngine, sa: IkeSa, methods: list, response: codec.Message, done: Done,
        failed: Failed) -> None:
    """Run the additional key exchanges ``methods`` after the CREATE_CHILD_SA whose
    ``response`` carries the first link; then ``done(secrets)`` (or ``failed(why)``)."""
    link = response.notify(NotifyType.ADDITIONAL_KEY_EXCHANGE)
    _next(engine, sa, list(methods), link.data if link is not None else b"", [], done,
          failed)


def _next(engine: IkeEngine, sa: IkeSa, methods: list, link: bytes, collected: list,
          done: Done, failed: Failed) -> None:
    if not methods:
        done(collected)
        return
    if not link:
        wipe(collected)
        failed("the responder sent no ADDITIONAL_KEY_EXCHANGE link for the "
               f"{methods[0].name} key exchange")
        return
    method = methods[0]
    private = method.generate()

    def on_response(engine: IkeEngine, sa: IkeSa, message: codec.Message) -> None:
        ke = message.first(codec.KeyExchange)
        try:
            if message.errors:
                raise InvalidKeyExchange(f"peer refused it: {errors_text(message)}")
            if ke is None or ke.group != method.ident:
                raise InvalidKeyExchange(f"the response lacks the {method.name} KE")
            collected.append(private.shared_secret(ke.data))
        except InvalidKeyExchange as err:
            wipe(collected)
            failed(f"IKE_FOLLOWUP_KE ({method.name}): {err}")
            return
        engine.counters["additional_key_exchanges"] += 1
        following = message.notify(NotifyType.ADDITIONAL_KEY_EXCHANGE)
        _next(engine, sa, methods[1:], following.data if following is not None else b"",
              collected, done, failed)

    engine.send_request(sa, ExchangeType.IKE_FOLLOWUP_KE, [
        codec.KeyExchange(method.ident, private.public_bytes),
        notify(NotifyType.ADDITIONAL_KEY_EXCHANGE, link)], on_response)


# --- responder ------------------------------------------------------------------------

@dataclass
class Waiting:
    """A CREATE_CHILD_SA we answered whose additional key exchanges are still to come.
    ``finish(secrets)`` makes the SA and returns error notifies ([] when it stands);
    ``abort(why)`` forgets it."""

    methods: list
    finish: Callable[[list], list]
    abort: Failed
    collected: list = field(default_factory=list, repr=False)


def expect(engine: IkeEngine, sa: IkeSa, methods: list, finish: Callable[[list], list],
           abort: Failed) -> codec.Notify:
    """Keep the state of an answered CREATE_CHILD_SA; the N(ADDITIONAL_KEY_EXCHANGE)
    to put in its response."""
    if sa.followups is None:
        sa.followups = {}
    while len(sa.followups) >= MAX_PENDING:  # the oldest is abandoned
        _drop(sa, next(iter(sa.followups)), "superseded by newer IKE_FOLLOWUP_KE state")
    link = secrets.token_bytes(LINK_SIZE)
    sa.followups[link] = Waiting(list(methods), finish, abort)
    _wait(engine, sa, link)
    return notify(NotifyType.ADDITIONAL_KEY_EXCHANGE, link)


def _wait(engine: IkeEngine, sa: IkeSa, link: bytes) -> None:
    engine.schedule(sa, f"followup-{link.hex()}", WAIT_TIMEOUT,
                    lambda: _drop(sa, link, "no IKE_FOLLOWUP_KE came in time"))


def _drop(sa: IkeSa, link: bytes, why: str) -> None:
    waiting = sa.followups.pop(link, None) if sa.followups else None
    sa.cancel_timer(f"followup-{link.hex()}")
    if waiting is not None:
        wipe(waiting.collected)
        waiting.abort(why)


def on_request(engine: IkeEngine, sa: IkeSa, message: codec.Message, local: Endpoint,
               remote: Endpoint) -> None:
    link = message.notify(NotifyType.ADDITIONAL_KEY_EXCHANGE)
    waiting = sa.followups.get(link.data) if link is not None and sa.followups else None
    if waiting is None:
        engine.counters["followup_state_not_found"] += 1
        engine.respond(sa, message, [notify(NotifyType.STATE_NOT_FOUND)], local, remote)
        return
    method = waiting.methods[0]
    ke = message.first(codec.KeyExchange)
    try:
        if ke is None or ke.group != method.ident:
            raise InvalidKeyExchange(f"no {method.name} KE in IKE_FOLLOWUP_KE")
        public, secret = method.respond(ke.data)
    except InvalidKeyExchange as err:
        _drop(sa, link.data, str(err))
        engine.respond(sa, message, [notify(NotifyType.INVALID_SYNTAX)], local, remote)
        return
    engine.counters["additional_key_exchanges"] += 1
    waiting.collected.append(secret)
    waiting.methods.pop(0)
    payloads: list = [codec.KeyExchange(method.ident, public)]
    if waiting.methods:
        payloads.append(notify(NotifyType.ADDITIONAL_KEY_EXCHANGE, link.data))
        _wait(engine, sa, link.data)
    else:
        del sa.followups[link.data]
        sa.cancel_timer(f"followup-{link.data.hex()}")
        errors = waiting.finish(waiting.collected)
        wipe(waiting.collected)
        if errors:
            payloads = errors
    engine.respond(sa, message, payloads, local, remote)


def abandon_all(sa: IkeSa, why: str) -> None:
    """The IKE SA goes: every waiting state is dropped."""
    for waiting in (sa.followups or {}).values():
        wipe(waiting.collected)
        waiting.abort(why)
    sa.followups = None
