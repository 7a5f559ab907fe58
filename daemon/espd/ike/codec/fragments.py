"""RFC 7383 IKE fragmentation: one protected message split over several messages, each
carrying an SKF payload that is encrypted and integrity-checked on its own.

Send:     ``encrypt_fragments(header, payloads, cipher, max_size)``.
Receive:  ``decrypt_fragment(data, cipher)`` per arriving message, then either
          ``Reassembly.add(fragment)`` (one per message ID being received: it keeps the
          fragments in bounded memory, applies RFC 7383 2.6's rule for a changed total and
          returns the message when complete) or, with all of 1..total at hand,
          ``reassemble(fragments)``. When to give up on an incomplete message is the IKE
          SA's timer: ``Reassembly.started`` is the time the caller created it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .chain import decode_chain, encode_chain
from .constants import PayloadType
from .encrypted import EncryptedFragment, SkCipher, check_sealed, pad, unpad
from .errors import ParseError
from .header import HEADER_SIZE, Header, encode_header
from .limits import MAX_FRAGMENTS, MAX_MESSAGE_SIZE, MAX_REASSEMBLY_SIZE
from .message import Message, decode_message
from .payload import GENERIC_HEADER_SIZE, Payload

SKF_HEADER_SIZE = GENERIC_HEADER_SIZE + 4  # + fragment number and total fragments


@dataclass(frozen=True)
class Fragment:
    """One authenticated, decrypted fragment: ``data`` is its slice of the inner payload
    chain (padding removed); ``first_payload`` is meaningful in fragment 1 only."""

    header: Header
    number: int
    total: int
    first_payload: int
    data: bytes


def _chunk_size(max_size: int, cipher: SkCipher) -> int:
    room = max_size - HEADER_SIZE - SKF_HEADER_SIZE - cipher.iv_size - cipher.icv_size
    return room // cipher.block_size * cipher.block_size - 1


def encrypt_fragments(
    header: Header, payloads: Sequence[Payload], cipher: SkCipher, max_size: int
) -> list[bytes]:
    """The messages carrying ``payloads`` in SKF fragments of at most ``max_size`` bytes
    each (IKE message bytes: the transport subtracts IP, UDP and the non-ESP marker from
    its fragment size first). Always at least one fragment."""
    first, inner = encode_chain(payloads)
    chunk = _chunk_size(min(max_size, MAX_MESSAGE_SIZE), cipher)
    if chunk < 1:
        raise ValueError(f"fragments of {max_size} bytes leave no room for payload data")
    chunks = [inner[i : i + chunk] for i in range(0, len(inner), chunk)] or [b""]
    if len(chunks) > MAX_FRAGMENTS:
        raise ValueError(f"{len(chunks)} fragments needed (limit {MAX_FRAGMENTS})")
    return [
        _seal_fragment(header, first if n == 1 else PayloadType.NONE, n, len(chunks), c, cipher)
        for n, c in enumerate(chunks, start=1)
    ]


def _seal_fragment(
    header: Header, next_type: int, number: int, total: int, chunk: bytes, cipher: SkCipher
) -> bytes:
    plaintext = pad(chunk, cipher.block_size)
    body_size = cipher.iv_size + len(plaintext) + cipher.icv_size
    skf_size = SKF_HEADER_SIZE + body_size
    aad = (
        encode_header(header, PayloadType.SKF, HEADER_SIZE + skf_size)
        + bytes([next_type, 0])
        + skf_size.to_bytes(2, "big")
        + number.to_bytes(2, "big")
        + total.to_bytes(2, "big")
    )
    sealed = cipher.seal(aad, plaintext)
    if len(sealed) != body_size:
        raise ValueError(f"cipher returned {len(sealed)} bytes, the SKF layout needs {body_size}")
    return aad + sealed


def decrypt_fragment(data: bytes, cipher: SkCipher) -> Fragment:
    """Parse, authenticate and decrypt one SKF message. ParseError (``notify`` None: drop)
    for a message that is not a fragment, a fragment number out of 1..total, a total above
    MAX_FRAGMENTS or impossible lengths; the cipher's IntegrityError passes through."""
    outer = decode_message(data)
    skf = outer.payloads[-1] if outer.payloads else None
    if not isinstance(skf, EncryptedFragment):
        raise ParseError("message is not an SKF fragment", None)
    if skf.total > MAX_FRAGMENTS:
        raise ParseError(f"{skf.total} fragments announced (limit {MAX_FRAGMENTS})", None)
    check_sealed(skf.body, cipher, "SKF payload")
    aad = data[: len(data) - len(skf.body)]
    chunk = unpad(cipher.open(aad, skf.body))
    return Fragment(outer.header, skf.number, skf.total, skf.first_payload, chunk)


def reassemble(fragments: Sequence[Fragment]) -> Message:
    """The message that fragments 1..total carry, in any order given. ParseError
    (INVALID_SYNTAX) when one is missing or repeated, when they disagree on the total or
    the exchange and message ID, or when the reassembled chain is malformed."""
    if not fragments:
        raise ParseError("no fragments to reassemble")
    ordered = sorted(fragments, key=lambda f: f.number)
    head = ordered[0].header
    total = ordered[0].total
    for n, fragment in enumerate(ordered, start=1):
        if fragment.number != n or fragment.total != total:
            raise ParseError(f"fragment {fragment.number}/{fragment.total} in a set of {total}")
        if (fragment.header.message_id, fragment.header.exchange) != (
            head.message_id,
            head.exchange,
        ):
            raise ParseError(f"fragment {n} belongs to another message")
    if len(ordered) != total:
        raise ParseError(f"{len(ordered)} of {total} fragments")
    inner = b"".join(f.data for f in ordered)
    return Message(head, decode_chain(ordered[0].first_payload, inner, framed=False))


class Reassembly:
    """The fragments of one message (one message ID of one IKE SA) received so far.

    Invariants: every fragment kept has ``total == self.total`` and the message ID it was
    created for; at most one per number; their data adds up to at most
    MAX_REASSEMBLY_SIZE bytes. Fragments arrive authenticated (``decrypt_fragment``), so a
    larger total is the peer re-fragmenting its retransmission smaller: start over with it;
    a smaller total is a stale retransmission: ignore it (RFC 7383 2.6).
    """

    def __init__(self, message_id: int, started: float) -> None:
        self.message_id = message_id
        self.started = started
        self.total = 0
        self._fragments: dict[int, Fragment] = {}
        self._size = 0

    @property
    def received(self) -> int:
        """How many distinct fragments are held."""
        return len(self._fragments)

    def add(self, fragment: Fragment) -> Message | None:
        """Keep ``fragment``; the whole message once fragments 1..total are all held, else
        None. ParseError (``notify`` None: drop) for a fragment of another message ID or
        one that would take the held data past MAX_REASSEMBLY_SIZE (the reassembly then
        starts over); INVALID_SYNTAX when the complete chain is malformed."""
        if fragment.header.message_id != self.message_id:
            raise ParseError(
                f"fragment of message {fragment.header.message_id}, reassembling {self.message_id}",
                None,
            )
        if fragment.total < self.total:
            return None  # a stale retransmission (RFC 7383 2.6)
        if fragment.total > self.total:
            self.total, self._fragments, self._size = fragment.total, {}, 0
        if fragment.number in self._fragments:
            return None  # a repeat
        if self._size + len(fragment.data) > MAX_REASSEMBLY_SIZE:
            self.total, self._fragments, self._size = 0, {}, 0
            raise ParseError(f"fragments exceed {MAX_REASSEMBLY_SIZE} bytes", None)
        self._fragments[fragment.number] = fragment
        self._size += len(fragment.data)
        if len(self._fragments) < self.total:
            return None
        return reassemble(list(self._fragments.values()))
