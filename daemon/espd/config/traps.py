"""Warnings for crypto ACLs that do not do what an IOS reader expects of them.

Computed on the model (both front ends), from espd's policy semantics (policy/plan.py):
one SPD for every crypto map, entries in (map name, seq) order, first matching rule decides;
``deny`` discards the packet and ends the search (IOS would send it in clear and try the
next entry); inbound, a decrypted packet, mirrored, must first match a permit of its own
SA's entry. So an entry whose ACL permits nothing, or whose ACL is the same as an earlier
entry's, never carries a packet. These are warnings, not errors: the result is fail closed.
"""

from __future__ import annotations

from espd.config.model import AccessList, CryptoMapEntry, Problem

DENY_WARNING = (
    "is a deny in a crypto ACL: IOS would send the traffic it matches in clear (and try the "
    "next crypto map entry); espd discards it (outbound drop reason policy_deny; inbound, "
    "mirrored, selector_mismatch) and tries no later entry; to send traffic in clear, keep "
    "it out of the tunnel with a more specific route via another interface"
)


def acl_warnings(access_lists: dict[str, AccessList],
                 crypto_maps: list[CryptoMapEntry]) -> list[Problem]:
    """Deny rules, entries that permit nothing, entries shadowed by an identical ACL."""
    warnings: list[Problem] = []
    used = sorted({e.match_address for e in crypto_maps} & access_lists.keys())
    for name in used:
        for rule in access_lists[name].entries:
            if rule.action == "deny":
                warnings.append(Problem(rule.where, f"access list {name}: '{rule.text}' "
                                                    f"{DENY_WARNING}"))
    first: dict[tuple, CryptoMapEntry] = {}  # an ACL's rules -> the first entry using them
    for entry in sorted(crypto_maps, key=lambda e: e.key):
        acl = access_lists.get(entry.match_address)
        if acl is None:
            continue  # assemble reports it
        name = f"crypto map {entry.map_name} {entry.seq}"
        if not any(rule.action == "permit" for rule in acl.entries):
            what = "has only deny rules" if acl.entries else "has no rules"
            warnings.append(Problem(entry.where, (
                f"{name}: access list {acl.name} permits nothing (it {what}), so this entry "
                f"can never carry traffic; what its rules match is discarded")))
            continue
        earlier = first.setdefault(acl.entries, entry)  # rules compare without text/line
        if earlier is entry:
            continue
        same = (f"uses access list {acl.name}, as" if earlier.match_address == acl.name else
                f"uses access list {acl.name}, whose rules are those of access list "
                f"{earlier.match_address} of")
        warnings.append(Problem(entry.where, (
            f"{name} {same} crypto map {earlier.map_name} {earlier.seq} (at {earlier.where}), "
            f"which comes first in the policy order (first match wins, across all crypto "
            f"maps): this entry can never carry traffic; give it traffic of its own or "
            f"remove it")))
    return warnings
