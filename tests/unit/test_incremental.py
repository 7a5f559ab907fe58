"""SA changes one at a time: install, replace (make-before-break), retire.

Two gateways A and B, each a real data plane; A protects 10.1.0.0/16 -> 10.2.0.0/16 with
policy 1, B the mirror. SAs are installed into the live sets without any republish:

- install makes a pair live for the rules of its policy; other policies are untouched;
  refusals (bound policy, taken SPI, no such policy) change nothing.
- replace is make-before-break: the new inbound SA is live before the outbound switches,
  and packets sealed with the old SA still open until the old inbound SA is retired.
- retire: the rule drops no_sa again and raises acquire.
- A later commit/publish carries the incrementally installed SAs.
- While other threads run encap/decap (cffi releases the GIL; each thread has its own
  worker slot), hundreds of changes never let a packet see anything but a whole state.
"""

from __future__ import annotations

import os
import struct
import threading
import time

import pytest
from support.packets import IPPROTO_UDP, ipv4, udp

from espd.dataplane import Dataplane, DataplaneError, DropError, Rule

GW_A, GW_B = "192.0.2.1", "192.0.2.2"
TF = "esp-gcm 128"


def ip4(src: str, dst: str, n: int = 0) -> bytes:
    body = udp(1000 + n % 1000, 2000, n.to_bytes(16, "big"))
    return ipv4(src, dst, IPPROTO_UDP, body, ident=1)


class Gateway:
    def __init__(self, local: str, peer: str, mine: str, theirs: str, workers: int = 1) -> None:
        self.dp = Dataplane(workers)
        self.local, self.peer = local, peer
        self.dp.add_rule(Rule.from_prefixes(mine, theirs, policy=1))
        self.dp.add_rule(Rule.from_prefixes("10.7.0.0/16", "10.8.0.0/16", policy=2))
        self.dp.commit()

    def sa(self, direction: str, spi: int, key: bytes, policy: int = 1):
        local, peer = (self.local, self.peer)
        return self.dp.create_sa(spi=spi, direction=direction, transform=TF, key=key,
                                 local=local, peer=peer, policy=policy)


def pair() -> tuple[Gateway, Gateway]:
    return (Gateway(GW_A, GW_B, "10.1.0.0/16", "10.2.0.0/16"),
            Gateway(GW_B, GW_A, "10.2.0.0/16", "10.1.0.0/16"))


def child(a: Gateway, b: Gateway, spi_ab: int, spi_ba: int):
    """One Child SA pair: A->B under spi_ab, B->A under spi_ba (fresh keys)."""
    k_ab, k_ba = os.urandom(20), os.urandom(20)
    return ((a.sa("in", spi_ba, k_ba), a.sa("out", spi_ab, k_ab)),
            (b.sa("in", spi_ab, k_ab), b.sa("out", spi_ba, k_ba)))


def reason(fn, *args) -> str:
    with pytest.raises(DropError) as e:
        fn(*args)
    return e.value.reason


def test_install_makes_a_pair_live_for_its_policy_only() -> None:
    a, b = pair()
    pkt = ip4("10.1.0.5", "10.2.0.9")
    assert reason(a.dp.protect, pkt) == "no_sa"
    (ev,) = a.dp.events()
    assert (ev.kind, ev.policy, ev.src, ev.dst) == ("acquire", 1, "10.1.0.5", "10.2.0.9")
    (a_in, a_out), (b_in, b_out) = child(a, b, 0x1000, 0x2000)
    b.dp.install(b_in, b_out)  # the responder first: it can open what A sends at once
    a.dp.install(a_in, a_out)
    assert b.dp.decap(a.dp.protect(pkt)) == pkt
    back = ip4("10.2.0.9", "10.1.0.5")
    assert a.dp.decap(b.dp.protect(back)) == back
    assert reason(a.dp.protect, ip4("10.7.0.1", "10.8.0.1")) == "no_sa"  # policy 2: no SA
    assert set(a.dp.sas) == {a_in, a_out}
    assert a.dp.stats(a_out)["packets"] == 1 and b.dp.stats(b_in)["packets"] == 1


def test_refused_changes_change_nothing() -> None:
    a, b = pair()
    (a_in, a_out), _ = child(a, b, 0x1000, 0x2000)
    a.dp.install(a_in, a_out)
    (n_in, n_out), _ = child(a, b, 0x1001, 0x2001)
    with pytest.raises(DataplaneError, match="exists"):
        a.dp.install(n_in, n_out)  # policy 1 is bound: that is a replace
    dup = a.sa("in", 0x2000, os.urandom(20))
    with pytest.raises(DataplaneError, match="exists"):
        a.dp.install(dup, None)
    stray = a.sa("out", 0x3000, os.urandom(20), policy=99)
    with pytest.raises(DataplaneError, match="invalid"):
        a.dp.install(n_in, stray)  # no rule has policy 99; n_in must not be live either
    pkt = ip4("10.1.0.1", "10.2.0.1")
    assert struct.unpack_from("!I", a.dp.protect(pkt), 20)[0] == 0x1000
    assert set(a.dp.sas) == {a_in, a_out}
    a.dp.install(n_in, None)  # n_in was not installed by the refused call
    with pytest.raises(DataplaneError, match="invalid"):
        a.dp.retire(stray)


def test_replace_is_make_before_break_and_retire_ends_the_old_inbound() -> None:
    a, b = pair()
    (a_in, a_out), (b_in, b_out) = child(a, b, 0x1000, 0x2000)
    b.dp.install(b_in, b_out)
    a.dp.install(a_in, a_out)
    in_flight = [a.dp.protect(ip4("10.1.0.1", "10.2.0.1", n)) for n in range(3)]
    (a2_in, a2_out), (b2_in, b2_out) = child(a, b, 0x1100, 0x2100)
    b.dp.replace(b2_in, b2_out)  # B rekeys: its new inbound is live before A switches
    a.dp.replace(a2_in, a2_out)
    new = a.dp.protect(ip4("10.1.0.1", "10.2.0.1", 9))
    assert struct.unpack_from("!I", new, 20)[0] == 0x1100
    assert b.dp.decap(new) == ip4("10.1.0.1", "10.2.0.1", 9)
    assert [b.dp.decap(p) for p in in_flight] == [ip4("10.1.0.1", "10.2.0.1", n)
                                                   for n in range(3)]  # old SA still opens
    b.dp.retire(b_in)
    assert reason(b.dp.decap, a.dp.encap(a_out, ip4("10.1.0.1", "10.2.0.1"))) == "unknown_spi"
    a.dp.retire(a_out)  # replaced: it serves no rule; only forgotten
    assert a_out not in a.dp.sas
    a.dp.retire(a2_out)
    assert reason(a.dp.protect, ip4("10.1.0.1", "10.2.0.1")) == "no_sa"
    assert [e.kind for e in a.dp.events()] == ["acquire"]  # at once: the rule lost its SA


def test_commit_after_install_carries_the_installed_sas() -> None:
    a, b = pair()
    (a_in, a_out), (b_in, b_out) = child(a, b, 0x1000, 0x2000)
    b.dp.install(b_in, b_out)
    a.dp.install(a_in, a_out)
    first = a.dp.protect(ip4("10.1.0.1", "10.2.0.1", 1))
    a.dp.add_rule(Rule.from_prefixes("10.5.0.0/16", "10.6.0.0/16", action="discard"))
    a.dp.commit()  # a full republish of A's set
    second = a.dp.protect(ip4("10.1.0.1", "10.2.0.1", 2))
    assert struct.unpack_from("!II", second, 20) == (0x1000, 2)  # same SA, seq carried on
    assert [b.dp.decap(p) for p in (first, second)] == [ip4("10.1.0.1", "10.2.0.1", n)
                                                         for n in (1, 2)]
    assert a.dp.decap(b.dp.protect(ip4("10.2.0.1", "10.1.0.1"))) == ip4("10.2.0.1", "10.1.0.1")


def test_changes_while_other_threads_run_packets() -> None:
    """Gateway A rekeys and retires its pair over and over while thread 1 protects on
    worker 1 and thread 2 decapsulates B's packets on worker 2."""
    a = Gateway(GW_A, GW_B, "10.1.0.0/16", "10.2.0.0/16", workers=3)
    b = Gateway(GW_B, GW_A, "10.2.0.0/16", "10.1.0.0/16")
    keys = {}  # spi -> key, for B's side of each of A's inbound SAs

    def b_out(spi: int):
        return b.sa("out", spi, keys[spi])

    stop = threading.Event()
    seen: dict[str, set[str]] = {"encap": set(), "decap": set()}
    counts = {"sealed": 0, "opened": 0}
    b_pkts: list[bytes] = []  # B's latest packets toward A's current inbound SA

    # Both loops yield the GIL once per batch: without it the main thread, which takes
    # and drops the GIL around each of its own data-plane calls, waited behind two
    # threads that only dropped it inside theirs, and this test took 30 s to 10 min on a
    # 2-core machine by how the scheduler happened to run them.
    def protect_loop() -> None:
        pkts = [ip4("10.1.0.1", "10.2.0.1", n) for n in range(32)]
        while not stop.is_set():
            time.sleep(0)  # hand over the GIL: see below
            for r in a.dp.encap_batch(pkts, worker=1):
                if isinstance(r, DropError):
                    seen["encap"].add(r.reason)
                else:
                    counts["sealed"] += 1

    def decap_loop() -> None:
        while not stop.is_set():
            time.sleep(0)
            batch = list(b_pkts[-32:])
            for r in a.dp.decap_batch(batch, worker=2):
                if isinstance(r, DropError):
                    seen["decap"].add(r.reason)
                else:
                    counts["opened"] += 1

    threads = [threading.Thread(target=protect_loop), threading.Thread(target=decap_loop)]
    for t in threads:
        t.start()
    try:
        live = None  # A's current (inbound, outbound) pair
        for i in range(300):
            if live is not None and i % 5 == 0:
                a.dp.retire(live[0])
                a.dp.retire(live[1])
                live = None
                continue
            spi_in = 0x10000 + i
            keys[spi_in] = os.urandom(20)
            new = (a.sa("in", spi_in, keys[spi_in]), a.sa("out", 0x20000 + i, os.urandom(20)))
            if live is None:
                a.dp.install(*new)
            else:
                a.dp.replace(*new)
                a.dp.retire(live[1])  # replaced: serves no rule any more
            b_pkts[:] = [b.dp.encap(b_out(spi_in), ip4("10.2.0.1", "10.1.0.1", n))
                         for n in range(32)]  # B now sends to the new inbound SA
            if live is not None:
                a.dp.retire(live[0])  # the old inbound, once nothing is in flight to it
            live = new
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert seen["encap"] <= {"no_sa"}, seen
    assert seen["decap"] <= {"unknown_spi", "replay_dup"}, seen
    assert counts["sealed"] > 0 and counts["opened"] > 0, counts
    assert a.dp.reclaim() == 0


def test_a_commit_after_replace_and_retire_republishes_what_is_live() -> None:
    """Dataplane's own record of rules and SAs (indexed per SA and per policy, so that a
    change does not walk them all) must follow every in-place change: a full republish
    from it sends exactly as the live set did."""
    a, b = pair()
    (a_in, a_out), (b_in, b_out) = child(a, b, 0x1000, 0x2000)
    b.dp.install(b_in, b_out)
    a.dp.install(a_in, a_out)
    a.dp.add_rule(Rule.from_prefixes("10.1.0.0/16", "10.3.0.0/16", policy=1))
    a.dp.commit()
    (a2_in, a2_out), (b2_in, b2_out) = child(a, b, 0x1100, 0x2100)
    b.dp.replace(b2_in, b2_out)
    a.dp.replace(a2_in, a2_out)  # both rules of policy 1 switch, the one added later too
    a.dp.retire(a_out)
    a.dp.retire(a_in)
    a.dp.commit()  # republished from the record
    for dst in ("10.2.0.1", "10.3.0.1"):
        assert struct.unpack_from("!I", a.dp.protect(ip4("10.1.0.1", dst)), 20)[0] == 0x1100
    assert set(a.dp.sas) == {a2_in, a2_out}
    assert reason(a.dp.protect, ip4("10.7.0.1", "10.8.0.1")) == "no_sa"  # policy 2 untouched
    a.dp.retire(a2_out)
    a.dp.commit()
    for dst in ("10.2.0.1", "10.3.0.1"):
        assert reason(a.dp.protect, ip4("10.1.0.1", dst)) == "no_sa"
    assert set(a.dp.sas) == {a2_in}
