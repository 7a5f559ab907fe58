"""Sequence-number reservations: the data plane never sends past what was persisted, and a
restarted SA resumes above it, so no (key, sequence number) pair is ever sent twice."""

from __future__ import annotations

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
