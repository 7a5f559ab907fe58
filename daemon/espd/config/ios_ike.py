"""The IKE commands of an IOS configuration, onto espd's IKEv2 model.

Read: ``crypto ikev2 proposal`` (encryption/integrity/prf/group), ``crypto ikev2 policy``
(proposal), ``crypto ikev2 keyring`` (peer, address, pre-shared-key [local|remote],
identity), ``crypto ikev2 profile`` (match identity remote, identity local, authentication
local|remote pre-share, keyring local, lifetime, dpd), ``crypto ikev2 dpd``, ``crypto ikev2
fragmentation [mtu N]``; and the IKEv1 commands of older configs (the seed's): ``crypto
isakmp policy N`` (encr|encryption, hash,
group, authentication, lifetime), ``crypto isakmp key KEY address PEER`` and ``crypto
isakmp keepalive``. IKEv1 is deprecated (RFC 9395): espd speaks IKEv2 only, so an isakmp
policy becomes an IKEv2 proposal, with a warning that the peer must speak IKEv2 too.
Algorithms RFC 8247 forbids are refused with the replacement named (espd.ike.crypto.suites).
Certificates: an IKEv2 profile's ``authentication local|remote rsa-sig|ecdsa-sig`` and ``pki
trustpoint NAME``, with the trustpoint and its chain read by ios_pki.py; an isakmp policy
with ``rsa-sig`` (IOS's default) is refused with what to write.
Keys are never echoed in messages.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from itertools import product

from espd.config.certificate_identity import certificate_identity
from espd.config.ios_pki import ChainMode, IosPki, TrustpointMode
from espd.config.model import (
    DEFAULT_IKE_LIFETIME,
    DEFAULT_IKE_PROPOSALS,
    Dpd,
    IkeIdentity,
    IkePeer,
    IkeSettings,
    IPAddress,
    Location,
    Problem,
    parse_identity,
)
from espd.ike.crypto.suites import (
    IOS_ENCRYPTION,
    IOS_INTEGRITY,
    IOS_PRF,
    SuiteError,
    ios_group,
    parse_suite,
)

IKEV1_WARNING = ("IKEv1 is deprecated (RFC 9395) and espd speaks IKEv2 only: this isakmp "
                 "policy is offered as the IKEv2 proposal '{suite}'; the peer must speak IKEv2 "
                 "too (IOS: 'crypto ikev2 proposal', 'crypto ikev2 policy', 'crypto ikev2 "
                 "keyring' and 'crypto ikev2 profile')")
IOS_FRAGMENT_MTU = 576  # IOS's 'crypto ikev2 fragmentation' without 'mtu'
CERT_REFUSAL = ("an isakmp policy maps onto IKEv2 with a pre-shared key only ('authentication "
                "pre-share' with 'crypto isakmp key KEY address PEER'); for certificates "
                "write a 'crypto ikev2 profile' with 'authentication local rsa-sig', "
                "'authentication remote rsa-sig' and 'pki trustpoint NAME'")
# IKEv1 isakmp words -> IKEv2 (strongSwan notation); IOS defaults: des, sha, group 1
_ISAKMP_ENCR = {("aes",): "aes128", ("aes", "128"): "aes128", ("aes", "192"): "aes192",
                ("aes", "256"): "aes256", ("des",): "des", ("3des",): "3des"}
_ISAKMP_HASH = {"sha": "sha1", "md5": "md5", "sha256": "sha256", "sha384": "sha384",
                "sha512": "sha512"}


@dataclass
class IkeProposalMode:
    """``crypto ikev2 proposal NAME`` as read so far."""

    name: str
    where: Location
    encryption: list[str] = field(default_factory=list)
    integrity: list[str] = field(default_factory=list)
    prf: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)


@dataclass
class IkePolicyMode:
    name: str
    where: Location
    proposals: list[tuple[str, Location]] = field(default_factory=list)


@dataclass
class KeyringPeer:
    name: str
    where: Location
    address: IPAddress | None = None
    psk: dict[str, bytearray] = field(default_factory=dict)  # "both" | "local" | "remote"
    identity: IkeIdentity | None = None


@dataclass
class KeyringMode:
    name: str
    where: Location
    peers: list[KeyringPeer] = field(default_factory=list)
    peer_open: bool = False  # in IOS's keyring-peer sub-mode ('exit' leaves it)


@dataclass
class ProfileMode:
    name: str
    where: Location
    remote_id: IkeIdentity | None = None
    remote_addresses: list[IPAddress] = field(default_factory=list)
    local_id: IkeIdentity | None = None
    keyring: tuple[str, Location] | None = None
    lifetime: int | None = None
    dpd: Dpd | None = None
    local_dn: bool = False  # "identity local dn": the certificate's subject
    authentication: dict[str, str] = field(default_factory=dict)  # local|remote -> method
    authentication_where: Location | None = None  # the last 'authentication' line
    trustpoint: tuple[str, Location] | None = None

    def certificates(self) -> bool:
        return bool(self.authentication) and all(
            m in SIGNATURE_METHODS for m in self.authentication.values())


@dataclass
class IsakmpPolicyMode:
    priority: int
    where: Location
    encryption: tuple[str, ...] = ("des",)  # the IOS defaults
    hash: str = "sha"
    group: int = 1
    authentication: str = "rsa-sig"
    lifetime: int = DEFAULT_IKE_LIFETIME
    written: set[str] = field(default_factory=set)  # which of the above the config set


IKE_MODES = (IkeProposalMode, IkePolicyMode, KeyringMode, ProfileMode, IsakmpPolicyMode,
             TrustpointMode, ChainMode)
SIGNATURE_METHODS = ("rsa-sig", "ecdsa-sig")  # both: espd's RFC 7427 signature authentication


class IosIke:
    """The IKE half of the IOS importer; ``error``/``warn`` report at the current line."""

    def __init__(self, importer) -> None:
        self.importer = importer
        self.proposals: dict[str, IkeProposalMode] = {}
        self.policies: list[IkePolicyMode] = []
        self.keyrings: dict[str, KeyringMode] = {}
        self.profiles: dict[str, ProfileMode] = {}
        self.isakmp: dict[int, IsakmpPolicyMode] = {}
        self.isakmp_keys: list[KeyringPeer] = []
        self.keepalive: Dpd | None = None
        self.fragment_size: int | None = None  # crypto ikev2 fragmentation [mtu N]
        self.warnings: list[Problem] = []
        self.pki = IosPki(self)
        self.credentials: tuple[object | None, object | None] = (None, None)

    @property
    def where(self) -> Location:
        return self.importer.where

    def error(self, message: str, where: Location | None = None) -> None:
        self.importer.error(message, where)

    def warn(self, message: str, where: Location | None = None) -> None:
        self.warnings.append(Problem(where or self.where, message))

    # -- global commands -------------------------------------------------------------------

    def command(self, words: list[str]) -> tuple[bool, object]:
        """(handled, the sub-mode the following indented lines belong to)."""
        if words[:2] == ["crypto", "ikev2"] and len(words) >= 3:
            return True, self.ikev2(words[2:])
        if words[:2] == ["crypto", "isakmp"] and len(words) >= 3:
            return True, self.isakmp_command(words[2:])
        if words[:2] in (["crypto", "ca"], ["crypto", "pki"]) and len(words) >= 3:
            return True, self.pki.command(words)
        return False, None

    def ikev2(self, words: list[str]) -> object:
        what, name = words[0], " ".join(words[1:2])
        if what == "proposal" and name:
            return self.proposals.setdefault(name, IkeProposalMode(name, self.where))
        if what == "policy" and name:
            policy = IkePolicyMode(name, self.where)
            self.policies.append(policy)
            return policy
        if what == "keyring" and name:
            return self.keyrings.setdefault(name, KeyringMode(name, self.where))
        if what == "profile" and name:
            return self.profiles.setdefault(name, ProfileMode(name, self.where))
        if what == "dpd" and len(words) >= 3:
            self.keepalive = self.dpd(words[1:], "crypto ikev2 dpd")
            return None
        if what == "fragmentation":
            self.fragment_size = self.fragmentation(words[1:])
            return None
        if what in ("cookie-challenge", "limit", "nat", "window",
                    "diagnose", "http-url", "redirect", "certificate-cache"):
            self.warn(f"'crypto ikev2 {what}' is not read by espd; it is ignored")
            return None
        self.error(f"'crypto ikev2 {' '.join(words[:2])}' is not supported; espd reads "
                   f"'crypto ikev2 proposal|policy|keyring|profile NAME' and 'crypto ikev2 "
                   f"dpd INTERVAL RETRY on-demand|periodic'")
        return None

    def fragmentation(self, words: list[str]) -> int | None:
        """``crypto ikev2 fragmentation [mtu N]``: RFC 7383 fragments of N bytes (IOS's
        default 576). espd offers fragmentation without the command too, at 1280 bytes."""
        from espd.config.toml_ike import FRAGMENT_SIZE_MIN

        if not words:
            return IOS_FRAGMENT_MTU
        if len(words) == 2 and words[0] == "mtu" and words[1].isdigit() and \
                FRAGMENT_SIZE_MIN <= int(words[1]) <= 1500:
            return int(words[1])
        self.error(f"'crypto ikev2 fragmentation {' '.join(words)}': write 'crypto ikev2 "
                   f"fragmentation' or 'crypto ikev2 fragmentation mtu N' with N from "
                   f"{FRAGMENT_SIZE_MIN} to 1500 (bytes of each fragment's IP datagram)")
        return None

    def isakmp_command(self, words: list[str]) -> object:
        if words[0] == "policy" and len(words) == 2:
            if not words[1].isdigit() or not 1 <= int(words[1]) <= 10000:
                self.error(f"crypto isakmp policy {words[1]}: the priority is 1 to 10000")
                return None
            priority = int(words[1])
            return self.isakmp.setdefault(priority, IsakmpPolicyMode(priority, self.where))
        if words[0] == "key":
            self.isakmp_key(words[1:])
            return None
        if words[0] == "keepalive" and len(words) >= 2:
            self.keepalive = self.dpd(words[1:], "crypto isakmp keepalive")
            return None
        if words[0] in ("identity", "nat", "invalid-spi-recovery", "aggressive-mode"):
            self.warn(f"'crypto isakmp {words[0]}' is IKEv1 only; espd ignores it")
            return None
        self.error(f"'crypto isakmp {words[0]}' is not supported; espd reads 'crypto isakmp "
                   f"policy N', 'crypto isakmp key KEY address PEER' and 'crypto isakmp "
                   f"keepalive INTERVAL [RETRY] [periodic|on-demand]'")
        return None

    def isakmp_key(self, words: list[str]) -> None:
        """crypto isakmp key [0|6] KEY address PEER [MASK] [no-xauth]."""
        usage = "write 'crypto isakmp key KEY address 192.0.2.2'"
        if words[:1] == ["6"]:
            self.error(f"crypto isakmp key: type 6 (encrypted) keys cannot be read by espd; "
                       f"{usage} with the key in clear, or keep it in a psk_file (TOML)")
            return
        if words[:1] == ["0"]:
            words = words[1:]
        if len(words) < 3 or words[1] != "address":
            self.error(f"crypto isakmp key: {usage}")
            return
        address = self.host(words[2], words[3:4], "crypto isakmp key ... address")
        if address is None:
            return
        peer = KeyringPeer(f"isakmp-{address}", self.where, address,
                           {"both": bytearray(words[0].encode())})
        self.isakmp_keys.append(peer)

    def host(self, text: str, mask: list[str], what: str) -> IPAddress | None:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            self.error(f"{what}: '{text}' is not an IPv4 or IPv6 address")
            return None
        if mask and mask[0] not in ("255.255.255.255", "no-xauth"):
            self.error(f"{what} {text} {mask[0]}: espd matches IKE peers by their exact "
                       f"address; write the peer's address without a mask (or with "
                       f"255.255.255.255)")
            return None
        if int(address) == 0:
            self.error(f"{what} {text}: a wildcard peer is not supported; espd matches IKE "
                       f"peers by their exact address")
            return None
        return address

    def dpd(self, words: list[str], what: str) -> Dpd | None:
        """INTERVAL [RETRY] [on-demand|periodic] (IOS default: on-demand)."""
        numbers = [w for w in words if w.isdigit()]
        mode = next((w for w in words if not w.isdigit()), "on-demand")
        if not numbers or len(numbers) > 2 or mode not in ("on-demand", "periodic") or not (
                10 <= int(numbers[0]) <= 3600) or (len(numbers) == 2 and not
                                                   2 <= int(numbers[1]) <= 60):
            self.error(f"{what}: write '{what} INTERVAL RETRY on-demand|periodic' with an "
                       f"interval of 10 to 3600 seconds and a retry of 2 to 60")
            return None
        return Dpd(int(numbers[0]), int(numbers[1]) if len(numbers) == 2 else 2, mode)

    # -- sub-mode commands -----------------------------------------------------------------

    def submode(self, mode: object, words: list[str]) -> None:
        if isinstance(mode, IkeProposalMode):
            self.proposal_command(mode, words)
        elif isinstance(mode, IkePolicyMode):
            self.policy_command(mode, words)
        elif isinstance(mode, KeyringMode):
            self.keyring_command(mode, words)
        elif isinstance(mode, ProfileMode):
            self.profile_command(mode, words)
        elif isinstance(mode, IsakmpPolicyMode):
            self.isakmp_policy_command(mode, words)
        elif isinstance(mode, TrustpointMode):
            self.pki.trustpoint_command(mode, words)
        elif isinstance(mode, ChainMode):
            self.pki.chain_line(mode, words)

    def proposal_command(self, mode: IkeProposalMode, words: list[str]) -> None:
        name = f"crypto ikev2 proposal {mode.name}"
        head, values = words[0], words[1:]
        if head == "encryption" and values:
            for word in values:
                if word not in IOS_ENCRYPTION:
                    self.error(f"{name}: encryption '{word}' is unknown; write "
                               f"'encryption aes-gcm-256' (or aes-gcm-128, aes-cbc-256, "
                               f"aes-cbc-128)")
                    return
            mode.encryption += [IOS_ENCRYPTION[w] for w in values]
        elif head == "integrity" and values:
            if any(w not in IOS_INTEGRITY for w in values):
                self.error(f"{name}: write 'integrity sha256' (or sha384, sha512)")
                return
            mode.integrity += [IOS_INTEGRITY[w] for w in values]
        elif head == "prf" and values:
            if any(w not in IOS_PRF for w in values):
                self.error(f"{name}: write 'prf sha256' (or sha384, sha512)")
                return
            mode.prf += [IOS_PRF[w] for w in values]
        elif head == "group" and values:
            try:
                mode.groups += [ios_group(int(w)) if w.isdigit() else ios_group(-1)
                                for w in values]
            except SuiteError as e:
                self.error(f"{name}: {e}")
        else:
            self.error(f"{name}: '{head}' is not supported; write 'encryption', 'integrity', "
                       f"'prf' or 'group'")

    def policy_command(self, mode: IkePolicyMode, words: list[str]) -> None:
        if words[0] == "proposal" and len(words) == 2:
            mode.proposals.append((words[1], self.where))
        elif words[0] == "match":
            self.warn(f"crypto ikev2 policy {mode.name}: '{' '.join(words)}' is not read; "
                      f"espd offers this policy's proposals to every peer")
        else:
            self.error(f"crypto ikev2 policy {mode.name}: write 'proposal NAME'")

    def keyring_command(self, mode: KeyringMode, words: list[str]) -> None:
        name = f"crypto ikev2 keyring {mode.name}"
        if words[0] == "peer" and len(words) == 2:
            mode.peers.append(KeyringPeer(words[1], self.where))
            mode.peer_open = True
            return
        if not mode.peer_open:
            self.error(f"{name}: start a peer with 'peer NAME' first")
            return
        peer = mode.peers[-1]
        name = f"{name} peer {peer.name}"
        if words[0] == "description":
            return
        if words[0] == "address" and len(words) in (2, 3):
            peer.address = self.host(words[1], words[2:], f"{name}: address")
        elif words[0] == "pre-shared-key" and len(words) >= 2:
            direction = words[1] if words[1] in ("local", "remote") else "both"
            rest = words[2:] if direction != "both" else words[1:]
            if rest[:1] == ["6"]:
                self.error(f"{name}: type 6 (encrypted) keys cannot be read by espd; write "
                           f"the key in clear")
                return
            if rest[:1] == ["0"]:
                rest = rest[1:]
            if len(rest) != 1:
                self.error(f"{name}: write 'pre-shared-key [local|remote] KEY'")
                return
            peer.psk[direction] = bytearray(rest[0].encode())
        elif words[0] == "identity" and len(words) == 3:
            peer.identity = self.identity(words[1:], name)
        elif words[0] == "hostname":
            self.error(f"{name}: 'hostname' is not supported; espd matches peers by 'address'")
        else:
            self.error(f"{name}: '{words[0]}' is not supported; write 'address A', "
                       f"'pre-shared-key [local|remote] KEY' or 'identity KIND VALUE'")

    def identity(self, words: list[str], name: str) -> IkeIdentity | None:
        kinds = {"address": "", "fqdn": "fqdn:", "email": "rfc822:", "key-id": "key-id:"}
        if len(words) != 2 or words[0] not in kinds:
            self.error(f"{name}: write 'identity address A', 'identity fqdn NAME', 'identity "
                       f"email NAME' or 'identity key-id HEX'")
            return None
        try:
            return parse_identity(kinds[words[0]] + words[1])
        except ValueError as e:
            self.error(f"{name}: identity {words[0]}: {e}")
            return None

    def profile_command(self, mode: ProfileMode, words: list[str]) -> None:
        name = f"crypto ikev2 profile {mode.name}"
        text = " ".join(words)
        if words[0] == "description":
            return
        if words[:3] == ["match", "identity", "remote"] and len(words) >= 5:
            if words[3] == "address":
                address = self.host(words[4], words[5:], f"{name}: match identity remote "
                                                         f"address")
                if address is not None:
                    mode.remote_addresses.append(address)
            else:
                mode.remote_id = self.identity(words[3:5], f"{name}: match identity remote")
        elif words == ["identity", "local", "dn"]:
            mode.local_dn = True
        elif words[:2] == ["identity", "local"] and len(words) == 4:
            mode.local_id = self.identity(words[2:], f"{name}: identity local")
        elif words[0] == "authentication" and len(words) == 3 and words[1] in ("local",
                                                                              "remote"):
            if words[2] not in ("pre-share", *SIGNATURE_METHODS):
                self.error(f"{name}: '{text}': write 'authentication {words[1]} pre-share', "
                           f"'rsa-sig' or 'ecdsa-sig'")
            mode.authentication[words[1]] = words[2]
            mode.authentication_where = self.where
        elif words[:2] == ["pki", "trustpoint"] and len(words) in (3, 4):
            mode.trustpoint = words[2], self.where
        elif words[:2] == ["keyring", "local"] and len(words) == 3:
            mode.keyring = words[2], self.where
        elif words[0] == "lifetime" and len(words) == 2 and words[1].isdigit() and (
                120 <= int(words[1]) <= 86400):
            mode.lifetime = int(words[1])
        elif words[0] == "lifetime":
            self.error(f"{name}: write 'lifetime SECONDS' with 120 to 86400 seconds")
        elif words[0] == "dpd":
            mode.dpd = self.dpd(words[1:], f"{name}: dpd")
        elif words[:2] == ["match", "fvrf"]:
            pass
        else:
            self.error(f"{name}: '{text}' is not supported; espd reads 'match identity remote "
                       f"address|fqdn|email ...', 'identity local ...', 'authentication "
                       f"local|remote pre-share', 'keyring local NAME', 'lifetime N', 'dpd "
                       f"INTERVAL RETRY on-demand|periodic'")

    def isakmp_policy_command(self, mode: IsakmpPolicyMode, words: list[str]) -> None:
        name = f"crypto isakmp policy {mode.priority}"
        head = words[0]
        mode.written.add("encryption" if head == "encr" else head)
        if head in ("encr", "encryption") and tuple(words[1:]) in _ISAKMP_ENCR:
            mode.encryption = tuple(words[1:])
        elif head in ("encr", "encryption"):
            self.error(f"{name}: write 'encryption aes 256' (or aes 128)")
        elif head == "hash" and len(words) == 2 and words[1] in _ISAKMP_HASH:
            mode.hash = words[1]
        elif head == "hash":
            self.error(f"{name}: write 'hash sha256' (or sha384, sha512)")
        elif head == "group" and len(words) == 2 and words[1].isdigit():
            mode.group = int(words[1])
        elif head == "authentication" and len(words) == 2:
            mode.authentication = words[1]
        elif head == "lifetime" and len(words) == 2 and words[1].isdigit() and (
                60 <= int(words[1]) <= 86400):
            mode.lifetime = int(words[1])
        else:
            self.error(f"{name}: '{' '.join(words)}' is not supported; espd reads "
                       f"'encryption', 'hash', 'group', 'authentication pre-share' and "
                       f"'lifetime'")

    # -- resolution ------------------------------------------------------------------------

    def settings(self, profiles_used: list[str]) -> IkeSettings:
        """The IKE proposals (ikev2 policies, else ikev2 proposals, else isakmp policies by
        priority, else espd's defaults), and the one lifetime and DPD espd applies."""
        suites = self.ikev2_suites() or self.isakmp_suites() or list(DEFAULT_IKE_PROPOSALS)
        lifetime, dpd = DEFAULT_IKE_LIFETIME, self.keepalive
        for name in profiles_used:
            profile = self.profiles.get(name)
            if profile and profile.lifetime:
                lifetime = profile.lifetime
            if profile and profile.dpd:
                dpd = profile.dpd
        if not self.ikev2_suites() and self.isakmp:
            lifetime = min(p.lifetime for p in self.isakmp.values())
        self.credentials = self.certificate(profiles_used)
        own, trust = self.credentials
        return IkeSettings(proposals=tuple(dict.fromkeys(suites)), lifetime=lifetime,
                           dpd=dpd or Dpd(), certificate=own, trust=trust,
                           fragment_size=self.fragment_size or IkeSettings().fragment_size)

    def certificate(self, profiles_used: list[str]) -> tuple[object | None, object | None]:
        """Our certificate and trusted CAs, from the one trustpoint the profiles in use
        that authenticate with signatures name (espd holds one certificate)."""
        named = {}
        for name in dict.fromkeys(profiles_used):
            profile = self.profiles.get(name)
            if profile is None or not profile.certificates():
                continue
            if profile.trustpoint is None:
                self.error(f"crypto ikev2 profile {name}: authentication with signatures "
                           f"needs 'pki trustpoint NAME'", profile.where)
                continue
            named.setdefault(profile.trustpoint[0], profile.trustpoint[1])
        if len(named) > 1:
            self.error(f"the IKEv2 profiles in use name trustpoints {', '.join(named)}: espd "
                       f"holds one certificate; name the same trustpoint in each",
                       list(named.values())[1])
            return None, None
        for trustpoint, where in named.items():
            return self.pki.credentials(trustpoint, where, self.importer.path)
        return None, None

    def ikev2_suites(self) -> list[str]:
        order: list[IkeProposalMode] = []
        for policy in self.policies:
            for name, where in policy.proposals:
                if name not in self.proposals:
                    self.error(f"crypto ikev2 policy {policy.name}: proposal '{name}' is not "
                               f"defined; add 'crypto ikev2 proposal {name}'", where)
                else:
                    order.append(self.proposals[name])
        if not self.policies:
            order = list(self.proposals.values())
        suites = []
        for proposal in order:
            suites += self.expand(proposal)
        return suites

    def expand(self, p: IkeProposalMode) -> list[str]:
        name = f"crypto ikev2 proposal {p.name}"
        if not p.encryption or not p.groups:
            self.error(f"{name} needs 'encryption' and 'group' (e.g. 'encryption aes-gcm-256', "
                       f"'prf sha384', 'group 19')", p.where)
            return []
        suites = []
        for encr, group in product(p.encryption, p.groups):
            aead = "gcm" in encr
            if aead and p.integrity:
                self.error(f"{name}: {encr} is an AEAD and takes no 'integrity'; remove it "
                           f"or use aes-cbc-256", p.where)
                return []
            if not aead and not p.integrity:
                self.error(f"{name}: {encr} needs 'integrity sha256' (or sha384, sha512)",
                           p.where)
                return []
            prfs = p.prf
            if aead and not prfs:
                self.error(f"{name}: an AEAD proposal needs 'prf sha256' (or sha384, sha512)",
                           p.where)
                return []
            for integ in (p.integrity or [None]):
                for prf in (prfs or [IOS_PRF[next(k for k, v in IOS_INTEGRITY.items()
                                                  if v == integ)]]):
                    text = "-".join(x for x in (encr, integ, prf, group) if x)
                    suite = self.suite(text, name, p.where)
                    if suite:
                        suites.append(suite)
        return suites

    def suite(self, text: str, name: str, where: Location) -> str | None:
        try:
            return parse_suite(text).name
        except SuiteError as e:
            self.error(f"{name}: {e}", where)
            return None

    def isakmp_suites(self) -> list[str]:
        suites = []
        for priority in sorted(self.isakmp):
            p = self.isakmp[priority]
            name = f"crypto isakmp policy {priority}"
            if p.authentication != "pre-share":
                self.error(f"{name}: authentication {p.authentication}: {CERT_REFUSAL}",
                           p.where)
                continue
            encr, integ = _ISAKMP_ENCR[p.encryption], _ISAKMP_HASH[p.hash]
            problems = []
            try:
                group = ios_group(p.group)
            except SuiteError as e:
                problems.append(str(e))
                group = ""
            for kind, word in (("encryption", encr), ("hash", integ), ("group", group)):
                if not word:
                    continue
                try:
                    parse_suite(self.probe(word))
                except SuiteError as e:
                    default = "" if kind in p.written else (
                        f" (IOS's default when no '{kind}' is written)")
                    problems.append(f"{e}{default}")
            for problem in problems:
                self.error(f"{name}: {problem}", p.where)
            if problems:
                continue
            suite = parse_suite(f"{encr}-{integ}-prf{integ}-{group}").name
            self.warn(IKEV1_WARNING.format(suite=suite), p.where)
            suites.append(suite)
        return suites

    @staticmethod
    def probe(word: str) -> str:
        """A whole suite around one algorithm word, so the suite parser judges that word."""
        if word.startswith("prf"):
            return f"aes256-sha256-{word}-x25519"
        if word in ("sha1", "md5", "sha256", "sha384", "sha512"):
            return f"aes256-{word}-prfsha256-x25519"
        if word in ("des", "3des", "aes128", "aes192", "aes256"):
            return f"{word}-sha256-prfsha256-x25519"
        return f"aes256gcm16-prfsha256-{word}"

    def peers(self, profiles_used: list[str]) -> list[IkePeer]:
        """IKE peers from isakmp keys and from the keyrings of the profiles in use (or every
        keyring when no crypto map names a profile)."""
        out: list[IkePeer] = []
        for peer in self.isakmp_keys:
            key = peer.psk["both"]
            out.append(IkePeer(peer.name, peer.address, key, key, where=peer.where))
        keyrings = {self.profiles[p].keyring[0]: self.profiles[p] for p in profiles_used
                    if p in self.profiles and self.profiles[p].keyring}
        for name, profile in keyrings.items():
            if name not in self.keyrings:
                self.error(f"crypto ikev2 profile {profile.name}: keyring '{name}' is not "
                           f"defined; add 'crypto ikev2 keyring {name}'",
                           profile.keyring[1] if profile.keyring else profile.where)
        for name in dict.fromkeys(profiles_used):
            profile = self.profiles.get(name)
            if profile is not None and profile.authentication:
                out += self.certificate_peers(profile)
        for ring in self.keyrings.values():
            profile = keyrings.get(ring.name)
            if profiles_used and profile is None:
                continue
            for peer in ring.peers:
                made = self.keyring_peer(ring, peer, profile)
                if made:
                    out.append(made)
        return out

    def certificate_peers(self, profile: ProfileMode) -> list[IkePeer]:
        """One certificate-authenticated peer per 'match identity remote address' of a
        profile with 'authentication local|remote rsa-sig|ecdsa-sig'."""
        name = f"crypto ikev2 profile {profile.name}"
        methods = profile.authentication
        if not profile.certificates():
            if any(m in SIGNATURE_METHODS for m in methods.values()):
                self.error(f"{name}: authentication local {methods.get('local', '(none)')} "
                           f"and remote {methods.get('remote', '(none)')}: espd "
                           f"authenticates both ways alike; write 'authentication local "
                           f"rsa-sig' and 'authentication remote rsa-sig' (or pre-share "
                           f"for both)", profile.authentication_where)
            return []
        if len(methods) != 2:
            self.error(f"{name}: write both 'authentication local rsa-sig' and "
                       f"'authentication remote rsa-sig'", profile.authentication_where)
            return []
        own = self.credentials[0]
        if own is None:
            return []  # certificate() said why
        if not profile.remote_addresses:
            self.error(f"{name}: certificate authentication needs 'match identity remote "
                       f"address A' (espd matches IKE peers by address)", profile.where)
            return []
        written = (IkeIdentity("dn", own.certificate.subject.rfc4514_string())  # type: ignore
                   if profile.local_dn else profile.local_id)
        local_id, problem = certificate_identity(own.certificate, written)  # type: ignore
        if problem:
            self.error(f"{name}: identity local {problem}", profile.where)
            return []
        return [IkePeer(f"{profile.name}/{address}", address, bytearray(), bytearray(),
                        local_id, profile.remote_id, profile.where, auth="certificate")
                for address in profile.remote_addresses]

    def keyring_peer(self, ring: KeyringMode, peer: KeyringPeer,
                     profile: ProfileMode | None) -> IkePeer | None:
        name = f"crypto ikev2 keyring {ring.name} peer {peer.name}"
        if peer.address is None:
            self.error(f"{name} needs 'address A' (espd matches IKE peers by address)",
                       peer.where)
            return None
        local = peer.psk.get("local", peer.psk.get("both"))
        remote = peer.psk.get("remote", peer.psk.get("both"))
        if local is None or remote is None:
            self.error(f"{name} needs 'pre-shared-key KEY' (or both 'pre-shared-key local "
                       f"KEY' and 'pre-shared-key remote KEY')", peer.where)
            return None
        remote_id = profile.remote_id if profile else None
        return IkePeer(f"{ring.name}/{peer.name}", peer.address, local, remote,
                       profile.local_id if profile else None, remote_id or peer.identity,
                       peer.where)
