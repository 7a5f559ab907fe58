"""Policy ids (policy/ids.py): an entry's number for the data plane is its own for the life
of the PolicyIds, not its place in the SPD (build_plan with one: tests/unit/test_owner.py).

- an entry keeps its id whatever is asked for around it, and when it returns;
- a new entry never gets an id given before; 0 is never given;
- a copy gives the original nothing (plan_diff's preview);
- without a PolicyIds, build_plan numbers the entries 1, 2, ... in SPD order.
"""

from __future__ import annotations

from espd.config.toml import parse_toml
from espd.policy.ids import PolicyIds
from espd.policy.plan import build_plan, wipe_keys


def lab(ids: PolicyIds, *seqs: int) -> list[int]:
    return [ids.of(("LAB", seq)) for seq in seqs]


def test_an_entry_keeps_its_id_and_new_entries_get_new_ones():
    ids = PolicyIds()
    assert lab(ids, 10, 20) == [1, 2]
    assert lab(ids, 5, 10, 15, 20) == [3, 1, 4, 2]  # inserted before and between
    assert lab(ids, 20) == [2]  # the others removed
    assert lab(ids, 5, 10, 20, 30) == [3, 1, 2, 5]  # 10 came back; 30 is new
    assert ids.of(("OTHER", 10)) == 6  # the map name is part of the entry
    assert 0 not in lab(ids, 5, 10, 15, 20, 30)


def test_a_copy_gives_the_original_nothing():
    ids = PolicyIds()
    lab(ids, 10)
    preview = ids.copy()
    assert lab(preview, 5, 10) == [2, 1]
    assert lab(ids, 7, 10) == [2, 1]  # 2 was only the copy's


def test_without_ids_build_plan_numbers_entries_in_spd_order():
    maps = "".join(f"""
[[crypto_map]]
name = "LAB"
seq = {seq}
keying = "ike"
peer = "192.0.2.2"
match_address = "LAN"
transform_sets = ["GCM"]
""" for seq in (20, 5, 10))
    config = parse_toml('[daemon]\nlocal = "192.0.2.1"\n[ike]\n[ike_peer.p]\n'
                        'address = "192.0.2.2"\npsk = "not-a-secret-0123456789"\n'
                        '[access_list.LAN]\nrules = ["permit ip 10.1.0.0/16 10.2.0.0/16"]\n'
                        '[transform_set.GCM]\ntransforms = ["esp-gcm 256"]\n' + maps)
    plan = build_plan(config)
    wipe_keys(plan)
    assert [(r.seq, r.rule.policy) for r in plan.rules] == [(5, 1), (10, 2), (20, 3)]
