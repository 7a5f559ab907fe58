// sources: native/crypto.c native/crypto_ipsecmb.c native/droplog.c native/esp_in.c native/esp_out.c native/espdp.c native/events.c native/io.c native/nexthop.c native/ip.c native/offload.c native/punt.c native/replay.c native/sa.c native/sad.c native/sock.c native/spd.c native/table.c native/worker.c native/ring.c
// libs: -lcrypto -lpthread
// tsan: yes
/* test_table: the SAD against a reference model, and the incremental table path
 * (espdp_sa_install / _replace / _retire) functionally and under concurrent readers.
 *
 *   sad      random inserts, removals and rebuilds (through the writer's calls) against
 *            a plain array; every lookup agrees, tombstones never cut a probe.
 *   incr     install, replace (make-before-break), retire on a live set: packets see
 *            each state whole; errors change nothing; refs return to the creator's.
 *   stress   4 reader threads encapsulate (classify -> rule SA -> seal) and decapsulate
 *            (SAD lookup -> SA) while the writer installs, replaces and retires pairs
 *            whose creator references it drops at once: only the epoch protocol keeps a
 *            reader's SA alive, so a premature free is a use after free under ASan.
 *
 * Prints "N passed, M failed" last; exits non-zero on any failure.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp.h"
#include "proto.h"
#include "sa.h"
#include "sad.h"
#include "check.h"

#define POLICIES 64
#define READERS 4
#define STRESS_OPS 4000

static uint64_t rng_state = 0x5eed;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static espdp_sa *make_sa(espdp *dp, int direction, uint32_t spi, uint32_t policy)
{
	struct espdp_sa_config c;
	uint8_t key[20];
	espdp_sa *sa = NULL;
	int err;

	memset(&c, 0, sizeof(c));
	memset(key, (int)spi, sizeof(key));
	c.spi = spi;
	c.direction = (uint8_t)direction;
	c.cipher = ESPDP_CIPHER_AES_GCM;
	c.cipher_key_bits = 128;
	c.replay_window = 64;
	c.policy = direction == ESPDP_DIR_OUT ? policy : 0; /* inbound: no selector check */
	c.local.family = c.peer.family = 4;
	memcpy(c.local.bytes, direction == ESPDP_DIR_IN ? "\xc0\x00\x02\x02" : "\xc0\x00\x02\x01", 4);
	memcpy(c.peer.bytes, direction == ESPDP_DIR_IN ? "\xc0\x00\x02\x01" : "\xc0\x00\x02\x02", 4);
	err = espdp_sa_create(dp, &c, key, sizeof(key), NULL, 0, &sa);
	if (err) {
		fprintf(stderr, "espdp_sa_create: %s\n", espdp_status_str(err));
		exit(2);
	}
	return sa;
}

static uint32_t refs(const espdp_sa *sa)
{
	struct espdp_sa_info info;

	espdp_sa_info(sa, &info);
	return info.refs;
}

/* An inner IPv4/UDP packet from 10.0.<policy>.5 to 192.168.1.1 at buf + 128. */
static void inner(struct espdp_pkt *p, uint8_t *buf, size_t cap, unsigned policy)
{
	uint8_t *ip = buf + 128;

	memset(ip, 0, 48);
	ip[0] = 0x45;
	wr16(ip + 2, 48);
	ip[8] = 64;
	ip[9] = IPPROTO_NUM_UDP;
	memcpy(ip + 12, (uint8_t[]){ 10, 0, (uint8_t)policy, 5 }, 4);
	memcpy(ip + 16, (uint8_t[]){ 192, 168, 1, 1 }, 4);
	wr16(ip + 20, 1000);
	wr16(ip + 22, 2000);
	wr16(ip + 24, 28);
	memset(p, 0, sizeof(*p));
	p->buf = buf;
	p->cap = (uint32_t)cap;
	p->off = 128;
	p->len = 48;
}

/* Policy p (1..POLICIES) protects 10.0.<p>.0/24 -> 192.168.0.0/16. */
static espdp_table *rules_table(espdp *dp)
{
	espdp_table *t = espdp_table_new(dp);

	for (unsigned p = 1; p <= POLICIES; p++) {
		struct espdp_rule r;

		memset(&r, 0, sizeof(r));
		r.family = 4;
		r.action = ESPDP_ACTION_PROTECT;
		memcpy(r.src, (uint8_t[]){ 10, 0, (uint8_t)p, 0 }, 4);
		memset(r.src_mask, 0xff, 3);
		memcpy(r.dst, (uint8_t[]){ 192, 168, 0, 0 }, 4);
		memset(r.dst_mask, 0xff, 2);
		r.policy = p;
		if (espdp_table_add_rule(t, &r, NULL))
			exit(2);
	}
	return t;
}

/* Encap one packet of policy p: 0 and the SPI used, or the drop reason. */
static int encap(espdp *dp, unsigned worker, unsigned p, uint32_t *spi, uint8_t *out, size_t *len)
{
	static __thread uint8_t buf[512];
	struct espdp_pkt pk;

	inner(&pk, buf, sizeof(buf), p);
	espdp_encap_batch(dp, worker, &pk, 1);
	if (!pk.result) {
		*spi = rd32(pk.buf + pk.off + IPV4_HDR_MIN);
		if (out) {
			memcpy(out, pk.buf + pk.off, pk.len);
			*len = pk.len;
		}
	}
	return pk.result;
}

static int decap(espdp *dp, const uint8_t *pkt, size_t len)
{
	uint8_t buf[512];
	struct espdp_pkt pk;

	memset(&pk, 0, sizeof(pk));
	memcpy(buf + 64, pkt, len);
	pk.buf = buf;
	pk.cap = sizeof(buf);
	pk.off = 64;
	pk.len = (uint32_t)len;
	espdp_decap_batch(dp, 0, &pk, 1);
	return pk.result;
}

static size_t acquires(espdp *dp, uint32_t *policy)
{
	struct espdp_event ev[8];
	size_t n = espdp_events_read(dp, ev, 8), k = 0;

	for (size_t i = 0; i < n; i++)
		if (ev[i].kind == ESPD_EVENT_acquire) {
			*policy = ev[i].policy;
			k++;
		}
	return k;
}

/* --- sad: against a reference model --- */

static void test_sad_model(void)
{
	espdp *dp = espdp_new(1);
	enum { N = 3000 };
	espdp_sa *sas[N];
	int in[N] = { 0 };
	struct sad sad;
	unsigned rebuilds = 0;

	for (unsigned i = 0; i < N; i++) /* SPIs that collide in the hash's low bits too */
		sas[i] = make_sa(dp, ESPDP_DIR_IN, 0x1000 + (i % 7 == 0 ? i << 12 : i), 0);
	CHECK(sad_build(&sad, sas, 0) == 0, "empty build");
	for (unsigned op = 0; op < 40000; op++) {
		unsigned i = (unsigned)(rnd() % N);
		int err;

		if (!in[i]) {
			struct sad_array *next = sad_grow(&sad, &err), *old;

			CHECK(!err, "grow");
			if (next) {
				old = sad_swap(&sad, next);
				free(old); /* no reader in this test */
				rebuilds++;
			}
			CHECK(!sad_has(&sad, sas[i]), "sa %u absent", i);
			sad_insert(&sad, sas[i]);
			in[i] = 1;
		} else if (rnd() % 2) {
			CHECK(sad_remove(&sad, sas[i]) == 1, "remove %u", i);
			espdp_sa_release(sas[i]); /* the entry's reference */
			in[i] = 0;
		}
		if (op % 997 == 0)
			for (unsigned k = 0; k < N; k++) {
				const espdp_sa *got = sad_lookup(&sad, sas[k]->cfg.spi, 4, sas[k]->cfg.local.bytes);

				CHECK(got == (in[k] ? sas[k] : NULL), "lookup %u after op %u", k, op);
			}
		CHECK(2 * (sad.arr->used + sad.arr->dead) <= sad.arr->mask + 1, "half full at op %u", op);
	}
	CHECK(rebuilds > 3, "rebuilds happened: %u", rebuilds);
	CHECK(sad_lookup(&sad, 0x999999, 4, sas[0]->cfg.local.bytes) == NULL, "unknown SPI");
	sad_free(&sad);
	for (unsigned i = 0; i < N; i++) {
		CHECK(refs(sas[i]) == 1, "sa %u back to one reference", i);
		espdp_sa_release(sas[i]);
	}
	/* a duplicate (SPI, destination) in a build is refused */
	sas[0] = make_sa(dp, ESPDP_DIR_IN, 0x4242, 0);
	sas[1] = make_sa(dp, ESPDP_DIR_IN, 0x4242, 0);
	CHECK(sad_build(&sad, sas, 2) == ESPDP_ERR_EXISTS, "duplicate refused");
	CHECK(refs(sas[0]) == 1 && refs(sas[1]) == 1, "refused build keeps no references");
	espdp_sa_release(sas[0]);
	espdp_sa_release(sas[1]);
	espdp_free(dp);
}

/* --- incremental, one thread --- */

static void test_incremental(void)
{
	espdp *dp = espdp_new(1);
	espdp_sa *in1 = make_sa(dp, ESPDP_DIR_IN, 0x101, 0), *out1 = make_sa(dp, ESPDP_DIR_OUT, 0x101, 3);
	espdp_sa *in2 = make_sa(dp, ESPDP_DIR_IN, 0x102, 0), *out2 = make_sa(dp, ESPDP_DIR_OUT, 0x102, 3);
	espdp_sa *dup = make_sa(dp, ESPDP_DIR_IN, 0x101, 0), *stray = make_sa(dp, ESPDP_DIR_OUT, 0x555, 999);
	uint8_t wire1[512], wire2[512];
	size_t len1, len2;
	uint32_t spi = 0, policy = 0;

	CHECK(espdp_sa_install(dp, in1, out1) == ESPDP_ERR_STATE, "no live set yet");
	CHECK(espdp_publish(dp, rules_table(dp)) == 0, "publish");
	CHECK(encap(dp, 0, 3, &spi, NULL, NULL) == ESPD_DROP_no_sa, "no SA yet");
	CHECK(acquires(dp, &policy) == 1 && policy == 3, "acquire for policy 3");

	CHECK(espdp_sa_install(dp, in1, out1) == 0, "install");
	CHECK(encap(dp, 0, 3, &spi, wire1, &len1) == 0 && spi == 0x101, "sealed with out1");
	CHECK(encap(dp, 0, 4, &spi, NULL, NULL) == ESPD_DROP_no_sa, "policy 4 untouched");
	CHECK(acquires(dp, &policy) == 1 && policy == 4, "acquire for policy 4");
	CHECK(decap(dp, wire1, len1) == 0, "in1 opens out1's packet");
	CHECK(refs(in1) == 2 && refs(out1) == 2, "one table reference each (SAD, one rule)");

	CHECK(espdp_sa_install(dp, in2, out2) == ESPDP_ERR_EXISTS, "policy 3 is bound: replace");
	CHECK(espdp_sa_install(dp, dup, NULL) == ESPDP_ERR_EXISTS, "SPI + destination taken");
	CHECK(espdp_sa_install(dp, in2, stray) == ESPDP_ERR_INVALID, "no rule has policy 999");
	CHECK(refs(in2) == 1 && refs(dup) == 1, "a refused change took nothing");
	CHECK(encap(dp, 0, 3, &spi, NULL, NULL) == 0 && spi == 0x101, "still out1");

	CHECK(espdp_sa_replace(dp, in2, out2) == 0, "replace");
	CHECK(encap(dp, 0, 3, &spi, wire2, &len2) == 0 && spi == 0x102, "sealed with out2");
	CHECK(decap(dp, wire2, len2) == 0, "in2 live");
	CHECK(encap(dp, 0, 3, &spi, wire1, &len1) == 0, "another");
	espdp_reclaim(dp);
	CHECK(refs(out1) == 1, "out1 released by the table (no reader)");
	CHECK(refs(in1) == 2, "in1 stays for packets in flight");

	CHECK(espdp_sa_retire(dp, in1) == 0, "retire in1");
	CHECK(espdp_sa_retire(dp, in1) == ESPDP_ERR_INVALID, "twice");
	CHECK(espdp_sa_retire(dp, out1) == ESPDP_ERR_INVALID, "out1 serves no rule any more");
	espdp_reclaim(dp);
	CHECK(refs(in1) == 1, "in1 released");
	CHECK(espdp_sa_retire(dp, out2) == 0, "retire out2");
	CHECK(encap(dp, 0, 3, &spi, NULL, NULL) == ESPD_DROP_no_sa, "no SA again");
	CHECK(acquires(dp, &policy) == 1 && policy == 3, "acquire again at once after retire");
	CHECK(decap(dp, wire2, len2) == ESPD_DROP_replay_dup, "in2 still there");

	/* a reader inside a batch holds what a change unlinks until it leaves */
	CHECK(espdp_sa_install(dp, NULL, out1) == 0, "install out1 alone");
	dp_enter(dp, dp->nworkers); /* the control plane's slot stands in for a worker */
	CHECK(espdp_sa_retire(dp, out1) == 0, "retire out1");
	CHECK(espdp_reclaim(dp) == 1 && refs(out1) == 2, "held while the reader is inside");
	dp_leave(dp, dp->nworkers);
	CHECK(espdp_reclaim(dp) == 0 && refs(out1) == 1, "freed once it left");

	/* a full publish replaces the incremental state with its own */
	CHECK(espdp_publish(dp, rules_table(dp)) == 0, "republish");
	espdp_reclaim(dp);
	CHECK(refs(in2) == 1, "the old set's SAD released in2");
	espdp_sa_release(in1);
	espdp_sa_release(out1);
	espdp_sa_release(in2);
	espdp_sa_release(out2);
	espdp_sa_release(dup);
	espdp_sa_release(stray);
	espdp_free(dp);
}

/* --- stress: readers against the writer --- */

struct reader {
	espdp *dp;
	unsigned worker;
	int stop;
	unsigned long sealed, no_sa, looked_up, other;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	uint64_t seed = 0x9e37 * (r->worker + 1);

	while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
		struct espdp_pkt pk[16];
		uint8_t buf[16][512];
		uint32_t spi;

		for (unsigned i = 0; i < 16; i++) {
			seed = seed * 6364136223846793005ULL + 1;
			inner(&pk[i], buf[i], sizeof(buf[i]), 1 + (unsigned)(seed >> 33) % POLICIES);
		}
		espdp_encap_batch(r->dp, r->worker, pk, 16);
		for (unsigned i = 0; i < 16; i++) {
			if (pk[i].result == 0)
				r->sealed++;
			else if (pk[i].result == ESPD_DROP_no_sa)
				r->no_sa++;
			else
				r->other++;
		}
		/* fake ESP to SPIs the writer uses: the lookup finds an SA or none */
		for (unsigned i = 0; i < 16; i++) {
			uint8_t *ip = buf[i] + 64;

			seed = seed * 6364136223846793005ULL + 1;
			spi = 0x10000 + (uint32_t)(seed >> 33) % (4 * POLICIES);
			memset(ip, 0, 100);
			ip[0] = 0x45;
			wr16(ip + 2, 100);
			ip[8] = 64;
			ip[9] = IPPROTO_NUM_ESP;
			memcpy(ip + 12, "\xc0\x00\x02\x01", 4);
			memcpy(ip + 16, "\xc0\x00\x02\x02", 4);
			wr32(ip + 20, spi);
			wr32(ip + 24, 1);
			memset(&pk[i], 0, sizeof(pk[i]));
			pk[i].buf = buf[i];
			pk[i].cap = sizeof(buf[i]);
			pk[i].off = 64;
			pk[i].len = 100;
		}
		espdp_decap_batch(r->dp, r->worker, pk, 16);
		for (unsigned i = 0; i < 16; i++) {
			if (pk[i].result == ESPD_DROP_unknown_spi)
				continue;
			r->looked_up++;
			if (pk[i].result != ESPD_DROP_auth_failed && pk[i].result != ESPD_DROP_bad_length)
				r->other++;
		}
	}
	return NULL;
}

static void test_stress(void)
{
	espdp *dp = espdp_new(READERS);
	struct reader rd[READERS];
	pthread_t th[READERS];
	espdp_sa *in[POLICIES + 1] = { 0 }, *out[POLICIES + 1] = { 0 };
	uint32_t next_spi = 0x10000;
	unsigned installs = 0, replaces = 0, retires = 0, errors = 0;
	unsigned long sealed = 0, no_sa = 0, looked = 0, other = 0;

	CHECK(espdp_publish(dp, rules_table(dp)) == 0, "publish");
	for (unsigned i = 0; i < READERS; i++) {
		rd[i] = (struct reader){ .dp = dp, .worker = i };
		pthread_create(&th[i], NULL, reader_main, &rd[i]);
	}
	for (unsigned op = 0; op < STRESS_OPS; op++) {
		unsigned p = 1 + (unsigned)(rnd() % POLICIES);
		uint32_t spi = 0x10000 + (next_spi++ - 0x10000) % (4 * POLICIES);
		espdp_sa *ni, *no;

		if (!out[p] || rnd() % 3 == 0) {
			if (out[p]) { /* retire the pair */
				errors += espdp_sa_retire(dp, in[p]) != 0;
				errors += espdp_sa_retire(dp, out[p]) != 0;
				in[p] = out[p] = NULL;
				retires++;
				continue;
			}
		}
		/* SPIs cycle through 4 per policy's worth: skip one still installed */
		ni = make_sa(dp, ESPDP_DIR_IN, spi, 0);
		no = make_sa(dp, ESPDP_DIR_OUT, spi, p);
		if (out[p]) {
			int err = espdp_sa_replace(dp, ni, no);

			if (err == ESPDP_ERR_EXISTS) { /* that SPI is still some policy's inbound */
				espdp_sa_release(ni);
				espdp_sa_release(no);
				continue;
			}
			errors += err != 0;
			errors += espdp_sa_retire(dp, in[p]) != 0; /* the old inbound, after the switch */
			replaces++;
		} else {
			int err = espdp_sa_install(dp, ni, no);

			if (err == ESPDP_ERR_EXISTS) {
				espdp_sa_release(ni);
				espdp_sa_release(no);
				continue;
			}
			errors += err != 0;
			installs++;
		}
		in[p] = ni;
		out[p] = no;
		espdp_sa_release(ni); /* only the tables hold them now */
		espdp_sa_release(no);
	}
	for (unsigned i = 0; i < READERS; i++) {
		__atomic_store_n(&rd[i].stop, 1, __ATOMIC_RELEASE);
		pthread_join(th[i], NULL);
		sealed += rd[i].sealed;
		no_sa += rd[i].no_sa;
		looked += rd[i].looked_up;
		other += rd[i].other;
	}
	CHECK(errors == 0, "every change succeeded (%u errors)", errors);
	CHECK(installs > 100 && replaces > 100 && retires > 100, "mix: %u installs, %u replaces, %u retires",
	      installs, replaces, retires);
	CHECK(other == 0, "readers saw only sealed / no_sa / a found SA (%lu other)", other);
	CHECK(sealed > 0 && no_sa > 0 && looked > 0, "readers ran: %lu sealed, %lu no_sa, %lu found",
	      sealed, no_sa, looked);
	CHECK(espdp_reclaim(dp) == 0, "nothing pending once readers are gone");
	printf("stress: %u installs, %u replaces, %u retires; readers %lu sealed, %lu no_sa, %lu found\n",
	       installs, replaces, retires, sealed, no_sa, looked);
	espdp_free(dp); /* frees every SA still installed: LeakSanitizer checks the count */
}

int main(void)
{
	test_sad_model();
	test_incremental();
	test_stress();
	printf("%lu passed, %lu failed\n", passed, failed);
	return failed ? 1 : 0;
}
