/* ring: raw ESP received through a TPACKET_V3 ring on an AF_PACKET socket instead of the
 * raw IPPROTO_ESP socket. The kernel copies each matching frame (classic BPF: IPv4
 * protocol 50 / IPv6 next header 50, addressed to this host, not outgoing) into a block
 * of a shared ring and hands a block over when it is full or its timeout ran out, so a
 * worker wakes once per block. The raw ESP sockets stay open with a filter that drops
 * everything: the kernel then counts its own copy as delivered and sends no ICMP
 * protocol unreachable for it.
 */
#ifndef ESPD_RING_H
#define ESPD_RING_H

#include <stddef.h>
#include <stdint.h>

#include "io.h"

struct rx_ring {
	uint8_t *map;
	size_t size;
	unsigned block_size, blocks;
	unsigned cur;         /* the block the worker reads next */
	unsigned left;        /* packets of the current block not yet handed out */
	uint8_t *pkt;         /* the next one; NULL: the current block not yet opened */
};

/* Set up the ring on fd (AF_PACKET SOCK_DGRAM, unbound): TPACKET_V3, the filter, the
 * ring and its mapping, then bind to all protocols. timeout_ms: the block timeout;
 * skip_ifindex: frames from this interface (espd's TUN device) are not taken; 0: none.
 * On failure the socket may be left half set up: close it. */
int ring_open(struct rx_ring *r, int fd, unsigned block_size, unsigned blocks,
	      unsigned timeout_ms, unsigned skip_ifindex);
/* Copy up to max packets (whole outer IP packets) from the ring into b; 0: none ready. */
unsigned ring_recv(struct rx_ring *r, struct io_batch *b, unsigned max);
/* Whether the ring holds a handed-over block not read to its end. */
int ring_pending(const struct rx_ring *r);
void ring_close(struct rx_ring *r);
/* Packets the kernel had no room for in the ring since the last call (PACKET_STATISTICS,
 * which it resets on every read); 0 if it cannot tell. */
uint64_t ring_drops(int fd);
/* A filter that drops every packet, for the raw sockets the ring replaces. */
int ring_mute(int fd);
int ring_unmute(int fd);

#endif
