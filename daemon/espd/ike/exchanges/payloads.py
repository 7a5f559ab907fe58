"""Conversions between the codec's payloads and the engine's proposals, selectors and
identities, and the small payload builders every exchange uses."""

from __future__ import annotations

import hashlib
import ipaddress

from espd.ike import codec
from espd.ike.auth.names import dn_matches, parse_dn
from espd.ike.codec import NotifyType, TransformAttr
from espd.ike.codec.dn import decode_dn
from espd.ike.proposals import Proposal, Transform
from espd.ike.sa.ike_sa import Endpoint
from espd.ike.settings import Identity
from espd.policy.selectors import TrafficSelector

_ID_TYPES = {"ipv4": codec.IdType.IPV4_ADDR, "ipv6": codec.IdType.IPV6_ADDR,
             "fqdn": codec.IdType.FQDN, "rfc822": codec.IdType.RFC822_ADDR,
             "key-id": codec.IdType.KEY_ID, "dn": codec.IdType.DER_ASN1_DN}


def to_wire_proposal(proposal: Proposal) -> codec.Proposal:
    transforms = tuple(
        codec.Transform(t.type, t.id,
                        (codec.Attribute(TransformAttr.KEY_LENGTH, t.key_bits),)
                        if t.key_bits else ())
        for t in proposal.transforms)
    return codec.Proposal(proposal.number, proposal.protocol, proposal.spi, transforms)


def from_wire_proposal(proposal: codec.Proposal) -> Proposal:
    return Proposal(proposal.number, int(proposal.protocol), proposal.spi,
                    tuple(Transform(int(t.type), int(t.id), t.key_length or 0)
                          for t in proposal.transforms))


def sa_payload(proposals: tuple[Proposal, ...] | list[Proposal]) -> codec.SecurityAssociation:
    return codec.SecurityAssociation(tuple(to_wire_proposal(p) for p in proposals))


def proposals_of(sa: codec.SecurityAssociation) -> tuple[Proposal, ...]:
    return tuple(from_wire_proposal(p) for p in sa.proposals)


def to_wire_selectors(side: tuple[TrafficSelector, ...]) -> tuple[codec.TrafficSelector, ...]:
    return tuple(codec.TrafficSelector(ts.start, ts.end, ts.protocol, ts.start_port,
                                       ts.end_port) for ts in side)


def from_wire_selectors(payload: codec.TsInitiator | codec.TsResponder | None
                        ) -> tuple[TrafficSelector, ...]:
    """Selectors espd can use; opaque types (FC, SECLABEL) and malformed ranges dropped."""
    if payload is None:
        return ()
    out = []
    for ts in payload.selectors:
        if not isinstance(ts, codec.TrafficSelector):
            continue
        try:
            out.append(TrafficSelector(ts.ip_protocol, ts.start_port, ts.end_port, ts.start,
                                       ts.end))
        except ValueError:
            continue
    return tuple(out)


def identity_payload(cls: type, identity: Identity):
    """IDi/IDr for ``identity``."""
    kind = _ID_TYPES[identity.kind]
    if kind in (codec.IdType.IPV4_ADDR, codec.IdType.IPV6_ADDR):
        return cls(kind, ipaddress.ip_address(identity.value).packed)
    if kind == codec.IdType.KEY_ID:
        return cls(kind, bytes.fromhex(identity.value))
    if kind == codec.IdType.DER_ASN1_DN:
        return cls(kind, parse_dn(identity.value).public_bytes())
    return cls(kind, identity.value.encode("ascii"))


def identity_of(payload) -> Identity | None:
    """The identity an IDi/IDr names, or None for a type espd does not match on."""
    kind = {v: k for k, v in _ID_TYPES.items()}.get(payload.id_type)
    try:
        if kind in ("ipv4", "ipv6"):
            return Identity(kind, str(ipaddress.ip_address(payload.data)))
        if kind == "key-id":
            return Identity(kind, payload.data.hex())
        if kind == "dn":
            return Identity(kind, decode_dn(payload.data).rfc4514_string())
        if kind is not None:
            return Identity(kind, payload.data.decode("ascii"))
    except ValueError:  # codec.ParseError is one too
        return None
    return None


def same_identity(a: Identity, b: Identity) -> bool:
    if a.kind != b.kind:
        return False
    if a.kind in ("ipv4", "ipv6"):
        return ipaddress.ip_address(a.value) == ipaddress.ip_address(b.value)
    if a.kind == "key-id":
        return a.value.lower() == b.value.lower()
    if a.kind == "dn":  # a is what we expect, b what the peer sent (decoded, RFC 4514)
        return dn_matches(a.value, parse_dn(b.value))
    return a.value.lower() == b.value.lower() if a.kind == "fqdn" else a.value == b.value


def address_identity(endpoint: Endpoint) -> Identity:
    return Identity("ipv4" if endpoint.address.version == 4 else "ipv6", str(endpoint.address))


def notify(kind: NotifyType, data: bytes = b"", protocol: int = 0,
           spi: bytes = b"") -> codec.Notify:
    return codec.Notify(kind, data, protocol, spi)


def nat_hash(spi_i: bytes, spi_r: bytes, endpoint: Endpoint) -> bytes:
    """RFC 7296 2.23: SHA-1(SPIi | SPIr | IP | port) of NAT_DETECTION_*_IP."""
    return hashlib.sha1(spi_i + spi_r + endpoint.address.packed
                        + endpoint.port.to_bytes(2, "big")).digest()


def nat_notifies(spi_i: bytes, spi_r: bytes, local: Endpoint, remote: Endpoint,
                 fake: bool = False) -> tuple[codec.Notify, codec.Notify]:
    """NAT_DETECTION_SOURCE_IP (ours) and _DESTINATION_IP (theirs). ``fake`` sends a
    source hash that cannot match, so the peer sees a NAT and both float to UDP 4500
    (``encapsulation = "udp"``; strongSwan's ``encap = yes`` does the same)."""
    source = nat_hash(spi_i, spi_r, local)
    if fake:
        source = hashlib.sha1(b"espd forces UDP encapsulation" + source).digest()
    return (notify(NotifyType.NAT_DETECTION_SOURCE_IP, source),
            notify(NotifyType.NAT_DETECTION_DESTINATION_IP, nat_hash(spi_i, spi_r, remote)))


def nat_detected(message: codec.Message, spi_i: bytes, spi_r: bytes, local: Endpoint,
                 remote: Endpoint) -> tuple[bool, bool]:
    """(we are behind a NAT, the peer is) from a message's NAT_DETECTION notifies
    (both False when the peer sent none: it does not do NAT traversal)."""
    sources = [n.data for n in message.all(codec.Notify)
               if n.type == NotifyType.NAT_DETECTION_SOURCE_IP]
    destination = message.notify(NotifyType.NAT_DETECTION_DESTINATION_IP)
    if not sources or destination is None:
        return False, False
    local_behind = destination.data != nat_hash(spi_i, spi_r, local)
    remote_behind = nat_hash(spi_i, spi_r, remote) not in sources
    return local_behind, remote_behind


def errors_text(message: codec.Message) -> str:
    return ", ".join(_notify_name(n.type) for n in message.errors)


def _notify_name(kind: int) -> str:
    try:
        return NotifyType(kind).name
    except ValueError:
        return f"error notify {kind}"
