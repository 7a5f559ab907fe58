"""Known-answer tests: espd against the published ESP, AES-CBC and HMAC vectors.

The vectors live in tests/data/kat/ (one file per publication, each naming its source;
README.md there describes the format and every file). Every file is first checked
against the independent ``cryptography`` package or Python's ``hmac`` (so a
transcription error shows up as a failure of that check, not as an espd bug), and then
driven through the data plane:

* DECAP: the published ESP packets, wrapped in an outer IPv4 header, are decapsulated by
  an inbound SA carrying the vector's key, salt, SPI, mode and sequence-number size; the
  result must be the published plaintext byte for byte.
* ENCAP: espd's outbound IV is its own (the 64-bit sequence number for the AEADs,
  AES_K(seq || "espd-iv") for CBC), so a vector's ciphertext cannot be reproduced
  byte for byte. Instead espd encapsulates the vector's plaintext with the vector's key,
  SPI and sequence number, and ``cryptography`` recomputes the expected ciphertext and
  ICV from the published plaintext under espd's IV. This also checks that espd's
  padding and trailer equal the published ones.
* HMAC: RFC 4868's ESP-specific truncated ICVs are verified by espd's own ICV check
  (through the data plane), and espd's encap ICVs are recomputed with ``hmac``.

Outer IP headers that a publication does not give are built here (from RFC 5737
documentation addresses, or from the addresses a case's title names), and RFC 3602's
encryption-only packets get an ICV computed here; no other byte is invented.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from support.packets import checksum, ipv4

from espd.config.transforms import TransformError, parse_transform
from espd.dataplane import Dataplane, DataplaneError, DropError
from espd.dataplane.testing import set_seq

# every test here runs on each AEAD backend (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("crypto_backend")

KAT_DIR = Path(__file__).resolve().parents[1] / "data" / "kat"

# Outer addresses for vectors that publish no outer header (RFC 5737 TEST-NET-1).
PEER = "192.0.2.1"  # the sender of the ESP packets espd decapsulates
LOCAL = "192.0.2.2"  # espd
PROTO_ESP = 50


# --- the vector file format ----------------------------------------------------------


def load(name: str) -> dict[str, dict[str, str]]:
    """Parse a KAT file: ``[case N]`` blocks of ``name = value`` lines.

    ``#`` starts a comment; a line that starts with whitespace continues the previous
    value. The file's header must name its source (a ``# source:`` comment).
    """
    cases: dict[str, dict[str, str]] = {}
    case: dict[str, str] | None = None
    last: str | None = None
    header_done = False
    sourced = False
    for lineno, raw in enumerate((KAT_DIR / name).read_text().splitlines(), 1):
        text = raw.split("#", 1)[0].rstrip() if not raw.lstrip().startswith('"') else raw
        if raw.startswith("# source:") and not header_done:
            sourced = True
        if not text.strip():
            continue
        if text.startswith("["):
            header_done = True
            key = text.strip()[1:-1].removeprefix("case").strip()
            assert key not in cases, f"{name}:{lineno}: duplicate case {key}"
            case = cases[key] = {}
            last = None
        elif text[0].isspace():
            assert case is not None and last is not None, f"{name}:{lineno}: stray continuation"
            case[last] += " " + text.strip()
        else:
            assert case is not None, f"{name}:{lineno}: value outside a case"
            field, sep, value = text.partition("=")
            assert sep, f"{name}:{lineno}: expected 'name = value'"
            last = field.strip()
            case[last] = value.strip()
    assert sourced, f"{name} does not name its source"
    return cases


def val(value: str) -> bytes:
    """A hex value (spaces allowed) or a quoted ASCII string."""
    if value.startswith('"'):
        assert value.endswith('"')
        return value[1:-1].encode("ascii")
    return bytes.fromhex("".join(value.split()))


def num(value: str) -> int:
    return int.from_bytes(val(value), "big")


GCM = load("gcm_test_01.txt")
CHACHA = load("rfc7634_esp.txt")
CBC = load("rfc3602.txt")
HMAC4231 = load("rfc4231.txt")
HMAC4868 = load("rfc4868.txt")


def test_every_kat_file_is_listed_in_the_readme_and_names_its_source():
    readme = (KAT_DIR / "README.md").read_text()
    for path in sorted(KAT_DIR.glob("*.txt")):
        assert path.name in readme, f"{path.name} is not described in README.md"
        assert "# source:" in path.read_text()
    assert len(GCM) == 17 and len(CHACHA) == 1 and len(CBC) == 8
    assert len(HMAC4231) == 7 and len(HMAC4868) == 11


# --- packets ------------------------------------------------------------------------


def reheader(hdr: bytes, *, total_len: int | None = None, proto: int | None = None) -> bytes:
    """A copy of an IPv4 header with a new total length and/or protocol, checksum redone."""
    h = bytearray(hdr)
    if total_len is not None:
        h[2:4] = struct.pack("!H", total_len)
    if proto is not None:
        h[9] = proto
    h[10:12] = b"\0\0"
    h[10:12] = struct.pack("!H", checksum(bytes(h)))
    return bytes(h)


def addr(hdr: bytes, offset: int) -> str:
    return str(ipaddress.IPv4Address(hdr[offset:offset + 4]))


def split_trailer(plaintext: bytes) -> tuple[bytes, bytes, int]:
    """(payload, padding, next header) of an ESP plaintext; asserts the RFC 4303 padding."""
    pad_len, next_header = plaintext[-2], plaintext[-1]
    payload, padding = plaintext[:-2 - pad_len], plaintext[-2 - pad_len:-2]
    assert padding == bytes(range(1, pad_len + 1)), "padding is not 1, 2, 3, ..."
    return payload, padding, next_header


def esp_trailer(payload_len: int, block: int, next_header: int) -> bytes:
    pad = (block - (payload_len + 2) % block) % block
    return bytes(range(1, pad + 1)) + bytes([pad, next_header])


def aes_cbc(key: bytes, iv: bytes, data: bytes, *, decrypt: bool = False) -> bytes:
    c = Cipher(algorithms.AES(key), modes.CBC(iv))
    op = c.decryptor() if decrypt else c.encryptor()
    return op.update(data) + op.finalize()


def aes_block(key: bytes, block: bytes) -> bytes:
    op = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return op.update(block) + op.finalize()


def espd_cbc_iv(key: bytes, seq: int) -> bytes:
    """crypto.c: IV = AES_K(seq || "espd-iv" || 0)."""
    return aes_block(key, struct.pack("!Q", seq) + b"espd-iv\0")


def decap_drop(dp: Dataplane, packet: bytes) -> str:
    with pytest.raises(DropError) as e:
        dp.decap(packet)
    return e.value.reason


# =====================================================================================
# draft-mcgrew-gcm-test-01: AES-GCM-ESP
# =====================================================================================

GCM_ESP = [n for n, c in GCM.items() if c["algorithm"] == "AES-GCM-ESP"]
GCM_USABLE = [n for n in GCM_ESP if num(GCM[n]["spi"]) > 255]  # case 4 has SPI 0


def gcm_params(c: dict[str, str]) -> dict:
    key, nonce, seq = val(c["key"]), val(c["nonce"]), val(c["seq"])
    return {
        "transform": f"esp-gcm {len(key) * 8}",
        "key": key + nonce[:4],  # espd's key: AES key || 4-octet salt (RFC 4106 8.1)
        "aes_key": key,
        "salt": nonce[:4],
        "spi": num(c["spi"]),
        "spi_bytes": val(c["spi"]),
        "esn": len(seq) == 8,
        "seq": int.from_bytes(seq, "big"),
        "nonce": nonce,
        "plaintext": val(c["plaintext"]),
        "aad": val(c["aad"]),
        "ctext_tag": val(c["ctext_tag"]),
        "packet": val(c["packet"]),
    }


@pytest.mark.parametrize("name", GCM_ESP)
def test_gcm_transcription_matches_cryptography(name):
    """The published ESP fields are consistent and `cryptography` reproduces ctext+tag."""
    p = gcm_params(GCM[name])
    seq_field = struct.pack("!Q" if p["esn"] else "!I", p["seq"])
    assert p["aad"] == p["spi_bytes"] + seq_field  # RFC 4106 5: SPI || [seq_hi ||] seq_lo
    assert p["packet"] == (p["spi_bytes"] + struct.pack("!I", p["seq"] & 0xFFFFFFFF)
                           + p["nonce"][4:] + p["ctext_tag"])
    assert AESGCM(p["aes_key"]).encrypt(p["nonce"], p["plaintext"], p["aad"]) == p["ctext_tag"]
    assert len(p["plaintext"]) % 4 == 0
    split_trailer(p["plaintext"])


def test_gcm_gmac_case_transcription_and_refusal():
    """Case 15 (AES-GMAC-ESP, RFC 4543): transcription checked; espd refuses esp-gmac."""
    (name,) = [n for n, c in GCM.items() if c["algorithm"] == "AES-GMAC-ESP"]
    c = GCM[name]
    key, nonce, aad, packet = val(c["key"]), val(c["nonce"]), val(c["aad"]), val(c["packet"])
    assert packet[:-16] == aad  # the whole packet up to the ICV is authenticated only
    assert AESGCM(key).encrypt(nonce, b"", aad) == packet[-16:]
    with pytest.raises(TransformError, match="GMAC"):
        parse_transform("esp-gmac")


def gcm_inbound(dp: Dataplane, p: dict, mode: str = "transport"):
    sa = dp.add_sa(spi=p["spi"], direction="in", transform=p["transform"], key=p["key"],
                   mode=mode, local=LOCAL, peer=PEER, esn=p["esn"])
    if p["esn"]:
        set_seq(sa, p["seq"] - 1)  # window top just below: the high bits follow
    return sa


@pytest.mark.parametrize("name", GCM_USABLE)
def test_gcm_decap_published_packet(name):
    """espd decapsulates the published ESP packet to the published plaintext.

    Every case's trailer says next header 1 (ICMP), so each is a transport-mode packet:
    the decapsulated packet is the outer IP header, now naming ICMP, followed by the
    payload (the plaintext without padding, pad length and next header).
    """
    p = gcm_params(GCM[name])
    payload, _, next_header = split_trailer(p["plaintext"])
    assert next_header == 1
    dp = Dataplane()
    sa = gcm_inbound(dp, p)
    outer = ipv4(PEER, LOCAL, PROTO_ESP, p["packet"])
    assert dp.decap(outer) == ipv4(PEER, LOCAL, next_header, payload)
    assert dp.stats(sa)["decaps"] == 1
    # the same packet again is a replay
    assert decap_drop(dp, outer) == "replay_dup"


@pytest.mark.parametrize("name", GCM_USABLE)
def test_gcm_decap_rejects_a_flipped_bit(name):
    p = gcm_params(GCM[name])
    dp = Dataplane()
    gcm_inbound(dp, p)
    bad = bytearray(p["packet"])
    bad[-1] ^= 0x01
    assert decap_drop(dp, ipv4(PEER, LOCAL, PROTO_ESP, bytes(bad))) == "auth_failed"


@pytest.mark.parametrize("name", [n for n in GCM_USABLE if len(val(GCM[n]["seq"])) == 8])
def test_gcm_esn_high_bits_are_authenticated(name):
    """Without ESN (or with the window in the wrong 2^32 subspace) the AAD lacks the
    published high 32 bits and the packet fails authentication."""
    p = gcm_params(GCM[name])
    outer = ipv4(PEER, LOCAL, PROTO_ESP, p["packet"])
    dp = Dataplane()
    gcm_inbound(dp, {**p, "esn": False})
    # (case 1's low 32 bits are 0, which is no sequence number at all without ESN)
    expected = "auth_failed" if p["seq"] & 0xFFFFFFFF else "replay_old"
    assert decap_drop(dp, outer) == expected
    if p["seq"] >> 32 not in (0, 0xFFFFFFFF):
        dp = Dataplane()
        sa = gcm_inbound(dp, p)
        set_seq(sa, p["seq"] - 2**32 + 5)  # window one subspace below
        assert decap_drop(dp, outer) == "auth_failed"


def test_gcm_cases_are_refused_by_a_tunnel_mode_sa():
    """In tunnel mode next header must be 4 or 41; these packets carry 1 (ICMP)."""
    for name in GCM_USABLE:
        p = gcm_params(GCM[name])
        dp = Dataplane()
        gcm_inbound(dp, p, mode="tunnel")
        assert decap_drop(dp, ipv4(PEER, LOCAL, PROTO_ESP, p["packet"])) == "bad_next_header", name


def test_gcm_case_with_spi_zero_is_refused():
    """Case 4 uses SPI 0, which RFC 4303 2.1 reserves: espd neither installs nor accepts it."""
    (name,) = [n for n in GCM_ESP if num(GCM[n]["spi"]) == 0]
    p = gcm_params(GCM[name])
    dp = Dataplane()
    with pytest.raises(DataplaneError):
        dp.add_sa(spi=0, direction="in", transform=p["transform"], key=p["key"],
                  mode="transport", local=LOCAL, peer=PEER)
    dp.add_sa(spi=0x100, direction="in", transform=p["transform"], key=p["key"],
              mode="transport", local=LOCAL, peer=PEER)  # any SA at all
    assert decap_drop(dp, ipv4(PEER, LOCAL, PROTO_ESP, p["packet"])) == "unknown_spi"


@pytest.mark.parametrize("name", GCM_USABLE)
def test_gcm_encap_matches_cryptography(name):
    """espd encapsulates the vector's payload with the vector's key, SPI and sequence
    number; its IV is the 64-bit sequence number, so `cryptography` recomputes the
    expected ciphertext from the PUBLISHED plaintext (trailer included) under that IV."""
    p = gcm_params(GCM[name])
    payload, _, next_header = split_trailer(p["plaintext"])
    dp = Dataplane()
    sa = dp.add_sa(spi=p["spi"], direction="out", transform=p["transform"], key=p["key"],
                   mode="transport", local=LOCAL, peer=PEER, esn=p["esn"])
    set_seq(sa, p["seq"] - 1)
    inner = ipv4(LOCAL, PEER, next_header, payload)
    out = dp.encap(sa, inner)  # case 14 sends 2^64 - 1, the last ESN sequence number
    hdr, esp = out[:20], out[20:]
    assert hdr == ipv4(LOCAL, PEER, PROTO_ESP, esp)[:20]
    iv = struct.pack("!Q", p["seq"])
    assert esp[:8] == p["packet"][:8]  # SPI and the low 32 bits of the sequence number
    assert esp[8:16] == iv
    expected = AESGCM(p["aes_key"]).encrypt(p["salt"] + iv, p["plaintext"], p["aad"])
    assert esp[16:] == expected
    if p["esn"] and p["seq"] == 2**64 - 1:  # and then the space is used up, never cycled
        with pytest.raises(DropError, match="seq_cycled"):
            dp.encap(sa, inner)


# =====================================================================================
# RFC 7634 Appendix A: ChaCha20-Poly1305 ESP, tunnel mode
# =====================================================================================

RFC7634 = CHACHA["A"]


def chacha_params() -> dict:
    c = RFC7634
    keymat = val(c["keymat"])
    return {
        "keymat": keymat, "key": keymat[:32], "salt": keymat[32:], "spi": num(c["spi"]),
        "spi_bytes": val(c["spi"]), "seq": num(c["seq"]), "seq_bytes": val(c["seq"]),
        "iv": val(c["iv"]), "nonce": val(c["nonce"]), "aad": val(c["aad"]),
        "plaintext": val(c["plaintext"]), "ctext_tag": val(c["ctext_tag"]),
    }


def test_rfc7634_transcription_matches_cryptography():
    p = chacha_params()
    assert len(p["keymat"]) == 36
    assert p["nonce"] == p["salt"] + p["iv"]
    assert p["aad"] == p["spi_bytes"] + p["seq_bytes"]
    assert ChaCha20Poly1305(p["key"]).encrypt(p["nonce"], p["plaintext"], p["aad"]) \
        == p["ctext_tag"]
    inner, padding, next_header = split_trailer(p["plaintext"])
    assert next_header == 4 and len(inner) == 84 and inner[0] == 0x45


def test_rfc7634_decap_published_packet():
    p = chacha_params()
    inner, _, _ = split_trailer(p["plaintext"])
    dp = Dataplane()
    sa = dp.add_sa(spi=p["spi"], direction="in", transform=RFC7634["transform"],
                   key=p["keymat"], mode=RFC7634["mode"], local=LOCAL, peer=PEER)
    esp = p["spi_bytes"] + p["seq_bytes"] + p["iv"] + p["ctext_tag"]
    outer = ipv4(PEER, LOCAL, PROTO_ESP, esp)
    assert dp.decap(outer) == inner
    assert dp.stats(sa)["decaps"] == 1
    bad = bytearray(outer)
    bad[-5] ^= 0x80
    dp2 = Dataplane()
    dp2.add_sa(spi=p["spi"], direction="in", transform=RFC7634["transform"],
               key=p["keymat"], mode="tunnel", local=LOCAL, peer=PEER)
    assert decap_drop(dp2, bytes(bad)) == "auth_failed"


def test_rfc7634_encap_matches_cryptography():
    p = chacha_params()
    inner, _, _ = split_trailer(p["plaintext"])
    dp = Dataplane()
    sa = dp.add_sa(spi=p["spi"], direction="out", transform=RFC7634["transform"],
                   key=p["keymat"], mode="tunnel", local=LOCAL, peer=PEER)
    set_seq(sa, p["seq"] - 1)
    out = dp.encap(sa, inner)
    hdr, esp = out[:20], out[20:]
    assert hdr[9] == PROTO_ESP and addr(hdr, 12) == LOCAL and addr(hdr, 16) == PEER
    assert checksum(hdr) == 0
    iv = struct.pack("!Q", p["seq"])  # espd's IV; the vector's is 1011121314151617
    assert esp[:8] == p["spi_bytes"] + p["seq_bytes"]
    assert esp[8:16] == iv
    expected = ChaCha20Poly1305(p["key"]).encrypt(p["salt"] + iv, p["plaintext"], p["aad"])
    assert esp[16:] == expected


# =====================================================================================
# RFC 3602: AES-CBC (cases 1-4) and AES-CBC ESP packets without integrity (cases 5-8)
# =====================================================================================

CBC_PLAIN = [n for n, c in CBC.items() if "esp" not in c]
CBC_ESP = [n for n, c in CBC.items() if "esp" in c]

# RFC 3602's ESP cases carry no ICV. To put their published ciphertext through espd, the
# tests append an HMAC-SHA-256-128 ICV computed here, keyed with RFC 4868 AUTH256-1's key.
CBC_AUTH_KEY = val(HMAC4868["AUTH256-1"]["key"])


@pytest.mark.parametrize("name", CBC_PLAIN)
def test_rfc3602_aes_cbc_cases(name):
    c = CBC[name]
    key, iv, pt, ct = val(c["key"]), val(c["iv"]), val(c["plaintext"]), val(c["ciphertext"])
    assert aes_cbc(key, iv, pt) == ct
    assert aes_cbc(key, iv, ct, decrypt=True) == pt


def cbc_esp_params(c: dict[str, str]) -> dict:
    esp, iv = val(c["esp"]), val(c["iv"])
    key = val(c["key"])
    assert esp[:4] == val(c["spi"]) and esp[4:8] == val(c["seq"]) and esp[8:24] == iv
    plaintext = aes_cbc(key, iv, esp[24:], decrypt=True)
    return {"key": key, "iv": iv, "esp": esp, "spi": num(c["spi"]), "seq": num(c["seq"]),
            "mode": c["mode"], "plaintext": plaintext, "payload": val(c["payload"]),
            "next_header": num(c["next_header"])}


@pytest.mark.parametrize("name", CBC_ESP)
def test_rfc3602_esp_transcription_matches_cryptography(name):
    c = CBC[name]
    p = cbc_esp_params(c)
    payload, padding, next_header = split_trailer(p["plaintext"])
    assert payload == p["payload"]
    assert next_header == p["next_header"] == (4 if p["mode"] == "tunnel" else 1)
    if "padding" in c:
        assert padding == val(c["padding"]) and len(padding) == num(c["pad_len"])
    if "esp_ip" in c:
        hdr = val(c["esp_ip"])
        assert checksum(hdr) == 0 and hdr[9] == PROTO_ESP
        assert int.from_bytes(hdr[2:4], "big") == 20 + len(p["esp"])
    if "outer_ip" in c:  # the original packet's header: the ESP one minus ESP
        hdr = val(c["outer_ip"])
        assert checksum(hdr) == 0
        assert hdr == reheader(val(c["esp_ip"]), total_len=20 + len(payload),
                               proto=next_header)


def test_rfc3602_esp_without_integrity_is_refused():
    """The published ESP packets use AES-CBC with no integrity, which RFC 8221 (and espd)
    refuse: there is no SA they can be decapsulated with as published."""
    with pytest.raises(TransformError, match="integrity"):
        parse_transform("esp-aes 128")


def cbc_outer_header(c: dict[str, str], esp_len: int) -> bytes:
    """The published ESP packet's IP header (lengthened for the ICV added here), or, where
    the case prints none, one with the addresses its title names (192.168.123.3 pings
    .100 in the transport cases, .200 in the tunnel cases)."""
    if "esp_ip" in c:
        return reheader(val(c["esp_ip"]), total_len=20 + esp_len)
    dst = "192.168.123.100" if c["mode"] == "transport" else "192.168.123.200"
    return ipv4("192.168.123.3", dst, PROTO_ESP, b"\0" * esp_len, ident=0x0100, ttl=64)[:20]


@pytest.mark.parametrize("name", CBC_ESP)
def test_rfc3602_decap_published_ciphertext_with_icv(name):
    """The published ESP packet, verbatim, plus an HMAC-SHA-256-128 ICV: espd decrypts the
    published ciphertext under the published key and IV to the published payload."""
    c = CBC[name]
    p = cbc_esp_params(c)
    esp = p["esp"] + hmac.new(CBC_AUTH_KEY, p["esp"], hashlib.sha256).digest()[:16]
    hdr = cbc_outer_header(c, len(esp))
    dp = Dataplane()
    sa = dp.add_sa(spi=p["spi"], direction="in", transform="esp-aes 128 esp-sha256-hmac",
                   key=p["key"], auth_key=CBC_AUTH_KEY, mode=p["mode"],
                   local=addr(hdr, 16), peer=addr(hdr, 12))
    got = dp.decap(hdr + esp)
    if p["mode"] == "tunnel":
        assert got == p["payload"]
    else:
        expected_hdr = reheader(hdr, total_len=20 + len(p["payload"]), proto=p["next_header"])
        if "outer_ip" in c:  # espd restores the RFC's original header byte for byte
            assert expected_hdr == val(c["outer_ip"])
        assert got == expected_hdr + p["payload"]
    assert dp.stats(sa)["decaps"] == 1
    bad = bytearray(hdr + esp)
    bad[-1] ^= 1
    dp2 = Dataplane()
    dp2.add_sa(spi=p["spi"], direction="in", transform="esp-aes 128 esp-sha256-hmac",
               key=p["key"], auth_key=CBC_AUTH_KEY, mode=p["mode"],
               local=addr(hdr, 16), peer=addr(hdr, 12))
    assert decap_drop(dp2, bytes(bad)) == "auth_failed"


@pytest.mark.parametrize("name", CBC_ESP)
def test_rfc3602_encap_matches_cryptography(name):
    """espd encapsulates the case's payload with its key, SPI and sequence number. The IV
    is espd's (AES_K(seq || "espd-iv")), recomputed here; the ciphertext must be the
    published pre-encryption data (espd pads exactly as the RFC does) under that IV."""
    c = CBC[name]
    p = cbc_esp_params(c)
    dp = Dataplane()
    sa = dp.add_sa(spi=p["spi"], direction="out", transform="esp-aes 128 esp-sha256-hmac",
                   key=p["key"], auth_key=CBC_AUTH_KEY, mode=p["mode"],
                   local="192.168.123.3", peer="192.168.123.100")
    set_seq(sa, p["seq"] - 1)
    if p["mode"] == "tunnel":
        packet = p["payload"]
    else:
        packet = ipv4("192.168.123.3", "192.168.123.100", p["next_header"], p["payload"])
    out = dp.encap(sa, packet)
    esp, icv = out[20:-16], out[-16:]
    iv = espd_cbc_iv(p["key"], p["seq"])
    assert esp[:8] == p["esp"][:8]
    assert esp[8:24] == iv
    assert esp[24:] == aes_cbc(p["key"], iv, p["plaintext"])
    assert icv == hmac.new(CBC_AUTH_KEY, esp, hashlib.sha256).digest()[:16]


# =====================================================================================
# RFC 4231 / RFC 4868: HMAC-SHA-256/384/512
# =====================================================================================

DIGESTS = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}
INTEG = {  # espd transform word -> (digest, key length, ICV length)
    "esp-sha256-hmac": (hashlib.sha256, 32, 16),
    "esp-sha384-hmac": (hashlib.sha384, 48, 24),
    "esp-sha512-hmac": (hashlib.sha512, 64, 32),
}


@pytest.mark.parametrize("name", list(HMAC4231))
def test_rfc4231_hmac(name):
    c = HMAC4231[name]
    key, data = val(c["key"]), val(c["data"])
    for alg, digest in DIGESTS.items():
        expected = val(c[alg])
        mac = hmac.new(key, data, digest).digest()
        if "truncated" in c:
            mac = mac[:int(c["truncated"]) // 8]
        assert mac == expected, alg


@pytest.mark.parametrize("name", list(HMAC4868))
def test_rfc4868_hmac(name):
    c = HMAC4868[name]
    digest, key_len, icv_len = INTEG[c["transform"].split()[-1]]
    key, data, prf = val(c["key"]), val(c["data"]), val(c["prf"])
    assert len(key) == key_len and int(c["icv_bits"]) == icv_len * 8
    assert hmac.new(key, data, digest).digest() == prf
    if "icv" in c:
        assert val(c["icv"]) == prf[:icv_len]


# RFC 4868 cases whose data can itself be an ESP packet: "what do ya want for nothing?"
# is SPI "what", sequence number " do ", 20 bytes of payload (a multiple of esp-null's
# 4-byte block). espd checks the ICV before anything else in the payload, so with the
# PUBLISHED truncated ICV appended the packet must pass the ICV check and only then be
# dropped for its "padding" ("g?" is pad length 0x67, next header 0x3f); a wrong ICV
# must be dropped as auth_failed.
ESP_SHAPED = [n for n, c in HMAC4868.items() if val(c["data"]) == b"what do ya want for nothing?"]


@pytest.mark.parametrize("name", ESP_SHAPED)
def test_rfc4868_published_icv_verifies_in_espd(name):
    c = HMAC4868[name]
    _, _, icv_len = INTEG[c["transform"].split()[-1]]
    key, data = val(c["key"]), val(c["data"])
    icv = val(c["icv"]) if "icv" in c else val(c["prf"])[:icv_len]
    spi, seq = struct.unpack("!II", data[:8])
    dp = Dataplane()
    sa = dp.add_sa(spi=spi, direction="in", transform=c["transform"], key=b"", auth_key=key,
                   mode="tunnel", local=LOCAL, peer=PEER)
    bad = bytes([icv[0] ^ 1]) + icv[1:]
    assert decap_drop(dp, ipv4(PEER, LOCAL, PROTO_ESP, data + bad)) == "auth_failed"
    # the window did not move for the forgery; the published ICV verifies (and, being
    # authenticated, the packet advances the window before its trailer is judged)
    assert decap_drop(dp, ipv4(PEER, LOCAL, PROTO_ESP, data + icv)) == "bad_padding"
    assert decap_drop(dp, ipv4(PEER, LOCAL, PROTO_ESP, data + icv)) == "replay_dup"
    assert dp.stats(sa)["drops"] == {"bad_padding": 1, "auth_failed": 1, "replay_dup": 1}


def integ_cases() -> list:
    """(case, cipher words) for every RFC 4868 key with esp-null and with esp-aes."""
    return [pytest.param(name, cipher, id=f"{name}-{cipher.replace(' ', '')}")
            for name in HMAC4868 for cipher in ("esp-null", "esp-aes 128", "esp-aes 256")]


INNER = ipv4("198.51.100.5", "192.0.2.5", 1,
             val(RFC7634["plaintext"])[20:84])  # RFC 7634's ICMP echo, re-addressed


def cbc_key(cipher: str) -> bytes:
    """AES keys from RFC 3602: case 5's 128-bit key, and cases 7 || 5 for 256 bits."""
    if cipher == "esp-aes 128":
        return val(CBC["5"]["key"])
    if cipher == "esp-aes 256":
        return val(CBC["7"]["key"]) + val(CBC["5"]["key"])
    return b""


@pytest.mark.parametrize(("name", "cipher"), integ_cases())
def test_integrity_decap_of_packet_built_with_rfc4868_keys(name, cipher):
    """An ESP packet built here (AES-CBC via `cryptography`, ICV via `hmac`) with the RFC
    4868 key as the integrity key decapsulates in espd."""
    c = HMAC4868[name]
    word = c["transform"].split()[-1]
    digest, _, icv_len = INTEG[word]
    auth_key, key = val(c["key"]), cbc_key(cipher)
    spi, seq = 0x1000 + len(auth_key), 7
    body = INNER + esp_trailer(len(INNER), 16 if key else 4, 4)
    if key:
        iv = bytes(range(16))
        body = iv + aes_cbc(key, iv, body)
    esp = struct.pack("!II", spi, seq) + body
    esp += hmac.new(auth_key, esp, digest).digest()[:icv_len]
    dp = Dataplane()
    dp.add_sa(spi=spi, direction="in", transform=f"{cipher} {word}", key=key,
              auth_key=auth_key, mode="tunnel", local=LOCAL, peer=PEER)
    assert dp.decap(ipv4(PEER, LOCAL, PROTO_ESP, esp)) == INNER


@pytest.mark.parametrize(("name", "cipher"), integ_cases())
def test_integrity_encap_icv_matches_hmac(name, cipher):
    """espd's encap ICV is HMAC(auth key, SPI || seq || IV || ciphertext), truncated."""
    c = HMAC4868[name]
    word = c["transform"].split()[-1]
    digest, _, icv_len = INTEG[word]
    auth_key, key = val(c["key"]), cbc_key(cipher)
    dp = Dataplane()
    sa = dp.add_sa(spi=0x4868, direction="out", transform=f"{cipher} {word}", key=key,
                   auth_key=auth_key, mode="tunnel", local=LOCAL, peer=PEER)
    out = dp.encap(sa, INNER)
    esp, icv = out[20:-icv_len], out[-icv_len:]
    assert icv == hmac.new(auth_key, esp, digest).digest()[:icv_len]
    assert esp[:8] == struct.pack("!II", 0x4868, 1)
    if key:
        iv = esp[8:24]
        assert iv == espd_cbc_iv(key, 1)
        body = aes_cbc(key, iv, esp[24:], decrypt=True)
    else:
        body = esp[8:]
    assert body == INNER + esp_trailer(len(INNER), 16 if key else 4, 4)
