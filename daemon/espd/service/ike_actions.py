"""What an operator asks of the IKE engine through the control socket, run on the loop:
``espd initiate MAP SEQ`` and ``espd clear ike sa|sa [PEER]`` (IOS ``clear crypto
session`` / ``clear crypto sa``).

Each action returns {"done": [lines]} for the client to print, or raises ActionError with
what to do instead. They run on the event loop's thread only (posted there by
Daemon.post_action), like every other change to SA state (keying/owner.py rule 1).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from espd.ike.sa.ike_sa import IkeState

if TYPE_CHECKING:
    from espd.ike.engine.engine import IkeEngine
    from espd.service.daemon import Daemon

ACTIONS = ("initiate", "clear_ike_sa", "clear_sa")
_LIVE = (IkeState.INIT_SENT, IkeState.INIT_DONE, IkeState.AUTH_SENT, IkeState.ESTABLISHED,
         IkeState.REKEYING)


class ActionError(Exception):
    """An action that cannot be done; the message says why and what to do instead."""


def run(daemon: Daemon, action: str, args: dict) -> dict:
    engine = daemon.ike
    if action not in ACTIONS:
        raise ActionError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
    if engine is None:
        raise ActionError("no crypto map entry is keyed by IKE (keying = \"ike\", or IOS "
                          "ipsec-isakmp); manual SAs live as long as the configuration")
    if action == "initiate":
        return {"done": [initiate(engine, args.get("map"), args.get("seq"))]}
    peer = _peer(args.get("peer"))
    if action == "clear_ike_sa":
        return {"done": clear_ike_sas(engine, peer)}
    return {"done": clear_child_sas(engine, peer)}


def _peer(text: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if text in (None, ""):
        return None
    try:
        return ipaddress.ip_address(str(text))
    except ValueError:
        raise ActionError(f"{text!r} is not a peer address; write e.g. 192.0.2.2") from None


def initiate(engine: IkeEngine, map_name: object, seq: object) -> str:
    if not isinstance(map_name, str) or not isinstance(seq, int):
        raise ActionError("initiate needs a crypto map name and seq, e.g. 'espd initiate "
                          "demo 10'")
    policy = next((p for p in engine.settings.children if p.key == (map_name, seq)), None)
    if policy is None:
        keyed = ", ".join(f"{p.map_name} {p.seq}" for p in engine.settings.children)
        raise ActionError(f"crypto map {map_name} {seq} is not keyed by IKE; IKE-keyed "
                          f"entries: {keyed}")
    child = engine.child_of(policy)
    if child is not None:
        return f"crypto map {map_name} {seq} has a Child SA already; 'espd clear sa' first " \
               f"to negotiate a new one"
    sa = engine.initiate(policy)
    if sa is None:
        raise ActionError(f"crypto map {map_name} {seq} has no peer to initiate to")
    return f"crypto map {map_name} {seq}: initiating IKE SA #{sa.ident} to {sa.remote}"


def _matching(engine: IkeEngine, peer) -> list:
    return [sa for sa in list(engine.sas.values()) + list(engine.half_open.values())
            if sa.state in _LIVE and (peer is None or sa.remote.address == peer)]


def clear_ike_sas(engine: IkeEngine, peer) -> list[str]:
    """Delete IKE SAs (and their Child SAs) with a DELETE to the peer; their traffic is
    dropped until the next packet negotiates again (on-demand entries)."""
    done = []
    for sa in dict.fromkeys(_matching(engine, peer)):
        engine.delete_ike_sa(sa, "cleared by the operator")
        done.append(f"IKE SA #{sa.ident} to {sa.remote}: deleted, with its "
                    f"{len(sa.children)} Child SAs")
    return done or [f"no IKE SA{' to ' + str(peer) if peer else ''}"]


def clear_child_sas(engine: IkeEngine, peer) -> list[str]:
    """Delete Child SAs (IOS clear crypto sa), each with a DELETE; their IKE SAs stay."""
    done = []
    for sa in dict.fromkeys(_matching(engine, peer)):
        for child in list(sa.children.values()):
            engine.delete_child(sa, child, notify_peer=True, reason="cleared by the operator")
            done.append(f"Child SA {child.entry[0]} {child.entry[1]} (SPI in "
                        f"0x{child.spi_in:08X}) under IKE SA #{sa.ident}: deleted")
    return done or [f"no negotiated Child SA{' to ' + str(peer) if peer else ''} (manual "
                    f"SAs live as long as the configuration)"]
