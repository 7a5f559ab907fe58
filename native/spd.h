/* spd: the security policy database, compiled for classification.
 *
 * Rules are access-list entries as value/mask pairs (struct espdp_rule), numbered in
 * match order; classification returns the lowest-numbered matching rule. It does not
 * scan the rules linearly: rules are grouped by their mask tuple (tuple space search),
 * each group is a hash table from masked key to its lowest rule number, and groups are
 * visited in order of their best rule so the search stops as soon as no later group can
 * beat the match found. Arbitrary (also non-contiguous) masks are exact.
 *
 * A compiled spd is immutable: classification from any number of threads is safe.
 */
#ifndef ESPD_SPD_H
#define ESPD_SPD_H

#include <stddef.h>
#include <stdint.h>

#include "espdp.h"

/* The selector of one packet: what the rules look at. Ports are 0 when the protocol has
 * none or the packet is a non-first fragment. Addresses of IPv4 in bytes [0..3], rest 0. */
struct spd_key {
	uint8_t family; /* 4 or 6 */
	uint8_t proto;
	uint16_t sport;
	uint16_t dport;
	uint8_t src[16];
	uint8_t dst[16];
};

struct spd;

struct spd *spd_new(void);
void spd_free(struct spd *spd);
/* Add rule number `index`; indexes must be added in increasing order. 0 or -errno. */
int spd_add(struct spd *spd, const struct espdp_rule *rule, uint32_t index);
/* Build the lookup structures; no spd_add after this. 0 or -errno. */
int spd_compile(struct spd *spd);
/* Lowest matching rule number, or -1. */
long spd_classify(const struct spd *spd, const struct spd_key *key);
/* Extract the selector of an IP packet (v4 or v6, extension headers walked). With
 * `reverse`, source and destination (addresses and ports) are swapped, which turns an
 * inbound inner packet into the outbound selector that its SA's access list permits.
 * Returns 0, or -1 when the packet is malformed. */
int spd_key_from_packet(const uint8_t *pkt, size_t len, int reverse, struct spd_key *key);

#endif
