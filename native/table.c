/* table: table sets (SAD + SPD + rules): built whole and published atomically, or changed
 * one SA at a time in place; and the reclamation of what either retires.
 *
 * Two ways to change what the workers see, both under publish_lock:
 *   publish      a complete new table set replaces the live one in one pointer exchange
 *                (config load and reload; O(size of the set));
 *   incremental  espdp_sa_install / _replace / _retire change the live set in place
 *                (IKE: one Child SA at a time; O(1) amortised at any number of SAs).
 * Single writer: only the control plane's SA owner calls the mutating functions; the
 * publish_lock every one of them takes enforces it, so readers (the workers, lock free)
 * face one writer at a time, which is what the RCU-style updates below rely on.
 *
 * What an incremental change touches, each an atomic store a packet sees whole:
 *   - the inbound side: one SAD entry (sad.h: insert into an empty slot, remove to a
 *     tombstone, rebuild by swapping the array pointer);
 *   - the outbound side: the SA pointer of each PROTECT rule of the SA's policy (crypto
 *     map entry), found through the policy index built with the table. A rule is never
 *     half bound: it points at the old SA, the new one, or none.
 * Whatever a change unlinks (an SA reference, a SAD array) is retired with an epoch and
 * freed by espdp_reclaim once no worker can hold it (dp.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* qsort_r */
#endif
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
	free(t->by_policy);
	free(t->policy_runs);
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

/* --- the policy index: policy -> its PROTECT rules --- */

static uint32_t policy_hash(uint32_t policy)
{
	return (uint32_t)(((uint64_t)policy * 0x9E3779B97F4A7C15ull) >> 32);
}

static int cmp_rule_policy(const void *a, const void *b, void *rules)
{
	const struct table_rule *r = rules;
	uint32_t x = r[*(const uint32_t *)a].policy, y = r[*(const uint32_t *)b].policy;

	if (x != y)
		return x < y ? -1 : 1;
	return *(const uint32_t *)a < *(const uint32_t *)b ? -1 : 1;
}

/* by_policy: the PROTECT rules with a policy, grouped by policy; policy_runs: an open
 * addressing hash (at most half full) from policy to its group. Immutable once built. */
static int index_build(struct espdp_table *t)
{
	size_t n = 0, size = 16, runs = 0;

	for (size_t i = 0; i < t->nrules; i++)
		n += t->rules[i].action == ESPDP_ACTION_PROTECT && t->rules[i].policy;
	t->by_policy = malloc((n ? n : 1) * sizeof(*t->by_policy));
	if (!t->by_policy)
		return ESPDP_ERR_NOMEM;
	for (size_t i = 0, k = 0; i < t->nrules; i++)
		if (t->rules[i].action == ESPDP_ACTION_PROTECT && t->rules[i].policy)
			t->by_policy[k++] = (uint32_t)i;
	qsort_r(t->by_policy, n, sizeof(*t->by_policy), cmp_rule_policy, t->rules);
	while (size < 2 * n)
		size <<= 1;
	t->policy_runs = calloc(size, sizeof(*t->policy_runs));
	if (!t->policy_runs)
		return ESPDP_ERR_NOMEM;
	t->policy_mask = (uint32_t)size - 1;
	for (size_t k = 0; k < n; runs++) {
		uint32_t policy = t->rules[t->by_policy[k]].policy, i = policy_hash(policy) & t->policy_mask;
		size_t end = k;

		while (end < n && t->rules[t->by_policy[end]].policy == policy)
			end++;
		while (t->policy_runs[i].count)
			i = (i + 1) & t->policy_mask;
		t->policy_runs[i] = (struct policy_run){ policy, (uint32_t)k, (uint32_t)(end - k) };
		k = end;
	}
	return ESPDP_OK;
}

/* The PROTECT rules of `policy`: *count of them from *first in by_policy. */
static const uint32_t *policy_rules(const struct espdp_table *t, uint32_t policy, uint32_t *count)
{
	*count = 0;
	if (!policy || !t->policy_runs)
		return NULL;
	for (uint32_t i = policy_hash(policy) & t->policy_mask; t->policy_runs[i].count;
	     i = (i + 1) & t->policy_mask) {
		if (t->policy_runs[i].policy == policy) {
			*count = t->policy_runs[i].count;
			return t->by_policy + t->policy_runs[i].first;
		}
	}
	return NULL;
}

/* --- publication --- */

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
	err = index_build(t);
	if (!err)
		err = sad_build(&t->sad, t->sas, t->nsas);
	if (err) {
		free(t->hits);
		free(t->by_policy);
		free(t->policy_runs);
		t->hits = NULL;
		t->by_policy = NULL;
		t->policy_runs = NULL;
	}
	return err;
}

/* Put obj on the retired list with a fresh epoch: call after unlinking it. Caller holds
 * publish_lock; node comes from retire_node (allocated before anything changed). */
static void retire(espdp *dp, struct retired *node, void *obj, void (*destroy)(void *))
{
	node->obj = obj;
	node->destroy = destroy;
	node->epoch = __atomic_add_fetch(&dp->epoch, 1, __ATOMIC_SEQ_CST);
	node->next = dp->retired;
	dp->retired = node;
}

static void destroy_table(void *t) { table_destroy(t); }
static void destroy_sa_ref(void *sa) { espdp_sa_release(sa); }

int espdp_publish(espdp *dp, espdp_table *t)
{
	struct espdp_table *old;
	struct retired *node;
	int err;

	if (t->published || t->dp != dp)
		return ESPDP_ERR_STATE;
	node = malloc(sizeof(*node));
	if (!node)
		return ESPDP_ERR_NOMEM;
	err = table_compile(t);
	if (err) {
		free(node);
		return err; /* the live table stays as it was */
	}
	t->published = 1;
	pthread_mutex_lock(&dp->publish_lock);
	old = __atomic_exchange_n(&dp->live, t, __ATOMIC_SEQ_CST);
	if (old)
		retire(dp, node, old, destroy_table);
	else
		free(node);
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

/* Unlink what no reader can still hold; the caller holds publish_lock. Returns the
 * unlinked nodes (to destroy outside the lock) and counts what stays pending. */
static struct retired *reclaimable(espdp *dp, size_t *pending)
{
	struct retired **link, *r, *done = NULL;
	uint64_t oldest = oldest_reader(dp);

	*pending = 0;
	for (link = &dp->retired; (r = *link);) {
		if (oldest >= r->epoch) { /* every reader loaded its pointers after the unlink */
			*link = r->next;
			r->next = done;
			done = r;
		} else {
			link = &r->next;
			(*pending)++;
		}
	}
	return done;
}

size_t espdp_reclaim(espdp *dp)
{
	struct retired *done, *next;
	size_t pending;

	pthread_mutex_lock(&dp->publish_lock);
	done = reclaimable(dp, &pending);
	pthread_mutex_unlock(&dp->publish_lock);
	for (; done; done = next) {
		next = done->next;
		done->destroy(done->obj);
		free(done);
	}
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

/* --- incremental changes (the SA owner's calls) --- */

/* Retire nodes for one change: one per rule rebound, one for a SAD array, one for an SA
 * leaving the SAD. Allocated before anything changes, so a change fails whole or not. */
struct change {
	struct retired **nodes;
	size_t n, used;
};

static int change_alloc(struct change *c, size_t n)
{
	c->n = n;
	c->used = 0;
	c->nodes = calloc(n ? n : 1, sizeof(*c->nodes));
	if (!c->nodes)
		return ESPDP_ERR_NOMEM;
	for (size_t i = 0; i < n; i++)
		if (!(c->nodes[i] = malloc(sizeof(struct retired))))
			return ESPDP_ERR_NOMEM;
	return ESPDP_OK;
}

static struct retired *change_node(struct change *c)
{
	return c->nodes[c->used++]; /* sized by change_alloc for every use */
}

static void change_free(struct change *c)
{
	for (size_t i = c->used; i < c->n && c->nodes; i++)
		free(c->nodes[i]);
	free(c->nodes);
}

static int sa_ok(const espdp *dp, const espdp_sa *sa, int direction)
{
	return !sa || (sa->dp == dp && sa->cfg.direction == direction);
}

/* Point each of the n rules at out (one reference each); the references to the SAs they
 * pointed at before are retired. */
static void bind_rules(espdp *dp, struct espdp_table *t, const uint32_t *rules, uint32_t n,
		       espdp_sa *out, struct change *c)
{
	for (uint32_t k = 0; k < n; k++) {
		struct table_rule *r = &t->rules[rules[k]];
		espdp_sa *old;

		if (out)
			espdp_sa_ref(out);
		old = __atomic_exchange_n(&r->sa, out, __ATOMIC_SEQ_CST);
		if (old)
			retire(dp, change_node(c), old, destroy_sa_ref);
	}
}

/* The common path of install and replace: validate, allocate, then change (inbound
 * first: the peer may answer as soon as the outbound SA sends). */
static int change_pair(espdp *dp, espdp_sa *in, espdp_sa *out, int replace)
{
	struct espdp_table *t;
	struct sad_array *next = NULL, *old_arr;
	const uint32_t *rules = NULL;
	struct change c = { 0 };
	uint32_t n = 0;
	int err = ESPDP_OK;

	if (!sa_ok(dp, in, ESPDP_DIR_IN) || !sa_ok(dp, out, ESPDP_DIR_OUT) || (!in && !out))
		return ESPDP_ERR_INVALID;
	pthread_mutex_lock(&dp->publish_lock);
	t = dp->live;
	if (!t) {
		err = ESPDP_ERR_STATE;
		goto out;
	}
	if (out) {
		rules = policy_rules(t, out->cfg.policy, &n);
		if (!n) {
			err = ESPDP_ERR_INVALID; /* no PROTECT rule of this policy in the live set */
			goto out;
		}
		for (uint32_t k = 0; !replace && k < n; k++)
			if (__atomic_load_n(&t->rules[rules[k]].sa, __ATOMIC_RELAXED))
				err = ESPDP_ERR_EXISTS; /* bound already: that is a replace */
	}
	if (!err && in && sad_has(&t->sad, in))
		err = ESPDP_ERR_EXISTS;
	if (!err && in)
		next = sad_grow(&t->sad, &err);
	if (!err)
		err = change_alloc(&c, n + (next != NULL));
	if (err) {
		free(next);
		goto out;
	}
	if (next) {
		old_arr = sad_swap(&t->sad, next);
		if (old_arr)
			retire(dp, change_node(&c), old_arr, free);
	}
	if (in)
		sad_insert(&t->sad, in);
	bind_rules(dp, t, rules, n, out, &c);
out:
	pthread_mutex_unlock(&dp->publish_lock);
	change_free(&c);
	if (!err)
		espdp_reclaim(dp);
	return err;
}

int espdp_sa_install(espdp *dp, espdp_sa *in, espdp_sa *out)
{
	return change_pair(dp, in, out, 0);
}

int espdp_sa_replace(espdp *dp, espdp_sa *in, espdp_sa *out)
{
	return change_pair(dp, in, out, 1);
}

int espdp_sa_retire(espdp *dp, espdp_sa *sa)
{
	struct espdp_table *t;
	const uint32_t *rules;
	struct change c = { 0 };
	uint32_t n = 0, bound = 0;
	int err = ESPDP_OK;

	if (!sa || sa->dp != dp)
		return ESPDP_ERR_INVALID;
	pthread_mutex_lock(&dp->publish_lock);
	t = dp->live;
	if (!t) {
		err = ESPDP_ERR_STATE;
		goto out;
	}
	if (sa->cfg.direction == ESPDP_DIR_IN) {
		err = change_alloc(&c, 1);
		if (!err && !sad_remove(&t->sad, sa))
			err = ESPDP_ERR_INVALID; /* not in the live SAD */
		if (!err)
			retire(dp, change_node(&c), sa, destroy_sa_ref);
		goto out;
	}
	rules = policy_rules(t, sa->cfg.policy, &n);
	for (uint32_t k = 0; k < n; k++)
		bound += __atomic_load_n(&t->rules[rules[k]].sa, __ATOMIC_RELAXED) == sa;
	err = bound ? change_alloc(&c, bound) : ESPDP_ERR_INVALID; /* bound to no rule */
	for (uint32_t k = 0; !err && k < n; k++) {
		struct table_rule *r = &t->rules[rules[k]];

		if (__atomic_load_n(&r->sa, __ATOMIC_RELAXED) != sa)
			continue;
		__atomic_store_n(&r->sa, NULL, __ATOMIC_SEQ_CST); /* packets now raise acquire */
		__atomic_store_n(&r->acquire_ns, INT64_MIN, __ATOMIC_RELAXED);
		retire(dp, change_node(&c), sa, destroy_sa_ref);
	}
out:
	pthread_mutex_unlock(&dp->publish_lock);
	change_free(&c);
	if (!err)
		espdp_reclaim(dp);
	return err;
}
