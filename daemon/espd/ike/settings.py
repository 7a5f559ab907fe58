"""What the IKE engine is told to do: plain frozen dataclasses, no parsing, no I/O.

The TOML and IOS front ends map their syntax onto these; the engine reads nothing else.
Algorithms are named by IKE's own words (``aes256gcm16``-style words are a front end's
business): ENCR/PRF/INTEG/KE are IANA transform ids from RFC 7296 section 3.3.2, ESP
transforms are espd's IOS transform names (``esp-gcm 256``), so one vocabulary serves the
manual and the negotiated SAs. Keys are bytearrays so that they can be wiped; no
``repr`` shows them.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field

from espd.ike.auth.certificates import OwnCertificate, TrustStore
from espd.policy.selectors import TrafficSelector

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

IKE_LIFETIME_SECONDS = 86_400  # IOS "crypto ikev2 profile ... lifetime" default
CHILD_LIFETIME_SECONDS = 3_600  # IOS "set security-association lifetime seconds" default
CHILD_LIFETIME_KILOBYTES = 4_608_000
REKEY_MARGIN = 0.10  # rekey when 90% of a lifetime has passed...
REKEY_JITTER = 0.05  # ...minus up to 5% more, at random, so both ends rarely collide
HALF_OPEN_TIMEOUT = 30.0  # seconds an IKE SA may stay unauthenticated
RETRANSMIT_TIMEOUT = 1.0  # first retransmission after this many seconds, then doubling
RETRANSMIT_TRIES = 5  # requests sent in all before the peer is declared dead
FRAGMENT_SIZE = 1280  # bytes of IP datagram per RFC 7383 fragment (charon's default)
FRAGMENT_TIMEOUT = 30.0  # seconds an incomplete fragmented message is kept


@dataclass(frozen=True)
class IkeProposal:
    """One IKE SA proposal (IOS ``crypto ikev2 proposal``); lists are in preference order.

    ``encryption`` holds (ENCR id, key bits; 0 when the cipher has a fixed key size).
    An AEAD proposal leaves ``integrity`` empty (RFC 7296 3.3: no INTEG with AEAD).
    """

    encryption: tuple[tuple[int, int], ...]
    prf: tuple[int, ...]
    integrity: tuple[int, ...]
    groups: tuple[int, ...]  # KE transform ids; the first one is sent in IKE_SA_INIT
    # RFC 9370 additional key exchanges: per transform type 6, 7, ... (ADDKE1, ADDKE2, ...)
    # the KE ids accepted for it (0 is NONE: that exchange may be left out); () for none
    additional: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True)
class Identity:
    """An IKE identity (RFC 7296 3.5): ``kind`` is ipv4 | ipv6 | fqdn | rfc822 | key-id | dn.

    For ipv4/ipv6 ``value`` is the address text, for key-id hex digits, for dn the RFC 4514
    text of the name, else the name.
    """

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


@dataclass(frozen=True, repr=False)
class PresharedKey:
    """RFC 7296 2.15 pre-shared keys; IOS ``pre-shared-key local|remote`` may differ.

    ``local`` signs what this side sends, ``remote`` checks what the peer sends; with one
    key both are the same object.
    """

    local: bytearray
    remote: bytearray

    def __repr__(self) -> str:
        return f"PresharedKey(local=<{len(self.local)} bytes>, remote=<{len(self.remote)} bytes>)"


@dataclass(frozen=True, repr=False)
class PostQuantumKey:
    """An RFC 8784 post-quantum preshared key: mixed into SK_d, SK_pi and SK_pr when both
    sides have it. ``ident`` is its PPK_ID (sent in clear inside the SK payload, public);
    ``required``: no IKE SA with this peer without it (else NO_PPK_AUTH may stand in)."""

    ident: bytes
    key: bytearray
    required: bool = True

    def __repr__(self) -> str:
        return (f"PostQuantumKey(ident={self.ident!r}, key=<{len(self.key)} bytes>, "
                f"required={self.required})")


@dataclass(frozen=True)
class Dpd:
    """IOS ``dpd INTERVAL RETRY on-demand|periodic`` (``crypto isakmp keepalive``).

    periodic: an empty INFORMATIONAL every ``interval`` seconds of IKE silence.
    on-demand: only when we sent ESP for ``interval`` seconds and received none.
    ``retry`` is the retransmission interval of the liveness check itself.
    """

    interval: float = 0.0  # 0 turns DPD off
    retry: float = 2.0
    mode: str = "periodic"  # "periodic" | "on-demand"


@dataclass(frozen=True)
class Peer:
    """A remote gateway as IKE knows it (IOS keyring peer + IKEv2 profile)."""

    address: IPAddress
    psk: PresharedKey | None  # None: auth = "certificate"
    remote_id: Identity | None = None  # None: accept the ID the peer proves
    local_id: Identity | None = None  # None: our address as ID_IPV4_ADDR / ID_IPV6_ADDR
    port: int = 500
    auth: str = "psk"  # "psk" | "certificate" (IkeSettings.certificate and .trust)
    ppk: PostQuantumKey | None = None  # RFC 8784 (exchanges/ppk.py)


@dataclass(frozen=True)
class ChildLifetime:
    seconds: int = CHILD_LIFETIME_SECONDS
    kilobytes: int = CHILD_LIFETIME_KILOBYTES
    packets: int = 0  # 0: no limit


@dataclass(frozen=True)
class ChildPolicy:
    """One crypto map entry with ``keying = "ike"``: what its Child SAs protect and how.

    ``local_ts`` / ``remote_ts`` are the traffic selectors of the crypto ACL's permit
    entries (sources / destinations; espd.policy.selectors.from_acl makes them).
    ``transforms`` are espd ESP transform names in ``set transform-set`` order, each with
    its mode ("tunnel" | "transport").
    """

    map_name: str
    seq: int
    peers: tuple[IPAddress, ...]  # tried in order (IOS failover)
    local: IPAddress
    transforms: tuple[tuple[str, str], ...]  # (transform name, mode)
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    pfs: int = 0  # KE transform id for CREATE_CHILD_SA (IOS "set pfs group19"), 0: none
    # RFC 9370: the additional key exchanges of CREATE_CHILD_SA (IKE_FOLLOWUP_KE), one KE
    # id per transform type 6, 7, ...; only with a pfs group
    pfs_additional: tuple[int, ...] = ()
    esn: bool = False  # offer ESN first; the responder accepts either when we allow it
    start: str = "on-demand"  # "on-demand" | "immediate" | "manual"
    encapsulation: str = "auto"  # "auto" (UDP when NAT is seen) | "esp" | "udp"
    replay_window: int = 64
    lifetime: ChildLifetime = ChildLifetime()
    peer_source: str = "auto"  # see espd.config.model.CryptoMapEntry.peer_source
    # (map_name, seq), made once: every Child SA of the entry holds this same tuple
    key: tuple[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.map_name, self.seq))


@dataclass(frozen=True)
class Limits:
    """Admission of new IKE SAs as responder (RFC 7296 2.6; espd.ike.engine.admission),
    and of new Child SAs on one IKE SA (exchanges/create_child_sa.py).

    A COOKIE is demanded once half-open IKE SAs reach ``cookie_threshold`` in all or
    ``cookie_threshold_per_source`` from the request's address (0: always); beyond the caps
    a request is dropped.
    """

    cookie_threshold: int = 32
    cookie_threshold_per_source: int = 8
    cookie_secret_lifetime: float = 120.0  # seconds; the previous secret serves as long
    half_open: int = 1024
    half_open_per_source: int = 64
    ike_sas: int = 20_000
    # Child SAs one IKE SA may hold (rekeys aside): a peer's CREATE_CHILD_SA for one more
    # gets NO_ADDITIONAL_SAS, so an authenticated peer cannot fill the data plane's SAD
    child_sas_per_ike_sa: int = 64


@dataclass(frozen=True)
class IkeSettings:
    """Everything the IKE engine needs; one instance per configuration generation."""

    proposals: tuple[IkeProposal, ...]
    peers: tuple[Peer, ...]
    children: tuple[ChildPolicy, ...]
    ike_lifetime: int = IKE_LIFETIME_SECONDS
    reauth_time: int = 0  # seconds; 0: never reauthenticate (exchanges/reauth.py)
    dpd: Dpd = Dpd()
    retransmit_timeout: float = RETRANSMIT_TIMEOUT
    retransmit_tries: int = RETRANSMIT_TRIES
    half_open_timeout: float = HALF_OPEN_TIMEOUT
    limits: Limits = Limits()
    rekey_margin: float = REKEY_MARGIN
    rekey_jitter: float = REKEY_JITTER
    key_log: str | None = None  # path of the Wireshark key log; None (default): none
    port: int = 500  # our IKE port (4500 is the data plane's)
    nat_port: int = 4500
    # RFC 7383: larger encrypted messages go out in fragments of at most this many IP bytes
    fragment_size: int = FRAGMENT_SIZE
    fragment_timeout: float = FRAGMENT_TIMEOUT
    certificate: OwnCertificate | None = None  # ours, for peers with auth = "certificate"
    trust: TrustStore | None = None  # the CAs (and CRLs) their certificates chain to

    # Look-ups by dict, built on first use (the instance never changes): a hub has
    # thousands of peers and entries, and these run per IKE SA set-up, per Child SA rekey
    # and per IKE SA at a reload. Each gives what a walk in configuration order gave.

    def peer(self, address: IPAddress) -> Peer | None:
        return self._peer_index.get(address)

    def children_for(self, peer: IPAddress) -> tuple[ChildPolicy, ...]:
        return self._children_index.get(peer, ())

    def child(self, entry: tuple[str, int]) -> ChildPolicy | None:
        """The policy of crypto map entry `entry` (the first, in configuration order)."""
        return self._entry_index.get(tuple(entry))

    @functools.cached_property
    def _peer_index(self) -> dict:
        index: dict = {}
        for peer in self.peers:
            index.setdefault(peer.address, peer)
        return index

    @functools.cached_property
    def _children_index(self) -> dict:
        index: dict = {}
        for child in self.children:
            for address in dict.fromkeys(child.peers):
                index[address] = index.get(address, ()) + (child,)
        return index

    @functools.cached_property
    def _entry_index(self) -> dict:
        index: dict = {}
        for child in self.children:
            index.setdefault(child.key, child)
        return index
