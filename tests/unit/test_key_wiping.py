"""Keys loaded from a config are mutable buffers that the daemon zeroes in place once the
data plane holds its own copies; the comparisons a reload needs keep working."""

from __future__ import annotations

from pathlib import Path

from espd.config.load import load
from espd.dataplane import Dataplane
from espd.policy.plan import build_plan, describe_changes, wipe_keys

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "espd.example.toml"


def test_loaded_keys_are_wipeable_and_wipe_keys_zeroes_them_everywhere():
    config = load(str(EXAMPLE))
    plan = build_plan(config)
    entry = config.crypto_maps[0]
    assert isinstance(entry.inbound.key, bytearray) and any(entry.inbound.key)
    dp = Dataplane()
    for spec in plan.sas:  # the data plane copies the keys it is given
        dp.create_sa(spi=spec.spi, direction=spec.direction, transform=spec.transform,
                     key=spec.key, auth_key=spec.auth_key, mode=spec.mode, local=spec.local,
                     peer=spec.peer, encap=spec.encap)
    fingerprints = [spec.fingerprint for spec in plan.sas]
    wipe_keys(plan)
    for e in config.crypto_maps:  # the plan shares its buffers with the config
        for k in (e.inbound.key, e.outbound.key, e.inbound.auth_key, e.outbound.auth_key):
            assert k is None or not any(k)
    assert [spec.fingerprint for spec in plan.sas] == fingerprints
    again = build_plan(load(str(EXAMPLE)))
    assert describe_changes(plan, again) == []  # a reload still sees "nothing changed"
