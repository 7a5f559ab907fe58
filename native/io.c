/* io: batched TUN and socket I/O (see io.h). */
#include "io.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "ip.h"
#include "proto.h"

int io_batch_init(struct io_batch *b)
{
	memset(b, 0, sizeof(*b));
	for (unsigned i = 0; i < IO_BATCH_MAX; i++) {
		b->bufs[i] = malloc(IO_BUF_SIZE);
		if (!b->bufs[i])
			return -1;
	}
	return 0;
}

void io_batch_free(struct io_batch *b)
{
	for (unsigned i = 0; i < IO_BATCH_MAX; i++)
		free(b->bufs[i]);
	memset(b, 0, sizeof(*b));
}

static void pkt_reset(struct io_batch *b, unsigned i, uint32_t len)
{
	struct espdp_pkt *p = &b->pkts[i];

	p->buf = b->bufs[i];
	p->cap = IO_BUF_SIZE;
	p->off = ESPD_HEADROOM;
	p->len = len;
	p->result = 0;
	p->sa = NULL;
}

unsigned io_tun_read(int fd, struct io_batch *b, unsigned max, uint64_t *errors)
{
	unsigned n = 0;

	while (n < max) {
		ssize_t r = read(fd, b->bufs[n] + ESPD_HEADROOM, IO_BUF_SIZE - ESPD_HEADROOM - ESPD_TAILROOM);

		if (r <= 0) {
			if (r < 0 && errno != EAGAIN && errno != EINTR)
				(*errors)++;
			break;
		}
		pkt_reset(b, n++, (uint32_t)r);
	}
	b->n = n;
	return n;
}

unsigned io_tun_read_vnet(int fd, struct io_batch *b, unsigned max, struct tun_stage *st,
			  uint64_t *errors)
{
	unsigned n = 0;

	while (n < max) {
		uint8_t *at;
		ssize_t r;

		if (st->next < st->count) { /* hand out the staged super-packet's segments */
			while (n < max && st->next < st->count) {
				size_t len = offload_segment(st->buf + ESPD_HEADROOM, st->len, &st->h,
							     st->next++, b->bufs[n] + ESPD_HEADROOM);
				pkt_reset(b, n++, (uint32_t)len);
			}
			continue;
		}
		at = b->bufs[n] + ESPD_HEADROOM - VNET_HDR_LEN;
		r = read(fd, at, IO_BUF_SIZE - ESPD_HEADROOM - ESPD_TAILROOM + VNET_HDR_LEN);
		if (r <= VNET_HDR_LEN) {
			if (r < 0 && errno != EAGAIN && errno != EINTR)
				(*errors)++;
			break;
		}
		memcpy(&st->h, at, VNET_HDR_LEN);
		if (st->h.gso_type == VNET_GSO_NONE) {
			if (offload_csum(at + VNET_HDR_LEN, (size_t)r - VNET_HDR_LEN, &st->h))
				(*errors)++;
			else
				pkt_reset(b, n++, (uint32_t)(r - VNET_HDR_LEN));
			continue;
		}
		at = st->buf; /* keep the super-packet; its slot takes the old stage buffer */
		st->buf = b->bufs[n];
		b->bufs[n] = at;
		st->len = (uint32_t)(r - VNET_HDR_LEN);
		st->next = 0;
		st->count = offload_count(st->buf + ESPD_HEADROOM, st->len, &st->h);
		if (!st->count)
			(*errors)++;
	}
	b->n = n;
	return n;
}

unsigned io_tun_write(int fd, struct io_batch *b, int vnet, uint64_t *errors)
{
	uint16_t segments[IO_BATCH_MAX];
	unsigned written = 0;

	if (vnet)
		offload_coalesce(b->pkts, b->n, vnet & IO_VNET_USO, segments);
	for (unsigned i = 0; i < b->n; i++) {
		const struct espdp_pkt *p = &b->pkts[i];
		const uint8_t *at = p->buf + p->off - (vnet ? VNET_HDR_LEN : 0);
		size_t len = p->len + (vnet ? VNET_HDR_LEN : 0);
		unsigned carried = vnet ? segments[i] : 1; /* inner packets in this write */

		if (p->result)
			continue;
		if (write(fd, at, len) == (ssize_t)len)
			written += carried;
		else
			*errors += carried;
	}
	return written;
}

int io_socket_prepare(int fd, enum io_source src)
{
	int on = 1;

	switch (src) {
	case IO_ESP4:
		return 0; /* raw IPv4 sockets deliver the header */
	case IO_UDP4:
		return setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &on, sizeof(on)) ||
		       setsockopt(fd, IPPROTO_IP, IP_RECVTOS, &on, sizeof(on));
	case IO_ESP6:
	case IO_UDP6:
		return setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof(on)) ||
		       setsockopt(fd, IPPROTO_IPV6, IPV6_RECVTCLASS, &on, sizeof(on));
	default:
		return -1;
	}
}

struct recv_meta {
	struct sockaddr_storage from;
	uint8_t dst[16];
	uint8_t tos;
	char cmsg[128];
};

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
		}
	}
}

/* Rebuild the outer header(s) the kernel stripped, in front of the payload at p->off.
 * The UDP destination port is the NAT-T port the receive socket is bound to. */
static void rebuild_outer(struct espdp_pkt *p, enum io_source src, const struct recv_meta *meta)
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
		wr16(u + 2, NATT_PORT);
		wr16(u + 4, (uint16_t)(p->len + UDP_HDR_LEN));
	}
	p->off -= hdr;
	p->len = total;
}

unsigned io_net_recv(int fd, enum io_source src, struct io_batch *b, unsigned max,
		     uint64_t *errors)
{
	struct mmsghdr msgs[IO_BATCH_MAX];
	struct iovec iov[IO_BATCH_MAX];
	struct recv_meta meta[IO_BATCH_MAX];
	int n;

	if (max > IO_BATCH_MAX)
		max = IO_BATCH_MAX;
	memset(msgs, 0, sizeof(msgs[0]) * max);
	for (unsigned i = 0; i < max; i++) {
		iov[i].iov_base = b->bufs[i] + ESPD_HEADROOM;
		iov[i].iov_len = IO_BUF_SIZE - ESPD_HEADROOM - ESPD_TAILROOM;
		memset(&meta[i], 0, sizeof(meta[i]));
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		msgs[i].msg_hdr.msg_name = &meta[i].from;
		msgs[i].msg_hdr.msg_namelen = sizeof(meta[i].from);
		msgs[i].msg_hdr.msg_control = meta[i].cmsg;
		msgs[i].msg_hdr.msg_controllen = sizeof(meta[i].cmsg);
	}
	n = recvmmsg(fd, msgs, max, MSG_DONTWAIT, NULL);
	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR)
			(*errors)++;
		b->n = 0;
		return 0;
	}
	for (int i = 0; i < n; i++) {
		pkt_reset(b, (unsigned)i, msgs[i].msg_len);
		if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
			b->pkts[i].len = 0; /* esp_in drops it as malformed */
			continue;
		}
		if (src != IO_ESP4) {
			meta_parse(&msgs[i].msg_hdr, &meta[i]);
			rebuild_outer(&b->pkts[i], src, &meta[i]);
		}
	}
	b->n = (unsigned)n;
	return (unsigned)n;
}

static int send_group(int fd, int family, const struct io_batch *b, uint64_t *errors)
{
	struct mmsghdr msgs[IO_BATCH_MAX];
	struct iovec iov[IO_BATCH_MAX];
	struct sockaddr_storage to[IO_BATCH_MAX];
	unsigned n = 0;
	int sent = 0;

	for (unsigned i = 0; i < b->n; i++) {
		const struct espdp_pkt *p = &b->pkts[i];
		const uint8_t *pkt = p->buf + p->off;

		if (p->result || (pkt[0] >> 4) != (family == AF_INET ? 4 : 6))
			continue;
		memset(&msgs[n], 0, sizeof(msgs[n]));
		memset(&to[n], 0, sizeof(to[n]));
		if (family == AF_INET) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&to[n];

			sin->sin_family = AF_INET;
			memcpy(&sin->sin_addr, pkt + 16, 4);
			msgs[n].msg_hdr.msg_namelen = sizeof(*sin);
		} else {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&to[n];

			sin6->sin6_family = AF_INET6;
			memcpy(&sin6->sin6_addr, pkt + 24, 16);
			msgs[n].msg_hdr.msg_namelen = sizeof(*sin6);
		}
		iov[n].iov_base = (void *)pkt;
		iov[n].iov_len = p->len;
		msgs[n].msg_hdr.msg_name = &to[n];
		msgs[n].msg_hdr.msg_iov = &iov[n];
		msgs[n].msg_hdr.msg_iovlen = 1;
		n++;
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
		sent += r;
	}
	return sent;
}

unsigned io_net_send(int send4, int send6, const struct io_batch *b, uint64_t *errors)
{
	unsigned sent = 0;

	if (send4 >= 0)
		sent += (unsigned)send_group(send4, AF_INET, b, errors);
	if (send6 >= 0)
		sent += (unsigned)send_group(send6, AF_INET6, b, errors);
	return sent;
}
