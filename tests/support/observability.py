"""What contrib/ asks of espd's exporter: the metric names its Grafana dashboard and its
Prometheus alert rules query, and which of them are still to come.

IKE metrics (``espd_ike_*``) come from espd.ops.ike_metrics, and only from a daemon that
runs the IKE engine; their names and labels are checked against that module's output now
(tests/unit/test_ike_metric_names.py), and the scrape test demands all of them from any
daemon whose scrape has one. FUTURE names metrics no module exports yet: each may be
missing only while the module that will export it does not exist. PER_CERTIFICATE metrics
exist only where certificates are loaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "contrib/grafana/espd-dashboard.json"
RULES = REPO / "contrib/prometheus/espd-alerts.yml"
IKE_PREFIX = "espd_ike_"

# metric -> the module whose arrival makes it due (none at the moment)
FUTURE: dict[str, str] = {}
# One series per loaded certificate: a daemon that loads none exports none of them. The
# scrape test skips them on such a daemon; tests/netns/test_ike_certificates.py demands
# them, with their labels and values, from one that loads certificates.
PER_CERTIFICATE = {"espd_certificate_expiry_seconds"}

_METRIC = re.compile(r"\bespd_[a-z0-9_]+")
SELECTOR = re.compile(r"\b(espd_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)")
# Grafana's variables, as a query would be sent for the last hour with a 15 s step
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s",
                     "$instance": ".*"}


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, and the annotations."""
    dash = json.loads(DASHBOARD.read_text())
    out = [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    out += [(a["name"], a["expr"]) for a in dash["annotations"]["list"] if "expr" in a]
    return out


def rule_expressions() -> list[tuple[str, str]]:
    """(alert name, expr) of every rule, read without a YAML library (the file is ours)."""
    text = RULES.read_text()
    names = re.findall(r"^\s+- alert: (\S+)$", text, re.M)
    exprs = re.findall(r"^\s+expr: (.+)$", text, re.M)
    assert len(names) == len(exprs), "every rule has one single-line expr"
    return list(zip(names, exprs, strict=True))


def expand(query: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        query = query.replace(name, value)
    return query


def metric_names(query: str) -> set[str]:
    return set(_METRIC.findall(query))


def used_metrics() -> dict[str, list[str]]:
    """metric -> where contrib uses it ("dashboard: PANEL", "rule: ALERT")."""
    used: dict[str, list[str]] = {}
    for title, query in dashboard_queries():
        for name in metric_names(query):
            used.setdefault(name, []).append(f"dashboard: {title}")
    for alert, expr in rule_expressions():
        for name in metric_names(expr):
            used.setdefault(name, []).append(f"rule: {alert}")
    return used
