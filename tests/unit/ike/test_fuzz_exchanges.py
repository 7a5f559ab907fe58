"""The exchanges fuzz target without atheris: every seed and every regression input
(tests/fuzz/regressions/exchanges, one per bug the campaigns found) runs clean through
the harness's oracle, and the oracle has teeth."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
sys.path.insert(0, str(FUZZ))

import exchange_victim as ev  # noqa: E402

from espd.ike import codec  # noqa: E402
from espd.ike.codec import NotifyType, ProtocolId  # noqa: E402

SEEDS = sorted((FUZZ / "corpus" / "exchanges").iterdir())
REGRESSIONS = sorted(p for p in (FUZZ / "regressions" / "exchanges").glob("*")
                     if p.suffix not in (".md", ".txt"))


def test_there_are_regression_inputs():
    assert REGRESSIONS  # (an empty folder is not in git: the glob above must not need it)


def test_there_are_seeds_of_every_kind():
    names = {p.name.split("-")[0] + "-" + p.name.split("-")[1] for p in SEEDS}
    assert {"ccsa-new", "ccsa-rekey", "info-delete", "charon-cert", "charon-psk"} <= names


@pytest.mark.parametrize("path", SEEDS + REGRESSIONS, ids=lambda p: p.name)
def test_input_runs_clean(path):
    ev.run_one(path.read_bytes())


def test_a_seed_reaches_the_handlers():
    victim = ev.Victim()
    try:
        for record in ev.records((FUZZ / "corpus" / "exchanges" / "ccsa-rekey").read_bytes()):
            victim.deliver(*record)
        assert victim.engine.counters["child_rekeys"] == 1
        assert len(victim.owner.live()) == 2
    finally:
        victim.close()


def test_the_oracle_catches_an_exception_in_a_handler(monkeypatch):
    from espd.ike.exchanges import informational

    def broken(*_args):
        raise KeyError("a handler bug")
    monkeypatch.setattr(informational, "on_request", broken)
    with pytest.raises(ev.OracleViolation, match="internal error"):
        ev.run_one(ev.record(1, 0, b""))


def test_the_oracle_catches_a_changed_sa_after_an_unauthenticated_message(monkeypatch):
    from espd.ike.engine.engine import IkeEngine

    real = IkeEngine._malformed

    def careless(self, remote, why):  # as if the engine acted on a clear message
        for sa in self.sas.values():
            sa.responses.expected_id += 1
        real(self, remote, why)
    monkeypatch.setattr(IkeEngine, "_malformed", careless)
    first, inner = codec.encode_chain([codec.Delete(ProtocolId.IKE)])
    with pytest.raises(ev.OracleViolation, match="unauthenticated"):
        ev.run_one(ev.record(1 | ev.RAW, first, inner))


def test_the_oracle_catches_a_response_to_the_wrong_message_id(monkeypatch):
    from espd.ike.engine.engine import IkeEngine

    monkeypatch.setattr(IkeEngine, "respond", ev.respond_off_by_one(IkeEngine.respond))
    first, inner = codec.encode_chain([codec.Notify(NotifyType.INITIAL_CONTACT)])
    with pytest.raises(ev.OracleViolation, match="message ID"):
        ev.run_one(ev.record(1, first, inner))


def test_the_oracle_catches_the_spi_reuse_bug_it_found(monkeypatch):
    """regressions/exchanges/child-sa-peer-spi-reused against the code before eb7637b."""
    from espd.ike.exchanges import child_setup

    monkeypatch.setattr(child_setup, "check_peer_spi", lambda sa, spi: None)
    data = (FUZZ / "regressions" / "exchanges" / "child-sa-peer-spi-reused").read_bytes()
    with pytest.raises(ev.OracleViolation, match="send with one SPI"):
        ev.run_one(data)
