"""The responder's choice (RFC 7296 2.7), the initiator's check, and ESP name mapping."""

from __future__ import annotations

import ipaddress

import pytest

from espd.ike import proposals as p
from espd.ike.proposals import ENCR, ESN, INTEG, KE, PRF, Proposal, ProposalError, Transform
from espd.ike.settings import ChildPolicy, IkeProposal

GCM256 = IkeProposal(((p.ENCR_AES_GCM_16, 256),), (p.PRF_HMAC_SHA2_384,), (), (31, 19))
CBC = IkeProposal(
    ((p.ENCR_AES_CBC, 256), (p.ENCR_AES_CBC, 128)),
    (p.PRF_HMAC_SHA2_256,),
    (p.AUTH_HMAC_SHA2_256_128,),
    (14,),
)


def policy(*transforms: str, esn: bool = False) -> ChildPolicy:
    return ChildPolicy(
        "vpn",
        10,
        (ipaddress.ip_address("192.0.2.2"),),
        ipaddress.ip_address("192.0.2.1"),
        tuple((t, "tunnel") for t in transforms),
        (),
        (),
        esn=esn,
    )


def test_responder_takes_the_initiators_first_acceptable_proposal():
    offered = p.ike_offer([CBC, GCM256])
    chosen = p.choose(offered, p.ike_offer([GCM256, CBC]))
    assert chosen.number == 1  # the initiator's order wins, not ours
    assert chosen.transforms == (
        Transform(ENCR, p.ENCR_AES_CBC, 256),
        Transform(PRF, p.PRF_HMAC_SHA2_256),
        Transform(INTEG, p.AUTH_HMAC_SHA2_256_128),
        Transform(KE, 14),
    )


def test_per_type_the_initiators_first_transform_that_we_hold():
    mine = IkeProposal(
        ((p.ENCR_AES_CBC, 128),), (p.PRF_HMAC_SHA2_256,), (p.AUTH_HMAC_SHA2_256_128,), (19, 14)
    )
    chosen = p.choose(p.ike_offer([CBC]), p.ike_offer([mine]))
    assert chosen.one(ENCR) == Transform(ENCR, p.ENCR_AES_CBC, 128)  # key length matters
    assert chosen.one(KE) == Transform(KE, 14)


def test_aead_answer_has_no_integrity_transform():
    chosen = p.choose(p.ike_offer([GCM256]), p.ike_offer([GCM256]))
    assert chosen.of_type(INTEG) == ()
    assert chosen.one(KE) == Transform(KE, 31)
    assert p.ke_group(chosen) == 31


def test_no_proposal_chosen_names_what_each_side_offered():
    with pytest.raises(ProposalError) as err:
        p.choose(p.ike_offer([CBC]), p.ike_offer([GCM256]))
    text = str(err.value)
    assert "peer offered AES_CBC_256|AES_CBC_128/PRF_HMAC_SHA2_256/" in text
    assert "we accept AES_GCM_16_256/PRF_HMAC_SHA2_384/CURVE25519|ECP_256" in text


def test_a_non_aead_cipher_never_goes_without_integrity():
    offer = Proposal(
        1,
        p.PROTO_IKE,
        b"",
        (
            Transform(ENCR, p.ENCR_AES_CBC, 128),
            Transform(PRF, 5),
            Transform(INTEG, p.NONE),
            Transform(KE, 14),
        ),
    )
    mine = Proposal(1, p.PROTO_IKE, b"", offer.transforms)
    with pytest.raises(ProposalError):
        p.choose([offer], [mine])


def test_esp_offer_follows_transform_set_order_and_maps_names():
    offer = p.esp_offer(policy("esp-gcm 256", "esp-aes 128 esp-sha256-hmac"), b"\1\2\3\4")
    assert [x.number for x in offer] == [1, 2]
    assert offer[0].transforms == (Transform(ENCR, p.ENCR_AES_GCM_16, 256), Transform(ESN, 0))
    assert offer[1].transforms[:2] == (
        Transform(ENCR, p.ENCR_AES_CBC, 128),
        Transform(INTEG, p.AUTH_HMAC_SHA2_256_128),
    )
    for prop in offer:
        assert p.esp_transform_name(prop) in ("esp-gcm 256", "esp-aes 128 esp-sha256-hmac")


@pytest.mark.parametrize(
    "name",
    [
        "esp-gcm 128",
        "esp-gcm 256",
        "esp-chacha20-poly1305",
        "esp-aes 256 esp-sha512-hmac",
        "esp-null esp-sha-hmac",
        "esp-aes 192 esp-sha384-hmac",
    ],
)
def test_every_espd_transform_round_trips(name):
    prop = Proposal(1, p.PROTO_ESP, b"\0" * 4, p.esp_transforms(name) + (Transform(ESN, 0),))
    assert p.esp_transform_name(prop) == name


def test_esp_pfs_and_esn():
    ours = p.esp_offer(policy("esp-gcm 256", esn=True), b"abcd", ke_group=19)
    theirs_no_pfs = p.esp_offer(policy("esp-gcm 256"), b"wxyz")
    with pytest.raises(ProposalError):  # we insist on PFS
        p.choose(theirs_no_pfs, ours, "ESP")
    theirs = p.esp_offer(policy("esp-gcm 256"), b"wxyz", ke_group=19)
    chosen = p.choose(theirs, ours, "ESP")
    assert chosen.spi == b"wxyz" and p.ke_group(chosen) == 19
    assert not p.esn_chosen(chosen)  # they offered no ESN; we allow either
    chosen = p.choose(
        p.esp_offer(policy("esp-gcm 256", esn=True), b"abcd"),
        p.esp_offer(policy("esp-gcm 256", esn=True), b"wxyz"),
        "ESP",
    )
    assert p.esn_chosen(chosen)
    # an IKE_AUTH responder with pfs configured still takes a KE-less first Child SA
    assert p.choose(theirs_no_pfs, p.esp_offer(policy("esp-gcm 256"), b"abcd"), "ESP")


def test_initiator_checks_the_answer():
    offered = p.ike_offer([GCM256, CBC])
    good = p.choose(offered, p.ike_offer([CBC]))
    assert p.check_chosen(offered, [good]) == good
    widened = Proposal(good.number, good.protocol, b"", good.transforms + (Transform(KE, 31),))
    with pytest.raises(ProposalError, match="several transforms"):
        p.check_chosen(offered, [widened])
    foreign = Proposal(
        2, p.PROTO_IKE, b"", (Transform(ENCR, p.ENCR_AES_CBC, 192),) + good.transforms[1:]
    )
    with pytest.raises(ProposalError, match="not what we offered"):
        p.check_chosen(offered, [foreign])
    with pytest.raises(ProposalError, match="did not offer"):
        p.check_chosen(offered, [Proposal(7, p.PROTO_IKE, b"", good.transforms)])
    with pytest.raises(ProposalError, match="2 IKE proposals"):
        p.check_chosen(offered, [good, good])
    missing_ke = Proposal(good.number, good.protocol, b"", good.transforms[:-1])
    with pytest.raises(ProposalError):
        p.check_chosen(offered, [missing_ke])


def test_acceptable_groups_in_preference_order():
    assert p.acceptable_groups(p.ike_offer([GCM256, CBC])) == (31, 19, 14)


def test_unknown_transform_name_refused():
    with pytest.raises(ProposalError):
        p.esp_transforms("esp-3des esp-md5-hmac")
