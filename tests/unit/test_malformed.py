"""Malformed, truncated and odd outer packets: each is dropped with its precise reason.

Packets with a valid ICV but a bad trailer are built here with the `cryptography`
package (AES-GCM, RFC 4106: nonce = salt || IV, AAD = SPI || seq), so that the data
plane's checks after authentication are reached.
"""

from __future__ import annotations

import os
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.packets import checksum, ipv4, ipv6, udp

from espd.dataplane import Dataplane, DropError

SPI = 0x1001
A4, B4 = "192.0.2.1", "192.0.2.2"  # sender, receiver
A6, B6 = "2001:db8::1", "2001:db8::2"

TRANSFORMS = {  # name: (key bytes, auth key bytes, IV, ICV, block)
    "esp-gcm 256": (36, 0, 8, 16, 4),
    "esp-chacha20-poly1305": (36, 0, 8, 16, 4),
    "esp-aes 128 esp-sha256-hmac": (16, 32, 16, 16, 16),
    "esp-null esp-sha-hmac": (0, 20, 0, 12, 4),
}


# --- packet building ---------------------------------------------------------------


def inner4(n: int = 1, size: int = 64, src: str = "10.0.0.1", dst: str = "10.1.0.1") -> bytes:
    return ipv4(src, dst, 17, udp(1234, 80, struct.pack("!I", n) + bytes(size - 32)))


def inner6(n: int = 1, size: int = 80) -> bytes:
    return ipv6("fd00::1", "fd01::1", 17, udp(1234, 80, struct.pack("!I", n) + bytes(size - 52)))


def fix_len(pkt: bytes) -> bytes:
    """Make the outer header's length fields (IPv4 total / IPv6 payload / UDP) fit pkt."""
    q = bytearray(pkt)
    if q[0] >> 4 == 4:
        hl = (q[0] & 15) * 4
        struct.pack_into("!H", q, 2, len(q))
        struct.pack_into("!H", q, 10, 0)
        struct.pack_into("!H", q, 10, checksum(bytes(q[:hl])))
        if q[9] == 17 and len(q) >= hl + 8:
            struct.pack_into("!H", q, hl + 4, len(q) - hl)
    else:
        struct.pack_into("!H", q, 4, len(q) - 40)
        if q[6] == 17 and len(q) >= 48:
            struct.pack_into("!H", q, 44, len(q) - 40)
    return bytes(q)


def gcm_esp(key: bytes, seq: int, plaintext: bytes, spi: int = SPI,
            iv: bytes | None = None) -> bytes:
    """RFC 4106 ESP: SPI || seq || IV || AES-GCM(salt || IV, plaintext, AAD=SPI||seq) || tag."""
    iv = iv or os.urandom(8)
    aad = struct.pack("!II", spi, seq)
    return aad + iv + AESGCM(key[:-4]).encrypt(key[-4:] + iv, plaintext, aad)


def trailer(body: bytes, nh: int, block: int = 4) -> bytes:
    pad = (block - (len(body) + 2) % block) % block
    return body + bytes(range(1, pad + 1)) + bytes([pad, nh])


# --- data planes -------------------------------------------------------------------


def pair(transform="esp-gcm 256", *, mode="tunnel", encap="esp", family=4, window=64,
         in_encap=None, in_sport=4500):
    kl, al, *_ = TRANSFORMS[transform]
    key, auth = os.urandom(kl), (os.urandom(al) if al else None)
    src, dst = (A4, B4) if family == 4 else (A6, B6)
    a, b = Dataplane(), Dataplane()
    out = a.add_sa(spi=SPI, direction="out", transform=transform, key=key, auth_key=auth,
                   mode=mode, local=src, peer=dst, encap=encap, sport=4500, dport=4500)
    inb = b.add_sa(spi=SPI, direction="in", transform=transform, key=key, auth_key=auth,
                   mode=mode, local=dst, peer=src, encap=in_encap or encap, sport=in_sport,
                   dport=4500, replay_window=window)
    return a, out, b, inb, key


def drop_reason(dp: Dataplane, pkt: bytes) -> str:
    with pytest.raises(DropError) as e:
        dp.decap(pkt)
    return e.value.reason


# --- truncation --------------------------------------------------------------------


@pytest.mark.parametrize("transform", list(TRANSFORMS))
@pytest.mark.parametrize("encap", ["esp", "udp"])
@pytest.mark.parametrize("family", [4, 6])
def test_truncated_at_every_length(transform, encap, family):
    a, out, b, inb, _ = pair(transform, encap=encap, family=family)
    inner = inner4(1, 100) if family == 4 else inner6(1, 100)
    pkt = a.encap(out, inner)
    for n in range(len(pkt)):
        assert drop_reason(b, pkt[:n]) == "malformed", n  # length fields now lie
    assert b.stats(inb)["seq"] == 0
    assert b.decap(pkt) == inner


@pytest.mark.parametrize("transform", list(TRANSFORMS))
@pytest.mark.parametrize("encap", ["esp", "udp"])
@pytest.mark.parametrize("family", [4, 6])
def test_truncated_with_consistent_lengths(transform, encap, family):
    """Truncated, then the length fields fixed up to match: the ESP length check, then the
    ICV, catch each one."""
    _, _, iv, icv, block = TRANSFORMS[transform]
    a, out, b, inb, _ = pair(transform, encap=encap, family=family)
    inner = inner4(1, 100) if family == 4 else inner6(1, 100)
    pkt = a.encap(out, inner)
    hdr = 20 if family == 4 else 40
    esp_at = hdr + (8 if encap == "udp" else 0)
    fixed = 8 + iv + icv
    for n in range(hdr, len(pkt)):
        got = drop_reason(b, fix_len(pkt[:n]))
        esp_len = n - esp_at
        if encap == "udp" and n < hdr + 8:
            want = "malformed"  # no room for the UDP header
        elif encap == "udp" and esp_len == 1 and pkt[esp_at] == 0xFF:
            want = "nat_keepalive"
        elif esp_len < 8:
            want = "malformed"
        elif esp_len < fixed + 2 or (esp_len - fixed) % block:
            want = "bad_length"
        else:
            want = "auth_failed"
        assert got == want, (n, got, want)
    for n in range(hdr):
        assert drop_reason(b, pkt[:n]) == "malformed"
    assert b.stats(inb)["seq"] == 0
    assert b.decap(pkt) == inner


@pytest.mark.parametrize("extra", range(1, 16))
def test_cbc_payload_not_a_block_multiple(extra):
    a, out, b, inb, _ = pair("esp-aes 128 esp-sha256-hmac")
    pkt = a.encap(out, inner4(1, 100))
    assert drop_reason(b, fix_len(pkt + os.urandom(extra))) == "bad_length"
    # removing bytes from the ciphertext (keeping the ICV) as well
    cut = pkt[:-16 - extra] + pkt[-16:]
    assert drop_reason(b, fix_len(cut)) == "bad_length"
    assert b.stats(inb)["drops"] == {"bad_length": 2}
    assert b.decap(pkt) == inner4(1, 100)


def test_esp_header_only():
    a, out, b, inb, _ = pair()
    assert drop_reason(b, ipv4(A4, B4, 50, struct.pack("!II", SPI, 1))) == "bad_length"
    assert drop_reason(b, ipv4(A4, B4, 50, struct.pack("!II", SPI, 1)[:7])) == "malformed"
    assert drop_reason(b, ipv4(A4, B4, 50, b"")) == "malformed"


# --- trailers with a valid ICV ------------------------------------------------------


def crafted(key: bytes, seq: int, plaintext: bytes) -> bytes:
    return ipv4(A4, B4, 50, gcm_esp(key, seq, plaintext))


def test_crafted_packet_is_accepted():
    """The builder itself is right: a well-formed crafted packet passes."""
    a, out, b, inb, key = pair()
    inner = inner4(5)
    assert b.decap(crafted(key, 1, trailer(inner, 4))) == inner
    # a longer (non-minimal) padding is legal too (RFC 4303 2.4)
    body = inner + bytes(range(1, 11)) + bytes([10, 4])
    assert b.decap(crafted(key, 2, body)) == inner


@pytest.mark.parametrize("padlen", [255, 200, 99, 67])
def test_pad_length_past_payload(padlen):
    a, out, b, inb, key = pair()
    body = inner4(1, 64) + bytes(2) + bytes([padlen, 4])  # 68 bytes: padlen <= 66 would fit
    assert drop_reason(b, crafted(key, 1, body)) == "bad_padding"
    assert b.stats(inb)["drops"] == {"bad_padding": 1}
    assert b.stats(inb)["packets"] == 0


def test_pad_length_edges():
    a, out, b, inb, key = pair()
    # padlen == payload - 2: the padding is everything, no inner packet left
    body = bytes(range(1, 63)) + bytes([62, 4])  # 64 bytes
    assert drop_reason(b, crafted(key, 1, body)) == "inner_malformed"
    # padlen == payload - 1: one byte too many
    body = bytes(range(1, 63)) + bytes([63, 4])
    assert drop_reason(b, crafted(key, 2, body)) == "bad_padding"
    assert b.stats(inb)["seq"] == 2  # authenticated packets do move the window
    assert b.stats(inb)["drops"] == {"inner_malformed": 1, "bad_padding": 1}


@pytest.mark.parametrize("wrong_at", range(7))
def test_wrong_padding_bytes(wrong_at):
    a, out, b, inb, key = pair()
    inner = inner4(1, 64)
    pad = bytearray(range(1, 11))  # 64 + 10 + 2 = 76: aligned
    pad[wrong_at] ^= 0x40
    body = inner + bytes(pad) + bytes([10, 4])
    assert drop_reason(b, crafted(key, 1, body)) == "bad_padding"
    # zero padding (as some stacks send) is refused as well
    body = inner + bytes(10) + bytes([10, 4])
    assert drop_reason(b, crafted(key, 2, body)) == "bad_padding"


@pytest.mark.parametrize("nh", [0, 6, 17, 50, 58, 255])
def test_bad_next_header_tunnel(nh):
    a, out, b, inb, key = pair()
    assert drop_reason(b, crafted(key, 1, trailer(inner4(), nh))) == "bad_next_header"


def test_next_header_family_mismatch_tunnel():
    a, out, b, inb, key = pair()
    assert drop_reason(b, crafted(key, 1, trailer(inner4(), 41))) == "inner_malformed"
    assert drop_reason(b, crafted(key, 2, trailer(inner6(), 4))) == "inner_malformed"
    assert b.decap(crafted(key, 3, trailer(inner6(), 41))) == inner6()


def test_bad_next_header_transport():
    a, out, b, inb, key = pair(mode="transport")
    seg = udp(1234, 80, bytes(40))
    for seq, nh in ((1, 4), (2, 41)):
        assert drop_reason(b, crafted(key, seq, trailer(seg, nh))) == "bad_next_header"
    got = b.decap(crafted(key, 3, trailer(seg, 17)))
    assert got[9] == 17 and got[20:] == seg and len(got) == 20 + len(seg)
    assert checksum(got[:20]) == 0


@pytest.mark.parametrize("mode", ["tunnel", "transport"])
def test_dummy_packet(mode):
    a, out, b, inb, key = pair(mode=mode)
    assert drop_reason(b, crafted(key, 1, trailer(os.urandom(37), 59))) == "dummy"
    assert drop_reason(b, crafted(key, 2, trailer(b"", 59))) == "dummy"
    assert b.stats(inb)["drops"] == {"dummy": 2}
    assert b.stats(inb)["packets"] == 0


def test_inner_packet_malformed_tunnel():
    a, out, b, inb, key = pair()
    bad = bytearray(inner4())
    struct.pack_into("!H", bad, 2, len(bad) + 10)  # inner total length past the payload
    assert drop_reason(b, crafted(key, 1, trailer(bytes(bad), 4))) == "inner_malformed"
    assert drop_reason(b, crafted(key, 2, trailer(b"\x45" + bytes(10), 4))) == "inner_malformed"


def test_tfc_padding_after_inner_packet_is_removed():
    """RFC 4303 2.7: bytes after the inner packet's own length are TFC padding."""
    a, out, b, inb, key = pair()
    inner = inner4()
    assert b.decap(crafted(key, 1, trailer(inner + os.urandom(50), 4))) == inner


# --- outer header oddities ----------------------------------------------------------


@pytest.mark.parametrize("flags_frag", [0x2000, 0x0001, 0x2001, 0x1FFF, 0x6000])
def test_outer_ipv4_fragments(flags_frag):
    a, out, b, inb, _ = pair()
    pkt = bytearray(a.encap(out, inner4()))
    struct.pack_into("!H", pkt, 6, flags_frag)
    struct.pack_into("!H", pkt, 10, 0)
    struct.pack_into("!H", pkt, 10, checksum(bytes(pkt[:20])))
    assert drop_reason(b, bytes(pkt)) == "malformed"
    assert b.global_drops()["in"] == {"malformed": 1}


def test_outer_ipv4_df_is_not_a_fragment():
    a, out, b, inb, _ = pair()
    pkt = bytearray(a.encap(out, inner4()))
    struct.pack_into("!H", pkt, 6, 0x4000)
    struct.pack_into("!H", pkt, 10, 0)
    struct.pack_into("!H", pkt, 10, checksum(bytes(pkt[:20])))
    assert b.decap(bytes(pkt)) == inner4()


def test_outer_ipv6_fragment_header():
    a, out, b, inb, _ = pair(family=6)
    pkt = a.encap(out, inner4())
    frag = struct.pack("!BBHI", 50, 0, 0, 1)  # a whole packet in one fragment
    fragged = ipv6(A6, B6, 44, frag + pkt[40:])
    assert drop_reason(b, fragged) == "malformed"


def test_outer_ipv4_options():
    a, out, b, inb, _ = pair()
    pkt = a.encap(out, inner4())
    with_opts = ipv4(A4, B4, 50, pkt[20:], options=b"\x01\x01\x01\x00")
    assert b.decap(with_opts) == inner4()


def test_outer_header_lies():
    a, out, b, inb, _ = pair()
    pkt = a.encap(out, inner4())
    q = bytearray(pkt)
    q[0] = 0x44  # IHL 16 bytes < 20
    assert drop_reason(b, bytes(q)) == "malformed"
    q = bytearray(pkt)
    q[0] = 0x55  # version 5
    assert drop_reason(b, bytes(q)) == "malformed"
    q = bytearray(pkt)
    q[9] = 6  # TCP, not ESP
    assert drop_reason(b, bytes(q)) == "malformed"
    q = bytearray(pkt)
    struct.pack_into("!H", q, 2, 19)  # total length shorter than the header
    assert drop_reason(b, bytes(q)) == "malformed"
    # trailing bytes past the IP total length (Ethernet padding) are ignored
    assert b.decap(pkt + bytes(6)) == inner4()


def test_outer_destination_or_spi_unknown():
    a, out, b, inb, _ = pair()
    pkt = a.encap(out, inner4())
    assert drop_reason(b, ipv4(A4, "192.0.2.99", 50, pkt[20:])) == "unknown_spi"
    for spi in (0, 1, 255, 0x1002):
        assert drop_reason(b, ipv4(A4, B4, 50, struct.pack("!I", spi) + pkt[24:])) == "unknown_spi"
    assert b.global_drops()["in"] == {"unknown_spi": 5}


# --- NAT traversal -----------------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_nat_keepalive_and_non_esp_marker(family):
    a, out, b, inb, _ = pair(encap="udp", family=family)
    src, dst = (A4, B4) if family == 4 else (A6, B6)
    outer = ipv4 if family == 4 else ipv6
    assert drop_reason(b, outer(src, dst, 17, udp(4500, 4500, b"\xff"))) == "nat_keepalive"
    ike = bytes(4) + os.urandom(28)
    assert drop_reason(b, outer(src, dst, 17, udp(4500, 4500, ike))) == "non_esp_marker"
    assert drop_reason(b, outer(src, dst, 17, udp(4500, 4500, bytes(4)))) == "non_esp_marker"
    assert drop_reason(b, outer(src, dst, 17, udp(4500, 4500, b""))) == "malformed"
    assert drop_reason(b, outer(src, dst, 17, udp(4500, 4500, b"\xfe"))) == "malformed"
    # IKE messages are punted to the control plane (test_punt.py), not counted as drops
    assert b.global_drops()["in"] == {"nat_keepalive": 1, "malformed": 2}
    assert [p.data for p in b.punted()] == [ike[4:], b""]
    # the SA is untouched and works
    assert b.decap(a.encap(out, inner4())) == inner4()


def test_udp_length_field_must_match():
    a, out, b, inb, _ = pair(encap="udp")
    pkt = bytearray(a.encap(out, inner4()))
    struct.pack_into("!H", pkt, 24, struct.unpack_from("!H", pkt, 24)[0] - 1)
    assert drop_reason(b, bytes(pkt)) == "malformed"
    struct.pack_into("!H", pkt, 24, 7)
    assert drop_reason(b, bytes(pkt)) == "malformed"


def test_raw_esp_on_udp_sa_and_vice_versa():
    a, out, b, inb, _ = pair(encap="esp", in_encap="udp")
    assert drop_reason(b, a.encap(out, inner4())) == "encap_mismatch"
    a, out, b, inb, _ = pair(encap="udp", in_encap="esp")
    assert drop_reason(b, a.encap(out, inner4())) == "encap_mismatch"
    assert b.stats(inb)["drops"] == {"encap_mismatch": 1}


def test_udp_on_wrong_port():
    a, out, b, inb, _ = pair(encap="udp", in_sport=4501)  # we listen on 4501
    assert drop_reason(b, a.encap(out, inner4())) == "encap_mismatch"


def test_raw_esp_equivalent_of_udp_packet():
    """The same ESP bytes, once wrapped in UDP and once raw: only the matching SA takes it."""
    a, out, b, inb, _ = pair(encap="udp")
    pkt = a.encap(out, inner4())
    raw = ipv4(A4, B4, 50, pkt[28:])
    assert drop_reason(b, raw) == "encap_mismatch"
    assert b.decap(pkt) == inner4()


# --- sizes -------------------------------------------------------------------------


def big_inner(total: int, family: int = 4) -> bytes:
    if family == 4:
        return ipv4("10.0.0.1", "10.1.0.1", 17, udp(1, 2, bytes(total - 28)))
    return ipv6("fd00::1", "fd01::1", 17, udp(1, 2, bytes(total - 48)))


def test_jumbo_inner_too_big():
    a, out, b, inb, _ = pair()
    with pytest.raises(DropError) as e:
        a.encap(out, big_inner(65535))
    assert e.value.reason == "too_big"
    assert a.stats(out)["drops"] == {"too_big": 1}
    assert a.stats(out)["seq"] == 0  # no sequence number was spent


def test_largest_packet_that_fits():
    """IPv4 outer, GCM: 20 + 8 + 8 + inner + pad + 2 + 16 <= 65535 -> inner <= 65478."""
    a, out, b, inb, _ = pair()
    pkt = a.encap(out, big_inner(65478))
    assert len(pkt) == 65532 and struct.unpack("!H", pkt[2:4])[0] == 65532
    assert b.decap(pkt) == big_inner(65478)
    with pytest.raises(DropError) as e:
        a.encap(out, big_inner(65479))  # pads to 65484 + 52 = 65536
    assert e.value.reason == "too_big"


def test_largest_packet_that_fits_ipv6_outer():
    """IPv6's payload length excludes its 40-byte header:
    8 + 8 + inner + pad + 2 + 16 <= 65535 -> inner <= 65498."""
    a, out, b, inb, _ = pair(family=6)
    pkt = a.encap(out, big_inner(65498))
    assert len(pkt) == 40 + 65532 and struct.unpack("!H", pkt[4:6])[0] == 65532
    assert b.decap(pkt) == big_inner(65498)
    with pytest.raises(DropError) as e:
        a.encap(out, big_inner(65499))
    assert e.value.reason == "too_big"


def test_inner_length_mismatch_on_encap():
    a, out, b, inb, _ = pair()
    for bad in (inner4()[:-1], inner4() + b"\0", b"", b"\x45", b"\x60" + bytes(30)):
        with pytest.raises(DropError) as e:
            a.encap(out, bad)
        assert e.value.reason == "inner_malformed"
    assert a.stats(out)["seq"] == 0


# --- garbage -----------------------------------------------------------------------


def _gcm_receiver():
    return pair("esp-gcm 256")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_always_dropped(data):
    _, _, b, inb, _ = RECEIVER
    with pytest.raises(DropError):
        b.decap(data)


RECEIVER = _gcm_receiver()
RECEIVER_UDP = pair("esp-aes 128 esp-sha256-hmac", encap="udp")
RECEIVER6 = pair("esp-null esp-sha-hmac", family=6)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=200), which=st.sampled_from(["esp", "udp", "v6"]),
       spi=st.sampled_from([SPI, 0, 1, 0xFFFFFFFF]), seq=st.integers(0, 2**32 - 1))
def test_structured_garbage_always_dropped(body, which, spi, seq):
    """A well-formed outer header and ESP header for a known SA, then random bytes."""
    esp = struct.pack("!II", spi, seq) + body
    if which == "esp":
        _, _, b, inb, _ = RECEIVER
        pkt = ipv4(A4, B4, 50, esp)
    elif which == "udp":
        _, _, b, inb, _ = RECEIVER_UDP
        pkt = ipv4(A4, B4, 17, udp(4500, 4500, esp))
    else:
        _, _, b, inb, _ = RECEIVER6
        pkt = ipv6(A6, B6, 50, esp)
    top = b.stats(inb)["seq"]
    with pytest.raises(DropError) as e:
        b.decap(pkt)
    assert e.value.reason in ("unknown_spi", "bad_length", "auth_failed", "replay_old",
                              "replay_dup", "malformed", "non_esp_marker")
    assert b.stats(inb)["seq"] == top


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_inner_bytes_on_encap(data):
    a, out, _, _, _ = RECEIVER
    try:
        pkt = a.encap(out, data)
    except DropError as e:
        assert e.reason in ("inner_malformed", "too_big")
    else:  # only a well-formed IP packet whose length field matches gets sealed
        assert data[0] >> 4 in (4, 6)
        assert pkt[9] == 50 and len(pkt) > len(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=120), min_size=1, max_size=20))
def test_random_batch_never_passes(batch):
    _, _, b, inb, _ = RECEIVER
    results = b.decap_batch(batch)
    assert len(results) == len(batch)
    assert all(isinstance(r, DropError) for r in results)


# --- the batch API itself ----------------------------------------------------------


@pytest.mark.parametrize("worker", [1, 2, 1000])
def test_out_of_range_worker_never_passes_a_packet(worker):
    """A batch on a worker slot the data plane does not have must not come back as
    passed: encap would hand out the inner packet in clear, decap would pass garbage."""
    a, out, b, inb, _ = pair()  # one worker each
    secret = inner4(0x5EC2E7)
    for r in a.encap_batch([secret, secret], out, worker=worker):
        assert isinstance(r, DropError), "inner packet returned in clear as if sealed"
    for r in b.decap_batch([b"garbage" * 8, a.encap(out, secret)], worker=worker):
        assert isinstance(r, DropError), "packet passed without decapsulation"


def test_every_worker_slot_works():
    a, b = Dataplane(workers=4), Dataplane(workers=4)
    key = os.urandom(36)
    out = a.add_sa(spi=SPI, direction="out", transform="esp-gcm 256", key=key, local=A4, peer=B4)
    b.add_sa(spi=SPI, direction="in", transform="esp-gcm 256", key=key, local=B4, peer=A4)
    sealed = []
    for w in range(4):
        (p,) = a.encap_batch([inner4(w)], out, worker=w)
        assert isinstance(p, bytes)
        sealed.append(p)
    assert [struct.unpack("!I", p[24:28])[0] for p in sealed] == [1, 2, 3, 4]
    for w, p in enumerate(sealed):
        assert b.decap_batch([p], worker=3 - w) == [inner4(w)]
    for w in range(4):  # one replay window, whichever worker sees the copy
        (r,) = b.decap_batch([sealed[w]], worker=w)
        assert isinstance(r, DropError) and r.reason == "replay_dup"
