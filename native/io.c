/* io: batched TUN I/O (see io.h); the sockets are in sock.c. */
#include "io.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ip.h"
#include "proto.h"

int io_batch_init(struct io_batch *b)
{
	memset(b, 0, sizeof(*b));
	for (unsigned i = 0; i < IO_BATCH_MAX; i++) {
		b->bufs[i] = malloc(IO_BUF_SIZE);
		if (!b->bufs[i])
			return -1;
	}
	return 0;
}

void io_batch_free(struct io_batch *b)
{
	for (unsigned i = 0; i < IO_BATCH_MAX; i++)
		free(b->bufs[i]);
	memset(b, 0, sizeof(*b));
}

unsigned io_tun_read(int fd, struct io_batch *b, unsigned max, uint64_t *errors)
{
	unsigned n = 0;

	while (n < max) {
		ssize_t r = read(fd, b->bufs[n] + ESPD_HEADROOM, IO_BUF_SIZE - ESPD_HEADROOM - ESPD_TAILROOM);

		if (r <= 0) {
			if (r < 0 && errno != EAGAIN && errno != EINTR)
				(*errors)++;
			break;
		}
		io_pkt_reset(b, n++, (uint32_t)r);
	}
	b->n = n;
	return n;
}

unsigned io_tun_read_vnet(int fd, struct io_batch *b, unsigned max, struct tun_stage *st,
			  uint64_t *errors)
{
	unsigned n = 0;

	while (n < max) {
		uint8_t *at;
		ssize_t r;

		if (st->next < st->count) { /* hand out the staged super-packet's segments */
			/* A batch ends at a super-packet boundary: one that does not fit whole
			 * behind the packets already in it starts the next batch, so that its
			 * segments leave in one send (one GSO run for ESP in UDP). Only one
			 * with more segments than a batch holds spans batches. */
			if (st->next == 0 && n > 0 && n + st->count > max)
				break;
			while (n < max && st->next < st->count) {
				size_t len = offload_segment(st->buf + ESPD_HEADROOM, st->len, &st->h,
							     st->next++, b->bufs[n] + ESPD_HEADROOM);
				io_pkt_reset(b, n++, (uint32_t)len);
			}
			continue;
		}
		at = b->bufs[n] + ESPD_HEADROOM - VNET_HDR_LEN;
		r = read(fd, at, IO_BUF_SIZE - ESPD_HEADROOM - ESPD_TAILROOM + VNET_HDR_LEN);
		if (r <= VNET_HDR_LEN) {
			if (r < 0 && errno != EAGAIN && errno != EINTR)
				(*errors)++;
			break;
		}
		memcpy(&st->h, at, VNET_HDR_LEN);
		if (st->h.gso_type == VNET_GSO_NONE) {
			if (offload_csum(at + VNET_HDR_LEN, (size_t)r - VNET_HDR_LEN, &st->h))
				(*errors)++;
			else
				io_pkt_reset(b, n++, (uint32_t)(r - VNET_HDR_LEN));
			continue;
		}
		at = st->buf; /* keep the super-packet; its slot takes the old stage buffer */
		st->buf = b->bufs[n];
		b->bufs[n] = at;
		st->len = (uint32_t)(r - VNET_HDR_LEN);
		st->next = 0;
		st->count = offload_count(st->buf + ESPD_HEADROOM, st->len, &st->h);
		if (!st->count)
			(*errors)++;
	}
	b->n = n;
	return n;
}

unsigned io_tun_write(int fd, struct io_batch *b, int vnet, uint64_t *errors)
{
	uint16_t segments[IO_BATCH_MAX];
	unsigned written = 0;

	if (vnet)
		offload_coalesce(b->pkts, b->n, vnet & IO_VNET_USO, segments);
	for (unsigned i = 0; i < b->n; i++) {
		const struct espdp_pkt *p = &b->pkts[i];
		const uint8_t *at = p->buf + p->off - (vnet ? VNET_HDR_LEN : 0);
		size_t len = p->len + (vnet ? VNET_HDR_LEN : 0);
		unsigned carried = vnet ? segments[i] : 1; /* inner packets in this write */

		if (p->result)
			continue;
		if (write(fd, at, len) == (ssize_t)len)
			written += carried;
		else
			*errors += carried;
	}
	return written;
}
