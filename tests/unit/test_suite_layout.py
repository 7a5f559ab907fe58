"""The suite's own layout: pytest imports test files by basename (rootdir conftest, no
packages), so two test files of one name in different folders stop collection of the
whole suite ("import file mismatch") — on CI, on a clean clone, where no cache hides it."""

from __future__ import annotations

import collections
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_files_share_a_basename():
    where = collections.defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        where[path.name].append(str(path.relative_to(TESTS)))
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}
