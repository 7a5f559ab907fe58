"""Distinguished names as IKE identities (ID_DER_ASN1_DN): parsed from configuration, and
compared with what a peer sends and with a certificate's subject.

A DN is written most specific first in RFC 4514 (``CN=gw,O=Example,C=CH``, what ``espd
show certificates`` and ``openssl x509 -nameopt RFC2253`` print) and least specific first by
strongSwan and IOS (``C=CH, O=Example, CN=gw``). Both spellings of a configured DN are
accepted: it matches a name equal to it read either way. Two different certificates with
the same attributes in reverse order would need a CA that issues both, and such a CA could
issue the name itself.
"""

from __future__ import annotations

from cryptography import x509


def parse_dn(text: str) -> x509.Name:
    """The Name ``text`` writes; ValueError with what to write."""
    try:
        name = x509.Name.from_rfc4514_string(",".join(_rdns(text)))
    except ValueError as e:
        why = f" ({e})" if str(e) else ""
        raise ValueError(f"{text!r} is not a distinguished name{why}; write e.g. "
                         f"'dn:CN=gw.example.net,O=Example,C=CH'") from None
    if not name.rdns:
        raise ValueError("an empty distinguished name; write e.g. 'dn:CN=gw.example.net'")
    return name


def _rdns(text: str) -> list[str]:
    """The RDNs of ``text``, split at unescaped commas, blanks around each dropped (as
    strongSwan writes them: ``C=CH, O=Example``)."""
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == ",":
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return parts


def dn_matches(configured: str, name: x509.Name) -> bool:
    """Whether the configured DN text names ``name``, in either spelling (docstring);
    attribute values compare as text, whatever ASN.1 string type carries them."""
    wanted = _key(parse_dn(configured))
    got = _key(name)
    return got in (wanted, wanted[::-1])


def _key(name: x509.Name) -> list[frozenset[tuple[str, str]]]:
    return [frozenset((a.oid.dotted_string, str(a.value)) for a in rdn) for rdn in name.rdns]
