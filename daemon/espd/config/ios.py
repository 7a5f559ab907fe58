"""Import the crypto parts of a Cisco IOS configuration into the espd model.

The input is a config as IOS prints it (sub-mode commands indented, ``!`` lines as
comments) or as it is pasted into ``configure terminal``: unindented, abbreviated
(ios_words decides which mode a line is in and spells the keywords out).
Read: ``access-list``, ``ip access-list standard|extended``,
``ipv6 access-list``, ``crypto ipsec transform-set`` (sub-mode ``mode``), ``crypto map NAME
SEQ ipsec-manual`` and its ``set``/``match`` commands, ``crypto map NAME local-address IF``,
and ``interface`` with ``ip address``, ``ipv6 address`` and ``crypto map``. Everything else
is skipped quietly. Keys are never echoed in messages.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from espd.config import ios_words
from espd.config.acl import AclError, parse_rule
from espd.config.ike_algorithms import parse_group_name
from espd.config.ios_ike import (
    IKE_MODES,
    IkePolicyMode,
    IkeProposalMode,
    IosIke,
    IsakmpPolicyMode,
    KeyringMode,
    ProfileMode,
)
from espd.config.ios_pki import ChainMode, TrustpointMode
from espd.config.ios_words import Ambiguous
from espd.config.model import (
    DEFAULT_REPLAY_WINDOW,
    LIFETIME_MAX,
    REPLAY_WINDOW_MAX,
    SPI_MAX,
    SPI_MIN,
    AccessList,
    AclEntry,
    Config,
    ConfigError,
    CryptoMapEntry,
    IPAddress,
    Location,
    ManualKey,
    MapLifetime,
    Problem,
    Settings,
    TransformSet,
    assemble,
    check_manual_key,
)
from espd.config.transforms import RECOMMENDED, TransformError, parse_transform
from espd.ike.crypto.suites import SuiteError

_ISAKMP_MAP_COMMANDS = (
    "set peer (several: tried in order), set transform-set A [B ...] (offered in order), "
    "match address, set pfs groupN, set ikev2-profile NAME, set security-association "
    "lifetime seconds|kilobytes N, set security-association replay window-size N|disable, "
    "description"
)
_MAP_COMMANDS = (
    "set peer, set transform-set, match address, set security-association lifetime "
    "seconds|kilobytes N, set security-association replay window-size N|disable, "
    "set session-key inbound|outbound esp SPI cipher HEX [authenticator HEX], description"
)


def _acl_kind(number: int) -> str | None:
    if 1 <= number <= 99 or 1300 <= number <= 1999:
        return "standard"
    if 100 <= number <= 199 or 2000 <= number <= 2699:
        return "extended"
    return None


@dataclass
class _Acl:
    name: str
    kind: str  # "standard" | "extended"
    version: int | None  # 6 for "ipv6 access-list": "any" is then ::/0
    where: Location
    entries: list[AclEntry] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)  # reported only if a map uses it


@dataclass
class _Interface:
    name: str
    addresses: list[IPAddress] = field(default_factory=list)  # primary of each family first
    maps: list[str] = field(default_factory=list)


@dataclass
class _Map:
    """A crypto map entry as read so far; each value keeps the line it came from."""

    name: str
    seq: int
    where: Location
    keying: str = "manual"  # "manual" (ipsec-manual) | "ike" (ipsec-isakmp)
    peer: tuple[IPAddress, Location] | None = None
    more_peers: list[IPAddress] = field(default_factory=list)  # ipsec-isakmp failover
    transform_set: tuple[str, Location] | None = None
    more_transform_sets: list[str] = field(default_factory=list)
    pfs: str | None = None
    profile: tuple[str, Location] | None = None
    match_address: tuple[str, Location] | None = None
    seconds: int | None = None
    kilobytes: int | None = None
    replay_window: int = DEFAULT_REPLAY_WINDOW
    keys: dict[str, tuple[ManualKey, Location]] = field(default_factory=dict)
    broken: bool = False  # a sub-command was refused (and reported)


# the keywords each sub-mode knows (ios_words), by the class that holds it while it is read
_MODE_TREES: tuple[tuple[type, dict], ...] = (
    (_Acl, ios_words.ACL), (TransformSet, ios_words.TRANSFORM_SET),
    (_Map, ios_words.CRYPTO_MAP), (_Interface, ios_words.INTERFACE),
    (IkeProposalMode, ios_words.IKEV2_PROPOSAL), (IkePolicyMode, ios_words.IKEV2_POLICY),
    (KeyringMode, ios_words.IKEV2_KEYRING), (ProfileMode, ios_words.IKEV2_PROFILE),
    (IsakmpPolicyMode, ios_words.ISAKMP_POLICY),
    (TrustpointMode, ios_words.PKI_TRUSTPOINT), (ChainMode, ios_words.PKI_CHAIN),
)


def parse_ios(text: str, path: str = "<string>", settings: Settings | None = None) -> Config:
    """Import ``text`` (read from ``path``); maps not on any interface use settings.local."""
    return _Importer(path).run(text, settings or Settings())


class _Importer:
    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[Problem] = []
        self.acls: dict[str, _Acl] = {}
        self.tsets: dict[str, TransformSet] = {}
        self.refused_tsets: set[str] = set()
        self.maps: dict[tuple[str, int], _Map] = {}
        self.interfaces: dict[str, _Interface] = {}
        self.local_interface: dict[str, str] = {}  # crypto map name -> interface name
        self.where = Location(path)
        self.mode: object = None  # what indented lines belong to: _Acl, TransformSet, ...
        self.ike = IosIke(self)

    def error(self, message: str, where: Location | None = None) -> None:
        self.problems.append(Problem(where or self.where, message))

    def run(self, text: str, settings: Settings) -> Config:
        banner: str | None = None  # the delimiter that ends the banner text being skipped
        for number, line in enumerate(text.splitlines(), 1):
            if banner is not None:
                banner = None if banner in line else banner
                continue
            banner = ios_words.banner_opened(line)
            if banner is not None:
                opened = Location(self.path, number)
            words = line.split()
            if not words or words[0].startswith("!"):
                continue  # comments do not end a sub-mode: IOS docs put them inside one
            self.where = Location(self.path, number)
            try:
                self.line(words, line[0].isspace())
            except Ambiguous as e:
                self.error(str(e))
        if banner is not None:
            self.error(f"the banner's text is never ended with {banner!r}, so every line after "
                       f"it was taken as banner text; end the banner with a line holding "
                       f"{banner!r}", opened)
        entries = [e for m in self.maps.values() if (e := self.entry(m, settings))]
        used = {m.match_address[0] for m in self.maps.values() if m.match_address}
        for name in used & self.acls.keys():
            self.problems.extend(self.acls[name].errors)
        acls = {name: AccessList(name, tuple(acl.entries), acl.where)
                for name, acl in self.acls.items() if not acl.errors}
        ike_args = self.ike_args()
        try:
            config = assemble(settings, acls, self.tsets, entries, *ike_args)
        except ConfigError as e:
            self.problems.extend(e.problems)
        if self.problems:
            raise ConfigError(sorted(self.problems, key=lambda p: p.where))
        return config

    def ike_args(self) -> tuple:
        """(warnings, IKE settings, IKE peers) for assemble; IKE is resolved (and its
        problems reported) only when an ipsec-isakmp map needs it."""
        if not any(m.keying == "ike" for m in self.maps.values()):
            return ()
        profiles = [m.profile[0] for m in self.maps.values() if m.profile]
        ike = self.ike.settings(profiles)
        peers = self.ike.peers(profiles)
        return self.ike.warnings, ike, peers

    def line(self, words: list[str], indented: bool) -> None:
        """One command: of the current sub-mode if indented (as IOS prints it) or if IOS
        would take it as one (ios_words: what the sub-mode knows), else a global one."""
        if self.ike.pki.in_chain(self.mode):  # a certificate's hex, up to its 'quit'
            self.ike.pki.chain_line(self.mode, words)
            return
        if words[0].lower() == "exit" and len(words) == 1:
            if isinstance(self.mode, KeyringMode) and self.mode.peer_open:
                self.mode.peer_open = False  # IOS: from the keyring's peer to the keyring
            else:
                self.mode = None
            return
        tree = self.mode_tree()
        if tree is not None and (indented or self.in_mode(words, tree)):
            self.submode(ios_words.expand(words, tree))
        elif not indented:
            self.mode = None
            self.command(ios_words.expand(words, ios_words.GLOBAL))

    def mode_tree(self) -> dict | None:
        for kind, tree in _MODE_TREES:
            if isinstance(self.mode, kind):
                return tree
        return None

    def in_mode(self, words: list[str], tree: dict) -> bool:
        """Whether an unindented line belongs to the current sub-mode."""
        if isinstance(self.mode, _Interface):
            return not ios_words.ends_interface(words)
        if words[0].lower() in ("set", "match", "mode"):
            return True  # never global commands: a misplaced one is reported in the mode
        if ios_words.ARG in tree and words[0].isdigit():
            return True  # "10 permit ..." in an access list
        return ios_words.first_keyword(words, tree) is not None

    # -- global commands -------------------------------------------------------------------

    def command(self, words: list[str]) -> None:
        handled, mode = self.ike.command(words)
        if handled:
            self.mode = mode
        elif words[0] == "access-list" and len(words) > 2:
            self.numbered_acl(words[1], words[2:])
        elif words[:2] == ["ip", "access-list"] and len(words) == 4:
            if words[2] in ("standard", "extended"):
                self.mode = self.acl(words[3], words[2], None)
        elif words[:2] == ["ipv6", "access-list"] and len(words) == 3:
            self.mode = self.acl(words[2], "extended", 6)
        elif words[:3] == ["crypto", "ipsec", "transform-set"] and len(words) > 3:
            self.mode = self.transform_set(words[3], words[4:])
        elif words[:2] == ["crypto", "map"] and len(words) > 3 and words[3] == "local-address":
            self.local_interface[words[2]] = ios_words.interface_name(" ".join(words[4:]))
        elif words[:2] == ["crypto", "map"] and len(words) > 3 and words[3].isdigit():
            self.mode = self.crypto_map(words[2], int(words[3]), words[4:])
        elif words[0] == "interface" and len(words) > 1:
            name = ios_words.interface_name(" ".join(words[1:]))
            self.mode = self.interfaces.setdefault(name, _Interface(name))

    def acl(self, name: str, kind: str, version: int | None) -> _Acl:
        return self.acls.setdefault(name, _Acl(name, kind, version, self.where))

    def numbered_acl(self, number: str, rule: list[str]) -> None:
        kind = _acl_kind(int(number)) if number.isdigit() else None
        if kind is None:
            self.error(f"access-list {number}: numbered access lists are 1-99 and 1300-1999 "
                       f"(standard) or 100-199 and 2000-2699 (extended); for a name write "
                       f"'ip access-list extended {number}'")
            return
        self.acl_entry(self.acl(number, kind, None), rule)

    def acl_entry(self, acl: _Acl, rule: list[str]) -> None:
        if rule[0] == "sequence" or rule[0].isdigit():  # "10 permit ...", "sequence 10 ..."
            rule = rule[2:] if rule[0] == "sequence" else rule[1:]
        if not rule or rule[0] == "remark":
            return
        try:
            acl.entries.append(parse_rule(" ".join(rule), self.where, acl.kind, acl.version))
        except AclError as e:
            acl.errors.append(Problem(self.where, f"access-list {acl.name}: {e}"))

    def transform_set(self, name: str, transforms: list[str]) -> TransformSet | None:
        try:
            tset = TransformSet(name, parse_transform(transforms), "tunnel", self.where)
        except TransformError as e:
            self.refused_tsets.add(name)
            self.error(f"crypto ipsec transform-set {name}: {e}")
            return None
        self.tsets[name] = tset
        return tset

    def crypto_map(self, name: str, seq: int, kind: list[str]) -> _Map | None:
        spelled = " ".join(["crypto map", name, str(seq), *kind[:1]])
        if not kind:
            spelled += " (ipsec-isakmp, the IOS default)"
        if not 1 <= seq <= 65535:
            self.error(f"{spelled}: the sequence number must be from 1 to 65535")
            return None
        if kind[:1] not in (["ipsec-manual"], ["ipsec-isakmp"], []):
            self.error(f"{spelled}: espd reads 'crypto map {name} {seq} ipsec-isakmp' (keyed "
                       f"by IKEv2) and 'crypto map {name} {seq} ipsec-manual'")
            return None
        if kind[1:2] == ["dynamic"]:
            self.error(f"{spelled} dynamic: dynamic crypto maps (peers that are not listed) "
                       f"are not supported; list each peer with 'set peer' in an ipsec-isakmp "
                       f"entry")
            return None
        keying = "manual" if kind[:1] == ["ipsec-manual"] else "ike"
        # as in IOS, entering an existing entry again adds to it
        entry = self.maps.setdefault((name, seq), _Map(name, seq, self.where, keying))
        if entry.keying != keying:
            first = "ipsec-manual" if entry.keying == "manual" else "ipsec-isakmp"
            self.error(f"{spelled}: this entry is {first} at {entry.where}; an entry has one "
                       f"kind of keying")
            return None
        return entry

    # -- sub-mode commands -----------------------------------------------------------------

    def submode(self, words: list[str]) -> None:
        if isinstance(self.mode, IKE_MODES):
            self.ike.submode(self.mode, words)
        elif isinstance(self.mode, _Acl) and words[0] in ("set", "match"):
            self.error(f"access-list {self.mode.name}: '{' '.join(words[:2])} ...' is a "
                         "crypto map command; put it under 'crypto map NAME SEQ ipsec-manual'")
        elif isinstance(self.mode, _Acl):
            self.acl_entry(self.mode, words)
        elif isinstance(self.mode, TransformSet):
            self.transform_mode(self.mode, words)
        elif isinstance(self.mode, _Map):
            before = len(self.problems)
            self.map_command(self.mode, words)
            self.mode.broken |= len(self.problems) != before
        elif isinstance(self.mode, _Interface):
            self.interface_command(self.mode, words)

    def transform_mode(self, tset: TransformSet, words: list[str]) -> None:
        if words[0] == "mode" and len(words) > 2 and words[1] in ("tunnel", "transport"):
            self.error(f"crypto ipsec transform-set {tset.name}: 'mode {words[1]} "
                       f"{' '.join(words[2:])}' is not supported (espd has no IOS "
                       f"'require' fallback: it runs exactly the mode written); write "
                       f"'mode {words[1]}'")
            return
        if words[0] != "mode" or len(words) != 2 or words[1] not in ("tunnel", "transport"):
            self.error(f"crypto ipsec transform-set {tset.name}: '{' '.join(words[:2])}' is not "
                       f"supported; write 'mode tunnel' or 'mode transport'")
            return
        self.tsets[tset.name] = self.mode = TransformSet(tset.name, tset.transform, words[1],
                                                         tset.where)

    def interface_command(self, interface: _Interface, words: list[str]) -> None:
        if words[:2] == ["crypto", "map"] and len(words) == 3:
            interface.maps.append(words[2])
        elif words[:2] == ["ip", "address"] and len(words) in (4, 5):
            if len(words) == 4 or words[4] != "secondary":
                self.interface_address(interface, f"{words[2]}/{words[3]}")
        elif words[:2] == ["ipv6", "address"] and len(words) == 3 and "/" in words[2]:
            self.interface_address(interface, words[2])

    def interface_address(self, interface: _Interface, text: str) -> None:
        try:
            address = ipaddress.ip_interface(text).ip
        except ValueError:
            self.error(f"interface {interface.name}: '{text}' is not an address and mask; "
                       f"write e.g. 'ip address 192.0.2.1 255.255.255.0'")
            return
        if all(a.version != address.version for a in interface.addresses):
            interface.addresses.append(address)

    def map_command(self, entry: _Map, words: list[str]) -> None:
        head = " ".join(words[:2])
        if words[0] == "description":
            return
        if head == "set peer" and len(words) == 3:
            self.peer(entry, words[2])
        elif head == "set transform-set" and len(words) >= 3:
            if len(words) > 3 and entry.keying == "manual":
                self.error(f"crypto map {entry.name} {entry.seq}: an ipsec-manual map takes "
                           f"one transform set; write 'set transform-set {words[2]}'")
            entry.transform_set = words[2], self.where
            if entry.keying == "ike":
                entry.more_transform_sets = words[3:]
        elif entry.keying == "ike" and head in ("set pfs", "set ikev2-profile",
                                                "set session-key", "set isakmp-profile"):
            self.isakmp_map_command(entry, words)
        elif head == "match address" and len(words) == 3:
            entry.match_address = words[2], self.where
        elif head == "set security-association" and len(words) > 2:
            self.security_association(entry, words[2:])
        elif head == "set session-key" and len(words) > 2:
            self.session_key(entry, words[2:])
        elif entry.keying == "ike":
            self.error(f"crypto map {entry.name} {entry.seq}: '{head}' is not supported in an "
                       f"ipsec-isakmp map; espd reads: {_ISAKMP_MAP_COMMANDS}")
        else:
            self.error(f"crypto map {entry.name} {entry.seq}: '{head}' is not supported in an "
                       f"ipsec-manual map; espd reads: {_MAP_COMMANDS}")

    def isakmp_map_command(self, entry: _Map, words: list[str]) -> None:
        name = f"crypto map {entry.name} {entry.seq}"
        if words[1] == "pfs" and len(words) in (2, 3):
            group = words[2] if len(words) == 3 else "group2"  # IOS: bare "set pfs" = group2
            try:
                entry.pfs = parse_group_name(group)
            except SuiteError as e:
                self.error(f"{name}: set pfs: {e}")
        elif words[1] == "ikev2-profile" and len(words) == 3:
            entry.profile = words[2], self.where
        elif words[1] == "isakmp-profile":
            self.error(f"{name}: 'set isakmp-profile' is IKEv1; espd speaks IKEv2: write "
                       f"'set ikev2-profile NAME' with a 'crypto ikev2 profile NAME'")
        elif words[1] == "session-key" and words[2:3] == ["lifetime"]:
            self.session_key(entry, words[2:])
        elif words[1] == "session-key":
            self.error(f"{name}: session keys belong to an ipsec-manual map; an ipsec-isakmp "
                       f"map negotiates its keys with IKE (remove 'set session-key')")
        else:
            self.error(f"{name}: write 'set pfs groupN' or 'set ikev2-profile NAME'")

    def peer(self, entry: _Map, text: str) -> None:
        if entry.peer is not None and entry.keying == "manual":
            self.error(f"crypto map {entry.name} {entry.seq}: an ipsec-manual map takes one "
                       f"peer (the first is at {entry.peer[1]}); remove this 'set peer'")
            return
        try:
            address = ipaddress.ip_address(text)
            if entry.peer is None:
                entry.peer = address, self.where
            elif address in (entry.peer[0], *entry.more_peers):
                self.error(f"crypto map {entry.name} {entry.seq}: set peer {text} is listed "
                           f"twice; list each peer once")
            else:
                entry.more_peers.append(address)  # IOS tries the peers in this order
        except ValueError:
            self.error(f"crypto map {entry.name} {entry.seq}: set peer '{text}' is not an "
                       f"IPv4 or IPv6 address; write e.g. 'set peer 192.0.2.2'")

    def security_association(self, entry: _Map, words: list[str]) -> None:
        name = f"crypto map {entry.name} {entry.seq}"
        if words == ["replay", "disable"]:
            entry.replay_window = 0
        elif words[:2] == ["replay", "window-size"] and len(words) == 3:
            window = self.number(words[2], 0, REPLAY_WINDOW_MAX, f"{name}: replay window-size")
            entry.replay_window = entry.replay_window if window is None else window
        elif words[:1] == ["lifetime"] and len(words) == 3 and words[1] in ("seconds",
                                                                             "kilobytes"):
            value = self.number(words[2], 1, LIFETIME_MAX, f"{name}: lifetime {words[1]}")
            setattr(entry, words[1], value)
        else:
            self.error(f"{name}: 'set security-association {' '.join(words[:2])}' is not "
                       f"supported; write 'set security-association lifetime seconds N', "
                       f"'... lifetime kilobytes N', '... replay window-size N' or "
                       f"'... replay disable'")

    def number(self, text: str, low: int, high: int, what: str) -> int | None:
        if text.isdigit() and low <= int(text) <= high:
            return int(text)
        self.error(f"{what} must be a decimal number from {low} to {high}, not '{text}'")
        return None

    def session_key(self, entry: _Map, words: list[str]) -> None:
        """set session-key inbound|outbound esp SPI [cipher HEX] [authenticator HEX]."""
        name = f"crypto map {entry.name} {entry.seq}"
        direction = words[0]
        if direction == "lifetime":
            self.error(f"{name}: 'set session-key lifetime' is not an IOS command; write "
                       f"'set security-association lifetime {' '.join(words[1:3])}'")
            return
        if direction not in ("inbound", "outbound"):
            self.error(f"{name}: write 'set session-key inbound esp ...' or "
                       f"'set session-key outbound esp ...'")
            return
        usage = f"write 'set session-key {direction} esp SPI cipher HEX [authenticator HEX]'"
        if words[1:2] == ["ah"]:
            self.error(f"{name}: AH session keys are not supported; espd is ESP-only; use an "
                       f"ESP transform set such as '{RECOMMENDED}' and {usage}")
            return
        if words[1:2] != ["esp"] or len(words) < 5:
            self.error(f"{name}: incomplete or unknown session key; {usage}")
            return
        spi = self.spi(words[2], name)
        material: dict[str, bytes] = {}
        pairs = words[3:]
        for i in range(0, len(pairs), 2):
            word = pairs[i]
            if word not in ("cipher", "authenticator") or i + 1 >= len(pairs) or word in material:
                self.error(f"{name}: session key {direction}: expected 'cipher HEX' then "
                           f"optionally 'authenticator HEX'; {usage}")
                return
            value = pairs[i + 1]
            if len(value) % 2 or any(c not in "0123456789abcdefABCDEF" for c in value):
                self.error(f"{name}: session key {direction} {word}: the key must be an even "
                           f"number of hex digits (0-9, a-f)")
                return
            material[word] = bytearray.fromhex(value)  # wiped once the data plane has it
        if direction in entry.keys:
            self.error(f"{name}: a second 'set session-key {direction}' (the first is at "
                       f"{entry.keys[direction][1]}); keep one")
            return
        if spi is not None:
            key = ManualKey(spi, material.get("cipher", b""), material.get("authenticator"))
            entry.keys[direction] = key, self.where

    def spi(self, text: str, name: str) -> int | None:
        if text.isdigit() and SPI_MIN <= int(text) <= SPI_MAX:
            return int(text)
        if text.lower().startswith("0x"):
            try:
                hint = f"; IOS writes SPIs in decimal: {int(text, 16)}"
            except ValueError:
                hint = ""
        else:
            hint = ""
        self.error(f"{name}: SPI '{text}' must be a decimal number from {SPI_MIN} to {SPI_MAX} "
                   f"(1-255 are reserved by RFC 4303){hint}")
        return None

    # -- resolution ------------------------------------------------------------------------

    def entry(self, entry: _Map, settings: Settings) -> CryptoMapEntry | None:
        """Resolve one crypto map entry; report what is missing or undefined."""
        name = f"crypto map {entry.name} {entry.seq}"
        kind = "ipsec-manual" if entry.keying == "manual" else "ipsec-isakmp"
        before = len(self.problems)
        missing = [] if entry.broken else [
            (entry.peer, "'set peer 192.0.2.2'"),
            (entry.transform_set, "'set transform-set NAME'"),
            (entry.match_address, "'match address 101'"),
        ]
        if entry.keying == "manual" and not entry.broken:
            missing += [
                (entry.keys.get("inbound"), "'set session-key inbound esp 4096 cipher HEX'"),
                (entry.keys.get("outbound"), "'set session-key outbound esp 8192 cipher HEX'"),
            ]
        for value, command in missing:
            if value is None:
                self.error(f"{name} {kind} is incomplete; add {command}", entry.where)
        tsets = [entry.transform_set[0], *entry.more_transform_sets] if entry.transform_set \
            else []
        for tset in tsets:
            if tset not in self.tsets and tset not in self.refused_tsets:
                where = entry.transform_set[1] if entry.transform_set else entry.where
                self.error(f"{name}: transform set '{tset}' is not defined; add "
                           f"'crypto ipsec transform-set {tset} {RECOMMENDED}'", where)
        if entry.match_address and entry.match_address[0] not in self.acls:
            acl, where = entry.match_address
            self.error(f"{name}: access list '{acl}' is not defined; add e.g. 'access-list "
                       f"{acl} permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255'", where)
        if entry.profile and entry.profile[0] not in self.ike.profiles:
            profile, where = entry.profile
            self.error(f"{name}: set ikev2-profile {profile}: the profile is not defined; add "
                       f"'crypto ikev2 profile {profile}'", where)
        if entry.transform_set and entry.transform_set[0] in self.tsets:
            transform = self.tsets[entry.transform_set[0]].transform
            for direction, (key, where) in entry.keys.items():
                for message in check_manual_key(transform, direction, key):
                    self.error(f"{name}: {message}", where)
        acl = self.acls.get(entry.match_address[0]) if entry.match_address else None
        if (acl is not None and acl.errors) or any(t in self.refused_tsets for t in tsets):
            return None  # the access list's or transform set's own errors say what is wrong
        local = self.local(entry, settings) if entry.peer else None
        if entry.broken or len(self.problems) != before or local is None or entry.peer is None:
            return None
        default = MapLifetime()
        manual = entry.keying == "manual"
        return CryptoMapEntry(
            map_name=entry.name, seq=entry.seq, peer=entry.peer[0], local=local,
            match_address=entry.match_address[0], transform_set=entry.transform_set[0],
            inbound=entry.keys["inbound"][0] if manual else None,
            outbound=entry.keys["outbound"][0] if manual else None,
            replay_window=entry.replay_window,
            lifetime=MapLifetime(entry.seconds or default.seconds,
                              entry.kilobytes or default.kilobytes),
            keying=entry.keying, encapsulation="esp" if manual else "auto",
            more_peers=tuple(entry.more_peers),
            more_transform_sets=tuple(entry.more_transform_sets), pfs=entry.pfs,
            where=entry.where,
        )

    def local(self, entry: _Map, settings: Settings) -> IPAddress | None:
        """The address of the interface that carries the map, in the peer's IP version."""
        assert entry.peer is not None
        version = entry.peer[0].version
        if entry.name in self.local_interface:
            names = [self.local_interface[entry.name]]
        else:
            names = [i.name for i in self.interfaces.values() if entry.name in i.maps]
        for name in names:
            interface = self.interfaces.get(name, _Interface(name))
            for address in interface.addresses:
                if address.version == version:
                    return address
        if settings.local is not None and settings.local.version == version:
            return settings.local
        family = "ip address A M" if version == 4 else "ipv6 address A/LEN"
        self.error(f"crypto map {entry.name} {entry.seq}: no local IPv{version} address; "
                   f"apply the map to an interface that has one ('interface NAME', "
                   f"' {family}', ' crypto map {entry.name}')", entry.where)
        return None
