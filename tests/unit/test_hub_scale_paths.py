"""The start-up paths a hub with thousands of peers and prefixes runs once per peer
(bench_hub.py found them quadratic at 10,000): which peers lie inside a protected prefix
(system/routes.py pins those), and the "up" log line's routes."""

from __future__ import annotations

import ipaddress

from espd.service.daemon import ROUTES_LOGGED, routes_text
from espd.system.routes import _covered_by


def test_covered_by_matches_a_walk_of_every_prefix():
    prefixes = ["10.0.0.0/8", "192.0.2.0/24", "198.51.100.7/32", "fd00:1::/64", "2001:db8::/32",
                "0.0.0.0/1"]
    covered = _covered_by(prefixes)
    nets = [ipaddress.ip_network(p) for p in prefixes]
    for text in ("10.1.2.3", "11.0.0.1", "192.0.2.255", "192.0.3.1", "198.51.100.7",
                 "198.51.100.8", "127.0.0.1", "200.1.1.1", "fd00:1::5", "fd00:2::5",
                 "2001:db8:ffff::1", "2001:db9::1", "::1"):
        ip = ipaddress.ip_address(text)
        assert covered(ip) == any(ip in n for n in nets if n.version == ip.version), text


def test_covered_by_nothing():
    assert not _covered_by([])(ipaddress.ip_address("10.0.0.1"))


def test_up_line_names_a_few_routes_and_counts_the_rest():
    assert routes_text(()) == "none"
    few = tuple(f"10.{i}.0.0/16" for i in range(ROUTES_LOGGED))
    assert routes_text(few) == ", ".join(few)
    many = tuple(f"10.64.{i}.0/24" for i in range(10000))
    text = routes_text(many)
    assert text.startswith("10.64.0.0/24, ") and text.endswith("... (10000 in all)")
    assert f"10.64.{ROUTES_LOGGED}.0/24" not in text
