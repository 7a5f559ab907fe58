"""The IOS command words espd reads, per mode: abbreviations, and which mode a line is in.

IOS takes any unambiguous prefix of a keyword (``int gi0/0``, ``ip add``, ``cry map``,
``set trans``) and ignores indentation: it knows the mode from the commands before. Each
mode here is a tree of the keywords valid in it: a dict from keyword to what may follow,
``ARG`` for a value (a name, number or address), ``REST`` (None) for words that are never
expanded (key material, names lists, values), ``END`` for nothing more. Only keywords of
commands espd reads are in the trees: an abbreviation valid in IOS for another command is,
by IOS's own rule, no prefix of these (it would be ambiguous there), so it is left alone
and skipped like any other command espd does not read.
"""

from __future__ import annotations

import re

from espd.config.model import quote

ARG = "<value>"
REST = None
END: dict = {}

_SESSION_KEY_PAIR: dict = {}
_SESSION_KEY_PAIR.update({"cipher": {ARG: _SESSION_KEY_PAIR},
                          "authenticator": {ARG: _SESSION_KEY_PAIR}})
_SESSION_KEY = {"esp": {ARG: _SESSION_KEY_PAIR}, "ah": REST}
_ACL_RULE = {"permit": REST, "deny": REST, "remark": REST}
_IDENTITY = {"address": REST, "fqdn": REST, "email": REST, "key-id": REST, "dn": END}
_AUTHENTICATION = {"pre-share": END, "rsa-sig": END, "ecdsa-sig": END}

GLOBAL = {
    "access-list": {ARG: {**_ACL_RULE, "dynamic": REST}},
    "ip": {"access-list": {"standard": {ARG: END}, "extended": {ARG: END}}},
    "ipv6": {"access-list": {ARG: END}},
    "crypto": {
        "ipsec": {"transform-set": {ARG: REST}},
        "map": {ARG: {"local-address": REST,
                      ARG: {"ipsec-manual": END, "ipsec-isakmp": {"dynamic": REST}}}},
        "ikev2": {**{w: {ARG: END} for w in ("proposal", "policy", "keyring", "profile")},
                  **{w: REST for w in ("dpd", "cookie-challenge", "limit", "nat",
                                       "fragmentation", "window", "diagnose", "http-url",
                                       "redirect", "certificate-cache")}},
        "isakmp": {w: REST for w in ("policy", "key", "keepalive", "identity", "nat",
                                     "invalid-spi-recovery", "aggressive-mode")},
        "ca": REST,
        "pki": {"trustpoint": {ARG: END}, "certificate": {"chain": {ARG: END}, "map": REST},
                **{w: REST for w in ("token", "server", "profile", "crl", "import",
                                     "export", "authenticate", "enroll")}},
    },
    "interface": REST,
    "configure": {"terminal": END},  # a pasted config's first line
    "end": END,
    "exit": END,
}
ACL = {**_ACL_RULE, "sequence": {ARG: _ACL_RULE}, ARG: _ACL_RULE}  # ARG: "10 permit ..."
TRANSFORM_SET = {"mode": {"tunnel": {"require": END}, "transport": {"require": END}}}
CRYPTO_MAP = {
    "set": {
        "peer": {ARG: END},
        "transform-set": REST,
        "pfs": REST,
        "ikev2-profile": {ARG: END},
        "isakmp-profile": REST,
        "security-association": {
            "lifetime": {"seconds": REST, "kilobytes": REST},
            "replay": {"window-size": REST, "disable": END},
            "level": REST,
        },
        "session-key": {"inbound": _SESSION_KEY, "outbound": _SESSION_KEY},
    },
    "match": {"address": {ARG: END}},
    "description": REST,
    **{w: REST for w in ("reverse-route", "qos", "dialer")},  # IOS's: espd refuses them
}
INTERFACE = {
    "ip": {"address": {ARG: {ARG: {"secondary": END}}}},
    "ipv6": {"address": REST},
    "crypto": {"map": {ARG: END}},
}
IKEV2_PROPOSAL = {w: REST for w in ("encryption", "integrity", "prf", "group")}
IKEV2_POLICY = {"proposal": {ARG: END}, "match": REST}
IKEV2_KEYRING = {"peer": {ARG: END}, "address": REST, "pre-shared-key": REST,
                 "identity": _IDENTITY, "hostname": REST, "description": REST}
IKEV2_PROFILE = {
    "match": {"identity": {"remote": _IDENTITY}, "fvrf": REST, "address": REST,
              "certificate": REST},
    "identity": {"local": _IDENTITY},
    "authentication": {"local": _AUTHENTICATION, "remote": _AUTHENTICATION},
    "keyring": {"local": {ARG: END}},
    "lifetime": REST,
    "dpd": REST,
    "description": REST,
    "pki": {"trustpoint": REST},
    **{w: REST for w in ("aaa", "config-exchange", "ivrf", "nat", "redirect",
                         "virtual-template")},  # IOS's: espd refuses them
}
PKI_TRUSTPOINT = {w: REST for w in ("enrollment", "revocation-check", "rsakeypair",
                                    "eckeypair", "subject-name", "subject-alt-name", "fqdn",
                                    "ip-address", "serial-number", "password", "usage",
                                    "auto-enroll", "hash", "description", "chain-validation",
                                    "crl", "ocsp", "match", "source")}
PKI_CHAIN = {"certificate": {"ca": REST, ARG: END}, "quit": END}
ISAKMP_POLICY = {
    "encryption": {"aes": REST, "des": END, "3des": END},  # IOS prints it as "encr"
    "hash": {w: END for w in ("sha", "md5", "sha256", "sha384", "sha512")},
    "group": REST,
    "authentication": {"pre-share": END, "rsa-sig": END, "rsa-encr": END},
    "lifetime": REST,
}

# Global IOS commands espd does not read but that end an interface sub-mode when they
# come unindented (IOS: they are not interface commands); compared whole.
GLOBAL_ONLY = frozenset((
    "hostname", "version", "service", "enable", "username", "line", "router", "boot",
    "banner", "logging", "ntp", "snmp-server", "aaa", "clock", "control-plane", "key",
    "class-map", "policy-map", "route-map", "dial-peer", "vlan", "vtp", "archive", "alias",
    "privilege", "spanning-tree", "license", "redundancy", "voice", "object-group",
    "track", "event", "kron", "scheduler", "mac", "errdisable", "lldp", "end", "exit",
    "dialer-list", "access-list", "interface",
))
IP_GLOBAL_ONLY = frozenset((  # after "ip" / "ipv6"
    "route", "access-list", "domain-name", "domain", "domain-lookup", "name-server", "http",
    "ssh", "cef", "classless", "subnet-zero", "host", "forward-protocol", "prefix-list",
    "default-gateway", "routing", "unicast-routing", "sla", "scp", "ftp", "tftp", "radius",
    "tacacs", "bootp", "finger", "source-route", "multicast-routing", "community-list",
    "as-path", "dns", "local", "general-prefix", "dhcp-server", "inspect",
))
INTERFACE_TYPES = (
    "Async", "ATM", "BVI", "Cellular", "Dialer", "Ethernet", "FastEthernet",
    "GigabitEthernet", "Loopback", "Multilink", "Null", "Port-channel", "Serial",
    "TenGigabitEthernet", "Tunnel", "Virtual-Template", "Vlan",
)
_INTERFACE_NAME = re.compile(r"([A-Za-z][A-Za-z-]*)\s*([0-9][0-9/.:]*)")


class Ambiguous(ValueError):
    """A prefix of more than one keyword valid at its place; says which."""

    def __init__(self, word: str, candidates: list[str], before: list[str]) -> None:
        where = f" after {quote(' '.join(before), 60)}" if before else ""  # hex: HEX
        *most, last = sorted(candidates)
        super().__init__(f"{quote(word)}{where} is ambiguous: it abbreviates "
                         f"{', '.join(most)} and {last}; write more of the word")


def _keyword(word: str, node: dict, before: list[str]) -> str | None:
    """The keyword of ``node`` that ``word`` spells or abbreviates (None: not one)."""
    lower = word.lower()
    keywords = [k for k in node if k != ARG]
    if lower in keywords:
        return lower
    candidates = [k for k in keywords if k.startswith(lower)]
    if len(candidates) > 1:
        raise Ambiguous(word, candidates, before)
    return candidates[0] if candidates else None


def walk(words: list[str], tree: dict) -> tuple[list[str], bool]:
    """(words with every keyword abbreviation spelled out, True if the whole line is a
    command of ``tree``). Words after an unknown one are left as they are."""
    out: list[str] = []
    node: dict | None = tree
    for i, word in enumerate(words):
        if node is REST:
            return out + words[i:], True
        keyword = _keyword(word, node, out)
        if keyword is not None:
            out.append(keyword)
            node = node[keyword]
        elif ARG in node:
            out.append(word)
            node = node[ARG]
        else:
            return out + words[i:], False
    return out, True


def expand(words: list[str], tree: dict) -> list[str]:
    return walk(words, tree)[0]


def first_keyword(words: list[str], tree: dict) -> str | None:
    """The keyword of ``tree`` the line starts with (or abbreviates), else None."""
    return _keyword(words[0], tree, [])


def ends_interface(words: list[str]) -> bool:
    """True if an unindented line after ``interface X`` is a global command (IOS would
    leave the interface for it): one espd reads, or one of GLOBAL_ONLY. Anything else
    stays in the interface, where what espd does not read is skipped."""
    if words[0].lower() == "no" and len(words) > 1:
        words = words[1:]
    if walk(words, INTERFACE)[1]:
        return False
    head = words[0].lower()
    if head in GLOBAL_ONLY:
        return True
    keyword = first_keyword(words, GLOBAL)
    if keyword in ("ip", "ipv6"):
        return len(words) > 1 and (words[1].lower() in IP_GLOBAL_ONLY
                                   or walk(words[:2], GLOBAL)[1])
    return keyword is not None


_BANNER_TYPES = ("motd", "login", "exec", "incoming", "slip-ppp", "prompt-timeout",
                 "config-save")


def banner_opened(line: str) -> str | None:
    """For ``banner [TYPE] D text...``: the delimiter D if the banner's text goes on to
    later lines (until one holds D), else None. The text is free: never read as commands.
    ``show running-config`` writes the delimiter as ``^C``."""
    words = line.split(maxsplit=1)
    if len(words) < 2 or words[0].lower() != "banner":
        return None
    rest = words[1]
    kind, _, text = rest.partition(" ")
    if kind.lower() in _BANNER_TYPES:
        rest = text.strip()
    if not rest:
        return None
    delimiter = "^C" if rest.startswith("^C") else rest[0]
    return None if delimiter in rest[len(delimiter):] else delimiter


def interface_name(text: str) -> str:
    """IOS's name for an interface as written: ``gi0/0`` and ``Gi 0/0`` are
    GigabitEthernet0/0. A type that is unknown or ambiguous stays as written."""
    found = _INTERFACE_NAME.fullmatch(text.strip())
    if not found:
        return text
    kind = found.group(1).lower()
    names = [t for t in INTERFACE_TYPES if t.lower() == kind] or [
        t for t in INTERFACE_TYPES if t.lower().startswith(kind)]
    return names[0] + found.group(2) if len(names) == 1 else text
