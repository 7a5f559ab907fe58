"""SK (RFC 7296 3.14) and SKF (RFC 7383) framing through the cipher contract of TEAM.md:
what the codec hands ``seal`` (aad = the message up to the IV, plaintext padded to the
block size) and what it checks before ``open``. Three ciphers follow the contract here: a
toy AEAD, a toy CBC-like cipher with 16-byte blocks, and AES-GCM from `cryptography`
(RFC 5282: 4-byte salt, 8-byte explicit IV)."""

from __future__ import annotations

import hashlib
import hmac
import itertools

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from espd.ike.codec import (
    Delete,
    Encrypted,
    EncryptedFragment,
    ExchangeType,
    Fragment,
    Header,
    HeaderFlags,
    IdInitiator,
    KeGroup,
    KeyExchange,
    Message,
    Nonce,
    Notify,
    NotifyType,
    ParseError,
    PayloadType,
    ProtocolId,
    Reassembly,
    SpiPair,
    TrafficSelector,
    TsInitiator,
    UnknownPayload,
    VendorId,
    decode_message,
    decrypt_fragment,
    decrypt_message,
    encrypt_fragments,
    encrypt_message,
    intermediate_auth_data,
    reassemble,
)
from espd.ike.codec.chain import encode_chain
from espd.ike.codec.limits import MAX_FRAGMENTS


class ToyIntegrityError(Exception):
    """Stands in for espd.ike.crypto.IntegrityError."""


class ToyCipher:
    """Follows the contract: a SHA-256 keystream for secrecy, a truncated HMAC over
    aad || IV || ciphertext for integrity, an IV from a counter. Not cryptography; it
    only lets the codec's framing be tested without the crypto package."""

    def __init__(self, key: bytes, iv_size: int = 8, icv_size: int = 16, block_size: int = 1):
        self.key, self.iv_size, self.icv_size, self.block_size = key, iv_size, icv_size, block_size
        self.counter = itertools.count(1)
        self.seen: list[tuple[bytes, bytes]] = []

    def _stream(self, iv: bytes, size: int) -> bytes:
        blocks = (
            hashlib.sha256(self.key + iv + i.to_bytes(4, "big")).digest()
            for i in range(size // 32 + 1)
        )
        return b"".join(blocks)[:size]

    def _icv(self, data: bytes) -> bytes:
        return hmac.new(self.key, data, hashlib.sha256).digest()[: self.icv_size]

    def seal(self, aad: bytes, plaintext: bytes) -> bytes:
        assert len(plaintext) % self.block_size == 0
        self.seen.append((aad, plaintext))
        iv = next(self.counter).to_bytes(self.iv_size, "big")
        ct = bytes(a ^ b for a, b in zip(plaintext, self._stream(iv, len(plaintext)), strict=True))
        return iv + ct + self._icv(aad + iv + ct)

    def open(self, aad: bytes, body: bytes) -> bytes:
        iv, ct, icv = (
            body[: self.iv_size],
            body[self.iv_size : -self.icv_size],
            body[-self.icv_size :],
        )
        if not hmac.compare_digest(self._icv(aad + iv + ct), icv):
            raise ToyIntegrityError("ICV")
        return bytes(a ^ b for a, b in zip(ct, self._stream(iv, len(ct)), strict=True))


class AesGcmCipher:
    """RFC 5282 AES-GCM-16 for IKEv2 from `cryptography`: nonce = salt (4) || IV (8)."""

    iv_size = 8
    icv_size = 16
    block_size = 1

    def __init__(self, key: bytes, salt: bytes) -> None:
        self.aead, self.salt, self.counter = AESGCM(key), salt, itertools.count(1)

    def seal(self, aad: bytes, plaintext: bytes) -> bytes:
        iv = next(self.counter).to_bytes(8, "big")
        return iv + self.aead.encrypt(self.salt + iv, plaintext, aad)

    def open(self, aad: bytes, body: bytes) -> bytes:
        return self.aead.decrypt(self.salt + body[:8], body[8:], aad)


SPIS = SpiPair(bytes.fromhex("a5f1240c63bf12e6"), bytes.fromhex("9390229b7bc0896b"))
HEADER = Header(SPIS, ExchangeType.IKE_AUTH, 1, HeaderFlags.INITIATOR)
INNER = (
    IdInitiator.fqdn("gwa.example.net"),
    Notify(NotifyType.INITIAL_CONTACT),
    TsInitiator((TrafficSelector.from_network("10.1.0.0/16"),)),
    VendorId(b"espd"),
)
CIPHERS = {
    "toy-aead": lambda: ToyCipher(b"k" * 16),
    "toy-cbc": lambda: ToyCipher(b"k" * 16, iv_size=16, icv_size=16, block_size=16),
    "toy-cbc-8": lambda: ToyCipher(b"k" * 16, iv_size=8, icv_size=12, block_size=8),
    "aes-gcm": lambda: AesGcmCipher(b"\x11" * 32, b"salt"),
}


@pytest.fixture(params=sorted(CIPHERS))
def cipher(request):
    return CIPHERS[request.param]()


def test_sk_round_trip(cipher):
    wire = encrypt_message(HEADER, INNER, cipher)
    outer = decode_message(wire)
    (sk,) = outer.payloads
    assert isinstance(sk, Encrypted) and sk.first_payload == PayloadType.IDi
    assert decrypt_message(wire, cipher) == Message(HEADER, INNER)


@pytest.mark.parametrize("name", ["toy-aead", "toy-cbc", "toy-cbc-8"])
def test_sk_plaintext_is_padded_to_the_block_size_and_aad_is_everything_before_the_iv(name):
    cipher = CIPHERS[name]()  # the toy ciphers record what they were given
    wire = encrypt_message(HEADER, INNER, cipher)
    ((aad, plaintext),) = cipher.seen
    assert aad == wire[: 28 + 4]  # header + SK generic header
    assert aad[16] == PayloadType.SK and int.from_bytes(aad[24:28], "big") == len(wire)
    assert int.from_bytes(aad[30:32], "big") == len(wire) - 28
    _, inner = encode_chain(INNER)
    pad_length = plaintext[-1]
    assert len(plaintext) % cipher.block_size == 0 and pad_length < cipher.block_size
    assert plaintext == inner + bytes(pad_length) + bytes([pad_length])


def test_empty_sk_payload_is_a_liveness_check(cipher):
    header = Header(SPIS, ExchangeType.INFORMATIONAL, 7)
    wire = encrypt_message(header, (), cipher)
    assert decode_message(wire).payloads[0].first_payload == PayloadType.NONE
    assert decrypt_message(wire, cipher).payloads == ()


def test_tampering_anywhere_fails_the_icv_not_the_parser():
    cipher = AesGcmCipher(b"\x22" * 16, b"salt")
    wire = encrypt_message(HEADER, INNER, cipher)
    # every byte but the length fields (changing those is a framing error, tested below)
    for position in [0, 8, 17, 19, 20, 28, 29] + list(range(32, len(wire), 7)):
        tampered = bytearray(wire)
        tampered[position] ^= 0x01
        with pytest.raises(InvalidTag):
            decrypt_message(bytes(tampered), cipher)


def test_a_bad_icv_passes_the_ciphers_error_through():
    cipher = ToyCipher(b"k" * 16)
    wire = bytearray(encrypt_message(HEADER, INNER, cipher))
    wire[-1] ^= 0xFF
    with pytest.raises(ToyIntegrityError):
        decrypt_message(bytes(wire), cipher)


def test_sk_too_short_for_iv_and_icv_is_dropped_before_open():
    cipher = ToyCipher(b"k" * 16, iv_size=16, icv_size=16, block_size=16)
    for body in (b"", bytes(31), bytes(32)):
        wire = _message_with(PayloadType.SK, 0, body)
        with pytest.raises(ParseError) as e:
            decrypt_message(wire, cipher)
        assert e.value.notify is None
    assert cipher.seen == []


def test_sk_not_in_whole_blocks_is_dropped_before_open():
    cipher = ToyCipher(b"k" * 16, iv_size=16, icv_size=16, block_size=16)
    with pytest.raises(ParseError, match="whole 16-byte blocks") as e:
        decrypt_message(_message_with(PayloadType.SK, 0, bytes(16 + 17 + 16)), cipher)
    assert e.value.notify is None


def test_a_clear_message_is_not_mistaken_for_a_protected_one():
    plain = _message_with(PayloadType.VENDOR_ID, 0, b"v")
    with pytest.raises(ParseError, match="not protected") as e:
        decrypt_message(plain, ToyCipher(b"k"))
    assert e.value.notify is None


def _message_with(kind: int, next_payload: int, body: bytes) -> bytes:
    length = 28 + 4 + len(body)
    header = HEADER.spis.initiator + HEADER.spis.responder + bytes([kind, 0x20, 35, 0x08])
    header += (1).to_bytes(4, "big") + length.to_bytes(4, "big")
    return header + bytes([next_payload, 0]) + (4 + len(body)).to_bytes(2, "big") + body


def _sealed_raw(plaintext: bytes, first: int) -> tuple[bytes, ToyCipher]:
    """A correctly authenticated SK message whose plaintext is exactly ``plaintext``."""
    cipher = ToyCipher(b"raw")
    body_size = cipher.iv_size + len(plaintext) + cipher.icv_size
    aad = _message_with(PayloadType.SK, first, bytes(body_size))[:32]
    return aad + cipher.seal(aad, plaintext), cipher


def test_after_a_good_icv_a_bad_pad_length_is_invalid_syntax():
    wire, cipher = _sealed_raw(b"\x00\x00\x00\x05", PayloadType.NONE)
    with pytest.raises(ParseError, match="pad length") as e:
        decrypt_message(wire, cipher)
    assert e.value.notify == NotifyType.INVALID_SYNTAX


def test_after_a_good_icv_a_malformed_inner_chain_is_invalid_syntax():
    _, inner = encode_chain((Nonce(bytes(16)),))
    wire, cipher = _sealed_raw(inner[:-1] + b"\x00", PayloadType.NONCE)
    with pytest.raises(ParseError) as e:
        decrypt_message(wire, cipher)
    assert e.value.notify == NotifyType.INVALID_SYNTAX


def test_an_unknown_critical_payload_inside_sk_is_unsupported_critical_payload():
    cipher = ToyCipher(b"k")
    inner = (Delete(ProtocolId.IKE), UnknownPayload(222, b"?", critical=True))
    with pytest.raises(ParseError) as e:
        decrypt_message(encrypt_message(HEADER, inner, cipher), cipher)
    assert (e.value.notify, e.value.data) == (NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, b"\xde")


def test_sk_nested_inside_sk_is_refused():
    wire, cipher = _sealed_raw(bytes([0, 0, 0, 4]) + b"\x00", PayloadType.SK)
    with pytest.raises(ParseError, match="inside an encrypted payload"):
        decrypt_message(wire, cipher)


def test_a_cipher_that_breaks_the_length_contract_is_caught_on_send():
    class Short(ToyCipher):
        def seal(self, aad: bytes, plaintext: bytes) -> bytes:
            return super().seal(aad, plaintext)[:-1]

    with pytest.raises(ValueError, match="cipher returned"):
        encrypt_message(HEADER, INNER, Short(b"k"))


# --- RFC 7383 fragments -----------------------------------------------------------------

BIG = INNER + (VendorId(bytes(range(256)) * 4), Notify(NotifyType.COOKIE, b"c" * 64))


def test_fragments_round_trip_in_any_order(cipher):
    messages = encrypt_fragments(HEADER, BIG, cipher, max_size=200)
    assert len(messages) > 3 and all(len(m) <= 200 for m in messages)
    fragments = [decrypt_fragment(m, cipher) for m in messages]
    assert [(f.number, f.total) for f in fragments] == [
        (n, len(messages)) for n in range(1, len(messages) + 1)
    ]
    assert fragments[0].first_payload == PayloadType.IDi
    assert {f.first_payload for f in fragments[1:]} == {PayloadType.NONE}
    assert reassemble(fragments[::-1]) == Message(HEADER, BIG)


def test_each_fragment_is_sealed_with_its_own_fragment_fields_in_the_aad():
    cipher = ToyCipher(b"k" * 16, iv_size=16, block_size=16)
    messages = encrypt_fragments(HEADER, BIG, cipher, max_size=300)
    for message, (aad, plaintext) in zip(messages, cipher.seen, strict=True):
        assert aad == message[:36] and aad[16] == PayloadType.SKF
        assert len(plaintext) % 16 == 0
        skf = decode_message(message).payloads[0]
        assert isinstance(skf, EncryptedFragment)
        assert aad[32:36] == skf.number.to_bytes(2, "big") + skf.total.to_bytes(2, "big")
    # a fragment whose number is changed on the way no longer authenticates
    tampered = bytearray(messages[1])
    tampered[33] ^= 0x03
    with pytest.raises(ToyIntegrityError):
        decrypt_fragment(bytes(tampered), cipher)


def test_a_small_message_is_one_fragment():
    cipher = ToyCipher(b"k")
    (only,) = encrypt_fragments(HEADER, INNER, cipher, max_size=1280)
    fragment = decrypt_fragment(only, cipher)
    assert (fragment.number, fragment.total) == (1, 1)
    assert reassemble([fragment]).payloads == INNER


def test_reassembly_refuses_missing_repeated_and_foreign_fragments():
    cipher = ToyCipher(b"k")
    fragments = [decrypt_fragment(m, cipher) for m in encrypt_fragments(HEADER, BIG, cipher, 250)]
    with pytest.raises(ParseError, match="of"):
        reassemble(fragments[:-1])
    with pytest.raises(ParseError):
        reassemble(fragments + [fragments[0]])
    with pytest.raises(ParseError):
        reassemble([])
    other = Header(SPIS, ExchangeType.IKE_AUTH, 2, HeaderFlags.INITIATOR)
    foreign = decrypt_fragment(encrypt_fragments(other, BIG, cipher, 250)[1], cipher)
    with pytest.raises(ParseError, match="another message"):
        reassemble([fragments[0], foreign, *fragments[2:]])


def test_fragment_totals_beyond_the_bound_are_dropped():
    cipher = ToyCipher(b"k")
    body = (1).to_bytes(2, "big") + (MAX_FRAGMENTS + 1).to_bytes(2, "big") + bytes(40)
    with pytest.raises(ParseError, match="limit") as e:
        decrypt_fragment(_message_with(PayloadType.SKF, PayloadType.IDi, body), cipher)
    assert e.value.notify is None
    with pytest.raises(ValueError, match="fragments needed"):
        encrypt_fragments(HEADER, (VendorId(bytes(20000)),), cipher, max_size=100)
    with pytest.raises(ValueError, match="no room"):
        encrypt_fragments(HEADER, INNER, cipher, max_size=60)


def test_an_sk_message_is_not_a_fragment():
    cipher = ToyCipher(b"k")
    with pytest.raises(ParseError, match="not an SKF"):
        decrypt_fragment(encrypt_message(HEADER, INNER, cipher), cipher)


def test_intermediate_auth_data_is_the_message_as_if_sent_in_the_clear():
    header = Header(SPIS, ExchangeType.IKE_INTERMEDIATE, 1, HeaderFlags.INITIATOR)
    inner = (KeyExchange(KeGroup.ML_KEM_768, b"\x42" * 1184), Notify(NotifyType.INITIAL_CONTACT))
    cipher = ToyCipher(b"k" * 16, iv_size=16, block_size=16)
    received = decrypt_message(encrypt_message(header, inner, cipher), cipher)
    data = intermediate_auth_data(received)
    _, chain = encode_chain(inner)
    assert data[28:] == bytes([PayloadType.KE, 0]) + (4 + len(chain)).to_bytes(2, "big") + chain
    assert data[:16] == SPIS.initiator + SPIS.responder
    assert (data[16], data[18], data[19]) == (PayloadType.SK, 43, 0x08)
    assert int.from_bytes(data[24:28], "big") == len(data)
    # fragmented or not, the same bytes
    fragments = encrypt_fragments(header, inner, cipher, max_size=400)
    assert len(fragments) > 3
    whole = reassemble([decrypt_fragment(f, cipher) for f in fragments])
    assert intermediate_auth_data(whole) == data


def _fragments(header: Header, max_size: int) -> list:
    cipher = ToyCipher(b"k")
    return [decrypt_fragment(m, cipher) for m in encrypt_fragments(header, BIG, cipher, max_size)]


def test_reassembly_collects_out_of_order_and_ignores_repeats():
    fragments = _fragments(HEADER, 300)
    assert len(fragments) >= 4
    reassembly = Reassembly(HEADER.message_id, started=12.5)
    order = [2, 0, 2, 3] + list(range(4, len(fragments))) + [1]
    results = [reassembly.add(fragments[i]) for i in order]
    assert results[:-1] == [None] * (len(order) - 1)
    assert results[-1] == Message(HEADER, BIG)
    assert (reassembly.received, reassembly.total, reassembly.started) == (
        len(fragments),
        len(fragments),
        12.5,
    )


def test_reassembly_restarts_on_a_larger_total_and_ignores_a_smaller_one():
    coarse, fine = _fragments(HEADER, 600), _fragments(HEADER, 300)
    assert len(fine) > len(coarse) > 1
    reassembly = Reassembly(HEADER.message_id, started=0.0)
    assert reassembly.add(coarse[0]) is None
    assert reassembly.add(fine[0]) is None  # the retransmission, re-fragmented smaller
    assert (reassembly.total, reassembly.received) == (len(fine), 1)
    assert reassembly.add(coarse[1]) is None  # stale: ignored
    assert reassembly.received == 1
    for fragment in fine[1:-1]:
        assert reassembly.add(fragment) is None
    assert reassembly.add(fine[-1]) == Message(HEADER, BIG)


def test_reassembly_refuses_other_message_ids_and_bounds_memory():
    reassembly = Reassembly(HEADER.message_id + 1, started=0.0)
    with pytest.raises(ParseError, match="reassembling") as e:
        reassembly.add(_fragments(HEADER, 300)[0])
    assert e.value.notify is None
    reassembly = Reassembly(HEADER.message_id, started=0.0)
    cipher = ToyCipher(b"k")
    huge = (VendorId(bytes(20000)), VendorId(bytes(20000)), VendorId(bytes(20000)))
    first = decrypt_fragment(encrypt_fragments(HEADER, huge, cipher, 1400)[0], cipher)
    pieces = [Fragment(HEADER, n, 50, 0, bytes(1400)) for n in range(2, 50)]
    assert reassembly.add(first) is None
    with pytest.raises(ParseError, match="exceed"):
        for piece in pieces:
            reassembly.add(piece)
    assert (reassembly.received, reassembly.total) == (0, 0)
