// sources: native/spd.c native/ip.c
/* test_spd: the compiled SPD against a brute-force linear matcher, and the packet parser
 * against hand-built packets (every truncation, every malformation).
 *
 *   cc -O1 -g -fsanitize=address,undefined -Wall -Wextra -Werror -I native \
 *      native/spd.c tests/native/test_spd.c -o /tmp/test_spd && /tmp/test_spd
 *   cc -O2 -I native native/spd.c tests/native/test_spd.c -o /tmp/bench_spd && \
 *      /tmp/bench_spd --bench
 *
 * Prints "N passed, M failed" last; exits non-zero on any failure.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proto.h"
#include "spd.h"
#include "check.h"


/* --- PRNG (splitmix64) --- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static unsigned below(unsigned n) { return (unsigned)(rnd() % n); }
static int chance(unsigned percent) { return below(100) < percent; }

static void rnd_bytes(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)rnd();
}

/* --- the reference: a linear scan, written from the definition --- */

static int field_ok(const uint8_t *k, const uint8_t *v, const uint8_t *m, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((k[i] & m[i]) != (v[i] & m[i]))
			return 0;
	return 1;
}

static int ref_rule_matches(const struct espdp_rule *r, const struct spd_key *k)
{
	size_t alen = r->family == 4 ? 4 : 16;

	return r->family == k->family && (k->proto & r->proto_mask) == (r->proto & r->proto_mask) &&
	       field_ok(k->src, r->src, r->src_mask, alen) &&
	       field_ok(k->dst, r->dst, r->dst_mask, alen) &&
	       (k->sport & r->sport_mask) == (r->sport & r->sport_mask) &&
	       (k->dport & r->dport_mask) == (r->dport & r->dport_mask);
}

static long ref_classify(const struct espdp_rule *rules, const uint32_t *idx, size_t n,
			 const struct spd_key *k)
{
	for (size_t i = 0; i < n; i++)
		if (ref_rule_matches(&rules[i], k))
			return idx[i];
	return -1;
}

/* --- random rule sets --- */

static void prefix_mask(uint8_t *m, size_t n, unsigned bits)
{
	memset(m, 0, n);
	for (size_t i = 0; i < n && bits; i++) {
		unsigned b = bits >= 8 ? 8 : bits;

		m[i] = (uint8_t)(0xff << (8 - b));
		bits -= b;
	}
}

/* A mask over n bytes: prefix (often a common length), non-contiguous, or any. */
static void rnd_addr_mask(uint8_t *m, size_t n)
{
	static const unsigned v4[] = { 0, 8, 16, 24, 32 }, v6[] = { 0, 32, 48, 64, 128 };
	unsigned r = below(10);

	if (r < 5)
		prefix_mask(m, n, n == 4 ? v4[below(5)] : v6[below(5)]);
	else if (r < 7)
		prefix_mask(m, n, below((unsigned)n * 8 + 1));
	else if (r < 9) {
		rnd_bytes(m, n);
		for (size_t i = 0; i < n; i++) /* sparse non-contiguous: fewer cared bits */
			m[i] &= (uint8_t)rnd();
	} else
		rnd_bytes(m, n);
}

static uint16_t rnd_port_mask(void)
{
	unsigned r = below(10);

	return r < 4 ? 0 : r < 8 ? 0xffff : (uint16_t)rnd();
}

static uint8_t rnd_proto_mask(void)
{
	unsigned r = below(10);

	return r < 4 ? 0 : r < 9 ? 0xff : (uint8_t)rnd();
}

struct pool {
	uint8_t addr[2][8][16]; /* [v6][i] */
	uint16_t port[6];
	uint8_t proto[4];
};

static void pool_init(struct pool *p)
{
	static const uint8_t protos[] = { IPPROTO_NUM_TCP, IPPROTO_NUM_UDP, IPPROTO_NUM_ICMP, 132 };

	rnd_bytes(&p->addr[0][0][0], sizeof(p->addr));
	for (int i = 0; i < 8; i++) /* related addresses share prefixes */
		if (i && chance(50)) {
			memcpy(p->addr[0][i], p->addr[0][i - 1], 3);
			memcpy(p->addr[1][i], p->addr[1][i - 1], 8);
		}
	for (int i = 0; i < 6; i++)
		p->port[i] = chance(50) ? (uint16_t)below(1024) : (uint16_t)rnd();
	memcpy(p->proto, protos, sizeof(p->proto));
}

/* The mask part of a rule: family and every *_mask field. */
static void rnd_masks(struct espdp_rule *r, uint8_t family)
{
	size_t alen = family == 4 ? 4 : 16;

	memset(r, 0, sizeof(*r));
	r->family = family;
	r->proto_mask = rnd_proto_mask();
	rnd_addr_mask(r->src_mask, alen);
	rnd_addr_mask(r->dst_mask, alen);
	r->sport_mask = rnd_port_mask();
	r->dport_mask = rnd_port_mask();
	if (family == 4 && chance(10)) { /* bytes past an IPv4 address must be ignored */
		rnd_bytes(r->src_mask + 4, 12);
		rnd_bytes(r->dst_mask + 4, 12);
	}
}

/* Fill values from the pool; often with bits outside the mask, which must not matter. */
static void rnd_values(struct espdp_rule *r, const struct pool *p)
{
	int v6 = r->family == 6;
	size_t alen = v6 ? 16 : 4;

	memcpy(r->src, p->addr[v6][below(8)], alen);
	memcpy(r->dst, p->addr[v6][below(8)], alen);
	r->proto = p->proto[below(4)];
	r->sport = p->port[below(6)];
	r->dport = p->port[below(6)];
	r->action = (uint8_t)below(2);
	if (chance(30)) {
		for (size_t i = 0; i < 16; i++) {
			r->src[i] |= (uint8_t)(rnd() & ~r->src_mask[i]);
			r->dst[i] |= (uint8_t)(rnd() & ~r->dst_mask[i]);
		}
		r->proto |= (uint8_t)(rnd() & ~r->proto_mask);
		r->sport |= (uint16_t)(rnd() & ~r->sport_mask);
	}
}

/* n rules of mixed families; most masks come from a small palette so groups fill up,
 * some rules repeat or shadow an earlier one. */
static void rnd_ruleset(struct espdp_rule *rules, uint32_t *idx, size_t n, const struct pool *p)
{
	struct espdp_rule palette[6];
	uint32_t next = below(3);

	for (int i = 0; i < 6; i++)
		rnd_masks(&palette[i], chance(50) ? 4 : 6);
	for (size_t i = 0; i < n; i++) {
		struct espdp_rule *r = &rules[i];

		if (i && chance(8)) {
			*r = rules[below((unsigned)i)];
			r->action ^= 1;
		} else {
			if (chance(75))
				*r = palette[below(6)];
			else
				rnd_masks(r, chance(50) ? 4 : 6);
			rnd_values(r, p);
		}
		idx[i] = next;
		next += 1 + (chance(10) ? below(5) : 0);
	}
}

/* A key that often matches some rule: a rule's value with free bits randomised. */
static void rnd_key(struct spd_key *k, const struct espdp_rule *rules, size_t n,
		    const struct pool *p)
{
	memset(k, 0, sizeof(*k));
	if (n && chance(80)) {
		const struct espdp_rule *r = &rules[below((unsigned)n)];
		size_t alen = r->family == 4 ? 4 : 16;

		k->family = r->family;
		for (size_t i = 0; i < alen; i++) {
			k->src[i] = (uint8_t)((r->src[i] & r->src_mask[i]) | (rnd() & ~r->src_mask[i]));
			k->dst[i] = (uint8_t)((r->dst[i] & r->dst_mask[i]) | (rnd() & ~r->dst_mask[i]));
		}
		k->proto = (uint8_t)((r->proto & r->proto_mask) | (rnd() & ~r->proto_mask));
		k->sport = (uint16_t)((r->sport & r->sport_mask) | (rnd() & ~r->sport_mask));
		k->dport = (uint16_t)((r->dport & r->dport_mask) | (rnd() & ~r->dport_mask));
		if (chance(20)) { /* flip one bit somewhere */
			unsigned b = below(alen * 8);

			(below(2) ? k->src : k->dst)[b / 8] ^= (uint8_t)(1 << (b % 8));
		}
		return;
	}
	k->family = chance(50) ? 4 : 6;
	int v6 = k->family == 6;
	memcpy(k->src, p->addr[v6][below(8)], v6 ? 16 : 4);
	memcpy(k->dst, p->addr[v6][below(8)], v6 ? 16 : 4);
	k->proto = p->proto[below(4)];
	k->sport = p->port[below(6)];
	k->dport = chance(50) ? p->port[below(6)] : (uint16_t)rnd();
}

static struct spd *build(const struct espdp_rule *rules, const uint32_t *idx, size_t n)
{
	struct spd *spd = spd_new();
	int err = 0;

	if (!spd)
		abort();
	for (size_t i = 0; i < n && !err; i++)
		err = spd_add(spd, &rules[i], idx[i]);
	if (!err)
		err = spd_compile(spd);
	CHECK(err == 0, "build: err %d", err);
	return spd;
}

static void test_random_set(size_t n, unsigned nkeys)
{
	struct espdp_rule *rules = calloc(n + 1, sizeof(*rules));
	uint32_t *idx = calloc(n + 1, sizeof(*idx));
	struct pool p;
	struct spd *spd;

	pool_init(&p);
	rnd_ruleset(rules, idx, n, &p);
	spd = build(rules, idx, n);
	for (unsigned i = 0; i < nkeys; i++) {
		struct spd_key k;
		long want, got;

		rnd_key(&k, rules, n, &p);
		want = ref_classify(rules, idx, n, &k);
		got = spd_classify(spd, &k);
		CHECK(got == want, "n=%zu key %u: got %ld want %ld", n, i, got, want);
	}
	spd_free(spd);
	free(rules);
	free(idx);
}

static void test_random(void)
{
	for (int i = 0; i < 5000; i++)
		test_random_set(below(40), 200);
	for (int i = 0; i < 400; i++)
		test_random_set(40 + below(400), 300);
	for (int i = 0; i < 4; i++)
		test_random_set(2000 + below(4000), 2000);
}

/* --- hand-written classification cases --- */

static struct espdp_rule v4_rule(const char *src, unsigned splen, const char *dst,
				 unsigned dplen, int proto, int dport)
{
	struct espdp_rule r;
	unsigned a, b, c, d;

	memset(&r, 0, sizeof(r));
	r.family = 4;
	if (sscanf(src, "%u.%u.%u.%u", &a, &b, &c, &d) == 4)
		r.src[0] = (uint8_t)a, r.src[1] = (uint8_t)b, r.src[2] = (uint8_t)c, r.src[3] = (uint8_t)d;
	if (sscanf(dst, "%u.%u.%u.%u", &a, &b, &c, &d) == 4)
		r.dst[0] = (uint8_t)a, r.dst[1] = (uint8_t)b, r.dst[2] = (uint8_t)c, r.dst[3] = (uint8_t)d;
	prefix_mask(r.src_mask, 4, splen);
	prefix_mask(r.dst_mask, 4, dplen);
	if (proto >= 0)
		r.proto = (uint8_t)proto, r.proto_mask = 0xff;
	if (dport >= 0)
		r.dport = (uint16_t)dport, r.dport_mask = 0xffff;
	return r;
}

static struct spd_key v4_key(const char *src, const char *dst, uint8_t proto, uint16_t sport,
			     uint16_t dport)
{
	struct espdp_rule r = v4_rule(src, 32, dst, 32, -1, -1);
	struct spd_key k;

	memset(&k, 0, sizeof(k));
	k.family = 4;
	memcpy(k.src, r.src, 4);
	memcpy(k.dst, r.dst, 4);
	k.proto = proto;
	k.sport = sport;
	k.dport = dport;
	return k;
}

static void test_first_match(void)
{
	struct espdp_rule rules[] = {
		v4_rule("10.0.0.0", 8, "0.0.0.0", 0, -1, -1),        /* 0: group A */
		v4_rule("192.168.1.0", 24, "10.9.9.9", 32, 6, 22),    /* 1: group B */
		v4_rule("192.168.1.7", 32, "10.9.9.0", 24, -1, -1),   /* 2: group C */
		v4_rule("192.168.0.0", 16, "0.0.0.0", 0, -1, -1),     /* 3: group D */
		v4_rule("172.16.0.0", 8, "0.0.0.0", 0, -1, -1),       /* 4: group A, shadowed? no */
		v4_rule("192.168.1.0", 24, "10.9.9.9", 32, 6, 22),    /* 5: duplicate of 1 */
		v4_rule("0.0.0.0", 0, "0.0.0.0", 0, -1, -1),          /* 6: permit any */
	};
	uint32_t idx[] = { 0, 1, 2, 3, 4, 5, 6 };
	struct spd *spd = build(rules, idx, 7);
	struct spd_key k;

	k = v4_key("10.1.2.3", "1.1.1.1", 6, 1, 2);
	CHECK(spd_classify(spd, &k) == 0, "group A best");
	k = v4_key("192.168.1.7", "10.9.9.9", 6, 1000, 22);
	CHECK(spd_classify(spd, &k) == 1, "B beats C and D");
	k = v4_key("192.168.1.7", "10.9.9.9", 17, 1000, 22);
	CHECK(spd_classify(spd, &k) == 2, "C when B's proto differs");
	k = v4_key("192.168.1.8", "10.9.9.9", 17, 1000, 22);
	CHECK(spd_classify(spd, &k) == 3, "D");
	/* group A's best is 0 but its match here is 4, after D's 3: must not stop at A */
	k = v4_key("172.16.5.5", "1.1.1.1", 1, 0, 0);
	CHECK(spd_classify(spd, &k) == 4, "rule 4 in an early group");
	k = v4_key("8.8.8.8", "1.1.1.1", 1, 0, 0);
	CHECK(spd_classify(spd, &k) == 6, "trailing any");
	k.family = 6;
	CHECK(spd_classify(spd, &k) == -1, "v6 key never matches v4 rules");
	spd_free(spd);
}

static void test_deny_before_permit(void)
{
	struct espdp_rule rules[] = {
		v4_rule("10.0.0.0", 24, "10.1.0.0", 24, IPPROTO_NUM_TCP, 22),
		v4_rule("10.0.0.0", 24, "10.1.0.0", 24, -1, -1),
	};
	uint32_t idx[] = { 10, 20 };
	struct spd *spd;
	struct spd_key k;

	rules[0].action = ESPDP_ACTION_DISCARD;
	rules[1].action = ESPDP_ACTION_PROTECT;
	spd = build(rules, idx, 2);
	k = v4_key("10.0.0.5", "10.1.0.9", IPPROTO_NUM_TCP, 40000, 22);
	CHECK(spd_classify(spd, &k) == 10, "deny ssh");
	k.dport = 443;
	CHECK(spd_classify(spd, &k) == 20, "permit the rest");
	k.dst[2] = 1;
	CHECK(spd_classify(spd, &k) == -1, "outside both");
	spd_free(spd);

	/* the same rules the other way round: the permit shadows the deny */
	idx[0] = 20;
	idx[1] = 30;
	struct espdp_rule rev[] = { rules[1], rules[0] };
	spd = build(rev, idx, 2);
	k = v4_key("10.0.0.5", "10.1.0.9", IPPROTO_NUM_TCP, 40000, 22);
	CHECK(spd_classify(spd, &k) == 20, "permit first wins");
	spd_free(spd);
}

static void test_empty_and_api(void)
{
	struct spd *spd = spd_new();
	struct espdp_rule r = v4_rule("0.0.0.0", 0, "0.0.0.0", 0, -1, -1);
	struct spd_key k = v4_key("1.2.3.4", "5.6.7.8", 6, 1, 2);

	CHECK(spd_classify(spd, &k) == -1, "uncompiled classifies to -1");
	CHECK(spd_compile(spd) == 0, "compile empty");
	CHECK(spd_classify(spd, &k) == -1, "empty v4");
	k.family = 6;
	CHECK(spd_classify(spd, &k) == -1, "empty v6");
	k.family = 5;
	CHECK(spd_classify(spd, &k) == -1, "bad family");
	CHECK(spd_add(spd, &r, 0) == -EINVAL, "add after compile");
	CHECK(spd_compile(spd) == -EINVAL, "compile twice");
	spd_free(spd);
	spd_free(NULL);

	spd = spd_new();
	CHECK(spd_add(spd, &r, 5) == 0, "add 5");
	CHECK(spd_add(spd, &r, 5) == -EINVAL, "same index");
	CHECK(spd_add(spd, &r, 4) == -EINVAL, "decreasing index");
	r.family = 5;
	CHECK(spd_add(spd, &r, 6) == -EINVAL, "bad rule family");
	r.family = 6; /* a v6 any rule: matches every v6 key, no v4 key */
	CHECK(spd_add(spd, &r, 7) == 0, "add v6 any");
	CHECK(spd_compile(spd) == 0, "compile");
	k = v4_key("1.2.3.4", "5.6.7.8", 6, 1, 2);
	CHECK(spd_classify(spd, &k) == 5, "v4 any");
	k.family = 6;
	CHECK(spd_classify(spd, &k) == 7, "v6 any");
	spd_free(spd);

	spd = spd_new();
	r.family = 6;
	CHECK(spd_add(spd, &r, 0) == 0, "v6 only");
	CHECK(spd_compile(spd) == 0, "compile");
	k.family = 4;
	CHECK(spd_classify(spd, &k) == -1, "v4 packet never matches a v6 rule");
	spd_free(spd);
}

/* One big group (same mask everywhere), with shadowed duplicates: exercises probing. */
static void test_big_group(void)
{
	enum { N = 20000 };
	struct espdp_rule *rules = calloc(N, sizeof(*rules));
	uint32_t *idx = calloc(N, sizeof(*idx));
	struct spd *spd;

	for (uint32_t i = 0; i < N; i++) {
		rules[i] = v4_rule("10.0.0.0", 32, "10.0.0.0", 24, IPPROTO_NUM_UDP, -1);
		wr32(rules[i].src, 0x0a000000u + (i % 15000)); /* 5000 duplicates at the end */
		wr32(rules[i].dst, 0xac100000u + ((i % 15000) << 8) + 99); /* host bits dropped */
		idx[i] = i;
	}
	spd = build(rules, idx, N);
	for (uint32_t i = 0; i < 15000; i++) {
		struct spd_key k = v4_key("0.0.0.0", "0.0.0.0", IPPROTO_NUM_UDP, 1, 2);

		wr32(k.src, 0x0a000000u + i);
		wr32(k.dst, 0xac100000u + (i << 8) + (i & 0xff));
		CHECK(spd_classify(spd, &k) == (long)i, "big group %u", i);
		k.proto = IPPROTO_NUM_TCP;
		CHECK(spd_classify(spd, &k) == -1, "big group proto %u", i);
	}
	spd_free(spd);
	free(rules);
	free(idx);
}

/* --- packet parsing --- */

static size_t build_v4(uint8_t *p, uint8_t proto, size_t ihl, size_t l4len, uint16_t frag)
{
	size_t total = ihl * 4 + l4len;

	memset(p, 0, total);
	p[0] = (uint8_t)(0x40 | ihl);
	wr16(p + 2, (uint16_t)total);
	wr16(p + 6, frag);
	p[8] = 64;
	p[9] = proto;
	wr32(p + 12, 0xc0a80107); /* 192.168.1.7 */
	wr32(p + 16, 0x0a090909); /* 10.9.9.9 */
	for (size_t i = 20; i < ihl * 4; i++)
		p[i] = 1; /* NOP options */
	if (l4len >= 4) {
		wr16(p + ihl * 4, 1234);
		wr16(p + ihl * 4 + 2, 80);
	}
	return total;
}

static const uint8_t v6_src[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 };
static const uint8_t v6_dst[16] = { 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, [15] = 2 };

/* IPv6 header, then the given extension chain, then `final` with a 12-byte body whose
 * first 4 bytes are ports 5353 -> 53. exts[i] is a next-header number; fragoff applies to
 * a fragment header. Returns the total length. */
static size_t build_v6(uint8_t *p, const uint8_t *exts, size_t nexts, uint8_t final,
		       uint16_t fragoff)
{
	size_t off = IPV6_HDR_LEN;

	memset(p, 0, 2048);
	p[0] = 0x60;
	p[6] = nexts ? exts[0] : final;
	p[7] = 64;
	memcpy(p + 8, v6_src, 16);
	memcpy(p + 24, v6_dst, 16);
	for (size_t i = 0; i < nexts; i++) {
		uint8_t next = i + 1 < nexts ? exts[i + 1] : final;
		size_t hlen;

		p[off] = next;
		if (exts[i] == IPPROTO_NUM_FRAGMENT) {
			wr16(p + off + 2, (uint16_t)(fragoff << 3 | 1));
			hlen = 8;
		} else if (exts[i] == 51) {
			p[off + 1] = 4; /* (4 + 2) * 4 = 24 bytes */
			hlen = 24;
		} else {
			p[off + 1] = (uint8_t)(i % 2); /* 8 or 16 bytes */
			hlen = (i % 2 + 1) * 8;
		}
		off += hlen;
	}
	wr16(p + off, 5353);
	wr16(p + off + 2, 53);
	off += 12;
	wr16(p + 4, (uint16_t)(off - IPV6_HDR_LEN));
	return off;
}

static void test_parse_v4(void)
{
	uint8_t p[256];
	struct spd_key k;
	size_t len;

	len = build_v4(p, IPPROTO_NUM_TCP, 5, 20, 0);
	CHECK(spd_key_from_packet(p, len, 0, &k) == 0, "v4 tcp");
	CHECK(k.family == 4 && k.proto == 6 && k.sport == 1234 && k.dport == 80, "v4 tcp key");
	CHECK(rd32(k.src) == 0xc0a80107 && rd32(k.dst) == 0x0a090909, "v4 addrs");
	CHECK(rd32(k.src + 4) == 0 && rd32(k.dst + 12) == 0, "v4 addr tail zero");
	CHECK(spd_key_from_packet(p, len, 1, &k) == 0, "v4 reverse");
	CHECK(k.sport == 80 && k.dport == 1234 && rd32(k.src) == 0x0a090909 &&
		      rd32(k.dst) == 0xc0a80107, "v4 reversed key");
	CHECK(spd_key_from_packet(p, len + 7, 0, &k) == 0 && k.dport == 80, "trailing bytes ok");

	/* truncated below the total length: always malformed */
	for (size_t l = 0; l < len; l++)
		CHECK(spd_key_from_packet(p, l, 0, &k) == -1, "v4 truncated at %zu", l);
	/* consistent lengths, short packet: malformed inside the IP header or the ports;
	 * the same with the total length short and the buffer full (bytes past the total
	 * are not the packet's) */
	for (size_t l = 0; l <= len; l++) {
		uint8_t q[256];
		int want = l < 24 ? -1 : 0;

		memcpy(q, p, len);
		wr16(q + 2, (uint16_t)l);
		CHECK(spd_key_from_packet(q, l, 0, &k) == want, "v4 short consistent %zu", l);
		CHECK(spd_key_from_packet(q, len, 0, &k) == want, "v4 short total %zu", l);
	}

	/* no ports to read: only the IP header (with options) must fit in the total */
	len = build_v4(p, IPPROTO_NUM_ICMP, 6, 8, 0);
	for (size_t l = 0; l <= len; l++) {
		uint8_t q[256];
		int want = l < 24 ? -1 : 0;

		memcpy(q, p, len);
		wr16(q + 2, (uint16_t)l);
		CHECK(spd_key_from_packet(q, l, 0, &k) == want, "icmp short consistent %zu", l);
		CHECK(spd_key_from_packet(q, len, 0, &k) == want, "icmp short total %zu", l);
	}

	len = build_v4(p, IPPROTO_NUM_UDP, 7, 8, 0);
	CHECK(spd_key_from_packet(p, len, 0, &k) == 0 && k.proto == 17 && k.sport == 1234 &&
		      k.dport == 80, "v4 options");
	for (size_t l = 0; l < len; l++)
		CHECK(spd_key_from_packet(p, l, 0, &k) == -1, "v4 options truncated at %zu", l);

	static const uint8_t with_ports[] = { 132, 136 };
	for (size_t i = 0; i < 2; i++) {
		len = build_v4(p, with_ports[i], 5, 12, 0);
		CHECK(spd_key_from_packet(p, len, 0, &k) == 0 && k.sport == 1234 && k.dport == 80,
		      "ports of proto %u", with_ports[i]);
	}
	len = build_v4(p, 47, 5, 12, 0);
	CHECK(spd_key_from_packet(p, len, 0, &k) == 0 && k.proto == 47 && !k.sport && !k.dport,
	      "GRE has no ports");
	len = build_v4(p, IPPROTO_NUM_ICMP, 5, 0, 0);
	CHECK(spd_key_from_packet(p, len, 0, &k) == 0 && k.proto == 1 && !k.sport && !k.dport,
	      "ICMP no ports, empty body ok");

	/* fragments */
	len = build_v4(p, IPPROTO_NUM_TCP, 5, 2, 185);
	CHECK(spd_key_from_packet(p, len, 0, &k) == 0 && k.proto == 6 && !k.sport && !k.dport,
	      "non-first fragment: no ports, short body ok");
	len = build_v4(p, IPPROTO_NUM_TCP, 5, 2, 0x1000);
	CHECK(spd_key_from_packet(p, len, 0, &k) == 0 && !k.sport && !k.dport,
	      "non-first fragment, top offset bit");
	len = build_v4(p, IPPROTO_NUM_TCP, 5, 20, 0x2000 | 185);
	CHECK(spd_key_from_packet(p, len, 0, &k) == 0 && !k.sport && !k.dport,
	      "non-first fragment with MF: no ports");
	len = build_v4(p, IPPROTO_NUM_TCP, 5, 20, 0x2000);
	CHECK(spd_key_from_packet(p, len, 0, &k) == 0 && k.sport == 1234, "first fragment");
	len = build_v4(p, IPPROTO_NUM_TCP, 5, 3, 0x2000);
	CHECK(spd_key_from_packet(p, len, 0, &k) == -1, "first fragment without ports");
	len = build_v4(p, IPPROTO_NUM_TCP, 5, 20, 0x4000);
	CHECK(spd_key_from_packet(p, len, 0, &k) == 0 && k.sport == 1234, "DF is no fragment");

	/* malformed headers */
	len = build_v4(p, IPPROTO_NUM_TCP, 5, 20, 0);
	for (unsigned v = 0; v < 16; v++) {
		uint8_t q[256];

		memcpy(q, p, len);
		q[0] = (uint8_t)(v << 4 | 5);
		if (v != 4 && v != 6)
			CHECK(spd_key_from_packet(q, len, 0, &k) == -1, "version %u", v);
	}
	for (unsigned ihl = 0; ihl < 5; ihl++) {
		p[0] = (uint8_t)(0x40 | ihl);
		CHECK(spd_key_from_packet(p, len, 0, &k) == -1, "ihl %u", ihl);
	}
	p[0] = 0x4f; /* 60-byte header > total 40 */
	CHECK(spd_key_from_packet(p, len, 0, &k) == -1, "ihl beyond total");
	p[0] = 0x45;
	wr16(p + 2, 19);
	CHECK(spd_key_from_packet(p, len, 0, &k) == -1, "total < header");
	wr16(p + 2, (uint16_t)(len + 1));
	CHECK(spd_key_from_packet(p, len, 0, &k) == -1, "total > len");
	wr16(p + 2, 22); /* total hides the ports that are in the buffer */
	CHECK(spd_key_from_packet(p, len, 0, &k) == -1, "ports beyond total");
}

static void test_parse_v6(void)
{
	static const uint8_t chain[] = { IPPROTO_NUM_HOPOPTS, IPPROTO_NUM_DSTOPTS,
					 IPPROTO_NUM_ROUTING, IPPROTO_NUM_FRAGMENT, 51 };
	uint8_t p[2048], q[2048];
	struct spd_key k;
	size_t len, hdrs;

	len = build_v6(p, NULL, 0, IPPROTO_NUM_UDP, 0);
	CHECK(spd_key_from_packet(p, len, 0, &k) == 0 && k.family == 6 && k.proto == 17 &&
		      k.sport == 5353 && k.dport == 53 && !memcmp(k.src, v6_src, 16) &&
		      !memcmp(k.dst, v6_dst, 16), "v6 udp");

	len = build_v6(p, chain, 5, IPPROTO_NUM_UDP, 0);
	hdrs = len - 12; /* up to the UDP header */
	CHECK(spd_key_from_packet(p, len, 0, &k) == 0 && k.proto == 17 && k.sport == 5353 &&
		      k.dport == 53, "v6 extension chain");
	CHECK(spd_key_from_packet(p, len, 1, &k) == 0 && k.sport == 53 && k.dport == 5353 &&
		      !memcmp(k.src, v6_dst, 16) && !memcmp(k.dst, v6_src, 16), "v6 reverse");
	for (size_t l = 0; l < len; l++)
		CHECK(spd_key_from_packet(p, l, 0, &k) == -1, "v6 truncated at %zu", l);
	for (size_t l = IPV6_HDR_LEN; l <= len; l++) {
		int want = l < hdrs + 4 ? -1 : 0;

		memcpy(q, p, len);
		wr16(q + 4, (uint16_t)(l - IPV6_HDR_LEN));
		CHECK(spd_key_from_packet(q, l, 0, &k) == want, "v6 short consistent %zu", l);
		CHECK(spd_key_from_packet(q, len, 0, &k) == want, "v6 short payload %zu", l);
	}

	/* no ports to read: only the extension headers must fit in the payload length */
	len = build_v6(p, chain, 3, IPPROTO_NUM_ICMPV6, 0);
	hdrs = len - 12;
	for (size_t l = IPV6_HDR_LEN; l <= len; l++) {
		int want = l < hdrs ? -1 : 0;

		memcpy(q, p, len);
		wr16(q + 4, (uint16_t)(l - IPV6_HDR_LEN));
		CHECK(spd_key_from_packet(q, l, 0, &k) == want, "icmpv6 short consistent %zu", l);
		CHECK(spd_key_from_packet(q, len, 0, &k) == want, "icmpv6 short payload %zu", l);
	}

	len = build_v6(p, chain, 4, IPPROTO_NUM_TCP, 77);
	CHECK(spd_key_from_packet(p, len, 0, &k) == 0 && k.proto == IPPROTO_NUM_TCP &&
		      !k.sport && !k.dport, "v6 non-first fragment");
	len = build_v6(p, chain + 3, 1, IPPROTO_NUM_UDP, 0x1000);
	CHECK(spd_key_from_packet(p, len, 0, &k) == 0 && !k.sport, "v6 top offset bit");
	len = build_v6(p, chain + 3, 1, IPPROTO_NUM_UDP, 1);
	CHECK(spd_key_from_packet(p, len, 0, &k) == 0 && !k.sport, "v6 lowest offset bit");
	len = build_v6(p, chain, 4, IPPROTO_NUM_TCP, 77);
	hdrs = IPV6_HDR_LEN + 8 + 16 + 8 + 8; /* through the fragment header */
	memcpy(q, p, len);
	wr16(q + 4, (uint16_t)(hdrs - IPV6_HDR_LEN));
	CHECK(spd_key_from_packet(q, hdrs, 0, &k) == 0 && k.proto == IPPROTO_NUM_TCP,
	      "v6 non-first fragment, nothing after it");

	len = build_v6(p, chain + 1, 1, IPPROTO_NUM_ICMPV6, 0);
	CHECK(spd_key_from_packet(p, len, 0, &k) == 0 && k.proto == 58 && !k.sport,
	      "icmpv6 no ports");
	len = build_v6(p, NULL, 0, IPPROTO_NUM_NONE, 0);
	wr16(p + 4, 0);
	CHECK(spd_key_from_packet(p, IPV6_HDR_LEN, 0, &k) == 0 && k.proto == 59,
	      "no next header, empty payload");
	len = build_v6(p, NULL, 0, IPPROTO_NUM_ESP, 0);
	CHECK(spd_key_from_packet(p, len, 0, &k) == 0 && k.proto == 50 && !k.sport,
	      "ESP is the upper layer");

	uint8_t many[40];
	memset(many, IPPROTO_NUM_DSTOPTS, sizeof(many));
	len = build_v6(p, many, 10, IPPROTO_NUM_UDP, 0);
	CHECK(spd_key_from_packet(p, len, 0, &k) == 0 && k.dport == 53, "10 extension headers");
	len = build_v6(p, many, 40, IPPROTO_NUM_UDP, 0);
	CHECK(spd_key_from_packet(p, len, 0, &k) == -1, "40 extension headers refused");

	len = build_v6(p, chain, 1, IPPROTO_NUM_UDP, 0);
	for (unsigned v = 0; v < 16; v++) {
		memcpy(q, p, len);
		q[0] = (uint8_t)(v << 4);
		if (v != 6)
			CHECK(spd_key_from_packet(q, len, 0, &k) == -1, "v6 version %u", v);
	}
	memcpy(q, p, len);
	wr16(q + 4, (uint16_t)(len - IPV6_HDR_LEN + 1));
	CHECK(spd_key_from_packet(q, len, 0, &k) == -1, "payload length > len");
	memcpy(q, p, len);
	q[IPV6_HDR_LEN + 1] = 2; /* hop-by-hop of 24 bytes in a 20-byte payload */
	CHECK(spd_key_from_packet(q, len, 0, &k) == -1, "extension header beyond payload");
	memcpy(q, p, len);
	q[IPV6_HDR_LEN + 1] = 255;
	CHECK(spd_key_from_packet(q, len, 0, &k) == -1, "huge extension header");
	CHECK(spd_key_from_packet(p, len, 0, &k) == 0, "control: unmodified parses");
}

/* Random bytes and mutated packets: must never read out of bounds (ASan), and whatever
 * parses must be a key of family 4 or 6. */
static void test_parse_fuzz(void)
{
	static const uint8_t chain[] = { IPPROTO_NUM_HOPOPTS, IPPROTO_NUM_FRAGMENT, 51 };
	uint8_t base[2][2048];
	size_t blen[2];

	blen[0] = build_v4(base[0], IPPROTO_NUM_TCP, 6, 20, 0);
	blen[1] = build_v6(base[1], chain, 3, IPPROTO_NUM_UDP, 0);
	for (int i = 0; i < 200000; i++) {
		int v6 = i & 1;
		size_t len = below((unsigned)blen[v6] + 4);
		uint8_t *p = malloc(len ? len : 1);
		struct spd_key k;
		int ok;

		memcpy(p, base[v6], len < blen[v6] ? len : blen[v6]);
		if (len > blen[v6])
			rnd_bytes(p + blen[v6], len - blen[v6]);
		if (chance(10))
			rnd_bytes(p, len);
		for (unsigned m = below(4); m-- && len;)
			p[below((unsigned)len)] = (uint8_t)rnd();
		if (len >= 6 && chance(50))
			wr16(p + (v6 ? 4 : 2), (uint16_t)(v6 ? len - (len >= 40 ? 40 : 0) : len));
		ok = spd_key_from_packet(p, len, (int)below(2), &k);
		CHECK(ok == -1 || (ok == 0 && (k.family == 4 || k.family == 6)), "fuzz %d", i);
		free(p);
	}
}

/* Parse and classify together, as the data plane does. */
static void test_packet_classify(void)
{
	struct espdp_rule rules[] = {
		v4_rule("10.9.9.9", 32, "192.168.1.0", 24, IPPROTO_NUM_TCP, 1234),
		v4_rule("192.168.1.0", 24, "10.9.9.0", 24, -1, -1),
	};
	uint32_t idx[] = { 0, 1 };
	struct spd *spd = build(rules, idx, 2);
	uint8_t p[64];
	struct spd_key k;
	size_t len = build_v4(p, IPPROTO_NUM_TCP, 5, 20, 0);

	CHECK(spd_key_from_packet(p, len, 0, &k) == 0 && spd_classify(spd, &k) == 1, "forward");
	CHECK(spd_key_from_packet(p, len, 1, &k) == 0 && spd_classify(spd, &k) == 0, "reverse");
	spd_free(spd);
}

/* --- benchmark --- */

/* A realistic access list: /24 and /32 subnet pairs, some with eq ports, and a trailing
 * permit any. family 4 or 6 (/64 and /128 for 6). */
static void bench_rules(struct espdp_rule *rules, size_t n, uint8_t family)
{
	static const uint16_t ports[] = { 22, 80, 443, 500, 53, 8080, 3389, 25 };
	size_t alen = family == 4 ? 4 : 16, net = family == 4 ? 24 : 64;

	for (size_t i = 0; i + 1 < n; i++) {
		struct espdp_rule *r = &rules[i];
		unsigned t = below(10);

		memset(r, 0, sizeof(*r));
		r->family = family;
		rnd_bytes(r->src, alen);
		rnd_bytes(r->dst, alen);
		r->src[0] = 10;
		r->dst[0] = 172;
		prefix_mask(r->src_mask, alen, t < 4 || t >= 8 ? net : alen * 8);
		prefix_mask(r->dst_mask, alen, t < 4 || t == 9 ? net : alen * 8);
		if (t >= 4) {
			r->proto = t & 1 ? IPPROTO_NUM_UDP : IPPROTO_NUM_TCP;
			r->proto_mask = 0xff;
		}
		if (t >= 6) {
			r->dport = ports[below(8)];
			r->dport_mask = 0xffff;
		}
	}
	memset(&rules[n - 1], 0, sizeof(rules[n - 1]));
	rules[n - 1].family = family;
}

/* CPU time of this thread: other load on the machine preempts us without counting. */
static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* Keys: half hit a random rule (or an earlier one), half hit only the trailing rule,
 * which visits every group. */
static double bench_one(size_t n, uint8_t family, int hit_percent)
{
	enum { NKEYS = 1 << 14, ROUNDS = 40 }; /* best of 40 runs of >= 10 ms CPU time */
	struct espdp_rule *rules = calloc(n, sizeof(*rules));
	uint32_t *idx = calloc(n, sizeof(*idx));
	struct spd_key *keys = calloc(NKEYS, sizeof(*keys));
	struct spd *spd;
	double best = 1e30;
	long sink = 0;

	bench_rules(rules, n, family);
	for (size_t i = 0; i < n; i++)
		idx[i] = (uint32_t)i;
	spd = build(rules, idx, n);
	for (size_t i = 0; i < NKEYS; i++) {
		struct spd_key *k = &keys[i];
		size_t alen = family == 4 ? 4 : 16;

		const struct espdp_rule *r = &rules[below((unsigned)n - 1)];

		k->family = family;
		for (size_t b = 0; b < alen; b++) {
			k->src[b] = (uint8_t)((r->src[b] & r->src_mask[b]) | (rnd() & ~r->src_mask[b]));
			k->dst[b] = (uint8_t)((r->dst[b] & r->dst_mask[b]) | (rnd() & ~r->dst_mask[b]));
		}
		k->proto = r->proto_mask ? r->proto : IPPROTO_NUM_TCP;
		k->sport = (uint16_t)(1024 + below(60000));
		k->dport = r->dport_mask ? r->dport : 443;
		if (!chance((unsigned)hit_percent))
			k->src[0] = 11; /* matches no subnet rule */
	}
	for (int r = 0; r < ROUNDS; r++) {
		size_t iters = 0;
		double t0 = now_ns(), t;

		do {
			for (size_t i = 0; i < NKEYS; i++)
				sink += spd_classify(spd, &keys[i]);
			iters += NKEYS;
			t = now_ns();
		} while (t - t0 < 1e7);
		if ((t - t0) / iters < best)
			best = (t - t0) / iters;
	}
	if (sink == 42)
		puts("");
	spd_free(spd);
	free(rules);
	free(idx);
	free(keys);
	return best;
}

static int bench(void)
{
	static const size_t sizes[] = { 10, 1000, 10000 };

	for (int f = 0; f < 2; f++) {
		uint8_t family = f ? 6 : 4;

		for (int h = 0; h < 3; h++) {
			static const int hits[] = { 100, 50, 0 };

			printf("IPv%u, %3d%% hit a subnet rule:", family, hits[h]);
			for (int s = 0; s < 3; s++)
				printf("  %5zu rules %6.1f ns", sizes[s],
				       bench_one(sizes[s], family, hits[h]));
			printf("\n");
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	rng_state = 0x5eed5eedULL;
	if (argc > 1 && !strcmp(argv[1], "--bench"))
		return bench();
	test_empty_and_api();
	test_first_match();
	test_deny_before_permit();
	test_big_group();
	test_parse_v4();
	test_parse_v6();
	test_parse_fuzz();
	test_packet_classify();
	test_random();
	printf("%lu passed, %lu failed\n", passed, failed);
	return failed ? 1 : 0;
}
