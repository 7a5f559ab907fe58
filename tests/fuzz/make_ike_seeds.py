"""Seeds for the ike fuzz target (tests/fuzz/corpus/ike): every captured charon message of
tests/data/ikev2/ as it was on the wire, and each SK message of the runs whose keys are
known opened and re-sealed with fuzz_ike.py's null cipher, so the inner chains (IDi, AUTH,
CERT, TS, D...) are reachable without breaking AES. Run from the repository root:
    .venv/bin/python tests/fuzz/make_ike_seeds.py
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from espd.ike.codec import Encrypted, decode_message, decrypt_message, encrypt_message

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "ikev2"
OUT = ROOT / "tests" / "fuzz" / "corpus" / "ike"
RUNS = {"psk-trap": "ike", "cert": "cert"}


class CbcHmac:
    iv_size = icv_size = block_size = 16

    def __init__(self, sk_e: bytes, sk_a: bytes) -> None:
        self.sk_e, self.sk_a = sk_e, sk_a

    def open(self, aad: bytes, body: bytes) -> bytes:
        iv, ct, icv = body[:16], body[16:-16], body[-16:]
        if hmac.new(self.sk_a, aad + iv + ct, hashlib.sha256).digest()[:16] != icv:
            raise ValueError("ICV")
        decryptor = Cipher(algorithms.AES(self.sk_e), modes.CBC(iv)).decryptor()
        return decryptor.update(ct) + decryptor.finalize()


class NullCipher:
    iv_size = icv_size = 0
    block_size = 1

    def seal(self, aad: bytes, plaintext: bytes) -> bytes:
        return plaintext


def main() -> None:
    keys = json.loads((DATA / "sk-keys.json").read_text())
    OUT.mkdir(parents=True, exist_ok=True)
    for path in sorted(DATA.glob("*.bin")):
        shutil.copy(path, OUT / path.name)
        run = RUNS.get(path.name.rsplit("-", 3)[0])
        raw = path.read_bytes()
        if run is None or not isinstance(decode_message(raw).payloads[-1], Encrypted):
            continue
        k = {name: bytes.fromhex(v) for name, v in keys[run].items() if name.startswith("sk_")}
        side = "i" if raw[19] & 0x08 else "r"
        try:
            message = decrypt_message(raw, CbcHmac(k[f"sk_e{side}"], k[f"sk_a{side}"]))
        except ValueError:
            continue  # another IKE SA of the run (after a rekey): keys not captured
        clear = encrypt_message(message.header, message.payloads, NullCipher())
        (OUT / f"{path.stem}-null-sk.bin").write_bytes(clear)
    print(f"{len(list(OUT.iterdir()))} seeds in {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
