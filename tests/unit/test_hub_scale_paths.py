"""The start-up paths a hub with thousands of peers and prefixes runs once per peer
(bench_hub.py found them quadratic at 10,000): which peers lie inside a protected prefix
(system/routes.py pins those, a reload refuses a new one), and the "up" log line's
routes."""

from __future__ import annotations

import ipaddress

from espd.service.daemon import ROUTES_LOGGED, routes_text
from espd.system.routes import covered_by


def testcovered_by_matches_a_walk_of_every_prefix():
    prefixes = ["10.0.0.0/8", "192.0.2.0/24", "198.51.100.7/32", "fd00:1::/64", "2001:db8::/32",
                "0.0.0.0/1"]
    covered = covered_by(prefixes)
    nets = [ipaddress.ip_network(p) for p in prefixes]
    for text in ("10.1.2.3", "11.0.0.1", "192.0.2.255", "192.0.3.1", "198.51.100.7",
                 "198.51.100.8", "127.0.0.1", "200.1.1.1", "fd00:1::5", "fd00:2::5",
                 "2001:db8:ffff::1", "2001:db9::1", "::1"):
        ip = ipaddress.ip_address(text)
        assert covered(ip) == any(ip in n for n in nets if n.version == ip.version), text


def testcovered_by_nothing():
    assert not covered_by([])(ipaddress.ip_address("10.0.0.1"))


def test_up_line_names_a_few_routes_and_counts_the_rest():
    assert routes_text(()) == "none"
    few = tuple(f"10.{i}.0.0/16" for i in range(ROUTES_LOGGED))
    assert routes_text(few) == ", ".join(few)
    many = tuple(f"10.64.{i}.0/24" for i in range(10000))
    text = routes_text(many)
    assert text.startswith("10.64.0.0/24, ") and text.endswith("... (10000 in all)")
    assert f"10.64.{ROUTES_LOGGED}.0/24" not in text


def test_reload_refuses_a_new_peer_inside_a_protected_prefix_only():
    from types import SimpleNamespace

    import pytest

    from espd.config.model import ConfigError
    from espd.service.reload import check_reloadable

    settings = SimpleNamespace(interface="espd0", workers=1, control_socket="/s", metrics="",
                               state_dir="/v", offload=True, user="", send_path="raw",
                               receive_path="raw", crypto_backend="openssl")
    config = SimpleNamespace(settings=settings)
    routes = tuple(f"10.{i // 256}.{i % 256}.0/24" for i in range(3000)) + ("fd00:1::/64",)
    plan = SimpleNamespace(sas=(), routes=routes)
    peers = ["192.0.2.9", "10.3.4.5", "fd00:1::9", "fd00:2::9", "10.200.0.1"]
    daemon = SimpleNamespace(config=config, plan=plan, tun_fds=[3], pinned_peers={"10.3.4.5"},
                             config_path="/etc/espd/espd.toml", peers=lambda _plan: peers)
    with pytest.raises(ConfigError) as refused:
        check_reloadable(daemon, config, plan)
    text = str(refused.value)
    assert "peer fd00:1::9 would lie inside a protected prefix" in text
    for peer in ("192.0.2.9", "10.3.4.5", "fd00:2::9", "10.200.0.1"):  # outside, or pinned
        assert f"peer {peer} " not in text
