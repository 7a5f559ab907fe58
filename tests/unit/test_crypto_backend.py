"""[daemon] crypto_backend: which library runs the AEADs (dataplane/crypto_backend.py).

An SA keeps the backend it was created with; AES-CBC and NULL stay on OpenSSL whatever is
chosen; packets sealed on one backend open on the other (the same wire format, checked
byte for byte against an independent implementation in test_crypto_independent.py and
test_kat.py, which run on every backend); the setting is refused at config load where
the backend cannot run, and a reload cannot change it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.packets import ipv4, udp

from espd.config.load import load
from espd.config.model import ConfigError
from espd.dataplane import Dataplane
from espd.dataplane import crypto_backend as backends

A, B = "192.0.2.1", "192.0.2.2"
AEADS = {"esp-gcm 128": 20, "esp-gcm 256": 36, "esp-chacha20-poly1305": 36}
CONFIG = """\
[daemon]
local = "192.0.2.1"
{line}
"""


def pair(dp_out: Dataplane, dp_in: Dataplane, transform: str, key: bytes,
         auth_key: bytes | None = None):
    kw = dict(spi=0x4242, transform=transform, key=key, auth_key=auth_key)
    return (dp_out.add_sa(direction="out", local=A, peer=B, **kw),
            dp_in.add_sa(direction="in", local=B, peer=A, **kw))


@pytest.mark.parametrize("transform", list(AEADS))
def test_an_aead_sa_takes_the_backend_and_cbc_stays_on_openssl(crypto_backend, transform):
    dp = Dataplane()
    sa = dp.add_sa(spi=0x1001, direction="out", transform=transform,
                   key=os.urandom(AEADS[transform]), local=A, peer=B)
    cbc = dp.add_sa(spi=0x1002, direction="out", transform="esp-aes 128 esp-sha256-hmac",
                    key=os.urandom(16), auth_key=os.urandom(32), local=A, peer=B)
    assert dp.sa_crypto_backend(sa) == crypto_backend
    assert dp.sa_crypto_backend(cbc) == "openssl"
    assert backends.current() == crypto_backend


@pytest.mark.parametrize("transform", list(AEADS))
def test_packets_cross_between_backends_both_ways(transform):
    if not backends.available("ipsec-mb"):
        pytest.skip(backends.why_unavailable("ipsec-mb"))
    key = os.urandom(AEADS[transform])
    sas = {}
    try:
        for name in ("openssl", "ipsec-mb"):
            backends.select(name)
            dp_out, dp_in = Dataplane(), Dataplane()
            sas[name] = (dp_out, *pair(dp_out, dp_in, transform, key), dp_in)
    finally:
        backends.select("openssl")
    for sender, receiver in (("openssl", "ipsec-mb"), ("ipsec-mb", "openssl")):
        dp_out, out, _, _ = sas[sender]
        _, _, inb, dp_in = sas[receiver]
        assert dp_out.sa_crypto_backend(out) == sender
        assert dp_in.sa_crypto_backend(inb) == receiver
        for size in (1, 17, 64, 1400):
            inner = ipv4("10.0.0.1", "10.1.0.1", 17, udp(1234, 80, os.urandom(size)))
            assert dp_in.decap(dp_out.encap(out, inner)) == inner


def test_the_default_is_openssl_and_auto_resolves(tmp_path: Path):
    path = tmp_path / "espd.toml"
    path.write_text(CONFIG.format(line=""))
    assert load(str(path)).settings.crypto_backend == "openssl"
    path.write_text(CONFIG.format(line='crypto_backend = "auto"'))
    assert load(str(path)).settings.crypto_backend == "auto"
    want = "ipsec-mb" if backends.available("ipsec-mb") else "openssl"
    assert backends.resolve("auto") == want


def test_ipsec_mb_loads_where_it_can_run_and_is_refused_clearly_where_not(tmp_path: Path):
    path = tmp_path / "espd.toml"
    path.write_text(CONFIG.format(line='crypto_backend = "ipsec-mb"'))
    if backends.available("ipsec-mb"):
        assert load(str(path)).settings.crypto_backend == "ipsec-mb"
        return
    with pytest.raises(ConfigError) as e:
        load(str(path))
    assert "daemon.crypto_backend" in str(e.value) and "libipsec-mb" in str(e.value)


def test_an_unknown_backend_is_refused(tmp_path: Path):
    path = tmp_path / "espd.toml"
    path.write_text(CONFIG.format(line='crypto_backend = "wolfssl"'))
    with pytest.raises(ConfigError) as e:
        load(str(path))
    assert "daemon.crypto_backend" in str(e.value) and '"ipsec-mb"' in str(e.value)
