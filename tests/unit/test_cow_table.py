"""CowTable (keying/cow_table.py): against a dict, through every split and merge, and
old versions unchanged by later ones (what readers on other threads rely on)."""

import random

from espd.keying.cow_table import CHUNK, EMPTY, CowTable


def check(table: CowTable, model: dict) -> None:
    keys = sorted(model)
    assert len(table) == len(model) and bool(table) == bool(model)
    assert table.values() == tuple(model[k] for k in keys)
    assert list(table) == [model[k] for k in keys]
    chunks = table._chunks
    assert all(0 < len(k) == len(v) <= CHUNK for k, v in chunks)
    assert table._firsts == tuple(k[0] for k, _ in chunks)
    if len(chunks) > 1:
        assert all(len(k) >= CHUNK // 4 for k, _ in chunks)
    for k in keys[:50]:
        assert table.get(k) == model[k] and k in table


def test_random_operations_match_a_dict_and_old_versions_never_change():
    rng = random.Random(7)
    table, model = EMPTY, {}
    kept: list[tuple[CowTable, dict]] = []
    next_key = 0
    for step in range(6000):
        if model and rng.random() < (0.3 if step < 3000 else 0.7):
            key = rng.choice(list(model))
            table = table.remove(key)
            del model[key]
        elif model and rng.random() < 0.2:  # replace a value where it is
            key = rng.choice(list(model))
            model[key] = ("new", step)
            table = table.set(key, model[key])
        else:  # keys mostly ascending, as the owner's cookies are
            next_key += rng.randint(1, 3)
            key = next_key if rng.random() < 0.9 else rng.randint(0, next_key)
            model[key] = step
            table = table.set(key, step)
        if step % 500 == 0:
            kept.append((table, dict(model)))
        if step % 97 == 0:
            check(table, model)
    check(table, model)
    for old, snapshot in kept:
        check(old, snapshot)


def test_removing_what_is_not_there_returns_the_same_table():
    table = EMPTY.set(5, "a")
    assert table.remove(6) is table and EMPTY.remove(1) is EMPTY
    assert table.get(6) is None and 6 not in table
    assert table.remove(5).values() == () and not table.remove(5)
