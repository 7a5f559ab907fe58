"""Who may open an IKE SA with us (RFC 7296 2.6): cookies and caps, before any DH.

Invariant: nothing here computes a key exchange or keeps state for the request; a flood
costs one HMAC and one small reply (or nothing) per datagram.

    cookie = VERSION | HMAC-SHA256(secret[VERSION], Ni | IPi | SPIi)[:16]

The secret is replaced every ``cookie_secret_lifetime`` seconds; a cookie made with the
previous one is still accepted until the next replacement (a peer that asked just before
a change still gets in). Caps: half-open IKE SAs in all and per source address (counted
by the engine), IKE SAs in all.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING

from espd.ike import codec
from espd.ike.codec import NotifyType
from espd.ike.sa.ike_sa import Endpoint

if TYPE_CHECKING:
    from espd.ike.engine.engine import IkeEngine

COOKIE_MAC_SIZE = 16


class CookieJar:
    """The current and previous cookie secrets; ``clock`` gives seconds (the loop's)."""

    def __init__(self, lifetime: float, clock) -> None:
        self.lifetime, self.clock = lifetime, clock
        self.version = secrets.randbelow(256)
        self.secrets: dict[int, bytes] = {self.version: secrets.token_bytes(32)}
        self.rotated = clock()

    def _rotate_if_due(self) -> None:
        now = self.clock()
        if now - self.rotated < self.lifetime:
            return
        previous = self.secrets[self.version] if now - self.rotated < 2 * self.lifetime \
            else None  # idle for two lifetimes: the old secret is stale too
        self.version = (self.version + 1) % 256
        self.secrets = {self.version: secrets.token_bytes(32)}
        if previous is not None:
            self.secrets[(self.version - 1) % 256] = previous
        self.rotated = now

    @staticmethod
    def _mac(secret: bytes, nonce: bytes, remote: Endpoint, spi_i: bytes) -> bytes:
        data = nonce + remote.address.packed + spi_i
        return hmac.new(secret, data, hashlib.sha256).digest()[:COOKIE_MAC_SIZE]

    def make(self, nonce: bytes, remote: Endpoint, spi_i: bytes) -> bytes:
        self._rotate_if_due()
        return bytes([self.version]) + self._mac(self.secrets[self.version], nonce, remote,
                                                 spi_i)

    def valid(self, cookie: bytes, nonce: bytes, remote: Endpoint, spi_i: bytes) -> bool:
        self._rotate_if_due()
        if len(cookie) != 1 + COOKIE_MAC_SIZE or cookie[0] not in self.secrets:
            return False
        expected = self._mac(self.secrets[cookie[0]], nonce, remote, spi_i)
        return hmac.compare_digest(cookie[1:], expected)


def admit(engine: IkeEngine, message: codec.Message, local: Endpoint,
          remote: Endpoint) -> bool:
    """True if this new IKE_SA_INIT request may go on to the key exchange; otherwise it
    has been answered with a COOKIE (or dropped) and counted."""
    limits = engine.settings.limits
    header = message.header
    overall = len(engine.half_open)
    from_source = engine.half_open_by_source[remote.address]
    if overall >= limits.cookie_threshold or from_source >= limits.cookie_threshold_per_source:
        nonce = message.first(codec.Nonce)
        ni = nonce.data if nonce is not None else b""
        offered = message.notify(NotifyType.COOKIE)
        if offered is None or not engine.cookies.valid(offered.data, ni, remote,
                                                       header.spis.initiator):
            if offered is not None:
                engine.counters["cookies_rejected"] += 1
            engine.counters["cookies_sent"] += 1
            cookie = engine.cookies.make(ni, remote, header.spis.initiator)
            reply = codec.Message(header.response(original_initiator=False),
                                  (codec.Notify(NotifyType.COOKIE, cookie),))
            engine.transport.send(local, remote, codec.encode_message(reply))
            return False
        engine.counters["cookies_accepted"] += 1
    if overall >= limits.half_open or from_source >= limits.half_open_per_source:
        engine.counters["half_open_refused"] += 1
        engine.rate_log.warning("halfopen", "IKE: IKE_SA_INIT from %s dropped: %d half-open "
                                "IKE SAs (%d from it)", remote, overall, from_source)
        return False
    if len(engine.sas) >= limits.ike_sas:
        engine.counters["ike_sas_refused"] += 1
        engine.rate_log.warning("ikesas", "IKE: IKE_SA_INIT from %s dropped: %d IKE SAs, "
                                "the configured maximum", remote, len(engine.sas))
        return False
    return True
