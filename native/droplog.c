/* droplog: sampled records of inbound drops that may be attacks (unknown SPI, bad ICV,
 * replays, malformed packets), so the control plane can log them with the peer and SPI.
 *
 * A flood must cost the worker almost nothing and never make it wait: each worker has
 * a token bucket (DROPLOG_RATE records a second, DROPLOG_BURST at once) and a ring of its
 * own; a drop without a token or a free slot only increments a counter. The ring
 * protocol is in droplog.h.
 */
#include <string.h>

#include "dp.h"
#include "droplog.h"

_Static_assert(ESPD_DROP__COUNT <= 32, "DROPLOG_REASONS is a 32-bit mask");
_Static_assert((DROPLOG_RING & (DROPLOG_RING - 1)) == 0, "DROPLOG_RING: a power of two");
_Static_assert(sizeof(struct espdp_drop_record) == 56, "espdp.h: the record's layout");

void droplog_init(struct droplog *l)
{
	memset(l, 0, sizeof(*l));
	l->credit_ns = DROPLOG_BURST * DROPLOG_COST_NS;
}

size_t espdp_drop_records_read(espdp *dp, struct espdp_drop_record *out, size_t n)
{
	size_t k = 0;

	pthread_mutex_lock(&dp->droplog_lock); /* one consumer at a time (droplog.h) */
	for (unsigned w = 0; w < dp->nworkers && k < n; w++) {
		struct droplog *l = &dp->droplog[w];
		uint32_t head = l->head, tail = __atomic_load_n(&l->tail, __ATOMIC_ACQUIRE);

		while (head != tail && k < n)
			out[k++] = l->ring[head++ % DROPLOG_RING];
		/* release: the producer reuses these slots only after our copies are done */
		__atomic_store_n(&l->head, head, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&dp->droplog_lock);
	return k;
}

void espdp_drop_records_suppressed(const espdp *dp, uint64_t *out, size_t n)
{
	memset(out, 0, n * sizeof(*out));
	for (unsigned w = 0; w < dp->nworkers; w++)
		for (size_t r = 0; r < n && r < ESPD_DROP_SLOTS; r++)
			out[r] += __atomic_load_n(&dp->droplog[w].suppressed[r], __ATOMIC_RELAXED);
}
