"""Seeds for the exchanges fuzz target (tests/fuzz/corpus/exchanges): records (see
exchange_victim.py) whose inner chains are espd's own CREATE_CHILD_SA, INFORMATIONAL and
IKE_FOLLOWUP_KE requests for the victim's SA (new Child SAs for each crypto map entry,
with and without PFS, a Child SA rekey naming the victim's SPI, an IKE SA rekey, DELETEs,
DPD), retransmissions and fragments of them (the SPIs they offer lie next to the
victim's, one mutation from a collision), and the inner chains of charon 5.9.8's
IKE_AUTH, CREATE_CHILD_SA and INFORMATIONAL messages in corpus/ike (the ``-null-sk``
seeds: captured in ../shared/ikev2, opened with the run's keys). Run from the root:
    PYTHONPATH=daemon:tests/fuzz .venv/bin/python tests/fuzz/make_exchange_seeds.py
"""

from __future__ import annotations

from pathlib import Path

from exchange_victim import CHILD_OUT, FRAGMENTS, RAW, SETTINGS, record

from espd.ike import codec, proposals
from espd.ike.codec import ExchangeType, NotifyType, ProtocolId
from espd.ike.codec.encrypted import Encrypted, unpad
from espd.ike.crypto import suites
from espd.ike.exchanges.payloads import sa_payload, to_wire_selectors

HERE = Path(__file__).resolve().parent
OUT = HERE / "corpus" / "exchanges"
CCSA, INFO, AUTH, FOLLOWUP = 0, 1, 2, 3
NEXT, LAST = 0x00, 0x10  # message ID choices of the control byte


def chain(payloads: list) -> tuple[int, bytes]:
    return codec.encode_chain(payloads)


def child_request(entry: int, spi: int, *, rekey: int | None = None) -> list:
    """What an initiator sends for crypto map entry ``entry`` of the victim (mirrored)."""
    policy = SETTINGS.children[entry]
    group = policy.pfs
    offer = proposals.esp_offer(policy, spi.to_bytes(4, "big"), group, policy.pfs_additional)
    payloads: list = []
    if rekey is not None:
        payloads.append(codec.Notify(NotifyType.REKEY_SA, b"", ProtocolId.ESP,
                                     rekey.to_bytes(4, "big")))
    payloads += [sa_payload(offer), codec.Nonce(b"\x33" * 32)]
    if group:
        payloads.append(codec.KeyExchange(group, suites.group(group).generate().public_bytes))
    payloads += [codec.TsInitiator(to_wire_selectors(policy.remote_ts)),
                 codec.TsResponder(to_wire_selectors(policy.local_ts))]
    if policy.transforms[0][1] == "transport":
        payloads.append(codec.Notify(NotifyType.USE_TRANSPORT_MODE))
    return payloads


def ike_rekey() -> list:
    offer = proposals.ike_offer(SETTINGS.proposals, b"\x44" * 8)
    return [sa_payload(offer), codec.Nonce(b"\x55" * 32),
            codec.KeyExchange(31, suites.group(31).generate().public_bytes)]


def own() -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}
    for entry in range(len(SETTINGS.children)):
        first, inner = chain(child_request(entry, CHILD_OUT + 1 + entry))
        seeds[f"ccsa-new-{entry}"] = record(CCSA, first, inner)
        seeds[f"ccsa-new-{entry}-fragments"] = record(CCSA | FRAGMENTS, first, inner)
    first, inner = chain(child_request(0, CHILD_OUT + 8, rekey=CHILD_OUT))
    rekey = record(CCSA, first, inner)
    seeds["ccsa-rekey"] = rekey
    seeds["ccsa-rekey-retransmitted"] = rekey + record(CCSA | LAST, first, inner)
    first, inner = chain(ike_rekey())
    seeds["ccsa-ike-rekey"] = record(CCSA, first, inner)
    for name, payloads in {
        "info-dpd": [],
        "info-delete-child": [codec.Delete(ProtocolId.ESP, (CHILD_OUT.to_bytes(4, "big"),))],
        "info-delete-ike": [codec.Delete(ProtocolId.IKE)],
        "info-auth-failed": [codec.Notify(NotifyType.AUTHENTICATION_FAILED)],
    }.items():
        first, inner = chain(payloads)
        seeds[name] = record(INFO, first, inner)
    first, inner = chain([codec.Delete(ProtocolId.ESP, (CHILD_OUT.to_bytes(4, "big"),))])
    seeds["info-delete-raw"] = record(INFO | RAW, first, inner)
    # a hybrid Child SA (entry 2: x25519 + ML-KEM-768), then its IKE_FOLLOWUP_KE
    first, inner = chain(child_request(2, CHILD_OUT + 9))
    link = codec.Notify(NotifyType.ADDITIONAL_KEY_EXCHANGE, b"\x00" * 8)
    ke = codec.KeyExchange(36, suites.group(36).generate().public_bytes)
    f2, inner2 = chain([link, ke])
    seeds["ccsa-hybrid-then-followup"] = record(CCSA, first, inner) + \
        record(FOLLOWUP, f2, inner2)
    # a rekey, then the DELETE of the old Child SA, as espd's initiator does it
    first, inner = chain(child_request(0, CHILD_OUT + 10, rekey=CHILD_OUT))
    fd, innerd = chain([codec.Delete(ProtocolId.ESP, (CHILD_OUT.to_bytes(4, "big"),))])
    seeds["ccsa-rekey-then-delete"] = record(CCSA, first, inner) + record(INFO, fd, innerd)
    return seeds


def captured() -> dict[str, bytes]:
    """charon's inner chains (requests and responses) from corpus/ike's null-sk seeds."""
    seeds: dict[str, bytes] = {}
    kinds = {ExchangeType.CREATE_CHILD_SA: CCSA, ExchangeType.INFORMATIONAL: INFO,
             ExchangeType.IKE_AUTH: AUTH}
    for path in sorted((HERE / "corpus" / "ike").glob("*-null-sk.bin")):
        message = codec.decode_message(path.read_bytes())
        sk = message.payloads[-1]
        if not isinstance(sk, Encrypted) or message.header.exchange not in kinds:
            continue
        control = kinds[message.header.exchange] | (0x08 if message.header.is_response
                                                    else 0)
        seeds[f"charon-{path.stem}"] = record(control, sk.first_payload, unpad(sk.body))
    return seeds


def write(out: Path, seeds: dict[str, bytes]) -> None:
    """``out`` holds exactly ``seeds`` afterwards (name -> input)."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    for name, data in seeds.items():
        (out / name).write_bytes(data)
    print(f"{len(seeds)} seeds in {out}")


def main() -> None:
    write(OUT, {**own(), **captured()})


if __name__ == "__main__":
    main()
