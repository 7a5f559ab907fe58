"""SA lifetimes (RFC 4301 4.4.2.1) and sequence number exhaustion (RFC 4303 3.3.3).

Limits are checked before each packet and usage is counted after it, as Linux XFRM does:
with a hard limit of N packets exactly N pass; the packet that crosses a byte limit
passes and the next one is refused. A hard-expired SA passes nothing, in either
direction, and nothing it refuses comes back in clear. Each event is raised once.
"""

from __future__ import annotations

import os
import struct

import pytest
from support.packets import IPPROTO_UDP, ipv4, udp

from espd.dataplane import Dataplane, DropError, Lifetime
from espd.dataplane.testing import set_clock, set_seq, set_usage

SEC = 1_000_000_000
T0 = 1_000 * SEC
M32 = 1 << 32


def inner(n: int = 0, size: int = 100) -> bytes:
    payload = struct.pack("!I", n % M32) + bytes(size - 32)
    return ipv4("10.0.0.1", "10.1.0.1", IPPROTO_UDP, udp(1234, 80, payload), ident=0)


def pair(*, soft_out=None, hard_out=None, soft_in=None, hard_in=None, esn=False,
         transform="esp-gcm 256", mode="tunnel"):
    key = os.urandom(36)
    a, b = Dataplane(), Dataplane()
    set_clock(a, T0)
    set_clock(b, T0)
    out = a.add_sa(spi=0x1001, direction="out", transform=transform, key=key, mode=mode,
                   local="192.0.2.1", peer="192.0.2.2", soft=soft_out, hard=hard_out, esn=esn,
                   cookie=0xC0FFEE)
    inb = b.add_sa(spi=0x1001, direction="in", transform=transform, key=key, mode=mode,
                   local="192.0.2.2", peer="192.0.2.1", soft=soft_in, hard=hard_in, esn=esn,
                   cookie=0xBEEF)
    return a, out, b, inb


def kinds(dp: Dataplane) -> list[str]:
    return [e.kind for e in dp.events()]


def refused(fn, *args) -> str:
    with pytest.raises(DropError) as e:
        fn(*args)
    return e.value.reason


# --- hard limits -------------------------------------------------------------------


def test_hard_packets_outbound():
    a, out, b, inb = pair(hard_out=Lifetime(packets=5))
    sent = [a.encap(out, inner(i)) for i in range(5)]  # exactly 5 pass
    evs = a.events()
    assert [(e.kind, e.spi, e.direction, e.cookie) for e in evs] == [
        ("hard_expired", 0x1001, "out", 0xC0FFEE)]
    for i in range(5, 10):
        assert refused(a.encap, out, inner(i)) == "sa_expired"
    results = a.encap_batch([inner(i) for i in range(20)], out)
    assert all(isinstance(r, DropError) and r.reason == "sa_expired" for r in results)
    assert kinds(a) == []  # once only
    s = a.stats(out)
    assert s["hard_expired"] and not s["soft_expired"]
    assert s["packets"] == 5 and s["seq"] == 5 and s["lifetime_packets"] == 5
    assert s["drops"] == {"sa_expired": 25}
    for i, p in enumerate(sent):
        assert b.decap(p) == inner(i)


def test_hard_packets_inbound():
    a, out, b, inb = pair(hard_in=Lifetime(packets=3))
    pkts = [a.encap(out, inner(i)) for i in range(6)]
    for i in range(3):
        assert b.decap(pkts[i]) == inner(i)
    assert kinds(b) == ["hard_expired"]
    for i in range(3, 6):
        assert refused(b.decap, pkts[i]) == "sa_expired"
    s = b.stats(inb)
    assert s["seq"] == 3  # refused packets do not move the window
    assert s["packets"] == 3 and s["drops"] == {"sa_expired": 3}
    assert kinds(b) == []


def test_hard_bytes_outbound():
    a, out, b, inb = pair(hard_out=Lifetime(bytes=1000))
    for i in range(10):  # 10 x 100 inner bytes: the 10th reaches the limit
        a.encap(out, inner(i, 100))
    assert a.stats(out)["lifetime_bytes"] == 1000
    assert kinds(a) == ["hard_expired"]
    assert refused(a.encap, out, inner(10, 100)) == "sa_expired"


def test_hard_bytes_crossing_packet_passes():
    a, out, b, inb = pair(hard_out=Lifetime(bytes=1001))
    for i in range(11):  # after 10: 1000 < 1001, so the 11th passes and crosses
        a.encap(out, inner(i, 100))
    assert kinds(a) == ["hard_expired"]
    assert refused(a.encap, out, inner(11, 100)) == "sa_expired"
    assert a.stats(out)["lifetime_bytes"] == 1100


def test_hard_bytes_near_edge_with_set_usage():
    big = 10**12
    a, out, b, inb = pair(hard_out=Lifetime(bytes=big), soft_out=Lifetime(bytes=big - 1000))
    set_usage(out, big - 1150, 10**6)
    a.encap(out, inner(1, 100))  # big - 1050: below both
    assert kinds(a) == []
    a.encap(out, inner(2, 100))  # big - 950: soft
    assert kinds(a) == ["soft_expired"]
    for i in range(9):
        a.encap(out, inner(3 + i, 100))
    assert a.stats(out)["lifetime_bytes"] == big - 50
    a.encap(out, inner(12, 100))  # crosses the hard limit
    assert kinds(a) == ["hard_expired"]
    assert refused(a.encap, out, inner(13, 100)) == "sa_expired"
    assert a.stats(out)["lifetime_packets"] == 10**6 + 12


def test_hard_packets_near_edge_with_set_usage():
    a, out, b, inb = pair(hard_in=Lifetime(packets=2**40))
    pkts = [a.encap(out, inner(i)) for i in range(3)]
    set_usage(inb, 0, 2**40 - 2)
    assert b.decap(pkts[0]) == inner(0)
    assert kinds(b) == []
    assert b.decap(pkts[1]) == inner(1)
    assert kinds(b) == ["hard_expired"]
    assert refused(b.decap, pkts[2]) == "sa_expired"


@pytest.mark.parametrize("direction", ["out", "in"])
def test_hard_seconds(direction):
    lim = Lifetime(seconds=10)
    a, out, b, inb = pair(hard_out=lim if direction == "out" else None,
                          hard_in=lim if direction == "in" else None)
    dp, sa = (a, out) if direction == "out" else (b, inb)
    pkts = [a.encap(out, inner(i)) for i in range(2)]
    set_clock(dp, T0 + 10 * SEC - 1)  # one nanosecond before: still good
    p2 = a.encap(out, inner(2))
    assert b.decap(pkts[0]) == inner(0)
    assert dp.stats(sa)["age_seconds"] == pytest.approx(10, abs=1e-6)
    assert kinds(dp) == []
    set_clock(dp, T0 + 10 * SEC)
    if direction == "out":
        assert refused(a.encap, out, inner(3)) == "sa_expired"
    else:
        assert refused(b.decap, pkts[1]) == "sa_expired"
        assert refused(b.decap, p2) == "sa_expired"
        assert b.stats(inb)["seq"] == 1
    evs = dp.events()
    assert [(e.kind, e.value) for e in evs] == [("hard_expired", 10)]
    set_clock(dp, T0 + 1000 * SEC)
    if direction == "out":
        assert refused(a.encap, out, inner(4)) == "sa_expired"
    else:
        assert refused(b.decap, pkts[1]) == "sa_expired"
    assert kinds(dp) == []
    assert dp.stats(sa)["hard_expired"]


def test_clock_set_before_sa_creation_counts():
    """The SA's age starts at the clock reading when add_sa ran."""
    a = Dataplane()
    set_clock(a, T0 + 500 * SEC)
    out = a.add_sa(spi=0x1001, direction="out", transform="esp-gcm 256", key=os.urandom(36),
                   local="192.0.2.1", peer="192.0.2.2", hard=Lifetime(seconds=60))
    set_clock(a, T0 + 559 * SEC)
    a.encap(out, inner())
    set_clock(a, T0 + 560 * SEC)
    assert refused(a.encap, out, inner()) == "sa_expired"


def test_nothing_in_clear_when_expired():
    a, out, b, inb = pair(hard_out=Lifetime(packets=1))
    secret = inner(0x5EC2E7, 200)
    a.encap(out, secret)
    results = a.encap_batch([secret] * 8, out)
    for r in results:
        assert isinstance(r, DropError)
        assert not isinstance(r, (bytes, bytearray))
    # classified traffic too
    from espd.dataplane import Rule

    a.add_rule(Rule.from_prefixes("10.0.0.0/8", "10.0.0.0/8"), out)
    assert refused(a.protect, secret) == "sa_expired"


# --- soft limits -------------------------------------------------------------------


def test_soft_packets_once_traffic_continues():
    a, out, b, inb = pair(soft_out=Lifetime(packets=5), soft_in=Lifetime(packets=3))
    pkts = [a.encap(out, inner(i)) for i in range(4)]
    assert kinds(a) == []
    pkts.append(a.encap(out, inner(4)))
    evs = a.events()
    assert [(e.kind, e.spi, e.direction, e.cookie) for e in evs] == [
        ("soft_expired", 0x1001, "out", 0xC0FFEE)]
    pkts += [a.encap(out, inner(i)) for i in range(5, 50)]
    assert kinds(a) == []
    assert a.stats(out)["soft_expired"] and not a.stats(out)["hard_expired"]
    for i, p in enumerate(pkts):
        assert b.decap(p) == inner(i)
    evs = b.events()
    assert [(e.kind, e.direction, e.cookie) for e in evs] == [("soft_expired", "in", 0xBEEF)]
    assert b.stats(inb)["packets"] == 50


def test_soft_seconds_once():
    a, out, b, inb = pair(soft_out=Lifetime(seconds=30), hard_out=Lifetime(seconds=60))
    a.encap(out, inner())
    set_clock(a, T0 + 30 * SEC)
    a.encap(out, inner())  # soft: the packet still goes
    assert [(e.kind, e.value) for e in a.events()] == [("soft_expired", 30)]
    for t in range(31, 60):
        set_clock(a, T0 + t * SEC)
        a.encap(out, inner())
    assert kinds(a) == []
    set_clock(a, T0 + 60 * SEC)
    assert refused(a.encap, out, inner()) == "sa_expired"
    assert kinds(a) == ["hard_expired"]


def test_soft_and_hard_packets_in_order():
    a, out, b, inb = pair(soft_out=Lifetime(packets=3), hard_out=Lifetime(packets=6))
    got = []
    for i in range(10):
        try:
            a.encap(out, inner(i))
            got.append("ok")
        except DropError as e:
            got.append(e.reason)
        got += kinds(a)
    assert got == ["ok", "ok", "ok", "soft_expired", "ok", "ok", "ok", "hard_expired"] + [
        "sa_expired"] * 4


def test_both_limits_passed_while_idle():
    """Time-based expiry is noticed on the next packet; both events come, once each."""
    a, out, b, inb = pair(soft_out=Lifetime(seconds=10), hard_out=Lifetime(seconds=20))
    a.encap(out, inner())
    set_clock(a, T0 + 3600 * SEC)
    assert refused(a.encap, out, inner()) == "sa_expired"
    assert sorted(kinds(a)) == ["hard_expired", "soft_expired"]
    assert refused(a.encap, out, inner()) == "sa_expired"
    assert kinds(a) == []


# --- byte accounting is the same on both sides --------------------------------------


@pytest.mark.parametrize("transform", ["esp-gcm 256", "esp-aes 256 esp-sha256-hmac"])
@pytest.mark.parametrize("size", [100, 101, 1400])
def test_lifetime_bytes_count_inner_payload_both_directions(transform, size):
    """Lifetime doc: bytes count protected (inner) payload. The same packets must count
    the same on the sender and on the receiver (ESP padding/trailer is not payload)."""
    key_len = 36 if "gcm" in transform else 32
    key, auth = os.urandom(key_len), (os.urandom(32) if "sha256" in transform else None)
    a, b = Dataplane(), Dataplane()
    out = a.add_sa(spi=0x1001, direction="out", transform=transform, key=key, auth_key=auth,
                   local="192.0.2.1", peer="192.0.2.2")
    inb = b.add_sa(spi=0x1001, direction="in", transform=transform, key=key, auth_key=auth,
                   local="192.0.2.2", peer="192.0.2.1")
    for i in range(10):
        assert b.decap(a.encap(out, inner(i, size))) == inner(i, size)
    assert a.stats(out)["lifetime_bytes"] == 10 * size
    assert b.stats(inb)["bytes"] == 10 * size
    assert b.stats(inb)["lifetime_bytes"] == 10 * size


def test_inbound_hard_bytes_limit_matches_outbound():
    """A hard byte limit of 1001 on both sides: 11 packets of 100 bytes pass on both."""
    a, out, b, inb = pair(hard_out=Lifetime(bytes=1001), hard_in=Lifetime(bytes=1001))
    pkts = [a.encap(out, inner(i, 100)) for i in range(11)]
    passed = 0
    for p in pkts:
        try:
            b.decap(p)
            passed += 1
        except DropError as e:
            assert e.reason == "sa_expired"
    assert passed == 11


# --- sequence number exhaustion -----------------------------------------------------


def test_seq_cycled():
    a, out, b, inb = pair()
    set_seq(out, M32 - 1)
    assert refused(a.encap, out, inner()) == "seq_cycled"
    evs = a.events()
    assert [(e.kind, e.spi, e.direction, e.value) for e in evs] == [
        ("seq_cycled", 0x1001, "out", M32 - 1)]
    for _ in range(5):
        assert refused(a.encap, out, inner()) == "seq_cycled"
    assert kinds(a) == []
    s = a.stats(out)
    assert s["seq_cycled"] and s["drops"] == {"seq_cycled": 6}
    assert s["seq"] == M32 - 1 and s["packets"] == 0
    assert a.global_drops()["out"] == {"seq_cycled": 6}


def test_last_sequence_number_is_used_then_cycled():
    a, out, b, inb = pair()
    set_seq(out, M32 - 3)
    set_seq(inb, M32 - 10)
    for i in range(2):  # seq 2^32 - 2 and 2^32 - 1
        p = a.encap(out, inner(i))
        assert struct.unpack("!I", p[24:28])[0] == M32 - 2 + i
        assert b.decap(p) == inner(i)
    assert refused(a.encap, out, inner(2)) == "seq_cycled"  # never wraps to 0
    assert kinds(a) == ["seq_cycled"]
    assert b.stats(inb)["seq"] == M32 - 1


def test_esn_continues_past_2_32():
    a, out, b, inb = pair(esn=True)
    set_seq(out, M32 - 3)
    set_seq(inb, M32 - 10)
    wire = []
    for i in range(6):  # 2^32-2, 2^32-1, 2^32, 2^32+1, ...
        p = a.encap(out, inner(i))
        wire.append(struct.unpack("!I", p[24:28])[0])
        assert b.decap(p) == inner(i)
    assert wire == [M32 - 2, M32 - 1, 0, 1, 2, 3]
    assert a.stats(out)["seq"] == M32 + 3
    assert b.stats(inb)["seq"] == M32 + 3
    assert kinds(a) == [] and not a.stats(out)["seq_cycled"]


def test_esn_seq_cycled_at_its_end():
    """With ESN the space ends at 2^64 - 1, which is still sent; then seq_cycled."""
    a, out, b, inb = pair(esn=True)
    set_seq(out, (1 << 64) - 3)
    set_seq(inb, (1 << 64) - 10)
    for i in range(2):
        p = a.encap(out, inner(i))
        assert struct.unpack("!I", p[24:28])[0] == M32 - 2 + i
        assert b.decap(p) == inner(i)
    assert b.stats(inb)["seq"] == (1 << 64) - 1
    assert refused(a.encap, out, inner()) == "seq_cycled"
    assert [(e.kind, e.value) for e in a.events()] == [("seq_cycled", (1 << 64) - 1)]
    assert refused(a.encap, out, inner()) == "seq_cycled"
    assert kinds(a) == []
    assert a.stats(out)["seq"] == (1 << 64) - 1


@pytest.mark.parametrize("seconds", [18_446_744_074, 2**63, 2**64 - 1, 10**12])
def test_huge_seconds_limit_is_not_an_instant_expiry(seconds):
    """A limit of more seconds than fit in 64-bit nanoseconds means 'practically never'
    (the config accepts lifetimes up to 2^64 - 1): the SA must not expire after 1 day."""
    a, out, b, inb = pair(hard_out=Lifetime(seconds=seconds), soft_out=Lifetime(seconds=seconds))
    set_clock(a, T0 + 86_400 * SEC)
    a.encap(out, inner())
    assert kinds(a) == []
    assert not a.stats(out)["hard_expired"]


def test_manual_sa_enforces_a_lifetime_in_packets(tmp_path):
    """TOML `lifetime = { packets = N }`: the planned SAs stop after exactly N packets."""
    from espd.config.load import load
    from espd.policy.plan import build_plan

    path = tmp_path / "espd.toml"
    path.write_text(f"""\
[daemon]
local = "192.0.2.1"
[access_list.101]
rules = ["permit ip 10.0.0.0 0.0.255.255 10.1.0.0 0.0.255.255"]
[transform_set.T]
transforms = ["esp-gcm 256"]
[[crypto_map]]
name = "m"
seq = 10
peer = "192.0.2.2"
match_address = "101"
transform_set = "T"
lifetime = {{ packets = 10 }}
inbound = {{ spi = 0x1001, key = "{os.urandom(36).hex()}" }}
outbound = {{ spi = 0x2001, key = "{os.urandom(36).hex()}" }}
""")
    plan = build_plan(load(str(path)))
    out = next(s for s in plan.sas if s.direction == "out")
    assert (out.hard.packets, out.soft.packets) == (10, 9)
    dp = Dataplane()
    sa = dp.add_sa(spi=out.spi, direction="out", transform=out.transform, key=bytes(out.key),
                   local=out.local, peer=out.peer, hard=out.hard, soft=out.soft)
    for i in range(10):
        dp.encap(sa, inner(i))
    assert refused(dp.encap, sa, inner(10)) == "sa_expired"
