/* replay: anti-replay window with ESN inference (see replay.h). */
#include "replay.h"

#include <stdlib.h>
#include <string.h>

#include "drops.h"
#include "espdp.h"
#include "proto.h"

static uint32_t nblocks_for(uint32_t window)
{
	return window ? (window + 63) / 64 + 1 : 0;
}

size_t replay_size(uint32_t window)
{
	return sizeof(struct replay) + nblocks_for(window) * sizeof(uint64_t);
}

void replay_init(struct replay *r, uint32_t window, int esn)
{
	memset(r, 0, replay_size(window));
	r->window = window;
	r->nblocks = nblocks_for(window);
	r->esn = !!esn;
}

/* RFC 4303 A2.1: place seql in the 2^32 subspace nearest the window. The window bottom
 * is top - W + 1; with no window, W is half the subspace (nearest to top wins).
 * Returns 0 when seql would lie below sequence number 1 or above 2^64 - 1. */
static int infer_esn(const struct replay *r, uint32_t seql, uint64_t *seq)
{
	uint64_t w = r->window ? r->window : 1ull << 31;
	uint32_t tl = (uint32_t)r->top, th = (uint32_t)(r->top >> 32);
	uint32_t bottom = tl - (uint32_t)(w - 1);
	uint64_t seqh;

	if (tl >= w - 1) /* case A: the window lies within one subspace */
		seqh = seql >= bottom ? th : (uint64_t)th + 1;
	else /* case B: the window spans the previous subspace */
		seqh = seql >= bottom ? (uint64_t)th - 1 : th;
	if (seqh > UINT32_MAX) /* below subspace 0, or past the last */
		return 0;
	*seq = seqh << 32 | seql;
	return 1;
}

int replay_check(const struct replay *r, uint32_t seql, uint64_t *seq)
{
	uint64_t s = seql;

	if (r->esn && !infer_esn(r, seql, &s))
		return ESPD_DROP_replay_old;
	*seq = s;
	if (s == 0) /* sequence numbers start at 1 */
		return ESPD_DROP_replay_old;
	if (!r->window || s > r->top)
		return 0;
	if (r->top - s >= r->window)
		return ESPD_DROP_replay_old;
	if (r->bits[(s >> 6) % r->nblocks] & 1ull << (s & 63))
		return ESPD_DROP_replay_dup;
	return 0;
}

int replay_advance(struct replay *r, uint64_t seq)
{
	uint64_t *block, bit = 1ull << (seq & 63);

	if (!r->window) {
		if (seq > r->top)
			r->top = seq;
		return 0;
	}
	if (seq > r->top) {
		uint64_t from = r->top >> 6, to = seq >> 6;
		uint64_t clear = to - from > r->nblocks ? r->nblocks : to - from;

		for (uint64_t i = 1; i <= clear; i++)
			r->bits[(from + i) % r->nblocks] = 0;
		r->top = seq;
	} else if (r->top - seq >= r->window) {
		return ESPD_DROP_replay_old;
	}
	block = &r->bits[(seq >> 6) % r->nblocks];
	if (*block & bit)
		return ESPD_DROP_replay_dup;
	*block |= bit;
	return 0;
}

/* --- standalone windows for property tests (espdp.h): an espdp_replay is a replay --- */

espdp_replay *espdp_replay_new(uint32_t window, int esn)
{
	struct replay *r;

	if (window > ESPD_REPLAY_MAX)
		return NULL;
	r = malloc(replay_size(window));
	if (r)
		replay_init(r, window, esn);
	return (espdp_replay *)r;
}

void espdp_replay_free(espdp_replay *w)
{
	free(w);
}

int espdp_replay_check(const espdp_replay *w, uint32_t seql, uint64_t *seq)
{
	return replay_check((const struct replay *)w, seql, seq);
}

int espdp_replay_advance(espdp_replay *w, uint64_t seq)
{
	return replay_advance((struct replay *)w, seq);
}

uint64_t espdp_replay_top(const espdp_replay *w)
{
	return ((const struct replay *)w)->top;
}
