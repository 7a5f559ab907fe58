"""RFC 7383 IKE fragmentation in the engine: negotiation, sending SKF, reassembly.

Negotiation: every IKE_SA_INIT request carries N(IKEV2_FRAGMENTATION_SUPPORTED); a
responder answers with it when the request had it. ``IkeSa.fragmentation`` is true only
when both sides sent it; an IKE SA made by a rekey inherits it from the old one.

Sending (``seal``): an encrypted message (IKE_AUTH and later, never IKE_SA_INIT) larger
than ``fragment_size`` goes out as SKF fragments, each sealed on its own. The size is that
of the whole IP datagram, as charon counts it: the IP header (20 or 40 bytes), UDP (8) and
the non-ESP marker on the NAT port (4) come off before the codec cuts the IKE message.
A request's fragment set is retransmitted whole; a response's fragment set is what the
response window caches, so a retransmitted request gets every fragment again.

Receiving (``receive``): each fragment is authenticated and decrypted alone (a bad ICV
drops that fragment only), then kept in the IKE SA's ``Reassembly`` for that direction:
at most one message being reassembled per direction (requests: the ID the window expects;
responses: our outstanding request's ID), so an IKE SA holds at most two, each bounded by
MAX_FRAGMENTS and MAX_REASSEMBLY_SIZE. An incomplete one is dropped after
``fragment_timeout`` seconds. Fragments only count from a peer that negotiated them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from espd.ike import codec
from espd.ike.codec import ExchangeType, NotifyType
from espd.ike.codec.limits import MAX_FRAGMENTS
from espd.ike.sa.ike_sa import Endpoint, IkeSa

if TYPE_CHECKING:
    from espd.ike.engine.engine import IkeEngine

UDP_HEADER = 8
NON_ESP_MARKER = 4


def supported() -> codec.Notify:
    """N(IKEV2_FRAGMENTATION_SUPPORTED): no protocol, no SPI, no data (RFC 7383 2.3)."""
    return codec.Notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED)


def offered(message: codec.Message) -> bool:
    return message.notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None


def message_limit(fragment_size: int, local: Endpoint, nat_port: int) -> int:
    """The IKE message bytes a datagram of ``fragment_size`` IP bytes leaves room for."""
    ip_header = 20 if local.address.version == 4 else 40
    marker = NON_ESP_MARKER if local.port == nat_port else 0
    return fragment_size - ip_header - UDP_HEADER - marker


def seal(engine: IkeEngine, sa: IkeSa, header: codec.Header, payloads,
         local: Endpoint | None = None) -> tuple[bytes, ...]:
    """The datagrams that carry ``payloads`` under SK from ``local`` (default: the SA's
    endpoint): one SK message, or, when the peer negotiated fragmentation and that message
    is larger than the fragment size allows, SKF fragments (RFC 7383 2.5)."""
    whole = codec.encrypt_message(header, payloads, sa.sk_out)
    if not sa.fragmentation or header.exchange == ExchangeType.IKE_SA_INIT:
        return (whole,)
    limit = message_limit(engine.settings.fragment_size, local or sa.local,
                          engine.settings.nat_port)
    if len(whole) <= limit:
        return (whole,)
    try:
        fragments = codec.encrypt_fragments(header, payloads, sa.sk_out, limit)
    except ValueError as err:  # more than MAX_FRAGMENTS, or no room at all
        engine.counters["fragmentation_failures"] += 1
        engine.rate_log.warning("fragsize", "IKE: %s: a %d-byte message cannot be cut into "
                                "at most %d fragments of %d bytes (%s); sent whole: raise "
                                "[ike] fragment_size", sa, len(whole), MAX_FRAGMENTS,
                                engine.settings.fragment_size, err)
        return (whole,)
    engine.counters["messages_fragmented"] += 1
    engine.counters["fragments_sent"] += len(fragments)
    return tuple(fragments)


def number_of(message: codec.Message) -> int | None:
    """The fragment number of an SKF message as it arrived (unauthenticated), or None for
    a message that is not a fragment."""
    last = message.payloads[-1] if message.payloads else None
    return last.number if isinstance(last, codec.EncryptedFragment) else None


def receive(engine: IkeEngine, sa: IkeSa, data: bytes, response: bool) -> codec.Message | None:
    """Take one SKF message whose window check passed: the whole message once the last
    missing fragment is in, else None. Raises what decrypt_fragment and Reassembly.add
    raise (the caller counts and drops: IntegrityError, ParseError)."""
    if not sa.fragmentation:
        raise codec.ParseError("SKF fragment from a peer that did not negotiate "
                               "fragmentation (RFC 7383 2.3)", None)
    fragment = codec.decrypt_fragment(data, sa.sk_in)
    sa.last_heard = engine.now()
    engine.counters["fragments_received"] += 1
    message_id = fragment.header.message_id
    held = sa.reassembly.get(response) if sa.reassembly else None
    if held is None or held.message_id != message_id:
        held = codec.Reassembly(message_id, engine.now())
        if sa.reassembly is None:  # made on the first fragment: most SAs never see one
            sa.reassembly = {}
        sa.reassembly[response] = held
        name = _timer(response)
        engine.schedule(sa, name, engine.settings.fragment_timeout,
                        lambda: _expire(engine, sa, response, held))
    try:
        message = held.add(fragment)
    except codec.ParseError:
        discard(engine, sa, response)
        raise
    if message is None:
        return None
    discard(engine, sa, response)
    engine.counters["messages_reassembled"] += 1
    return message


def discard(engine: IkeEngine, sa: IkeSa, response: bool) -> None:
    """Forget the direction's reassembly and its timer."""
    if sa.reassembly:
        sa.reassembly.pop(response, None)
    sa.cancel_timer(_timer(response))


def _expire(engine: IkeEngine, sa: IkeSa, response: bool, held: codec.Reassembly) -> None:
    if not sa.reassembly or sa.reassembly.get(response) is not held:
        return
    sa.reassembly.pop(response, None)
    engine.counters["reassembly_timeouts"] += 1
    engine.rate_log.warning("fragtimeout", "IKE: %s: %d of %d fragments of %s %d came in "
                            "%.0f s; dropped", sa, held.received, held.total,
                            "response" if response else "request", held.message_id,
                            engine.settings.fragment_timeout)


def _timer(response: bool) -> str:
    return "reassembly-response" if response else "reassembly-request"
