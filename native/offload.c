/* offload: TSO segmentation, partial checksums and GRO coalescing (see offload.h). */
#include "offload.h"

#include <string.h>

#include "ip.h"
#include "proto.h"

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_URG 0x20
#define TCP_ECE 0x40
#define TCP_CWR 0x80
#define TCP_HDR_MIN 20
#define UDP_CSUM 6 /* offset of the UDP checksum */
#define TCP_CSUM 16
#define GRO_FLOWS 8 /* open super-packets tracked per batch */

/* --- TSO: one super-packet in, MSS-sized segments out --- */

struct tso {
	uint32_t l4; /* TCP or UDP header offset */
	uint32_t hdr; /* IP + TCP/UDP headers */
	uint32_t payload;
	uint16_t mss;
	uint8_t v6;
	uint8_t udp;
};

static int tso_parse(const uint8_t *pkt, size_t len, const struct vnet_hdr *h, struct tso *t)
{
	uint8_t type = h->gso_type & (uint8_t)~VNET_GSO_ECN;

	t->udp = type == VNET_GSO_UDP_L4;
	t->v6 = type == VNET_GSO_TCPV6 || (t->udp && len >= 1 && (pkt[0] >> 4) == 6);
	if ((type != VNET_GSO_TCPV4 && type != VNET_GSO_TCPV6 && !t->udp) || len < 1 ||
	    (pkt[0] >> 4) != (t->v6 ? 6 : 4))
		return -1;
	t->l4 = h->csum_start;
	if (t->l4 < (t->v6 ? IPV6_HDR_LEN : IPV4_HDR_MIN) ||
	    t->l4 + (t->udp ? UDP_HDR_LEN : TCP_HDR_MIN) > len ||
	    (!t->v6 && (pkt[0] & 0x0f) * 4u != t->l4))
		return -1; /* the IPv4 header must end where TCP/UDP begins */
	t->hdr = t->l4 + (t->udp ? UDP_HDR_LEN : (pkt[t->l4 + 12] >> 4) * 4u);
	if ((!t->udp && t->hdr < t->l4 + TCP_HDR_MIN) || t->hdr > len || !h->gso_size)
		return -1;
	t->payload = (uint32_t)(len - t->hdr);
	t->mss = h->gso_size;
	return 0;
}

unsigned offload_count(const uint8_t *pkt, size_t len, const struct vnet_hdr *h)
{
	struct tso t;

	if (tso_parse(pkt, len, h, &t))
		return 0;
	return t.payload ? (t.payload + t.mss - 1) / t.mss : 1;
}

/* Big-endian sum of the TCP/UDP pseudo header (RFC 793, RFC 8200 8.1). */
static uint32_t pseudo_sum(const uint8_t *ip, uint8_t v6, uint8_t proto, uint32_t l4_len)
{
	const uint8_t *addrs = ip + (v6 ? 8 : 12);
	uint32_t sum = proto + (l4_len >> 16) + (l4_len & 0xffff);

	for (int i = 0; i < (v6 ? 32 : 8); i += 2)
		sum += rd16(addrs + i);
	return sum;
}

size_t offload_segment(const uint8_t *pkt, size_t len, const struct vnet_hdr *h, unsigned i,
		       uint8_t *out)
{
	struct tso t;
	uint32_t off, seg, tot;
	uint8_t *l4;
	uint16_t c;
	uint32_t sum;

	if (tso_parse(pkt, len, h, &t))
		return 0;
	off = i * (uint32_t)t.mss;
	seg = t.payload - off < t.mss ? t.payload - off : t.mss;
	tot = t.hdr + seg;
	memcpy(out, pkt, t.hdr);
	/* The payload is summed as it is copied; the TCP/UDP header is even in length, so
	 * its sum and the payload's add up to the segment's (RFC 1071). */
	sum = ip_sum_copy(out + t.hdr, pkt + t.hdr + off, seg);
	if (t.v6) {
		wr16(out + 4, (uint16_t)(tot - IPV6_HDR_LEN));
	} else {
		wr16(out + 2, (uint16_t)tot);
		wr16(out + 4, (uint16_t)(rd16(pkt + 4) + i));
		ip4_set_checksum(out);
	}
	l4 = out + t.l4;
	if (t.udp) {
		wr16(l4 + 4, (uint16_t)(tot - t.l4));
		l4[UDP_CSUM] = l4[UDP_CSUM + 1] = 0;
		c = ip_checksum(l4, t.hdr - t.l4,
				sum + pseudo_sum(out, t.v6, IPPROTO_NUM_UDP, tot - t.l4));
		wr16(l4 + UDP_CSUM, c ? c : 0xffff); /* RFC 768: a computed 0 is sent as ~0 */
		return tot;
	}
	wr32(l4 + 4, rd32(pkt + t.l4 + 4) + off);
	if (off + seg < t.payload)
		l4[13] &= (uint8_t)~(TCP_FIN | TCP_PSH);
	if (i > 0)
		l4[13] &= (uint8_t)~TCP_CWR;
	l4[TCP_CSUM] = l4[TCP_CSUM + 1] = 0;
	wr16(l4 + TCP_CSUM, ip_checksum(l4, t.hdr - t.l4,
					sum + pseudo_sum(out, t.v6, IPPROTO_NUM_TCP, tot - t.l4)));
	return tot;
}

int offload_csum(uint8_t *pkt, size_t len, const struct vnet_hdr *h)
{
	uint32_t at = (uint32_t)h->csum_start + h->csum_offset;
	uint16_t c;

	if (!(h->flags & VNET_F_NEEDS_CSUM))
		return 0;
	if (h->csum_start >= len || at + 2 > len)
		return -1;
	/* the field holds the pseudo-header sum: summing over it completes the checksum */
	c = ip_checksum(pkt + h->csum_start, len - h->csum_start, 0);
	wr16(pkt + at, c ? c : (h->csum_offset == 6 ? 0xffff : 0)); /* UDP sends 0 as ~0 */
	return 0;
}

/* --- GRO: decrypted segments of one TCP flow (or datagrams of one UDP flow) back into one
 * super-packet --- */

struct flow {
	struct espdp_pkt *head;
	uint32_t l4, hdr; /* offsets in the head packet */
	uint32_t mss; /* payload of the head segment: every joiner but the last has it */
	uint32_t next_seq; /* TCP */
	unsigned count;
	uint8_t v6;
	uint8_t proto; /* IPPROTO_NUM_TCP or IPPROTO_NUM_UDP */
	uint8_t closed;
};

/* Is pkt[0..len) TCP or UDP, and if so where do its ports start? Its protocol, or 0.
 * Not ip_parse, on purpose: this names the connection of any packet, a malformed one
 * too (a length that lies, a fragment), so that gro_close_connection keeps later
 * packets of that connection from overtaking it; gro_candidate then checks the rest. */
static uint8_t ports_at(const uint8_t *ip, uint32_t len, uint32_t *l4)
{
	uint8_t proto;

	if (len >= IPV6_HDR_LEN + 4 && (ip[0] >> 4) == 6) {
		proto = ip[6];
		*l4 = IPV6_HDR_LEN;
	} else if (len >= IPV4_HDR_MIN + 4 && (ip[0] >> 4) == 4 && (ip[0] & 0x0f) * 4u + 4 <= len) {
		proto = ip[9];
		*l4 = (ip[0] & 0x0f) * 4u;
	} else {
		return 0;
	}
	return proto == IPPROTO_NUM_TCP || proto == IPPROTO_NUM_UDP ? proto : 0;
}

/* The packet's IPv4 header and TCP/UDP checksums verify. Coalesced packets reach the
 * kernel marked as checksummed by us (NEEDS_CSUM), so a corrupt one must not join one. */
static int gro_checksums_ok(const uint8_t *ip, uint32_t len, uint32_t l4, uint8_t v6,
			    uint8_t proto)
{
	if (!v6 && ip_sum(ip, IPV4_HDR_MIN, 0) != 0xffff)
		return 0;
	return ip_sum(ip + l4, len - l4, pseudo_sum(ip, v6, proto, len - l4)) == 0xffff;
}

/* A TCP segment (or with `udp`, a UDP datagram) that may take part, with its offsets and
 * protocol; 0 if it may not. */
static uint8_t gro_candidate(const struct espdp_pkt *p, int udp, uint32_t *l4, uint32_t *hdr,
			     uint8_t *v6)
{
	const uint8_t *ip = p->buf + p->off, *th;
	uint8_t proto, flags;

	if (p->result || !(proto = ports_at(ip, p->len, l4)) || (proto == IPPROTO_NUM_UDP && !udp))
		return 0;
	*v6 = (ip[0] >> 4) == 6;
	if (!*v6 && (ip[0] != 0x45 || (rd16(ip + 6) & 0x3fff)))
		return 0; /* options and fragments go as they are */
	th = ip + *l4;
	if (proto == IPPROTO_NUM_UDP) {
		*hdr = *l4 + UDP_HDR_LEN;
		if (*hdr >= p->len || rd16(th + 4) != p->len - *l4 || !rd16(th + UDP_CSUM))
			return 0; /* empty, inconsistent, or without a checksum to trust */
	} else {
		if (p->len < *l4 + TCP_HDR_MIN)
			return 0;
		*hdr = *l4 + (th[12] >> 4) * 4u;
		flags = th[13];
		if (*hdr < *l4 + TCP_HDR_MIN || *hdr >= p->len || !(flags & TCP_ACK) ||
		    (flags & (TCP_FIN | TCP_SYN | TCP_RST | TCP_URG | TCP_ECE | TCP_CWR)))
			return 0;
	}
	return gro_checksums_ok(ip, p->len, *l4, *v6, proto) ? proto : 0;
}

/* A packet of a flow that cannot join: it must not be overtaken by later ones. */
static void gro_close_connection(struct flow *flows, unsigned nflows, const struct espdp_pkt *p)
{
	const uint8_t *ip = p->buf + p->off;
	uint32_t l4;
	uint8_t proto = ports_at(ip, p->len, &l4);

	if (!proto)
		return;
	for (unsigned k = 0; k < nflows; k++) {
		const uint8_t *h = flows[k].head->buf + flows[k].head->off;
		int v6 = (ip[0] >> 4) == 6;

		if (v6 == flows[k].v6 && proto == flows[k].proto &&
		    !memcmp(h + (v6 ? 8 : 12), ip + (v6 ? 8 : 12), v6 ? 32 : 8) &&
		    !memcmp(h + flows[k].l4, ip + l4, 4))
			flows[k].closed = 1;
	}
}

/* Same flow, same headers but for lengths, IDs, sequence number and checksums. */
static int gro_same_flow(const struct flow *f, const uint8_t *ip, uint32_t hdr, uint8_t v6,
			 uint8_t proto)
{
	const uint8_t *h = f->head->buf + f->head->off;

	if (v6 != f->v6 || hdr != f->hdr || proto != f->proto)
		return 0;
	if (v6) {
		if (memcmp(h, ip, 4) || h[7] != ip[7] || memcmp(h + 8, ip + 8, 32))
			return 0; /* traffic class, flow label, hop limit, addresses */
	} else if (h[1] != ip[1] || h[6] != ip[6] || h[8] != ip[8] || memcmp(h + 12, ip + 12, 8)) {
		return 0; /* TOS (ECN included), DF, TTL, addresses */
	}
	h += f->l4;
	ip += f->l4;
	if (proto == IPPROTO_NUM_UDP)
		return !memcmp(h, ip, 4); /* ports */
	return !memcmp(h, ip, 4) && !memcmp(h + 8, ip + 8, 4) && /* ports, ack */
	       !memcmp(h + 14, ip + 14, 2) && /* window */
	       !memcmp(h + TCP_HDR_MIN, ip + TCP_HDR_MIN, f->hdr - f->l4 - TCP_HDR_MIN); /* options */
}

static int gro_join(struct flow *f, struct espdp_pkt *p, uint32_t hdr)
{
	const uint8_t *ip = p->buf + p->off;
	uint32_t plen = p->len - hdr;
	struct espdp_pkt *head = f->head;

	int tcp = f->proto == IPPROTO_NUM_TCP;

	if (f->closed || (tcp && rd32(ip + f->l4 + 4) != f->next_seq) || plen > f->mss ||
	    head->len + plen > IP_MAX_LEN || (uint64_t)head->off + head->len + plen > head->cap)
		return 0;
	memcpy(head->buf + head->off + head->len, ip + hdr, plen);
	head->len += plen;
	f->next_seq += plen;
	f->count++;
	if (!tcp) {
		f->closed = plen < f->mss; /* a shorter datagram ends a super-packet */
	} else if (plen < f->mss || (ip[f->l4 + 13] & TCP_PSH)) {
		head->buf[head->off + f->l4 + 13] |= ip[f->l4 + 13] & TCP_PSH;
		f->closed = 1; /* a short or pushed segment ends a super-packet */
	}
	p->result = -1; /* consumed */
	return 1;
}

static void vnet_write(struct espdp_pkt *p, const struct vnet_hdr *h)
{
	memcpy(p->buf + p->off - VNET_HDR_LEN, h, VNET_HDR_LEN);
}

static void gro_finish(struct flow *f)
{
	uint8_t *ip = f->head->buf + f->head->off, *th = ip + f->l4;
	uint32_t l4_len = f->head->len - f->l4;
	int tcp = f->proto == IPPROTO_NUM_TCP;
	uint32_t csum = tcp ? TCP_CSUM : UDP_CSUM;
	struct vnet_hdr h = { 0 };

	if (f->count > 1) {
		if (f->v6) {
			wr16(ip + 4, (uint16_t)(f->head->len - IPV6_HDR_LEN));
		} else {
			wr16(ip + 2, (uint16_t)f->head->len);
			ip4_set_checksum(ip);
		}
		if (!tcp)
			wr16(th + 4, (uint16_t)l4_len);
		/* CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum */
		th[csum] = th[csum + 1] = 0;
		wr16(th + csum, ip_sum(NULL, 0, pseudo_sum(ip, f->v6, f->proto, l4_len)));
		h.flags = VNET_F_NEEDS_CSUM;
		h.gso_type = !tcp ? VNET_GSO_UDP_L4 : f->v6 ? VNET_GSO_TCPV6 : VNET_GSO_TCPV4;
		h.hdr_len = (uint16_t)f->hdr;
		h.gso_size = (uint16_t)f->mss;
		h.csum_start = (uint16_t)f->l4;
		h.csum_offset = (uint16_t)csum;
	}
	vnet_write(f->head, &h);
}

unsigned offload_coalesce(struct espdp_pkt *pkts, unsigned n, int udp, uint16_t *segments)
{
	static const struct vnet_hdr none;
	struct flow flows[GRO_FLOWS];
	unsigned nflows = 0, left = 0;

	for (unsigned i = 0; segments && i < n; i++)
		segments[i] = pkts[i].result == 0;
	for (unsigned i = 0; i < n; i++) {
		struct espdp_pkt *p = &pkts[i];
		uint32_t l4, hdr;
		uint8_t v6, proto;
		struct flow *f = NULL;

		if (p->result)
			continue;
		left++;
		if (!(proto = gro_candidate(p, udp, &l4, &hdr, &v6))) {
			gro_close_connection(flows, nflows, p);
			vnet_write(p, &none);
			continue;
		}
		for (unsigned k = nflows; k-- > 0;) { /* the newest open super-packet of the flow */
			if (gro_same_flow(&flows[k], p->buf + p->off, hdr, v6, proto)) {
				f = &flows[k];
				break;
			}
		}
		if (f && gro_join(f, p, hdr)) {
			if (segments) {
				segments[i] = 0;
				segments[f->head - pkts]++;
			}
			left--;
			continue;
		}
		/* this packet starts its connection's next super-packet: close every open one of
		 * the same addresses and ports (also those whose headers differed from it) */
		gro_close_connection(flows, nflows, p);
		if (nflows == GRO_FLOWS) { /* full: finish the oldest */
			gro_finish(&flows[0]);
			memmove(flows, flows + 1, sizeof(flows[0]) * (GRO_FLOWS - 1));
			nflows--;
		}
		flows[nflows++] = (struct flow){
			.head = p, .l4 = l4, .hdr = hdr, .mss = p->len - hdr, .count = 1, .v6 = v6,
			.proto = proto,
			.next_seq = rd32(p->buf + p->off + l4 + 4) + (p->len - hdr), /* TCP only */
			.closed = proto == IPPROTO_NUM_TCP && (p->buf[p->off + l4 + 13] & TCP_PSH),
		};
	}
	for (unsigned k = 0; k < nflows; k++)
		gro_finish(&flows[k]);
	return left;
}
