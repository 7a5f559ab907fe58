// sources: native/ring.c native/io.c native/offload.c native/ip.c
/* test_ring: native/ring.c against the real kernel, in a network namespace of its own
 * (root). Raw ESP packets of both IP versions sent over loopback come out of the
 * TPACKET_V3 ring whole and in order, across blocks and batches; UDP does not; the muted
 * raw ESP sockets receive nothing while the kernel sends no ICMP protocol unreachable
 * (and does once they are closed: the counter can tell); unmuted, a socket receives
 * again; frames of the skipped interface are not taken; and the kernel refuses a ring on
 * a socket that is not AF_PACKET or with a block that is not a page multiple.
 *
 * Prints "N passed, M failed" last; exits non-zero on any failure.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ip.h"
#include "proto.h"
#include "ring.h"
#include "check.h"
#include "netns_lo.h"

#define SPI 0x4242u

static struct io_batch in;

/* IPv4 packets go out on an IPPROTO_RAW socket (header included): seq, total length. */
static void send4(int fd, uint32_t seq, uint32_t len)
{
	uint8_t p[2048] = { 0 };
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };

	p[0] = 0x45;
	wr16(p + 2, (uint16_t)len);
	p[8] = 64;
	p[9] = IPPROTO_NUM_ESP;
	wr32(p + 12, 0x7f000001);
	wr32(p + 16, 0x7f000001);
	wr32(p + 20, SPI);
	wr32(p + 24, seq);
	for (uint32_t i = 28; i < len; i++)
		p[i] = (uint8_t)(seq + i);
	CHECK(sendto(fd, p, len, 0, (struct sockaddr *)&to, sizeof(to)) == (ssize_t)len,
	      "send4 %u: %s", seq, strerror(errno));
}

/* IPv6 packets on an AF_INET6 raw socket of protocol 50 (the kernel adds the header). */
static void send6(int fd, uint32_t seq, uint32_t len)
{
	uint8_t p[2048] = { 0 };
	struct sockaddr_in6 to = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };

	wr32(p, SPI);
	wr32(p + 4, seq);
	CHECK(sendto(fd, p, len, 0, (struct sockaddr *)&to, sizeof(to)) == (ssize_t)len,
	      "send6 %u: %s", seq, strerror(errno));
}

/* Everything the ring hands out within ~300 ms: seq numbers, versions and lengths. */
static unsigned drain(struct rx_ring *r, int fd, uint32_t *seq, uint8_t *ver, uint32_t *len,
		      unsigned cap, unsigned batch)
{
	unsigned got = 0;

	for (int idle = 0; idle < 30;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		unsigned n = ring_recv(r, &in, batch);

		CHECK(n <= batch, "batch of %u over %u", n, batch);
		for (unsigned i = 0; i < n && got < cap; i++, got++) {
			const uint8_t *p = in.pkts[i].buf + in.pkts[i].off;
			unsigned hdr = (p[0] >> 4) == 6 ? IPV6_HDR_LEN : IPV4_HDR_MIN;

			ver[got] = p[0] >> 4;
			len[got] = in.pkts[i].len;
			seq[got] = in.pkts[i].len >= hdr + 8 ? rd32(p + hdr + 4) : 0;
			if (ver[got] == 4)
				CHECK(p[9] == IPPROTO_NUM_ESP && rd32(p + hdr) == SPI &&
				      rd16(p + 2) == (uint16_t)in.pkts[i].len && p[in.pkts[i].len - 1] ==
				      (uint8_t)(seq[got] + in.pkts[i].len - 1),
				      "IPv4 packet %u not whole", got);
			else
				CHECK(p[6] == IPPROTO_NUM_ESP && rd32(p + hdr) == SPI &&
				      (uint32_t)rd16(p + 4) + IPV6_HDR_LEN == in.pkts[i].len,
				      "IPv6 packet %u not whole", got);
		}
		if (!n) {
			idle++;
			(void)poll(&pfd, 1, 10);
		}
	}
	return got;
}

/* Icmp: OutDestUnreachs of this namespace (/proc/net/snmp: a names line, a values line). */
static unsigned long dest_unreachs(void)
{
	char names[1024] = "", values[1024] = "", *sn, *sv;
	FILE *f = fopen("/proc/net/snmp", "r");
	unsigned long v = 0;

	while (f && fgets(values, sizeof(values), f)) {
		if (strncmp(values, "Icmp:", 5))
			continue;
		if (!names[0]) {
			memcpy(names, values, sizeof(names));
			continue;
		}
		for (char *n = strtok_r(names, " \n", &sn), *x = strtok_r(values, " \n", &sv);
		     n && x; n = strtok_r(NULL, " \n", &sn), x = strtok_r(NULL, " \n", &sv))
			if (!strcmp(n, "OutDestUnreachs"))
				v = strtoul(x, NULL, 10);
		break;
	}
	if (f)
		fclose(f);
	return v;
}

static void setup(void)
{
	own_netns_with_lo("test_ring");
	if (io_batch_init(&in)) {
		perror("setup");
		exit(2);
	}
	usleep(200000); /* ::1 is usable once lo is up (no DAD on loopback) */
}

int main(void)
{
	enum { N4 = 150, N6 = 30, CAP = 512 };
	static uint32_t seq[CAP], len[CAP];
	static uint8_t ver[CAP];
	struct rx_ring r, skip;
	int esp4, esp6, raw4, raw6, udp, fd, fd2, bad;
	unsigned got, v4 = 0, v6 = 0, in_order = 1;
	unsigned long icmp0;
	uint8_t buf[2048];
	struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons(9),
				   .sin_addr.s_addr = htonl(0x7f000001) };

	setup();
	esp4 = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK, IPPROTO_NUM_ESP);
	esp6 = socket(AF_INET6, SOCK_RAW | SOCK_NONBLOCK, IPPROTO_NUM_ESP);
	raw4 = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
	raw6 = socket(AF_INET6, SOCK_RAW, IPPROTO_NUM_ESP);
	udp = socket(AF_INET, SOCK_DGRAM, 0);
	fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	if (esp4 < 0 || esp6 < 0 || raw4 < 0 || raw6 < 0 || udp < 0 || fd < 0 ||
	    bind(udp, (struct sockaddr *)&dst, sizeof(dst))) { /* no port unreachable for UDP */
		perror("sockets");
		return 2;
	}

	/* the kernel refuses: not a packet socket; a block that is not a page multiple */
	CHECK(ring_open(&r, udp, 65536, 8, 1, 0) != 0 && r.map == NULL, "ring on UDP");
	bad = socket(AF_PACKET, SOCK_DGRAM, 0);
	CHECK(ring_open(&r, bad, 65536 + 512, 8, 1, 0) != 0 && r.map == NULL, "odd block");
	close(bad);

	CHECK(ring_open(&r, fd, 16384, 64, 1, 0) == 0, "ring_open: %s", strerror(errno));
	CHECK(ring_mute(esp4) == 0 && ring_mute(esp6) == 0, "mute: %s", strerror(errno));
	CHECK(ring_recv(&r, &in, 32) == 0 && !ring_pending(&r), "an empty ring hands out nothing");
	icmp0 = dest_unreachs();

	/* 150 IPv4 (more than one 16 KiB block holds), 30 IPv6, 10 UDP between them */
	for (uint32_t i = 1; i <= N4; i++) {
		send4(raw4, i, 60 + (i * 37) % 1300);
		if (i % 15 == 0)
			(void)sendto(udp, "x", 1, 0, (struct sockaddr *)&dst, sizeof(dst));
		if (i <= N6)
			send6(raw6, 1000 + i, 16 + (i * 53) % 1200);
	}
	got = drain(&r, fd, seq, ver, len, CAP, 32);
	CHECK(got == N4 + N6, "the ring handed out %u of %u ESP packets", got, N4 + N6);
	for (unsigned i = 0; i < got; i++) {
		if (ver[i] == 4) {
			in_order &= seq[i] == ++v4;
			CHECK(len[i] == 60 + (seq[i] * 37) % 1300, "IPv4 %u: length %u", seq[i], len[i]);
		} else {
			in_order &= seq[i] == 1000 + ++v6;
			CHECK(len[i] == IPV6_HDR_LEN + 16 + ((seq[i] - 1000) * 53) % 1200,
			      "IPv6 %u: length %u", seq[i], len[i]);
		}
	}
	CHECK(v4 == N4 && v6 == N6 && in_order, "%u IPv4, %u IPv6, in order %u", v4, v6, in_order);
	CHECK(recv(esp4, buf, sizeof(buf), MSG_DONTWAIT) < 0 && errno == EAGAIN,
	      "the muted IPv4 raw socket received");
	CHECK(recv(esp6, buf, sizeof(buf), MSG_DONTWAIT) < 0 && errno == EAGAIN,
	      "the muted IPv6 raw socket received");
	CHECK(dest_unreachs() == icmp0, "ICMP unreachable sent although a raw socket is open");

	/* a batch of 7 at a time: a block is handed out across batches */
	for (uint32_t i = 1; i <= 40; i++)
		send4(raw4, 2000 + i, 100);
	got = drain(&r, fd, seq, ver, len, CAP, 7);
	CHECK(got == 40 && seq[0] == 2001 && seq[39] == 2040, "40 in batches of 7: %u", got);

	/* unmuted, the raw socket receives its copy again */
	CHECK(ring_unmute(esp4) == 0, "unmute: %s", strerror(errno));
	send4(raw4, 3000, 100);
	got = drain(&r, fd, seq, ver, len, CAP, 32);
	usleep(10000);
	CHECK(got == 1 && recv(esp4, buf, sizeof(buf), MSG_DONTWAIT) == 100,
	      "unmuted: ring %u, raw socket none", got);

	/* frames of the skipped interface (lo: index 1 here) are not taken */
	fd2 = socket(AF_PACKET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	CHECK(ring_open(&skip, fd2, 16384, 4, 1, if_nametoindex("lo")) == 0, "skip ring");
	send4(raw4, 4000, 100);
	got = drain(&skip, fd2, seq, ver, len, CAP, 32);
	CHECK(got == 0, "the ring that skips lo took %u", got);
	CHECK(drain(&r, fd, seq, ver, len, CAP, 32) == 1, "the other ring missed it");
	ring_close(&skip);
	close(fd2);

	/* a ring with no room drops, and says how many: 2 blocks of 4 KiB, not drained */
	{
		struct rx_ring small;
		int fd3 = socket(AF_PACKET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
		uint64_t drops;

		CHECK(ring_open(&small, fd3, 4096, 2, 1, 0) == 0, "small ring");
		CHECK(ring_drops(fd3) == 0, "drops before any traffic");
		for (uint32_t i = 1; i <= 60; i++)
			send4(raw4, 6000 + i, 1000);
		usleep(20000);
		drops = ring_drops(fd3);
		got = drain(&small, fd3, seq, ver, len, CAP, 32);
		CHECK(drops > 0 && got + drops == 60, "small ring: %u got, %lu dropped of 60", got,
		      (unsigned long)drops);
		CHECK(ring_drops(fd3) == 0, "the kernel did not reset its drop count");
		CHECK(ring_drops(udp) == 0, "not a packet socket: 0");
		ring_close(&small);
		close(fd3);
		CHECK(drain(&r, fd, seq, ver, len, CAP, 32) == 60, "the big ring missed some");
	}

	/* the counter can tell: without raw ESP sockets the kernel answers unreachable */
	close(esp4);
	close(esp6);
	icmp0 = dest_unreachs();
	send4(raw4, 5000, 100);
	usleep(50000);
	CHECK(dest_unreachs() > icmp0, "no ICMP unreachable without a raw socket: counter blind");

	ring_close(&r);
	CHECK(r.map == NULL && ring_recv(&r, &in, 32) == 0, "a closed ring hands out nothing");
	close(fd);
	io_batch_free(&in);
	printf("%lu passed, %lu failed\n", passed, failed);
	return failed ? 1 : 0;
}
