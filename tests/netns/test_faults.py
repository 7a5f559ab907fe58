"""Faults a gateway must survive: the underlay link going down, the peer going away, sends
that fail, config files that vanish or are corrupt, a reload that fails half-way.

  [hostA] -- [gwA, faults injected here] ==underlay, captured on gwB's wan0== [gwB] -- [hostB]

Every test gives both gateways a default route across the underlay (to the other gateway)
plus the operator's own "never in clear" routes (docs/operations.md: blackholes for the
remote protected prefixes at a metric behind espd's). Without a default route a leak could
not happen in this topology at all, so "no cleartext on the underlay" would prove nothing;
with it, any protected packet that escapes espd's routes crosses gwB's wan0 in clear and
the capture sees it.

Reload failures in the data plane itself: the only ways espdp_publish / espdp_table_add_*
refuse a table set that passed the config checks are out-of-memory and a duplicate inbound
(SPI, local address) in the SAD (native/sad.c:sad_build). The config checks already refuse
duplicate inbound SPIs globally (model.assemble), which is stricter than the SAD's
(SPI, local) key, and everything espdp_sa_create checks (SPI range, window <= 65536, key
lengths, address families) is checked earlier by the config loader. So no config passes
validation and then fails in the data plane; the fail-safe path is exercised at a later
stage instead: a reload that loads and plans, creates some of its new SAs, and then cannot
persist the sequence-number reservation of a new outbound SA (keying.owner.SaOwner._create ->
SequenceStore.reserve raises OSError -> ReloadFailed).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from support import netns
from support.netns import (
    GW_A_WAN4,
    GW_A_WAN6,
    GW_B_WAN4,
    GW_B_WAN6,
    HOST_A4,
    HOST_B4,
    HOST_B6,
    WAN_IF,
    Capture,
    UdpFlow,
    analyze,
)

pytestmark = pytest.mark.netns

REMOTE = {"a": ("10.2.0.0/16", "fd00:2::/64"), "b": ("10.1.0.0/16", "fd00:1::/64")}
OPERATOR_BLACKHOLE_METRIC = 8192  # behind espd's own blackholes (4096)


# -- helpers ---------------------------------------------------------------------------------

def harden(tunnel) -> None:
    """Default routes across the underlay and the operator's static blackholes."""
    topo = tunnel.topo
    for ns, side, v4, v6 in ((topo.gw_a, "a", GW_B_WAN4, GW_B_WAN6),
                             (topo.gw_b, "b", GW_A_WAN4, GW_A_WAN6)):
        default_routes(ns, v4, v6)
        for prefix in REMOTE[side]:
            netns.ip(ns, "-6" if ":" in prefix else "-4", "route", "replace", "blackhole",
                     prefix, "metric", str(OPERATOR_BLACKHOLE_METRIC))


def default_routes(ns: str, v4: str, v6: str) -> None:
    netns.add_route(ns, "default", v4)
    netns.add_route(ns, "default", v6)


def icmp_error_about_esp(frame: bytes) -> bool:
    """An ICMP/ICMPv6 error between the gateways quoting an ESP (or UDP 4500) packet."""
    from scapy.layers.inet import ICMP, IP, IPerror, UDPerror
    from scapy.layers.inet6 import IPerror6, IPv6
    from scapy.layers.l2 import Ether

    pkt = Ether(frame)
    if IP in pkt and ICMP in pkt and pkt[ICMP].type in (3, 11, 12) and IPerror in pkt:
        quoted = pkt[IPerror]
        return quoted.proto == 50 or (quoted.proto == 17 and UDPerror in pkt
                                      and 4500 in (pkt[UDPerror].sport, pkt[UDPerror].dport))
    if IPv6 in pkt and pkt[IPv6].nh == 58 and IPerror6 in pkt:
        return pkt[IPerror6].nh in (50, 17)
    return False


def check_underlay(frames) -> netns.Analysis:
    """Nothing protected in clear; nothing but ESP and ICMP errors about ESP."""
    analysis = analyze(frames)
    assert not analysis.cleartext, f"protected traffic in clear on the underlay: " \
                                   f"{analysis.cleartext[:5]}"
    if analysis.other:
        strange = [f for f in frames if not _known(f[1])]
        assert not strange, f"neither ESP nor an ICMP error about ESP: {analysis.other[:5]}"
    return analysis


def _known(frame: bytes) -> bool:
    one = analyze([(0.0, frame, 0)])
    return not one.other or icmp_error_about_esp(frame)


def wait_flowing(flow: UdpFlow, more: int = 50, timeout: float = 5.0) -> int:
    """Wait until ``more`` datagrams arrived beyond the current count; the seconds taken."""
    start = time.monotonic()
    target = flow.count() + more
    while flow.count() < target:
        assert time.monotonic() - start < timeout, \
            f"traffic to {flow.dst} did not flow: {flow.count()} of {target} after {timeout} s"
        time.sleep(0.02)
    return time.monotonic() - start


def wait_until(what: str, predicate, timeout: float = 5.0, daemon=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what} within {timeout} s" +
                         (f"; {daemon.name} log:\n{daemon.log()}" if daemon else ""))


def alive(daemon: netns.EspdProcess) -> None:
    assert daemon.proc is not None and daemon.proc.poll() is None, \
        f"{daemon.name} exited ({daemon.proc.returncode}); log:\n{daemon.log()}"


def out_sa(daemon: netns.EspdProcess, seq: int = 10) -> dict:
    (sa,) = [s for s in daemon.state()["sas"] if s["seq"] == seq and s["direction"] == "out"]
    return sa


def in_sa(daemon: netns.EspdProcess, seq: int = 10) -> dict:
    (sa,) = [s for s in daemon.state()["sas"] if s["seq"] == seq and s["direction"] == "in"]
    return sa


def seqs_of(analysis: netns.Analysis, spi: int, after: float = 0.0, before: float = 1e18):
    return [p.seq for p in analysis.esp if p.spi == spi and after <= p.time <= before]


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    tmp.replace(path)


def reload_and_wait(daemon: netns.EspdProcess, key: str) -> dict:
    before = daemon.state()["reloads"]
    daemon.reload()
    state = wait_until(f"{daemon.name}: a reload {key}",
                       lambda: (s := daemon.state())["reloads"][key] > before[key] and s,
                       timeout=10, daemon=daemon)
    other = "failure" if key == "success" else "success"
    assert state["reloads"][other] == before[other], (before, state["reloads"])
    return state


# -- 0. the harness: would a leak be seen? ------------------------------------------------------

def test_capture_sees_a_leak_that_routing_allows(make_tunnel):
    """What the "no cleartext" checks below rest on. After a clean stop espd withdraws its
    routes and blackholes (docs/operations.md), so with a default route across the underlay
    protected traffic leaves in clear, and the capture must see it; the operator's static
    blackholes (harden) are what keep it in."""
    tunnel = make_tunnel()
    topo, gw_a = tunnel.topo, tunnel.gw_a
    default_routes(topo.gw_a, GW_B_WAN4, GW_B_WAN6)
    assert gw_a.stop() == 0, gw_a.log()
    with Capture(topo.gw_b, WAN_IF) as capture:
        netns.ping(topo.host_a, HOST_B4, count=2, interval=0.1, timeout=0.5)
    leaked = analyze(capture.frames).cleartext
    assert leaked, "a ping routed in clear across the underlay was not seen"
    harden(tunnel)
    with Capture(topo.gw_b, WAN_IF) as capture:
        result = netns.ping(topo.host_a, HOST_B4, count=2, interval=0.1, timeout=0.5)
    assert result.received == 0
    check_underlay(capture.frames)
    gw_a.start()  # the fixture stops it
    gw_a.wait_ready(timeout=30)


# -- 1. the underlay link goes down and comes back --------------------------------------------

def test_underlay_link_down_and_up(make_tunnel):
    tunnel = make_tunnel()
    harden(tunnel)
    topo, gw_a = tunnel.topo, tunnel.gw_a
    pid = gw_a.pid
    with Capture(topo.gw_b, WAN_IF) as capture, \
            UdpFlow(topo.host_a, topo.host_b, HOST_B4, port=7401) as flow, \
            UdpFlow(topo.host_a, topo.host_b, HOST_B6, port=7402, interval=0.005) as flow6:
        wait_flowing(flow)
        wait_flowing(flow6, 20)
        errors = gw_a.state()["io"]["send_errors"]
        netns.ip(topo.gw_a, "link", "set", WAN_IF, "down")
        down = time.monotonic()
        time.sleep(1.5)
        alive(gw_a)
        state = gw_a.state()
        assert state["io"]["send_errors"] > errors + 100, \
            f"sends into a downed link not counted: {errors} -> {state['io']}"
        got = flow.count()
        time.sleep(0.3)
        assert flow.count() == got, "traffic arrived across a link that is down"
        netns.ip(topo.gw_a, "link", "set", WAN_IF, "up")
        up = time.monotonic()
        # IPv4 keeps its address and gets its connected route back with the link; IPv6
        # addresses (keep_addr_on_down=0) and the routes through the link are gone
        addresses = netns.ip(topo.gw_a, "-6", "addr", "show", "dev", WAN_IF).stdout
        if GW_A_WAN6 not in addresses:
            netns.add_address(topo.gw_a, WAN_IF, f"{GW_A_WAN6}/64")
        default_routes(topo.gw_a, GW_B_WAN4, GW_B_WAN6)
        took = wait_flowing(flow, 100, timeout=10)
        wait_flowing(flow6, 20, timeout=10)
        assert gw_a.pid == pid
        alive(gw_a)
    analysis = check_underlay(capture.frames)
    spi = out_sa(gw_a)["spi"]
    before, after = seqs_of(analysis, spi, before=down), seqs_of(analysis, spi, after=up)
    assert before and after and min(after) > max(before), "sequence numbers went back"
    print(f"traffic resumed {took:.2f} s after the link came up")


# -- 2. the peer goes away and comes back -----------------------------------------------------

def test_peer_gone_and_back(make_tunnel):
    tunnel = make_tunnel()
    harden(tunnel)
    topo, gw_a, gw_b = tunnel.topo, tunnel.gw_a, tunnel.gw_b
    spi = out_sa(gw_a)["spi"]
    with Capture(topo.gw_b, WAN_IF) as capture, \
            UdpFlow(topo.host_a, topo.host_b, HOST_B4, port=7411) as flow:
        wait_flowing(flow)
        assert gw_b.stop() == 0, gw_b.log()
        gone = time.monotonic()
        seq_gone = out_sa(gw_a)["sequence"]
        got = flow.count()
        time.sleep(1.5)
        alive(gw_a)
        # gwA keeps sealing and sending into the void
        assert out_sa(gw_a)["sequence"] > seq_gone + 200
        assert flow.count() - got < 5, "traffic arrived with the peer gone"
        back = time.monotonic()
        gw_b.start()
        gw_b.wait_ready(timeout=30)
        wait_flowing(flow, 100, timeout=10)
        alive(gw_a)
    analysis = check_underlay(capture.frames)
    while_gone = seqs_of(analysis, spi, after=gone + 0.1, before=back)
    assert len(while_gone) > 200, "no ESP from gwA while its peer was gone"
    seqs = seqs_of(analysis, spi)
    assert len(set(seqs)) == len(seqs), "gwA sent a sequence number twice"
    assert seqs == sorted(seqs), "gwA's sequence numbers did not keep rising"
    # gwB's restarted inbound SA (a fresh window) accepted the numbers gwA continued with
    inbound = in_sa(gw_b)
    assert inbound["spi"] == spi and inbound["packets"] > 100, inbound
    assert not inbound["drops"], inbound["drops"]


# -- 3. sends that fail -------------------------------------------------------------------------

@pytest.mark.parametrize("route", ["blackhole", "prohibit", "unreachable"])
def test_send_errors_are_counted_not_fatal(make_tunnel, route):
    tunnel = make_tunnel()
    harden(tunnel)
    topo, gw_a = tunnel.topo, tunnel.gw_a
    with Capture(topo.gw_b, WAN_IF) as capture, \
            UdpFlow(topo.host_a, topo.host_b, HOST_B4, port=7421) as flow:
        wait_flowing(flow)
        errors = gw_a.state()["io"]["send_errors"]
        netns.ip(topo.gw_a, "route", "add", route, f"{GW_B_WAN4}/32")
        time.sleep(0.2)  # packets already past the route lookup may still leave
        blocked = out_sa(gw_a)["sequence"]
        time.sleep(0.8)
        got = flow.count()
        time.sleep(0.5)
        alive(gw_a)
        state = gw_a.state()
        assert state["io"]["send_errors"] > errors + 200, (route, errors, state["io"])
        assert flow.count() == got, f"traffic passed a {route} route"
        unblocked = out_sa(gw_a)["sequence"]
        assert unblocked > blocked + 200
        netns.ip(topo.gw_a, "route", "del", route, f"{GW_B_WAN4}/32")
        wait_flowing(flow, 100)
        alive(gw_a)
    analysis = check_underlay(capture.frames)
    spi = out_sa(gw_a)["spi"]
    leaked = [q for q in seqs_of(analysis, spi) if blocked < q <= unblocked]
    assert not leaked, f"ESP left gwA through a {route} route: {leaked[:10]}"


def test_full_transmit_queue_is_survived(make_tunnel):
    """A token bucket at 64 kbit/s on gwA's underlay link drops nearly everything at the
    qdisc. The kernel hides qdisc drops from raw IP_HDRINCL sockets (raw_send_hdrinc turns
    ENOBUFS into success unless IP_RECVERR is set), so they need not show up as send errors:
    espd must stay up, leak nothing, and carry on once the queue drains."""
    import shutil

    if shutil.which("tc") is None:
        pytest.skip("tc is not installed")
    tunnel = make_tunnel()
    harden(tunnel)
    topo, gw_a = tunnel.topo, tunnel.gw_a
    with Capture(topo.gw_b, WAN_IF) as capture, \
            UdpFlow(topo.host_a, topo.host_b, HOST_B4, port=7431, size=1000,
                    interval=0.0005) as flow:
        wait_flowing(flow)
        result = netns.ns_run(topo.gw_a, ["tc", "qdisc", "replace", "dev", WAN_IF, "root",
                                          "tbf", "rate", "64kbit", "burst", "1600", "limit",
                                          "3000"], check=False)
        if result.returncode != 0:
            pytest.skip(f"tc tbf unavailable: {result.stderr.strip()}")
        time.sleep(0.5)
        sent, got = flow.sent, flow.count()
        time.sleep(1.0)
        alive(gw_a)
        passed = (flow.count() - got) / max(1, flow.sent - sent)
        assert passed < 0.2, f"{passed:.0%} passed a 64 kbit/s queue at ~16 Mbit/s"
        netns.ns_run(topo.gw_a, ["tc", "qdisc", "del", "dev", WAN_IF, "root"])
        wait_flowing(flow, 500)
        alive(gw_a)
        print(f"io while throttled and after: {gw_a.state()['io']}")
    check_underlay(capture.frames)


# -- 4. the config file deleted or corrupt at reload ------------------------------------------

def test_reload_refuses_missing_or_corrupt_config(make_tunnel):
    tunnel = make_tunnel()
    harden(tunnel)
    topo, gw_a = tunnel.topo, tunnel.gw_a
    config = Path(gw_a.config)
    good = config.read_bytes()
    text = good.decode()
    cut_in_string = text.index('outbound = { spi = 0x2002') + 40  # inside the hex key
    last_line = text.rstrip("\n").rsplit("\n", 1)[0] + "\n"  # entry 20 without outbound
    breakages = [
        ("deleted", None),
        ("garbage bytes", os.urandom(512) + b"\xff\xfe\x00"),
        ("binary zeros", b"\0" * 4096),
        ("truncated TOML", text[:cut_in_string].encode()),
        ("half-written, cut at a line", last_line.encode()),
        ("empty (opened, not yet written)", b""),
        ("valid TOML, no espd config", b"[x]\ny = 1\n"),
    ]
    with Capture(topo.gw_b, WAN_IF) as capture, \
            UdpFlow(topo.host_a, topo.host_b, HOST_B4, port=7441) as flow, \
            UdpFlow(topo.host_b, topo.host_a, HOST_A4, port=7442) as back:
        wait_flowing(flow)
        sas = {(s["seq"], s["direction"]): s["spi"] for s in gw_a.state()["sas"]}
        counter = out_sa(gw_a)["packets"]
        for what, data in breakages:
            if data is None:
                config.unlink()
            else:  # a file being written in place: no temporary file, no rename
                config.write_bytes(data)
            state = reload_and_wait(gw_a, "failure")
            assert {(s["seq"], s["direction"]): s["spi"] for s in state["sas"]} == sas, what
            now = out_sa(gw_a)["packets"]
            assert now >= counter, f"{what}: SA counters reset ({counter} -> {now})"
            counter = now
            wait_flowing(flow, 30), wait_flowing(back, 30)
            alive(gw_a)
        write_atomically(config, good)
        state = reload_and_wait(gw_a, "success")
        assert state["reloads"]["failure"] == len(breakages)
        assert out_sa(gw_a)["packets"] >= counter, "the good reload reset the counters"
        wait_flowing(flow), wait_flowing(back)
    assert "refused, old configuration still running" in gw_a.log(20000)
    analysis = check_underlay(capture.frames)
    for spi in (sas[(10, "out")],):
        seqs = seqs_of(analysis, spi)
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


# -- 5. a reload that fails half-way ---------------------------------------------------------

def test_reload_failing_half_way_keeps_old_tables(make_tunnel):
    """The new config loads and plans, replaces entry 10's SAs (a changed replay window),
    creates the new inbound SA, and then cannot persist the new outbound SA's sequence
    reservation: nothing of it may go live."""
    tunnel = make_tunnel()
    harden(tunnel)
    topo, gw_a = tunnel.topo, tunnel.gw_a
    config = Path(gw_a.config)
    good = config.read_text()
    assert good.count("replay_window = 1024") == 2
    changed = good.replace("replay_window = 1024", "replay_window = 2048", 1)
    seqdir = Path(tunnel.workdir) / "gwA-state" / "seq"
    spi = out_sa(gw_a)["spi"]
    moved = seqdir.with_name("seq.moved")
    assert (seqdir / f"out-{GW_B_WAN4}-{spi:08x}").exists(), sorted(os.listdir(seqdir))
    with Capture(topo.gw_b, WAN_IF) as capture, \
            UdpFlow(topo.host_a, topo.host_b, HOST_B4, port=7451) as flow, \
            UdpFlow(topo.host_b, topo.host_a, HOST_A4, port=7452) as back:
        wait_flowing(flow), wait_flowing(back)
        seqdir.rename(moved)  # the store's directory becomes a file: every write and
        seqdir.write_text("")  # read fails (ENOTDIR), even for root
        write_atomically(config, changed.encode())
        before = {(s["seq"], s["direction"]): s for s in gw_a.state()["sas"]}
        state = reload_and_wait(gw_a, "failure")
        failed_at = time.monotonic()
        after = {(s["seq"], s["direction"]): s for s in state["sas"]}
        assert {k: s["replay_window"] for k, s in after.items()} == \
               {k: s["replay_window"] for k, s in before.items()}, "the new SAs went live"
        for key, sa in after.items():
            assert sa["packets"] >= before[key]["packets"], f"{key}: counters reset"
            assert sa["sequence"] >= before[key]["sequence"], f"{key}: sequence went back"
        wait_flowing(flow), wait_flowing(back)
        # the same SA kept sending: its sequence numbers continue without a jump
        assert out_sa(gw_a)["sequence"] < before[(10, "out")]["sequence"] + 100000
        # a key file that becomes unusable (group-readable: refused) fails the load stage
        keyfile = Path(tunnel.workdir) / "gwA-in20.key"
        keyfile.write_text(_key_of(good, "0x1002") + "\n")
        keyfile.chmod(0o600)
        seqdir.unlink()
        moved.rename(seqdir)
        with_file = _use_key_file(good, "0x1002", keyfile)
        write_atomically(config, with_file.encode())
        reload_and_wait(gw_a, "success")  # the same key from a file: the SA is kept
        assert in_sa(gw_a, 20)["packets"] >= before[(20, "in")]["packets"]
        keyfile.chmod(0o644)
        reload_and_wait(gw_a, "failure")
        keyfile.unlink()
        reload_and_wait(gw_a, "failure")
        wait_flowing(flow), wait_flowing(back)
        # fixed: the replacement now goes through, above the stored reservation
        write_atomically(config, changed.encode())
        state = reload_and_wait(gw_a, "success")
        assert out_sa(gw_a)["replay_window"] == 2048
        wait_flowing(flow), wait_flowing(back)
        alive(gw_a)
    analysis = check_underlay(capture.frames)
    seqs = seqs_of(analysis, spi)
    assert len(set(seqs)) == len(seqs), "a sequence number was sent twice"
    kept = seqs_of(analysis, spi, after=failed_at)
    assert kept and kept[0] < 100000, "the failed reload replaced the outbound SA anyway"


def _key_of(text: str, spi: str) -> str:
    line = next(line for line in text.splitlines() if f"spi = {spi}," in line)
    return line.split('key = "', 1)[1].split('"', 1)[0]


def _use_key_file(text: str, spi: str, path: Path) -> str:
    key = _key_of(text, spi)
    return text.replace(f'key = "{key}"', f'key_file = "{path}"')

