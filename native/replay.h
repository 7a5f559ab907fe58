/* replay: the anti-replay window of an inbound SA (RFC 4303 3.4.3, appendix A; RFC 6479).
 *
 * The window is a ring of 64-bit blocks indexed by (seq / 64) mod nblocks, with one block
 * more than the window needs, so that sliding it forward clears whole blocks and costs
 * nothing per packet whatever the window size. The ring is not rounded up to a power of
 * two (a window of 1024 takes 17 blocks, not 32): memory per SA matters more here than
 * the division. Two steps, as strongSwan does it:
 * replay_check changes nothing and runs before the ICV; replay_advance runs only for
 * packets whose ICV verified. The caller serialises replay_advance per SA.
 */
#ifndef ESPD_REPLAY_H
#define ESPD_REPLAY_H

#include <stddef.h>
#include <stdint.h>

struct replay {
	uint64_t top; /* highest authenticated sequence number; 0 = none yet */
	uint32_t window; /* configured size in packets; 0 = no replay check */
	uint32_t nblocks;
	uint8_t esn;
	uint64_t bits[]; /* nblocks blocks; bit (seq % 64) of block (seq / 64) % nblocks */
};

/* Bytes needed for a window of `window` packets (struct included). */
size_t replay_size(uint32_t window);
void replay_init(struct replay *r, uint32_t window, int esn);
/* 0 or ESPD_DROP_replay_old / _dup; the full sequence number (ESN inferred) in *seq. */
int replay_check(const struct replay *r, uint32_t seql, uint64_t *seq);
/* Record authenticated `seq`: 0, or ESPD_DROP_replay_old / _dup if it lost a race. */
int replay_advance(struct replay *r, uint64_t seq);

#endif
