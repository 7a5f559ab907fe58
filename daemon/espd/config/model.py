"""The configuration model shared by the TOML loader and the IOS importer.

Frozen dataclasses and pure checks, no I/O. Both front ends build these objects and hand
them to ``assemble``, which runs the checks that span the whole configuration and returns
the ``Config`` the daemon plans from. Source locations never take part in equality, so a
reload that only moves lines around compares equal.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import time
from dataclasses import dataclass, field

from espd.config.transforms import INTEG_SHA1_96, RECOMMENDED, Transform

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SPI_MIN, SPI_MAX = 256, 2**32 - 1  # RFC 4303 2.1: 1-255 reserved by IANA, 0 local use
REPLAY_WINDOW_MAX = 65536
DEFAULT_REPLAY_WINDOW = 64  # IOS default and RFC 4303 3.4.3
DEFAULT_LIFETIME_SECONDS = 3600  # IOS defaults, as the seed's "show crypto map" prints them
DEFAULT_LIFETIME_KILOBYTES = 4608000
LIFETIME_MAX = 2**64 - 1


_LONG_HEX = re.compile(r"[0-9A-Fa-f]{16,}")


def quote(value: object, limit: int = 40) -> str:
    """A user's value as error messages show it: its first line, at most `limit`
    characters, and every run of 16+ hex digits (key material) replaced by HEX."""
    text = _LONG_HEX.sub("HEX", str(value))
    first, *rest = text.splitlines() or [""]
    cut = len(first) > limit or bool(rest)
    return "'" + first[:limit] + ("…" if cut else "") + "'"


def wipe(buf: bytes | bytearray | None) -> None:
    """Overwrite key material in place (a bytearray never moves while it keeps its size;
    immutable bytes cannot be wiped and are left alone)."""
    if isinstance(buf, bytearray):
        with memoryview(buf) as view:
            view[:] = bytes(len(buf))


@dataclass(frozen=True, order=True)
class Location:
    """A line in a config file; line 0 means the file as a whole."""

    file: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class Problem:
    """One located error or warning: what is wrong; what to write instead."""

    where: Location
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class ConfigError(ValueError):
    """A configuration that cannot be used; ``problems`` lists every reason, located."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class AddressMatch:
    """An ACL address: bits set in ``wildcard`` are "don't care" (IOS wildcard semantics).

    Invariants: ``address`` and ``wildcard`` are the same IP version, and ``address`` has
    no bit set under the wildcard. The wildcard need not be contiguous.
    """

    address: IPAddress
    wildcard: IPAddress

    @property
    def version(self) -> int:
        return self.address.version

    @property
    def is_any(self) -> bool:
        return int(self.wildcard) == (1 << self.address.max_prefixlen) - 1

    @property
    def prefixlen(self) -> int | None:
        """The prefix length if the wildcard is contiguous, else None."""
        host_bits = int(self.wildcard).bit_length()
        if int(self.wildcard) != (1 << host_bits) - 1:
            return None
        return self.address.max_prefixlen - host_bits

    def contains(self, address: IPAddress) -> bool:
        return (
            address.version == self.version
            and int(address) & ~int(self.wildcard) == int(self.address)
        )

    def __str__(self) -> str:
        if self.is_any:
            return "any"
        if int(self.wildcard) == 0:
            return f"host {self.address}"
        if self.version == 6:
            return f"{self.address}/{self.prefixlen}"
        return f"{self.address} {self.wildcard}"


PortRange = tuple[int, int]  # inclusive


@dataclass(frozen=True)
class AclEntry:
    """One ACL rule. ``protocol`` None matches every protocol; empty port tuples match all."""

    action: str  # "permit" (protect) or "deny" (discard: espd never sends in clear)
    protocol: int | None
    src: AddressMatch
    src_ports: tuple[PortRange, ...]
    dst: AddressMatch
    dst_ports: tuple[PortRange, ...]
    text: str = field(default="", compare=False)  # the rule as written
    where: Location = field(default=Location("<string>"), compare=False)

    @property
    def version(self) -> int:
        return self.src.version


@dataclass(frozen=True)
class AccessList:
    name: str
    entries: tuple[AclEntry, ...]
    where: Location = field(default=Location("<string>"), compare=False)


@dataclass(frozen=True)
class TransformSet:
    name: str
    transform: Transform
    mode: str = "tunnel"  # "tunnel" | "transport"
    where: Location = field(default=Location("<string>"), compare=False)


@dataclass(frozen=True)
class MapLifetime:
    """A crypto map entry's configured SA lifetime (IOS units); the plan turns it into the
    data plane's soft and hard ``espd.dataplane.Lifetime`` limits."""

    seconds: int = DEFAULT_LIFETIME_SECONDS
    kilobytes: int = DEFAULT_LIFETIME_KILOBYTES
    packets: int = 0  # 0: no limit in packets


@dataclass(frozen=True, repr=False)
class ManualKey:
    """A manually keyed SA direction. Key bytes never appear in repr or str."""

    spi: int
    key: bytes | bytearray  # bytearray from the loaders: wiped once the data plane has it
    auth_key: bytes | bytearray | None = None

    def __repr__(self) -> str:
        auth = f", auth_key=<{len(self.auth_key)} bytes>" if self.auth_key is not None else ""
        return f"ManualKey(spi={self.spi:#x}, key=<{len(self.key)} bytes>{auth})"


@dataclass(frozen=True)
class CryptoMapEntry:
    """One crypto map entry: keyed by hand (a pair of ManualKeys) or by IKE.

    Invariant: ``keying == "manual"`` has ``inbound`` and ``outbound`` and no ``more_*``;
    ``keying == "ike"`` has neither key (IKE negotiates them) and may list more peers
    (tried in order, IOS failover) and more transform sets (offered in order).
    """

    map_name: str
    seq: int
    peer: IPAddress  # the first (or only) peer
    local: IPAddress
    match_address: str  # AccessList name
    transform_set: str  # TransformSet name: the first (or only) one
    inbound: ManualKey | None = None
    outbound: ManualKey | None = None
    encapsulation: str = "esp"  # "esp" (IP 50) | "udp" (UDP 4500, RFC 3948) | "auto" (IKE)
    replay_window: int = DEFAULT_REPLAY_WINDOW  # 0 disables anti-replay
    esn: bool = False
    lifetime: MapLifetime = MapLifetime()
    keying: str = "manual"  # "manual" | "ike"
    more_peers: tuple[IPAddress, ...] = ()
    more_transform_sets: tuple[str, ...] = ()
    pfs: str | None = None  # IKE: key exchange of CREATE_CHILD_SA, e.g. "ecp256"
    start: str = "on-demand"  # IKE: "on-demand" | "immediate" | "manual"
    # what inbound ESP must come from: "strict" (the peer's address and, in UDP, its port),
    # "address" (any port), "any" (a peer whose address changes); "auto": strict, but an
    # IKE Child SA over UDP with NAT detected accepts a port change (see peer_source_check)
    peer_source: str = "auto"
    where: Location = field(default=Location("<string>"), compare=False)

    @property
    def key(self) -> tuple[str, int]:
        return self.map_name, self.seq

    @property
    def peers(self) -> tuple[IPAddress, ...]:
        return (self.peer, *self.more_peers)

    @property
    def transform_sets(self) -> tuple[str, ...]:
        return (self.transform_set, *self.more_transform_sets)

    @property
    def manual(self) -> bool:
        return self.keying == "manual"


@dataclass(frozen=True)
class Settings:
    interface: str = "espd0"
    local: IPAddress | None = None  # default local address of crypto maps
    workers: int | None = None  # None: one per CPU
    control_socket: str = "/run/espd/control.sock"
    metrics: str = "127.0.0.1:9661"  # "HOST:PORT" or "[V6]:PORT"; "" turns the exporter off
    state_dir: str = "/var/lib/espd"
    offload: bool = True  # TUN TSO/GRO offloads (IFF_VNET_HDR); false: one packet per read
    # how sealed whole outer packets leave: "raw" (IPPROTO_RAW socket, the kernel routes)
    # or "packet" (AF_PACKET to next hops read from the kernel's tables; system/nexthops.py)
    send_path: str = "raw"
    # how raw ESP arrives: "raw" (IPPROTO_ESP sockets) or "ring" (a TPACKET_V3 ring on an
    # AF_PACKET socket, native/ring.h; the raw sockets stay open, muted)
    receive_path: str = "raw"
    # who runs AES-GCM and ChaCha20-Poly1305: "openssl", "ipsec-mb" or "auto"
    # (dataplane/crypto_backend.py); checked against what this build and CPU can run
    crypto_backend: str = "openssl"
    user: str | None = None  # drop root for this user after start (CAP_NET_ADMIN kept)
    nat_keepalive: int = 20  # seconds between NAT-T keepalives to UDP peers; 0 = none
    drop_log_interval: int = 10  # seconds: one drop-log line per reason and source; 0 = off

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        if not self.metrics:
            return None
        host, _, port = self.metrics.rpartition(":")
        return host.strip("[]"), int(port)


# --- IKE (crypto maps with keying = "ike") -------------------------------------------------

DEFAULT_IKE_PROPOSALS = ("aes256gcm16-prfsha384-x25519", "aes128gcm16-prfsha256-ecp256",
                         "aes256-sha256-prfsha256-modp2048")
DEFAULT_IKE_LIFETIME = 86400  # IOS "crypto ikev2 profile ... lifetime" default
IDENTITY_KINDS = ("ipv4", "ipv6", "fqdn", "rfc822", "key-id", "dn")


@dataclass(frozen=True)
class Dpd:
    """Dead peer detection (IOS ``dpd INTERVAL RETRY on-demand|periodic``); 0 turns it off."""

    interval: int = 0
    retry: int = 2
    mode: str = "periodic"  # "periodic" | "on-demand"


@dataclass(frozen=True)
class IkeIdentity:
    """An IKE identity (RFC 7296 3.5); ``kind`` is one of IDENTITY_KINDS."""

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


def parse_identity(text: str) -> IkeIdentity:
    """``fqdn:gw.example``, ``rfc822:ops@example``, ``key-id:0a1b``, ``ipv4:192.0.2.1``,
    ``dn:CN=gw,O=Example,C=CH`` (a subject DN, RFC 4514 or as strongSwan writes it), or
    bare: an address (ipv4/ipv6), a name with '@' (rfc822), else a host name (fqdn).
    Raises ValueError with what to write."""
    kind, sep, value = text.partition(":")
    if sep and kind in IDENTITY_KINDS:
        if kind in ("ipv4", "ipv6"):
            try:
                address = ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"{quote(value)} is not an IP address") from None
            if f"ipv{address.version}" != kind:
                raise ValueError(f"{value} is IPv{address.version}; write 'ipv"
                                 f"{address.version}:{value}'")
            return IkeIdentity(kind, str(address))
        if kind == "key-id" and not re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", value):
            raise ValueError("a key-id is written in hex, e.g. 'key-id:0a1b2c'")
        if kind == "dn":
            from espd.ike.auth.names import parse_dn

            return IkeIdentity(kind, parse_dn(value).rfc4514_string())
        if not value or len(value) > 255:
            raise ValueError(f"the {kind} identity must have 1-255 characters")
        return IkeIdentity(kind, value)
    try:
        address = ipaddress.ip_address(text)
        return IkeIdentity(f"ipv{address.version}", str(address))
    except ValueError:
        pass
    if not text or len(text) > 255 or any(c.isspace() for c in text):
        raise ValueError(f"{quote(text)} is not an identity; write e.g. 'fqdn:gw.example.net',"
                         f" 'rfc822:ops@example.net' or an IP address")
    return IkeIdentity("rfc822" if "@" in text else "fqdn", text)


@dataclass(frozen=True, repr=False)
class IkePeer:
    """A remote IKE gateway: its address, pre-shared keys and identities (IOS keyring peer
    plus IKEv2 profile). ``psk_local`` signs what we send, ``psk_remote`` checks what the
    peer sends (IOS ``pre-shared-key local|remote``); usually the same bytes. Keys never
    appear in repr."""

    name: str
    address: IPAddress
    psk_local: bytearray
    psk_remote: bytearray
    local_id: IkeIdentity | None = None  # None: our address
    remote_id: IkeIdentity | None = None  # None: whatever ID the peer proves
    where: Location = field(default=Location("<string>"), compare=False)
    auth: str = "psk"  # "psk" | "certificate" (then both psk buffers are empty)
    # RFC 8784 post-quantum preshared key: its PPK_ID (b"": none) and the key
    ppk_id: bytes = b""
    ppk: bytearray = field(default_factory=bytearray)
    ppk_required: bool = True  # refuse an IKE SA without the PPK (fail closed)

    def __repr__(self) -> str:
        return (f"IkePeer({self.name!r}, {self.address}, {self.auth}, local_id="
                f"{self.local_id}, remote_id={self.remote_id}, psk=<{len(self.psk_local)}/"
                f"{len(self.psk_remote)} bytes>, ppk=<{len(self.ppk)} bytes>)")


@dataclass(frozen=True)
class IkeLimits:
    """``[ike.limits]``: responder admission (COOKIE thresholds, caps); see ike/settings.py."""

    cookie_threshold: int = 32
    cookie_threshold_per_source: int = 8
    cookie_secret_lifetime: int = 120
    half_open: int = 1024
    half_open_per_source: int = 64
    ike_sas: int = 20_000
    child_sas_per_ike_sa: int = 64


@dataclass(frozen=True)
class IkeSettings:
    """What every IKE SA shares: proposals in preference order (strongSwan notation, checked
    by espd.ike.crypto.suites), the IKE SA lifetime, DPD, retransmissions, the key log."""

    proposals: tuple[str, ...] = DEFAULT_IKE_PROPOSALS
    lifetime: int = DEFAULT_IKE_LIFETIME
    reauth_time: int = 0  # seconds between reauthentications; 0: off (IOS has none)
    dpd: Dpd = Dpd()
    retransmit_timeout: float = 1.0
    retransmit_tries: int = 5
    limits: IkeLimits = IkeLimits()
    fragment_size: int = 1280  # RFC 7383: IP bytes per IKE fragment (charon's default)
    key_log: str | None = None  # opt-in Wireshark key log (0600); None: none
    where: Location = field(default=Location("<string>"), compare=False)
    # certificate authentication (espd.ike.auth.certificates): ours, and the CAs we trust
    certificate: object | None = field(default=None, compare=False)  # OwnCertificate
    trust: object | None = field(default=None, compare=False)  # TrustStore


@dataclass(frozen=True)
class Config:
    settings: Settings
    access_lists: dict[str, AccessList]
    transform_sets: dict[str, TransformSet]
    crypto_maps: tuple[CryptoMapEntry, ...]  # sorted by (map name, seq): SPD order
    warnings: tuple[Problem, ...] = ()
    ike: IkeSettings = IkeSettings()
    ike_peers: tuple[IkePeer, ...] = ()

    def ike_peer(self, address: IPAddress) -> IkePeer | None:
        return next((p for p in self.ike_peers if p.address == address), None)


def check_manual_key(transform: Transform, direction: str, key: ManualKey, *,
                     key_file: str | None = None, auth_key_file: str | None = None) -> list[str]:
    """Say what is wrong with the key lengths of ``key`` for ``transform`` (never the keys).

    ``key_file`` and ``auth_key_file`` name the files the keys were read from, if any."""
    problems = []
    cipher = transform.name.split(" esp-")[0]
    if len(key.key) != transform.key_len:
        what = _key_material(transform)
        held = f"key file {key_file} holds" if key_file else "key is"
        problems.append(
            f"{direction} {held} {len(key.key) * 2} hex digits; {cipher} needs "
            f"{transform.key_len * 2} hex digits ({what})"
        )
    if transform.auth_key_len and key.auth_key is None:
        problems.append(
            f"{direction} SA has no authentication key; {transform.name} needs one of "
            f"{transform.auth_key_len * 2} hex digits"
        )
    elif transform.auth_key_len and len(key.auth_key or b"") != transform.auth_key_len:
        integ = transform.name.split()[-1]
        held = f"key file {auth_key_file} holds" if auth_key_file else "key is"
        problems.append(
            f"{direction} authentication {held} {len(key.auth_key or b'') * 2} hex digits; "
            f"{integ} needs {transform.auth_key_len * 2} hex digits"
        )
    elif not transform.auth_key_len and key.auth_key is not None:
        problems.append(
            f"{direction} SA has an authentication key, but {transform.name} is an AEAD and "
            f"needs none; drop {'auth_key_file' if auth_key_file else 'it'}"
        )
    return problems


def _key_material(transform: Transform) -> str:
    if transform.aead:
        return (
            f"{transform.key_len - 4} bytes of key followed by the 4-byte salt, "
            f"{transform.key_len} bytes in all"
        )
    return f"{transform.key_len} bytes"


ANY_WARNING = (
    "uses 'any'; the IOS IPsec guide advises against 'any' in crypto ACLs, because it "
    "sweeps in traffic nobody meant to protect (routing protocols, management, IKE) and "
    "lets the peer send packets with any inner address; name the protected subnets, "
    "e.g. 'permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255'"
)


def assemble(
    settings: Settings,
    access_lists: dict[str, AccessList],
    transform_sets: dict[str, TransformSet],
    crypto_maps: list[CryptoMapEntry],
    warnings: list[Problem] | tuple[Problem, ...] = (),
    ike: IkeSettings = IkeSettings(),
    ike_peers: tuple[IkePeer, ...] | list[IkePeer] = (),
) -> Config:
    """Check what spans crypto map entries, then build the Config; raise ConfigError."""
    from espd.config.traps import acl_warnings  # it builds on this module's classes
    from espd.ike.auth.inventory import certificate_inventory, expiry_warnings

    problems: list[Problem] = []
    found_warnings = list(warnings)
    seen: dict[tuple[str, int], CryptoMapEntry] = {}
    inbound_spis: dict[int, CryptoMapEntry] = {}
    outbound_spis: dict[tuple[IPAddress, int], CryptoMapEntry] = {}
    keys: dict[bytes, str] = {}  # SHA-256 of a cipher key -> "the inbound key of map M S"
    ike_addresses = {p.address for p in ike_peers}  # once: a hub has thousands of both
    for entry in crypto_maps:
        name = f"crypto map {entry.map_name} {entry.seq}"
        other = seen.setdefault(entry.key, entry)
        if other is not entry:
            problems.append(Problem(entry.where, f"{name} is defined twice (first at "
                                    f"{other.where}); give this entry another seq"))
            continue
        if entry.match_address not in access_lists:
            problems.append(Problem(entry.where, f"{name}: access list "
                                    f"'{entry.match_address}' is not defined"))
        for tset in entry.transform_sets:
            if tset not in transform_sets:
                problems.append(Problem(entry.where, f"{name}: transform set "
                                        f"'{tset}' is not defined"))
        if not entry.manual:
            problems.extend(_check_ike_entry(name, entry, ike_addresses))
            acl = access_lists.get(entry.match_address)
            for rule in acl.entries if acl else ():
                if rule.action == "permit" and None in (rule.src.prefixlen, rule.dst.prefixlen):
                    problems.append(Problem(rule.where, (
                        f"{name}: access list {acl.name}: '{rule.text}' has a non-contiguous "
                        f"wildcard; IKE traffic selectors are address ranges, so an "
                        f"IKE-keyed entry needs prefixes (e.g. 0.0.0.255)")))
            continue
        assert entry.inbound is not None and entry.outbound is not None
        other = inbound_spis.setdefault(entry.inbound.spi, entry)
        if other is not entry:
            problems.append(Problem(entry.where, (
                f"{name}: inbound SPI {entry.inbound.spi} ({entry.inbound.spi:#x}) is also "
                f"the inbound SPI of crypto map {other.map_name} {other.seq} at {other.where}; "
                f"inbound SPIs pick the SA, so each must be unique")))
        other = outbound_spis.setdefault((entry.peer, entry.outbound.spi), entry)
        if other is not entry:
            problems.append(Problem(entry.where, (
                f"{name}: outbound SPI {entry.outbound.spi} ({entry.outbound.spi:#x}) to peer "
                f"{entry.peer} is also used by crypto map {other.map_name} {other.seq} at "
                f"{other.where}; the peer could not tell the SAs apart")))
        for direction, sa in (("inbound", entry.inbound), ("outbound", entry.outbound)):
            if not sa.key:  # esp-null
                continue
            digest = hashlib.sha256(sa.key).digest()  # keys are mutable: wiped after use
            first = keys.setdefault(digest, f"the {direction} key of {name}")
            if first != f"the {direction} key of {name}":
                problems.append(Problem(entry.where, (
                    f"{name}: the {direction} key is also {first}; two SAs sharing a key "
                    f"reuse nonces (fatal for GCM and ChaCha20); give every SA its own "
                    f"random key")))
    referenced_acls = {e.match_address for e in crypto_maps}
    for name in sorted(referenced_acls & access_lists.keys()):
        for rule in access_lists[name].entries:
            if rule.action == "permit" and (rule.src.is_any or rule.dst.is_any):
                found_warnings.append(Problem(rule.where, f"access list {name} {ANY_WARNING}"))
    found_warnings.extend(acl_warnings(access_lists, crypto_maps))
    found_warnings.extend(Problem(ike.where, text) for text in expiry_warnings(
        certificate_inventory(ike.certificate, ike.trust), time.time()))
    problems.extend(_check_ike_peers(ike_peers))
    referenced_sets = {t for e in crypto_maps for t in e.transform_sets}
    for name in sorted(referenced_sets & transform_sets.keys()):
        tset = transform_sets[name]
        if tset.transform.integ == INTEG_SHA1_96:
            found_warnings.append(Problem(tset.where, (
                f"transform set {name}: esp-sha-hmac (HMAC-SHA1-96) is MUST- in RFC 8221, "
                f"expected to be deprecated; use '{RECOMMENDED}' or "
                f"'esp-aes 256 esp-sha256-hmac'")))
    if problems:
        raise ConfigError(problems)
    return Config(
        settings=settings,
        access_lists=dict(access_lists),
        transform_sets=dict(transform_sets),
        crypto_maps=tuple(sorted(crypto_maps, key=lambda e: e.key)),
        warnings=tuple(sorted(found_warnings, key=lambda p: p.where)),
        ike=ike,
        ike_peers=tuple(ike_peers),
    )


def _check_ike_entry(name: str, entry: CryptoMapEntry,
                     known: set[IPAddress]) -> list[Problem]:
    """An IKE-keyed entry needs an IKE peer (with its pre-shared key) for every peer:
    ``known`` holds the addresses of the IKE peers."""
    problems = []
    for peer in entry.peers:
        if peer not in known:
            problems.append(Problem(entry.where, (
                f"{name}: no pre-shared key for peer {peer}; add '[ike_peer.NAME]' with "
                f"'address = \"{peer}\"' and 'psk_file = \"/etc/espd/NAME.psk\"' (IOS: "
                f"'crypto ikev2 keyring' with 'peer', 'address {peer}' and "
                f"'pre-shared-key ...')")))
        elif peer.version != entry.local.version:
            problems.append(Problem(entry.where, (
                f"{name}: peer {peer} is IPv{peer.version} but the local address "
                f"{entry.local} is IPv{entry.local.version}; use one IP version")))
    if len(set(entry.peers)) != len(entry.peers):
        problems.append(Problem(entry.where, f"{name} lists a peer twice; list each once"))
    return problems


def _check_ike_peers(ike_peers: tuple[IkePeer, ...] | list[IkePeer]) -> list[Problem]:
    problems = []
    seen: dict[IPAddress, IkePeer] = {}
    for peer in ike_peers:
        other = seen.setdefault(peer.address, peer)
        if other is not peer:
            problems.append(Problem(peer.where, (
                f"IKE peer {peer.name}: address {peer.address} is also IKE peer {other.name} "
                f"at {other.where}; one address has one set of keys")))
    return problems


PEER_SOURCES = ("auto", "strict", "address", "any")
SEND_PATHS = ("raw", "packet")  # [daemon] send_path; the first is the default
RECEIVE_PATHS = ("raw", "ring")  # [daemon] receive_path; the first is the default


def peer_source_check(peer_source: str, encap: str, nat_detected: bool) -> str:
    """The data plane's source check for an inbound SA: ``peer_source`` as configured,
    where "auto" is "strict" except for UDP encapsulation with NAT detected by IKE, where the
    NAT may remap the peer's port (RFC 3948 / RFC 7296 2.23): then "address"."""
    if peer_source != "auto":
        return peer_source
    return "address" if encap == "udp" and nat_detected else "strict"
