/* table: building table sets (SAD + SPD), publishing them atomically, reclaiming old ones.
 * See dp.h for the epoch protocol that makes the swap safe without packet-path locks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dp.h"
#include "sa.h"

espdp_table *espdp_table_new(espdp *dp)
{
	espdp_table *t = calloc(1, sizeof(*t));

	if (t)
		t->dp = dp;
	return t;
}

void table_destroy(struct espdp_table *t)
{
	for (size_t i = 0; i < t->nsas; i++)
		espdp_sa_release(t->sas[i]);
	for (size_t i = 0; i < t->nrules; i++)
		espdp_sa_release(t->rules[i].sa);
	free(t->sas);
	free(t->rules);
	free(t->hits);
	spd_free(t->spd);
	sad_free(&t->sad);
	free(t);
}

void espdp_table_free(espdp_table *t)
{
	if (t && !t->published) /* a published table belongs to the data plane */
		table_destroy(t);
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
	size_t n = *cap ? *cap : 16;
	void *p;

	if (need <= *cap)
		return 0;
	while (n < need)
		n *= 2;
	p = realloc(*arr, n * elem);
	if (!p)
		return ESPDP_ERR_NOMEM;
	*arr = p;
	*cap = n;
	return 0;
}

int espdp_table_add_sa(espdp_table *t, espdp_sa *sa)
{
	if (t->published || !sa || sa->dp != t->dp)
		return ESPDP_ERR_STATE;
	if (grow((void **)&t->sas, &t->cap_sas, t->nsas + 1, sizeof(*t->sas)))
		return ESPDP_ERR_NOMEM;
	espdp_sa_ref(sa);
	t->sas[t->nsas++] = sa;
	return ESPDP_OK;
}

int espdp_table_add_rule(espdp_table *t, const struct espdp_rule *rule, espdp_sa *sa)
{
	struct table_rule *r;

	if (t->published)
		return ESPDP_ERR_STATE;
	if ((rule->family != 4 && rule->family != 6) || rule->action > ESPDP_ACTION_PROTECT ||
	    (sa && (sa->dp != t->dp || sa->cfg.direction != ESPDP_DIR_OUT)))
		return ESPDP_ERR_INVALID;
	if (!t->spd && !(t->spd = spd_new()))
		return ESPDP_ERR_NOMEM;
	if (grow((void **)&t->rules, &t->cap_rules, t->nrules + 1, sizeof(*t->rules)) ||
	    spd_add(t->spd, rule, (uint32_t)t->nrules))
		return ESPDP_ERR_NOMEM;
	r = &t->rules[t->nrules++];
	r->action = rule->action;
	r->policy = rule->policy;
	r->acquire_ns = INT64_MIN; /* the first packet raises acquire */
	r->sa = rule->action == ESPDP_ACTION_PROTECT ? sa : NULL;
	if (r->sa)
		espdp_sa_ref(r->sa);
	return ESPDP_OK;
}

static int table_compile(espdp_table *t)
{
	int err;

	if (!t->spd && !(t->spd = spd_new()))
		return ESPDP_ERR_NOMEM;
	if (spd_compile(t->spd))
		return ESPDP_ERR_NOMEM;
	t->hits = calloc(t->nrules ? t->nrules : 1, sizeof(*t->hits));
	if (!t->hits)
		return ESPDP_ERR_NOMEM;
	err = sad_build(&t->sad, t->sas, t->nsas);
	if (err) {
		free(t->hits);
		t->hits = NULL;
	}
	return err;
}

int espdp_publish(espdp *dp, espdp_table *t)
{
	struct espdp_table *old;
	int err;

	if (t->published || t->dp != dp)
		return ESPDP_ERR_STATE;
	err = table_compile(t);
	if (err)
		return err; /* the live table stays as it was */
	t->published = 1;
	pthread_mutex_lock(&dp->publish_lock);
	old = __atomic_exchange_n(&dp->live, t, __ATOMIC_SEQ_CST);
	if (old) {
		old->retire_epoch = __atomic_add_fetch(&dp->epoch, 1, __ATOMIC_SEQ_CST);
		old->next_retired = dp->retired;
		dp->retired = old;
	}
	pthread_mutex_unlock(&dp->publish_lock);
	espdp_reclaim(dp);
	return ESPDP_OK;
}

static uint64_t oldest_reader(const espdp *dp)
{
	uint64_t min = EPOCH_OFFLINE;

	for (unsigned i = 0; i <= dp->nworkers; i++) {
		uint64_t e = __atomic_load_n(&dp->workers[i].epoch, __ATOMIC_SEQ_CST);

		if (e < min)
			min = e;
	}
	return min;
}

size_t espdp_reclaim(espdp *dp)
{
	struct espdp_table **link, *t;
	size_t pending = 0;
	uint64_t oldest;

	pthread_mutex_lock(&dp->publish_lock);
	oldest = oldest_reader(dp);
	for (link = &dp->retired; (t = *link);) {
		if (oldest >= t->retire_epoch) { /* no reader can still hold t */
			*link = t->next_retired;
			table_destroy(t);
		} else {
			link = &t->next_retired;
			pending++;
		}
	}
	pthread_mutex_unlock(&dp->publish_lock);
	return pending;
}

struct espdp_table *dp_enter(espdp *dp, unsigned w)
{
	__atomic_store_n(&dp->workers[w].epoch, __atomic_load_n(&dp->epoch, __ATOMIC_SEQ_CST),
			 __ATOMIC_SEQ_CST);
	return __atomic_load_n(&dp->live, __ATOMIC_SEQ_CST);
}

void dp_leave(espdp *dp, unsigned w)
{
	__atomic_store_n(&dp->workers[w].epoch, EPOCH_OFFLINE, __ATOMIC_RELEASE);
}

size_t espdp_rule_hits(espdp *dp, uint64_t *out, size_t n)
{
	struct espdp_table *t;
	size_t k = 0;

	pthread_mutex_lock(&dp->publish_lock); /* the live table cannot be retired meanwhile */
	t = dp->live;
	if (t) {
		for (k = 0; k < n && k < t->nrules; k++)
			out[k] = __atomic_load_n(&t->hits[k], __ATOMIC_RELAXED);
		k = t->nrules;
	}
	pthread_mutex_unlock(&dp->publish_lock);
	return k;
}
