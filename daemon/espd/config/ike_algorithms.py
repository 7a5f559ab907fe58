"""IKE algorithm names as both config front ends take them (espd.ike.crypto.suites knows
the algorithms; this adds the PFS spelling of crypto map entries)."""

from __future__ import annotations

from espd.config.model import quote
from espd.ike.crypto.dh import GROUPS
from espd.ike.crypto.suites import SuiteError, ios_group, parse_suite


def parse_group_name(text: str) -> str:
    """A key exchange method for PFS: its name ("ecp256", "x25519") or IOS's "group19";
    returns the name; raises SuiteError saying what to write (RFC 8247 refusals named)."""
    word = text.strip().lower()
    if word.startswith("group") and word[5:].isdigit():
        word = ios_group(int(word[5:]))
    if word in {g.name for g in GROUPS.values()}:
        return word
    try:  # a refused name: the suite parser says why (RFC 8247 status) and what instead
        parse_suite(f"aes256gcm16-prfsha256-{word}")
    except SuiteError as e:
        if str(e).startswith(f"{word}: ") and "unknown" not in str(e):
            raise SuiteError(f"{quote(text)}: {str(e).split(': ', 1)[1]}") from None
    raise SuiteError(f"{quote(text)} is not a key exchange method; write e.g. 'ecp256' "
                     f"(IOS 'group19') or 'x25519'")
