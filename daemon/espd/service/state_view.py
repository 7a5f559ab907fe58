"""What the control socket (``show``) and the metrics read: one dict of the daemon's state.

Runs on the readers' threads (control-socket handlers, the metrics exporter), never on
the loop: it reads only the View it is given (immutable, service/daemon.py) and counters
the data plane keeps as atomics, through SA handles the View keeps alive. The O(SAs)
work of a request (the SA tuple, the IKE SAs as plain data) is done here, on the
reader's thread, so that the loop's changes stay O(what changed).
"""

from __future__ import annotations

import logging
import ssl
import time
from typing import TYPE_CHECKING

from espd import __version__
from espd.config.model import AddressMatch, Config, PortRange
from espd.dataplane import crypto_backend
from espd.ike.auth.inventory import certificate_inventory
from espd.ike.engine.view import plain_state as ike_plain_state
from espd.keying.owner import SaView

if TYPE_CHECKING:
    from espd.service.daemon import Daemon, View

log = logging.getLogger("espd")


def state(daemon: Daemon, view: View) -> dict:
    dp = daemon.dp
    sas = [sa_state(daemon, v) for v in view.sas.sas]
    hits = dp.rule_hits()
    acls: list[dict] = []
    seen: dict[tuple, int] = {}
    for i, r in enumerate(view.sas.rules):
        key = (r.acl, r.acl_line, r.map_name, r.seq)
        if key in seen:  # one ACL line compiled into several rules
            acls[seen[key]]["hits"] += hits[i] if i < len(hits) else 0
            continue
        seen[key] = len(acls)
        acls.append({"acl": r.acl, "index": r.acl_line, "text": r.text,
                     "map": r.map_name, "seq": r.seq,
                     "hits": hits[i] if i < len(hits) else 0})
    success, failure = view.reloads
    return {
        "version": __version__, "openssl": ssl.OPENSSL_VERSION,
        "crypto_features": dp.crypto_features(), "workers": daemon.workers,
        "crypto_backend": crypto_backend.describe(),
        "interface": view.config.settings.interface,
        "uptime_seconds": round(time.monotonic() - daemon.started, 3),
        "config_path": daemon.config_path,
        "reloads": {"success": success, "failure": failure},
        "nat_keepalives": daemon.keepalives_sent,
        "io": dp.io_stats(), "drops": dp.global_drops(),
        "maps": maps_state(view.config), "sas": sas, "acls": acls,
        "ike_config": ike_config_state(view.config),
        "certificates": certificate_inventory(view.config.ike.certificate,
                                              view.config.ike.trust),
        # the IKE snapshot as plain data, here on the reader's thread: O(IKE SAs) per
        # request, never per change on the loop
        **({"ike": ike_plain_state(view.ike)} if view.ike is not None else {}),
    }


def sa_state(daemon: Daemon, view: SaView) -> dict:
    spec = view.spec
    st = daemon.dp.stats(view.sa)
    hard = spec.hard  # None below: no hard limit (see plan._lifetimes)
    remaining_s = max(0, hard.seconds - int(st["age_seconds"])) if hard.seconds else None
    remaining_b = max(0, hard.bytes - st["lifetime_bytes"]) if hard.bytes else None
    return {
        "map": spec.map_name, "seq": spec.seq, "peer": spec.peer, "local": spec.local,
        "direction": spec.direction, "spi": spec.spi, "transform": spec.transform,
        "mode": spec.mode, "encap": spec.encap, "replay_window": spec.replay_window,
        # UDP: the peer's port as it stands (it follows a NAT: RFC 7296 2.23)
        "peer_port": view.ports[1] if spec.encap == "udp" else None,
        "esn": spec.esn, "packets": st["packets"], "bytes": st["bytes"],
        **{k: st[k] for k in ("encaps", "encrypt", "digest", "decaps", "decrypt", "verify")},
        "sequence": st["seq"], "drops": st["drops"],
        "lifetime_remaining_seconds": remaining_s, "lifetime_remaining_bytes": remaining_b,
        # the data plane marks an SA expired when a packet meets it; an idle SA past its
        # time limit is expired all the same (the next packet is refused), so say so
        "soft_expired": st["soft_expired"] or bool(
            spec.soft.seconds and st["age_seconds"] >= spec.soft.seconds),
        "hard_expired": st["hard_expired"] or remaining_s == 0,
        "seq_cycled": st["seq_cycled"],
        "origin": view.origin, "ike_sa": view.ike_sa,  # "manual" | "ike", and which IKE SA
    }

def ike_config_state(config: Config) -> dict:
    """What show ike proposal and show transform-set print: configured, not negotiated."""
    ike = config.ike
    return {
        "proposals": list(ike.proposals), "lifetime": ike.lifetime,
        "dpd": {"interval": ike.dpd.interval, "retry": ike.dpd.retry, "mode": ike.dpd.mode},
        "peers": [{"name": p.name, "address": str(p.address),
                   "local_id": str(p.local_id) if p.local_id else None,
                   "remote_id": str(p.remote_id) if p.remote_id else None}
                  for p in config.ike_peers],
        "transform_sets": [{"name": t.name, "transform": t.transform.name, "mode": t.mode}
                           for t in config.transform_sets.values()],
    }


def maps_state(config: Config) -> list[dict]:
    out = []
    for entry in config.crypto_maps:
        tset = config.transform_sets[entry.transform_set]
        acl = config.access_lists[entry.match_address]
        idents = list(dict.fromkeys(  # one pair per distinct selector, in ACL order
            (ident(e.src, e.protocol, e.src_ports), ident(e.dst, e.protocol, e.dst_ports))
            for e in acl.entries if e.action == "permit"))
        out.append({
            "map": entry.map_name, "seq": entry.seq, "peer": str(entry.peer),
            "local": str(entry.local), "match_address": entry.match_address,
            "transform_set": entry.transform_set, "transform": tset.transform.name,
            "mode": tset.mode, "encap": entry.encapsulation,
            "lifetime_seconds": entry.lifetime.seconds,
            "lifetime_kilobytes": entry.lifetime.kilobytes,
            "replay_window": entry.replay_window, "esn": entry.esn,
            "inbound_spi": entry.inbound.spi if entry.inbound else None,
            "outbound_spi": entry.outbound.spi if entry.outbound else None,
            "keying": entry.keying, "peers": [str(p) for p in entry.peers],
            "local_ident": [local for local, _ in idents],
            "remote_ident": [remote for _, remote in idents],
        })
    return out


def ident(match: AddressMatch, protocol: int | None, ports: tuple[PortRange, ...]) -> str:
    """IOS's ``addr/mask/prot/port`` for one side of an ACL selector: the mask as a dotted
    mask (IPv4) or a prefix length (IPv6), protocol and port 0 for any; a port range
    prints as LOW-HIGH, several as a comma list."""
    full = (1 << match.address.max_prefixlen) - 1
    if match.version == 4:
        mask = str(type(match.address)(full ^ int(match.wildcard)))
    else:
        mask = str(match.prefixlen) if match.prefixlen is not None else \
            str(type(match.address)(full ^ int(match.wildcard)))
    port = ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ports) or "0"
    return f"{match.address}/{mask}/{protocol or 0}/{port}"
