"""The `pending` fuzz target's world: IKE SAs with an exchange in flight, which the
exchanges target's established responder never is. Each victim is a fresh engine brought
to its state by espd's own messages, replayed from one deterministic run of two espd
engines (``Pair``: fixed SPIs, nonces and KE keys per engine, see ``Streams``), so every
input starts from the same state and a found input replays the same way:

    responder, half-open after IKE_SA_INIT     (awaits IKE_AUTH)
    responder, half-open, x25519 + ML-KEM-768  (awaits IKE_INTERMEDIATE, then IKE_AUTH)
    responder, half-open, USE_PPK negotiated   (RFC 8784: IKE_AUTH with PPK_IDENTITY)
    initiator, IKE_SA_INIT sent                (responses in the clear; also hybrid)
    initiator, IKE_AUTH sent                   (also with USE_PPK negotiated)
    initiator, IKE_INTERMEDIATE sent           (x25519 + ML-KEM-768)
    initiator, established, CREATE_CHILD_SA sent: a new Child SA (per crypto map entry:
               no PFS, PFS ecp256, PFS x25519 + ML-KEM-768), a Child SA rekey, an IKE SA
               rekey
    initiator, established, INFORMATIONAL sent: DPD, DELETE of the Child SA, of the IKE SA

Input: one byte picking the victim (VICTIMS[b % len]), then up to MAX_RECORDS records

    control (1) | options (1) | first payload type (1) | length (2) | inner chain

control: bits 0-2 the exchange (exchange_victim.EXCHANGES), bit 3 the other direction
(a request to an initiator, a response to a responder), bits 4-5 the message ID (0 the
natural one: a request's the one the victim expects next, a response's the one of the
request the victim has outstanding; 1 one less;
2 one more; 3 2^32-1), bit 6 raw (in the clear, unauthenticated), bit 7 as two RFC 7383
fragments. options: bit 0 the harness puts a correct PSK AUTH payload for the chain's
IDi (to a responder) or IDr (to an initiator) in place of its AUTH, so success paths are
reachable; bit 1 a zero responder SPI in the header. IKE_SA_INIT records go in the clear
(to the initiator: a response carrying the responder SPI of the deterministic run).
Sealed records use the SA's real keys (as they are at that record: IKE_INTERMEDIATE
replaces them), so the fuzzer's bytes are what the handlers decode.

Oracle, after each record, besides exchange_victim's (no internal error, the Child SA
index consistent, no key in a log line): every message the engine sent decodes, and an
SK message on an IKE SA it knows opens with that SA's peer-side keys (before or after the
record); a response answers the record's message ID; a message in the clear changes
nothing of an IKE SA past IKE_SA_INIT; the owner holds exactly the Child SAs the engine
has (a failed exchange leaves none half-installed), none before IKE_AUTH is done, and
none protecting more than its crypto map entry (RFC 7296 2.9); no Child SA is CREATING or REKEYING
(nor an IKE SA REKEYING) when its IKE SA has no exchange in flight or queued that could
finish it (RFC 7296 1.3, 2.8: a failed CREATE_CHILD_SA leaves the old SA as it was).
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import struct
from dataclasses import dataclass, fields, replace

from cryptography.hazmat.primitives.asymmetric import ec, x25519
from exchange_victim import (
    ERRORS,
    EXCHANGES,
    FRAGMENTS,
    LOOP,
    RAW,
    Harness,
    MemoryTransport,
    OracleViolation,
    check_consistent,
    check_logs,
    forget_input,
)
from support.ike_pair import GCM_X25519, FakeOwner, policy

from espd.ike import codec
from espd.ike.auth.psk import PskAuthenticator
from espd.ike.codec import ExchangeType, HeaderFlags, NotifyType, PayloadType
from espd.ike.codec.encrypted import pad
from espd.ike.codec.fragments import _seal_fragment
from espd.ike.codec.header import HEADER_SIZE, encode_header
from espd.ike.crypto import dh, keymat
from espd.ike.crypto.secret import Secret
from espd.ike.engine import admission
from espd.ike.engine import engine as engine_module
from espd.ike.engine.engine import IkeEngine
from espd.ike.exchanges import (
    create_child_sa,
    ike_auth,
    ike_sa_init,
    informational,
    ppk,
)
from espd.ike.sa.child_sa import ChildState
from espd.ike.sa.ike_sa import Endpoint, IkeSa, IkeState
from espd.ike.settings import IkeProposal, IkeSettings, Peer, PostQuantumKey, PresharedKey
from espd.keying.owner import ChildSaKeys

I_ADDR, R_ADDR = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")
I_END, R_END = Endpoint(I_ADDR, 500), Endpoint(R_ADDR, 500)
PSK = b"fuzz-pending-psk-0123456789"
PPK_ID, PPK = b"fuzz-ppk", bytes(range(0x40, 0x60))  # RFC 8784 post-quantum PSK
HYBRID = replace(GCM_X25519, additional=((36,),))  # x25519, then ML-KEM-768
# the initiator also offers ecp256, so an INVALID_KE_PAYLOAD can be honoured
OFFER = IkeProposal(GCM_X25519.encryption, GCM_X25519.prf, (), (31, 19))
MAX_RECORDS = 4
RECORD = struct.Struct("!BBBH")
GENERIC = struct.Struct("!BBH")
OTHER_WAY, AUTH_FIX, ZERO_SPI = 0x08, 0x01, 0x02
DPD, DELETE_CHILD, DELETE_IKE = 0, 1, 2


# --- determinism ---------------------------------------------------------------------

class Streams:
    """A stand-in for ``secrets`` (and for KE key generation): one byte stream per
    engine (``current`` names the one being driven), restarted for every input, so an
    engine draws the same SPIs, nonces and private keys whenever it is driven the same
    way, whatever the other engine drew meanwhile."""

    def __init__(self) -> None:
        self.current = "none"
        self.drawn: dict[str, int] = {}

    def reset(self) -> None:
        self.drawn.clear()

    def token_bytes(self, n: int = 32) -> bytes:
        i = self.drawn.get(self.current, 0)
        self.drawn[self.current] = i + 1
        return hashlib.shake_256(f"{self.current}/{i}".encode()).digest(n)

    def randbits(self, k: int) -> int:
        return int.from_bytes(self.token_bytes((k + 7) // 8), "big") >> (-k % 8)

    def randbelow(self, n: int) -> int:
        return int.from_bytes(self.token_bytes(8), "big") % n


STREAMS = Streams()


def _x25519(group):
    return dh.X25519Private(x25519.X25519PrivateKey.from_private_bytes(
        STREAMS.token_bytes(32)))


def _ecp(group):
    value = int.from_bytes(STREAMS.token_bytes(group.coordinate_size - 1), "big") + 1
    return dh.EcpPrivate(group, ec.derive_private_key(value, group.curve()))


def _mlkem(group):
    return dh.MlKemPrivate(group, group._classes()[0].from_seed_bytes(
        STREAMS.token_bytes(64)))


TRIMMED: dict[tuple, tuple] = {}  # spis -> the peer's ciphers, kept as IKE_AUTH ends
_setup_done = IkeSa.setup_done


def _keep_then_trim(sa: IkeSa) -> None:
    """IkeSa.setup_done, first keeping the peer-side ciphers of SK_e/SK_a (it drops
    them from ``keys``; the SA's own cipher objects are wiped with it)."""
    ciphers = peer_ciphers(sa)
    if ciphers is not None:
        TRIMMED[sa.spis] = ciphers
    _setup_done(sa)


class Determinism(Harness):
    """exchange_victim's Harness (espd's log to ERRORS, counted IKE_FOLLOWUP_KE links),
    and every random draw of the engine from STREAMS; ``restore`` puts all back."""

    PATCHES = ((ike_sa_init, "secrets", STREAMS), (create_child_sa, "secrets", STREAMS),
               (engine_module, "secrets", STREAMS), (admission, "secrets", STREAMS),
               (dh, "secrets", STREAMS), (dh.X25519Group, "generate", _x25519),
               (dh.EcpGroup, "generate", _ecp), (dh.MlKemGroup, "generate", _mlkem),
               (IkeSa, "setup_done", _keep_then_trim))

    def __init__(self) -> None:
        super().__init__()
        self.originals = [(obj, name, getattr(obj, name)) for obj, name, _ in self.PATCHES]
        for obj, name, value in self.PATCHES:
            setattr(obj, name, value)
        STREAMS.reset()
        TRIMMED.clear()

    def restore(self) -> None:
        for obj, name, value in self.originals:
            setattr(obj, name, value)
        super().restore()


# --- the two ends --------------------------------------------------------------------

def _settings(local, remote, nets, proposals) -> IkeSettings:
    key = bytearray(PSK)
    peer = Peer(remote, PresharedKey(key, bytearray(key)), port=500)
    here, there = nets
    children = (
        policy(local, (remote,), f"10.{here}.0.0/16", f"10.{there}.0.0/16"),
        policy(local, (remote,), f"10.{here + 2}.0.0/16", f"10.{there + 2}.0.0/16",
               seq=20, pfs=19, transforms=(("esp-aes 256 esp-sha256-hmac", "transport"),)),
        policy(local, (remote,), f"10.{here + 4}.0.0/16", f"10.{there + 4}.0.0/16",
               seq=30, pfs=31, pfs_additional=(36,)))
    return IkeSettings(peers=(peer,), children=children, proposals=proposals, port=500,
                       nat_port=4500, retransmit_timeout=0.05, retransmit_tries=2)


def _with_ppk(settings: IkeSettings) -> IkeSettings:
    """The same with an optional RFC 8784 PPK for the peer (NO_PPK_AUTH may stand in)."""
    ppk = PostQuantumKey(PPK_ID, bytearray(PPK), required=False)
    return replace(settings, peers=tuple(replace(p, ppk=ppk) for p in settings.peers))


INITIATOR = _settings(I_ADDR, R_ADDR, (1, 2), (OFFER,))
RUNS = {"classic": INITIATOR, "hybrid": replace(INITIATOR, proposals=(HYBRID,)),
        "ppk": _with_ppk(INITIATOR)}  # the initiator of each deterministic run
# (a PPK for the initiator, optional: without USE_PPK from it, plain RFC 7296)
RESPONDER = _with_ppk(_settings(R_ADDR, I_ADDR, (2, 1), (HYBRID, GCM_X25519)))


@dataclass
class End:
    """One engine with its owner and in-memory transport, driven under its own stream."""

    name: str
    engine: IkeEngine
    owner: FakeOwner
    transport: MemoryTransport
    local: Endpoint
    remote: Endpoint

    @classmethod
    def make(cls, name: str, settings: IkeSettings, local: Endpoint, remote: Endpoint,
             loop) -> End:
        STREAMS.current = name
        owner, transport = FakeOwner(), MemoryTransport()
        engine = IkeEngine(settings, owner, transport, loop, child_sa_keys=ChildSaKeys)
        spis = itertools.count(0x0000E000 if name == "initiator" else 0x0000F000)
        engine.new_child_spi = lambda: next(spis)
        return cls(name, engine, owner, transport, local, remote)

    def call(self, fn, *args):
        STREAMS.current = self.name
        return fn(*args)

    def receive(self, datagram: bytes) -> None:
        self.call(self.engine.receive, datagram, self.local, self.remote)

    def take(self) -> list[bytes]:
        sent, self.transport.sent = self.transport.sent, []
        return sent

    @property
    def sa(self) -> IkeSa | None:
        return next(iter(self.engine.sas.values()), None)


class Pair:
    """An espd initiator and an espd responder in memory: ``pump`` carries datagrams
    both ways until both are quiet; ``log`` keeps them in order as (sender, datagram)."""

    def __init__(self, run: str = "classic") -> None:
        self.i = End.make("initiator", RUNS[run], I_END, R_END, LOOP)
        self.r = End.make("responder", RESPONDER, R_END, I_END, LOOP)
        self.log: list[tuple[str, bytes]] = []

    def pump(self) -> None:
        for _ in range(100):
            moved = False
            for sender, receiver in ((self.i, self.r), (self.r, self.i)):
                for datagram in sender.take():
                    self.log.append((sender.name, datagram))
                    receiver.receive(datagram)
                    moved = True
            if not moved:
                return

    def from_(self, name: str) -> list[bytes]:
        return [d for who, d in self.log if who == name]

    def close(self) -> None:
        self.i.engine.close()
        self.r.engine.close()


def script() -> dict[str, list[bytes]]:
    """espd's own messages of one deterministic run per proposal set: what brings a
    fresh engine to each victim's state (the initiator's requests, the responder's
    responses up to IKE_AUTH)."""
    out: dict[str, list[bytes]] = {}
    for tag in RUNS:
        det = Determinism()
        try:
            pair = Pair(tag)
            pair.i.call(pair.i.engine.initiate, pair.i.engine.settings.children[0])
            pair.pump()
            out[f"{tag}-requests"] = pair.from_("initiator")
            out[f"{tag}-responses"] = pair.from_("responder")
            if not pair.i.owner.live() or not pair.r.owner.live():
                raise RuntimeError(f"the {tag} pair did not come up: {pair.log}")
            pair.close()
        finally:
            det.restore()
            forget_input()
    return out


SCRIPT = script()


# --- the victims ---------------------------------------------------------------------

@dataclass(frozen=True)
class Kind:
    name: str
    responder: bool = False
    run: str = "classic"  # of RUNS: which initiator, which script
    responses: int = 0  # of the script's responses, delivered to an initiator first
    start: str = ""  # then: what the established initiator starts
    param: int = 0


VICTIMS = (
    Kind("responder-half-open", responder=True),
    Kind("responder-half-open-hybrid", responder=True, run="hybrid"),
    Kind("initiator-init-sent"),
    Kind("initiator-init-sent-hybrid", run="hybrid"),
    Kind("initiator-auth-sent", responses=1),
    Kind("initiator-intermediate-sent", run="hybrid", responses=1),
    Kind("initiator-child-sent", responses=2, start="child", param=0),
    Kind("initiator-child-pfs-sent", responses=2, start="child", param=1),
    Kind("initiator-child-hybrid-sent", responses=2, start="child", param=2),
    Kind("initiator-child-rekey-sent", responses=2, start="rekey"),
    Kind("initiator-ike-rekey-sent", responses=2, start="ike-rekey"),
    Kind("initiator-dpd-sent", responses=2, start="info", param=DPD),
    Kind("initiator-delete-child-sent", responses=2, start="info", param=DELETE_CHILD),
    Kind("initiator-delete-ike-sent", responses=2, start="info", param=DELETE_IKE),
    Kind("responder-half-open-ppk", responder=True, run="ppk"),
    Kind("initiator-auth-sent-ppk", run="ppk", responses=1),
)
KINDS = {kind.name: index for index, kind in enumerate(VICTIMS)}


def _start(end: End, sa: IkeSa, kind: Kind) -> None:
    engine = end.engine
    if kind.start == "child":
        end.call(create_child_sa.start_new_child, engine, sa,
                 engine.settings.children[kind.param])
    elif kind.start == "rekey":
        end.call(create_child_sa.start_rekey, engine, sa, next(iter(sa.children.values())))
    elif kind.start == "ike-rekey":
        end.call(create_child_sa.start_ike_rekey, engine, sa)
    elif kind.param == DPD:
        end.call(informational.start_dpd, engine, sa)
    elif kind.param == DELETE_CHILD:
        end.call(informational.start_delete_child, engine, sa,
                 next(iter(sa.children.values())), "fuzz")
    else:
        end.call(informational.start_delete_ike, engine, sa, "fuzz")


class Victim:
    """A fresh engine in the state ``kind`` names, and the peer's view of it."""

    def __init__(self, kind: Kind) -> None:

        self.kind = kind
        self.harness = Determinism()
        try:
            tag = kind.run
            if kind.responder:
                self.end = End.make("responder", RESPONDER, R_END, I_END, LOOP)
                self.end.receive(SCRIPT[f"{tag}-requests"][0])  # its IKE_SA_INIT
            else:
                settings = RUNS[kind.run]
                self.end = End.make("initiator", settings, I_END, R_END, LOOP)
                self.end.call(self.end.engine.initiate, settings.children[0])
                for datagram in SCRIPT[f"{tag}-responses"][:kind.responses]:
                    self.end.receive(datagram)
            self.sa = self.end.sa
            if self.sa is None:
                raise RuntimeError(f"{kind.name}: the script did not make the IKE SA")
            if kind.start:
                _start(self.end, self.sa, kind)
            self.end.take()
            self.spi_r = SCRIPT[f"{tag}-responses"][0][8:16]  # the run's responder SPI
            self.keys_seen: dict[tuple, dict] = {}
            self.children_seen = [child for sa in self.engine.sas.values()
                                  for child in sa.children.values()]
            self.before = fingerprint(self)
        except BaseException:
            self.close()
            raise

    @property
    def engine(self) -> IkeEngine:
        return self.end.engine

    @property
    def owner(self) -> FakeOwner:
        return self.end.owner

    def close(self) -> None:
        try:
            if hasattr(self, "end"):
                self.end.engine.close()
        finally:
            self.harness.restore()

    # --- one record -----------------------------------------------------------------

    def natural_id(self, request: bool) -> int:
        """A request's: the one the victim expects next; a response's: the victim's
        outstanding request's (else its last)."""
        sa = self.sa
        if request:
            return sa.responses.expected_id
        out = sa.requests.outstanding
        return out.message_id if out is not None else max(sa.requests.next_id - 1, 0)

    def datagrams(self, control: int, options: int, first: int, inner: bytes
                  ) -> tuple[int, bool, list[bytes]]:
        """(message ID, sent in the clear, the datagrams) of one record."""
        sa = self.sa
        exchange = EXCHANGES[control & 7]
        request = self.kind.responder != bool(control & OTHER_WAY)
        flags = (HeaderFlags.INITIATOR if self.kind.responder else 0) | \
            (0 if request else HeaderFlags.RESPONSE)
        natural = self.natural_id(request)
        mid = (natural, (natural - 1) & 0xFFFFFFFF, natural + 1,
               0xFFFFFFFF)[(control >> 4) & 3]
        spi_r = sa.spi_r
        if exchange == ExchangeType.IKE_SA_INIT and not self.kind.responder:
            spi_r = self.spi_r  # the response of the run names the responder's SPI
        if options & ZERO_SPI:
            spi_r = bytes(8)
        header = codec.Header(codec.SpiPair(sa.spi_i, spi_r), exchange,
                              mid & 0xFFFFFFFF, HeaderFlags(flags))
        ciphers = peer_ciphers(sa)
        if options & AUTH_FIX and ciphers is not None:
            first, inner = self.with_auth(first, inner, mid)
        if control & RAW or exchange == ExchangeType.IKE_SA_INIT or ciphers is None:
            inner = inner[:65535 - HEADER_SIZE]
            return mid, True, [encode_header(header, first, HEADER_SIZE + len(inner)) + inner]
        peer_out = ciphers[0]
        if control & FRAGMENTS and len(inner) >= 2:
            half = len(inner) // 2
            return mid, False, [
                _seal_fragment(header, first, 1, 2, inner[:half], peer_out),
                _seal_fragment(header, PayloadType.NONE, 2, 2, inner[half:], peer_out)]
        plaintext = pad(inner, peer_out.block_size)
        size = GENERIC.size + peer_out.iv_size + len(plaintext) + peer_out.icv_size
        aad = encode_header(header, PayloadType.SK, HEADER_SIZE + size) + \
            GENERIC.pack(first, 0, size)
        return mid, False, [aad + peer_out.seal(aad, plaintext)]

    def with_auth(self, first: int, inner: bytes, mid: int) -> tuple[int, bytes]:
        """The chain with a correct PSK AUTH for its IDi (from the initiator) or IDr
        (from the responder) in place of its first AUTH payload (added if it has none).
        With USE_PPK negotiated (RFC 8784 3): over the PPK-mixed SK_p when the chain has
        a PPK_IDENTITY (to the responder: naming our PPK), and a NO_PPK_AUTH notify's
        data the AUTH over the plain keys."""
        try:
            payloads = list(codec.decode_chain(first, inner))
        except codec.ParseError:
            return first, inner
        wanted = codec.IdInitiator if self.kind.responder else codec.IdResponder
        ident = next((p for p in payloads if isinstance(p, wanted)), None)
        if ident is None or self.sa.prf is None or not len(self.sa.keys.sk_pi):
            return first, inner

        def auth(keys=None) -> bytes:
            octets = ike_auth._octets(self.sa, initiator_side=self.kind.responder,
                                      id_body=ident.encode_body(), message_id=mid,
                                      keys=keys)
            return PskAuthenticator(PSK).build(octets)[1]

        notifies = {p.type: n for n, p in enumerate(payloads) if isinstance(p, codec.Notify)}
        mixed = None
        if self.sa.ppk_negotiated and NotifyType.PPK_IDENTITY in notifies:
            if not self.kind.responder:
                mixed = self.sa.ppk_pending
            elif payloads[notifies[NotifyType.PPK_IDENTITY]].data == b"\x02" + PPK_ID:
                mixed = ppk.mixed(self.sa, Secret(PPK))
        if NotifyType.NO_PPK_AUTH in notifies:
            at = notifies[NotifyType.NO_PPK_AUTH]
            payloads[at] = replace(payloads[at], data=auth())
        data = auth(mixed)
        at = next((n for n, p in enumerate(payloads)
                   if isinstance(p, codec.Authentication)), None)
        if at is None:
            payloads.insert(payloads.index(ident) + 1, codec.Authentication(2, data))
        else:
            payloads[at] = codec.Authentication(2, data)
        try:
            return codec.encode_chain(payloads)
        except Exception:  # noqa: BLE001 - a chain the encoder refuses stays as it was
            return first, inner

    def deliver(self, control: int, options: int, first: int, inner: bytes) -> None:
        engine = self.engine
        mid, clear, datagrams = self.datagrams(control, options, first, inner)
        keys = self.key_hex()
        self.remember()
        errors = engine.counters["internal_errors"]
        initial = self.sa.keys is None  # IKE_SA_INIT's response is the clear one
        for datagram in datagrams:
            self.end.receive(datagram)
        if engine.counters["internal_errors"] != errors:
            raise OracleViolation("internal error in the engine:\n" +
                                  "\n".join(ERRORS.internal[-1:]))
        self.remember()
        self.check_sent(self.end.take(), mid, clear)
        check_logs(keys + self.key_hex())
        if clear and not initial:
            if fingerprint(self) != self.before:
                raise OracleViolation("a message in the clear changed the IKE SA")
        self.before = fingerprint(self)
        check_consistent(engine, self.owner)
        self.check_settled()

    # --- the oracle -----------------------------------------------------------------

    def key_hex(self) -> list[str]:
        out = [PSK.hex(), PPK.hex()]
        for sa in self.engine.sas.values():
            if sa.keys is not None:
                out += [bytes(getattr(sa.keys, f.name)).hex() for f in fields(sa.keys)
                        if len(getattr(sa.keys, f.name)) >= 8]
        for i in self.owner.installed.values():
            out += [k.hex() for k in (i.key_in, i.key_out, i.auth_in, i.auth_out)
                    if len(k) >= 8]
        return [k for k in out if k.strip("0")]

    def remember(self) -> None:
        """The peer-side ciphers of every IKE SA's keys so far: a retransmitted response
        is the cached one, sealed with the keys of its time (IKE_INTERMEDIATE has
        replaced them since), and the peer that sent the request holds those."""
        for sa in self.engine.sas.values():
            ciphers = peer_ciphers(sa)
            if ciphers is None:
                continue
            mark = (bytes(sa.keys.sk_ei), bytes(sa.keys.sk_er)) if len(sa.keys.sk_ei) \
                else "kept"
            self.keys_seen.setdefault(sa.spis, {}).setdefault(mark, ciphers)

    def check_sent(self, sent: list[bytes], mid: int, clear: bool) -> None:
        for datagram in sent:
            try:
                message = codec.decode_message(datagram)
            except codec.ParseError as err:
                raise OracleViolation(f"the engine sent an undecodable message: {err}") \
                    from None
            last = message.payloads[-1] if message.payloads else None
            if not isinstance(last, codec.Encrypted):
                continue  # IKE_SA_INIT in the clear; fragments: the codec target's
            ciphers = list(self.keys_seen.get(_pair(message.header.spis), {}).values())
            if not ciphers:
                continue  # an IKE SA the engine has forgotten since
            opened = None
            for _out, peer_in in ciphers:
                try:
                    opened = codec.decrypt_message(datagram, peer_in)
                    break
                except Exception:  # noqa: BLE001 - judged below
                    continue
            if opened is None:
                raise OracleViolation(f"the peer cannot open the {message.header.exchange!r} "
                                      f"the engine sent")
            if opened.header.is_response and not clear and \
                    _pair(message.header.spis) == self.sa.spis and opened.header.message_id != mid:
                raise OracleViolation(f"response with message ID "
                                      f"{opened.header.message_id} to request {mid}")

    def check_settled(self) -> None:
        engine = self.engine
        held_now = {id(child) for _sa, child in engine.children.values()}
        for sa in engine.sas.values():
            held_now |= {id(child) for child in sa.children.values()}
        for child in self.children_seen:  # (a Child SA, once dropped, stays DELETED)
            if id(child) not in held_now and child.state != ChildState.DELETED:
                raise OracleViolation(f"{child}, dropped, is {child.state.value} again")
        known = {id(child) for child in self.children_seen}
        self.children_seen += [child for sa in engine.sas.values()
                               for child in sa.children.values() if id(child) not in known]
        held = {child.handle for _sa, child in engine.children.values()
                if child.handle is not None}
        orphans = [i.handle for i in self.owner.live() if i.handle not in held]
        if orphans:
            raise OracleViolation(f"the owner holds Child SAs the engine forgot: {orphans}")
        for sa in engine.sas.values():
            if sa.state == IkeState.DELETED:
                continue
            installed = [c for c in sa.children.values() if c.handle is not None]
            if installed and sa.state in (IkeState.INIT_SENT, IkeState.INIT_DONE,
                                          IkeState.AUTH_SENT):
                raise OracleViolation(f"{sa} holds a Child SA before IKE_AUTH is done")
            for child in installed:
                policy = next((p for p in engine.settings.children if p.key == child.entry),
                              None)
                if policy is None or not _within(child.local_ts, policy.local_ts) or \
                        not _within(child.remote_ts, policy.remote_ts):
                    raise OracleViolation(f"{child} protects {child.local_ts} <-> "
                                          f"{child.remote_ts}, more than its crypto map "
                                          f"entry (RFC 7296 2.9: narrowed, never widened)")
            in_flight = sa.requests.busy or bool(sa.queue)
            if in_flight:
                continue
            stuck = [c for c in sa.children.values() if c.deferred is None and
                     c.state in (ChildState.CREATING, ChildState.REKEYING) and
                     not _retry_due(sa, c)]
            if stuck:
                raise OracleViolation(f"{sa}: {stuck[0]} is {stuck[0].state.value} with "
                                      f"no exchange in flight")
            if sa.initiator and sa.state == IkeState.REKEYING and sa.collision is None \
                    and not _retry_due(sa, None):
                raise OracleViolation(f"{sa} is rekeying with no exchange in flight")


def _within(side, allowed) -> bool:
    """Every selector of ``side`` inside one of ``allowed`` (the oracle's own check, not
    espd.policy.selectors.covers that the engine narrows with)."""
    def inside(ts, a) -> bool:
        return a.protocol in (0, ts.protocol) and a.start_port <= ts.start_port and \
            ts.end_port <= a.end_port and ts.start.version == a.start.version and \
            int(a.start) <= int(ts.start) and int(ts.end) <= int(a.end)
    return all(any(inside(ts, a) for a in allowed) for ts in side)


def _retry_due(sa: IkeSa, child) -> bool:
    """A timer of ``sa`` that will start the exchange again."""
    timers = getattr(sa, "timers", None) or {}
    names = (f"retry-{child.spi_in}",) if child is not None else ("ike-rekey",)
    return any(name in timers for name in names)


def _pair(spis: codec.SpiPair) -> tuple[bytes, bytes]:
    return spis.initiator, spis.responder


def peer_ciphers(sa: IkeSa):
    """(the peer's SK cipher out, in) for the SA's keys as they are now, or None: made
    from SK_e/SK_a while the SA has them, then the ones kept as IKE_AUTH dropped them
    (ike_sa.setup_done)."""
    if sa.keys is None or sa.suite is None or sa.sk_in is None or \
            sa.state == IkeState.DELETED:
        return None
    if len(sa.keys.sk_ei):
        return keymat.ike_ciphers(sa.keys, sa.suite.encr, sa.suite.integ, not sa.initiator)
    return TRIMMED.get(sa.spis)


def fingerprint(victim: Victim) -> tuple:
    sa = victim.sa
    keys = tuple(bytes(getattr(sa.keys, f.name)) for f in fields(sa.keys)) \
        if sa.keys is not None else None
    out = sa.requests.outstanding
    return (sa.state, keys, sa.requests.next_id, out.message_id if out else None,
            sa.responses.expected_id, sa.responses.last_id,
            tuple(sorted((c.spi_in, c.spi_out, c.state.value)
                         for c in sa.children.values())),
            tuple(i.handle for i in victim.owner.live()), sa.remote, sa.local)


def records(data: bytes):
    """The victim's Kind and the (control, options, first payload type, inner chain)
    records of one input."""
    if not data:
        return None, []
    out, offset = [], 1
    for _ in range(MAX_RECORDS):
        if offset + RECORD.size > len(data):
            break
        control, options, first, length = RECORD.unpack_from(data, offset)
        offset += RECORD.size
        out.append((control, options, first, data[offset:offset + length]))
        offset += length
    return VICTIMS[data[0] % len(VICTIMS)], out


def record(control: int, first: int, inner: bytes, options: int = 0) -> bytes:
    return RECORD.pack(control, options, first, len(inner)) + inner


def run_one(data: bytes) -> None:
    kind, recs = records(data)
    if kind is None:
        return
    victim = Victim(kind)
    try:
        for rec in recs:
            victim.deliver(*rec)
    finally:
        victim.close()
        forget_input()


__all__ = ["AUTH_FIX", "KINDS", "OTHER_WAY", "SCRIPT", "VICTIMS", "ZERO_SPI", "Pair",
           "Victim", "record", "records", "run_one"]
