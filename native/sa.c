/* sa: create, reference, account and expire security associations (see sa.h). */
#include "sa.h"

#include <stdlib.h>
#include <string.h>

#include "dp.h"

_Static_assert(ESPD_DROP__COUNT <= ESPD_DROP_SLOTS, "drops[] in espdp.h is too small");
_Static_assert(sizeof(((struct espdp_sa_stats *)0)->drops) / sizeof(uint64_t) == ESPD_DROP_SLOTS,
	       "espdp_sa_stats.drops must have ESPD_DROP_SLOTS entries");

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

static void remote_store(espdp_sa *sa, const uint8_t *addr, uint16_t port);

static int addr_ok(const struct espdp_addr *a)
{
	return a->family == 4 || a->family == 6;
}

static int config_ok(const struct espdp_sa_config *cfg)
{
	return cfg->spi > ESP_SPI_RESERVED_MAX && cfg->direction <= ESPDP_DIR_OUT &&
	       cfg->mode <= ESPDP_MODE_TRANSPORT && cfg->encap <= ESPDP_ENCAP_UDP &&
	       cfg->esn <= 1 && cfg->source_check <= ESPDP_SOURCE_ANY && cfg->replay_window <= ESPD_REPLAY_MAX && addr_ok(&cfg->local) &&
	       addr_ok(&cfg->peer) && cfg->local.family == cfg->peer.family &&
	       (cfg->encap != ESPDP_ENCAP_UDP || (cfg->sport && cfg->dport)) &&
	       /* RFC 7296 2.23: following a peer is safe only with replay protection */
	       cfg->follow_peer <= 1 && (!cfg->follow_peer || (cfg->direction == ESPDP_DIR_IN &&
	       cfg->encap == ESPDP_ENCAP_UDP && cfg->replay_window));
}

static uint32_t worst_overhead(const struct espdp_sa_config *cfg, const struct crypto_alg *alg)
{
	uint32_t outer = cfg->peer.family == 4 ? IPV4_HDR_MIN : IPV6_HDR_LEN;

	if (cfg->encap == ESPDP_ENCAP_UDP)
		outer += UDP_HDR_LEN;
	return outer + ESP_HDR_LEN + alg->iv_len + (alg->block - 1) + ESP_TRAILER_LEN + alg->icv_len;
}

int espdp_sa_create(espdp *dp, const struct espdp_sa_config *cfg, const uint8_t *key,
		    size_t key_len, const uint8_t *auth_key, size_t auth_key_len, espdp_sa **out)
{
	struct crypto_alg alg;
	uint32_t window = cfg->direction == ESPDP_DIR_IN ? cfg->replay_window : 0;
	/* one allocation: struct | replay blocks | ctx[nworkers] | key | auth key */
	size_t size = sizeof(espdp_sa) - sizeof(struct replay) + replay_size(window);
	size_t ctx_off = (size + 7) & ~(size_t)7, key_off = ctx_off + dp->nworkers * sizeof(void *);
	espdp_sa *sa;
	int err;

	*out = NULL;
	if (!config_ok(cfg))
		return ESPDP_ERR_INVALID;
	err = crypto_alg_init(&alg, cfg->cipher, cfg->cipher_key_bits, cfg->integ);
	if (err)
		return err;
	if (key_len != alg.key_len || auth_key_len != alg.auth_key_len ||
	    (key_len && !key) || (auth_key_len && !auth_key))
		return ESPDP_ERR_KEY_LENGTH;
	sa = calloc(1, key_off + key_len + auth_key_len);
	if (!sa)
		return ESPDP_ERR_NOMEM;
	sa->cfg = *cfg;
	sa->cfg.replay_window = window;
	sa->alg = alg;
	sa->dp = dp;
	sa->nctx = dp->nworkers;
	sa->ctx = (struct crypto_ctx **)((char *)sa + ctx_off);
	sa->key = (uint8_t *)sa + key_off;
	sa->auth_key = sa->key + key_len;
	sa->overhead = worst_overhead(cfg, &alg);
	sa->seq_max = cfg->esn ? UINT64_MAX : UINT32_MAX;
	sa->seq_limit = sa->seq_warn = sa->seq_max; /* until espdp_sa_reserve says otherwise */
	sa->flags = SA_RESERVE_LOW; /* no reservation in force: nothing to warn about */
	sa->created_ns = dp_now(dp);
	remote_store(sa, cfg->peer.bytes, cfg->dport);
	sa->refs = 1;
	if (key_len)
		memcpy(sa->key, key, key_len);
	if (auth_key_len)
		memcpy(sa->auth_key, auth_key, auth_key_len);
	replay_init(&sa->replay, window, cfg->esn);
	/* key a context now so that a bad key fails here, not on a packet, then free it: an
	 * SA holds contexts only once it carries packets (issue 13: ~1.2 KB each, and most of
	 * a hub's SAs are idle at any time, a rekeyed one until its peer switches to it) */
	struct crypto_ctx *check = crypto_ctx_new(&sa->alg, sa->key, sa->auth_key,
						  cfg->direction == ESPDP_DIR_OUT);
	if (!check) {
		espdp_sa_release(sa);
		return ESPDP_ERR_CRYPTO;
	}
	crypto_ctx_free(check);
	*out = sa;
	return ESPDP_OK;
}

/* --- the remote (sa.h): a seqlock, one writer under publish_lock, readers retry --- */

static void remote_store(espdp_sa *sa, const uint8_t *addr, uint16_t port)
{
	uint64_t w[2];

	memcpy(w, addr, 16);
	/* release: a reader that sees a word also sees the odd remote_seq stored before it */
	__atomic_store_n(&sa->remote[0], w[0], __ATOMIC_RELEASE);
	__atomic_store_n(&sa->remote[1], w[1], __ATOMIC_RELEASE);
	__atomic_store_n(&sa->remote[2], (uint64_t)port, __ATOMIC_RELEASE);
}

void sa_remote_get(const espdp_sa *sa, struct sa_remote *out)
{
	uint64_t w[3];
	uint32_t s;

	for (;;) {
		s = __atomic_load_n(&sa->remote_seq, __ATOMIC_ACQUIRE);
		if (s & 1) {
			cpu_relax();
			continue;
		}
		/* acquire: the second remote_seq load cannot move before the words (no
		 * fences, which ThreadSanitizer does not model; plain loads on x86) */
		w[0] = __atomic_load_n(&sa->remote[0], __ATOMIC_ACQUIRE);
		w[1] = __atomic_load_n(&sa->remote[1], __ATOMIC_ACQUIRE);
		w[2] = __atomic_load_n(&sa->remote[2], __ATOMIC_ACQUIRE);
		if (__atomic_load_n(&sa->remote_seq, __ATOMIC_RELAXED) == s)
			break;
	}
	memcpy(out->addr, w, 16);
	out->port = (uint16_t)w[2];
}

int espdp_sa_set_remote(espdp_sa *sa, const struct espdp_addr *peer, uint16_t port)
{
	uint32_t s;

	if (peer->family != sa->cfg.peer.family || (sa->cfg.encap == ESPDP_ENCAP_UDP && !port))
		return ESPDP_ERR_INVALID;
	pthread_mutex_lock(&sa->dp->publish_lock);
	s = __atomic_load_n(&sa->remote_seq, __ATOMIC_RELAXED);
	__atomic_store_n(&sa->remote_seq, s + 1, __ATOMIC_RELAXED);
	remote_store(sa, peer->bytes, sa->cfg.encap == ESPDP_ENCAP_UDP ? port : sa->cfg.dport);
	__atomic_store_n(&sa->remote_seq, s + 2, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&sa->dp->publish_lock);
	return ESPDP_OK;
}

void espdp_sa_remote(const espdp_sa *sa, struct espdp_addr *peer, uint16_t *port)
{
	struct sa_remote r;

	sa_remote_get(sa, &r);
	memset(peer, 0, sizeof(*peer));
	peer->family = sa->cfg.peer.family;
	memcpy(peer->bytes, r.addr, peer->family == 4 ? 4 : 16);
	*port = r.port;
}

void sa_check_moved(espdp_sa *sa, const uint8_t *src, uint16_t sport, int64_t now_ns)
{
	struct sa_remote r;
	int64_t next;

	sa_remote_get(sa, &r);
	if (r.port == sport && !memcmp(r.addr, src, sa->cfg.peer.family == 4 ? 4 : 16))
		return;
	next = __atomic_load_n(&sa->moved_next_ns, __ATOMIC_RELAXED);
	/* one worker wins the slot; the others (and a flood of the same move) only return */
	if (now_ns < next || !__atomic_compare_exchange_n(&sa->moved_next_ns, &next,
							   now_ns + ESPD_PEER_MOVED_INTERVAL_NS, 0,
							   __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		return;
	events_push_moved(sa->dp, sa, src, sport);
}

struct crypto_ctx *sa_ctx(espdp_sa *sa, unsigned worker)
{
	struct crypto_ctx *ctx = sa->ctx[worker];

	if (!ctx) { /* this worker's first packet for the SA (ownership: sa.h) */
		ctx = crypto_ctx_new(&sa->alg, sa->key, sa->auth_key,
				     sa->cfg.direction == ESPDP_DIR_OUT);
		sa->ctx[worker] = ctx;
	}
	return ctx;
}

void espdp_sa_ref(espdp_sa *sa)
{
	__atomic_fetch_add(&sa->refs, 1, __ATOMIC_RELAXED);
}

void espdp_sa_release(espdp_sa *sa)
{
	if (!sa || __atomic_sub_fetch(&sa->refs, 1, __ATOMIC_ACQ_REL))
		return;
	for (unsigned i = 0; i < sa->nctx; i++)
		crypto_ctx_free(sa->ctx[i]);
	crypto_wipe(sa->key, sa->alg.key_len + sa->alg.auth_key_len); /* key, then auth key */
	free(sa->ctr.drops);
	free(sa);
}

int sa_flag_once(espdp_sa *sa, uint32_t flag)
{
	return !(__atomic_fetch_or(&sa->flags, flag, __ATOMIC_RELAXED) & flag);
}

int sa_next_seq(espdp_sa *sa, uint64_t *seq)
{
	uint64_t cur = __atomic_load_n(&sa->seq, __ATOMIC_RELAXED), limit;

	do {
		if (cur >= sa->seq_max) { /* never cycle: RFC 4303 3.3.3 */
			if (sa_flag_once(sa, SA_SEQ_CYCLED))
				events_push(sa->dp, ESPD_EVENT_seq_cycled, sa, sa->seq_max);
			return ESPD_DROP_seq_cycled;
		}
		limit = __atomic_load_n(&sa->seq_limit, __ATOMIC_ACQUIRE);
		if (cur >= limit) {
			if (sa_flag_once(sa, SA_RESERVE_LOW))
				events_push(sa->dp, ESPD_EVENT_seq_reserve, sa, cur);
			return ESPD_DROP_seq_unreserved;
		}
	} while (!__atomic_compare_exchange_n(&sa->seq, &cur, cur + 1, 1, __ATOMIC_RELAXED,
					      __ATOMIC_RELAXED));
	*seq = cur + 1;
	if (*seq >= __atomic_load_n(&sa->seq_warn, __ATOMIC_RELAXED) && sa_flag_once(sa, SA_RESERVE_LOW))
		events_push(sa->dp, ESPD_EVENT_seq_reserve, sa, *seq);
	return 0;
}

int espdp_sa_reserve(espdp_sa *sa, uint64_t resume_after, uint64_t limit, uint64_t warn_at)
{
	uint64_t cur;

	if (sa->cfg.direction != ESPDP_DIR_OUT || limit < resume_after || warn_at > limit)
		return ESPDP_ERR_INVALID;
	cur = __atomic_load_n(&sa->seq, __ATOMIC_RELAXED);
	while (cur < resume_after && /* only ever forward */
	       !__atomic_compare_exchange_n(&sa->seq, &cur, resume_after, 1, __ATOMIC_RELAXED,
					    __ATOMIC_RELAXED)) {
	}
	__atomic_store_n(&sa->seq_warn, warn_at, __ATOMIC_RELAXED);
	__atomic_store_n(&sa->seq_limit, limit, __ATOMIC_RELEASE);
	__atomic_fetch_and(&sa->flags, ~(uint32_t)SA_RESERVE_LOW, __ATOMIC_RELAXED);
	return ESPDP_OK;
}

static int limit_hit(const struct espdp_limits *l, uint64_t age_ns, uint64_t bytes, uint64_t packets)
{
	return (l->seconds && l->seconds <= UINT64_MAX / 1000000000ull &&
		age_ns >= l->seconds * 1000000000ull) ||
	       (l->bytes && bytes >= l->bytes) || (l->packets && packets >= l->packets);
}

static void expire(espdp_sa *sa, uint64_t age_ns, uint64_t bytes, uint64_t packets)
{
	if (limit_hit(&sa->cfg.hard, age_ns, bytes, packets) && sa_flag_once(sa, SA_HARD_EXPIRED))
		events_push(sa->dp, ESPD_EVENT_hard_expired, sa, age_ns / 1000000000ull);
	if (limit_hit(&sa->cfg.soft, age_ns, bytes, packets) && sa_flag_once(sa, SA_SOFT_EXPIRED))
		events_push(sa->dp, ESPD_EVENT_soft_expired, sa, age_ns / 1000000000ull);
}

int sa_admit(espdp_sa *sa, int64_t now_ns)
{
	uint64_t age = now_ns > sa->created_ns ? (uint64_t)(now_ns - sa->created_ns) : 0;

	if (!(__atomic_load_n(&sa->flags, __ATOMIC_RELAXED) & SA_HARD_EXPIRED))
		expire(sa, age, ctr_get(&sa->life_bytes), ctr_get(&sa->life_packets));
	return __atomic_load_n(&sa->flags, __ATOMIC_RELAXED) & SA_HARD_EXPIRED ? ESPD_DROP_sa_expired : 0;
}

void sa_use(espdp_sa *sa, uint32_t bytes, int64_t now_ns)
{
	uint64_t b = __atomic_add_fetch(&sa->life_bytes, bytes, __ATOMIC_RELAXED);
	uint64_t p = __atomic_add_fetch(&sa->life_packets, 1, __ATOMIC_RELAXED);
	uint64_t age = now_ns > sa->created_ns ? (uint64_t)(now_ns - sa->created_ns) : 0;

	expire(sa, age, b, p);
}

void sa_drop(espdp_sa *sa, int reason)
{
	uint64_t *d = __atomic_load_n(&sa->ctr.drops, __ATOMIC_ACQUIRE), *mine;

	if (!d && (mine = calloc(ESPD_DROP_SLOTS, sizeof(*mine)))) {
		/* one allocation wins; a loser frees its own and uses the winner's (now in d) */
		if (__atomic_compare_exchange_n(&sa->ctr.drops, &d, mine, 0, __ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE))
			d = mine;
		else
			free(mine);
	}
	if (d)
		ctr_add(&d[reason], 1);
	dp_drop(sa->dp, sa->cfg.direction, reason);
}

int sa_replay_advance(espdp_sa *sa, uint64_t seq)
{
	int r;

	while (__atomic_exchange_n(&sa->replay_lock, 1, __ATOMIC_ACQUIRE))
		cpu_relax();
	r = replay_advance(&sa->replay, seq);
	__atomic_store_n(&sa->replay_lock, 0, __ATOMIC_RELEASE);
	return r;
}

void espdp_sa_stats(const espdp_sa *sa, struct espdp_sa_stats *out)
{
	int64_t now = dp_now(sa->dp);
	const uint64_t *drops;

	memset(out, 0, sizeof(*out));
	out->packets = ctr_get(&sa->ctr.packets);
	out->bytes = ctr_get(&sa->ctr.bytes);
	out->encaps = ctr_get(&sa->ctr.encaps);
	out->encrypt = ctr_get(&sa->ctr.encrypt);
	out->digest = ctr_get(&sa->ctr.digest);
	out->decaps = ctr_get(&sa->ctr.decaps);
	out->decrypt = ctr_get(&sa->ctr.decrypt);
	out->verify = ctr_get(&sa->ctr.verify);
	out->seq = sa->cfg.direction == ESPDP_DIR_OUT ? ctr_get(&sa->seq) : ctr_get(&sa->replay.top);
	if (out->seq > sa->seq_max)
		out->seq = sa->seq_max;
	out->age_ns = now > sa->created_ns ? (uint64_t)(now - sa->created_ns) : 0;
	out->life_bytes = ctr_get(&sa->life_bytes);
	out->life_packets = ctr_get(&sa->life_packets);
	out->flags = __atomic_load_n(&sa->flags, __ATOMIC_RELAXED);
	drops = __atomic_load_n(&sa->ctr.drops, __ATOMIC_ACQUIRE);
	for (int i = 0; drops && i < ESPD_DROP_SLOTS; i++)
		out->drops[i] = ctr_get(&drops[i]);
}

void espdp_sa_info(const espdp_sa *sa, struct espdp_sa_info *out)
{
	memset(out, 0, sizeof(*out));
	out->spi = sa->cfg.spi;
	out->direction = sa->cfg.direction;
	out->iv_len = sa->alg.iv_len;
	out->icv_len = sa->alg.icv_len;
	out->block = sa->alg.block;
	out->overhead = sa->overhead;
	out->refs = __atomic_load_n(&sa->refs, __ATOMIC_RELAXED);
	out->crypto_backend = sa->alg.backend;
}

/* --- test hooks (espdp.h: not part of the API) --- */

void espdp_sa_test_set_seq(espdp_sa *sa, uint64_t seq)
{
	if (sa->cfg.direction == ESPDP_DIR_OUT)
		__atomic_store_n(&sa->seq, seq, __ATOMIC_RELAXED);
	else { /* an empty window with its top at seq: for tests of the ESN edges */
		replay_init(&sa->replay, sa->replay.window, sa->replay.esn);
		sa->replay.top = seq;
	}
}

void espdp_sa_test_set_usage(espdp_sa *sa, uint64_t bytes, uint64_t packets)
{
	__atomic_store_n(&sa->life_bytes, bytes, __ATOMIC_RELAXED);
	__atomic_store_n(&sa->life_packets, packets, __ATOMIC_RELAXED);
}
