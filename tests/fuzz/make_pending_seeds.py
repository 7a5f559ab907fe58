"""Seeds for the pending fuzz target (tests/fuzz/corpus/pending): for each victim of
pending_victim.py, the message espd itself sends next in that exchange (taken from a
deterministic run of two espd engines, opened with the run's keys), so the fuzzer
starts on the success paths: the initiator's IKE_AUTH (and IKE_INTERMEDIATE) to the
half-open responder, the responder's IKE_SA_INIT, IKE_INTERMEDIATE and IKE_AUTH
responses, its CREATE_CHILD_SA answers to a new Child SA (each crypto map entry, the
hybrid one with its IKE_FOLLOWUP_KE), a Child SA rekey and an IKE SA rekey, and its
INFORMATIONAL answers; the responder's own Child SA rekey, IKE SA rekey or DELETE
crossing the initiator's (collisions, RFC 7296 2.8.1); with an RFC 8784 PPK, IKE_AUTH
with and without PPK_IDENTITY (and NO_PPK_AUTH), with another PPK_ID; then the
refusals an initiator must handle (COOKIE,
INVALID_KE_PAYLOAD, NO_PROPOSAL_CHOSEN, AUTHENTICATION_FAILED, TS_UNACCEPTABLE, wider
traffic selectors,
TEMPORARY_FAILURE, CHILD_SA_NOT_FOUND) and the inner chains of charon 5.9.8's messages
in corpus/ike (captured in ../shared/ikev2: IKE_SA_INIT responses as they are, the
``-null-sk`` SK chains to the victim awaiting that exchange). Run from the root:
    PYTHONPATH=daemon:tests/fuzz .venv/bin/python tests/fuzz/make_pending_seeds.py
"""

from __future__ import annotations

from pathlib import Path

from exchange_victim import FRAGMENTS, forget_input
from make_exchange_seeds import write
from pending_victim import (
    AUTH_FIX,
    KINDS,
    OTHER_WAY,
    VICTIMS,
    Determinism,
    Pair,
    _start,
)

from espd.ike import codec
from espd.ike.codec import ExchangeType, NotifyType, ProtocolId
from espd.ike.codec.encrypted import Encrypted, unpad
from espd.ike.exchanges import create_child_sa, informational
from espd.ike.exchanges.payloads import to_wire_selectors
from espd.policy.selectors import TrafficSelector

HERE = Path(__file__).resolve().parent
OUT = HERE / "corpus" / "pending"
CCSA, INFO, AUTH, FOLLOWUP, INTERMEDIATE, INIT = 0, 1, 2, 3, 4, 5
CODE = {ExchangeType.CREATE_CHILD_SA: CCSA, ExchangeType.INFORMATIONAL: INFO,
        ExchangeType.IKE_AUTH: AUTH, ExchangeType.IKE_FOLLOWUP_KE: FOLLOWUP,
        ExchangeType.IKE_INTERMEDIATE: INTERMEDIATE, ExchangeType.IKE_SA_INIT: INIT}


def rec(control: int, payloads, options: int = 0) -> bytes:
    from pending_victim import record

    first, inner = codec.encode_chain(list(payloads))
    return record(control, first, inner, options)


def seed(kind: str, *records: bytes) -> bytes:
    return bytes([KINDS[kind]]) + b"".join(records)


class Opened:
    """codec.decrypt_message as the engines call it, keeping what each datagram opened
    to (the keys of the moment: IKE_INTERMEDIATE replaces them)."""

    def __init__(self) -> None:
        self.real, self.seen = codec.decrypt_message, {}

    def __call__(self, data, cipher, outer=None):
        message = self.real(data, cipher, outer)
        self.seen[bytes(data)] = message
        return message

    def payloads(self, datagram: bytes) -> tuple[int, tuple] | None:
        """(exchange code, payloads) of one of the run's messages; None for one its
        receiver never opened (dropped: for an IKE SA already gone)."""
        message = codec.decode_message(datagram)
        if isinstance(message.payloads[-1] if message.payloads else None, Encrypted):
            message = self.seen.get(datagram)
            if message is None:
                return None
        return CODE[message.header.exchange], message.payloads


def run(tag: str, start=None, peer=None):
    """A deterministic pair up to IKE_AUTH (and what the initiator then starts, with
    ``peer(pair)`` started by the responder at the same time, so the two cross): the
    (initiator's, responder's) messages, each opened by the side that received it."""
    det, opened = Determinism(), Opened()
    codec.decrypt_message = opened
    try:
        pair = Pair(tag)
        pair.i.call(pair.i.engine.initiate, pair.i.engine.settings.children[0])
        pair.pump()
        mark = len(pair.log)
        if start is not None:
            sa = pair.i.sa
            _start(pair.i, sa, start)
            if peer is not None:
                pair.r.call(peer, pair)
            pair.pump()
        out = [(n >= mark, who, *opened.payloads(datagram),
                not codec.decode_message(datagram).header.is_response)
               for n, (who, datagram) in enumerate(pair.log)
               if opened.payloads(datagram) is not None]
        pair.close()
        return out
    finally:
        codec.decrypt_message = opened.real
        det.restore()
        forget_input()


def own() -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}
    n = NotifyType
    for run_tag in ("classic", "hybrid", "ppk"):
        log = run(run_tag)
        tag = "" if run_tag == "classic" else f"-{run_tag}"
        requests = [(c, p) for _late, who, c, p, _r in log if who == "initiator"]
        responses = [(c, p) for _late, who, c, p, _r in log if who == "responder"]
        # to the half-open responder: what the initiator sent after IKE_SA_INIT
        after = [rec(c, p, AUTH_FIX if c == AUTH else 0) for c, p in requests[1:]]
        seeds[f"r-half-open{tag}-espd"] = seed(f"responder-half-open{tag}", *after)
        if run_tag == "ppk":  # the initiator of this run has no such victim
            seeds["i-auth-sent-ppk-espd"] = seed("initiator-auth-sent-ppk",
                                                 *[rec(c, p, AUTH_FIX)
                                                   for c, p in responses[1:]])
            continue
        # to the initiator: the responder's answers, one victim per step
        answers = [rec(c, p, AUTH_FIX if c == AUTH else 0) for c, p in responses]
        seeds[f"i-init-sent{tag}-espd"] = seed(f"initiator-init-sent{tag}", *answers[:4])
        step = "intermediate-sent" if run_tag == "hybrid" else "auth-sent"
        seeds[f"i-{step}-espd"] = seed(f"initiator-{step}", *answers[1:])
    auth_req = [p for _l, who, c, p, _r in run("classic") if who == "initiator" and c == AUTH][0]
    ids = [p for p in auth_req if isinstance(p, codec.IdInitiator)]
    rest = [p for p in auth_req if not isinstance(p, (codec.IdInitiator,
                                                       codec.Authentication))]
    fqdn = codec.IdInitiator(codec.IdType.FQDN, b"peer.example")
    seeds["r-half-open-fqdn-id"] = seed("responder-half-open",
                                        rec(AUTH, [fqdn, *rest], AUTH_FIX))
    seeds["r-half-open-no-auth"] = seed("responder-half-open", rec(AUTH, [*ids, *rest]))
    seeds["r-half-open-fragments"] = seed("responder-half-open",
                                          rec(AUTH | FRAGMENTS, auth_req, AUTH_FIX))
    seeds["r-half-open-empty-intermediate"] = seed("responder-half-open",
                                                   rec(INTERMEDIATE, []))
    seeds["r-half-open-hybrid-auth-first"] = seed("responder-half-open-hybrid",
                                                  rec(AUTH, auth_req, AUTH_FIX))
    # refusals the initiator must handle
    note = codec.Notify
    seeds["i-init-cookie"] = seed("initiator-init-sent", rec(INIT, [note(n.COOKIE, b"c" * 16)]))
    seeds["i-init-invalid-ke"] = seed("initiator-init-sent",
                                      rec(INIT, [note(n.INVALID_KE_PAYLOAD, b"\x00\x13")]))
    seeds["i-init-no-proposal"] = seed("initiator-init-sent",
                                       rec(INIT, [note(n.NO_PROPOSAL_CHOSEN)]))
    auth_resp = [p for _l, who, c, p, _r in run("classic") if who == "responder" and c == AUTH][0]
    idr = [p for p in auth_resp if isinstance(p, (codec.IdResponder, codec.Authentication))]
    seeds["i-auth-failed"] = seed("initiator-auth-sent",
                                  rec(AUTH, [note(n.AUTHENTICATION_FAILED)]))
    anything = to_wire_selectors((TrafficSelector.from_network("0.0.0.0/0"),))
    wider = [codec.TsInitiator(anything) if isinstance(p, codec.TsInitiator) else
             codec.TsResponder(anything) if isinstance(p, codec.TsResponder) else p
             for p in auth_resp]
    seeds["i-auth-wider-ts"] = seed("initiator-auth-sent", rec(AUTH, wider, AUTH_FIX))
    for kind in (n.TS_UNACCEPTABLE, n.NO_PROPOSAL_CHOSEN):
        seeds[f"i-auth-child-{kind.name.lower()}"] = seed(
            "initiator-auth-sent", rec(AUTH, [*idr, note(kind)], AUTH_FIX))
    # the established initiator's own exchanges, and the refusals of them
    for victim in VICTIMS:
        if not victim.start:
            continue
        name = victim.name.removeprefix("initiator-").removesuffix("-sent")
        log = run("classic", victim)
        answers = [rec(c, p) for late, who, c, p, _r in log if late and who == "responder"]
        seeds[f"i-{name}-espd"] = seed(victim.name, *answers)
        code = INFO if victim.start == "info" else CCSA
        if code == CCSA:
            refusals = [n.TEMPORARY_FAILURE, n.NO_PROPOSAL_CHOSEN, n.TS_UNACCEPTABLE]
            refusals += [n.CHILD_SA_NOT_FOUND] if victim.start == "rekey" else []
            for kind in refusals:
                seeds[f"i-{name}-{kind.name.lower()}"] = seed(victim.name,
                                                              rec(code, [note(kind)]))
            seeds[f"i-{name}-invalid-ke"] = seed(victim.name, rec(
                code, [note(n.INVALID_KE_PAYLOAD, b"\x00\x1f")]))
    # RFC 8784: the PPK initiator's IKE_AUTH without its PPK_IDENTITY (NO_PPK_AUTH stands
    # in), with another PPK_ID, and the responder's answer without PPK_IDENTITY
    ppk_req = [p for _l, who, c, p, _r in run("ppk") if who == "initiator" and c == AUTH][0]
    ppk_resp = [p for _l, who, c, p, _r in run("ppk") if who == "responder" and c == AUTH][0]
    no_id = [p for p in ppk_req if not (isinstance(p, codec.Notify) and
                                        p.type == n.PPK_IDENTITY)]
    other = [note(n.PPK_IDENTITY, b"\x02other-ppk") if isinstance(p, codec.Notify) and
             p.type == n.PPK_IDENTITY else p for p in ppk_req]
    seeds["r-half-open-ppk-no-ppk-id"] = seed("responder-half-open-ppk",
                                              rec(AUTH, no_id, AUTH_FIX))
    seeds["r-half-open-ppk-other-id"] = seed("responder-half-open-ppk",
                                             rec(AUTH, other, AUTH_FIX))
    unused = [p for p in ppk_resp if not (isinstance(p, codec.Notify) and
                                          p.type == n.PPK_IDENTITY)]
    seeds["i-auth-sent-ppk-unused"] = seed("initiator-auth-sent-ppk",
                                           rec(AUTH, unused, AUTH_FIX))
    # the responder's own request crossing the initiator's (RFC 7296 2.8.1 collisions)
    r_child = lambda pair: next(iter(pair.r.sa.children.values()))  # noqa: E731
    crossings = {
        "i-child-rekey-collision": ("initiator-child-rekey-sent", lambda pair:
                                    create_child_sa.start_rekey(pair.r.engine, pair.r.sa,
                                                                r_child(pair))),
        "i-ike-rekey-collision": ("initiator-ike-rekey-sent", lambda pair:
                                  create_child_sa.start_ike_rekey(pair.r.engine, pair.r.sa)),
        "i-child-rekey-peer-deletes": ("initiator-child-rekey-sent", lambda pair:
                                       informational.start_delete_child(
                                           pair.r.engine, pair.r.sa, r_child(pair), "fuzz")),
        "i-delete-ike-peer-deletes": ("initiator-delete-ike-sent", lambda pair:
                                      informational.start_delete_ike(pair.r.engine,
                                                                     pair.r.sa, "fuzz")),
    }
    for name, (victim, peer) in crossings.items():
        log = run("classic", VICTIMS[KINDS[victim]], peer)
        seeds[name] = seed(victim, *[rec(c | (OTHER_WAY if request else 0), p)
                                     for late, who, c, p, request in log
                                     if late and who == "responder"])
    seeds["i-delete-child-other-spi"] = seed("initiator-delete-child-sent", rec(
        INFO, [codec.Delete(ProtocolId.ESP, (b"\x00\x00\xf0\x00",))]))
    return seeds


def captured() -> dict[str, bytes]:
    """charon's messages from corpus/ike, each to the victim awaiting that exchange."""
    seeds: dict[str, bytes] = {}
    to = {(ExchangeType.IKE_SA_INIT, True): "initiator-init-sent",
          (ExchangeType.IKE_AUTH, True): "initiator-auth-sent",
          (ExchangeType.IKE_AUTH, False): "responder-half-open",
          (ExchangeType.CREATE_CHILD_SA, True): "initiator-child-sent",
          (ExchangeType.INFORMATIONAL, True): "initiator-dpd-sent"}
    for path in sorted((HERE / "corpus" / "ike").glob("*.bin")):
        message = codec.decode_message(path.read_bytes())
        header = message.header
        victim = to.get((header.exchange, header.is_response))
        if victim is None:
            continue
        if header.exchange == ExchangeType.IKE_SA_INIT:
            first, inner = codec.encode_chain(list(message.payloads))
        elif path.stem.endswith("-null-sk"):
            sk = message.payloads[-1]
            first, inner = sk.first_payload, unpad(sk.body)
        else:
            continue
        from pending_victim import record

        options = AUTH_FIX if header.exchange == ExchangeType.IKE_AUTH else 0
        seeds[f"charon-{path.stem}"] = seed(victim, record(CODE[header.exchange], first,
                                                           inner, options))
    return seeds


def main() -> None:
    write(OUT, {**own(), **captured()})


if __name__ == "__main__":
    main()
