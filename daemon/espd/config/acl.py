"""Parse one Cisco IOS access-list rule into an AclEntry.

Standard rules: ``permit|deny SRC [WILDCARD]``. Extended rules:
``permit|deny PROTO SRC [PORTS] DST [PORTS] [log]``. An address is ``any``, ``host A``,
``A WILDCARD`` (IPv4, wildcards may be non-contiguous) or a prefix ``A/LEN`` (IPv4 or
IPv6). PORTS is ``eq P [P ...]``, ``neq P``, ``lt P``, ``gt P`` or ``range P Q``.
"""

from __future__ import annotations

import ipaddress

from espd.config.model import _LONG_HEX, AclEntry, AddressMatch, IPAddress, Location, PortRange

PROTOCOLS: dict[str, int | None] = {
    "ip": None, "ipv6": None, "icmp": 1, "igmp": 2, "ipinip": 4, "tcp": 6, "udp": 17,
    "gre": 47, "esp": 50, "ahp": 51, "eigrp": 88, "ospf": 89, "pim": 103, "sctp": 132,
}
ICMPV6 = 58  # "icmp" in an IPv6 rule
PORT_PROTOCOLS = (6, 17, 132)

PORTS = {
    "echo": 7, "discard": 9, "ftp-data": 20, "ftp": 21, "ssh": 22, "telnet": 23, "smtp": 25,
    "domain": 53, "bootps": 67, "bootpc": 68, "tftp": 69, "www": 80, "http": 80,
    "pop3": 110, "sunrpc": 111, "ntp": 123, "snmp": 161, "snmptrap": 162, "bgp": 179,
    "https": 443, "isakmp": 500, "syslog": 514, "non500-isakmp": 4500,
}
_PORT_OPERATORS = ("eq", "neq", "lt", "gt", "range")
_IGNORED = ("log", "log-input")
_EXAMPLE = "'permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255'"


class AclError(ValueError):
    """A rule espd cannot parse; the message says what to write instead."""


# An address as written, before the rule's IP version is known: (address, wildcard),
# or None for "any".
_Pending = tuple[IPAddress, int] | None


def parse_rule(text: str, where: Location, kind: str | None = None,
               version: int | None = None) -> AclEntry:
    """Parse ``text``; ``kind`` "standard"/"extended" forces the syntax, None guesses it.

    ``version`` forces the IP version (an IPv6 ACL); else the addresses or the protocol
    word decide it, and "any any" is IPv4 unless the protocol is "ipv6".
    """
    words = text.split()
    text = _LONG_HEX.sub("HEX", " ".join(words))  # one line, and never key material
    if not words or words[0] not in ("permit", "deny"):
        raise AclError(f"'{text}': a rule starts with 'permit' or 'deny', e.g. {_EXAMPLE}")
    action, rest = words[0], words[1:]
    if not rest:
        raise AclError(f"'{text}': nothing after '{action}'; e.g. {_EXAMPLE}")
    extended = kind == "extended" or (kind is None and _is_protocol(rest[0]))
    if extended:
        protocol_word = rest.pop(0).lower()
        protocol = _protocol(protocol_word)
        src, src_ports = _address(rest, text, wildcard_optional=False), _ports(rest, text)
        dst, dst_ports = _address(rest, text, wildcard_optional=False), _ports(rest, text)
    else:
        protocol_word, protocol = "ip", None
        src, src_ports = _address(rest, text, wildcard_optional=True), ()
        dst, dst_ports = None, ()
    while rest and rest[0].lower() in _IGNORED:
        rest.pop(0)
    if rest:
        raise AclError(f"'{text}': '{rest[0]}' is not supported in crypto ACLs; "
                       f"match on protocol, addresses and ports only")
    if (src_ports or dst_ports) and protocol not in PORT_PROTOCOLS:
        raise AclError(f"'{text}': ports need protocol tcp, udp or sctp, not '{protocol_word}'")
    version = _version(src, dst, protocol_word, text, version)
    if version == 6 and protocol_word == "icmp":
        protocol = ICMPV6
    return AclEntry(action, protocol, _match(src, version), src_ports,
                    _match(dst, version), dst_ports, text=text, where=where)


def _is_protocol(word: str) -> bool:
    return word.lower() in PROTOCOLS or word.isdigit()


def _protocol(word: str) -> int | None:
    if word in PROTOCOLS:
        return PROTOCOLS[word]
    if word.isdigit() and int(word) <= 255:
        return int(word) or None  # IOS prints protocol 0 as "ip"
    names = ", ".join(PROTOCOLS)
    raise AclError(f"'{word}' is not a protocol; write one of {names} or a number 0-255")


def _address(words: list[str], text: str, wildcard_optional: bool) -> _Pending:
    """Consume one address from ``words``."""
    if not words:
        raise AclError(f"'{text}': an address is missing; write 'any', 'host A', "
                       f"'A WILDCARD' or 'A/LEN'")
    word = words.pop(0)
    if word == "any":
        return None
    if word == "host":
        if not words:
            raise AclError(f"'{text}': 'host' needs an address, e.g. 'host 192.0.2.1'")
        return _ip(words.pop(0), text), 0
    if "/" in word:
        try:
            net = ipaddress.ip_network(word, strict=False)
        except ValueError:
            raise AclError(f"'{text}': '{word}' is not a prefix; write e.g. "
                           f"'10.1.0.0/16' or '2001:db8::/32'") from None
        return net.network_address, int(net.hostmask)
    address = _ip(word, text)
    if address.version == 6:
        raise AclError(f"'{text}': IPv6 addresses take a prefix length or 'host'; "
                       f"write '{address}/128' or 'host {address}'")
    if words and _looks_ipv4(words[0]):
        return _wildcarded(address, ipaddress.IPv4Address(words.pop(0)), text)
    if wildcard_optional:
        return address, 0
    raise AclError(f"'{text}': {address} needs a wildcard, e.g. '{address} 0.0.0.255', "
                   f"or write 'host {address}' or '{address}/24'")


def _wildcarded(address: IPAddress, wildcard: IPAddress, text: str) -> tuple[IPAddress, int]:
    """Apply an IPv4 wildcard; refuse a subnet mask written where a wildcard belongs."""
    bits = int(wildcard)
    inverted = ~bits & 0xFFFFFFFF
    looks_like_mask = bits not in (0, 0xFFFFFFFF) and inverted & (inverted + 1) == 0
    if looks_like_mask and int(address) & bits:
        prefix = bin(bits).count("1")
        cidr = ipaddress.IPv4Network((int(address), prefix), strict=False)
        raise AclError(
            f"'{text}': {wildcard} is a subnet mask, but ACLs take a wildcard (the inverted "
            f"mask); write '{cidr.network_address} {cidr.hostmask}' or '{cidr}'"
        )
    return ipaddress.IPv4Address(int(address) & ~bits & 0xFFFFFFFF), bits


def _ports(words: list[str], text: str) -> tuple[PortRange, ...]:
    """Consume an optional port operator and its ports."""
    if not words or words[0] not in _PORT_OPERATORS:
        return ()
    operator = words.pop(0)
    if operator == "eq":
        ports = []
        while words and _is_port(words[0]):
            port = _port(words.pop(0), text)
            ports.append((port, port))
        if not ports:
            raise AclError(f"'{text}': 'eq' needs a port, e.g. 'eq 443' or 'eq https'")
        return tuple(ports)
    count = 2 if operator == "range" else 1
    if len(words) < count or not all(_is_port(w) for w in words[:count]):
        raise AclError(f"'{text}': '{operator}' needs {count} port(s), e.g. "
                       f"'{operator} {' '.join(['1024', '65535'][:count])}'")
    values = [_port(words.pop(0), text) for _ in range(count)]
    if operator == "range":
        low, high = values
    elif operator == "lt":
        low, high = 0, values[0] - 1
    elif operator == "gt":
        low, high = values[0] + 1, 65535
    else:  # neq
        ranges = ((0, values[0] - 1), (values[0] + 1, 65535))
        return tuple((lo, hi) for lo, hi in ranges if lo <= hi)
    if low > high:
        raise AclError(f"'{text}': '{operator} {' '.join(map(str, values))}' matches no port")
    return ((low, high),)


def _is_port(word: str) -> bool:
    return word.isdigit() or word.lower() in PORTS


def _port(word: str, text: str) -> int:
    port = PORTS[word.lower()] if word.lower() in PORTS else int(word)
    if port > 65535:
        raise AclError(f"'{text}': port {port} is out of range 0-65535")
    return port


def _ip(word: str, text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(word)
    except ValueError:
        raise AclError(f"'{text}': '{word}' is not an IP address; write 'any', 'host A', "
                       f"'A WILDCARD' or 'A/LEN'") from None


def _looks_ipv4(word: str) -> bool:
    try:
        ipaddress.IPv4Address(word)
    except ValueError:
        return False
    return True


def _version(src: _Pending, dst: _Pending, protocol_word: str, text: str,
             forced: int | None) -> int:
    versions = {a[0].version for a in (src, dst) if a is not None} | ({forced} - {None})
    if len(versions) > 1:
        raise AclError(f"'{text}': mixes IPv4 and IPv6 addresses; write one rule per family")
    version = versions.pop() if versions else 6 if protocol_word == "ipv6" else 4
    if protocol_word == "ipv6" and version == 4:
        raise AclError(f"'{text}': 'ipv6' with IPv4 addresses; write 'ip' instead")
    return version


def _match(pending: _Pending, version: int) -> AddressMatch:
    if version == 4:
        zero, bits = ipaddress.IPv4Address(0), 32
    else:
        zero, bits = ipaddress.IPv6Address(0), 128
    if pending is None:
        return AddressMatch(zero, type(zero)((1 << bits) - 1))
    address, wildcard = pending
    return AddressMatch(address, type(zero)(wildcard))
