"""Captured charon exchanges for the IKE tests: the pcap's IKE messages and the keys
charon logged (tests/data/ikev2, see its README for provenance).

A deliberately minimal IKE reader (header, payload chain, SK payload split) so the crypto
tests stand on their own, independent of espd.ike.codec.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from scapy.all import IP, UDP, rdpcap

DATA = Path(__file__).resolve().parents[1] / "data" / "ikev2"
NON_ESP_MARKER = b"\0\0\0\0"
HEADER = 28
SK = 46


def load_values(name: str) -> dict[str, bytes]:
    """`name = hex` lines of a data file (comments and [notes] ignored)."""
    values = {}
    for line in (DATA / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key.strip()] = bytes.fromhex(value.split("[")[0].strip())
    return values


@dataclass(frozen=True)
class Message:
    src: str
    raw: bytes  # the IKE message, non-ESP marker stripped

    @property
    def spi_i(self) -> bytes:
        return self.raw[0:8]

    @property
    def spi_r(self) -> bytes:
        return self.raw[8:16]

    @property
    def exchange(self) -> int:
        return self.raw[18]

    @property
    def message_id(self) -> int:
        return struct.unpack_from("!I", self.raw, 20)[0]

    @property
    def response(self) -> bool:
        return bool(self.raw[19] & 0x20)

    def payloads(self) -> list[tuple[int, bytes]]:
        return payload_chain(self.raw[16], self.raw[HEADER:])

    def sk_parts(self) -> tuple[bytes, bytes, int]:
        """(aad, IV || ciphertext || ICV, first inner payload type) of the SK payload,
        which charon always sends as the only payload: aad is header + SK generic header."""
        assert self.raw[16] == SK, "first payload is not SK"
        length = struct.unpack_from("!H", self.raw, HEADER + 2)[0]
        assert HEADER + length == len(self.raw)
        return self.raw[:HEADER + 4], self.raw[HEADER + 4:], self.raw[HEADER]


def payload_chain(first: int, data: bytes) -> list[tuple[int, bytes]]:
    """[(payload type, body)] of a chain of generic payload headers."""
    out, kind, at = [], first, 0
    while kind:
        nxt, _, length = struct.unpack_from("!BBH", data, at)
        out.append((kind, data[at + 4:at + length]))
        kind, at = nxt, at + length
    assert at == len(data), "chain does not end at the data's end"
    return out


def strip_padding(plaintext: bytes) -> bytes:
    """The inner payloads: drop the pad bytes and the pad length octet (RFC 7296 3.14)."""
    return plaintext[:-1 - plaintext[-1]]


def ike_messages(pcap: str) -> list[Message]:
    out = []
    for packet in rdpcap(str(DATA / pcap)):
        udp = packet[UDP]
        raw = bytes(udp.payload)
        if 4500 in (udp.sport, udp.dport):
            if not raw.startswith(NON_ESP_MARKER):
                continue  # ESP in UDP
            raw = raw[4:]
        out.append(Message(packet[IP].src, raw))
    return out


def esp_packets(pcap: str) -> list[tuple[str, bytes]]:
    """(source address, ESP packet) of each UDP-encapsulated ESP packet."""
    out = []
    for packet in rdpcap(str(DATA / pcap)):
        udp = packet[UDP]
        raw = bytes(udp.payload)
        if 4500 in (udp.sport, udp.dport) and len(raw) > 8 and not raw.startswith(
                NON_ESP_MARKER):
            out.append((packet[IP].src, raw))
    return out


def find(messages: list[Message], exchange: int, message_id: int, response: bool,
         spi_i: bytes | None = None) -> Message:
    [match] = [m for m in messages if m.exchange == exchange and m.message_id == message_id
               and m.response == response and (spi_i is None or m.spi_i == spi_i)]
    return match


_DUMP = re.compile(r"\](?: <[^>]*>)? (.+?) => (\d+) bytes @")
_HEX = re.compile(r"\](?: <[^>]*>)?\s+\d+: ((?:[0-9A-F]{2} )*[0-9A-F]{2})")


def charon_dumps(log: str) -> list[tuple[str, bytes]]:
    """(name, bytes) of every hex dump in a charon log at level 4, in log order
    ("SKEYSEED => 32 bytes @ 0x..." followed by "   0: 3C E3 ..." lines)."""
    lines = log.splitlines()
    out, i = [], 0
    while i < len(lines):
        head = _DUMP.search(lines[i])
        i += 1
        if not head:
            continue
        size, data = int(head.group(2)), b""
        while len(data) < size and i < len(lines):
            row = _HEX.search(lines[i])
            if not row:
                break
            data += bytes.fromhex(row.group(1).replace(" ", ""))
            i += 1
        out.append((head.group(1), data[:size]))
    return out
