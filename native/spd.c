/* spd: the compiled security policy database (tuple space search).
 *
 * Stages, in the order of this file:
 *   keys      a selector or a rule becomes fixed-width words (2 for IPv4, 5 for IPv6)
 *   add       rules are normalised (value &= mask) and kept in a pending list
 *   compile   rules are grouped by mask tuple, each group gets an open-addressing hash
 *             table from masked key to its lowest rule number, groups sorted by that
 *   classify  visit groups best-first, stop once no group can beat the match found
 *   parse     an IP packet becomes a selector (spd_key_from_packet, over ip_parse)
 *
 * Why 10,000 rules cost about what 10 do (the target is within 3x): a lookup costs one
 * hash probe per group visited, and the number of groups is the number of distinct mask
 * tuples, not the number of rules. A realistic access list (/24 and /32 subnet pairs,
 * some with an eq port, a trailing broad rule) has a handful of mask tuples whether it
 * holds 10 or 10,000 entries, so both visit about the same groups. A probe is O(1) and,
 * as important, branch-predictable at any table size: slots come in buckets of eight
 * with a byte of hash tag each, and with at most half the slots full one 8-byte load
 * usually settles a probe (no candidate, or the one; go on only if the bucket is full).
 * Plain linear probing over slots had a probe length that varied with the key, which
 * cost a branch miss per group and made 10,000 rules 3.7x slower than 10; the buckets
 * bring that to about 1.6x (tests/native/test_spd.c --bench). Probe lengths depend only on the rules
 * (which the administrator writes), never on packets. What grows with the rules is the
 * memory touched: a one-byte tag per slot for a miss (2 per rule), plus one slot (24
 * bytes for IPv4, 48 for IPv6) for the group that matches. Priority pruning lets a packet
 * matching an early rule skip every group whose best rule comes after it.
 */
#include "spd.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ip.h"
#include "proto.h"

#define KEY_WORDS 5 /* the most words a key needs (IPv6) */
#define V4_WORDS 2 /* src|dst, proto|sport|dport */
#define V6_WORDS 5 /* src hi, src lo, dst hi, dst lo, proto|sport|dport */
#define BUCKET 8 /* slots per bucket: one tag byte each, in one uint64_t */
#define BYTES_LOW7 0x7f7f7f7f7f7f7f7fULL
#define BYTES_HIGH 0x8080808080808080ULL
#define BYTES_ONE 0x0101010101010101ULL
#define NO_MATCH UINT64_MAX
#define IPPROTO_NUM_SCTP 132
#define IPPROTO_NUM_UDPLITE 136

/* A rule waiting for spd_compile; val has no bits outside mask. */
struct pending {
	uint64_t val[KEY_WORDS];
	uint64_t mask[KEY_WORDS];
	uint32_t index;
	uint8_t family;
};

/* All rules of one mask tuple, in an open-addressing hash table of bmask + 1 buckets of
 * BUCKET slots, probed bucket by bucket from the key's home bucket (linear probing).
 * Byte j of tags[b] belongs to slot b * BUCKET + j: 0 when the slot is empty, else the
 * hash_tag of its key (high bit set). Slot i holds slots[i * (nw + 1) ...]: nw key words,
 * then the rule number. Invariants: at most half of the slots are full, so a probe ends;
 * slots fill in probe order and are never emptied, so a key is never stored past a
 * bucket that has an empty slot; every key is masked, and unique within the group. */
struct group {
	uint64_t mask[KEY_WORDS];
	uint64_t best; /* lowest rule number in the group */
	uint64_t *tags;
	uint64_t *slots;
	size_t bmask;
};

/* The groups of one family, ascending by best. tags and slots back every group's table. */
struct table {
	struct group *groups;
	size_t ngroups;
	uint64_t *tags;
	uint64_t *slots;
};

struct spd {
	struct pending *rules; /* freed by spd_compile */
	size_t nrules;
	size_t cap;
	int64_t last; /* last index added, -1 before the first */
	bool compiled;
	struct table v4;
	struct table v6;
};

/* --- keys --- */

static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) << 32 | rd32(p + 4); }

static uint64_t l4_word(uint8_t proto, uint16_t sport, uint16_t dport)
{
	return (uint64_t)proto << 32 | (uint64_t)sport << 16 | dport;
}

/* The words of one selector; IPv4 reads only bytes 0..3 of each address and leaves the
 * words past V4_WORDS zero, so masks of both families compare as KEY_WORDS words. */
static void key_words(uint8_t family, uint8_t proto, const uint8_t *src, const uint8_t *dst,
		      uint16_t sport, uint16_t dport, uint64_t w[KEY_WORDS])
{
	memset(w, 0, KEY_WORDS * sizeof(*w));
	if (family == 4) {
		w[0] = (uint64_t)rd32(src) << 32 | rd32(dst);
		w[1] = l4_word(proto, sport, dport);
		return;
	}
	w[0] = rd64(src);
	w[1] = rd64(src + 8);
	w[2] = rd64(dst);
	w[3] = rd64(dst + 8);
	w[4] = l4_word(proto, sport, dport);
}

/* Multiply-xorshift over the words, then the murmur3 finaliser so the low bits (the
 * bucket) and the top bits (the tag) depend on every input bit. */
static inline uint64_t hash_words(const uint64_t *w, const unsigned nw)
{
	uint64_t h = 0x243f6a8885a308d3ULL;

	for (unsigned i = 0; i < nw; i++) {
		h = (h ^ w[i]) * 0x9e3779b97f4a7c15ULL;
		h ^= h >> 29;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return h;
}

/* Seven hash bits the bucket index does not use, high bit set so never empty: a probe
 * compares a bucket's eight tags at once and reads a slot's key only when its tag agrees
 * (by chance 1 in 128). */
static inline uint64_t hash_tag(uint64_t h) { return h >> 57 | 0x80; }

/* High bit of each byte of x that is zero (exact: no carry crosses a byte). */
static inline uint64_t zero_bytes(uint64_t x)
{
	return ~(((x & BYTES_LOW7) + BYTES_LOW7) | x | BYTES_LOW7);
}

/* Slot number within a bucket of the lowest byte flagged in bytes (non-zero). */
static inline unsigned first_byte(uint64_t bytes) { return (unsigned)__builtin_ctzll(bytes) / 8; }

static inline bool words_eq(const uint64_t *a, const uint64_t *b, const unsigned nw)
{
	uint64_t diff = 0;

	for (unsigned i = 0; i < nw; i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}

/* The rule number stored for the masked key m (whose hash is h), or NO_MATCH. Usually
 * one bucket: its tags yield the candidate slots (almost always none, or the one) and
 * show whether the probe must go on (only when the bucket is full), so the branches stay
 * predictable however large the table. */
static inline uint64_t bucket_find(const struct group *g, const uint64_t *m, uint64_t h,
				   const unsigned nw)
{
	uint64_t tags = hash_tag(h) * BYTES_ONE;

	for (size_t b = h & g->bmask;; b = (b + 1) & g->bmask) {
		uint64_t bucket = g->tags[b];

		for (uint64_t hit = zero_bytes(bucket ^ tags); hit; hit &= hit - 1) {
			const uint64_t *s = g->slots + (b * BUCKET + first_byte(hit)) * (nw + 1);

			if (words_eq(s, m, nw))
				return s[nw];
		}
		if (~bucket & BYTES_HIGH)
			return NO_MATCH;
	}
}

/* --- add --- */

struct spd *spd_new(void)
{
	struct spd *spd = calloc(1, sizeof(*spd));

	if (spd)
		spd->last = -1;
	return spd;
}

static void table_free(struct table *t)
{
	free(t->groups);
	free(t->tags);
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

void spd_free(struct spd *spd)
{
	if (!spd)
		return;
	free(spd->rules);
	table_free(&spd->v4);
	table_free(&spd->v6);
	free(spd);
}

static int reserve(struct spd *spd)
{
	struct pending *rules;
	size_t cap;

	if (spd->nrules < spd->cap)
		return 0;
	cap = spd->cap ? spd->cap * 2 : 64;
	if (cap > SIZE_MAX / sizeof(*rules))
		return -ENOMEM;
	rules = realloc(spd->rules, cap * sizeof(*rules));
	if (!rules)
		return -ENOMEM;
	spd->rules = rules;
	spd->cap = cap;
	return 0;
}

int spd_add(struct spd *spd, const struct espdp_rule *rule, uint32_t index)
{
	struct pending *p;
	int err;

	if (spd->compiled || (int64_t)index <= spd->last)
		return -EINVAL;
	if (rule->family != 4 && rule->family != 6)
		return -EINVAL;
	err = reserve(spd);
	if (err)
		return err;
	p = &spd->rules[spd->nrules++];
	p->family = rule->family;
	p->index = index;
	key_words(rule->family, rule->proto, rule->src, rule->dst, rule->sport, rule->dport,
		  p->val);
	key_words(rule->family, rule->proto_mask, rule->src_mask, rule->dst_mask,
		  rule->sport_mask, rule->dport_mask, p->mask);
	for (unsigned i = 0; i < KEY_WORDS; i++)
		p->val[i] &= p->mask[i];
	spd->last = index;
	return 0;
}

/* --- compile --- */

/* Family, then mask tuple, then rule number: each group becomes one run, in rule order. */
static int cmp_pending(const void *a, const void *b)
{
	const struct pending *x = a, *y = b;

	if (x->family != y->family)
		return x->family < y->family ? -1 : 1;
	for (unsigned i = 0; i < KEY_WORDS; i++)
		if (x->mask[i] != y->mask[i])
			return x->mask[i] < y->mask[i] ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

static int cmp_group(const void *a, const void *b)
{
	const struct group *x = a, *y = b;

	return x->best < y->best ? -1 : x->best > y->best;
}

static bool same_mask(const struct pending *a, const struct pending *b)
{
	return a->family == b->family && words_eq(a->mask, b->mask, KEY_WORDS);
}

/* Buckets for n rules: a power of two, with >= 2n slots so at most half are full. */
static size_t table_buckets(size_t n)
{
	size_t nb = 1;

	while (nb * BUCKET < 2 * n)
		nb *= 2;
	return nb;
}

/* Length of the run of rules sharing rules[0]'s family and mask. */
static size_t run_length(const struct pending *rules, size_t n)
{
	size_t len = 1;

	while (len < n && same_mask(&rules[0], &rules[len]))
		len++;
	return len;
}

/* Insert a masked key unless the group has it already: rules arrive in ascending order,
 * so the one already there wins and the later one is shadowed for good. */
static void group_insert(struct group *g, const struct pending *p, unsigned nw)
{
	uint64_t h = hash_words(p->val, nw), empty;
	size_t b = h & g->bmask, i;

	if (bucket_find(g, p->val, h, nw) != NO_MATCH)
		return;
	while (!(empty = ~g->tags[b] & BYTES_HIGH))
		b = (b + 1) & g->bmask;
	i = b * BUCKET + first_byte(empty);
	g->tags[b] |= hash_tag(h) << (8 * (i % BUCKET));
	memcpy(g->slots + i * (nw + 1), p->val, nw * sizeof(*g->slots));
	g->slots[i * (nw + 1) + nw] = p->index;
}

/* Fill one group from its len rules (ascending by index) over empty tags and slots of
 * its own. */
static void group_build(struct group *g, const struct pending *rules, size_t len,
			uint64_t *tags, uint64_t *slots, unsigned nw)
{
	memcpy(g->mask, rules[0].mask, sizeof(g->mask));
	g->best = rules[0].index;
	g->bmask = table_buckets(len) - 1;
	g->tags = tags;
	g->slots = slots;
	for (size_t i = 0; i < len; i++)
		group_insert(g, &rules[i], nw);
}

/* Build the table of one family from its n rules, sorted by cmp_pending. */
static int table_build(struct table *t, const struct pending *rules, size_t n, unsigned nw)
{
	size_t ngroups = 0, nbuckets = 0, used = 0, len;

	if (!n)
		return 0;
	for (size_t i = 0; i < n; i += len, ngroups++) {
		len = run_length(rules + i, n - i);
		nbuckets += table_buckets(len);
	}
	t->groups = calloc(ngroups, sizeof(*t->groups));
	t->tags = calloc(nbuckets, sizeof(*t->tags)); /* all slots empty */
	t->slots = calloc(nbuckets * BUCKET * (nw + 1), sizeof(*t->slots));
	if (!t->groups || !t->tags || !t->slots)
		return -ENOMEM;
	t->ngroups = ngroups;
	for (size_t i = 0, k = 0; i < n; i += len, k++) {
		len = run_length(rules + i, n - i);
		group_build(&t->groups[k], rules + i, len, t->tags + used,
			    t->slots + used * BUCKET * (nw + 1), nw);
		used += table_buckets(len);
	}
	qsort(t->groups, ngroups, sizeof(*t->groups), cmp_group);
	return 0;
}

int spd_compile(struct spd *spd)
{
	size_t n4 = 0;
	int err;

	if (spd->compiled)
		return -EINVAL;
	if (!spd->nrules) /* nothing to build: every key classifies to -1 */
		goto done;
	qsort(spd->rules, spd->nrules, sizeof(*spd->rules), cmp_pending);
	while (n4 < spd->nrules && spd->rules[n4].family == 4)
		n4++;
	err = table_build(&spd->v4, spd->rules, n4, V4_WORDS);
	if (!err)
		err = table_build(&spd->v6, spd->rules + n4, spd->nrules - n4, V6_WORDS);
	if (err) {
		table_free(&spd->v4);
		table_free(&spd->v6);
		return err;
	}
done:
	free(spd->rules);
	spd->rules = NULL;
	spd->nrules = spd->cap = 0;
	spd->compiled = true;
	return 0;
}

/* --- classify --- */

/* The rule number stored for key & g->mask, or NO_MATCH. */
static inline uint64_t group_find(const struct group *g, const uint64_t *key, const unsigned nw)
{
	uint64_t m[KEY_WORDS];

	for (unsigned k = 0; k < nw; k++)
		m[k] = key[k] & g->mask[k];
	return bucket_find(g, m, hash_words(m, nw), nw);
}

/* Groups ascend by best, and no rule of a group comes before its best: once best >= the
 * match found, neither this group nor any later one can improve it. nw is a constant at
 * each call, so the word loops unroll. */
static inline long table_find(const struct table *t, const uint64_t *key, const unsigned nw)
{
	uint64_t found = NO_MATCH;

	for (size_t k = 0; k < t->ngroups; k++) {
		const struct group *g = &t->groups[k];
		uint64_t r;

		if (g->best >= found)
			break;
		r = group_find(g, key, nw);
		if (r < found)
			found = r;
	}
	return found == NO_MATCH ? -1 : (long)found;
}

long spd_classify(const struct spd *spd, const struct spd_key *key)
{
	uint64_t w[KEY_WORDS];

	if (key->family != 4 && key->family != 6)
		return -1;
	key_words(key->family, key->proto, key->src, key->dst, key->sport, key->dport, w);
	if (key->family == 4)
		return table_find(&spd->v4, w, V4_WORDS);
	return table_find(&spd->v6, w, V6_WORDS);
}

/* --- parse --- */

static bool has_ports(uint8_t proto)
{
	return proto == IPPROTO_NUM_TCP || proto == IPPROTO_NUM_UDP ||
	       proto == IPPROTO_NUM_SCTP || proto == IPPROTO_NUM_UDPLITE;
}

static void swap_bytes(uint8_t *a, uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t t = a[i];

		a[i] = b[i];
		b[i] = t;
	}
}

/* The selector from the one header walk (ip.c): the upper-layer protocol after every
 * extension header; its ports unless it has none or this is a non-first fragment; the
 * first 4 bytes of the transport header must lie inside the length the IP header claims. */
int spd_key_from_packet(const uint8_t *pkt, size_t len, int reverse, struct spd_key *key)
{
	struct ip_info ip;
	uint16_t port;

	memset(key, 0, sizeof(*key));
	if (ip_parse(pkt, len, &ip) || !ip.upper_ok)
		return -1;
	if (has_ports(ip.upper) && !ip.later_fragment) {
		if (ip.total_len - ip.upper_off < 4)
			return -1;
		key->sport = rd16(pkt + ip.upper_off);
		key->dport = rd16(pkt + ip.upper_off + 2);
	}
	key->family = ip.family;
	key->proto = ip.upper;
	memcpy(key->src, pkt + (ip.family == 4 ? 12 : 8), ip.family == 4 ? 4 : 16);
	memcpy(key->dst, pkt + (ip.family == 4 ? 16 : 24), ip.family == 4 ? 4 : 16);
	if (reverse) {
		swap_bytes(key->src, key->dst, sizeof(key->src));
		port = key->sport;
		key->sport = key->dport;
		key->dport = port;
	}
	return 0;
}
