"""The IKE panels and alerts in contrib/ name exactly series that espd.ops.ike_metrics
produces, with its labels and label values: rendered from an engine Snapshot with every
counter set, through the exporter's own text format."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support.observability import (
    IKE_PREFIX,
    MATCHER,
    SELECTOR,
    dashboard_queries,
    expand,
    rule_expressions,
    used_metrics,
)

from espd.ike.engine.view import Snapshot
from espd.keying.cow_table import EMPTY
from espd.ops import ike_metrics


class _Collector:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self):
        yield from ike_metrics.ike_metrics(self.snapshot)


def _exported() -> dict[str, dict[str, set[str]]]:
    """sample name -> label -> the values it takes."""
    counters = tuple((name, 1) for name in ike_metrics.EVENTS) + tuple(
        (f"requests_{x}", 1) for x in ("IKE_SA_INIT", "IKE_AUTH", "CREATE_CHILD_SA",
                                       "INFORMATIONAL"))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(Snapshot(EMPTY, counters)))
    out: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            labels = out.setdefault(sample.name, {})
            for key, value in sample.labels.items():
                labels.setdefault(key, set()).add(value)
    return out


def test_ike_names_and_labels_are_the_exporters() -> None:
    exported = _exported()
    problems = []
    for name, where in sorted(used_metrics().items()):
        if name.startswith(IKE_PREFIX) and name not in exported:
            problems.append(f"{name} ({', '.join(where)}): espd.ops.ike_metrics exports "
                            f"{sorted(exported)}")
    for where, query in dashboard_queries() + rule_expressions():
        for name, matchers in SELECTOR.findall(expand(query)):
            if not name.startswith(IKE_PREFIX) or name not in exported:
                continue
            for label in set(MATCHER.findall(matchers)) - {"instance", "job"}:
                if label not in exported[name]:
                    problems.append(f"{where}: {name} has no label '{label}'")
                    continue
                found = re.search(rf'{label}\s*=~?\s*"([^"]*)"', matchers)
                for value in found.group(1).split("|") if found else ():
                    if value not in exported[name][label]:
                        problems.append(f"{where}: {name}{{{label}}} never is '{value}' "
                                        f"(it is one of {sorted(exported[name][label])})")
    assert not problems, "\n".join(problems)
    assert any(n.startswith(IKE_PREFIX) for n in used_metrics()), "contrib has IKE panels"
