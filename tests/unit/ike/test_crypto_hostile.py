"""Hostile inputs to the crypto side: whatever bytes a peer sends, an SK cipher's open
raises IntegrityError and a key exchange raises InvalidKeyExchange, nothing else, and
never returns anything for a body that was not sealed under its key."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from espd.ike.crypto.cipher import IntegrityError
from espd.ike.crypto.dh import GROUPS, InvalidKeyExchange
from espd.ike.crypto.suites import parse_suite

SUITES = ["aes256gcm16-prfsha384-x25519", "aes128gcm16-prfsha256-ecp256",
          "chacha20poly1305-prfsha256-x25519", "aes256-sha256-prfsha256-modp2048",
          "aes128-sha512-prfsha512-ecp384"]
FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _opener(name):
    suite = parse_suite(name)
    sk_e = bytes(range(suite.encr.key_size))
    if suite.integ:
        return suite.encr.cipher(sk_e, suite.integ, bytes(suite.integ.key_size))
    return suite.encr.cipher(sk_e)


@pytest.mark.parametrize("name", SUITES)
@FAST
@given(aad=st.binary(max_size=40), body=st.binary(max_size=300))
def test_open_of_arbitrary_bytes_is_an_integrity_error(name, aad, body):
    with pytest.raises(IntegrityError):
        _opener(name).open(aad, body)


@pytest.mark.parametrize("name", SUITES)
@FAST
@given(plaintext=st.binary(min_size=1, max_size=200), flip=st.integers(min_value=0))
def test_any_single_bit_flip_of_a_sealed_message_is_caught(name, plaintext, flip):
    sealer, opener = _opener(name), _opener(name)
    if len(plaintext) % sealer.block_size:
        plaintext += bytes(sealer.block_size - len(plaintext) % sealer.block_size)
    aad = b"IKE header + SK header....."
    message = bytearray(aad + sealer.seal(aad, plaintext))
    bit = flip % (8 * len(message))
    message[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(IntegrityError):
        opener.open(bytes(message[:len(aad)]), bytes(message[len(aad):]))


@pytest.mark.parametrize("group", [g for g in GROUPS.values() if not g.name.startswith("modp")],
                         ids=lambda g: g.name)
@FAST
@given(data=st.binary(max_size=200))
def test_arbitrary_ke_data_is_refused_or_yields_a_secret(group, data):
    """Random KE data is nearly always refused; when it happens to be valid (right length,
    on the curve), it yields a secret of the right size, never another exception."""
    try:
        if group.kem:
            _, secret = group.respond(data)
        else:
            secret = group.generate().shared_secret(data)
    except InvalidKeyExchange:
        return
    assert len(data) == group.initiator_size and len(secret) in (32, 48, 66)



@pytest.mark.parametrize("group", [g for g in GROUPS.values() if g.name.startswith("modp")],
                         ids=lambda g: g.name)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_arbitrary_modp_values_of_the_right_length_yield_a_full_length_secret(group, data):
    value = data.draw(st.binary(min_size=group.initiator_size, max_size=group.initiator_size))
    try:
        secret = group.generate().shared_secret(value)
    except InvalidKeyExchange:  # 0, 1, p-1 or >= p
        assert int.from_bytes(value, "big") in (0, 1) or \
            int.from_bytes(value, "big") >= group.prime - 1
        return
    assert len(secret) == group.initiator_size
