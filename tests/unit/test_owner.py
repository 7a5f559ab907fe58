"""The SA owner (keying/owner.py) and manual keys as its client (keying/manual.py), on a
real data plane without workers (so Python may push packets through it):

- manual plans: unchanged SAs stay the same C object; a settings-only change hands the
  outbound sequence numbers over, and no reservation event lifts the old SA's cap; an
  aborted change gives the cap back; a change from another thread is refused;
- IKE's Child SAs: install into an empty slot, rekey make-before-break, retire (fail
  closed), usage, and expiry events delivered to subscribers;
- snapshots are immutable and replaced whole;
- an SA's identity is its crypto map entry, not the entry's place: inserting and removing
  other entries keeps a manual SA the same C object (its numbers go on), and keeps a Child
  SA bound to its own entry's rules (inbound selector check, retire).
"""

from __future__ import annotations

import dataclasses
import os
import struct
import threading
import time

import pytest
from support.packets import IPPROTO_UDP, ipv4, udp

from espd.config.toml import parse_toml
from espd.dataplane import Dataplane, DropError, Lifetime, Rule
from espd.keying.manual import ManualKeying
from espd.keying.owner import (
    HANDOVER,
    ChildSaKeys,
    OwnerError,
    OwnerThreadError,
    SaOwner,
)
from espd.keying.sequence_store import SequenceStore
from espd.policy.ids import PolicyIds
from espd.policy.plan import Plan, RuleSpec, build_plan, describe_changes, wipe_keys

KEY_OUT = "061f6eefba9eebfa62c0290523a528100efd8ee210954464d454b7798f970e12af413cff"
KEY_IN = "29d5941440a2c92fc65b64b0d1b882064454ddadff4acea643ec22054982830cbb883fca"
BLOCK = 64

CONFIG = f"""
[daemon]
local = "192.0.2.1"

[access_list.LAN]
rules = ["permit ip 10.1.0.0/16 10.2.0.0/16"]

[transform_set.GCM]
transforms = ["esp-gcm 256"]

[[crypto_map]]
name = "VPN"
seq = 10
peer = "192.0.2.2"
match_address = "LAN"
transform_set = "GCM"
replay_window = WINDOW
inbound = {{ spi = 0x1001, key = "{KEY_IN}" }}
outbound = {{ spi = 0x2001, key = "{KEY_OUT}" }}
"""


def inner(src: str = "10.1.0.10", dst: str = "10.2.0.10") -> bytes:
    return ipv4(src, dst, IPPROTO_UDP, udp(1234, 80, bytes(32)), ident=0)


def spi_seq(wire: bytes) -> tuple[int, int]:
    return struct.unpack("!II", wire[20:28])


def plan(window: int = 1024) -> Plan:
    return build_plan(parse_toml(CONFIG.replace("WINDOW", str(window))))


@pytest.fixture
def owner(tmp_path):
    return SaOwner(Dataplane(), SequenceStore(str(tmp_path)), reserve_block=BLOCK)


def apply(owner: SaOwner, p: Plan) -> None:
    try:
        ManualKeying(owner).apply(p)
    finally:
        wipe_keys(p)


def out_sa(owner: SaOwner):
    (view,) = owner.snapshot.outbound()
    return view.sa


def send(owner: SaOwner, n: int) -> list[int]:
    """Protect n packets through the live rules, handling events between them as the
    loop would; the sequence numbers sent (a drop ends the run)."""
    seqs = []
    for _ in range(n):
        try:
            seqs.append(spi_seq(owner.dp.protect(inner()))[1])
        except DropError:
            break
        owner.drain_events()
    return seqs


# --- manual keys ---------------------------------------------------------------------------

def test_manual_plan_runs_and_an_unchanged_reload_keeps_the_sa(owner):
    apply(owner, plan())
    first = owner.snapshot
    assert first.generation == 1 and len(first.sas) == 2
    assert send(owner, 3) == [1, 2, 3]
    apply(owner, plan())
    assert out_sa(owner) is first.outbound()[0].sa  # the same C object: state carries over
    assert send(owner, 1) == [4]
    assert owner.snapshot is not first and first.generation == 1  # replaced, not mutated


def test_reservations_are_extended_by_events_and_persisted_first(owner):
    apply(owner, plan())
    seqs = send(owner, 5 * BLOCK)
    assert seqs == list(range(1, 5 * BLOCK + 1))
    stored = owner.seqstore.last("192.0.2.2", 0x2001)
    assert stored >= 5 * BLOCK  # never behind what was sent


def test_a_reservation_that_failed_to_persist_is_retried_until_it_persists(owner,
                                                                          monkeypatch):
    apply(owner, plan())
    real, calls = owner.seqstore.reserve, []

    def full_disk(peer, spi, limit):  # as root a read-only directory still takes writes
        calls.append(limit)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(owner.seqstore, "reserve", full_disk)
    assert send(owner, 3 * BLOCK) == list(range(1, BLOCK + 1))  # stops at what persisted
    owner.retry_reservations()
    assert len(calls) == 2 and send(owner, 1) == []  # retried, failed again: still stopped
    monkeypatch.setattr(owner.seqstore, "reserve", real)
    owner.retry_reservations()
    assert send(owner, BLOCK) == list(range(BLOCK + 1, 2 * BLOCK + 1))
    monkeypatch.setattr(owner.seqstore, "reserve", full_disk)
    owner.retry_reservations()
    assert len(calls) == 2  # persisted: nothing left to retry


def test_handover_caps_the_old_sa_and_events_cannot_lift_the_cap(owner):
    apply(owner, plan(1024))
    old = out_sa(owner)
    assert send(owner, 10) == list(range(1, 11))
    new_plan = plan(2048)  # same SPI and key, other settings: a handover
    change = ManualKeying(owner).prepare(new_plan)
    cap = min(10 + HANDOVER, BLOCK)
    # until the commit the old SA runs on, up to its cap, and asks for more at the cap
    sent_old = [spi_seq(owner.dp.encap(old, inner()))[1] for _ in range(cap - 10)]
    events = owner.dp.events()
    assert "seq_reserve" in [e.kind for e in events]  # raised at the cap
    for event in events:
        owner._event(event)  # handled as drain_events would
    with pytest.raises(DropError, match="seq_unreserved"):
        owner.dp.encap(old, inner())  # still capped: the event did not lift it
    owner.commit(change)
    wipe_keys(new_plan)
    assert out_sa(owner) is not old
    sent_new = send(owner, 3)
    assert sent_new == [cap + 1, cap + 2, cap + 3]
    assert not set(sent_old) & set(sent_new)


def test_a_queued_reservation_event_for_a_capped_sa_is_ignored(owner):
    apply(owner, plan(1024))
    old = out_sa(owner)
    send(owner, BLOCK // 2 - 1)
    owner.dp.encap(old, inner())  # crosses warn_at: a seq_reserve event is now queued
    new_plan = plan(2048)
    change = ManualKeying(owner).prepare(new_plan)  # caps the old SA at its limit
    owner.drain_events()  # the queued event arrives after the cap
    sent_old = []
    while True:
        try:
            sent_old.append(spi_seq(owner.dp.encap(old, inner()))[1])
        except DropError:
            break
    owner.commit(change)
    wipe_keys(new_plan)
    assert max(sent_old) == BLOCK  # the old limit, not lifted
    assert send(owner, 1) == [BLOCK + 1]


def test_abort_gives_the_cap_back(owner):
    apply(owner, plan(1024))
    old = out_sa(owner)
    new_plan = plan(2048)
    change = ManualKeying(owner).prepare(new_plan)
    owner.abort(change)
    wipe_keys(new_plan)
    assert out_sa(owner) is old
    assert len(send(owner, 3 * BLOCK)) == 3 * BLOCK  # reservations extend again


def test_changes_from_another_thread_are_refused(owner):
    apply(owner, plan())
    caught: list[BaseException] = []

    def other() -> None:
        try:
            owner.drain_events()
        except BaseException as e:  # checked below
            caught.append(e)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert len(caught) == 1 and isinstance(caught[0], OwnerThreadError), caught


def test_a_failed_commit_leaves_the_live_tables(owner, monkeypatch):
    apply(owner, plan(1024))
    old = out_sa(owner)
    send(owner, 3)
    new_plan = plan(2048)
    change = ManualKeying(owner).prepare(new_plan)

    def refuse(*args, **kwargs):
        raise RuntimeError("injected publish failure")

    monkeypatch.setattr(owner.dp, "publish", refuse)
    with pytest.raises(RuntimeError):
        owner.commit(change)
    monkeypatch.undo()
    wipe_keys(new_plan)
    assert out_sa(owner) is old and owner.snapshot.generation == 1
    assert len(send(owner, 2 * BLOCK)) == 2 * BLOCK  # aborted: the cap was given back


# --- IKE Child SAs -------------------------------------------------------------------------

IKE_ENTRY = ("IKE", 10)


def ike_plan() -> Plan:
    rule = Rule.from_prefixes("10.1.0.0/16", "10.2.0.0/16", policy=7)
    return Plan(sas=(), rules=(RuleSpec(rule, "IKE", 10, "LAN", 0, "permit ip any any", True),),
                routes=("10.2.0.0/16",), unroutable=())


def child_keys(spi_in: int, spi_out: int, **extra) -> ChildSaKeys:
    fields = dict(
        entry=IKE_ENTRY, ike_sa="ike-1", transform="esp-gcm 256", mode="tunnel", encap="esp",
        local="192.0.2.1", peer="192.0.2.2", spi_in=spi_in, key_in=bytearray(36),
        auth_key_in=None, spi_out=spi_out, key_out=bytearray(range(36)), auth_key_out=None)
    return ChildSaKeys(**{**fields, **extra})


def peer_of(owner: SaOwner, spi_in: int, spi_out: int) -> tuple[Dataplane, object]:
    """The other end: its outbound SA (our inbound) and our outbound as its inbound."""
    dp = Dataplane()
    out = dp.add_sa(spi=spi_in, direction="out", transform="esp-gcm 256", key=bytes(36),
                    local="192.0.2.2", peer="192.0.2.1", policy=7)
    dp.add_sa(spi=spi_out, direction="in", transform="esp-gcm 256", key=bytes(range(36)),
              local="192.0.2.2", peer="192.0.2.1", policy=7)
    dp.add_rule(Rule.from_prefixes("10.2.0.0/16", "10.1.0.0/16", policy=7), out)
    dp.reserve(out, resume_after=0, limit=1000, warn_at=900)
    return dp, out


def test_a_child_fills_an_empty_slot_and_its_keys_are_wiped(owner):
    apply(owner, ike_plan())
    with pytest.raises(DropError, match="no_sa"):
        owner.dp.protect(inner())  # no child yet: fail closed
    keys = child_keys(0x5001, 0x6001)
    handle = owner.install_child(keys)
    assert keys.key_out == bytearray(36) and keys.key_in == bytearray(36)  # wiped
    assert spi_seq(owner.dp.protect(inner())) == (0x6001, 1)
    peer, peer_out = peer_of(owner, 0x5001, 0x6001)
    assert peer.decap(owner.dp.protect(inner()))  # the peer opens what we seal
    assert owner.dp.decap(peer.encap(peer_out, inner("10.2.0.10", "10.1.0.10")))
    usage = owner.child_usage(handle)
    assert usage["packets_out"] == 2 and usage["packets_in"] == 1
    assert usage["last_in"] is not None
    assert {v.origin for v in owner.snapshot.sas} == {"ike"}


def test_rekey_is_make_before_break_and_retire_fails_closed(owner):
    apply(owner, ike_plan())
    old = owner.install_child(child_keys(0x5001, 0x6001))
    peer, peer_old_out = peer_of(owner, 0x5001, 0x6001)
    new = owner.rekey_child(old, child_keys(0x5002, 0x6002))
    assert spi_seq(owner.dp.protect(inner()))[0] == 0x6002  # outbound switched
    back = inner("10.2.0.10", "10.1.0.10")
    assert owner.dp.decap(peer.encap(peer_old_out, back))  # old inbound still accepts
    owner.retire_child(old)
    with pytest.raises(DropError, match="unknown_spi"):
        owner.dp.decap(peer.encap(peer_old_out, back))
    assert spi_seq(owner.dp.protect(inner()))[0] == 0x6002
    owner.retire_child(new)
    with pytest.raises(DropError, match="no_sa"):
        owner.dp.protect(inner())  # the slot is empty again
    assert owner.snapshot.sas == ()


def test_a_manual_entry_takes_no_child(owner):
    apply(owner, plan())
    keys = child_keys(0x5001, 0x6001)
    keys = ChildSaKeys(**{**keys.__dict__, "entry": ("VPN", 10)})
    with pytest.raises(OwnerError, match="manually keyed"):
        owner.install_child(keys)
    assert keys.key_out == bytearray(36)  # wiped even when refused
    with pytest.raises(OwnerError, match="has no rules"):
        owner.install_child(ChildSaKeys(**{**keys.__dict__, "entry": ("NONE", 1)}))


def test_expiry_events_reach_subscribers_on_the_loop(owner):
    apply(owner, ike_plan())
    heard: list[tuple] = []

    class Client:
        def on_hard_expired(self, handle):
            heard.append(("hard", handle))

        def on_soft_expired(self, handle, what):
            heard.append(("soft", handle, what))

    owner.subscribe(Client())
    handle = owner.install_child(child_keys(0x5001, 0x6001, hard=Lifetime(packets=4),
                                            soft=Lifetime(packets=2)))
    sent = send(owner, 6)
    assert sent == [1, 2, 3, 4]
    assert ("soft", handle, "lifetime") in heard and ("hard", handle) in heard


# --- Python packets and running workers ----------------------------------------------------

def test_python_packets_are_refused_while_workers_run():
    """Worker slot 0 has one thread: while the C workers run, Python may not push
    packets through it (it would share that worker's epoch and OpenSSL contexts)."""
    from espd.dataplane import DataplaneError

    dp = Dataplane(1)
    sa = dp.add_sa(spi=0x2000, direction="out", transform="esp-gcm 256", key=bytes(36),
                   local="192.0.2.1", peer="192.0.2.2")
    dp.reserve(sa, resume_after=0, limit=100, warn_at=50)
    assert dp.encap(sa, inner())
    quiet, unused = os.pipe()  # a "TUN queue" nobody writes to
    try:
        dp.start_workers([quiet])
        try:
            with pytest.raises(DataplaneError, match="share worker slot 0"):
                dp.encap(sa, inner())
            with pytest.raises(DataplaneError, match="stop the workers first"):
                dp.decap_batch([b"\0" * 64])
        finally:
            dp.stop_workers()
        assert spi_seq(dp.encap(sa, inner())) == (0x2000, 2)
    finally:
        os.close(quiet)
        os.close(unused)


def test_an_acquire_names_the_entry_to_subscribers(owner):
    apply(owner, ike_plan())
    heard: list[tuple] = []

    class Client:
        def on_acquire(self, entry, src, dst, proto, sport, dport):
            heard.append((entry, src, dst, proto, sport, dport))

    owner.subscribe(Client())
    with pytest.raises(DropError, match="no_sa"):
        owner.dp.protect(inner())
    owner.drain_events()
    assert heard == [(IKE_ENTRY, "10.1.0.10", "10.2.0.10", 17, 1234, 80)]


def test_child_changes_never_republish_the_table_set(owner, monkeypatch):
    """install, rekey and retire change the live set in place (Dataplane.install, replace,
    retire): a full publish would cost O(table) per Child SA change."""
    apply(owner, ike_plan())

    def no_publish(*args, **kwargs):
        raise AssertionError("a Child SA change republished the whole table set")

    monkeypatch.setattr(owner.dp, "publish", no_publish)
    old = owner.install_child(child_keys(0x5001, 0x6001))
    assert spi_seq(owner.dp.protect(inner()))[0] == 0x6001
    new = owner.rekey_child(old, child_keys(0x5002, 0x6002))
    assert spi_seq(owner.dp.protect(inner()))[0] == 0x6002
    owner.retire_child(old)
    owner.retire_child(new)
    with pytest.raises(DropError, match="no_sa"):
        owner.dp.protect(inner())
    assert owner.snapshot.sas == ()


# --- the rekey responder's outbound switch (RFC 7296 2.8) ----------------------------------

def test_a_rekey_responder_keeps_sending_on_the_old_sa_until_the_delete(owner):
    """switch=False: the new inbound SA is live at once, but the rules send on the old
    outbound SA (the initiator may not have the new inbound SA yet); the old SA's retire
    (the peer's DELETE) moves them to the successor, never through an empty slot."""
    apply(owner, ike_plan())
    old = owner.install_child(child_keys(0x5001, 0x6001))
    peer, _ = peer_of(owner, 0x5001, 0x6001)
    new = owner.rekey_child(old, child_keys(0x5002, 0x6002), switch=False)
    assert spi_seq(owner.dp.protect(inner()))[0] == 0x6001  # not switched yet
    peer_new = peer.add_sa(spi=0x5002, direction="out", transform="esp-gcm 256",
                           key=bytes(36), local="192.0.2.2", peer="192.0.2.1", policy=8)
    peer.reserve(peer_new, resume_after=0, limit=1000, warn_at=900)
    peer.commit()
    assert owner.dp.decap(peer.encap(peer_new, inner("10.2.0.10", "10.1.0.10")))  # live
    owner.retire_child(old)  # the DELETE of the old SA
    assert spi_seq(owner.dp.protect(inner()))[0] == 0x6002
    assert [v.spec.spi for v in owner.snapshot.outbound()] == [0x6002]
    owner.retire_child(new)
    with pytest.raises(DropError, match="no_sa"):
        owner.dp.protect(inner())


def test_a_pending_switch_happens_on_traffic_or_at_the_fallback(owner, monkeypatch):
    from espd.keying import owner as owner_module

    apply(owner, ike_plan())
    old = owner.install_child(child_keys(0x5001, 0x6001))
    peer, _ = peer_of(owner, 0x5001, 0x6001)
    owner.rekey_child(old, child_keys(0x5002, 0x6002), switch=False)
    owner.housekeeping()  # no sign yet: stays on the old SA
    assert spi_seq(owner.dp.protect(inner()))[0] == 0x6001
    peer_new = peer.add_sa(spi=0x5002, direction="out", transform="esp-gcm 256",
                           key=bytes(36), local="192.0.2.2", peer="192.0.2.1", policy=8)
    peer.reserve(peer_new, resume_after=0, limit=1000, warn_at=900)
    peer.commit()
    owner.dp.decap(peer.encap(peer_new, inner("10.2.0.10", "10.1.0.10")))
    owner.housekeeping()  # the peer sent on the new SA: it has it
    assert spi_seq(owner.dp.protect(inner()))[0] == 0x6002

    second = owner.rekey_child(old, child_keys(0x5003, 0x6003), switch=False)
    owner.housekeeping()
    assert spi_seq(owner.dp.protect(inner()))[0] == 0x6002
    clock = time.monotonic() + owner_module.SWITCH_FALLBACK + 1
    monkeypatch.setattr(owner_module.time, "monotonic", lambda: clock)
    owner.housekeeping()  # due, but `old` no longer holds the slot: never taken back
    assert spi_seq(owner.dp.protect(inner()))[0] == 0x6002
    assert owner.switch_child(second) is False


def test_the_fallback_switches_a_silent_peer_and_a_lingering_inbound_retires_later(
        owner, monkeypatch):
    from espd.keying import owner as owner_module

    apply(owner, ike_plan())
    old = owner.install_child(child_keys(0x5001, 0x6001))
    peer, peer_old_out = peer_of(owner, 0x5001, 0x6001)
    owner.rekey_child(old, child_keys(0x5002, 0x6002), switch=False)
    start = time.monotonic()
    monkeypatch.setattr(owner_module.time, "monotonic",
                        lambda: start + owner_module.SWITCH_FALLBACK + 1)
    owner.housekeeping()
    assert spi_seq(owner.dp.protect(inner()))[0] == 0x6002
    owner.retire_child(old, linger=2.0)  # serves no rule: its inbound lingers
    back = inner("10.2.0.10", "10.1.0.10")
    assert owner.dp.decap(peer.encap(peer_old_out, back))
    monkeypatch.setattr(owner_module.time, "monotonic",
                        lambda: start + owner_module.SWITCH_FALLBACK + 4)
    owner.housekeeping()
    with pytest.raises(DropError, match="unknown_spi"):
        owner.dp.decap(peer.encap(peer_old_out, back))
    owner.retire_child(old)  # a second retire is a no-op


def test_a_pair_still_holding_the_slot_never_lingers(owner):
    apply(owner, ike_plan())
    handle = owner.install_child(child_keys(0x5001, 0x6001))
    owner.retire_child(handle, linger=5.0)
    with pytest.raises(DropError, match="no_sa"):
        owner.dp.protect(inner())  # fail closed at once
    assert owner.snapshot.sas == ()


def test_a_successor_retired_before_its_switch_leaves_the_old_sa_sending(owner):
    """The IKE SA goes while a rekey responder waits: its never-bound outbound SA leaves
    without a data-plane call; the old pair keeps the slot until it is retired too."""
    apply(owner, ike_plan())
    old = owner.install_child(child_keys(0x5001, 0x6001))
    new = owner.rekey_child(old, child_keys(0x5002, 0x6002), switch=False)
    owner.retire_child(new)
    assert spi_seq(owner.dp.protect(inner()))[0] == 0x6001
    assert owner.switch_child(new) is False
    owner.retire_child(old)
    with pytest.raises(DropError, match="no_sa"):
        owner.dp.protect(inner())
    assert owner.snapshot.sas == ()


def test_an_ike_child_sa_persists_nothing_and_never_waits_for_a_reservation(owner, tmp_path):
    """Rule 4: a negotiated Child SA's keys are new and die with the process, so its
    sequence space is granted whole: no reservation file (one per rekey would pile up in
    state_dir), no fsync per Child SA, no seq_reserve round trips."""
    apply(owner, ike_plan())
    owner.install_child(child_keys(0x5001, 0x6001))
    assert send(owner, 3 * BLOCK) == list(range(1, 3 * BLOCK + 1))
    assert list(tmp_path.rglob("*6001*")) == []
    assert not owner.seqstore.path("192.0.2.2", 0x6001).exists()
    owner.record_last_used()  # a clean stop writes nothing for it either
    assert not owner.seqstore.path("192.0.2.2", 0x6001).exists()


# --- identity across reloads: the entry, not its place (issue 10, item 5) -----------------

def other_key(seq: int, direction: str) -> str:
    return f"{seq:02x}{'a' if direction == 'in' else 'b'}c" * 18  # fixed per SA: unchanged


def inserted(seq: int, keying: str, prefix: str = "") -> str:
    """Entry VPN `seq` (5 sorts before VPN 10) for `prefix`, by default one nothing sends to."""
    keys = (f'transform_set = "GCM"\n'
            f'inbound = {{ spi = 0x{0x1000 + seq:x}, key = "{other_key(seq, "in")}" }}\n'
            f'outbound = {{ spi = 0x{0x2000 + seq:x}, key = "{other_key(seq, "out")}" }}'
            if keying == "manual" else 'keying = "ike"\ntransform_sets = ["GCM"]')
    return f"""
[access_list.OTHER{seq}]
rules = ["permit ip 10.1.0.0/16 {prefix or f'10.{seq}.0.0/16'}"]

[[crypto_map]]
name = "VPN"
seq = {seq}
peer = "192.0.2.2"
match_address = "OTHER{seq}"
{keys}
"""


def sa_of(owner: SaOwner, seq: int, direction: str):
    (view,) = [v for v in owner.snapshot.sas
               if (v.spec.seq, v.spec.direction) == (seq, direction)]
    return view.sa


def test_an_unchanged_sa_keeps_its_state_wherever_entries_are_inserted(owner):
    ids = PolicyIds()  # the daemon's, across its reloads
    base = CONFIG.replace("WINDOW", "1024")
    configs = [base, base + inserted(5, "manual"),
               base + inserted(5, "manual") + inserted(7, "manual"), base + inserted(7, "manual"),
               base]
    apply(owner, build_plan(parse_toml(base), ids))
    sa_out, sa_in = sa_of(owner, 10, "out"), sa_of(owner, 10, "in")
    sent = send(owner, 3)
    for before, after in zip(configs, configs[1:], strict=False):
        old, new = (build_plan(parse_toml(text), ids) for text in (before, after))
        changes = describe_changes(old, new)
        wipe_keys(old)
        assert not any("VPN 10" in line for line in changes), changes
        apply(owner, new)
        assert sa_of(owner, 10, "out") is sa_out and sa_of(owner, 10, "in") is sa_in
        sent += send(owner, 2)
    assert sent == list(range(1, 12))  # the very next numbers: no handover skip
    assert owner.dp.stats(sa_out)["packets"] == 11


IKE_CONFIG = CONFIG.split("[[crypto_map]]")[0] + """
[ike]
proposals = ["aes256gcm16-prfsha384-x25519"]

[ike_peer.gwb]
address = "192.0.2.2"
psk = "not-a-secret-0123456789"
""" + inserted(10, "ike", "10.2.0.0/16")  # VPN 10 keyed by IKE, for what inner() sends


def test_a_child_sa_keeps_its_entry_when_an_entry_is_inserted_before_it(owner):
    """The Child SA's inbound SA checks inner packets against its own entry's rules, and
    its outbound SA is found by its entry's rules, after VPN 5 took VPN 10's old place."""
    ids = PolicyIds()
    apply(owner, build_plan(parse_toml(IKE_CONFIG), ids))
    keys = child_keys(0x5001, 0x6001)
    handle = owner.install_child(dataclasses.replace(keys, entry=("VPN", 10)))
    peer, peer_out = peer_of(owner, 0x5001, 0x6001)
    back = inner("10.2.0.10", "10.1.0.10")
    assert owner.dp.decap(peer.encap(peer_out, back))
    apply(owner, build_plan(parse_toml(IKE_CONFIG + inserted(5, "ike")), ids))
    assert owner.dp.decap(peer.encap(peer_out, back))  # still its own entry's selectors
    assert spi_seq(owner.dp.protect(inner())) == (0x6001, 1)
    owner.retire_child(handle)  # its rules are found by its policy: the slot empties
    with pytest.raises(DropError, match="no_sa"):
        owner.dp.protect(inner())
    assert owner.snapshot.sas == ()


def test_an_acquire_queued_before_a_reload_names_its_own_entry(owner):
    """The event names rule 0 of the old tables; after VPN 5 is inserted, rule 0 is VPN
    5's: the entry comes from the event's policy id, which still names VPN 10."""
    ids = PolicyIds()
    apply(owner, build_plan(parse_toml(IKE_CONFIG), ids))
    heard: list[tuple] = []

    class Client:
        def on_acquire(self, entry, *selector):
            heard.append(entry)

    owner.subscribe(Client())
    with pytest.raises(DropError, match="no_sa"):
        owner.dp.protect(inner())  # queued, not yet drained
    apply(owner, build_plan(parse_toml(IKE_CONFIG + inserted(5, "ike")), ids))
    owner.drain_events()
    assert heard == [("VPN", 10)]


# --- NAT: keepalives and following a peer (RFC 3948, RFC 7296 2.23) --------------------------

def test_keepalives_go_to_manual_udp_peers_and_to_ike_peers_only_behind_a_nat(owner):
    apply(owner, build_plan(parse_toml(CONFIG.replace("WINDOW", "64").replace(
        'transform_set = "GCM"', 'transform_set = "GCM"\nencapsulation = "udp"'))))
    assert [v.keepalive for v in owner.snapshot.outbound()] == [True]
    apply(owner, ike_plan())
    owner.install_child(child_keys(0x5001, 0x6001, encap="udp"))
    assert [v.keepalive for v in owner.snapshot.outbound()] == [False]  # not behind a NAT
    owner.install_child(child_keys(0x5002, 0x6002, encap="udp", nat_keepalive=True))
    assert [v.keepalive for v in owner.snapshot.sas] == [False, False, False, True]


def test_move_child_moves_both_sas_and_what_readers_see(owner):
    apply(owner, ike_plan())
    handle = owner.install_child(child_keys(0x5001, 0x6001, encap="udp", remote_port=4500,
                                            nat_detected=True, follow_peer=True))
    generation = owner.snapshot.generation
    assert owner.move_child(handle, "192.0.2.2", 40000)
    assert not owner.move_child(handle, "192.0.2.2", 40000)  # there already: no change
    assert owner.snapshot.generation == generation + 1
    assert {(v.spec.peer, v.ports[1]) for v in owner.snapshot.sas} == {("192.0.2.2", 40000)}
    assert {owner.dp.remote(v.sa) for v in owner.snapshot.sas} == {("192.0.2.2", 40000)}
    wire = owner.dp.protect(inner())
    assert struct.unpack("!H", wire[22:24])[0] == 40000
    assert [v.spec.follow_peer for v in owner.snapshot.sas
            if v.spec.direction == "in"] == [True]
    owner.retire_child(handle)  # the records moved with it: retiring still finds them
    assert owner.snapshot.sas == ()
