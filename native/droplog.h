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
	uint64_t suppressed[ESPD_DROP_SLOTS]; /* producer's, relaxed: not sampled, by reason */
	_Alignas(64) struct espdp_drop_record ring[DROPLOG_RING];
};

static inline int droplog_wanted(int reason)
{
	return reason > 0 && reason < 32 && (DROPLOG_REASONS >> reason & 1u);
}

void droplog_init(struct droplog *l);
/* The slot for a record of `reason` on worker w's ring, or NULL (rate limited or full:
 * counted). Fill it, then droplog_commit. Producer only. */
struct espdp_drop_record *droplog_reserve(struct droplog *l, int reason, int64_t now);
void droplog_commit(struct droplog *l);

#endif
