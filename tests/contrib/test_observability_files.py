"""contrib/'s Prometheus rules and Grafana dashboard, validated by Debian's promtool.

`promtool check rules` and `promtool test rules` (series shaped like espd's exporter
output, contrib/prometheus/espd-alerts.test.yml); every dashboard query is parsed by
promtool too, as a recording rule. Whether espd really exports what they name is
tests/netns/test_contrib_metrics.py, against running daemons.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support.observability import DASHBOARD, REPO, RULES, dashboard_queries, expand

PROMTOOL = REPO / "build/tools/usr/bin/promtool"


@pytest.fixture(scope="module")
def promtool() -> Path:
    subprocess.run(["make", "-s", "-C", str(REPO), "promtool"], check=True,
                   stdout=subprocess.DEVNULL)
    return PROMTOOL


def run(*args: str) -> str:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def test_rules_check(promtool: Path) -> None:
    assert "SUCCESS: 14 rules found" in run(promtool, "check", "rules", RULES)


def test_rules_unit_tests(promtool: Path) -> None:
    assert "SUCCESS" in run(promtool, "test", "rules", RULES.with_suffix(".test.yml"))


def test_rules_unit_tests_catch_a_broken_rule(promtool: Path, tmp_path: Path) -> None:
    """The tests must fail on a wrong threshold: they are not a formality."""
    (tmp_path / RULES.name).write_text(
        RULES.read_text().replace("espd_sa_lifetime_remaining_seconds < 3600",
                                  "espd_sa_lifetime_remaining_seconds < 60"))
    test = RULES.with_suffix(".test.yml")
    (tmp_path / test.name).write_text(test.read_text())
    result = subprocess.run([str(promtool), "test", "rules", str(tmp_path / test.name)],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "EspdSANearHardExpiry" in result.stdout + result.stderr


def test_every_dashboard_query_parses(promtool: Path, tmp_path: Path) -> None:
    queries = dashboard_queries()
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, (_, query) in enumerate(queries):
        lines += [f"      - record: dashboard:query_{i}",
                  f"        expr: {json.dumps(expand(query))}"]
    rules = tmp_path / "dashboard.yml"
    rules.write_text("\n".join(lines) + "\n")
    assert f"SUCCESS: {len(queries)} rules found" in run(promtool, "check", "rules", rules)


def test_dashboard_shape() -> None:
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert variables == {"datasource", "instance"}
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert 'instance=~"$instance"' in target["expr"], (panel["title"], target["expr"])
    titles = " | ".join(p["title"] for p in dash["panels"])
    for wanted in ("Tunnels up", "Throughput per crypto map entry", "Drops by reason",
                   "SA lifetime remaining", "Reloads", "IKE: IKE SAs by state"):
        assert wanted in titles, wanted
    # panels do not overlap on Grafana's 24-column grid
    cells = set()
    for panel in dash["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps at {x},{y}"
                cells.add((x, y))
