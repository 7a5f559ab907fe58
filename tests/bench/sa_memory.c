// sources: native/crypto.c native/crypto_ipsecmb.c native/droplog.c native/esp_in.c native/esp_out.c native/espdp.c native/events.c native/io.c native/nexthop.c native/ip.c native/offload.c native/punt.c native/replay.c native/sa.c native/sad.c native/sock.c native/spd.c native/table.c native/worker.c native/ring.c
// libs: -lcrypto -lpthread
/* sa_memory: where the data plane's bytes per SA pair go (issue 13's 8 KiB per tunnel).
 *
 * Creates N pairs (an outbound and an inbound SA, the inbound one installed in the SAD)
 * per transform and reports, per pair: malloc'd bytes in total (mallinfo2), the part
 * OpenSSL allocated (counted through CRYPTO_set_mem_functions, malloc_usable_size),
 * OpenSSL allocations per pair, and RSS. "idle" is right after creation; "1 worker"
 * after each SA's context was taken by the last worker (as its first packet there does:
 * an inbound SA's packets come to one worker), "all" after every worker took one (an
 * outbound SA whose traffic reaches every worker's TUN queue).
 *
 *   cc -O2 -D_GNU_SOURCE -Inative $(sed -n 's,^// sources: ,,p' tests/bench/sa_memory.c) \
 *      tests/bench/sa_memory.c -lcrypto -lpthread -o /tmp/sa_memory && /tmp/sa_memory [N] [workers] [transform] [backend]
 * (add -DESPD_HAVE_IPSECMB ... -lIPSec_MB for backend 1, the AEADs on libipsec-mb)
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "dp.h"
#include "sa.h"

static size_t ossl_bytes, ossl_allocs;

static void *m(size_t n, const char *f, int l)
{
	void *p = malloc(n);

	(void)f, (void)l;
	if (p) {
		ossl_bytes += malloc_usable_size(p);
		ossl_allocs++;
	}
	return p;
}

static void *r(void *p, size_t n, const char *f, int l)
{
	size_t old = p ? malloc_usable_size(p) : 0;
	void *q = realloc(p, n);

	(void)f, (void)l;
	if (q) {
		ossl_bytes += malloc_usable_size(q) - old;
		if (!p)
			ossl_allocs++;
	}
	return q;
}

static void fr(void *p, const char *f, int l)
{
	(void)f, (void)l;
	if (p) {
		ossl_bytes -= malloc_usable_size(p);
		ossl_allocs--;
	}
	free(p);
}

static long rss_kb(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long pages = 0, res = 0;

	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &res) != 2)
			res = 0;
		fclose(f);
	}
	return res * 4;
}

struct snap {
	size_t heap, ossl, allocs;
	long rss;
};

static struct snap snap(void)
{
	struct mallinfo2 mi = mallinfo2();
	struct snap s = { mi.uordblks + mi.hblkhd, ossl_bytes, ossl_allocs, rss_kb() };

	return s;
}

static void show(const char *name, const char *stage, struct snap a, struct snap b, size_t n)
{
	printf("%-22s %-9s heap %6.0f  openssl %6.0f (%4.1f allocs)  espd %5.0f  rss %6.0f\n",
	       name, stage, (double)(b.heap - a.heap) / n, (double)(b.ossl - a.ossl) / n,
	       (double)(b.allocs - a.allocs) / n,
	       (double)((b.heap - a.heap) - (b.ossl - a.ossl)) / n,
	       (double)(b.rss - a.rss) * 1024 / n);
}

static void run(const char *name, unsigned cipher, unsigned bits, unsigned integ, size_t n,
		unsigned workers)
{
	espdp *dp = espdp_new(workers);
	espdp_sa **sas = calloc(2 * n, sizeof(*sas));
	struct espdp_sa_config cfg;
	struct crypto_alg alg;
	uint8_t key[64], akey[64];
	struct snap s0, s1, s2, s3;

	crypto_alg_init(&alg, cipher, bits, integ);
	memset(&cfg, 0, sizeof(cfg));
	cfg.cipher = (uint8_t)cipher;
	cfg.cipher_key_bits = (uint16_t)bits;
	cfg.integ = (uint8_t)integ;
	cfg.local.family = cfg.peer.family = 4;
	cfg.local.bytes[0] = 10, cfg.peer.bytes[0] = 10, cfg.peer.bytes[3] = 2;
	cfg.replay_window = 1024;
	if (espdp_publish(dp, espdp_table_new(dp)) != ESPDP_OK)
		abort();
	s0 = snap();
	for (size_t i = 0; i < n; i++) {
		for (int d = 0; d < 2; d++) {
			for (size_t k = 0; k < sizeof(key); k++)
				key[k] = (uint8_t)(i * 7 + k + d), akey[k] = (uint8_t)(i + k);
			cfg.spi = (uint32_t)(0x1000 + 2 * i + d);
			cfg.direction = d ? ESPDP_DIR_IN : ESPDP_DIR_OUT;
			if (espdp_sa_create(dp, &cfg, key, alg.key_len, akey, alg.auth_key_len,
					    &sas[2 * i + d]) != ESPDP_OK)
				abort();
		}
		if (espdp_sa_install(dp, sas[2 * i + 1], NULL) != ESPDP_OK)
			abort();
	}
	espdp_reclaim(dp);
	s1 = snap();
	for (size_t i = 0; i < 2 * n; i++) /* the last worker: an SA's socket need not be 0's */
		if (!sa_ctx(sas[i], workers - 1))
			abort();
	s2 = snap();
	for (size_t i = 0; i < 2 * n; i++)
		for (unsigned w = 0; w < workers; w++)
			if (!sa_ctx(sas[i], w))
				abort();
	s3 = snap();
	show(name, "idle", s0, s1, n);
	show(name, "1 worker", s0, s2, n);
	show(name, "all", s0, s3, n);
	for (size_t i = 0; i < 2 * n; i++)
		espdp_sa_release(sas[i]);
	free(sas);
	espdp_free(dp);
}

int main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 0) : 10000;
	unsigned workers = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 0) : 2;
	int only = argc > 3 ? atoi(argv[3]) : -1;
	unsigned backend = argc > 4 ? (unsigned)atoi(argv[4]) : ESPDP_CRYPTO_OPENSSL;

	if (!CRYPTO_set_mem_functions(m, r, fr))
		return 1;
	if (espdp_crypto_backend_set(backend) != ESPDP_OK) {
		fprintf(stderr, "crypto backend %u not available in this build\n", backend);
		return 1;
	}
	printf("%zu SA pairs (inbound in the SAD), %u workers, bytes per pair; sizeof(espdp_sa) %zu\n",
	       n, workers, sizeof(espdp_sa));
	/* argv[3]: one transform only (0, 1, 2), for an RSS not blurred by an earlier run */
	if (only < 0 || only == 0)
		run("aes-gcm-256", ESPDP_CIPHER_AES_GCM, 256, ESPDP_INTEG_NONE, n, workers);
	if (only < 0 || only == 1)
		run("chacha20-poly1305", ESPDP_CIPHER_CHACHA20_POLY1305, 256, ESPDP_INTEG_NONE, n, workers);
	if (only < 0 || only == 2)
		run("aes-cbc-256+sha256", ESPDP_CIPHER_AES_CBC, 256, ESPDP_INTEG_HMAC_SHA256_128, n, workers);
	return 0;
}
