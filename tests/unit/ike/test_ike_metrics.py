"""The IKE engine's snapshot as Prometheus metrics, through the daemon's collector."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, generate_latest
from support.ike_pair import pair, until

from espd.ops.metrics import StateCollector


def test_ike_metrics_count_sas_exchanges_and_events():
    async def main():
        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        a.engine.initiate(a.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        return a.engine.snapshot()

    snapshot = asyncio.run(main())
    registry = CollectorRegistry()
    registry.register(StateCollector(lambda: {"ike": snapshot}))
    text = generate_latest(registry).decode()
    assert 'espd_ike_sas{state="established"} 1.0' in text
    assert "espd_ike_child_sas 1.0" in text
    assert 'espd_ike_requests_total{exchange="IKE_AUTH"} 1.0' in text
    assert 'espd_ike_events_total{event="ike_sas_established"} 1.0' in text
    assert 'espd_ike_events_total{event="auth_failures"} 0.0' in text  # exported at zero


def test_no_ike_engine_no_ike_metrics():
    registry = CollectorRegistry()
    registry.register(StateCollector(lambda: {}))
    assert "espd_ike" not in generate_latest(registry).decode()
