/* sad: the inbound SA table, looked up by SPI and outer destination address.
 *
 * Open addressing over a power-of-two array at most half used (live entries plus
 * tombstones), so a probe always meets an empty slot. Cost does not grow with the number
 * of SAs: one multiply-shift hash and, on average, under two probes.
 *
 * Readers (any thread, inside an epoch read section) and one writer at a time (the
 * table's owner under dp->publish_lock, see table.c), RCU style, no lock on the read side:
 *   - insert fills an empty slot or a tombstone with one atomic store; the SA was fully
 *     built before, so a reader sees either nothing or the whole SA;
 *   - remove overwrites the slot with SAD_TOMB (never with NULL, which would cut the
 *     probe of keys stored past it); the caller retires the SA's reference through the
 *     epoch protocol (dp.h), so a reader that loaded the pointer just before still holds
 *     a live SA;
 *   - when used + tombstones would pass half the slots, the writer builds a new array
 *     (twice the size if the live entries need it, else the same size without the
 *     tombstones) and swaps the array pointer: readers see the old array or the new one,
 *     each whole. The old array is retired like an SA. Rebuilds are O(n), but at least a
 *     quarter of the array's slots of inserts or removals apart: O(1) amortised.
 * Every entry holds a reference to its SA.
 */
#ifndef ESPD_SAD_H
#define ESPD_SAD_H

#include <stddef.h>
#include <stdint.h>

#include "espdp.h"

#define SAD_TOMB ((espdp_sa *)1) /* a removed entry: probes go on past it */

struct sad_array {
	uint32_t mask;
	uint32_t used; /* live entries (writer only) */
	uint32_t dead; /* tombstones (writer only) */
	espdp_sa *slots[]; /* NULL, SAD_TOMB or a referenced SA; atomic */
};

struct sad {
	struct sad_array *arr; /* atomic; NULL = empty */
};

/* Index the inbound SAs of sas[0..n) (others are skipped), one reference each. 0,
 * ESPDP_ERR_EXISTS on a duplicate (SPI, destination), or ESPDP_ERR_NOMEM. */
int sad_build(struct sad *sad, espdp_sa *const *sas, size_t n);
/* Release every entry and the array; no reader may remain. */
void sad_free(struct sad *sad);
espdp_sa *sad_lookup(const struct sad *sad, uint32_t spi, uint8_t family, const uint8_t *dst);

/* --- the writer's side (one at a time) --- */
/* Whether sa's (SPI, destination) is taken; 1 or 0. */
int sad_has(const struct sad *sad, const espdp_sa *sa);
/* The array to swap in before one more insert, or NULL when the current one has room
 * (*err = 0) or memory ran out (*err = ESPDP_ERR_NOMEM). The caller publishes it with
 * sad_swap and retires the array sad_swap returns. */
struct sad_array *sad_grow(const struct sad *sad, int *err);
struct sad_array *sad_swap(struct sad *sad, struct sad_array *next);
/* Insert sa (inbound, not present, room ensured by sad_grow); takes a reference. */
void sad_insert(struct sad *sad, espdp_sa *sa);
/* Replace sa's entry with a tombstone; 1 if it was there (its reference now belongs to
 * the caller, to retire), else 0. */
int sad_remove(struct sad *sad, const espdp_sa *sa);

/* Batch helpers that overlap cache misses across packets: first start loading the SPI's
 * home slot, later (once it has arrived) the SA it points at. Hints only. */
void sad_prefetch_slot(const struct sad *sad, uint32_t spi);
/* Returns the SA in the SPI's home slot (NULL if none): a guess, not a lookup. */
espdp_sa *sad_prefetch_sa(const struct sad *sad, uint32_t spi);

#endif
