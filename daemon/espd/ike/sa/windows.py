"""Message ID windows of size one (RFC 7296 2.3), one per direction of an IKE SA.

Our requests: at most one outstanding; its bytes are kept for retransmission until the
response with its ID arrives. The peer's requests: the next ID we expect, and the last
response we sent, kept so that a retransmitted request is answered from the cache
(never processed twice) only when it is the request we answered: byte for byte (its
SHA-256 as received; fragment 1 of a fragmented one), or sealed with the current keys.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_MESSAGE_ID = 2**32 - 1  # 32 bits; an IKE SA must be rekeyed before it wraps


@dataclass(slots=True)
class Outstanding:
    """A request of ours that waits for its response."""

    message_id: int
    exchange: int
    datagrams: tuple[bytes, ...]  # as sent (several when fragmented)
    tries: int = 1
    timer: object | None = None  # asyncio.TimerHandle of the next retransmission
    handler: Callable | None = None  # called with (IkeSa, decrypted response)


@dataclass(slots=True)
class RequestWindow:
    """IDs of the requests WE send."""

    next_id: int = 0
    outstanding: Outstanding | None = None

    @property
    def busy(self) -> bool:
        return self.outstanding is not None

    def take_id(self) -> int:
        """The ID of a new request; raises RuntimeError while one is outstanding."""
        if self.outstanding is not None:
            raise RuntimeError("window of one: a request is still outstanding")
        if self.next_id > MAX_MESSAGE_ID:
            raise OverflowError("message IDs exhausted; the IKE SA must be rekeyed")
        return self.next_id

    def sent(self, outstanding: Outstanding) -> None:
        self.outstanding = outstanding
        self.next_id = outstanding.message_id + 1

    def matches(self, message_id: int, exchange: int) -> bool:
        """A response is ours only if it carries the outstanding request's ID and
        exchange type (RFC 7296 3.1: a response is of its request's exchange): a clear
        IKE_SA_INIT "response" with the ID of our IKE_INTERMEDIATE is not its answer."""
        return self.outstanding is not None and self.outstanding.message_id == message_id \
            and self.outstanding.exchange == exchange

    def done(self) -> Outstanding | None:
        done, self.outstanding = self.outstanding, None
        if done is not None and done.timer is not None:
            done.timer.cancel()  # type: ignore[attr-defined]
        return done


@dataclass(slots=True)
class ResponseWindow:
    """IDs of the requests the PEER sends."""

    expected_id: int = 0
    last_id: int | None = None
    last_response: tuple[bytes, ...] = field(default=())
    last_request: bytes = b""  # SHA-256 of the answered request as it came (fragment 1)
    _heard: tuple[int, bytes] | None = None  # the same for the request being handled

    def classify(self, message_id: int) -> str:
        """'new' (process it), 'retransmit' (resend the cached response), 'stale'."""
        if message_id == self.expected_id:
            return "new"
        if message_id == self.last_id and self.last_response:
            return "retransmit"
        return "stale"

    def heard(self, message_id: int, datagram: bytes) -> None:
        """A new request passed the ICV (for a fragmented one: its fragment 1)."""
        self._heard = (message_id, hashlib.sha256(datagram).digest())

    def answered(self, message_id: int, datagrams: tuple[bytes, ...]) -> None:
        self.last_id = message_id
        self.last_response = datagrams
        self.expected_id = message_id + 1
        heard, self._heard = self._heard, None
        self.last_request = heard[1] if heard is not None and heard[0] == message_id else b""

    def is_copy(self, datagram: bytes) -> bool:
        """``datagram`` is, byte for byte, the answered request (or its fragment 1)."""
        return bool(self.last_request) and hmac.compare_digest(
            hashlib.sha256(datagram).digest(), self.last_request)
