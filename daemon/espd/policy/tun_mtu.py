"""The ESP overhead a crypto map entry's transform sets may add, before any SA exists.

A manual entry's SAs are in the data plane from the start and report their own overhead
(``Dataplane.sa_overhead``). An IKE-keyed entry has none until it negotiates, yet the TUN
MTU is set when espd starts: it must already leave room for the largest overhead that any
transform set the entry offers, to any of its peers, could bring, so inner TCP (MSS from
the MTU) never needs fragmenting after a Child SA comes up.

Invariant: ``esp_overhead`` is the data plane's ``worst_overhead`` (native/sa.c) for the
same transform: outer IP + [UDP] + ESP header + IV + (block - 1) padding + 2-byte trailer
+ ICV. A test checks the two against each other for every transform.
"""

from __future__ import annotations

from collections.abc import Iterable

from espd.config.model import Config
from espd.config.transforms import Transform
from espd.dataplane.constants import transform_lengths

IPV4_HEADER = 20
IPV6_HEADER = 40
UDP_HEADER = 8  # RFC 3948 UDP encapsulation
ESP_HEADER = 8  # SPI + sequence number
ESP_TRAILER = 2  # pad length + next header


def esp_overhead(transform: Transform, ip_version: int, udp: bool) -> int:
    """Worst-case bytes ESP adds to an inner packet with `transform`."""
    lengths = transform_lengths(transform.cipher, transform.cipher_key_bits, transform.integ)
    if lengths is None:  # parse_transform builds only what the data plane implements
        raise ValueError(f"{transform}: not supported by the data plane")
    outer = IPV4_HEADER if ip_version == 4 else IPV6_HEADER
    if udp:
        outer += UDP_HEADER
    return (outer + ESP_HEADER + lengths.iv_len + (lengths.block - 1) + ESP_TRAILER
            + lengths.icv_len)


def planned_overheads(config: Config) -> Iterable[tuple[str, int]]:
    """(peer address, worst overhead) for each IKE-keyed entry's peers over all of its
    transform sets. ``encapsulation = "auto"`` counts UDP: NAT detection may float the
    Child SAs to UDP 4500 after the MTU is set."""
    for entry in config.crypto_maps:
        if entry.manual:
            continue  # its SAs are live and counted by the data plane
        udp = entry.encapsulation != "esp"
        transforms = [config.transform_sets[name].transform for name in entry.transform_sets]
        for peer in entry.peers:
            yield str(peer), max(esp_overhead(t, peer.version, udp) for t in transforms)
