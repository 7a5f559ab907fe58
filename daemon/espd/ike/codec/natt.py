"""UDP 4500 framing (RFC 3948 2.2, RFC 7296 2.23): IKE messages there start with a
4-zero-octet non-ESP marker, which tells them apart from ESP (an ESP SPI is never 0).
The transport strips and adds it; the codec always sees bare IKE messages."""

from __future__ import annotations

NON_ESP_MARKER = bytes(4)


def strip_non_esp_marker(datagram: bytes) -> bytes | None:
    """The IKE message inside a UDP 4500 datagram, or None when it is not IKE (ESP, or a
    one-octet NAT keepalive 0xFF)."""
    if len(datagram) <= len(NON_ESP_MARKER) or datagram[:4] != NON_ESP_MARKER:
        return None
    return datagram[4:]


def add_non_esp_marker(message: bytes) -> bytes:
    """The UDP 4500 datagram that carries ``message``."""
    return NON_ESP_MARKER + message
