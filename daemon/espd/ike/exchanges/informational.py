"""INFORMATIONAL (RFC 7296 1.4): DELETE both ways, and the empty liveness check (DPD).

    HDR, SK{D(ESP, our inbound SPIs)}  -->  <--  HDR, SK{D(ESP, theirs)}
    HDR, SK{D(IKE)}                    -->  <--  HDR, SK{}
    HDR, SK{}                          -->  <--  HDR, SK{}          (dead peer detection)

A DELETE from the peer removes the SAs at once (their traffic is dropped from then on,
fail closed); a Child SA being deleted by both sides at the same time is answered and
removed once. An INFORMATIONAL with AUTHENTICATION_FAILED ends the IKE SA.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from espd.ike import codec
from espd.ike.codec import ExchangeType, NotifyType, ProtocolId
from espd.ike.sa.child_sa import ChildSa, ChildState
from espd.ike.sa.ike_sa import Endpoint, IkeSa, IkeState

if TYPE_CHECKING:
    from espd.ike.engine.engine import IkeEngine

log = logging.getLogger("espd.ike")


def start_delete_child(engine: IkeEngine, sa: IkeSa, child: ChildSa, reason: str) -> None:
    if child.state in (ChildState.DELETING, ChildState.DELETED):
        return
    child.state = ChildState.DELETING
    child.cancel_timers()

    def send() -> None:
        if child.state == ChildState.DELETED:
            return
        engine.send_request(sa, ExchangeType.INFORMATIONAL,
                            [codec.Delete(ProtocolId.ESP, (child.spi_in.to_bytes(4, "big"),))],
                            lambda engine, sa, _m: engine.drop_child(sa, child, reason))

    engine.queue_request(sa, send)


def start_delete_ike(engine: IkeEngine, sa: IkeSa, reason: str) -> None:
    if sa.state in (IkeState.DELETING, IkeState.DELETED):
        return
    if sa.sk_out is None:  # not keyed yet: nothing to tell the peer
        engine.remove_ike_sa(sa)
        return
    sa.state = IkeState.DELETING
    log.info("%s: deleting (%s)", sa, reason)
    sa.queue = None
    sa.requests.done()
    engine.send_request(sa, ExchangeType.INFORMATIONAL, [codec.Delete(ProtocolId.IKE)],
                        lambda engine, sa, _m: engine.remove_ike_sa(sa))


def start_dpd(engine: IkeEngine, sa: IkeSa) -> None:
    """An empty INFORMATIONAL; no answer after the retransmissions: the peer is dead."""
    engine.counters["dpd_sent"] += 1
    engine.send_request(sa, ExchangeType.INFORMATIONAL, [], lambda *_: None)


def on_request(engine: IkeEngine, sa: IkeSa, message: codec.Message, local: Endpoint,
               remote: Endpoint) -> None:
    deletes = message.all(codec.Delete)
    if message.notify(NotifyType.AUTHENTICATION_FAILED) is not None:
        engine.respond(sa, message, [], local, remote)
        engine.counters["auth_failures"] += 1
        engine.ike_failed(sa, f"peer {remote.address} refused our authentication "
                              f"(AUTHENTICATION_FAILED)")
        return
    if any(d.protocol == ProtocolId.IKE for d in deletes):
        engine.respond(sa, message, [], local, remote)
        log.info("%s: deleted by the peer", sa)
        engine.counters["ike_deletes_received"] += 1
        engine.remove_ike_sa(sa)
        return
    ours: list[bytes] = []
    for delete in deletes:
        if delete.protocol != ProtocolId.ESP:
            continue
        for spi in delete.spis:
            child = _by_outbound_spi(sa, int.from_bytes(spi, "big")) if len(spi) == 4 \
                else None
            if child is None:  # another IKE SA's, ours (inbound), or nobody's
                engine.counters["delete_unknown_spi"] += 1
                engine.rate_log.warning("deleteunknown", "%s: peer deleted an ESP SPI it "
                                        "has no Child SA with; ignored", sa)
                continue
            ours.append(child.spi_in.to_bytes(4, "big"))
            engine.drop_child(sa, child, "deleted by the peer")
    payloads = [codec.Delete(ProtocolId.ESP, tuple(ours))] if ours else []
    if not deletes:
        engine.counters["dpd_answered"] += 1
    engine.respond(sa, message, payloads, local, remote)


def _by_outbound_spi(sa: IkeSa, spi: int) -> ChildSa | None:
    """The peer names SAs by its inbound SPI, which is our outbound SPI."""
    return next((c for c in sa.children.values() if c.spi_out == spi), None)
