"""A NAT that restarts under traffic (RFC 7296 2.23): an espd responder keyed by IKEv2,
the initiator (espd, or strongSwan's charon 5.9.8) behind an nftables masquerade whose
mappings are flushed (and whose port range changes, so the new mapping really has another
port) while pings flow through the tunnel.

  [ha 10.1.0.10] - [ga espd|charon 172.16.0.2] - [nat 172.16.0.1 | 198.51.100.1] -
                   [gb espd 198.51.100.2] - [hb 10.2.0.10]

The responder gb is not behind the NAT and its peer is, so it follows: the first
authenticated ESP from the new port moves its Child SA and IKE SA there, and the tunnel
goes on with a bounded loss (measured and printed). A forged packet (bad ICV) from yet
another port moves nothing. ga, behind the NAT, sends the NAT keepalives; gb sends none.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from support import netns
from support.ike_configs import psk_gateway
from support.strongswan import DEBIAN, Charon, site_to_site

from espd.cli.demo.namespaces import (
    add_address,
    add_netns,
    add_route,
    add_veth,
    delete_netns,
    ns_run,
    sysctl,
)

pytestmark = pytest.mark.netns

GA, NAT_IN, NAT_OUT, GB = "172.16.0.2", "172.16.0.1", "198.51.100.1", "198.51.100.2"
HA, GA_LAN, GB_LAN, HB = "10.1.0.10", "10.1.0.1", "10.2.0.1", "10.2.0.10"
PING_INTERVAL = 0.02  # s: 50 echoes a second through the tunnel
MAX_LOST = 10  # echoes lost across one NAT flush (about 0.2 s of traffic)


def config(side: str, tmp: Path, psk: str, local: str, peer: str, mine: str,
           theirs: str) -> str:
    other = "b" if side == "a" else "a"
    start = "immediate" if side == "a" else "manual"
    return psk_gateway(
        f"gw{side}", tmp, psk, local, peer, mine, theirs, daemon="nat_keepalive = 1",
        ike_peer=f'local_id = "fqdn:gw{side}"\nremote_id = "fqdn:gw{other}"',
        entry=f'start = "{start}"')


class Topology:
    """Five namespaces: ha - ga - nat - gb - hb (names with this run's unique tag)."""

    def __init__(self) -> None:
        tag = f"espd-{os.getpid()}-nf{secrets.randbelow(10**5)}"
        self.ha, self.ga, self.nat, self.gb, self.hb = (
            f"{tag}-{n}" for n in ("ha", "ga", "nat", "gb", "hb"))
        self.created: list[str] = []

    def __enter__(self) -> Topology:
        try:
            for ns in (self.ha, self.ga, self.nat, self.gb, self.hb):
                add_netns(ns)
                self.created.append(ns)
            for ns in (self.ga, self.nat, self.gb):
                sysctl(ns, "net.ipv4.ip_forward", 1)
            add_veth(self.ha, "lan", self.ga, "lan")
            add_veth(self.ga, "wan", self.nat, "in")
            add_veth(self.nat, "out", self.gb, "wan")
            add_veth(self.gb, "lan", self.hb, "lan")
            for ns, ifname, address in (
                    (self.ha, "lan", HA), (self.ga, "lan", GA_LAN), (self.ga, "wan", GA),
                    (self.nat, "in", NAT_IN), (self.nat, "out", NAT_OUT),
                    (self.gb, "wan", GB), (self.gb, "lan", GB_LAN), (self.hb, "lan", HB)):
                add_address(ns, ifname, f"{address}/24")
            add_route(self.ha, "default", GA_LAN)
            add_route(self.hb, "default", GB_LAN)
            add_route(self.ga, "default", NAT_IN)  # gb knows only the NAT's outside
            self.masquerade("")
        except BaseException:
            self.__exit__()
            raise
        return self

    def masquerade(self, ports: str) -> None:
        """Masquerade what leaves "out"; UDP to source ports `ports` if given."""
        udp = f'  oifname "out" meta l4proto udp masquerade to :{ports}\n' if ports else ""
        ns_run(self.nat, ["nft", "-f", "-"], input=(
            "flush ruleset\n"
            "table ip nat {\n"
            " chain post { type nat hook postrouting priority srcnat; policy accept;\n"
            f'{udp}  oifname "out" masquerade\n'
            " }\n}\n"))

    def flush(self) -> None:
        ns_run(self.nat, ["conntrack", "-F"], check=False)  # exits 1 when there was none

    def __exit__(self, *exc) -> None:
        for ns in reversed(self.created):
            delete_netns(ns)
        self.created.clear()


class Pinger:
    """`ping -D` from one namespace in the background: every echo's sequence number and
    the time its reply came (CLOCK_REALTIME, as ping prints it)."""

    def __init__(self, ns: str, dst: str, count: int) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "ping", "-D", "-n", "-i", str(PING_INTERVAL),
             "-c", str(count), "-W", "1", dst], stdout=subprocess.PIPE, text=True)
        self.count = count
        self.replies: dict[int, float] = {}
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = re.match(r"\[(\d+\.\d+)\] .* icmp_seq=(\d+) ", line)
            if m:
                self.replies.setdefault(int(m.group(2)), float(m.group(1)))

    def wait(self) -> None:
        self.proc.wait(timeout=self.count * PING_INTERVAL + 30)
        self.reader.join(timeout=5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)

    def lost_between(self, start: float, end: float) -> list[int]:
        """Sequence numbers without a reply, between replies at `start` and `end`."""
        before = [s for s, t in self.replies.items() if t < start]
        after = [s for s, t in self.replies.items() if t > end]
        lo, hi = max(before, default=0), min(after, default=self.count + 1)
        return [s for s in range(lo + 1, hi) if s not in self.replies]


@contextlib.contextmanager
def gateways(topo: Topology, tmp: Path, initiator: str):
    """gb, an espd daemon, and ga: an espd daemon or (initiator "charon") strongSwan's
    charon 5.9.8, which initiates at once. Yields (ga's EspdProcess or None, gb)."""
    psk = secrets.token_hex(16)
    running, charon = [], None
    sides = [("b", topo.gb, GB, NAT_OUT, "10.2.0.0/16", "10.1.0.0/16")]
    if initiator == "espd":
        sides.append(("a", topo.ga, GA, GB, "10.1.0.0/16", "10.2.0.0/16"))
    try:
        for side, ns, local, peer, mine, theirs in sides:
            path = tmp / f"gw{side}.toml"
            path.write_text(config(side, tmp, psk, local, peer, mine, theirs))
            path.chmod(0o600)
            daemon = netns.EspdProcess(ns, str(path), str(tmp / f"gw{side}.sock"),
                                       str(tmp / f"gw{side}.log"), f"gw{side}")
            running.append(daemon)
            daemon.start()
            daemon.wait_ready(timeout=30)
        if initiator == "charon":
            charon = Charon(topo.ga, "gwa", DEBIAN).start()
            charon.load([site_to_site(
                "a", psk, local_addrs=[GA], remote_addrs=[GB],
                proposals=["aes256gcm16-prfsha384-x25519"], esp_proposals=["aes256gcm16"])])
            with charon.events() as events:
                charon.initiate("net")
                events.wait_up("child-updown", timeout=15)
        yield (running[1] if len(running) > 1 else None), running[0]
    finally:
        if charon is not None:
            print(charon.describe(tail=3000))
            charon.close()
        for daemon in running:
            status = daemon.stop()
            print(daemon.log(20000))
            assert status == 0


def responder_view(gb) -> tuple[str, set[int]]:
    """gb's IKE SA remote endpoint and the ports its Child SAs send to / expect."""
    state = gb.state()
    [ike] = [s for s in state["ike"]["sas"] if s["state"] == "established"]
    return ike["remote"], {sa["peer_port"] for sa in state["sas"]}


def show(ns: str, sock: str, *what: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "espd", "show",
                           *what, "--socket", sock], capture_output=True, text=True,
                          timeout=20).stdout


def wait_tunnel(topo: Topology) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if netns.ping(topo.ha, HB, count=1, timeout=0.5).received:
            return
    raise AssertionError("the tunnel did not come up through the NAT")


def udp_esp(frames, src: str, dst: str):
    """(time, source port, destination port) of the ESP-in-UDP frames (no keepalives,
    no IKE) from `src` to `dst` in a capture."""
    out = []
    for when, frame, _ in frames:
        ip = frame[14:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        hl = (ip[0] & 0x0F) * 4
        sport, dport = struct.unpack_from("!HH", ip, hl)
        body = ip[hl + 8:]
        if (socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])) == (src, dst) and \
                len(body) > 8 and body[:4] != bytes(4):
            out.append((when, sport, dport))
    return out


def follow_times(frames, ports: list[int]) -> list[tuple[float, int]]:
    """Per new port: ms from the first ESP gb received from it to the first ESP gb sent to
    it, and how many ESP packets gb sent to an old port in between (lost at the NAT)."""
    inbound, outbound = udp_esp(frames, NAT_OUT, GB), udp_esp(frames, GB, NAT_OUT)
    out = []
    for port in ports:
        first_in = min(t for t, sport, _ in inbound if sport == port)
        first_out = min(t for t, _, dport in outbound if dport == port)
        stale = sum(1 for t, _, dport in outbound if first_in <= t < first_out and dport != port)
        out.append(((first_out - first_in) * 1000, stale))
    return out


def forge_esp(ns: str, dst: str, spi: int, sport: int) -> None:
    """ESP in UDP for `spi` with a sequence number far ahead and a wrong ICV, from the
    NAT's own address (what a spoofer in front of it could send). The masquerade maps
    `sport` to a free port of its range: never the one the tunnel's mapping holds."""
    sock = netns.socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM, 0)
    with sock:
        sock.bind(("0.0.0.0", sport))
        sock.sendto(struct.pack("!II", spi, 1 << 30) + os.urandom(8 + 64 + 16), (dst, 4500))


@pytest.mark.parametrize("initiator", ["espd", "charon"])
def test_responder_follows_the_initiator_through_nat_flushes(netns_ok, initiator):
    for tool in ("nft", "conntrack", "ping"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (make deb-deps)")
    if initiator == "charon" and DEBIAN.unavailable():
        pytest.skip(DEBIAN.unavailable())
    tmp = Path(tempfile.mkdtemp(prefix="espd-nat-"))
    try:
        with Topology() as topo, gateways(topo, tmp, initiator) as (ga, gb):
            wait_tunnel(topo)
            remote, ports = responder_view(gb)
            assert remote == f"{NAT_OUT}:4500" and ports == {4500}, (remote, ports)
            if ga is not None:
                ike_a = [s for s in ga.state()["ike"]["sas"] if s["state"] == "established"]
                assert ike_a and ike_a[0]["nat"], ike_a  # both ends saw the NAT

            capture = netns.Capture(topo.gb, "wan").__enter__()
            pinger = Pinger(topo.ha, HB, count=int(12 / PING_INTERVAL))
            try:
                results = []
                for n, ports_range in enumerate(("20000-20999", "21000-21999")):
                    time.sleep(3)
                    topo.masquerade(ports_range)
                    flushed = time.time()
                    topo.flush()
                    deadline = time.monotonic() + 5
                    while time.monotonic() < deadline:
                        remote, ports = responder_view(gb)
                        if remote != f"{NAT_OUT}:4500" and \
                                int(remote.rsplit(":", 1)[1]) // 1000 == 20 + n:
                            break
                        time.sleep(0.01)
                    followed = time.time()
                    port = int(remote.rsplit(":", 1)[1])
                    assert 20000 + 1000 * n <= port < 21000 + 1000 * n, (remote, gb.log())
                    assert ports == {port}, (ports, port)  # Child SAs follow with the IKE SA
                    results.append((port, flushed, followed))
                pinger.wait()
            finally:
                pinger.stop()
                frames = capture.stop()
            for (ms, stale), (port, _, _) in zip(follow_times(frames, [r[0] for r in results]),
                                                 results, strict=True):
                print(f"gb followed to port {port}: its first ESP there {ms:.1f} ms after "
                      f"the first authenticated ESP from there; {stale} sent to the old port "
                      "meanwhile")
                assert ms < 500 and stale <= MAX_LOST, (ms, stale)
            first_reply_after = []
            for port, flushed, followed in results:
                lost = pinger.lost_between(flushed - 0.5, followed + 0.5)
                after = min((t for t in pinger.replies.values() if t > flushed), default=None)
                first_reply_after.append(after)
                gap = (after - flushed) if after else None
                print(f"NAT flush to port {port}: {len(lost)} echoes lost "
                      f"(seq {lost}); first reply {gap and round(gap * 1000)} ms after the "
                      f"flush; show followed within {round((followed - flushed) * 1000)} ms")
                assert len(lost) <= MAX_LOST, (lost, gb.log())
            sent = pinger.count
            received = len(pinger.replies)
            print(f"{received}/{sent} echoes answered over 12 s with two NAT flushes")
            assert received >= sent - 2 * MAX_LOST

            shown = show(topo.gb, str(tmp / "gwb.sock"), "sa")
            assert f"current_peer: {NAT_OUT} port {results[-1][0]}" in shown, shown
            assert f"{NAT_OUT}/{results[-1][0]}" in show(topo.gb, str(tmp / "gwb.sock"),
                                                         "ike", "sa"), shown

            # a forged packet from another port moves nothing
            state = gb.state()
            [inbound] = [sa for sa in state["sas"] if sa["direction"] == "in"]
            forge_esp(topo.nat, GB, inbound["spi"], 33333)
            time.sleep(1.5)
            remote, ports = responder_view(gb)
            assert remote == f"{NAT_OUT}:{results[-1][0]}" and ports == {results[-1][0]}
            [inbound] = [sa for sa in gb.state()["sas"] if sa["direction"] == "in"]
            assert inbound["drops"].get("auth_failed", 0) >= 1, inbound
            assert netns.ping(topo.ha, HB, count=3, interval=0.05, timeout=2).received == 3

            # the side behind the NAT keeps it open; the other has nothing to keep
            assert gb.state()["nat_keepalives"] == 0
            if ga is not None:
                assert ga.state()["nat_keepalives"] > 0
            counters = gb.state()["ike"]["counters"]
            assert counters.get("peer_moves_esp", 0) + counters.get("peer_moves_ike", 0) >= 2
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
