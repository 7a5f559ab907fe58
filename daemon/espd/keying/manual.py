"""Manual keys: the config's crypto map entries and their keys, a client of the SA owner.

A plan (policy/plan.py) becomes one owner Change: an SA whose spec did not change stays
the same C object (sequence number, replay window and counters carry over); a new spec
gets a new SA (an outbound one with the same peer, SPI and key as a live one takes over
its sequence numbers: the owner's handover); an SA no longer planned goes. The rules are
the plan's, and each entry's PROTECT rules send through the entry's outbound SA. Entries
with rules but no keys (negotiated ones) keep whatever Child SA IKE installed for them.

Like every caller of the owner, this runs on the event loop's thread.
"""

from __future__ import annotations

from espd.keying.owner import Change, SaOwner
from espd.policy.plan import Plan

ORIGIN = "manual"


class ManualKeying:
    def __init__(self, owner: SaOwner) -> None:
        self.owner = owner

    def prepare(self, plan: Plan) -> Change:
        """The change that makes `plan` live, built but not committed: the caller commits
        it (SaOwner.commit) or aborts it (SaOwner.abort). The plan's keys stay the
        caller's to wipe (policy.plan.wipe_keys), whatever happens."""
        owner = self.owner
        change = owner.begin()
        try:
            live = {installed.spec: installed for installed in owner.installed(ORIGIN)}
            planned = set(plan.sas)
            for spec, installed in live.items():
                if spec not in planned:
                    change.remove(installed)
            for spec in plan.sas:
                installed = live.get(spec) or change.add(spec, ORIGIN)
                if spec.direction == "out":
                    change.bind((spec.map_name, spec.seq), installed)
            change.set_rules(plan.rules)
        except BaseException:
            owner.abort(change)
            raise
        return change

    def apply(self, plan: Plan) -> None:
        """Prepare and commit `plan` in one step (start-up, tools and tests)."""
        self.owner.commit(self.prepare(plan))
