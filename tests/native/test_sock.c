// sources: native/sock.c native/nexthop.c native/io.c native/offload.c native/ip.c
/* test_sock: native/sock.c against the real kernel, in a network namespace of its own
 * (root): ESP-in-UDP packets as esp_out builds them are sent with sock_send on a UDP
 * socket bound to 127.0.0.1:4500 and received back on it with sock_recv. Checks that runs
 * go out as UDP GSO sends and come back as GRO aggregates split into the same packets in
 * the same order with their outer headers rebuilt; that runs break on size, TOS and DF;
 * that a pool hands out a big aggregate across several small batches; and that a run the
 * kernel refuses (SO_NO_CHECK forbids UDP_SEGMENT: EINVAL) is sent whole on the raw
 * socket, with GSO off from then on.
 *
 * Prints "N passed, M failed" last; exits non-zero on any failure.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ip.h"
#include "proto.h"
#include "sock.h"
#include "check.h"
#include "netns_lo.h"


#define SPI 0x1000u

struct spec {
	uint32_t payload; /* ESP bytes after the UDP header */
	uint8_t tos;
	int df;
	uint16_t sport;
};

static const uint32_t LOOPBACK = 0x7f000001;

/* Packet i of b: outer IPv4 + UDP as esp_out writes them, then SPI, seq and a pattern. */
static void build(struct io_batch *b, unsigned i, const struct spec *s, uint32_t seq)
{
	uint8_t *h = b->bufs[i] + ESPD_HEADROOM, *u = h + IPV4_HDR_MIN, *esp = u + UDP_HDR_LEN;
	uint32_t total = IPV4_HDR_MIN + UDP_HDR_LEN + s->payload;

	memset(h, 0, IPV4_HDR_MIN + UDP_HDR_LEN);
	h[0] = 0x45;
	h[1] = s->tos;
	wr16(h + 2, (uint16_t)total);
	wr16(h + 4, (uint16_t)seq);
	wr16(h + 6, s->df ? 0x4000 : 0);
	h[8] = 64;
	h[9] = IPPROTO_NUM_UDP;
	wr32(h + 12, LOOPBACK);
	wr32(h + 16, LOOPBACK);
	ip4_set_checksum(h);
	wr16(u, s->sport ? s->sport : NATT_PORT);
	wr16(u + 2, NATT_PORT);
	wr16(u + 4, (uint16_t)(UDP_HDR_LEN + s->payload));
	wr32(esp, SPI);
	wr32(esp + 4, seq);
	for (uint32_t k = 8; k < s->payload; k++)
		esp[k] = (uint8_t)(seq * 31 + k);
	io_pkt_reset(b, i, total);
}

static int sock_udp, sock_raw;
static uint64_t last_gro; /* packets the last round_trip received in GRO aggregates */
static struct sock_pool pool;
static struct io_batch out, in;

/* Receive until n packets arrived (or 1 s passed); returns how many, GRO count in *gro. */
static unsigned receive(unsigned n, unsigned max, unsigned *collected, uint8_t **bufs,
			uint32_t *lens, uint64_t *gro)
{
	unsigned got = 0;

	for (int tries = 0; got < n && tries < 1000; tries++) {
		uint64_t errors = 0;
		unsigned r = sock_recv(sock_udp, IO_UDP4, &pool, &in, max,
				       (struct sock_counts){ &errors, gro, NULL });

		CHECK(errors == 0, "recv errors %llu", (unsigned long long)errors);
		if (!r) {
			usleep(1000);
			continue;
		}
		CHECK(r <= max, "%u > max %u", r, max);
		for (unsigned i = 0; i < r && got < n; i++, got++) {
			lens[got] = in.pkts[i].len;
			memcpy(bufs[got], in.pkts[i].buf + in.pkts[i].off, in.pkts[i].len);
		}
	}
	*collected = got;
	return got;
}

/* Send specs[0..n-1] (seq = first + i) and check each comes back whole and in order
 * (in_order) or at least once each. Returns the GSO count of the send. */
static uint64_t round_trip(const char *what, const struct spec *specs, unsigned n, uint32_t first,
			   int in_order, unsigned recv_max)
{
	static uint8_t *bufs[IO_BATCH_MAX];
	static uint32_t lens[IO_BATCH_MAX];
	uint64_t errors = 0, gso = 0, gro = 0;
	struct sock_out o = { .send4 = sock_raw, .send6 = -1, .udp4 = sock_udp, .udp6 = -1,
				.port4 = NATT_PORT };
	unsigned sent, got, seen[IO_BATCH_MAX] = { 0 };

	if (!bufs[0])
		for (unsigned i = 0; i < IO_BATCH_MAX; i++)
			bufs[i] = malloc(IO_BUF_SIZE);
	for (unsigned i = 0; i < n; i++)
		build(&out, i, &specs[i], first + i);
	out.n = n;
	sent = sock_send(&o, &out, (struct sock_counts){ &errors, &gso, NULL });
	CHECK(sent == n && errors == 0, "%s: sent %u of %u, %llu errors", what, sent, n,
	      (unsigned long long)errors);
	receive(n, recv_max, &got, bufs, lens, &gro);
	CHECK(got == n, "%s: received %u of %u", what, got, n);
	for (unsigned k = 0; k < got; k++) {
		const uint8_t *h = bufs[k], *u = h + IPV4_HDR_MIN, *esp = u + UDP_HDR_LEN;
		uint32_t seq = rd32(esp + 4), i = seq - first;

		CHECK(i < n, "%s: seq %u unknown", what, seq);
		if (i >= n)
			continue;
		seen[i]++;
		if (in_order)
			CHECK(i == k, "%s: packet %u arrived as %u", what, i, k);
		CHECK(lens[k] == IPV4_HDR_MIN + UDP_HDR_LEN + specs[i].payload,
		      "%s: packet %u length %u", what, i, lens[k]);
		CHECK(h[0] == 0x45 && h[9] == IPPROTO_NUM_UDP && rd32(h + 12) == LOOPBACK &&
			      rd32(h + 16) == LOOPBACK && ip_checksum(h, IPV4_HDR_MIN, 0) == 0,
		      "%s: packet %u outer header", what, i);
		CHECK(h[1] == specs[i].tos, "%s: packet %u tos %#x, sent %#x", what, i, h[1],
		      specs[i].tos);
		CHECK(rd16(u) == (specs[i].sport ? specs[i].sport : NATT_PORT) &&
			      rd16(u + 2) == NATT_PORT &&
			      rd16(u + 4) == UDP_HDR_LEN + specs[i].payload,
		      "%s: packet %u UDP header", what, i);
		int same = rd32(esp) == SPI;

		for (uint32_t j = 8; j < specs[i].payload && same; j++)
			same = esp[j] == (uint8_t)(seq * 31 + j);
		CHECK(same, "%s: packet %u payload differs", what, i);
	}
	for (unsigned i = 0; i < n; i++)
		CHECK(seen[i] == 1, "%s: packet %u seen %u times", what, i, seen[i]);
	CHECK(gro <= n, "%s: %llu GRO packets of %u", what, (unsigned long long)gro, n);
	last_gro = gro;
	return gso;
}

static void setup(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(NATT_PORT) };

	own_netns_with_lo("test_sock");
	a.sin_addr.s_addr = htonl(LOOPBACK);
	sock_udp = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	sock_raw = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
	if (sock_udp < 0 || sock_raw < 0 || bind(sock_udp, (struct sockaddr *)&a, sizeof(a)) ||
	    sock_prepare(sock_udp, IO_UDP4) || io_batch_init(&out) || io_batch_init(&in) ||
	    sock_pool_init(&pool)) {
		perror("setup");
		exit(2);
	}
}

int main(void)
{
	struct spec s[IO_BATCH_MAX];
	uint64_t gso;
	int off = 0;

	setup();

	/* one run of 10: one GSO send, back as one aggregate, split in order */
	for (unsigned i = 0; i < 10; i++)
		s[i] = (struct spec){ .payload = 200, .df = 1 };
	gso = round_trip("run of 10", s, 10, 1, 1, IO_BATCH_MAX);
	CHECK(gso == 10, "run of 10: %llu in GSO runs", (unsigned long long)gso);
	CHECK(last_gro == 10, "run of 10: %llu in GRO aggregates", (unsigned long long)last_gro);

	/* a shorter packet ends a run: [200 x3, 120], [200 x2] */
	for (unsigned i = 0; i < 6; i++)
		s[i] = (struct spec){ .payload = i == 3 ? 120 : 200, .df = 1 };
	gso = round_trip("short ends a run", s, 6, 100, 1, IO_BATCH_MAX);
	CHECK(gso == 6, "short ends a run: %llu in GSO runs", (unsigned long long)gso);

	/* TOS changes start new runs and every packet keeps its own (ECN included) */
	for (unsigned i = 0; i < 8; i++)
		s[i] = (struct spec){ .payload = 300, .df = 1, .tos = i < 3 ? 0 : i < 6 ? 0xb8 : 0x01 };
	gso = round_trip("tos", s, 8, 200, 1, IO_BATCH_MAX);
	CHECK(gso == 8, "tos: %llu in GSO runs", (unsigned long long)gso);

	/* outer DF clear (2), or another source port (4): whole packets on the raw socket,
	 * after the runs; the runs are [0,1] and [3,5] */
	for (unsigned i = 0; i < 6; i++)
		s[i] = (struct spec){ .payload = 100, .df = i != 2, .sport = i == 4 ? 4501 : 0 };
	gso = round_trip("df and sport", s, 6, 300, 0, IO_BATCH_MAX);
	CHECK(gso == 4, "df and sport: %llu in GSO runs", (unsigned long long)gso);

	/* 64 in one run, received 16 at a time: the pool hands out the rest in order */
	for (unsigned i = 0; i < 64; i++)
		s[i] = (struct spec){ .payload = 500, .df = 1 };
	gso = round_trip("pool", s, 64, 400, 1, 16);
	CHECK(gso == 64, "pool: %llu in GSO runs", (unsigned long long)gso);
	CHECK(last_gro == 64, "pool: %llu in GRO aggregates", (unsigned long long)last_gro);
	CHECK(!sock_pool_pending(&pool), "pool still holds datagrams");

	/* a failed packet (result != 0) is not sent */
	{
		struct sock_out o = { .send4 = sock_raw, .send6 = -1, .udp4 = sock_udp, .udp6 = -1,
				.port4 = NATT_PORT };
		uint64_t errors = 0, g = 0;

		s[0] = (struct spec){ .payload = 100, .df = 1 };
		build(&out, 0, &s[0], 999);
		out.pkts[0].result = 1;
		out.n = 1;
		CHECK(sock_send(&o, &out, (struct sock_counts){ &errors, &g, NULL }) == 0 && !errors,
		      "a dropped packet was sent");
		usleep(20000);
		uint64_t e2 = 0, gro = 0;
		CHECK(sock_recv(sock_udp, IO_UDP4, &pool, &in, 64,
				(struct sock_counts){ &e2, &gro, NULL }) == 0,
		      "a dropped packet arrived");
	}

	/* The kernel refuses UDP_SEGMENT on a socket without checksums: the run goes out
	 * whole on the raw socket, nothing is lost, and GSO stays off for that socket. */
	off = 1;
	CHECK(setsockopt(sock_udp, SOL_SOCKET, SO_NO_CHECK, &off, sizeof(off)) == 0, "SO_NO_CHECK");
	{
		struct sock_out o = { .send4 = sock_raw, .send6 = -1, .udp4 = sock_udp, .udp6 = -1,
				.port4 = NATT_PORT };
		static uint8_t *bufs[IO_BATCH_MAX];
		static uint32_t lens[IO_BATCH_MAX];
		uint64_t errors = 0, g = 0, gro = 0;
		unsigned got;

		for (unsigned i = 0; i < IO_BATCH_MAX; i++)
			bufs[i] = malloc(IO_BUF_SIZE);
		for (unsigned i = 0; i < 10; i++) {
			s[i] = (struct spec){ .payload = 200, .df = 1 };
			build(&out, i, &s[i], 500 + i);
		}
		out.n = 10;
		CHECK(sock_send(&o, &out, (struct sock_counts){ &errors, &g, NULL }) == 10,
		      "refused run: not all sent");
		CHECK(g == 0 && errors == 0 && o.gso_off4 == 1,
		      "refused run: gso %llu errors %llu gso_off4 %d", (unsigned long long)g,
		      (unsigned long long)errors, o.gso_off4);
		receive(10, 64, &got, bufs, lens, &gro);
		CHECK(got == 10 && gro == 0, "refused run: received %u (%llu as GRO)", got,
		      (unsigned long long)gro);
		for (unsigned k = 0; k < got; k++)
			CHECK(rd32(bufs[k] + IPV4_HDR_MIN + UDP_HDR_LEN + 4) == 500 + k,
			      "refused run: packet %u out of order", k);
		for (unsigned i = 0; i < IO_BATCH_MAX; i++)
			free(bufs[i]);
	}

	sock_pool_free(&pool);
	io_batch_free(&out);
	io_batch_free(&in);
	printf("%lu passed, %lu failed\n", passed, failed);
	return failed ? 1 : 0;
}
