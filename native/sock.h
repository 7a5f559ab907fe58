/* sock: a worker's network side: ESP and ESP-in-UDP received as full outer packets, and
 * sealed packets sent.
 *
 * Every packet the data plane sees from the network is a full outer IP packet: raw IPv4
 * sockets deliver one; for raw IPv6 and for UDP the header is rebuilt in the headroom from
 * the addresses, ports and traffic class the kernel reports (so esp_in has one format).
 *
 * Receive goes through a pool: recvmmsg fills it with datagrams, which are handed to the
 * batch in arrival order, a plain datagram by swapping buffers (no copy), a UDP GRO
 * aggregate (UDP_GRO: ESP packets of one size from one peer, received as one) by copying
 * out its segments one by one. A pool must be empty before its worker waits in epoll:
 * epoll is level-triggered on the socket, not on the pool.
 *
 * Send: ESP in UDP goes out on the NAT-T socket. Runs of packets to one peer with one
 * size and TOS go as one sendmsg with UDP_SEGMENT (the kernel routes and walks the stack
 * once per run; a GSO-capable device, or the stack before one that is not, splits it).
 * Everything else (raw ESP, outer IPv4 without DF, UDP after the kernel refused GSO) goes
 * as whole packets: on the AF_PACKET socket when the control plane gave a next hop for
 * the destination and the packet fits its MTU (nexthop.h; send_path = "packet"), else on
 * the raw IPPROTO_RAW sockets, which route, filter and fragment in the kernel.
 */
#ifndef ESPD_SOCK_H
#define ESPD_SOCK_H

#include <stdint.h>
#include <sys/socket.h>

#include "io.h"
#include "nexthop.h"

enum io_source { IO_ESP4, IO_ESP6, IO_UDP4, IO_UDP6, IO_SOURCES };

struct recv_meta {
	struct sockaddr_storage from;
	uint8_t dst[16];
	uint8_t tos;
	uint16_t gro; /* UDP GRO segment size; 0: one datagram */
	union {
		char buf[128];
		struct cmsghdr align;
	} cmsg;
};

/* Datagrams received but not yet handed to a batch: entries head..count-1. */
struct sock_pool {
	uint8_t *bufs[IO_BATCH_MAX]; /* IO_BUF_SIZE each; swapped with batch buffers */
	struct recv_meta meta[IO_BATCH_MAX];
	uint32_t len[IO_BATCH_MAX]; /* datagram length; 0: truncated (dropped as malformed) */
	uint32_t at[IO_BATCH_MAX];  /* GRO aggregates: bytes already handed out */
	unsigned head, count;
	uint16_t port; /* the port the socket is bound to (UDP); NATT_PORT until told */
};

/* Where sealed packets go. gso_off[s]: the kernel refused UDP_SEGMENT on udp fd s
 * (4 or 6); that worker sends ESP in UDP on the raw socket from then on. */
struct sock_out {
	int send4, send6; /* SOCK_RAW IPPROTO_RAW */
	int udp4, udp6;   /* the NAT-T sockets (usually port 4500); -1: none */
	uint16_t port4, port6; /* the ports they are bound to: an SA's local port must be it */
	int gso_off4, gso_off6;
	int packet_fd; /* AF_PACKET SOCK_DGRAM; -1: none */
	const struct nexthops *nh; /* where packet_fd may send (nexthop.h); NULL: nowhere */
};

int sock_pool_init(struct sock_pool *p);
void sock_pool_free(struct sock_pool *p);
static inline int sock_pool_pending(const struct sock_pool *p)
{
	return p->head < p->count;
}
/* Enable the ancillary data (and UDP GRO) sock_recv needs on a receive socket, and the
 * send options of the NAT-T socket. */
int sock_prepare(int fd, enum io_source src);
/* Where sock_recv and sock_send count. */
struct sock_counts {
	uint64_t *errors;
	uint64_t *offloaded; /* packets in GRO aggregates / GSO runs */
	uint64_t *packet; /* send: packets that left on the AF_PACKET socket; may be NULL */
};

/* Hand up to max packets from pool and socket (one recvmmsg at most) to b, as full outer
 * packets in arrival order; returns how many. */
unsigned sock_recv(int fd, enum io_source src, struct sock_pool *pool, struct io_batch *b,
		   unsigned max, struct sock_counts c);
/* Send the passed packets of b; returns how many left (GSO runs count every packet). */
unsigned sock_send(struct sock_out *out, const struct io_batch *b, struct sock_counts c);
/* The local port a socket is bound to, or 0. */
uint16_t sock_port(int fd);
/* One datagram on the NAT-T socket fd: the non-ESP marker, then msg[0..len), from
 * local (4 or 16 bytes of `family`) to peer:port. 0, or -1 with errno set. */
int sock_send_ike(int fd, int family, const uint8_t *local, const uint8_t *peer, uint16_t port,
		  const uint8_t *msg, size_t len);

#endif
