/* esp_in: inbound ESP (RFC 4303 3.4), in the order packets meet the stages:
 *
 *   1. in_outer      outer IPv4/IPv6 header; UDP 4500 (RFC 3948): the NAT keepalive
 *                    (0xFF) and the non-ESP marker (IKE) are recognised, never parsed as ESP;
 *                    in_punt hands an IKE message to the control plane (punt.c)
 *   2. in_lookup     SA by SPI and outer destination; its encapsulation must match
 *      in_source     the outer source must be the SA's peer (and port, per source_check)
 *   3. in_length     ESP header + IV + ICV present, payload a multiple of the block
 *   4. in_precheck   hard lifetime; anti-replay pre-check that changes nothing (ESN inferred)
 *   5. in_open       ICV verified in constant time, then the payload decrypted
 *   6. sa_replay_advance (sa.c)  anti-replay window advanced: only authenticated
 *                    packets move it; then sa_check_moved (sa.c): an SA with follow_peer
 *                    reports a packet from another address or port (peer_moved event)
 *   7. in_trailer    pad length, padding bytes 1, 2, 3, ..., next header (59: dummy);
 *                    the packet's inner bytes count against the SA's lifetime either way
 *   8. in_tunnel_inner     tunnel: the inner packet, ECN decapsulated per RFC 6040;
 *      in_transport_inner  transport: the IP header restored in front of the payload
 *   9. in_selector   the inner packet must be traffic that the SA's access list protects
 *  10. in_account    counters
 * A drop of a reason a forger can cause (droplog.h) is also offered to in_log: a sampled
 * record with the outer source and the SPI, never payload bytes.
 */
#include <string.h>

#include "dp.h"
#include "ip.h"
#include "sa.h"

struct in_pkt {
	struct ip_info outer;
	uint8_t *pkt; /* outer IP header */
	uint8_t *esp; /* ESP header */
	uint32_t esp_len; /* ESP header to the end of the ICV */
	uint16_t udp_sport, udp_dport; /* 0 for raw ESP */
	uint8_t encap; /* enum espdp_encap */
	uint32_t payload_len; /* encrypted payload: after the IV, before the ICV */
	uint64_t seq;
	uint8_t next_header;
	uint32_t inner_len; /* payload without padding and trailer */
};

static int in_outer(uint8_t *pkt, uint32_t len, struct in_pkt *in)
{
	uint8_t *l4;
	uint32_t l4_len;

	in->encap = ESPDP_ENCAP_ESP; /* before any return: in_log reads them */
	in->udp_sport = in->udp_dport = 0;
	if (ip_parse(pkt, len, &in->outer) || in->outer.frag)
		return ESPD_DROP_malformed;
	in->pkt = pkt;
	l4 = pkt + in->outer.hdr_len;
	l4_len = in->outer.total_len - in->outer.hdr_len;
	if (in->outer.proto == IPPROTO_NUM_UDP) {
		if (l4_len < UDP_HDR_LEN || rd16(l4 + 4) != l4_len)
			return ESPD_DROP_malformed;
		in->encap = ESPDP_ENCAP_UDP;
		in->udp_sport = rd16(l4);
		in->udp_dport = rd16(l4 + 2);
		l4 += UDP_HDR_LEN;
		l4_len -= UDP_HDR_LEN;
		in->esp = l4;
		in->esp_len = l4_len;
		if (l4_len == 1 && l4[0] == NATT_KEEPALIVE)
			return ESPD_DROP_nat_keepalive;
		if (l4_len >= NON_ESP_MARKER_LEN && rd32(l4) == 0)
			return ESPD_DROP_non_esp_marker;
	} else if (in->outer.proto != IPPROTO_NUM_ESP) {
		return ESPD_DROP_malformed;
	}
	if (l4_len < ESP_HDR_LEN)
		return ESPD_DROP_malformed;
	in->esp = l4;
	in->esp_len = l4_len;
	return 0;
}

/* An IKE message on the NAT-T port: queued for the control plane with its addresses and
 * ports. Either way the packet leaves the decap path here (result non_esp_marker); only a
 * full queue counts as a drop (punt_full). */
static int in_punt(espdp *dp, const struct in_pkt *in)
{
	struct espdp_punted meta;
	size_t alen = in->outer.family == 4 ? 4 : 16;

	memset(&meta, 0, sizeof(meta));
	meta.family = in->outer.family;
	meta.sport = in->udp_sport;
	meta.dport = in->udp_dport;
	meta.len = in->esp_len - NON_ESP_MARKER_LEN;
	memcpy(meta.src, in->pkt + (in->outer.family == 4 ? 12 : 8), alen);
	memcpy(meta.dst, in->pkt + (in->outer.family == 4 ? 16 : 24), alen);
	return punt_push(dp, &meta, in->esp + NON_ESP_MARKER_LEN);
}

static int in_lookup(const struct espdp_table *t, const struct in_pkt *in, espdp_sa **sa)
{
	uint32_t spi = rd32(in->esp);
	const uint8_t *dst = in->pkt + (in->outer.family == 4 ? 16 : 24);

	*sa = spi > ESP_SPI_RESERVED_MAX && t ? sad_lookup(&t->sad, spi, in->outer.family, dst) : NULL;
	return *sa ? 0 : ESPD_DROP_unknown_spi;
}

/* Against the SA's remote as it stands now (espdp_sa_set_remote may have moved it). */
static int in_source(const espdp_sa *sa, const struct in_pkt *in)
{
	const uint8_t *src = in->pkt + (in->outer.family == 4 ? 12 : 8);
	struct sa_remote remote;

	if (sa->cfg.source_check == ESPDP_SOURCE_ANY)
		return 0;
	if (sa->cfg.peer.family != in->outer.family)
		return ESPD_DROP_wrong_source;
	sa_remote_get(sa, &remote);
	if (memcmp(src, remote.addr, in->outer.family == 4 ? 4 : 16))
		return ESPD_DROP_wrong_source;
	if (sa->cfg.source_check == ESPDP_SOURCE_STRICT && in->encap == ESPDP_ENCAP_UDP &&
	    in->encap == sa->cfg.encap && in->udp_sport != remote.port)
		return ESPD_DROP_wrong_source;
	return 0;
}

static int in_length(const espdp_sa *sa, struct in_pkt *in)
{
	uint32_t fixed = ESP_HDR_LEN + sa->alg.iv_len + sa->alg.icv_len;

	if (in->encap != sa->cfg.encap || (in->encap == ESPDP_ENCAP_UDP && in->udp_dport != sa->cfg.sport))
		return ESPD_DROP_encap_mismatch;
	if (in->esp_len < fixed + ESP_TRAILER_LEN)
		return ESPD_DROP_bad_length;
	in->payload_len = in->esp_len - fixed;
	if (in->payload_len % sa->alg.block)
		return ESPD_DROP_bad_length;
	return 0;
}

static int in_precheck(espdp_sa *sa, struct in_pkt *in, int64_t now)
{
	int r = sa_admit(sa, now);

	return r ? r : replay_check(&sa->replay, rd32(in->esp + 4), &in->seq);
}

static int in_open(espdp_sa *sa, unsigned w, struct in_pkt *in)
{
	struct crypto_ctx *ctx = sa_ctx(sa, w);

	if (!ctx)
		return ESPD_DROP_crypto_error;
	if (crypto_open(ctx, in->esp, in->payload_len, in->seq, sa->cfg.esn))
		return ESPD_DROP_auth_failed;
	return 0;
}

static int in_trailer(const espdp_sa *sa, struct in_pkt *in)
{
	const uint8_t *payload = in->esp + ESP_HDR_LEN + sa->alg.iv_len;
	uint8_t pad = payload[in->payload_len - 2];

	in->next_header = payload[in->payload_len - 1];
	in->inner_len = in->payload_len;
	if ((uint32_t)pad + ESP_TRAILER_LEN > in->payload_len)
		return ESPD_DROP_bad_padding;
	in->inner_len = in->payload_len - ESP_TRAILER_LEN - pad;
	for (uint32_t i = 0; i < pad; i++)
		if (payload[in->inner_len + i] != (uint8_t)(i + 1))
			return ESPD_DROP_bad_padding;
	if (in->next_header == IPPROTO_NUM_NONE)
		return ESPD_DROP_dummy;
	if (sa->cfg.mode == ESPDP_MODE_TUNNEL && in->next_header != IPPROTO_NUM_IPIP &&
	    in->next_header != IPPROTO_NUM_IPV6)
		return ESPD_DROP_bad_next_header;
	return 0;
}

/* RFC 6040 4.2: the inner ECN field after decapsulation, or -1 to drop. */
static int ecn_decap(uint8_t inner, uint8_t outer)
{
	if (outer == ECN_CE)
		return inner == ECN_NOT_ECT ? -1 : ECN_CE;
	if (outer == ECN_ECT1 && inner == ECN_ECT0)
		return ECN_ECT1;
	return inner;
}

static int in_tunnel_inner(const espdp_sa *sa, struct in_pkt *in, struct espdp_pkt *p)
{
	uint8_t *inner = in->esp + ESP_HDR_LEN + sa->alg.iv_len;
	struct ip_info ip;
	int ecn;

	if (ip_parse(inner, in->inner_len, &ip) ||
	    ip.family != (in->next_header == IPPROTO_NUM_IPIP ? 4 : 6))
		return ESPD_DROP_inner_malformed;
	ecn = ecn_decap(ip.tos & ECN_MASK, in->outer.tos & ECN_MASK);
	if (ecn < 0)
		return ESPD_DROP_ecn_drop;
	if (ecn != (ip.tos & ECN_MASK))
		ip_set_tos(inner, ip.family, (uint8_t)((ip.tos & ~ECN_MASK) | ecn));
	p->off = (uint32_t)(inner - p->buf);
	p->len = ip.total_len; /* bytes past it are TFC padding (RFC 4303 2.7) */
	return 0;
}

static int in_transport_inner(const espdp_sa *sa, struct in_pkt *in, struct espdp_pkt *p)
{
	uint32_t hdr_len = in->outer.hdr_len;
	uint8_t *payload = in->esp + ESP_HDR_LEN + sa->alg.iv_len, *hdr = payload - hdr_len;
	uint32_t total = hdr_len + in->inner_len;

	if (in->next_header == IPPROTO_NUM_IPIP || in->next_header == IPPROTO_NUM_IPV6)
		return ESPD_DROP_bad_next_header;
	memmove(hdr, in->pkt, hdr_len);
	hdr[in->outer.nh_off] = in->next_header;
	if (in->outer.family == 4) {
		wr16(hdr + 2, (uint16_t)total);
		ip4_set_checksum(hdr);
	} else {
		wr16(hdr + 4, (uint16_t)(total - IPV6_HDR_LEN));
	}
	p->off = (uint32_t)(hdr - p->buf);
	p->len = total;
	return 0;
}

static int in_selector(const struct espdp_table *t, const espdp_sa *sa, const struct espdp_pkt *p)
{
	struct spd_key key;
	long r;

	if (!sa->cfg.policy)
		return 0; /* an SA installed without a crypto map entry: no selectors to check */
	if (!t->spd || spd_key_from_packet(p->buf + p->off, p->len, 1, &key))
		return ESPD_DROP_selector_mismatch;
	r = spd_classify(t->spd, &key);
	if (r < 0 || t->rules[r].action != ESPDP_ACTION_PROTECT || t->rules[r].policy != sa->cfg.policy)
		return ESPD_DROP_selector_mismatch;
	return 0;
}

static void in_account(espdp_sa *sa, const struct espdp_pkt *p)
{
	ctr_add(&sa->ctr.decaps, 1);
	if (sa->alg.cipher != ESPDP_CIPHER_NULL)
		ctr_add(&sa->ctr.decrypt, 1);
	ctr_add(&sa->ctr.verify, 1);
	ctr_add(&sa->ctr.packets, 1);
	ctr_add(&sa->ctr.bytes, p->len);
}

/* The record for drop `r` of the packet whose outer header starts at raw (len bytes,
 * as received): the addresses from the IP header if it is there at all, the UDP port
 * and the SPI if in_outer got that far. Out of line: only sampled drops get here. */
static __attribute__((noinline)) void in_log_fill(struct espdp_drop_record *rec, unsigned w,
						  int r, const uint8_t *raw, uint32_t len,
						  const struct in_pkt *in, int64_t now)
{
	uint8_t version = len ? raw[0] >> 4 : 0;

	rec->time_ns = (uint64_t)now;
	rec->reason = (uint8_t)r;
	rec->direction = ESPDP_DIR_IN;
	rec->worker = (uint16_t)w;
	if (version == 4 && len >= IPV4_HDR_MIN) {
		rec->family = 4;
		memcpy(rec->src, raw + 12, 4);
		memcpy(rec->dst, raw + 16, 4);
	} else if (version == 6 && len >= IPV6_HDR_LEN) {
		rec->family = 6;
		memcpy(rec->src, raw + 8, 16);
		memcpy(rec->dst, raw + 24, 16);
	}
	if (in->encap == ESPDP_ENCAP_UDP) {
		rec->sport = in->udp_sport;
		rec->flags |= ESPDP_DROP_RECORD_PORT;
	}
	if (r != ESPD_DROP_malformed) { /* past in_outer: the ESP header is there */
		rec->spi = rd32(in->esp);
		rec->flags |= ESPDP_DROP_RECORD_SPI;
	}
}

/* Offer drop `r` to worker w's drop log (droplog.h); most of a flood ends at the bucket. */
static inline void in_log(espdp *dp, unsigned w, int r, const uint8_t *raw, uint32_t len,
			  const struct in_pkt *in, int64_t now)
{
	struct espdp_drop_record *rec;

	if (!droplog_wanted(r) || !(rec = droplog_reserve(&dp->droplog[w], r, now)))
		return;
	in_log_fill(rec, w, r, raw, len, in, now);
	droplog_commit(&dp->droplog[w]);
}

/* Stages 2 to 10 for one packet whose outer header (stage 1) gave `r`. */
static int decap_one(espdp *dp, const struct espdp_table *t, unsigned w, struct espdp_pkt *p,
		     struct in_pkt *in, int r, int64_t now)
{
	const uint8_t *raw = p->buf + p->off; /* the outer header, before any stage moves off */
	uint32_t raw_len = p->len;
	espdp_sa *sa = NULL;

	p->sa = NULL;
	if (r == ESPD_DROP_non_esp_marker)
		return in_punt(dp, in) ? ESPD_DROP_punt_full : r;
	if (r || (r = in_lookup(t, in, &sa))) {
		dp_drop(dp, ESPDP_DIR_IN, r);
		in_log(dp, w, r, raw, raw_len, in, now);
		return r;
	}
	p->sa = sa;
	if ((r = in_source(sa, in)) || (r = in_length(sa, in)) || (r = in_precheck(sa, in, now)) || (r = in_open(sa, w, in)) ||
	    (r = sa_replay_advance(sa, in->seq)))
		goto drop;
	/* authenticated and new (RFC 7296 2.23: never on a replay): may report a move */
	if (sa->cfg.follow_peer && in->encap == ESPDP_ENCAP_UDP)
		sa_check_moved(sa, in->pkt + (in->outer.family == 4 ? 12 : 8), in->udp_sport, now);
	r = in_trailer(sa, in); /* authenticated: it counts against the lifetime either way */
	sa_use(sa, in->inner_len, now);
	if (r)
		goto drop;
	r = sa->cfg.mode == ESPDP_MODE_TUNNEL ? in_tunnel_inner(sa, in, p) :
						 in_transport_inner(sa, in, p);
	if (r || (r = in_selector(t, sa, p)))
		goto drop;
	in_account(sa, p);
	return 0;
drop:
	sa_drop(sa, r);
	in_log(dp, w, r, raw, raw_len, in, now);
	return r;
}

/* Packets go through in chunks: the outer headers of a whole chunk are parsed first and
 * the SAD slots and SAs they need start loading, so that with many active SAs the cache
 * misses of one chunk overlap instead of following one another. */
#define DECAP_CHUNK 16

size_t espdp_decap_batch(espdp *dp, unsigned worker, struct espdp_pkt *pkts, size_t n)
{
	struct in_pkt in[DECAP_CHUNK];
	int outer[DECAP_CHUNK];
	espdp_sa *home[DECAP_CHUNK];
	struct espdp_table *t;
	int64_t now;
	size_t ok = 0;

	if (!dp_worker_ok(dp, worker, pkts, n))
		return 0;
	t = dp_enter(dp, worker);
	now = dp_now(dp);
	for (size_t base = 0; base < n; base += DECAP_CHUNK) {
		size_t m = n - base < DECAP_CHUNK ? n - base : DECAP_CHUNK;

		for (size_t i = 0; i < m; i++) {
			struct espdp_pkt *p = &pkts[base + i];

			outer[i] = in_outer(p->buf + p->off, p->len, &in[i]);
			if (!outer[i] && t)
				sad_prefetch_slot(&t->sad, rd32(in[i].esp));
		}
		for (size_t i = 0; i < m; i++)
			home[i] = t && !outer[i] ? sad_prefetch_sa(&t->sad, rd32(in[i].esp)) : NULL;
		for (size_t i = 0; i < m; i++) /* a pass later, when the SA lines have arrived */
			if (home[i] && home[i]->ctx[worker])
				crypto_prefetch(home[i]->ctx[worker]);
		for (size_t i = 0; i < m; i++) {
			pkts[base + i].result = decap_one(dp, t, worker, &pkts[base + i], &in[i],
							  outer[i], now);
			ok += pkts[base + i].result == 0;
		}
	}
	dp_leave(dp, worker);
	return ok;
}
