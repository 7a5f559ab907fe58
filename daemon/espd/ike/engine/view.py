"""What ``show ike sa`` and the metrics read: immutable snapshots of the engine's state.

The engine's objects live on the event loop and change there; other threads (the control
socket, the metrics exporter) read a ``Snapshot`` that the loop replaced by one reference
assignment, as keying/owner.py does for SAs. No key material is in it.

A change costs O(the IKE SAs it touched), not O(IKE SAs) (issue 13: a Child SA rekey on
a 10,000-tunnel hub): the engine keeps one cached ``IkeSaView`` per IKE SA in a CowTable
(keying/cow_table.py) and rebuilds only the views of the SAs marked stale since
(``IkeEngine.touch``). So a view holds no time that passes: ``established`` and
``created`` are the engine's clock, and the ages readers see (``active``, ``age``) are
taken against the snapshot's ``taken`` when the reader turns it into plain data
(``plain_state``, on the reader's thread, as is the tuple of every view). Nor does a view
hold text it can make later: it refers to the SA's own immutable values (the Endpoints,
the SPI bytes, the peer's Identity, the TrafficSelector tuples) and the reader formats
them, so a view costs a hub about 0.3 KB per IKE SA less than with its strings made up
front (issue 13: bytes per tunnel; the views are slotted for the same reason).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

from espd.ike.auth.inventory import certificate_facts
from espd.ike.sa.ike_sa import IkeSa
from espd.keying.cow_table import EMPTY, CowTable


@dataclass(frozen=True, slots=True)  # no __dict__: a hub keeps one per Child SA
class ChildView:
    entry: tuple[str, int]
    spi_in: int
    spi_out: int
    transform: str
    mode: str
    encap: str
    state: str
    local_ts: tuple  # the Child SA's TrafficSelectors (readers see their text)
    remote_ts: tuple
    created: float  # the engine's clock when installed (0: not yet); readers see "age"
    key_exchanges: tuple[str, ...] = ()  # PFS methods of the exchange that made it


@dataclass(frozen=True, slots=True)  # no __dict__: a hub keeps one per IKE SA
class IkeSaView:
    """One IKE SA in the shape of IOS ``show crypto ikev2 sa``."""

    tunnel_id: int
    local: object  # the SA's Endpoints (readers see "address:port")
    remote: object
    state: str
    role: str  # "initiator" | "responder" (of this IKE SA)
    suite: str  # e.g. "aes256gcm16-prfsha384-x25519"
    auth: str  # "psk" | "certificate"
    peer_id: object  # the peer's Identity or None (readers see "kind:value" or "")
    peer_certificate: dict | None  # subject, issuer, serial, not_before/after (POSIX s)
    spi_i: bytes  # readers see hex
    spi_r: bytes
    nat: bool
    lifetime: int  # seconds
    established: float  # the engine's clock then (0 while negotiating); readers: "active"
    children: tuple[ChildView, ...]
    fragmentation: bool = False  # RFC 7383 negotiated both ways
    # the key exchanges that keyed it, in order: "x25519 (IKE_SA_INIT)",
    # "mlkem768 (IKE_INTERMEDIATE)" (RFC 9370), or CREATE_CHILD_SA / IKE_FOLLOWUP_KE
    key_exchanges: tuple[str, ...] = ()
    # RFC 8784: the PPK_ID whose post-quantum preshared key keyed it ("": none; never the key)
    ppk: str = ""


@dataclass(frozen=True, eq=False)
class Snapshot:
    table: CowTable[IkeSaView]  # by IKE SA ident (ascending: the order show prints)
    counters: tuple[tuple[str, int], ...]  # exchanges, failures, drops: "name" -> count
    taken: float = 0.0  # the engine's clock when the snapshot was made

    @functools.cached_property
    def ike_sas(self) -> tuple[IkeSaView, ...]:
        # made by the first reader; two racing readers make the same tuple
        return self.table.values()

    def by_state(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for sa in self.ike_sas:
            out[sa.state] = out.get(sa.state, 0) + 1
        return out


EMPTY_SNAPSHOT = Snapshot(EMPTY, ())


def ike_sa_view(sa: IkeSa, lifetime: int) -> IkeSaView:
    """`sa` as readers see it; holds until `sa` changes (no age in it: see above)."""
    children = tuple(
        ChildView(c.entry, c.spi_in, c.spi_out, c.transform, c.mode, c.encap, c.state.value,
                  tuple(c.local_ts), tuple(c.remote_ts), c.created or 0.0, tuple(c.key_exchanges))
        for c in sa.children.values())
    auth = getattr(sa.peer, "auth", "psk")
    cert = sa.peer_certificate
    return IkeSaView(
        sa.ident, sa.local, sa.remote, sa.state.value,
        "initiator" if sa.initiator else "responder", getattr(sa.suite, "name", ""), auth,
        sa.peer_id, certificate_facts(cert) if cert is not None else None,
        sa.spi_i, sa.spi_r, sa.nat, lifetime,
        sa.established or 0.0, children, sa.fragmentation,
        tuple(sa.key_exchanges), _ppk(sa))


def _ppk(sa: IkeSa) -> str:
    from espd.ike.exchanges.ppk import describe

    return describe(sa.ppk_id) if sa.ppk_used else ""



def as_state(snapshot: Snapshot) -> list[dict]:
    """The IKE SAs as plain data for the control socket's STATE (JSON-safe), with their
    ages at the snapshot's time. On the reader's side: O(IKE SAs) per request."""
    return [plain_ike_sa(sa, snapshot.taken) for sa in snapshot.ike_sas]


def plain_ike_sa(view: IkeSaView, now: float) -> dict:
    """One IKE SA's view as plain data, its ages (``active``, ``age``) taken at `now`.
    What ``dataclasses.asdict`` gives, renamed so, made field by field: asdict's deep
    copy was most of a reader's time at 10,000 IKE SAs (the fields are immutable
    values, but for the certificate's dict, copied)."""
    plain = {}
    for name in _SA_FIELDS:
        value = getattr(view, name)
        if name == "established":
            plain["active"] = now - value if value else 0.0
        elif name == "children":
            plain["children"] = [_plain_child(c, now) for c in value]
        elif name == "peer_certificate":
            plain[name] = dict(value) if value is not None else None
        elif name in _SA_TEXT:
            plain[name] = _SA_TEXT[name](value)
        else:
            plain[name] = value
    return plain


def _plain_child(view: ChildView, now: float) -> dict:
    plain = {}
    for name in _CHILD_FIELDS:
        value = getattr(view, name)
        if name == "created":
            plain["age"] = now - value if value else 0.0
        elif name in ("local_ts", "remote_ts"):
            plain[name] = tuple(map(str, value))
        else:
            plain[name] = value
    return plain


_SA_FIELDS = tuple(f.name for f in fields(IkeSaView))
# the fields a view keeps as the SA's values and readers see as text
_SA_TEXT = {"local": str, "remote": str, "spi_i": bytes.hex, "spi_r": bytes.hex,
            "peer_id": lambda identity: str(identity or "")}
_CHILD_FIELDS = tuple(f.name for f in fields(ChildView))


def plain_state(snapshot: Snapshot) -> dict:
    """The whole snapshot as plain data: STATE["ike"], what show and the metrics read."""
    return {"sas": as_state(snapshot), "counters": dict(snapshot.counters)}
