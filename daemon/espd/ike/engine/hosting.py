"""How the daemon hosts the IKE engine: the one integration point.

The service (service/main_loop.py), once the SA owner exists and the workers run, calls

    engine = host(loop, owner, settings, send_ike=owner.send_ike)

which binds UDP 500 on every local address of an IKE crypto map entry (``follow`` moves
those sockets with a reload's new addresses), sends UDP 4500
IKE through the data plane's NAT-T socket (``owner.send_ike``: the source port the
peer's NAT knows), subscribes the engine to the owner (acquires, soft/hard expiries, and punted
UDP 4500 IKE datagrams, which the owner drains from ``Dataplane.punted()`` and hands to
``on_ike_datagram``), and starts the ``start = "immediate"`` entries. On reload the
service builds new ``IkeSettings`` and calls ``engine.reconfigure(settings)``; on stop,
``engine.close()`` (the owner retires what is left of the negotiated SAs with the rest).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable

from espd.ike.engine.engine import IkeEngine
from espd.ike.engine.transport import UdpTransport
from espd.ike.sa.ike_sa import Endpoint
from espd.ike.settings import IkeSettings


def host(loop: asyncio.AbstractEventLoop, owner: object, settings: IkeSettings, *,
         send_ike: Callable[[str, str, int, bytes], None] | None,
         child_sa_keys: type | None = None) -> IkeEngine:
    """The running engine; ``send_ike`` None binds UDP 4500 too (no data plane)."""
    load_exchanges()
    transport = UdpTransport(loop, endpoints(settings, own_nat_port=send_ike is None),
                             nat_ports=(settings.nat_port,), send_nat=send_ike)
    engine = IkeEngine(settings, owner, transport, loop, child_sa_keys=child_sa_keys)
    subscribe = getattr(owner, "subscribe", None)
    if subscribe is not None:
        subscribe(engine)
    engine.start_immediate()
    return engine


# the engine imports these where it first needs them (they import the engine); unloaded,
# the first negotiation after start paid ~50 ms of imports: the on-demand trigger packet
# waited that long for IKE_SA_INIT, a peer's first request for its answer
EXCHANGES = ("ike_sa_init", "ike_intermediate", "ike_auth", "create_child_sa", "followup_ke",
             "informational", "reauth")


def load_exchanges() -> None:
    """Import every exchange module now, at start, not in the first negotiation."""
    for name in EXCHANGES:
        importlib.import_module(f"espd.ike.exchanges.{name}")


def endpoints(settings: IkeSettings, *, own_nat_port: bool) -> list[Endpoint]:
    """UDP 500 on every local address of an IKE crypto map entry (and 4500 when the
    engine has no data plane to receive it)."""
    addresses = sorted({policy.local for policy in settings.children}, key=str)
    bind = [Endpoint(address, settings.port) for address in addresses]
    if own_nat_port:
        bind += [Endpoint(address, settings.nat_port) for address in addresses]
    return bind


def follow(engine: IkeEngine, settings: IkeSettings) -> list[str]:
    """After a reload: the engine listens on the new settings' addresses (an entry with a
    new local address is answered there; one whose address went is no longer). Returns
    what could not be bound, one line each."""
    transport = engine.transport
    if not isinstance(transport, UdpTransport):
        return []
    return transport.follow(endpoints(settings, own_nat_port=transport.send_nat is None))
