"""Key derivation for an IKE SA and its Child SAs (RFC 7296 2.13-2.18, RFC 9370 2.2.2).

In protocol order:

    IKE_SA_INIT        SKEYSEED = prf(Ni | Nr, g^ir)                             initial_skeyseed
    IKE_INTERMEDIATE   SKEYSEED(n) = prf(SK_d(n-1), SK(n) | Ni | Nr)        additional_skeyseed
    IKE SA rekey       SKEYSEED = prf(SK_d(old), g^ir | Ni | Nr [| SK(1)..])   rekey_skeyseed
    every IKE SA       {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr}
                         = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)                     ike_keys
    RFC 8784 PPK       SK_d, SK_pi, SK_pr = prf+(PPK, each)                        ppk_keys
    Child SA           KEYMAT = prf+(SK_d, [g^ir |] Ni | Nr [| SK(1)..])           child_keys

Nonces and shared secrets enter as the bytes on the wire (the KE data's secret as the group
returns it: big-endian, padded to the modulus or field size). Everything derived is a
``Secret``; ``IkeKeys.wipe()`` and ``ChildKeys.wipe()`` zero them once they are handed on.

The PRF of an IKE SA rekey: SKEYSEED uses the OLD IKE SA's PRF, SK_* the NEW one's (RFC 7296
2.18, last paragraph). strongSwan uses the old PRF for both; the two agree whenever the
rekey keeps the PRF, which is what the initiator should propose first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Protocol

from espd.ike.crypto.cipher import Encr, Integ, SkCipher
from espd.ike.crypto.prf import Prf
from espd.ike.crypto.secret import Secret

Bytes = bytes | bytearray


def _concat(*parts: Bytes) -> Secret:
    """One Secret holding the parts in order, sized once (so no copy is left behind)."""
    out = Secret(sum(len(p) for p in parts))
    at = 0
    for part in parts:
        out[at:at + len(part)] = part
        at += len(part)
    return out


def initial_skeyseed(prf: Prf, nonce_i: Bytes, nonce_r: Bytes, shared: Bytes) -> Secret:
    """SKEYSEED = prf(Ni | Nr, g^ir) for the IKE SA made by IKE_SA_INIT (RFC 7296 2.14).

    Only HMAC PRFs are supported, which take the whole nonces as the key (the AES-MAC PRFs'
    truncation to 8 + 8 bytes does not apply)."""
    return prf(bytes(nonce_i) + bytes(nonce_r), shared)


def additional_skeyseed(prf: Prf, sk_d: Bytes, shared: Bytes, nonce_i: Bytes,
                        nonce_r: Bytes) -> Secret:
    """SKEYSEED(n) = prf(SK_d(n-1), SK(n) | Ni | Nr) after the n-th additional key exchange
    in IKE_INTERMEDIATE (RFC 9370 2.2.2); Ni, Nr are the IKE_SA_INIT nonces."""
    message = _concat(shared, nonce_i, nonce_r)
    try:
        return prf(sk_d, message)
    finally:
        message.wipe()


def rekey_skeyseed(old_prf: Prf, old_sk_d: Bytes, shared: Bytes, nonce_i: Bytes,
                   nonce_r: Bytes, additional: Iterable[Bytes] = ()) -> Secret:
    """SKEYSEED = prf(SK_d(old), g^ir(new) | Ni | Nr [| SK(1) | ... | SK(n)]) for an IKE SA
    rekeyed by CREATE_CHILD_SA (RFC 7296 2.18; RFC 9370 2.2.4 appends the secrets of the
    IKE_FOLLOWUP_KE exchanges). `old_prf` and `old_sk_d` are the rekeyed SA's."""
    message = _concat(shared, nonce_i, nonce_r, *additional)
    try:
        return old_prf(old_sk_d, message)
    finally:
        message.wipe()


@dataclass(frozen=True)
class IkeLengths:
    """Bytes of each SK_* for one suite: SK_d/pi/pr = PRF size (RFC 7296 2.14), SK_a =
    integrity key (0 for an AEAD), SK_e = encryption key (+ 4-byte salt for an AEAD)."""

    prf: int
    integ: int
    encr: int

    @classmethod
    def of(cls, prf: Prf, encr: Encr, integ: Integ | None) -> IkeLengths:
        return cls(prf.size, integ.key_size if integ else 0, encr.key_size)

    @property
    def total(self) -> int:
        return 3 * self.prf + 2 * self.integ + 2 * self.encr


_EMPTY = Secret()  # never grown, only wiped (a no-op): shared by established IKE SAs


@dataclass(frozen=True, repr=False, eq=False, slots=True)
class IkeKeys:
    """The seven keys of an IKE SA, in the order prf+ produces them."""

    sk_d: Secret
    sk_ai: Secret
    sk_ar: Secret
    sk_ei: Secret
    sk_er: Secret
    sk_pi: Secret
    sk_pr: Secret

    def wipe(self) -> None:
        for f in fields(self):
            getattr(self, f.name).wipe()

    def only_sk_d(self) -> IkeKeys:
        """These keys with every one but SK_d wiped and dropped (an established IKE SA
        derives from SK_d alone; its SK ciphers hold their own SK_e/SK_a)."""
        for f in fields(self):
            if f.name != "sk_d":
                getattr(self, f.name).wipe()
        empty = _EMPTY  # holds no byte: shared by every established IKE SA
        return IkeKeys(self.sk_d, empty, empty, empty, empty, empty, empty)

    def __repr__(self) -> str:
        return "<IkeKeys " + " ".join(f"{f.name}={len(getattr(self, f.name))}B"
                                       for f in fields(self)) + ">"


def ike_keys(prf: Prf, skeyseed: Bytes, nonce_i: Bytes, nonce_r: Bytes, spi_i: Bytes,
             spi_r: Bytes, lengths: IkeLengths) -> IkeKeys:
    """{SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi |
    SPIr) (RFC 7296 2.14). SPIs are the 8-byte values of the IKE header (for a rekey: the
    new SPIs from the SA payloads), nonces those of the exchange that made the keys."""
    if len(spi_i) != 8 or len(spi_r) != 8:
        raise ValueError("IKE SPIs are 8 bytes each")
    keymat = prf.plus(skeyseed, bytes(nonce_i) + bytes(nonce_r) + bytes(spi_i) + bytes(spi_r),
                      lengths.total)
    sizes = (lengths.prf, lengths.integ, lengths.integ, lengths.encr, lengths.encr,
             lengths.prf, lengths.prf)
    parts, at = [], 0
    for size in sizes:
        parts.append(keymat.cut(at, size))
        at += size
    keymat.wipe()
    return IkeKeys(*parts)


def ike_ciphers(keys: IkeKeys, encr: Encr, integ: Integ | None,
                initiator: bool) -> tuple[SkCipher, SkCipher]:
    """(outbound, inbound) SK ciphers: the initiator seals with SK_ei/SK_ai and opens with
    SK_er/SK_ar; the responder the other way round."""
    mine = encr.cipher(keys.sk_ei, integ, keys.sk_ai) if integ else encr.cipher(keys.sk_ei)
    theirs = encr.cipher(keys.sk_er, integ, keys.sk_ar) if integ else encr.cipher(keys.sk_er)
    return (mine, theirs) if initiator else (theirs, mine)


class EspKeyShape(Protocol):
    """Key lengths of an ESP transform, as ``espd.config.transforms.Transform`` has them: key_len
    includes the AEAD salt; auth_key_len is 0 for an AEAD."""

    key_len: int
    auth_key_len: int


@dataclass(frozen=True, repr=False, eq=False)
class EspKeys:
    """One ESP SA's keys in the data plane's shape: ``Dataplane.create_sa(key=...,
    auth_key=...)`` takes them as they are (``esp-gcm 256``: a 36-byte key, salt last)."""

    key: Secret
    auth_key: Secret

    def wipe(self) -> None:
        self.key.wipe()
        self.auth_key.wipe()

    def __repr__(self) -> str:
        return f"<EspKeys key={len(self.key)}B auth_key={len(self.auth_key)}B>"


@dataclass(frozen=True, repr=False, eq=False)
class ChildKeys:
    """A Child SA's two ESP SAs: the initiator's outbound and the responder's outbound."""

    initiator_to_responder: EspKeys
    responder_to_initiator: EspKeys

    def outbound(self, initiator: bool) -> EspKeys:
        return self.initiator_to_responder if initiator else self.responder_to_initiator

    def inbound(self, initiator: bool) -> EspKeys:
        return self.responder_to_initiator if initiator else self.initiator_to_responder

    def wipe(self) -> None:
        self.initiator_to_responder.wipe()
        self.responder_to_initiator.wipe()

    def __repr__(self) -> str:
        return f"<ChildKeys {self.initiator_to_responder!r} {self.responder_to_initiator!r}>"


def child_keys(prf: Prf, sk_d: Bytes, nonce_i: Bytes, nonce_r: Bytes, esp: EspKeyShape,
               shared: Bytes | None = None, additional: Iterable[Bytes] = ()) -> ChildKeys:
    """KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr [| SK(1) | ... | SK(n)]) (RFC 7296 2.17;
    RFC 9370 2.2.4 appends the additional key exchanges' secrets).

    `shared` is the PFS key exchange's secret of a CREATE_CHILD_SA (None for the Child SA
    of IKE_AUTH and for a rekey without PFS); the nonces are those of the exchange that
    creates the Child SA (IKE_AUTH's Child SA uses the IKE_SA_INIT nonces). Split as RFC
    7296 2.17 says: initiator-to-responder keys first, each SA's encryption key (salt
    included) before its integrity key."""
    seed = _concat(*((shared,) if shared is not None else ()), nonce_i, nonce_r, *additional)
    per_sa = esp.key_len + esp.auth_key_len
    try:
        keymat = prf.plus(sk_d, seed, 2 * per_sa)
    finally:
        seed.wipe()
    try:
        directions = [
            EspKeys(keymat.cut(at, esp.key_len), keymat.cut(at + esp.key_len, esp.auth_key_len))
            for at in (0, per_sa)
        ]
    finally:
        keymat.wipe()
    return ChildKeys(*directions)


def ppk_keys(prf: Prf, ppk: Bytes, keys: IkeKeys) -> IkeKeys:
    """Mix an RFC 8784 post-quantum preshared key into an IKE SA's keys (section 3):

        SK_d' = prf+(PPK, SK_d),  SK_pi' = prf+(PPK, SK_pi),  SK_pr' = prf+(PPK, SK_pr)

    each as long as before; SK_a and SK_e are kept. The result holds copies of its own, so
    wiping `keys` afterwards (as the caller should) leaves it whole."""
    return IkeKeys(prf.plus(ppk, keys.sk_d, len(keys.sk_d)), Secret(keys.sk_ai),
                   Secret(keys.sk_ar), Secret(keys.sk_ei), Secret(keys.sk_er),
                   prf.plus(ppk, keys.sk_pi, len(keys.sk_pi)),
                   prf.plus(ppk, keys.sk_pr, len(keys.sk_pr)))
