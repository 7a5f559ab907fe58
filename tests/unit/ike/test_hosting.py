"""The daemon's engine host loads every IKE exchange at start (engine/hosting.py), so the
first negotiation does not wait for imports."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import pkgutil, sys, time
import espd.ike.exchanges as package
from espd.ike.engine import hosting
every = {f"espd.ike.exchanges.{m.name}" for m in pkgutil.iter_modules(package.__path__)}
assert not every <= set(sys.modules), "the probe needs them unloaded"
hosting.load_exchanges()
started = time.perf_counter()
hosting.load_exchanges()  # the second call finds them all loaded
print(sorted(every - set(sys.modules)), time.perf_counter() - started)
"""


def test_load_exchanges_imports_every_exchange_module():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    missing, again = out[0], float(out[1])
    assert missing == "[]", f"exchange modules hosting.EXCHANGES leaves out: {missing}"
    assert again < 0.01
