/* dp: the data plane instance and its table sets (internal to native/).
 *
 * Publication and reclamation (epoch based, no locks on the packet path):
 *   - a worker entering a batch stores the global epoch in its slot, then loads `live`
 *     (and, during the batch, rule SA pointers and SAD entries); leaving, it stores
 *     EPOCH_OFFLINE. All with sequentially consistent atomics.
 *   - a writer unlinks an object (publish swaps `live`; an incremental change swaps a
 *     rule's SA, a SAD entry or the SAD array), then bumps the epoch to R and retires
 *     the object with R.
 *   - a retired object is freed once every worker is offline or shows an epoch >= R:
 *     such a worker loaded its pointers after the unlink and cannot hold the object.
 */
#ifndef ESPD_DP_H
#define ESPD_DP_H

#include <pthread.h>
#include <stdint.h>

#include "droplog.h"
#include "drops.h"
#include "espdp.h"
#include "nexthop.h"
#include "sad.h"
#include "spd.h"

#define EPOCH_OFFLINE UINT64_MAX
#define EVENT_RING 1024 /* events kept until read; older ones are lost (and said so) */
#define PUNT_RING 256 /* IKE datagrams queued for the control plane */
#define PUNT_BYTES (1u << 20) /* and at most this many bytes of them */
#define ACQUIRE_INTERVAL_NS 1000000000LL /* at most one acquire event per rule and second */

struct table_rule {
	espdp_sa *sa; /* referenced; NULL for DISCARD or no SA (yet); atomic (incremental) */
	int64_t acquire_ns; /* when this rule last raised acquire (atomic; rate limit) */
	uint32_t policy;
	uint8_t action;
};

struct espdp_table {
	espdp *dp;
	espdp_sa **sas; /* every SA of the set, referenced */
	size_t nsas, cap_sas;
	struct table_rule *rules;
	size_t nrules, cap_rules;
	uint64_t *hits; /* per rule, relaxed atomics */
	uint32_t *by_policy; /* PROTECT rules with a policy, grouped by policy (table.c) */
	struct policy_run *policy_runs; /* hash: policy -> its run in by_policy */
	uint32_t policy_mask;
	struct spd *spd;
	struct sad sad;
	int published;
};

struct policy_run {
	uint32_t policy;
	uint32_t first, count; /* count 0: empty slot */
};

/* Something unlinked, waiting until no worker can hold it (see the protocol above). */
struct retired {
	uint64_t epoch;
	void *obj;
	void (*destroy)(void *obj);
	struct retired *next;
};

struct workers;

struct worker_slot {
	uint64_t epoch;
	char pad[56]; /* one cache line per worker */
};

struct events {
	pthread_mutex_t lock;
	struct espdp_event ring[EVENT_RING];
	uint32_t head, tail; /* free-running; tail - head = queued */
	uint32_t lost;
	int fd; /* eventfd, readable while events are queued */
};

struct punt_entry {
	struct espdp_punted meta;
	uint8_t *data; /* meta.len bytes, malloc'd by the worker, freed by the reader */
};

/* Punted IKE datagrams, workers to the control plane. The lock guards only index and
 * pointer updates (the copy and the allocation happen outside it), so a worker never
 * waits for more than a few stores; a full queue drops the datagram, counted. */
struct punt {
	pthread_mutex_t lock;
	struct punt_entry ring[PUNT_RING];
	uint32_t head, tail; /* free-running; tail - head = queued */
	size_t bytes; /* of the queued datagrams */
	uint64_t punted, dropped;
	int fd; /* eventfd, readable while datagrams are queued */
};

struct espdp {
	unsigned nworkers;
	struct espdp_table *live;
	uint64_t epoch;
	struct worker_slot *workers; /* nworkers + 1: the last is the control plane's */
	pthread_mutex_t publish_lock; /* the one writer of the tables at a time (table.c) */
	struct retired *retired;
	int64_t test_clock_ns; /* < 0: CLOCK_MONOTONIC */
	uint64_t drops[2][ESPD_DROP_SLOTS]; /* [direction][reason] */
	struct events events;
	struct punt punt;
	struct droplog *droplog; /* nworkers rings, one per worker slot (droplog.h) */
	pthread_mutex_t droplog_lock; /* the rings' one consumer at a time */
	/* worker.c; NULL while no worker runs. Readers outside the workers (io stats,
	 * send_ike) hold threads_lock, and espdp_workers_stop detaches it under that lock
	 * before freeing it. */
	struct workers *threads;
	pthread_mutex_t threads_lock;
	struct nexthops nexthops; /* the AF_PACKET send path's table (nexthop.h) */
};

int64_t dp_now(const espdp *dp);
/* Enter/leave a read section on worker `w`; enter returns the live table (maybe NULL). */
struct espdp_table *dp_enter(espdp *dp, unsigned w);
void dp_leave(espdp *dp, unsigned w);
void dp_drop(espdp *dp, int direction, int reason);
/* A batch call on a worker slot the data plane lacks: fail closed, every packet drops
 * as internal. Returns 1 when `worker` is usable. */
int dp_worker_ok(const espdp *dp, unsigned worker, struct espdp_pkt *pkts, size_t n);
void events_init(struct events *ev);
void events_destroy(struct events *ev);
void events_push(espdp *dp, uint32_t kind, const espdp_sa *sa, uint64_t value);
/* An acquire event for rule `index` (policy) and the packet whose selector is key. */
void events_push_acquire(espdp *dp, uint32_t index, uint32_t policy, const struct spd_key *key);
/* A peer_moved event: sa's authenticated packet came from src:sport (sa.c rate-limits). */
void events_push_moved(espdp *dp, const espdp_sa *sa, const uint8_t *src, uint16_t sport);
void punt_init(struct punt *q);
void punt_destroy(struct punt *q);
/* Queue an IKE message (the bytes after the marker) with its addresses; 0 or
 * ESPD_DROP_punt_full. */
int punt_push(espdp *dp, const struct espdp_punted *meta, const uint8_t *msg);
void table_destroy(struct espdp_table *t);

#endif
