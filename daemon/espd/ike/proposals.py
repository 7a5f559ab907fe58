"""SA proposals: what this side offers, what it accepts, and the responder's choice.

RFC 7296 3.3: a proposal is a protocol (IKE or ESP), an SPI and a list of transforms; a
proposal takes ONE transform of each type it lists. The responder walks the initiator's
proposals in the initiator's order and takes the first that one of its own proposals
accepts, picking per transform type the first of the initiator's transforms that the
local proposal also holds. The initiator then checks that the answer is one of its
offers, narrowed to one transform per type.

Transforms are (type, id, key bits) with IANA ids (RFC 7296 3.3.2); espd ESP transform
names (``esp-gcm 256``) map onto them here, and back for the data plane.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from espd.config.transforms import parse_transform
from espd.ike.crypto import esp
from espd.ike.settings import ChildPolicy, IkeProposal

# Protocol ids (RFC 7296 3.3.1) and transform types (3.3.2)
PROTO_IKE, PROTO_ESP = 1, 3
ENCR, PRF, INTEG, KE, ESN = 1, 2, 3, 4, 5
# RFC 9370 additional key exchanges: transform types 6 (ADDKE1) to 12 (ADDKE7); a type
# left out of a proposal means NONE (no such exchange), for IKE and ESP alike
ADDKE = tuple(range(6, 13))

ENCR_NULL, ENCR_AES_CBC, ENCR_AES_GCM_16, ENCR_CHACHA20_POLY1305 = 11, 12, 20, 28
AEAD_CIPHERS = frozenset({18, 19, ENCR_AES_GCM_16, ENCR_CHACHA20_POLY1305})
AUTH_HMAC_SHA1_96 = 2
AUTH_HMAC_SHA2_256_128, AUTH_HMAC_SHA2_384_192, AUTH_HMAC_SHA2_512_256 = 12, 13, 14
PRF_HMAC_SHA2_256, PRF_HMAC_SHA2_384, PRF_HMAC_SHA2_512 = 5, 6, 7
NONE = 0  # KE "NONE" in an ESP proposal; INTEG "NONE"

_NAMES = {
    ENCR: {
        ENCR_NULL: "NULL",
        ENCR_AES_CBC: "AES_CBC",
        18: "AES_GCM_8",
        19: "AES_GCM_12",
        ENCR_AES_GCM_16: "AES_GCM_16",
        ENCR_CHACHA20_POLY1305: "CHACHA20_POLY1305",
        2: "DES",
        3: "3DES",
    },
    PRF: {
        1: "PRF_HMAC_MD5",
        2: "PRF_HMAC_SHA1",
        PRF_HMAC_SHA2_256: "PRF_HMAC_SHA2_256",
        PRF_HMAC_SHA2_384: "PRF_HMAC_SHA2_384",
        PRF_HMAC_SHA2_512: "PRF_HMAC_SHA2_512",
    },
    INTEG: {
        NONE: "NONE",
        1: "HMAC_MD5_96",
        AUTH_HMAC_SHA1_96: "HMAC_SHA1_96",
        AUTH_HMAC_SHA2_256_128: "HMAC_SHA2_256_128",
        AUTH_HMAC_SHA2_384_192: "HMAC_SHA2_384_192",
        AUTH_HMAC_SHA2_512_256: "HMAC_SHA2_512_256",
    },
    KE: {
        NONE: "NONE",
        1: "MODP_768",
        2: "MODP_1024",
        5: "MODP_1536",
        14: "MODP_2048",
        15: "MODP_3072",
        16: "MODP_4096",
        19: "ECP_256",
        20: "ECP_384",
        21: "ECP_521",
        31: "CURVE25519",
        32: "CURVE448",
        35: "ML_KEM_512",
        36: "ML_KEM_768",
        37: "ML_KEM_1024",
    },
    ESN: {0: "NO_ESN", 1: "ESN"},
}


class ProposalError(ValueError):
    """A proposal that cannot be built or accepted; the message names both sides' offers."""


@dataclass(frozen=True, order=True, slots=True)
class Transform:
    type: int
    id: int
    key_bits: int = 0  # the Key Length attribute; 0 when the transform has none

    def __str__(self) -> str:
        if self.type in ADDKE:  # ADDKE1_ML_KEM_768
            return f"ADDKE{self.type - 5}_" + _NAMES[KE].get(self.id, str(self.id))
        name = _NAMES.get(self.type, {}).get(self.id, f"{self.type}:{self.id}")
        return f"{name}_{self.key_bits}" if self.key_bits else name


@dataclass(frozen=True, slots=True)  # slots: each IKE and Child SA keeps its chosen one
class Proposal:
    """Invariant: ``transforms`` keep the order they were offered in."""

    number: int
    protocol: int
    spi: bytes
    transforms: tuple[Transform, ...]

    def of_type(self, kind: int) -> tuple[Transform, ...]:
        return tuple([t for t in self.transforms if t.type == kind])

    def one(self, kind: int) -> Transform | None:
        found = self.of_type(kind)
        return found[0] if found else None

    @property
    def aead(self) -> bool:
        encr = self.one(ENCR)
        return encr is not None and encr.id in AEAD_CIPHERS

    def __str__(self) -> str:
        kinds = sorted({t.type for t in self.transforms})
        return "/".join("|".join(str(t) for t in self.of_type(k)) for k in kinds)


def describe(proposals: Iterable[Proposal]) -> str:
    """One log-friendly line: ``AES_GCM_16_256/PRF_HMAC_SHA2_384/CURVE25519, ...``."""
    return ", ".join(str(p) for p in proposals) or "nothing"


# --- what this side offers -------------------------------------------------------------


def ike_offer(proposals: Iterable[IkeProposal], spi: bytes = b"") -> tuple[Proposal, ...]:
    """IKE SA proposals from the settings (SPI empty in IKE_SA_INIT, 8 bytes in rekeys).
    The IKE_SA_INIT offer of a configuration is built once (proposals are immutable)."""
    proposals = tuple(proposals)
    if not spi:
        try:
            return _ike_offer_cached(proposals)
        except TypeError:  # an unhashable configuration (a test's lists): built each time
            pass
    return _ike_offer(proposals, spi)


@lru_cache(maxsize=32)
def _ike_offer_cached(proposals: tuple[IkeProposal, ...]) -> tuple[Proposal, ...]:
    return _ike_offer(proposals, b"")


def _ike_offer(proposals: tuple[IkeProposal, ...], spi: bytes) -> tuple[Proposal, ...]:
    out = []
    for number, prop in enumerate(proposals, 1):
        transforms = [Transform(ENCR, ident, bits) for ident, bits in prop.encryption]
        transforms += [Transform(PRF, ident) for ident in prop.prf]
        transforms += [Transform(INTEG, ident) for ident in prop.integrity]
        transforms += [Transform(KE, ident) for ident in prop.groups]
        transforms += [Transform(kind, ident) for kind, idents in
                       zip(ADDKE, prop.additional, strict=False) for ident in idents]
        out.append(Proposal(number, PROTO_IKE, spi, tuple(transforms)))
    return tuple(out)


def esp_offer(policy: ChildPolicy, spi: bytes, ke_group: int = 0,
              additional: tuple[int, ...] = ()) -> tuple[Proposal, ...]:
    """ESP proposals, one per transform set in ``set transform-set`` order.

    ``ke_group`` is the PFS group of a CREATE_CHILD_SA; 0 in IKE_AUTH (RFC 7296 1.2:
    the first Child SA's keys come from the IKE SA's key exchange). ``additional`` are
    RFC 9370 additional key exchanges (ADDKE1, ...), only with a PFS group.
    """
    esn = (Transform(ESN, 1), Transform(ESN, 0)) if policy.esn else (Transform(ESN, 0),)
    ke = (Transform(KE, ke_group),) if ke_group else ()
    if ke_group:
        ke += tuple(Transform(kind, ident) for kind, ident in zip(ADDKE, additional, strict=False))
    return tuple(
        Proposal(number, PROTO_ESP, spi, esp_transforms(name) + ke + esn)
        for number, (name, _mode) in enumerate(policy.transforms, 1)
    )


@lru_cache(maxsize=128)
def esp_transforms(name: str) -> tuple[Transform, ...]:
    """The ENCR (+INTEG) transforms of an espd transform name such as ``esp-aes 256
    esp-sha256-hmac`` (the names espd.config.transforms parses); parsed once per name."""
    try:
        ids = esp.proposal_ids(parse_transform(name))
    except ValueError as err:
        raise ProposalError(f"'{name}': {err}") from None
    out = [Transform(ENCR, ids.encr, ids.key_bits or 0)]
    if ids.integ is not None:
        out.append(Transform(INTEG, ids.integ))
    return tuple(out)


def esp_transform_name(chosen: Proposal) -> str:
    """The espd transform name of a negotiated ESP proposal (the inverse of the above)."""
    encr, integ = chosen.one(ENCR), chosen.one(INTEG)
    found = _esp_transform(encr.id, encr.key_bits or None,
                           integ.id if integ is not None and integ.id != NONE else None
                           ) if encr is not None else None
    if found is None:
        raise ProposalError(f"ESP proposal {chosen} has no transform espd implements")
    return found.name


@lru_cache(maxsize=64)
def _esp_transform(encr: int, key_bits: int | None, integ: int | None):
    return esp.transform(encr, key_bits, integ)


# --- what this side accepts, and the choice -------------------------------------------


def choose(
    offered: Iterable[Proposal], accepted: Iterable[Proposal], what: str = "IKE"
) -> Proposal:
    """The responder's choice (RFC 7296 2.7), numbered and SPI'd as the initiator's offer.

    Raises ProposalError (answer NO_PROPOSAL_CHOSEN) naming both sides' proposals.
    """
    offered, accepted = tuple(offered), tuple(accepted)
    try:  # the choice depends on the transforms alone: the same offer, the same choice
        key = (tuple((o.protocol, o.transforms) for o in offered),
               tuple((m.protocol, m.transforms) for m in accepted))
        found = _choices.get(key)
    except TypeError:  # unhashable (never from the codec): not cached
        key, found = None, None
    if found is None:
        found = _choose(offered, accepted)
        if key is not None and found[1] is not None:
            if len(_choices) >= _CHOICES_MAX:
                _choices.clear()  # a bound, not an LRU: peers offer a handful of sets
            _choices[key] = found
    index, picked = found
    if picked is not None:
        offer = offered[index]
        if offer.spi:  # a Child SA's: its own SPI
            return Proposal(offer.number, offer.protocol, offer.spi, picked)
        # no SPI (IKE_SA_INIT's): immutable, one per choice, shared by its IKE SAs
        shared = (offer.number, offer.protocol, picked)
        found_proposal = _spiless.get(shared)
        if found_proposal is None:
            if len(_spiless) >= _CHOICES_MAX:
                _spiless.clear()
            found_proposal = _spiless[shared] = Proposal(*shared[:2], b"", picked)
        return found_proposal
    raise ProposalError(
        f"no {what} proposal in common: peer offered {describe(offered)}; "
        f"we accept {describe(accepted)}"
    )


_CHOICES_MAX = 256
# (offered, accepted) transforms -> (index of the offer taken, its transforms picked);
# the picked tuples are shared by every SA that chose them
_choices: dict[tuple, tuple[int, tuple[Transform, ...] | None]] = {}
_spiless: dict[tuple, Proposal] = {}  # (number, protocol, transforms) -> the Proposal


def _choose(offered: tuple[Proposal, ...], accepted: tuple[Proposal, ...]
            ) -> tuple[int, tuple[Transform, ...] | None]:
    for index, offer in enumerate(offered):
        for mine in accepted:
            picked = _pick(offer, mine)
            if picked is not None:
                return index, picked
    return -1, None


def _pick(offer: Proposal, mine: Proposal) -> tuple[Transform, ...] | None:
    """One transform per type, the initiator's first that ``mine`` holds; None if a type
    has none. An AEAD cipher takes no INTEG (RFC 7296 3.3), whatever else was offered."""
    if offer.protocol != mine.protocol:
        return None
    picked: list[Transform] = []
    for kind in sorted({t.type for t in offer.transforms} | {t.type for t in mine.transforms}):
        if kind == INTEG and picked and picked[0].id in AEAD_CIPHERS:
            continue
        ours = mine.of_type(kind) or _implicit(mine, kind)
        theirs = offer.of_type(kind) or _implicit(offer, kind)
        # INTEG NONE only goes with an AEAD, which skipped this type above
        choice = next(
            (t for t in theirs if t in ours and not (kind == INTEG and t.id == NONE)), None
        )
        if choice is None:
            return None
        if choice.id != NONE or kind not in (KE, INTEG, *ADDKE):
            picked.append(choice)
    return tuple(picked)


def _implicit(proposal: Proposal, kind: int) -> tuple[Transform, ...]:
    """What a proposal means by leaving a type out: no KE in an ESP proposal is KE NONE,
    ESP without ESN is ESN off, and no additional key exchange type is NONE (RFC 9370)."""
    if kind in ADDKE:
        return (Transform(kind, NONE),)
    if kind == KE and proposal.protocol == PROTO_ESP:
        return (Transform(KE, NONE),)
    if kind == ESN and proposal.protocol == PROTO_ESP:
        return (Transform(ESN, 0),)
    return ()


def check_chosen(
    offered: Iterable[Proposal], chosen: Iterable[Proposal], what: str = "IKE"
) -> Proposal:
    """The initiator's check of the answer: one proposal, one transform per type, all
    of them from the offer it names. Raises ProposalError."""
    offered, chosen = tuple(offered), tuple(chosen)
    if len(chosen) != 1:
        raise ProposalError(f"peer answered {len(chosen)} {what} proposals, not one")
    answer = chosen[0]
    offer = next((p for p in offered if p.number == answer.number), None)
    if offer is None or offer.protocol != answer.protocol:
        raise ProposalError(
            f"peer chose {what} proposal #{answer.number} ({answer}), "
            f"which we did not offer; we offered {describe(offered)}"
        )
    for kind in {t.type for t in answer.transforms}:
        if len(answer.of_type(kind)) != 1:
            raise ProposalError(f"peer chose several transforms of one type in {answer}")
    if any(t not in offer.transforms for t in answer.transforms) or _pick(answer, offer) is None:
        raise ProposalError(
            f"peer chose {what} {answer}, which is not what we offered as #{offer.number}: {offer}"
        )
    return answer


def ke_group(proposal: Proposal) -> int:
    """The KE transform id of a chosen proposal, 0 when there is none."""
    ke = proposal.one(KE)
    return ke.id if ke else 0


def additional_groups(proposal: Proposal) -> tuple[int, ...]:
    """The RFC 9370 additional key exchanges of a chosen proposal, in the order they run
    (transform type 6, 7, ...); NONE is left out."""
    return tuple(t.id for kind in ADDKE for t in proposal.of_type(kind)[:1] if t.id != NONE)


def acceptable_groups(proposals: Iterable[Proposal]) -> tuple[int, ...]:
    """Our KE groups in preference order (the group an INVALID_KE_PAYLOAD asks for)."""
    out: list[int] = []
    for prop in proposals:
        for t in prop.of_type(KE):
            if t.id != NONE and t.id not in out:
                out.append(t.id)
    return tuple(out)


def esn_chosen(proposal: Proposal) -> bool:
    esn = proposal.one(ESN)
    return esn is not None and esn.id == 1
