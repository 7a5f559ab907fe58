"""``show ike sa [--detail]`` in the shape of IOS ``show crypto ikev2 sa [detailed]``, and
the IKE configuration's shows: proposals, transform sets, certificates.

A pure function of the STATE's ``ike_sas`` list (espd.ike.engine.view.as_state); it holds
no keys, so nothing here could print one.
"""

from __future__ import annotations

import datetime
import time

_STATUS = {"established": "READY", "rekeying": "READY (rekeying)", "deleting": "DELETE",
           "init-sent": "IN-NEG", "init-done": "IN-NEG", "auth-sent": "IN-NEG"}


def render_ike_sa(ike_sas: list[dict], detail: bool = False) -> str:
    lines = [" IKEv2 SAs:", "",
             f"{'Tunnel-id':<10}{'Local':<24}{'Remote':<24}{'Status'}"]
    if not ike_sas:
        lines.append("    no IKE SAs")
    for sa in ike_sas:
        lines.append(f"{sa['tunnel_id']:<10}{_slash(sa['local']):<24}"
                     f"{_slash(sa['remote']):<24}{_STATUS.get(sa['state'], sa['state'])}")
        auth = "PSK" if sa.get("auth", "psk") == "psk" else "CERT (RFC 7427 signature)"
        lines.append(f"      Suite: {sa['suite'] or '-'}, Auth sign: {auth}, "
                     f"Auth verify: {auth}")
        if sa.get("key_exchanges"):
            lines.append(f"      Key exchanges: {', '.join(sa['key_exchanges'])}")
        if sa.get("ppk"):  # RFC 8784: the PPK_ID only, never the key
            lines.append(f"      Post-quantum preshared key: {sa['ppk']} (RFC 8784)")
        lines.append(f"      Life/Active Time: {sa['lifetime']}/{int(sa['active'])} sec")
        if detail:
            lines.append(f"      Local spi: {_local_spi(sa)}       Remote spi: "
                         f"{_remote_spi(sa)}")
            lines.append(f"      Remote id: {sa['peer_id'] or '-'}, role: {sa['role']}"
                         f"{', NAT-T detected' if sa['nat'] else ''}"
                         f"{', fragmentation' if sa.get('fragmentation') else ''}")
            cert = sa.get("peer_certificate")
            if cert:
                lines.append(f"      Remote certificate: {cert['subject']}, serial "
                             f"{cert['serial']}")
                lines.append(f"          issuer {cert['issuer']}, valid "
                             f"{_utc(cert['not_before'])} to {_utc(cert['not_after'])}")
            for child in sa["children"]:
                lines.append(f"      Child sa: {child['entry'][0]} {child['entry'][1]}, "
                             f"spi in 0x{child['spi_in']:08X} out 0x{child['spi_out']:08X}, "
                             f"{child['transform']} {child['mode']}"
                             f"{' udp' if child['encap'] == 'udp' else ''}, "
                             f"{child['state']}")
                if child.get("key_exchanges"):
                    lines.append(f"          PFS: {', '.join(child['key_exchanges'])}")
                lines.append(f"          local  selector {', '.join(child['local_ts'])}")
                lines.append(f"          remote selector {', '.join(child['remote_ts'])}")
        else:
            lines.append(f"      Child SAs: {len(sa['children'])}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _slash(endpoint: str) -> str:
    """IOS writes ADDRESS/PORT."""
    host, _, port = endpoint.rpartition(":")
    return f"{host.strip('[]')}/{port}"


def _local_spi(sa: dict) -> str:
    return (sa["spi_i"] if sa["role"] == "initiator" else sa["spi_r"]).upper()


def _remote_spi(sa: dict) -> str:
    return (sa["spi_r"] if sa["role"] == "initiator" else sa["spi_i"]).upper()


def render_ike_proposal(state: dict) -> str:
    """``show ike proposal``: IOS ``show crypto ikev2 proposal`` (and the seed's ``show crypto
    isakmp policy``), one block per proposal in preference order, then lifetime and DPD."""
    from espd.ike.crypto.suites import parse_suite

    config = state.get("ike_config", {})
    lines = []
    for number, text in enumerate(config.get("proposals", []), 1):
        suite = parse_suite(text)
        lines += [f" IKEv2 proposal: {number} ({text})",
                  f"     Encryption : {suite.encr.name.upper()}",
                  f"     Integrity  : {suite.integ.name.upper() if suite.integ else '(AEAD)'}",
                  f"     PRF        : {suite.prf.name.upper()}",
                  f"     DH Group   : {suite.ke.name.upper()}/Group {suite.ke.ident}"]
        lines += [f"     Additional KE {n}: {k.name.upper()}/Group {k.ident} (RFC 9370)"
                  for n, k in enumerate(suite.additional, 1)]
    dpd = config.get("dpd", {})
    lines += [f" IKE SA lifetime: {config.get('lifetime', '-')} seconds",
              " DPD: " + (f"{dpd['interval']} s, retry {dpd['retry']} s, {dpd['mode']}"
                          if dpd.get("interval") else "off")]
    return "\n".join(lines) + "\n"


def render_transform_set(state: dict) -> str:
    """``show transform-set``: IOS ``show crypto ipsec transform-set``."""
    lines = []
    for tset in state.get("ike_config", {}).get("transform_sets", []):
        lines += [f"Transform set {tset['name']}: {{ {tset['transform']} }}",
                  f"   will negotiate = {{ {tset['mode'].capitalize()},  }},", ""]
    return "\n".join(lines) or "no transform sets\n"


def render_certificates(state: dict, now: float | None = None) -> str:
    """``show certificates``: IOS ``show crypto pki certificates``, ours first, then the
    intermediates we send, then the CAs we trust with their CRLs; status at this moment."""
    from espd.ike.auth.inventory import EXPIRY_WARNING_DAYS

    now = time.time() if now is None else now
    certificates = state.get("certificates", [])
    if not certificates:
        return "no certificates loaded (the configuration's [ike] has no certificate)\n"
    title = {"local": "Certificate", "intermediate": "Intermediate CA Certificate (sent)",
             "ca": "CA Certificate (trusted)"}
    lines = []
    for cert in certificates:
        left = cert["not_after"] - now
        if left < 0:
            status = f"Expired {_span(-left)} ago"
        elif cert["not_before"] > now:
            status = f"Not yet valid (for {_span(cert['not_before'] - now)})"
        elif left < EXPIRY_WARNING_DAYS * 86400:
            status = f"Available, expires in {_span(left)}: renew it"
        else:
            status = f"Available, expires in {_span(left)}"
        lines += [title[cert["role"]],
                  f"  Status: {status}",
                  f"  Certificate Serial Number (hex): {cert['serial']}",
                  f"  Subject: {cert['subject']}",
                  f"  Issuer:  {cert['issuer']}"]
        if cert["san"]:
            lines.append(f"  Subject Alternative Names: {', '.join(cert['san'])}")
        lines += [f"  Public key: {cert['key']}",
                  f"  Validity: {_utc(cert['not_before'])} to {_utc(cert['not_after'])}"]
        for crl in cert.get("crls", ()):
            nxt = crl["next_update"]
            due = "" if nxt is None else (f", next update {_utc(nxt)}"
                                          + (" (overdue)" if nxt < now else ""))
            lines.append(f"  CRL: {crl['revoked']} revoked, issued {_utc(crl['last_update'])}"
                         f"{due}")
    return "\n".join(lines) + "\n"


def _utc(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86400)
    return f"{days} d {rest // 3600} h" if days else f"{rest // 3600} h {rest % 3600 // 60} min"
