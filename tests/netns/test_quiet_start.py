"""A fresh daemon records no drops of its own making (issue 10, item 14): the TUN device
gets no IPv6 link-local address, so the kernel sends no DAD, router solicitations or MLD
reports into it, which would otherwise be counted as `no_policy` at every start."""

from __future__ import annotations

import time

import pytest
from support import netns

pytestmark = pytest.mark.netns


def test_start_records_no_no_policy_drops(make_tunnel):
    tunnel = make_tunnel()
    time.sleep(3)  # MLD reports go out within a second or two of the link coming up
    for gw in tunnel.daemons:
        drops = gw.state()["drops"]["out"]
        shown = netns.ip(gw.ns, "-6", "addr", "show", "dev", "espd0").stdout
        assert "fe80" not in shown, shown
        assert drops.get("no_policy", 0) == 0, (gw.name, drops)  # link_local, if any, apart
