"""The bytes espd produces, checked with an independent implementation (`cryptography`).

For every transform:
  - espd's ESP is opened here: AES-GCM / ChaCha20-Poly1305 with nonce = salt || IV and
    AAD = SPI || seq (RFC 4106 5 / RFC 7634 2.1; with ESN SPI || seq_hi || seq_lo);
    AES-CBC / NULL with HMAC over SPI || seq || IV || ciphertext (|| seq_hi with ESN,
    RFC 4303 2.2.1), truncated (RFC 2404: 96 bits, RFC 4868: half the digest). The
    plaintext must be inner || 1, 2, 3, ... || pad length || next header, with the least
    padding that aligns it (RFC 4303 2.4), and the outer header must be right.
  - ESP built here, with random IVs and non-minimal padding, is accepted by espd.
"""

from __future__ import annotations

import ipaddress
import os
import struct

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from support.packets import checksum, ipv4, ipv6, udp

from espd.dataplane import Dataplane
from espd.dataplane.testing import set_seq

# every test here runs on each AEAD backend (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("crypto_backend")

SPI = 0xC0DE1234
M32 = 1 << 32
A4, B4 = "192.0.2.1", "192.0.2.2"
A6, B6 = "2001:db8::1", "2001:db8::2"

HASHES = {  # integrity name: (hash, key bytes, ICV bytes)
    "esp-sha-hmac": (hashes.SHA1, 20, 12),
    "esp-sha256-hmac": (hashes.SHA256, 32, 16),
    "esp-sha384-hmac": (hashes.SHA384, 48, 24),
    "esp-sha512-hmac": (hashes.SHA512, 64, 32),
}
AEADS = ["esp-gcm 128", "esp-gcm 192", "esp-gcm 256", "esp-chacha20-poly1305"]
CBCS = [f"esp-aes {bits} {h}" for bits in (128, 192, 256) for h in HASHES]
NULLS = [f"esp-null {h}" for h in HASHES]
ALL = AEADS + CBCS + NULLS


class Suite:
    """One transform, as an independent implementation sees it."""

    def __init__(self, name: str) -> None:
        self.name = name
        words = name.split()
        self.aead = words[0] in ("esp-gcm", "esp-chacha20-poly1305")
        self.cbc = words[0] == "esp-aes"
        if words[0] == "esp-gcm":
            self.key_len, self.auth_len = int(words[1]) // 8 + 4, 0
        elif words[0] == "esp-chacha20-poly1305":
            self.key_len, self.auth_len = 36, 0
        elif self.cbc:
            self.key_len = int(words[1]) // 8
        else:
            self.key_len = 0
        if not self.aead:
            self.hash, self.auth_len, self.icv_len = HASHES[words[-1]]
        else:
            self.icv_len = 16
        self.iv_len = 8 if self.aead else 16 if self.cbc else 0
        self.block = 16 if self.cbc else 4
        self.key = os.urandom(self.key_len)
        self.auth_key = os.urandom(self.auth_len) if self.auth_len else None

    # --- AEAD ---
    def _aead(self):
        k = self.key[:-4]
        return AESGCM(k) if self.name.startswith("esp-gcm") else ChaCha20Poly1305(k)

    @staticmethod
    def aad(spi: int, seq: int, esn: bool) -> bytes:
        if esn:
            return struct.pack("!III", spi, seq >> 32, seq % M32)
        return struct.pack("!II", spi, seq % M32)

    def _mac(self, data: bytes) -> bytes:
        h = hmac.HMAC(self.auth_key, self.hash())
        h.update(data)
        return h.finalize()[:self.icv_len]

    # --- open espd's ESP ---
    def open(self, esp: bytes, seq: int, esn: bool) -> bytes:
        """Verify and decrypt; return the plaintext (inner || padding || trailer)."""
        spi, seql = struct.unpack("!II", esp[:8])
        assert seql == seq % M32
        iv = esp[8:8 + self.iv_len]
        body = esp[8 + self.iv_len:]
        if self.aead:
            return self._aead().decrypt(self.key[-4:] + iv, body, self.aad(spi, seq, esn))
        ct, icv = body[:-self.icv_len], body[-self.icv_len:]
        assert len(icv) == self.icv_len
        hi = struct.pack("!I", seq >> 32) if esn else b""
        assert self._mac(esp[:-self.icv_len] + hi) == icv, "ICV"
        if not self.cbc:
            return ct
        assert len(ct) % 16 == 0
        d = Cipher(algorithms.AES(self.key), modes.CBC(iv)).decryptor()
        return d.update(ct) + d.finalize()

    # --- build ESP for espd ---
    def seal(self, spi: int, seq: int, plaintext: bytes, esn: bool) -> bytes:
        hdr = struct.pack("!II", spi, seq % M32)
        iv = os.urandom(self.iv_len)
        if self.aead:
            return hdr + iv + self._aead().encrypt(self.key[-4:] + iv, plaintext,
                                                   self.aad(spi, seq, esn))
        if self.cbc:
            e = Cipher(algorithms.AES(self.key), modes.CBC(iv)).encryptor()
            ct = e.update(plaintext) + e.finalize()
        else:
            ct = plaintext
        hi = struct.pack("!I", seq >> 32) if esn else b""
        return hdr + iv + ct + self._mac(hdr + iv + ct + hi)

    def trailer(self, body: bytes, nh: int, extra_blocks: int = 0) -> bytes:
        pad = (self.block - (len(body) + 2) % self.block) % self.block + extra_blocks * self.block
        return body + bytes(range(1, pad + 1)) + bytes([pad, nh])


def inner4(n=1, size=100):
    body = struct.pack("!I", n % M32) + os.urandom(size - 32)
    return ipv4("10.0.0.1", "10.1.0.1", 17, udp(1234, 80, body))


def inner6(n=1, size=100):
    body = struct.pack("!I", n % M32) + os.urandom(size - 52)
    return ipv6("fd00::1", "fd01::1", 17, udp(1234, 80, body))


def endpoints(suite: Suite, *, esn=False, mode="tunnel", encap="esp", family=4, window=1024):
    src, dst = (A4, B4) if family == 4 else (A6, B6)
    a, b = Dataplane(), Dataplane()
    kw = dict(spi=SPI, transform=suite.name, key=suite.key, auth_key=suite.auth_key, esn=esn,
              mode=mode, encap=encap)
    out = a.add_sa(direction="out", local=src, peer=dst, **kw)
    inb = b.add_sa(direction="in", local=dst, peer=src, replay_window=window, **kw)
    return a, out, b, inb


def split_outer(pkt: bytes, family: int, encap: str) -> tuple[bytes, bytes]:
    hl = 20 if family == 4 else 40
    if encap == "udp":
        hl += 8
    return pkt[:hl], pkt[hl:]


# --- espd seals, cryptography opens --------------------------------------------------


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("esn", [False, True], ids=["32", "esn"])
def test_espd_output_opens_independently(name, esn):
    s = Suite(name)
    a, out, b, inb = endpoints(s, esn=esn)
    start = M32 - 3 if esn else 0  # ESN: cross 2^32 so seq_hi is exercised both ways
    if start:
        set_seq(out, start)
        set_seq(inb, start)
    ivs = set()
    for i, size in enumerate([40, 41, 42, 43, 44, 45, 46, 47, 100, 1400]):
        seq = start + i + 1
        inner = inner4(seq, size) if size >= 40 else inner4(seq)
        pkt = a.encap(out, inner)
        hdr, esp = split_outer(pkt, 4, "esp")
        # outer IPv4
        assert hdr[0] == 0x45 and hdr[9] == 50 and hdr[8] == 64
        assert struct.unpack("!H", hdr[2:4])[0] == len(pkt)
        assert checksum(hdr) == 0
        assert hdr[12:16] == ipaddress.IPv4Address(A4).packed
        assert hdr[16:20] == ipaddress.IPv4Address(B4).packed
        assert struct.unpack("!I", esp[:4])[0] == SPI
        assert struct.unpack("!I", esp[4:8])[0] == seq % M32
        iv = esp[8:8 + s.iv_len]
        if s.iv_len:
            assert iv not in ivs, "IV reused"
            ivs.add(iv)
        pt = s.open(esp, seq, esn)
        # trailer: minimal padding 1, 2, 3, ..., pad length, next header 4 (IPv4)
        pad = (s.block - (len(inner) + 2) % s.block) % s.block
        assert len(pt) == len(inner) + pad + 2
        assert pt == inner + bytes(range(1, pad + 1)) + bytes([pad, 4])
        assert len(esp) == 8 + s.iv_len + len(pt) + s.icv_len
        assert b.decap(pkt) == inner


@pytest.mark.parametrize("name", ["esp-gcm 128", "esp-chacha20-poly1305"])
def test_aead_esn_aad_is_spi_seqhi_seqlo(name):
    """With ESN the high half goes between SPI and seq_lo (RFC 4106 5), and a receiver that
    assumed the 8-byte AAD would fail: prove the 12-byte layout is the one used."""
    s = Suite(name)
    a, out, b, inb = endpoints(s, esn=True)
    seq = 7 * M32 + 9
    set_seq(out, seq - 1)
    inner = inner4()
    esp = split_outer(a.encap(out, inner), 4, "esp")[1]
    iv, body = esp[8:16], esp[16:]
    aead = s._aead()
    with pytest.raises(InvalidTag):
        aead.decrypt(s.key[-4:] + iv, body, esp[:8])
    with pytest.raises(InvalidTag):  # seq_lo || seq_hi order would be wrong
        aead.decrypt(s.key[-4:] + iv, body, struct.pack("!III", SPI, 9, 7))
    assert aead.decrypt(s.key[-4:] + iv, body, struct.pack("!III", SPI, 7, 9)).startswith(inner)


@pytest.mark.parametrize("name", ["esp-aes 128 esp-sha256-hmac", "esp-null esp-sha-hmac"])
def test_hmac_esn_appends_seq_hi(name):
    s = Suite(name)
    a, out, b, inb = endpoints(s, esn=True)
    set_seq(out, 5 * M32 + 2)
    esp = split_outer(a.encap(out, inner4()), 4, "esp")[1]
    icv = esp[-s.icv_len:]
    assert s._mac(esp[:-s.icv_len] + struct.pack("!I", 5)) == icv
    assert s._mac(esp[:-s.icv_len]) != icv
    assert s._mac(struct.pack("!I", 5) + esp[:-s.icv_len]) != icv


@pytest.mark.parametrize("name", ["esp-gcm 256", "esp-aes 256 esp-sha512-hmac"])
def test_iv_construction_documented_in_crypto_c(name):
    """crypto.c: AEAD IV = the 64-bit sequence number (RFC 4106 3.1); CBC IV =
    AES_K(seq || "espd-iv\\0") (NIST SP 800-38A appendix C: unpredictable and unique)."""
    s = Suite(name)
    a, out, b, inb = endpoints(s, esn=True)
    set_seq(out, 3 * M32 + 41)
    esp = split_outer(a.encap(out, inner4()), 4, "esp")[1]
    seq = 3 * M32 + 42
    if s.aead:
        assert esp[8:16] == struct.pack("!Q", seq)
    else:
        e = Cipher(algorithms.AES(s.key), modes.ECB()).encryptor()
        assert esp[8:24] == e.update(struct.pack("!Q", seq) + b"espd-iv\0") + e.finalize()


def test_cbc_ivs_do_not_repeat_across_sas():
    """Two SAs with different keys and the same sequence numbers never share an IV."""
    s1, s2 = Suite("esp-aes 128 esp-sha256-hmac"), Suite("esp-aes 128 esp-sha256-hmac")
    a1, o1, _, _ = endpoints(s1)
    a2, o2, _, _ = endpoints(s2)
    iv1 = {split_outer(a1.encap(o1, inner4()), 4, "esp")[1][8:24] for _ in range(50)}
    iv2 = {split_outer(a2.encap(o2, inner4()), 4, "esp")[1][8:24] for _ in range(50)}
    assert len(iv1) == 50 and len(iv2) == 50 and not iv1 & iv2


@pytest.mark.parametrize("name", ["esp-gcm 128", "esp-aes 192 esp-sha384-hmac",
                                  "esp-null esp-sha512-hmac"])
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("encap", ["esp", "udp"])
def test_espd_transport_and_udp_open_independently(name, family, encap):
    s = Suite(name)
    for mode in ("tunnel", "transport"):
        a, out, b, inb = endpoints(s, mode=mode, encap=encap, family=family)
        src, dst = (A4, B4) if family == 4 else (A6, B6)
        seg = udp(1234, 80, os.urandom(77))
        if mode == "transport":
            inner = ipv4(src, dst, 17, seg) if family == 4 else ipv6(src, dst, 17, seg)
            protected, nh = seg, 17
        else:
            inner = inner6() if family == 6 else inner4()
            protected, nh = inner, 41 if family == 6 else 4
        pkt = a.encap(out, inner)
        hdr, esp = split_outer(pkt, family, encap)
        if encap == "udp":
            u = hdr[-8:]
            assert struct.unpack("!HHH", u[:6]) == (4500, 4500, 8 + len(esp))
            assert hdr[9 if family == 4 else 6] == 17
            if family == 6:  # RFC 768/8200: the checksum over the pseudo-header verifies
                ph = hdr[8:40] + struct.pack("!IxxxB", 8 + len(esp), 17)
                assert checksum(ph + u + esp) == 0
        else:
            assert hdr[9 if family == 4 else 6] == 50
        pt = s.open(esp, 1, False)
        pad = pt[-2]
        assert pt == protected + bytes(range(1, pad + 1)) + bytes([pad, nh])
        assert pad == (s.block - (len(protected) + 2) % s.block) % s.block
        assert b.decap(pkt) == inner


# --- cryptography seals, espd opens --------------------------------------------------


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("esn", [False, True], ids=["32", "esn"])
def test_independent_esp_accepted_by_espd(name, esn):
    s = Suite(name)
    a, out, b, inb = endpoints(s, esn=esn)
    base = 9 * M32 - 2 if esn else 0
    if esn:
        set_seq(inb, base)
    for i in range(1, 7):
        seq = base + i
        inner = inner4(seq, 60 + i) if i % 2 else inner6(seq, 90 + i)
        nh = 4 if i % 2 else 41
        pt = s.trailer(inner, nh, extra_blocks=i % 3)  # non-minimal padding is legal
        pkt = ipv4(A4, B4, 50, s.seal(SPI, seq, pt, esn))
        assert b.decap(pkt) == inner, seq
    st_ = b.stats(inb)
    assert st_["seq"] == base + 6 and st_["packets"] == 6 and st_["drops"] == {}
    # and a wrong key is refused
    bad = Suite(name)
    pkt = ipv4(A4, B4, 50, bad.seal(SPI, base + 7, bad.trailer(inner4(), 4), esn))
    with pytest.raises(Exception) as e:
        b.decap(pkt)
    assert getattr(e.value, "reason", None) == "auth_failed"


@pytest.mark.parametrize("name", ["esp-gcm 256", "esp-chacha20-poly1305",
                                  "esp-aes 128 esp-sha-hmac",
                                  "esp-null esp-sha256-hmac"])
def test_independent_esp_wrong_esn_high_bits_refused(name):
    """Sealed with seq_hi = 1 while the receiver infers 0 (or vice versa): auth_failed."""
    s = Suite(name)
    a, out, b, inb = endpoints(s, esn=True)
    pkt = ipv4(A4, B4, 50, s.seal(SPI, M32 + 5, s.trailer(inner4(), 4), True))
    with pytest.raises(Exception) as e:
        b.decap(pkt)  # top is 0: seq_lo 5 is inferred as 5, not 2^32 + 5
    assert getattr(e.value, "reason", None) == "auth_failed"
    assert b.stats(inb)["seq"] == 0  # the forgery did not move the window
    fixed = inner4(5)
    assert b.decap(ipv4(A4, B4, 50, s.seal(SPI, 5, s.trailer(fixed, 4), True))) == fixed


@pytest.mark.parametrize("name", ["esp-gcm 128", "esp-aes 256 esp-sha256-hmac",
                                  "esp-null esp-sha-hmac"])
def test_independent_transport_mode_accepted(name):
    s = Suite(name)
    a, out, b, inb = endpoints(s, mode="transport")
    seg = udp(4000, 53, os.urandom(33))
    esp = s.seal(SPI, 1, s.trailer(seg, 17), False)
    got = b.decap(ipv4(A4, B4, 50, esp))
    assert got[9] == 17 and got[20:] == seg
    assert struct.unpack("!H", got[2:4])[0] == 20 + len(seg) and checksum(got[:20]) == 0
    esp6 = s.seal(SPI, 1, s.trailer(seg, 17), False)
    a6, o6, b6, i6 = endpoints(s, mode="transport", family=6)
    got6 = b6.decap(ipv6(A6, B6, 50, esp6))
    assert got6[6] == 17 and got6[40:] == seg and struct.unpack("!H", got6[4:6])[0] == len(seg)


@pytest.mark.parametrize("name", ["esp-gcm 192", "esp-aes 128 esp-sha384-hmac"])
def test_independent_udp_encap_accepted(name):
    s = Suite(name)
    a, out, b, inb = endpoints(s, encap="udp")
    inner = inner4()
    esp = s.seal(SPI, 1, s.trailer(inner, 4), False)
    assert b.decap(ipv4(A4, B4, 17, udp(4500, 4500, esp))) == inner
