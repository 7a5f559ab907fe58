/* sock: receive into full outer packets, send sealed packets (see sock.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* recvmmsg, sendmmsg, in6_pktinfo */
#endif
#include "sock.h"

#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "ip.h"
#include "proto.h"

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define GSO_MAX_SEGMENTS 64  /* UDP_MAX_SEGMENTS of kernels before 6.10 */
#define GSO_MAX_BYTES 65000  /* a run's UDP payload, under the 65,535-byte IP limit */

/* --- receive ---------------------------------------------------------------------------- */

int sock_pool_init(struct sock_pool *p)
{
	memset(p, 0, sizeof(*p));
	for (unsigned i = 0; i < IO_BATCH_MAX; i++) {
		p->bufs[i] = malloc(IO_BUF_SIZE);
		if (!p->bufs[i])
			return -1;
	}
	p->port = NATT_PORT;
	return 0;
}

void sock_pool_free(struct sock_pool *p)
{
	for (unsigned i = 0; i < IO_BATCH_MAX; i++)
		free(p->bufs[i]);
	memset(p, 0, sizeof(*p));
}

int sock_prepare(int fd, enum io_source src)
{
	int on = 1, ttl = ESPD_DEFAULT_TTL, probe4 = IP_PMTUDISC_PROBE, probe6 = IPV6_PMTUDISC_PROBE;

	switch (src) {
	case IO_ESP4:
		return 0; /* raw IPv4 sockets deliver the header */
	case IO_UDP4:
		/* Sends carry DF and the device MTU, as the raw path's packets do. Without
		 * UDP_GRO (before Linux 5.0) each datagram simply arrives alone. */
		(void)setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof(on));
		return setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &on, sizeof(on)) ||
		       setsockopt(fd, IPPROTO_IP, IP_RECVTOS, &on, sizeof(on)) ||
		       setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &probe4, sizeof(probe4)) ||
		       setsockopt(fd, IPPROTO_IP, IP_TTL, &ttl, sizeof(ttl));
	case IO_UDP6:
		(void)setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof(on));
		if (setsockopt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &probe6, sizeof(probe6)) ||
		    setsockopt(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &ttl, sizeof(ttl)))
			return -1;
		/* fall through */
	case IO_ESP6:
		return setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof(on)) ||
		       setsockopt(fd, IPPROTO_IPV6, IPV6_RECVTCLASS, &on, sizeof(on));
	default:
		return -1;
	}
}

static void meta_parse(struct msghdr *m, struct recv_meta *meta)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
		if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
			struct in_pktinfo pi;

			memcpy(&pi, CMSG_DATA(c), sizeof(pi));
			memcpy(meta->dst, &pi.ipi_addr, 4);
		} else if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TOS) {
			meta->tos = *(uint8_t *)CMSG_DATA(c);
		} else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
			struct in6_pktinfo pi;

			memcpy(&pi, CMSG_DATA(c), sizeof(pi));
			memcpy(meta->dst, &pi.ipi6_addr, 16);
		} else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_TCLASS) {
			int tc;

			memcpy(&tc, CMSG_DATA(c), sizeof(tc));
			meta->tos = (uint8_t)tc;
		} else if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
			int size;

			memcpy(&size, CMSG_DATA(c), sizeof(size));
			meta->gro = size > 0 && size <= 0xffff ? (uint16_t)size : 0;
		}
	}
}

/* Rebuild the outer header(s) the kernel stripped, in front of the payload at p->off.
 * The UDP destination port is `port`, the one the receive socket is bound to. */
static void rebuild_outer(struct espdp_pkt *p, enum io_source src, const struct recv_meta *meta,
			  uint16_t port)
{
	int udp = src == IO_UDP4 || src == IO_UDP6, v6 = src == IO_ESP6 || src == IO_UDP6;
	uint32_t ip_len = v6 ? IPV6_HDR_LEN : IPV4_HDR_MIN, hdr = ip_len + (udp ? UDP_HDR_LEN : 0);
	uint8_t *h = p->buf + p->off - hdr, *u = h + ip_len;
	uint8_t proto = udp ? IPPROTO_NUM_UDP : IPPROTO_NUM_ESP;
	uint32_t total = hdr + p->len;
	uint16_t sport;

	memset(h, 0, hdr);
	if (v6) {
		const struct sockaddr_in6 *from = (const struct sockaddr_in6 *)&meta->from;

		wr32(h, 6u << 28 | (uint32_t)meta->tos << 20);
		wr16(h + 4, (uint16_t)(total - IPV6_HDR_LEN));
		h[6] = proto;
		h[7] = ESPD_DEFAULT_TTL;
		memcpy(h + 8, &from->sin6_addr, 16);
		memcpy(h + 24, meta->dst, 16);
		sport = ntohs(from->sin6_port);
	} else {
		const struct sockaddr_in *from = (const struct sockaddr_in *)&meta->from;

		h[0] = 0x45;
		h[1] = meta->tos;
		wr16(h + 2, (uint16_t)total);
		h[8] = ESPD_DEFAULT_TTL;
		h[9] = proto;
		memcpy(h + 12, &from->sin_addr, 4);
		memcpy(h + 16, meta->dst, 4);
		ip4_set_checksum(h);
		sport = ntohs(from->sin_port);
	}
	if (udp) {
		wr16(u, sport);
		wr16(u + 2, port);
		wr16(u + 4, (uint16_t)(p->len + UDP_HDR_LEN));
	}
	p->off -= hdr;
	p->len = total;
}

/* One recvmmsg into the (empty) pool; returns how many datagrams it holds. */
static unsigned pool_fill(int fd, enum io_source src, struct sock_pool *pool, unsigned max,
			  uint64_t *errors)
{
	struct mmsghdr msgs[IO_BATCH_MAX];
	struct iovec iov[IO_BATCH_MAX];
	int n;

	memset(msgs, 0, sizeof(msgs[0]) * max);
	for (unsigned i = 0; i < max; i++) {
		struct recv_meta *m = &pool->meta[i];

		iov[i].iov_base = pool->bufs[i] + ESPD_HEADROOM;
		iov[i].iov_len = IO_BUF_SIZE - ESPD_HEADROOM - ESPD_TAILROOM;
		memset(m, 0, offsetof(struct recv_meta, cmsg));
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		msgs[i].msg_hdr.msg_name = &m->from;
		msgs[i].msg_hdr.msg_namelen = sizeof(m->from);
		msgs[i].msg_hdr.msg_control = m->cmsg.buf;
		msgs[i].msg_hdr.msg_controllen = sizeof(m->cmsg.buf);
	}
	n = recvmmsg(fd, msgs, max, MSG_DONTWAIT, NULL);
	pool->head = pool->count = 0;
	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR)
			(*errors)++;
		return 0;
	}
	for (int i = 0; i < n; i++) {
		pool->at[i] = 0;
		pool->len[i] = msgs[i].msg_len;
		if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC)
			pool->len[i] = 0; /* esp_in drops it as malformed */
		else if (src != IO_ESP4)
			meta_parse(&msgs[i].msg_hdr, &pool->meta[i]);
	}
	pool->count = (unsigned)n;
	return (unsigned)n;
}

unsigned sock_recv(int fd, enum io_source src, struct sock_pool *pool, struct io_batch *b,
		   unsigned max, struct sock_counts c)
{
	unsigned n = 0;
	int filled = 0;

	if (max > IO_BATCH_MAX)
		max = IO_BATCH_MAX;
	while (n < max) {
		unsigned e = pool->head;
		const struct recv_meta *meta;
		uint32_t len;

		if (e == pool->count) {
			if (filled || !pool_fill(fd, src, pool, max, c.errors))
				break;
			filled = 1;
			continue;
		}
		meta = &pool->meta[e];
		len = pool->len[e];
		if (meta->gro && len > meta->gro) { /* an aggregate: copy out one segment */
			uint32_t piece = len - pool->at[e] < meta->gro ? len - pool->at[e] : meta->gro;

			memcpy(b->bufs[n] + ESPD_HEADROOM, pool->bufs[e] + ESPD_HEADROOM + pool->at[e],
			       piece);
			io_pkt_reset(b, n, piece);
			(*c.offloaded)++;
			pool->at[e] += piece;
			if (pool->at[e] >= len)
				pool->head++;
		} else { /* one datagram: its buffer moves to the batch */
			uint8_t *swap = b->bufs[n];

			b->bufs[n] = pool->bufs[e];
			pool->bufs[e] = swap;
			io_pkt_reset(b, n, len);
			pool->head++;
		}
		if (src != IO_ESP4 && b->pkts[n].len)
			rebuild_outer(&b->pkts[n], src, meta, pool->port);
		n++;
	}
	b->n = n;
	return n;
}

/* --- send ------------------------------------------------------------------------------- */

/* A packet esp_out built for the NAT-T socket: outer IPv4 (no options, DF, not a
 * fragment) or IPv6, then UDP from `port` (the socket's own), then a non-empty ESP
 * payload. Returns the outer IP header length, or 0. */
static uint32_t udp_header_len(const uint8_t *pkt, uint32_t len, int family, uint16_t port)
{
	uint32_t hl;

	if (family == 4 && pkt[0] == 0x45 && pkt[9] == IPPROTO_NUM_UDP && rd16(pkt + 6) == 0x4000)
		hl = IPV4_HDR_MIN;
	else if (family == 6 && (pkt[0] >> 4) == 6 && pkt[6] == IPPROTO_NUM_UDP)
		hl = IPV6_HDR_LEN;
	else
		return 0;
	return len > hl + UDP_HDR_LEN && rd16(pkt + hl) == port ? hl : 0;
}

/* Packets that may share one GSO run: same addresses, destination port and TOS. */
static int same_flow(const uint8_t *a, const uint8_t *b, int family, uint32_t hl)
{
	if (family == 4)
		return a[1] == b[1] && !memcmp(a + 12, b + 12, 8) && rd16(a + hl + 2) == rd16(b + hl + 2);
	return (rd32(a) & 0x0ff00000u) == (rd32(b) & 0x0ff00000u) && !memcmp(a + 8, b + 8, 32) &&
	       rd16(a + hl + 2) == rd16(b + hl + 2);
}

/* The destination of an outer packet (port 0 for raw sockets); returns its length. */
static socklen_t packet_dest(struct sockaddr_storage *to, const uint8_t *pkt, int family,
			     uint16_t port)
{
	memset(to, 0, sizeof(*to));
	if (family == 4) {
		struct sockaddr_in *sin = (struct sockaddr_in *)to;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, pkt + 16, 4);
		return sizeof(*sin);
	}
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)to;

	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(port);
	memcpy(&sin6->sin6_addr, pkt + 24, 16);
	return sizeof(*sin6);
}

struct gso_msg {
	struct sockaddr_storage to;
	unsigned first, count; /* packets: idx[first .. first+count-1] */
	union {
		char buf[CMSG_SPACE(sizeof(uint16_t)) + CMSG_SPACE(sizeof(struct in6_pktinfo)) +
			 CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} cmsg;
};

/* Address, source and TOS of run m, whose first packet is pkt; UDP_SEGMENT if more than
 * one packet shares it. */
static void gso_header(struct gso_msg *m, struct msghdr *h, const uint8_t *pkt, int family,
		       uint32_t hl, uint16_t segment)
{
	struct cmsghdr *c;
	int tos;

	memset(&m->cmsg, 0, sizeof(m->cmsg));
	h->msg_name = &m->to;
	h->msg_namelen = packet_dest(&m->to, pkt, family, rd16(pkt + hl + 2));
	h->msg_control = m->cmsg.buf;
	h->msg_controllen = sizeof(m->cmsg.buf);
	c = CMSG_FIRSTHDR(h);
	if (family == 4) {
		struct in_pktinfo pi = { 0 };

		memcpy(&pi.ipi_spec_dst, pkt + 12, 4);
		c->cmsg_level = IPPROTO_IP;
		c->cmsg_type = IP_PKTINFO;
		c->cmsg_len = CMSG_LEN(sizeof(pi));
		memcpy(CMSG_DATA(c), &pi, sizeof(pi));
		tos = pkt[1];
		c = CMSG_NXTHDR(h, c);
		c->cmsg_level = IPPROTO_IP;
		c->cmsg_type = IP_TOS;
	} else {
		struct in6_pktinfo pi = { 0 };

		memcpy(&pi.ipi6_addr, pkt + 8, 16);
		c->cmsg_level = IPPROTO_IPV6;
		c->cmsg_type = IPV6_PKTINFO;
		c->cmsg_len = CMSG_LEN(sizeof(pi));
		memcpy(CMSG_DATA(c), &pi, sizeof(pi));
		tos = (int)(rd32(pkt) >> 20 & 0xff);
		c = CMSG_NXTHDR(h, c);
		c->cmsg_level = IPPROTO_IPV6;
		c->cmsg_type = IPV6_TCLASS;
	}
	c->cmsg_len = CMSG_LEN(sizeof(tos));
	memcpy(CMSG_DATA(c), &tos, sizeof(tos));
	if (m->count > 1) {
		c = CMSG_NXTHDR(h, c); /* fits: cmsg.buf has room for all three */
		c->cmsg_level = SOL_UDP;
		c->cmsg_type = UDP_SEGMENT;
		c->cmsg_len = CMSG_LEN(sizeof(segment));
		memcpy(CMSG_DATA(c), &segment, sizeof(segment));
	}
	h->msg_controllen = (size_t)((char *)c + CMSG_SPACE(c->cmsg_len - CMSG_LEN(0)) -
				     m->cmsg.buf); /* up to the end of the last one */
}

/* Send the UDP-encapsulated packets of one family in GSO runs on the NAT-T socket. The
 * packets of a run that fails are left to the raw path (raw[i] = 1). */
static unsigned send_udp(int fd, int family, uint16_t port, int *gso_off,
			 const struct io_batch *b, uint8_t *raw, uint64_t *offloaded)
{
	struct mmsghdr msgs[IO_BATCH_MAX];
	struct gso_msg runs[IO_BATCH_MAX];
	struct iovec iov[IO_BATCH_MAX];
	unsigned idx[IO_BATCH_MAX], nidx = 0, nruns = 0, sent = 0;
	uint32_t hl = family == 4 ? IPV4_HDR_MIN : IPV6_HDR_LEN, segment = 0, bytes = 0;

	for (unsigned i = 0; i < b->n; i++) { /* runs of consecutive packets */
		const struct espdp_pkt *p = &b->pkts[i];
		const uint8_t *pkt = p->buf + p->off;
		uint32_t payload;
		struct gso_msg *r = nruns ? &runs[nruns - 1] : NULL;

		if (!raw[i] || udp_header_len(pkt, p->len, family, port) != hl)
			continue;
		raw[i] = 0;
		payload = p->len - hl - UDP_HDR_LEN;
		iov[nidx].iov_base = (void *)(pkt + hl + UDP_HDR_LEN);
		iov[nidx].iov_len = payload;
		if (r && r->first + r->count == nidx && payload <= segment &&
		    r->count < GSO_MAX_SEGMENTS && bytes + payload <= GSO_MAX_BYTES &&
		    same_flow(b->pkts[idx[r->first]].buf + b->pkts[idx[r->first]].off, pkt, family,
			      hl)) {
			r->count++;
			bytes += payload;
			if (payload < segment) /* a shorter packet ends its run */
				segment = 0;
		} else {
			r = &runs[nruns++];
			r->first = nidx;
			r->count = 1;
			segment = bytes = payload;
		}
		idx[nidx++] = i;
	}
	for (unsigned k = 0; k < nruns; k++) {
		const struct espdp_pkt *p = &b->pkts[idx[runs[k].first]];

		memset(&msgs[k], 0, sizeof(msgs[k]));
		msgs[k].msg_hdr.msg_iov = &iov[runs[k].first];
		msgs[k].msg_hdr.msg_iovlen = runs[k].count;
		gso_header(&runs[k], &msgs[k].msg_hdr, p->buf + p->off, family, hl,
			   (uint16_t)iov[runs[k].first].iov_len);
	}
	for (unsigned done = 0; done < nruns;) {
		int r = sendmmsg(fd, msgs + done, nruns - done, 0);

		if (r > 0) {
			for (unsigned k = done; k < done + (unsigned)r; k++) {
				sent += runs[k].count;
				*offloaded += runs[k].count > 1 ? runs[k].count : 0;
			}
			done += (unsigned)r;
			continue;
		}
		if (errno == EINTR)
			continue;
		/* The kernel refuses GSO itself (no UDP_SEGMENT, no checksum offload on the
		 * route's device, an xfrm policy on the route): stop asking. Anything else
		 * (a full buffer, an MTU) concerns this run only. Either way the raw path
		 * sends the run's packets and counts their errors. */
		if (runs[done].count > 1 && (errno == EIO || errno == EINVAL ||
					     errno == ENOPROTOOPT || errno == EOPNOTSUPP))
			__atomic_store_n(gso_off, 1, __ATOMIC_RELAXED);
		for (unsigned j = 0; j < runs[done].count; j++)
			raw[idx[runs[done].first + j]] = 1;
		done++;
	}
	return sent;
}

/* Whole outer packets still marked in raw[] whose destination has a next hop in the
 * table and that fit its MTU leave on the AF_PACKET socket (raw[i] = 0): the kernel adds
 * the Ethernet header and queues them on the device, with no route lookup, netfilter or
 * fragmentation. One the socket refuses with a full queue is lost (counted, as the raw
 * path loses it silently); any other refusal hands it back to the raw path. */
static unsigned send_packet(int fd, const struct nexthops *nh, const struct io_batch *b,
			    uint8_t *raw, uint64_t *errors, uint64_t *packet)
{
	struct nexthop_snap snap;
	struct mmsghdr msgs[IO_BATCH_MAX];
	struct iovec iov[IO_BATCH_MAX];
	struct sockaddr_ll to[IO_BATCH_MAX];
	unsigned idx[IO_BATCH_MAX], n = 0, sent = 0;

	if (nexthops_snapshot(nh, &snap) || !snap.n)
		return 0; /* the raw path takes the batch */
	for (unsigned i = 0; i < b->n; i++) {
		const struct espdp_pkt *p = &b->pkts[i];
		const uint8_t *pkt = p->buf + p->off;
		int family = pkt[0] >> 4;
		const struct nexthop *e;

		if (!raw[i] || (family != 4 && family != 6))
			continue;
		e = nexthop_find(&snap, family, pkt + (family == 4 ? 16 : 24));
		if (!e || p->len > e->mtu)
			continue;
		memset(&to[n], 0, sizeof(to[n]));
		to[n].sll_family = AF_PACKET;
		to[n].sll_protocol = htons(family == 4 ? ETH_P_IP : ETH_P_IPV6);
		to[n].sll_ifindex = e->ifindex;
		to[n].sll_halen = 6;
		memcpy(to[n].sll_addr, e->mac, 6);
		memset(&msgs[n], 0, sizeof(msgs[n]));
		iov[n].iov_base = (void *)pkt;
		iov[n].iov_len = p->len;
		msgs[n].msg_hdr.msg_name = &to[n];
		msgs[n].msg_hdr.msg_namelen = sizeof(to[n]);
		msgs[n].msg_hdr.msg_iov = &iov[n];
		msgs[n].msg_hdr.msg_iovlen = 1;
		idx[n++] = i;
		raw[i] = 0;
	}
	for (unsigned done = 0; done < n;) {
		int r = sendmmsg(fd, msgs + done, n - done, 0);

		if (r > 0) {
			done += (unsigned)r;
			sent += (unsigned)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == ENOBUFS || errno == EAGAIN))
			(*errors)++;
		else
			raw[idx[done]] = 1; /* e.g. the device went away: the kernel routes it */
		done++;
	}
	if (packet)
		*packet += sent;
	return sent;
}

/* Send the packets of one family marked in raw[] as whole packets on a raw socket. */
static unsigned send_raw(int fd, int family, const struct io_batch *b, const uint8_t *raw,
			 uint64_t *errors)
{
	struct mmsghdr msgs[IO_BATCH_MAX];
	struct iovec iov[IO_BATCH_MAX];
	struct sockaddr_storage to[IO_BATCH_MAX];
	unsigned n = 0, sent = 0;

	for (unsigned i = 0; i < b->n; i++) {
		const struct espdp_pkt *p = &b->pkts[i];
		const uint8_t *pkt = p->buf + p->off;

		if (!raw[i] || (pkt[0] >> 4) != family)
			continue;
		memset(&msgs[n], 0, sizeof(msgs[n]));
		msgs[n].msg_hdr.msg_namelen = packet_dest(&to[n], pkt, family, 0);
		iov[n].iov_base = (void *)pkt;
		iov[n].iov_len = p->len;
		msgs[n].msg_hdr.msg_name = &to[n];
		msgs[n].msg_hdr.msg_iov = &iov[n];
		msgs[n].msg_hdr.msg_iovlen = 1;
		n++;
	}
	if (n && fd < 0) { /* no socket for this family: every packet is an error */
		*errors += n;
		return 0;
	}
	for (unsigned done = 0; done < n;) {
		int r = sendmmsg(fd, msgs + done, n - done, 0);

		if (r <= 0) { /* this packet is lost (counted); the rest are tried */
			if (r < 0 && errno == EINTR)
				continue;
			(*errors)++;
			done++;
			continue;
		}
		done += (unsigned)r;
		sent += (unsigned)r;
	}
	return sent;
}

unsigned sock_send(struct sock_out *out, const struct io_batch *b, struct sock_counts c)
{
	uint8_t raw[IO_BATCH_MAX]; /* 1: still to send on the raw path */
	unsigned sent = 0;

	for (unsigned i = 0; i < b->n; i++)
		raw[i] = b->pkts[i].result == 0;
	if (out->udp4 >= 0 && !__atomic_load_n(&out->gso_off4, __ATOMIC_RELAXED))
		sent += send_udp(out->udp4, 4, out->port4, &out->gso_off4, b, raw, c.offloaded);
	if (out->udp6 >= 0 && !__atomic_load_n(&out->gso_off6, __ATOMIC_RELAXED))
		sent += send_udp(out->udp6, 6, out->port6, &out->gso_off6, b, raw, c.offloaded);
	if (out->packet_fd >= 0 && out->nh)
		sent += send_packet(out->packet_fd, out->nh, b, raw, c.errors, c.packet);
	sent += send_raw(out->send4, 4, b, raw, c.errors);
	sent += send_raw(out->send6, 6, b, raw, c.errors);
	return sent;
}

uint16_t sock_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &len))
		return 0;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return 0;
}

int sock_send_ike(int fd, int family, const uint8_t *local, const uint8_t *peer, uint16_t port,
		  const uint8_t *msg, size_t len)
{
	static const uint8_t marker[NON_ESP_MARKER_LEN]; /* four zero bytes */
	struct iovec iov[2] = { { (void *)marker, sizeof(marker) }, { (void *)msg, len } };
	union {
		char buf[CMSG_SPACE(sizeof(struct in6_pktinfo))];
		struct cmsghdr align;
	} cmsg;
	struct sockaddr_storage to;
	struct msghdr h;
	struct cmsghdr *c;
	int r;

	memset(&h, 0, sizeof(h));
	memset(&cmsg, 0, sizeof(cmsg));
	memset(&to, 0, sizeof(to));
	h.msg_name = &to;
	h.msg_iov = iov;
	h.msg_iovlen = 2;
	h.msg_control = cmsg.buf;
	c = (struct cmsghdr *)cmsg.buf;
	if (family == 4) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&to;
		struct in_pktinfo pi;

		memset(&pi, 0, sizeof(pi));
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, peer, 4);
		h.msg_namelen = sizeof(*sin);
		memcpy(&pi.ipi_spec_dst, local, 4); /* the source address */
		c->cmsg_level = IPPROTO_IP;
		c->cmsg_type = IP_PKTINFO;
		c->cmsg_len = CMSG_LEN(sizeof(pi));
		memcpy(CMSG_DATA(c), &pi, sizeof(pi));
		h.msg_controllen = CMSG_SPACE(sizeof(pi));
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&to;
		struct in6_pktinfo pi;

		memset(&pi, 0, sizeof(pi));
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, peer, 16);
		h.msg_namelen = sizeof(*sin6);
		memcpy(&pi.ipi6_addr, local, 16);
		c->cmsg_level = IPPROTO_IPV6;
		c->cmsg_type = IPV6_PKTINFO;
		c->cmsg_len = CMSG_LEN(sizeof(pi));
		memcpy(CMSG_DATA(c), &pi, sizeof(pi));
		h.msg_controllen = CMSG_SPACE(sizeof(pi));
	}
	do
		r = (int)sendmsg(fd, &h, MSG_DONTWAIT);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -1 : 0;
}
