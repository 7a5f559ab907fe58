"""Anti-replay window (native/replay.c) against a plain Python reference model.

The model is RFC 4303 3.4.3 taken literally: a set of the 64-bit sequence numbers
accepted so far and the highest one (top). A number is accepted when it is above top;
rejected as ``replay_old`` when ``top - seq >= window``; rejected as ``replay_dup`` when it
was already accepted. Sequence number 0 is never valid. With ESN the high 32 bits are
inferred per RFC 4303 appendix A2.1 (with no window, W = 2^31: nearest subspace wins).

The second half drives the same window through the full data plane (VPP's cases).
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.packets import IPPROTO_UDP, ipv4, udp

from espd.dataplane import Dataplane, DataplaneError, DropError
from espd.dataplane.testing import Replay, set_seq

M32 = 1 << 32
WINDOWS = [0, 1, 32, 64, 65, 1024, 4096, 65536]


# --- reference model ---------------------------------------------------------------


class Model:
    def __init__(self, window: int, esn: bool = False) -> None:
        self.window = window
        self.esn = esn
        self.top = 0
        self.seen: set[int] = set()

    def infer(self, seql: int) -> int | None:
        """RFC 4303 A2.1, literally; None when the result lies outside [0, 2^64)."""
        w = self.window if self.window else 1 << 31
        tl, th = self.top % M32, self.top >> 32
        bottom = (tl - w + 1) % M32
        if tl >= w - 1:  # Case A: window within one subspace
            seqh = th if seql >= bottom else th + 1
        else:  # Case B: window spans two subspaces
            seqh = th - 1 if seql >= bottom else th
        if not 0 <= seqh < M32:
            return None
        return seqh << 32 | seql

    def check(self, seql: int) -> tuple[str | None, int | None]:
        if self.esn:
            s = self.infer(seql)
            if s is None:
                return "replay_old", None
        else:
            s = seql
        if s == 0:
            return "replay_old", s
        return self._verdict(s), s

    def _verdict(self, s: int) -> str | None:
        if self.window == 0 or s > self.top:
            return None
        if self.top - s >= self.window:
            return "replay_old"
        if s in self.seen:
            return "replay_dup"
        return None

    def advance(self, s: int) -> str | None:
        if self.window == 0:
            self.top = max(self.top, s)
            return None
        v = self._verdict(s)
        if v:
            return v
        self.seen.add(s)
        if s > self.top:
            self.top = s
            if len(self.seen) > 4 * self.window + 64:
                self.seen = {x for x in self.seen if self.top - x < self.window}
        return None


def run_both(window: int, esn: bool, start: int, steps, *, check_only=()) -> Replay:
    """Feed the same stream to Replay and the model; compare every answer."""
    r, m = Replay(window, esn=esn), Model(window, esn)
    if start:
        assert r.advance(start) == m.advance(start) is None
    assert r.top == m.top
    for i, s in enumerate(steps):
        seql = s % M32
        want_reason, want_seq = m.check(seql)
        got_reason, got_seq = r.check(seql)
        assert got_reason == want_reason, (i, hex(s), hex(m.top), got_reason, want_reason)
        if want_seq is not None:
            assert got_seq == want_seq, (i, hex(s), hex(m.top), hex(got_seq), hex(want_seq))
        if want_reason is None and i not in check_only:
            assert r.advance(got_seq) == m.advance(want_seq) is None
        assert r.top == m.top, (i, hex(s))
    return r


# --- property tests ----------------------------------------------------------------

STARTS = st.one_of(
    st.just(0),
    st.integers(1, 200),
    st.integers(M32 - 300, M32 - 1),  # just below the first 2^32 boundary
    st.integers(M32, M32 + 300),
    st.integers(0, M32 - 1),
)
ESN_STARTS = st.one_of(
    STARTS,
    st.integers(2 * M32 - 70_000, 2 * M32 + 70_000),
    st.integers(5 * M32 - 200, 5 * M32 + 200),
    st.integers(1, (M32 - 2) * M32),
    st.just((M32 - 1) * M32 - 5),  # the last subspace
)


@st.composite
def streams(draw, window: int, esn: bool):
    """A sender's stream as seen by the receiver: mostly increasing, reordered, with
    duplicates, jumps beyond the window and probes around the window's left edge."""
    start = draw(ESN_STARTS if esn else STARTS)
    limit = (1 << 64) - 1 if esn else M32 - 1
    w = window or 64
    cur = min(start, limit)
    out = []
    for _ in range(draw(st.integers(1, 120))):
        kind = draw(st.sampled_from(["next", "next", "next", "back", "dup", "jump", "edge",
                                     "wrap", "random"]))
        if kind == "next":
            cur = cur + draw(st.integers(1, 3))
            s = cur
        elif kind == "back":
            s = cur - draw(st.integers(0, 2 * w + 2))
        elif kind == "dup":
            s = draw(st.sampled_from(out)) if out else cur
        elif kind == "jump":
            cur = cur + draw(st.integers(w, 4 * w + 1000))
            s = cur
        elif kind == "edge":
            s = cur - w + draw(st.integers(-1, 1))
        elif kind == "wrap":  # the low 32 bits cross 0 (or jump just below a boundary)
            cur = ((cur >> 32) + 1 << 32) - draw(st.integers(0, 3)) + draw(st.integers(0, 3))
            s = cur
        else:
            s = draw(st.integers(0, M32 - 1)) | (cur >> 32 << 32)
        cur = min(cur, limit)
        out.append(max(0, min(s, limit)))
    skips = draw(st.sets(st.integers(0, len(out) - 1), max_size=len(out) // 4))
    return start, out, skips


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("esn", [False, True], ids=["32bit", "esn"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_replay_matches_model(window, esn, data):
    start, steps, skips = data.draw(streams(window, esn))
    # a few packets are checked but never advanced: their ICV "failed"; nothing may change
    run_both(window, esn, start, steps, check_only=skips)


@pytest.mark.parametrize("window", WINDOWS)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_advance_matches_model(window, data):
    """replay_advance alone (the caller that lost a race): same verdicts as the model."""
    r, m = Replay(window), Model(window)
    base = data.draw(st.integers(1, M32 - 1))
    for s in data.draw(st.lists(st.integers(max(1, base - 3 * (window or 1)), base + 100),
                                min_size=1, max_size=80)):
        assert r.advance(s) == m.advance(s), hex(s)
        assert r.top == m.top


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 10_000_000), min_size=1, max_size=300))
def test_random_sequences_big_window(seqs):
    run_both(65536, False, 0, seqs)


# --- spelled-out cases -------------------------------------------------------------


@pytest.mark.parametrize("window", [2, 32, 64, 65, 1024, 4096, 65536])
@pytest.mark.parametrize("esn", [False, True])
def test_window_edges(window, esn):
    top = 1_000_000 if not esn else 3 * M32 + 10  # Case B for every window with ESN
    r = Replay(window, esn=esn)
    assert r.advance(top) is None
    assert r.top == top
    edge = top - window + 1  # the oldest number still inside the window
    assert r.check(edge % M32) == (None, edge)
    left = r.check((edge - 1) % M32)
    if esn:  # A2.1: a low number just left of the window is read as the next subspace
        assert left[0] is None and left[1] > top and left[1] % M32 == (edge - 1) % M32
    else:
        assert left[0] == "replay_old"
    assert r.check(top % M32) == ("replay_dup", top)
    assert r.check((top + 1) % M32) == (None, top + 1)
    assert r.advance(edge) is None
    assert r.check(edge % M32) == ("replay_dup", edge)
    assert r.advance(edge) == "replay_dup"
    assert r.advance(edge - 1) == "replay_old"
    # moving top by one pushes the old edge out of the window
    assert r.advance(top + 1) is None
    assert r.advance(edge) == "replay_old"
    if not esn:
        assert r.check(edge % M32)[0] == "replay_old"
    else:
        assert r.check(edge % M32)[1] > top + 1
    assert r.check((edge + 1) % M32) == (None if edge + 1 != top else "replay_dup", edge + 1)


def test_window_of_one():
    r = Replay(1)
    assert r.advance(10) is None
    assert r.check(10) == ("replay_dup", 10)
    assert r.check(9) == ("replay_old", 9)
    assert r.check(11) == (None, 11)


@pytest.mark.parametrize("window", WINDOWS)
def test_sequence_zero_rejected(window):
    r = Replay(window)
    assert r.check(0)[0] == "replay_old"
    r.advance(5)
    assert r.check(0)[0] == "replay_old"
    e = Replay(window, esn=True)
    assert e.check(0)[0] == "replay_old"  # seq_hi can only be 0 here: 64-bit 0


def test_window_zero_means_no_replay_check():
    r = Replay(0)
    assert r.advance(100) is None
    assert r.check(100) == (None, 100)  # a duplicate passes with anti-replay off
    assert r.check(1) == (None, 1)
    assert r.advance(1) is None
    assert r.top == 100


def test_window_out_of_range():
    Replay(65536)
    with pytest.raises(DataplaneError):
        Replay(65537)


def test_first_packet_may_be_anywhere():
    for s in (1, 2, 1000, M32 - 1):
        r = Replay(64)
        assert r.check(s) == (None, s)
        assert r.advance(s) is None and r.top == s


def test_esn_case_a_window_below_boundary():
    """RFC 4303 A2.2, Case A: Tl >= W - 1, the window lies in subspace Th; a low seql
    below the window's bottom belongs to the next subspace (the sender wrapped)."""
    w = 64
    r = Replay(w, esn=True)
    top = M32 - 10  # Th = 0, Tl = 2^32 - 10
    r.advance(top)
    assert r.check(M32 - 10 - 63) == (None, M32 - 73)  # bottom of the window
    # below the bottom -> Th + 1, i.e. far ahead: accepted as new
    assert r.check(M32 - 74) == (None, M32 + M32 - 74)
    assert r.check(M32 - 5) == (None, M32 - 5)  # right of top, same subspace
    assert r.check(3) == (None, M32 + 3)  # wrapped: next subspace
    assert r.advance(M32 + 3) is None
    assert r.top == M32 + 3
    # now Case B: Tl = 3 < W - 1, the window spans subspaces 0 and 1
    assert r.check(M32 - 10) == ("replay_dup", M32 - 10)
    assert r.check(M32 - 9) == (None, M32 - 9)
    assert r.check(M32 - 60) == (None, M32 - 60)  # bottom: top - 63
    assert r.check(M32 - 61)[0] is None  # below bottom: Th = 1, far ahead
    assert r.check(M32 - 61)[1] == M32 + M32 - 61
    assert r.check(2) == (None, M32 + 2)
    assert r.check(3) == ("replay_dup", M32 + 3)
    assert r.check(0) == (None, M32)  # seq_lo 0 is a valid sequence number with ESN


def test_esn_case_b_window_spans_boundary():
    """RFC 4303 A2.2, Case B: Tl < W - 1, seql at or above the (wrapped) bottom is in
    subspace Th - 1, everything else in Th."""
    w = 1024
    r = Replay(w, esn=True)
    top = 7 * M32 + 100
    r.advance(top)
    bottom = (100 - w + 1) % M32  # 2^32 - 923
    assert r.check(bottom) == (None, 6 * M32 + bottom)
    assert r.check(M32 - 1) == (None, 7 * M32 - 1)
    assert r.check(bottom - 1) == (None, 7 * M32 + bottom - 1)  # next in Th: far ahead
    assert r.check(50) == (None, 7 * M32 + 50)
    assert r.check(100) == ("replay_dup", top)
    assert r.check(101) == (None, top + 1)
    r.advance(7 * M32 - 1)
    assert r.check(M32 - 1) == ("replay_dup", 7 * M32 - 1)


def test_esn_case_b_at_subspace_zero_is_old():
    """At the start (Th = 0), Case B's Th - 1 would be negative: below sequence 1."""
    r = Replay(64, esn=True)
    r.advance(10)
    assert r.check(M32 - 1)[0] == "replay_old"
    assert r.check(M32 - 53)[0] == "replay_old"  # the bottom (10 - 63 mod 2^32)
    assert r.check(M32 - 54) == (None, M32 - 54)  # below bottom: Th = 0, ahead
    assert r.check(9) == (None, 9)


def test_esn_last_subspace_cannot_go_further():
    r = Replay(64, esn=True)
    top = (M32 - 1) * M32 + 1000  # Th = 2^32 - 1, Case A
    r.advance(top)
    assert r.check(1001) == (None, top + 1)
    assert r.check(500)[0] == "replay_old"  # would be Th + 1 = 2^32: past 2^64 - 1


def test_non_esn_ignores_boundary():
    """Without ESN a wrapped low number is just a number far left of the window."""
    r = Replay(64)
    r.advance(M32 - 10)
    assert r.check(3) == ("replay_old", 3)
    assert r.check(M32 - 1) == (None, M32 - 1)


@pytest.mark.parametrize("window", [64, 65536])
def test_big_window_functional(window):
    """A 65536-packet window works like a small one: every packet in the window is
    remembered, and sliding by more than the window forgets all of them."""
    r, m = Replay(window), Model(window)
    seqs = list(range(1, 3 * window, 3)) + list(range(2, 3 * window, 3))
    for s in seqs:
        assert r.check(s) == m.check(s)
        if m.check(s)[0] is None:
            assert r.advance(s) == m.advance(s)
    assert r.top == m.top
    for s in (1, 2, 3 * window - 3, 3 * window - 5, 3 * window - 4):
        assert r.check(s) == m.check(s)
    jump = r.top + window + 10_000
    assert r.advance(jump) is None
    for s in range(jump - window + 1, jump, max(1, window // 256)):
        assert r.check(s) == (None, s)  # all bits cleared by the jump
    assert r.check(jump - window)[0] == "replay_old"


# --- through the data plane (VPP's cases) ------------------------------------------


def inner_packet(n: int = 0, size: int = 64) -> bytes:
    payload = struct.pack("!I", n) + bytes(size - 32)
    return ipv4("10.0.0.1", "10.1.0.1", IPPROTO_UDP, udp(1234, 80, payload), ident=n)


def pair(window=64, esn=False, transform="esp-gcm 256", key=None):
    key = key or os.urandom(36)
    a, b = Dataplane(), Dataplane()
    out = a.add_sa(spi=0x1001, direction="out", transform=transform, key=key,
                   local="192.0.2.1", peer="192.0.2.2", esn=esn)
    inb = b.add_sa(spi=0x1001, direction="in", transform=transform, key=key,
                   local="192.0.2.2", peer="192.0.2.1", replay_window=window, esn=esn)
    return a, out, b, inb, key


def reason(dp, pkt):
    with pytest.raises(DropError) as e:
        dp.decap(pkt)
    return e.value.reason


def test_dataplane_duplicate_and_old():
    a, out, b, inb, _ = pair(window=64)
    pkts = [a.encap(out, inner_packet(i)) for i in range(1, 201)]  # seq 1..200
    assert b.decap(pkts[0]) == inner_packet(1)
    assert reason(b, pkts[0]) == "replay_dup"
    assert b.decap(pkts[99]) == inner_packet(100)  # top = 100
    assert b.decap(pkts[36]) == inner_packet(37)  # 100 - 37 = 63 < 64: inside
    assert reason(b, pkts[35]) == "replay_old"  # 100 - 36 = 64: left of the window
    assert reason(b, pkts[36]) == "replay_dup"
    # out of order inside the window, each once
    for i in (98, 50, 70, 40, 97):
        assert b.decap(pkts[i - 1]) == inner_packet(i)
        assert reason(b, pkts[i - 1]) == "replay_dup"
    assert b.decap(pkts[199]) == inner_packet(200)
    assert reason(b, pkts[99]) == "replay_old"  # the window moved on
    st_ = b.stats(inb)
    assert st_["seq"] == 200
    assert st_["drops"] == {"replay_dup": 7, "replay_old": 2}
    assert st_["decaps"] == 9


def test_dataplane_bad_icv_at_high_seq_does_not_move_window():
    a, out, b, inb, key = pair(window=64)
    pkts = [a.encap(out, inner_packet(i)) for i in range(1, 11)]
    for p in pkts[:5]:
        b.decap(p)
    assert b.stats(inb)["seq"] == 5
    # a forger with the wrong key, at a sequence number far ahead
    wrong = bytes(x ^ 0x55 for x in key)
    f = Dataplane()
    fout = f.add_sa(spi=0x1001, direction="out", transform="esp-gcm 256", key=wrong,
                    local="192.0.2.1", peer="192.0.2.2")
    set_seq(fout, 10_000)
    forged = f.encap(fout, inner_packet(10_001))
    assert struct.unpack("!I", forged[24:28])[0] == 10_001
    assert reason(b, forged) == "auth_failed"
    assert b.stats(inb)["seq"] == 5  # window top unchanged
    for i, p in enumerate(pkts[5:], start=6):
        assert b.decap(p) == inner_packet(i)  # would be replay_old had the forgery moved it
    assert b.stats(inb)["seq"] == 10
    # and a forgery of a number inside the window does not mark it as seen
    set_seq(fout, 10)
    forged = f.encap(fout, inner_packet(11))
    assert reason(b, forged) == "auth_failed"
    genuine = a.encap(out, inner_packet(11))
    assert b.decap(genuine) == inner_packet(11)
    assert b.stats(inb)["drops"] == {"auth_failed": 2}


def test_dataplane_esn_across_boundary():
    a, out, b, inb, _ = pair(window=128, esn=True)
    set_seq(out, M32 - 50)
    pkts = [a.encap(out, inner_packet(i)) for i in range(100)]  # seq 2^32-49 .. 2^32+50
    wire = [struct.unpack("!I", p[24:28])[0] for p in pkts]
    assert wire[48] == M32 - 1 and wire[49] == 0 and wire[50] == 1
    set_seq(inb, M32 - 60)
    order = list(range(40, 100)) + list(range(0, 40))  # after the wrap, then late ones
    for i in order:
        assert b.decap(pkts[i]) == inner_packet(i)
    assert b.stats(inb)["seq"] == M32 + 50
    for i in (0, 49, 99):
        assert reason(b, pkts[i]) == "replay_dup"


def test_dataplane_window_zero_accepts_replays():
    a, out, b, inb, _ = pair(window=0)
    p = a.encap(out, inner_packet(1))
    assert b.decap(p) == inner_packet(1)
    assert b.decap(p) == inner_packet(1)  # anti-replay off
