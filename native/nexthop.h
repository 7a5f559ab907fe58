/* nexthop: the AF_PACKET send path's table ([daemon] send_path = "packet").
 *
 * The control plane (daemon/espd/system/nexthops.py) resolves each peer's route and
 * neighbour in the kernel's tables and pushes the answers it is certain of: outer
 * destination -> device, the next hop's link-layer address, the largest packet the
 * route carries unfragmented. A sealed packet whose destination is in the table and
 * that fits goes out on the AF_PACKET socket (the kernel adds the link-layer header);
 * everything else goes on the raw IP socket as before. An empty table means the raw
 * path for all.
 *
 * One writer at a time (lock); workers copy a snapshot per batch under a sequence
 * counter (odd while written) and use the raw path for the batch if it moved.
 */
#ifndef ESPD_NEXTHOP_H
#define ESPD_NEXTHOP_H

#include <pthread.h>
#include <stdint.h>

#include "espdp.h"

#define NEXTHOP_MAX ESPDP_NEXTHOP_MAX
#define NEXTHOP_WORDS 4 /* 32 bytes an entry, copied as 64-bit atomics */

struct nexthop {
	uint8_t family; /* 4 or 6 */
	uint8_t mac[6];
	uint8_t pad;
	uint16_t mtu; /* longer outer packets take the raw path (fragmentation, errors) */
	uint16_t pad2;
	int32_t ifindex;
	uint8_t addr[16]; /* the outer destination; IPv4 in the first 4 bytes, rest 0 */
};

struct nexthops {
	uint32_t seq; /* odd while the writer changes the table */
	uint32_t n;
	uint64_t words[NEXTHOP_MAX * NEXTHOP_WORDS];
	pthread_mutex_t lock; /* writers */
};

/* A worker's copy for one batch. */
struct nexthop_snap {
	unsigned n;
	struct nexthop e[NEXTHOP_MAX];
};

void nexthops_init(struct nexthops *t);
void nexthops_destroy(struct nexthops *t);
/* Replace the whole table. ESPDP_OK or ESPDP_ERR_INVALID (too many, bad family). */
int nexthops_set(struct nexthops *t, const struct espdp_nexthop *v, size_t n);
/* Copy a consistent snapshot into s; 0, or -1 when the writer was busy (s->n = 0). */
int nexthops_snapshot(const struct nexthops *t, struct nexthop_snap *s);
/* The entry for an outer packet's destination (family 4 or 6), or NULL. */
const struct nexthop *nexthop_find(const struct nexthop_snap *s, int family, const uint8_t *dst);

#endif
