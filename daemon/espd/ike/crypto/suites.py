"""IKE SA suites: negotiated transform ids and configuration names -> algorithms.

One vocabulary both ways, strongSwan's proposal keywords (``aes256gcm16-prfsha384-x25519``,
``aes256-sha256-modp2048``), which ``show`` prints and the TOML config takes; IOS words
(``encryption aes-gcm-256``, ``integrity sha256``, ``prf sha384``, ``group 19``) map onto
the same objects through ``IOS_*``. Names RFC 8247 forbids, or espd does not implement, are
refused with their status and the name to write instead, as ``espd.config.transforms`` refuses ESP
transforms.

Lookups by IANA id (``encr``, ``integ``, ``prf``, ``group``) return None for an id espd does
not take, so the proposal choice simply skips such a transform; ``refusal(kind, ident)``
says why, for the log line of NO_PROPOSAL_CHOSEN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cryptography

from espd.ike.crypto.cipher import ENCRS, INTEGS, Encr, Integ, SkCipher
from espd.ike.crypto.dh import GROUPS, MLKEM_MIN_CRYPTOGRAPHY, KeyExchange
from espd.ike.crypto.keymat import IkeKeys, IkeLengths, ike_ciphers
from espd.ike.crypto.prf import PRFS, Prf

RECOMMENDED = "aes256gcm16-prfsha384-x25519"

ENCR, PRF, INTEG, KE = 1, 2, 3, 4  # transform types (RFC 7296 3.3.2)


class SuiteError(ValueError):
    """An IKE proposal that espd refuses; the message says what to write instead."""


@dataclass(frozen=True)
class IkeSuite:
    """A complete IKE SA transform set: ENCR (+ INTEG unless AEAD), PRF and the KE method
    (plus RFC 9370 additional key exchanges, in transform type order 6, 7, ...)."""

    encr: Encr
    integ: Integ | None
    prf: Prf
    ke: KeyExchange
    additional: tuple[KeyExchange, ...] = ()

    def __post_init__(self) -> None:
        if self.encr.aead and self.integ is not None:
            raise SuiteError(f"{self.encr.name} is an AEAD and takes no integrity "
                             f"algorithm; drop '{self.integ.name}'")
        if not self.encr.aead and self.integ is None:
            raise SuiteError(f"{self.encr.name} needs an integrity algorithm, e.g. "
                             f"'{self.encr.name}-sha256-{self.prf.name}-{self.ke.name}'")

    @property
    def lengths(self) -> IkeLengths:
        return IkeLengths.of(self.prf, self.encr, self.integ)

    def ciphers(self, keys: IkeKeys, initiator: bool) -> tuple[SkCipher, SkCipher]:
        """(outbound, inbound) SK ciphers for this side of the IKE SA."""
        return ike_ciphers(keys, self.encr, self.integ, initiator)

    @property
    def name(self) -> str:
        parts = [self.encr.name, *([self.integ.name] if self.integ else []), self.prf.name,
                 self.ke.name, *(f"ke{n}_{k.name}" for n, k in enumerate(self.additional, 1))]
        return "-".join(parts)

    def __str__(self) -> str:
        return self.name


# --- lookups by negotiated id -------------------------------------------------------------

def encr(ident: int, key_bits: int | None) -> Encr | None:
    """ENCR transform `ident` with its Key Length attribute (None or 0 when absent: the only
    fixed-length cipher espd takes is ChaCha20-Poly1305, RFC 7634 2)."""
    if not key_bits:
        candidates = [e for (i, _), e in ENCRS.items() if i == ident]
        return candidates[0] if len(candidates) == 1 else None
    return ENCRS.get((ident, key_bits))


def integ(ident: int) -> Integ | None:
    return INTEGS.get(ident)


def prf(ident: int) -> Prf | None:
    return PRFS.get(ident)


def group(ident: int) -> KeyExchange | None:
    return GROUPS.get(ident)


def negotiated(encr_id: int, key_bits: int | None, integ_id: int | None, prf_id: int,
               ke_id: int, additional: tuple[int, ...] = ()) -> IkeSuite:
    """The IKE suite of a negotiated proposal (transform ids as on the wire; `key_bits` 0 or
    None when the proposal has no Key Length attribute, `integ_id` 0 or None for an AEAD);
    SuiteError names the first transform espd does not take, with the RFC 8247 reason."""
    chosen_encr = encr(encr_id, key_bits)
    if chosen_encr is None:
        raise SuiteError(refusal(ENCR, encr_id, key_bits))
    chosen_integ = integ(integ_id) if integ_id else None
    if integ_id and chosen_integ is None:
        raise SuiteError(refusal(INTEG, integ_id))
    chosen_prf = prf(prf_id)
    if chosen_prf is None:
        raise SuiteError(refusal(PRF, prf_id))
    methods = []
    for ident in (ke_id, *additional):
        method = group(ident)
        if method is None:
            raise SuiteError(refusal(KE, ident))
        if not method.available:
            raise SuiteError(f"{method.name} needs cryptography >= "
                             f"{MLKEM_MIN_CRYPTOGRAPHY} with ML-KEM support")
        methods.append(method)
    return IkeSuite(chosen_encr, chosen_integ, chosen_prf, methods[0], tuple(methods[1:]))


# --- refusals (RFC 8247 status, or not implemented) -----------------------------------------

@dataclass(frozen=True)
class _Refused:
    kind: int  # transform type
    ident: int
    names: tuple[str, ...]  # strongSwan spellings
    why: str
    instead: str


_REFUSED = [
    _Refused(ENCR, 2, ("des",), "ENCR_DES is MUST NOT in RFC 8247 (56-bit key)", "aes256gcm16"),
    _Refused(ENCR, 1, ("desiv64",), "ENCR_DES_IV64 is DES, MUST NOT in RFC 8247",
             "aes256gcm16"),
    _Refused(ENCR, 3, ("3des",), "ENCR_3DES is only MAY in RFC 8247, kept for old peers, "
             "and its 64-bit block is open to Sweet32; espd does not offer it", "aes256gcm16"),
    _Refused(ENCR, 11, ("null",), "ENCR_NULL cannot protect an IKE SA (RFC 7296, RFC 8247)",
             "aes256gcm16"),
    _Refused(ENCR, 7, ("blowfish",), "ENCR_BLOWFISH has no place in RFC 8247 (64-bit block)",
             "aes256gcm16"),
    _Refused(ENCR, 6, ("cast128",), "ENCR_CAST has no place in RFC 8247 (64-bit block)",
             "aes256gcm16"),
    _Refused(ENCR, 14, ("aes128ccm8", "aes256ccm8"), "ENCR_AES_CCM_8 is not implemented by "
             "espd", "aes256gcm16"),
    _Refused(ENCR, 16, ("aes128ccm16", "aes256ccm16"), "ENCR_AES_CCM_16 is not implemented "
             "by espd", "aes256gcm16"),
    _Refused(ENCR, 18, ("aes128gcm8", "aes256gcm8"), "ENCR_AES_GCM_8 (an 8-byte ICV) is not "
             "offered by espd", "aes256gcm16"),
    _Refused(ENCR, 19, ("aes128gcm12", "aes256gcm12"), "ENCR_AES_GCM_12 (a 12-byte ICV) is "
             "not offered by espd", "aes256gcm16"),
    _Refused(ENCR, 13, ("aes128ctr", "aes256ctr"), "ENCR_AES_CTR is not implemented by espd",
             "aes256gcm16"),
    _Refused(ENCR, 23, ("camellia128", "camellia256"), "ENCR_CAMELLIA_CBC is not implemented "
             "by espd", "aes256gcm16"),
    _Refused(INTEG, 1, ("md5",), "AUTH_HMAC_MD5_96 is MUST NOT in RFC 8247", "sha256"),
    _Refused(INTEG, 6, ("md5_128",), "AUTH_HMAC_MD5_128 is MD5, MUST NOT in RFC 8247",
             "sha256"),
    _Refused(INTEG, 2, ("sha1", "sha"), "AUTH_HMAC_SHA1_96 is MUST- in RFC 8247 (on its way "
             "out); espd does not offer it", "sha256"),
    _Refused(INTEG, 3, ("desmac",), "AUTH_DES_MAC is MUST NOT in RFC 8247", "sha256"),
    _Refused(INTEG, 4, ("kpdkmd5",), "AUTH_KPDK_MD5 is MUST NOT in RFC 8247", "sha256"),
    _Refused(INTEG, 5, ("aesxcbc",), "AUTH_AES_XCBC_96 is not implemented by espd", "sha256"),
    _Refused(INTEG, 8, ("aescmac",), "AUTH_AES_CMAC_96 is not implemented by espd", "sha256"),
    _Refused(PRF, 1, ("prfmd5",), "PRF_HMAC_MD5 is MUST NOT in RFC 8247", "prfsha256"),
    _Refused(PRF, 2, ("prfsha1",), "PRF_HMAC_SHA1 is MUST- in RFC 8247 (on its way out); "
             "espd does not offer it", "prfsha256"),
    _Refused(PRF, 4, ("prfaesxcbc",), "PRF_AES128_XCBC is not implemented by espd",
             "prfsha256"),
    _Refused(PRF, 8, ("prfaescmac",), "PRF_AES128_CMAC is not implemented by espd",
             "prfsha256"),
    _Refused(KE, 1, ("modp768",), "group 1 (768-bit MODP) is MUST NOT in RFC 8247", "x25519"),
    _Refused(KE, 2, ("modp1024",), "group 2 (1024-bit MODP) is MUST NOT in RFC 8247",
             "x25519"),
    _Refused(KE, 5, ("modp1536",), "group 5 (1536-bit MODP) is SHOULD NOT in RFC 8247",
             "x25519"),
    _Refused(KE, 22, ("modp1024s160",), "group 22 is SHOULD NOT in RFC 8247 (1024-bit, "
             "unverifiable parameters)", "x25519"),
    _Refused(KE, 23, ("modp2048s224",), "group 23 is SHOULD NOT in RFC 8247 (unverifiable "
             "parameters)", "x25519"),
    _Refused(KE, 24, ("modp2048s256",), "group 24 is SHOULD NOT in RFC 8247 (unverifiable "
             "parameters)", "x25519"),
    _Refused(KE, 16, ("modp4096",), "group 16 (4096-bit MODP) is not offered by espd (slow, "
             "and no stronger than ECP-384)", "ecp384"),
    _Refused(KE, 17, ("modp6144",), "group 17 (6144-bit MODP) is not offered by espd",
             "ecp384"),
    _Refused(KE, 18, ("modp8192",), "group 18 (8192-bit MODP) is not offered by espd",
             "ecp521"),
    _Refused(KE, 25, ("ecp192",), "group 25 (192-bit ECP) is not offered by espd", "ecp256"),
    _Refused(KE, 26, ("ecp224",), "group 26 (224-bit ECP) is not offered by espd", "ecp256"),
    _Refused(KE, 27, ("ecp224bp",), "brainpool groups are not implemented by espd", "ecp256"),
    _Refused(KE, 28, ("ecp256bp",), "brainpool groups are not implemented by espd", "ecp256"),
    _Refused(KE, 29, ("ecp384bp",), "brainpool groups are not implemented by espd", "ecp384"),
    _Refused(KE, 30, ("ecp512bp",), "brainpool groups are not implemented by espd", "ecp521"),
    _Refused(KE, 32, ("x448", "curve448"), "Curve448 (group 32) is not implemented by espd",
             "x25519"),
    _Refused(KE, 35, ("mlkem512",), "ML-KEM-512 (35) is not implemented by espd",
             "mlkem768"),
]
_REFUSED_BY_ID = {(r.kind, r.ident): r for r in _REFUSED}
_REFUSED_BY_NAME = {name: r for r in _REFUSED for name in r.names}
_NOT_OFFERED = {  # names without an id of their own
    "aes192": "AES-192 is not offered by espd; use 'aes256'",
    "aes192gcm16": "AES-GCM-192 is not offered by espd; use 'aes256gcm16'",
}
_KIND_NAMES = {ENCR: "encryption algorithm", PRF: "PRF", INTEG: "integrity algorithm",
               KE: "key exchange method"}


def refusal(kind: int, ident: int, key_bits: int | None = None) -> str:
    """Why espd does not take transform `ident` of type `kind` (with its Key Length
    attribute, for ENCR), for the log line of NO_PROPOSAL_CHOSEN and config errors."""
    if kind == ENCR and any(i == ident for i, _ in ENCRS):
        sizes = " or ".join(str(b) for i, b in ENCRS if i == ident)
        return (f"encryption algorithm {ident} with a {key_bits or 'missing'}-bit key is not "
                f"offered by espd; use {sizes} bits")
    refused = _REFUSED_BY_ID.get((kind, ident))
    if refused:
        return f"{refused.why}; use {refused.instead}"
    return f"{_KIND_NAMES.get(kind, f'transform type {kind}')} {ident} is not supported by espd"


# --- names --------------------------------------------------------------------------------

_ALIASES = {"curve25519": "x25519", "aes128gcm": "aes128gcm16", "aes256gcm": "aes256gcm16",
            "sha2_256": "sha256", "sha2_384": "sha384", "sha2_512": "sha512",
            "prfsha2_256": "prfsha256", "prfsha2_384": "prfsha384", "prfsha2_512": "prfsha512"}
_BY_NAME: dict[str, tuple[int, Any]] = {
    **{e.name: (ENCR, e) for e in ENCRS.values()},
    **{i.name: (INTEG, i) for i in INTEGS.values()},
    **{p.name: (PRF, p) for p in PRFS.values()},
    **{g.name: (KE, g) for g in GROUPS.values()},
}


def _lookup(word: str, proposal: str) -> tuple[int, Any]:
    word = _ALIASES.get(word, word)
    if word in _BY_NAME:
        kind, value = _BY_NAME[word]
        if kind == KE and not value.available:
            raise SuiteError(f"{word}: needs cryptography >= {MLKEM_MIN_CRYPTOGRAPHY} "
                             f"with ML-KEM support "
                             f"(this one has {cryptography.__version__}); leave it out")
        return kind, value
    if word in _NOT_OFFERED:
        raise SuiteError(f"{word}: {_NOT_OFFERED[word]}")
    refused = _REFUSED_BY_NAME.get(word)
    if refused:
        raise SuiteError(f"{word}: {refused.why}; use '{refused.instead}' "
                         f"(e.g. '{RECOMMENDED}')")
    raise SuiteError(f"{word}: unknown IKE algorithm in '{proposal}'; write e.g. "
                     f"'{RECOMMENDED}' or 'aes256-sha256-prfsha256-modp2048'")


def parse_suite(text: str) -> IkeSuite:
    """An IKE proposal in strongSwan's notation, one algorithm of each type:
    ``aes256gcm16-prfsha384-x25519``, ``aes128-sha256-prfsha256-ecp256``,
    ``aes256gcm16-prfsha384-x25519-ke1_mlkem768``. For a non-AEAD cipher without an
    explicit PRF, the PRF follows the integrity algorithm (as strongSwan does)."""
    proposal = text.strip().lower()
    chosen: dict[int, Any] = {}
    additional: list[KeyExchange] = []
    for word in proposal.split("-"):
        if word[:2] == "ke" and word[2:3].isdigit() and "_" in word:
            number, _, name = word[2:].partition("_")
            kind, value = _lookup(name, proposal)
            if kind != KE or int(number) != len(additional) + 1:
                raise SuiteError(f"{word}: additional key exchanges are written ke1_NAME, "
                                 f"ke2_NAME, ... in order, with a key exchange method")
            additional.append(value)
            continue
        kind, value = _lookup(word, proposal)
        if kind in chosen:
            raise SuiteError(f"'{proposal}' names two of one kind ({word}); a suite takes "
                             f"one of each (list several suites to offer alternatives)")
        chosen[kind] = value
    if ENCR not in chosen or KE not in chosen:
        raise SuiteError(f"'{proposal}' needs an encryption algorithm and a key exchange "
                         f"method, e.g. '{RECOMMENDED}'")
    if PRF not in chosen:
        if INTEG not in chosen:
            raise SuiteError(f"'{proposal}' needs a PRF with an AEAD cipher, e.g. "
                             f"'{RECOMMENDED}'")
        chosen[PRF] = PRFS[{12: 5, 13: 6, 14: 7}[chosen[INTEG].ident]]
    return IkeSuite(chosen[ENCR], chosen.get(INTEG), chosen[PRF], chosen[KE], tuple(additional))


# IOS `crypto ikev2 proposal` words -> the same objects (the IOS importer maps its lines)
IOS_ENCRYPTION = {"aes-cbc-128": "aes128", "aes-cbc-256": "aes256",
                  "aes-gcm-128": "aes128gcm16", "aes-gcm-256": "aes256gcm16",
                  "aes-cbc-192": "aes192", "3des": "3des", "des": "des"}
IOS_INTEGRITY = {"sha256": "sha256", "sha384": "sha384", "sha512": "sha512", "sha1": "sha1",
                 "md5": "md5"}
IOS_PRF = {"sha256": "prfsha256", "sha384": "prfsha384", "sha512": "prfsha512",
           "sha1": "prfsha1", "md5": "prfmd5"}


def ios_group(number: int) -> str:
    """IOS `group N` -> the strongSwan name of key exchange method N (refusals included)."""
    found = GROUPS.get(number)
    if found:
        return found.name
    refused = _REFUSED_BY_ID.get((KE, number))
    if refused:
        return refused.names[0]
    raise SuiteError(f"group {number}: not a key exchange method espd knows; use group 31 "
                     f"(x25519), 19 (ecp256) or 14 (modp2048)")
