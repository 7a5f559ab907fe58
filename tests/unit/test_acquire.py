"""acquire: a PROTECT rule whose SA is not (yet) there tells the keying side.

- The first packet that meets such a rule is dropped as no_sa (as before) and raises one
  acquire event naming the rule (index and policy) and the packet's selector: family,
  protocol, addresses, ports.
- Rate limit: at most one event per rule and second (data-plane clock); another rule
  has its own limit. A rule with an SA, or a discard rule, raises none.
"""

from __future__ import annotations

import pytest
from support.packets import ipv4, ipv6, tcp_syn, udp

from espd.dataplane import Dataplane, DropError, Rule
from espd.dataplane.testing import set_clock

SEC = 1_000_000_000
T0 = 1_000 * SEC


def l4(proto: int, sport: int, dport: int) -> bytes:
    if proto == 6:
        return tcp_syn(sport, dport)
    if proto == 17:
        return udp(sport, dport, bytes(12))
    return bytes([8, 0, 0, 0, 0, 1, 0, 1]) + bytes(12)  # ICMP echo request


def ip4(src: str, dst: str, proto: int = 17, sport: int = 1234, dport: int = 80) -> bytes:
    return ipv4(src, dst, proto, l4(proto, sport, dport), ident=1)


def ip6(src: str, dst: str, proto: int = 17, sport: int = 1234, dport: int = 80) -> bytes:
    return ipv6(src, dst, proto, l4(proto, sport, dport))


def dataplane() -> Dataplane:
    dp = Dataplane()
    set_clock(dp, T0)
    dp.add_rule(Rule.from_prefixes("10.9.0.0/16", "10.8.0.0/16", action="discard"))
    dp.add_rule(Rule.from_prefixes("10.1.0.0/16", "10.2.0.0/16", policy=7))  # no SA yet
    dp.add_rule(Rule.from_prefixes("2001:db8:1::/48", "2001:db8:2::/48", policy=8))
    return dp


def dropped(dp: Dataplane, packet: bytes) -> str:
    with pytest.raises(DropError) as e:
        dp.protect(packet)
    return e.value.reason


def test_first_packet_raises_acquire_with_rule_and_selector() -> None:
    dp = dataplane()
    assert dropped(dp, ip4("10.1.2.3", "10.2.3.4", 6, 40000, 443)) == "no_sa"
    (e,) = dp.events()
    assert (e.kind, e.value, e.policy, e.direction) == ("acquire", 1, 7, "out")
    assert (e.proto, e.src, e.dst, e.sport, e.dport) == (6, "10.1.2.3", "10.2.3.4", 40000, 443)
    assert dp.global_drops()["out"]["no_sa"] == 1

    assert dropped(dp, ip6("2001:db8:1::5", "2001:db8:2::6", 17, 500, 4500)) == "no_sa"
    (e6,) = dp.events()
    assert (e6.value, e6.policy, e6.proto, e6.src, e6.dst, e6.sport, e6.dport) == (
        2, 8, 17, "2001:db8:1::5", "2001:db8:2::6", 500, 4500)

    assert dropped(dp, ip4("10.1.2.3", "10.2.3.4", 1)) == "no_sa"  # ICMP: no ports
    set_clock(dp, T0 + 5 * SEC)
    assert dropped(dp, ip4("10.1.2.3", "10.2.3.4", 1)) == "no_sa"
    (e,) = dp.events()
    assert (e.proto, e.sport, e.dport) == (1, 0, 0)


def test_rate_limit_is_per_rule_and_per_second() -> None:
    dp = dataplane()
    for _ in range(100):
        dropped(dp, ip4("10.1.0.1", "10.2.0.1"))
    assert [e.kind for e in dp.events()] == ["acquire"]
    dropped(dp, ip6("2001:db8:1::1", "2001:db8:2::1"))  # another rule: its own limit
    assert [e.policy for e in dp.events()] == [8]
    set_clock(dp, T0 + SEC - 1)
    dropped(dp, ip4("10.1.0.1", "10.2.0.1"))
    assert dp.events() == []
    set_clock(dp, T0 + SEC)
    dropped(dp, ip4("10.1.0.9", "10.2.0.9"))
    (e,) = dp.events()
    assert (e.policy, e.src) == (7, "10.1.0.9")
    assert dp.global_drops()["out"]["no_sa"] == 103


def test_no_acquire_for_discard_or_unmatched_or_protected_traffic() -> None:
    dp = dataplane()
    out = dp.add_sa(spi=0x1001, direction="out", transform="esp-gcm 128", key=bytes(20),
                    local="192.0.2.1", peer="192.0.2.2", policy=9)
    dp.add_rule(Rule.from_prefixes("10.3.0.0/16", "10.4.0.0/16", policy=9), out)
    assert dropped(dp, ip4("10.9.0.1", "10.8.0.1")) == "policy_deny"
    assert dropped(dp, ip4("10.7.0.1", "10.7.0.2")) == "no_policy"
    assert dp.protect(ip4("10.3.0.1", "10.4.0.1"))
    assert dp.events() == []


def test_an_acquire_storm_is_taken_in_bounded_batches() -> None:
    """events(limit): one loop turn takes about `limit` events (whole reads of 64), the
    rest wait in the queue with the event fd still readable, none lost."""
    import select

    dp = Dataplane()
    set_clock(dp, T0)
    for n in range(150):  # each rule has its own rate limit: 150 acquires at once
        dp.add_rule(Rule.from_prefixes(f"10.1.{n}.0/24", f"10.2.{n}.0/24", policy=100 + n))
    for n in range(150):
        dropped(dp, ip4(f"10.1.{n}.1", f"10.2.{n}.1"))
    first = dp.events(limit=100)
    assert len(first) == 128  # two reads of 64: the second one crossed the limit
    assert select.select([dp.event_fd()], [], [], 0)[0] == [dp.event_fd()]
    rest = dp.events(limit=100)
    assert [e.policy for e in first + rest] == [100 + n for n in range(150)]
    assert dp.events() == [] and select.select([dp.event_fd()], [], [], 0)[0] == []
