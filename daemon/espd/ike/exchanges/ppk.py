"""RFC 8784 post-quantum preshared keys (PPK): who uses one, and with which keys.

    IKE_SA_INIT  initiator with a PPK for the peer: N(USE_PPK); a responder with a PPK
                 for the initiator's address answers N(USE_PPK); both sent it = negotiated
    IKE_AUTH     initiator: AUTH over SK_pi' = prf+(PPK, SK_pi), N(PPK_IDENTITY, 2 | id),
                 and, unless the PPK is required, N(NO_PPK_AUTH, AUTH data over SK_pi)
                 responder: has that PPK_ID -> checks AUTH with SK_pi' (never falls back:
                 a wrong PPK is AUTHENTICATION_FAILED), answers N(PPK_IDENTITY) and signs
                 with SK_pr'; has not -> NO_PPK_AUTH unless it requires a PPK
    after        the side that used it keys everything (Child SAs, rekeys) from SK_d'

Invariants: the PPK itself is only ever a prf key here (keymat.ppk_keys); PPK_IDs are
public (they cross the wire in clear inside SK) and may be logged; keys may not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from espd.ike import codec
from espd.ike.codec import NotifyType
from espd.ike.crypto import keymat
from espd.ike.exchanges.payloads import notify

if TYPE_CHECKING:
    from espd.ike.sa.ike_sa import IkeSa
    from espd.ike.settings import Peer, PostQuantumKey

PPK_ID_OPAQUE, PPK_ID_FIXED = 1, 2  # RFC 8784 3: PPK_ID types; espd (as charon) uses FIXED


def configured(peer: Peer | None) -> PostQuantumKey | None:
    return getattr(peer, "ppk", None) if peer is not None else None


def init_notifies(peer: Peer | None, request: codec.Message | None = None) -> list:
    """N(USE_PPK) for our IKE_SA_INIT: always as initiator with a PPK; as responder only
    when the request had it."""
    if configured(peer) is None:
        return []
    if request is not None and request.notify(NotifyType.USE_PPK) is None:
        return []
    return [notify(NotifyType.USE_PPK)]


def negotiated(peer: Peer | None, message: codec.Message) -> bool:
    """Both sides sent USE_PPK (``message`` is the peer's IKE_SA_INIT; ours had it when
    we have a PPK)."""
    return configured(peer) is not None and message.notify(NotifyType.USE_PPK) is not None


def identity_notify(ppk: PostQuantumKey) -> codec.Notify:
    return notify(NotifyType.PPK_IDENTITY, bytes([PPK_ID_FIXED]) + ppk.ident)


def parse_identity(message: codec.Message) -> bytes | None:
    """The PPK_ID of a PPK_IDENTITY notify, or None (none, or of a type we do not know)."""
    found = message.notify(NotifyType.PPK_IDENTITY)
    if found is None or len(found.data) < 2 or found.data[0] != PPK_ID_FIXED:
        return None
    return bytes(found.data[1:])


def describe(ident: bytes) -> str:
    """A PPK_ID for log lines and show (printable ASCII as is, else hex)."""
    if ident and all(0x21 <= b < 0x7F for b in ident):
        return ident.decode("ascii")
    return "0x" + ident.hex()


def mixed(sa: IkeSa, key) -> keymat.IkeKeys:
    """A copy of the SA's keys with the PPK ``key`` (the engine's copy: engine.ppk_key)
    mixed in (RFC 8784 3); the SA's own stay."""
    return keymat.ppk_keys(sa.prf, key, sa.keys)  # type: ignore[arg-type]


def adopt(sa: IkeSa, keys, ident: bytes) -> None:
    """From now on the SA keys from the PPK-mixed ``keys``; the unmixed ones are wiped."""
    old, sa.keys = sa.keys, keys
    old.wipe()  # type: ignore[union-attr]
    sa.ppk_used, sa.ppk_id = True, ident
