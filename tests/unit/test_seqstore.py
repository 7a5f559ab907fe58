"""Sequence-number reservations: the data plane never sends past what was persisted, and a
restarted SA resumes above it, so no (key, sequence number) pair is ever sent twice."""

from __future__ import annotations

import os
import struct

import pytest

from espd.dataplane import Dataplane, DropError
from espd.keying.sequence_store import SequenceStore, SequenceStoreError

KEY = bytes(range(36))
INNER = bytes.fromhex("45000020000000004011" "0000" "0a010001" "0a020001") + bytes(12)


def _out(dp: Dataplane):
    return dp.add_sa(spi=0x2000, direction="out", transform="esp-gcm 256", key=KEY,
                     local="192.0.2.1", peer="192.0.2.2")


def _seq(wire: bytes) -> int:
    return struct.unpack("!I", wire[24:28])[0]


def test_sa_stops_at_the_reserved_limit_and_asks_for_more():
    dp = Dataplane()
    sa = _out(dp)
    dp.reserve(sa, resume_after=100, limit=104, warn_at=102)
    sent = [_seq(dp.encap(sa, INNER)) for _ in range(4)]
    assert sent == [101, 102, 103, 104]
    assert [e.kind for e in dp.events()] == ["seq_reserve"]  # once, at 102
    with pytest.raises(DropError) as e:
        dp.encap(sa, INNER)
    assert e.value.reason == "seq_unreserved"
    assert dp.stats(sa)["drops"] == {"seq_unreserved": 1}
    dp.reserve(sa, resume_after=0, limit=200, warn_at=150)  # never moves back
    assert _seq(dp.encap(sa, INNER)) == 105


def test_reserve_refuses_inbound_sa_and_backwards_limits():
    dp = Dataplane()
    inb = dp.add_sa(spi=0x1000, direction="in", transform="esp-gcm 256", key=KEY,
                    local="192.0.2.1", peer="192.0.2.2")
    sa = _out(dp)
    with pytest.raises(Exception, match="invalid"):
        dp.reserve(inb, resume_after=0, limit=10, warn_at=5)
    with pytest.raises(Exception, match="invalid"):
        dp.reserve(sa, resume_after=10, limit=5, warn_at=5)


def test_store_roundtrip_is_durable_and_private(tmp_path):
    store = SequenceStore(str(tmp_path / "state"))
    assert store.last("192.0.2.2", 0x2000) == 0
    store.reserve("192.0.2.2", 0x2000, 1 << 24)
    again = SequenceStore(str(tmp_path / "state"))  # a restart
    assert again.last("192.0.2.2", 0x2000) == 1 << 24
    path = again.path("192.0.2.2", 0x2000)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert not list(path.parent.glob("*.tmp"))
    assert again.path("2001:db8::1", 1).name == "out-2001_db8__1-00000001"


def test_corrupt_reservation_is_an_error_not_a_zero(tmp_path):
    store = SequenceStore(str(tmp_path))
    store.path("192.0.2.2", 0x2000).write_text("garbage\n")
    with pytest.raises(SequenceStoreError, match="corrupt"):
        store.last("192.0.2.2", 0x2000)


def test_unwritable_state_dir_says_why(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SequenceStoreError, match="state_dir .* is not writable"):
        SequenceStore(str(blocker / "sub"))


def test_restart_resumes_above_the_reservation(tmp_path):
    """Two data plane lifetimes with the same key: every sequence number is new."""
    store = SequenceStore(str(tmp_path))
    seen: list[int] = []
    for _life in range(3):
        dp = Dataplane()
        sa = _out(dp)
        last = store.last("192.0.2.2", 0x2000)
        limit = last + 64
        store.reserve("192.0.2.2", 0x2000, limit)
        dp.reserve(sa, resume_after=last, limit=limit, warn_at=limit - 32)
        seen += [_seq(dp.encap(sa, INNER)) for _ in range(10)]  # then "kill -9"
    assert len(seen) == len(set(seen)) == 30
    assert seen[10] == 65 and seen[20] == 129


def test_a_stored_limit_never_goes_down(tmp_path):
    store = SequenceStore(str(tmp_path))
    assert store.reserve("192.0.2.2", 0x2000, 500) == 500
    assert store.reserve("192.0.2.2", 0x2000, 300) == 500  # the higher one stands
    assert store.last("192.0.2.2", 0x2000) == 500
    assert store.reserve("192.0.2.2", 0x2000, 700) == 700


def test_release_lowers_only_the_limit_this_process_wrote(tmp_path):
    store = SequenceStore(str(tmp_path))
    store.reserve("192.0.2.2", 0x2000, 1000)
    store.reserve("192.0.2.2", 0x2000, 2000)  # e.g. a successor raised it meanwhile
    assert not store.release("192.0.2.2", 0x2000, used=900, granted=1000)
    assert store.last("192.0.2.2", 0x2000) == 2000
    assert not store.release("192.0.2.2", 0x2000, used=2500, granted=2000)  # above: no
    assert store.release("192.0.2.2", 0x2000, used=1500, granted=2000)
    assert store.last("192.0.2.2", 0x2000) == 1500


def test_concurrent_writers_never_collide_or_lower_the_limit(tmp_path):
    """Two threads raising one SA's limit: no writer renames another's temporary file,
    none fails, and the highest limit asked for is what stays on disk."""
    import threading

    store = SequenceStore(str(tmp_path))
    errors: list[BaseException] = []

    def raise_limits(start: int) -> None:
        try:
            for limit in range(start, start + 400, 2):
                store.reserve("192.0.2.2", 0x2000, limit)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=raise_limits, args=(s,)) for s in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert store.last("192.0.2.2", 0x2000) == 400
    assert not list(store.dir.glob("*.tmp")) and not list(store.dir.glob(".*.tmp"))


def test_temporary_names_are_unique_per_write(tmp_path, monkeypatch):
    store = SequenceStore(str(tmp_path))
    names: list[str] = []
    real_open = os.open

    def spy(path, *args, **kwargs):
        names.append(os.path.basename(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    store.reserve("192.0.2.2", 0x2000, 10)
    store.reserve("192.0.2.2", 0x2000, 20)
    tmp = [n for n in names if n.endswith(".tmp")]
    assert len(tmp) == 2 and len(set(tmp)) == 2, names
