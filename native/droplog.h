/* droplog: sampled drop records, each worker to the control plane (internal to native/).
 *
 * One ring per worker slot, single producer, single consumer:
 *   - the producer is the one thread on worker slot w: its worker thread, or (workers
 *     stopped) the Python caller of a batch; the binding refuses the latter while workers
 *     run (dataplane/binding.py), so a slot never has two. Only it writes tail, the token
 *     bucket and suppressed[]; it reads head with acquire before reusing a slot.
 *   - the consumer is whoever holds dp->droplog_lock (the control plane's loop). Only it
 *     writes head; it reads tail with acquire before reading the records up to it.
 * The producer never waits: no token or no free slot means the drop is only counted.
 */
#ifndef ESPD_DROPLOG_H
#define ESPD_DROPLOG_H

#include <stdint.h>
#include <string.h>

#include "drops.h"
#include "espdp.h"

#define DROPLOG_RING 256 /* records per worker; a power of two */
#define DROPLOG_RATE 32 /* records a second per worker, sustained */
#define DROPLOG_BURST 64 /* and at most this many in a row after a quiet spell */
#define DROPLOG_COST_NS (1000000000LL / DROPLOG_RATE) /* one token */

/* The reasons that are sampled: drops a forger can cause from outside. */
#define DROPLOG_REASONS                                                                  \
	(1u << ESPD_DROP_malformed | 1u << ESPD_DROP_unknown_spi | 1u << ESPD_DROP_replay_old | \
	 1u << ESPD_DROP_replay_dup | 1u << ESPD_DROP_auth_failed)

struct droplog {
	uint32_t head; /* consumer's; free-running, tail - head = queued */
	_Alignas(64) uint32_t tail; /* producer's, on a cache line apart from head */
	int64_t credit_ns; /* token bucket: DROPLOG_COST_NS per record, at most BURST of them */
	int64_t last_ns; /* when credit was last topped up */
	int64_t empty_until; /* the bucket has no token before this time: the flood's path */
	uint64_t suppressed[ESPD_DROP_SLOTS]; /* producer's, relaxed: not sampled, by reason */
	_Alignas(64) struct espdp_drop_record ring[DROPLOG_RING];
};

static inline int droplog_wanted(int reason)
{
	return reason > 0 && reason < 32 && (DROPLOG_REASONS >> reason & 1u);
}

void droplog_init(struct droplog *l);

/* The slot for a record of `reason` on worker w's ring, or NULL (rate limited or full:
 * counted). Fill it, then droplog_commit. Producer only. Inline: in a flood this is the
 * whole cost of a drop's record, a few loads and stores on the worker's own line. */
static inline struct espdp_drop_record *droplog_reserve(struct droplog *l, int reason,
							int64_t now)
{
	int64_t elapsed, cap = DROPLOG_BURST * DROPLOG_COST_NS;

	if (now < l->empty_until) /* known empty: one compare, the counter, done */
		goto suppress;
	elapsed = now - l->last_ns;
	if (elapsed > 0) { /* a clock that stands still or steps back adds nothing */
		l->credit_ns = elapsed >= cap || l->credit_ns + elapsed >= cap ? cap :
										 l->credit_ns + elapsed;
		l->last_ns = now;
	}
	if (l->credit_ns < DROPLOG_COST_NS) {
		l->empty_until = now + (DROPLOG_COST_NS - l->credit_ns); /* the next token */
		goto suppress;
	}
	/* acquire: the consumer's copies out of a slot happen before we overwrite it */
	if (l->tail - __atomic_load_n(&l->head, __ATOMIC_ACQUIRE) >= DROPLOG_RING)
		goto suppress;
	l->credit_ns -= DROPLOG_COST_NS;
	memset(&l->ring[l->tail % DROPLOG_RING], 0, sizeof(l->ring[0]));
	return &l->ring[l->tail % DROPLOG_RING];
suppress:
	__atomic_store_n(&l->suppressed[reason], l->suppressed[reason] + 1,
			 __ATOMIC_RELAXED); /* single writer */
	return NULL;
}

static inline void droplog_commit(struct droplog *l)
{
	/* release: the consumer that sees the new tail sees the record's bytes */
	__atomic_store_n(&l->tail, l->tail + 1, __ATOMIC_RELEASE);
}

#endif
