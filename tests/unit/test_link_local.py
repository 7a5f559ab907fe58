"""Link-scope multicast that reaches the TUN device (the kernel's own MLD/IGMP) is counted
as `link_local`, apart from `no_policy`, which stays a sign of a routing/ACL mismatch."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from espd.dataplane import Dataplane, DropError, Rule


def ipv6(dst: str) -> bytes:
    payload = bytes(16)
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), 58, 1,
                       ipaddress.IPv6Address("::").packed,
                       ipaddress.IPv6Address(dst).packed) + payload


def reason(dp: Dataplane, packet: bytes) -> str:
    with pytest.raises(DropError) as e:
        dp.protect(packet)
    return e.value.reason


def test_mld_report_is_link_local_other_unmatched_traffic_no_policy() -> None:
    dp = Dataplane()
    dp.publish([], [(Rule.from_prefixes("fd00:1::/64", "fd00:2::/64", action="discard"),
                     None)])
    assert reason(dp, ipv6("ff02::16")) == "link_local"  # MLDv2 reports
    assert reason(dp, ipv6("ff05::2")) == "no_policy"  # site scope: routed, so a mismatch
    assert reason(dp, ipv6("fd00:9::1")) == "no_policy"
    assert dp.global_drops()["out"] == {"link_local": 1, "no_policy": 2}
