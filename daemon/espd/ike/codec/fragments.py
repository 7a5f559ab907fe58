"""RFC 7383 IKE fragmentation: one protected message split over several messages, each
carrying an SKF payload that is encrypted and integrity-checked on its own.

Send:     ``encrypt_fragments(header, payloads, cipher, max_size)``.
Receive:  ``decrypt_fragment(data, cipher)`` per arriving message, then, once fragments
          1..total are all there, ``reassemble(fragments)``. Collecting fragments (bounded
          memory, a timeout, a retransmission with a different total) is state, so it
          lives with the IKE SA, not here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .chain import decode_chain, encode_chain
from .constants import PayloadType
from .encrypted import EncryptedFragment, SkCipher, check_sealed, pad, unpad
from .errors import ParseError
from .header import HEADER_SIZE, Header, encode_header
from .limits import MAX_FRAGMENTS, MAX_MESSAGE_SIZE
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
