"""tshark as the independent decoder of IKEv2/ESP captures (tests/support/tshark.py), on a
real charon 5.9.8 exchange (from shared/ikev2: psk run, IKE aes128-sha256-x25519, ESP
aes128gcm16): the key table decrypts IKE_AUTH with ICVs "[correct]" and the ESP pings
inside; one wrong key byte and the checks say so.

ike.pcap: IKE_SA_INIT + IKE_AUTH; ike-esp.pcap: the same four frames and the first three
pings each way; ike.tshark-opts: the -o options (charon's own keys, at ike 4).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import tshark
from support.tshark import ESP_ENCR, IKE_ENCR, IKE_INTEG, EspSaKeys, IkeSaKeys

DATA = Path(__file__).resolve().parents[1] / "data" / "ikev2"
IKE_PCAP, ESP_PCAP = str(DATA / "ike.pcap"), str(DATA / "ike-esp.pcap")

# the same keys as ike.tshark-opts, as a test would build them from espd's key log
IKE_SA = IkeSaKeys(
    bytes.fromhex("a5f1240c63bf12e6"), bytes.fromhex("9390229b7bc0896b"),
    bytes.fromhex("c3270f9d08823607febdf45514f49ea8"),
    bytes.fromhex("f7587ebd6adedf31f5570af81cd9d31f"), IKE_ENCR[("aes-cbc", 128)],
    bytes.fromhex("372d59a113e3e3471ef4fbb3bf9e2d28619d053dba9aa0018dfafa75910f93a9"),
    bytes.fromhex("7ee2c9e5e68552b659be290a9f086082cca09a8b5278e0ce19068b9769c5959f"),
    IKE_INTEG["hmac-sha2-256-128"])
ESP_SAS = [
    EspSaKeys("192.0.2.1", "192.0.2.2", 0x1d5b682d, ESP_ENCR["aes-gcm-16"],
              bytes.fromhex("085b77bbe57f46dcba36b6d8750b6b1253aadd08")),
    EspSaKeys("192.0.2.2", "192.0.2.1", 0xf2c157cd, ESP_ENCR["aes-gcm-16"],
              bytes.fromhex("9a276b58c0b7f053e7626e807373325a70a9a756")),
]
INNER = {"10.1.0.1", "10.2.0.1"}


@pytest.fixture(autouse=True)
def _tshark():
    why = tshark.unavailable()
    if why:
        pytest.skip(why)


def flipped(key: bytes) -> bytes:
    return bytes([key[0] ^ 0x01]) + key[1:]


def test_opts_file_decrypts_ike_auth_with_correct_icvs():
    packets = tshark.dissect(IKE_PCAP, tshark.options_from_opts_file(str(DATA /
                                                                         "ike.tshark-opts")))
    check = tshark.ike_integrity(packets)
    assert check.encrypted == [3, 4] and check.correct == [3, 4], check
    assert not check.wrong
    # the inner payloads are dissected: IDi/IDr and the PSK AUTH method
    ids = [f.showname for p in packets for f in p.all("isakmp.id.data")]
    assert any("gwa" in s for s in ids) and any("gwb" in s for s in ids), ids


def test_built_options_are_the_shared_opts_file_plus_the_esp_icv_check():
    built = tshark.options([IKE_SA], ESP_SAS)
    shared = tshark.options_from_opts_file(str(DATA / "ike.tshark-opts"))
    assert built == shared[:4] + ["-o", tshark.ESP_AUTH_CHECK] + shared[4:]


def test_esp_pings_decrypt_to_the_inner_icmp():
    check = tshark.esp_decrypted(tshark.dissect(ESP_PCAP, tshark.options([IKE_SA], ESP_SAS)),
                                 INNER)
    assert check.esp == [5, 6, 7, 8, 9, 10] and check.decrypted == check.esp, check
    assert {proto for *_, proto in check.inner} == {"icmp"}
    assert {(src, dst) for _, src, dst, _ in check.inner} == {("10.1.0.1", "10.2.0.1"),
                                                              ("10.2.0.1", "10.1.0.1")}


def test_a_wrong_integrity_key_is_reported():
    bad = IkeSaKeys(IKE_SA.spi_i, IKE_SA.spi_r, IKE_SA.sk_ei, IKE_SA.sk_er, IKE_SA.encr,
                    flipped(IKE_SA.sk_ai), IKE_SA.sk_ar, IKE_SA.integ)
    check = tshark.ike_integrity(tshark.dissect(IKE_PCAP, tshark.options([bad])))
    assert check.correct == [4] and len(check.wrong) == 1, check  # only gwa's message
    assert check.wrong[0].startswith("frame 3:") and "incorrect" in check.wrong[0], check


def test_no_keys_means_nothing_decrypts():
    packets = tshark.dissect(ESP_PCAP)
    assert tshark.ike_integrity(packets).correct == []
    esp = tshark.esp_decrypted(packets, INNER)
    assert esp.decrypted == [] and len(esp.wrong) == 6, esp


def test_a_wrong_esp_key_does_not_pass_as_decrypted():
    bad = [EspSaKeys(sa.src, sa.dst, sa.spi, sa.encr, flipped(sa.key)) for sa in ESP_SAS]
    check = tshark.esp_decrypted(tshark.dissect(ESP_PCAP, tshark.options(esp=bad)), INNER)
    assert check.decrypted == [] and len(check.wrong) == 6, check


def test_uat_files_convert_to_the_same_options(tmp_path):
    ike_file, esp_file = tmp_path / "ikev2_decryption_table", tmp_path / "esp_sa"
    ike_file.write_text(f"# espd key log\n{IKE_SA.row()}\n")
    esp_file.write_text("".join(sa.row() + "\n" for sa in ESP_SAS))
    opts = (tshark.options_from_uat_file(str(ike_file), "ikev2_decryption_table")
            + tshark.options_from_uat_file(str(esp_file), "esp_sa"))
    assert opts == tshark.options([IKE_SA], ESP_SAS)


def test_pcap_writer_round_trips_through_tshark(tmp_path):
    from scapy.utils import rdpcap  # ike.pcap is pcapng: scapy reads it, independently

    raw = [bytes(p) for p in rdpcap(IKE_PCAP)]
    path = str(tmp_path / "copy.pcap")
    assert tshark.write_pcap(path, [(1_700_000_000 + i * 0.25, frame)
                                    for i, frame in enumerate(raw)]) == 4
    again = tshark.dissect(path, tshark.options([IKE_SA]))
    assert [p.protocols for p in again] == [p.protocols for p in tshark.dissect(IKE_PCAP)]
    assert tshark.ike_integrity(again).correct == [3, 4]
    assert [p.first("frame.time_epoch")[:13] for p in again] == [
        "1700000000.00", "1700000000.25", "1700000000.50", "1700000000.75"]


def test_espd_key_log_lines_convert_to_the_same_options(tmp_path):
    """espd's key log: one ``uat:TABLE:ROW`` tshark preference a line."""
    log = tmp_path / "keys.log"
    log.write_text(f"uat:ikev2_decryption_table:{IKE_SA.row()}\n"
                   + "".join(f"uat:esp_sa:{sa.row()}\n" for sa in ESP_SAS))
    opts = tshark.options_from_keylog(str(log))
    assert opts == tshark.options([IKE_SA], ESP_SAS)
    check = tshark.esp_decrypted(tshark.dissect(ESP_PCAP, opts), INNER)
    assert check.decrypted == [5, 6, 7, 8, 9, 10], check


def test_a_key_log_row_tshark_cannot_take_is_named(tmp_path):
    chacha = EspSaKeys("192.0.2.1", "192.0.2.2", 0x1234, "ChaCha20 with Poly1305 [RFC7634]",
                       bytes(36))
    log = tmp_path / "keys.log"
    log.write_text(f"uat:ikev2_decryption_table:{IKE_SA.row()}\nuat:esp_sa:{chacha.row()}\n")
    with pytest.raises(tshark.TsharkError, match=r"keys.log:2: tshark 4.0 has no"):
        tshark.options_from_keylog(str(log))
    assert tshark.options_from_keylog(str(log), skip_unsupported=True) == \
        tshark.options([IKE_SA])
    # and tshark itself refuses the whole run on that name: the check above is not idle
    with pytest.raises(tshark.TsharkError, match="invalid value"):
        tshark.dissect(IKE_PCAP, ["-o", f"uat:esp_sa:{chacha.row()}"])
