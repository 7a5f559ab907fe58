"""IOS access-list rules -> AclEntry (espd.config.acl)."""

from __future__ import annotations

import ipaddress

import pytest

from espd.config.acl import ICMPV6, AclError, parse_rule
from espd.config.model import Location

HERE = Location("test.acl", 7)


def rule(text: str, kind: str | None = None, version: int | None = None):
    return parse_rule(text, HERE, kind, version)


def refusal(text: str, kind: str | None = None) -> str:
    with pytest.raises(AclError) as e:
        rule(text, kind)
    return str(e.value)


def test_extended_rule_fields_and_source_location():
    entry = rule("permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255")
    assert entry.action == "permit"
    assert entry.protocol is None
    assert entry.src.address == ipaddress.IPv4Address("10.1.0.0")
    assert entry.src.wildcard == ipaddress.IPv4Address("0.0.255.255")
    assert entry.src.prefixlen == 16
    assert entry.dst.address == ipaddress.IPv4Address("10.2.0.0")
    assert entry.src_ports == entry.dst_ports == ()
    assert entry.where == HERE
    assert entry.text == "permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255"
    assert entry.version == 4


@pytest.mark.parametrize(
    ("wildcard", "cidr"),
    [
        ("permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255",
         "permit ip 10.1.0.0/16 10.2.0.0/16"),
        ("permit ip host 192.0.2.1 any", "permit ip 192.0.2.1/32 0.0.0.0/0"),
        ("deny tcp 10.0.0.0 0.255.255.255 eq 22 host 10.9.9.9",
         "deny tcp 10.0.0.0/8 eq 22 10.9.9.9/32"),
        ("permit 172.16.0.0 0.15.255.255", "permit 172.16.0.0/12"),
        ("permit ipv6 host 2001:db8::1 any", "permit ipv6 2001:db8::1/128 ::/0"),
    ],
)
def test_cidr_and_wildcard_spellings_are_equal(wildcard, cidr):
    assert rule(wildcard) == rule(cidr)


def test_equality_ignores_text_and_location():
    a = parse_rule("permit ip 10.1.0.0/16 10.2.0.0/16", Location("a", 1))
    b = parse_rule("permit   ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255", Location("b", 9))
    assert a == b and hash(a) == hash(b)


def test_non_contiguous_wildcard_is_kept_as_a_mask():
    entry = rule("permit ip 10.0.0.5 0.255.255.0 any")
    assert entry.src.wildcard == ipaddress.IPv4Address("0.255.255.0")
    assert entry.src.prefixlen is None
    assert entry.src.contains(ipaddress.IPv4Address("10.7.8.5"))
    assert not entry.src.contains(ipaddress.IPv4Address("10.7.8.6"))
    assert not entry.src.contains(ipaddress.IPv4Address("11.7.8.5"))
    assert str(entry.src) == "10.0.0.5 0.255.255.0"


def test_non_contiguous_wildcard_that_looks_like_a_mask_but_fits_the_address_is_kept():
    entry = rule("permit ip 0.0.0.5 255.255.255.0 any")  # every host ending in .5
    assert entry.src.wildcard == ipaddress.IPv4Address("255.255.255.0")
    assert entry.src.contains(ipaddress.IPv4Address("192.168.1.5"))


def test_address_bits_under_the_wildcard_are_cleared_as_ios_does():
    entry = rule("permit ip 10.1.1.77 0.0.0.255 10.2.0.0 0.0.255.255")
    assert entry.src.address == ipaddress.IPv4Address("10.1.1.0")
    assert rule("permit ip 10.1.1.77/24 10.2.0.0/16") == entry


def test_subnet_mask_written_as_wildcard_is_refused_with_the_fix():
    assert refusal("permit ip 10.1.0.0 255.255.0.0 10.2.0.0 0.0.255.255") == (
        "'permit ip 10.1.0.0 255.255.0.0 10.2.0.0 0.0.255.255': 255.255.0.0 is a subnet mask, "
        "but ACLs take a wildcard (the inverted mask); write '10.1.0.0 0.0.255.255' or "
        "'10.1.0.0/16'"
    )


def test_host_and_any():
    entry = rule("permit ip host 192.168.10.38 host 192.168.10.66")
    assert entry.src.wildcard == ipaddress.IPv4Address(0)
    assert str(entry.src) == "host 192.168.10.38"
    assert not entry.src.is_any
    entry = rule("deny ip any any")
    assert entry.src.is_any and entry.dst.is_any and entry.version == 4
    assert str(entry.dst) == "any"


def test_standard_rules_match_source_only():
    entry = rule("permit 10.1.1.1")
    assert entry.src.wildcard == ipaddress.IPv4Address(0)  # no wildcard: one host
    assert entry.dst.is_any and entry.protocol is None
    entry = rule("deny 10.0.0.0 0.0.0.255 log", kind="standard")
    assert entry.action == "deny" and entry.src.prefixlen == 24
    assert rule("permit any", kind="standard").src.is_any
    assert rule("permit host 10.9.9.9", kind="standard").src.prefixlen == 32


@pytest.mark.parametrize(
    ("text", "protocol"),
    [
        ("permit ip any any", None), ("permit 0 any any", None), ("permit tcp any any", 6),
        ("permit udp any any", 17), ("permit icmp any any", 1), ("permit esp any any", 50),
        ("permit gre any any", 47), ("permit 50 any any", 50), ("permit 132 any any", 132),
        ("permit icmp 2001:db8::/32 any", ICMPV6),
    ],
)
def test_protocols(text, protocol):
    assert rule(text).protocol == protocol


def test_ports_eq_lists_names_and_ranges():
    entry = rule("permit tcp 10.1.0.0 0.0.255.255 eq www https 8080 host 10.2.0.1 range 1024 2047")
    assert entry.src_ports == ((80, 80), (443, 443), (8080, 8080))
    assert entry.dst_ports == ((1024, 2047),)
    assert rule("permit udp any lt 1024 any").src_ports == ((0, 1023),)
    assert rule("permit udp any any gt 1023").dst_ports == ((1024, 65535),)
    assert rule("permit tcp any any neq 23").dst_ports == ((0, 22), (24, 65535))
    assert rule("permit tcp any any neq 0").dst_ports == ((1, 65535),)
    assert rule("permit udp any eq isakmp non500-isakmp any").src_ports == ((500, 500),
                                                                          (4500, 4500))


def test_log_keywords_are_ignored():
    assert rule("permit ip any any log") == rule("permit ip any any log-input") == rule(
        "permit ip any any")


def test_ipv6_prefixes_host_and_any():
    entry = rule("permit ipv6 2001:db8:1::/48 host 2001:db8:2::1")
    assert entry.version == 6
    assert entry.src.prefixlen == 48
    assert entry.src.contains(ipaddress.IPv6Address("2001:db8:1:ff::1"))
    assert not entry.src.contains(ipaddress.IPv4Address("10.0.0.1"))
    assert entry.dst.prefixlen == 128
    assert rule("permit ipv6 any any").src == rule("permit ip ::/0 ::/0").src
    assert rule("permit ipv6 any any").version == 6
    assert rule("permit icmp any any", version=6).protocol == ICMPV6
    assert rule("permit tcp any any eq 443", version=6).dst.version == 6


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("allow ip any any", "'allow ip any any': a rule starts with 'permit' or 'deny', e.g. "
         "'permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255'"),
        ("permit", "'permit': nothing after 'permit'; e.g. "
         "'permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255'"),
        ("permit ip 10.1.0.0 any", "'permit ip 10.1.0.0 any': 10.1.0.0 needs a wildcard, e.g. "
         "'10.1.0.0 0.0.0.255', or write 'host 10.1.0.0' or '10.1.0.0/24'"),
        ("permit ip 10.1.0.300/16 any", "'permit ip 10.1.0.300/16 any': '10.1.0.300/16' is "
         "not a prefix; write e.g. '10.1.0.0/16' or '2001:db8::/32'"),
        ("permit ip bogus any", "'permit ip bogus any': 'bogus' is not an IP address; write "
         "'any', 'host A', 'A WILDCARD' or 'A/LEN'"),
        ("permit ip 10.0.0.0/8", "'permit ip 10.0.0.0/8': an address is missing; write 'any', "
         "'host A', 'A WILDCARD' or 'A/LEN'"),
        ("permit ip host", "'permit ip host': 'host' needs an address, e.g. 'host 192.0.2.1'"),
        ("permit ipv6 2001:db8::1 any", "'permit ipv6 2001:db8::1 any': IPv6 addresses take "
         "a prefix length or 'host'; write '2001:db8::1/128' or 'host 2001:db8::1'"),
        ("permit ip 10.0.0.0/8 2001:db8::/32", "'permit ip 10.0.0.0/8 2001:db8::/32': mixes "
         "IPv4 and IPv6 addresses; write one rule per family"),
        ("permit ipv6 10.0.0.0/8 any", "'permit ipv6 10.0.0.0/8 any': 'ipv6' with IPv4 "
         "addresses; write 'ip' instead"),
        ("permit ip any eq 80 any", "'permit ip any eq 80 any': ports need protocol tcp, udp "
         "or sctp, not 'ip'"),
        ("permit tcp any any established", "'permit tcp any any established': 'established' "
         "is not supported in crypto ACLs; match on protocol, addresses and ports only"),
        ("permit tcp any any gt 65535", "'permit tcp any any gt 65535': 'gt 65535' matches no "
         "port"),
        ("permit tcp any any eq 70000", "'permit tcp any any eq 70000': port 70000 is out of "
         "range 0-65535"),
        ("permit tcp any any range 10", "'permit tcp any any range 10': 'range' needs 2 "
         "port(s), e.g. 'range 1024 65535'"),
        ("permit tcp any any eq", "'permit tcp any any eq': 'eq' needs a port, e.g. 'eq 443' "
         "or 'eq https'"),
        ("permit 256 any any", "'256' is not a protocol; write one of ip, ipv6, icmp, igmp, "
         "ipinip, tcp, udp, gre, esp, ahp, eigrp, ospf, pim, sctp or a number 0-255"),
        ("permit foo any any", "'foo' is not a protocol; write one of ip, ipv6, icmp, igmp, "
         "ipinip, tcp, udp, gre, esp, ahp, eigrp, ospf, pim, sctp or a number 0-255"),
    ],
)
def test_refusals_say_what_to_write(text, message):
    kind = "extended" if text.startswith("permit foo") else None
    assert refusal(text, kind) == message
