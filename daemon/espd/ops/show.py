"""Text and JSON views of the daemon's state, in the shape of the IOS show commands.

Pure functions from the STATE dict (see ``espd.ops.control``) to text. ``render_sa`` follows
``show crypto ipsec sa``: one block per crypto map entry, with the entry's counters summed
over its SAs and then its inbound and outbound SAs. Where IOS counts ``#send errors`` and
``#recv errors`` per flow, espd counts the packets its SAs dropped, outbound and inbound,
and lists them by reason underneath. Socket and TUN errors are global: see ``render_stats``.
The state holds no keys, and nothing here would print one.
"""

from __future__ import annotations

import copy
import ipaddress
from itertools import zip_longest

from espd.dataplane import DROP_HELP

_ENCAP = {"esp": "esp (IP protocol 50)", "udp": "udp (UDP port 4500, RFC 3948)"}


def render_sa(state: dict) -> str:
    """``show crypto ipsec sa``: every crypto map entry with its counters and SAs."""
    lines = [f"interface: {state.get('interface', '?')}"]
    entries = _entries(state)
    if not entries:
        lines.append("    no crypto map entries")
    for number, (entry, sas) in enumerate(entries):
        lines += ([""] if number else []) + _entry_block(entry, sas)
    return "\n".join(lines) + "\n"


def _entries(state: dict) -> list[tuple[dict, list[dict]]]:
    """Map entries in SPD order with their SAs, inbound first."""
    entries = {(m["map"], m["seq"]): m for m in state.get("maps", [])}
    sas: dict[tuple[str, int], list[dict]] = {key: [] for key in entries}
    for sa in state.get("sas", []):
        key = (sa["map"], sa["seq"])
        entries.setdefault(key, {k: sa.get(k) for k in ("map", "seq", "peer", "local")})
        sas.setdefault(key, []).append(sa)
    return [(entries[key], sorted(sas[key], key=lambda s: s["direction"] != "in"))
            for key in entries]


def _entry_block(entry: dict, sas: list[dict]) -> list[str]:
    def total(counter: str) -> int:
        return sum(sa.get(counter, 0) for sa in sas)

    def errors(direction: str) -> int:
        return sum(sum(sa.get("drops", {}).values()) for sa in sas
                   if sa["direction"] == direction)

    lines = [f"    Crypto map tag: {entry['map']}, local addr. {entry.get('local')}", ""]
    for local, remote in zip_longest(entry.get("local_ident", []), entry.get("remote_ident", [])):
        if local is not None:
            lines.append(f"   local  ident (addr/mask/prot/port): {_ident(local)}")
        if remote is not None:
            lines.append(f"   remote ident (addr/mask/prot/port): {_ident(remote)}")
    outbound = [sa for sa in sas if sa["direction"] == "out"]
    # an IKE SA's peer may have moved (NAT, RFC 7296 2.23): the outbound SA says where
    peer = outbound[0].get("peer", entry.get("peer")) if outbound else entry.get("peer")
    port = outbound[0].get("peer_port") if outbound else None
    lines += [
        f"   current_peer: {peer}" + (f" port {port}" if port else ""),
        f"    #pkts encaps: {total('encaps')}, #pkts encrypt: {total('encrypt')}, "
        f"#pkts digest: {total('digest')}",
        f"    #pkts decaps: {total('decaps')}, #pkts decrypt: {total('decrypt')}, "
        f"#pkts verify: {total('verify')}",
        f"    #send errors {errors('out')}, #recv errors {errors('in')}",
    ]
    for sa in sas:
        for reason, count in sorted(sa.get("drops", {}).items()):
            if count:
                lines.append(f"    #drops {sa['direction']} {reason}: {count}")
    lines += ["", f"     local crypto endpt.: {entry.get('local')}, "
                  f"remote crypto endpt.: {peer}"]
    if outbound:
        lines.append(f"     current outbound spi: {_spi(outbound[0]['spi'])}")
    for direction, title in (("in", "inbound esp sas:"), ("out", "outbound esp sas:")):
        lines += ["", f"     {title}"]
        for sa in sas:
            if sa["direction"] == direction:
                lines += _sa_block(sa)
    return lines


def _sa_block(sa: dict) -> list[str]:
    settings = "Tunnel" if sa.get("mode", "tunnel") == "tunnel" else "Transport"
    if sa.get("encap") == "udp":
        settings += " UDP-Encaps"
    window = sa.get("replay_window", 0)
    replay = f"Y, window size {window}" if window else "N"
    if sa.get("esn"):
        replay += ", extended sequence numbers"
    return [
        f"      spi: {_spi(sa['spi'])}",
        f"        transform: {sa.get('transform')} ,",
        f"        in use settings ={{{settings}, }}",
        f"        crypto map: {sa['map']} {sa['seq']}",
        f"        sa timing: remaining key lifetime (k/sec): "
        f"({_kilobytes(sa.get('lifetime_remaining_bytes'))}/"
        f"{_whole(sa.get('lifetime_remaining_seconds'))})",
        f"        replay detection support: {replay}",
        f"        Status: {_status(sa)}",
    ]


def _status(sa: dict) -> str:
    if sa.get("hard_expired"):
        return "EXPIRED"
    if sa.get("seq_cycled"):
        return "EXPIRED (sequence numbers used up)"
    if sa.get("soft_expired"):
        return "ACTIVE (soft lifetime reached)"
    return "ACTIVE"


def _spi(spi: int) -> str:
    return f"0x{spi:08X}({spi})"


def _kilobytes(remaining: int | None) -> str:
    return "unlimited" if remaining is None else str(remaining // 1024)


def _whole(seconds: float | None) -> str:
    return "unlimited" if seconds is None else str(int(seconds))


def _ident(text: str) -> str:
    """IOS '(addr/mask/prot/port)': state_view.ident's text, or a bare prefix."""
    if text.count("/") == 3:
        return f"({text})"
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return f"({text}/0/0)"
    mask = net.netmask if net.version == 4 else net.prefixlen
    return f"({net.network_address}/{mask}/0/0)"


def render_map(state: dict) -> str:
    """``show crypto map``: each entry's peer, access list, lifetimes, transform and SPIs."""
    acls = _acl_groups(state)
    lines: list[str] = []
    for m in state.get("maps", []):
        family = "IPv6" if ":" in str(m.get("peer", "")) else "IP"
        lifetime = (f"{m.get('lifetime_kilobytes')} kilobytes/"
                    f"{m.get('lifetime_seconds')} seconds")
        window = m.get("replay_window", 0)
        esn = "Y" if m.get("esn") else "N"
        replay = f"{window} packets, ESN (Y/N): {esn}" if window else "disabled"
        lines += [
            f'Crypto Map "{m["map"]}" {m["seq"]} ipsec-manual',
            f"        Peer = {m.get('peer')}",
            f"        Local address = {m.get('local')}",
            f"        Extended {family} access list {m.get('match_address')}",
        ]
        for acl in acls.get((m["map"], m["seq"]), []):
            lines.append(f"            access-list {acl['acl']} {acl['text']}")
        lines += [
            f"        Current peer: {m.get('peer')}",
            f"        Security association lifetime: {lifetime}",
            f"        Replay detection: {replay}",
            f"        Transform sets={{ {m.get('transform_set')}: {{ {m.get('transform')} }} , }}",
            f"        Mode: {m.get('mode')}, encapsulation: "
            f"{_ENCAP.get(m.get('encap', ''), m.get('encap'))}",
            f"        Inbound esp spi: {_spi(m['inbound_spi'])}",
            f"        Outbound esp spi: {_spi(m['outbound_spi'])}",
            f"        Interfaces using crypto map {m['map']}:",
            f"                {state.get('interface', '?')}",
            "",
        ]
    return "\n".join(lines) if lines else "no crypto map entries\n"


def _acl_groups(state: dict) -> dict[tuple[str, int], list[dict]]:
    groups: dict[tuple[str, int], list[dict]] = {}
    for acl in state.get("acls", []):
        groups.setdefault((acl["map"], acl["seq"]), []).append(acl)
    for rules in groups.values():
        rules.sort(key=lambda a: a["index"])
    return groups


def render_acl(state: dict) -> str:
    """The access lists of every crypto map entry, in SPD order, with their hit counts."""
    lines: list[str] = []
    for (name, seq), rules in _acl_groups(state).items():
        lines.append(f"Crypto map {name} {seq}, access list {rules[0]['acl']}:")
        for rule in rules:
            hits = rule.get("hits", 0)
            lines.append(f"    access-list {rule['acl']} {rule['text']} "
                         f"({hits} match{'' if hits == 1 else 'es'})")
    return "\n".join(lines) + "\n" if lines else "no access lists in use\n"


def render_stats(state: dict) -> str:
    """Global counters: drops by direction and reason, I/O, workers, build and reloads."""
    io = state.get("io", {})
    reloads = state.get("reloads", {})
    lines = [
        f"espd {state.get('version')}, up {_duration(state.get('uptime_seconds', 0))}, "
        f"config {state.get('config_path')}",
        f"{state.get('openssl')}, crypto CPU features: {state.get('crypto_features') or 'none'}"
        f", AEADs on {state.get('crypto_backend') or 'openssl'}",
        f"interface {state.get('interface')}, {state.get('workers')} workers",
        f"reloads: {reloads.get('success', 0)} succeeded, {reloads.get('failure', 0)} failed",
        "",
        f"packets: tun rx {io.get('tun_rx', 0)}, tun tx {io.get('tun_tx', 0)}, "
        f"net rx {io.get('net_rx', 0)}, net tx {io.get('net_tx', 0)}",
        f"errors:  send {io.get('send_errors', 0)}, recv {io.get('recv_errors', 0)}, "
        f"tun {io.get('tun_errors', 0)}",
    ]
    if io.get("net_tx_gso") or io.get("net_rx_gro"):  # ESP in UDP only
        lines.insert(-1, f"of which ESP in UDP sent in GSO runs {io.get('net_tx_gso', 0)}, "
                         f"received in GRO aggregates {io.get('net_rx_gro', 0)}")
    if io.get("net_tx_packet"):  # send_path = "packet"
        lines.insert(-1, f"of which sent on the AF_PACKET socket {io['net_tx_packet']}")
    if io.get("net_rx_ring") or io.get("net_rx_ring_drops"):  # receive_path = "ring"
        lines.insert(-1, f"of which received on the TPACKET_V3 ring {io.get('net_rx_ring', 0)}"
                         f" (dropped, the ring full: {io.get('net_rx_ring_drops', 0)})")
    drops = state.get("drops", {})
    for direction in ("in", "out"):
        counts = {r: n for r, n in sorted(drops.get(direction, {}).items()) if n}
        lines.append("")
        lines.append(f"drops {direction}:" + ("" if counts else " none"))
        for reason, count in counts.items():
            lines.append(f"    {reason}: {count}  ({DROP_HELP.get(reason, 'unknown reason')})")
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{hours}:{minutes:02}:{secs:02}"


def sa_json(state: dict) -> list[dict]:
    """The SAs for ``espd show sa --json``: the state's SA dicts, any key field left out."""
    return [{k: copy.deepcopy(v) for k, v in sa.items() if "key" not in k.lower()}
            for sa in state.get("sas", [])]
