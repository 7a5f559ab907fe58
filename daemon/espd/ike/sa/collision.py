"""Simultaneous rekeys (RFC 7296 2.8.1, 2.8.2): which of two new SAs is redundant.

Both ends rekeyed the same SA (a Child SA, or the IKE SA itself) at once and each answered
the other's request: two exchanges completed and made two successors. The one made by the
exchange holding the lowest of the four nonces is redundant; the end that initiated that
exchange (the loser) deletes it. The other successor stands, and its initiator (the
winner) deletes the old SA. One rule for both kinds of SA, decided here only.

Invariant: both ends decide from the same four nonces, so they agree whenever both saw
the collision; an end that did not see it (its own answer came first) finishes a normal
rekey, and the other end, getting TEMPORARY_FAILURE or the old SA's DELETE instead of an
answer, lets the peer's successor stand.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Collision:
    """The peer's rekey of an SA that we were rekeying too, as we answered it."""

    nonce_i: bytes  # the peer's: it initiated that exchange
    nonce_r: bytes  # ours, in our answer
    successor: object | None = None  # what that exchange made: a ChildSa or an IkeSa


def we_lose(nonce_i: bytes, nonce_r: bytes, collision: Collision) -> bool:
    """True when our exchange (our ``nonce_i``, the peer's answer ``nonce_r``) holds the
    lowest of the four nonces: the SA it made is the redundant one."""
    return min(nonce_i, nonce_r) < min(collision.nonce_i, collision.nonce_r)
