"""Pre-shared key authentication (RFC 7296 2.15, AUTH method 2 "Shared Key Message
Integrity Code"):

    AUTH = prf( prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>)

with the IKE SA's PRF. Each direction may have its own key (IOS ``pre-shared-key local``
and ``pre-shared-key remote``): ours builds our AUTH, the peer's verifies theirs. The
comparison is constant-time; failures name the mismatch, never the key.
"""

from __future__ import annotations

import hmac

from espd.ike.auth.base import AuthenticationFailed, Bytes, SignedOctets
from espd.ike.crypto.secret import Secret

AUTH_SHARED_KEY_MIC = 2  # IKEv2 Authentication Method (RFC 7296 3.8)
KEY_PAD = b"Key Pad for IKEv2"  # 17 ASCII characters, no NUL (RFC 7296 2.15)


class PskAuthenticator:
    """PSK AUTH with a local key (ours) and a remote key (the peer's; the same by default)."""

    method = AUTH_SHARED_KEY_MIC

    def __init__(self, local: Bytes, remote: Bytes | None = None) -> None:
        if not local or (remote is not None and not remote):
            raise ValueError("a pre-shared key cannot be empty")
        self._local = Secret(local)  # our own copies: the caller wipes its buffers
        self._remote = Secret(remote if remote is not None else local)

    def _auth(self, key: Bytes, octets: SignedOctets) -> bytes:
        padded = octets.prf(key, KEY_PAD)
        try:
            return bytes(octets.prf(padded, octets.octets))
        finally:
            padded.wipe()

    def build(self, octets: SignedOctets) -> tuple[int, bytes]:
        return AUTH_SHARED_KEY_MIC, self._auth(self._local, octets)

    def verify(self, octets: SignedOctets, method: int, data: bytes) -> None:
        if method != AUTH_SHARED_KEY_MIC:
            raise AuthenticationFailed(f"peer authenticated with AUTH method {method}, "
                                       f"expected {AUTH_SHARED_KEY_MIC} (pre-shared key)")
        if not hmac.compare_digest(self._auth(self._remote, octets), bytes(data)):
            raise AuthenticationFailed("peer's AUTH does not match the pre-shared key "
                                       "configured for it (keys differ, or wrong identity)")

    def wipe(self) -> None:
        """Zero both keys (the object is useless afterwards)."""
        self._local.wipe()
        self._remote.wipe()

    def __repr__(self) -> str:
        return "<PskAuthenticator>"
