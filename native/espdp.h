/* espdp.h: the whole C API of the espd data plane, as Python sees it.
 *
 * cffi reads this file as its cdef: apart from the guard and include lines (which build.py strips)
 * it holds no macros and no #if, and array sizes are literal numbers that static asserts
 * in the .c files tie to their constants.
 *
 * Ownership: an espdp_sa is reference counted. espdp_sa_create returns one reference to
 * the caller; a table takes its own reference for every SA added to it. A table is owned
 * by its creator until espdp_publish succeeds; then it belongs to the data plane, which
 * frees it once no worker can still see it.
 *
 * Every function returning int returns ESPDP_OK (0) or a negative enum espdp_status.
 */
#ifndef ESPDP_H
#define ESPDP_H

#include <stddef.h>
#include <stdint.h>

typedef struct espdp espdp;
typedef struct espdp_sa espdp_sa;
typedef struct espdp_table espdp_table;
typedef struct espdp_replay espdp_replay;

enum espdp_status {
	ESPDP_OK = 0,
	ESPDP_ERR_INVALID = -1,    /* a config field is out of range */
	ESPDP_ERR_KEY_LENGTH = -2, /* key or auth key length does not fit the transform */
	ESPDP_ERR_NOMEM = -3,
	ESPDP_ERR_CRYPTO = -4,     /* OpenSSL refused the algorithm or the key */
	ESPDP_ERR_EXISTS = -5,     /* inbound SPI + destination already in the table */
	ESPDP_ERR_UNSUPPORTED = -6,
	ESPDP_ERR_STATE = -7,      /* object in the wrong state (already published, ...) */
	ESPDP_ERR_IO = -8          /* the kernel refused a send (errno is left set) */
};

enum espdp_cipher {
	ESPDP_CIPHER_NULL = 0,
	ESPDP_CIPHER_AES_CBC = 1,           /* RFC 3602 */
	ESPDP_CIPHER_AES_GCM = 2,           /* RFC 4106, 16-byte ICV */
	ESPDP_CIPHER_CHACHA20_POLY1305 = 3  /* RFC 7634 */
};

enum espdp_integ {
	ESPDP_INTEG_NONE = 0,
	ESPDP_INTEG_HMAC_SHA1_96 = 1,       /* RFC 2404 */
	ESPDP_INTEG_HMAC_SHA256_128 = 2,    /* RFC 4868 */
	ESPDP_INTEG_HMAC_SHA384_192 = 3,
	ESPDP_INTEG_HMAC_SHA512_256 = 4
};

/* Who runs the AEADs (AES-GCM, ChaCha20-Poly1305); AES-CBC, NULL and HMAC are always
 * OpenSSL. Process-wide; an SA keeps the backend it was created with. */
enum espdp_crypto_backend {
	ESPDP_CRYPTO_OPENSSL = 0,
	ESPDP_CRYPTO_IPSECMB = 1            /* Intel libipsec-mb, when built in */
};

/* Numbers Python reads from here instead of copying them (static asserts in espdp.c tie
 * them to proto.h, sa.h and offload.h). */
enum espdp_const {
	ESPDP_HEADROOM = 128,       /* bytes a packet buffer keeps free before the packet */
	ESPDP_TAILROOM = 64,        /* and after it */
	ESPDP_DROP_SLOTS = 32,      /* entries of every drops[] array */
	ESPDP_NEXTHOP_MAX = 64,     /* entries of the AF_PACKET send path's table */
	ESPDP_NATT_PORT = 4500      /* RFC 3948 */
};

/* espdp_sa_stats.flags */
enum espdp_sa_flag {
	ESPDP_SA_SOFT_EXPIRED = 1,
	ESPDP_SA_HARD_EXPIRED = 2,
	ESPDP_SA_SEQ_CYCLED = 4
};

/* TUNSETOFFLOAD bits the workers can take (espdp_io_config.tun_vnet_hdr) */
enum espdp_tun_offload {
	ESPDP_TUN_F_CSUM = 0x01,
	ESPDP_TUN_F_TSO4 = 0x02,
	ESPDP_TUN_F_TSO6 = 0x04,
	ESPDP_TUN_F_USO4 = 0x20,    /* Linux 6.2 */
	ESPDP_TUN_F_USO6 = 0x40
};

/* The byte lengths of one transform (espdp_transform_info). */
struct espdp_transform {
	uint16_t key_len;           /* cipher key, AEAD salt included */
	uint16_t auth_key_len;      /* HMAC key; 0 for an AEAD */
	uint8_t iv_len;
	uint8_t icv_len;
	uint8_t block;              /* the payload + trailer is padded to a multiple of it */
	uint8_t pad;
};

enum espdp_dir { ESPDP_DIR_IN = 0, ESPDP_DIR_OUT = 1 };
enum espdp_mode { ESPDP_MODE_TUNNEL = 0, ESPDP_MODE_TRANSPORT = 1 };
enum espdp_encap { ESPDP_ENCAP_ESP = 0, ESPDP_ENCAP_UDP = 1 };
/* What an inbound SA requires of the outer source (drop reason wrong_source otherwise). */
enum espdp_source_check {
	ESPDP_SOURCE_STRICT = 0,    /* address is peer; UDP: source port is dport too */
	ESPDP_SOURCE_ADDRESS = 1,   /* address is peer, any port (IKE behind a NAT) */
	ESPDP_SOURCE_ANY = 2        /* any source (a peer whose address changes) */
};
enum espdp_action { ESPDP_ACTION_DISCARD = 0, ESPDP_ACTION_PROTECT = 1 };

struct espdp_addr {
	uint8_t family;     /* 4 or 6 */
	uint8_t bytes[16];  /* IPv4 in bytes[0..3] */
};

struct espdp_limits {
	uint64_t seconds;   /* 0 = no limit */
	uint64_t bytes;     /* of protected (inner) payload */
	uint64_t packets;
};

struct espdp_sa_config {
	uint32_t spi;
	uint8_t direction;          /* enum espdp_dir */
	uint8_t mode;               /* enum espdp_mode */
	uint8_t encap;              /* enum espdp_encap */
	uint8_t esn;                /* 64-bit extended sequence numbers */
	uint8_t cipher;             /* enum espdp_cipher */
	uint8_t integ;              /* enum espdp_integ */
	uint16_t cipher_key_bits;   /* 128/192/256 for AES; 256 for ChaCha20; 0 for NULL */
	uint16_t sport;             /* UDP encapsulation ports (host order) */
	uint16_t dport;
	uint8_t source_check;       /* enum espdp_source_check (inbound only) */
	uint8_t follow_peer;        /* inbound UDP: report peer_moved events (RFC 7296 2.23) */
	uint32_t replay_window;     /* packets; 0 = anti-replay off (inbound only) */
	uint32_t policy;            /* crypto map entry id for the inner selector check; 0 = none */
	uint64_t cookie;            /* opaque id, echoed in events */
	struct espdp_addr local;    /* outer source (out) / destination (in) */
	struct espdp_addr peer;     /* outer destination (out) / expected source (in) */
	struct espdp_limits soft;   /* raise soft_expired once */
	struct espdp_limits hard;   /* refuse packets */
};

/* A classification rule: an access-list entry compiled to value/mask pairs.
 * A field matches when (packet & mask) == (value & mask); mask 0 = any. */
struct espdp_rule {
	uint8_t family;             /* 4 or 6 */
	uint8_t action;             /* enum espdp_action */
	uint8_t proto;
	uint8_t proto_mask;
	uint8_t src[16];
	uint8_t src_mask[16];
	uint8_t dst[16];
	uint8_t dst_mask[16];
	uint16_t sport;
	uint16_t sport_mask;
	uint16_t dport;
	uint16_t dport_mask;
	uint32_t policy;            /* crypto map entry id (the inbound selector check uses it) */
};

struct espdp_sa_stats {
	uint64_t packets;           /* passed: encapsulated (out) or decapsulated (in) */
	uint64_t bytes;             /* inner bytes of those packets */
	uint64_t encaps;
	uint64_t encrypt;
	uint64_t digest;
	uint64_t decaps;
	uint64_t decrypt;
	uint64_t verify;
	uint64_t seq;               /* out: last sequence number used; in: top of the window */
	uint64_t age_ns;            /* time since the SA was created */
	uint64_t life_bytes;        /* counted against the lifetime */
	uint64_t life_packets;
	uint32_t flags;             /* bit 0: soft expired, bit 1: hard expired, bit 2: seq cycled */
	uint32_t reserved;
	uint64_t drops[32];         /* by enum espd_drop */
};

struct espdp_sa_info {
	uint32_t spi;
	uint8_t direction;
	uint8_t iv_len;
	uint8_t icv_len;
	uint8_t block;              /* pad alignment */
	uint32_t overhead;          /* worst-case bytes added to the inner packet */
	uint32_t refs;
	uint8_t crypto_backend;     /* enum espdp_crypto_backend the SA was created with */
	uint8_t pad[7];
};

/* One packet in a batch. buf[off .. off+len) is the packet; the data plane may grow it
 * into buf[0 .. cap) (headroom before off, tailroom after). */
struct espdp_pkt {
	uint8_t *buf;
	uint32_t cap;
	uint32_t off;
	uint32_t len;
	int32_t result;             /* 0 = passed, else enum espd_drop */
	espdp_sa *sa;               /* encap: the SA to use, NULL = classify; out: SA used */
};

/* An event. SA events fill spi, direction, cookie and value. An acquire event (a PROTECT
 * rule without an SA met a packet) fills value with the rule's index, policy with its
 * crypto map entry, and the packet's selector: family, proto, addresses and ports.
 * A peer_moved event (an inbound SA with follow_peer) fills family, src and sport with
 * where the authenticated packet came from; the SA itself is not changed. */
struct espdp_event {
	uint32_t kind;              /* enum espd_event_kind */
	uint32_t spi;
	uint8_t direction;
	uint8_t family;             /* acquire: 4 or 6 */
	uint8_t proto;              /* acquire: IP protocol of the packet */
	uint8_t pad[5];
	uint64_t cookie;
	uint64_t value;
	uint32_t policy;            /* acquire */
	uint16_t sport;             /* acquire: 0 when the protocol has no ports */
	uint16_t dport;
	uint8_t src[16];            /* acquire: IPv4 in src[0..3] */
	uint8_t dst[16];
};

/* A datagram from the NAT-T socket that carried the non-ESP marker (an IKE message). */
struct espdp_punted {
	uint8_t family;             /* 4 or 6 */
	uint8_t pad;
	uint16_t sport;             /* the peer's port (host order) */
	uint16_t dport;             /* the port of the data plane's socket */
	uint16_t pad2;
	uint32_t len;               /* IKE message bytes, the marker not included */
	uint8_t src[16];            /* the peer */
	uint8_t dst[16];            /* the local address it was sent to */
};

struct espdp_punt_stats {
	uint64_t punted;            /* handed to the queue */
	uint64_t dropped;           /* the queue was full (also counted as drop punt_full) */
	uint64_t queued;            /* waiting to be read now */
};

/* --- Data plane instance --- */
espdp *espdp_new(unsigned nworkers);
void espdp_free(espdp *dp);
unsigned espdp_nworkers(const espdp *dp);
/* Global drop counters (drops before an SA is known), by enum espd_drop. */
void espdp_global_drops(const espdp *dp, uint64_t *out, size_t n);
const char *espdp_status_str(int status);
unsigned espdp_drop_count(void);
const char *espdp_drop_name(unsigned reason);
const char *espdp_drop_help(unsigned reason);
unsigned espdp_event_kind_count(void);
const char *espdp_event_name(unsigned kind);
/* The lengths of a transform; ESPDP_ERR_INVALID for one the data plane refuses. */
int espdp_transform_info(unsigned cipher, unsigned key_bits, unsigned integ,
			 struct espdp_transform *out);
/* The CPU features OpenSSL uses (for `espd stats`). */
const char *espdp_crypto_features(void);
/* The AEAD backend for SAs created from now on (enum espdp_crypto_backend): ESPDP_OK, or
 * ESPDP_ERR_UNSUPPORTED when it is not built in or cannot run on this CPU. */
int espdp_crypto_backend_set(unsigned backend);
unsigned espdp_crypto_backend_get(void);
int espdp_crypto_backend_available(unsigned backend);
/* The code path libipsec-mb chose for this CPU ("avx512", "avx2", "sse"...), or "none". */
const char *espdp_crypto_ipsecmb_arch(void);

/* --- Security associations --- */
int espdp_sa_create(espdp *dp, const struct espdp_sa_config *cfg, const uint8_t *key,
		    size_t key_len, const uint8_t *auth_key, size_t auth_key_len, espdp_sa **out);
void espdp_sa_ref(espdp_sa *sa);
void espdp_sa_release(espdp_sa *sa);
void espdp_sa_stats(const espdp_sa *sa, struct espdp_sa_stats *out);
void espdp_sa_info(const espdp_sa *sa, struct espdp_sa_info *out);
/* Outbound sequence-number reservation (nonce safety across restarts): the SA resumes
 * after `resume_after` (never moves back), hands out numbers up to `limit` and no further
 * (drop seq_unreserved), and raises a seq_reserve event once it reaches `warn_at`.
 * Without a call, an SA may use its whole sequence space. */
int espdp_sa_reserve(espdp_sa *sa, uint64_t resume_after, uint64_t limit, uint64_t warn_at);
/* The peer's address and UDP port, the one part of an SA's config that may change after
 * creation (RFC 7296 2.23: a NAT in front of the peer restarted): an outbound SA sends
 * there from now on, an inbound SA's source check expects it. The family is the SA's for
 * good (ESPDP_ERR_INVALID otherwise). Only the SA owner calls set; workers see the old or
 * the new remote, never a mix (a seqlock). */
int espdp_sa_set_remote(espdp_sa *sa, const struct espdp_addr *peer, uint16_t port);
void espdp_sa_remote(const espdp_sa *sa, struct espdp_addr *peer, uint16_t *port);

/* --- Tables (SPD + SAD) and their publication --- */
espdp_table *espdp_table_new(espdp *dp);
void espdp_table_free(espdp_table *t);
int espdp_table_add_sa(espdp_table *t, espdp_sa *sa);
/* Rules are matched in the order added; first match wins. sa may be NULL for DISCARD,
 * or for a PROTECT entry whose SA is not available (its packets are dropped as no_sa). */
int espdp_table_add_rule(espdp_table *t, const struct espdp_rule *rule, espdp_sa *sa);
/* Compile t and make it the live table in one atomic step. */
int espdp_publish(espdp *dp, espdp_table *t);
/* --- Incremental changes to the live table set (IKE: one Child SA at a time) ---
 * Single writer: only the control plane's SA owner calls these and espdp_publish (they
 * take publish_lock, so a second caller waits, never corrupts). Each change is validated
 * and allocated first and fails whole (nothing changed) or succeeds whole; workers see the
 * state before it or after it, never between, and never a freed SA (epochs, dp.h).
 * An outbound SA serves the PROTECT rules of the live set whose policy is its
 * cfg.policy (the crypto map entry); an inbound SA enters the SAD.
 *
 * install: in (may be NULL) enters the SAD, then out (may be NULL) is bound to its
 *   policy's rules. ESPDP_ERR_EXISTS if in's SPI + destination is taken or a rule of
 *   that policy has an SA already (replace it); ESPDP_ERR_INVALID if no rule has the policy.
 * replace: make-before-break rekey: the new in enters the SAD first, then the rules of
 *   out's policy switch to out in one store each; the old outbound SA is released once no
 *   worker holds it. The old inbound SA stays until retired (packets in flight).
 * retire: an inbound SA leaves the SAD; an outbound SA leaves the rules it serves (which
 *   then drop no_sa and raise acquire). ESPDP_ERR_INVALID if it is not installed.
 * A later espdp_publish replaces all of this with what its table set holds. */
int espdp_sa_install(espdp *dp, espdp_sa *in, espdp_sa *out);
int espdp_sa_replace(espdp *dp, espdp_sa *in, espdp_sa *out);
int espdp_sa_retire(espdp *dp, espdp_sa *sa);
/* Free retired objects (tables, SAs, SAD arrays) that no worker can still see. Returns
 * how many are still pending. */
size_t espdp_reclaim(espdp *dp);
/* Hit counts of the live table's rules, in rule order; returns the number of rules. */
size_t espdp_rule_hits(espdp *dp, uint64_t *out, size_t n);

/* --- Packet path --- */
/* Classify one IP packet against the live table; returns the rule index or -1. */
long espdp_classify(espdp *dp, const uint8_t *pkt, size_t len);
size_t espdp_encap_batch(espdp *dp, unsigned worker, struct espdp_pkt *pkts, size_t n);
size_t espdp_decap_batch(espdp *dp, unsigned worker, struct espdp_pkt *pkts, size_t n);

/* --- Workers: threads that own the packet I/O (worker.c, io.c) --- */
struct espdp_io_config {
	const int *tun_fds;         /* TUN queues (IFF_MULTI_QUEUE); worker w reads tun_fds[w % ntun] */
	unsigned ntun;
	int esp4_fd;                /* AF_INET SOCK_RAW IPPROTO_ESP: receives ESP; -1 = none */
	int esp6_fd;                /* AF_INET6 SOCK_RAW IPPROTO_ESP */
	int udp4_fd;                /* AF_INET UDP bound to the NAT-T port */
	int udp6_fd;
	int send4_fd;               /* AF_INET SOCK_RAW IPPROTO_RAW: sends whole outer packets */
	int send6_fd;               /* AF_INET6 SOCK_RAW IPPROTO_RAW */
	unsigned batch;             /* packets per system call, 1..64 */
	int tun_vnet_hdr;           /* 0; 1: TUN with IFF_VNET_HDR and TSO (offload.h); 3: and USO */
	int packet_fd;              /* AF_PACKET SOCK_DGRAM, protocol 0: outer packets to the next
	                               hops of espdp_nexthops_set; -1 = none (raw sockets only) */
	int rx_ring_fd;             /* AF_PACKET SOCK_DGRAM, protocol 0, unbound: raw ESP received
	                               through a TPACKET_V3 ring (ring.h) by worker 0, the raw ESP
	                               sockets muted; -1 = none. If the kernel refuses the ring,
	                               espdp_workers_start changes nothing and returns
	                               ESPDP_ERR_IO (errno set): start again without it */
	unsigned rx_ring_block;     /* with rx_ring_fd: block size (bytes, power of 2) */
	unsigned rx_ring_timeout_ms; /* with rx_ring_fd: block timeout, 1..1000 ms */
	unsigned rx_ring_skip_ifindex; /* with rx_ring_fd: the TUN device's ifindex (its frames
	                                  are not taken); 0 = none */
};

struct espdp_io_stats {
	uint64_t tun_rx;            /* packets read from the TUN device */
	uint64_t tun_tx;            /* packets written to it */
	uint64_t net_rx;            /* packets received from the underlay */
	uint64_t net_tx;            /* packets sent to the underlay */
	uint64_t send_errors;       /* sealed packets the kernel refused (dropped, never resent) */
	uint64_t recv_errors;
	uint64_t tun_errors;
	uint64_t net_tx_gso;        /* of net_tx: ESP in UDP sent in UDP GSO runs (UDP_SEGMENT) */
	uint64_t net_rx_gro;        /* of net_rx: ESP in UDP received in UDP GRO aggregates */
	uint64_t net_tx_packet;     /* of net_tx: sent on the AF_PACKET socket (send_path packet) */
	uint64_t net_rx_ring;       /* of net_rx: raw ESP received through the TPACKET_V3 ring */
	uint64_t net_rx_ring_drops; /* raw ESP the ring had no room for (not in net_rx) */
};

/* The AF_PACKET send path's next hops (nexthop.h): a sealed outer packet to `addr` of
 * at most `mtu` bytes goes out on io.packet_fd to `mac` on device `ifindex`; every other
 * packet on the raw sockets. Replaces the whole table (n = 0: raw path only); at most
 * ESPDP_NEXTHOP_MAX entries. Callable before and while workers run. */
struct espdp_nexthop {
	uint8_t family;             /* 4 or 6 */
	uint8_t addr[16];           /* the outer destination (IPv4: the first 4 bytes) */
	int ifindex;
	uint8_t mac[6];             /* the next hop's Ethernet address */
	unsigned mtu;               /* the route's MTU, 68..65535 */
};
int espdp_nexthops_set(espdp *dp, const struct espdp_nexthop *nh, size_t n);

/* Start dp's workers on these descriptors (the caller keeps owning them). */
int espdp_workers_start(espdp *dp, const struct espdp_io_config *io);
/* Stop and join every worker; idempotent. */
void espdp_workers_stop(espdp *dp);
void espdp_io_stats(const espdp *dp, struct espdp_io_stats *out);

/* --- Events (SA expiry, sequence exhaustion, acquire) --- */
int espdp_event_fd(const espdp *dp);
size_t espdp_events_read(espdp *dp, struct espdp_event *out, size_t n);

/* --- IKE on the NAT-T socket (punt.c) --- */
/* Readable while punted datagrams wait. */
int espdp_punt_fd(const espdp *dp);
/* Take the oldest punted datagram: its addresses and length into *meta, its first cap
 * bytes into buf (65535 always suffice). Returns 1, or 0 when none waits. */
int espdp_punt_read(espdp *dp, struct espdp_punted *meta, uint8_t *buf, size_t cap);
void espdp_punt_stats(const espdp *dp, struct espdp_punt_stats *out);
/* Send one IKE message from local (the NAT-T socket's port) to peer:port, the non-ESP
 * marker in front, on the workers' own NAT-T socket so that NAT mappings hold.
 * ESPDP_ERR_STATE while no worker runs or without a NAT-T socket of that family;
 * ESPDP_ERR_IO when the kernel refuses (errno says why). */
int espdp_send_ike(espdp *dp, const struct espdp_addr *local, const struct espdp_addr *peer,
		   uint16_t port, const uint8_t *msg, size_t len);

/* --- Drop log: sampled records of inbound drops that may be attacks (droplog.c) ---
 * Only these reasons are sampled: malformed, unknown_spi, replay_old, replay_dup,
 * auth_failed. Each worker samples at most 32 a second (bursts of 64) into a ring of its
 * own; what it does not sample (rate limit, or a full ring) it only counts, by reason.
 * Never key material or payload bytes: the record holds what the outer headers say. */
enum espdp_drop_record_flag {
	ESPDP_DROP_RECORD_SPI = 1,  /* spi is the packet's (not set for malformed) */
	ESPDP_DROP_RECORD_PORT = 2  /* sport is the UDP source port (ESP in UDP) */
};

struct espdp_drop_record {
	uint64_t time_ns;           /* the data plane's clock: CLOCK_MONOTONIC */
	uint32_t spi;
	uint8_t reason;             /* enum espd_drop */
	uint8_t direction;          /* enum espdp_dir */
	uint8_t family;             /* of src and dst: 4 or 6; 0 when the outer header gave none */
	uint8_t flags;              /* enum espdp_drop_record_flag */
	uint16_t sport;
	uint16_t worker;            /* the worker that dropped the packet */
	uint32_t pad;
	uint8_t src[16];            /* outer source address; IPv4 in src[0..3] */
	uint8_t dst[16];            /* outer destination (the local address it was sent to) */
};

/* Take up to n records, every worker's oldest first. The reading side is one consumer at
 * a time (a lock in C); call it from the control plane's loop. */
size_t espdp_drop_records_read(espdp *dp, struct espdp_drop_record *out, size_t n);
/* Drops of a sampled reason that were not recorded, summed over workers, by enum
 * espd_drop (free-running counters). */
void espdp_drop_records_suppressed(const espdp *dp, uint64_t *out, size_t n);

/* --- Anti-replay window, standalone (property tests) --- */
espdp_replay *espdp_replay_new(uint32_t window, int esn);
void espdp_replay_free(espdp_replay *r);
/* Check a received low-order sequence number; changes nothing. Returns 0 or an
 * enum espd_drop, and the inferred 64-bit sequence number in *seq. */
int espdp_replay_check(const espdp_replay *r, uint32_t seql, uint64_t *seq);
/* Record an authenticated sequence number; returns 0 or ESPD_DROP_replay_dup/_old. */
int espdp_replay_advance(espdp_replay *r, uint64_t seq);
uint64_t espdp_replay_top(const espdp_replay *r);

/* ===== Test hooks: NOT part of the data plane's API. ========================================
 * They put runtime state where a test needs it (near the edges of a sequence space, a
 * lifetime, the clock). The daemon never calls them; the binding keeps its wrappers in a
 * section of their own (Dataplane.test_*). */
/* Freeze the data plane's clock at now_ns >= 0; -1 returns to CLOCK_MONOTONIC. */
void espdp_set_clock(espdp *dp, int64_t now_ns);
/* Outbound: the last sequence number used; inbound: an empty window with its top at seq. */
void espdp_sa_test_set_seq(espdp_sa *sa, uint64_t seq);
void espdp_sa_test_set_usage(espdp_sa *sa, uint64_t bytes, uint64_t packets);

#endif
