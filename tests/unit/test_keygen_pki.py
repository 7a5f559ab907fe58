"""espd keygen --pki: a lab CA and two gateway certificates that espd itself accepts: files
and modes, nothing overwritten, no key printed, and each end's printed lines load (with a
crypto map) into a configuration whose engines negotiate with each other."""

from __future__ import annotations

import asyncio
import datetime
import re
import stat
from pathlib import Path

import pytest
from support.ike_pair import A, B, negotiate

from espd.cli import main as cli
from espd.config.toml import parse_toml
from espd.ike.auth.certificates import TrustStore, load_certificates
from espd.policy.ike_plan import ike_settings


def keygen(capsys, directory: Path, *extra: str) -> tuple[int, str, str]:
    code = cli.main(["keygen", "--peer-a", str(A), "--peer-b", str(B), "--pki",
                     str(directory), *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_files_are_written_with_private_keys_0600(tmp_path: Path, capsys):
    code, out, _ = keygen(capsys, tmp_path / "pki")
    assert code == 0
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "pki").iterdir()}
    assert set(modes) == {"ca.pem", "ca.key", "gw-a.pem", "gw-a.key", "gw-b.pem", "gw-b.key"}
    assert all(modes[k] == 0o600 for k in ("ca.key", "gw-a.key", "gw-b.key"))
    assert stat.S_IMODE((tmp_path / "pki").stat().st_mode) == 0o700
    assert "PRIVATE KEY" not in out


def test_the_gateway_certificates_chain_to_the_ca_and_name_each_end(tmp_path: Path, capsys):
    keygen(capsys, tmp_path / "pki", "--name-a", "hq.example.net")
    pki = tmp_path / "pki"
    (ca,) = load_certificates((pki / "ca.pem").read_bytes(), "ca")
    (gw,) = load_certificates((pki / "gw-a.pem").read_bytes(), "gw-a")
    chain = TrustStore((ca,)).verify(gw, [], datetime.datetime.now(datetime.UTC))
    assert chain[0] == gw
    assert gw.subject.rfc4514_string() == "CN=hq.example.net,O=espd lab"


def test_nothing_is_overwritten(tmp_path: Path, capsys):
    assert keygen(capsys, tmp_path / "pki")[0] == 0
    before = (tmp_path / "pki" / "gw-a.key").read_bytes()
    code, _, err = keygen(capsys, tmp_path / "pki")
    assert code == 1 and "overwrites nothing" in err
    assert (tmp_path / "pki" / "gw-a.key").read_bytes() == before


@pytest.mark.parametrize(("args", "expected"), [
    (("--name-a", "bad name!"), "--name-a 'bad name!' is not a DNS name"),
    (("--name-a", "gw.example", "--name-b", "GW.example"), "give each end its own name"),
])
def test_bad_names_are_refused(tmp_path: Path, capsys, args, expected):
    code, _, err = keygen(capsys, tmp_path / "pki", *args)
    assert code == 2 and expected in err
    assert not (tmp_path / "pki").exists()


def test_the_printed_lines_configure_two_ends_that_negotiate(tmp_path: Path, capsys):
    _, out, _ = keygen(capsys, tmp_path / "pki")
    ends = dict(re.findall(r"^# ==== on (\S+) \(\S+\) ====\n(.*?)(?=^# ====|\Z)", out,
                           flags=re.M | re.S))
    assert sorted(ends) == ["gw-a.example", "gw-b.example"]
    settings = []
    for name, local, peer, nets in (("gw-a.example", A, B, ("10.1", "10.2")),
                                    ("gw-b.example", B, A, ("10.2", "10.1"))):
        text = (f'[daemon]\nlocal = "{local}"\n\n' + ends[name] + f"""
[access_list.LAN]
rules = ["permit ip {nets[0]}.0.0/16 {nets[1]}.0.0/16"]

[transform_set.GCM]
transforms = ["esp-gcm 256"]

[[crypto_map]]
name = "VPN"
seq = 10
keying = "ike"
peer = "{peer}"
match_address = "LAN"
transform_set = "GCM"
""")
        settings.append(ike_settings(parse_toml(text, str(tmp_path / f"{name}.toml"))))

    got = asyncio.run(negotiate(*settings))
    assert got.children == (1, 1)
    assert str(got.peer_id) == "fqdn:gw-b.example"
