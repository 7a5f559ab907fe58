"""The IKE engine's snapshot as Prometheus metrics, through the daemon's collector."""

from __future__ import annotations

import asyncio
import json

from prometheus_client import CollectorRegistry, generate_latest
from support.ike_pair import pair, until

from espd.ike.engine.view import plain_state
from espd.ops.metrics import StateCollector


def test_ike_metrics_count_sas_exchanges_and_events():
    async def main():
        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        a.engine.initiate(a.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        return plain_state(a.engine.snapshot())

    ike = asyncio.run(main())
    json.dumps(ike)  # what the control socket sends: plain data
    registry = CollectorRegistry()
    registry.register(StateCollector(lambda: {"ike": ike}))
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


def test_show_ike_sa_in_the_ios_shape():
    from espd.ike.engine.view import as_state
    from espd.ops.show_ike import render_ike_sa

    async def main():
        loop = asyncio.get_running_loop()
        a, b = pair(loop)
        sa = a.engine.initiate(a.settings.children[0])
        await until(lambda: a.owner.live() and b.owner.live())
        return a, sa, as_state(a.engine.snapshot())

    a, sa, state = asyncio.run(main())
    brief = render_ike_sa(state)
    assert f"127.0.0.1/{a.settings.port}" in brief and "READY" in brief
    assert "aes256gcm16-prfsha384-x25519" in brief and "Child SAs: 1" in brief
    detail = render_ike_sa(state, detail=True)
    assert sa.spi_i.hex().upper() in detail and "esp-gcm 256 tunnel" in detail
    assert "remote selector 10.2.0.0/16" in detail
    assert "role: initiator, fragmentation" in detail  # RFC 7383 negotiated
    assert "fragmentation" not in render_ike_sa([{**state[0], "fragmentation": False}], True)
    assert "no IKE SAs" in render_ike_sa([])
