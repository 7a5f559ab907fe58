"""Where IKE datagrams come from and go to.

UDP 500 is a socket of the engine's own. UDP 4500 carries IKE behind a 4-byte non-ESP
marker next to UDP-encapsulated ESP: in the daemon it is the data plane's socket (the
data plane punts marked datagrams to the owner, which hands them to the engine's
``on_ike_datagram``, and ``send_ike`` sends on the same socket and source port as ESP);
standalone (tests, the interop harness) the engine opens that socket itself.

Replies go from the local address and port a request came to, to the address and port it
came from (RFC 7296 2.11); the engine passes both endpoints to ``send``.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from collections.abc import Callable

from espd.ike.codec.natt import add_non_esp_marker, strip_non_esp_marker
from espd.ike.engine.intake import READ_BATCH, Intake
from espd.ike.sa.ike_sa import Endpoint

log = logging.getLogger("espd.ike")

Receiver = Callable[[bytes, Endpoint, Endpoint], None]
MAX_DATAGRAM = 65535
IP_FREEBIND = 15  # <linux/in.h>
IPV6_FREEBIND = 78  # <linux/in6.h>
SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>: past net.core.rmem_max (CAP_NET_ADMIN)
RECEIVE_BUFFER = 2 << 20  # bytes: a flood's burst queues here while a turn runs


class Transport:
    """The interface the engine sends through."""

    def attach(self, receiver: Receiver, intake: Intake | None = None) -> None:
        raise NotImplementedError

    def send(self, local: Endpoint, remote: Endpoint, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class UdpTransport(Transport):
    """One socket per (address, port) we listen on; ``nat_ports`` are the ports whose
    datagrams carry the non-ESP marker (4500). Sending picks the socket bound to the
    local endpoint (or the wildcard one of that port)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, bind: list[Endpoint],
                 nat_ports: tuple[int, ...] = (4500,),
                 send_nat: Callable[[str, str, int, bytes], None] | None = None) -> None:
        """``send_nat`` (the daemon: ``Dataplane.send_ike(local, peer, port, data)``, which
        adds the marker itself) sends what goes out from a NAT port; without it the engine
        binds that port itself (standalone). Received NAT-port IKE then arrives through
        the SA owner's ``on_ike_datagram``."""
        self.loop = loop
        self.nat_ports = nat_ports
        self.send_nat = send_nat
        self.sockets: dict[Endpoint, socket.socket] = {}
        self.receiver: Receiver | None = None
        self.intake: Intake | None = None
        self.send_errors = 0
        try:
            for endpoint in bind:
                self._bind(endpoint)
        except OSError:
            self.close()
            raise

    def _bind(self, endpoint: Endpoint) -> None:
        """Listen on ``endpoint``. IP_FREEBIND: an address the host does not have yet (a
        VRRP address, an interface still coming up) binds now and receives once it is
        there. Raises OSError naming the endpoint."""
        family = socket.AF_INET if endpoint.address.version == 4 else socket.AF_INET6
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:  # no SO_REUSEADDR: with it a second process could take over the port
            if family == socket.AF_INET:
                sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((str(endpoint.address), endpoint.port))
        except OSError as err:
            sock.close()
            hint = " (a port below 1024 needs root or CAP_NET_BIND_SERVICE)" if \
                err.errno == errno.EACCES else ""
            raise OSError(err.errno, f"IKE: cannot bind UDP {endpoint.port} on "
                                     f"{endpoint.address}: {err.strerror}{hint}") from None
        sock.setblocking(False)
        _large_receive_buffer(sock)
        bound = Endpoint(endpoint.address, sock.getsockname()[1])
        self.sockets[bound] = sock
        self.loop.add_reader(sock.fileno(), self._readable, sock, bound)

    def follow(self, bind: list[Endpoint]) -> list[str]:
        """A reload: listen on exactly ``bind`` (sockets for new endpoints opened, those
        no longer wanted closed; the rest untouched). Returns one line per endpoint that
        could not be bound (after privileges were dropped, a port below 1024 cannot be):
        the others still apply."""
        wanted = set(bind)
        for endpoint in [e for e in self.sockets if e not in wanted]:
            sock = self.sockets.pop(endpoint)
            self.loop.remove_reader(sock.fileno())
            sock.close()
        problems = []
        for endpoint in bind:
            if endpoint not in self.sockets:
                try:
                    self._bind(endpoint)
                except OSError as err:
                    problems.append(str(err.strerror if err.strerror else err))
        return problems

    @property
    def endpoints(self) -> list[Endpoint]:
        return list(self.sockets)

    def attach(self, receiver: Receiver, intake: Intake | None = None) -> None:
        """``intake`` (the engine's) orders and budgets what one loop turn handles;
        without it every datagram read is handled."""
        self.receiver, self.intake = receiver, intake

    def _readable(self, sock: socket.socket, local: Endpoint) -> None:
        """One batch per loop turn (engine/intake.py): what is left waits in the socket."""
        batch = []
        for _ in range(READ_BATCH):
            try:
                data, address = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as err:
                log.warning("IKE: receive error on %s: %s", local, err)
                break
            if local.port in self.nat_ports:
                stripped = strip_non_esp_marker(data)
                if stripped is None:  # a keepalive, or ESP where none is expected
                    continue
                data = stripped
            batch.append((data, local, (address[0].split("%")[0], address[1])))
        if self.intake is not None:
            self.intake.take(batch, self._deliver)
        else:
            for datagram in batch:
                self._deliver(*datagram)

    def _deliver(self, data: bytes, local: Endpoint, address: tuple[str, int]) -> None:
        if self.receiver is not None:  # looked up each time: tests wrap it
            self.receiver(data, local, Endpoint(ipaddress.ip_address(address[0]),
                                                address[1]))

    def send(self, local: Endpoint, remote: Endpoint, data: bytes) -> None:
        if self.send_nat is not None and local.port in self.nat_ports:
            try:
                self.send_nat(str(local.address), str(remote.address), remote.port, data)
            except (OSError, ValueError, RuntimeError) as err:
                self.send_errors += 1
                log.warning("IKE: send to %s through the data plane failed: %s", remote, err)
            return
        sock = self.sockets.get(local) or next(
            (s for e, s in self.sockets.items() if e.port == local.port
             and e.address.version == remote.address.version), None)
        if sock is None:
            self.send_errors += 1
            log.warning("IKE: no socket for %s; datagram to %s dropped", local, remote)
            return
        if local.port in self.nat_ports:
            data = add_non_esp_marker(data)
        try:
            sock.sendto(data, (str(remote.address), remote.port))
        except OSError as err:
            self.send_errors += 1
            log.warning("IKE: send to %s failed: %s", remote, err)

    def close(self) -> None:
        for sock in self.sockets.values():
            self.loop.remove_reader(sock.fileno())
            sock.close()
        self.sockets.clear()


def _large_receive_buffer(sock: socket.socket) -> None:
    """Room for a flood's burst between two loop turns, so a peer's datagram behind it
    is still there to be read (engine/intake.py reads ahead for it). Without the
    privilege to force it, the most net.core.rmem_max allows."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
    except OSError:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        except OSError:
            pass  # the default buffer then
