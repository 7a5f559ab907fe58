/* fuzz_decap: libFuzzer harness for espd's packet path, over the public C API (espdp.h).
 *
 * Two data planes are set up once:
 *   in   "us": seven inbound SAs covering every transform family (AES-GCM 128/256,
 *        ChaCha20-Poly1305, AES-CBC 128/256 + HMAC-SHA256/512, ENCR_NULL + HMAC-SHA1),
 *        tunnel and transport, raw ESP and UDP (RFC 3948), IPv4 and IPv6 outers, ESN on
 *        three, anti-replay windows 0..1024, and a rule table whose PROTECT rules carry the
 *        policies the SAs name, so the inner selector check runs (with a DISCARD rule and a
 *        PROTECT rule of an unknown policy in the way).
 *   out  "the peer": the same SAs outbound (same keys and SPIs, addresses swapped) and the
 *        mirror image of our rules with those SAs attached.
 *
 * The first input byte b0 picks the mode (b0 % 4) and a parameter (b0 >> 2):
 *   0 raw       input[1..] is a whole outer packet for espdp_decap_batch (and the
 *               classifier); b0 >> 2 picks the top of every replay window.
 *   1 sealed    input[1..4] are flags, input[5..] is the PLAINTEXT of an ESP payload; the
 *               harness seals it itself (its own OpenSSL code, not native/crypto.c) for SA
 *               (b0 >> 2) % 7 with a valid ICV, so every decrypted byte (padding, pad length,
 *               next header, the inner packet) is the fuzzer's. Oracles: never auth_failed
 *               or crypto_error on a packet sealed right; a packet that passes has the
 *               plaintext as its inner bytes (ECN per RFC 6040, checked independently).
 *   2 classify  input[2..] is an inner packet for espdp_encap_batch with sa = NULL on the
 *               peer (classification + sealing of arbitrary inner bytes); what it seals is
 *               decapsulated by us. Oracle: what the peer sealed, we open, to the same bytes.
 *   3 explicit  the same with the peer's SA (b0 >> 2) % 7 named (any inner packet, any
 *               mode); the oracle allows a selector mismatch.
 * input[1] of modes 2 and 3 picks the sequence numbers (near 0, near 2^32, past 2^32).
 *
 * Replay windows and outbound sequence numbers are reset before every input
 * (espdp_sa_test_set_seq), so an input's outcome does not depend on the inputs before it.
 *
 * Build: see tests/fuzz/run.sh. -DFUZZ_SEED_MAIN builds a program that writes the seed
 * corpus (valid packets for every SA, in every mode) into the directory it is given.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "espdp.h"

#define HEADROOM 128
#define TAILROOM 64
#define NSA 7

/* enum espd_drop values used by the oracles (drops.h order, which is ABI). */
enum {
	D_malformed = 1,
	D_inner_malformed = 2,
	D_unknown_spi = 9,
	D_encap_mismatch = 10,
	D_bad_length = 11,
	D_replay_old = 12,
	D_replay_dup = 13,
	D_auth_failed = 14,
	D_bad_padding = 15,
	D_bad_next_header = 16,
	D_dummy = 17,
	D_selector_mismatch = 18,
	D_ecn_drop = 19,
	D_crypto_error = 22,
};

#define CHECK(cond, ...)                                                                    \
	do {                                                                                \
		if (!(cond)) {                                                              \
			fprintf(stderr, "fuzz_decap: oracle failed at %s:%d: %s: ", __FILE__,     \
				__LINE__, #cond);                                                   \
			fprintf(stderr, __VA_ARGS__);                                               \
			fprintf(stderr, "\n");                                                      \
			abort();                                                                    \
		}                                                                           \
	} while (0)

struct sa_def {
	uint32_t spi;
	uint8_t cipher, integ;
	uint16_t key_bits;
	uint8_t mode, encap, family, esn;
	uint32_t window, policy;
};

static const struct sa_def defs[NSA] = {
	{ 0x1001, ESPDP_CIPHER_AES_GCM, ESPDP_INTEG_NONE, 128, ESPDP_MODE_TUNNEL, ESPDP_ENCAP_ESP, 4, 0, 64, 1 },
	{ 0x1002, ESPDP_CIPHER_CHACHA20_POLY1305, ESPDP_INTEG_NONE, 256, ESPDP_MODE_TUNNEL, ESPDP_ENCAP_UDP, 6, 1, 128, 2 },
	{ 0x1003, ESPDP_CIPHER_AES_CBC, ESPDP_INTEG_HMAC_SHA256_128, 256, ESPDP_MODE_TRANSPORT, ESPDP_ENCAP_ESP, 4, 0, 64, 3 },
	{ 0x1004, ESPDP_CIPHER_NULL, ESPDP_INTEG_HMAC_SHA1_96, 0, ESPDP_MODE_TUNNEL, ESPDP_ENCAP_ESP, 6, 0, 0, 4 },
	{ 0x1005, ESPDP_CIPHER_NULL, ESPDP_INTEG_HMAC_SHA1_96, 0, ESPDP_MODE_TRANSPORT, ESPDP_ENCAP_UDP, 4, 1, 1024, 0 },
	{ 0x1006, ESPDP_CIPHER_AES_CBC, ESPDP_INTEG_HMAC_SHA512_256, 128, ESPDP_MODE_TUNNEL, ESPDP_ENCAP_UDP, 4, 0, 32, 5 },
	{ 0x1007, ESPDP_CIPHER_AES_GCM, ESPDP_INTEG_NONE, 256, ESPDP_MODE_TRANSPORT, ESPDP_ENCAP_ESP, 6, 1, 0, 6 },
};

static const uint8_t v4_local[4] = { 192, 0, 2, 1 }, v4_peer[4] = { 198, 51, 100, 1 };
static const uint8_t v6_local[16] = { 0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, [15] = 1 };
static const uint8_t v6_peer[16] = { 0x20, 0x01, 0x0d, 0xb8, 0xee, 0xee, [15] = 1 };
#define PORT_US 4500
#define PORT_PEER 4501

struct sa_keys {
	uint8_t key[36]; /* cipher key (+ 4-byte salt for the AEADs) */
	size_t key_len;
	uint8_t auth[64];
	size_t auth_len;
	size_t iv_len, icv_len, block;
};

static espdp *dp_in, *dp_out;
static espdp_sa *sa_in[NSA], *sa_out[NSA];
static struct sa_keys keys[NSA];

static void die(const char *what, int err)
{
	fprintf(stderr, "fuzz_decap setup: %s: %d %s\n", what, err, espdp_status_str(err));
	abort();
}

static void make_keys(int i)
{
	const struct sa_def *d = &defs[i];
	struct sa_keys *k = &keys[i];
	static const size_t hmac_len[] = { 0, 20, 32, 48, 64 }, icv[] = { 0, 12, 16, 24, 32 };

	memset(k, 0, sizeof(*k));
	switch (d->cipher) {
	case ESPDP_CIPHER_AES_GCM:
	case ESPDP_CIPHER_CHACHA20_POLY1305:
		k->key_len = d->key_bits / 8 + 4;
		k->iv_len = 8;
		k->icv_len = 16;
		k->block = 4;
		break;
	case ESPDP_CIPHER_AES_CBC:
		k->key_len = d->key_bits / 8;
		k->iv_len = 16;
		k->block = 16;
		break;
	default:
		k->block = 4;
	}
	if (d->integ) {
		k->auth_len = hmac_len[d->integ];
		k->icv_len = icv[d->integ];
	}
	for (size_t j = 0; j < sizeof(k->key); j++)
		k->key[j] = (uint8_t)(0x11 * (i + 1) + j);
	for (size_t j = 0; j < sizeof(k->auth); j++)
		k->auth[j] = (uint8_t)(0xa5 ^ (i * 7 + j));
}

static void fill_addr(struct espdp_addr *a, int family, int local)
{
	memset(a, 0, sizeof(*a));
	a->family = (uint8_t)family;
	if (family == 4)
		memcpy(a->bytes, local ? v4_local : v4_peer, 4);
	else
		memcpy(a->bytes, local ? v6_local : v6_peer, 16);
}

static espdp_sa *make_sa(espdp *dp, int i, int dir)
{
	const struct sa_def *d = &defs[i];
	struct espdp_sa_config c;
	espdp_sa *sa;
	int err;

	memset(&c, 0, sizeof(c));
	c.spi = d->spi;
	c.direction = (uint8_t)dir;
	c.mode = d->mode;
	c.encap = d->encap;
	c.esn = d->esn;
	c.cipher = d->cipher;
	c.integ = d->integ;
	c.cipher_key_bits = d->key_bits;
	c.replay_window = dir == ESPDP_DIR_IN ? d->window : 0;
	c.policy = d->policy;
	c.cookie = (uint64_t)i;
	if (dir == ESPDP_DIR_IN) { /* inbound: sport is the local port the packet is sent to */
		c.sport = PORT_US;
		c.dport = PORT_PEER;
		fill_addr(&c.local, d->family, 1);
		fill_addr(&c.peer, d->family, 0);
	} else {
		c.sport = PORT_PEER;
		c.dport = PORT_US;
		fill_addr(&c.local, d->family, 0);
		fill_addr(&c.peer, d->family, 1);
	}
	err = espdp_sa_create(dp, &c, keys[i].key, keys[i].key_len, keys[i].auth, keys[i].auth_len,
			      &sa);
	if (err)
		die("espdp_sa_create", err);
	return sa;
}

struct rule_def {
	uint8_t family, action, proto;
	const char *src, *dst; /* our view: src = our side */
	uint8_t src_len, dst_len;
	uint16_t sport, dport; /* 0 = any */
	uint32_t policy;
};

/* Our rules (we protect src -> dst); the peer holds their mirror image. */
static const struct rule_def rule_defs[] = {
	{ 4, ESPDP_ACTION_DISCARD, 0, "10.1.99.0", "10.2.0.0", 24, 16, 0, 0, 1 },
	{ 4, ESPDP_ACTION_PROTECT, 0, "10.1.0.0", "10.2.0.0", 16, 16, 0, 0, 1 },
	{ 6, ESPDP_ACTION_PROTECT, 0, "2001:db8:1::", "2001:db8:2::", 48, 48, 0, 0, 2 },
	{ 4, ESPDP_ACTION_PROTECT, 6, "192.0.2.1", "198.51.100.1", 32, 32, 443, 0, 3 },
	{ 4, ESPDP_ACTION_PROTECT, 17, "192.0.2.1", "198.51.100.1", 32, 32, 0, 53, 3 },
	{ 6, ESPDP_ACTION_PROTECT, 0, "2001:db8:3::", "2001:db8:4::", 48, 48, 0, 0, 4 },
	{ 6, ESPDP_ACTION_PROTECT, 0, "2001:db8:5::", "2001:db8:6::", 48, 48, 0, 0, 5 },
	{ 4, ESPDP_ACTION_PROTECT, 1, "10.5.0.0", "10.6.0.0", 16, 16, 0, 0, 5 },
	{ 6, ESPDP_ACTION_PROTECT, 0, "2001:db8:ffff::1", "2001:db8:eeee::1", 128, 128, 0, 0, 6 },
	{ 4, ESPDP_ACTION_PROTECT, 0, "0.0.0.0", "0.0.0.0", 0, 0, 0, 0, 99 }, /* no SA: no_sa */
};
#define NRULES (sizeof(rule_defs) / sizeof(rule_defs[0]))

static void prefix(uint8_t family, const char *text, uint8_t len, uint8_t *val, uint8_t *mask)
{
	memset(val, 0, 16);
	memset(mask, 0, 16);
	if (inet_pton(family == 4 ? AF_INET : AF_INET6, text, val) != 1)
		die("inet_pton", 0);
	for (unsigned b = 0; b < len; b++)
		mask[b / 8] |= (uint8_t)(0x80 >> (b % 8));
}

static void make_rule(const struct rule_def *r, int mirror, struct espdp_rule *o)
{
	memset(o, 0, sizeof(*o));
	o->family = r->family;
	o->action = r->action;
	o->proto = r->proto;
	o->proto_mask = r->proto ? 0xff : 0;
	prefix(r->family, mirror ? r->dst : r->src, mirror ? r->dst_len : r->src_len, o->src,
	       o->src_mask);
	prefix(r->family, mirror ? r->src : r->dst, mirror ? r->src_len : r->dst_len, o->dst,
	       o->dst_mask);
	o->sport = mirror ? r->dport : r->sport;
	o->dport = mirror ? r->sport : r->dport;
	o->sport_mask = o->sport ? 0xffff : 0;
	o->dport_mask = o->dport ? 0xffff : 0;
	o->policy = r->policy;
}

static void setup(void)
{
	espdp_table *tin, *tout;
	int err;

	dp_in = espdp_new(1);
	dp_out = espdp_new(1);
	if (!dp_in || !dp_out)
		die("espdp_new", 0);
	espdp_set_clock(dp_in, 1000000000);
	espdp_set_clock(dp_out, 1000000000);
	tin = espdp_table_new(dp_in);
	tout = espdp_table_new(dp_out);
	for (int i = 0; i < NSA; i++) {
		make_keys(i);
		sa_in[i] = make_sa(dp_in, i, ESPDP_DIR_IN);
		sa_out[i] = make_sa(dp_out, i, ESPDP_DIR_OUT);
		if ((err = espdp_table_add_sa(tin, sa_in[i])) || (err = espdp_table_add_sa(tout, sa_out[i])))
			die("espdp_table_add_sa", err);
	}
	for (size_t r = 0; r < NRULES; r++) {
		struct espdp_rule ours, theirs;
		espdp_sa *sa = NULL;

		make_rule(&rule_defs[r], 0, &ours);
		make_rule(&rule_defs[r], 1, &theirs);
		for (int i = 0; i < NSA; i++)
			if (defs[i].policy && defs[i].policy == rule_defs[r].policy)
				sa = sa_out[i];
		if ((err = espdp_table_add_rule(tin, &ours, NULL)) ||
		    (err = espdp_table_add_rule(tout, &theirs, sa)))
			die("espdp_table_add_rule", err);
	}
	if ((err = espdp_publish(dp_in, tin)) || (err = espdp_publish(dp_out, tout)))
		die("espdp_publish", err);
}

/* --- per-input state --- */

static const uint64_t tops[8] = { 0, 1, 63, 1000, 0x7fffffff, 0xfffffff0, 0x100000005ull,
				  0x1fffffff0ull };

/* Every inbound window empty with its top at `top` (non-ESN SAs: its low 32 bits). */
static void reset_windows(uint64_t top)
{
	for (int i = 0; i < NSA; i++)
		espdp_sa_test_set_seq(sa_in[i], defs[i].esn ? top : (uint32_t)top);
}

/* A sequence number choice: the next outbound number is seq_for(sel) + 1 on ESN SAs. */
static uint64_t seq_base(uint8_t sel)
{
	switch (sel & 3) {
	case 0: return sel >> 2; /* near 0 */
	case 1: return 0xffffffffull - (sel >> 2); /* just below 2^32 */
	case 2: return 0x100000000ull + (sel >> 2); /* past 2^32 (ESN only) */
	default: return 0x7fffffffull + (sel >> 2);
	}
}

static void reset_out(uint64_t seq)
{
	for (int i = 0; i < NSA; i++)
		espdp_sa_test_set_seq(sa_out[i], defs[i].esn ? seq : (uint32_t)seq);
}

/* --- harness-side ESP sealing (independent of native/crypto.c) --- */

static void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void wr32(uint8_t *p, uint32_t v) { wr16(p, (uint16_t)(v >> 16)); wr16(p + 2, (uint16_t)v); }

static void v4_checksum(uint8_t *h, size_t len)
{
	uint32_t s = 0;

	h[10] = h[11] = 0;
	for (size_t i = 0; i < len; i += 2)
		s += (uint32_t)(h[i] << 8 | h[i + 1]);
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	wr16(h + 10, (uint16_t)~s);
}

static const EVP_CIPHER *evp_cipher(const struct sa_def *d)
{
	switch (d->cipher) {
	case ESPDP_CIPHER_AES_GCM:
		return d->key_bits == 128 ? EVP_aes_128_gcm() : d->key_bits == 192 ? EVP_aes_192_gcm() :
										     EVP_aes_256_gcm();
	case ESPDP_CIPHER_CHACHA20_POLY1305:
		return EVP_chacha20_poly1305();
	case ESPDP_CIPHER_AES_CBC:
		return d->key_bits == 128 ? EVP_aes_128_cbc() : d->key_bits == 192 ? EVP_aes_192_cbc() :
										     EVP_aes_256_cbc();
	default:
		return NULL;
	}
}

static const EVP_MD *evp_md(uint8_t integ)
{
	switch (integ) {
	case ESPDP_INTEG_HMAC_SHA1_96: return EVP_sha1();
	case ESPDP_INTEG_HMAC_SHA256_128: return EVP_sha256();
	case ESPDP_INTEG_HMAC_SHA384_192: return EVP_sha384();
	default: return EVP_sha512();
	}
}

/* esp: SPI, seq_lo, IV (filled in), then the plaintext of plen bytes already in place; the
 * ICV is written after it. seq is the full 64-bit number. */
static void seal(int i, uint8_t *esp, size_t plen, uint64_t seq, const uint8_t *iv_src)
{
	const struct sa_def *d = &defs[i];
	const struct sa_keys *k = &keys[i];
	uint8_t *iv = esp + 8, *pt = iv + k->iv_len;
	EVP_CIPHER_CTX *c;
	int n;

	wr32(esp, d->spi);
	wr32(esp + 4, (uint32_t)seq);
	memcpy(iv, iv_src, k->iv_len);
	if (d->integ == ESPDP_INTEG_NONE) { /* AEAD: nonce = salt || IV */
		uint8_t nonce[12], aad[12];
		size_t aad_len;

		memcpy(nonce, k->key + k->key_len - 4, 4);
		memcpy(nonce + 4, iv, 8);
		memcpy(aad, esp, 4);
		if (d->esn) {
			wr32(aad + 4, (uint32_t)(seq >> 32));
			wr32(aad + 8, (uint32_t)seq);
			aad_len = 12;
		} else {
			wr32(aad + 4, (uint32_t)seq);
			aad_len = 8;
		}
		c = EVP_CIPHER_CTX_new();
		if (!c || !EVP_EncryptInit_ex(c, evp_cipher(d), NULL, k->key, nonce) ||
		    !EVP_EncryptUpdate(c, NULL, &n, aad, (int)aad_len) ||
		    (plen && !EVP_EncryptUpdate(c, pt, &n, pt, (int)plen)) ||
		    !EVP_EncryptFinal_ex(c, pt + plen, &n) ||
		    !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 16, pt + plen))
			die("harness AEAD", 0);
		EVP_CIPHER_CTX_free(c);
		return;
	}
	if (d->cipher == ESPDP_CIPHER_AES_CBC && plen) {
		c = EVP_CIPHER_CTX_new();
		if (!c || !EVP_EncryptInit_ex(c, evp_cipher(d), NULL, k->key, iv) ||
		    !EVP_CIPHER_CTX_set_padding(c, 0) || !EVP_EncryptUpdate(c, pt, &n, pt, (int)plen))
			die("harness CBC", 0);
		EVP_CIPHER_CTX_free(c);
	}
	{
		uint8_t mac[64];
		unsigned ml = 0;
		size_t alen = 8 + k->iv_len + plen;
		uint8_t *a = malloc(alen + 4);

		if (!a)
			abort();
		memcpy(a, esp, alen); /* SPI || seq || IV || ciphertext [|| seq_hi] */
		wr32(a + alen, (uint32_t)(seq >> 32));
		if (!HMAC(evp_md(d->integ), k->auth, (int)k->auth_len, a, alen + (d->esn ? 4 : 0),
			  mac, &ml))
			die("harness HMAC", 0);
		free(a);
		memcpy(pt + plen, mac, k->icv_len);
	}
}

/* Outer header(s) for SA i (from the peer to us) in front of an ESP part of esp_len bytes.
 * Returns the header length; opts adds 4 bytes of IPv4 options. */
static size_t outer(int i, uint8_t *o, size_t esp_len, uint8_t ecn, int opts, int df)
{
	const struct sa_def *d = &defs[i];
	size_t udp = d->encap == ESPDP_ENCAP_UDP ? 8 : 0, hl;
	uint8_t proto = udp ? 17 : 50;

	if (d->family == 4) {
		hl = opts ? 24 : 20;
		memset(o, 0, hl);
		o[0] = (uint8_t)(0x40 | hl / 4);
		o[1] = ecn & 3;
		wr16(o + 2, (uint16_t)(hl + udp + esp_len));
		wr16(o + 6, df ? 0x4000 : 0);
		o[8] = 64;
		o[9] = proto;
		memcpy(o + 12, v4_peer, 4);
		memcpy(o + 16, v4_local, 4);
		if (opts)
			memset(o + 20, 1, 4); /* NOPs */
		v4_checksum(o, hl);
	} else {
		hl = 40;
		memset(o, 0, hl);
		wr32(o, 6u << 28 | (uint32_t)(ecn & 3) << 20);
		wr16(o + 4, (uint16_t)(udp + esp_len));
		o[6] = proto;
		o[7] = 64;
		memcpy(o + 8, v6_peer, 16);
		memcpy(o + 24, v6_local, 16);
	}
	if (udp) {
		wr16(o + hl, PORT_PEER);
		wr16(o + hl + 2, PORT_US);
		wr16(o + hl + 4, (uint16_t)(8 + esp_len));
		wr16(o + hl + 6, 0);
	}
	return hl + udp;
}

/* --- the packet buffer: exactly headroom + packet + tailroom, so ASan sees any overrun --- */

struct pbuf {
	uint8_t *buf;
	struct espdp_pkt p;
};

static void pbuf_init(struct pbuf *b, const uint8_t *data, size_t len)
{
	b->buf = malloc(HEADROOM + len + TAILROOM);
	if (!b->buf)
		abort();
	memset(b->buf, 0xee, HEADROOM + len + TAILROOM);
	if (len)
		memcpy(b->buf + HEADROOM, data, len);
	memset(&b->p, 0, sizeof(b->p));
	b->p.buf = b->buf;
	b->p.cap = (uint32_t)(HEADROOM + len + TAILROOM);
	b->p.off = HEADROOM;
	b->p.len = (uint32_t)len;
}

static void check_bounds(const struct espdp_pkt *p)
{
	CHECK((uint64_t)p->off + p->len <= p->cap, "off %u len %u cap %u", p->off, p->len, p->cap);
}

/* --- mode 0: raw outer packets --- */

static void fuzz_raw(uint8_t param, const uint8_t *data, size_t len)
{
	struct pbuf b[2];
	struct espdp_pkt pk[2];
	size_t n = param & 0x20 ? 2 : 1; /* twice in one batch: replay of the same packet */

	reset_windows(tops[param & 7]);
	espdp_classify(dp_in, data, len);
	for (size_t k = 0; k < n; k++) {
		pbuf_init(&b[k], data, len);
		pk[k] = b[k].p;
	}
	espdp_decap_batch(dp_in, 0, pk, n);
	for (size_t k = 0; k < n; k++) {
		if (pk[k].result == 0)
			check_bounds(&pk[k]);
		free(b[k].buf);
	}
}

/* --- mode 1: a valid ESP packet around fuzzer-chosen plaintext --- */

static int rfc6040(uint8_t inner, uint8_t outer)
{
	if (outer == 3)
		return inner == 0 ? -1 : 3;
	if (outer == 1 && inner == 2)
		return 1;
	return inner;
}

/* flags[0]: bits 0-1 outer ECN, bit 2 auto trailer, bit 3 twice, bit 4 IPv4 options,
 *           bit 5 DF, bits 6-7 replay distance class
 * flags[1]: sequence number choice (seq_base); flags[2]: next header (auto trailer, 0 =
 * the right one); flags[3]: extra padding blocks (auto trailer) */
static void fuzz_sealed(int i, const uint8_t *flags, const uint8_t *data, size_t len)
{
	const struct sa_def *d = &defs[i];
	const struct sa_keys *k = &keys[i];
	uint8_t ecn = flags[0] & 3, nh = flags[2], ivsrc[16];
	int autotr = flags[0] & 4, twice = flags[0] & 8;
	uint64_t seq = seq_base(flags[1]) + 1, top;
	size_t plen, pad = 0, hdr_max = 40 + 8, esp_len, hl, total;
	uint8_t *pkt, *esp;
	struct pbuf b[2];
	struct espdp_pkt pk[2];
	size_t n = twice ? 2 : 1;

	if (!d->esn)
		seq = (uint32_t)seq;
	/* window top below seq by 1, 2, a window's worth, or equal to it (a replay) */
	switch (flags[0] >> 6) {
	case 0: top = seq - 1; break;
	case 1: top = seq > 2 ? seq - 2 : 0; break;
	case 2: top = seq > d->window ? seq - d->window : 0; break;
	default: top = seq; break;
	}
	if (len > 4096)
		len = 4096;
	if (autotr) {
		pad = (k->block - (len + 2) % k->block) % k->block;
		pad += k->block * (flags[3] % (256 / k->block > 16 ? 16 : 256 / k->block));
		if (pad > 255)
			pad -= k->block * ((pad - 255 + k->block - 1) / k->block);
		plen = len + pad + 2;
		if (!nh)
			nh = d->mode == ESPDP_MODE_TRANSPORT ? 6 : len && data[0] >> 4 == 6 ? 41 : 4;
	} else {
		plen = len - len % k->block;
	}
	esp_len = 8 + k->iv_len + plen + k->icv_len;
	pkt = calloc(1, hdr_max + esp_len);
	if (!pkt)
		abort();
	hl = outer(i, pkt, esp_len, ecn, (flags[0] & 0x10) != 0, (flags[0] & 0x20) != 0);
	esp = pkt + hl;
	memcpy(esp + 8 + k->iv_len, data, autotr ? len : plen);
	if (autotr) {
		uint8_t *t = esp + 8 + k->iv_len + len;

		for (size_t j = 0; j < pad; j++)
			t[j] = (uint8_t)(j + 1);
		t[pad] = (uint8_t)pad;
		t[pad + 1] = nh;
	}
	for (int j = 0; j < 16; j++)
		ivsrc[j] = (uint8_t)(seq >> (j % 8) ^ 0x5c ^ j);
	seal(i, esp, plen, seq, ivsrc);
	total = hl + esp_len;

	reset_windows(0);
	espdp_sa_test_set_seq(sa_in[i], top);
	for (size_t j = 0; j < n; j++) {
		pbuf_init(&b[j], pkt, total);
		pk[j] = b[j].p;
	}
	espdp_decap_batch(dp_in, 0, pk, n);

	/* Oracles: the packet was sealed right for this SA */
	int r = pk[0].result;
	CHECK(r != D_auth_failed && r != D_crypto_error && r != D_unknown_spi &&
	      r != D_encap_mismatch && r != D_malformed,
	      "SA %d (spi %#x) plen %zu seq %#llx top %#llx: result %d (%s)", i, d->spi, plen,
	      (unsigned long long)seq, (unsigned long long)top, r, espdp_drop_name((unsigned)r));
	if (plen >= 2 && plen % k->block == 0 && seq && (top < seq || !d->window))
		CHECK(r != D_bad_length && r != D_replay_old && r != D_replay_dup,
		      "SA %d: result %d (%s)", i, r, espdp_drop_name((unsigned)r));
	if (r == 0) {
		const uint8_t *out = pk[0].buf + pk[0].off, *pt = data;

		check_bounds(&pk[0]);
		CHECK(pk[0].sa == sa_in[i], "passed on another SA");
		if (d->mode == ESPDP_MODE_TUNNEL) {
			uint8_t fam = out[0] >> 4, in_ecn, out_ecn;

			CHECK(pk[0].len <= len, "inner %u longer than the plaintext %zu", pk[0].len, len);
			CHECK(fam == 4 || fam == 6, "inner family");
			in_ecn = fam == 4 ? pt[1] & 3 : (pt[1] >> 4) & 3;
			out_ecn = fam == 4 ? out[1] & 3 : (out[1] >> 4) & 3;
			CHECK(rfc6040(in_ecn, ecn) == out_ecn, "ECN inner %d outer %d -> %d", in_ecn,
			      ecn, out_ecn);
			for (uint32_t j = 0; j < pk[0].len; j++) {
				uint8_t m = 0xff;

				if (fam == 4 && j == 1)
					m = 0xfc;
				if (fam == 4 && (j == 10 || j == 11))
					m = 0;
				if (fam == 6 && j == 1)
					m = 0xcf;
				CHECK((out[j] & m) == (pt[j] & m), "inner byte %u differs", j);
			}
		} else {
			uint32_t ohl = (uint32_t)(d->family == 4 ? ((flags[0] & 0x10) ? 24 : 20) : 40);
			uint32_t inner = pk[0].len - ohl;

			CHECK(pk[0].len >= ohl, "transport result shorter than its header");
			CHECK(inner <= len, "transport payload %u longer than the plaintext", inner);
			CHECK(memcmp(out + ohl, pt, inner) == 0, "transport payload differs");
			CHECK(out[d->family == 4 ? 9 : 6] == nh || !autotr, "next header not restored");
		}
	} else if (r == D_ecn_drop) {
		CHECK(ecn == 3, "ecn_drop without CE");
	}
	if (twice && r == 0 && d->window)
		CHECK(pk[1].result == D_replay_dup, "a replay passed: %d", pk[1].result);
	for (size_t j = 0; j < n; j++)
		free(b[j].buf);
	free(pkt);
}

/* --- modes 2 and 3: the peer seals arbitrary inner bytes, we open them --- */

static void fuzz_roundtrip(int explicit_sa, int i, uint8_t seqsel, const uint8_t *data, size_t len)
{
	struct pbuf b;
	struct espdp_pkt pk;
	uint64_t seq = seq_base(seqsel);
	int r, ri;

	if (len > 8192)
		len = 8192;
	reset_out(seq);
	for (int j = 0; j < NSA; j++) /* our windows just below what the peer sends next */
		espdp_sa_test_set_seq(sa_in[j], defs[j].esn ? seq : (uint32_t)seq);
	pbuf_init(&b, data, len);
	pk = b.p;
	pk.sa = explicit_sa ? sa_out[i] : NULL;
	espdp_encap_batch(dp_out, 0, &pk, 1);
	r = pk.result;
	if (r == 0) {
		int k = -1;
		uint8_t inner_nh = 0;

		check_bounds(&pk);
		for (int j = 0; j < NSA; j++)
			if (pk.sa == sa_out[j])
				k = j;
		CHECK(k >= 0, "sealed with an unknown SA");
		if (defs[k].mode == ESPDP_MODE_TRANSPORT) { /* the packet's own protocol */
			/* IPv6: the byte restored depends on the extension header walk; any */
			inner_nh = data[0] >> 4 == 4 ? data[9] : 0xff;
		}
		espdp_decap_batch(dp_in, 0, &pk, 1);
		ri = pk.result;
		if (ri == 0) {
			check_bounds(&pk);
			CHECK(pk.sa == sa_in[k], "opened by another SA");
			CHECK(pk.len == len, "round trip changed the length: %zu -> %u", len, pk.len);
			for (uint32_t j = 0; j < pk.len; j++) {
				int skip = defs[k].mode == ESPDP_MODE_TRANSPORT && data[0] >> 4 == 4 &&
					   (j == 10 || j == 11); /* transport: IPv4 checksum recomputed */
				CHECK(skip || pk.buf[pk.off + j] == data[j], "round trip changed byte %u", j);
			}
		} else {
			int transport = defs[k].mode == ESPDP_MODE_TRANSPORT;

			CHECK((explicit_sa && (ri == D_selector_mismatch ||
					       (transport && ri == D_unknown_spi))) ||
			      (transport && (ri == D_bad_next_header || ri == D_dummy) &&
			       (inner_nh == 0xff || inner_nh == 4 || inner_nh == 41 || inner_nh == 59)),
			      "the peer sealed it with SA %d (spi %#x, %s) but we dropped it: %d (%s)", k,
			      defs[k].spi, transport ? "transport" : "tunnel", ri,
			      espdp_drop_name((unsigned)ri));
		}
	}
	free(b.buf);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	setup();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t b0;

	if (size < 1)
		return 0;
	b0 = data[0];
	switch (b0 & 3) {
	case 0:
		fuzz_raw(b0 >> 2, data + 1, size - 1);
		break;
	case 1:
		if (size < 5)
			return 0;
		fuzz_sealed((b0 >> 2) % NSA, data + 1, data + 5, size - 5);
		break;
	default:
		if (size < 2)
			return 0;
		fuzz_roundtrip((b0 & 3) == 3, (b0 >> 2) % NSA, data[1], data + 2, size - 2);
		break;
	}
	return 0;
}

#ifdef FUZZ_SEED_MAIN
/* Seed corpus: for every SA, inner packets it protects, as inputs of every mode. */

static size_t inner_packet(int i, int variant, uint8_t *o)
{
	const struct sa_def *d = &defs[i];
	static const char *v4src[] = { [1] = "10.2.0.5", [3] = "198.51.100.1", [5] = "10.6.1.1" };
	static const char *v4dst[] = { [1] = "10.1.0.7", [3] = "192.0.2.1", [5] = "10.5.2.2" };
	static const char *v6src[] = { [2] = "2001:db8:2::5", [4] = "2001:db8:4::1",
				       [6] = "2001:db8:eeee::1" };
	static const char *v6dst[] = { [2] = "2001:db8:1::7", [4] = "2001:db8:3::9",
				       [6] = "2001:db8:ffff::1" };
	uint32_t pol = d->policy ? d->policy : 3;
	int fam = (pol == 2 || pol == 4 || pol == 6 || (pol == 5 && variant)) ? 6 : 4;
	size_t plen = 8 + 24 + (size_t)variant * 13, total;
	uint8_t proto = pol == 5 && fam == 4 ? 1 : pol == 3 ? (variant ? 17 : 6) : (variant ? 6 : 17);
	uint8_t *l4;

	if (pol == 5 && fam == 6)
		pol = 7; /* the v6 rule of policy 5 */
	if (fam == 4) {
		total = 20 + plen;
		memset(o, 0, total);
		o[0] = 0x45;
		o[1] = variant ? 0x02 : 0; /* ECT(0) */
		wr16(o + 2, (uint16_t)total);
		o[8] = 64;
		o[9] = proto;
		inet_pton(AF_INET, v4src[pol], o + 12);
		inet_pton(AF_INET, v4dst[pol], o + 16);
		v4_checksum(o, 20);
		l4 = o + 20;
	} else {
		static const char *s5 = "2001:db8:6::1", *d5 = "2001:db8:5::1";

		total = 40 + plen;
		memset(o, 0, total);
		wr32(o, 6u << 28 | (variant ? 2u : 0u) << 20);
		wr16(o + 4, (uint16_t)plen);
		o[6] = proto;
		o[7] = 64;
		inet_pton(AF_INET6, pol == 7 ? s5 : v6src[pol], o + 8);
		inet_pton(AF_INET6, pol == 7 ? d5 : v6dst[pol], o + 24);
		l4 = o + 40;
	}
	wr16(l4, pol == 3 && proto == 17 ? 53 : pol == 3 ? 40000 : 1234);
	wr16(l4 + 2, pol == 3 && proto == 6 ? 443 : pol == 3 ? 40000 : 80);
	if (proto == 17)
		wr16(l4 + 4, (uint16_t)plen);
	for (size_t j = 8; j < plen; j++)
		l4[j] = (uint8_t)('a' + j % 26);
	return total;
}

static void write_seed(const char *dir, const char *name, const uint8_t *a, size_t alen,
		       const uint8_t *b, size_t blen)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(a, 1, alen, f) != alen || (blen && fwrite(b, 1, blen, f) != blen)) {
		perror(path);
		exit(1);
	}
	fclose(f);
}

int main(int argc, char **argv)
{
	uint8_t inner[512], hdr[5];
	char name[64];
	int count = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
		return 2;
	}
	setup();
	for (int i = 0; i < NSA; i++) {
		for (int v = 0; v < 2; v++) {
			size_t n = inner_packet(i, v, inner), tlen;
			uint8_t plain[600];
			struct pbuf b;
			struct espdp_pkt pk;

			/* the payload as the SA carries it: tunnel = the packet, transport = after the header */
			size_t hl = defs[i].mode == ESPDP_MODE_TRANSPORT ? (inner[0] >> 4 == 4 ? 20 : 40) : 0;

			tlen = n - hl;
			memcpy(plain, inner + hl, tlen);
			/* mode 1 (sealed), auto trailer */
			hdr[0] = (uint8_t)(1 | i << 2);
			hdr[1] = (uint8_t)(4 | (v ? 1 : 0)); /* auto trailer, ECT(1) outer on v */
			hdr[2] = (uint8_t)(v ? 4 : 0);
			hdr[3] = 0;
			hdr[4] = (uint8_t)v;
			snprintf(name, sizeof(name), "sealed-sa%d-%d", i, v);
			write_seed(argv[1], name, hdr, 5, plain, tlen);
			/* mode 1 without the auto trailer: the trailer written out */
			{
				size_t blk = keys[i].block, pad = (blk - (tlen + 2) % blk) % blk;
				uint8_t nh = defs[i].mode == ESPDP_MODE_TRANSPORT ? inner[hl == 20 ? 9 : 6] :
										      (inner[0] >> 4 == 4 ? 4 : 41);

				for (size_t j = 0; j < pad; j++)
					plain[tlen + j] = (uint8_t)(j + 1);
				plain[tlen + pad] = (uint8_t)pad;
				plain[tlen + pad + 1] = nh;
				hdr[1] = 0;
				snprintf(name, sizeof(name), "sealed-raw-sa%d-%d", i, v);
				write_seed(argv[1], name, hdr, 5, plain, tlen + pad + 2);
			}
			/* modes 2 and 3: the inner packet */
			hdr[0] = (uint8_t)(2 | i << 2);
			hdr[1] = (uint8_t)(v ? 1 | 4 : 8); /* seq near 2^32 on v */
			snprintf(name, sizeof(name), "classify-sa%d-%d", i, v);
			write_seed(argv[1], name, hdr, 2, inner, n);
			hdr[0] = (uint8_t)(3 | i << 2);
			snprintf(name, sizeof(name), "explicit-sa%d-%d", i, v);
			write_seed(argv[1], name, hdr, 2, inner, n);
			/* mode 0: the outer packet the peer seals (window top 0, seq 1..) */
			reset_out(v ? 5 : 0);
			pbuf_init(&b, inner, n);
			pk = b.p;
			pk.sa = sa_out[i];
			if (espdp_encap_batch(dp_out, 0, &pk, 1) != 1) {
				fprintf(stderr, "seed: SA %d variant %d: encap dropped %s\n", i, v,
					espdp_drop_name((unsigned)pk.result));
				return 1;
			}
			hdr[0] = (uint8_t)(v ? 0x20 << 2 : 0); /* v: twice in a batch */
			snprintf(name, sizeof(name), "raw-sa%d-%d", i, v);
			write_seed(argv[1], name, hdr, 1, pk.buf + pk.off, pk.len);
			/* it must open: a seed that does not is a broken seed */
			reset_windows(0);
			espdp_decap_batch(dp_in, 0, &pk, 1);
			if (pk.result) {
				fprintf(stderr, "seed: SA %d variant %d: decap dropped %s\n", i, v,
					espdp_drop_name((unsigned)pk.result));
				return 1;
			}
			free(b.buf);
			count += 5;
		}
	}
	/* the small ones: NAT keepalive, non-ESP marker, a bare ESP header */
	{
		static const uint8_t ka[] = { 0, 0x45, 0, 0, 29, 0, 0, 0, 0, 64, 17, 0, 0, 198, 51, 100, 1,
					      192, 0, 2, 1, 0x11, 0x94, 0x11, 0x94, 0, 9, 0, 0, 0xff };
		write_seed(argv[1], "natt-keepalive", ka, sizeof(ka), NULL, 0);
		count++;
	}
	printf("%d seeds written to %s\n", count, argv[1]);
	return 0;
}
#endif
