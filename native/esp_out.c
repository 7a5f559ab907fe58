/* esp_out: outbound ESP (RFC 4303), in the order packets meet the stages:
 *
 *   1. out_classify  SPD lookup (when the caller named no SA): PROTECT(sa) or drop;
 *                    a PROTECT rule without an SA raises acquire (out_acquire)
 *   2. out_place     where ESP goes: in front of the whole packet (tunnel) or after its
 *                    IP header(s) (transport); room checks
 *   3. out_admit     hard lifetime, next sequence number (never cycles)
 *   4. out_trailer   padding 1, 2, 3, ..., pad length, next header
 *   5. out_seal      SPI, sequence number, IV, encryption, ICV
 *   6. out_tunnel_header     outer IPv4/IPv6 with DSCP and ECN copied (RFC 6040 normal
 *                            mode), or
 *      out_transport_header  the packet's own header re-pointed at ESP;
 *      out_udp               then the UDP header (RFC 3948) for a UDP-encapsulated SA
 *   7. out_account   counters, lifetime usage, soft-expiry event
 *
 * Invariant: a packet either leaves this file sealed, or it is dropped and counted. There
 * is no path on which the inner packet is returned as passed without ESP around it.
 */
#include <stdint.h>
#include <string.h>

#include "dp.h"
#include "ip.h"
#include "sa.h"

struct out_plan {
	struct ip_info ip; /* the inner packet (tunnel) or the packet itself (transport) */
	uint32_t head; /* bytes in front of ESP: outer IP (+UDP) or the packet's own headers */
	uint32_t front; /* how far the packet's start moves towards the headroom */
	uint32_t protected_len; /* bytes that go inside ESP */
	uint32_t pad;
	uint8_t next_header;
};

/* A PROTECT rule without an SA: tell the keying side, at most once per rule and
 * ACQUIRE_INTERVAL_NS (the first worker to claim the interval raises it). */
static void out_acquire(espdp *dp, struct table_rule *rule, uint32_t index,
			const struct spd_key *key, int64_t now)
{
	int64_t last = __atomic_load_n(&rule->acquire_ns, __ATOMIC_RELAXED);

	if (last != INT64_MIN && now - last < ACQUIRE_INTERVAL_NS)
		return;
	if (__atomic_compare_exchange_n(&rule->acquire_ns, &last, now, 0, __ATOMIC_RELAXED,
					__ATOMIC_RELAXED))
		events_push_acquire(dp, index, rule->policy, key);
}

/* ff02::/16 or 224.0.0.0/24: never forwarded, so never a tunnel's traffic (the kernel's
 * own MLD/IGMP on the TUN device); counted apart from no_policy. */
static int link_scope_multicast(const uint8_t *pkt, uint32_t len)
{
	if (len >= IPV6_HDR_LEN && pkt[0] >> 4 == 6)
		return pkt[24] == 0xff && (pkt[25] & 0x0f) == 2;
	return len >= IPV4_HDR_MIN && pkt[0] >> 4 == 4 && pkt[16] == 224 && !pkt[17] && !pkt[18];
}

static int out_classify(espdp *dp, struct espdp_table *t, const uint8_t *pkt, uint32_t len,
			int64_t now, espdp_sa **sa)
{
	struct spd_key key;
	long r;

	if (!t || !t->spd)
		return ESPD_DROP_no_policy;
	if (spd_key_from_packet(pkt, len, 0, &key))
		return ESPD_DROP_inner_malformed;
	r = spd_classify(t->spd, &key);
	if (r < 0 && link_scope_multicast(pkt, len))
		return ESPD_DROP_link_local;
	if (r < 0)
		return ESPD_DROP_no_policy;
	ctr_add(&t->hits[r], 1);
	if (t->rules[r].action != ESPDP_ACTION_PROTECT)
		return ESPD_DROP_policy_deny;
	*sa = __atomic_load_n(&t->rules[r].sa, __ATOMIC_SEQ_CST); /* swapped by table.c */
	if (*sa)
		return 0;
	out_acquire(dp, &t->rules[r], (uint32_t)r, &key, now);
	return ESPD_DROP_no_sa; /* dropped, not held: see docs/architecture.md, acquire */
}

static int out_admit(espdp_sa *sa, int64_t now, uint64_t *seq)
{
	int r = sa_admit(sa, now);

	if (r)
		return r;
	return sa_next_seq(sa, seq);
}

static int out_place(const espdp_sa *sa, const struct espdp_pkt *p, struct out_plan *o)
{
	const uint8_t *pkt = p->buf + p->off;
	uint32_t esp_fixed = ESP_HDR_LEN + sa->alg.iv_len, udp = 0, body, total;

	if (ip_parse(pkt, p->len, &o->ip) || o->ip.total_len != p->len)
		return ESPD_DROP_inner_malformed;
	if (sa->cfg.encap == ESPDP_ENCAP_UDP)
		udp = UDP_HDR_LEN;
	if (sa->cfg.mode == ESPDP_MODE_TUNNEL) {
		o->head = (sa->cfg.peer.family == 4 ? IPV4_HDR_MIN : IPV6_HDR_LEN) + udp;
		o->protected_len = p->len;
		o->next_header = o->ip.family == 4 ? IPPROTO_NUM_IPIP : IPPROTO_NUM_IPV6;
	} else {
		if (o->ip.family != sa->cfg.peer.family || (o->ip.family == 4 && o->ip.frag))
			return ESPD_DROP_inner_malformed;
		o->head = o->ip.hdr_len + udp;
		o->protected_len = p->len - o->ip.hdr_len;
		o->next_header = o->ip.proto;
	}
	o->front = o->head + esp_fixed - (sa->cfg.mode == ESPDP_MODE_TRANSPORT ? o->ip.hdr_len : 0);
	o->pad = (sa->alg.block - (o->protected_len + ESP_TRAILER_LEN) % sa->alg.block) % sa->alg.block;
	body = esp_fixed + o->protected_len + o->pad + ESP_TRAILER_LEN + sa->alg.icv_len;
	total = o->head + body;
	/* the packet grows by head - hdr_len in front and by pad + trailer + ICV behind */
	if (total > IP_MAX_LEN + (sa->cfg.peer.family == 6 ? IPV6_HDR_LEN : 0) ||
	    p->off < o->front ||
	    (uint64_t)p->off + p->len + o->pad + ESP_TRAILER_LEN + sa->alg.icv_len > p->cap)
		return ESPD_DROP_too_big;
	return 0;
}

static void out_trailer(uint8_t *end, const struct out_plan *o)
{
	for (uint32_t i = 0; i < o->pad; i++)
		end[i] = (uint8_t)(i + 1); /* RFC 4303 2.4: 1, 2, 3, ... */
	end[o->pad] = (uint8_t)o->pad;
	end[o->pad + 1] = o->next_header;
}

static int out_seal(espdp_sa *sa, unsigned w, uint8_t *esp, uint32_t payload_len, uint64_t seq)
{
	struct crypto_ctx *ctx = sa_ctx(sa, w);

	wr32(esp, sa->cfg.spi);
	wr32(esp + 4, (uint32_t)seq); /* low 32 bits only, also with ESN */
	if (!ctx || crypto_seal(ctx, esp, payload_len, seq, sa->cfg.esn))
		return ESPD_DROP_crypto_error;
	return 0;
}

static void out_udp(const espdp_sa *sa, const struct sa_remote *remote, uint8_t *udp,
		    uint32_t udp_len)
{
	wr16(udp, sa->cfg.sport);
	wr16(udp + 2, remote->port);
	wr16(udp + 4, (uint16_t)udp_len);
	wr16(udp + 6, 0); /* RFC 3948 2.1: zero over IPv4; IPv6 is filled in later */
}

static void out_tunnel_header(const espdp_sa *sa, const struct sa_remote *remote,
			      const struct out_plan *o, uint8_t *outer, uint32_t total, uint64_t seq)
{
	uint8_t proto = sa->cfg.encap == ESPDP_ENCAP_UDP ? IPPROTO_NUM_UDP : IPPROTO_NUM_ESP;

	if (sa->cfg.peer.family == 4) {
		outer[0] = 0x45;
		outer[1] = o->ip.tos; /* DSCP copied; ECN copied (RFC 6040 normal mode) */
		wr16(outer + 2, (uint16_t)total);
		/* an ID sequence of its own per SA (RFC 6864: unique while DF may be 0) */
		wr16(outer + 4, (uint16_t)((seq ^ (sa->cfg.spi * 0x9E3779B1u)) * 0x6F4Bu));
		wr16(outer + 6, o->ip.family == 4 && o->ip.df ? 0x4000 : 0);
		outer[8] = ESPD_DEFAULT_TTL;
		outer[9] = proto;
		memcpy(outer + 12, sa->cfg.local.bytes, 4);
		memcpy(outer + 16, remote->addr, 4);
		ip4_set_checksum(outer);
	} else {
		wr32(outer, 6u << 28 | (uint32_t)o->ip.tos << 20);
		wr16(outer + 4, (uint16_t)(total - IPV6_HDR_LEN));
		outer[6] = proto;
		outer[7] = ESPD_DEFAULT_TTL;
		memcpy(outer + 8, sa->cfg.local.bytes, 16);
		memcpy(outer + 24, remote->addr, 16);
	}
}

/* Transport mode: the packet's own header, moved in front of ESP, now names ESP or UDP. */
static void out_transport_header(const espdp_sa *sa, const struct out_plan *o, uint8_t *hdr,
				 uint32_t total)
{
	hdr[o->ip.nh_off] = sa->cfg.encap == ESPDP_ENCAP_UDP ? IPPROTO_NUM_UDP : IPPROTO_NUM_ESP;
	if (o->ip.family == 4) {
		wr16(hdr + 2, (uint16_t)total);
		ip4_set_checksum(hdr);
	} else {
		wr16(hdr + 4, (uint16_t)(total - IPV6_HDR_LEN));
	}
}

static void out_account(espdp_sa *sa, uint32_t inner_len, int64_t now)
{
	ctr_add(&sa->ctr.encaps, 1);
	if (sa->alg.cipher != ESPDP_CIPHER_NULL)
		ctr_add(&sa->ctr.encrypt, 1);
	ctr_add(&sa->ctr.digest, 1);
	ctr_add(&sa->ctr.packets, 1);
	ctr_add(&sa->ctr.bytes, inner_len);
	sa_use(sa, inner_len, now); /* lifetime usage; may raise soft/hard expiry */
}

static int encap_one(espdp *dp, struct espdp_table *t, unsigned w, struct espdp_pkt *p,
		     int64_t now)
{
	uint8_t *pkt = p->buf + p->off, *start, *esp;
	espdp_sa *sa = p->sa;
	struct out_plan o;
	struct sa_remote remote;
	uint64_t seq;
	uint32_t payload_len, total, inner_len = p->len;
	int r;

	if (!sa && (r = out_classify(dp, t, pkt, p->len, now, &sa))) {
		dp_drop(dp, ESPDP_DIR_OUT, r);
		return r;
	}
	p->sa = sa;
	if (sa->cfg.direction != ESPDP_DIR_OUT) { /* an inbound SA never seals */
		dp_drop(dp, ESPDP_DIR_OUT, ESPD_DROP_no_sa);
		return ESPD_DROP_no_sa;
	}
	if ((r = out_place(sa, p, &o)) || (r = out_admit(sa, now, &seq)))
		goto drop;

	/* Lay out: start = first byte of the result; esp = ESP header. */
	start = pkt - o.front;
	esp = start + o.head;
	if (sa->cfg.mode == ESPDP_MODE_TRANSPORT)
		memmove(start, pkt, o.ip.hdr_len);
	payload_len = o.protected_len + o.pad + ESP_TRAILER_LEN;
	out_trailer(pkt + p->len, &o);
	if ((r = out_seal(sa, w, esp, payload_len, seq)))
		goto drop;
	total = o.head + ESP_HDR_LEN + sa->alg.iv_len + payload_len + sa->alg.icv_len;
	sa_remote_get(sa, &remote); /* once per packet: the address and port belong together */
	if (sa->cfg.mode == ESPDP_MODE_TUNNEL)
		out_tunnel_header(sa, &remote, &o, start, total, seq);
	else
		out_transport_header(sa, &o, start, total);
	if (sa->cfg.encap == ESPDP_ENCAP_UDP) {
		uint8_t *udp = esp - UDP_HDR_LEN;

		out_udp(sa, &remote, udp, (uint32_t)(start + total - udp));
		if (sa->cfg.peer.family == 6)
			udp6_set_checksum(start, udp, (size_t)(start + total - udp));
	}

	out_account(sa, inner_len, now);
	p->off = (uint32_t)(start - p->buf);
	p->len = total;
	return 0;
drop:
	sa_drop(sa, r);
	return r;
}

size_t espdp_encap_batch(espdp *dp, unsigned worker, struct espdp_pkt *pkts, size_t n)
{
	struct espdp_table *t;
	int64_t now;
	size_t ok = 0;

	if (!dp_worker_ok(dp, worker, pkts, n))
		return 0;
	t = dp_enter(dp, worker);
	now = dp_now(dp);
	for (size_t i = 0; i < n; i++) {
		pkts[i].result = encap_one(dp, t, worker, &pkts[i], now);
		ok += pkts[i].result == 0;
	}
	dp_leave(dp, worker);
	return ok;
}

long espdp_classify(espdp *dp, const uint8_t *pkt, size_t len)
{
	struct espdp_table *t = dp_enter(dp, dp->nworkers); /* the control plane's slot */
	struct spd_key key;
	long r = -1;

	if (t && t->spd && !spd_key_from_packet(pkt, len, 0, &key))
		r = spd_classify(t->spd, &key);
	dp_leave(dp, dp->nworkers);
	return r;
}
