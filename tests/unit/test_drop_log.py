"""The drop log: sampled records of inbound drops (native/droplog.c) through the compiled
data plane, and the rate-limited lines ops/drop_log.py makes of them.

C side: each sampled reason (unknown_spi, auth_failed, replay_old, replay_dup, malformed)
gives a record with the outer source, UDP port and SPI; other drops give none; the token
bucket lets 64 through at once and 32 a second after that; a ring nobody reads holds 256
and the rest is counted, never waited for.
Python side: one line per (direction, reason, source) per interval, counts of the rest,
a bound on the sources followed, the not-sampled sum, interval 0 off.
"""

from __future__ import annotations

import logging
import struct
from types import SimpleNamespace

import pytest
from support.packets import IPPROTO_UDP, ipv4, ipv6, udp

from espd.dataplane import Dataplane, DropError
from espd.dataplane.testing import set_clock
from espd.ops.drop_log import DropLog, describe

KEY = bytes(range(1, 21))  # esp-gcm 128: 16 key bytes and a 4-byte salt
SPI = 0x1234ABCD
BURST, RATE, RING = 64, 32, 256  # native/droplog.h


def inner(n: int = 0) -> bytes:
    return ipv4("10.0.0.1", "10.1.0.1", IPPROTO_UDP, udp(5000, 53, bytes(40)), ident=n)


def pair(encap: str = "esp", family: int = 4):
    local, peer = ("192.0.2.2", "192.0.2.1") if family == 4 else ("fd00:ff::2", "fd00:ff::1")
    a, b = Dataplane(), Dataplane()
    out = a.add_sa(spi=SPI, direction="out", transform="esp-gcm 128", key=KEY, local=peer,
                   peer=local, encap=encap, sport=4500, dport=4500)
    b.add_sa(spi=SPI, direction="in", transform="esp-gcm 128", key=KEY, local=local, peer=peer,
             encap=encap, sport=4500, dport=4500, replay_window=64)
    return a, out, b


def esp_offset(packet: bytes, encap: str) -> int:
    return (20 if packet[0] >> 4 == 4 else 40) + (8 if encap == "udp" else 0)


@pytest.mark.parametrize("encap,family", [("esp", 4), ("udp", 4), ("esp", 6), ("udp", 6)])
def test_each_sampled_reason_is_recorded_with_source_port_and_spi(encap, family):
    a, out, b = pair(encap, family)
    sealed = [a.encap(out, inner(i)) for i in range(80)]
    off = esp_offset(sealed[0], encap)
    for p in sealed[2:70]:
        assert isinstance(b.decap(p), bytes)
    bad_icv = bytearray(sealed[75])
    bad_icv[-1] ^= 1
    unknown = bytearray(sealed[76])
    unknown[off:off + 4] = struct.pack("!I", 0xDEAD0001)
    peer = "192.0.2.1" if family == 4 else "fd00:ff::1"
    local = "192.0.2.2" if family == 4 else "fd00:ff::2"
    short_esp = b"\x01\x02\x03\x04"  # an ESP header cut short: no sequence number
    body = udp(4500, 4500, short_esp) if encap == "udp" else short_esp
    proto = IPPROTO_UDP if encap == "udp" else 50
    truncated = ipv4(peer, local, proto, body) if family == 4 else ipv6(peer, local, proto, body)
    packets = [bytes(bad_icv), bytes(unknown), sealed[0], sealed[10], truncated]
    results = b.decap_batch(packets)
    reasons = [r.reason for r in results]
    assert reasons == ["auth_failed", "unknown_spi", "replay_old", "replay_dup", "malformed"]
    records = b.drop_records()
    port = 4500 if encap == "udp" else None
    assert [(r.reason, r.src, r.sport, r.spi, r.direction) for r in records] == [
        ("auth_failed", peer, port, SPI, "in"),
        ("unknown_spi", peer, port, 0xDEAD0001, "in"),
        ("replay_old", peer, port, SPI, "in"),
        ("replay_dup", peer, port, SPI, "in"),
        ("malformed", peer, port, None, "in"),
    ]
    assert {r.dst for r in records} == {local}
    assert b.drop_records() == []  # taken
    assert b.drop_records_suppressed() == {}


def test_other_drops_and_passed_packets_leave_no_record():
    a, out, b = pair("udp")
    p = a.encap(out, inner())
    assert isinstance(b.decap(p), bytes)
    keepalive = ipv4("192.0.2.1", "192.0.2.2", IPPROTO_UDP, udp(4500, 4500, b"\xff"))
    wrong_port = bytearray(a.encap(out, inner(1)))
    wrong_port[20:22] = struct.pack("!H", 4501)  # wrong_source: not sampled
    results = b.decap_batch([keepalive, bytes(wrong_port)])
    assert [r.reason for r in results] == ["nat_keepalive", "wrong_source"]
    assert b.drop_records() == []
    assert b.drop_records_suppressed() == {}


def test_a_record_has_no_payload_or_key_bytes():
    a, out, b = pair()
    p = bytearray(a.encap(out, inner()))
    p[-1] ^= 1
    with pytest.raises(DropError):
        b.decap(bytes(p))
    (record,) = b.drop_records()
    assert set(vars(record)) == {"reason", "direction", "src", "dst", "sport", "spi", "time",
                                 "worker"}


def test_the_token_bucket_bursts_then_paces_and_counts_the_rest():
    a, out, b = pair()
    p = bytearray(a.encap(out, inner()))
    p[20:24] = struct.pack("!I", 0xDEAD0002)
    flood = [bytes(p)] * 1000
    set_clock(b, 5 * 10**9)
    assert all(r.reason == "unknown_spi" for r in b.decap_batch(flood))
    assert len(b.drop_records()) == BURST
    assert b.drop_records_suppressed() == {"unknown_spi": 1000 - BURST}
    set_clock(b, 6 * 10**9)  # one second later: RATE tokens
    b.decap_batch(flood)
    assert len(b.drop_records()) == RATE
    assert b.drop_records_suppressed() == {"unknown_spi": 2000 - BURST - RATE}
    set_clock(b, 6 * 10**9 - 10**8)  # a clock stepping back adds nothing
    b.decap_batch(flood)
    assert b.drop_records() == []
    assert b.drop_records_suppressed() == {"unknown_spi": 3000 - BURST - RATE}


def test_a_ring_nobody_reads_holds_what_fits_and_counts_the_rest():
    a, out, b = pair()
    p = bytearray(a.encap(out, inner()))
    p[20:24] = struct.pack("!I", 0xDEAD0003)
    sent = 0
    for second in range(1, 40):  # tokens enough to fill the ring many times over
        set_clock(b, second * 10**9)
        b.decap_batch([bytes(p)] * 50)
        sent += 50
    records = b.drop_records()
    assert len(records) == RING
    assert b.drop_records_suppressed() == {"unknown_spi": sent - RING}
    assert records[0].time == 1.0 and records[-1].time > records[0].time  # oldest first


def test_each_worker_slot_has_a_ring_of_its_own():
    dp = Dataplane(workers=2)
    truncated = ipv4("192.0.2.7", "192.0.2.2", 50, b"\x00\x00")
    assert dp.decap_batch([truncated], worker=0)[0].reason == "malformed"
    assert dp.decap_batch([truncated] * 2, worker=1)[0].reason == "malformed"
    records = dp.drop_records()
    assert sorted(r.worker for r in records) == [0, 1, 1]
    assert {(r.src, r.dst) for r in records} == {("192.0.2.7", "192.0.2.2")}


def test_garbage_without_an_ip_header_is_recorded_without_a_source():
    dp = Dataplane()
    assert dp.decap_batch([b"\x00" * 10])[0].reason == "malformed"
    (record,) = dp.drop_records()
    assert (record.reason, record.src, record.dst, record.sport, record.spi) == (
        "malformed", None, None, None, None)


# -- the lines ---------------------------------------------------------------------------

def rec(reason="auth_failed", src="192.0.2.7", sport=4500, spi=0x1234ABCD, direction="in"):
    return SimpleNamespace(reason=reason, src=src, sport=sport, spi=spi, direction=direction)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def lines():
    handler = Lines()
    logger = logging.getLogger("espd.drops.test")
    logger.addHandler(handler)
    logger.propagate = False
    yield logger, handler.lines
    logger.removeHandler(handler)


def test_describe():
    assert describe("in", "auth_failed", "192.0.2.7", 4500, 0x1234ABCD) == \
        "inbound auth_failed from 192.0.2.7:4500 spi 0x1234abcd"
    assert describe("in", "unknown_spi", "192.0.2.7", None, 0x100) == \
        "inbound unknown_spi from 192.0.2.7 spi 0x00000100"
    assert describe("in", "replay_dup", "2001:db8::7", 4500, 1) == \
        "inbound replay_dup from [2001:db8::7]:4500 spi 0x00000001"
    assert describe("in", "malformed", "2001:db8::7", None, None) == \
        "inbound malformed from 2001:db8::7"
    assert describe("in", "malformed", None, None, None) == \
        "inbound malformed from an unknown source"
    assert describe("in", "unknown_spi", "192.0.2.7", 4500, 0x100, "192.0.2.1") == \
        "inbound unknown_spi from 192.0.2.7:4500 to 192.0.2.1 spi 0x00000100"


def test_one_line_per_reason_and_source_per_interval(lines):
    logger, out = lines
    dl = DropLog(10, logger=logger, clock=lambda: 0.0)
    dl.feed([rec()] * 38 + [rec(reason="replay_dup")], {}, now=0.0)
    assert out == ["inbound auth_failed from 192.0.2.7:4500 spi 0x1234abcd",
                   "inbound replay_dup from 192.0.2.7:4500 spi 0x1234abcd"]
    dl.feed([rec()], {}, now=5.0)  # still the same interval: counted
    assert len(out) == 2
    dl.feed([], {}, now=10.0)
    assert out[2:] == ["inbound auth_failed from 192.0.2.7:4500 spi 0x1234abcd "
                       "(38 more suppressed in 10 s)"]
    dl.feed([rec(spi=0x99)], {}, now=12.0)  # still coming: quiet for another interval
    dl.feed([], {}, now=20.0)
    assert out[3:] == ["inbound auth_failed from 192.0.2.7:4500 spi 0x00000099 "
                       "(1 more suppressed in 10 s)"]
    dl.feed([], {}, now=30.0)  # a quiet interval: forgotten, no line
    assert len(out) == 4
    dl.feed([rec()], {}, now=31.0)  # so its next record logs at once
    assert out[4:] == ["inbound auth_failed from 192.0.2.7:4500 spi 0x1234abcd"]


def test_sources_followed_are_bounded(lines):
    logger, out = lines
    dl = DropLog(10, max_lines=5, logger=logger, clock=lambda: 0.0)
    dl.feed([rec(src=f"198.51.100.{i}") for i in range(200)], {}, now=0.0)
    assert len(out) == 5
    dl.feed([], {}, now=10.0)
    assert out[5:] == ["195 more drop records from 195 other (reason, source) pairs not "
                       "logged in 10 s (at most 5 followed at once)"]


def test_what_c_did_not_sample_is_summed_once_per_interval(lines):
    logger, out = lines
    dl = DropLog(10, logger=logger, clock=lambda: 0.0)
    dl.feed([], {"unknown_spi": 100}, now=1.0)
    dl.feed([], {"unknown_spi": 4000, "auth_failed": 7}, now=2.0)
    assert out == []
    dl.feed([], {"unknown_spi": 4000, "auth_failed": 7}, now=10.0)
    assert out == ["4007 inbound drops not sampled in 10 s (data-plane rate limit): "
                   "auth_failed 7, unknown_spi 4000"]
    dl.feed([], {"unknown_spi": 4000, "auth_failed": 7}, now=20.0)  # nothing new
    assert len(out) == 1


def test_interval_zero_logs_nothing_and_flush_logs_what_waits(lines):
    logger, out = lines
    dp = SimpleNamespace(drop_records=lambda: [rec()] * 3,
                         drop_records_suppressed=lambda: {"auth_failed": 5})
    dl = DropLog(10, logger=logger, clock=lambda: 0.0)
    dl.turn(dp, 0)
    assert out == []
    dl.turn(dp, 10)
    assert out == ["inbound auth_failed from 192.0.2.7:4500 spi 0x1234abcd"]
    dl.flush(now=3.0)
    assert out[1:] == ["inbound auth_failed from 192.0.2.7:4500 spi 0x1234abcd "
                       "(2 more suppressed in 3 s)"]


def test_lines_from_real_records_hold_no_key_bytes(lines):
    logger, out = lines
    a, out_sa, b = pair("udp")
    p = bytearray(a.encap(out_sa, inner()))
    p[-1] ^= 1
    b.decap_batch([bytes(p)] * 10)
    DropLog(10, logger=logger).feed(b.drop_records(), b.drop_records_suppressed())
    assert out == ["inbound auth_failed from 192.0.2.1:4500 to 192.0.2.2 spi 0x1234abcd"]
    assert KEY.hex() not in " ".join(out) and KEY[:16].hex() not in " ".join(out)
