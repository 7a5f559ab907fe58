"""Traffic selectors from crypto ACLs, and responder narrowing (RFC 7296 2.9)."""

from __future__ import annotations

import ipaddress

import pytest

from espd.config.acl import parse_rule
from espd.config.model import Location
from espd.policy.selectors import (
    SelectorError,
    TrafficSelector,
    covers,
    from_acl,
    intersect,
    narrow,
)


def ts(net: str, proto: int = 0, ports: tuple[int, int] = (0, 65535)) -> TrafficSelector:
    return TrafficSelector.from_network(net, proto, ports)


def acl(*lines: str):
    return [parse_rule(line, Location("t.conf", n)) for n, line in enumerate(lines, 1)]


def test_permit_entries_become_both_sides_with_protocol_and_ports():
    local, remote = from_acl(
        acl(
            "permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255",
            "deny ip any any",
            "permit tcp host 10.1.9.9 eq 22 443 10.3.0.0/24 range 1024 2047",
        )
    )
    assert local == (
        ts("10.1.0.0/16"),
        ts("10.1.9.9/32", 6, (22, 22)),
        ts("10.1.9.9/32", 6, (443, 443)),
    )
    assert remote == (ts("10.2.0.0/16"), ts("10.3.0.0/24", 6, (1024, 2047)))


def test_ipv6_and_any():
    local, remote = from_acl(acl("permit ipv6 2001:db8:1::/48 any"))
    assert local == (ts("2001:db8:1::/48"),)
    assert remote == (ts("::/0"),)
    assert remote[0].ts_type == 8 and local[0].version == 6


def test_non_contiguous_wildcard_refused_with_advice():
    with pytest.raises(SelectorError, match="not contiguous"):
        from_acl(acl("permit ip 10.1.0.0 0.0.255.0 any"))


def test_intersection_narrows_address_protocol_and_ports():
    wide, narrow_ = ts("10.0.0.0/8"), ts("10.2.0.0/16", 6, (80, 80))
    assert intersect(wide, narrow_) == narrow_
    assert intersect(ts("10.1.0.0/16", 17), narrow_) is None  # disjoint addresses
    assert intersect(ts("10.2.0.0/16", 17), narrow_) is None  # udp vs tcp
    assert intersect(ts("10.0.0.0/8"), ts("2001:db8::/32")) is None


def test_responder_narrows_to_its_policy():
    offered = (ts("10.0.0.0/8"), ts("192.168.0.0/16"))
    allowed = (ts("10.2.0.0/16"), ts("10.3.0.0/16", 6))
    assert narrow(offered, allowed) == (ts("10.2.0.0/16"), ts("10.3.0.0/16", 6))
    assert narrow((ts("172.16.0.0/12"),), allowed) == ()  # TS_UNACCEPTABLE


def test_narrow_drops_pieces_another_piece_covers():
    allowed = (ts("10.0.0.0/8"), ts("10.2.0.0/16"))
    assert narrow((ts("10.2.0.0/16"),), allowed) == (ts("10.2.0.0/16"),)


def test_initiator_refuses_an_answer_wider_than_its_policy():
    mine = (ts("10.1.0.0/16"),)
    assert covers(mine, (ts("10.1.2.0/24"),))
    assert not covers(mine, (ts("10.0.0.0/8"),))


def test_selector_text_is_readable():
    assert str(ts("10.1.0.0/16")) == "10.1.0.0/16"
    assert str(ts("10.1.0.1/32", 6, (443, 443))) == "10.1.0.1/32 proto 6 port 443"
    odd = TrafficSelector(
        0, 0, 65535, ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("10.0.0.6")
    )
    assert str(odd) == "10.0.0.1-10.0.0.6"
    with pytest.raises(SelectorError):
        TrafficSelector(
            0, 0, 65535, ipaddress.ip_address("10.0.0.6"), ipaddress.ip_address("10.0.0.1")
        )
