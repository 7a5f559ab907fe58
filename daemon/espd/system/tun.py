"""The TUN device: /dev/net/tun opened once per worker queue (IFF_MULTI_QUEUE)."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct

from espd.dataplane.constants import TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_USO4, TUN_F_USO6

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0
TSO = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
# what native/offload.h's tun_vnet_hdr says: 1 = vnet headers with TSO, 3 = and USO
VNET_TSO, VNET_TSO_USO = 1, 3
IFNAMSIZ = 16


class TunError(OSError):
    pass


def open_tun(name: str, queues: int, offload: bool = False) -> tuple[list[int], int]:
    """Create TUN device `name` with `queues` queues; returns their fds. An interface of
    that name that exists already is refused, never attached to: it is not ours (another
    espd's, or another program's), and its traffic must not reach this process.

    With `offload`, every read and write carries a virtio_net_hdr and the kernel may hand
    over 64 KiB TCP (and, on Linux 6.2+, UDP) super-packets with partial checksums
    (native/offload.h). Returns the fds and the offload level for the data plane (0, or
    VNET_TSO, or VNET_TSO_USO).
    The device lives as long as one of its fds is open, so closing them all removes it,
    together with its addresses and routes.
    """
    flags = IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE | (IFF_VNET_HDR if offload else 0)
    if not 0 < len(name.encode()) < IFNAMSIZ:
        raise TunError(f"interface name {name!r} must be 1-15 bytes")
    try:
        socket.if_nametoindex(name)
    except OSError:
        pass  # no such interface: ours to create
    else:
        raise TunError(errno.EEXIST, f"interface {name} exists already (another espd, or "
                       f"another program, made it; see `ip link show {name}`); set [daemon] "
                       f"interface to a name of its own")
    fds: list[int] = []
    ifr = struct.pack(f"{IFNAMSIZ}sH22x", name.encode(), flags)
    level = VNET_TSO_USO if offload else 0
    try:
        for _ in range(queues):
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            fds.append(fd)
            fcntl.ioctl(fd, TUNSETIFF, ifr)
            if level == VNET_TSO_USO:
                try:
                    fcntl.ioctl(fd, TUNSETOFFLOAD, TSO | TUN_F_USO4 | TUN_F_USO6)
                except OSError as e:
                    if e.errno != errno.EINVAL:  # EINVAL: a kernel without USO
                        raise
                    level = VNET_TSO
            if level == VNET_TSO:
                fcntl.ioctl(fd, TUNSETOFFLOAD, TSO)
    except OSError as e:
        close_tun(fds)
        raise TunError(e.errno, f"cannot create TUN device {name}: {e.strerror} "
                       "(needs CAP_NET_ADMIN and /dev/net/tun)") from e
    return fds, level


def close_tun(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
    fds.clear()
