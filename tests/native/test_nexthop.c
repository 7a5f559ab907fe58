// sources: native/nexthop.c
// libs: -lpthread
// tsan: yes
/* test_nexthop: the AF_PACKET send path's next-hop table (native/nexthop.c): entries are
 * found by family and address only, bad entries are refused whole, and a reader racing a
 * writer never sees a torn table: every snapshot is one the writer wrote (all entries of
 * generation g carry g in their MTU and MAC), or the reader is told to use the raw path.
 *
 * Prints "N passed, M failed" last; exits non-zero on any failure.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "nexthop.h"
#include "check.h"

static struct nexthops table;
static int stop;

static struct espdp_nexthop v4(uint8_t last, uint16_t mtu)
{
	struct espdp_nexthop e = { .family = 4, .addr = { 192, 0, 2, last }, .ifindex = 3,
				   .mac = { 2, 0, 0, 0, 0, last }, .mtu = mtu };
	return e;
}

static void *writer(void *arg)
{
	struct espdp_nexthop e[NEXTHOP_MAX];

	(void)arg;
	for (unsigned g = 0; g < 20000; g++) {
		unsigned n = 1 + g % NEXTHOP_MAX;

		for (unsigned i = 0; i < n; i++) {
			e[i] = v4((uint8_t)i, (uint16_t)(1000 + g % 20000));
			e[i].mac[1] = (uint8_t)g;
		}
		if (nexthops_set(&table, e, n) != ESPDP_OK)
			break;
	}
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	return NULL;
}

int main(void)
{
	struct espdp_nexthop e[NEXTHOP_MAX + 1];
	static struct nexthop_snap s;
	uint8_t a1[4] = { 192, 0, 2, 1 }, a9[4] = { 192, 0, 2, 9 }, a6[16] = { 0xfd, 0 };
	unsigned long snaps = 0, busy = 0, torn = 0;
	pthread_t t;

	nexthops_init(&table);
	CHECK(nexthops_snapshot(&table, &s) == 0 && s.n == 0, "empty at start");
	e[0] = v4(1, 1500);
	e[1] = (struct espdp_nexthop){ .family = 6, .addr = { 0xfd }, .ifindex = 3, .mtu = 1400 };
	CHECK(nexthops_set(&table, e, 2) == ESPDP_OK, "set");
	CHECK(nexthops_snapshot(&table, &s) == 0 && s.n == 2, "two entries");
	CHECK(nexthop_find(&s, 4, a1) && nexthop_find(&s, 4, a1)->mtu == 1500, "v4 found");
	CHECK(!nexthop_find(&s, 4, a9), "another v4 address is not");
	CHECK(nexthop_find(&s, 6, a6) && nexthop_find(&s, 6, a6)->mtu == 1400, "v6 found");
	CHECK(!nexthop_find(&s, 4, a6), "the v6 entry is not a v4 one (family counts)");

	/* refused whole: the old table stays */
	for (unsigned i = 0; i <= NEXTHOP_MAX; i++)
		e[i] = v4((uint8_t)i, 1500);
	CHECK(nexthops_set(&table, e, NEXTHOP_MAX + 1) == ESPDP_ERR_INVALID, "too many");
	e[0].family = 5;
	CHECK(nexthops_set(&table, e, 1) == ESPDP_ERR_INVALID, "bad family");
	e[0] = v4(1, 40);
	CHECK(nexthops_set(&table, e, 1) == ESPDP_ERR_INVALID, "MTU below 68");
	e[0] = v4(1, 1500);
	e[0].ifindex = 0;
	CHECK(nexthops_set(&table, e, 1) == ESPDP_ERR_INVALID, "no device");
	CHECK(nexthops_snapshot(&table, &s) == 0 && s.n == 2, "the old table stays");
	CHECK(nexthops_set(&table, NULL, 0) == ESPDP_OK && nexthops_snapshot(&table, &s) == 0 &&
		      s.n == 0, "emptied: the raw path for all");

	/* a reader racing the writer: each snapshot is one whole generation */
	if (pthread_create(&t, NULL, writer, NULL) == 0) {
		while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
			if (nexthops_snapshot(&table, &s)) {
				busy++;
				continue;
			}
			snaps++;
			for (unsigned i = 1; i < s.n; i++)
				torn += s.e[i].mtu != s.e[0].mtu || s.e[i].mac[1] != s.e[0].mac[1] ||
					s.e[i].addr[3] != i;
		}
		pthread_join(t, NULL);
		CHECK(torn == 0, "%lu torn entries in %lu snapshots", torn, snaps);
		CHECK(snaps > 0, "no consistent snapshot (%lu busy)", busy);
		CHECK(nexthops_snapshot(&table, &s) == 0 && s.n == 1 + 19999 % NEXTHOP_MAX,
		      "the last generation");
	} else {
		CHECK(0, "pthread_create");
	}
	nexthops_destroy(&table);
	printf("%lu passed, %lu failed\n", passed, failed);
	return failed != 0;
}
