"""The native TOML loader (espd.config): examples, located errors, secrecy of keys."""

from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path

import pytest

from espd.config.load import load, looks_like_ios
from espd.config.model import ConfigError, Location, ManualKey, Settings
from espd.config.toml import parse_toml

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config"

CANARY = "c0ffee" * 12  # 36 bytes: an esp-gcm 256 key that must never be printed
OTHER = "5a" * 36

BASE = f"""\
[daemon]
local = "192.0.2.1"

[access_list.101]
rules = [
    "permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255",
]

[transform_set.STRONG]
transforms = ["esp-gcm 256"]

[[crypto_map]]
name = "armadillo"
seq = 10
peer = "192.0.2.2"
match_address = "101"
transform_set = "STRONG"
inbound = {{ spi = 0x1000, key = "{CANARY}" }}
outbound = {{ spi = 0x2000, key = "{OTHER}" }}
"""


def canary_absent(text: str) -> None:
    lowered = text.lower()
    assert "c0ffee" not in lowered
    assert "\\xc0\\xff\\xee" not in lowered


def load_text(tmp_path: Path, text: str, name: str = "espd.toml"):
    path = tmp_path / name
    path.write_text(text)
    return load(str(path)), str(path)


def errors(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "espd.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load(str(path))
    canary_absent(str(e.value))
    prefix = f"{path}:"
    lines = str(e.value).split("\n")
    assert [str(p) for p in e.value.problems] == lines
    assert all(line.startswith(prefix) for line in lines)
    return [line.removeprefix(prefix) for line in lines]


def edit(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new, 1)


# -- the examples -----------------------------------------------------------------------------


EXAMPLES = {  # file -> number of crypto map entries it defines
    "espd.example.toml": 2,
    "router.example.ios": 3,
    "goss-e4-2513.ios": 1,
    "goss-c2-2513.ios": 1,
    "goss-e4-2513-manual.ios": 1,
    "goss-c2-2513-manual.ios": 1,
}


def test_every_example_is_listed():
    found = {p.name for p in CONFIG.iterdir() if p.is_file() and p.suffix in (".toml", ".ios")}
    assert found == set(EXAMPLES)


@pytest.mark.parametrize(("name", "maps"), sorted(EXAMPLES.items()))
def test_examples_load_cleanly(name, maps):
    config = load(str(CONFIG / name))
    assert len(config.crypto_maps) == maps
    assert config.warnings == ()
    keys = [e.key for e in config.crypto_maps]
    assert keys == sorted(keys)
    for entry in config.crypto_maps:
        assert entry.match_address in config.access_lists
        assert entry.transform_set in config.transform_sets
        assert entry.peer.version == entry.local.version
    canary_absent(repr(config))


def test_toml_example_values():
    config = load(str(CONFIG / "espd.example.toml"))
    assert config.settings == Settings(
        interface="espd0", local=ipaddress.ip_address("192.0.2.1"), workers=2,
        control_socket="/run/espd/control.sock", metrics="127.0.0.1:9661",
        state_dir="/var/lib/espd",
    )
    assert config.settings.metrics_address == ("127.0.0.1", 9661)
    first, second = config.crypto_maps
    assert (first.map_name, first.seq, str(first.peer), str(first.local)) == (
        "armadillo", 10, "192.0.2.2", "192.0.2.1")
    assert (first.encapsulation, first.replay_window, first.esn) == ("esp", 1024, False)
    assert (first.lifetime.seconds, first.lifetime.kilobytes) == (3600, 4608000)
    assert (first.inbound.spi, first.outbound.spi) == (0x1000, 0x2000)
    assert len(first.inbound.key) == 36 and first.inbound.auth_key is None
    assert config.transform_sets["STRONG"].transform.name == "esp-gcm 256"
    assert config.transform_sets["STRONG"].mode == "tunnel"
    assert (second.encapsulation, second.esn, second.replay_window) == ("udp", True, 64)
    assert second.peer == ipaddress.ip_address("2001:db8:ffff::2")
    assert config.transform_sets[second.transform_set].transform.name == (
        "esp-aes 256 esp-sha256-hmac")
    assert len(second.inbound.key) == 32 and len(second.inbound.auth_key) == 32
    assert config.access_lists["V6"].entries[0].version == 6
    rules = config.access_lists["101"].entries
    text = (CONFIG / "espd.example.toml").read_text().splitlines()
    line = next(i for i, t in enumerate(text, 1) if '"permit ip 10.1.0.0/16 10.3.0.0/16"' in t)
    assert rules[1].src.prefixlen == 16 and rules[1].where.line == line


def test_toml_example_merges_the_ios_example_when_include_is_uncommented(tmp_path):
    text = (CONFIG / "espd.example.toml").read_text()
    assert "# include_ios = " in text
    shutil.copy(CONFIG / "router.example.ios", tmp_path)
    config, _ = load_text(tmp_path, text.replace("# include_ios = ", "include_ios = "))
    assert [e.key for e in config.crypto_maps] == [
        ("armadillo", 10), ("armadillo", 20), ("branch", 10), ("branch", 20), ("branch", 30)]
    assert {"101", "V6", "110", "PARTNER", "HQ6"} == set(config.access_lists)
    branch = config.crypto_maps[2]
    assert str(branch.local) == "192.0.2.10"  # from the IOS interface, not [daemon] local
    assert branch.where.file == str(tmp_path / "router.example.ios")


def test_base_config_and_defaults(tmp_path):
    config, path = load_text(tmp_path, BASE)
    (entry,) = config.crypto_maps
    assert entry.inbound == ManualKey(0x1000, bytes.fromhex(CANARY))
    assert (entry.encapsulation, entry.replay_window, entry.esn) == ("esp", 64, False)
    assert (entry.lifetime.seconds, entry.lifetime.kilobytes) == (3600, 4608000)
    assert entry.where == Location(path, 12)
    assert config.settings.workers is None and config.settings.interface == "espd0"


def test_metrics_can_be_turned_off_and_take_ipv6(tmp_path):
    config, _ = load_text(tmp_path, edit("[daemon]\n", '[daemon]\nmetrics = ""\n'))
    assert config.settings.metrics_address is None
    config, _ = load_text(tmp_path, edit("[daemon]\n", '[daemon]\nmetrics = "[::1]:9100"\n'))
    assert config.settings.metrics_address == ("::1", 9100)


def test_receive_path_is_raw_by_default_and_takes_ring(tmp_path):
    config, _ = load_text(tmp_path, BASE)
    assert config.settings.receive_path == "raw"
    config, _ = load_text(tmp_path, edit("[daemon]\n", '[daemon]\nreceive_path = "ring"\n'))
    assert config.settings.receive_path == "ring"
    assert errors(tmp_path, edit("[daemon]\n", '[daemon]\nreceive_path = "mmap"\n')) == [
        "2: daemon.receive_path: 'mmap' is not allowed; write \"raw\" or \"ring\""]


def map_entry(name: str, seq: int) -> str:
    return (
        f'\n[[crypto_map]]\nname = "{name}"\nseq = {seq}\npeer = "192.0.2.{seq}"\n'
        f'match_address = "101"\ntransform_set = "STRONG"\n'
        f'inbound = {{ spi = {seq + 300}, key = "{f"{seq:02x}" * 36}" }}\n'
        f'outbound = {{ spi = {seq + 400}, key = "{f"{seq + 100:02x}" * 36}" }}\n'
    )


def test_maps_are_sorted_by_name_then_seq(tmp_path):
    extra = map_entry("zebra", 5) + map_entry("armadillo", 3) + map_entry("armadillo", 20)
    config, _ = load_text(tmp_path, BASE + extra)
    assert [e.key for e in config.crypto_maps] == [
        ("armadillo", 3), ("armadillo", 10), ("armadillo", 20), ("zebra", 5)]


# -- located errors ---------------------------------------------------------------------------


BROKEN = [
    (("seq = 10", "seq = 0"),
     ["14: crypto_map.seq must be from 1 to 65535, not 0; write e.g. 'seq = 10'"]),
    (("seq = 10", 'seq = "ten"'),
     ["14: crypto_map.seq must be an integer, not a string; write e.g. 'seq = 10'"]),
    (('peer = "192.0.2.2"', 'peer = "192.0.2.256"'),
     ["15: crypto_map.peer: '192.0.2.256' is not an IPv4 or IPv6 address; write e.g. "
      "'peer = \"192.0.2.2\"'"]),
    (('peer = "192.0.2.2"\n', ""),
     ["12: crypto_map needs 'peer', e.g. 'peer = \"192.0.2.2\"'"]),
    (('local = "192.0.2.1"', 'local = "2001:db8::1"'),
     ["15: crypto_map armadillo 10: peer 192.0.2.2 is IPv4 but the local address "
      "2001:db8::1 is IPv6; use one IP version"]),
    (('local = "192.0.2.1"', 'locale = "192.0.2.1"'),
     ["2: unknown key 'daemon.locale'; did you mean 'local'? known keys: interface, local, "
      "workers, control_socket, metrics, state_dir, offload, user, nat_keepalive, "
      "drop_log_interval, send_path, receive_path, crypto_backend",
      "12: crypto_map armadillo 10 has no local address; set 'local' in [daemon] or in this "
      "crypto_map, e.g. 'local = \"192.0.2.1\"'"]),
    (("[daemon]\n", '[daemon]\nworkers = 0\nmetrics = "localhost"\nstate_dir = "var"\n'
                    'interface = "tun/0"\ncontrol_socket = 5\n'),
     ["2: daemon.workers must be from 1 to 1024, not 0; write e.g. 'workers = 2'",
      "3: daemon.metrics: 'localhost' is not HOST:PORT; write e.g. '\"127.0.0.1:9661\"' or "
      "'\"[::1]:9661\"', or '\"\"' to turn the exporter off",
      "4: daemon.state_dir: 'var' is not an absolute path; write e.g. "
      "'state_dir = \"/var/lib/espd\"'",
      "5: daemon.interface: 'tun/0' is not a Linux interface name; use 1-15 characters "
      "without spaces, '/' or ':'",
      "6: daemon.control_socket must be a string, not an integer; write e.g. "
      "'control_socket = \"/run/espd/control.sock\"'"]),
    (('"permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255",',
      '"permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255",\n    "permit ip 10.1.0.0 '
      '255.255.0.0 10.3.0.0 0.0.255.255",'),
     ["7: access_list.101: 'permit ip 10.1.0.0 255.255.0.0 10.3.0.0 0.0.255.255': 255.255.0.0 "
      "is a subnet mask, but ACLs take a wildcard (the inverted mask); write "
      "'10.1.0.0 0.0.255.255' or '10.1.0.0/16'"]),
    (('"permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255",', "42,"),
     ["6: access_list.101.rules: each rule is a string, not an integer"]),
    (('rules = [', 'rule = [1]\nrules = ['),
     ["5: unknown key 'access_list.101.rule'; did you mean 'rules'? known keys: rules"]),
    (('"esp-gcm 256"', '"esp-des"'),
     ["10: transform_set.STRONG: esp-des: DES is MUST NOT in RFC 8221 (56-bit key, broken); "
      "use 'esp-gcm 256'"]),
    (('"esp-gcm 256"', '"ah-sha-hmac"'),
     ["10: transform_set.STRONG: ah-sha-hmac: AH transforms are not supported; espd is "
      "ESP-only, and RFC 8221 recommends ESP with an AEAD cipher instead of AH; use "
      "'esp-gcm 256'"]),
    (('transforms = ["esp-gcm 256"]', 'transforms = ["esp-gcm 256"]\nmode = "transprt"'),
     ["11: transform_set.STRONG.mode: 'transprt' is not allowed; write \"tunnel\" or "
      "\"transport\""]),
    (('match_address = "101"', 'match_address = "110"'),
     ["16: crypto_map.match_address: access list '110' is not defined; did you mean '101'?"]),
    (('transform_set = "STRONG"', 'transform_set = "WEAK"'),
     ["17: crypto_map.transform_set: transform set 'WEAK' is not defined; defined: STRONG"]),
    (("spi = 0x1000", "spi = 255"),
     ["18: crypto_map.inbound.spi must be from 256 to 4294967295 (RFC 4303 reserves 1-255), "
      "not 255; write e.g. 'spi = 0x1000'"]),
    (("spi = 0x2000", "spi = 0x100000000"),
     ["19: crypto_map.outbound.spi must be from 256 to 4294967295 (RFC 4303 reserves 1-255), "
      "not 4294967296; write e.g. 'spi = 0x2000'"]),
    ((f'key = "{CANARY}"', f'key = "{CANARY[:-8]}"'),
     ["18: crypto_map armadillo 10: inbound key is 64 hex digits; esp-gcm 256 needs 72 hex "
      "digits (32 bytes of key followed by the 4-byte salt, 36 bytes in all)"]),
    ((f'key = "{CANARY}"', f'key = "{CANARY[:-1]}g"'),
     ["18: crypto_map.inbound.key must be an even number of hex digits (0-9, a-f) without "
      "spaces or '0x'; write 'key = \"<72 hex digits>\"'"]),
    ((f'key = "{CANARY}"', f'key = "{CANARY}", auth_key = "{CANARY[:40]}"'),
     ["18: crypto_map armadillo 10: inbound SA has an authentication key, but esp-gcm 256 is "
      "an AEAD and needs none; drop it"]),
    ((f'key = "{CANARY}"', 'key_file = "/nonexistent/espd/in.key"'),
     ["18: crypto_map.inbound.key_file: cannot read key file /nonexistent/espd/in.key: No such "
      "file or directory; fix the path (a relative path starts at the config file's "
      "directory) or create it holding the key's 72 hex digits and run 'chmod 600 "
      "/nonexistent/espd/in.key'"]),
    ((f', key = "{CANARY}"', ""),
     ["18: crypto_map.inbound needs 'key' or 'key_file', e.g. 'key = \"<72 hex digits>\"' or "
      "'key_file = \"/etc/espd/inbound.key\"'"]),
    ((f'outbound = {{ spi = 0x2000, key = "{OTHER}" }}\n', ""),
     ["12: crypto_map needs 'outbound', e.g. 'outbound = { spi = 0x2000, key = \"<hex>\" }'"]),
    ((f'key = "{OTHER}"', f'key = "{CANARY}"'),
     ["12: crypto map armadillo 10: the outbound key is also the inbound key of crypto map "
      "armadillo 10; two SAs sharing a key reuse nonces (fatal for GCM and ChaCha20); give "
      "every SA its own random key"]),
    (('seq = 10', 'seq = 10\nreplay_window = 70000\nlifetime = { seconds = 0, kb = 1 }\n'
                  'encapsulation = "ah"\nesn = "yes"'),
     ["15: crypto_map.replay_window must be from 0 to 65536, not 70000; write e.g. "
      "'replay_window = 1024'",
      "16: unknown key 'crypto_map.lifetime.kb'; known keys: seconds, kilobytes, packets",
      "16: crypto_map.lifetime.seconds must be positive, not 0; write e.g. 'seconds = 3600'",
      "17: crypto_map.encapsulation: 'ah' is not allowed; write \"esp\" or \"udp\"",
      "18: crypto_map.esn must be a boolean, not a string; write e.g. 'esn = true'"]),
    (('name = "armadillo"', 'name = "armadillo"\npfs = "group2"'),
     ["14: crypto_map armadillo 10: 'pfs' applies to keying = \"ike\"; a manually keyed entry "
      "has no negotiation"]),
    (('name = "armadillo"', 'name = "arma dillo"'),
     ["13: crypto_map.name: 'arma dillo' is not a valid name; use 1-64 letters, digits, '_', "
      "'.', ':' or '-'"]),
    (("[[crypto_map]]", "[[crypto_map]"),
     ["12: invalid TOML: Expected ']]' at the end of an array declaration; see "
      "config/espd.example.toml for the syntax"]),
    (("[transform_set.STRONG]", "[transform_sets.STRONG]"),
     ["9: unknown key 'transform_sets'; did you mean 'transform_set'? known keys: daemon, "
      "access_list, transform_set, crypto_map, include_ios, ike, ike_peer",
      "17: crypto_map.transform_set: transform set 'STRONG' is not defined; define it under "
      "[transform_set.STRONG]"]),
]


@pytest.mark.parametrize(("change", "expected"), BROKEN, ids=[c[0][1][:40] for c in BROKEN])
def test_broken_configs_are_refused_with_located_fixes(tmp_path, change, expected):
    assert errors(tmp_path, edit(*change)) == expected


def test_sha1_and_any_are_warnings_not_errors(tmp_path):
    text = edit('"esp-gcm 256"', '"esp-null", "esp-sha-hmac"').replace(
        f'key = "{CANARY}"', f'key = "", auth_key = "{CANARY[:40]}"').replace(
        f'key = "{OTHER}"', f'key = "", auth_key = "{OTHER[:40]}"').replace(
        "10.2.0.0 0.0.255.255", "any")
    config, path = load_text(tmp_path, text)
    assert [str(w) for w in config.warnings] == [
        f"{path}:6: access list 101 uses 'any'; the IOS IPsec guide advises against 'any' in "
        "crypto ACLs, because it sweeps in traffic nobody meant to protect (routing protocols, "
        "management, IKE) and lets the peer send packets with any inner address; name the "
        "protected subnets, e.g. 'permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255'",
        f"{path}:9: transform set STRONG: esp-sha-hmac (HMAC-SHA1-96) is MUST- in RFC 8221, "
        "expected to be deprecated; use 'esp-gcm 256' or 'esp-aes 256 esp-sha256-hmac'",
    ]
    assert config.crypto_maps[0].inbound.auth_key == bytes.fromhex(CANARY[:40])


DENY = ("is a deny in a crypto ACL: IOS would send the traffic it matches in clear (and try "
        "the next crypto map entry); espd discards it (outbound drop reason policy_deny; "
        "inbound, mirrored, selector_mismatch) and tries no later entry; to send traffic in "
        "clear, keep it out of the tunnel with a more specific route via another interface")


def test_deny_rules_and_deny_only_access_lists_warn_what_happens(tmp_path):
    text = edit('"permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255",',
                '"deny ip host 10.1.0.9 any",\n    "deny ip any any",')
    config, path = load_text(tmp_path, text)
    assert [str(w) for w in config.warnings] == [
        f"{path}:6: access list 101: 'deny ip host 10.1.0.9 any' {DENY}",
        f"{path}:7: access list 101: 'deny ip any any' {DENY}",
        f"{path}:13: crypto map armadillo 10: access list 101 permits nothing (it has only "
        "deny rules), so this entry can never carry traffic; what its rules match is discarded",
    ]


def test_a_second_entry_with_the_same_rules_warns_that_it_never_carries_traffic(tmp_path):
    second = (f'\n[access_list.COPY]\nrules = ["permit ip 10.1.0.0/16 10.2.0.0/16"]\n'
              f'\n[[crypto_map]]\nname = "armadillo"\nseq = 20\npeer = "192.0.2.3"\n'
              f'match_address = "101"\ntransform_set = "STRONG"\n'
              f'inbound = {{ spi = 0x1001, key = "{"11" * 36}" }}\n'
              f'outbound = {{ spi = 0x2001, key = "{"22" * 36}" }}\n'
              f'\n[[crypto_map]]\nname = "zebra"\nseq = 5\npeer = "192.0.2.4"\n'
              f'match_address = "COPY"\ntransform_set = "STRONG"\n'
              f'inbound = {{ spi = 0x1002, key = "{"33" * 36}" }}\n'
              f'outbound = {{ spi = 0x2002, key = "{"44" * 36}" }}\n')
    config, path = load_text(tmp_path, BASE + second)
    tail = ("which comes first in the policy order (first match wins, across all crypto "
            "maps): this entry can never carry traffic; give it traffic of its own or remove it")
    assert [str(w) for w in config.warnings] == [
        f"{path}:24: crypto map armadillo 20 uses access list 101, as crypto map armadillo 10 "
        f"(at {path}:12), {tail}",
        f"{path}:33: crypto map zebra 5 uses access list COPY, whose rules are those of access "
        f"list 101 of crypto map armadillo 10 (at {path}:12), {tail}",
    ]


def test_different_rules_in_a_second_entry_do_not_warn(tmp_path):
    second = (f'\n[access_list.OTHER]\nrules = ["permit ip 10.1.0.0/16 10.3.0.0/16"]\n'
              f'\n[[crypto_map]]\nname = "armadillo"\nseq = 20\npeer = "192.0.2.3"\n'
              f'match_address = "OTHER"\ntransform_set = "STRONG"\n'
              f'inbound = {{ spi = 0x1001, key = "{"11" * 36}" }}\n'
              f'outbound = {{ spi = 0x2001, key = "{"22" * 36}" }}\n')
    config, _ = load_text(tmp_path, BASE + second)
    assert config.warnings == ()


def test_unused_access_list_with_any_does_not_warn(tmp_path):
    config, _ = load_text(tmp_path, BASE + '\n[access_list.OTHER]\nrules = ["permit ip any any"]\n')
    assert config.warnings == ()
    assert config.access_lists["OTHER"].entries[0].src.is_any


def test_duplicate_inbound_spi_names_both_entries(tmp_path):
    second = (
        '\n[[crypto_map]]\nname = "armadillo"\nseq = 20\npeer = "192.0.2.3"\n'
        'match_address = "101"\ntransform_set = "STRONG"\n'
        f'inbound = {{ spi = 4096, key = "{"11" * 36}" }}\n'
        f'outbound = {{ spi = 0x2001, key = "{"22" * 36}" }}\n'
    )
    path = tmp_path / "espd.toml"
    assert errors(tmp_path, BASE + second) == [
        f"21: crypto map armadillo 20: inbound SPI 4096 (0x1000) is also the inbound SPI of "
        f"crypto map armadillo 10 at {path}:12; inbound SPIs pick the SA, so each must be "
        f"unique"
    ]
    assert errors(tmp_path, BASE + second.replace("seq = 20", "seq = 10")) == [
        f"21: crypto map armadillo 10 is defined twice (first at {path}:12); give this entry "
        "another seq"
    ]


def test_lines_are_found_in_sub_tables_dotted_keys_and_multiline_arrays(tmp_path):
    text = f"""\
# comment with [brackets] and "quotes" and key = value
[daemon]
'local' = "192.0.2.1"   # quoted key

[access_list."101"]
rules = [  # a comment ]
    '''permit ip 10.1.0.0 0.0.255.255
''',
    "permit ip 10.3.0.0/16 10.4.0.0 0.0.255.255",

    "permit ip 10.5.0.0/16 bogus",
]

[transform_set.STRONG]
transforms = ["esp-gcm 256"]

[[crypto_map]]
name = "armadillo"
seq = 10
peer = "192.0.2.2"
match_address = "101"
transform_set = "STRONG"
lifetime.seconds = -1
inbound = {{ spi = 0x1000, key = "{CANARY}" }}

[crypto_map.outbound]
spi = 1
key = "{OTHER}"
"""
    assert errors(tmp_path, text) == [
        "7: access_list.101: 'permit ip 10.1.0.0 0.0.255.255': an address is missing; "
        "write 'any', 'host A', 'A WILDCARD' or 'A/LEN'",
        "11: access_list.101: 'permit ip 10.5.0.0/16 bogus': 'bogus' is not an IP address; "
        "write 'any', 'host A', 'A WILDCARD' or 'A/LEN'",
        "23: crypto_map.lifetime.seconds must be positive, not -1; write e.g. 'seconds = 3600'",
        "27: crypto_map.outbound.spi must be from 256 to 4294967295 (RFC 4303 reserves 1-255), "
        "not 1; write e.g. 'spi = 0x2000'",
    ]


def test_second_array_table_gets_its_own_lines(tmp_path):
    second = (
        '\n[[crypto_map]]\nname = "armadillo"\nseq = 20\npeer = "192.0.2.3"\n'
        'match_address = "101"\ntransform_set = "STRONG"\n'
        f'inbound = {{ spi = 0x1001, key = "{"11" * 36}" }}\n'
        '[crypto_map.outbound]\nspi = 0x2001\nkey = "abc"\n'
    )
    assert errors(tmp_path, BASE + second) == [
        "30: crypto_map.outbound.key must be an even number of hex digits (0-9, a-f) without "
        "spaces or '0x'; write 'key = \"<72 hex digits>\"'"
    ]


def test_include_ios_errors_keep_the_ios_file_and_line(tmp_path):
    (tmp_path / "router.ios").write_text(
        "crypto ipsec transform-set OLD esp-3des esp-md5-hmac\n")
    path = tmp_path / "espd.toml"
    path.write_text('include_ios = ["router.ios", "missing.ios"]\n' + BASE)
    with pytest.raises(ConfigError) as e:
        load(str(path))
    assert str(e.value).split("\n") == [
        f"{path}:1: cannot read {tmp_path / 'missing.ios'}: No such file or directory",
        f"{tmp_path / 'router.ios'}:1: crypto ipsec transform-set OLD: esp-3des: 3DES is "
        "SHOULD NOT in RFC 8221 (64-bit block, Sweet32) and espd does not offer it; use "
        "'esp-gcm 256'",
    ]


def test_include_ios_names_must_not_clash(tmp_path):
    (tmp_path / "router.ios").write_text("access-list 101 permit ip host 10.9.9.9 host 10.8.8.8\n")
    assert errors(tmp_path, 'include_ios = ["router.ios"]\n' + BASE) == [
        f"5: access list 101 is also defined at {tmp_path / 'router.ios'}:1; rename one of them"
    ]


def test_toml_maps_may_use_access_lists_and_transform_sets_from_ios(tmp_path):
    (tmp_path / "router.ios").write_text(
        "access-list 150 permit ip 10.7.0.0 0.0.255.255 10.8.0.0 0.0.255.255\n"
        "crypto ipsec transform-set CHACHA esp-chacha20-poly1305\n mode transport\n")
    text = BASE.replace('match_address = "101"', 'match_address = "150"').replace(
        'transform_set = "STRONG"', 'transform_set = "CHACHA"')
    config, _ = load_text(tmp_path, 'include_ios = ["router.ios"]\n' + text)
    (entry,) = config.crypto_maps
    assert (entry.match_address, entry.transform_set) == ("150", "CHACHA")
    assert config.transform_sets["CHACHA"].mode == "transport"


def test_unreadable_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as e:
        load(str(missing))
    assert str(e.value) == f"{missing}: cannot read {missing}: No such file or directory"


# -- format detection and secrecy -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ios"),
    [
        ("!\nversion 11.3\n", True), ("\n\nhostname r1\n", True),
        ("access-list 1 permit any", True),
        ("crypto map x 1 ipsec-manual\n", True), ("interface e0\n", True),
        ("Current configuration:\n!\n", True), ("# espd\n[daemon]\n", False),
        ('include_ios = ["r.ios"]\n', False), ("", False), ("version = 2\n", False),
        ('"interface" = 1\n', False), ("configure terminal\n", True), ("conf t\n", True),
        ("int gi0/0\n", True), ("cry map M 10\n", True), ("i e0\n", True),
        ("Router#show running-config\n", False), ("set peer 192.0.2.2\n", False),
    ],
)
def test_format_is_detected_by_content(text, ios):
    assert looks_like_ios(text) is ios


def test_a_file_that_starts_like_neither_says_it_was_read_as_toml_and_why(tmp_path):
    assert errors(tmp_path, "Router#show running-config\nBuilding configuration...\n!\n"
                            "crypto map M 10 ipsec-manual\n") == [
        "1: read as TOML (its first line, 'Router#show running-config', is no IOS command "
        "espd knows and no TOML table or key): invalid TOML: Expected '=' after a key in a "
        "key/value pair; see config/espd.example.toml for the syntax; from line 2 on it "
        "reads like IOS ('Building configuration...'): for an IOS configuration, delete what "
        "comes before that line or start the file with a '!' line"]
    assert errors(tmp_path, "hello world\n") == [
        "1: read as TOML (its first line, 'hello world', is no IOS command espd knows and no "
        "TOML table or key): invalid TOML: Expected '=' after a key in a key/value pair; see "
        "config/espd.example.toml for the syntax"]


def test_a_pasted_ios_config_is_read_as_ios(tmp_path):
    text = (CONFIG / "goss-e4-2513-manual.ios").read_text()
    config, _ = load_text(tmp_path, "configure terminal\n" + text + "end\n", "pasted.conf")
    assert config.crypto_maps[0].map_name == "armadillo"


def test_ios_file_with_toml_extension_is_read_as_ios(tmp_path):
    config, _ = load_text(tmp_path, (CONFIG / "goss-e4-2513-manual.ios").read_text(), "router.toml")
    assert config.crypto_maps[0].map_name == "armadillo"


def test_keys_never_appear_in_repr_or_str_of_the_model(tmp_path):
    config, _ = load_text(tmp_path, BASE)
    (entry,) = config.crypto_maps
    for thing in (config, entry, entry.inbound, entry.outbound, config.settings,
                  config.access_lists, config.transform_sets):
        canary_absent(repr(thing))
        canary_absent(str(thing))
    assert repr(entry.inbound) == "ManualKey(spi=0x1000, key=<36 bytes>)"
    assert entry.inbound.key == bytes.fromhex(CANARY)  # but the bytes are there to use


def test_keys_never_appear_in_toml_errors(tmp_path):
    broken = [
        edit("spi = 0x1000", "spi = 1"),
        edit(f'key = "{CANARY}"', f'key = "{CANARY}00"'),
        edit(f'key = "{CANARY}"', f'key = "{CANARY}x"'),
        edit(f'key = "{CANARY}"', f"key = 0x{CANARY}"),
        edit(f'key = "{OTHER}"', f'key = "{CANARY}"'),
        edit('"esp-gcm 256"', '"esp-aes 128", "esp-sha256-hmac"'),
        edit("[daemon]", f'[daemon]\nsecret = "{CANARY}"'),
    ]
    for text in broken:
        errors(tmp_path, text)  # asserts the canary is absent


def test_parse_toml_without_a_file():
    config = parse_toml(BASE)
    assert config.crypto_maps[0].where == Location("<string>", 12)


def test_drop_log_interval(tmp_path):
    config, _ = load_text(tmp_path, BASE)
    assert config.settings.drop_log_interval == 10
    config, _ = load_text(tmp_path, BASE.replace("[daemon]\n", "[daemon]\ndrop_log_interval = 0\n"))
    assert config.settings.drop_log_interval == 0  # the log off
    assert errors(tmp_path, BASE.replace("[daemon]\n", "[daemon]\ndrop_log_interval = 3601\n")) \
        == ["2: daemon.drop_log_interval must be from 0 to 3600, not 3601; write e.g. "
            "'drop_log_interval = 10'"]
