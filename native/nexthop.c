/* nexthop: the AF_PACKET send path's table, a sequence-counted array (see nexthop.h). */
#include "nexthop.h"

#include <string.h>

#include "dp.h"

_Static_assert(sizeof(struct nexthop) == NEXTHOP_WORDS * sizeof(uint64_t), "entry words");

void nexthops_init(struct nexthops *t)
{
	memset(t, 0, sizeof(*t));
	pthread_mutex_init(&t->lock, NULL);
}

void nexthops_destroy(struct nexthops *t)
{
	pthread_mutex_destroy(&t->lock);
}

int nexthops_set(struct nexthops *t, const struct espdp_nexthop *v, size_t n)
{
	uint64_t words[NEXTHOP_MAX * NEXTHOP_WORDS];
	uint32_t seq;

	if (n > NEXTHOP_MAX)
		return ESPDP_ERR_INVALID;
	memset(words, 0, sizeof(words));
	for (size_t i = 0; i < n; i++) {
		struct nexthop e = { 0 };

		if ((v[i].family != 4 && v[i].family != 6) || v[i].ifindex <= 0 || v[i].mtu < 68 ||
		    v[i].mtu > 0xffff)
			return ESPDP_ERR_INVALID;
		e.family = v[i].family;
		memcpy(e.mac, v[i].mac, 6);
		e.mtu = (uint16_t)v[i].mtu;
		e.ifindex = v[i].ifindex;
		memcpy(e.addr, v[i].addr, v[i].family == 4 ? 4 : 16);
		memcpy(&words[i * NEXTHOP_WORDS], &e, sizeof(e));
	}
	pthread_mutex_lock(&t->lock);
	seq = __atomic_load_n(&t->seq, __ATOMIC_RELAXED);
	/* release stores (no fences: ThreadSanitizer has none): a reader that sees any new
	 * word also sees the odd counter in front of it */
	__atomic_store_n(&t->seq, seq + 1, __ATOMIC_RELAXED);
	for (size_t i = 0; i < NEXTHOP_MAX * NEXTHOP_WORDS; i++)
		__atomic_store_n(&t->words[i], words[i], __ATOMIC_RELEASE);
	__atomic_store_n(&t->n, (uint32_t)n, __ATOMIC_RELEASE);
	__atomic_store_n(&t->seq, seq + 2, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&t->lock);
	return ESPDP_OK;
}

int nexthops_snapshot(const struct nexthops *t, struct nexthop_snap *s)
{
	uint64_t words[NEXTHOP_MAX * NEXTHOP_WORDS];
	uint32_t seq = __atomic_load_n(&t->seq, __ATOMIC_ACQUIRE), n;

	s->n = 0;
	if (seq & 1)
		return -1;
	n = __atomic_load_n(&t->n, __ATOMIC_ACQUIRE);
	if (n > NEXTHOP_MAX)
		return -1;
	for (uint32_t i = 0; i < n * NEXTHOP_WORDS; i++) /* acquire: the check below is after */
		words[i] = __atomic_load_n(&t->words[i], __ATOMIC_ACQUIRE);
	if (__atomic_load_n(&t->seq, __ATOMIC_RELAXED) != seq)
		return -1;
	memcpy(s->e, words, n * sizeof(s->e[0]));
	s->n = n;
	return 0;
}

const struct nexthop *nexthop_find(const struct nexthop_snap *s, int family, const uint8_t *dst)
{
	size_t len = family == 4 ? 4 : 16;

	for (unsigned i = 0; i < s->n; i++)
		if (s->e[i].family == family && !memcmp(s->e[i].addr, dst, len))
			return &s->e[i];
	return NULL;
}

int espdp_nexthops_set(espdp *dp, const struct espdp_nexthop *nh, size_t n)
{
	return nexthops_set(&dp->nexthops, nh, n);
}
