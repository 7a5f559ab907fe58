#!/usr/bin/env python3
"""Self instruction counts per shared object in a callgrind output file (what share of
the counted work ran in libcrypto, in cryptography's Rust binding, in the interpreter):

    python3 tests/bench/callgrind_objects.py callgrind.out [more.out]

Used with bench_ike_cpu.py (its --no-floor help shows the valgrind command line) for the
crypto share of the IKE responder's work. Costs on a line after ``calls=`` are a call's
inclusive cost and are not counted as the caller's own.
"""

from __future__ import annotations

import collections
import re
import sys

_NAMED = re.compile(r"^\((\d+)\)(?: (.*))?$")


def self_costs(path: str) -> collections.Counter:
    names: dict[str, str] = {}
    costs: collections.Counter = collections.Counter()
    current, skip_next = "?", False
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("ob="):
                found = _NAMED.match(line[3:].strip())
                if found:
                    ident, name = found.groups()
                    if name:
                        names[ident] = name
                    current = names.get(ident, ident)
                else:
                    current = line[3:].strip()
            elif line.startswith("calls="):
                skip_next = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if skip_next:
                    skip_next = False
                    continue
                parts = line.split()
                if len(parts) >= 2 and parts[1].isdigit():
                    costs[current] += int(parts[1])
            elif line.startswith(("cob=", "cfn=", "cfi=", "cfl=")):
                found = _NAMED.match(line[4:].strip())
                if line.startswith("cob=") and found and found.group(2):
                    names[found.group(1)] = found.group(2)
    return costs


def main() -> int:
    for path in sys.argv[1:]:
        costs = self_costs(path)
        total = sum(costs.values())
        print(f"{path}: {total:,} instructions")
        for name, cost in costs.most_common(12):
            print(f"  {cost / total:6.1%}  {cost:>14,}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
