"""The punt path for IKE on UDP 4500 (RFC 3948 2.2) and sending IKE on the same socket.

- A datagram with the non-ESP marker is not decapsulated: its IKE message (marker
  stripped), addresses and ports reach the control plane through the punt queue.
- Through real worker threads and a real UDP socket pair on loopback: the datagram
  arrives via recvmmsg, the punt fd turns readable, and send_ike answers from the data
  plane's own socket (same source port) with the marker in front.
- A full queue (256 datagrams, or 1 MiB) drops and counts (punt_full); never blocks.
"""

from __future__ import annotations

import select
import socket
import struct

import pytest
from support.packets import DF, IPPROTO_UDP, ipv4, ipv6, udp

from espd.dataplane import Dataplane, DataplaneError, DropError

PEER, LOCAL = "198.51.100.7", "203.0.113.1"
PEER6, LOCAL6 = "2001:db8::7", "2001:db8::1"
MARKER = b"\0\0\0\0"


def udp4(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    return ipv4(src, dst, IPPROTO_UDP, udp(sport, dport, payload), ident=0, flags_frag=DF)


def udp6(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    return ipv6(src, dst, IPPROTO_UDP, udp(sport, dport, payload))


def ike(n: int, size: int = 60) -> bytes:
    """A stand-in IKE header + body: 8-byte SPIi that is never zero, then filler."""
    return struct.pack("!Q", 0x1122334455660000 + n) + bytes([n % 256]) * (size - 8)


def test_marker_datagram_is_punted_with_addresses_and_ports() -> None:
    dp = Dataplane()
    msg = ike(1)
    with pytest.raises(DropError) as e:
        dp.decap(udp4(PEER, LOCAL, 31000, 4500, MARKER + msg))
    assert e.value.reason == "non_esp_marker"
    (got,) = dp.punted()
    assert (got.src, got.sport, got.dst, got.dport, got.data) == (PEER, 31000, LOCAL, 4500, msg)
    with pytest.raises(DropError):
        dp.decap(udp6(PEER6, LOCAL6, 4500, 4500, MARKER + msg))
    (got6,) = dp.punted()
    assert (got6.src, got6.sport, got6.dst, got6.dport, got6.data) == (
        PEER6, 4500, LOCAL6, 4500, msg)
    assert dp.punted() == []
    assert dp.punt_stats() == {"punted": 2, "dropped": 0, "queued": 0}
    assert "non_esp_marker" not in dp.global_drops()["in"]  # punted is not a drop


def test_keepalive_and_short_datagrams_are_not_punted() -> None:
    dp = Dataplane()
    for payload, reason in ((b"\xff", "nat_keepalive"), (b"\0\0\0", "malformed")):
        with pytest.raises(DropError) as e:
            dp.decap(udp4(PEER, LOCAL, 4500, 4500, payload))
        assert e.value.reason == reason
    assert dp.punted() == [] and dp.punt_stats()["punted"] == 0


def test_punt_fd_readable_only_while_datagrams_wait() -> None:
    dp = Dataplane()
    fd = dp.punt_fd()
    assert select.select([fd], [], [], 0)[0] == []
    for n in range(3):
        with pytest.raises(DropError):
            dp.decap(udp4(PEER, LOCAL, 4500, 4500, MARKER + ike(n)))
    assert select.select([fd], [], [], 0)[0] == [fd]
    assert [p.data for p in dp.punted(limit=2)] == [ike(0), ike(1)]
    assert select.select([fd], [], [], 0)[0] == [fd]  # one still waits
    assert [p.data for p in dp.punted()] == [ike(2)]
    dp.punted()  # an empty read settles the fd
    assert select.select([fd], [], [], 0)[0] == []


def test_full_queue_drops_and_counts_by_count_and_by_bytes() -> None:
    dp = Dataplane()
    for n in range(256):
        with pytest.raises(DropError) as e:
            dp.decap(udp4(PEER, LOCAL, 4500, 4500, MARKER + ike(n)))
        assert e.value.reason == "non_esp_marker"
    with pytest.raises(DropError) as e:
        dp.decap(udp4(PEER, LOCAL, 4500, 4500, MARKER + ike(999)))
    assert e.value.reason == "punt_full"
    assert dp.punt_stats() == {"punted": 256, "dropped": 1, "queued": 256}
    assert dp.global_drops()["in"]["punt_full"] == 1
    got = dp.punted(limit=1000)
    assert [p.data for p in got] == [ike(n) for n in range(256)]  # oldest first, none lost

    big = 60000  # 17 of these pass 1 MiB
    results = [dp.decap_batch([udp4(PEER, LOCAL, 4500, 4500, MARKER + ike(n, big))])[0]
               for n in range(20)]
    reasons = [r.reason for r in results if isinstance(r, DropError)]
    assert reasons == ["non_esp_marker"] * 17 + ["punt_full"] * 3
    assert len(dp.punted()) == 17 and dp.punt_stats()["dropped"] == 4


def test_send_ike_without_workers_is_refused() -> None:
    dp = Dataplane()
    with pytest.raises(DataplaneError, match="wrong state"):
        dp.send_ike("127.0.0.1", "127.0.0.1", 4500, ike(1))
    with pytest.raises(DataplaneError, match="family"):
        dp.send_ike("127.0.0.1", "::1", 4500, ike(1))


def test_workers_punt_from_a_real_socket_and_send_ike_answers_from_it() -> None:
    """A peer's UDP socket talks IKE to the data plane's NAT-T socket through the kernel."""
    dp = Dataplane()
    natt = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    natt.bind(("127.0.0.1", 0))  # an ephemeral NAT-T port: punted dport must report it
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(5)
    tun_dp, tun_test = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        dp.start_workers([tun_dp.fileno()], udp4=natt.fileno())
        natt_port, peer_port = natt.getsockname()[1], peer.getsockname()[1]
        msgs = [ike(n, 40 + n) for n in range(5)]
        for m in msgs:
            peer.sendto(MARKER + m, ("127.0.0.1", natt_port))
        got: list = []
        while len(got) < len(msgs):
            assert select.select([dp.punt_fd()], [], [], 5)[0], f"only {len(got)} punted"
            got += dp.punted()
        assert [p.data for p in got] == msgs
        assert {(p.src, p.sport, p.dst, p.dport) for p in got} == {
            ("127.0.0.1", peer_port, "127.0.0.1", natt_port)}
        assert dp.io_stats()["net_rx"] == len(msgs)

        reply = ike(77, 300)
        dp.send_ike("127.0.0.1", "127.0.0.1", peer_port, reply)
        data, source = peer.recvfrom(65536)
        assert data == MARKER + reply
        assert source == ("127.0.0.1", natt_port)  # the same socket: the NAT mapping holds
    finally:
        dp.stop_workers()
        for s in (natt, peer, tun_dp, tun_test):
            s.close()
    with pytest.raises(DataplaneError, match="wrong state"):  # workers gone: socket too
        dp.send_ike("127.0.0.1", "127.0.0.1", 4500, ike(1))


def test_the_owner_hands_a_loop_turn_its_batch_of_punted_datagrams(tmp_path) -> None:
    """drain_punted: a client with on_ike_datagrams (the IKE engine, which orders and
    budgets them) gets one batch per call (at most the queue's 256); one with only
    on_ike_datagram gets them one by one."""
    from espd.keying.owner import SaOwner
    from espd.keying.sequence_store import SequenceStore

    dp = Dataplane()
    owner = SaOwner(dp, SequenceStore(str(tmp_path)))

    class Batched:
        def __init__(self) -> None:
            self.batches: list[list] = []

        def on_ike_datagrams(self, batch) -> None:
            self.batches.append(batch)

    class Single:
        def __init__(self) -> None:
            self.got: list[tuple] = []

        def on_ike_datagram(self, *datagram) -> None:
            self.got.append(datagram)

    batched, single = Batched(), Single()
    owner.subscribe(batched)
    owner.subscribe(single)
    for n in range(3):
        with pytest.raises(DropError):
            dp.decap(udp4(PEER, LOCAL, 31000 + n, 4500, MARKER + ike(n)))
    owner.drain_punted()
    assert batched.batches == [[(LOCAL, 4500, PEER, 31000 + n, ike(n)) for n in range(3)]]
    assert single.got == batched.batches[0]
    owner.drain_punted()  # nothing waits: no empty batch
    assert len(batched.batches) == 1
