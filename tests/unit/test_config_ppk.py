"""RFC 8784 PPK settings of [ike_peer.NAME]: ppk_id, ppk / ppk_file, ppk_required; the key
file checks, the 256-bit minimum, hex keys, and the engine settings they become."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_config_ike import CANARY_PSK, TOML

from espd.config.model import ConfigError
from espd.config.toml import parse_toml
from espd.policy.ike_plan import ike_settings, wipe_ike_keys

CANARY_PPK = "ppk-canary-c0ffee-" + "7" * 30  # 48 bytes
PEER = f'psk = "{CANARY_PSK}"'


def with_ppk(lines: str) -> str:
    return TOML.replace(PEER, PEER + "\n" + lines)


def problems(text: str, path: str = "c.toml") -> str:
    with pytest.raises(ConfigError) as e:
        parse_toml(text, path)
    message = str(e.value)
    assert CANARY_PPK not in message and "c0ffee" not in message
    return message


def test_a_ppk_becomes_the_engines_setting_required_by_default():
    config = parse_toml(with_ppk(f'ppk_id = "gw-ppk-1"\nppk = "{CANARY_PPK}"'), "c.toml")
    (peer,) = config.ike_peers
    assert (peer.ppk_id, bytes(peer.ppk), peer.ppk_required) == (
        b"gw-ppk-1", CANARY_PPK.encode(), True)
    assert CANARY_PPK not in repr(peer)
    (engine_peer,) = ike_settings(config).peers
    assert engine_peer.ppk.ident == b"gw-ppk-1" and engine_peer.ppk.required
    assert bytes(engine_peer.ppk.key) == CANARY_PPK.encode()
    assert CANARY_PPK not in repr(engine_peer)
    wipe_ike_keys(config)
    assert not any(peer.ppk)


def test_ppk_required_false_and_a_hex_key():
    key = bytes(range(32))
    config = parse_toml(with_ppk(f'ppk_id = "x"\nppk = "0x{key.hex()}"\n'
                                 f'ppk_required = false'), "c.toml")
    (peer,) = config.ike_peers
    assert bytes(peer.ppk) == key and peer.ppk_required is False


@pytest.mark.parametrize("lines, message", [
    (f'ppk = "{CANARY_PPK}"', "has ppk but no 'ppk_id'"),
    ('ppk_id = "gw-ppk-1"', "has a 'ppk_id' but no key"),
    ('ppk_id = "gw-ppk-1"\nppk = "too-short-0123456789"', "the post-quantum preshared key "
     "has 20 bytes; use 32 to 1024"),
    ('ppk_id = "gw-ppk-1"\nppk = "0x0g' + "00" * 40 + '"', "only an even number of hex"),
    (f'ppk_id = ""\nppk = "{CANARY_PPK}"', "ppk_id must have 1-255 bytes"),
    (f'ppk_id = "a"\nppk = "{CANARY_PPK}"\nppk_required = "yes"', "ppk_required must be"),
    (f'ppk_id = "a"\nppk = "{CANARY_PPK}"\nppk_file = "x.ppk"', "has both 'ppk' and "
     "'ppk_file'"),
])
def test_refusals(lines, message):
    assert message in problems(with_ppk(lines))


def test_ppk_file_is_read_with_the_key_file_checks(tmp_path: Path):
    secret = tmp_path / "gwb.ppk"
    secret.write_text(CANARY_PPK + "\n")
    os.chmod(secret, 0o644)
    text = with_ppk('ppk_id = "gw-ppk-1"\nppk_file = "gwb.ppk"')
    assert f"run 'chmod 600 {secret}'" in problems(text, str(tmp_path / "c.toml"))
    os.chmod(secret, 0o600)
    config = parse_toml(text, str(tmp_path / "c.toml"))
    assert bytes(config.ike_peers[0].ppk) == CANARY_PPK.encode()  # newline stripped
