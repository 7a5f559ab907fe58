"""The show renderers (espd.ops.show) against a realistic daemon state: exact IOS-shaped lines."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

from espd.ops import show

CANARY = "c0ffee" * 12  # a key that must never reach any output
REPO = Path(__file__).resolve().parents[2]


def _sa(direction: str, spi: int, **over: object) -> dict:
    sa = {
        "map": "armadillo", "seq": 10, "peer": "192.0.2.2", "local": "192.0.2.1",
        "direction": direction, "spi": spi, "transform": "esp-gcm 256", "mode": "tunnel",
        "encap": "esp", "replay_window": 1024, "esn": False, "packets": 0, "bytes": 0,
        "encaps": 0, "encrypt": 0, "digest": 0, "decaps": 0, "decrypt": 0, "verify": 0,
        "sequence": 0, "drops": {}, "lifetime_remaining_seconds": 3590,
        "lifetime_remaining_bytes": 4718591160, "soft_expired": False,
        "hard_expired": False, "seq_cycled": False,
    }
    sa.update(over)
    return sa


def make_state() -> dict:
    return {
        "version": "0.1.0", "openssl": "OpenSSL 3.0.13", "crypto_features": "aes-ni pclmulqdq",
        "crypto_backend": "ipsec-mb (avx512)",
        "workers": 2, "interface": "espd0", "uptime_seconds": 93784.5,
        "config_path": "/etc/espd/espd.toml", "reloads": {"success": 3, "failure": 1},
        "io": {"tun_rx": 100, "tun_tx": 10, "net_rx": 12, "net_tx": 95, "send_errors": 1,
               "recv_errors": 0, "tun_errors": 0},
        "drops": {"in": {"auth_failed": 2, "replay_dup": 1, "unknown_spi": 0},
                  "out": {"no_policy": 5}},
        "maps": [
            {"map": "armadillo", "seq": 10, "peer": "192.0.2.2", "local": "192.0.2.1",
             "match_address": "101", "transform_set": "STRONG", "transform": "esp-gcm 256",
             "mode": "tunnel", "encap": "esp", "lifetime_seconds": 3600,
             "lifetime_kilobytes": 4608000, "replay_window": 1024, "esn": False,
             "inbound_spi": 4096, "outbound_spi": 8192,
             "local_ident": ["10.1.0.0/16"], "remote_ident": ["10.2.0.0/16"]},
            {"map": "armadillo", "seq": 20, "peer": "2001:db8:ffff::2",
             "local": "2001:db8:ffff::1", "match_address": "V6", "transform_set": "AES_CBC",
             "transform": "esp-aes 256 esp-sha256-hmac", "mode": "tunnel", "encap": "udp",
             "lifetime_seconds": 3600, "lifetime_kilobytes": 4608000, "replay_window": 0,
             "esn": True, "inbound_spi": 4097, "outbound_spi": 8193,
             "local_ident": ["2001:db8:1::/48"], "remote_ident": ["2001:db8:2::/48"]},
        ],
        "sas": [
            _sa("in", 4096, packets=10, bytes=840, decaps=10, decrypt=10, verify=10,
                sequence=10, drops={"replay_dup": 1, "auth_failed": 0}),
            _sa("out", 8192, packets=95, bytes=7980, encaps=95, encrypt=95, digest=95,
                sequence=95, lifetime_remaining_bytes=4718584020),
            _sa("in", 4097, seq=20, peer="2001:db8:ffff::2", local="2001:db8:ffff::1",
                transform="esp-aes 256 esp-sha256-hmac", encap="udp", replay_window=0,
                esn=True, hard_expired=True, lifetime_remaining_seconds=0,
                lifetime_remaining_bytes=0, drops={"sa_expired": 3}),
            _sa("out", 8193, seq=20, peer="2001:db8:ffff::2", local="2001:db8:ffff::1",
                transform="esp-aes 256 esp-sha256-hmac", encap="udp", replay_window=0,
                esn=True, seq_cycled=True),
        ],
        "acls": [
            {"acl": "101", "index": 1, "text": "permit ip 10.1.0.0/16 10.3.0.0/16",
             "map": "armadillo", "seq": 10, "hits": 1},
            {"acl": "101", "index": 0,
             "text": "permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255",
             "map": "armadillo", "seq": 10, "hits": 42},
            {"acl": "V6", "index": 0, "text": "permit ipv6 2001:db8:1::/48 2001:db8:2::/48",
             "map": "armadillo", "seq": 20, "hits": 0},
        ],
    }


FIRST_ENTRY = """\
interface: espd0
    Crypto map tag: armadillo, local addr. 192.0.2.1

   local  ident (addr/mask/prot/port): (10.1.0.0/255.255.0.0/0/0)
   remote ident (addr/mask/prot/port): (10.2.0.0/255.255.0.0/0/0)
   current_peer: 192.0.2.2
    #pkts encaps: 95, #pkts encrypt: 95, #pkts digest: 95
    #pkts decaps: 10, #pkts decrypt: 10, #pkts verify: 10
    #send errors 0, #recv errors 1
    #drops in replay_dup: 1

     local crypto endpt.: 192.0.2.1, remote crypto endpt.: 192.0.2.2
     current outbound spi: 0x00002000(8192)

     inbound esp sas:
      spi: 0x00001000(4096)
        transform: esp-gcm 256 ,
        in use settings ={Tunnel, }
        crypto map: armadillo 10
        sa timing: remaining key lifetime (k/sec): (4607999/3590)
        replay detection support: Y, window size 1024
        Status: ACTIVE

     outbound esp sas:
      spi: 0x00002000(8192)
        transform: esp-gcm 256 ,
        in use settings ={Tunnel, }
        crypto map: armadillo 10
        sa timing: remaining key lifetime (k/sec): (4607992/3590)
        replay detection support: Y, window size 1024
        Status: ACTIVE
"""


def test_render_sa_prints_the_first_entry_like_show_crypto_ipsec_sa() -> None:
    text = show.render_sa(make_state())
    assert text.startswith(FIRST_ENTRY + "\n    Crypto map tag: armadillo, local addr. 2001:")


def test_render_sa_shows_udp_encapsulation_ipv6_idents_and_expired_sas() -> None:
    lines = show.render_sa(make_state()).splitlines()
    second = lines[lines.index("    Crypto map tag: armadillo, local addr. 2001:db8:ffff::1"):]
    assert "   local  ident (addr/mask/prot/port): (2001:db8:1::/48/0/0)" in second
    assert "   remote ident (addr/mask/prot/port): (2001:db8:2::/48/0/0)" in second
    assert "    #send errors 0, #recv errors 3" in second
    assert "    #drops in sa_expired: 3" in second
    assert second.count("        in use settings ={Tunnel UDP-Encaps, }") == 2
    assert "        replay detection support: N, extended sequence numbers" in second
    assert "        sa timing: remaining key lifetime (k/sec): (0/0)" in second
    assert "        Status: EXPIRED" in second
    assert "        Status: EXPIRED (sequence numbers used up)" in second
    assert "      spi: 0x00001001(4097)" in second


def test_render_sa_leaves_out_reasons_that_dropped_nothing() -> None:
    text = show.render_sa(make_state())
    assert "auth_failed" not in text  # zero on the SA; the global count is in stats


def test_render_sa_says_so_when_nothing_is_configured() -> None:
    assert show.render_sa({"interface": "espd0"}) == "interface: espd0\n    no crypto map entries\n"


def test_render_sa_lists_every_ident_pair_of_an_entry() -> None:
    state = make_state()
    state["maps"][0]["local_ident"] = ["10.1.0.0/16", "10.1.0.0/16"]
    state["maps"][0]["remote_ident"] = ["10.2.0.0/16", "10.3.0.0/16"]
    lines = show.render_sa(state).splitlines()
    start = lines.index("    Crypto map tag: armadillo, local addr. 192.0.2.1") + 2
    assert lines[start:start + 4] == [
        "   local  ident (addr/mask/prot/port): (10.1.0.0/255.255.0.0/0/0)",
        "   remote ident (addr/mask/prot/port): (10.2.0.0/255.255.0.0/0/0)",
        "   local  ident (addr/mask/prot/port): (10.1.0.0/255.255.0.0/0/0)",
        "   remote ident (addr/mask/prot/port): (10.3.0.0/255.255.0.0/0/0)",
    ]


def test_render_sa_shows_a_soft_expired_sa_as_still_active() -> None:
    state = make_state()
    state["sas"][1]["soft_expired"] = True
    assert "        Status: ACTIVE (soft lifetime reached)" in show.render_sa(state).splitlines()


def test_render_map_prints_show_crypto_map_with_acl_in_order() -> None:
    text = show.render_map(make_state())
    assert text.split("\n\n")[0] == """\
Crypto Map "armadillo" 10 ipsec-manual
        Peer = 192.0.2.2
        Local address = 192.0.2.1
        Extended IP access list 101
            access-list 101 permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255
            access-list 101 permit ip 10.1.0.0/16 10.3.0.0/16
        Current peer: 192.0.2.2
        Security association lifetime: 4608000 kilobytes/3600 seconds
        Replay detection: 1024 packets, ESN (Y/N): N
        Transform sets={ STRONG: { esp-gcm 256 } , }
        Mode: tunnel, encapsulation: esp (IP protocol 50)
        Inbound esp spi: 0x00001000(4096)
        Outbound esp spi: 0x00002000(8192)
        Interfaces using crypto map armadillo:
                espd0"""
    second = text.split("\n\n")[1].splitlines()
    assert second[0] == 'Crypto Map "armadillo" 20 ipsec-manual'
    assert "        Extended IPv6 access list V6" in second
    assert "        Replay detection: disabled" in second
    assert "        Mode: tunnel, encapsulation: udp (UDP port 4500, RFC 3948)" in second


def test_render_acl_counts_matches_per_entry() -> None:
    assert show.render_acl(make_state()) == """\
Crypto map armadillo 10, access list 101:
    access-list 101 permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255 (42 matches)
    access-list 101 permit ip 10.1.0.0/16 10.3.0.0/16 (1 match)
Crypto map armadillo 20, access list V6:
    access-list V6 permit ipv6 2001:db8:1::/48 2001:db8:2::/48 (0 matches)
"""


def test_render_stats_shows_drops_io_reloads_and_build() -> None:
    assert show.render_stats(make_state()) == """\
espd 0.1.0, up 1d 2:03:04, config /etc/espd/espd.toml
OpenSSL 3.0.13, crypto CPU features: aes-ni pclmulqdq, AEADs on ipsec-mb (avx512)
interface espd0, 2 workers
reloads: 3 succeeded, 1 failed

packets: tun rx 100, tun tx 10, net rx 12, net tx 95
errors:  send 1, recv 0, tun 0

drops in:
    auth_failed: 2  (integrity check value (ICV) did not verify)
    replay_dup: 1  (sequence number already received)

drops out:
    no_policy: 5  (outbound packet matches no crypto map entry)
"""


def test_render_stats_shows_udp_offloads_only_when_there_were_any() -> None:
    state = make_state()
    state["io"].update(net_tx_gso=60, net_rx_gro=0)
    lines = show.render_stats(state).splitlines()
    at = lines.index("packets: tun rx 100, tun tx 10, net rx 12, net tx 95")
    assert lines[at + 1] == "of which ESP in UDP sent in GSO runs 60, received in GRO aggregates 0"
    assert lines[at + 2].startswith("errors:")
    state["io"].update(net_tx_gso=0)
    assert "GSO" not in show.render_stats(state)


def test_render_stats_shows_the_af_packet_path_only_when_it_sent() -> None:
    state = make_state()
    state["io"].update(net_tx_packet=90)
    lines = show.render_stats(state).splitlines()
    at = lines.index("packets: tun rx 100, tun tx 10, net rx 12, net tx 95")
    assert lines[at + 1] == "of which sent on the AF_PACKET socket 90"
    state["io"].update(net_tx_packet=0)
    assert "AF_PACKET" not in show.render_stats(state)


def test_render_stats_shows_the_receive_ring_only_when_it_received() -> None:
    state = make_state()
    state["io"].update(net_rx_ring=12)
    lines = show.render_stats(state).splitlines()
    at = lines.index("packets: tun rx 100, tun tx 10, net rx 12, net tx 95")
    assert lines[at + 1] == ("of which received on the TPACKET_V3 ring 12 "
                             "(dropped, the ring full: 0)")
    state["io"].update(net_rx_ring=0, net_rx_ring_drops=3)
    assert "ring full: 3" in show.render_stats(state)
    state["io"].update(net_rx_ring_drops=0)
    assert "ring" not in show.render_stats(state)


def test_render_stats_says_none_for_a_direction_without_drops() -> None:
    state = make_state()
    state["drops"] = {"in": {}, "out": {"no_policy": 0}}
    text = show.render_stats(state)
    assert "drops in: none\n" in text and "drops out: none\n" in text


def test_sa_json_is_the_state_sa_list_as_json() -> None:
    state = make_state()
    sas = show.sa_json(state)
    assert sas == state["sas"]
    assert json.loads(json.dumps(sas)) == sas
    first = sas[0]
    assert (first["map"], first["seq"], first["peer"], first["direction"]) == (
        "armadillo", 10, "192.0.2.2", "in")
    assert (first["spi"], first["transform"], first["packets"], first["bytes"]) == (
        4096, "esp-gcm 256", 10, 840)
    assert first["drops"] == {"replay_dup": 1, "auth_failed": 0}


def test_sa_json_is_a_copy_not_a_view_of_the_state() -> None:
    state = make_state()
    before = copy.deepcopy(state)
    show.sa_json(state)[0]["drops"]["replay_dup"] = 99
    assert state == before


def test_no_key_material_reaches_any_output() -> None:
    state = make_state()
    for sa in state["sas"]:
        sa["key"] = CANARY
        sa["auth_key"] = CANARY
    for m in state["maps"]:
        m["inbound_key"] = CANARY
    outputs = [show.render_sa(state), show.render_map(state), show.render_acl(state),
               show.render_stats(state), json.dumps(show.sa_json(state))]
    for output in outputs:
        assert CANARY not in output
    assert all("key" not in sa and "auth_key" not in sa for sa in show.sa_json(state))


def test_ident_lines_carry_mask_protocol_and_port_once_per_selector(tmp_path) -> None:
    """`tcp ... eq 5201` prints /6/5201; a host /32; two rules with one selector one pair."""
    from espd.config.toml import parse_toml
    from espd.service.state_view import ident

    config = parse_toml("""\
[daemon]
local = "192.0.2.1"
[access_list.101]
rules = ["permit tcp 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255 eq 5201",
         "permit tcp 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255 eq 5201",
         "permit udp host 10.1.0.10 range 1000 2000 any",
         "permit ip 2001:db8:1::/48 2001:db8:2::/48"]
""" + """[transform_set.T]
transforms = ["esp-gcm 256"]
""")
    got = [(ident(e.src, e.protocol, e.src_ports), ident(e.dst, e.protocol, e.dst_ports))
           for e in config.access_lists["101"].entries]
    assert got == [
        ("10.1.0.0/255.255.0.0/6/0", "10.2.0.0/255.255.0.0/6/5201"),
        ("10.1.0.0/255.255.0.0/6/0", "10.2.0.0/255.255.0.0/6/5201"),
        ("10.1.0.10/255.255.255.255/17/1000-2000", "0.0.0.0/0.0.0.0/17/0"),
        ("2001:db8:1::/48/0/0", "2001:db8:2::/48/0/0"),
    ]
    from espd.service.state_view import maps_state

    full = parse_toml((REPO / "config" / "espd.example.toml").read_text())
    acl = full.access_lists[full.crypto_maps[0].match_address]
    twice = dataclasses.replace(acl, entries=acl.entries + acl.entries)
    doubled = dataclasses.replace(full, access_lists={**full.access_lists, acl.name: twice})
    shown = maps_state(doubled)[0]
    assert len(shown["local_ident"]) == len({e.text for e in acl.entries if e.action ==
                                             "permit"})  # one pair per selector
    state = make_state()
    state["maps"][0]["local_ident"] = ["10.1.0.0/255.255.0.0/6/0"]
    state["maps"][0]["remote_ident"] = ["10.2.0.0/255.255.0.0/6/5201"]
    text = show.render_sa(state)
    assert "   remote ident (addr/mask/prot/port): (10.2.0.0/255.255.0.0/6/5201)\n" in text


def test_an_idle_sa_past_its_time_limit_shows_expired() -> None:
    """No packet has met the inbound SA since its hard lifetime passed: still EXPIRED."""
    import types

    from espd.dataplane import Dataplane, Lifetime
    from espd.dataplane.testing import set_clock
    from espd.keying.owner import SaView
    from espd.policy.plan import SaSpec
    from espd.service.state_view import sa_state

    dp = Dataplane()
    sec = 1_000_000_000
    set_clock(dp, 1000 * sec)
    hard, soft = Lifetime(seconds=60), Lifetime(seconds=54)
    sa = dp.add_sa(spi=0x1000, direction="in", transform="esp-gcm 256", key=bytes(36),
                   local="192.0.2.1", peer="192.0.2.2", hard=hard, soft=soft)
    spec = SaSpec(map_name="m", seq=10, direction="in", spi=0x1000, transform="esp-gcm 256",
                  mode="tunnel", local="192.0.2.1", peer="192.0.2.2", encap="esp",
                  replay_window=64, esn=False, hard=hard, soft=soft, policy=1, key=b"",
                  auth_key=None)
    daemon = types.SimpleNamespace(dp=dp)
    view = SaView(spec, sa, "manual")
    assert show._status(sa_state(daemon, view)) == "ACTIVE"
    set_clock(dp, 1055 * sec)
    assert show._status(sa_state(daemon, view)) == "ACTIVE (soft lifetime reached)"
    set_clock(dp, 1061 * sec)
    assert show._status(sa_state(daemon, view)) == "EXPIRED"
