"""The codec with espd's own SK ciphers (espd.ike.crypto) on both sides of the TEAM.md
contract: the suite chosen in the captured IKE_SA_INIT response picks the cipher, the
captured keys open charon's IKE_AUTH and CREATE_CHILD_SA messages, a flipped bit surfaces
as espd.ike.crypto.IntegrityError, and every ENCR espd offers seals and opens SK and SKF."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from espd.ike.codec import (
    ExchangeType,
    Header,
    HeaderFlags,
    IdInitiator,
    Message,
    Notify,
    NotifyType,
    Reassembly,
    SecurityAssociation,
    SpiPair,
    TransformType,
    VendorId,
    decode_message,
    decrypt_fragment,
    decrypt_message,
    encrypt_fragments,
    encrypt_message,
)
from espd.ike.crypto import suites
from espd.ike.crypto.cipher import IntegrityError

DATA = Path(__file__).resolve().parents[2] / "data" / "ikev2"
KEYS = json.loads((DATA / "sk-keys.json").read_text())
RUNS = {"ike": "psk-trap", "cert": "cert"}


def _cipher(run: str, raw: bytes):
    """espd's SK cipher for the direction ``raw`` was sent in, chosen from the transforms
    the captured IKE_SA_INIT response accepted."""
    init = decode_message((DATA / f"{RUNS[run]}-0001-init-resp.bin").read_bytes())
    (proposal,) = init.first(SecurityAssociation).proposals
    (encr,) = proposal.transforms_of(TransformType.ENCR)
    (integ,) = proposal.transforms_of(TransformType.INTEG)
    keys = {k: bytes.fromhex(v) for k, v in KEYS[run].items() if k.startswith("sk_")}
    side = "i" if raw[19] & 0x08 else "r"
    e, i = suites.encr(encr.id, encr.key_length), suites.integ(integ.id)
    return e.cipher(keys[f"sk_e{side}"], i, keys[f"sk_a{side}"])


CAPTURED = [
    ("ike", "psk-trap-0002-auth-req.bin"),
    ("ike", "psk-trap-0003-auth-resp.bin"),
    ("ike", "psk-trap-0092-ccsa-req.bin"),
    ("cert", "cert-0002-auth-req.bin"),
    ("cert", "cert-0003-auth-resp.bin"),
]


@pytest.mark.parametrize(("run", "name"), CAPTURED, ids=[n for _, n in CAPTURED])
def test_espd_ciphers_open_charons_sk_payloads(run, name):
    raw = (DATA / name).read_bytes()
    message = decrypt_message(raw, _cipher(run, raw))
    assert message.payloads  # IKE_AUTH and CREATE_CHILD_SA carry payloads
    # re-sealed by espd (fresh IV, zero padding) it opens to the same message
    cipher = _cipher(run, raw)
    assert decrypt_message(encrypt_message(message.header, message.payloads, cipher), cipher) == (
        message
    )


def test_a_flipped_bit_surfaces_as_integrity_error():
    raw = bytearray((DATA / "psk-trap-0002-auth-req.bin").read_bytes())
    raw[100] ^= 0x40
    with pytest.raises(IntegrityError):
        decrypt_message(bytes(raw), _cipher("ike", bytes(raw)))


SPIS = SpiPair(b"\x01" * 8, b"\x02" * 8)
HEADER = Header(SPIS, ExchangeType.IKE_AUTH, 1, HeaderFlags.INITIATOR)
INNER = (
    IdInitiator.fqdn("gwa.example.net"),
    Notify(NotifyType.INITIAL_CONTACT),
    VendorId(bytes(range(256)) * 6),
)


@pytest.mark.parametrize("encr", list(suites.ENCRS.values()), ids=str)
def test_every_espd_cipher_seals_sk_and_skf_the_codec_opens(encr):
    integ = None if encr.aead else suites.integ(12)
    key = bytes(range(encr.key_size))
    sk_a = bytes(32) if integ else b""
    sender, receiver = encr.cipher(key, integ, sk_a), encr.cipher(key, integ, sk_a)
    wire = encrypt_message(HEADER, INNER, sender)
    assert decrypt_message(wire, receiver) == Message(HEADER, INNER)
    reassembly = Reassembly(HEADER.message_id, 0.0)
    results = [
        reassembly.add(decrypt_fragment(m, receiver))
        for m in encrypt_fragments(HEADER, INNER, sender, 576)
    ]
    assert results[-1] == Message(HEADER, INNER) and results[:-1] == [None] * (len(results) - 1)
