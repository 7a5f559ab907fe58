"""The pending fuzz target without atheris: every seed and every regression input
(tests/fuzz/regressions/pending, one per bug the campaigns found) runs clean through the
harness's oracle, the victims are the states they claim and replay the same way, and the
oracle has teeth."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
sys.path.insert(0, str(FUZZ))

import exchange_victim as ev  # noqa: E402
import pending_victim as pv  # noqa: E402

from espd.ike.sa.ike_sa import IkeState  # noqa: E402

SEEDS = sorted((FUZZ / "corpus" / "pending").iterdir())
REGRESSIONS = sorted(p for p in (FUZZ / "regressions" / "pending").glob("*")
                     if p.suffix not in (".md", ".txt"))


def seed(name: str) -> bytes:
    return (FUZZ / "corpus" / "pending" / name).read_bytes()


def outcome(data: bytes):
    """(the victim's IKE SA state, Child SAs the owner holds) after the input."""
    kind, records = pv.records(data)
    victim = pv.Victim(kind)
    try:
        for record in records:
            victim.deliver(*record)
        return victim.sa.state, len(victim.owner.live())
    finally:
        victim.close()
        pv.forget_input()


def test_there_are_seeds_for_every_victim():
    kinds = {pv.records(p.read_bytes())[0].name for p in SEEDS}
    assert kinds == {kind.name for kind in pv.VICTIMS}


def test_there_are_regression_inputs():
    assert REGRESSIONS


@pytest.mark.parametrize("path", SEEDS + REGRESSIONS, ids=lambda p: p.name)
def test_input_runs_clean(path):
    pv.run_one(path.read_bytes())


@pytest.mark.parametrize("name", ["r-half-open-espd", "r-half-open-hybrid-espd",
                                  "r-half-open-fqdn-id", "i-init-sent-espd",
                                  "i-init-sent-hybrid-espd", "i-auth-sent-espd",
                                  "i-intermediate-sent-espd", "r-half-open-ppk-espd",
                                  "r-half-open-ppk-no-ppk-id", "i-auth-sent-ppk-espd",
                                  "i-auth-sent-ppk-unused"])
def test_espd_own_messages_bring_the_victim_up(name):
    """The success paths are reachable: IKE_AUTH completes (with the harness's AUTH
    for the fuzzed identity where the seed asks for it) and the first Child SA is in."""
    assert outcome(seed(name)) == (IkeState.ESTABLISHED, 1)


@pytest.mark.parametrize("name, live", [("i-child-espd", 2), ("i-child-hybrid-espd", 2),
                                        ("i-child-rekey-espd", 1),
                                        ("i-child-rekey-no_proposal_chosen", 1),
                                        ("i-delete-child-espd", 0)])
def test_the_initiators_exchanges_complete(name, live):
    assert outcome(seed(name)) == (IkeState.ESTABLISHED, live)


def test_victims_replay_the_same_state():
    for kind in pv.VICTIMS:
        states = []
        for _ in range(2):
            victim = pv.Victim(kind)
            try:
                sa = victim.sa
                states.append((sa.spis, sa.nonce_i, sa.nonce_r, sa.requests.next_id))
            finally:
                victim.close()
                pv.forget_input()
        assert states[0] == states[1], kind.name


def test_the_oracle_catches_a_child_sa_the_owner_keeps(monkeypatch):
    from espd.ike.engine.engine import IkeEngine

    real = IkeEngine.drop_child

    def forgetful(self, sa, child, reason):  # forgets the Child SA, not the owner's
        child.handle = None
        real(self, sa, child, reason)
    monkeypatch.setattr(IkeEngine, "drop_child", forgetful)
    with pytest.raises(pv.OracleViolation, match="owner holds Child SAs"):
        pv.run_one(seed("i-delete-child-espd"))


def test_the_oracle_catches_a_rekey_left_hanging(monkeypatch):
    """RFC 7296 2.8: a refused rekey leaves the old Child SA as it was."""
    from espd.ike.exchanges import create_child_sa

    monkeypatch.setattr(create_child_sa, "_child_failed", lambda *args: None)
    with pytest.raises(pv.OracleViolation, match="rekeying with no exchange in flight"):
        pv.run_one(seed("i-child-rekey-no_proposal_chosen"))


def test_the_oracle_catches_a_response_to_the_wrong_message_id(monkeypatch):
    from espd.ike.engine.engine import IkeEngine

    monkeypatch.setattr(IkeEngine, "respond", ev.respond_off_by_one(IkeEngine.respond))
    with pytest.raises(pv.OracleViolation, match="message ID"):
        pv.run_one(seed("r-half-open-espd"))


def test_the_oracle_catches_the_bug_it_found(monkeypatch):
    """regressions/pending/clear-init-response-ends-intermediate against the code before
    the fix: a response matched by message ID alone, whatever its exchange type."""
    from espd.ike.sa.windows import RequestWindow

    monkeypatch.setattr(RequestWindow, "matches", lambda self, message_id, _exchange:
                        self.outstanding is not None and
                        self.outstanding.message_id == message_id)
    data = (FUZZ / "regressions" / "pending" /
            "clear-init-response-ends-intermediate").read_bytes()
    with pytest.raises(pv.OracleViolation, match="in the clear changed"):
        pv.run_one(data)


def test_the_oracle_catches_wider_traffic_selectors_installed(monkeypatch):
    """RFC 7296 2.9: the responder may narrow, never widen (seed i-auth-wider-ts answers
    0.0.0.0/0 on both sides)."""
    from espd.ike.exchanges import child_setup

    assert outcome(seed("i-auth-wider-ts")) == (IkeState.ESTABLISHED, 0)  # refused
    monkeypatch.setattr(child_setup, "covers", lambda *_: True)
    monkeypatch.setattr(child_setup, "shared_selectors", lambda theirs, _ours: theirs)
    with pytest.raises(pv.OracleViolation, match="more than its crypto map entry"):
        pv.run_one(seed("i-auth-wider-ts"))


def test_the_ppk_victims_use_the_ppk_when_both_name_it():
    for name, used in (("r-half-open-ppk-espd", True), ("r-half-open-ppk-no-ppk-id", False),
                       ("i-auth-sent-ppk-espd", True), ("i-auth-sent-ppk-unused", False)):
        kind, records = pv.records(seed(name))
        victim = pv.Victim(kind)
        try:
            for record in records:
                victim.deliver(*record)
            assert victim.sa.ppk_used is used, name
        finally:
            victim.close()
            pv.forget_input()


@pytest.mark.parametrize("name", ["peer-delete-crosses-child-rekey-temporary-failure",
                                  "peer-delete-crosses-child-rekey-success"])
def test_the_oracle_catches_a_dropped_child_sa_brought_back(monkeypatch, name):
    """regressions/pending/peer-delete-crosses-child-rekey-* against the code before the
    fix: the answer to our rekey revived the Child SA the peer's DELETE had dropped."""
    from espd.ike.exchanges import create_child_sa

    monkeypatch.setattr(create_child_sa, "_deleted_meanwhile", lambda pending: False)
    data = (FUZZ / "regressions" / "pending" / name).read_bytes()
    with pytest.raises(pv.OracleViolation, match="dropped, is"):
        pv.run_one(data)


def test_a_successor_the_peer_made_anyway_stands():
    data = (FUZZ / "regressions" / "pending" /
            "peer-delete-crosses-child-rekey-success").read_bytes()
    assert outcome(data) == (IkeState.ESTABLISHED, 1)
