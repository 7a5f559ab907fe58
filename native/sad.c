/* sad: inbound SA lookup by SPI and destination (see sad.h). */
#include "sad.h"

#include <stdlib.h>
#include <string.h>

#include "sa.h"

static uint32_t spi_hash(uint32_t spi)
{
	uint64_t h = (uint64_t)spi * 0x9E3779B97F4A7C15ull;

	return (uint32_t)(h >> 32);
}

static int sa_is(const espdp_sa *sa, uint32_t spi, uint8_t family, const uint8_t *dst)
{
	return sa->cfg.spi == spi && sa->cfg.local.family == family &&
	       !memcmp(sa->cfg.local.bytes, dst, family == 4 ? 4 : 16);
}

espdp_sa *sad_lookup(const struct sad *sad, uint32_t spi, uint8_t family, const uint8_t *dst)
{
	espdp_sa *sa;

	if (!sad->slots)
		return NULL;
	for (uint32_t i = spi_hash(spi) & sad->mask;; i = (i + 1) & sad->mask) {
		sa = sad->slots[i];
		if (!sa || sa_is(sa, spi, family, dst))
			return sa; /* the array is never full, so an empty slot ends the probe */
	}
}

void sad_prefetch_slot(const struct sad *sad, uint32_t spi)
{
	if (sad->slots)
		__builtin_prefetch(&sad->slots[spi_hash(spi) & sad->mask]);
}

espdp_sa *sad_prefetch_sa(const struct sad *sad, uint32_t spi)
{
	espdp_sa *sa = sad->slots ? sad->slots[spi_hash(spi) & sad->mask] : NULL;

	/* cfg, hot state, and what usually follows: a 1024-packet window, the contexts */
	for (size_t line = 0; sa && line < sizeof(espdp_sa) + 192; line += 64)
		__builtin_prefetch((const char *)sa + line);
	return sa;
}

int sad_build(struct sad *sad, espdp_sa *const *sas, size_t n)
{
	size_t size = 16;

	sad->slots = NULL;
	sad->mask = 0;
	while (size < 2 * n)
		size <<= 1;
	if (size > UINT32_MAX)
		return ESPDP_ERR_NOMEM;
	sad->slots = calloc(size, sizeof(*sad->slots));
	if (!sad->slots)
		return ESPDP_ERR_NOMEM;
	sad->mask = (uint32_t)size - 1;
	for (size_t k = 0; k < n; k++) {
		const espdp_sa *sa = sas[k];
		uint32_t i = spi_hash(sa->cfg.spi) & sad->mask;

		if (sa->cfg.direction != ESPDP_DIR_IN)
			continue;
		for (; sad->slots[i]; i = (i + 1) & sad->mask) {
			if (sa_is(sad->slots[i], sa->cfg.spi, sa->cfg.local.family, sa->cfg.local.bytes)) {
				sad_free(sad);
				return ESPDP_ERR_EXISTS;
			}
		}
		sad->slots[i] = (espdp_sa *)sa;
	}
	return ESPDP_OK;
}

void sad_free(struct sad *sad)
{
	free(sad->slots);
	sad->slots = NULL;
}
