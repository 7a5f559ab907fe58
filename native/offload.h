/* offload: TUN offloads (IFF_VNET_HDR). The kernel hands espd TCP (and, with USO, UDP)
 * super-packets of up to 64 KiB with one virtio_net_hdr and partial checksums; espd
 * segments them itself before sealing. In the other direction, decrypted TCP segments or
 * equal-sized UDP datagrams of one flow that arrive in one batch are coalesced back into
 * one super-packet (GRO), so the kernel's stack runs once per 64 KiB, not once per packet.
 */
#ifndef ESPD_OFFLOAD_H
#define ESPD_OFFLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "espdp.h"

/* struct virtio_net_hdr (include/uapi/linux/virtio_net.h), host byte order */
struct vnet_hdr {
	uint8_t flags;
	uint8_t gso_type;
	uint16_t hdr_len;
	uint16_t gso_size;
	uint16_t csum_start;
	uint16_t csum_offset;
};

#define VNET_HDR_LEN 10
#define VNET_F_NEEDS_CSUM 1
#define VNET_GSO_NONE 0
#define VNET_GSO_TCPV4 1
#define VNET_GSO_TCPV6 4
#define VNET_GSO_UDP_L4 5
#define VNET_GSO_ECN 0x80

/* TUNSETOFFLOAD bits */
#define TUN_OFFLOAD_CSUM 0x01
#define TUN_OFFLOAD_TSO4 0x02
#define TUN_OFFLOAD_TSO6 0x04
#define TUN_OFFLOAD_USO4 0x20 /* Linux 6.2 */
#define TUN_OFFLOAD_USO6 0x40

/* Complete a partial checksum (VNET_F_NEEDS_CSUM) in place. 0, or -1 when malformed. */
int offload_csum(uint8_t *pkt, size_t len, const struct vnet_hdr *h);
/* How many segments the super-packet pkt[0..len) splits into; 0 when malformed. */
unsigned offload_count(const uint8_t *pkt, size_t len, const struct vnet_hdr *h);
/* Write segment `i` of the super-packet into out (room for hdr + gso_size bytes) with its
 * lengths, IPv4 ID, TCP sequence number and flags, and both checksums fixed; returns its
 * length. Only valid for i < offload_count(). */
size_t offload_segment(const uint8_t *pkt, size_t len, const struct vnet_hdr *h, unsigned i,
		       uint8_t *out);
/* Coalesce the passed TCP packets (and, with `udp`, UDP datagrams) of pkts[0..n) into as
 * few super-packets as possible (segments[i], when given, receives how many inner packets
 * the write of pkts[i] carries: 0 for a consumed packet, 1 or more otherwise):
 * a packet that joins an earlier one gets result = -1 (consumed; not to be written), the
 * head of a super-packet gets its vnet_hdr written in front of it (at off - VNET_HDR_LEN),
 * and every other passed packet a zero vnet_hdr. Packets are never reordered within a
 * flow. Returns how many packets remain to be written. */
unsigned offload_coalesce(struct espdp_pkt *pkts, unsigned n, int udp, uint16_t *segments);

#endif
