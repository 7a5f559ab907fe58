"""Classification (SPD), the inbound selector check, and table set publication.

- add_rule / protect / classify: first match wins; discard entries; no_policy,
  policy_deny, no_sa; rule_hits counts packets classified on the packet path.
- The compiled classifier agrees with a linear first-match reference on random rules
  (arbitrary value/mask pairs, both families).
- Inbound: an SA with policy N accepts only inner packets whose mirrored selector first
  matches a PROTECT rule of policy N; everything else is selector_mismatch.
- Publication: a failing table set leaves the live one working; SAs kept across a
  commit/publish keep sequence numbers, counters and replay windows.
"""

from __future__ import annotations

import ipaddress
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.packets import ipv4, ipv6, tcp_syn, udp

from espd.dataplane import Dataplane, DataplaneError, DropError, Rule

TCP, UDP, ICMP, ICMP6 = 6, 17, 1, 58
A4, B4 = "192.0.2.1", "192.0.2.2"


def l4(proto: int, sport: int, dport: int, size: int = 20) -> bytes:
    if proto == TCP:
        return tcp_syn(sport, dport, bytes(size))
    if proto == UDP:
        return udp(sport, dport, bytes(size))
    return bytes([8, 0, 0, 0, 0, 1, 0, 1]) + bytes(size)  # echo request


def ip4(src: str, dst: str, proto: int = UDP, sport: int = 1234, dport: int = 80,
        frag: int = 0) -> bytes:
    return ipv4(src, dst, proto, l4(proto, sport, dport), ident=1, flags_frag=frag)


def ip6(src: str, dst: str, proto: int = UDP, sport: int = 1234, dport: int = 80,
        ext: bytes = b"", first_nh: int | None = None) -> bytes:
    nh = proto if first_nh is None else first_nh
    return ipv6(src, dst, nh, ext + l4(proto, sport, dport))


def out_sa(dp: Dataplane, spi: int, *, key: bytes, policy: int = 0, family: int = 4):
    local, peer = (A4, B4) if family == 4 else ("2001:db8::1", "2001:db8::2")
    return dp.add_sa(spi=spi, direction="out", transform="esp-gcm 128", key=key,
                     local=local, peer=peer, policy=policy)


def in_sa(dp: Dataplane, spi: int, *, key: bytes, policy: int = 0, family: int = 4,
          window: int = 64):
    local, peer = (B4, A4) if family == 4 else ("2001:db8::2", "2001:db8::1")
    return dp.add_sa(spi=spi, direction="in", transform="esp-gcm 128", key=key,
                     local=local, peer=peer, policy=policy, replay_window=window)


def spi_of(outer: bytes) -> int:
    off = 20 if outer[0] >> 4 == 4 else 40
    return struct.unpack("!I", outer[off:off + 4])[0]


def seq_of(outer: bytes) -> int:
    off = 20 if outer[0] >> 4 == 4 else 40
    return struct.unpack("!I", outer[off + 4:off + 8])[0]


def dropped(fn, *args) -> str:
    with pytest.raises(DropError) as e:
        fn(*args)
    return e.value.reason


# --- classification ----------------------------------------------------------------


@pytest.fixture
def gateway():
    keys = {0x2001: os.urandom(20), 0x2002: os.urandom(20)}
    a = Dataplane()
    sa1 = out_sa(a, 0x2001, key=keys[0x2001])
    sa2 = out_sa(a, 0x2002, key=keys[0x2002])
    a.add_rule(Rule.from_prefixes("10.0.1.0/24", "10.1.0.0/16"), sa1)  # 0
    a.add_rule(Rule.from_prefixes("10.0.0.0/8", "0.0.0.0/0", action="discard"))  # 1
    a.add_rule(Rule.from_prefixes("0.0.0.0/0", "10.2.0.0/16"), sa2)  # 2
    a.add_rule(Rule.from_prefixes("192.168.0.0/16", "10.3.0.0/16"), None)  # 3: no SA
    a.add_rule(Rule.from_prefixes("0.0.0.0/0", "0.0.0.0/0", proto=TCP, dport=443), sa1)  # 4
    a.add_rule(Rule.from_prefixes("0.0.0.0/0", "8.8.0.0/16", proto=UDP, sport=53), sa2)  # 5
    b = Dataplane()
    in_sa(b, 0x2001, key=keys[0x2001])
    in_sa(b, 0x2002, key=keys[0x2002])
    return a, b, sa1, sa2


CASES = [  # packet, expected rule, expected result (SPI or drop reason)
    (ip4("10.0.1.5", "10.1.2.3"), 0, 0x2001),
    (ip4("10.0.2.5", "10.1.2.3"), 1, "policy_deny"),
    (ip4("10.0.1.5", "10.2.0.1"), 1, "policy_deny"),  # rule 2 matches too: first wins
    (ip4("192.168.1.1", "10.2.0.1"), 2, 0x2002),
    (ip4("192.168.1.1", "10.3.0.1"), 3, "no_sa"),
    (ip4("172.16.0.1", "9.9.9.9"), None, "no_policy"),
    (ip4("172.16.0.1", "9.9.9.9", TCP, 5555, 443), 4, 0x2001),
    (ip4("172.16.0.1", "9.9.9.9", TCP, 443, 80), None, "no_policy"),
    (ip4("172.16.0.1", "9.9.9.9", UDP, 5555, 443), None, "no_policy"),
    (ip4("172.16.0.1", "8.8.8.8", UDP, 53, 5555), 5, 0x2002),
    (ip4("172.16.0.1", "8.8.8.8", UDP, 54, 5555), None, "no_policy"),
    (ip4("172.16.0.1", "8.8.8.8", ICMP), None, "no_policy"),
    (ip4("10.0.1.5", "10.1.0.1", ICMP), 0, 0x2001),
    (ip6("fd00::1", "fd01::1"), None, "no_policy"),  # IPv4 rules never match IPv6
]


def test_first_match_wins(gateway):
    a, b, sa1, sa2 = gateway
    for pkt, rule, want in CASES:
        assert a.classify(pkt) == rule, (rule, want)
        if isinstance(want, int):
            outer = a.protect(pkt)
            assert spi_of(outer) == want
            assert b.decap(outer) == pkt
        else:
            assert dropped(a.protect, pkt) == want
    hits = a.rule_hits()
    assert len(hits) == 6
    want_hits = [0] * 6
    for _, rule, _ in CASES:
        if rule is not None:
            want_hits[rule] += 1
    assert hits == want_hits
    assert a.global_drops()["out"] == {"policy_deny": 2, "no_sa": 1, "no_policy": 6}


def test_rule_hits_count_every_packet(gateway):
    a, b, sa1, sa2 = gateway
    pkts = [ip4("10.0.1.5", "10.1.2.3")] * 7 + [ip4("10.0.9.9", "10.1.2.3")] * 3
    results = a.encap_batch(pkts)
    assert [isinstance(r, bytes) for r in results] == [True] * 7 + [False] * 3
    assert a.rule_hits() == [7, 3, 0, 0, 0, 0]
    assert [seq_of(r) for r in results[:7]] == list(range(1, 8))
    assert a.stats(sa1)["packets"] == 7


def test_explicit_sa_bypasses_classification(gateway):
    a, b, sa1, sa2 = gateway
    denied = ip4("10.0.2.5", "10.1.2.3")
    outer = a.encap(sa2, denied)  # the caller named the SA: no policy lookup
    assert spi_of(outer) == 0x2002 and b.decap(outer) == denied
    assert a.rule_hits() == [0] * 6


@pytest.mark.parametrize(("transform", "kl", "al"), [("esp-gcm 128", 20, 0),
                                                    ("esp-null esp-sha-hmac", 0, 20),
                                                    ("esp-aes 128 esp-sha-hmac", 16, 20)])
def test_explicit_inbound_sa_refused_for_encap(transform, kl, al):
    """Only outbound SAs seal (add_rule already refuses an inbound SA): naming an inbound
    SA for encap must not emit ESP under the inbound keys, nor spend its state."""
    d = Dataplane()
    i = d.add_sa(spi=0x1001, direction="in", transform=transform, key=os.urandom(kl),
                 auth_key=os.urandom(al) if al else None, local=B4, peer=A4)
    with pytest.raises((DropError, DataplaneError)):
        d.encap(i, ip4("10.0.0.1", "10.1.0.1"))
    s = d.stats(i)
    assert s["packets"] == 0 and s["lifetime_packets"] == 0


def test_no_rules_at_all():
    a = Dataplane()
    out_sa(a, 0x2001, key=os.urandom(20))
    assert a.classify(ip4("10.0.0.1", "10.1.0.1")) is None
    assert dropped(a.protect, ip4("10.0.0.1", "10.1.0.1")) == "no_policy"
    assert a.rule_hits() == []


def test_malformed_inner_on_classification(gateway):
    a, b, sa1, sa2 = gateway
    assert a.classify(b"\x45" + bytes(5)) is None
    assert dropped(a.protect, b"\x45" + bytes(5)) == "inner_malformed"
    assert dropped(a.protect, b"") == "inner_malformed"


def test_ipv6_rules():
    keys = [os.urandom(20) for _ in range(3)]
    a = Dataplane()
    s6 = out_sa(a, 0x3001, key=keys[0], family=6)
    s4 = out_sa(a, 0x3002, key=keys[1])
    s6b = out_sa(a, 0x3003, key=keys[2])  # IPv6 inner inside an IPv4 outer
    a.add_rule(Rule.from_prefixes("fd00:1::/64", "fd01::/48", proto=UDP, dport=53), s6b)  # 0
    a.add_rule(Rule.from_prefixes("fd00:1::/64", "fd01::/48"), s6)  # 1
    a.add_rule(Rule.from_prefixes("fd00::/16", "::/0", action="discard"))  # 2
    a.add_rule(Rule.from_prefixes("0.0.0.0/0", "0.0.0.0/0"), s4)  # 3
    a.add_rule(Rule.from_prefixes("::/0", "fd02::1/128"), s6)  # 4
    b = Dataplane()
    in_sa(b, 0x3001, key=keys[0], family=6)
    in_sa(b, 0x3002, key=keys[1])
    in_sa(b, 0x3003, key=keys[2])
    hbh = bytes([UDP, 0]) + bytes(6)  # hop-by-hop options, 8 bytes, then UDP
    frag_first = bytes([UDP, 0, 0, 0]) + b"\0\0\0\x01"  # fragment header, offset 0, M=0
    cases = [
        (ip6("fd00:1::5", "fd01:0:0:1::9"), 1, 0x3001),
        (ip6("fd00:1::5", "fd01::9", UDP, 9999, 53), 0, 0x3003),
        (ip6("fd00:1::5", "fd01::9", UDP, 9999, 53, ext=hbh, first_nh=0), 0, 0x3003),
        (ip6("fd00:1::5", "fd01::9", UDP, 9999, 53, ext=frag_first, first_nh=44), 0, 0x3003),
        (ip6("fd00:1::5", "fd01::9", TCP, 9999, 53), 1, 0x3001),
        (ip6("fd00:2::5", "fd01::9"), 2, "policy_deny"),
        (ip6("fd00:2::5", "fd02::1"), 2, "policy_deny"),
        (ip6("2001:db8:9::5", "fd02::1"), 4, 0x3001),
        (ip6("2001:db8:9::5", "fd02::2"), None, "no_policy"),
        (ip4("10.0.0.1", "10.1.0.1"), 3, 0x3002),  # IPv6 rules never match IPv4
    ]
    for pkt, rule, want in cases:
        assert a.classify(pkt) == rule, (pkt.hex(), rule)
        if isinstance(want, int):
            outer = a.protect(pkt)
            assert spi_of(outer) == want
            assert b.decap(outer) == pkt
        else:
            assert dropped(a.protect, pkt) == want
    assert a.rule_hits() == [3, 2, 2, 1, 1]


def test_non_first_fragment_has_no_ports():
    a = Dataplane()
    sa = out_sa(a, 0x2001, key=os.urandom(20))
    a.add_rule(Rule.from_prefixes("10.0.0.0/8", "10.0.0.0/8", proto=UDP, dport=80), sa)
    a.add_rule(Rule.from_prefixes("10.0.0.0/8", "10.0.0.0/8", proto=UDP, dport=0), sa)
    assert a.classify(ip4("10.0.0.1", "10.1.0.1", UDP, 1, 80)) == 0
    assert a.classify(ip4("10.0.0.1", "10.1.0.1", UDP, 1, 80, frag=0x2000)) == 0  # first
    assert a.classify(ip4("10.0.0.1", "10.1.0.1", UDP, 1, 80, frag=0x0010)) == 1  # later


# --- the classifier against a linear reference --------------------------------------


def packet_key(family, proto, src, dst, sport, dport):
    ports = proto in (TCP, UDP)
    return family, proto, src, dst, sport if ports else 0, dport if ports else 0


def linear(rules: list[Rule], key) -> int | None:
    family, proto, src, dst, sport, dport = key

    def m(v: bytes, val: bytes, mask: bytes) -> bool:
        return all((x & k) == (y & k) for x, y, k in zip(v, val, mask, strict=True))

    for i, r in enumerate(rules):
        if r.family != family:
            continue
        if (m(src, r.src, r.src_mask) and m(dst, r.dst, r.dst_mask)
                and (proto & r.proto_mask) == (r.proto & r.proto_mask)
                and (sport & r.sport_mask) == (r.sport & r.sport_mask)
                and (dport & r.dport_mask) == (r.dport & r.dport_mask)):
            return i
    return None


# small value spaces so random packets hit random rules often
V4_ADDRS = [bytes([10, a, b, c]) for a in (0, 1) for b in (0, 1) for c in (1, 2)]
V6_ADDRS = [bytes.fromhex("fd00" + "00" * 12 + f"{a:02x}{b:02x}")
            for a in (0, 1) for b in (1, 2, 3)]
MASKS4 = [bytes(4), b"\xff" * 4, b"\xff\xff\x00\x00", b"\xff\x00\xff\x00", b"\x00\x00\x00\x01",
          b"\xff\xff\xff\x00"]
MASKS6 = [bytes(16), b"\xff" * 16, b"\xff" * 8 + bytes(8), bytes(15) + b"\x01",
          bytes(14) + b"\xff\x00"]


@st.composite
def rules_strategy(draw):
    out = []
    for _ in range(draw(st.integers(1, 40))):
        fam = draw(st.sampled_from([4, 6]))
        addrs, masks = (V4_ADDRS, MASKS4) if fam == 4 else (V6_ADDRS, MASKS6)
        port_mask = draw(st.sampled_from([0, 0xFFFF, 0xFF00, 0x0001]))
        out.append(Rule(
            family=fam, action=draw(st.sampled_from(["protect", "discard"])),
            src=draw(st.sampled_from(addrs)), src_mask=draw(st.sampled_from(masks)),
            dst=draw(st.sampled_from(addrs)), dst_mask=draw(st.sampled_from(masks)),
            proto=draw(st.sampled_from([TCP, UDP, ICMP])),
            proto_mask=draw(st.sampled_from([0, 0xFF])),
            sport=draw(st.sampled_from([53, 80, 443, 0x1235])), sport_mask=port_mask,
            dport=draw(st.sampled_from([53, 80, 443, 0x1235])),
            dport_mask=draw(st.sampled_from([0, 0xFFFF, 0x00FF])),
        ))
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rules_strategy(), data=st.data())
def test_classifier_matches_linear_first_match(rules, data):
    a = Dataplane()
    for r in rules:
        a.add_rule(r)
    for _ in range(30):
        fam = data.draw(st.sampled_from([4, 6]))
        addrs = V4_ADDRS if fam == 4 else V6_ADDRS
        src, dst = data.draw(st.sampled_from(addrs)), data.draw(st.sampled_from(addrs))
        proto = data.draw(st.sampled_from([TCP, UDP, ICMP if fam == 4 else ICMP6]))
        sport = data.draw(st.sampled_from([53, 80, 443, 0x1235, 0x1234]))
        dport = data.draw(st.sampled_from([53, 80, 443, 0x1235, 0x1234]))
        if fam == 4:
            pkt = ip4(str(ipaddress.IPv4Address(src)), str(ipaddress.IPv4Address(dst)), proto,
                      sport, dport)
        else:
            pkt = ip6(str(ipaddress.IPv6Address(src)), str(ipaddress.IPv6Address(dst)), proto,
                      sport, dport)
        want = linear(rules, packet_key(fam, proto, src, dst, sport, dport))
        assert a.classify(pkt) == want


# --- inbound selector check ---------------------------------------------------------


@pytest.fixture
def selector_pair():
    """B protects 10.2/16 -> 10.1/16 under policy 7 (sport 80 under policy 9); its inbound
    SA 0x1001 (policy 7) and 0x1002 (policy 9) must carry only the mirror of that."""
    k7, k9, k0 = os.urandom(20), os.urandom(20), os.urandom(20)
    a, b = Dataplane(), Dataplane()
    a7 = out_sa(a, 0x1001, key=k7)
    a9 = out_sa(a, 0x1002, key=k9)
    a0 = out_sa(a, 0x1003, key=k0)
    b.add_rule(Rule.from_prefixes("10.2.5.0/24", "10.1.0.0/16", action="discard", policy=7))
    b.add_rule(Rule.from_prefixes("10.2.0.0/16", "10.1.0.0/16", proto=TCP, sport=80, policy=9))
    b.add_rule(Rule.from_prefixes("10.2.0.0/16", "10.1.0.0/16", policy=7))
    b.add_rule(Rule.from_prefixes("10.9.0.0/16", "10.1.0.0/16", policy=8))
    b7 = in_sa(b, 0x1001, key=k7, policy=7)
    b9 = in_sa(b, 0x1002, key=k9, policy=9)
    b0 = in_sa(b, 0x1003, key=k0, policy=0)  # no crypto map entry: no selector check
    return a, b, {7: (a7, b7), 9: (a9, b9), 0: (a0, b0)}


SELECTOR_CASES = [  # policy of the SA used, inner packet, accepted?
    (7, ip4("10.1.0.5", "10.2.0.9"), True),
    (7, ip4("10.1.0.5", "10.2.0.9", TCP, 5000, 22), True),
    (7, ip4("10.1.0.5", "10.2.5.9"), False),  # mirrored hits the discard entry first
    (7, ip4("10.1.0.5", "10.9.0.1"), False),  # a PROTECT rule of policy 8
    (7, ip4("10.1.0.5", "10.3.0.1"), False),  # no rule at all
    (7, ip4("10.7.0.1", "10.2.0.9"), False),  # source outside 10.1/16
    (7, ip4("10.2.0.9", "10.1.0.5"), False),  # not mirrored
    (7, ip4("10.1.0.5", "10.2.0.9", TCP, 5000, 80), False),  # mirrored first hits policy 9
    (9, ip4("10.1.0.5", "10.2.0.9", TCP, 5000, 80), True),
    (9, ip4("10.1.0.5", "10.2.0.9", TCP, 5000, 81), False),  # mirrored -> policy 7 rule
    (9, ip4("10.1.0.5", "10.2.0.9", UDP, 5000, 80), False),
    (0, ip4("10.7.0.1", "10.8.0.1"), True),
    (0, ip6("fd00::1", "fd01::1"), True),
    (7, ip6("fd00::1", "fd01::1"), False),
]


def test_inbound_selector_check(selector_pair):
    a, b, sas = selector_pair
    want_drops = {7: 0, 9: 0, 0: 0}
    for policy, pkt, ok in SELECTOR_CASES:
        outer = a.encap(sas[policy][0], pkt)
        if ok:
            assert b.decap(outer) == pkt
        else:
            assert dropped(b.decap, outer) == "selector_mismatch", pkt.hex()
            want_drops[policy] += 1
            # authenticated, so the number is used up: a replay is a duplicate, not a retry
            assert dropped(b.decap, outer) == "replay_dup"
    for policy, (_, inb) in sas.items():
        d = b.stats(inb)["drops"]
        assert d.get("selector_mismatch", 0) == want_drops[policy]
    assert b.rule_hits() == [0, 0, 0, 0]  # the selector check is not outbound traffic


def test_selector_check_follows_republished_rules(selector_pair):
    a, b, sas = selector_pair
    a7, b7 = sas[7]
    pkt = ip4("10.1.0.5", "10.3.0.1")
    assert dropped(b.decap, a.encap(a7, pkt)) == "selector_mismatch"
    b.add_rule(Rule.from_prefixes("10.3.0.0/16", "10.1.0.0/16", policy=7))
    b.commit()
    assert b.decap(a.encap(a7, pkt)) == pkt


# --- publication ---------------------------------------------------------------------


def test_failed_publish_keeps_live_table():
    key = os.urandom(20)
    a, b = Dataplane(), Dataplane()
    o = out_sa(a, 0x1001, key=key)
    i = in_sa(b, 0x1001, key=key)
    pkts = [a.encap(o, ip4("10.0.0.1", "10.1.0.1", UDP, n, 80)) for n in range(1, 6)]
    for p in pkts[:3]:
        b.decap(p)
    b.commit()
    dup = b.create_sa(spi=0x1001, direction="in", transform="esp-gcm 128", key=os.urandom(20),
                      local=B4, peer="192.0.2.77")
    other = b.create_sa(spi=0x1002, direction="in", transform="esp-gcm 128", key=key,
                        local=B4, peer=A4)
    with pytest.raises(DataplaneError, match="exists"):
        b.publish([i, other, dup], [])
    # the old table is live: SA 0x1001 keeps its window, 0x1002 never became live
    assert dropped(b.decap, pkts[0]) == "replay_dup"
    assert b.decap(pkts[3]) == ip4("10.0.0.1", "10.1.0.1", UDP, 4, 80)
    spoof = bytearray(pkts[4])
    spoof[20:24] = struct.pack("!I", 0x1002)
    assert dropped(b.decap, bytes(spoof)) == "unknown_spi"
    assert b.stats(i)["seq"] == 4
    # the same SPI at another destination, or outbound, is no conflict
    elsewhere = b.create_sa(spi=0x1001, direction="in", transform="esp-gcm 128", key=key,
                            local="192.0.2.3", peer=A4)
    outbound = b.create_sa(spi=0x1001, direction="out", transform="esp-gcm 128", key=key,
                           local=B4, peer=A4)
    b.publish([i, elsewhere, outbound], [])
    assert b.decap(pkts[4]) == ip4("10.0.0.1", "10.1.0.1", UDP, 5, 80)


def test_failed_publish_with_bad_rule_keeps_live_table():
    key = os.urandom(20)
    a = Dataplane()
    o = out_sa(a, 0x1001, key=key)
    a.add_rule(Rule.from_prefixes("10.0.0.0/8", "10.0.0.0/8"), o)
    a.commit()
    inbound = a.create_sa(spi=0x1009, direction="in", transform="esp-gcm 128", key=key,
                          local=A4, peer=B4)
    with pytest.raises(DataplaneError):  # a PROTECT rule must name an outbound SA
        a.publish([o, inbound], [(Rule.from_prefixes("0.0.0.0/0", "0.0.0.0/0"), inbound)])
    assert a.classify(ip4("10.0.0.1", "10.1.0.1")) == 0
    assert seq_of(a.protect(ip4("10.0.0.1", "10.1.0.1"))) == 1


def test_failed_commit_keeps_live_table_for_packets():
    """A staged configuration that cannot be published must not take the packet path
    down with it: the live table keeps working."""
    key = os.urandom(20)
    a, b = Dataplane(), Dataplane()
    o = out_sa(a, 0x1001, key=key)
    i = in_sa(b, 0x1001, key=key)
    b.commit()
    dup = in_sa(b, 0x1001, key=os.urandom(20))
    with pytest.raises(DataplaneError):
        b.commit()
    pkt = ip4("10.0.0.1", "10.1.0.1")
    assert b.decap(a.encap(o, pkt)) == pkt
    b.remove_sa(dup)
    assert b.decap(a.encap(o, pkt)) == pkt
    assert b.stats(i)["seq"] == 2


def test_failed_commit_then_fixed():
    key = os.urandom(20)
    a, b = Dataplane(), Dataplane()
    o = out_sa(a, 0x1001, key=key)
    i = in_sa(b, 0x1001, key=key)
    pkts = [a.encap(o, ip4("10.0.0.1", "10.1.0.1", UDP, n, 80)) for n in range(1, 4)]
    b.decap(pkts[0])
    dup = in_sa(b, 0x1001, key=os.urandom(20))
    with pytest.raises(DataplaneError):
        b.commit()
    b.remove_sa(dup)
    b.commit()
    assert dropped(b.decap, pkts[0]) == "replay_dup"  # the window carried over
    assert b.decap(pkts[2]) is not None
    assert b.stats(i)["seq"] == 3


def test_state_carried_over_commit():
    k1, k2 = os.urandom(20), os.urandom(20)
    a, b = Dataplane(), Dataplane()
    o1 = out_sa(a, 0x1001, key=k1)
    a.add_rule(Rule.from_prefixes("10.0.0.0/8", "10.1.0.0/16"), o1)
    i1 = in_sa(b, 0x1001, key=k1)
    pkts = [a.protect(ip4("10.0.0.1", "10.1.0.1", UDP, n, 80)) for n in range(1, 6)]
    for p in pkts[:4]:
        b.decap(p)
    assert a.rule_hits() == [5]
    # new SAs and rules beside the old ones
    o2 = out_sa(a, 0x1002, key=k2)
    a.add_rule(Rule.from_prefixes("10.0.0.0/8", "10.2.0.0/16"), o2)
    a.commit()
    i2 = in_sa(b, 0x1002, key=k2)
    b.commit()
    p6 = a.protect(ip4("10.0.0.1", "10.1.0.1", UDP, 6, 80))
    assert spi_of(p6) == 0x1001 and seq_of(p6) == 6  # the sequence continues
    q1 = a.protect(ip4("10.0.0.1", "10.2.0.1"))
    assert spi_of(q1) == 0x1002 and seq_of(q1) == 1
    assert dropped(b.decap, pkts[1]) == "replay_dup"  # the window carried over
    assert b.decap(pkts[4]) is not None and b.decap(p6) is not None
    assert b.decap(q1) == ip4("10.0.0.1", "10.2.0.1")
    s = a.stats(o1)
    assert s["packets"] == 6 and s["seq"] == 6
    t = b.stats(i1)
    assert t["packets"] == 6 and t["seq"] == 6 and t["drops"] == {"replay_dup": 1}
    assert b.stats(i2)["packets"] == 1


def test_state_carried_over_publish():
    k1, k2 = os.urandom(20), os.urandom(20)
    a, b = Dataplane(), Dataplane()
    o1 = a.create_sa(spi=0x1001, direction="out", transform="esp-gcm 128", key=k1, local=A4,
                     peer=B4)
    i1 = b.create_sa(spi=0x1001, direction="in", transform="esp-gcm 128", key=k1, local=B4,
                     peer=A4, replay_window=64)
    r1 = Rule.from_prefixes("10.0.0.0/8", "10.1.0.0/16")
    a.publish([o1], [(r1, o1)])
    b.publish([i1], [])
    pkts = [a.protect(ip4("10.0.0.1", "10.1.0.1", UDP, n, 80)) for n in range(1, 6)]
    assert [seq_of(p) for p in pkts] == [1, 2, 3, 4, 5]
    for p in pkts[:3]:
        b.decap(p)
    # a new table set: the same SA objects plus new ones
    o2 = a.create_sa(spi=0x1002, direction="out", transform="esp-gcm 128", key=k2, local=A4,
                     peer=B4)
    i2 = b.create_sa(spi=0x1002, direction="in", transform="esp-gcm 128", key=k2, local=B4,
                     peer=A4)
    r2 = Rule.from_prefixes("10.0.0.0/8", "10.2.0.0/16")
    a.publish([o2, o1], [(r2, o2), (r1, o1)])
    b.publish([i2, i1], [])
    p6 = a.protect(ip4("10.0.0.1", "10.1.0.1", UDP, 6, 80))
    assert seq_of(p6) == 6
    assert a.rule_hits() == [0, 1]  # a new table set starts its own hit counters
    assert dropped(b.decap, pkts[2]) == "replay_dup"
    assert dropped(b.decap, pkts[0]) == "replay_dup"
    for p in (pkts[3], pkts[4], p6):
        b.decap(p)
    assert b.stats(i1)["seq"] == 6 and b.stats(i1)["packets"] == 6
    assert b.decap(a.protect(ip4("10.0.0.1", "10.2.0.9"))) == ip4("10.0.0.1", "10.2.0.9")
    # and a table set without i1: its SPI is gone, but a later set with it restores state
    b.publish([i2], [])
    p7 = a.protect(ip4("10.0.0.1", "10.1.0.1", UDP, 7, 80))
    assert dropped(b.decap, p7) == "unknown_spi"
    b.publish([i1, i2], [])
    assert dropped(b.decap, p6) == "replay_dup"
    assert b.decap(p7) is not None


def test_remove_sa_makes_its_rules_no_sa():
    key = os.urandom(20)
    a = Dataplane()
    o = out_sa(a, 0x1001, key=key)
    a.add_rule(Rule.from_prefixes("10.0.0.0/8", "10.0.0.0/8"), o)
    a.protect(ip4("10.0.0.1", "10.1.0.1"))
    a.remove_sa(o)
    assert dropped(a.protect, ip4("10.0.0.1", "10.1.0.1")) == "no_sa"
    b = Dataplane()
    i = in_sa(b, 0x1001, key=key)
    b.commit()
    b.remove_sa(i)
    a2 = Dataplane()
    o2 = out_sa(a2, 0x1001, key=key)
    assert dropped(b.decap, a2.encap(o2, ip4("10.0.0.1", "10.1.0.1"))) == "unknown_spi"
