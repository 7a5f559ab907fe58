"""Prometheus exporter: reads the daemon's state at scrape time, keeps nothing itself.

Names follow Prometheus conventions: ``espd_`` prefix, base units, ``_total`` counters.
Labels stay low-cardinality (``map``, ``seq``, ``peer``, ``direction``, ``reason``); SPIs
and transforms appear only on ``espd_sa_info``. The registry is private, so no process or
platform collectors are mixed in. Every drop reason is exported in both directions, zero
or not, so that ``rate()`` sees a counter's first increment.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from espd.dataplane import DROP_REASONS
from espd.ops.ike_metrics import ike_metrics

_SA_LABELS = ["map", "seq", "peer", "direction"]
_IO_PATHS = ("tun_rx", "tun_tx", "net_rx", "net_tx")
_IO_ERRORS = {"send": "send_errors", "recv": "recv_errors", "tun": "tun_errors"}


class ExporterError(Exception):
    """The exporter could not start; the message names the address and the fix."""


class Exporter:
    """A running exporter: ``address`` is the (host, port) bound; call it to stop it."""

    def __init__(self, server: object, thread: object, address: tuple[str, int]) -> None:
        self._server = server
        self._thread = thread
        self.address = address

    def __call__(self) -> None:
        self._server.shutdown()  # type: ignore[attr-defined]
        self._server.server_close()  # type: ignore[attr-defined]
        self._thread.join(timeout=5)  # type: ignore[attr-defined]


class StateCollector:
    """A prometheus_client collector over ``state_fn()``, called once per scrape."""

    def __init__(self, state_fn: Callable[[], dict]) -> None:
        self._state_fn = state_fn

    def describe(self) -> list[Metric]:
        return []  # names are known only at scrape time; registering must not scrape

    def collect(self) -> Iterator[Metric]:
        state = self._state_fn()
        yield from _sa_metrics(state.get("sas", []))
        yield _drops(state.get("drops", {}))
        yield _acl_hits(state.get("acls", []))
        yield from _daemon_metrics(state)
        yield from ike_metrics(state.get("ike"))
        yield _certificate_expiry(state.get("certificates", []))


def _sa_metrics(sas: list[dict]) -> Iterator[Metric]:
    packets = CounterMetricFamily("espd_sa_packets", "Packets protected or accepted by an SA.",
                                  labels=_SA_LABELS)
    octets = CounterMetricFamily("espd_sa_bytes", "Inner (cleartext) bytes through an SA.",
                                 labels=_SA_LABELS)
    info = GaugeMetricFamily("espd_sa_info", "An SA's SPI and settings; always 1.",
                             labels=[*_SA_LABELS, "spi", "transform", "mode", "encap"])
    seconds = GaugeMetricFamily("espd_sa_lifetime_remaining_seconds",
                                "Seconds until the SA's hard lifetime.", labels=_SA_LABELS)
    remaining = GaugeMetricFamily("espd_sa_lifetime_remaining_bytes",
                                  "Bytes until the SA's hard lifetime.", labels=_SA_LABELS)
    for sa in sas:
        labels = [str(sa["map"]), str(sa["seq"]), str(sa["peer"]), str(sa["direction"])]
        packets.add_metric(labels, sa.get("packets", 0))
        octets.add_metric(labels, sa.get("bytes", 0))
        info.add_metric([*labels, f"0x{sa['spi']:08X}", str(sa.get("transform", "")),
                         str(sa.get("mode", "")), str(sa.get("encap", ""))], 1)
        if sa.get("lifetime_remaining_seconds") is not None:
            seconds.add_metric(labels, sa["lifetime_remaining_seconds"])
        if sa.get("lifetime_remaining_bytes") is not None:
            remaining.add_metric(labels, sa["lifetime_remaining_bytes"])
    yield from (packets, octets, info, seconds, remaining)


# the stage that can drop for a reason runs in one direction only (operations.md's "dir"
# column); the other direction's series would be a zero that can never move
OUTBOUND_ONLY = frozenset({"no_policy", "policy_deny", "no_sa", "too_big", "seq_cycled",
                           "seq_unreserved", "link_local"})
BOTH_WAYS = frozenset({"inner_malformed", "sa_expired", "crypto_error", "internal"})


def drop_directions(reason: str) -> tuple[str, ...]:
    """Where `reason` can happen: ("out",), ("in", "out"), or ("in",)."""
    if reason in OUTBOUND_ONLY:
        return ("out",)
    return ("in", "out") if reason in BOTH_WAYS else ("in",)


def _drops(drops: dict) -> Metric:
    family = CounterMetricFamily("espd_dropped_packets", "Packets dropped, by reason.",
                                 labels=["reason", "direction"])
    for direction in ("in", "out"):
        counts = drops.get(direction, {})
        reasons = [r for r in DROP_REASONS if r != "none" and direction in drop_directions(r)]
        reasons += sorted(set(counts) - set(reasons))  # a count is never hidden
        for reason in reasons:
            family.add_metric([reason, direction], counts.get(reason, 0))
    return family


def _acl_hits(acls: list[dict]) -> Metric:
    family = CounterMetricFamily("espd_acl_hits", "Packets that matched an access list entry.",
                                 labels=["acl", "rule", "map", "seq"])
    for acl in acls:
        family.add_metric([str(acl["acl"]), str(acl["index"]), str(acl["map"]),
                           str(acl["seq"])], acl.get("hits", 0))
    return family


def _certificate_expiry(certificates: list[dict]) -> Metric:
    """Seconds to each loaded certificate's notAfter (negative once expired), at scrape
    time; only public facts (subject, role, serial) as labels."""
    family = GaugeMetricFamily(
        "espd_certificate_expiry_seconds",
        "Seconds until a loaded certificate's notAfter (negative once expired).",
        labels=["subject", "role", "serial"])
    now = time.time()
    for cert in certificates:
        family.add_metric([cert["subject"], cert["role"], cert["serial"]],
                          round(cert["not_after"] - now))
    return family


def _daemon_metrics(state: dict) -> Iterator[Metric]:
    reloads = CounterMetricFamily("espd_config_reloads", "Configuration reloads, by result.",
                                  labels=["result"])
    for result in ("success", "failure"):
        reloads.add_metric([result], state.get("reloads", {}).get(result, 0))
    io = state.get("io", {})
    packets = CounterMetricFamily("espd_io_packets", "Packets read or written, by path.",
                                  labels=["path"])
    for path in _IO_PATHS:
        packets.add_metric([path], io.get(path, 0))
    errors = CounterMetricFamily("espd_io_errors", "Socket and TUN errors, by kind.",
                                 labels=["kind"])
    for kind, key in _IO_ERRORS.items():
        errors.add_metric([kind], io.get(key, 0))
    offload = CounterMetricFamily(
        "espd_udp_offload_packets",
        "ESP-in-UDP packets of espd_io_packets_total that went through UDP offloads: sent in "
        "UDP GSO runs (net_tx) or received in UDP GRO aggregates (net_rx).", labels=["path"])
    offload.add_metric(["net_tx"], io.get("net_tx_gso", 0))
    offload.add_metric(["net_rx"], io.get("net_rx_gro", 0))
    packet_path = CounterMetricFamily(
        "espd_packet_path_packets",
        "Packets of espd_io_packets_total{path=\"net_tx\"} sent on the AF_PACKET socket "
        "([daemon] send_path = \"packet\"); the rest went on the raw IP socket.",
        value=io.get("net_tx_packet", 0))
    ring = CounterMetricFamily(
        "espd_receive_ring_packets",
        "Packets of espd_io_packets_total{path=\"net_rx\"} received through the TPACKET_V3 "
        "ring ([daemon] receive_path = \"ring\"); the rest on the raw or UDP sockets.",
        value=io.get("net_rx_ring", 0))
    ring_drops = CounterMetricFamily(
        "espd_receive_ring_drops",
        "Raw ESP packets the TPACKET_V3 ring had no room for (the kernel's PACKET_STATISTICS; "
        "not in espd_io_packets_total).", value=io.get("net_rx_ring_drops", 0))
    keepalives = CounterMetricFamily(
        "espd_nat_keepalives", "RFC 3948 NAT keepalives sent (manual UDP SAs, and IKE "
        "Child SAs over UDP when IKE found this side behind a NAT).",
        value=state.get("nat_keepalives", 0))
    workers = GaugeMetricFamily("espd_workers", "Data-plane worker threads.",
                                value=state.get("workers", 0))
    build = GaugeMetricFamily("espd_build_info", "espd's version and crypto library; always 1.",
                              labels=["version", "openssl", "crypto_features"])
    build.add_metric([str(state.get("version", "")), str(state.get("openssl", "")),
                      str(state.get("crypto_features", ""))], 1)
    yield from (reloads, packets, errors, offload, packet_path, ring, ring_drops,
                keepalives, workers, build)


def start_exporter(address: tuple[str, int], state_fn: Callable[[], dict]) -> Exporter:
    """Serve ``state_fn()`` as Prometheus metrics over HTTP at ``address`` (port 0: any).

    Returns the running Exporter; calling it stops the server. Raises ExporterError when
    the address cannot be bound.
    """
    host, port = address
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(state_fn))
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        raise ExporterError(
            f"cannot serve metrics on {_format(host, port)}: {e.strerror or e}; set "
            f'[daemon] metrics to a free "HOST:PORT", or to "" to turn the exporter off'
        ) from None
    return Exporter(server, thread, (host, server.server_address[1]))


def _format(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
