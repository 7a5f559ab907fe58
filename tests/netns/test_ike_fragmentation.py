"""RFC 7383 IKE fragmentation between the espd daemon and strongSwan charon 5.9.8 and
6.0.6, each side initiating, with certificate authentication (so IKE_AUTH is large) and
``fragment_size = 400`` on both sides.

  [hostA] -- [gwA espd daemon] ==IKEv2 in SKF fragments, ESP in UDP== [gwB charon] -- [hostB]

What is checked on the wire (an AF_PACKET capture on gwA's WAN side): IKE_AUTH went both
ways as SKF fragments 1..N, no IP datagram of IKE was larger than 400 bytes and none was
an IP fragment; espd's fragments open, one by one, with the SK_e keys charon logged (AES-GCM
from ``cryptography``, not espd's code), and their reassembled payload chain is IKE_AUTH's.
Both daemons report fragmenting and reassembling, and the tunnel passes traffic. Over an
IPv6 underlay (charon 5.9.8) the same holds with the 40-byte IPv6 header counted.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import netns
from support.ike_capture import payload_chain
from support.pki import Pki
from support.strongswan import (
    DEBIAN,
    STRONGSWAN6,
    Charon,
    close_with_espd,
    first_sa_keys,
    site_to_site,
)

pytestmark = pytest.mark.netns

FRAGMENT_SIZE = 400
IKE_AUTH, SKF = 35, 53


SITES = {4: ("192.0.2.1", "192.0.2.2", "10.1.0.0/16", "10.2.0.0/16", netns.HOST_B4),
         6: (netns.GW_A_WAN6, netns.GW_B_WAN6, "fd00:1::/64", "fd00:2::/64", netns.HOST_B6)}


def espd_config(tmp: Path, cert: str, key: str, ca: str, start: str, ip: int = 4) -> str:
    espd, charon, local_net, remote_net, _ = SITES[ip]
    return f"""
[daemon]
interface = "espd0"
local = "{espd}"
workers = 1
control_socket = "{tmp}/gwA.sock"
metrics = ""
state_dir = "{tmp}/gwA-state"

[access_list.LAN]
rules = ["permit ip {local_net} {remote_net}"]

[transform_set.GCM]
transforms = ["esp-gcm 128"]

[ike]
proposals = ["aes128gcm16-prfsha256-x25519"]
certificate = "{cert}"
private_key = "{key}"
ca = ["{ca}"]
fragment_size = {FRAGMENT_SIZE}

[ike_peer.gwb]
address = "{charon}"
auth = "certificate"
remote_id = "fqdn:gwb.ik.test"

[[crypto_map]]
name = "VPN"
seq = 10
keying = "ike"
peer = "{charon}"
match_address = "LAN"
transform_sets = ["GCM"]
start = "{start}"
"""


@dataclass(frozen=True)
class WireIke:
    """One IKE message as captured: its IP datagram's facts and the IKE bytes."""

    src: str
    ip_length: int
    ip_fragment: bool  # MF set or a fragment offset: the IP layer split it
    ike: bytes

    @property
    def exchange(self) -> int:
        return self.ike[18]

    @property
    def response(self) -> bool:
        return bool(self.ike[19] & 0x20)

    @property
    def from_initiator(self) -> bool:
        return bool(self.ike[19] & 0x08)

    @property
    def skf(self) -> tuple[int, int] | None:
        """(fragment number, total) when the message is one SKF fragment."""
        if self.ike[16] != SKF:
            return None
        return struct.unpack_from("!HH", self.ike, 32)


def ike_on_the_wire(frames) -> list[WireIke]:
    """Every UDP 500/4500 IKE message of the capture, IPv4 or IPv6 (ESP in UDP left out),
    and every IP fragment (``ike`` empty: its UDP header may be in another one)."""
    out = []
    for _, frame, _ in frames:
        if frame[12:14] == b"\x08\x00" and len(frame) >= 34:
            ihl = (frame[14] & 0x0F) * 4
            length, flags = struct.unpack_from("!H2xH", frame, 16)
            src = str(ipaddress.ip_address(frame[26:30]))
            fragment, proto, udp = bool(flags & 0x3FFF), frame[23], 14 + ihl
        elif frame[12:14] == b"\x86\xdd" and len(frame) >= 54:
            length = 40 + struct.unpack_from("!H", frame, 18)[0]
            src = str(ipaddress.ip_address(frame[22:38]))
            fragment, proto, udp = frame[20] == 44, frame[20], 54  # no other extension here
        else:
            continue
        if fragment:
            out.append(WireIke(src, length, True, b""))
            continue
        if proto != 17:
            continue
        sport, dport = struct.unpack_from("!HH", frame, udp)
        payload = frame[udp + 8:14 + length]
        if 4500 in (sport, dport):
            if payload[:4] != bytes(4):
                continue  # ESP in UDP, or a keepalive
            payload = payload[4:]
        elif 500 not in (sport, dport):
            continue
        if len(payload) >= 28:
            out.append(WireIke(src, length, False, payload))
    return out


def open_fragment(message: WireIke, keys) -> tuple[int, int, int, bytes]:
    """(number, total, first inner payload type, inner bytes) of one SKF fragment, opened
    with AES-GCM-16 and the SK_e charon derived (RFC 5282: 4-byte salt after the key, 8-byte
    IV, AAD from the IKE header through the SKF fragment fields)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    data = message.ike
    sk_e = keys.sk_ei if message.from_initiator else keys.sk_er
    key, salt = sk_e[:-4], sk_e[-4:]
    number, total = struct.unpack_from("!HH", data, 32)
    aad, iv, sealed = data[:36], data[36:44], data[44:]
    plaintext = AESGCM(key).decrypt(salt + iv, sealed, aad)
    inner = plaintext[:len(plaintext) - plaintext[-1] - 1]
    return number, total, data[28], inner


@pytest.mark.parametrize("initiator", ["charon", "espd"])
@pytest.mark.parametrize("peer", [DEBIAN, STRONGSWAN6], ids=["5.9.8", "6.0.6"])
def test_ike_auth_with_certificates_crosses_in_fragments_both_ways(netns_ok, peer, initiator):
    fragmented_site(peer, initiator, ip=4)


@pytest.mark.parametrize("initiator", ["charon", "espd"])
def test_over_ipv6_the_fragment_size_counts_the_ipv6_header(netns_ok, initiator):
    """The same over an IPv6 underlay: 40 bytes of IP header come off the 400, not 20."""
    fragmented_site(DEBIAN, initiator, ip=6)


def fragmented_site(peer, initiator: str, ip: int) -> None:
    if peer.unavailable():
        pytest.skip(peer.unavailable())
    espd_address, charon_address, _, _, host_b = SITES[ip]
    topo = netns.Topology(tag=f"espd-{os.getpid()}-fr{secrets.randbelow(10**6)}",
                          ipv6=ip == 6)
    tmp = Path(tempfile.mkdtemp(prefix="espd-frag-"))
    with topo:
        charon = Charon(topo.gw_b, "gwb", peer, key_dump=True,
                        settings={"fragment_size": FRAGMENT_SIZE}).start()
        daemon = None
        try:
            pki = Pki(str(tmp / "pki"))
            root = pki.ca("ca")
            sub = pki.ca("sub", issuer=root)
            gwa = pki.gateway("gwa", sub, identity="gwa.ik.test")
            gwb = pki.gateway("gwb", sub, identity="gwb.ik.test")
            chain = tmp / "gwa-chain.pem"  # ours, then the intermediate: a large IKE_AUTH
            chain.write_bytes(Path(gwa.cert_path).read_bytes() + Path(sub.cert_path).read_bytes())
            charon.load([site_to_site("b", None, ip, local_auth="pubkey", remote_auth="pubkey",
                                      local_id="gwb.ik.test", remote_id="gwa.ik.test",
                                      local_certs=["gwb.pem"], remote_cacerts=["ca.pem"],
                                      proposals=["aes128gcm16-prfsha256-x25519"],
                                      esp_proposals=["aes128gcm16"], fragmentation="yes")],
                        certs=[gwb.cert_path, sub.cert_path], cacerts=[root.cert_path],
                        keys=[gwb.key_path])
            path = tmp / "gwA.toml"
            path.write_text(espd_config(tmp, str(chain), gwa.key_path, root.cert_path,
                                        "manual" if initiator == "charon" else "on-demand",
                                        ip))
            daemon = netns.EspdProcess(topo.gw_a, str(path), str(tmp / "gwA.sock"),
                                       str(tmp / "gwA.log"), "gwA")
            daemon.start()
            daemon.wait_ready(timeout=30)
            with netns.Capture(topo.gw_a, netns.WAN_IF) as capture, \
                    charon.events() as events:
                if initiator == "charon":
                    charon.initiate("net")
                else:
                    netns.ping(topo.host_a, host_b, count=1, timeout=1)
                events.wait_up("child-updown", timeout=15)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    result = netns.ping(topo.host_a, host_b, count=3, interval=0.05,
                                        timeout=2)
                    if result.received == 3:
                        break
            assert result.received == 3, (result, daemon.log())
            wire = ike_on_the_wire(capture.frames)

            # no IP fragment, no IKE datagram above the fragment size, either way
            assert not [m for m in wire if m.ip_fragment], "IP fragments on the wire"
            assert max(m.ip_length for m in wire) <= FRAGMENT_SIZE, \
                sorted((m.src, m.ip_length) for m in wire)
            # IKE_AUTH both ways in fragments 1..N (N >= 2), each set from its sender
            auth = [m for m in wire if m.exchange == IKE_AUTH]
            espd_auth = [m for m in auth if m.src == espd_address]
            charon_auth = [m for m in auth if m.src == charon_address]
            for sent in (espd_auth, charon_auth):
                numbers = {m.skf for m in sent}
                assert None not in numbers, "an IKE_AUTH message went out whole"
                total = next(iter(numbers))[1]
                assert total >= 2 and numbers == {(n, total) for n in range(1, total + 1)}
            assert all(m.response == (initiator == "charon") for m in espd_auth)
            for who, sent in (("espd", espd_auth), ("charon", charon_auth)):
                print(f"{who} IKE_AUTH: {len(sent)} SKF datagrams, IP sizes "
                      f"{[m.ip_length for m in sent]}")

            # espd's fragments open one by one with charon's keys; together: IKE_AUTH
            keys, _ = first_sa_keys(charon)
            opened = sorted({open_fragment(m, keys) for m in espd_auth})
            assert [n for n, *_ in opened] == list(range(1, len(opened) + 1))
            first_type = opened[0][2]
            assert all(t == 0 for _, _, t, _ in opened[1:])  # RFC 7383 2.5
            chain_types = [t for t, _ in payload_chain(first_type,
                                                       b"".join(i for *_, i in opened))]
            id_type, cert, auth_type = (36, 37, 39) if initiator == "charon" else (35, 37, 39)
            assert chain_types[0] == id_type and chain_types.count(cert) == 2, chain_types
            assert auth_type in chain_types and 44 in chain_types and 45 in chain_types

            deadline = time.monotonic() + 5  # the daemon refreshes its IKE view every few s
            while True:
                counters = daemon.state()["ike"]["counters"]
                if "messages_fragmented" in counters or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert counters.get("messages_fragmented", 0) >= 1, counters
            assert counters.get("messages_reassembled", 0) >= 1, counters
            assert counters.get("fragments_sent", 0) == len({m.skf for m in espd_auth})
            charon.wait_log(r"splitting IKE message \(\d+ bytes\) into \d+ fragments")
            charon.wait_log(r"reassembled fragmented IKE message")
        finally:
            close_with_espd(daemon, charon, tmp)
