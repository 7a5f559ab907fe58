"""The Prometheus exporter (espd.ops.metrics): real HTTP scrapes agree with the daemon state."""

from __future__ import annotations

import copy
import socket
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from espd.dataplane import DROP_REASONS
from espd.ops.metrics import Exporter, ExporterError, start_exporter

CANARY = "c0ffee" * 12

SA_IN = {"map": "armadillo", "seq": 10, "peer": "192.0.2.2", "local": "192.0.2.1",
         "direction": "in", "spi": 4096, "transform": "esp-gcm 256", "mode": "tunnel",
         "encap": "esp", "replay_window": 1024, "esn": False, "packets": 10, "bytes": 840,
         "encaps": 0, "encrypt": 0, "digest": 0, "decaps": 10, "decrypt": 10, "verify": 10,
         "sequence": 10, "drops": {"replay_dup": 1}, "lifetime_remaining_seconds": 3590,
         "lifetime_remaining_bytes": 4718591160, "soft_expired": False,
         "hard_expired": False, "seq_cycled": False}
SA_OUT = dict(SA_IN, direction="out", spi=0xDEADBEEF, packets=95, bytes=7980, encaps=95,
              encrypt=95, digest=95, decaps=0, decrypt=0, verify=0, drops={},
              lifetime_remaining_bytes=4718584020)
STATE = {
    "version": "0.1.0", "openssl": "OpenSSL 3.0.13", "crypto_features": "aes-ni pclmulqdq",
    "workers": 2, "interface": "espd0", "uptime_seconds": 12.5,
    "config_path": "/etc/espd/espd.toml", "reloads": {"success": 3, "failure": 1},
    "nat_keepalives": 6,
    "io": {"tun_rx": 100, "tun_tx": 10, "net_rx": 12, "net_tx": 95, "send_errors": 1,
           "recv_errors": 2, "tun_errors": 3, "net_tx_gso": 64, "net_rx_gro": 7,
           "net_tx_packet": 80, "net_rx_ring": 9, "net_rx_ring_drops": 4},
    "drops": {"in": {"auth_failed": 2, "replay_dup": 1}, "out": {"no_policy": 5}},
    "maps": [],
    "sas": [SA_IN, SA_OUT],
    "acls": [{"acl": "101", "index": 0, "text": "permit ip 10.1.0.0 0.0.255.255 10.2.0.0 "
              "0.0.255.255", "map": "armadillo", "seq": 10, "hits": 42},
             {"acl": "101", "index": 1, "text": "permit ip 10.1.0.0/16 10.3.0.0/16",
              "map": "armadillo", "seq": 10, "hits": 0}],
}


class StateSource:
    """The daemon's state function, counting scrapes; tests change ``state`` in between."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.state = copy.deepcopy(STATE)
        self.calls = 0

    def __call__(self) -> dict:
        self.calls += 1
        return self.state


@pytest.fixture(scope="module")
def shared_source() -> StateSource:
    return StateSource()


@pytest.fixture
def source(shared_source: StateSource) -> StateSource:
    shared_source.reset()
    return shared_source


@pytest.fixture(scope="module")
def exporter(shared_source: StateSource) -> Iterator[Exporter]:
    stop = start_exporter(("127.0.0.1", 0), shared_source)  # stopping takes 0.5 s: share it
    yield stop
    stop()


def _scrape_text(exporter: Exporter) -> str:
    host, port = exporter.address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def _scrape(exporter: Exporter) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}}."""
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(_scrape_text(exporter)):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def _labels(**labels: object) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


SA_KEY_IN = _labels(map="armadillo", seq=10, peer="192.0.2.2", direction="in")
SA_KEY_OUT = _labels(map="armadillo", seq=10, peer="192.0.2.2", direction="out")


def test_sa_counters_and_lifetimes_agree_with_the_state(exporter: Exporter) -> None:
    m = _scrape(exporter)
    assert m["espd_sa_packets_total"] == {SA_KEY_IN: 10, SA_KEY_OUT: 95}
    assert m["espd_sa_bytes_total"] == {SA_KEY_IN: 840, SA_KEY_OUT: 7980}
    assert m["espd_sa_lifetime_remaining_seconds"] == {SA_KEY_IN: 3590, SA_KEY_OUT: 3590}
    assert m["espd_sa_lifetime_remaining_bytes"] == {SA_KEY_IN: 4718591160,
                                                     SA_KEY_OUT: 4718584020}


def test_spis_appear_only_on_the_info_metric(exporter: Exporter) -> None:
    m = _scrape(exporter)
    common = dict(map="armadillo", seq=10, peer="192.0.2.2", transform="esp-gcm 256",
                  mode="tunnel", encap="esp")
    assert m["espd_sa_info"] == {_labels(direction="in", spi="0x00001000", **common): 1,
                                 _labels(direction="out", spi="0xDEADBEEF", **common): 1}
    for name, series in m.items():
        if name != "espd_sa_info":
            assert all("spi" not in dict(labels) for labels in series), name


def test_every_drop_reason_is_exported_in_the_directions_it_can_happen(
        exporter: Exporter) -> None:
    drops = _scrape(exporter)["espd_dropped_packets_total"]
    assert drops[_labels(reason="auth_failed", direction="in")] == 2
    assert drops[_labels(reason="replay_dup", direction="in")] == 1
    assert drops[_labels(reason="no_policy", direction="out")] == 5
    assert _labels(reason="no_policy", direction="in") not in drops  # impossible pairs
    assert _labels(reason="replay_dup", direction="out") not in drops
    assert drops[_labels(reason="sa_expired", direction="in")] == 0  # both ways
    assert drops[_labels(reason="sa_expired", direction="out")] == 0
    reasons = [r for r in DROP_REASONS if r != "none"]
    assert {dict(labels)["reason"] for labels in drops} == set(reasons)
    assert sum(drops.values()) == 8


def test_acl_reload_io_worker_and_build_metrics_agree_with_the_state(
        exporter: Exporter) -> None:
    m = _scrape(exporter)
    assert m["espd_acl_hits_total"] == {
        _labels(acl="101", rule=0, map="armadillo", seq=10): 42,
        _labels(acl="101", rule=1, map="armadillo", seq=10): 0}
    assert m["espd_config_reloads_total"] == {_labels(result="success"): 3,
                                              _labels(result="failure"): 1}
    assert m["espd_io_packets_total"] == {_labels(path="tun_rx"): 100,
                                          _labels(path="tun_tx"): 10,
                                          _labels(path="net_rx"): 12,
                                          _labels(path="net_tx"): 95}
    assert m["espd_io_errors_total"] == {_labels(kind="send"): 1, _labels(kind="recv"): 2,
                                         _labels(kind="tun"): 3}
    assert m["espd_udp_offload_packets_total"] == {_labels(path="net_tx"): 64,
                                                   _labels(path="net_rx"): 7}
    assert m["espd_packet_path_packets_total"] == {(): 80}
    assert m["espd_receive_ring_packets_total"] == {(): 9}
    assert m["espd_receive_ring_drops_total"] == {(): 4}
    assert m["espd_nat_keepalives_total"] == {(): 6}
    assert m["espd_workers"] == {(): 2}
    assert m["espd_build_info"] == {_labels(version="0.1.0", openssl="OpenSSL 3.0.13",
                                            crypto_features="aes-ni pclmulqdq"): 1}


def test_only_espd_metrics_are_served(exporter: Exporter) -> None:
    families = list(text_string_to_metric_families(_scrape_text(exporter)))
    assert families and all(f.name.startswith("espd_") for f in families)
    counters = {f.name for f in families if f.type == "counter"}
    assert counters == {"espd_sa_packets", "espd_sa_bytes", "espd_dropped_packets",
                        "espd_acl_hits", "espd_config_reloads", "espd_io_packets",
                        "espd_io_errors", "espd_udp_offload_packets", "espd_nat_keepalives",
                        "espd_packet_path_packets", "espd_receive_ring_packets",
                        "espd_receive_ring_drops"}


def test_state_is_read_at_every_scrape(exporter: Exporter, source: StateSource) -> None:
    assert source.calls == 0  # registering the collector does not scrape
    _scrape(exporter)
    source.state["sas"][0]["packets"] = 11
    source.state["drops"]["in"]["auth_failed"] = 7
    m = _scrape(exporter)
    assert m["espd_sa_packets_total"][SA_KEY_IN] == 11
    assert m["espd_dropped_packets_total"][_labels(reason="auth_failed", direction="in")] == 7
    assert source.calls == 2


def test_an_sa_without_a_lifetime_limit_has_no_remaining_series(
        exporter: Exporter, source: StateSource) -> None:
    source.state["sas"][1]["lifetime_remaining_bytes"] = None
    assert _scrape(exporter)["espd_sa_lifetime_remaining_bytes"] == {SA_KEY_IN: 4718591160}


def test_no_key_material_is_exported(exporter: Exporter, source: StateSource) -> None:
    for sa in source.state["sas"]:
        sa["key"] = CANARY
    assert CANARY not in _scrape_text(exporter)


def test_stop_closes_the_port(source: StateSource) -> None:
    stop = start_exporter(("127.0.0.1", 0), source)
    host, port = stop.address
    stop()
    with pytest.raises(OSError), socket.create_connection((host, port), timeout=1):
        pass


def test_a_busy_address_is_reported_with_the_fix(exporter: Exporter,
                                                 source: StateSource) -> None:
    host, port = exporter.address
    with pytest.raises(ExporterError, match=rf"cannot serve metrics on {host}:{port}: .*"
                                            r"\[daemon\] metrics"):
        start_exporter((host, port), source)
