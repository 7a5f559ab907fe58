"""The inbound outer source (RFC 4301 5.2: the SA's peer is its expected source).

An inbound SA drops ESP from any other address as `wrong_source`, before the ICV is
computed; in UDP the source port must be the SA's remote port too, unless the SA allows a
port change (IKE behind a NAT: "address") or any source ("any", a peer whose address moves).
The ICV does not cover the outer header, so these packets would otherwise decapsulate.
"""

from __future__ import annotations

import ipaddress
import os
import struct

import pytest

from espd.config.model import peer_source_check
from espd.dataplane import Dataplane, DataplaneError, DropError

LOCAL, PEER, OTHER = "192.0.2.2", "192.0.2.1", "192.0.2.99"


def csum(b: bytes) -> int:
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def inner() -> bytes:
    udp = struct.pack("!HHHH", 1234, 80, 8 + 40, 0) + bytes(40)
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                              ipaddress.IPv4Address("10.0.0.1").packed,
                              ipaddress.IPv4Address("10.1.0.1").packed))
    struct.pack_into("!H", h, 10, csum(bytes(h)))
    return bytes(h) + udp


def pair(encap: str = "esp", source_check: str = "strict"):
    key = os.urandom(36)
    a, b = Dataplane(), Dataplane()
    out = a.add_sa(spi=0x2001, direction="out", transform="esp-gcm 256", key=key,
                   local=PEER, peer=LOCAL, encap=encap, sport=31000, dport=4500)
    inb = b.add_sa(spi=0x2001, direction="in", transform="esp-gcm 256", key=key,
                   local=LOCAL, peer=PEER, encap=encap, sport=4500, dport=31000,
                   source_check=source_check)
    return a, out, b, inb


def rewrite(packet: bytes, src: str | None = None, sport: int | None = None) -> bytes:
    p = bytearray(packet)
    if src is not None:
        p[12:16] = ipaddress.IPv4Address(src).packed
        p[10:12] = b"\0\0"
        struct.pack_into("!H", p, 10, csum(bytes(p[:20])))
    if sport is not None:
        struct.pack_into("!H", p, 20, sport)
    return bytes(p)


def reason(dp: Dataplane, packet: bytes) -> str:
    with pytest.raises(DropError) as e:
        dp.decap(packet)
    return e.value.reason


def test_esp_from_another_address_is_dropped_and_counted() -> None:
    a, out, b, inb = pair()
    good, spoofed = a.encap(out, inner()), a.encap(out, inner())
    assert reason(b, rewrite(spoofed, src=OTHER)) == "wrong_source"
    assert b.stats(inb)["drops"] == {"wrong_source": 1}
    assert b.global_drops()["in"]["wrong_source"] == 1
    assert b.decap(good) == inner()  # the window did not move for the spoofed one


def test_udp_port_change_is_refused_when_strict_accepted_for_address() -> None:
    a, out, b, inb = pair("udp", "strict")
    assert reason(b, rewrite(a.encap(out, inner()), sport=40000)) == "wrong_source"
    assert b.decap(a.encap(out, inner())) == inner()

    a, out, b, inb = pair("udp", "address")
    assert b.decap(rewrite(a.encap(out, inner()), sport=40000)) == inner()
    assert reason(b, rewrite(a.encap(out, inner()), src=OTHER)) == "wrong_source"


def test_any_source_accepts_a_moved_peer() -> None:
    a, out, b, inb = pair("udp", "any")
    assert b.decap(rewrite(a.encap(out, inner()), src=OTHER, sport=40000)) == inner()


def test_unknown_source_check_is_refused() -> None:
    with pytest.raises(DataplaneError, match="source_check"):
        Dataplane().add_sa(spi=0x2001, direction="in", transform="esp-gcm 256",
                           key=bytes(36), local=LOCAL, peer=PEER, source_check="loose")


def test_defaults_manual_strict_ike_nat_keeps_the_address() -> None:
    assert peer_source_check("auto", "udp", False) == "strict"  # manual SAs: never NAT
    assert peer_source_check("auto", "esp", True) == "strict"
    assert peer_source_check("auto", "udp", True) == "address"  # IKE with NAT detected
    assert peer_source_check("any", "udp", True) == "any"
    assert peer_source_check("strict", "udp", True) == "strict"


TOML = """\
[daemon]
local = "192.0.2.1"

[access_list.101]
rules = ["permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255"]

[transform_set.STRONG]
transforms = ["esp-gcm 256"]

[[crypto_map]]
name = "armadillo"
seq = 10
peer = "192.0.2.2"
match_address = "101"
transform_set = "STRONG"
encapsulation = "udp"
{extra}
inbound = {{ spi = 0x1000, key = "{key}" }}
outbound = {{ spi = 0x2000, key = "{key2}" }}
"""


def plan_of(tmp_path, extra: str):
    from espd.config.load import load
    from espd.policy.plan import build_plan

    path = tmp_path / "espd.toml"
    path.write_text(TOML.format(extra=extra, key="ab" * 36, key2="cd" * 36))
    return build_plan(load(str(path)))


def test_toml_peer_source_reaches_the_inbound_sa(tmp_path) -> None:
    assert {s.source_check for s in plan_of(tmp_path, "").sas} == {"strict"}
    assert {s.source_check for s in plan_of(tmp_path, 'peer_source = "any"').sas} == {"any"}
    from espd.config.model import ConfigError

    with pytest.raises(ConfigError, match="peer_source.*write \"auto\" or \"strict\""):
        plan_of(tmp_path, 'peer_source = "loose"')
