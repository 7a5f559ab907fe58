/* io: a worker's batch of packet buffers, and batched TUN reads and writes.
 * The network side (sockets) is in sock.h.
 */
#ifndef ESPD_IO_H
#define ESPD_IO_H

#include <stddef.h>
#include <stdint.h>

#include "espdp.h"
#include "offload.h"
#include "proto.h"

#define IO_BUF_SIZE (ESPD_HEADROOM + 65536 + ESPD_TAILROOM)
#define IO_BATCH_MAX 64
#define IO_VNET_USO 2 /* in tun_vnet_hdr: UDP segmentation offload too */

struct io_batch {
	struct espdp_pkt pkts[IO_BATCH_MAX];
	uint8_t *bufs[IO_BATCH_MAX];
	unsigned n;
};

/* A TCP super-packet read from the TUN device, handed out segment by segment. */
struct tun_stage {
	uint8_t *buf; /* IO_BUF_SIZE; swapped with a batch buffer, never copied */
	uint32_t len;
	unsigned next, count; /* next < count: segments still to hand out */
	struct vnet_hdr h;
};

/* Slot i of b holds a fresh packet of len bytes at the headroom of its buffer. */
static inline void io_pkt_reset(struct io_batch *b, unsigned i, uint32_t len)
{
	struct espdp_pkt *p = &b->pkts[i];

	p->buf = b->bufs[i];
	p->cap = IO_BUF_SIZE;
	p->off = ESPD_HEADROOM;
	p->len = len;
	p->result = 0;
	p->sa = NULL;
}

int io_batch_init(struct io_batch *b);
void io_batch_free(struct io_batch *b);
/* Read up to max packets from a non-blocking TUN fd into b; returns how many. */
unsigned io_tun_read(int fd, struct io_batch *b, unsigned max, uint64_t *errors);
/* The same with IFF_VNET_HDR: super-packets are segmented, partial checksums completed.
 * A batch ends before a super-packet that does not fit whole in it (it stays staged in
 * st for the next call); the caller calls again while st holds segments. */
unsigned io_tun_read_vnet(int fd, struct io_batch *b, unsigned max, struct tun_stage *st,
			  uint64_t *errors);
/* Write the passed packets of b to the TUN fd (with vnet: coalesced, each behind its
 * vnet_hdr); returns how many inner packets were delivered. */
unsigned io_tun_write(int fd, struct io_batch *b, int vnet, uint64_t *errors);

#endif
