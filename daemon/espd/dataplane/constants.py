"""Numbers the C data plane fixes, read from it (native/espdp.h) instead of copied.

Importing this module loads the compiled data plane but not the binding, so modules the
binding itself imports (the transform names in ``espd.config.transforms``) can use it.
"""

from __future__ import annotations

from espd import _native  # type: ignore[attr-defined]

_lib = _native.lib
_ffi = _native.ffi

HEADROOM: int = _lib.ESPDP_HEADROOM  # packet buffer bytes before the packet
TAILROOM: int = _lib.ESPDP_TAILROOM  # and after it
DROP_SLOTS: int = _lib.ESPDP_DROP_SLOTS  # entries of every drops[] array
NATT_PORT: int = _lib.ESPDP_NATT_PORT  # UDP encapsulation, RFC 3948

# espdp_sa_stats.flags, by name
SA_FLAGS: dict[str, int] = {
    "soft_expired": _lib.ESPDP_SA_SOFT_EXPIRED,
    "hard_expired": _lib.ESPDP_SA_HARD_EXPIRED,
    "seq_cycled": _lib.ESPDP_SA_SEQ_CYCLED,
}

# TUNSETOFFLOAD bits
TUN_F_CSUM: int = _lib.ESPDP_TUN_F_CSUM
TUN_F_TSO4: int = _lib.ESPDP_TUN_F_TSO4
TUN_F_TSO6: int = _lib.ESPDP_TUN_F_TSO6
TUN_F_USO4: int = _lib.ESPDP_TUN_F_USO4  # UDP segmentation offload, Linux 6.2+
TUN_F_USO6: int = _lib.ESPDP_TUN_F_USO6

# enum espdp_cipher / enum espdp_integ
CIPHER_NULL: int = _lib.ESPDP_CIPHER_NULL
CIPHER_AES_CBC: int = _lib.ESPDP_CIPHER_AES_CBC
CIPHER_AES_GCM: int = _lib.ESPDP_CIPHER_AES_GCM
CIPHER_CHACHA20_POLY1305: int = _lib.ESPDP_CIPHER_CHACHA20_POLY1305
INTEG_NONE: int = _lib.ESPDP_INTEG_NONE
INTEG_SHA1_96: int = _lib.ESPDP_INTEG_HMAC_SHA1_96
INTEG_SHA256_128: int = _lib.ESPDP_INTEG_HMAC_SHA256_128
INTEG_SHA384_192: int = _lib.ESPDP_INTEG_HMAC_SHA384_192
INTEG_SHA512_256: int = _lib.ESPDP_INTEG_HMAC_SHA512_256


class TransformLengths:
    """The byte lengths of one transform as the data plane implements it."""

    __slots__ = ("key_len", "auth_key_len", "iv_len", "icv_len", "block")

    def __init__(self, key_len: int, auth_key_len: int, iv_len: int, icv_len: int,
                 block: int) -> None:
        self.key_len, self.auth_key_len = key_len, auth_key_len
        self.iv_len, self.icv_len, self.block = iv_len, icv_len, block


def transform_lengths(cipher: int, key_bits: int, integ: int) -> TransformLengths | None:
    """Key, auth key, IV and ICV lengths of a transform; None if the data plane refuses it."""
    out = _ffi.new("struct espdp_transform *")
    if _lib.espdp_transform_info(cipher, key_bits, integ, out) != _lib.ESPDP_OK:
        return None
    return TransformLengths(out.key_len, out.auth_key_len, out.iv_len, out.icv_len, out.block)
