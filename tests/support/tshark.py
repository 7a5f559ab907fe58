"""tshark as an independent decoder: decrypt IKEv2 and ESP captures with key material.

Wireshark's IKEv2 decryption table (UAT ``ikev2_decryption_table``) takes, per IKE SA,
``SPIi,SPIr,SK_ei,SK_er,"ENCR",SK_ai,SK_ar,"INTEG"`` (hex, no 0x); its ESP table (UAT
``esp_sa``) takes, per SA and direction, ``"IPv4","SRC","DST","0xSPI","ENCR","0xKEY",
"AUTH","0xAUTHKEY"`` (for AES-GCM the key is the key plus its 4-byte salt, auth "NULL").
Both go on the command line as ``-o uat:TABLE:ROW``; a UAT file (one row a line, as
Wireshark writes ~/.config/wireshark/ikev2_decryption_table and esp_sa) converts with
``options_from_uat_file``.

What tshark 4.0 (Debian 12) can and cannot check: IKE SK payloads get their ICV verified
(HMAC and AES-GCM alike), shown as ``<ALG>[correct]`` (or ``[incorrect, should be ...]``)
in the ICV field's text; ESP HMAC ICVs are checked (``esp.icv_good``/``esp.icv_bad``) once
``esp.enable_authentication_check`` is on (``options`` switches it on), but
an AES-GCM ESP ICV is left ``[unchecked]``, so ``esp_decrypted`` also proves the key by the
inner packet parsing as IP between the expected addresses. The
decryption tables know no ChaCha20-Poly1305 (neither for IKE nor for ESP).
"""

from __future__ import annotations

import csv
import os
import shlex
import shutil
import struct
import subprocess
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# names exactly as the dissectors' UAT drop-downs spell them (Wireshark 4.0)
IKE_ENCR = {  # (IKEv2 transform, key bits) -> ikev2_decryption_table encryption algorithm
    ("aes-cbc", 128): "AES-CBC-128 [RFC3602]",
    ("aes-cbc", 192): "AES-CBC-192 [RFC3602]",
    ("aes-cbc", 256): "AES-CBC-256 [RFC3602]",
    ("aes-gcm-8", 128): "AES-GCM-128 with 8 octet ICV [RFC5282]",
    ("aes-gcm-12", 128): "AES-GCM-128 with 12 octet ICV [RFC5282]",
    ("aes-gcm-16", 128): "AES-GCM-128 with 16 octet ICV [RFC5282]",
    ("aes-gcm-16", 192): "AES-GCM-192 with 16 octet ICV [RFC5282]",
    ("aes-gcm-16", 256): "AES-GCM-256 with 16 octet ICV [RFC5282]",
    ("aes-ccm-16", 128): "AES-CCM-128 with 16 octet ICV [RFC5282]",
    ("aes-ccm-16", 256): "AES-CCM-256 with 16 octet ICV [RFC5282]",
}
IKE_INTEG = {
    None: "NONE [RFC4306]",  # AEAD
    "hmac-sha1-96": "HMAC_SHA1_96 [RFC2404]",
    "hmac-sha2-256-128": "HMAC_SHA2_256_128 [RFC4868]",
    "hmac-sha2-384-192": "HMAC_SHA2_384_192 [RFC4868]",
    "hmac-sha2-512-256": "HMAC_SHA2_512_256 [RFC4868]",
}
ESP_ENCR = {
    "null": "NULL",
    "aes-cbc": "AES-CBC [RFC3602]",
    "aes-gcm-8": "AES-GCM with 8 octet ICV [RFC4106]",
    "aes-gcm-12": "AES-GCM with 12 octet ICV [RFC4106]",
    "aes-gcm-16": "AES-GCM with 16 octet ICV [RFC4106]",
}
ESP_AUTH = {
    None: "NULL",  # AEAD
    "hmac-sha1-96": "HMAC-SHA-1-96 [RFC2404]",
    "hmac-sha2-256-128": "HMAC-SHA-256-128 [RFC4868]",
    "hmac-sha2-384-192": "HMAC-SHA-384-192 [RFC4868]",
    "hmac-sha2-512-256": "HMAC-SHA-512-256 [RFC4868]",
}


ESP_AUTH_CHECK = "esp.enable_authentication_check:TRUE"  # off by default: HMAC ICVs unchecked


class TsharkError(RuntimeError):
    pass


def unavailable() -> str | None:
    if shutil.which("tshark") is None:
        return "needs tshark ('make peers' installs it)"
    return None


def _quoted(text: str) -> str:
    if '"' in text or "\n" in text:
        raise ValueError(f"not a UAT string: {text!r}")
    return f'"{text}"'


@dataclass(frozen=True)
class IkeSaKeys:
    """One IKE SA's SK_e*/SK_a* keys, for ``ikev2_decryption_table``."""

    spi_i: bytes
    spi_r: bytes
    sk_ei: bytes
    sk_er: bytes
    encr: str  # an IKE_ENCR value
    sk_ai: bytes = b""
    sk_ar: bytes = b""
    integ: str = IKE_INTEG[None]

    def row(self) -> str:
        if len(self.spi_i) != 8 or len(self.spi_r) != 8:
            raise ValueError("IKE SPIs are 8 bytes")
        return ",".join([self.spi_i.hex(), self.spi_r.hex(), self.sk_ei.hex(),
                         self.sk_er.hex(), _quoted(self.encr), self.sk_ai.hex(),
                         self.sk_ar.hex(), _quoted(self.integ)])


@dataclass(frozen=True)
class EspSaKeys:
    """One ESP SA (one direction), for ``esp_sa``. ``key`` includes an AEAD salt."""

    src: str
    dst: str
    spi: int
    encr: str  # an ESP_ENCR value
    key: bytes
    auth: str = ESP_AUTH[None]
    auth_key: bytes = b""

    def row(self) -> str:
        family = "IPv6" if ":" in self.src else "IPv4"
        return ",".join([_quoted(family), _quoted(self.src), _quoted(self.dst),
                         _quoted(f"0x{self.spi:08x}"), _quoted(self.encr),
                         _quoted("0x" + self.key.hex()), _quoted(self.auth),
                         _quoted("0x" + self.auth_key.hex() if self.auth_key else "")])


def options(ike: Iterable[IkeSaKeys] = (), esp: Iterable[EspSaKeys] = ()) -> list[str]:
    """tshark ``-o`` arguments that decrypt these SAs (ESP decryption switched on)."""
    out: list[str] = []
    for sa in ike:
        out += ["-o", f"uat:ikev2_decryption_table:{sa.row()}"]
    esp = list(esp)
    if esp:
        out += ["-o", "esp.enable_encryption_decode:TRUE"]
        out += ["-o", ESP_AUTH_CHECK]
        for sa in esp:
            out += ["-o", f"uat:esp_sa:{sa.row()}"]
    return out


def options_from_opts_file(path: str) -> list[str]:
    """The ``-o ...`` words of a shell-quoted options file (shared/ikev2/*.tshark-opts)."""
    with open(path) as f:
        words = shlex.split(f.read(), comments=True)
    for i in range(0, len(words), 2):
        if words[i] != "-o" or i + 1 >= len(words):
            raise TsharkError(f"{path}: expected '-o NAME:VALUE' pairs, got {words[i:i + 2]}")
    return words


def options_from_uat_file(path: str, table: str) -> list[str]:
    """``-o uat:TABLE:ROW`` per row of a Wireshark UAT file (``#`` lines are comments)."""
    out: list[str] = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                out += ["-o", f"uat:{table}:{line}"]
    if table == "esp_sa" and out:
        out = ["-o", "esp.enable_encryption_decode:TRUE", "-o", ESP_AUTH_CHECK, *out]
    return out


KNOWN = {  # what tshark 4.0 takes in each table's algorithm columns (0-based)
    "ikev2_decryption_table": {4: set(IKE_ENCR.values()), 7: set(IKE_INTEG.values())},
    "esp_sa": {4: set(ESP_ENCR.values()), 6: set(ESP_AUTH.values())},
}


def _uat_fields(row: str) -> list[str]:
    return next(csv.reader([row], skipinitialspace=False))


def options_from_keylog(path: str, skip_unsupported: bool = False) -> list[str]:
    """tshark options from espd's key log: one ``uat:TABLE:ROW`` preference a line.

    tshark refuses the whole run on an algorithm name it does not know (4.0 has no
    ChaCha20-Poly1305 in either table): such a row raises TsharkError, naming it, or with
    ``skip_unsupported`` is left out (its packets then stay encrypted)."""
    ike: list[str] = []
    esp: list[str] = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            prefix, _, rest = line.partition(":")
            table, _, row = rest.partition(":")
            if prefix != "uat" or table not in KNOWN:
                raise TsharkError(f"{path}:{number}: not a 'uat:ikev2_decryption_table:' or "
                                  f"'uat:esp_sa:' line: {line[:60]!r}")
            fields = _uat_fields(row)
            unknown = [fields[i] for i, names in KNOWN[table].items()
                       if i >= len(fields) or fields[i] not in names]
            if unknown:
                if skip_unsupported:
                    continue
                raise TsharkError(f"{path}:{number}: tshark 4.0 has no {unknown} in "
                                  f"{table}; known: {sorted(set().union(*KNOWN[table].values()))}")
            (ike if table == "ikev2_decryption_table" else esp).append(f"uat:{table}:{row}")
    out = [w for pref in ike for w in ("-o", pref)]
    if esp:
        out += ["-o", "esp.enable_encryption_decode:TRUE", "-o", ESP_AUTH_CHECK]
        out += [w for pref in esp for w in ("-o", pref)]
    return out


# -- dissecting ------------------------------------------------------------------------------

@dataclass
class Field:
    name: str
    show: str  # the value as tshark shows it
    showname: str  # the whole line of -V output (where "[correct]" is written)
    value: str  # raw bytes, hex


@dataclass
class Packet:
    number: int
    protocols: list[str]  # frame.protocols, in order: eth, ip, udp, ... esp, ip, icmp
    fields: list[Field] = field(default_factory=list)

    def all(self, name: str) -> list[Field]:
        return [f for f in self.fields if f.name == name]

    def first(self, name: str) -> str | None:
        found = self.all(name)
        return found[0].show if found else None

    def shows(self, name: str) -> list[str]:
        return [f.show for f in self.all(name)]


def run_tshark(pcap: str, opts: Sequence[str], extra: Sequence[str] = (),
               timeout: float = 60.0) -> str:
    argv = ["tshark", "-n", "-r", pcap, *opts, *extra]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise TsharkError(f"tshark on {pcap}: no answer within {timeout} s") from e
    noise = "Running as user \"root\""
    errors = [line for line in r.stderr.splitlines() if line.strip() and noise not in line]
    if r.returncode != 0 or errors:
        raise TsharkError(f"tshark -r {pcap} failed ({r.returncode}): " + "\n".join(errors))
    return r.stdout


def dissect(pcap: str, opts: Sequence[str] = (), display_filter: str | None = None
            ) -> list[Packet]:
    """Every packet of ``pcap`` as tshark dissects it with ``opts`` (PDML, parsed)."""
    extra = ["-T", "pdml"] + (["-Y", display_filter] if display_filter else [])
    root = ElementTree.fromstring(run_tshark(pcap, opts, extra))
    packets = []
    for pkt in root.iter("packet"):
        number, protocols = 0, []
        fields: list[Field] = []
        for element in pkt.iter("field"):
            name = element.get("name", "")
            if name == "frame.number":
                number = int(element.get("show", "0"))
            elif name == "frame.protocols":
                protocols = element.get("show", "").split(":")
            if name:
                fields.append(Field(name, element.get("show", ""),
                                    element.get("showname", ""), element.get("value", "")))
        packets.append(Packet(number, protocols, fields))
    return packets


# -- checks ----------------------------------------------------------------------------------

@dataclass
class IkeCheck:
    encrypted: list[int]  # frames with an SK (or SKF) payload
    correct: list[int]  # ... whose ICV tshark verified
    wrong: list[str]  # "frame N: what tshark said" for any other outcome


def ike_integrity(packets: Sequence[Packet]) -> IkeCheck:
    """Which encrypted IKE messages tshark decrypted with a verified ICV."""
    check = IkeCheck([], [], [])
    for p in packets:
        if not p.all("isakmp.enc.data"):
            continue
        check.encrypted.append(p.number)
        icvs = p.all("isakmp.enc.icd")
        if icvs and all(f.showname.endswith("[correct]") for f in icvs):
            check.correct.append(p.number)
        else:
            said = "; ".join(f.showname for f in icvs) or "no ICV field (not decrypted)"
            check.wrong.append(f"frame {p.number}: {said}")
    return check


@dataclass
class EspCheck:
    esp: list[int]  # frames with ESP
    decrypted: list[int]  # ... decrypted to an inner IP packet between expected addresses
    wrong: list[str]
    inner: list[tuple[int, str, str, str]]  # (frame, inner src, inner dst, inner protocol)
    icv_good: list[int] = field(default_factory=list)  # frames whose HMAC ICV tshark checked


def esp_decrypted(packets: Sequence[Packet], inner_addresses: Iterable[str] | None = None
                  ) -> EspCheck:
    """Which ESP packets tshark decrypted into an IP packet (tunnel mode) whose addresses
    are all in ``inner_addresses`` (if given). A wrong key decrypts to noise, which does
    not parse as IP between those addresses."""
    allowed = set(inner_addresses) if inner_addresses is not None else None
    check = EspCheck([], [], [], [])
    for p in packets:
        if "esp" not in p.protocols:
            continue
        check.esp.append(p.number)
        after = p.protocols[p.protocols.index("esp") + 1:]
        inner_ip = next((proto for proto in after if proto in ("ip", "ipv6")), None)
        if p.first("esp.icv_bad") == "1":  # an HMAC ICV tshark could check, and it failed
            check.wrong.append(f"frame {p.number}: ESP ICV incorrect "
                               f"({'; '.join(f.showname for f in p.all('esp.icv'))})")
            continue
        if not p.all("esp.decrypted_data") or inner_ip is None:
            check.wrong.append(f"frame {p.number}: not decrypted (protocols "
                               f"{':'.join(p.protocols)})")
            continue
        key = "ip" if inner_ip == "ip" else "ipv6"
        srcs, dsts = p.shows(f"{key}.src"), p.shows(f"{key}.dst")
        if len(srcs) < 2 or len(dsts) < 2:
            check.wrong.append(f"frame {p.number}: no inner {key} addresses")
            continue
        src, dst = srcs[-1], dsts[-1]  # the outer header comes first
        proto = after[after.index(inner_ip) + 1] if after.index(inner_ip) + 1 < len(after) \
            else ""
        if allowed is not None and not {src, dst} <= allowed:
            check.wrong.append(f"frame {p.number}: inner {src} -> {dst} is not between "
                               f"{sorted(allowed)} (a wrong key?)")
            continue
        check.decrypted.append(p.number)
        check.inner.append((p.number, src, dst, proto))
        if p.first("esp.icv_good") == "1":
            check.icv_good.append(p.number)
    return check


# -- capturing -------------------------------------------------------------------------------

PCAP_HEADER = struct.Struct("<IHHiIII")
PCAP_RECORD = struct.Struct("<IIII")
LINKTYPE_ETHERNET = 1


def write_pcap(path: str, frames: Iterable[tuple[float, bytes]]) -> int:
    """Write (unix time, Ethernet frame) pairs as a classic pcap file; the frame count."""
    count = 0
    with open(path, "wb") as f:
        f.write(PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, 262144, LINKTYPE_ETHERNET))
        for at, frame in frames:
            seconds = int(at)
            micros = int((at - seconds) * 1_000_000)
            f.write(PCAP_RECORD.pack(seconds, micros, len(frame), len(frame)))
            f.write(frame)
            count += 1
    return count


class PcapCapture:
    """Every frame on ``ifname`` in namespace ``ns`` while the ``with`` block runs, written
    to ``path`` as pcap at the end (support.netns.Capture underneath: AF_PACKET in the
    namespace, both directions, GSO packets split as on the wire)."""

    def __init__(self, ns: str, ifname: str, path: str) -> None:
        from support.netns import Capture

        self.path = path
        self.capture = Capture(ns, ifname)
        self.frames = 0
        self._offset = time.time() - time.monotonic()  # Capture stamps with monotonic

    def __enter__(self) -> PcapCapture:
        self.capture.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        frames = self.capture.stop()
        self.frames = write_pcap(self.path, ((t + self._offset, frame)
                                             for t, frame, _ in frames))
        os.chmod(self.path, 0o600)  # it may carry what the key log decrypts
