"""The TUN MTU's ESP arithmetic (espd.policy.tun_mtu) per transform, against the data plane.

An IKE-keyed entry has no SA when espd sets the TUN MTU, so its overhead comes from its
transform sets; the numbers must be the ones the data plane uses once a Child SA of that
transform is live (native/sa.c worst_overhead), or the MTU would be too large by a few
bytes and inner TCP would fragment.
"""

from __future__ import annotations

import pytest

from espd.config.toml import parse_toml
from espd.config.transforms import parse_transform
from espd.dataplane import Dataplane
from espd.policy.tun_mtu import esp_overhead, planned_overheads

# transform -> (IV, block, ICV) by RFC: the arithmetic spelled out once more by hand
TRANSFORMS = {
    "esp-gcm 128": (8, 4, 16),  # RFC 4106
    "esp-gcm 256": (8, 4, 16),
    "esp-chacha20-poly1305": (8, 4, 16),  # RFC 7634
    "esp-aes 128 esp-sha256-hmac": (16, 16, 16),  # RFC 3602 + RFC 4868
    "esp-aes 256 esp-sha256-hmac": (16, 16, 16),
    "esp-aes 256 esp-sha384-hmac": (16, 16, 24),
    "esp-aes 256 esp-sha512-hmac": (16, 16, 32),
    "esp-aes 128 esp-sha-hmac": (16, 16, 12),  # RFC 2404
    "esp-null esp-sha256-hmac": (0, 4, 16),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
@pytest.mark.parametrize("version,local,peer", [(4, "192.0.2.1", "192.0.2.2"),
                                                (6, "2001:db8::1", "2001:db8::2")])
@pytest.mark.parametrize("encap", ["esp", "udp"])
def test_overhead_is_the_data_planes(name: str, version: int, local: str, peer: str,
                                     encap: str) -> None:
    t = parse_transform(name)
    iv, block, icv = TRANSFORMS[name]
    expected = ((20 if version == 4 else 40) + (8 if encap == "udp" else 0) + 8 + iv
                + block - 1 + 2 + icv)
    assert esp_overhead(t, version, encap == "udp") == expected
    dp = Dataplane(1)
    sa = dp.create_sa(spi=0x1000, direction="out", transform=t, key=bytes(t.key_len),
                      auth_key=bytes(t.auth_key_len), local=local, peer=peer, encap=encap)
    assert dp.sa_overhead(sa) == expected


def test_the_documented_mtus() -> None:
    """docs/operations.md's table: 1500 minus the overhead."""
    gcm, cbc = parse_transform("esp-gcm 256"), parse_transform("esp-aes 256 esp-sha256-hmac")
    assert 1500 - esp_overhead(gcm, 4, False) == 1443
    assert 1500 - esp_overhead(gcm, 6, False) == 1423
    assert 1500 - esp_overhead(cbc, 4, False) == 1423
    assert 1500 - esp_overhead(cbc, 6, False) == 1403
    assert 1500 - esp_overhead(gcm, 4, True) == 1435
    assert 1500 - esp_overhead(cbc, 4, True) == 1415


CONFIG = """\
[daemon]
local = "192.0.2.1"

[ike_peer.b]
address = "192.0.2.2"
psk = "not-a-real-key-but-long-enough"

[ike_peer.c]
address = "192.0.2.3"
psk = "not-a-real-key-but-long-enough"

[access_list.LAN]
rules = ["permit ip 10.1.0.0/16 10.2.0.0/16"]

[transform_set.GCM]
transforms = ["esp-gcm 256"]

[transform_set.CBC]
transforms = ["esp-aes 256", "esp-sha512-hmac"]

[[crypto_map]]
name = "vpn"
seq = 10
keying = "ike"
peers = ["192.0.2.2", "192.0.2.3"]
match_address = "LAN"
transform_sets = {sets}
encapsulation = "{encap}"
"""


@pytest.mark.parametrize("sets,encap,expected", [
    ('["GCM"]', "esp", 57),
    ('["GCM"]', "udp", 65),
    ('["GCM"]', "auto", 65),  # NAT detection may float it to UDP after the MTU is set
    ('["GCM", "CBC"]', "esp", 93),  # the largest of the sets: 20+8+16+15+2+32
    ('["CBC", "GCM"]', "auto", 101),
])
def test_ike_entry_counts_its_largest_transform_for_every_peer(sets: str, encap: str,
                                                               expected: int) -> None:
    config = parse_toml(CONFIG.format(sets=sets, encap=encap))
    assert sorted(planned_overheads(config)) == [("192.0.2.2", expected),
                                                 ("192.0.2.3", expected)]


def test_manual_entries_are_left_to_their_sas() -> None:
    """A manual entry's SAs are live from the start: the data plane counts them."""
    key_in, key_out = "11" * 64, "22" * 64
    manual = f"""
[[crypto_map]]
name = "vpn"
seq = 20
peer = "192.0.2.9"
match_address = "LAN"
transform_set = "CBC"
inbound = {{ spi = 0x1001, key = "{key_in[:64]}", auth_key = "{key_in}" }}
outbound = {{ spi = 0x1002, key = "{key_out[:64]}", auth_key = "{key_out}" }}
"""
    config = parse_toml(CONFIG.format(sets='["GCM"]', encap="esp") + manual)
    assert sorted(planned_overheads(config)) == [("192.0.2.2", 57), ("192.0.2.3", 57)]
