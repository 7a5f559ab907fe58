"""A message forger for hostile-exchange tests: speaks as the peer of an established IKE SA.

    pair = await established(loop)     # a (initiator) and b (victim) from support.ike_pair
    f = Forger(pair)                   # a stops listening; b's sends are captured, not sent
    replies = f.send(f.request(ExchangeType.INFORMATIONAL, [codec.Delete(...)]))
    f.open(replies[0])                 # b's answer, decrypted with the SA's real keys

Messages are real IKE: the header and outer chain from espd's codec, SK sealed with the
initiator's real SK_e/SK_a (``a``'s outbound cipher) so b's ICV check passes, or inner
chains given as raw bytes (``sealed_raw``) for lengths and links the codec would never
write. ``fingerprint`` is everything of b's established SA that a hostile message must
not change: keys, both message ID windows, the cached response, Child SAs and what the
owner holds.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, fields

from espd.ike import codec
from espd.ike.codec import ExchangeType, PayloadType
from espd.ike.codec.encrypted import pad
from espd.ike.codec.header import HEADER_SIZE, encode_header
from espd.ike.sa.ike_sa import Endpoint, IkeSa, IkeState
from support.ike_pair import Side, pair, until

GENERIC = struct.Struct("!BBH")


@dataclass
class Pair:
    a: Side
    b: Side
    sa_a: IkeSa  # the initiator's (the forger's) IKE SA
    sa_b: IkeSa  # the victim's

    def close(self) -> None:
        self.a.engine.close()
        self.b.engine.close()


async def established(loop: asyncio.AbstractEventLoop, a_settings=None, b_settings=None
                      ) -> Pair:
    """a initiates towards b; returns once both hold the first Child SA."""
    a, b = pair(loop, a_settings, b_settings)
    sa_a = a.engine.initiate(a.settings.children[0])
    await until(lambda: a.owner.live() and b.owner.live())
    [sa_b] = [s for s in b.engine.sas.values() if s.state == IkeState.ESTABLISHED]
    return Pair(a, b, sa_a, sa_b)


def raw_payload(kind_next: int, body: bytes, *, critical: bool = False,
                length: int | None = None) -> bytes:
    """One payload with its generic header as given: ``length`` may lie."""
    size = GENERIC.size + len(body) if length is None else length
    return GENERIC.pack(kind_next, 0x80 if critical else 0, size) + body


class Forger:
    """Crafts requests on the IKE SA ``pair.sa_a`` and hands them to b's engine."""

    def __init__(self, p: Pair) -> None:
        self.p = p
        self.sa = p.sa_a
        # keep copies of the forger's ciphers: a's engine may rekey or wipe its own SA
        self.sk_out, self.sk_in = p.sa_a.sk_out, p.sa_a.sk_in
        self.spis = codec.SpiPair(p.sa_a.spi_i, p.sa_a.spi_r)
        self.next_id = p.sa_b.responses.expected_id
        self.local = Endpoint(p.sa_b.local.address, p.sa_b.local.port)  # b's
        self.remote = Endpoint(p.sa_b.remote.address, p.sa_b.remote.port)  # a's, as b sees
        self.sent: list[bytes] = []  # what b sent since the forger took over
        p.a.transport.receiver = lambda *_: None  # a hears nothing more
        p.b.transport.send = self._capture  # type: ignore[method-assign]

    def _capture(self, local, remote, data: bytes) -> None:
        self.sent.append(bytes(data))

    # --- building -------------------------------------------------------------------

    def header(self, exchange: int, message_id: int | None = None, *,
               response: bool = False, spis: codec.SpiPair | None = None) -> codec.Header:
        mid = self.next_id if message_id is None else message_id
        header = codec.request_header(spis or self.spis, exchange, mid,
                                      original_initiator=True)
        if response:
            header = codec.Header(header.spis, exchange, mid,
                                  header.flags | codec.HeaderFlags.RESPONSE)
        return header

    def request(self, exchange: int, payloads: list, message_id: int | None = None, *,
                response: bool = False, spis: codec.SpiPair | None = None,
                cipher=None) -> bytes:
        """A request (or, ``response``, a message with R set) sealed with the real keys."""
        return codec.encrypt_message(self.header(exchange, message_id, response=response,
                                                 spis=spis), payloads, cipher or self.sk_out)

    def sealed_raw(self, exchange: int, first: int, inner: bytes,
                   message_id: int | None = None) -> bytes:
        """SK around an inner chain given as bytes (its generic headers as written): a
        valid ICV over whatever the chain says."""
        header = self.header(exchange, message_id)
        cipher = self.sk_out
        plaintext = pad(inner, cipher.block_size)
        sk_size = GENERIC.size + cipher.iv_size + len(plaintext) + cipher.icv_size
        aad = encode_header(header, PayloadType.SK, HEADER_SIZE + sk_size) + \
            GENERIC.pack(first, 0, sk_size)
        return aad + cipher.seal(aad, plaintext)

    def take_id(self) -> int:
        """Use the next message ID (after a request b answered)."""
        mid, self.next_id = self.next_id, self.next_id + 1
        return mid

    # --- delivering -----------------------------------------------------------------

    def send(self, data: bytes) -> list[bytes]:
        """Hand ``data`` to b's engine as from a; what b sent because of it."""
        before = len(self.sent)
        self.p.b.engine.receive(data, self.local, self.remote)
        return self.sent[before:]

    def open(self, datagram: bytes) -> codec.Message:
        return codec.decrypt_message(datagram, self.sk_in)


def fingerprint(side: Side, sa: IkeSa) -> tuple:
    """What a hostile message must leave unchanged on the victim's established IKE SA."""
    keys = tuple(bytes(getattr(sa.keys, f.name)) for f in fields(sa.keys)) \
        if sa.keys is not None else None
    out = sa.requests.outstanding
    children = tuple(sorted((c.spi_in, c.spi_out, c.state.value, c.handle, c.rekeyed_by is None)
                            for c in sa.children.values()))
    return (sa.state, sa.spis, keys, sa.sk_in is not None, sa.sk_out is not None,
            sa.requests.next_id, out.message_id if out else None,
            sa.responses.expected_id, sa.responses.last_id, sa.responses.last_response,
            children, tuple(sorted(side.engine.children)),
            tuple(i.handle for i in side.owner.live()), len(side.owner.installed),
            tuple(side.owner.retired), sa.local, sa.remote, sa.peer_id,
            side.engine.sas.get(sa.local_spi) is sa)


__all__ = ["Forger", "Pair", "established", "fingerprint", "raw_payload", "until",
           "ExchangeType"]
