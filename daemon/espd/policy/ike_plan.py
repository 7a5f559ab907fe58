"""From a Config to what the IKE engine runs (espd.ike.settings): proposals as IANA ids,
peers with their keys and identities, and one Child SA policy per IKE-keyed map entry.

Pure functions over the frozen model. The pre-shared keys are the Config's own
bytearrays (not copies): wipe_ike_keys zeroes them once the engine has taken its copy, as
plan.wipe_keys does for manual keys.
"""

from __future__ import annotations

from dataclasses import asdict

from espd.config.ike_algorithms import pfs_ids
from espd.config.model import Config, CryptoMapEntry, IkeIdentity, IkePeer, wipe
from espd.ike import settings as ike
from espd.ike.crypto.cipher import ENCR_CHACHA20_POLY1305
from espd.ike.crypto.suites import parse_suite
from espd.policy.selectors import from_acl


def ike_settings(config: Config) -> ike.IkeSettings | None:
    """The IKE engine's settings, or None when no crypto map entry is keyed by IKE."""
    children = tuple(_child(config, e) for e in config.crypto_maps if not e.manual)
    if not children:
        return None
    s = config.ike
    return ike.IkeSettings(
        proposals=tuple(_proposal(text) for text in s.proposals),
        peers=tuple(_peer(p) for p in config.ike_peers),
        children=children,
        ike_lifetime=s.lifetime,
        reauth_time=s.reauth_time,
        dpd=ike.Dpd(interval=float(s.dpd.interval), retry=float(s.dpd.retry),
                    mode=s.dpd.mode),
        retransmit_timeout=s.retransmit_timeout,
        retransmit_tries=s.retransmit_tries,
        limits=ike.Limits(**asdict(s.limits)),
        fragment_size=s.fragment_size,
        key_log=s.key_log,
        certificate=s.certificate,  # type: ignore[arg-type]
        trust=s.trust,  # type: ignore[arg-type]
    )


def _proposal(text: str) -> ike.IkeProposal:
    suite = parse_suite(text)  # validated when the config was loaded
    bits = 0 if suite.encr.ident == ENCR_CHACHA20_POLY1305 else suite.encr.key_bits
    return ike.IkeProposal(
        encryption=((suite.encr.ident, bits),),
        prf=(suite.prf.ident,),
        integrity=(suite.integ.ident,) if suite.integ else (),
        groups=(suite.ke.ident,),
        additional=tuple((k.ident,) for k in suite.additional),
    )


def _identity(identity: IkeIdentity | None) -> ike.Identity | None:
    return ike.Identity(identity.kind, identity.value) if identity else None


def _peer(peer: IkePeer) -> ike.Peer:
    return ike.Peer(
        address=peer.address,
        psk=ike.PresharedKey(local=peer.psk_local, remote=peer.psk_remote)
        if peer.auth == "psk" else None,
        remote_id=_identity(peer.remote_id),
        local_id=_identity(peer.local_id),
        auth=peer.auth,
        ppk=ike.PostQuantumKey(peer.ppk_id, peer.ppk, peer.ppk_required)
        if peer.ppk_id else None,
    )


def _child(config: Config, entry: CryptoMapEntry) -> ike.ChildPolicy:
    local_ts, remote_ts = from_acl(config.access_lists[entry.match_address].entries)
    transforms = tuple((config.transform_sets[name].transform.name,
                        config.transform_sets[name].mode) for name in entry.transform_sets)
    pfs, pfs_additional = pfs_ids(entry.pfs) if entry.pfs else (0, ())
    return ike.ChildPolicy(
        map_name=entry.map_name, seq=entry.seq, peers=entry.peers, local=entry.local,
        transforms=transforms, local_ts=local_ts, remote_ts=remote_ts, pfs=pfs,
        pfs_additional=pfs_additional,
        esn=entry.esn, start=entry.start, encapsulation=entry.encapsulation,
        replay_window=entry.replay_window, peer_source=entry.peer_source,
        lifetime=ike.ChildLifetime(seconds=entry.lifetime.seconds,
                                   kilobytes=entry.lifetime.kilobytes,
                                   packets=entry.lifetime.packets),
    )


def wipe_ike_keys(config: Config) -> None:
    """Zero the Config's pre-shared keys in place (call once the engine holds its copies)."""
    for peer in config.ike_peers:
        wipe(peer.psk_local)
        wipe(peer.psk_remote)
        wipe(peer.ppk)


def ike_udp_families(config: Config) -> set[int]:
    """IP versions whose IKE-keyed entries may use UDP 4500 (encapsulation auto or udp):
    the daemon opens the data plane's NAT-T socket for them."""
    return {e.local.version for e in config.crypto_maps
            if not e.manual and e.encapsulation != "esp"}
