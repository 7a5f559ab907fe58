"""The opt-in key log: IKE SA and ESP SA keys in the form Wireshark's decryption tables
take, so that a capture can be decrypted by an independent dissector.

Off unless ``key_log`` names a file. The file is created 0600 (never widened if it
exists) and appended to; each line is one ``-o`` preference value for tshark:

    uat:ikev2_decryption_table:SPIi,SPIr,SK_ei,SK_er,"ENCR",SK_ai,SK_ar,"INTEG"
    uat:esp_sa:"IPv4","SRC","DST","0xSPI","ENCR","0xKEY","AUTH","0xAUTHKEY"

(``tshark -r x.pcap $(sed 's/^/-o /' keylog)``, or one ``-o`` argument per line.) Key
material reaches this file and nowhere else: it is written for packet analysis in a lab.
An IKE SA keyed again by IKE_INTERMEDIATE (RFC 9370) gets one row, its final keys (the
table takes one per SPI pair): IKE_AUTH and later decrypt, the IKE_INTERMEDIATE
messages (their KE payloads are public values) stay encrypted.
"""

from __future__ import annotations

import os

_IKE_ENCR = {("aes128", 16): "AES-CBC-128 [RFC3602]", ("aes256", 32): "AES-CBC-256 [RFC3602]",
             ("aes128gcm16", 20): "AES-GCM-128 with 16 octet ICV [RFC5282]",
             ("aes256gcm16", 36): "AES-GCM-256 with 16 octet ICV [RFC5282]"}
_IKE_INTEG = {"sha256": "HMAC_SHA2_256_128 [RFC4868]", "sha384": "HMAC_SHA2_384_192 [RFC4868]",
              "sha512": "HMAC_SHA2_512_256 [RFC4868]", None: "NONE [RFC4306]"}
_ESP_ENCR = {"esp-gcm": "AES-GCM with 16 octet ICV [RFC4106]", "esp-aes": "AES-CBC [RFC3602]",
             "esp-null": "NULL", "esp-chacha20-poly1305": "ChaCha20 with Poly1305 [RFC7634]"}
_ESP_AUTH = {"esp-sha-hmac": "HMAC-SHA-1-96 [RFC2404]",
             "esp-sha256-hmac": "HMAC-SHA-256-128 [RFC4868]",
             "esp-sha384-hmac": "HMAC-SHA-384-192 [RFC4868]",
             "esp-sha512-hmac": "HMAC-SHA-512-256 [RFC4868]"}


class KeyLog:
    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        self._file = os.fdopen(fd, "a", buffering=1)

    def ike_sa(self, spi_i: bytes, spi_r: bytes, encr: str, integ: str | None,
               keys: object) -> None:
        """One IKEv2 decryption table row (``keys`` is the SA's crypto IkeKeys)."""
        sk_ei = bytes(keys.sk_ei)  # type: ignore[attr-defined]
        encr_name = _IKE_ENCR.get((encr, len(sk_ei)), encr)
        self._write(
            f'uat:ikev2_decryption_table:{spi_i.hex()},{spi_r.hex()},{sk_ei.hex()},'
            f'{bytes(keys.sk_er).hex()},"{encr_name}",'  # type: ignore[attr-defined]
            f'{bytes(keys.sk_ai).hex()},{bytes(keys.sk_ar).hex()},'  # type: ignore[attr-defined]
            f'"{_IKE_INTEG.get(integ, integ)}"')

    def esp_sa(self, src: object, dst: object, spi: int, transform: str, key: bytes,
               auth_key: bytes | None) -> None:
        """One ESP SA table row (one direction)."""
        words = transform.split()
        family = "IPv6" if ":" in str(src) else "IPv4"
        integ = next((w for w in words if w in _ESP_AUTH), None)
        auth = _ESP_AUTH[integ] if integ else "NULL"
        self._write(f'uat:esp_sa:"{family}","{src}","{dst}","0x{spi:08x}",'
                    f'"{_ESP_ENCR.get(words[0], words[0])}","0x{bytes(key).hex()}",'
                    f'"{auth}","{"0x" + bytes(auth_key).hex() if auth_key else ""}"')

    def _write(self, line: str) -> None:
        self._file.write(line + "\n")

    def close(self) -> None:
        self._file.close()
