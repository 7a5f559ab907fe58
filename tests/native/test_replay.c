// sources: native/replay.c
/* test_replay: the anti-replay window (native/replay.c) against a reference written from
 * RFC 4303 3.4.3 and appendix A2.1, not from the implementation:
 *
 *   window   random arrivals (in order, reordered, duplicated, far jumps) through
 *            check + advance, for windows 0, 1, 63, 64, 65, 1024 and 65536; the verdict
 *            and the top match a model that keeps every received number in a set.
 *   esn      the 64-bit number inferred from the low 32 bits: the unique s with
 *            s = seql (mod 2^32) in [bottom, bottom + 2^32), bottom = top - W + 1, with
 *            128-bit arithmetic; numbers below 1 or above 2^64 - 1 are refused (old).
 *   edges    sequence number 0, the first packet, a jump of exactly W, the 2^32 boundary.
 *
 * Prints "N passed, M failed" last; exits non-zero on any failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drops.h"
#include "replay.h"
#include "check.h"

static uint64_t rng_state = 7;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static struct replay *new_window(uint32_t w, int esn)
{
	struct replay *r = malloc(replay_size(w));

	replay_init(r, w, esn);
	return r;
}

/* --- the reference: every received number, kept as a sorted-free bitmap by offset --- */

#define SPAN (1u << 20) /* the model tracks numbers 1 .. SPAN */

struct model {
	uint8_t *seen; /* SPAN + 1 bytes */
	uint64_t top;
	uint32_t w;
};

static int model_verdict(const struct model *m, uint64_t s)
{
	if (s == 0)
		return ESPD_DROP_replay_old;
	if (!m->w || s > m->top)
		return 0;
	if (m->top - s >= m->w) /* left of the window: top - W + 1 is its last number */
		return ESPD_DROP_replay_old;
	return m->seen[s] ? ESPD_DROP_replay_dup : 0;
}

static void test_window(uint32_t w)
{
	struct replay *r = new_window(w, 0);
	struct model m = { calloc(SPAN + 1, 1), 0, w };
	uint64_t next = 1;

	for (int i = 0; i < 200000; i++) {
		uint64_t s, got = 0;
		int pick = (int)(rnd() % 100), expect, verdict;

		if (pick < 50)
			s = next++; /* in order */
		else if (pick < 80)
			s = next > 1 ? next - 1 - rnd() % (2ull * (w ? w : 64) + 1) % next : 1; /* reordered */
		else if (pick < 95)
			s = m.top ? m.top - rnd() % (m.top < 4 ? m.top : 4) : 1; /* duplicates */
		else
			s = next += rnd() % (4ull * (w ? w : 64)); /* a jump */
		if (s > SPAN)
			break;
		expect = model_verdict(&m, s);
		verdict = replay_check(r, (uint32_t)s, &got);
		CHECK(verdict == expect, "w %u: check %llu: %d, model %d", w, (unsigned long long)s,
		      verdict, expect);
		CHECK(got == s, "w %u: no ESN, the number is the low 32 bits", w);
		if (verdict == 0) { /* authenticated: advance, as esp_in does */
			CHECK(replay_advance(r, s) == 0, "w %u: advance %llu", w, (unsigned long long)s);
			m.seen[s] = 1;
			if (s > m.top)
				m.top = s;
		}
		CHECK(r->top == m.top, "w %u: top %llu, model %llu", w, (unsigned long long)r->top,
		      (unsigned long long)m.top);
	}
	/* a second advance of the same number (two workers raced past check) loses */
	if (w && m.top) {
		CHECK(replay_advance(r, m.top) == ESPD_DROP_replay_dup, "w %u: racing duplicate", w);
		if (m.top > w)
			CHECK(replay_advance(r, m.top - w) == ESPD_DROP_replay_old, "w %u: racing old", w);
	}
	free(m.seen);
	free(r);
}

/* --- ESN inference --- */

/* RFC 4303 A2.1, restated: the candidate for seql is the unique s = seql (mod 2^32) with
 * bottom <= s < bottom + 2^32. Returns 0 when s is outside 1 .. 2^64 - 1. */
static int ref_infer(uint64_t top, uint32_t w, uint32_t seql, uint64_t *out)
{
	__int128 wi = w ? w : (__int128)1 << 31, bottom = (__int128)top - wi + 1, s;
	__int128 lo = (__int128)seql - (bottom & 0xffffffff);

	if (lo < 0)
		lo += (__int128)1 << 32;
	s = bottom + lo;
	if (s < 1 || s > (__int128)UINT64_MAX)
		return 0;
	*out = (uint64_t)s;
	return 1;
}

static void test_esn(uint32_t w)
{
	static const uint64_t tops[] = { 0, 1, 5, 0xfffffffeull, 0xffffffffull, 0x100000000ull,
					 0x100000005ull, 0x7ffffffffull, 0xffffffff00000010ull,
					 UINT64_MAX - 3 };

	for (size_t t = 0; t < sizeof(tops) / sizeof(tops[0]); t++) {
		struct replay *r = new_window(w, 1);

		r->top = tops[t]; /* an empty window at this top (as the test hook sets it) */
		for (int i = 0; i < 4000; i++) {
			uint32_t seql = i < 8 ? (uint32_t)(tops[t] + (uint64_t)(i - 4)) :
						(i < 16 ? (uint32_t)(tops[t] - w + (uint64_t)(i - 12)) :
							  (uint32_t)rnd());
			uint64_t want = 0, got = 0;
			int ok = ref_infer(tops[t], w, seql, &want), verdict = replay_check(r, seql, &got);

			int expect = !ok || (w && want <= tops[t] && tops[t] - want >= w) ?
					     ESPD_DROP_replay_old : 0; /* the window is empty: never dup */

			CHECK(verdict == expect, "w %u top %llx seql %x: %d, reference %d", w,
			      (unsigned long long)tops[t], seql, verdict, expect);
			if (ok && verdict == 0)
				CHECK(got == want, "w %u top %llx seql %x: %llx, reference %llx", w,
				      (unsigned long long)tops[t], seql, (unsigned long long)got,
				      (unsigned long long)want);
		}
		free(r);
	}
}

static void test_edges(void)
{
	struct replay *r = new_window(64, 0);
	uint64_t s;

	CHECK(replay_check(r, 0, &s) == ESPD_DROP_replay_old, "0 is never valid");
	CHECK(replay_check(r, 1, &s) == 0 && s == 1, "the first packet");
	CHECK(replay_advance(r, 1) == 0, "advance 1");
	CHECK(replay_advance(r, 65) == 0, "a jump of exactly 64");
	CHECK(replay_check(r, 1, &s) == ESPD_DROP_replay_old, "1 fell out: top 65, window 2..65");
	CHECK(replay_check(r, 2, &s) == 0, "2 is the window's last number");
	CHECK(replay_check(r, 65, &s) == ESPD_DROP_replay_dup, "65 seen");
	free(r);

	r = new_window(1024, 1); /* across 2^32 with ESN */
	r->top = 0xfffffff0ull;
	CHECK(replay_check(r, 0x00000002u, &s) == 0 && s == 0x100000002ull, "wraps into the next subspace");
	CHECK(replay_advance(r, s) == 0 && r->top == 0x100000002ull, "top moves across");
	CHECK(replay_check(r, 0xfffffff5u, &s) == 0 && s == 0xfffffff5ull, "a late one from below");
	CHECK(replay_check(r, 0xfffffff0u, &s) == 0 && s == 0xfffffff0ull, "late, still inside");
	free(r);

	r = new_window(0, 0); /* anti-replay off: everything passes, top follows */
	CHECK(replay_check(r, 5, &s) == 0 && replay_advance(r, 5) == 0, "window 0: passes");
	CHECK(replay_check(r, 5, &s) == 0, "window 0: even a repeat");
	CHECK(replay_check(r, 0, &s) == ESPD_DROP_replay_old, "window 0: but never 0");
	free(r);
}

int main(void)
{
	static const uint32_t windows[] = { 0, 1, 63, 64, 65, 1024, 65536 };

	for (size_t i = 0; i < sizeof(windows) / sizeof(windows[0]); i++) {
		test_window(windows[i]);
		test_esn(windows[i]);
	}
	test_edges();
	printf("%lu passed, %lu failed\n", passed, failed);
	return failed ? 1 : 0;
}
