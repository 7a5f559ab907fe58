"""Interop: espd's ESP against scapy's SecurityAssociation, an independent implementation.

Every transform espd offers, every outer/inner family, tunnel and transport mode, raw ESP
and ESP-in-UDP (RFC 3948), in both directions:

* espd encapsulates, scapy decrypts, and the inner packet comes back byte for byte;
* scapy encrypts, espd decapsulates, and the inner packet comes back byte for byte;
* extended sequence numbers across the 2^32 boundary, both ways;
* wrong keys, wrong SPIs and tampered packets are refused with the right drop reason;
* the outer header espd writes (DSCP/ECN, DF, protocol, UDP checksum, ESP padding) is
  checked field by field against the RFCs, with checksums computed here, independently;
* ECN on decapsulation follows RFC 6040.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

import pytest
from scapy.layers.inet import IP, UDP, IPOption_Router_Alert
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
from scapy.layers.ipsec import (
    ESP,
    NAT_KEEPALIVE,
    NON_ESP,
    IPSecIntegrityError,
    SecurityAssociation,
    _ESPPlain,
)
from scapy.packet import Raw
from support.packets import checksum, udp

from espd.config.transforms import parse_transform
from espd.dataplane import Dataplane, DropError
from espd.dataplane.testing import set_seq

# every test here runs on each AEAD backend (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("crypto_backend")

# --- the matrix ---------------------------------------------------------------------------

_SCAPY_AUTH = {
    "esp-sha-hmac": "HMAC-SHA1-96",
    "esp-sha256-hmac": "SHA2-256-128",
    "esp-sha384-hmac": "SHA2-384-192",
    "esp-sha512-hmac": "SHA2-512-256",
}


@dataclass(frozen=True)
class Tf:
    """An espd transform and its scapy spelling."""

    name: str  # IOS name, as espd takes it
    crypt: str  # scapy CRYPT_ALGOS name
    auth: str | None  # scapy AUTH_ALGOS name; None for AEADs

    @property
    def t(self):
        return parse_transform(self.name)

    @property
    def align(self) -> int:
        """ESP payload alignment: the cipher block for CBC, 4 bytes otherwise (RFC 4303 2.4)."""
        return 16 if self.crypt == "AES-CBC" else 4

    @property
    def iv_len(self) -> int:
        return self.t.iv_len

    def __str__(self) -> str:
        return self.name.replace(" ", "_")


TFS = (
    [Tf(f"esp-gcm {bits}", "AES-GCM", None) for bits in (128, 192, 256)]
    + [Tf("esp-chacha20-poly1305", "CHACHA20-POLY1305", None)]
    + [Tf(f"esp-aes {bits} {h}", "AES-CBC", a) for bits in (128, 192, 256)
       for h, a in _SCAPY_AUTH.items()]
    + [Tf(f"esp-null {h}", "NULL", a) for h, a in _SCAPY_AUTH.items()]
)
TF_BY_NAME = {t.name: t for t in TFS}


@dataclass(frozen=True)
class Geo:
    """Where ESP goes: mode, outer family, inner family, raw ESP or UDP 4500."""

    mode: str
    outer: int
    inner: int
    encap: str

    def __str__(self) -> str:
        if self.mode == "tunnel":
            return f"tunnel-{self.inner}in{self.outer}-{self.encap}"
        return f"transport-v{self.outer}-{self.encap}"


TUNNEL_GEOS = [Geo("tunnel", o, i, e) for o in (4, 6) for i in (4, 6) for e in ("esp", "udp")]
TRANSPORT_GEOS = [Geo("transport", f, f, e) for f in (4, 6) for e in ("esp", "udp")]
GEOS = TUNNEL_GEOS + TRANSPORT_GEOS
GEO = {str(g): g for g in GEOS}

SPI_OUT = 0x00001001
SPI_IN = 0x00002002
LOCAL = {4: "192.0.2.1", 6: "2001:db8::1"}  # espd's address
PEER = {4: "198.51.100.2", 6: "2001:db8:ffff::2"}  # scapy's address
OTHER = {4: "192.0.2.99", 6: "2001:db8::99"}  # nobody's
INNER_A = {4: "10.1.0.1", 6: "fd00:1::1"}  # behind espd
INNER_B = {4: "10.2.0.1", 6: "fd00:2::1"}  # behind scapy
NATT = 4500

# Payload sizes 0..16 hit every pad length for 4- and 16-byte alignment; then big ones.
SIZES = (*range(17), 255, 1024, 1500)
# Sequence numbers for scapy -> espd: in order, reordered within the window, big jumps.
SEQS = (1, 2, 3, 5, 4, 6, 9, 8, 7, 64, 63, 65, 1000, 1023, 1100, 70000, 2**31 - 1, 2**31,
        2**32 - 2, 2**32 - 1)
assert len(SIZES) == len(SEQS)

ECN_NOT_ECT, ECN_ECT1, ECN_ECT0, ECN_CE = 0, 1, 2, 3
ECN_NAMES = {ECN_NOT_ECT: "not-ect", ECN_ECT1: "ect1", ECN_ECT0: "ect0", ECN_CE: "ce"}


# --- helpers --------------------------------------------------------------------------------

def keys(tf: Tf, salt: str = "") -> tuple[bytes, bytes]:
    """Deterministic (cipher key incl. salt, auth key) for a transform."""
    rng = random.Random(f"{tf.name}/{salt}")
    return rng.randbytes(tf.t.key_len), rng.randbytes(tf.t.auth_key_len)


def flip(data: bytes, index: int, bit: int = 0x01) -> bytes:
    b = bytearray(data)
    b[index] ^= bit
    return bytes(b)


def payload(n: int, salt: int = 0) -> bytes:
    return bytes((i * 31 + n + salt) & 0xFF for i in range(n))


def espd_sa(tf: Tf, geo: Geo, direction: str, key: bytes, auth_key: bytes, *,
            spi: int | None = None, esn: bool = False, **kw) -> tuple[Dataplane, object]:
    dp = Dataplane()
    sa = dp.add_sa(
        spi=spi or (SPI_OUT if direction == "out" else SPI_IN), direction=direction,
        transform=tf.name, key=key, auth_key=auth_key, mode=geo.mode, encap=geo.encap,
        local=LOCAL[geo.outer], peer=PEER[geo.outer], esn=esn, **kw,
    )
    return dp, sa


def scapy_sa(tf: Tf, geo: Geo, key: bytes, auth_key: bytes, *, toward_espd: bool,
             spi: int | None = None, outer_tos: int = 0, outer_dst: str | None = None,
             esn_en: bool = False) -> SecurityAssociation:
    """scapy's end of the SA: sending toward espd (espd's inbound SA) or receiving from it."""
    tunnel = None
    if geo.mode == "tunnel":
        src, dst = (PEER, LOCAL) if toward_espd else (LOCAL, PEER)
        dst_addr = outer_dst or dst[geo.outer]
        if geo.outer == 4:
            tunnel = IP(src=src[4], dst=dst_addr, tos=outer_tos)
        else:
            tunnel = IPv6(src=src[6], dst=dst_addr, tc=outer_tos)
    return SecurityAssociation(
        ESP, spi=spi or (SPI_IN if toward_espd else SPI_OUT),
        crypt_algo=tf.crypt, crypt_key=key or None,
        auth_algo=tf.auth, auth_key=auth_key or None,
        tunnel_header=tunnel,
        nat_t_header=UDP(sport=NATT, dport=NATT) if geo.encap == "udp" else None,
        esn_en=esn_en,
    )


def ip_of(family: int, data: bytes):
    return IP(data) if family == 4 else IPv6(data)


def make_inner(geo: Geo, size: int, *, toward_espd: bool, tos: int = 0, df: bool = False,
               ident: int = 0x1234, dst: str | None = None) -> bytes:
    """An inner packet: for tunnel mode between the protected networks, for transport mode
    between the two SA endpoints. UDP ports that scapy binds to nothing (no DNS dissection)."""
    fam = geo.inner
    if geo.mode == "transport":
        src, dst_ = (PEER[fam], LOCAL[fam]) if toward_espd else (LOCAL[fam], PEER[fam])
    else:
        src, dst_ = (INNER_B[fam], INNER_A[fam]) if toward_espd else (INNER_A[fam], INNER_B[fam])
    if fam == 4:
        ip = IP(src=src, dst=dst or dst_, tos=tos, id=ident, flags="DF" if df else 0, ttl=63)
    else:
        ip = IPv6(src=src, dst=dst or dst_, tc=tos, fl=0xBEEF + ident, hlim=63)
    return bytes(ip / UDP(sport=40000 + ident % 1000, dport=40001) / Raw(payload(size, ident)))


def scapy_open(peer: SecurityAssociation, geo: Geo, wire: bytes, *, spi: int, seq: int,
               esn: int | None = None) -> bytes:
    """scapy decrypts what espd sent; checks the ESP header on the way."""
    pkt = ip_of(geo.outer, wire)
    assert pkt.haslayer(ESP), pkt.summary()
    if geo.encap == "udp":
        assert pkt.haslayer(UDP) and pkt[UDP].dport == NATT
    assert pkt[ESP].spi == spi
    assert pkt[ESP].seq == seq & 0xFFFFFFFF
    if esn is None:
        got = peer.decrypt(pkt)
    else:
        got = peer.decrypt(pkt, esn_en=True, esn=esn)
    return bytes(got)


def scapy_seal(peer: SecurityAssociation, geo: Geo, inner: bytes, seq: int) -> bytes:
    """scapy encrypts `inner` with the 64-bit sequence number `seq` (high bits via ESN)."""
    peer.seq_num = seq & 0xFFFFFFFF  # set directly: scapy treats an argument of 0 as unset
    peer.esn = seq >> 32
    return bytes(peer.encrypt(ip_of(geo.inner, inner)))


def espd_plain(tf: Tf, key: bytes, auth_key: bytes, esp_bytes: bytes, *, esn: int = 0,
               esn_en: bool = False) -> _ESPPlain:
    """scapy's view of an ESP packet's cleartext: data, padding, pad length, next header."""
    sa = SecurityAssociation(ESP, spi=SPI_OUT, crypt_algo=tf.crypt, crypt_key=key or None,
                             auth_algo=tf.auth, auth_key=auth_key or None)
    esp = ESP(esp_bytes)
    if tf.auth:
        sa.auth_algo.verify(esp, sa.auth_key, esn_en=esn_en, esn=esn)
    icv = sa.crypt_algo.icv_size or sa.auth_algo.icv_size
    return sa.crypt_algo.decrypt(sa, esp, sa.crypt_key, icv, esn_en=esn_en, esn=esn)


def ip_split(wire: bytes) -> tuple[int, int]:
    """(bytes of IP header(s) in front of ESP, the protocol after them), walking IPv6
    extension headers the way transport-mode ESP places itself (RFC 4303 3.1.1)."""
    if wire[0] >> 4 == 4:
        return (wire[0] & 0x0F) * 4, wire[9]
    nh, off = wire[6], 40
    seen_routing = False
    while nh in (0, 43) or (nh == 60 and not seen_routing):
        seen_routing |= nh == 43
        nh, off = wire[off], off + (wire[off + 1] + 1) * 8
    return off, nh


def ip_hdr_len(wire: bytes) -> int:
    return ip_split(wire)[0]


def check_udp(geo: Geo, wire: bytes, sport: int = NATT, dport: int = NATT) -> None:
    """RFC 3948 UDP header: ports, length, zero checksum over IPv4, a valid one over IPv6."""
    off = ip_hdr_len(wire)
    dgram = wire[off:]
    s, d, length, chk = struct.unpack("!HHHH", dgram[:8])
    assert (s, d) == (sport, dport)
    assert length == len(dgram)
    if geo.outer == 4:
        assert chk == 0, "RFC 3948 2.1: the UDP checksum over IPv4 is sent as zero"
    else:
        assert chk != 0, "RFC 8200 8.1: a UDP checksum over IPv6 must not be zero"
        pseudo = wire[8:40] + struct.pack("!IxxxB", len(dgram), 17)
        assert checksum(pseudo + dgram) == 0, "UDP checksum over IPv6 does not verify"
        # and scapy, computing it from scratch, agrees
        p = IPv6(wire)
        want = p[UDP].chksum
        del p[UDP].chksum
        assert IPv6(bytes(p))[UDP].chksum == want


# --- (1) espd encap -> scapy decrypt --------------------------------------------------------

@pytest.mark.parametrize("geo", GEOS, ids=str)
@pytest.mark.parametrize("tf", TFS, ids=str)
def test_espd_encap_scapy_decrypt(tf: Tf, geo: Geo) -> None:
    key, akey = keys(tf, str(geo))
    dp, out = espd_sa(tf, geo, "out", key, akey)
    peer = scapy_sa(tf, geo, key, akey, toward_espd=False)

    inners = [make_inner(geo, n, toward_espd=False, ident=i) for i, n in enumerate(SIZES)]
    wires = dp.encap_batch(inners, out)
    for seq, (inner, wire) in enumerate(zip(inners, wires, strict=True), 1):
        assert isinstance(wire, bytes), f"size {len(inner)}: {wire}"
        got = scapy_open(peer, geo, wire, spi=SPI_OUT, seq=seq)
        assert got == inner, f"seq {seq}, inner {len(inner)} bytes"

    # sequence numbers further out (the counter placed by the test hook)
    for start in (2**16 - 1, 2**31 - 1, 2**32 - 2):
        set_seq(out, start)
        inner = make_inner(geo, 77, toward_espd=False, ident=start % 1000)
        wire = dp.encap(out, inner)
        assert scapy_open(peer, geo, wire, spi=SPI_OUT, seq=start + 1) == inner
    assert dp.stats(out)["packets"] == len(SIZES) + 3
    assert dp.stats(out)["seq"] == 2**32 - 1


# --- (2) scapy encrypt -> espd decap --------------------------------------------------------

@pytest.mark.parametrize("geo", GEOS, ids=str)
@pytest.mark.parametrize("tf", TFS, ids=str)
def test_scapy_encrypt_espd_decap(tf: Tf, geo: Geo) -> None:
    key, akey = keys(tf, str(geo))
    dp, sa_in = espd_sa(tf, geo, "in", key, akey)
    peer = scapy_sa(tf, geo, key, akey, toward_espd=True)

    wire = b""
    for i, (n, seq) in enumerate(zip(SIZES, SEQS, strict=True)):
        inner = make_inner(geo, n, toward_espd=True, ident=i)
        wire = bytes(peer.encrypt(ip_of(geo.inner, inner), seq_num=seq))
        assert dp.decap(wire) == inner, f"seq {seq}, inner {len(inner)} bytes"
    stats = dp.stats(sa_in)
    assert stats["packets"] == len(SIZES)
    assert stats["seq"] == max(SEQS)
    assert not stats["drops"]

    with pytest.raises(DropError) as e:  # the last one again
        dp.decap(wire)
    assert e.value.reason == "replay_dup"


# --- (3) extended sequence numbers across 2^32 ----------------------------------------------

ESN_GEOS = [GEO["tunnel-4in4-esp"], GEO["tunnel-6in6-udp"], GEO["transport-v4-udp"],
            GEO["transport-v6-esp"]]


@pytest.mark.parametrize("start_hi", [0, 6], ids=lambda h: f"hi{h}")
@pytest.mark.parametrize("geo", ESN_GEOS, ids=str)
@pytest.mark.parametrize("tf", TFS, ids=str)
def test_esn_espd_encap_scapy_decrypt(tf: Tf, geo: Geo, start_hi: int) -> None:
    key, akey = keys(tf, "esn-out")
    dp, out = espd_sa(tf, geo, "out", key, akey, esn=True)
    peer = scapy_sa(tf, geo, key, akey, toward_espd=False, esn_en=True)
    base = (start_hi << 32) + 2**32 - 2
    set_seq(out, base)
    ivs = set()
    for k, seq in enumerate(range(base + 1, base + 5)):
        inner = make_inner(geo, 40 + k, toward_espd=False, ident=k)
        wire = dp.encap(out, inner)
        hi = seq >> 32
        # the high bits are authenticated: the neighbouring subspace must not verify
        with pytest.raises(IPSecIntegrityError):
            scapy_open(peer, geo, wire, spi=SPI_OUT, seq=seq, esn=hi + 1)
        assert scapy_open(peer, geo, wire, spi=SPI_OUT, seq=seq, esn=hi) == inner
        esp = ip_of(geo.outer, wire)[ESP]
        ivs.add(bytes(esp.data[: tf.iv_len]))
    if tf.iv_len:
        assert len(ivs) == 4, "an IV repeated across the 2^32 boundary"
    assert dp.stats(out)["seq"] == base + 4


@pytest.mark.parametrize("geo", ESN_GEOS, ids=str)
@pytest.mark.parametrize("tf", TFS, ids=str)
def test_esn_scapy_encrypt_espd_decap(tf: Tf, geo: Geo) -> None:
    key, akey = keys(tf, "esn-in")
    dp, sa_in = espd_sa(tf, geo, "in", key, akey, esn=True, replay_window=1024)
    peer = scapy_sa(tf, geo, key, akey, toward_espd=True, esn_en=True)
    set_seq(sa_in, 2**32 - 2)  # window top just below the boundary

    def send(seq: int, size: int = 33) -> tuple[bytes, bytes]:
        inner = make_inner(geo, size, toward_espd=True, ident=seq % 997)
        return inner, scapy_seal(peer, geo, inner, seq)

    accepted = [2**32 - 1, 2**32, 2**32 + 1, 2**32 - 7, 2**32 + 1000, 2**32 + 3, 2**32 - 20]
    for seq in accepted:
        inner, wire = send(seq)
        assert dp.decap(wire) == inner, f"seq {seq:#x}"
    assert dp.stats(sa_in)["seq"] == 2**32 + 1000

    # seq_lo 5 now means 2^32 + 5; sealed with high bits 0 it must fail authentication
    inner, wire = send(5)
    with pytest.raises(DropError) as e:
        dp.decap(wire)
    assert e.value.reason == "auth_failed"
    inner, wire = send(2**32 + 5)  # and the failed attempt did not mark 2^32 + 5 as seen
    assert dp.decap(wire) == inner

    inner, wire = send(2**32)  # a replay across the boundary
    with pytest.raises(DropError) as e:
        dp.decap(wire)
    assert e.value.reason == "replay_dup"

    # far up: window top 7 * 2^32 + 10, the window spans the previous subspace
    set_seq(sa_in, 7 * 2**32 + 10)
    for seq in (7 * 2**32 - 5, 7 * 2**32 + 11, 7 * 2**32 + 2):
        inner, wire = send(seq)
        assert dp.decap(wire) == inner, f"seq {seq:#x}"


@pytest.mark.parametrize(
    "tf", [TF_BY_NAME["esp-gcm 256"], TF_BY_NAME["esp-aes 128 esp-sha-hmac"]], ids=str)
def test_no_esn_sequence_number_never_cycles(tf: Tf) -> None:
    geo = GEO["tunnel-4in4-esp"]
    key, akey = keys(tf)
    dp, out = espd_sa(tf, geo, "out", key, akey)
    peer = scapy_sa(tf, geo, key, akey, toward_espd=False)
    set_seq(out, 2**32 - 2)
    inner = make_inner(geo, 10, toward_espd=False)
    assert scapy_open(peer, geo, dp.encap(out, inner), spi=SPI_OUT, seq=2**32 - 1) == inner
    with pytest.raises(DropError) as e:
        dp.encap(out, inner)
    assert e.value.reason == "seq_cycled"


# --- (4) wrong key, wrong SPI, tampering ----------------------------------------------------

FAIL_GEOS = [GEO["tunnel-4in6-esp"], GEO["tunnel-6in4-udp"], GEO["transport-v4-esp"],
             GEO["transport-v6-udp"]]


@pytest.mark.parametrize("geo", FAIL_GEOS, ids=str)
@pytest.mark.parametrize("tf", TFS, ids=str)
def test_wrong_key_spi_and_tampering(tf: Tf, geo: Geo) -> None:
    key, akey = keys(tf, "fail")
    dp, sa_in = espd_sa(tf, geo, "in", key, akey)
    drops: dict[str, int] = {}

    def refused(wire: bytes, reason: str) -> None:
        with pytest.raises(DropError) as e:
            dp.decap(wire)
        assert e.value.reason == reason
        drops[reason] = drops.get(reason, 0) + 1

    inner = make_inner(geo, 100, toward_espd=True)
    good = scapy_sa(tf, geo, key, akey, toward_espd=True)

    # the integrity key is wrong (for AEADs the key, and separately only the salt)
    if tf.auth:
        wrongs = [(key, flip(akey, 0))]
    else:
        wrongs = [(flip(key, 0), akey), (flip(key, len(key) - 1), akey)]  # key; salt
    for k, a in wrongs:
        bad = scapy_sa(tf, geo, k, a, toward_espd=True)
        refused(scapy_seal(bad, geo, inner, 10), "auth_failed")

    # an SPI espd does not know, and the right SPI to another destination
    other = scapy_sa(tf, geo, key, akey, toward_espd=True, spi=SPI_IN + 1)
    refused(scapy_seal(other, geo, inner, 10), "unknown_spi")
    if geo.mode == "tunnel":
        elsewhere = scapy_sa(tf, geo, key, akey, toward_espd=True, outer_dst=OTHER[geo.outer])
        refused(scapy_seal(elsewhere, geo, inner, 10), "unknown_spi")

    # one flipped bit anywhere from the sequence number to the end of the ICV
    wire = scapy_seal(good, geo, inner, 10)
    esp_at = ip_hdr_len(wire) + (8 if geo.encap == "udp" else 0)
    esp_len = len(wire) - esp_at
    for off in (4, 7, 8, 8 + tf.iv_len, esp_len // 2, esp_len - tf.t.icv_len - 1, esp_len - 1):
        refused(flip(wire, esp_at + off, 0x80), "auth_failed")
    refused(flip(wire, esp_at + 3), "unknown_spi")

    # none of that moved the window: the genuine packet still passes, once
    assert dp.decap(wire) == inner
    refused(wire, "replay_dup")
    assert dp.stats(sa_in)["drops"] == {r: n for r, n in drops.items() if r != "unknown_spi"}

    # and the other way: scapy with the wrong key refuses what espd sends
    dpo, out = espd_sa(tf, geo, "out", key, akey)
    wire = dpo.encap(out, make_inner(geo, 100, toward_espd=False))
    k, a = (key, flip(akey, 5)) if tf.auth else (flip(key, 5), akey)
    wrong_peer = scapy_sa(tf, geo, k, a, toward_espd=False)
    with pytest.raises(IPSecIntegrityError):
        scapy_open(wrong_peer, geo, wire, spi=SPI_OUT, seq=1)


def test_encap_mismatch_keepalive_and_non_esp_marker() -> None:
    tf = TF_BY_NAME["esp-gcm 128"]
    key, akey = keys(tf)
    geo_udp, geo_esp = GEO["tunnel-4in4-udp"], GEO["tunnel-4in4-esp"]
    dp, _ = espd_sa(tf, geo_udp, "in", key, akey)
    inner = make_inner(geo_esp, 20, toward_espd=True)
    raw = scapy_seal(scapy_sa(tf, geo_esp, key, akey, toward_espd=True), geo_esp, inner, 1)
    with pytest.raises(DropError) as e:
        dp.decap(raw)
    assert e.value.reason == "encap_mismatch"
    udp = scapy_seal(scapy_sa(tf, geo_udp, key, akey, toward_espd=True), geo_udp, inner, 1)
    assert dp.decap(udp) == inner
    for pkt, reason in ((UDP(sport=NATT, dport=NATT) / NAT_KEEPALIVE(), "nat_keepalive"),
                        (UDP(sport=NATT, dport=NATT) / NON_ESP() / Raw(b"ike!" * 8),
                         "non_esp_marker")):
        with pytest.raises(DropError) as e:
            dp.decap(bytes(IP(src=PEER[4], dst=LOCAL[4]) / pkt))
        assert e.value.reason == reason


# --- (5) the outer header -------------------------------------------------------------------

DSCPS = (0, 10, 46, 63)


@pytest.mark.parametrize("ecn", list(ECN_NAMES), ids=ECN_NAMES.get)
@pytest.mark.parametrize("geo", TUNNEL_GEOS, ids=str)
def test_tunnel_outer_header(geo: Geo, ecn: int) -> None:
    tf = TF_BY_NAME["esp-gcm 128"]
    key, akey = keys(tf)
    dp, out = espd_sa(tf, geo, "out", key, akey)
    peer = scapy_sa(tf, geo, key, akey, toward_espd=False)
    seq = 0
    for dscp in DSCPS:
        for df in ((False, True) if geo.inner == 4 else (False,)):
            seq += 1
            tos = dscp << 2 | ecn
            inner = make_inner(geo, 64, toward_espd=False, tos=tos, df=df)
            wire = dp.encap(out, inner)
            proto = 17 if geo.encap == "udp" else 50
            if geo.outer == 4:
                h = IP(wire)
                assert (h.version, h.ihl) == (4, 5)
                assert h.tos == tos, "DSCP and ECN are copied (RFC 6040 normal mode)"
                assert h.len == len(wire)
                assert bool(h.flags.DF) == df, "DF is copied from an IPv4 inner packet"
                assert not h.flags.MF and h.frag == 0
                assert h.ttl == 64 and h.proto == proto
                assert (h.src, h.dst) == (LOCAL[4], PEER[4])
                assert checksum(wire[:20]) == 0, "outer IPv4 header checksum"
            else:
                h = IPv6(wire)
                assert h.version == 6
                assert h.tc == tos, "DSCP and ECN are copied (RFC 6040 normal mode)"
                assert h.plen == len(wire) - 40
                assert h.nh == proto and h.hlim == 64
                assert (h.src, h.dst) == (LOCAL[6], PEER[6])
            if geo.encap == "udp":
                check_udp(geo, wire)
            assert scapy_open(peer, geo, wire, spi=SPI_OUT, seq=seq) == inner


@pytest.mark.parametrize("geo", TRANSPORT_GEOS, ids=str)
def test_transport_header(geo: Geo) -> None:
    """Transport mode keeps the packet's own header; only protocol/length/checksum change."""
    tf = TF_BY_NAME["esp-aes 256 esp-sha256-hmac"]
    key, akey = keys(tf)
    dp, out = espd_sa(tf, geo, "out", key, akey)
    peer = scapy_sa(tf, geo, key, akey, toward_espd=False)
    inner = make_inner(geo, 200, toward_espd=False, tos=0xB9, df=True, ident=77)
    wire = dp.encap(out, inner)
    a, b = ip_of(geo.outer, inner), ip_of(geo.outer, wire)
    proto = 17 if geo.encap == "udp" else 50
    if geo.outer == 4:
        for f in ("tos", "id", "flags", "frag", "ttl", "src", "dst"):
            assert getattr(b, f) == getattr(a, f), f
        assert b.proto == proto and b.len == len(wire)
        assert checksum(wire[:20]) == 0
    else:
        for f in ("tc", "fl", "hlim", "src", "dst"):
            assert getattr(b, f) == getattr(a, f), f
        assert b.nh == proto and b.plen == len(wire) - 40
    if geo.encap == "udp":
        check_udp(geo, wire)
    got = ip_of(geo.outer, scapy_open(peer, geo, wire, spi=SPI_OUT, seq=1))
    assert bytes(got) == inner
    assert got[UDP].sport == a[UDP].sport and got[UDP].load == a[UDP].load


@pytest.mark.parametrize("family", [4, 6], ids=lambda f: f"v{f}")
def test_udp_encap_custom_ports(family: int) -> None:
    tf = TF_BY_NAME["esp-chacha20-poly1305"]
    geo = Geo("tunnel", family, family, "udp")
    key, akey = keys(tf)
    dp, out = espd_sa(tf, geo, "out", key, akey, sport=4501, dport=61000)
    wire = dp.encap(out, make_inner(geo, 31, toward_espd=False))
    check_udp(geo, wire, 4501, 61000)


PAD_GEOS = [GEO["tunnel-4in4-esp"], GEO["tunnel-6in6-udp"], GEO["transport-v4-udp"],
            GEO["transport-v6-esp"]]


@pytest.mark.parametrize("geo", PAD_GEOS, ids=str)
@pytest.mark.parametrize("tf", TFS, ids=str)
def test_esp_padding(tf: Tf, geo: Geo) -> None:
    """RFC 4303 2.4: minimal padding 1, 2, 3, ... to 4 bytes (AEAD, NULL) or the block."""
    key, akey = keys(tf, "pad")
    dp, out = espd_sa(tf, geo, "out", key, akey)
    seen = set()
    for n in range(tf.align):
        inner = make_inner(geo, n, toward_espd=False)
        wire = dp.encap(out, inner)
        esp_at = ip_hdr_len(wire) + (8 if geo.encap == "udp" else 0)
        plain = espd_plain(tf, key, akey, wire[esp_at:])
        data = bytes(plain.data)
        protected = inner if geo.mode == "tunnel" else inner[ip_hdr_len(inner):]
        assert data == protected
        assert plain.padlen == -(len(data) + 2) % tf.align, "padding is not minimal"
        assert bytes(plain.padding) == bytes(range(1, plain.padlen + 1))
        nh = {4: 4, 6: 41}[geo.inner] if geo.mode == "tunnel" else 17
        assert plain.nh == nh
        icv = tf.t.icv_len
        assert len(wire) - esp_at == 8 + tf.iv_len + len(data) + plain.padlen + 2 + icv
        assert (len(data) + plain.padlen + 2) % tf.align == 0
        seen.add(plain.padlen)
    assert seen == set(range(tf.align))


def _seal_custom(tf: Tf, key: bytes, akey: bytes, geo: Geo, data: bytes, seq: int,
                 padding: bytes | None = None, nh: int | None = None) -> bytes:
    """Tunnel-mode ESP with chosen contents (TFC padding, non-minimal or wrong padding, a
    chosen next header), sealed by scapy's primitives; minimal padding when none is given."""
    sa = scapy_sa(tf, geo, key, akey, toward_espd=True)
    if padding is None:
        padding = bytes(range(1, -(len(data) + 2) % tf.align + 1))
    plain = _ESPPlain(spi=SPI_IN, seq=seq, iv=sa.crypt_algo.generate_iv(), data=Raw(data),
                      padding=padding, padlen=len(padding),
                      nh={4: 4, 6: 41}[geo.inner] if nh is None else nh)
    esp = sa.crypt_algo.encrypt(sa, plain, sa.crypt_key, sa.crypt_icv_size)
    sa.auth_algo.sign(esp, sa.auth_key)
    outer = IP(src=PEER[4], dst=LOCAL[4]) if geo.outer == 4 else IPv6(src=PEER[6], dst=LOCAL[6])
    return bytes(outer / esp)


@pytest.mark.parametrize("tf", [TF_BY_NAME[n] for n in (
    "esp-gcm 256", "esp-chacha20-poly1305", "esp-aes 128 esp-sha-hmac",
    "esp-null esp-sha512-hmac")], ids=str)
def test_decap_accepts_long_padding_refuses_bad(tf: Tf) -> None:
    """A sender may pad beyond the minimum (RFC 4303 2.4, up to 255); the bytes must be 1, 2, 3."""
    geo = GEO["tunnel-4in4-esp"]
    key, akey = keys(tf, "longpad")
    dp, _ = espd_sa(tf, geo, "in", key, akey)
    inner = make_inner(geo, 50, toward_espd=True)  # 78 bytes
    seq = 0
    for extra in (0, 1, 2, 4, 5):
        base = -(len(inner) + 2) % tf.align
        n = base + extra * tf.align
        if n > 255:
            continue
        seq += 1
        wire = _seal_custom(tf, key, akey, geo, inner, seq, bytes(range(1, n + 1)))
        assert dp.decap(wire) == inner, f"pad {n}"
    n = -(len(inner) + 2) % tf.align + tf.align  # the biggest aligned pad that fits a byte
    while n + tf.align <= 255:
        n += tf.align
    seq += 1
    assert dp.decap(_seal_custom(tf, key, akey, geo, inner, seq, bytes(range(1, n + 1)))) == inner
    seq += 1
    n = -(len(inner) + 2) % tf.align + tf.align
    wrong = bytes(range(1, n)) + b"\0"  # 1, 2, ..., n-1, then 0 instead of n
    with pytest.raises(DropError) as e:
        dp.decap(_seal_custom(tf, key, akey, geo, inner, seq, wrong))
    assert e.value.reason == "bad_padding"


@pytest.mark.parametrize("geo", [GEO["tunnel-4in4-esp"], GEO["tunnel-6in6-esp"],
                                 GEO["tunnel-4in6-esp"]], ids=str)
@pytest.mark.parametrize("tf", [TF_BY_NAME[n] for n in (
    "esp-gcm 192", "esp-aes 256 esp-sha512-hmac", "esp-null esp-sha-hmac")], ids=str)
def test_decap_tfc_padding_and_dummy(tf: Tf, geo: Geo) -> None:
    """RFC 4303 2.7: bytes after the inner packet are TFC padding; 2.6: next header 59 is a
    dummy packet, dropped silently."""
    key, akey = keys(tf, "tfc")
    dp, sa_in = espd_sa(tf, geo, "in", key, akey)
    inner = make_inner(geo, 21, toward_espd=True)
    for seq, tfc in enumerate((1, 3, 16, 200), 1):
        wire = _seal_custom(tf, key, akey, geo, inner + bytes(tfc), seq)
        assert dp.decap(wire) == inner, f"{tfc} bytes of TFC padding"
    with pytest.raises(DropError) as e:
        dp.decap(_seal_custom(tf, key, akey, geo, payload(40), 10, nh=59))
    assert e.value.reason == "dummy"
    with pytest.raises(DropError) as e:  # a transport-mode payload on a tunnel-mode SA
        dp.decap(_seal_custom(tf, key, akey, geo, inner[ip_hdr_len(inner):], 11, nh=17))
    assert e.value.reason == "bad_next_header"


@pytest.mark.parametrize("geo", GEOS, ids=str)
def test_decap_ignores_link_layer_trailer(geo: Geo) -> None:
    """Bytes past the outer IP length (Ethernet minimum-frame padding) are not part of it."""
    tf = TF_BY_NAME["esp-aes 128 esp-sha256-hmac"]
    key, akey = keys(tf)
    dp, _ = espd_sa(tf, geo, "in", key, akey)
    peer = scapy_sa(tf, geo, key, akey, toward_espd=True)
    for seq, n in enumerate((0, 5, 18), 1):
        inner = make_inner(geo, n, toward_espd=True)
        assert dp.decap(scapy_seal(peer, geo, inner, seq) + bytes(n + 1)) == inner


# --- IPv4 options and IPv6 extension headers in transport mode ------------------------------

def _transport_special(family: int, toward_espd: bool, size: int, variant: str) -> bytes:
    src, dst = (PEER[family], LOCAL[family]) if toward_espd else (LOCAL[family], PEER[family])
    l4 = UDP(sport=40000, dport=40001) / Raw(payload(size))
    if family == 4:
        return bytes(IP(src=src, dst=dst, id=5, options=[IPOption_Router_Alert()]) / l4)
    if variant == "hbh-dst":
        return bytes(IPv6(src=src, dst=dst) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / l4)
    # hop-by-hop, routing, then destination options: ESP goes after the routing header
    return bytes(IPv6(src=src, dst=dst) / IPv6ExtHdrHopByHop() /
                 IPv6ExtHdrRouting(addresses=[], segleft=0) / IPv6ExtHdrDestOpt() / l4)


def _v6_udp_from_raw(wire: bytes) -> bytes:
    """Move scapy's raw transport-mode ESP behind the same IPv6 headers plus UDP 4500, with
    a valid checksum (scapy itself misplaces the UDP header after extension headers)."""
    hl, _ = ip_split(wire)
    nh_off, off, nh = 6, 40, wire[6]
    while off < hl:
        nh_off, nh, off = off, wire[off], off + (wire[off + 1] + 1) * 8
    assert nh == 50
    esp = wire[hl:]
    hdr = bytearray(wire[:hl])
    hdr[nh_off] = 17
    struct.pack_into("!H", hdr, 4, len(hdr) - 40 + 8 + len(esp))
    dgram = udp(NATT, NATT, esp)
    chk = checksum(bytes(hdr[8:40]) + struct.pack("!IxxxB", len(dgram), 17) + dgram) or 0xFFFF
    return bytes(hdr) + dgram[:6] + struct.pack("!H", chk) + dgram[8:]


@pytest.mark.parametrize("encap", ["esp", "udp"])
@pytest.mark.parametrize("variant", ["v4-options", "v6-hbh-dst", "v6-hbh-rt-dst"])
@pytest.mark.parametrize(
    "tf", [TF_BY_NAME["esp-gcm 256"], TF_BY_NAME["esp-aes 192 esp-sha384-hmac"]], ids=str)
def test_transport_options_and_extension_headers(tf: Tf, variant: str, encap: str) -> None:
    family = 4 if variant.startswith("v4") else 6
    geo = Geo("transport", family, family, encap)
    raw_geo = Geo("transport", family, family, "esp")
    scapy_geo = raw_geo if family == 6 else geo  # see _v6_udp_from_raw
    key, akey = keys(tf, variant)
    sizes = (0, 1, 2, 3, 500)

    dp, out = espd_sa(tf, geo, "out", key, akey)
    peer = scapy_sa(tf, scapy_geo, key, akey, toward_espd=False)
    for seq, n in enumerate(sizes, 1):
        inner = _transport_special(family, False, n, variant[3:])
        wire = dp.encap(out, inner)
        hl = ip_hdr_len(inner)
        assert ip_hdr_len(wire) == hl, "ESP goes after the same headers"
        if encap == "udp":
            check_udp(geo, wire)
        if family == 6 and encap == "udp":
            plain = espd_plain(tf, key, akey, wire[hl + 8:])
            assert bytes(plain.data) == inner[hl:] and plain.nh == ip_split(inner)[1]
            assert IPv6(wire).plen == len(wire) - 40
            continue
        assert scapy_open(peer, scapy_geo, wire, spi=SPI_OUT, seq=seq) == inner

    dp, _ = espd_sa(tf, geo, "in", key, akey)
    peer = scapy_sa(tf, scapy_geo, key, akey, toward_espd=True)
    for seq, n in enumerate(sizes, 1):
        inner = _transport_special(family, True, n, variant[3:])
        wire = scapy_seal(peer, scapy_geo, inner, seq)
        if family == 6 and encap == "udp":
            wire = _v6_udp_from_raw(wire)
            check_udp(geo, wire)
        assert dp.decap(wire) == inner


# --- (6) ECN on decapsulation (RFC 6040 4.2) ------------------------------------------------

def rfc6040_decap(inner: int, outer: int) -> int | None:
    """RFC 6040 Figure 4; None = drop."""
    if outer == ECN_CE:
        return None if inner == ECN_NOT_ECT else ECN_CE
    if outer == ECN_ECT1 and inner == ECN_ECT0:
        return ECN_ECT1
    return inner


@pytest.mark.parametrize("outer_ecn", list(ECN_NAMES), ids=lambda e: f"outer-{ECN_NAMES[e]}")
@pytest.mark.parametrize("inner_ecn", list(ECN_NAMES), ids=lambda e: f"inner-{ECN_NAMES[e]}")
@pytest.mark.parametrize("geo", [g for g in TUNNEL_GEOS if g.encap == "esp"], ids=str)
def test_ecn_decap_rfc6040(geo: Geo, inner_ecn: int, outer_ecn: int) -> None:
    tf = TF_BY_NAME["esp-gcm 128"]
    key, akey = keys(tf)
    dp, sa_in = espd_sa(tf, geo, "in", key, akey)
    outer_dscp, inner_dscp = 46, 10  # the outer DSCP must not leak into the inner packet
    peer = scapy_sa(tf, geo, key, akey, toward_espd=True, outer_tos=outer_dscp << 2 | outer_ecn)
    inner = make_inner(geo, 100, toward_espd=True, tos=inner_dscp << 2 | inner_ecn)
    wire = scapy_seal(peer, geo, inner, 1)
    outer = ip_of(geo.outer, wire)
    assert (outer.tos if geo.outer == 4 else outer.tc) & 3 == outer_ecn

    want = rfc6040_decap(inner_ecn, outer_ecn)
    if want is None:
        with pytest.raises(DropError) as e:
            dp.decap(wire)
        assert e.value.reason == "ecn_drop"
        assert dp.stats(sa_in)["drops"] == {"ecn_drop": 1}
        return
    got = dp.decap(wire)
    p = ip_of(geo.inner, inner)
    if geo.inner == 4:
        p.tos = inner_dscp << 2 | want
        del p.chksum
    else:
        p.tc = inner_dscp << 2 | want
    expected = bytes(ip_of(geo.inner, bytes(p)))
    assert got == expected
    if geo.inner == 4:
        assert checksum(got[:20]) == 0, "inner IPv4 checksum after the ECN update"
