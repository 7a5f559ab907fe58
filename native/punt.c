/* punt: IKE datagrams from the NAT-T socket to the control plane, and IKE messages back.
 *
 * RFC 3948 2.2: on UDP 4500 an IKE message follows four zero bytes (the non-ESP marker)
 * where ESP would have its SPI. esp_in hands such a datagram here instead of decrypting
 * it; the control plane polls espdp_punt_fd and reads the queue. Replies go out on the
 * workers' own NAT-T socket (espdp_send_ike), so they leave from the port the peer's NAT
 * mapping points at.
 *
 * Bounded twice (PUNT_RING datagrams, PUNT_BYTES bytes): a peer flooding IKE costs the
 * workers a copy per datagram and then a counted drop, never a wait.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "dp.h"
#include "sock.h"

void punt_init(struct punt *q)
{
	memset(q, 0, sizeof(*q));
	pthread_mutex_init(&q->lock, NULL);
	q->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

void punt_destroy(struct punt *q)
{
	while (q->head != q->tail)
		free(q->ring[q->head++ % PUNT_RING].data);
	if (q->fd >= 0)
		close(q->fd);
	pthread_mutex_destroy(&q->lock);
}

int punt_push(espdp *dp, const struct espdp_punted *meta, const uint8_t *msg)
{
	struct punt *q = &dp->punt;
	uint8_t *copy = malloc(meta->len ? meta->len : 1);
	uint64_t one = 1;
	int queued = 0;

	if (copy) {
		memcpy(copy, msg, meta->len);
		pthread_mutex_lock(&q->lock);
		if (q->tail - q->head < PUNT_RING && q->bytes + meta->len <= PUNT_BYTES) {
			struct punt_entry *e = &q->ring[q->tail++ % PUNT_RING];

			e->meta = *meta;
			e->data = copy;
			q->bytes += meta->len;
			q->punted++;
			queued = 1;
		} else {
			q->dropped++;
		}
		pthread_mutex_unlock(&q->lock);
	} else {
		pthread_mutex_lock(&q->lock);
		q->dropped++;
		pthread_mutex_unlock(&q->lock);
	}
	if (!queued) {
		free(copy);
		dp_drop(dp, ESPDP_DIR_IN, ESPD_DROP_punt_full);
		return ESPD_DROP_punt_full;
	}
	if (q->fd >= 0 && write(q->fd, &one, sizeof(one)) < 0) {
		/* the counter is saturated: the fd is readable, which is all we need */
	}
	return 0;
}

int espdp_punt_fd(const espdp *dp)
{
	return dp->punt.fd;
}

int espdp_punt_read(espdp *dp, struct espdp_punted *meta, uint8_t *buf, size_t cap)
{
	struct punt *q = &dp->punt;
	struct punt_entry e;
	uint64_t drain;

	pthread_mutex_lock(&q->lock);
	if (q->head == q->tail) {
		if (q->fd >= 0 && read(q->fd, &drain, sizeof(drain)) < 0) {
			/* EAGAIN: nothing was pending */
		}
		pthread_mutex_unlock(&q->lock);
		return 0;
	}
	e = q->ring[q->head++ % PUNT_RING];
	q->bytes -= e.meta.len;
	if (q->head == q->tail && q->fd >= 0 && read(q->fd, &drain, sizeof(drain)) < 0) {
		/* EAGAIN */
	}
	pthread_mutex_unlock(&q->lock);
	*meta = e.meta;
	memcpy(buf, e.data, e.meta.len < cap ? e.meta.len : cap);
	free(e.data);
	return 1;
}

void espdp_punt_stats(const espdp *dp, struct espdp_punt_stats *out)
{
	struct punt *q = (struct punt *)&dp->punt;

	pthread_mutex_lock(&q->lock);
	out->punted = q->punted;
	out->dropped = q->dropped;
	out->queued = q->tail - q->head;
	pthread_mutex_unlock(&q->lock);
}
