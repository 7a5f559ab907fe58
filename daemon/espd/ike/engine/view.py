"""What ``show ike sa`` and the metrics read: immutable snapshots of the engine's state.

The engine's objects live on the event loop and change there; other threads (the control
socket, the metrics exporter) read a ``Snapshot`` that the loop replaced by one reference
assignment, as keying/owner.py does for SAs. No key material is in it.
"""

from __future__ import annotations

from dataclasses import dataclass

from espd.ike.auth.inventory import certificate_facts
from espd.ike.sa.ike_sa import IkeSa


@dataclass(frozen=True)
class ChildView:
    entry: tuple[str, int]
    spi_in: int
    spi_out: int
    transform: str
    mode: str
    encap: str
    state: str
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    age: float  # seconds since installed
    key_exchanges: tuple[str, ...] = ()  # PFS methods of the exchange that made it


@dataclass(frozen=True)
class IkeSaView:
    """One IKE SA in the shape of IOS ``show crypto ikev2 sa``."""

    tunnel_id: int
    local: str
    remote: str
    state: str
    role: str  # "initiator" | "responder" (of this IKE SA)
    suite: str  # e.g. "aes256gcm16-prfsha384-x25519"
    auth: str  # "psk" | "certificate"
    peer_id: str
    peer_certificate: dict | None  # subject, issuer, serial, not_before/after (POSIX s)
    spi_i: str
    spi_r: str
    nat: bool
    lifetime: int  # seconds
    active: float  # seconds since established (0 while negotiating)
    children: tuple[ChildView, ...]
    fragmentation: bool = False  # RFC 7383 negotiated both ways
    # the key exchanges that keyed it, in order: "x25519 (IKE_SA_INIT)",
    # "mlkem768 (IKE_INTERMEDIATE)" (RFC 9370), or CREATE_CHILD_SA / IKE_FOLLOWUP_KE
    key_exchanges: tuple[str, ...] = ()
    # RFC 8784: the PPK_ID whose post-quantum preshared key keyed it ("": none; never the key)
    ppk: str = ""


@dataclass(frozen=True)
class Snapshot:
    ike_sas: tuple[IkeSaView, ...]
    counters: tuple[tuple[str, int], ...]  # exchanges, failures, drops: "name" -> count

    def by_state(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for sa in self.ike_sas:
            out[sa.state] = out.get(sa.state, 0) + 1
        return out


def ike_sa_view(sa: IkeSa, now: float, lifetime: int) -> IkeSaView:
    children = tuple(
        ChildView(c.entry, c.spi_in, c.spi_out, c.transform, c.mode, c.encap, c.state.value,
                  tuple(map(str, c.local_ts)), tuple(map(str, c.remote_ts)),
                  now - c.created if c.created else 0.0, tuple(c.key_exchanges))
        for c in sa.children.values())
    auth = getattr(sa.peer, "auth", "psk")
    cert = sa.peer_certificate
    return IkeSaView(
        sa.ident, str(sa.local), str(sa.remote), sa.state.value,
        "initiator" if sa.initiator else "responder", getattr(sa.suite, "name", ""), auth,
        str(sa.peer_id or ""), certificate_facts(cert) if cert is not None else None,
        sa.spi_i.hex(), sa.spi_r.hex(), sa.nat, lifetime,
        now - sa.established if sa.established else 0.0, children, sa.fragmentation,
        tuple(sa.key_exchanges), _ppk(sa))


def _ppk(sa: IkeSa) -> str:
    from espd.ike.exchanges.ppk import describe

    return describe(sa.ppk_id) if sa.ppk_used else ""



def as_state(snapshot: Snapshot) -> list[dict]:
    """The IKE SAs as plain data for the control socket's STATE (JSON-safe)."""
    from dataclasses import asdict

    return [asdict(sa) for sa in snapshot.ike_sas]


def plain_state(snapshot: Snapshot) -> dict:
    """The whole snapshot as plain data: STATE["ike"], what show and the metrics read."""
    return {"sas": as_state(snapshot), "counters": dict(snapshot.counters)}
