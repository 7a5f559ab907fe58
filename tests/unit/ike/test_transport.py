"""The engine's UDP transport: which addresses it listens on, and how a reload moves
them (hosting.follow -> UdpTransport.follow), with real sockets on loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from espd.ike.engine.transport import UdpTransport
from espd.ike.sa.ike_sa import Endpoint


def endpoint(address: str, port: int) -> Endpoint:
    return Endpoint(ipaddress.ip_address(address), port)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_address_the_host_does_not_have_yet_still_binds():
    """IP_FREEBIND: 192.0.2.77 is on no interface here; the socket binds anyway (and
    receives once the address appears) instead of failing the start."""
    async def main():
        loop = asyncio.get_running_loop()
        transport = UdpTransport(loop, [endpoint("192.0.2.77", free_port())])
        assert [str(e.address) for e in transport.endpoints] == ["192.0.2.77"]
        transport.close()
    asyncio.run(main())


def test_a_reload_listens_on_the_new_addresses_and_leaves_the_old():
    async def main():
        loop = asyncio.get_running_loop()
        port = free_port()
        got: list[tuple[bytes, Endpoint]] = []
        transport = UdpTransport(loop, [endpoint("127.0.0.1", port)])
        transport.attach(lambda data, local, remote: got.append((data, local)))
        kept = transport.sockets[endpoint("127.0.0.1", port)]
        assert transport.follow([endpoint("127.0.0.1", port), endpoint("127.0.0.2", port)]) \
            == []
        assert transport.sockets[endpoint("127.0.0.1", port)] is kept  # untouched
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"to .2", ("127.0.0.2", port))
            for _ in range(100):
                await asyncio.sleep(0.01)
                if got:
                    break
        assert got == [(b"to .2", endpoint("127.0.0.2", port))]
        assert transport.follow([endpoint("127.0.0.2", port)]) == []
        assert transport.endpoints == [endpoint("127.0.0.2", port)]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", port))  # the old address's socket is really closed
        transport.close()
    asyncio.run(main())


def test_an_endpoint_that_cannot_bind_is_named_and_the_rest_apply():
    async def main():
        loop = asyncio.get_running_loop()
        port = free_port()
        transport = UdpTransport(loop, [endpoint("127.0.0.1", port)])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
            busy.bind(("127.0.0.3", 0))
            taken = busy.getsockname()[1]
            problems = transport.follow([endpoint("127.0.0.1", port),
                                         endpoint("127.0.0.3", taken)])
        assert len(problems) == 1 and f"cannot bind UDP {taken} on 127.0.0.3" in problems[0]
        assert transport.endpoints == [endpoint("127.0.0.1", port)]
        with pytest.raises(OSError, match=f"cannot bind UDP {port} on 127.0.0.1"):
            UdpTransport(loop, [endpoint("127.0.0.1", port)])
        transport.close()
    asyncio.run(main())
