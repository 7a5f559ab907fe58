"""Puts tests/ on sys.path, so every test imports what tests share from ``support``
(tests/support: namespace machinery, packet builders, checksums)."""

import sys
from pathlib import Path

TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
