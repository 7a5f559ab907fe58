"""espd's IKE engine alone in a namespace, for interop tests: no data plane, a fake SA
owner that prints each installed Child SA (keys included: tests only) as a JSON line; or,
with "owner": "dataplane" (the benchmark), espd's real SA owner over a real data plane.

    ip netns exec NS python ike_standalone.py '{"local": ..., "peer": ..., ...}'

stdin commands, one per line: "initiate", "rekey-child", "rekey-ike", "collide-ike" (the
next IKE SA rekey request from the peer makes espd send its own first: a collision both
ends see, whatever the timing; answered by "armed"), "counters", "ike-sas", "delete", "quit".
stdout: {"event": "ready"}, {"event": "install"|"rekey"|"retire", ...}, {"event": "log"},
{"event": "counters", "counters": {...}}, {"event": "ike-sas", "sas": [...]}.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from espd.ike import proposals as p  # noqa: E402
from espd.ike.engine.engine import IkeEngine  # noqa: E402
from espd.ike.engine.transport import UdpTransport  # noqa: E402
from espd.ike.exchanges import create_child_sa  # noqa: E402
from espd.ike.sa.ike_sa import Endpoint  # noqa: E402
from espd.ike.settings import (  # noqa: E402
    ChildPolicy,
    Dpd,
    Identity,
    IkeProposal,
    IkeSettings,
    Peer,
    PresharedKey,
)
from espd.policy.selectors import TrafficSelector  # noqa: E402
from support.ike_pair import ChildSaKeys, FakeOwner  # noqa: E402

PROPOSALS = {
    "aes128gcm16-prfsha256-x25519": IkeProposal(((p.ENCR_AES_GCM_16, 128),),
                                                (p.PRF_HMAC_SHA2_256,), (), (31,)),
    "aes256gcm16-prfsha384-x25519": IkeProposal(((p.ENCR_AES_GCM_16, 256),),
                                                (p.PRF_HMAC_SHA2_384,), (), (31,)),
    "aes128gcm16-prfsha256-ecp256": IkeProposal(((p.ENCR_AES_GCM_16, 128),),
                                                (p.PRF_HMAC_SHA2_256,), (), (19,)),
    "chacha20poly1305-prfsha256-x25519": IkeProposal(((p.ENCR_CHACHA20_POLY1305, 0),),
                                                     (p.PRF_HMAC_SHA2_256,), (), (31,)),
    "aes256-sha256-modp2048": IkeProposal(((p.ENCR_AES_CBC, 256),), (p.PRF_HMAC_SHA2_256,),
                                          (p.AUTH_HMAC_SHA2_256_128,), (14,)),
}


def suite_proposal(name: str) -> IkeProposal:
    """Any suite name the config takes ("...-x25519-ke1_mlkem768"), as the daemon maps it."""
    from espd.policy.ike_plan import _proposal

    return _proposal(name)


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


class PrintingOwner(FakeOwner):
    def _record(self, keys, replaced, switch=True):
        handle = super()._record(keys, replaced, switch)
        got = self.installed[handle.id]
        emit(event="rekey" if replaced else "install", spi_in=keys.spi_in,
             spi_out=keys.spi_out, transform=keys.transform, mode=keys.mode, encap=keys.encap,
             key_in=got.key_in.hex(), key_out=got.key_out.hex(), auth_in=got.auth_in.hex(),
             auth_out=got.auth_out.hex(), remote_port=keys.remote_port)
        return handle

    def retire_child(self, handle, linger=0.0):
        super().retire_child(handle, linger)
        emit(event="retire", spi_in=handle.spi_in)


class Relay(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:  # type: ignore[override]
        globals()["emit"](event="log", level=record.levelname, text=record.getMessage())


def dataplane_owner(conf: dict):
    """espd's real SA owner over a real data plane (no workers): every Child SA is
    created with its crypto contexts, its sequence reservation persisted under
    conf["state_dir"], and bound to the PROTECT rule of crypto map entry vpn 10, as in
    the daemon. Prints one line per Child SA installed (no keys)."""
    from espd.dataplane import Dataplane, Rule
    from espd.keying.manual import ManualKeying
    from espd.keying.owner import SaOwner
    from espd.keying.sequence_store import SequenceStore
    from espd.policy.plan import Plan, RuleSpec

    class CountingOwner(SaOwner):
        def install_child(self, keys):  # type: ignore[override]
            handle = super().install_child(keys)
            emit(event="install", spi_in=handle.spi_in)
            return handle

    owner = CountingOwner(Dataplane(), SequenceStore(conf["state_dir"]))
    rule = Rule.from_prefixes(conf["local_net"], conf["remote_net"], policy=1)
    ManualKeying(owner).apply(Plan(sas=(), rules=(
        RuleSpec(rule, "vpn", 10, "LAN", 0, "permit ip any any", True),),
        routes=(conf["remote_net"],), unroutable=()))
    return owner


def collide_next_ike_rekey() -> None:
    """Before espd answers the peer's next IKE SA rekey request, it starts its own: both
    requests are then in flight together (RFC 7296 2.8.2), deterministically."""
    answer = create_child_sa._on_ike_rekey_request

    def ours_first(engine, sa, *args) -> None:
        create_child_sa._on_ike_rekey_request = answer
        create_child_sa.start_ike_rekey(engine, sa)
        answer(engine, sa, *args)

    create_child_sa._on_ike_rekey_request = ours_first


async def main(conf: dict) -> None:
    loop = asyncio.get_running_loop()
    local, peer = ipaddress.ip_address(conf["local"]), ipaddress.ip_address(conf["peer"])
    key = bytearray(conf["psk"].encode())
    settings = IkeSettings(
        proposals=tuple(PROPOSALS.get(name) or suite_proposal(name)
                        for name in conf["proposals"]),
        peers=(Peer(peer, PresharedKey(key, key), remote_id=Identity("fqdn", conf["remote_id"]),
                    local_id=Identity("fqdn", conf["local_id"])),),
        children=(ChildPolicy("vpn", 10, (peer,), local,
                              tuple((t, conf.get("mode", "tunnel")) for t in conf["esp"]),
                              (TrafficSelector.from_network(conf["local_net"]),),
                              (TrafficSelector.from_network(conf["remote_net"]),),
                              pfs=conf.get("pfs", 0), start="manual",
                              pfs_additional=tuple(conf.get("pfs_additional", ())),
                              encapsulation=conf.get("encapsulation", "auto")),),
        key_log=conf.get("key_log"), dpd=Dpd(interval=conf.get("dpd", 0.0)),
        retransmit_timeout=conf.get("retransmit_timeout", 1.0),
        retransmit_tries=conf.get("retransmit_tries", 5))
    transport = UdpTransport(loop, [Endpoint(local, 500), Endpoint(local, 4500)])
    owner = dataplane_owner(conf) if conf.get("owner") == "dataplane" else PrintingOwner()
    engine = IkeEngine(settings, owner, transport, loop, child_sa_keys=ChildSaKeys)
    logging.getLogger("espd.ike").addHandler(Relay())
    logging.getLogger("espd.ike").setLevel(logging.INFO)
    emit(event="ready")
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        sa = next((x for x in engine.sas.values() if x.children), None) or next(
            iter(engine.sas.values()), None)
        if line == "initiate":
            engine.initiate(settings.children[0])
        elif line == "rekey-child" and sa is not None:
            create_child_sa.start_rekey(engine, sa, next(iter(sa.children.values())))
        elif line == "rekey-ike" and sa is not None:
            create_child_sa.start_ike_rekey(engine, sa)
        elif line == "collide-ike":
            collide_next_ike_rekey()
            emit(event="armed")
        elif line == "counters":
            emit(event="counters", counters=dict(engine.counters))
        elif line == "ike-sas":  # the live IKE SAs: SPIs (hex) and Child SA count
            emit(event="ike-sas", sas=[
                {"spi_i": x.spi_i.hex(), "spi_r": x.spi_r.hex(), "state": x.state.value,
                 "children": len(x.children)} for x in engine.sas.values()
                if x.state.value != "deleted"])
        elif line == "delete" and sa is not None:
            engine.delete_ike_sa(sa)
        elif line == "quit":
            break
    engine.close()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
