/* bench_workers: does the data plane scale with workers? Threads pinned to distinct CPUs
 * seal 1400-byte packets with esp-gcm 128 through espdp_encap_batch, each on its own
 * worker slot, for a fixed time: one thread; two threads on two SAs; two threads on one
 * SA (sharing its sequence counter and counters). Prints packets per second and the
 * ratio to one thread. No I/O: this is the data plane alone, as two cores can carry it.
 *
 *   build: see tests/bench/bench_dataplane.py (section "workers"); run: bench_workers [ms] [backend]
 *   (backend: 0 OpenSSL, 1 libipsec-mb, enum espdp_crypto_backend; the AEAD backend of both SAs)
 * Each packet is restored from a clean copy before every batch (encap seals in place):
 * that memcpy is in all three cases alike.
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "espdp.h"

#define BATCH 32
#define INNER 1400
#define HEAD 128
#define TAIL 64

struct job {
	espdp *dp;
	espdp_sa *sa;
	unsigned worker;
	int cpu;
	double seconds;
	unsigned long packets;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void inner_packet(uint8_t *p)
{
	memset(p, 0, INNER);
	p[0] = 0x45;
	p[2] = INNER >> 8;
	p[3] = INNER & 0xff;
	p[8] = 64;
	p[9] = 17;
	memcpy(p + 12, (uint8_t[]){ 10, 1, 0, 1, 10, 2, 0, 1 }, 8);
}

static void *run(void *arg)
{
	struct job *j = arg;
	struct espdp_pkt pkts[BATCH];
	static __thread uint8_t bufs[BATCH][HEAD + INNER + TAIL], clean[INNER];
	cpu_set_t set;
	double end;

	CPU_ZERO(&set);
	CPU_SET(j->cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
	inner_packet(clean);
	end = now() + j->seconds;
	while (now() < end) {
		for (int r = 0; r < 64; r++) {
			for (int i = 0; i < BATCH; i++) {
				pkts[i] = (struct espdp_pkt){ .buf = bufs[i], .cap = sizeof(bufs[i]),
							      .off = HEAD, .len = INNER, .sa = j->sa };
				memcpy(bufs[i] + HEAD, clean, INNER);
			}
			j->packets += espdp_encap_batch(j->dp, j->worker, pkts, BATCH);
		}
	}
	return NULL;
}

static double measure(espdp *dp, espdp_sa **sas, int threads, double seconds)
{
	pthread_t t[2];
	struct job jobs[2];
	unsigned long total = 0;

	for (int i = 0; i < threads; i++) {
		jobs[i] = (struct job){ dp, sas[i], (unsigned)i, i, seconds, 0 };
		pthread_create(&t[i], NULL, run, &jobs[i]);
	}
	for (int i = 0; i < threads; i++) {
		pthread_join(t[i], NULL);
		total += jobs[i].packets;
	}
	return total / seconds;
}

static espdp_sa *make_sa(espdp *dp, uint32_t spi)
{
	struct espdp_sa_config c = { .spi = spi, .direction = ESPDP_DIR_OUT, .esn = 1,
				     .cipher = ESPDP_CIPHER_AES_GCM, .cipher_key_bits = 128,
				     .local = { .family = 4, .bytes = { 192, 0, 2, 1 } },
				     .peer = { .family = 4, .bytes = { 192, 0, 2, 2 } } };
	uint8_t key[20];
	espdp_sa *sa;

	for (int i = 0; i < 20; i++)
		key[i] = (uint8_t)(i * 7 + spi);
	if (espdp_sa_create(dp, &c, key, sizeof(key), NULL, 0, &sa)) {
		fprintf(stderr, "cannot create SA\n");
		exit(1);
	}
	return sa;
}

int main(int argc, char **argv)
{
	double seconds = (argc > 1 ? atof(argv[1]) : 1000) / 1000;
	/* before the SAs: they keep the backend they are created with */
	int backend_ok = espdp_crypto_backend_set(argc > 2 ? (unsigned)atoi(argv[2]) : 0) == ESPDP_OK;
	espdp *dp = espdp_new(2);
	espdp_sa *a = make_sa(dp, 0x1000), *b = make_sa(dp, 0x1001);
	espdp_sa *own[2] = { a, b }, *shared[2] = { a, a };
	double one, two_own, two_shared;

	if (!dp || !backend_ok) {
		fprintf(stderr, "cannot create the data plane (or that crypto backend is not built in)\n");
		return 1;
	}
	measure(dp, own, 2, seconds / 4); /* warm up both workers' contexts */
	one = measure(dp, own, 1, seconds);
	two_own = measure(dp, own, 2, seconds);
	two_shared = measure(dp, shared, 2, seconds);
	printf("workers  SAs  Mpps (1400 B, esp-gcm 128)  vs 1 worker\n");
	printf("      1    1  %6.3f                        1.00x\n", one / 1e6);
	printf("      2    2  %6.3f                        %.2fx\n", two_own / 1e6, two_own / one);
	printf("      2    1  %6.3f                        %.2fx\n", two_shared / 1e6,
	       two_shared / one);
	printf("JSON {\"one\": %.0f, \"two_own_sas\": %.0f, \"two_one_sa\": %.0f}\n", one, two_own,
	       two_shared);
	espdp_sa_release(a);
	espdp_sa_release(b);
	espdp_free(dp);
	return 0;
}
