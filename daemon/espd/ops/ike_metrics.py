"""Prometheus families for the IKE engine, from its snapshot (espd.ike.engine.view).

Low-cardinality labels only: ``state`` (IKE SA states), ``exchange`` (IKE exchange
names), ``event`` (the engine's fixed counter names). Peers and SPIs stay in show.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from espd.ike.engine.view import Snapshot, plain_state

_STATES = ("init-sent", "init-done", "auth-sent", "established", "rekeying", "deleting")
_EXCHANGES = ("IKE_SA_INIT", "IKE_INTERMEDIATE", "IKE_AUTH", "CREATE_CHILD_SA",
              "IKE_FOLLOWUP_KE", "INFORMATIONAL")
# engine counter -> (metric event label, help); the rest of the counters are not exported
EVENTS = {
    "ike_sas_established": "an IKE SA authenticated both ways",
    "auth_failures": "AUTHENTICATION_FAILED, sent or received",
    "child_failures": "a Child SA refused or failed to negotiate",
    "child_rekeys": "Child SA rekeys completed",
    "ike_rekeys": "IKE SA rekeys completed",
    "rekey_collisions": "simultaneous Child SA rekeys (RFC 7296 2.8.1)",
    "ike_rekey_collisions": "simultaneous IKE SA rekeys (RFC 7296 2.8.2), settled by the "
                            "nonce rule",
    "reauths": "IKE SAs reauthenticated make-before-break ([ike] reauth_time)",
    "reauth_failures": "reauthentications whose new IKE SA failed (the old one runs on)",
    "retransmissions": "requests sent again for lack of an answer",
    "retransmitted_requests": "peer requests answered from the cached response",
    "peers_dead": "peers that stopped answering (DPD or retransmissions)",
    "dpd_sent": "liveness checks sent",
    "no_proposal_chosen": "IKE_SA_INIT refused with NO_PROPOSAL_CHOSEN",
    "invalid_ke_sent": "IKE_SA_INIT answered with INVALID_KE_PAYLOAD",
    "cookies_honoured": "COOKIE challenges answered",
    "cookies_sent": "IKE_SA_INIT answered with a COOKIE challenge (no DH, no state)",
    "cookies_accepted": "IKE_SA_INIT requests with a valid cookie",
    "cookies_rejected": "IKE_SA_INIT requests with a wrong or stale cookie",
    "half_open_refused": "IKE_SA_INIT dropped: half-open cap, in all or per source",
    "ike_sas_refused": "IKE_SA_INIT dropped: IKE SA cap",
    "shed": "IKE datagrams from no configured peer dropped unhandled: their backlog "
            "was full (a flood)",
    "temporary_failures": "TEMPORARY_FAILURE answers received",
    "ppk_used": "IKE SAs authenticated and keyed with an RFC 8784 post-quantum preshared key",
    "ppk_not_used": "IKE SAs established without the PPK one side has (NO_PPK_AUTH, "
                    "ppk_required = false)",
    "ppk_refused": "IKE SAs refused for a required PPK that was missing or unknown",
    "additional_key_exchanges": "RFC 9370 additional key exchanges completed (ML-KEM)",
    "followup_state_not_found": "IKE_FOLLOWUP_KE with an unknown link (STATE_NOT_FOUND)",
    "acquires": "negotiations started by traffic",
    "messages_fragmented": "messages sent in RFC 7383 fragments",
    "fragments_sent": "RFC 7383 fragments sent (first transmissions)",
    "fragments_received": "RFC 7383 fragments received and authenticated",
    "messages_reassembled": "messages reassembled from RFC 7383 fragments",
    "reassembly_timeouts": "incomplete fragmented messages dropped after the timeout",
    "fragmentation_failures": "messages too large for 64 fragments of fragment_size, sent whole",
    "peer_moves_ike": "IKE SAs that followed their peer to a new address or port on an "
                      "authenticated IKE message (RFC 7296 2.23)",
    "peer_moves_esp": "IKE SAs that followed their peer to a new address or port on "
                      "authenticated ESP (RFC 7296 2.23)",
    "peer_moves_refused": "authenticated IKE messages from a new address or port not "
                          "followed: this side is behind a NAT, or the peer is not",
    "malformed": "messages dropped as malformed",
    "integrity_failures": "messages dropped for a bad ICV",
    "unknown_spi": "messages for no IKE SA of ours",
    "stale_requests": "requests outside the message ID window",
    "unexpected_responses": "responses to no outstanding request",
    "child_sas_refused": "peer's new Child SAs refused: its IKE SA holds "
                         "child_sas_per_ike_sa already (NO_ADDITIONAL_SAS)",
    "child_sa_not_found": "CREATE_CHILD_SA rekeys of a Child SA we do not have "
                          "(CHILD_SA_NOT_FOUND)",
    "delete_unknown_spi": "ESP SPIs in a peer's DELETE that name no Child SA of that IKE "
                          "SA (ignored; also a DELETE that crossed ours)",
    "ike_sa_init_refused": "IKE_SA_INIT answered INVALID_SYNTAX: a payload missing or a "
                           "bad KE value (no state kept)",
    "ike_rekey_refused": "peer's IKE SA rekeys refused: a bad KE value, or a zero or "
                         "reused SPI",
    "internal_errors": "engine errors (a bug: see the log)",
}


def ike_metrics(ike: dict | Snapshot | None) -> Iterator[Metric]:
    """From STATE["ike"] (espd.ike.engine.view.plain_state) or the engine's Snapshot;
    nothing without an engine."""
    if ike is None:
        return
    if isinstance(ike, Snapshot):
        ike = plain_state(ike)
    counters = ike.get("counters", {})
    sas = GaugeMetricFamily("espd_ike_sas", "IKE SAs, by state.", labels=["state"])
    by_state: dict[str, int] = {}
    for sa in ike.get("sas", []):
        by_state[sa["state"]] = by_state.get(sa["state"], 0) + 1
    for state in _STATES:
        sas.add_metric([state], by_state.get(state, 0))
    children = GaugeMetricFamily("espd_ike_child_sas", "Child SAs negotiated by IKE.")
    children.add_metric([], sum(len(sa["children"]) for sa in ike.get("sas", [])))
    requests = CounterMetricFamily("espd_ike_requests", "IKE requests sent, by exchange.",
                                   labels=["exchange"])
    for exchange in _EXCHANGES:
        requests.add_metric([exchange], counters.get(f"requests_{exchange}", 0))
    events = CounterMetricFamily("espd_ike_events", "IKE engine events, by kind: " + "; ".join(
        f"{k}: {v}" for k, v in EVENTS.items()), labels=["event"])
    for name in EVENTS:
        events.add_metric([name], counters.get(name, 0))
    yield from (sas, children, requests, events)
