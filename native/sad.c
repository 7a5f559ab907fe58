/* sad: inbound SA lookup by SPI and destination (see sad.h for the concurrency rules). */
#include "sad.h"

#include <stdlib.h>
#include <string.h>

#include "sa.h"

#define SAD_MIN 16

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

static struct sad_array *arr_load(const struct sad *sad)
{
	return __atomic_load_n(&sad->arr, __ATOMIC_SEQ_CST);
}

static espdp_sa *slot_load(const struct sad_array *a, uint32_t i)
{
	return __atomic_load_n(&a->slots[i], __ATOMIC_SEQ_CST);
}

espdp_sa *sad_lookup(const struct sad *sad, uint32_t spi, uint8_t family, const uint8_t *dst)
{
	const struct sad_array *a = arr_load(sad);
	espdp_sa *sa;

	if (!a)
		return NULL;
	for (uint32_t i = spi_hash(spi) & a->mask;; i = (i + 1) & a->mask) {
		sa = slot_load(a, i);
		if (!sa)
			return NULL; /* at most half the slots are taken: a probe ends here */
		if (sa != SAD_TOMB && sa_is(sa, spi, family, dst))
			return sa;
	}
}

void sad_prefetch_slot(const struct sad *sad, uint32_t spi)
{
	const struct sad_array *a = arr_load(sad);

	if (a)
		__builtin_prefetch(&a->slots[spi_hash(spi) & a->mask]);
}

espdp_sa *sad_prefetch_sa(const struct sad *sad, uint32_t spi)
{
	const struct sad_array *a = arr_load(sad);
	espdp_sa *sa = a ? slot_load(a, spi_hash(spi) & a->mask) : NULL;

	if (sa == SAD_TOMB)
		return NULL;
	/* cfg, hot state, and what usually follows: a 1024-packet window, the contexts */
	for (size_t line = 0; sa && line < sizeof(espdp_sa) + 192; line += 64)
		__builtin_prefetch((const char *)sa + line);
	return sa;
}

static struct sad_array *arr_new(size_t size)
{
	struct sad_array *a;

	if (size > UINT32_MAX)
		return NULL;
	a = calloc(1, sizeof(*a) + size * sizeof(a->slots[0]));
	if (a)
		a->mask = (uint32_t)size - 1;
	return a;
}

/* Put sa into a's first free slot of its probe (a tombstone or an empty slot). */
static void arr_place(struct sad_array *a, espdp_sa *sa)
{
	uint32_t i = spi_hash(sa->cfg.spi) & a->mask;

	while (a->slots[i] && a->slots[i] != SAD_TOMB) /* the writer reads its own stores */
		i = (i + 1) & a->mask;
	if (a->slots[i] == SAD_TOMB)
		a->dead--;
	a->used++;
	__atomic_store_n(&a->slots[i], sa, __ATOMIC_SEQ_CST);
}

int sad_has(const struct sad *sad, const espdp_sa *sa)
{
	return sad_lookup(sad, sa->cfg.spi, sa->cfg.local.family, sa->cfg.local.bytes) != NULL;
}

int sad_build(struct sad *sad, espdp_sa *const *sas, size_t n)
{
	size_t size = SAD_MIN;

	sad->arr = NULL;
	while (size < 2 * n)
		size <<= 1;
	sad->arr = arr_new(size);
	if (!sad->arr)
		return ESPDP_ERR_NOMEM;
	for (size_t k = 0; k < n; k++) {
		if (sas[k]->cfg.direction != ESPDP_DIR_IN)
			continue;
		if (sad_has(sad, sas[k])) {
			sad_free(sad);
			return ESPDP_ERR_EXISTS;
		}
		espdp_sa_ref(sas[k]);
		arr_place(sad->arr, sas[k]);
	}
	return ESPDP_OK;
}

void sad_free(struct sad *sad)
{
	struct sad_array *a = sad->arr;

	if (!a)
		return;
	for (uint32_t i = 0; i <= a->mask; i++)
		if (a->slots[i] && a->slots[i] != SAD_TOMB)
			espdp_sa_release(a->slots[i]);
	free(a);
	sad->arr = NULL;
}

struct sad_array *sad_grow(const struct sad *sad, int *err)
{
	const struct sad_array *a = sad->arr;
	size_t size = SAD_MIN, used = a ? a->used : 0;
	struct sad_array *next;

	*err = 0;
	if (a && 2 * ((size_t)a->used + a->dead + 1) <= (size_t)a->mask + 1)
		return NULL; /* room: the probe invariant holds after one more insert */
	while (size < 4 * (used + 1)) /* at most a quarter full after the rebuild */
		size <<= 1;
	next = arr_new(size);
	if (!next) {
		*err = ESPDP_ERR_NOMEM;
		return NULL;
	}
	for (uint32_t i = 0; a && i <= a->mask; i++) /* entries move with their references */
		if (a->slots[i] && a->slots[i] != SAD_TOMB)
			arr_place(next, a->slots[i]);
	return next;
}

struct sad_array *sad_swap(struct sad *sad, struct sad_array *next)
{
	return __atomic_exchange_n(&sad->arr, next, __ATOMIC_SEQ_CST);
}

void sad_insert(struct sad *sad, espdp_sa *sa)
{
	espdp_sa_ref(sa);
	arr_place(sad->arr, sa);
}

int sad_remove(struct sad *sad, const espdp_sa *sa)
{
	struct sad_array *a = sad->arr;

	if (!a)
		return 0;
	for (uint32_t i = spi_hash(sa->cfg.spi) & a->mask; a->slots[i]; i = (i + 1) & a->mask) {
		if (a->slots[i] == sa) {
			__atomic_store_n(&a->slots[i], SAD_TOMB, __ATOMIC_SEQ_CST);
			a->used--;
			a->dead++;
			return 1;
		}
	}
	return 0;
}
