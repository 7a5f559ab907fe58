"""espd's IKE key derivation against live strongSwan charons, for the suites the captured
run does not cover: two charons negotiate in namespaces with key dumps on (``ike 4``),
and every key the initiator printed is derived again by espd.ike.crypto from the inputs
charon printed (or that its messages carry) and compared.

  [gwA 192.0.2.1 charon] ==IKE + ESP in UDP== [charon 192.0.2.2 gwB]

Suites: AES-GCM-256/PRF-SHA384/ECP-384 with an ECP-256 PFS Child rekey (5.9.8);
ChaCha20-Poly1305/PRF-SHA512/MODP-3072 with AES-CBC+HMAC-SHA384 Child SAs and a MODP-2048
PFS rekey (5.9.8); X25519 + ML-KEM-768 (RFC 9370: IKE_INTERMEDIATE, then IKE_FOLLOWUP_KE in
the Child SA and IKE SA rekeys) with 6.0.6.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass

import pytest
from support.ike_capture import HEADER, charon_dumps, payload_chain
from support.strongswan import DEBIAN, STRONGSWAN6, Peer, site_to_site

from espd.config.transforms import parse_transform
from espd.ike.auth import PskAuthenticator, int_auth, int_auth_trailer, signed_octets
from espd.ike.crypto.keymat import (
    additional_skeyseed,
    child_keys,
    ike_keys,
    initial_skeyseed,
    ppk_keys,
    rekey_skeyseed,
)
from espd.ike.crypto.suites import parse_suite

pytestmark = pytest.mark.netns
NONCE = 40


@dataclass(frozen=True)
class Case:
    peer: Peer
    ike: str  # charon's proposal, which is espd's suite name too
    esp: str  # charon's ESP proposal (with the PFS group)
    transform: str  # the same ESP transform in espd's words
    rekey_ike: bool = False


CASES = {
    "gcm256-prf384-ecp384-pfs-ecp256": Case(DEBIAN, "aes256gcm16-prfsha384-ecp384",
                                             "aes256gcm16-ecp256", "esp-gcm 256"),
    "chacha-prf512-modp3072-cbc-pfs-modp2048": Case(
        DEBIAN, "chacha20poly1305-prfsha512-modp3072", "aes256-sha384-modp2048",
        "esp-aes 256 esp-sha384-hmac"),
    "x25519-mlkem768-followup-rekeys": Case(
        STRONGSWAN6, "aes256gcm16-prfsha384-x25519-ke1_mlkem768",
        "aes256gcm16-x25519-ke1_mlkem768", "esp-gcm 256", rekey_ike=True),
}


class Dumps:
    """The initiator's key dumps, consumed in log order."""

    def __init__(self, log: str) -> None:
        self.items = charon_dumps(log)
        self.at = 0

    def next(self, name: str) -> bytes:
        for i in range(self.at, len(self.items)):
            if self.items[i][0] == name:
                self.at = i + 1
                return self.items[i][1]
        raise AssertionError(f"no further '{name}' dump in the charon log")

    def peek(self, *names: str) -> str | None:
        """Which of `names` comes next, if any."""
        for dump, _ in self.items[self.at:]:
            if dump in names:
                return dump
        return None


def _run(make_topology, make_charon, case: Case) -> tuple[str, dict]:
    """Two charons, gwA initiating with key dumps on: IKE SA, Child SA rekey (and IKE SA
    rekey); returns gwA's log, the PSK and gwA's IKE SAs at the end."""
    topology = make_topology(ipv6=False)
    psk = secrets.token_hex(16)
    version = case.peer.version
    gwa = make_charon(topology.gw_a, "gwa", version, key_dump=True)
    gwb = make_charon(topology.gw_b, "gwb", version)
    for charon, side in ((gwa, "a"), (gwb, "b")):
        charon.load([site_to_site(side, psk, proposals=[case.ike], esp_proposals=[case.esp])])
    with gwa.events() as events:
        gwa.initiate("net")
        events.wait_up("child-updown")
        gwa.rekey(child="net")
        events.wait("child-rekey", timeout=10)
        if case.rekey_ike:
            gwa.rekey(ike="gw")
            events.wait("ike-rekey", timeout=10)
    sas = [entry["gw"] for entry in gwa.list_sas()]  # the rekeyed one may linger
    return gwa.log(), {"psk": psk.encode(), "sas": sas}


def _nonce(message: bytes) -> bytes:
    (body,) = [b for kind, b in payload_chain(message[16], message[HEADER:]) if kind == NONCE]
    return body


@pytest.mark.parametrize("name", list(CASES))
def test_every_key_charon_printed_is_derived_again(make_topology, make_charon, name):
    case = CASES[name]
    log, info = _run(make_topology, make_charon, case)
    suite, esp = parse_suite(case.ike), parse_transform(case.transform)
    prf, lengths, v6 = suite.prf, suite.lengths, case.peer.major >= 6
    dumps = Dumps(log)

    # -- what charon printed, in log order
    shared = dumps.next("key exchange secret" if v6 else "shared Diffie Hellman secret")
    assert len(shared) == {"x25519": 32, "ecp384": 48, "modp3072": 384}[suite.ke.name]
    nonces = dumps.next("nonces") if v6 else None
    skeyseed, sk = dumps.next("SKEYSEED"), _sk_dumps(dumps, suite)
    intermediate = None
    if suite.additional:  # IKE_INTERMEDIATE: IntAuth of each message, then new keys
        steps = [(dumps.next("IntAuth_N-1"), dumps.next("IntAuth_A|P"), dumps.next("SK_p"),
                  dumps.next("IntAuth_N = prf(Sk_px, data)")) for _ in ("request", "response")]
        secret = dumps.next("key exchange secret")
        dumps.next("nonces")
        intermediate = (steps, secret, dumps.next("SKEYSEED"), _sk_dumps(dumps, suite))
    octets_name = "octets = message + nonce + prf(Sk_px, IDx')" + (" + IntAuth" if v6 else "")
    id_i, octets_i = dumps.next("IDx'"), dumps.next(octets_name)
    auth_i = dumps.next("AUTH = prf(prf(secret, keypad), octets)")
    dumps.next("IDx'")
    octets_r = dumps.next(octets_name)

    # -- the inputs on the wire: IKE_SA_INIT messages are the head of the AUTH octets
    message1 = octets_i[:struct.unpack_from("!I", octets_i, 24)[0]]
    message2 = octets_r[:struct.unpack_from("!I", octets_r, 24)[0]]
    ni, nr = _nonce(message1), _nonce(message2)
    assert nonces is None or nonces == ni + nr
    spi_i, spi_r = message2[0:8], message2[8:16]

    # IKE_SA_INIT: SKEYSEED = prf(Ni | Nr, g^ir); SK_* = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)
    assert initial_skeyseed(prf, ni, nr, shared) == skeyseed
    keys = ike_keys(prf, skeyseed, ni, nr, spi_i, spi_r, lengths)
    assert {field: getattr(keys, field) for field in sk} == sk
    assert len(keys.sk_ei) == suite.encr.key_size  # + the 4-byte salt for an AEAD

    trailer = b""
    if intermediate:  # RFC 9242 IntAuth under the keys in force, then RFC 9370 SKEYSEED(1)
        steps, secret, skeyseed1, sk1 = intermediate
        for (previous, a_and_p, sk_p, expected), mine in zip(steps, (keys.sk_pi, keys.sk_pr),
                                                             strict=True):
            assert sk_p == mine and int_auth(prf, sk_p, previous, a_and_p) == expected
        assert additional_skeyseed(prf, keys.sk_d, secret, ni, nr) == skeyseed1
        keys = ike_keys(prf, skeyseed1, ni, nr, spi_i, spi_r, lengths)
        assert {field: getattr(keys, field) for field in sk1} == sk1
        trailer = int_auth_trailer(steps[0][3], steps[1][3], 2)  # IKE_AUTH is message 2

    # PSK AUTH: espd builds the same signed octets and the same AUTH
    octets = signed_octets(prf, message1, nr, keys.sk_pi, id_i, trailer)
    assert octets.octets == octets_i
    assert PskAuthenticator(info["psk"]).build(octets)[1] == auth_i

    # the IKE_AUTH Child SA, then the Child SA rekey (PFS; ML-KEM via IKE_FOLLOWUP_KE)
    _check_child(dumps, prf, keys.sk_d, esp, expect_secret=False, v6=v6)
    _check_child(dumps, prf, keys.sk_d, esp, expect_secret=True, v6=v6)

    if case.rekey_ike:  # SKEYSEED = prf(SK_d(old), g^ir | Ni | Nr | SK(1)), new SPIs
        secret, extra = dumps.next("key exchange secret"), dumps.next(
            "additional key exchange secret")
        rekey_nonces, rekeyed = dumps.next("nonces"), dumps.next("SKEYSEED")
        sk2 = _sk_dumps(dumps, suite)
        ni2, nr2 = rekey_nonces[:len(rekey_nonces) // 2], rekey_nonces[len(rekey_nonces) // 2:]
        assert rekey_skeyseed(prf, keys.sk_d, secret, ni2, nr2, (extra,)) == rekeyed
        (sa,) = [sa for sa in info["sas"] if bytes.fromhex(sa["initiator-spi"]) != spi_i]
        new_spis = [bytes.fromhex(sa[f"{role}-spi"]) for role in ("initiator", "responder")]
        new = ike_keys(prf, rekeyed, ni2, nr2, *new_spis, lengths)
        assert {field: getattr(new, field) for field in sk2} == sk2


def _sk_dumps(dumps: Dumps, suite) -> dict[str, bytes]:
    """The SK_* charon printed, by IkeKeys field name (no SK_a for an AEAD)."""
    names = ["d", *([] if suite.encr.aead else ["ai", "ar"]), "ei", "er", "pi", "pr"]
    return {f"sk_{n}": dumps.next(f"Sk_{n} secret") for n in names}


def _check_child(dumps: Dumps, prf, sk_d: bytes, esp, expect_secret: bool, v6: bool) -> None:
    secret = additional = b""
    if expect_secret:
        secret = dumps.next("key exchange secret" if v6 else "DH secret")
        if v6:
            additional = dumps.next("additional key exchange secret")
    seed = dumps.next("seed")
    assert seed.startswith(secret) and seed.endswith(additional)  # RFC 7296 / 9370 order
    middle = seed[len(secret):len(seed) - len(additional)]
    ni, nr = middle[:len(middle) // 2], middle[len(middle) // 2:]
    child = child_keys(prf, sk_d, ni, nr, esp, shared=secret or None,
                       additional=(additional,) if additional else ())
    assert child.initiator_to_responder.key == dumps.next("encryption initiator key")
    assert child.responder_to_initiator.key == dumps.next("encryption responder key")
    if esp.auth_key_len:
        assert child.initiator_to_responder.auth_key == dumps.next("integrity initiator key")
        assert child.responder_to_initiator.auth_key == dumps.next("integrity responder key")



def test_ppk_keys_match_strongswan6(make_topology, make_charon):
    """RFC 8784: with a post-quantum preshared key required on both sides, charon 6.0.6
    replaces SK_d, SK_pi and SK_pr by prf+(PPK, ...): espd derives the same, and its PSK
    AUTH over octets MACed with the PPK-derived SK_pi is the AUTH charon sent."""
    if STRONGSWAN6.unavailable():
        pytest.skip(STRONGSWAN6.unavailable())
    topology = make_topology(ipv6=False)
    psk, ppk = secrets.token_hex(16), secrets.token_bytes(32)
    suite = parse_suite("aes256gcm16-prfsha384-x25519")
    gwa = make_charon(topology.gw_a, "gwa", "6.0.6", key_dump=True)
    gwb = make_charon(topology.gw_b, "gwb", "6.0.6")
    for charon, side in ((gwa, "a"), (gwb, "b")):
        charon.load([site_to_site(side, psk, proposals=[suite.name],
                                  extra={"ppk_id": "espd-ppk", "ppk_required": "yes"})])
        conf = f"{charon.swanctl_dir}/swanctl.conf"
        with open(conf, "a") as f:
            f.write(f"secrets {{\n  ppk-espd {{\n    secret = 0x{ppk.hex()}\n"
                    f"    id = espd-ppk\n  }}\n}}\n")
        charon.swanctl("--load-creds", "--noprompt", "--file", conf)
    with gwa.events() as events:
        gwa.initiate("net")
        events.wait_up("child-updown")
    dumps = Dumps(gwa.log())
    prf = suite.prf
    dumps.next("key exchange secret")
    nonces = dumps.next("nonces")
    skeyseed = dumps.next("SKEYSEED")
    sk = _sk_dumps(dumps, suite)
    assert dumps.next("PPK") == ppk  # 6.0.6 prints it where AUTH is built with it
    id_i, sk_p = dumps.next("IDx'"), dumps.next("SK_p")
    octets_i = dumps.next("octets = message + nonce + prf(Sk_px, IDx') + IntAuth")
    auth_i = dumps.next("AUTH = prf(prf(secret, keypad), octets)")
    assert dumps.next("derive keys using PPK") == ppk
    mixed = {f"sk_{n}": dumps.next(f"Sk_{n} secret") for n in ("d", "pi", "pr")}
    message1 = octets_i[:struct.unpack_from("!I", octets_i, 24)[0]]
    ni = _nonce(message1)
    nr = nonces[len(ni):]
    (sa,) = [e["gw"] for e in gwa.list_sas()]
    keys = ike_keys(prf, skeyseed, ni, nr, message1[0:8], bytes.fromhex(sa["responder-spi"]),
                    suite.lengths)
    assert {field: getattr(keys, field) for field in sk} == sk
    new = ppk_keys(prf, ppk, keys)
    keys.wipe()  # the mixed keys are copies of their own
    assert {field: getattr(new, field) for field in mixed} == mixed
    assert new.sk_ei == sk["sk_ei"] and new.sk_er == sk["sk_er"] and sk_p == new.sk_pi
    octets = signed_octets(prf, message1, nr, new.sk_pi, id_i)
    assert octets.octets == octets_i
    assert PskAuthenticator(psk.encode()).build(octets)[1] == auth_i
