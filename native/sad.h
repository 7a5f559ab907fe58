/* sad: the inbound SA table, looked up by SPI and outer destination address.
 *
 * Open addressing over a power-of-two array at most half full, built once per table set
 * and read-only afterwards (lookups from any thread). Cost does not grow with the number
 * of SAs: one multiply-shift hash and, on average, under two probes.
 */
#ifndef ESPD_SAD_H
#define ESPD_SAD_H

#include <stddef.h>
#include <stdint.h>

#include "espdp.h"

struct sad {
	espdp_sa **slots;
	uint32_t mask;
};

/* Index the inbound SAs of sas[0..n). 0, ESPDP_ERR_EXISTS on a duplicate (SPI,
 * destination), or ESPDP_ERR_NOMEM. */
int sad_build(struct sad *sad, espdp_sa *const *sas, size_t n);
void sad_free(struct sad *sad);
espdp_sa *sad_lookup(const struct sad *sad, uint32_t spi, uint8_t family, const uint8_t *dst);
/* Batch helpers that overlap cache misses across packets: first start loading the SPI's
 * home slot, later (once it has arrived) the SA it points at. Hints only. */
void sad_prefetch_slot(const struct sad *sad, uint32_t spi);
/* Returns the SA in the SPI's home slot (NULL if empty): a guess, not a lookup. */
espdp_sa *sad_prefetch_sa(const struct sad *sad, uint32_t spi);

#endif
