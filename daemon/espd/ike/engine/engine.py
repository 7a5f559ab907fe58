"""The IKE engine: one object on the daemon's event loop that owns every IKE SA.

Receive path, in order (``receive``), after the intake (engine/intake.py: per loop turn,
configured peers' datagrams at once, the others from a bounded backlog on a CPU budget):
    decode  -> any ParseError: counted, logged rate-limited, dropped (never raised)
    find    -> IKE_SA_INIT requests make or find a half-open SA; everything else is looked
               up by our SPI (the responder SPI if the peer is the original initiator)
    open    -> SK decrypted with the SA's inbound cipher; a bad ICV is counted and dropped;
               an SKF fragment is opened alone and held until its message is complete
               (engine/fragmentation.py: RFC 7383)
    window  -> a response must answer our outstanding request; a request is new (handled),
               a retransmission (answered from the cached response once it passed the
               ICV: a forged copy is dropped, never reflected) or stale (dropped)
    follow  -> authenticated and new from another address or port: an established IKE SA
               whose peer is behind a NAT (and we are not) moves there, its Child SAs too
               (engine/nat_follow.py, RFC 7296 2.23)
    handle  -> the exchange module's handler; what it returns is sealed, sent to where the
               request came from, and cached

Send path: ``send_request`` takes the SA's next message ID (window of one: a request
waits in ``sa.queue`` while another is outstanding), seals, sends, and retransmits with
exponential back-off; only the initiator of an exchange retransmits. A peer that never
answers is dead: its SAs are deleted and, for an IKE SA still being set up, the next
configured peer is tried (IOS failover).

Invariant: nothing a peer sends can raise out of ``receive`` or a timer callback; every
failure is a counter, a log line and a state change of that one SA at most.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import os
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from espd.ike import codec
from espd.ike.auth import PskAuthenticator
from espd.ike.auth.certificates import CertificateAuthenticator
from espd.ike.codec import ExchangeType
from espd.ike.crypto.cipher import IntegrityError
from espd.ike.crypto.secret import Secret
from espd.ike.engine import fragmentation, nat_follow
from espd.ike.engine.admission import CookieJar
from espd.ike.engine.deadlines import Deadlines
from espd.ike.engine.intake import Intake
from espd.ike.engine.transport import Transport
from espd.ike.engine.view import EMPTY_SNAPSHOT, Snapshot, ike_sa_view
from espd.ike.keylog import KeyLog
from espd.ike.sa.child_sa import ChildSa, ChildState
from espd.ike.sa.ike_sa import Endpoint, IkeSa, IkeState
from espd.ike.sa.windows import Outstanding
from espd.ike.settings import ChildPolicy, IkeSettings

REKEYED_LINGER = 2.0  # s a rekeyed Child SA's inbound still takes packets in flight

log = logging.getLogger("espd.ike")

ResponseHandler = Callable[["IkeEngine", IkeSa, codec.Message], None]


@dataclass(frozen=True)
class ChildEvent:
    """What the engine tells observers (tests, show) about a Child SA."""

    kind: str  # "up" | "rekeyed" | "down" | "failed" | "moved" (the IKE SA: no child)
    ike_sa: int
    child: ChildSa | None
    reason: str = ""


class RateLimitedLog:
    """At most ``burst`` lines per ``period`` seconds per key; the rest are counted."""

    def __init__(self, period: float = 10.0, burst: int = 5) -> None:
        self.period, self.burst = period, burst
        self._seen: dict[str, list[float]] = {}
        self.suppressed = 0

    def warning(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        times = [t for t in self._seen.get(key, []) if now - t < self.period]
        if len(times) >= self.burst:
            self.suppressed += 1
            self._seen[key] = times
            return
        times.append(now)
        self._seen[key] = times
        log.warning(message, *args)


class IkeEngine:
    """All IKE SAs of one daemon. ``owner`` follows keying/owner.py's client contract."""

    def __init__(self, settings: IkeSettings, owner: object, transport: Transport,
                 loop: asyncio.AbstractEventLoop | None = None,
                 child_sa_keys: type | None = None) -> None:
        """``child_sa_keys`` is the owner's ChildSaKeys class (keying/owner.py; a test's
        fake owner brings its own)."""
        self._authenticators: dict[object, PskAuthenticator] = {}
        self.peer_addresses: frozenset[str] = frozenset()  # the settings' peers, as text
        self.settings = settings  # takes the engine's own copies of the keys
        self.owner = owner
        if child_sa_keys is None:
            from espd.keying.owner import ChildSaKeys as child_sa_keys
        self.child_sa_keys = child_sa_keys
        self.transport = transport
        self.loop = loop or asyncio.get_event_loop()
        # one context for all of the engine's timers instead of a copy per TimerHandle
        # (a hub holds thousands); the loop runs one callback at a time, and the engine
        # sets no context variables, so none is seen by another timer
        self._timer_context = contextvars.copy_context()
        # the SA and Child SA timers: one heap behind one loop timer (deadlines.py: a
        # Deadline costs about 90 B less than a TimerHandle, and a hub keeps one or two
        # per tunnel); the bound methods they call are made once, not once per timer
        self.deadlines = Deadlines(self.loop, self._timer_context)
        self._fire_timer = self._fire
        self._child_rekey_timer = self._child_rekey_due
        self.sas: dict[bytes, IkeSa] = {}  # by our SPI
        # the same IKE SAs by peer address; always keyed by each SA's current remote
        # address (register, remove_ike_sa and peer_address_changed keep it so)
        self.sas_by_peer: dict[object, dict[bytes, IkeSa]] = {}
        self.half_open: dict[tuple[Endpoint, bytes], IkeSa] = {}  # responder: (peer, SPIi)
        # half-open SAs per peer address; always the counts of half_open's keys
        self.half_open_by_source: collections.Counter = collections.Counter()
        self.cookies = CookieJar(settings.limits.cookie_secret_lifetime, self.now)
        self.children: dict[int, tuple[IkeSa, ChildSa]] = {}  # by our inbound SPI
        # the same, per crypto map entry (child_of): always the entries of `children`,
        # which only index_child and drop_child change
        self.children_by_entry: dict[tuple[str, int], dict[int, tuple[IkeSa, ChildSa]]] = {}
        self.counters: collections.Counter[str] = collections.Counter()
        self.events: list[ChildEvent] = []
        self.observers: list[Callable[[ChildEvent], None]] = []
        self.rate_log = RateLimitedLog()
        self.keylog = KeyLog(settings.key_log) if settings.key_log else None
        self._ident = 0
        # what show and metrics read (view.py): one cached view per registered IKE SA, by
        # ident; an SA that may have changed since is in `_stale`, and only those views
        # are rebuilt by the next snapshot(). Invariant: whatever changes an IKE SA marks
        # it (touch) at an entry point: a datagram for it, its timers, the owner's events
        # about its Child SAs, register/remove, requests, responses, emit.
        self._views = EMPTY_SNAPSHOT.table
        self._stale: dict[IkeSa, None] = {}
        self._receiving: IkeSa | None = None  # receive(): the SA a datagram is for
        # received IKE per loop turn: configured peers first, the rest on a budget
        self.intake = Intake(self.loop, lambda host: host in self.peer_addresses,
                             self.counters)
        transport.attach(self.receive, self.intake)

    # --- keys ----------------------------------------------------------------------

    @property
    def settings(self) -> IkeSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: IkeSettings) -> None:
        """New settings take effect for new negotiations; the engine keeps its own copies
        of the pre-shared keys, one authenticator per peer, so the configuration's
        buffers may be wiped once this returns."""
        self._settings = settings
        self.peer_addresses = frozenset(str(peer.address) for peer in settings.peers)
        old, self._authenticators = self._authenticators, {
            peer.address: self._authenticator_for(peer, settings) for peer in settings.peers}
        for authenticator in old.values():
            authenticator.wipe()
        # RFC 8784 PPKs: copies of our own too, by peer address (the key only)
        old_ppks, self._ppks = getattr(self, "_ppks", {}), {
            peer.address: Secret(peer.ppk.key) for peer in settings.peers
            if peer.ppk is not None}
        for key in old_ppks.values():
            key.wipe()

    def ppk_key(self, peer: object) -> Secret:
        """The engine's copy of the peer's post-quantum preshared key (RFC 8784)."""
        return self._ppks[peer.address]  # type: ignore[attr-defined]

    @staticmethod
    def _authenticator_for(peer, settings: IkeSettings):
        if peer.auth == "certificate":
            if settings.certificate is None or settings.trust is None:
                raise ValueError(f"peer {peer.address}: certificate authentication needs our "
                                 "certificate and the trusted CAs")
            return CertificateAuthenticator(settings.certificate, settings.trust)
        return PskAuthenticator(peer.psk.local, peer.psk.remote)

    def authenticator(self, peer: object):
        """The peer's authenticator: PskAuthenticator or CertificateAuthenticator."""
        return self._authenticators[peer.address]  # type: ignore[attr-defined]

    # --- identifiers ---------------------------------------------------------------

    def new_ident(self) -> int:
        self._ident += 1
        return self._ident

    def new_ike_spi(self) -> bytes:
        while True:
            spi = secrets.token_bytes(8)
            if spi != bytes(8) and spi not in self.sas:
                return spi

    def new_child_spi(self) -> int:
        while True:
            spi = int.from_bytes(os.urandom(4), "big")
            if spi >= 256 and spi not in self.children:
                return spi

    def now(self) -> float:
        return self.loop.time()

    # --- starting IKE SAs ---------------------------------------------------------

    def initiate(self, policy: ChildPolicy, peer_index: int = 0) -> IkeSa | None:
        """Start an IKE SA (and its first Child SA) for ``policy`` with its n-th peer."""
        from espd.ike.exchanges import ike_sa_init

        if peer_index >= len(policy.peers):
            return None
        return ike_sa_init.start(self, policy, peer_index)

    def initiate_entry(self, map_name: str, seq: int) -> IkeSa | None:
        for policy in self.settings.children:
            if policy.key == (map_name, seq):
                return self.initiate(policy)
        raise KeyError(f"no crypto map entry {map_name} {seq} with keying = \"ike\"")

    def start_immediate(self) -> None:
        """Bring up every map entry with ``start = "immediate"`` that has no Child SA."""
        for policy in self.settings.children:
            if policy.start == "immediate" and self.child_of(policy) is None \
                    and self.sa_for(policy) is None:
                self.initiate(policy)

    def sa_for(self, policy: ChildPolicy) -> IkeSa | None:
        """A live IKE SA with one of this policy's peers (the first, in peer order).
        Through the peer index: O(the policy's peers), not O(IKE SAs)."""
        for peer in policy.peers:
            for sa in self.sas_by_peer.get(peer, {}).values():
                if sa.state not in (IkeState.DELETING, IkeState.DELETED) and \
                        sa.rekeyed_by is None:
                    return sa
        return None

    def child_of(self, policy: ChildPolicy) -> ChildSa | None:
        """A live Child SA of the policy's entry: O(its entry's Child SAs)."""
        for _sa, child in self.children_by_entry.get(policy.key, {}).values():
            if child.entry == policy.key and child.state in (
                    ChildState.CREATING, ChildState.INSTALLED, ChildState.REKEYING):
                return child
        return None

    # --- the SA owner's events (on the loop) ---------------------------------------

    def on_acquire(self, entry: tuple[str, int], *_packet: object) -> None:
        """A packet hit a PROTECT rule of ``entry`` with no SA: negotiate one (IOS)."""
        policy = self.settings.child(entry)  # by dict: a hub has thousands of entries
        if policy is None or policy.start == "manual" or self.child_of(policy) is not None:
            return
        self.counters["acquires"] += 1
        sa = self.sa_for(policy)
        if sa is None:
            self.initiate(policy)
        elif sa.state == IkeState.ESTABLISHED:
            from espd.ike.exchanges import create_child_sa

            create_child_sa.start_new_child(self, sa, policy)

    def on_soft_expired(self, handle: object, what: str) -> None:
        found = self._by_handle(handle)
        if found is not None:
            from espd.ike.exchanges import create_child_sa

            self.touch(found[0])
            create_child_sa.start_rekey(self, *found)
            self.touch(found[0])

    def on_hard_expired(self, handle: object) -> None:
        found = self._by_handle(handle)
        if found is not None:
            sa, child = found
            log.info("%s %s: hard lifetime reached; deleted (traffic dropped until a new "
                     "Child SA is up)", sa, child)
            self.touch(sa)
            self.delete_child(sa, child, notify_peer=True, reason="hard lifetime")
            self.touch(sa)

    def on_peer_moved(self, handle: object, peer: str, port: int) -> None:
        """Authenticated ESP of a Child SA made with follow_peer came from `peer`:`port`
        (the owner moved that pair already): the IKE SA and its other Child SAs follow."""
        import ipaddress

        found = self._by_handle(handle)
        if found is not None:
            self.touch(found[0])
            nat_follow.follow(self, found[0], Endpoint(ipaddress.ip_address(peer), port), "esp")
            self.touch(found[0])

    def on_ike_datagram(self, local: object, lport: int, remote: object, rport: int,
                        data: bytes) -> None:
        """UDP 4500 IKE punted by the data plane (non-ESP marker already stripped)."""
        self.on_ike_datagrams([(local, lport, remote, rport, data)])

    def on_ike_datagrams(self, batch: list[tuple[str, int, str, int, bytes]]) -> None:
        """One loop turn's batch of punted UDP 4500 IKE, through the intake."""
        self.intake.take([(data, (local, lport), (remote, rport))
                          for local, lport, remote, rport, data in batch], self._punted)

    def _punted(self, data: bytes, local: tuple[str, int], remote: tuple[str, int]) -> None:
        import ipaddress

        try:
            here = Endpoint(ipaddress.ip_address(local[0]), local[1])
            there = Endpoint(ipaddress.ip_address(remote[0]), remote[1])
        except ValueError:
            self.counters["malformed"] += 1
            return
        self.receive(data, here, there)

    def _by_handle(self, handle: object) -> tuple[IkeSa, ChildSa] | None:
        # `children` is keyed by each Child SA's inbound SPI, which its handle carries: one
        # look-up per owner event (soft/hard expiry, peer moved), not a walk of a hub's SAs;
        # a stale handle (its Child SA gone or replaced) finds nothing
        found = self.children.get(getattr(handle, "spi_in", -1))
        return found if found is not None and found[1].handle == handle else None

    # --- receive ------------------------------------------------------------------

    def receive(self, data: bytes, local: Endpoint, remote: Endpoint) -> None:
        outer, self._receiving = self._receiving, None  # the datagram's SA, once found
        try:
            self._receive(data, local, remote)
        except Exception:  # the invariant above: count, log, never raise
            self.counters["internal_errors"] += 1
            log.exception("IKE: internal error handling a message from %s", remote)
        finally:
            if self._receiving is not None:  # its handler may have changed it since
                self.touch(self._receiving)
            self._receiving = outer

    def _receive(self, data: bytes, local: Endpoint, remote: Endpoint) -> None:
        try:
            message = codec.decode_message(data)
        except codec.ParseError as err:
            self._malformed(remote, str(err))
            return
        header = message.header
        if header.exchange == ExchangeType.IKE_SA_INIT:
            from espd.ike.exchanges import ike_sa_init

            if header.is_response:
                sa = self.sas.get(header.spis.initiator)
                if sa is not None and sa.initiator and sa.state == IkeState.INIT_SENT \
                        and sa.requests.matches(header.message_id, header.exchange):
                    self.touch(sa)
                    self._receiving = sa
                    self._response(sa, message, data)
                else:
                    self.counters["unexpected_responses"] += 1
            else:
                ike_sa_init.on_request(self, message, data, local, remote)
            return
        ours = header.spis.responder if header.from_initiator else header.spis.initiator
        sa = self.sas.get(ours)
        if sa is not None:
            self.touch(sa)
            self._receiving = sa
        if sa is None or sa.spis != (header.spis.initiator, header.spis.responder) \
                or sa.sk_in is None:
            self.counters["unknown_spi"] += 1
            self.rate_log.warning("spi", "IKE: message for an unknown IKE SA from %s", remote)
            return
        if header.from_initiator == sa.initiator:  # the peer claims our role
            self._malformed(remote, "initiator flag does not match the IKE SA's roles")
            return
        if header.is_response and not sa.requests.matches(header.message_id,
                                                          header.exchange):
            self.counters["unexpected_responses"] += 1
            return
        number = fragmentation.number_of(message)
        if not header.is_response:
            verdict = sa.responses.classify(header.message_id)
            if verdict == "retransmit":
                if number not in (None, 1):  # RFC 7383 2.6.1: fragment 1 alone answers
                    return
                self._answer_retransmit(sa, data, number, local, remote)
                return
            if verdict == "stale":
                self.counters["stale_requests"] += 1
                return
        try:
            if number is None:
                message = codec.decrypt_message(data, sa.sk_in, message)
            else:
                whole = fragmentation.receive(self, sa, data, header.is_response)
                if number == 1 and not header.is_response:
                    sa.responses.heard(header.message_id, data)
                if whole is None:
                    return  # more fragments to come
                message = whole
        except IntegrityError:
            self._bad_icv(sa, remote)
            return
        except codec.ParseError as err:
            self._malformed(remote, str(err))
            if err.notify is not None and not header.is_response:
                if number is None:  # it passed the ICV: a retransmission gets this answer
                    sa.responses.heard(header.message_id, data)
                # (UNSUPPORTED_CRITICAL_PAYLOAD names the payload type in its data)
                self.respond(sa, message, [codec.Notify(err.notify, err.data)], local, remote)
            return
        sa.last_heard = self.now()
        if remote != sa.remote:  # authenticated and new (replays and retransmits stop above)
            nat_follow.follow(self, sa, remote, "ike")
        if header.is_response:
            self._response(sa, message, data)
        else:
            if number is None:
                sa.responses.heard(header.message_id, data)
            self._request(sa, message, local, remote)

    def _answer_retransmit(self, sa: IkeSa, data: bytes, number: int | None,
                           local: Endpoint, remote: Endpoint) -> None:
        """The cached response again, only for a copy that passes the ICV: anyone can
        send the same header with the same message ID, and an unauthenticated copy that
        made us re-send would turn espd into a reflector (RFC 7296 2.1). A copy is the
        request byte for byte (which also covers a request sealed with keys that
        IKE_INTERMEDIATE has replaced since), or one that opens with the current keys
        (a peer may fragment its retransmission differently, RFC 7383 2.5)."""
        if sa.responses.is_copy(data):
            self._resend_response(sa, local, remote)
            return
        try:
            if number is None:
                codec.decrypt_message(data, sa.sk_in)
            else:  # fragment 1, authenticated alone; the held reassembly is not touched
                codec.decrypt_fragment(data, sa.sk_in)
        except IntegrityError:
            self._bad_icv(sa, remote)
            return
        except codec.ParseError as err:
            if err.notify is None:  # framing that cannot be authenticated
                self._malformed(remote, str(err))
                return
            # else it passed the ICV and its inner chain is bad: the request that was
            # answered with INVALID_SYNTAX (or UNSUPPORTED_CRITICAL_PAYLOAD) again
        self._resend_response(sa, local, remote)

    def _bad_icv(self, sa: IkeSa, remote: Endpoint) -> None:
        self.counters["integrity_failures"] += 1
        self.rate_log.warning("icv", "IKE: %s: message with a bad ICV from %s dropped", sa,
                              remote)

    def _resend_response(self, sa: IkeSa, local: Endpoint, remote: Endpoint) -> None:
        self.counters["retransmitted_requests"] += 1
        for datagram in sa.responses.last_response:
            self.transport.send(local, remote, datagram)

    def _malformed(self, remote: Endpoint, why: str) -> None:
        self.counters["malformed"] += 1
        self.rate_log.warning("malformed", "IKE: malformed message from %s dropped: %s",
                              remote, why)

    def _request(self, sa: IkeSa, message: codec.Message, local: Endpoint,
                 remote: Endpoint) -> None:
        from espd.ike.exchanges import create_child_sa, ike_auth, ike_intermediate, informational

        exchange = message.header.exchange
        if exchange == ExchangeType.IKE_INTERMEDIATE and sa.state == IkeState.INIT_DONE:
            ike_intermediate.on_request(self, sa, message, local, remote)
        elif exchange == ExchangeType.IKE_AUTH and sa.state == IkeState.INIT_DONE:
            if ike_intermediate.auth_allowed(self, sa, message, local, remote):
                ike_auth.on_request(self, sa, message, local, remote)
        elif sa.state not in (IkeState.ESTABLISHED, IkeState.REKEYING, IkeState.DELETING):
            self._malformed(remote, f"{_name(exchange)} request in state {sa.state.value}")
        elif exchange == ExchangeType.CREATE_CHILD_SA:
            create_child_sa.on_request(self, sa, message, local, remote)
        elif exchange == ExchangeType.INFORMATIONAL:
            informational.on_request(self, sa, message, local, remote)
        elif exchange == ExchangeType.IKE_FOLLOWUP_KE:
            from espd.ike.exchanges import followup_ke

            followup_ke.on_request(self, sa, message, local, remote)
        else:
            self._malformed(remote, f"unexpected {_name(exchange)} request")

    def _response(self, sa: IkeSa, message: codec.Message, data: bytes) -> None:
        done = sa.requests.done()
        fragmentation.discard(self, sa, True)  # a response is in: no other is pending
        if done is None or done.handler is None:
            return
        if done.exchange == ExchangeType.IKE_SA_INIT:
            sa.init_response = data  # AUTH signs the response exactly as received
        done.handler(self, sa, message)
        self.next_request(sa)

    # --- send ---------------------------------------------------------------------

    def respond(self, sa: IkeSa, request: codec.Message, payloads: list,
                local: Endpoint, remote: Endpoint) -> None:
        """Seal and send the response to ``request`` where it came from; cache it."""
        self.touch(sa)
        header = request.header.response(original_initiator=sa.initiator)
        datagrams = fragmentation.seal(self, sa, header, payloads, local)
        sa.responses.answered(request.header.message_id, datagrams)
        for datagram in datagrams:
            self.transport.send(local, remote, datagram)

    def queue_request(self, sa: IkeSa, start: Callable[[], None]) -> None:
        """Run ``start`` (which calls send_request) once the window is free."""
        if sa.requests.busy:
            if sa.queue is None:
                sa.queue = []
            sa.queue.append(start)
        else:
            start()

    def next_request(self, sa: IkeSa) -> None:
        while sa.queue and not sa.requests.busy and sa.state != IkeState.DELETED:
            sa.queue.pop(0)()

    def send_request(self, sa: IkeSa, exchange: ExchangeType, payloads: list,
                     handler: ResponseHandler, *, clear: bool = False) -> tuple[bytes, ...]:
        """Seal and send a request on ``sa`` (its window must be free: queue_request);
        ``handler`` gets the decrypted response. Returns the datagrams as sent (several:
        RFC 7383 fragments, retransmitted as a set)."""
        self.touch(sa)
        message_id = sa.requests.take_id()
        header = codec.request_header(codec.SpiPair(sa.spi_i, sa.spi_r), exchange, message_id,
                                      original_initiator=sa.initiator)
        if clear:
            datagrams: tuple[bytes, ...] = (
                codec.encode_message(codec.Message(header, tuple(payloads))),)
        else:
            datagrams = fragmentation.seal(self, sa, header, payloads)
        outstanding = Outstanding(message_id, exchange, datagrams, handler=handler)
        sa.requests.sent(outstanding)
        self._transmit(sa, outstanding)
        self.counters[f"requests_{_name(exchange)}"] += 1
        return datagrams

    def resend_init(self, sa: IkeSa, datagram: bytes, handler: ResponseHandler) -> None:
        """IKE_SA_INIT again with message ID 0 (after COOKIE or INVALID_KE_PAYLOAD)."""
        sa.requests.done()
        outstanding = Outstanding(0, ExchangeType.IKE_SA_INIT, (datagram,), handler=handler)
        sa.requests.sent(outstanding)
        self._transmit(sa, outstanding)

    def _transmit(self, sa: IkeSa, outstanding: Outstanding) -> None:
        for datagram in outstanding.datagrams:
            self.transport.send(sa.local, sa.remote, datagram)
        delay = self.settings.retransmit_timeout * 2 ** (outstanding.tries - 1)
        outstanding.timer = self.loop.call_later(delay, self._retransmit, sa, outstanding,
                                                 context=self._timer_context)

    def _retransmit(self, sa: IkeSa, outstanding: Outstanding) -> None:
        self.touch(sa)
        try:
            if sa.requests.outstanding is not outstanding:
                return
            if outstanding.tries >= self.settings.retransmit_tries:
                self.counters["peers_dead"] += 1
                self.ike_failed(sa, f"no answer to {_name(outstanding.exchange)} after "
                                    f"{outstanding.tries} tries", peer_dead=True)
                return
            outstanding.tries += 1
            self.counters["retransmissions"] += 1
            self._transmit(sa, outstanding)
        except Exception:
            self.counters["internal_errors"] += 1
            log.exception("IKE: internal error retransmitting for %s", sa)

    # --- state changes ------------------------------------------------------------

    def register(self, sa: IkeSa) -> None:
        self.touch(sa)
        self.sas[sa.local_spi] = sa
        self.sas_by_peer.setdefault(sa.remote.address, {})[sa.local_spi] = sa

    def peer_address_changed(self, sa: IkeSa, before: object) -> None:
        """`sa.remote` was given a new address (NAT follow, IKE_AUTH from a floated peer)."""
        self.touch(sa)
        if before != sa.remote.address and self.sas.get(sa.local_spi) is sa:
            self._unindex_peer(sa, before)
            self.sas_by_peer.setdefault(sa.remote.address, {})[sa.local_spi] = sa

    def ike_sas_of(self, address: object) -> list[IkeSa]:
        """The registered IKE SAs whose peer is now at `address`."""
        return list(self.sas_by_peer.get(address, {}).values())

    def _unindex_peer(self, sa: IkeSa, address: object) -> None:
        same = self.sas_by_peer.get(address)
        if same is not None and same.get(sa.local_spi) is sa:
            del same[sa.local_spi]
            if not same:
                del self.sas_by_peer[address]

    def emit(self, kind: str, sa: IkeSa, child: ChildSa | None, reason: str = "") -> None:
        self.touch(sa)  # before the observers, who may take a snapshot
        event = ChildEvent(kind, sa.ident, child, reason)
        self.events.append(event)
        del self.events[:-1000]
        for observer in self.observers:
            observer(event)
        if sa.reauth is not None:
            from espd.ike.exchanges import reauth

            reauth.on_child_event(self, sa, kind, child)

    def ike_failed(self, sa: IkeSa, reason: str, *, peer_dead: bool = False) -> None:
        """Drop an IKE SA locally (no DELETE: the peer is gone or never agreed)."""
        was_setting_up = sa.state in (IkeState.INIT_SENT, IkeState.AUTH_SENT)
        log.warning("%s failed: %s", sa, reason)
        sa.failure = reason
        self.remove_ike_sa(sa)
        policy = sa.policy
        if was_setting_up and peer_dead and isinstance(policy, ChildPolicy) and \
                sa.reauth is None:  # a reauthentication's new SA: the old one runs on
            index = policy.peers.index(sa.remote.address) if sa.remote.address in \
                policy.peers else len(policy.peers)
            if index + 1 < len(policy.peers):
                log.info("IKE: trying the next peer of %s %d: %s", policy.map_name,
                         policy.seq, policy.peers[index + 1])
                self.initiate(policy, index + 1)

    def remove_ike_sa(self, sa: IkeSa) -> None:
        """Forget an IKE SA: its Child SAs retired from the owner, every key wiped."""
        from espd.ike.exchanges import create_child_sa, followup_ke, reauth

        followup_ke.abandon_all(sa, "IKE SA deleted")
        reauth.on_removed(self, sa)
        create_child_sa.collision_on_removal(self, sa)  # the peer's new IKE SA keeps them
        self.touch(sa)  # its view goes with it (snapshot)
        for child in list(sa.children.values()):
            self.drop_child(sa, child, "IKE SA deleted")
        sa.cancel_timers()
        sa.queue = None
        sa.state = IkeState.DELETED
        if self.sas.get(sa.local_spi) is sa:
            del self.sas[sa.local_spi]
            self._unindex_peer(sa, sa.remote.address)
        self.forget_half_open(sa)
        sa.wipe()

    def add_half_open(self, sa: IkeSa) -> None:
        """The SA keeps its key (its ``remote`` may float before IKE_AUTH is done), so
        forgetting it costs O(1), not a walk of up to ``limits.half_open`` entries."""
        sa.half_open_key = (sa.remote, sa.spi_i)
        self.half_open[sa.half_open_key] = sa
        self.half_open_by_source[sa.remote.address] += 1

    def forget_half_open(self, sa: IkeSa) -> None:
        key, sa.half_open_key = sa.half_open_key, None
        if key is None or self.half_open.get(key) is not sa:
            return
        del self.half_open[key]
        self.half_open_by_source[key[0].address] -= 1
        if self.half_open_by_source[key[0].address] <= 0:
            del self.half_open_by_source[key[0].address]

    def drop_child(self, sa: IkeSa, child: ChildSa, reason: str) -> None:
        """Retire a Child SA from the owner and forget it (no DELETE sent)."""
        self.touch(sa)
        child.cancel_timers()
        if child.handle is not None:
            # a rekeyed pair's inbound SA still takes the packets the peer sent before
            # it switched; its outbound serves no rule by now (the successor does)
            linger = REKEYED_LINGER if child.rekeyed_by is not None else 0.0
            try:
                self.owner.retire_child(child.handle, linger=linger)
            except Exception:
                log.exception("IKE: the SA owner could not retire %s", child)
            child.handle = None
        if child.state != ChildState.DELETED:
            log.info("%s %s deleted: %s", sa, child, reason)
            self.emit("down", sa, child, reason)
        child.state = ChildState.DELETED
        sa.children.pop(child.spi_in, None)
        if self.children.get(child.spi_in, (None, None))[1] is child:
            del self.children[child.spi_in]
            same = self.children_by_entry.get(child.entry, {})
            same.pop(child.spi_in, None)
            if not same:
                self.children_by_entry.pop(child.entry, None)
        child.wipe()

    def index_child(self, sa: IkeSa, child: ChildSa) -> None:
        """`child` is installed under `sa` (or moved to it by an IKE SA rekey)."""
        self.children[child.spi_in] = (sa, child)
        self.children_by_entry.setdefault(child.entry, {})[child.spi_in] = (sa, child)

    def delete_child(self, sa: IkeSa, child: ChildSa, *, notify_peer: bool,
                     reason: str) -> None:
        from espd.ike.exchanges import informational

        if notify_peer and sa.state == IkeState.ESTABLISHED:
            informational.start_delete_child(self, sa, child, reason)
        else:
            self.drop_child(sa, child, reason)

    def delete_ike_sa(self, sa: IkeSa, reason: str = "deleted by request") -> None:
        from espd.ike.exchanges import informational

        informational.start_delete_ike(self, sa, reason)

    def schedule(self, sa: IkeSa, name: str, delay: float, callback: Callable[..., None],
                 *args: object) -> None:
        """An SA timer, ``callback(*args)``, that never raises out of the loop. (A bound
        method and its arguments: no closure per timer, which a hub holds thousands of.)"""
        sa.set_timer(name, self.deadlines.call_later(max(0.0, delay), self._fire_timer, sa,
                                                     name, callback, args))

    def _fire(self, sa: IkeSa, name: str, callback: Callable[..., None], args: tuple
              ) -> None:
        sa.timers.pop(name, None)
        if sa.state == IkeState.DELETED:
            return
        self.touch(sa)
        try:
            callback(*args)
        except Exception:
            self.counters["internal_errors"] += 1
            log.exception("IKE: internal error in timer %s of %s", name, sa)
        self.touch(sa)

    def schedule_child_rekey(self, sa: IkeSa, child: ChildSa, seconds: int, *,
                             delay: float | None = None) -> None:
        """Rekey ``child`` before its lifetime ends, or after ``delay`` seconds (a rekey
        put off); the IKE SA may have been rekeyed by then: the timer looks up its
        current one."""
        if not seconds and delay is None:
            return
        if child.rekey_timer is not None:
            child.rekey_timer.cancel()  # type: ignore[attr-defined]
        child.rekey_timer = self.deadlines.call_later(
            self.jittered(seconds) if delay is None else delay, self._child_rekey_timer, child)

    def _child_rekey_due(self, child: ChildSa) -> None:
        from espd.ike.exchanges import create_child_sa

        child.rekey_timer = None
        current = self.children.get(child.spi_in)
        if current is None or current[1] is not child:
            return
        self.touch(current[0])
        try:
            create_child_sa.start_rekey(self, current[0], child)
        except Exception:
            self.counters["internal_errors"] += 1
            log.exception("IKE: internal error rekeying %s", child)
        self.touch(current[0])

    def schedule_ike_timers(self, sa: IkeSa) -> None:
        """IKE SA rekey before its lifetime, reauthentication, dead peer detection."""
        from espd.ike.exchanges import create_child_sa, reauth

        if self.settings.ike_lifetime:
            self.schedule(sa, "ike-rekey", self.jittered(self.settings.ike_lifetime),
                          create_child_sa.start_ike_rekey, self, sa)
        if self.settings.reauth_time:
            self.schedule(sa, "ike-reauth", self.jittered(self.settings.reauth_time),
                          reauth.start, self, sa)
        if self.settings.dpd.interval > 0:
            self.schedule(sa, "dpd", self.settings.dpd.interval, self._dpd, sa)

    def _dpd(self, sa: IkeSa) -> None:
        """Every interval: a liveness check if the peer was silent (periodic: no IKE
        message; on-demand: no IKE message and no inbound ESP) for the interval."""
        from espd.ike.exchanges import informational

        interval = self.settings.dpd.interval
        quiet = self.now() - sa.last_heard >= interval
        if quiet and self.settings.dpd.mode == "on-demand":
            quiet = not self._esp_heard_within(sa, interval)
        if quiet and sa.state == IkeState.ESTABLISHED and not sa.requests.busy:
            informational.start_dpd(self, sa)
        self.schedule(sa, "dpd", interval, self._dpd, sa)

    def _esp_heard_within(self, sa: IkeSa, interval: float) -> bool:
        for child in sa.children.values():
            if child.handle is None:
                continue
            try:
                last_in = self.owner.child_usage(child.handle).get("last_in")
            except Exception:
                continue
            if last_in is not None and time.monotonic() - last_in < interval:
                return True
        return False

    def jittered(self, lifetime: float) -> float:
        """When to rekey an SA of ``lifetime`` seconds: before the margin, minus jitter."""
        margin = self.settings.rekey_margin + random.random() * self.settings.rekey_jitter
        return lifetime * (1.0 - min(margin, 0.9))

    def touch(self, sa: IkeSa) -> None:
        """`sa` may have changed: the next snapshot rebuilds its view (O(1))."""
        self._stale[sa] = None

    def snapshot(self) -> Snapshot:
        """An immutable view for show and metrics (call on the loop; hand the result to
        other threads). O(the IKE SAs touched since the last one), not O(IKE SAs)."""
        views, lifetime = self._views, self.settings.ike_lifetime
        for sa in self._stale:
            if self.sas.get(sa.local_spi) is sa:
                views = views.set(sa.ident, ike_sa_view(sa, lifetime))
            else:  # removed (or never registered: a half-open SA is not shown)
                views = views.remove(sa.ident)
        self._stale.clear()
        self._views = views
        return Snapshot(views, tuple(sorted(self.counters.items())), self.now())

    def resync(self) -> Snapshot:
        """Every view rebuilt (O(IKE SAs)): after a reload or an operator's action, which
        may touch any SA, and for tests that check the incremental views against it."""
        self._stale.clear()
        self._views = EMPTY_SNAPSHOT.table
        for sa in sorted(self.sas.values(), key=lambda s: s.ident):
            self._views = self._views.set(sa.ident, ike_sa_view(sa, self.settings.ike_lifetime))
        return self.snapshot()

    def reconfigure(self, settings: IkeSettings) -> None:
        """A reload: new settings for new negotiations; an IKE SA whose peer is gone, or a
        Child SA whose crypto map entry is gone, is deleted (with a DELETE to the peer)."""
        self.settings = settings
        self.cookies.lifetime = settings.limits.cookie_secret_lifetime
        keys = {policy.key for policy in settings.children}  # once, not per IKE SA
        for sa in list(self.sas.values()):
            if sa.state == IkeState.DELETED:
                continue
            if settings.peer(sa.remote.address) is None:
                if sa.state in (IkeState.INIT_SENT, IkeState.INIT_DONE):
                    # never authenticated (a half-open SA from a flood's spoofed
                    # source, say): nobody to tell, nothing to retransmit
                    self.remove_ike_sa(sa)
                else:
                    self.delete_ike_sa(sa, "peer removed from the configuration")
                continue
            for child in list(sa.children.values()):
                if child.entry not in keys:
                    self.delete_child(sa, child, notify_peer=True,
                                      reason="crypto map entry removed")
        self.start_immediate()
        self.resync()

    def close(self) -> None:
        """Stop: every IKE SA forgotten (no DELETE), keys wiped, sockets closed."""
        self.intake.close()
        for sa in list(self.sas.values()) + list(self.half_open.values()):
            self.remove_ike_sa(sa)
        self.deadlines.close()
        self.transport.close()
        for authenticator in self._authenticators.values():
            authenticator.wipe()
        self._authenticators.clear()
        for key in self._ppks.values():
            key.wipe()
        self._ppks.clear()
        if self.keylog is not None:
            self.keylog.close()


def _name(exchange: int) -> str:
    try:
        return ExchangeType(exchange).name
    except ValueError:
        return f"exchange {exchange}"
