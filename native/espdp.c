/* espdp: the data plane instance: creation, clock, global counters, names. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto.h"
#include "dp.h"
#include "offload.h"
#include "proto.h"

_Static_assert(ESPDP_HEADROOM == ESPD_HEADROOM && ESPDP_TAILROOM == ESPD_TAILROOM,
	       "espdp.h and proto.h disagree on buffer room");
_Static_assert(ESPDP_DROP_SLOTS == ESPD_DROP_SLOTS, "espdp.h and drops.h disagree on slots");
_Static_assert(ESPDP_NATT_PORT == NATT_PORT, "espdp.h and proto.h disagree on the NAT-T port");
_Static_assert(ESPDP_TUN_F_CSUM == TUN_OFFLOAD_CSUM && ESPDP_TUN_F_TSO4 == TUN_OFFLOAD_TSO4 &&
		       ESPDP_TUN_F_TSO6 == TUN_OFFLOAD_TSO6 && ESPDP_TUN_F_USO4 == TUN_OFFLOAD_USO4 &&
		       ESPDP_TUN_F_USO6 == TUN_OFFLOAD_USO6,
	       "espdp.h and offload.h disagree on TUN offload bits");

#define ESPD_NAME(name, help) #name,
#define ESPD_HELP(name, help) help,
static const char *const drop_names[] = { ESPD_FOREACH_DROP(ESPD_NAME) };
static const char *const drop_helps[] = { ESPD_FOREACH_DROP(ESPD_HELP) };
static const char *const event_names[] = { ESPD_FOREACH_EVENT(ESPD_NAME) };
#undef ESPD_NAME
#undef ESPD_HELP

espdp *espdp_new(unsigned nworkers)
{
	espdp *dp;

	if (nworkers == 0 || nworkers > 1024)
		return NULL;
	dp = calloc(1, sizeof(*dp));
	if (!dp)
		return NULL;
	/* one epoch slot per worker, and one more for control-plane readers */
	dp->workers = aligned_alloc(64, (nworkers + 1) * sizeof(struct worker_slot));
	dp->droplog = aligned_alloc(64, nworkers * sizeof(struct droplog));
	if (!dp->workers || !dp->droplog) {
		free(dp->workers);
		free(dp->droplog);
		free(dp);
		return NULL;
	}
	dp->nworkers = nworkers;
	for (unsigned i = 0; i <= nworkers; i++)
		dp->workers[i].epoch = EPOCH_OFFLINE;
	for (unsigned i = 0; i < nworkers; i++)
		droplog_init(&dp->droplog[i]);
	pthread_mutex_init(&dp->droplog_lock, NULL);
	dp->test_clock_ns = -1;
	pthread_mutex_init(&dp->publish_lock, NULL);
	pthread_mutex_init(&dp->threads_lock, NULL);
	events_init(&dp->events);
	punt_init(&dp->punt);
	nexthops_init(&dp->nexthops);
	return dp;
}

void espdp_free(espdp *dp)
{
	if (!dp)
		return;
	espdp_workers_stop(dp);
	if (dp->live)
		table_destroy(dp->live);
	dp->live = NULL;
	while (espdp_reclaim(dp)) {
		/* no worker runs any more: everything retired is reclaimable */
	}
	events_destroy(&dp->events);
	punt_destroy(&dp->punt);
	nexthops_destroy(&dp->nexthops);
	pthread_mutex_destroy(&dp->threads_lock);
	pthread_mutex_destroy(&dp->publish_lock);
	pthread_mutex_destroy(&dp->droplog_lock);
	free(dp->droplog);
	free(dp->workers);
	free(dp);
}

unsigned espdp_nworkers(const espdp *dp)
{
	return dp->nworkers;
}

/* test hook (espdp.h: not part of the API) */
void espdp_set_clock(espdp *dp, int64_t now_ns)
{
	__atomic_store_n(&dp->test_clock_ns, now_ns < 0 ? -1 : now_ns, __ATOMIC_RELAXED);
}

int64_t dp_now(const espdp *dp)
{
	int64_t t = __atomic_load_n(&dp->test_clock_ns, __ATOMIC_RELAXED);
	struct timespec ts;

	if (t >= 0)
		return t;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void dp_drop(espdp *dp, int direction, int reason)
{
	__atomic_fetch_add(&dp->drops[direction & 1][reason], 1, __ATOMIC_RELAXED);
}

int dp_worker_ok(const espdp *dp, unsigned worker, struct espdp_pkt *pkts, size_t n)
{
	if (worker < dp->nworkers)
		return 1;
	for (size_t i = 0; i < n; i++)
		pkts[i].result = ESPD_DROP_internal;
	return 0;
}

void espdp_global_drops(const espdp *dp, uint64_t *out, size_t n)
{
	for (size_t i = 0; i < n && i < 2 * ESPD_DROP_SLOTS; i++)
		out[i] = __atomic_load_n(&dp->drops[i / ESPD_DROP_SLOTS][i % ESPD_DROP_SLOTS],
					 __ATOMIC_RELAXED);
}

const char *espdp_status_str(int status)
{
	switch (status) {
	case ESPDP_OK: return "ok";
	case ESPDP_ERR_INVALID: return "invalid SA or rule configuration";
	case ESPDP_ERR_KEY_LENGTH: return "key length does not fit the transform";
	case ESPDP_ERR_NOMEM: return "out of memory";
	case ESPDP_ERR_CRYPTO: return "the crypto library refused the algorithm or key";
	case ESPDP_ERR_EXISTS: return "an inbound SA with this SPI and destination exists";
	case ESPDP_ERR_UNSUPPORTED: return "not supported";
	case ESPDP_ERR_STATE: return "object is in the wrong state for this call";
	case ESPDP_ERR_IO: return "the kernel refused to send";
	default: return "unknown status";
	}
}

unsigned espdp_drop_count(void)
{
	return ESPD_DROP__COUNT;
}

const char *espdp_drop_name(unsigned reason)
{
	return reason < ESPD_DROP__COUNT ? drop_names[reason] : "unknown";
}

const char *espdp_drop_help(unsigned reason)
{
	return reason < ESPD_DROP__COUNT ? drop_helps[reason] : "unknown";
}

unsigned espdp_event_kind_count(void)
{
	return ESPD_EVENT__COUNT;
}

const char *espdp_event_name(unsigned kind)
{
	return kind < ESPD_EVENT__COUNT ? event_names[kind] : "unknown";
}

int espdp_transform_info(unsigned cipher, unsigned key_bits, unsigned integ,
			 struct espdp_transform *out)
{
	struct crypto_alg alg;
	int err = crypto_alg_init(&alg, cipher, key_bits, integ);

	memset(out, 0, sizeof(*out));
	if (err)
		return err;
	out->key_len = alg.key_len;
	out->auth_key_len = alg.auth_key_len;
	out->iv_len = alg.iv_len;
	out->icv_len = alg.icv_len;
	out->block = alg.block;
	return ESPDP_OK;
}

const char *espdp_crypto_features(void)
{
	return crypto_features();
}

int espdp_crypto_backend_set(unsigned backend)
{
	return crypto_backend_set(backend);
}

unsigned espdp_crypto_backend_get(void)
{
	return crypto_backend_get();
}

int espdp_crypto_backend_available(unsigned backend)
{
	return crypto_backend_available(backend);
}

const char *espdp_crypto_ipsecmb_arch(void)
{
	return crypto_ipsecmb_arch();
}
