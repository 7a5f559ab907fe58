"""Puts tests/ on sys.path, so every test imports what tests share from ``support``
(tests/support: namespace machinery, packet builders, checksums)."""

import sys
from pathlib import Path

TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

import pytest  # noqa: E402

CRYPTO_BACKENDS = ("openssl", "ipsec-mb")


@pytest.fixture(params=CRYPTO_BACKENDS)
def crypto_backend(request):
    """Runs a test once per AEAD backend ([daemon] crypto_backend): SAs the test creates
    take it (an SA keeps the backend it was created with). ipsec-mb is skipped, with the
    reason, where this build or CPU cannot run it; OpenSSL is restored afterwards."""
    from espd.dataplane import crypto_backend as backends

    if not backends.available(request.param):
        pytest.skip(backends.why_unavailable(request.param))
    before = backends.current()
    backends.select(request.param)
    try:
        yield request.param
    finally:
        backends.select(before)
