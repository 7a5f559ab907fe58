// sources: native/crypto.c native/crypto_ipsecmb.c native/droplog.c native/esp_in.c native/esp_out.c native/espdp.c native/events.c native/io.c native/nexthop.c native/ip.c native/offload.c native/punt.c native/replay.c native/sa.c native/sad.c native/sock.c native/spd.c native/table.c native/worker.c native/ring.c
// libs: -lcrypto -lpthread
// tsan: yes
/* test_remote: an SA's remote (address + UDP port), the one part of its config that
 * changes after creation (espdp_sa_set_remote), and the peer_moved event path (sa.c).
 *
 *   moved    sa_check_moved: nothing for the SA's own remote; one event per SA and
 *            ESPD_PEER_MOVED_INTERVAL_NS with the new source; none once set_remote made
 *            the new source the remote; never for an SA created without follow_peer
 *   seqlock  readers on 4 threads never see the address of one remote with the port of
 *            the other while the writer flips between the two
 *
 * Prints "N passed, M failed" last; exits non-zero on any failure.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "dp.h"
#include "proto.h"
#include "sa.h"
#include "check.h"

#define READERS 4
#define FLIPS 200000

/* An inbound ESP-in-UDP SA's config (IPv6, AES-GCM-256) with follow_peer as given. */
static struct espdp_sa_config config(int follow)
{
	struct espdp_sa_config cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.spi = 0x7001;
	cfg.direction = ESPDP_DIR_IN;
	cfg.encap = ESPDP_ENCAP_UDP;
	cfg.cipher = ESPDP_CIPHER_AES_GCM;
	cfg.cipher_key_bits = 256;
	cfg.integ = ESPDP_INTEG_NONE;
	cfg.sport = cfg.dport = 4500;
	cfg.replay_window = 64;
	cfg.follow_peer = (uint8_t)follow;
	cfg.cookie = 77;
	cfg.local.family = cfg.peer.family = 6;
	memset(cfg.local.bytes, 0x11, 16);
	memset(cfg.peer.bytes, 0x22, 16);
	return cfg;
}

static const uint8_t key[36] = { 1 };

static espdp_sa *make_sa(espdp *dp, int follow)
{
	struct espdp_sa_config cfg = config(follow);
	espdp_sa *sa = NULL;

	CHECK(espdp_sa_create(dp, &cfg, key, sizeof(key), NULL, 0, &sa) == ESPDP_OK, "create");
	return sa;
}

/* follow_peer is for inbound SAs only */
static int create_refused(espdp *dp)
{
	struct espdp_sa_config cfg = config(1);
	espdp_sa *sa = NULL;

	cfg.direction = ESPDP_DIR_OUT;
	return espdp_sa_create(dp, &cfg, key, sizeof(key), NULL, 0, &sa) == ESPDP_ERR_INVALID && !sa;
}

static size_t moved_events(espdp *dp, struct espdp_event *last)
{
	struct espdp_event ev[8];
	size_t n = espdp_events_read(dp, ev, 8), k = 0;

	for (size_t i = 0; i < n; i++)
		if (ev[i].kind == ESPD_EVENT_peer_moved) {
			*last = ev[i];
			k++;
		}
	return k;
}

static void test_moved(void)
{
	espdp *dp = espdp_new(1);
	espdp_sa *sa = make_sa(dp, 1), *quiet = make_sa(dp, 0);
	uint8_t home[16], away[16];
	struct espdp_addr to;
	struct espdp_event e;
	int64_t t = 5 * ESPD_PEER_MOVED_INTERVAL_NS;

	memset(home, 0x22, 16);
	memset(away, 0x33, 16);
	sa_check_moved(sa, home, 4500, t);
	CHECK(moved_events(dp, &e) == 0, "its own remote is no move");
	sa_check_moved(sa, home, 31000, t);
	sa_check_moved(sa, away, 31001, t + 1);
	CHECK(moved_events(dp, &e) == 1, "one event within the interval");
	CHECK(e.spi == 0x7001 && e.cookie == 77 && e.family == 6 && e.sport == 31000 &&
	      !memcmp(e.src, home, 16) && e.direction == ESPDP_DIR_IN, "event names SA and source");
	sa_check_moved(sa, away, 31001, t + ESPD_PEER_MOVED_INTERVAL_NS);
	CHECK(moved_events(dp, &e) == 1 && e.sport == 31001 && !memcmp(e.src, away, 16),
	      "the next interval reports again");
	to.family = 6;
	memcpy(to.bytes, away, 16);
	CHECK(espdp_sa_set_remote(sa, &to, 31001) == ESPDP_OK, "set");
	sa_check_moved(sa, away, 31001, t + 9 * ESPD_PEER_MOVED_INTERVAL_NS);
	CHECK(moved_events(dp, &e) == 0, "followed: no move any more");
	to.family = 4;
	CHECK(espdp_sa_set_remote(sa, &to, 31001) == ESPDP_ERR_INVALID, "family is fixed");
	CHECK(create_refused(dp), "follow_peer on an outbound SA refused");
	espdp_sa_release(sa);
	espdp_sa_release(quiet);
	espdp_free(dp);
}

struct reader {
	espdp_sa *sa;
	volatile int *stop;
	unsigned long reads, torn;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	struct sa_remote rem;

	while (!__atomic_load_n(r->stop, __ATOMIC_RELAXED)) {
		sa_remote_get(r->sa, &rem);
		/* remote A is 0xAA.. port 1000, B is 0xBB.. port 2000: never a mix */
		int a = rem.addr[0] == 0xAA && rem.addr[15] == 0xAA && rem.port == 1000;
		int b = rem.addr[0] == 0xBB && rem.addr[15] == 0xBB && rem.port == 2000;
		int home = rem.addr[0] == 0x22 && rem.addr[15] == 0x22 && rem.port == 4500;

		r->torn += !(a || b || home);
		r->reads++;
	}
	return NULL;
}

static void test_seqlock(void)
{
	espdp *dp = espdp_new(1);
	espdp_sa *sa = make_sa(dp, 1);
	struct reader rd[READERS];
	pthread_t th[READERS];
	struct espdp_addr a, b;
	volatile int stop = 0;
	unsigned long torn = 0, reads = 0;

	a.family = b.family = 6;
	memset(a.bytes, 0xAA, 16);
	memset(b.bytes, 0xBB, 16);
	for (int i = 0; i < READERS; i++) {
		rd[i] = (struct reader){ sa, &stop, 0, 0 };
		pthread_create(&th[i], NULL, reader_main, &rd[i]);
	}
	for (int i = 0; i < FLIPS; i++)
		espdp_sa_set_remote(sa, i & 1 ? &b : &a, i & 1 ? 2000 : 1000);
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < READERS; i++) {
		pthread_join(th[i], NULL);
		torn += rd[i].torn;
		reads += rd[i].reads;
	}
	CHECK(torn == 0, "%lu of %lu reads saw half of each remote", torn, reads);
	espdp_sa_release(sa);
	espdp_free(dp);
}

int main(void)
{
	test_moved();
	test_seqlock();
	printf("%lu passed, %lu failed\n", passed, failed);
	return failed != 0;
}
