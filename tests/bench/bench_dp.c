/* bench_dp: espd data-plane microbenchmarks on one pinned core.
 *
 * Uses only the public API of native/espdp.h (native/ip.h for the checksum section), plus
 * OpenSSL directly for the baseline.
 * Built by tests/bench/bench_dataplane.py with the data plane's own flags:
 *
 *   cc -std=gnu11 -O2 -D_GNU_SOURCE -I native native/ALL.c tests/bench/bench_dp.c \
 *      $(pkg-config --cflags --libs libcrypto) -lpthread -o build/bench_dp
 *
 * Sections (all by default, or one with --only NAME):
 *   rss       heap and RSS per SA: 100,000 inbound (window 1024), then 100,000 outbound
 *   crypto    encap/decap ns per packet for 5 transforms x 3 inner sizes, against bare
 *             OpenSSL sealing/opening the same bytes with a context keyed once
 *   classify  ns per espdp_classify() call with 10 / 1,000 / 10,000 access-list entries
 *   sad       decap ns per packet with 10 and 100,000 inbound SAs installed
 *   tables    one SA pair installed, replaced, retired in the live set (median, p99)
 *             beside a full republish, at 10 and 10,000 tunnels (20,000 SAs)
 *   checksum  ns per Internet checksum of 64 / 1400 / 1448 bytes: ip_sum as built (AVX2
 *             where the CPU has it) against its portable loop; and one TSO segment's copy
 *             and sum fused (ip_sum_copy) against memcpy then the portable sum. The one
 *             section that reaches past espdp.h (native/ip.h), since checksums have no
 *             public entry point.
 *
 * Method: the process is pinned to one CPU. Every measurement is timed per batch of 32
 * (clock_gettime around the espdp_*_batch call or the 32 bare-OpenSSL operations); what
 * prepares a batch (restoring the inner packet before encap, copying a sealed packet
 * from the pre-generated ring into the batch buffer before decap, since decap works in
 * place) runs outside the timed region for espd and baseline alike. A calibration run
 * (also the warm-up) sizes each repetition to ~TARGET_MS of timed work; then espd and
 * the baseline alternate for REPS repetitions and the median is reported.
 *
 * Human-readable progress goes to stderr; the last line on stdout is one JSON object.
 */
#include <errno.h>
#include <malloc.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "espdp.h"
#include "ip.h"

#define BATCH 32
#define BUFSZ 2048 /* per packet buffer: headroom + 1400 + tailroom fits */
#define HEAD 128 /* encap: inner packet starts here (headroom for outer IP + ESP + IV) */
#define DEC_OFF 64 /* decap: the sealed packet is copied here */
#define RING 8192 /* sealed packets per crypto decap ring (distinct sequence numbers) */
#define SAD_PASS 65536 /* packets per repetition of the SA lookup benchmark */
#define MAXREPS 31

static int reps = 7;
static int sad_only = -1; /* --sad-case K: run only case K of the SA lookup section */
static double target_ms = 50.0;
static volatile long sink;

/* --- small helpers --- */

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("bench_dp: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

static void note(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fflush(stderr);
}

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rng = 0x0123456789abcdefull;

static uint64_t rnd(void) /* splitmix64 */
{
	uint64_t z = (rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void derive(uint8_t *out, size_t n, uint64_t seed)
{
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + 0x5851f42d4c957f2dull;

	for (size_t i = 0; i < n; i++) {
		s ^= s >> 29;
		s *= 0xbf58476d1ce4e5b9ull;
		out[i] = (uint8_t)(s >> 56);
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

struct stat3 {
	double med, min, max;
};

static struct stat3 summarize(const double *v, int n)
{
	double s[MAXREPS];
	struct stat3 r;

	memcpy(s, v, (size_t)n * sizeof(*s));
	qsort(s, (size_t)n, sizeof(*s), cmp_double);
	r.med = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
	r.min = s[0];
	r.max = s[n - 1];
	return r;
}

static void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void wr32(uint8_t *p, uint32_t v) { wr16(p, (uint16_t)(v >> 16)); wr16(p + 2, (uint16_t)v); }

static uint8_t *xalloc(size_t n)
{
	void *p = NULL;

	if (posix_memalign(&p, 64, n ? n : 64))
		die("out of memory (%zu bytes)", n);
	memset(p, 0, n);
	return p;
}

/* --- the JSON line, built as we go --- */

static char *json;
static size_t json_len, json_cap;

static void jf(const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(json + json_len, json_cap - json_len, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < json_cap - json_len)
			break;
		json_cap = json_cap ? json_cap * 2 : 65536;
		json = realloc(json, json_cap);
		if (!json)
			die("out of memory");
	}
	json_len += (size_t)n;
}

/* --- packets --- */

static uint16_t csum(const uint8_t *p, size_t n)
{
	uint32_t s = 0;

	for (size_t i = 0; i + 1 < n; i += 2)
		s += (uint32_t)p[i] << 8 | p[i + 1];
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

/* An IPv4 packet of len bytes (>= 28): TCP or UDP header (ports), payload pattern. */
static void mk_ipv4(uint8_t *p, uint32_t len, uint32_t src, uint32_t dst, uint8_t proto,
		    uint16_t sport, uint16_t dport)
{
	memset(p, 0, len);
	p[0] = 0x45;
	wr16(p + 2, (uint16_t)len);
	wr16(p + 4, 0x1234);
	wr16(p + 6, 0x4000);
	p[8] = 64;
	p[9] = proto;
	wr32(p + 12, src);
	wr32(p + 16, dst);
	wr16(p + 10, csum(p, 20));
	wr16(p + 20, sport);
	wr16(p + 22, dport);
	if (proto == 17)
		wr16(p + 24, (uint16_t)(len - 20));
	for (uint32_t i = 28; i < len; i++)
		p[i] = (uint8_t)(i * 7);
}

#define IP4(a, b, c, d) ((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | (d))
#define OUT_LOCAL IP4(192, 0, 2, 1)
#define OUT_PEER IP4(198, 51, 100, 1)

/* --- transforms --- */

struct xf {
	const char *name;
	uint8_t cipher, integ;
	uint16_t bits;
	size_t key_len, auth_len;
	const EVP_CIPHER *(*evp)(void);
	const char *digest;
	uint32_t iv_len, icv_len, block;
};

static const struct xf xfs[] = {
	{ "esp-gcm 128", ESPDP_CIPHER_AES_GCM, ESPDP_INTEG_NONE, 128, 20, 0, EVP_aes_128_gcm, NULL, 8, 16, 4 },
	{ "esp-gcm 256", ESPDP_CIPHER_AES_GCM, ESPDP_INTEG_NONE, 256, 36, 0, EVP_aes_256_gcm, NULL, 8, 16, 4 },
	{ "esp-chacha20-poly1305", ESPDP_CIPHER_CHACHA20_POLY1305, ESPDP_INTEG_NONE, 256, 36, 0,
	  EVP_chacha20_poly1305, NULL, 8, 16, 4 },
	{ "esp-aes 128 esp-sha256-hmac", ESPDP_CIPHER_AES_CBC, ESPDP_INTEG_HMAC_SHA256_128, 128, 16, 32,
	  EVP_aes_128_cbc, "SHA256", 16, 16, 16 },
	{ "esp-aes 256 esp-sha512-hmac", ESPDP_CIPHER_AES_CBC, ESPDP_INTEG_HMAC_SHA512_256, 256, 32, 64,
	  EVP_aes_256_cbc, "SHA512", 16, 32, 16 },
};
#define NXF (sizeof(xfs) / sizeof(xfs[0]))
static const uint32_t sizes[] = { 64, 512, 1400 };
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

static int is_aead(const struct xf *x) { return x->integ == ESPDP_INTEG_NONE; }

/* ESP payload bytes that get encrypted for an inner packet of len bytes (tunnel mode). */
static uint32_t payload_len(const struct xf *x, uint32_t len)
{
	uint32_t pad = (x->block - (len + 2) % x->block) % x->block;

	return len + pad + 2;
}

static espdp_sa *mk_sa(espdp *dp, const struct xf *x, uint32_t spi, int dir, uint32_t window)
{
	struct espdp_sa_config c;
	uint8_t key[64], akey[64];
	espdp_sa *sa;
	int err;

	memset(&c, 0, sizeof(c));
	c.spi = spi;
	c.direction = (uint8_t)dir;
	c.mode = ESPDP_MODE_TUNNEL;
	c.encap = ESPDP_ENCAP_ESP;
	c.cipher = x->cipher;
	c.integ = x->integ;
	c.cipher_key_bits = x->bits;
	c.replay_window = dir == ESPDP_DIR_IN ? window : 0;
	c.cookie = spi;
	c.local.family = c.peer.family = 4;
	wr32(c.local.bytes, dir == ESPDP_DIR_OUT ? OUT_LOCAL : OUT_PEER);
	wr32(c.peer.bytes, dir == ESPDP_DIR_OUT ? OUT_PEER : OUT_LOCAL);
	derive(key, x->key_len, spi);
	derive(akey, x->auth_len, spi ^ 0xa5a5a5a5u);
	err = espdp_sa_create(dp, &c, key, x->key_len, x->auth_len ? akey : NULL, x->auth_len, &sa);
	if (err)
		die("espdp_sa_create(%s, spi %u): %s", x->name, spi, espdp_status_str(err));
	return sa;
}

static void publish_sas(espdp *dp, espdp_sa **sas, size_t n)
{
	espdp_table *t = espdp_table_new(dp);
	int err;

	if (!t)
		die("espdp_table_new");
	for (size_t i = 0; i < n; i++)
		if ((err = espdp_table_add_sa(t, sas[i])))
			die("espdp_table_add_sa: %s", espdp_status_str(err));
	if ((err = espdp_publish(dp, t)))
		die("espdp_publish: %s", espdp_status_str(err));
}

/* --- measurement --- */

/* Profiling hook: with ESPD_BENCH_PERF_CTL=FIFO, "enable"/"disable" are written to FIFO
 * around the timed repetitions, for `perf record -D -1 --control fifo:FIFO`. */
static void perf_ctl(int on)
{
	static FILE *f;
	static int tried;
	const char *path;

	if (!tried) {
		tried = 1;
		path = getenv("ESPD_BENCH_PERF_CTL");
		f = path ? fopen(path, "w") : NULL;
	}
	if (f) {
		fputs(on ? "enable\n" : "disable\n", f);
		fflush(f);
	}
}

struct bench {
	void (*prep)(void *st); /* untimed: make the next batch ready */
	void (*run)(void *st); /* timed: one batch of BATCH packets */
	void *st;
};

static uint64_t *bt; /* per-batch times of the current repetition */
static long bt_cap;
static uint64_t batches_total, batches_trimmed;

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* ns per packet over nb batches; only run() is inside the clock. This machine may be
 * shared: a batch that took more than 4x the repetition's median batch was preempted
 * (a time slice is milliseconds, a batch microseconds) and counts as the median. */
static double rep(const struct bench *b, long nb)
{
	uint64_t tot = 0, med, *sorted;
	long trimmed = 0;

	if (nb > bt_cap) {
		bt_cap = nb;
		bt = realloc(bt, 2 * (size_t)nb * sizeof(*bt));
		if (!bt)
			die("out of memory");
	}
	for (long i = 0; i < nb; i++) {
		uint64_t t0;

		b->prep(b->st);
		t0 = now_ns();
		b->run(b->st);
		bt[i] = now_ns() - t0;
	}
	sorted = bt + nb;
	memcpy(sorted, bt, (size_t)nb * sizeof(*bt));
	qsort(sorted, (size_t)nb, sizeof(*bt), cmp_u64);
	med = sorted[nb / 2];
	for (long i = 0; i < nb; i++) {
		if (bt[i] > 4 * med) {
			tot += med;
			trimmed++;
		} else {
			tot += bt[i];
		}
	}
	batches_total += (uint64_t)nb;
	batches_trimmed += (uint64_t)trimmed;
	return (double)tot / ((double)nb * BATCH);
}

/* Warm-up and sizing: batches per repetition for ~target_ms of timed work. */
static long calibrate(const struct bench *b)
{
	long nb = 8;

	for (;;) {
		double ns = rep(b, nb) * nb * BATCH;

		if (ns > 2e6 || nb >= (1L << 24)) {
			double want = target_ms * 1e6 / (ns / nb);

			nb = want < 8 ? 8 : (long)want;
			rep(b, nb / 4 + 1); /* a little more warm-up at the final size */
			return nb;
		}
		nb *= 4;
	}
}

/* n benchmarks measured round-robin, one repetition each per round, so drift (frequency,
 * neighbours) hits them all alike. nbatch[i] > 0 fixes the repetition size (no calibration,
 * no warm-up: the caller did both). */
static void measure_group(const struct bench *b, const long *nbatch, int n, struct stat3 *out)
{
	double v[16][MAXREPS];
	long nb[16];

	if (n > 16)
		die("measure_group: too many benchmarks");
	for (int i = 0; i < n; i++)
		nb[i] = nbatch && nbatch[i] > 0 ? nbatch[i] : calibrate(&b[i]);
	for (int r = 0; r < reps; r++)
		for (int i = 0; i < n; i++) {
			perf_ctl(1);
			v[i][r] = rep(&b[i], nb[i]);
			perf_ctl(0);
		}
	for (int i = 0; i < n; i++)
		out[i] = summarize(v[i], reps);
}

/* espd and baseline alternate, so drift (frequency, neighbours) hits both alike. */
static void measure_pair(const struct bench *a, const struct bench *b, struct stat3 *ra,
			 struct stat3 *rb)
{
	struct bench g[2] = { *a, *b };
	struct stat3 r[2];

	measure_group(g, NULL, 2, r);
	*ra = r[0];
	*rb = r[1];
}

/* --- crypto: encap/decap against bare OpenSSL --- */

struct cstate {
	const struct xf *x;
	uint32_t size, plen;
	espdp *dp;
	espdp_sa *sa;
	uint8_t *buf[BATCH];
	struct espdp_pkt pk[BATCH];
	uint8_t inner[BUFSZ];
	/* decap ring */
	uint8_t *ring;
	uint32_t slot, sealed_len, pos;
	/* baseline */
	EVP_CIPHER_CTX *c;
	EVP_MAC_CTX *m;
	uint8_t salt[4];
	uint64_t seq;
	long fails;
};

static void check_batch(const struct cstate *s, size_t ok, const char *what)
{
	if (ok == BATCH)
		return;
	for (int i = 0; i < BATCH; i++)
		if (s->pk[i].result)
			die("%s %s %u B: packet dropped: %s", what, s->x->name, s->size,
			    espdp_drop_name((unsigned)s->pk[i].result));
}

static void encap_prep(void *v)
{
	struct cstate *s = v;

	for (int i = 0; i < BATCH; i++) {
		memcpy(s->buf[i] + HEAD, s->inner, s->size);
		s->pk[i] = (struct espdp_pkt){ .buf = s->buf[i], .cap = BUFSZ, .off = HEAD,
					       .len = s->size, .sa = s->sa };
	}
}

static void encap_run(void *v)
{
	struct cstate *s = v;

	sink += (long)espdp_encap_batch(s->dp, 0, s->pk, BATCH);
}

static void encap_run_checked(void *v)
{
	struct cstate *s = v;

	check_batch(s, espdp_encap_batch(s->dp, 0, s->pk, BATCH), "encap");
}

/* The same bytes as espd: payload (inner + padding + trailer) at HEAD, ESP header and IV
 * in front of it, ICV after. The trailer is written here, untimed (espd writes its own). */
static void seal_prep(void *v)
{
	struct cstate *s = v;

	for (int i = 0; i < BATCH; i++) {
		uint8_t *pl = s->buf[i] + HEAD;
		uint32_t pad = s->plen - s->size - 2;

		memcpy(pl, s->inner, s->size);
		for (uint32_t k = 0; k < pad; k++)
			pl[s->size + k] = (uint8_t)(k + 1);
		pl[s->plen - 2] = (uint8_t)pad;
		pl[s->plen - 1] = 4;
	}
}

static void seal_run(void *v)
{
	struct cstate *s = v;
	const struct xf *x = s->x;
	int n, ok = 1;

	for (int i = 0; i < BATCH; i++) {
		uint8_t *pl = s->buf[i] + HEAD, *iv = pl - x->iv_len, *esp = iv - 8;
		uint64_t seq = ++s->seq;

		wr32(esp, 0x1000);
		wr32(esp + 4, (uint32_t)seq);
		if (is_aead(x)) {
			uint8_t nonce[12];

			wr32(iv, (uint32_t)(seq >> 32));
			wr32(iv + 4, (uint32_t)seq);
			memcpy(nonce, s->salt, 4);
			memcpy(nonce + 4, iv, 8);
			ok &= EVP_CipherInit_ex2(s->c, NULL, NULL, nonce, 1, NULL);
			ok &= EVP_CipherUpdate(s->c, NULL, &n, esp, 8);
			ok &= EVP_CipherUpdate(s->c, pl, &n, pl, (int)s->plen);
			ok &= EVP_CipherFinal_ex(s->c, pl + n, &n) > 0;
			ok &= EVP_CIPHER_CTX_ctrl(s->c, EVP_CTRL_AEAD_GET_TAG, 16, pl + s->plen);
		} else {
			uint8_t mac[64];
			size_t ml;

			/* a fresh IV per packet, written not computed (cheapest honest choice) */
			wr32(iv, (uint32_t)seq);
			wr32(iv + 4, 0x9e3779b9u);
			wr32(iv + 8, (uint32_t)(seq * 2654435761u));
			wr32(iv + 12, 0x7f4a7c15u);
			ok &= EVP_CipherInit_ex2(s->c, NULL, NULL, iv, 1, NULL);
			ok &= EVP_CipherUpdate(s->c, pl, &n, pl, (int)s->plen);
			ok &= EVP_MAC_init(s->m, NULL, 0, NULL);
			ok &= EVP_MAC_update(s->m, esp, 8 + x->iv_len + s->plen);
			ok &= EVP_MAC_final(s->m, mac, &ml, sizeof(mac));
			memcpy(pl + s->plen, mac, x->icv_len);
		}
	}
	s->fails += !ok;
}

static void decap_prep(void *v)
{
	struct cstate *s = v;

	for (int i = 0; i < BATCH; i++) {
		if (s->pos == RING) { /* next pass over the ring: an empty window again */
			s->pos = 0;
			if (s->sa)
				espdp_sa_test_set_seq(s->sa, 0);
		}
		memcpy(s->buf[i] + DEC_OFF, s->ring + (size_t)s->pos++ * s->slot, s->sealed_len);
		s->pk[i] = (struct espdp_pkt){ .buf = s->buf[i], .cap = BUFSZ, .off = DEC_OFF,
					       .len = s->sealed_len };
	}
}

static void decap_run(void *v)
{
	struct cstate *s = v;

	sink += (long)espdp_decap_batch(s->dp, 0, s->pk, BATCH);
}

static void decap_run_checked(void *v)
{
	struct cstate *s = v;

	check_batch(s, espdp_decap_batch(s->dp, 0, s->pk, BATCH), "decap");
	for (int i = 0; i < BATCH; i++)
		if (s->pk[i].len != s->size || memcmp(s->pk[i].buf + s->pk[i].off, s->inner, s->size))
			die("decap %s %u B: inner packet differs", s->x->name, s->size);
}

static void open_run(void *v)
{
	struct cstate *s = v;
	const struct xf *x = s->x;
	int n, ok = 1;

	for (int i = 0; i < BATCH; i++) {
		uint8_t *esp = s->buf[i] + DEC_OFF + 20, *iv = esp + 8, *pl = iv + x->iv_len;

		if (is_aead(x)) {
			uint8_t nonce[12];

			memcpy(nonce, s->salt, 4);
			memcpy(nonce + 4, iv, 8);
			ok &= EVP_CipherInit_ex2(s->c, NULL, NULL, nonce, 0, NULL);
			ok &= EVP_CIPHER_CTX_ctrl(s->c, EVP_CTRL_AEAD_SET_TAG, 16, pl + s->plen);
			ok &= EVP_CipherUpdate(s->c, NULL, &n, esp, 8);
			ok &= EVP_CipherUpdate(s->c, pl, &n, pl, (int)s->plen);
			ok &= EVP_CipherFinal_ex(s->c, pl + n, &n) > 0;
		} else {
			uint8_t mac[64];
			size_t ml;

			ok &= EVP_MAC_init(s->m, NULL, 0, NULL);
			ok &= EVP_MAC_update(s->m, esp, 8 + x->iv_len + s->plen);
			ok &= EVP_MAC_final(s->m, mac, &ml, sizeof(mac));
			ok &= CRYPTO_memcmp(mac, pl + s->plen, x->icv_len) == 0;
			ok &= EVP_CipherInit_ex2(s->c, NULL, NULL, iv, 0, NULL);
			ok &= EVP_CipherUpdate(s->c, pl, &n, pl, (int)s->plen);
		}
	}
	s->fails += !ok;
}

static void open_run_checked(void *v)
{
	struct cstate *s = v;

	s->fails = 0;
	open_run(v);
	if (s->fails)
		die("bare open %s %u B: authentication failed", s->x->name, s->size);
	for (int i = 0; i < BATCH; i++)
		if (memcmp(s->buf[i] + DEC_OFF + 20 + 8 + s->x->iv_len, s->inner, s->size))
			die("bare open %s %u B: plaintext differs", s->x->name, s->size);
}

static void baseline_key(struct cstate *s, uint32_t spi, int enc)
{
	const struct xf *x = s->x;
	uint8_t key[64], akey[64];

	derive(key, x->key_len, spi);
	derive(akey, x->auth_len, spi ^ 0xa5a5a5a5u);
	EVP_CIPHER_CTX_free(s->c);
	EVP_MAC_CTX_free(s->m);
	s->c = EVP_CIPHER_CTX_new();
	s->m = NULL;
	if (!s->c || !EVP_CipherInit_ex2(s->c, x->evp(), key, NULL, enc, NULL))
		die("baseline: cipher init");
	EVP_CIPHER_CTX_set_padding(s->c, 0);
	if (is_aead(x)) {
		memcpy(s->salt, key + x->key_len - 4, 4);
	} else {
		EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
		OSSL_PARAM p[2];

		s->m = mac ? EVP_MAC_CTX_new(mac) : NULL;
		EVP_MAC_free(mac);
		p[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)x->digest, 0);
		p[1] = OSSL_PARAM_construct_end();
		if (!s->m || !EVP_MAC_init(s->m, akey, x->auth_len, p))
			die("baseline: HMAC init");
	}
}

static void check_sa_info(const struct xf *x, espdp_sa *sa)
{
	struct espdp_sa_info in;

	espdp_sa_info(sa, &in);
	if (in.iv_len != x->iv_len || in.icv_len != x->icv_len || in.block != x->block)
		die("%s: espd says iv %u icv %u block %u, the benchmark assumed %u/%u/%u", x->name,
		    in.iv_len, in.icv_len, in.block, x->iv_len, x->icv_len, x->block);
}

static int first_row = 1;

static void crypto_row(const char *dir, const struct xf *x, uint32_t size, struct stat3 e,
		       struct stat3 b)
{
	note("  %-6s %-28s %5u B  espd %8.1f ns  bare %8.1f ns  ratio %.2f  (espd min %.1f max %.1f)\n",
	     dir, x->name, size, e.med, b.med, e.med / b.med, e.min, e.max);
	jf("%s{\"dir\":\"%s\",\"transform\":\"%s\",\"size\":%u,\"espd_ns\":%.2f,\"bare_ns\":%.2f,"
	   "\"ratio\":%.4f,\"espd_min\":%.2f,\"espd_max\":%.2f,\"bare_min\":%.2f,\"bare_max\":%.2f}",
	   first_row ? "" : ",", dir, x->name, size, e.med, b.med, e.med / b.med, e.min, e.max,
	   b.min, b.max);
	first_row = 0;
}

static void bench_crypto_one(const struct xf *x, uint32_t size)
{
	struct cstate *s = calloc(1, sizeof(*s));
	struct bench e, b;
	struct stat3 re, rb;
	espdp *gen;
	espdp_sa *gsa;

	if (!s)
		die("out of memory");
	s->x = x;
	s->size = size;
	s->plen = payload_len(x, size);
	for (int i = 0; i < BATCH; i++)
		s->buf[i] = xalloc(BUFSZ);
	mk_ipv4(s->inner, size, IP4(10, 1, 0, 1), IP4(10, 2, 0, 1), 17, 40000, 5001);

	/* encap */
	s->dp = espdp_new(1);
	s->sa = mk_sa(s->dp, x, 0x1000, ESPDP_DIR_OUT, 0);
	check_sa_info(x, s->sa);
	publish_sas(s->dp, &s->sa, 1);
	encap_prep(s);
	encap_run_checked(s);
	if (s->pk[0].len != 20 + 8 + x->iv_len + s->plen + x->icv_len)
		die("encap %s %u B: unexpected length %u", x->name, size, s->pk[0].len);
	baseline_key(s, 0x1000, 1);
	e = (struct bench){ encap_prep, encap_run, s };
	b = (struct bench){ seal_prep, seal_run, s };
	s->fails = 0;
	measure_pair(&e, &b, &re, &rb);
	if (s->fails)
		die("bare seal %s failed", x->name);
	crypto_row("encap", x, size, re, rb);
	espdp_sa_release(s->sa);
	espdp_free(s->dp);

	/* decap: a ring of RING packets sealed by an outbound SA on a second instance,
	 * sequence numbers 1..RING; the inbound SA has the default window (1024) and its
	 * window is emptied (untimed) before each new pass over the ring. */
	gen = espdp_new(1);
	gsa = mk_sa(gen, x, 0x2000, ESPDP_DIR_OUT, 0);
	s->slot = (size + 128 + 63) & ~63u;
	s->ring = xalloc((size_t)RING * s->slot);
	for (uint32_t k = 0; k < RING; k++) {
		struct espdp_pkt p = { .buf = s->buf[0], .cap = BUFSZ, .off = HEAD, .len = size, .sa = gsa };

		memcpy(s->buf[0] + HEAD, s->inner, size);
		if (espdp_encap_batch(gen, 0, &p, 1) != 1)
			die("ring encap: %s", espdp_drop_name((unsigned)p.result));
		s->sealed_len = p.len;
		memcpy(s->ring + (size_t)k * s->slot, p.buf + p.off, p.len);
	}
	espdp_sa_release(gsa);
	espdp_free(gen);
	s->dp = espdp_new(1);
	s->sa = mk_sa(s->dp, x, 0x2000, ESPDP_DIR_IN, 1024);
	publish_sas(s->dp, &s->sa, 1);
	s->pos = 0;
	decap_prep(s);
	decap_run_checked(s);
	baseline_key(s, 0x2000, 0);
	decap_prep(s);
	open_run_checked(s);
	e = (struct bench){ decap_prep, decap_run, s };
	b = (struct bench){ decap_prep, open_run, s };
	s->fails = 0;
	measure_pair(&e, &b, &re, &rb);
	if (s->fails)
		die("bare open %s failed during the run", x->name);
	{ /* every espd decap passed too? */
		struct espdp_sa_stats st;
		uint64_t drops = 0;

		espdp_sa_stats(s->sa, &st);
		for (int i = 0; i < 32; i++)
			drops += st.drops[i];
		if (drops)
			die("decap %s %u B: %llu packets dropped during the run", x->name, size,
			    (unsigned long long)drops);
	}
	crypto_row("decap", x, size, re, rb);
	espdp_sa_release(s->sa);
	espdp_free(s->dp);
	free(s->ring);
	EVP_CIPHER_CTX_free(s->c);
	EVP_MAC_CTX_free(s->m);
	for (int i = 0; i < BATCH; i++)
		free(s->buf[i]);
	free(s);
}

static void bench_crypto(void)
{
	note("crypto: ns per packet, batches of %d, tunnel IPv4 raw ESP, median of %d\n", BATCH, reps);
	jf("\"crypto\":[");
	first_row = 1;
	for (size_t i = 0; i < NXF; i++)
		for (size_t k = 0; k < NSIZES; k++)
			bench_crypto_one(&xfs[i], sizes[k]);
	jf("]");
}

/* --- classification --- */

/* Rule i < n-1 (all distinct by source /24 10.hi.lo.0, i < 65536), by i % 10:
 *   0-5  permit ip  10.a.b.0/24    -> 172.c.d.0/24
 *   6    permit ip  10.a.b.h/32    -> 172.c.d.0/24
 *   7    permit tcp 10.a.b.0/24    -> 172.c.d.0/24  eq 443
 *   8    permit udp 10.a.b.0/24    -> 172.c.d.h/32  eq 53
 *   9    permit tcp 10.a.b.h/32    -> 172.c.d.h/32  eq 22
 * and a final broad permit ip 10.0.0.0/8 -> any. */
static uint32_t rule_src(uint32_t i) { return IP4(10, i >> 8, i & 255, 0); }
static uint32_t rule_dst(uint32_t i)
{
	uint32_t j = (i * 40503u + 17) & 0xffff;

	return IP4(172, 16 + (j >> 12), (j >> 4) & 255, 0);
}

static void put_prefix(uint8_t *val, uint8_t *mask, uint32_t addr, int bits)
{
	uint32_t m = bits ? 0xffffffffu << (32 - bits) : 0;

	wr32(val, addr & m);
	wr32(mask, m);
}

static struct espdp_rule make_rule(uint32_t i, uint32_t n)
{
	struct espdp_rule r;
	unsigned kind = i % 10;

	memset(&r, 0, sizeof(r));
	r.family = 4;
	r.action = ESPDP_ACTION_PROTECT;
	r.policy = 10 + i % 7;
	if (i == n - 1) {
		put_prefix(r.src, r.src_mask, IP4(10, 0, 0, 0), 8);
		return r;
	}
	put_prefix(r.src, r.src_mask, rule_src(i) | (kind == 6 || kind == 9 ? 7 : 0),
		   kind == 6 || kind == 9 ? 32 : 24);
	put_prefix(r.dst, r.dst_mask, rule_dst(i) | (kind >= 8 ? 9 : 0), kind >= 8 ? 32 : 24);
	if (kind >= 7) {
		r.proto = kind == 8 ? 17 : 6;
		r.proto_mask = 0xff;
		r.dport = kind == 7 ? 443 : kind == 8 ? 53 : 22;
		r.dport_mask = 0xffff;
	}
	return r;
}

/* A packet that matches rule i (and the broad permit), variant v. */
static void packet_for(uint8_t *p, uint32_t i, uint32_t n, unsigned v)
{
	unsigned kind = i % 10;
	uint32_t src, dst;
	uint8_t proto = v & 1 ? 17 : 6;
	uint16_t dport = (uint16_t)(1024 + v * 13);

	if (i == n - 1) { /* only the broad permit: a source no other rule has */
		mk_ipv4(p, 64, IP4(10, 200, v & 255, 5), IP4(192, 168, 1, 1 + (v & 127)), proto, 1000 + v, dport);
		return;
	}
	src = rule_src(i) | (kind == 6 || kind == 9 ? 7 : 1 + v % 250);
	dst = rule_dst(i) | (kind >= 8 ? 9 : 1 + (v * 7) % 250);
	if (kind >= 7) {
		proto = kind == 8 ? 17 : 6;
		dport = kind == 7 ? 443 : kind == 8 ? 53 : 22;
	}
	mk_ipv4(p, 64, src, dst, proto, (uint16_t)(30000 + v * 101), dport);
}

#define CL_VARIANTS 64

struct clstate {
	espdp *dp;
	uint8_t pkts[CL_VARIANTS][64];
	unsigned k;
};

static void cl_prep(void *v) { (void)v; }

static void cl_run(void *v)
{
	struct clstate *s = v;
	long acc = 0;

	for (int i = 0; i < BATCH; i++)
		acc += espdp_classify(s->dp, s->pkts[(s->k + i) & (CL_VARIANTS - 1)], 64);
	s->k += BATCH + 1;
	sink += acc;
}

static void bench_classify(void)
{
	static const uint32_t counts[] = { 10, 1000, 10000 };
	static const char *const names[3] = { "middle", "last", "broad" };
	enum { NC = sizeof(counts) / sizeof(counts[0]) };
	struct clstate *s[NC * 3];
	struct bench b[NC * 3];
	struct stat3 r[NC * 3];
	uint32_t target[NC * 3];
	int wrong[NC * 3];
	espdp_sa *sa[NC];

	note("classify: ns per espdp_classify() call (64-byte IPv4 packets, %d variants), median of %d\n",
	     CL_VARIANTS, reps);
	for (size_t c = 0; c < NC; c++) {
		uint32_t n = counts[c];
		espdp_table *t;
		espdp *dp = espdp_new(1);
		uint64_t t0;
		int err;

		sa[c] = mk_sa(dp, &xfs[0], 0x3000, ESPDP_DIR_OUT, 0);
		t = espdp_table_new(dp);
		t0 = now_ns();
		for (uint32_t i = 0; i < n; i++) {
			struct espdp_rule rule = make_rule(i, n);

			if ((err = espdp_table_add_rule(t, &rule, sa[c])))
				die("espdp_table_add_rule(%u): %s", i, espdp_status_str(err));
		}
		if ((err = espdp_publish(dp, t)))
			die("espdp_publish (%u rules): %s", n, espdp_status_str(err));
		note("  %5u rules: built and published in %.1f ms\n", n, (now_ns() - t0) / 1e6);
		for (int k = 0; k < 3; k++) {
			size_t i = c * 3 + (size_t)k;
			long got = -2;

			s[i] = calloc(1, sizeof(**s));
			if (!s[i])
				die("out of memory");
			s[i]->dp = dp;
			target[i] = k == 0 ? ((n - 1) / 2 / 10) * 10 + 4 : k == 1 ? n - 2 : n - 1;
			wrong[i] = 0;
			for (unsigned v = 0; v < CL_VARIANTS; v++) {
				packet_for(s[i]->pkts[v], target[i], n, v);
				got = espdp_classify(dp, s[i]->pkts[v], 64);
				wrong[i] += got != (long)target[i];
			}
			if (wrong[i])
				note("  %5u rules, %s rule %u: espdp_classify returned %ld (%d of %d variants wrong)\n",
				     n, names[k], target[i], got, wrong[i], CL_VARIANTS);
			b[i] = (struct bench){ cl_prep, cl_run, s[i] };
		}
	}
	measure_group(b, NULL, NC * 3, r);
	jf("\"classify\":[");
	for (size_t i = 0; i < NC * 3; i++) {
		note("  %5u rules  %-6s (rule %5u)  %7.1f ns  (min %.1f max %.1f)%s\n", counts[i / 3],
		     names[i % 3], target[i], r[i].med, r[i].min, r[i].max, wrong[i] ? "  WRONG RESULT" : "");
		jf("%s{\"rules\":%u,\"case\":\"%s\",\"rule\":%u,\"ns\":%.2f,\"min\":%.2f,\"max\":%.2f,"
		   "\"wrong\":%d}", i ? "," : "", counts[i / 3], names[i % 3], target[i], r[i].med, r[i].min,
		   r[i].max, wrong[i]);
	}
	jf("]");
	for (size_t c = 0; c < NC; c++) {
		espdp *dp = s[c * 3]->dp;

		espdp_sa_release(sa[c]);
		espdp_free(dp);
		for (int k = 0; k < 3; k++)
			free(s[c * 3 + (size_t)k]);
	}
}

/* --- inbound SA lookup --- */

#define SAD_SLOT 128 /* a sealed 64-byte inner packet (120 bytes with esp-gcm 128) fits */
#define SAD_SIZE 64

static uint32_t spi_of(uint32_t i) { return (uint32_t)((i + 4096u) * 2654435761u); }

struct sadstate {
	espdp *dp;
	uint8_t *ring; /* (reps + 2) passes of SAD_PASS packets, sequence numbers fresh in each */
	uint32_t len, pos, npkts;
	uint8_t *buf[BATCH];
	struct espdp_pkt pk[BATCH];
};

static void sad_prep(void *v)
{
	struct sadstate *s = v;

	if (s->pos + BATCH > s->npkts)
		die("sad: ring exhausted (%u packets)", s->npkts);
	for (int i = 0; i < BATCH; i++) {
		memcpy(s->buf[i] + DEC_OFF, s->ring + (size_t)s->pos++ * SAD_SLOT, s->len);
		s->pk[i] = (struct espdp_pkt){ .buf = s->buf[i], .cap = BUFSZ, .off = DEC_OFF, .len = s->len };
	}
}

static void sad_run(void *v)
{
	struct sadstate *s = v;
	size_t ok = espdp_decap_batch(s->dp, 0, s->pk, BATCH);

	if (ok != BATCH)
		for (int i = 0; i < BATCH; i++)
			if (s->pk[i].result)
				die("sad decap dropped a packet: %s", espdp_drop_name((unsigned)s->pk[i].result));
}

/* Decap of 64-byte inner packets (esp-gcm 128) to SPIs drawn at random among `active`
 * of the `nsa` installed SAs. Exactly one pass of SAD_PASS fresh packets per repetition
 * (no window resets, so no untimed step touches the SAs). */
static struct sadstate *sad_setup(uint32_t nsa, uint32_t active)
{
	const struct xf *x = &xfs[0];
	struct sadstate *s = calloc(1, sizeof(*s));
	espdp_sa **sas = calloc(nsa, sizeof(*sas));
	uint32_t *target, *count, *start, *order, *act;
	uint8_t inner[SAD_SIZE];
	espdp *gen;

	if (!s || !sas)
		die("out of memory");
	s->dp = espdp_new(1);
	for (uint32_t i = 0; i < nsa; i++)
		sas[i] = mk_sa(s->dp, x, spi_of(i), ESPDP_DIR_IN, 1024);
	publish_sas(s->dp, sas, nsa);
	for (uint32_t i = 0; i < nsa; i++)
		espdp_sa_release(sas[i]); /* the table holds them */
	free(sas);

	/* which SA each packet goes to, then seal them grouped by SA (one generator SA at a
	 * time, so sequence numbers ascend in ring order for every SA) */
	s->npkts = (uint32_t)(reps + 2) * SAD_PASS;
	target = malloc(s->npkts * sizeof(*target));
	count = calloc(nsa + 1, sizeof(*count));
	start = calloc(nsa + 1, sizeof(*start));
	order = malloc(s->npkts * sizeof(*order));
	act = malloc(active * sizeof(*act));
	s->ring = xalloc((size_t)s->npkts * SAD_SLOT);
	if (!target || !count || !start || !order || !act)
		die("out of memory");
	for (uint32_t a = 0; a < active; a++) /* spread the active ones over the table */
		act[a] = active == nsa ? a : (uint32_t)(((uint64_t)a * nsa) / active + 3);
	for (uint32_t k = 0; k < s->npkts; k++) {
		target[k] = act[rnd() % active];
		count[target[k]]++;
	}
	for (uint32_t i = 0; i < nsa; i++)
		start[i + 1] = start[i] + count[i];
	memset(count, 0, (nsa + 1) * sizeof(*count));
	for (uint32_t k = 0; k < s->npkts; k++)
		order[start[target[k]] + count[target[k]]++] = k;
	mk_ipv4(inner, SAD_SIZE, IP4(10, 1, 0, 1), IP4(10, 2, 0, 1), 17, 40000, 5001);
	gen = espdp_new(1);
	for (uint32_t i = 0; i < nsa; i++) {
		espdp_sa *g;

		if (!count[i])
			continue;
		g = mk_sa(gen, x, spi_of(i), ESPDP_DIR_OUT, 0);
		for (uint32_t j = start[i]; j < start[i] + count[i]; j++) {
			uint8_t b[512];
			struct espdp_pkt p = { .buf = b, .cap = sizeof(b), .off = HEAD, .len = SAD_SIZE, .sa = g };

			memcpy(b + HEAD, inner, SAD_SIZE);
			if (espdp_encap_batch(gen, 0, &p, 1) != 1 || p.len > SAD_SLOT)
				die("sad ring encap failed");
			s->len = p.len;
			memcpy(s->ring + (size_t)order[j] * SAD_SLOT, p.buf + p.off, p.len);
		}
		espdp_sa_release(g);
	}
	espdp_free(gen);
	free(target);
	free(count);
	free(start);
	free(order);
	free(act);
	for (int i = 0; i < BATCH; i++)
		s->buf[i] = xalloc(BUFSZ);
	return s;
}

static void sad_free(struct sadstate *s)
{
	espdp_free(s->dp);
	free(s->ring);
	for (int i = 0; i < BATCH; i++)
		free(s->buf[i]);
	free(s);
}

static void bench_sad(void)
{
	static const uint32_t all[][2] = { { 10, 10 }, { 100000, 10 }, { 100000, 100000 } };
	enum { NCASES = sizeof(all) / sizeof(all[0]) };
	struct sadstate *s[NCASES];
	struct bench b[NCASES];
	struct stat3 r[NCASES];
	long nb[NCASES];
	uint32_t cases[NCASES][2];
	int n = 0;

	note("sad: decap ns per packet, 64-byte inner, esp-gcm 128, window 1024, random SPI among the active SAs, median of %d\n",
	     reps);
	for (int c = 0; c < NCASES; c++) {
		uint64_t t0 = now_ns();

		if (sad_only >= 0 && sad_only != c)
			continue;
		memcpy(cases[n], all[c], sizeof(cases[n]));
		s[n] = sad_setup(all[c][0], all[c][1]);
		b[n] = (struct bench){ sad_prep, sad_run, s[n] };
		nb[n] = SAD_PASS / BATCH;
		note("  %6u SAs installed, %6u active: set up in %.1f s\n", all[c][0], all[c][1],
		     (now_ns() - t0) / 1e9);
		n++;
	}
	for (int w = 0; w < 2; w++) /* warm-up: two passes each */
		for (int i = 0; i < n; i++)
			rep(&b[i], nb[i]);
	measure_group(b, nb, n, r);
	jf("\"sad\":[");
	for (int i = 0; i < n; i++) {
		note("  %6u SAs installed, %6u active: %7.1f ns  (min %.1f max %.1f)\n", cases[i][0],
		     cases[i][1], r[i].med, r[i].min, r[i].max);
		jf("%s{\"sas\":%u,\"active\":%u,\"size\":%u,\"ns\":%.2f,\"min\":%.2f,\"max\":%.2f}",
		   i ? "," : "", cases[i][0], cases[i][1], SAD_SIZE, r[i].med, r[i].min, r[i].max);
		sad_free(s[i]);
	}
	jf("]");
}

/* --- memory per SA --- */

static long rss_bytes(void)
{
	long size = 0, res = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (!f || fscanf(f, "%ld %ld", &size, &res) != 2)
		die("cannot read /proc/self/statm");
	fclose(f);
	return res * sysconf(_SC_PAGESIZE);
}

static long heap_bytes(void)
{
	struct mallinfo2 mi = mallinfo2();

	return (long)(mi.uordblks + mi.hblkhd);
}

static void bench_rss(void)
{
	const uint32_t n = 100000;
	espdp_sa **sas = calloc(n, sizeof(*sas));
	long rss0, heap0, rss1, heap1, rss2, heap2;
	espdp *dp, *dp2;
	uint64_t t0;

	if (!sas)
		die("out of memory");
	{ /* warm: OpenSSL provider loading, algorithm fetch caches, the first table */
		espdp *w = espdp_new(1);
		espdp_sa *sa = mk_sa(w, &xfs[0], 0x4000, ESPDP_DIR_IN, 1024);
		espdp_sa *sb = mk_sa(w, &xfs[0], 0x4001, ESPDP_DIR_OUT, 0);

		espdp_sa_release(sa);
		espdp_sa_release(sb);
		espdp_free(w);
	}
	dp = espdp_new(1);
	dp2 = espdp_new(1);
	malloc_trim(0);
	rss0 = rss_bytes();
	heap0 = heap_bytes();
	t0 = now_ns();
	for (uint32_t i = 0; i < n; i++)
		sas[i] = mk_sa(dp, &xfs[0], spi_of(i), ESPDP_DIR_IN, 1024);
	publish_sas(dp, sas, n);
	for (uint32_t i = 0; i < n; i++)
		espdp_sa_release(sas[i]);
	rss1 = rss_bytes();
	heap1 = heap_bytes();
	note("rss: 100,000 inbound esp-gcm 128 SAs (window 1024) created and published in %.2f s\n",
	     (now_ns() - t0) / 1e9);
	for (uint32_t i = 0; i < n; i++)
		sas[i] = mk_sa(dp2, &xfs[0], spi_of(i), ESPDP_DIR_OUT, 0);
	publish_sas(dp2, sas, n);
	for (uint32_t i = 0; i < n; i++)
		espdp_sa_release(sas[i]);
	rss2 = rss_bytes();
	heap2 = heap_bytes();
	note("  inbound:  RSS %+.1f MiB = %.0f B/SA, heap in use %.0f B/SA\n", (rss1 - rss0) / 1048576.0,
	     (double)(rss1 - rss0) / n, (double)(heap1 - heap0) / n);
	note("  outbound: RSS %+.1f MiB = %.0f B/SA, heap in use %.0f B/SA\n", (rss2 - rss1) / 1048576.0,
	     (double)(rss2 - rss1) / n, (double)(heap2 - heap1) / n);
	jf("\"rss\":{\"sas\":%u,\"in_rss_per_sa\":%.1f,\"in_heap_per_sa\":%.1f,\"out_rss_per_sa\":%.1f,"
	   "\"out_heap_per_sa\":%.1f,\"rss_before\":%ld,\"rss_after_in\":%ld,\"rss_after_out\":%ld}",
	   n, (double)(rss1 - rss0) / n, (double)(heap1 - heap0) / n, (double)(rss2 - rss1) / n,
	   (double)(heap2 - heap1) / n, rss0, rss1, rss2);
	espdp_free(dp2);
	espdp_free(dp);
	free(sas);
	malloc_trim(0);
}

/* --- main --- */

static int pin(int cpu)
{
	cpu_set_t set;

	if (cpu < 0) { /* the highest CPU we may run on: usually the quietest */
		CPU_ZERO(&set);
		if (sched_getaffinity(0, sizeof(set), &set))
			return -1;
		for (int i = CPU_SETSIZE - 1; i >= 0; i--)
			if (CPU_ISSET(i, &set)) {
				cpu = i;
				break;
			}
	}
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		die("sched_setaffinity(cpu %d): %s", cpu, strerror(errno));
	return cpu;
}

static double clock_overhead(void)
{
	double v[MAXREPS];

	for (int r = 0; r < 7; r++) {
		uint64_t t0 = now_ns(), t = t0;

		for (int i = 0; i < 100000; i++)
			t = now_ns();
		v[r] = (double)(t - t0) / 100000;
	}
	return summarize(v, 7).med;
}

/* --- tables: one SA change vs a full republish --- */

#define TBL_OPS 2000 /* changes timed per size */
#define TBL_PUBLISHES 15

struct tunnels {
	espdp *dp;
	uint32_t n;
	espdp_sa **in, **out; /* the pair live for tunnel i */
	uint32_t next_spi;
};

static espdp_sa *tbl_sa(espdp *dp, uint32_t spi, int dir, uint32_t policy)
{
	struct espdp_sa_config c;
	uint8_t key[20];
	espdp_sa *sa;
	int err;

	memset(&c, 0, sizeof(c));
	c.spi = spi;
	c.direction = (uint8_t)dir;
	c.cipher = ESPDP_CIPHER_AES_GCM;
	c.cipher_key_bits = 128;
	c.replay_window = dir == ESPDP_DIR_IN ? 1024 : 0;
	c.policy = policy;
	c.cookie = spi;
	c.local.family = c.peer.family = 4;
	wr32(c.local.bytes, dir == ESPDP_DIR_OUT ? OUT_LOCAL : OUT_PEER);
	wr32(c.peer.bytes, dir == ESPDP_DIR_OUT ? OUT_PEER : OUT_LOCAL);
	derive(key, sizeof(key), spi);
	err = espdp_sa_create(dp, &c, key, sizeof(key), NULL, 0, &sa);
	if (err)
		die("espdp_sa_create(spi %u): %s", spi, espdp_status_str(err));
	return sa;
}

/* Tunnel i: policy i + 1, 10.<i>/24 -> 172.<16 + i>/24 (i as two bytes). */
static void tbl_rule(struct espdp_rule *r, uint32_t i)
{
	memset(r, 0, sizeof(*r));
	r->family = 4;
	r->action = ESPDP_ACTION_PROTECT;
	wr32(r->src, 0x0a000000u | i << 8);
	wr32(r->dst, 0xac000000u | (i + 0x1000) << 8);
	wr32(r->src_mask, 0xffffff00u);
	wr32(r->dst_mask, 0xffffff00u);
	r->policy = i + 1;
}

/* The whole set, built and published the way a reload does it. */
static void tbl_publish(struct tunnels *tn)
{
	espdp_table *t = espdp_table_new(tn->dp);
	struct espdp_rule r;
	int err;

	for (uint32_t i = 0; i < tn->n; i++)
		if (espdp_table_add_sa(t, tn->in[i]) || espdp_table_add_sa(t, tn->out[i]))
			die("espdp_table_add_sa");
	for (uint32_t i = 0; i < tn->n; i++) {
		tbl_rule(&r, i);
		if (espdp_table_add_rule(t, &r, tn->out[i]))
			die("espdp_table_add_rule");
	}
	if ((err = espdp_publish(tn->dp, t)))
		die("espdp_publish: %s", espdp_status_str(err));
	espdp_reclaim(tn->dp);
}

static void tbl_stats(const char *what, uint32_t n, uint64_t *v, int k)
{
	qsort(v, (size_t)k, sizeof(*v), cmp_u64);
	note("  %6u tunnels  %-9s median %9.2f us  p99 %9.2f us  max %9.2f us\n", n, what,
	     v[k / 2] / 1e3, v[(k * 99) / 100] / 1e3, v[k - 1] / 1e3);
	jf("{\"tunnels\":%u,\"op\":\"%s\",\"median_ns\":%llu,\"p99_ns\":%llu,\"max_ns\":%llu,\"n\":%d}",
	   n, what, (unsigned long long)v[k / 2], (unsigned long long)v[(k * 99) / 100],
	   (unsigned long long)v[k - 1], k);
}

/* Install, replace, retire one pair at a random tunnel, each timed alone, against the
 * whole set live. SA creation (keying) and the release of the creator's references stay
 * outside the timed calls: they cost the same whatever the table holds. */
static void bench_tables_size(uint32_t n, int first)
{
	struct tunnels tn = { .dp = espdp_new(1), .n = n, .next_spi = 0x10000 };
	uint64_t *ins = calloc(TBL_OPS, 8), *rep = calloc(TBL_OPS, 8), *ret = calloc(TBL_OPS, 8);
	uint64_t pub[TBL_PUBLISHES];

	tn.in = calloc(n, sizeof(*tn.in));
	tn.out = calloc(n, sizeof(*tn.out));
	for (uint32_t i = 0; i < n; i++) {
		tn.in[i] = tbl_sa(tn.dp, tn.next_spi, ESPDP_DIR_IN, 0);
		tn.out[i] = tbl_sa(tn.dp, tn.next_spi++, ESPDP_DIR_OUT, i + 1);
	}
	for (int k = 0; k < TBL_PUBLISHES; k++) {
		uint64_t t0 = now_ns();

		tbl_publish(&tn);
		pub[k] = now_ns() - t0;
	}
	for (int k = 0; k < TBL_OPS; k++) {
		uint32_t i = (uint32_t)(rnd() % n);
		espdp_sa *in, *out, *in2, *out2, *old_in = tn.in[i], *old_out = tn.out[i];
		uint64_t t0;
		int err;

		t0 = now_ns(); /* retire the pair */
		err = espdp_sa_retire(tn.dp, old_in) | espdp_sa_retire(tn.dp, old_out);
		ret[k] = now_ns() - t0;
		if (err)
			die("espdp_sa_retire");
		in = tbl_sa(tn.dp, tn.next_spi, ESPDP_DIR_IN, 0);
		out = tbl_sa(tn.dp, tn.next_spi++, ESPDP_DIR_OUT, i + 1);
		t0 = now_ns();
		err = espdp_sa_install(tn.dp, in, out);
		ins[k] = now_ns() - t0;
		if (err)
			die("espdp_sa_install: %s", espdp_status_str(err));
		in2 = tbl_sa(tn.dp, tn.next_spi, ESPDP_DIR_IN, 0);
		out2 = tbl_sa(tn.dp, tn.next_spi++, ESPDP_DIR_OUT, i + 1);
		t0 = now_ns();
		err = espdp_sa_replace(tn.dp, in2, out2);
		rep[k] = now_ns() - t0;
		if (err)
			die("espdp_sa_replace: %s", espdp_status_str(err));
		if (espdp_sa_retire(tn.dp, in)) /* the rekeyed pair's old inbound, untimed */
			die("espdp_sa_retire (old inbound)");
		espdp_sa_release(old_in);
		espdp_sa_release(old_out);
		espdp_sa_release(in);
		espdp_sa_release(out);
		tn.in[i] = in2;
		tn.out[i] = out2;
	}
	if (!first)
		jf(",");
	tbl_stats("install", n, ins, TBL_OPS);
	jf(",");
	tbl_stats("replace", n, rep, TBL_OPS);
	jf(",");
	tbl_stats("retire", n, ret, TBL_OPS);
	jf(",");
	tbl_stats("publish", n, pub, TBL_PUBLISHES);
	for (uint32_t i = 0; i < n; i++) {
		espdp_sa_release(tn.in[i]);
		espdp_sa_release(tn.out[i]);
	}
	espdp_free(tn.dp);
	free(tn.in);
	free(tn.out);
	free(ins);
	free(rep);
	free(ret);
}

static void bench_tables(void)
{
	note("== tables: one SA pair changed in place vs the whole set republished\n");
	jf("\"tables\":[");
	bench_tables_size(10, 1);
	bench_tables_size(10000, 0);
	jf("]");
}

/* --- checksum --- */

struct cs_state {
	uint8_t src[BATCH][1536];
	uint8_t dst[BATCH][1536];
	size_t len;
	int kind; /* 0 ip_sum, 1 ip_sum_portable, 2 ip_sum_copy, 3 memcpy + portable */
};

static void cs_prep(void *st)
{
	(void)st;
}

static void cs_run(void *st)
{
	struct cs_state *s = st;
	long acc = 0;

	for (int i = 0; i < BATCH; i++) {
		switch (s->kind) {
		case 0: acc += ip_sum(s->src[i], s->len, 0); break;
		case 1: acc += ip_sum_portable(s->src[i], s->len, 0); break;
		case 2: acc += ip_sum_copy(s->dst[i], s->src[i], s->len); break;
		default:
			memcpy(s->dst[i], s->src[i], s->len);
			acc += ip_sum_portable(s->dst[i], s->len, 0);
		}
	}
	sink += acc;
}

static void bench_checksum(void)
{
	static const size_t sizes[] = { 64, 256, 1400, 1448 };
	static const char *const kinds[4] = { "ip_sum", "portable", "sum_copy", "memcpy+portable" };
	enum { NS = sizeof(sizes) / sizeof(sizes[0]) };
	struct cs_state *s[NS * 4];
	struct bench b[NS * 4];
	struct stat3 r[NS * 4];

	note("checksum: ns per Internet checksum (%s code), median of %d\n", ip_sum_impl(), reps);
	for (size_t i = 0; i < NS * 4; i++) {
		s[i] = calloc(1, sizeof(**s));
		if (!s[i])
			die("out of memory");
		s[i]->len = sizes[i / 4];
		s[i]->kind = (int)(i % 4);
		for (int k = 0; k < BATCH; k++)
			for (size_t j = 0; j < sizeof(s[i]->src[k]); j++)
				s[i]->src[k][j] = (uint8_t)(j * 131 + (size_t)k * 7 + i);
		if (ip_sum(s[i]->src[0], s[i]->len, 0) != ip_sum_portable(s[i]->src[0], s[i]->len, 0))
			die("checksum: ip_sum and ip_sum_portable disagree at %zu bytes", s[i]->len);
		b[i] = (struct bench){ cs_prep, cs_run, s[i] };
	}
	measure_group(b, NULL, NS * 4, r);
	jf("\"checksum\":{\"impl\":\"%s\",\"runs\":[", ip_sum_impl());
	for (size_t i = 0; i < NS * 4; i++) {
		note("  %5zu B  %-16s %7.1f ns  (min %.1f max %.1f)\n", sizes[i / 4], kinds[i % 4],
		     r[i].med, r[i].min, r[i].max);
		jf("%s{\"bytes\":%zu,\"kind\":\"%s\",\"ns\":%.2f,\"min\":%.2f,\"max\":%.2f}",
		   i ? "," : "", sizes[i / 4], kinds[i % 4], r[i].med, r[i].min, r[i].max);
		free(s[i]);
	}
	jf("]}");
}

static void usage(void)
{
	fputs("usage: bench_dp [--only rss|crypto|classify|sad|tables|checksum] [--reps N] [--ms TARGET] [--cpu N] [--sad-case 0|1|2] [--backend openssl|ipsec-mb]\n", stderr);
	exit(2);
}

int main(int argc, char **argv)
{
	const char *only = NULL, *backend = "openssl";
	int cpu = -1;
	double clk;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--only") && i + 1 < argc)
			only = argv[++i];
		else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
			reps = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--ms") && i + 1 < argc)
			target_ms = atof(argv[++i]);
		else if (!strcmp(argv[i], "--sad-case") && i + 1 < argc)
			sad_only = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--cpu") && i + 1 < argc)
			cpu = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--backend") && i + 1 < argc)
			backend = argv[++i];
		else
			usage();
	}
	/* the AEAD backend of every SA made below ([daemon] crypto_backend); bare stays OpenSSL */
	if (strcmp(backend, "openssl") && strcmp(backend, "ipsec-mb"))
		usage();
	if (espdp_crypto_backend_set(strcmp(backend, "openssl") ? ESPDP_CRYPTO_IPSECMB :
				     ESPDP_CRYPTO_OPENSSL) != ESPDP_OK) {
		fprintf(stderr, "bench_dp: crypto backend %s is not available in this build\n", backend);
		return 3;
	}
	if (reps < 1 || reps > MAXREPS || target_ms <= 0)
		usage();
	if (only && strcmp(only, "rss") && strcmp(only, "crypto") && strcmp(only, "classify") &&
	    strcmp(only, "sad") && strcmp(only, "tables") && strcmp(only, "checksum"))
		usage();
	cpu = pin(cpu);
	clk = clock_overhead();
	note("bench_dp: pinned to CPU %d; %s; features: %s; AEAD backend %s (ipsec-mb arch %s); clock_gettime %.1f ns\n",
	     cpu, OpenSSL_version(OPENSSL_VERSION), espdp_crypto_features(), backend,
	     espdp_crypto_ipsecmb_arch(), clk);
	jf("{\"cpu\":%d,\"openssl\":\"%s\",\"features\":\"%s\",\"backend\":\"%s\",\"ipsecmb_arch\":\"%s\","
	   "\"batch\":%d,\"reps\":%d,\"target_ms\":%.1f,\"clock_ns\":%.2f", cpu,
	   OpenSSL_version(OPENSSL_VERSION), espdp_crypto_features(), backend,
	   espdp_crypto_ipsecmb_arch(), BATCH, reps, target_ms, clk);
	/* memory first: later sections free memory that malloc would hand back to new SAs */
	if (!only || !strcmp(only, "rss")) {
		jf(",");
		bench_rss();
	}
	if (!only || !strcmp(only, "crypto")) {
		jf(",");
		bench_crypto();
	}
	if (!only || !strcmp(only, "classify")) {
		jf(",");
		bench_classify();
	}
	if (!only || !strcmp(only, "sad")) {
		jf(",");
		bench_sad();
	}
	if (!only || !strcmp(only, "tables")) {
		jf(",");
		bench_tables();
	}
	if (!only || !strcmp(only, "checksum")) {
		jf(",");
		bench_checksum();
	}
	note("batches timed: %llu, of which %llu (%.3f%%) took > 4x their repetition's median and were counted as the median\n",
	     (unsigned long long)batches_total, (unsigned long long)batches_trimmed,
	     batches_total ? 100.0 * batches_trimmed / batches_total : 0.0);
	jf(",\"batches\":%llu,\"trimmed\":%llu}", (unsigned long long)batches_total,
	   (unsigned long long)batches_trimmed);
	printf("%s\n", json);
	return 0;
}
