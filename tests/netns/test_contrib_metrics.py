"""Every metric contrib/'s Grafana dashboard and Prometheus rules query is one that a real,
running espd exports, with the labels the queries match on.

Two gateways (the netns fixtures) with a hard lifetime, so that the lifetime gauges exist;
their exporter is scraped over HTTP. The IKE metrics appear only on a daemon that runs
the IKE engine: they may be missing from a scrape that has no ``espd_ike_`` series at all
(their names are checked against espd.ops.ike_metrics by tests/unit), and all are demanded
from one that has any. Metrics in support/observability.py FUTURE may be missing only
while the module that will export them does not exist; PER_CERTIFICATE ones only on a
daemon without certificates (test_ike_certificates.py demands them where there are).
"""

from __future__ import annotations

import importlib.util

from prometheus_client.parser import text_string_to_metric_families
from support import netns
from support.observability import (
    FUTURE,
    IKE_PREFIX,
    MATCHER,
    PER_CERTIFICATE,
    SELECTOR,
    dashboard_queries,
    expand,
    rule_expressions,
    used_metrics,
)

LIFETIME = "{ seconds = 86400, kilobytes = 100000000 }"
_SCRAPE_LABELS = {"instance", "job"}  # added by Prometheus, not by espd


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _exported(text: str) -> dict[str, set[str]]:
    """sample name -> the label names it carries."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def test_contrib_names_only_what_espd_exports(make_tunnel):
    tunnel = make_tunnel(lifetime=LIFETIME)
    exported = _exported(netns.scrape_metrics(tunnel.topo.gw_a, tunnel.metrics_port))
    assert "espd_sa_lifetime_remaining_seconds" in exported, sorted(exported)
    missing, future = [], []
    runs_ike = any(name.startswith(IKE_PREFIX) for name in exported)
    for name, where in sorted(used_metrics().items()):
        if name in exported:
            continue
        if name.startswith(IKE_PREFIX) and not runs_ike:
            future.append(f"{name} (this daemon runs no IKE engine)")
            continue
        if name in PER_CERTIFICATE:
            future.append(f"{name} (this daemon loads no certificates)")
            continue
        due = FUTURE.get(name)
        if due is not None and not _module_exists(due):
            future.append(f"{name} (once {due} exists)")
            continue
        why = f"; {due} exists, so it is due" if due else ""
        missing.append(f"{name}, used by {', '.join(sorted(set(where)))}{why}")
    print("future metrics, not yet exported:\n  " + "\n  ".join(future))
    assert not missing, ("contrib/ queries metrics espd does not export (export them, or fix "
                         "the dashboard/rules):\n  " + "\n  ".join(missing))
    assert set(FUTURE) <= set(used_metrics()), "FUTURE lists only metrics contrib uses"


def test_contrib_matches_only_labels_espd_exports(make_tunnel):
    tunnel = make_tunnel(lifetime=LIFETIME)
    exported = _exported(netns.scrape_metrics(tunnel.topo.gw_a, tunnel.metrics_port))
    queries = dashboard_queries() + rule_expressions()
    wrong = []
    for where, query in queries:
        for name, matchers in SELECTOR.findall(expand(query)):
            if name not in exported:
                continue  # the name test says whether that is allowed
            for label in set(MATCHER.findall(matchers)) - _SCRAPE_LABELS:
                if label not in exported[name]:
                    wrong.append(f"{where}: {name} has no label '{label}' "
                                 f"(it has {sorted(exported[name])})")
    assert not wrong, "\n".join(wrong)
