/* sa: one security association, its cold configuration apart from its hot runtime state.
 *
 * Cold (written once at creation, read-only afterwards): the config, the transform, the
 * key material (kept only to key further per-worker contexts; wiped on free).
 * Hot (changes per packet): the sequence number, the replay window (under replay_lock),
 * lifetime usage, counters (relaxed atomics) and the expiry flags.
 * An SA is reference counted; a reload that keeps it carries its hot state over.
 */
#ifndef ESPD_SA_H
#define ESPD_SA_H

#include <stdint.h>

#include "crypto.h"
#include "drops.h"
#include "espdp.h"
#include "proto.h"
#include "replay.h"

/* The first three are the ones espdp_sa_stats reports (enum espdp_sa_flag). */
#define SA_SOFT_EXPIRED ((uint32_t)ESPDP_SA_SOFT_EXPIRED)
#define SA_HARD_EXPIRED ((uint32_t)ESPDP_SA_HARD_EXPIRED)
#define SA_SEQ_CYCLED ((uint32_t)ESPDP_SA_SEQ_CYCLED)
#define SA_RESERVE_LOW (1u << 3) /* seq_reserve event raised; cleared by a new reservation */

struct sa_counters {
	uint64_t packets, bytes;
	uint64_t encaps, encrypt, digest;
	uint64_t decaps, decrypt, verify;
	/* ESPD_DROP_SLOTS counters, allocated by the SA's first drop (most SAs never drop:
	 * 256 B fewer per SA, issue 13); atomic, set once (CAS), freed with the SA. Without
	 * memory for them a drop is still counted globally (dp->drops), not per SA. */
	uint64_t *drops;
};

struct espdp_sa {
	/* cold */
	struct espdp_sa_config cfg;
	struct crypto_alg alg;
	espdp *dp;
	uint32_t overhead; /* worst case bytes added to an inner packet (tunnel mode) */
	uint32_t nctx;
	uint64_t seq_max; /* last usable outbound sequence number */
	int64_t created_ns;
	uint8_t *key; /* alg.key_len bytes, in the SA's own allocation */
	uint8_t *auth_key; /* alg.auth_key_len bytes, likewise */
	/* Crypto contexts. Invariant: each context has one owner, which alone uses and
	 * changes it: ctx[w] belongs to worker w (only worker w's thread reads or writes slot
	 * w; NULL until its first packet for this SA, which keys it). Creation keys one
	 * context to check the key and frees it, so an SA without packets holds none, and
	 * an SA that only one worker touches (every inbound SA: its packets come to one
	 * socket) holds one. espdp_sa_release frees them all once no worker holds the SA. */
	struct crypto_ctx **ctx;

	/* hot */
	uint32_t refs;
	uint32_t flags; /* SA_* bits, each set once */
	uint64_t seq; /* out: last sequence number handed out */
	uint64_t seq_limit; /* out: last sequence number persisted as reserved (see below) */
	uint64_t seq_warn; /* out: raise seq_reserve once seq reaches this */
	uint64_t life_bytes, life_packets;
	/* The peer's address (2 words) and UDP port (word 2), under a seqlock: remote_seq is
	 * odd while the one writer (espdp_sa_set_remote, under publish_lock) changes them.
	 * cfg.peer and cfg.dport keep the values the SA was created with. */
	uint32_t remote_seq;
	uint64_t remote[3];
	int64_t moved_next_ns; /* inbound: no peer_moved event before this time */
	struct sa_counters ctr;
	int replay_lock;
	struct replay replay; /* inbound only; must stay last (flexible) */
};

/* The worker's crypto context for this SA, keyed on first use; NULL when out of memory. */
struct crypto_ctx *sa_ctx(espdp_sa *sa, unsigned worker);
/* Take the next outbound sequence number into *seq: 0, or ESPD_DROP_seq_cycled when the
 * space is used up, or ESPD_DROP_seq_unreserved past the persisted reservation.
 * Invariant: no number above seq_limit is ever handed out, so a restart that resumes
 * above the persisted limit never repeats a (key, sequence number) pair. */
int sa_next_seq(espdp_sa *sa, uint64_t *seq);
/* Hard-lifetime check before a packet; 0 or ESPD_DROP_sa_expired. */
int sa_admit(espdp_sa *sa, int64_t now_ns);
/* Count a packet of `bytes` against the lifetime; raises soft/hard expiry events. */
void sa_use(espdp_sa *sa, uint32_t bytes, int64_t now_ns);
/* Count a drop on the SA (and globally, by direction). */
void sa_drop(espdp_sa *sa, int reason);
/* Serialised replay advance. */
int sa_replay_advance(espdp_sa *sa, uint64_t seq);
/* The remote as the packet path sees it: addr (16 bytes; IPv4 in the first 4) and port. */
struct sa_remote {
	uint8_t addr[16];
	uint16_t port;
};
void sa_remote_get(const espdp_sa *sa, struct sa_remote *out);
/* An inbound SA with follow_peer took an authenticated packet from src:sport: raise
 * peer_moved if that is not its remote, at most once per ESPD_PEER_MOVED_INTERVAL_NS. */
void sa_check_moved(espdp_sa *sa, const uint8_t *src, uint16_t sport, int64_t now_ns);
/* Set a flag once; returns 1 if this call set it. */
int sa_flag_once(espdp_sa *sa, uint32_t flag);

static inline void ctr_add(uint64_t *c, uint64_t v)
{
	__atomic_fetch_add(c, v, __ATOMIC_RELAXED);
}

static inline uint64_t ctr_get(const uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

#endif
