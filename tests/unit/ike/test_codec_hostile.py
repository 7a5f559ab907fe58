"""Hostile input: whatever bytes arrive, decoding either returns a Message or raises
ParseError (nothing else), with the notify RFC 7296 names; lengths, counts and chains are
checked before anything is read."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from espd.ike.codec import (
    ExchangeType,
    Header,
    Message,
    Nonce,
    Notify,
    NotifyType,
    ParseError,
    Proposal,
    ProtocolId,
    SecurityAssociation,
    SpiPair,
    TrafficSelector,
    Transform,
    TsInitiator,
    UnknownPayload,
    VendorId,
    decode_chain,
    decode_message,
    encode_message,
)
from espd.ike.codec.limits import (
    MAX_ATTRIBUTES,
    MAX_DELETE_SPIS,
    MAX_ELEMENTS,
    MAX_MESSAGE_SIZE,
    MAX_PAYLOADS,
    MAX_PROPOSALS,
    MAX_SA_TRANSFORMS,
    MAX_SELECTORS,
    MAX_TRANSFORMS,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "ikev2"
INIT_REQUEST = (DATA / "psk-trap-0000-init-req.bin").read_bytes()
INIT_RESPONSE = (DATA / "cert-0001-init-resp.bin").read_bytes()  # carries a CERTREQ
SK_MESSAGE = (DATA / "psk-trap-0002-auth-req.bin").read_bytes()
SKF_MESSAGE = (DATA / "ke-frag-0004-auth-req.bin").read_bytes()
CLEAR = [INIT_REQUEST, INIT_RESPONSE, (DATA / "cookie-0004-init-req.bin").read_bytes()]
SPIS = SpiPair(b"\x01" * 8, b"\x02" * 8)


def decodes_or_parse_error(data: bytes) -> Message | ParseError:
    try:
        return decode_message(data)
    except ParseError as e:
        assert e.reason and isinstance(e.data, bytes)
        return e


def with_length(message: bytes, length: int | None = None) -> bytes:
    """``message`` with its header length field set (default: its real length)."""
    length = len(message) if length is None else length
    return message[:24] + struct.pack("!I", length) + message[28:]


def wire(first: int, *payload_bytes: bytes) -> bytes:
    """An INFORMATIONAL message whose chain starts with type ``first``."""
    header = encode_message(Message(Header(SPIS, 37, 1), ()))[:28]
    return with_first(with_length(header + b"".join(payload_bytes)), first)


def generic(next_payload: int, body: bytes, length: int | None = None, flags: int = 0) -> bytes:
    return (
        struct.pack("!BBH", next_payload, flags, 4 + len(body) if length is None else length) + body
    )


def with_first(message: bytes, first: int) -> bytes:
    return message[:16] + bytes([first]) + message[17:]


@pytest.mark.parametrize("message", CLEAR + [SK_MESSAGE, SKF_MESSAGE], ids=range(5))
def test_every_truncation_is_a_parse_error(message):
    for cut in range(len(message)):
        assert isinstance(decodes_or_parse_error(message[:cut]), ParseError), cut
        # and with the header's length field telling the truth about the cut
        if cut >= 28:
            assert isinstance(decodes_or_parse_error(with_length(message[:cut])), ParseError), cut


@pytest.mark.parametrize("message", CLEAR + [SK_MESSAGE], ids=range(4))
def test_every_length_field_overflowed_or_underflowed_is_a_parse_error(message):
    # Walk the real chain and corrupt each payload's length field in turn.
    offset, kind = 28, message[16]
    corrupted = 0
    while kind != 0 and offset < len(message):
        length = int.from_bytes(message[offset + 2 : offset + 4], "big")
        for bad in (0, 1, 3, length - 1, length + 1, 0xFFFF):
            if bad == length:
                continue
            mutated = message[: offset + 2] + struct.pack("!H", bad) + message[offset + 4 :]
            result = decodes_or_parse_error(mutated)
            # length - 1 or + 1 can land on a valid-looking chain only by accident; the
            # codec must never raise anything else, and never accept trailing garbage
            if isinstance(result, Message):
                assert encode_message(result) == mutated
            corrupted += 1
        if kind == 46:
            break
        kind = message[offset]
        offset += length
    assert corrupted >= 5
    for bad in (0, 27, 28, len(message) - 1, len(message) + 1, 0xFFFFFFFF):
        assert isinstance(decodes_or_parse_error(with_length(message, bad)), ParseError)


def test_payload_length_zero_is_refused_not_looped_on():
    with pytest.raises(ParseError, match="length 0"):
        decode_message(wire(41, generic(41, b"", length=0)))


def test_payload_length_shorter_than_its_header_is_refused():
    for length in (1, 2, 3):
        message = wire(43, generic(0, b"", length=length) + b"\x00" * 8)
        with pytest.raises(ParseError):
            decode_message(message)


def test_a_chain_with_a_wrong_next_payload_is_refused():
    vendor = VendorId(b"v" * 8).encode_body()
    # next payload says Nonce, but the bytes that follow are a Vendor ID body too short for one
    message = wire(43, generic(40, vendor) + generic(0, vendor))
    with pytest.raises(ParseError, match="nonce"):
        decode_message(message)
    # a next payload that points past the end of the message
    message = wire(43, generic(43, vendor))
    with pytest.raises(ParseError, match="payload 2 header"):
        decode_message(message)
    # a chain that ends (next payload 0) before the bytes do
    message = wire(43, generic(0, vendor) + generic(0, vendor))
    with pytest.raises(ParseError, match="after the last payload"):
        decode_message(message)


def test_a_self_referencing_chain_ends_at_the_payload_bound():
    # Every payload says "the next one is a Vendor ID too": a chain that would never end
    # if the walk followed next-payload fields instead of the bytes that remain.
    one = generic(43, b"")
    message = wire(43, one * (MAX_PAYLOADS + 5))
    with pytest.raises(ParseError, match=f"more than {MAX_PAYLOADS} payloads"):
        decode_message(message)
    message = wire(43, one * 10)
    with pytest.raises(ParseError, match="payload 11 header"):
        decode_message(message)


def test_unknown_critical_payload_answers_unsupported_critical_payload_with_its_type():
    message = wire(200, generic(0, b"secret?", flags=0x80))
    with pytest.raises(ParseError) as e:
        decode_message(message)
    assert e.value.notify == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD
    assert e.value.data == b"\xc8"


def test_unknown_non_critical_payload_is_kept_opaque():
    message = wire(200, generic(43, b"opaque") + generic(0, b"v"))
    decoded = decode_message(message)
    assert decoded.payloads == (UnknownPayload(200, b"opaque"), VendorId(b"v"))
    assert encode_message(decoded) == message


def test_reserved_bits_of_the_generic_header_are_ignored():
    message = wire(43, generic(0, b"v", flags=0x7F))
    assert decode_message(message).payloads == (VendorId(b"v"),)


def test_wrong_major_version_answers_invalid_major_version():
    mutated = INIT_REQUEST[:17] + b"\x30" + INIT_REQUEST[18:]
    with pytest.raises(ParseError) as e:
        decode_message(mutated)
    assert e.value.notify == NotifyType.INVALID_MAJOR_VERSION
    minor = INIT_REQUEST[:17] + b"\x21" + INIT_REQUEST[18:]
    assert decode_message(minor).header.version == 0x21  # minor versions are accepted


def test_messages_beyond_the_size_bound_are_refused():
    big = wire(43, generic(0, b"v" * (MAX_MESSAGE_SIZE - 32 + 1)))
    assert len(big) == MAX_MESSAGE_SIZE + 1
    with pytest.raises(ParseError, match="limit"):
        decode_message(big)
    largest = b"v" * (MAX_MESSAGE_SIZE - 28 - 4)
    assert decode_message(wire(43, generic(0, largest))).payloads[0].data == largest


def test_sk_must_be_the_last_payload():
    message = wire(46, generic(0, b"\x00" * 40) + generic(0, b"v"))
    with pytest.raises(ParseError, match="after the SK/SKF payload"):
        decode_message(message)


def test_sk_inside_sk_is_refused():
    with pytest.raises(ParseError, match="inside an encrypted payload"):
        decode_chain(46, generic(0, b"x" * 40), framed=False)


# --- bounds on counts the peer controls -------------------------------------------------


def _sa_chain(sa_body: bytes) -> bytes:
    return generic(0, sa_body)


def _proposal(
    transforms: bytes, count: int, last: int = 0, number: int = 1, spi: bytes = b""
) -> bytes:
    length = 8 + len(spi) + len(transforms)
    return struct.pack("!BBHBBBB", last, 0, length, number, 1, len(spi), count) + spi + transforms


def _transform(last: int = 0, attributes: bytes = b"", kind: int = 1, tid: int = 12) -> bytes:
    return struct.pack("!BBHBBH", last, 0, 8 + len(attributes), kind, 0, tid) + attributes


def test_too_many_proposals_are_refused():
    one = _proposal(_transform(), 1, last=2)
    body = one * MAX_PROPOSALS + _proposal(_transform(), 1, last=0)
    with pytest.raises(ParseError, match=f"more than {MAX_PROPOSALS} proposals"):
        decode_chain(33, _sa_chain(body))
    fits = one * (MAX_PROPOSALS - 1) + _proposal(_transform(), 1, last=0)
    assert len(decode_chain(33, _sa_chain(fits))[0].proposals) == MAX_PROPOSALS


def test_too_many_transforms_are_refused():
    count = MAX_TRANSFORMS + 1
    transforms = _transform(3) * (count - 1) + _transform(0)
    with pytest.raises(ParseError, match=f"limit {MAX_TRANSFORMS}"):
        decode_chain(33, _sa_chain(_proposal(transforms, count)))


def test_transform_count_must_match_the_transforms():
    two = _transform(3) + _transform(0)
    for count in (1, 3, 0):
        with pytest.raises(ParseError):
            decode_chain(33, _sa_chain(_proposal(two, count)))
    assert len(decode_chain(33, _sa_chain(_proposal(two, 2)))[0].proposals[0].transforms) == 2


def test_substructure_markers_are_checked():
    with pytest.raises(ParseError, match="transform 'last substruc'"):
        decode_chain(33, _sa_chain(_proposal(_transform(7), 1)))
    with pytest.raises(ParseError, match="proposal 'last substruc'"):
        decode_chain(33, _sa_chain(_proposal(_transform(), 1, last=1)))
    with pytest.raises(ParseError):  # "more proposals follow" and nothing follows
        decode_chain(33, _sa_chain(_proposal(_transform(), 1, last=2)))


def test_too_many_attributes_are_refused():
    attributes = struct.pack("!HH", 0x800E, 128) * (MAX_ATTRIBUTES + 1)
    with pytest.raises(ParseError, match="attributes"):
        decode_chain(33, _sa_chain(_proposal(_transform(0, attributes), 1)))


def test_attribute_and_spi_lengths_are_checked():
    tlv = struct.pack("!HH", 5, 200) + b"short"
    with pytest.raises(ParseError, match="attribute length"):
        decode_chain(33, _sa_chain(_proposal(_transform(0, tlv), 1)))
    with pytest.raises(ParseError, match="transform attribute"):
        decode_chain(33, _sa_chain(_proposal(_transform(0, b"\x80"), 1)))
    spi_too_big = struct.pack("!BBHBBBB", 0, 0, 8, 1, 3, 200, 0)
    with pytest.raises(ParseError, match="proposal length"):
        decode_chain(33, _sa_chain(spi_too_big))


def test_empty_sa_payload_is_refused():
    with pytest.raises(ParseError):
        decode_chain(33, _sa_chain(b""))


def test_traffic_selector_counts_and_lengths_are_checked():
    selector = TrafficSelector.from_network("10.0.0.0/8").encode()
    for count in (0, MAX_SELECTORS + 1):
        with pytest.raises(ParseError, match="selectors"):
            decode_chain(44, generic(0, bytes([count, 0, 0, 0]) + selector * max(count, 1)))
    with pytest.raises(ParseError):  # count says two, one present
        decode_chain(44, generic(0, b"\x02\x00\x00\x00" + selector))
    with pytest.raises(ParseError, match="after the last traffic selector"):
        decode_chain(44, generic(0, b"\x01\x00\x00\x00" + selector + b"\x00"))
    wrong_size = selector[:2] + b"\x00\x28" + selector[4:] + bytes(24)
    with pytest.raises(ParseError, match="must be 16"):
        decode_chain(44, generic(0, b"\x01\x00\x00\x00" + wrong_size))
    assert decode_chain(44, generic(0, b"\x01\x00\x00\x00" + selector)) == (
        TsInitiator((TrafficSelector.from_network("10.0.0.0/8"),)),
    )


def test_delete_spi_count_is_checked_against_the_bytes_and_the_bound():
    with pytest.raises(ParseError, match="need 8 bytes"):
        decode_chain(42, generic(0, b"\x03\x04\x00\x02" + b"\x01" * 4))
    with pytest.raises(ParseError, match="limit"):
        decode_chain(42, generic(0, b"\x03\x04" + struct.pack("!H", MAX_DELETE_SPIS + 1)))
    with pytest.raises(ParseError, match="size 0"):
        decode_chain(42, generic(0, b"\x03\x00\x00\x05"))


def test_notify_spi_size_beyond_the_payload_is_refused():
    with pytest.raises(ParseError, match="SPI size"):
        decode_chain(41, generic(0, b"\x03\x10\x40\x09" + b"\x01" * 4))


def test_nonce_sizes_outside_16_to_256_are_refused():
    for size in (0, 15, 257):
        with pytest.raises(ParseError, match="nonce"):
            decode_chain(40, generic(0, bytes(size)))
    assert decode_chain(40, generic(0, bytes(16))) == (Nonce(bytes(16)),)


def test_short_fixed_parts_are_refused():
    for kind, body in (
        (34, b"\x00\x13\x00"),
        (35, b"\x02\x00\x00\x00"),
        (39, b"\x02\x00\x00"),
        (37, b"\x04"),
        (38, b""),
        (41, b"\x00\x00\x40"),
        (42, b"\x01\x00\x00"),
        (44, b"\x01\x00\x00"),
        (53, b"\x00\x01\x00"),
    ):
        with pytest.raises(ParseError):
            decode_chain(kind, generic(0, body))


def test_certreq_for_x509_must_be_whole_sha1_hashes():
    with pytest.raises(ParseError, match="SHA-1"):
        decode_chain(38, generic(0, b"\x04" + bytes(21)))


def test_fragment_numbers_outside_one_to_total_are_refused():
    for number, total in ((0, 3), (4, 3), (1, 0)):
        with pytest.raises(ParseError, match="fragment number"):
            decode_chain(53, generic(35, struct.pack("!HH", number, total) + bytes(40)))


def test_a_valid_message_built_here_round_trips():
    payloads = (
        SecurityAssociation((Proposal(1, ProtocolId.IKE, b"", (Transform(1, 20),)),)),
        Nonce(bytes(32)),
        Notify(NotifyType.NAT_DETECTION_SOURCE_IP, bytes(20)),
    )
    message = Message(Header(SPIS, ExchangeType.IKE_SA_INIT, 0), payloads)
    assert decode_message(encode_message(message)) == message


# --- property: arbitrary bytes never raise anything but ParseError ----------------------

SETTINGS = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise_anything_but_parse_error(data):
    result = decodes_or_parse_error(data)
    if isinstance(result, Message):
        assert encode_message(result) is not None


@SETTINGS
@given(st.binary(max_size=1500), st.integers(0, 255))
def test_arbitrary_bodies_after_a_valid_header_never_raise_anything_else(body, first):
    result = decodes_or_parse_error(with_first(with_length(INIT_REQUEST[:28] + body), first))
    if isinstance(result, Message):
        assert decode_message(encode_message(result)) == result


@SETTINGS
@given(st.sampled_from(CLEAR + [SK_MESSAGE, SKF_MESSAGE]), st.data())
def test_mutated_captured_messages_never_raise_anything_else(message, data):
    mutated = bytearray(message)
    for _ in range(data.draw(st.integers(1, 8))):
        mutated[data.draw(st.integers(0, len(mutated) - 1))] = data.draw(st.integers(0, 255))
    result = decodes_or_parse_error(bytes(mutated))
    if isinstance(result, Message):
        assert decode_message(encode_message(result)) == result


def test_transform_and_selector_lengths_beyond_their_container_are_refused():
    long_transform = struct.pack("!BBHBBH", 0, 0, 200, 1, 0, 12)
    with pytest.raises(ParseError, match="transform length 200"):
        decode_chain(33, _sa_chain(_proposal(long_transform, 1)))
    short_transform = struct.pack("!BBHBBH", 0, 0, 7, 1, 0, 12)
    with pytest.raises(ParseError, match="transform length 7"):
        decode_chain(33, _sa_chain(_proposal(short_transform, 1)))
    selector = bytearray(TrafficSelector.from_network("10.0.0.0/8").encode())
    selector[2:4] = struct.pack("!H", 17)
    with pytest.raises(ParseError, match="selector length 17"):
        decode_chain(44, generic(0, b"\x01\x00\x00\x00" + bytes(selector)))


def test_too_many_transforms_across_proposals_are_refused():
    sixty = _transform(3) * 59 + _transform(0)
    five = _proposal(sixty, 60, last=2) * 4 + _proposal(sixty, 60, last=0)
    with pytest.raises(ParseError, match=f"more than {MAX_SA_TRANSFORMS} transforms"):
        decode_chain(33, _sa_chain(five))
    four = _proposal(sixty, 60, last=2) * 3 + _proposal(sixty, 60, last=0)
    assert len(decode_chain(33, _sa_chain(four))[0].proposals) == 4


def test_the_work_of_one_chain_is_bounded_by_its_element_count():
    selector = TrafficSelector.from_network("10.0.0.0/8").encode()
    ts = generic(44, bytes([63, 0, 0, 0]) + selector * 63)  # 64 elements each
    over = MAX_ELEMENTS // 64 + 1
    chain = ts * (over - 1) + generic(0, ts[4:])
    with pytest.raises(ParseError, match=f"more than {MAX_ELEMENTS}"):
        decode_chain(44, chain)
    fits = ts * (over - 2) + generic(0, ts[4:])
    assert len(decode_chain(44, fits)) == over - 1
