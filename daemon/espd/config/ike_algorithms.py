"""IKE algorithm names as both config front ends take them (espd.ike.crypto.suites knows
the algorithms; this adds the PFS spelling of crypto map entries)."""

from __future__ import annotations

from espd.config.model import quote
from espd.ike.crypto.dh import GROUPS, MLKEM_MIN_CRYPTOGRAPHY
from espd.ike.crypto.suites import SuiteError, ios_group, parse_suite


def parse_group_name(text: str) -> str:
    """A key exchange method for PFS: its name ("ecp256", "x25519") or IOS's "group19",
    optionally followed by RFC 9370 additional key exchanges as strongSwan writes them
    ("x25519-ke1_mlkem768"); returns the normalized name; raises SuiteError saying what
    to write (RFC 8247 refusals named)."""
    first, *more = text.strip().lower().split("-")
    names = [_one_group(first, text)]
    for n, word in enumerate(more, 1):
        number, _, name = word.partition("_")
        if number != f"ke{n}":
            raise SuiteError(f"{quote(text)}: additional key exchanges are written ke1_NAME, "
                             f"ke2_NAME, ... in order, e.g. 'x25519-ke1_mlkem768'")
        names.append(f"ke{n}_{_one_group(name, text)}")
    return "-".join(names)


def pfs_ids(name: str) -> tuple[int, tuple[int, ...]]:
    """A normalized PFS name -> (KE id, additional KE ids in order)."""
    first, *more = name.split("-")
    by_name = {g.name: g.ident for g in GROUPS.values()}
    return by_name[first], tuple(by_name[w.partition("_")[2]] for w in more)


def _one_group(word: str, text: str) -> str:
    word = word.strip()
    if word.startswith("group") and word[5:].isdigit():
        word = ios_group(int(word[5:]))
    found = next((g for g in GROUPS.values() if g.name == word), None)
    if found is not None:
        if not found.available:
            raise SuiteError(f"{quote(text)}: {word} needs cryptography >= "
                             f"{MLKEM_MIN_CRYPTOGRAPHY} with ML-KEM support")
        return word
    try:  # a refused name: the suite parser says why (RFC 8247 status) and what instead
        parse_suite(f"aes256gcm16-prfsha256-{word}")
    except SuiteError as e:
        if str(e).startswith(f"{word}: ") and "unknown" not in str(e):
            raise SuiteError(f"{quote(text)}: {str(e).split(': ', 1)[1]}") from None
    raise SuiteError(f"{quote(text)} is not a key exchange method; write e.g. 'ecp256' "
                     f"(IOS 'group19') or 'x25519'")
