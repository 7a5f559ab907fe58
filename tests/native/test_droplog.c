// sources: native/droplog.c
// libs: -lpthread
// tsan: yes
/* test_droplog: the per-worker drop-record ring (native/droplog.h) with its real producer
 * and consumer running concurrently: one thread reserves and commits records as fast as
 * it can while another drains them with espdp_drop_records_read. Every record arrives
 * whole (its fields agree with each other), once, in order; records read plus drops
 * counted as suppressed equal drops offered; the producer never waits. Under TSan, the
 * head/tail protocol shows no data race.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dp.h"

#define OFFERED 2000000u

static espdp dp;
static int done;

static void *producer(void *arg)
{
	struct droplog *l = &dp.droplog[0];
	int64_t now = 1;

	(void)arg;
	for (uint32_t i = 1; i <= OFFERED; i++) {
		struct espdp_drop_record *rec;

		now += DROPLOG_COST_NS / 2; /* half the rate: the bucket empties, then paces */
		rec = droplog_reserve(l, ESPD_DROP_auth_failed, now);
		if (!rec)
			continue;
		rec->time_ns = (uint64_t)now;
		rec->spi = i;
		rec->reason = ESPD_DROP_auth_failed;
		rec->sport = (uint16_t)i;
		memset(rec->src, (int)(i & 0xff), sizeof(rec->src));
		droplog_commit(l);
	}
	__atomic_store_n(&done, 1, __ATOMIC_RELEASE);
	return NULL;
}

int main(void)
{
	static struct espdp_drop_record out[64];
	uint64_t suppressed[ESPD_DROP_SLOTS];
	uint32_t last = 0, torn = 0, order = 0;
	uint64_t got = 0;
	pthread_t t;

	dp.nworkers = 1;
	dp.droplog = aligned_alloc(64, sizeof(struct droplog));
	droplog_init(dp.droplog);
	pthread_mutex_init(&dp.droplog_lock, NULL);
	CHECK(pthread_create(&t, NULL, producer, NULL) == 0, "thread");
	for (;;) {
		int finished = __atomic_load_n(&done, __ATOMIC_ACQUIRE);
		size_t n = espdp_drop_records_read(&dp, out, 64);

		for (size_t i = 0; i < n; i++) {
			const struct espdp_drop_record *r = &out[i];
			int whole = r->sport == (uint16_t)r->spi && r->reason == ESPD_DROP_auth_failed;

			for (size_t b = 0; b < sizeof(r->src); b++)
				whole &= r->src[b] == (r->spi & 0xff);
			torn += !whole;
			order += r->spi <= last;
			last = r->spi;
		}
		got += n;
		if (finished && !n)
			break;
	}
	pthread_join(t, NULL);
	espdp_drop_records_suppressed(&dp, suppressed, ESPD_DROP_SLOTS);
	CHECK(torn == 0, "%u records read torn", torn);
	CHECK(order == 0, "%u records out of order or twice", order);
	CHECK(got + suppressed[ESPD_DROP_auth_failed] == OFFERED, "%llu read + %llu suppressed",
	      (unsigned long long)got, (unsigned long long)suppressed[ESPD_DROP_auth_failed]);
	/* the bucket lets half through at most; a consumer slower than the producer finds
	 * the ring full, and those drops are counted too, never waited for */
	CHECK(got >= DROPLOG_RING && got <= OFFERED / 2 + DROPLOG_BURST,
	      "%llu read: more than the bucket allows, or not even a ring", (unsigned long long)got);
	CHECK(suppressed[ESPD_DROP_unknown_spi] == 0, "only the reason offered is counted");
	pthread_mutex_destroy(&dp.droplog_lock);
	free(dp.droplog);
	printf("%lu passed, %lu failed\n", passed, failed);
	return failed != 0;
}
