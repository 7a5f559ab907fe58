"""Whole IKE messages: header + payload chain, in the clear or protected by SK.

Receive:  ``decode_message(data)`` -> Message (an encrypted one ends in an Encrypted
          payload); then ``decrypt_message(data, cipher)`` for the payloads inside SK.
Send:     ``encode_message(Message)`` for IKE_SA_INIT and other clear messages;
          ``encrypt_message(header, payloads, cipher)`` for everything after it.
RFC 7383 fragments (SKF) are in ``fragments.py``.

The codec sees bare IKE messages: UDP 4500's non-ESP marker (RFC 3948 2.2) belongs to the
transport. The data plane strips it from the datagrams it punts and adds it in
``send_ike``; a transport with its own 4500 socket uses ``natt.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from .chain import decode_chain, encode_chain
from .constants import NotifyType, PayloadType
from .encrypted import Encrypted, SkCipher, check_sealed, pad, unpad
from .errors import ParseError
from .header import HEADER_SIZE, Header, decode_header, encode_header
from .notify import Notify
from .payload import GENERIC_HEADER_SIZE, Payload

P = TypeVar("P", bound=Payload)


@dataclass(frozen=True)
class Message:
    """A header and its payloads in wire order. After ``decrypt_message`` the payloads
    are the ones inside SK (preceded by any that came before SK in the clear)."""

    header: Header
    payloads: tuple[Payload, ...]

    def first(self, cls: type[P]) -> P | None:
        """The first payload of class ``cls`` (e.g. ``Nonce``), or None."""
        for payload in self.payloads:
            if isinstance(payload, cls):
                return payload
        return None

    def all(self, cls: type[P]) -> tuple[P, ...]:
        """Every payload of class ``cls``, in order."""
        return tuple(p for p in self.payloads if isinstance(p, cls))

    def notify(self, notify_type: NotifyType) -> Notify | None:
        """The first Notify of ``notify_type``, or None."""
        for payload in self.payloads:
            if isinstance(payload, Notify) and payload.type == notify_type:
                return payload
        return None

    @property
    def errors(self) -> tuple[Notify, ...]:
        """The error notifies (RFC 7296 3.10.1: types below 16384, known or not)."""
        return tuple(p for p in self.all(Notify) if p.is_error)


def decode_message(data: bytes) -> Message:
    """Parse one IKE message (the UDP payload, without UDP 4500's non-ESP marker).
    Every payload outside SK/SKF is parsed in full; SK/SKF stay sealed. Raises only
    ParseError."""
    header, first, _ = decode_header(data)
    return Message(header, decode_chain(first, data[HEADER_SIZE:]))


def encode_message(message: Message) -> bytes:
    """The wire bytes of ``message``: lengths and next-payload links computed from the
    payloads. ``encode_message(decode_message(x)) == x`` for every message espd accepts
    whose reserved bits are zero (reserved bits in the generic headers are not kept)."""
    first, chain = encode_chain(message.payloads)
    return encode_header(message.header, first, HEADER_SIZE + len(chain)) + chain


def encrypt_message(header: Header, payloads: Sequence[Payload], cipher: SkCipher) -> bytes:
    """A message whose only payload is SK holding ``payloads`` (RFC 7296 3.14): the inner
    chain is padded to ``cipher.block_size``, every length is written, then
    ``cipher.seal(aad, plaintext)`` supplies IV || ciphertext || ICV."""
    first, inner = encode_chain(payloads)
    plaintext = pad(inner, cipher.block_size)
    body_size = cipher.iv_size + len(plaintext) + cipher.icv_size
    sk_size = GENERIC_HEADER_SIZE + body_size
    aad = (
        encode_header(header, PayloadType.SK, HEADER_SIZE + sk_size)
        + bytes([first, 0])
        + sk_size.to_bytes(2, "big")
    )
    sealed = cipher.seal(aad, plaintext)
    if len(sealed) != body_size:
        raise ValueError(f"cipher returned {len(sealed)} bytes, the SK layout needs {body_size}")
    return aad + sealed


def decrypt_message(data: bytes, cipher: SkCipher, outer: Message | None = None) -> Message:
    """Parse, authenticate and decrypt a message protected by SK, and parse the inner
    chain. ParseError with ``notify`` None for a message that is not SK-protected or whose
    SK lengths cannot be right (drop it); whatever ``cipher.open`` raises on a bad ICV
    (espd.ike.crypto.IntegrityError) passes through unchanged (drop and count it); after
    a good ICV, ParseError with INVALID_SYNTAX for a malformed inner chain. ``outer`` is
    ``decode_message(data)`` when the caller has it already (parsed once, not twice)."""
    if outer is None:
        outer = decode_message(data)
    sk = outer.payloads[-1] if outer.payloads else None
    if not isinstance(sk, Encrypted):
        raise ParseError("message is not protected by an SK payload", None)
    check_sealed(sk.body, cipher, "SK payload")
    aad = data[: len(data) - len(sk.body)]
    inner = unpad(cipher.open(aad, sk.body))
    payloads = decode_chain(sk.first_payload, inner, framed=False)
    return Message(outer.header, outer.payloads[:-1] + payloads)


def intermediate_auth_data(message: Message) -> bytes:
    """The bytes an IKE_INTERMEDIATE message contributes to IntAuth (RFC 9242 3.3.2):
    the IKE header and the SK generic header with their lengths as if the inner payloads
    were sent in the clear (no IV, padding, pad length or ICV), followed by the inner
    payloads. ``message`` is what ``decrypt_message`` or ``reassemble`` returned (or what
    is about to be sealed); a fragmented message counts as the unfragmented one. The
    payloads are re-encoded, as strongSwan does, so reserved bits count as zero."""
    first, inner = encode_chain(message.payloads)
    sk_size = GENERIC_HEADER_SIZE + len(inner)
    header = encode_header(message.header, PayloadType.SK, HEADER_SIZE + sk_size)
    return header + bytes([first, 0]) + sk_size.to_bytes(2, "big") + inner
