"""The Cisco IOS importer (espd.config.ios): the seed's routers, modern configs, located errors."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from espd.config.ios import parse_ios
from espd.config.load import load
from espd.config.model import ConfigError, Location, Settings

CONFIG = Path(__file__).resolve().parents[2] / "config"
SEED = CONFIG / "seed"

CANARY = "c0ffee" * 12
OTHER = "5a" * 36

BASE = f"""\
hostname r1
crypto ipsec transform-set T esp-gcm 256
!
crypto map M 10 ipsec-manual
 set peer 192.0.2.2
 set transform-set T
 match address 101
 set session-key inbound esp 4096 cipher {CANARY}
 set session-key outbound esp 8192 cipher {OTHER}
!
interface Serial0
 ip address 192.0.2.1 255.255.255.0
 crypto map M
!
access-list 101 permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255
access-list 110 permit tcp any any established
"""


def canary_absent(text: str) -> None:
    assert "c0ffee" not in text.lower()
    assert "\\xc0\\xff\\xee" not in text.lower()


def edit(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new, 1)


def refusal(text: str, path: str = "r.ios") -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_ios(text, path)
    canary_absent(str(e.value))
    assert all(p.where.file == path for p in e.value.problems)
    return [f"{p.where.line}: {p.message}" for p in e.value.problems]


# -- the seed's routers -----------------------------------------------------------------------

TRANSFORM_REFUSALS = {
    "esp-rfc1829": "esp-rfc1829: esp-rfc1829 is the obsolete DES-CBC of RFC 1829; DES is "
                   "MUST NOT in RFC 8221; use 'esp-gcm 256'",
    "ah-md5-hmac": "ah-md5-hmac: AH transforms are not supported; espd is ESP-only, and RFC "
                   "8221 recommends ESP with an AEAD cipher instead of AH; use 'esp-gcm 256'",
    "ah-rfc1828": "ah-rfc1828: AH transforms are not supported; espd is ESP-only, and RFC "
                  "8221 recommends ESP with an AEAD cipher instead of AH; use 'esp-gcm 256'",
}


IKE_REFUSALS = {
    "des": "des: ENCR_DES is MUST NOT in RFC 8247 (56-bit key); use 'aes256gcm16' (e.g. "
           "'aes256gcm16-prfsha384-x25519') (IOS's default when no 'encryption' is written)",
    "md5": "md5: AUTH_HMAC_MD5_96 is MUST NOT in RFC 8247; use 'sha256' (e.g. "
           "'aes256gcm16-prfsha384-x25519')",
    "group1": "modp768: group 1 (768-bit MODP) is MUST NOT in RFC 8247; use 'x25519' (e.g. "
              "'aes256gcm16-prfsha384-x25519') (IOS's default when no 'group' is written)",
    "group2": "modp1024: group 2 (1024-bit MODP) is MUST NOT in RFC 8247; use 'x25519' (e.g. "
              "'aes256gcm16-prfsha384-x25519')",
}


@pytest.mark.parametrize(
    ("name", "sets", "policy_line", "first_line", "group"),
    [
        ("goss-e4-2513.ios", ("BearPapa", "BearMama", "BearBaby"), 14, 20, "group1"),
        ("goss-c2-2513.ios", ("PapaBear", "MamaBear", "BabyBear"), 16, 22, "group1"),
        ("dt3-45a-fragments.ios", ("PapaBear", "MamaBear", "BabyBear"), 9, 24, "group2"),
    ],
)
def test_seed_routers_are_refused_with_exact_messages(name, sets, policy_line, first_line,
                                                      group):
    """The ipsec-isakmp maps are read now; what is refused is what RFC 8247 and RFC 8221
    forbid: the isakmp policy's DES (an IOS default), MD5 and group, and the transforms."""
    path = SEED / name
    with pytest.raises(ConfigError) as e:
        load(str(path))
    policy = f"{path}:{policy_line}: crypto isakmp policy 1: "
    lines = str(e.value).split("\n")
    session_key = [line for line in lines if "session-key" in line]
    assert [line for line in lines if "session-key" not in line] == [
        policy + IKE_REFUSALS["des"],
        policy + IKE_REFUSALS["md5"],
        policy + IKE_REFUSALS[group],
        f"{path}:{first_line}: crypto ipsec transform-set {sets[0]}: "
        + TRANSFORM_REFUSALS["esp-rfc1829"],
        f"{path}:{first_line + 1}: crypto ipsec transform-set {sets[1]}: "
        + TRANSFORM_REFUSALS["ah-md5-hmac"],
        f"{path}:{first_line + 2}: crypto ipsec transform-set {sets[2]}: "
        + TRANSFORM_REFUSALS["ah-rfc1828"],
    ]
    # dt3-45a typed the seed's "set session-key lifetime", which IOS itself does not take
    assert session_key == ([f"{path}:31: crypto map armadillo 10: 'set session-key lifetime' "
                            "is not an IOS command; write 'set security-association lifetime "
                            "seconds 4000'"] if name.startswith("dt3") else [])


def test_seed_rebuilds_keep_the_seed_commands_one_per_line():
    text = (SEED / "goss-e4-2513.ios").read_text().splitlines()
    for command in (
        "hostname goss-e4-2513",
        "crypto ipsec transform-set BearMama ah-md5-hmac esp-des",
        "crypto map armadillo 1 ipsec-isakmp",
        " set transform-set BearPapa BearMama BearBaby",
        " set security-association lifetime seconds 190",
        "interface Serial0",
        " ip address 20.20.20.20 255.255.255.0",
        " crypto map armadillo",
        "access-list 101 permit ip 60.60.60.0 0.0.0.255 50.50.50.0 0.0.0.255",
    ):
        assert command in text
    peer = (SEED / "goss-c2-2513.ios").read_text().splitlines()
    assert " set transform-set MamaBear PapaBear BabyBear" in peer
    assert "access-list 101 permit ip 50.50.50.0 0.0.0.255 60.60.60.0 0.0.0.255" in peer


def test_modernised_seed_routers_are_mirror_images():
    e4 = load(str(CONFIG / "goss-e4-2513-manual.ios"))
    c2 = load(str(CONFIG / "goss-c2-2513-manual.ios"))
    (a,), (b,) = e4.crypto_maps, c2.crypto_maps
    assert (a.map_name, a.seq, b.map_name, b.seq) == ("armadillo", 1, "armadillo", 1)
    assert (str(a.local), str(a.peer)) == ("20.20.20.20", "20.20.20.21")
    assert (str(b.local), str(b.peer)) == ("20.20.20.21", "20.20.20.20")
    assert a.inbound == b.outbound and a.outbound == b.inbound
    assert a.inbound.key != a.outbound.key
    assert e4.transform_sets[a.transform_set].transform.name == "esp-gcm 256"
    acl_a = e4.access_lists[a.match_address].entries[0]
    acl_b = c2.access_lists[b.match_address].entries[0]
    assert (acl_a.src, acl_a.dst) == (acl_b.dst, acl_b.src)
    assert str(acl_a.src) == "60.60.60.0 0.0.0.255"
    assert e4.warnings == c2.warnings == ()


def test_router_example_reads_named_acls_ipv6_replay_and_lifetimes():
    config = load(str(CONFIG / "router.example.ios"))
    ten, twenty, thirty = config.crypto_maps
    assert (ten.replay_window, ten.lifetime.seconds, ten.lifetime.kilobytes) == (
        1024, 86400, 100000000)
    assert str(ten.local) == "192.0.2.10" and ten.inbound.spi == 4352
    assert twenty.match_address == "PARTNER"
    assert len(twenty.inbound.auth_key) == 32
    partner = config.access_lists["PARTNER"].entries
    assert [e.dst_ports for e in partner] == [((443, 443),), ((8443, 8444),)]
    assert str(thirty.local) == "2001:db8:ffff::10"
    assert thirty.peer == ipaddress.ip_address("2001:db8:ffff::1")
    assert config.access_lists["HQ6"].entries[0].version == 6
    assert config.transform_sets["CHACHA"].transform.name == "esp-chacha20-poly1305"


# -- behaviour --------------------------------------------------------------------------------


def test_base_config_and_router_noise_is_skipped():
    noisy = ("version 12.4\nservice timestamps log uptime\nenable secret 5 $1$xyz\n"
             "crypto isakmp policy 1\n hash md5\ncrypto isakmp key sekrit address 1.2.3.4\n"
             "router ospf 1\n network 10.0.0.0 0.255.255.255 area 0\nline vty 0 4\n login\n"
             + BASE + "ip route 0.0.0.0 0.0.0.0 192.0.2.254\nend\n")
    config = parse_ios(noisy, "r.ios")
    (entry,) = config.crypto_maps
    assert (entry.map_name, entry.seq, str(entry.peer), str(entry.local)) == (
        "M", 10, "192.0.2.2", "192.0.2.1")
    assert (entry.inbound.spi, entry.outbound.spi) == (4096, 8192)
    assert entry.inbound.key == bytes.fromhex(CANARY)
    assert (entry.replay_window, entry.encapsulation, entry.esn) == (64, "esp", False)
    assert entry.where == Location("r.ios", 14)
    assert config.settings == Settings()
    assert "110" not in config.access_lists  # unused, and unusable: skipped quietly


def test_exit_ends_a_sub_mode():
    text = edit(" set session-key outbound", " exit\n set session-key outbound")
    assert refusal(text) == [
        "4: crypto map M 10 ipsec-manual is incomplete; add 'set session-key outbound esp 8192 "
        "cipher HEX'"]


def test_replay_disable_lifetime_transport_mode_and_local_address():
    text = (edit("esp-gcm 256", "esp-gcm 128\n mode transport")
            .replace(CANARY, "11" * 20).replace(OTHER, "22" * 20)
            .replace(" match address 101", " match address 101\n set security-association replay "
                     "disable\n set security-association lifetime kilobytes 1000")
            + "interface Loopback0\n ip address 198.51.100.7 255.255.255.255\n"
              "crypto map M local-address Loopback0\n")
    config = parse_ios(text, "r.ios")
    (entry,) = config.crypto_maps
    assert entry.replay_window == 0
    assert (entry.lifetime.seconds, entry.lifetime.kilobytes) == (3600, 1000)
    assert config.transform_sets["T"].mode == "transport"
    assert str(entry.local) == "198.51.100.7"


def test_settings_local_is_the_fallback_for_maps_on_no_interface():
    text = edit(" crypto map M\n", "")
    config = parse_ios(text, "r.ios", Settings(local=ipaddress.ip_address("192.0.2.99")))
    assert str(config.crypto_maps[0].local) == "192.0.2.99"


def test_named_extended_acl_with_sequence_numbers_and_remarks():
    text = edit("match address 101", "match address CRYPTO") + (
        "ip access-list extended CRYPTO\n remark the LANs\n 10 permit ip 10.1.0.0 0.0.255.255 "
        "10.2.0.0 0.0.255.255\n 20 deny ip host 10.1.0.1 any\n")
    entries = parse_ios(text, "r.ios").access_lists["CRYPTO"].entries
    assert [e.action for e in entries] == ["permit", "deny"]
    assert entries[1].where == Location("r.ios", 20)


def test_standard_numbered_acl_matches_sources():
    text = edit("match address 101", "match address 10")
    text += "access-list 10 permit 10.1.0.0 0.0.255.255\n"
    config = parse_ios(text, "r.ios")
    (entry,) = config.access_lists["10"].entries
    assert entry.src.prefixlen == 16 and entry.dst.is_any
    assert len(config.warnings) == 1 and "uses 'any'" in config.warnings[0].message


def test_esp_sha_hmac_warns():
    text = (edit("esp-gcm 256", "esp-aes 256 esp-sha-hmac")
            .replace(f"cipher {CANARY}", f"cipher {'33' * 32} authenticator {'44' * 20}")
            .replace(f"cipher {OTHER}", f"cipher {'55' * 32} authenticator {'66' * 20}"))
    config = parse_ios(text, "r.ios")
    assert [str(w) for w in config.warnings] == [
        "r.ios:2: transform set T: esp-sha-hmac (HMAC-SHA1-96) is MUST- in RFC 8221, expected "
        "to be deprecated; use 'esp-gcm 256' or 'esp-aes 256 esp-sha256-hmac'"
    ]
    assert config.crypto_maps[0].outbound.auth_key == bytes.fromhex("66" * 20)


# -- a config as typed into "configure terminal" -----------------------------------------------

TYPED = f"""\
conf t
hostname r1
cry ipsec transform-set T esp-gcm 256
cry map M 10 ipsec-m
set pe 192.0.2.2
set trans T
mat add 101
set session-key inb esp 4096 ciph {CANARY}
set session-key out esp 8192 cipher {OTHER}
exit
int ser0
description WAN
no shutdown
ip add 192.0.2.1 255.255.255.0
ip nat inside
cry map M
access-list 101 perm ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255
end
"""


def test_a_config_typed_unindented_and_abbreviated_is_the_running_config():
    typed, shown = parse_ios(TYPED, "t.ios"), parse_ios(BASE, "r.ios")
    assert typed.crypto_maps == shown.crypto_maps
    assert typed.access_lists == {"101": shown.access_lists["101"]}
    assert typed.transform_sets == shown.transform_sets
    assert typed.crypto_maps[0].where == Location("t.ios", 4)


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIG.glob("*.ios")))
def test_every_example_reads_the_same_unindented_after_configure_terminal(name):
    text = (CONFIG / name).read_text()
    flat = "configure terminal\n" + "\n".join(line.strip() for line in text.splitlines())
    assert parse_ios(flat + "\nend\n", name) == parse_ios(text, name)


def test_unindented_lines_leave_an_interface_only_for_a_global_command():
    text = edit(" ip address 192.0.2.1 255.255.255.0\n crypto map M\n",
                "hostname again\nip address 192.0.2.1 255.255.255.0\ncrypto map M\n")
    assert refusal(text) == [
        "4: crypto map M 10: no local IPv4 address; apply the map to an interface that has one "
        "('interface NAME', ' ip address A M', ' crypto map M')"]
    for between in ("ip route 0.0.0.0 0.0.0.0 192.0.2.254", "router ospf 1",
                    "ip access-list extended X", "line vty 0 4"):
        assert "no local IPv4 address" in refusal(text.replace("hostname again", between))[-1]
    for between in ("no ip redirects", "ip mtu 1400", "duplex auto", "ipv6 enable"):
        (entry,) = parse_ios(text.replace("hostname again", between), "r.ios").crypto_maps
        assert str(entry.local) == "192.0.2.1"


def test_an_unindented_ios_map_command_espd_does_not_read_is_refused_in_the_map():
    text = edit(" set peer 192.0.2.2\n", "reverse-route static\nset peer 192.0.2.2\n")
    assert refusal(text) == [
        "5: crypto map M 10: 'reverse-route static' is not supported in an ipsec-manual map; "
        "espd reads: set peer, set transform-set, match address, set security-association "
        "lifetime seconds|kilobytes N, set security-association replay window-size "
        "N|disable, set session-key inbound|outbound esp SPI cipher HEX [authenticator HEX], "
        "description"]


def test_interface_names_are_matched_as_ios_spells_them_out():
    text = (edit("interface Serial0", "interface gi 0/0").replace(" crypto map M\n", "")
            + "crypto map M local-address GigabitEthernet0/0\n")
    assert str(parse_ios(text, "r.ios").crypto_maps[0].local) == "192.0.2.1"
    broken = edit("interface Serial0", "interface Gi0/9").replace("255.255.255.0", "255.0.255.0")
    assert "12: interface GigabitEthernet0/9: '192.0.2.1/255.0.255.0' is not an address and " \
           "mask; write e.g. 'ip address 192.0.2.1 255.255.255.0'" in refusal(broken)


def test_exit_leaves_a_keyring_peer_for_the_keyring_as_in_ios():
    text = (CONFIG / "goss-e4-2513.ios").read_text()
    peer = " peer goss-c2-2513\n  address 20.20.20.21\n"
    assert peer in text
    config = parse_ios(text.replace(peer, " peer OLD\n  address 20.20.20.99\n  "
                                          "pre-shared-key old-key-of-another\n exit\n" + peer),
                       "e4.ios")
    assert [p.name for p in config.ike_peers] == ["ARMADILLO/OLD", "ARMADILLO/goss-c2-2513"]
    assert refusal(text.replace(peer, peer.replace("  address", " exit\n  address")))[:3] == [
        "25: crypto ikev2 keyring ARMADILLO peer goss-c2-2513 needs 'address A' (espd matches "
        "IKE peers by address)",
        "27: crypto ikev2 keyring ARMADILLO: start a peer with 'peer NAME' first",
        "28: crypto ikev2 keyring ARMADILLO: start a peer with 'peer NAME' first"]


def test_banner_text_is_never_read_as_commands():
    banner = ("banner motd ^C\nI manage this router: access only for staff\ninterface Serial0\n"
              " crypto map OTHER\n^C\nbanner login #one line#\n")
    config = parse_ios(banner + BASE, "r.ios")
    assert config.crypto_maps == parse_ios(BASE, "r.ios").crypto_maps
    assert refusal("banner exec %\n" + BASE)[-1] == (
        "1: the banner's text is never ended with '%', so every line after it was taken as "
        "banner text; end the banner with a line holding '%'")


AMBIGUOUS = [
    ("interface Serial0", "in Serial0", None),  # unique: interface
    ("interface Serial0", "i Serial0",
     "11: 'i' is ambiguous: it abbreviates interface, ip and ipv6; write more of the word"),
    (" set peer 192.0.2.2", " set p 192.0.2.2",
     "5: 'p' after 'set' is ambiguous: it abbreviates peer and pfs; write more of the word"),
    ("crypto map M 10 ipsec-manual", "crypto i map M 10 ipsec-manual",
     "4: 'i' after 'crypto' is ambiguous: it abbreviates ikev2, ipsec and isakmp; write more "
     "of the word"),
    ("crypto map M 10 ipsec-manual", "crypto map M 10 ipsec-",
     "4: 'ipsec-' after 'crypto map M 10' is ambiguous: it abbreviates ipsec-isakmp and "
     "ipsec-manual; write more of the word"),
    (" set session-key inbound esp 4096 cipher", " set session-key inbound esp 4096 c",
     None),  # cipher
]


@pytest.mark.parametrize(("old", "new", "expected"), AMBIGUOUS,
                         ids=[a[1].strip()[:30] for a in AMBIGUOUS])
def test_an_ambiguous_abbreviation_is_an_error_naming_what_it_could_be(old, new, expected):
    if expected is None:
        assert len(parse_ios(edit(old, new), "r.ios").crypto_maps) == 1
    else:
        assert expected in refusal(edit(old, new))


# -- located errors ---------------------------------------------------------------------------

BROKEN = [
    ((" set peer 192.0.2.2\n", ""),
     ["4: crypto map M 10 ipsec-manual is incomplete; add 'set peer 192.0.2.2'"]),
    (("esp 4096", "esp 0x1000"),
     ["8: crypto map M 10: SPI '0x1000' must be a decimal number from 256 to 4294967295 (1-255 "
      "are reserved by RFC 4303); IOS writes SPIs in decimal: 4096"]),
    (("esp 4096", "esp 255"),
     ["8: crypto map M 10: SPI '255' must be a decimal number from 256 to 4294967295 (1-255 "
      "are reserved by RFC 4303)"]),
    ((f"cipher {CANARY}", f"cipher {CANARY[:-4]}"),
     ["8: crypto map M 10: inbound key is 68 hex digits; esp-gcm 256 needs 72 hex digits (32 "
      "bytes of key followed by the 4-byte salt, 36 bytes in all)"]),
    ((f"cipher {CANARY}", f"cipher {CANARY[:-1]}g"),
     ["8: crypto map M 10: session key inbound cipher: the key must be an even number of hex "
      "digits (0-9, a-f)"]),
    ((f"cipher {CANARY}", f"cipher {CANARY} authenticator {'11' * 20}"),
     ["8: crypto map M 10: inbound SA has an authentication key, but esp-gcm 256 is an AEAD "
      "and needs none; drop it"]),
    ((f"cipher {CANARY}", f"cipher {CANARY} cipher {CANARY}"),
     ["8: crypto map M 10: session key inbound: expected 'cipher HEX' then optionally "
      "'authenticator HEX'; write 'set session-key inbound esp SPI cipher HEX "
      "[authenticator HEX]'"]),
    (("inbound esp 4096", "inbound ah 4096"),
     ["8: crypto map M 10: AH session keys are not supported; espd is ESP-only; use an ESP "
      "transform set such as 'esp-gcm 256' and write 'set session-key inbound esp SPI cipher "
      "HEX [authenticator HEX]'"]),
    ((f" set session-key outbound esp 8192 cipher {OTHER}\n", ""),
     ["4: crypto map M 10 ipsec-manual is incomplete; add 'set session-key outbound esp 8192 "
      "cipher HEX'"]),
    (("match address 101", "match address 102"),
     ["7: crypto map M 10: access list '102' is not defined; add e.g. 'access-list 102 permit "
      "ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255'"]),
    (("match address 101", "match address 110"),
     ["16: access-list 110: 'permit tcp any any established': 'established' is not supported "
      "in crypto ACLs; match on protocol, addresses and ports only"]),
    (("set transform-set T", "set transform-set U"),
     ["6: crypto map M 10: transform set 'U' is not defined; add 'crypto ipsec transform-set U "
      "esp-gcm 256'"]),
    (("set transform-set T", "set transform-set T U"),
     ["6: crypto map M 10: an ipsec-manual map takes one transform set; write "
      "'set transform-set T'"]),
    ((" crypto map M\n", ""),
     ["4: crypto map M 10: no local IPv4 address; apply the map to an interface that has one "
      "('interface NAME', ' ip address A M', ' crypto map M')"]),
    (("set peer 192.0.2.2", "set peer 2001:db8::2"),
     ["4: crypto map M 10: no local IPv6 address; apply the map to an interface that has one "
      "('interface NAME', ' ipv6 address A/LEN', ' crypto map M')"]),
    (("set peer 192.0.2.2", "set peer 192.0.2.2\n set peer 192.0.2.3\n set pfs group2\n set "
                            "session-key lifetime seconds 4000\n set security-association "
                            "level per-host\n set peer gateway"),
     ["6: crypto map M 10: an ipsec-manual map takes one peer (the first is at r.ios:5); "
      "remove this 'set peer'",
      "7: crypto map M 10: 'set pfs' is not supported in an ipsec-manual map; espd reads: set "
      "peer, set transform-set, match address, set security-association lifetime "
      "seconds|kilobytes N, set security-association replay window-size N|disable, set "
      "session-key inbound|outbound esp SPI cipher HEX [authenticator HEX], description",
      "8: crypto map M 10: 'set session-key lifetime' is not an IOS command; write "
      "'set security-association lifetime seconds 4000'",
      "9: crypto map M 10: 'set security-association level per-host' is not supported; write "
      "'set security-association lifetime seconds N', '... lifetime kilobytes N', '... replay "
      "window-size N' or '... replay disable'",
      "10: crypto map M 10: an ipsec-manual map takes one peer (the first is at r.ios:5); "
      "remove this 'set peer'"]),
    (("match address 101", "match address 101\n set security-association replay window-size "
                           "99999\n set security-association lifetime seconds 0"),
     ["8: crypto map M 10: replay window-size must be a decimal number from 0 to 65536, not "
      "'99999'",
      "9: crypto map M 10: lifetime seconds must be a decimal number from 1 to "
      "18446744073709551615, not '0'"]),
    (("crypto map M 10 ipsec-manual", "crypto map M 10"),  # ipsec-isakmp, the IOS default
     ["8: crypto map M 10: session keys belong to an ipsec-manual map; an ipsec-isakmp map "
      "negotiates its keys with IKE (remove 'set session-key')",
      "9: crypto map M 10: session keys belong to an ipsec-manual map; an ipsec-isakmp map "
      "negotiates its keys with IKE (remove 'set session-key')"]),
    (("crypto map M 10 ipsec-manual", "crypto map M 10 ipsec-isakmp dynamic DYN"),
     ["4: crypto map M 10 ipsec-isakmp dynamic: dynamic crypto maps (peers that are not "
      "listed) are not supported; list each peer with 'set peer' in an ipsec-isakmp entry"]),
    (("esp-gcm 256", "esp-gcm 256\n mode tunnel\n mode bogus"),
     ["4: crypto ipsec transform-set T: 'mode bogus' is not supported; write 'mode tunnel' or "
      "'mode transport'"]),
    (("esp-gcm 256", "esp-gcm 256\n mode transport require"),
     ["3: crypto ipsec transform-set T: 'mode transport require' is not supported (espd has "
      "no IOS 'require' fallback: it runs exactly the mode written); write 'mode transport'"]),
    (("esp-gcm 256", "esp-3des esp-sha-hmac"),
     ["2: crypto ipsec transform-set T: esp-3des: 3DES is SHOULD NOT in RFC 8221 (64-bit block, "
      "Sweet32) and espd does not offer it; use 'esp-gcm 256'"]),
    (("access-list 101 permit", "access-list 101 permit ip any any\naccess-list 101 permit"),
     []),  # warning only: see test_any_warning_names_the_line
    (("access-list 101", "access-list 301"),
     ["15: access-list 301: numbered access lists are 1-99 and 1300-1999 (standard) or 100-199 "
      "and 2000-2699 (extended); for a name write 'ip access-list extended 301'",
      "7: crypto map M 10: access list '101' is not defined; add e.g. 'access-list 101 permit "
      "ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255'"]),
    (("ip address 192.0.2.1 255.255.255.0", "ip address 192.0.2.1 255.255.0.255"),
     ["12: interface Serial0: '192.0.2.1/255.255.0.255' is not an address and mask; write e.g. "
      "'ip address 192.0.2.1 255.255.255.0'",
      "4: crypto map M 10: no local IPv4 address; apply the map to an interface that has one "
      "('interface NAME', ' ip address A M', ' crypto map M')"]),
]


@pytest.mark.parametrize(("change", "expected"), BROKEN, ids=[c[0][1][:40] for c in BROKEN])
def test_broken_ios_configs_are_refused_with_located_fixes(change, expected):
    text = edit(*change)
    if not expected:
        parse_ios(text, "r.ios")
        return
    assert sorted(refusal(text), key=lambda s: int(s.split(":")[0])) == sorted(
        expected, key=lambda s: int(s.split(":")[0]))


def test_any_warning_names_the_line():
    text = edit("access-list 101 permit",
                "access-list 101 permit ip any any\naccess-list 101 permit")
    (warning,) = parse_ios(text, "r.ios").warnings
    assert warning.where == Location("r.ios", 15)
    assert warning.message.startswith("access list 101 uses 'any'; the IOS IPsec guide advises")


def test_deny_lines_and_a_second_entry_on_the_same_acl_warn_in_ios_too():
    second = (f"crypto map M 20 ipsec-manual\n set peer 192.0.2.3\n set transform-set T\n"
              f" match address 101\n set session-key inbound esp 4097 cipher {'11' * 36}\n"
              f" set session-key outbound esp 8193 cipher {'22' * 36}\n")
    text = edit("access-list 101 permit", "access-list 101 deny ip host 10.1.0.9 any\n"
                                          "access-list 101 permit") + second
    warnings = [str(w) for w in parse_ios(text, "r.ios").warnings]
    assert warnings[0].startswith("r.ios:15: access list 101: 'deny ip host 10.1.0.9 any' is a "
                                  "deny in a crypto ACL: IOS would send the traffic it matches "
                                  "in clear")
    assert warnings[1].startswith("r.ios:18: crypto map M 20 uses access list 101, as crypto "
                                  "map M 10 (at r.ios:4), which comes first in the policy order")
    assert len(warnings) == 2


def test_entering_a_map_entry_again_adds_to_it_as_in_ios():
    text = edit(" set transform-set T\n", "")
    text += "crypto map M 10 ipsec-manual\n set transform-set T\n"
    (entry,) = parse_ios(text, "r.ios").crypto_maps
    assert entry.transform_set == "T" and entry.where == Location("r.ios", 4)


def test_duplicate_inbound_spi_across_map_entries():
    second = (f"crypto map M 20 ipsec-manual\n set peer 192.0.2.3\n set transform-set T\n"
              f" match address 101\n set session-key inbound esp 4096 cipher {'11' * 36}\n"
              f" set session-key outbound esp 8192 cipher {'22' * 36}\n")
    assert refusal(BASE + second) == [
        "17: crypto map M 20: inbound SPI 4096 (0x1000) is also the inbound SPI of crypto map "
        "M 10 at r.ios:4; inbound SPIs pick the SA, so each must be unique",
    ]


def test_keys_never_appear_in_ios_errors_or_repr():
    for text in (
        edit("esp 4096", "esp 12"),
        edit(f"cipher {CANARY}", f"cipher {CANARY}0"),
        edit(f"cipher {CANARY}", f"cipher {CANARY}zz"),
        edit(f"cipher {CANARY}", f"cipher {CANARY} authenticator {CANARY}"),
        edit(f"cipher {CANARY}", f"{CANARY} {CANARY}"),
        edit("inbound esp", "sideways esp"),
        edit(f"cipher {OTHER}", f"cipher {CANARY}"),
        edit("esp-gcm 256", "esp-aes 256 esp-sha256-hmac"),
    ):
        refusal(text)  # asserts the canary is absent
    config = parse_ios(BASE, "r.ios")
    canary_absent(repr(config))
    canary_absent(str(config.crypto_maps[0]))
