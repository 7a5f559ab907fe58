"""The fuzz_exchanges target's world: an IKE engine holding one established IKE SA with one
Child SA, made from fixed values (SPIs, nonces, SKEYSEED) so every input starts from the
same state and a found input replays the same way; the peer's SK ciphers to seal what the
fuzzer says; and the oracle. Used by fuzz_exchanges.py (atheris), make_exchange_seeds.py
and tests/unit/ike/test_fuzz_exchanges.py (regression replay without atheris).

Input: up to MAX_RECORDS records, each

    control (1) | first payload type (1) | length (2) | inner payload chain (length)

control: bits 0-2 the exchange (EXCHANGES), bit 3 the R flag, bits 4-5 the message ID
(0 the expected one (IKE_SA_INIT: 0, with a zero responder SPI), 1 the last answered (a
retransmission), 2 one past the window, 3 2^32-1), bit 6 raw (the chain goes in the
clear, unauthenticated: it must change nothing of the established SA), bit 7 as two
RFC 7383 fragments. Sealed records carry a valid ICV (the peer's real keys), so the
fuzzer's bytes reach the exchange handlers.

Oracle, after each record: no internal error in the engine (every exception a handler
raises is a bug: receive() counts and hides them); whatever the engine sent decodes, and
what it sent on the IKE SA opens with the peer's keys and answers the record's message
ID; an unauthenticated record left the established SA as it was; the engine's Child SA
index, the IKE SAs' Child SAs and the owner's live SAs agree; no log line holds a key.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import itertools
import logging
import struct
import sys
import types
from dataclasses import fields, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: support.*

from support.ike_pair import GCM_X25519, FakeOwner, policy  # noqa: E402

from espd.ike import codec, proposals  # noqa: E402
from espd.ike.codec import ExchangeType, HeaderFlags, PayloadType  # noqa: E402
from espd.ike.codec.encrypted import pad  # noqa: E402
from espd.ike.codec.fragments import _seal_fragment  # noqa: E402
from espd.ike.codec.header import HEADER_SIZE, encode_header  # noqa: E402
from espd.ike.crypto import keymat  # noqa: E402
from espd.ike.crypto.secret import Secret  # noqa: E402
from espd.ike.engine.engine import IkeEngine  # noqa: E402
from espd.ike.engine.transport import Transport  # noqa: E402
from espd.ike.exchanges import child_setup, followup_ke, ike_sa_init  # noqa: E402
from espd.ike.sa.child_sa import ChildSa, ChildState  # noqa: E402
from espd.ike.sa.ike_sa import Endpoint, IkeSa, IkeState  # noqa: E402
from espd.ike.settings import IkeSettings, Peer, PresharedKey  # noqa: E402
from espd.keying.owner import ChildSaKeys  # noqa: E402

A, B = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")
PEER, US = Endpoint(A, 500), Endpoint(B, 500)
SPI_I, SPI_R = bytes.fromhex("1111111111111111"), bytes.fromhex("2222222222222222")
NONCE_I, NONCE_R = b"\x01" * 32, b"\x02" * 32
SKEYSEED = bytes(range(48))
CHILD_IN, CHILD_OUT = 0x0000C001, 0x0000C002  # the victim's SPIs of its Child SA
NEW_SPIS = 0x0000D000  # the victim's SPIs for Child SAs made during an input
EXCHANGES = (ExchangeType.CREATE_CHILD_SA, ExchangeType.INFORMATIONAL, ExchangeType.IKE_AUTH,
             ExchangeType.IKE_FOLLOWUP_KE, ExchangeType.IKE_INTERMEDIATE,
             ExchangeType.IKE_SA_INIT, ExchangeType.CREATE_CHILD_SA, 99)
MAX_RECORDS = 4
RECORD = struct.Struct("!BBH")
GENERIC = struct.Struct("!BBH")
RAW, FRAGMENTS = 0x40, 0x80
LAST_REQUEST = b"the IKE_AUTH request as the victim received it"


class OracleViolation(AssertionError):
    """The engine broke its contract on this input."""


class MemoryTransport(Transport):
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def attach(self, receiver, intake=None) -> None:
        self.receiver = receiver

    def send(self, local, remote, data: bytes) -> None:
        self.sent.append(bytes(data))

    def close(self) -> None:
        pass


class Errors(logging.Handler):
    """Every record at WARNING and above, formatted (keys must not be in any)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []
        self.internal: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            import traceback

            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
            self.internal.append(text)
        self.lines.append(text)


ERRORS = Errors()
LOOP = asyncio.new_event_loop()


class Harness:
    """What the victim changes outside itself while it lives, put back by ``restore``:
    espd's log goes to ERRORS only, IKE_FOLLOWUP_KE links count 0, 1, ..."""

    def __init__(self) -> None:
        log = logging.getLogger("espd")
        self.saved = (log.level, log.propagate, followup_ke.secrets)
        log.addHandler(ERRORS)
        log.setLevel(logging.WARNING)
        log.propagate = False
        links = itertools.count()  # 8 bytes each
        followup_ke.secrets = types.SimpleNamespace(
            token_bytes=lambda n: next(links).to_bytes(n, "big"))

    def restore(self) -> None:
        log = logging.getLogger("espd")
        log.removeHandler(ERRORS)
        log.level, log.propagate, followup_ke.secrets = self.saved


def settings() -> IkeSettings:
    key = bytearray(b"fuzz-exchanges-psk-0123456789")
    peer = Peer(A, PresharedKey(key, bytearray(key)), port=500)
    tunnel = policy(B, (A,), "10.2.0.0/16", "10.1.0.0/16")
    pfs = policy(B, (A,), "10.4.0.0/16", "10.3.0.0/16", seq=20, pfs=19,
                 transforms=(("esp-aes 256 esp-sha256-hmac", "transport"),))
    hybrid = policy(B, (A,), "10.6.0.0/16", "10.5.0.0/16", seq=30, pfs=31,
                    pfs_additional=(36,))
    return IkeSettings(peers=(peer,), children=(tunnel, pfs, hybrid),
                       proposals=(GCM_X25519,), port=500, nat_port=4500,
                       retransmit_timeout=0.05, retransmit_tries=2)


SETTINGS = settings()


class Victim:
    """A fresh engine with the established IKE SA (responder side) and its Child SA."""

    def __init__(self) -> None:
        self.harness = Harness()
        try:
            self._establish()
        except BaseException:
            self.harness.restore()
            raise

    def _establish(self) -> None:
        self.owner = FakeOwner()
        self.transport = MemoryTransport()
        self.engine = IkeEngine(SETTINGS, self.owner, self.transport, LOOP,
                                child_sa_keys=ChildSaKeys)
        spis = itertools.count(NEW_SPIS)
        self.engine.new_child_spi = lambda: next(spis)  # deterministic replays
        chosen = proposals.ike_offer(SETTINGS.proposals, SPI_I)[0]
        suite = ike_sa_init.suite_of(chosen)
        sa = IkeSa(SPI_I, SPI_R, False, US, PEER, IkeState.ESTABLISHED, ident=1,
                   proposal=chosen, nonce_i=NONCE_I, nonce_r=NONCE_R)
        sa.keys = keymat.ike_keys(suite.prf, Secret(SKEYSEED), NONCE_I, NONCE_R, SPI_I, SPI_R,
                                  keymat.IkeLengths.of(suite.prf, suite.encr, suite.integ))
        ike_sa_init.install_keys(self.engine, sa, suite)
        sa.peer, sa.peer_id = SETTINGS.peers[0], "192.0.2.1"
        sa.fragmentation = True
        sa.responses.answered(1, (b"cached IKE_AUTH response",))
        sa.responses.last_request = hashlib.sha256(LAST_REQUEST).digest()
        self.engine.register(sa)
        self.sa = sa
        first = SETTINGS.children[0]
        child = ChildSa(first.key, CHILD_IN, spi_out=CHILD_OUT, mode="tunnel",
                        local_ts=first.local_ts, remote_ts=first.remote_ts,
                        initiated_by_us=False)
        chosen_esp = proposals.esp_offer(first, CHILD_OUT.to_bytes(4, "big"))[0]
        child_setup._settle(self.engine, sa, child, chosen_esp, first)
        child_setup.install(self.engine, sa, child, first, NONCE_I, NONCE_R,
                            we_initiated=False, shared=None, rekey_of=None)
        # the peer: the initiator's ciphers from the same keys
        self.peer_out, self.peer_in = keymat.ike_ciphers(sa.keys, suite.encr, suite.integ,
                                                         True)
        self.key_hex = [bytes(getattr(sa.keys, f.name)).hex() for f in fields(sa.keys)
                        if len(getattr(sa.keys, f.name)) >= 8]
        self.before = fingerprint(self)

    def close(self) -> None:
        try:
            self.engine.close()
        finally:
            self.harness.restore()

    # --- one record -----------------------------------------------------------------

    def datagrams(self, control: int, first: int, inner: bytes) -> tuple[int, list[bytes]]:
        exchange = EXCHANGES[control & 7]
        flags = HeaderFlags.INITIATOR | (HeaderFlags.RESPONSE if control & 8 else 0)
        expected = self.sa.responses.expected_id
        mid = (expected, self.sa.responses.last_id or 0, expected + 1,
               0xFFFFFFFF)[(control >> 4) & 3]
        spi_r = SPI_R
        if exchange == ExchangeType.IKE_SA_INIT:  # a new IKE SA from the peer: ID 0
            spi_r, mid = bytes(8), mid if (control >> 4) & 3 else 0
        header = codec.Header(codec.SpiPair(SPI_I, spi_r), exchange, mid, HeaderFlags(flags))
        if control & RAW or exchange == ExchangeType.IKE_SA_INIT:
            if HEADER_SIZE + len(inner) > 65535:
                inner = inner[:65535 - HEADER_SIZE]
            return mid, [encode_header(header, first, HEADER_SIZE + len(inner)) + inner]
        if control & FRAGMENTS and len(inner) >= 2:
            half = len(inner) // 2
            return mid, [_seal_fragment(header, first, 1, 2, inner[:half], self.peer_out),
                         _seal_fragment(header, PayloadType.NONE, 2, 2, inner[half:],
                                        self.peer_out)]
        plaintext = pad(inner, self.peer_out.block_size)
        size = GENERIC.size + self.peer_out.iv_size + len(plaintext) + self.peer_out.icv_size
        aad = encode_header(header, PayloadType.SK, HEADER_SIZE + size) + \
            GENERIC.pack(first, 0, size)
        return mid, [aad + self.peer_out.seal(aad, plaintext)]

    def deliver(self, control: int, first: int, inner: bytes) -> None:
        mid, datagrams = self.datagrams(control, first, inner)
        errors, sent = self.engine.counters["internal_errors"], len(self.transport.sent)
        for datagram in datagrams:
            self.engine.receive(datagram, US, PEER)
        if self.engine.counters["internal_errors"] != errors:
            raise OracleViolation("internal error in the engine:\n" +
                                  "\n".join(ERRORS.internal[-1:]))
        self.check_sent(self.transport.sent[sent:], mid, control)
        if control & RAW and self.sa.state != IkeState.DELETED:
            if fingerprint(self) != self.before:
                raise OracleViolation("an unauthenticated message changed the IKE SA")
        self.before = fingerprint(self)
        self.check_consistent()

    # --- the oracle -----------------------------------------------------------------

    def check_sent(self, sent: list[bytes], mid: int, control: int) -> None:
        for datagram in sent:
            if datagram == b"cached IKE_AUTH response":
                continue
            try:
                message = codec.decode_message(datagram)
            except codec.ParseError as err:
                raise OracleViolation(f"the engine sent an undecodable message: {err}") \
                    from None
            header = message.header
            if header.spis.initiator != SPI_I or header.spis.responder != SPI_R:
                continue  # another IKE SA (a half-open one, a rekeyed one): other keys
            if isinstance(message.payloads[-1] if message.payloads else None,
                          codec.EncryptedFragment):
                continue  # (fragments are checked by the codec's own target)
            try:
                opened = codec.decrypt_message(datagram, self.peer_in)
            except Exception as err:  # noqa: BLE001 - any failure is the finding
                raise OracleViolation(f"the peer cannot open what the engine sent: "
                                      f"{err!r}") from None
            if opened.header.is_response and not control & RAW and \
                    opened.header.message_id != mid:
                raise OracleViolation(f"response with message ID "
                                      f"{opened.header.message_id} to request {mid}")
        check_logs(self.key_hex)

    def check_consistent(self) -> None:
        check_consistent(self.engine, self.owner)


def check_consistent(engine: IkeEngine, owner: FakeOwner) -> None:
    """The engine's Child SA index, its IKE SAs' Child SAs and the owner agree."""
    by_sa = {spi: (sa, child) for sa in engine.sas.values()
             for spi, child in sa.children.items()}
    if set(by_sa) != set(engine.children):
        raise OracleViolation(f"engine.children {sorted(engine.children)} != the IKE "
                              f"SAs' Child SAs {sorted(by_sa)}")
    for spi, (sa, child) in engine.children.items():
        if by_sa[spi][1] is not child or by_sa[spi][0] is not sa:
            raise OracleViolation(f"Child SA {spi:08x} indexed under another IKE SA")
    live = {i.handle for i in owner.live()}
    held = {child.handle for _sa, child in engine.children.values()
            if child.handle is not None}
    if not held <= live:
        raise OracleViolation("a Child SA holds a handle the owner retired")
    for sa in engine.sas.values():
        installed = [c for c in sa.children.values()
                     if c.state in (ChildState.INSTALLED, ChildState.REKEYING)]
        if any(c.handle is None for c in installed):
            raise OracleViolation("an installed Child SA the owner does not hold")
        outbound = [c.spi_out for c in sa.children.values()
                    if c.state != ChildState.DELETED and c.spi_out]
        if len(outbound) != len(set(outbound)):
            raise OracleViolation(f"two Child SAs of {sa} send with one SPI: "
                                  f"{sorted(outbound)}")


def check_logs(key_hex: list[str]) -> None:
    """No log line since the last check holds one of ``key_hex``; forget them."""
    for line in ERRORS.lines:
        if any(k in line for k in key_hex):
            raise OracleViolation("key material in a log line")
    ERRORS.lines.clear()


def fingerprint(victim: Victim) -> tuple:
    sa = victim.sa
    keys = tuple(bytes(getattr(sa.keys, f.name)) for f in fields(sa.keys)) \
        if sa.keys is not None else None
    return (sa.state, keys, sa.requests.next_id, sa.responses.expected_id,
            sa.responses.last_id, tuple(sorted((c.spi_in, c.spi_out, c.state.value)
                                               for c in sa.children.values())),
            tuple(i.handle for i in victim.owner.live()), sa.remote, sa.local)


def respond_off_by_one(respond):
    """A planted bug for the oracle's tests: IkeEngine.respond answering with the
    request's message ID + 1."""
    def off_by_one(self, sa, request, payloads, local, remote):
        header = codec.Header(request.header.spis, request.header.exchange,
                              request.header.message_id + 1, request.header.flags)
        respond(self, sa, codec.Message(header, request.payloads), payloads, local, remote)
    return off_by_one


def records(data: bytes):
    """The (control, first payload type, inner chain) records of one input."""
    offset = 0
    for _ in range(MAX_RECORDS):
        if offset + RECORD.size > len(data):
            return
        control, first, length = RECORD.unpack_from(data, offset)
        offset += RECORD.size
        yield control, first, data[offset:offset + length]
        offset += length


def record(control: int, first: int, inner: bytes) -> bytes:
    return RECORD.pack(control, first, len(inner)) + inner


def run_one(data: bytes) -> None:
    victim = Victim()
    try:
        for control, first, inner in records(data):
            victim.deliver(control, first, inner)
    finally:
        victim.close()
        forget_input()


def forget_input() -> None:
    """What one input leaves behind: log lines, and its engine's timers (the loop never
    runs, so they would pile up)."""
    ERRORS.lines.clear()
    ERRORS.internal.clear()
    for handle in LOOP._scheduled:  # type: ignore[attr-defined]
        handle.cancel()
    LOOP._scheduled.clear()  # type: ignore[attr-defined]
    LOOP._ready.clear()  # type: ignore[attr-defined]


__all__ = ["CHILD_IN", "CHILD_OUT", "EXCHANGES", "FRAGMENTS", "LAST_REQUEST", "RAW",
           "SETTINGS", "OracleViolation", "Victim", "record", "records", "replace", "run_one"]
