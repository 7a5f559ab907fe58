"""RFC 8784 post-quantum preshared keys between the espd daemon and strongSwan charon
6.0.6 (``ppk_id``/``ppk_required`` in the connection, a ``ppk`` secret): each side
initiating with the PPK required on both, traffic both ways, and the PPK named by both
(charon's list-sas ``ppk = yes``, espd's ``show ike sa``); a wrong PPK refused; charon
requiring a PPK espd does not have refused; espd's optional PPK against a charon without
that PPK_ID, through NO_PPK_AUTH.

  [hostA 10.1.0.10] -- [gwA espd daemon] ==IKE + ESP== [gwB charon 6.0.6] -- [hostB]
"""

from __future__ import annotations

import secrets
import shutil
import time

import pytest
from support import netns
from support.strongswan import STRONGSWAN6, CharonError, site_to_site
from test_ike_mlkem import CLASSIC, Site, _site, config, espd_show

pytestmark = pytest.mark.netns

PPK_ID = "espd-ppk"


def _espd_text(psk: str, start: str, tmp, ppk: bytes | None, required: bool = True) -> str:
    text = config(psk, start, tmp, [CLASSIC])
    if ppk is None:
        return text
    lines = (f'ppk_id = "{PPK_ID}"\nppk = "0x{ppk.hex()}"\n'
             f'ppk_required = {"true" if required else "false"}\n')
    return text.replace('remote_id = "fqdn:gwb"\n', 'remote_id = "fqdn:gwb"\n' + lines)


def _load_charon(site: Site, ppk: bytes | None, ppk_id: str | None = PPK_ID,
                 required: bool = True) -> None:
    extra = {"ppk_id": ppk_id, "ppk_required": "yes" if required else "no"} \
        if ppk_id else {}
    site.charon.load([site_to_site("b", site.psk, proposals=[CLASSIC],
                                   esp_proposals=["aes256gcm16"], extra=extra)])
    if ppk is not None:  # a PPK secret named by the id of the connection or another
        conf = f"{site.charon.swanctl_dir}/swanctl.conf"
        with open(conf, "a") as f:
            f.write(f"secrets {{\n  ppk-1 {{\n    secret = 0x{ppk.hex()}\n"
                    f"    id = {ppk_id or 'another-ppk'}\n  }}\n}}\n")
        site.charon.swanctl("--load-creds", "--noprompt", "--file", conf)


def _start(site: Site, initiator: str, timeout: float = 15) -> None:
    with site.charon.events() as events:
        if initiator == "charon":
            site.charon.initiate("net")
        else:  # the first packet at espd: acquire
            netns.ping(site.topo.host_a, netns.HOST_B4, count=1, timeout=1)
        events.wait_up("child-updown", timeout=timeout)


def _initiate_refused(site: Site) -> None:
    with pytest.raises(CharonError):
        site.charon.initiate("net", timeout=8)


def _none_established(site: Site) -> None:
    sas = site.daemon.state()["ike"]["sas"]
    assert not [sa for sa in sas if sa["state"] == "established"], sas


def _with_site(tag: str, body) -> None:
    if STRONGSWAN6.unavailable():
        pytest.skip(STRONGSWAN6.unavailable())
    topo, tmp, psk = _site(STRONGSWAN6, tag)
    with topo:
        site = Site(STRONGSWAN6, psk, tmp, topo)
        try:
            body(site)
        finally:
            site.close()
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("initiator", ["charon", "espd"])
def test_a_required_ppk_with_charon6_both_ways_carries_traffic(netns_ok, initiator):
    ppk = secrets.token_bytes(32)

    def body(site: Site) -> None:
        _load_charon(site, ppk)
        site.start_espd(_espd_text(site.psk, "manual" if initiator == "charon"
                                   else "on-demand", site.tmp, ppk))
        _start(site, initiator)
        site.pings()
        (ike_sa,) = site.charon.list_sas()
        assert ike_sa["gw"].get("ppk") == "yes", ike_sa
        [shown] = site.daemon.state()["ike"]["sas"]
        assert shown["ppk"] == PPK_ID, shown
        text = espd_show(site.topo.gw_a, site.sock, "ike", "sa")
        assert f"Post-quantum preshared key: {PPK_ID} (RFC 8784)" in text
        site.charon.wait_log(r"using PPK for PPK_ID 'espd-ppk'")
        assert site.daemon.state()["ike"]["counters"].get("ppk_used") == 1
        log = site.daemon.log()
        assert ppk.hex() not in log and ppk.hex() not in text and site.psk not in log
    _with_site("ppk", body)


def _espd_logged(site: Site, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in site.daemon.log(tail=100_000):
        assert time.monotonic() < deadline, (text, site.daemon.log())
        time.sleep(0.05)


def test_a_wrong_ppk_from_charon_is_authentication_failed(netns_ok):
    def body(site: Site) -> None:
        _load_charon(site, secrets.token_bytes(32))
        site.start_espd(_espd_text(site.psk, "manual", site.tmp, secrets.token_bytes(32)))
        _initiate_refused(site)
        site.charon.wait_log(r"received AUTHENTICATION_FAILED notify error")
        # charon logs the notify as it arrives; espd's line may reach its log file later
        _espd_logged(site, "do both sides have the same PPK?")
        _none_established(site)
    _with_site("ppkw", body)


def test_charon_requiring_a_ppk_espd_lacks_gives_up_without_use_ppk(netns_ok):
    def body(site: Site) -> None:
        _load_charon(site, secrets.token_bytes(32))
        site.start_espd(_espd_text(site.psk, "manual", site.tmp, None))
        _initiate_refused(site)
        site.charon.wait_log(r"PPK required but peer does not support PPK")
        _none_established(site)
    _with_site("ppkn", body)


def test_espd_optional_ppk_against_charon_with_another_ppk_uses_no_ppk_auth(netns_ok):
    """charon has a PPK (so it answers USE_PPK), but not espd's PPK_ID, and requires
    none: it checks espd's NO_PPK_AUTH; espd keeps the unmixed keys."""
    def body(site: Site) -> None:
        _load_charon(site, secrets.token_bytes(32), ppk_id=None)
        site.start_espd(_espd_text(site.psk, "on-demand", site.tmp, secrets.token_bytes(32),
                                   required=False))
        _start(site, "espd")
        site.pings()
        site.charon.wait_log(r"using NO_PPK_AUTH notify")
        (ike_sa,) = site.charon.list_sas()
        assert ike_sa["gw"].get("ppk") != "yes", ike_sa
        [shown] = site.daemon.state()["ike"]["sas"]
        assert shown["ppk"] == "", shown
        assert site.daemon.state()["ike"]["counters"].get("ppk_not_used") == 1
        _espd_logged(site, "without post-quantum protection")
    _with_site("ppko", body)
