// sources: native/io.c native/offload.c native/ip.c
/* test_io_batch: batched TUN reads with vnet headers (native/io.c io_tun_read_vnet) end a
 * batch at a super-packet boundary. A SOCK_SEQPACKET socket pair stands in for the TUN
 * device: like it, one read() returns one whole message (vnet_hdr + packet).
 *
 * Prints "N passed, M failed" last; exits non-zero on any failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "io.h"
#include "offload.h"
#include "proto.h"
#include "check.h"

static int fds[2];
static struct io_batch b;
static struct tun_stage st;
static uint8_t msg[VNET_HDR_LEN + 65536];

/* Queue a TCP/IPv4 super-packet of `segments` segments of mss bytes (1: a plain packet,
 * no GSO). Its TCP sequence number is `seq`, so segments can be traced to it. */
static void queue(unsigned segments, uint16_t mss, uint32_t seq)
{
	struct vnet_hdr h = { 0 };
	uint8_t *ip = msg + VNET_HDR_LEN;
	uint32_t len = 40 + segments * (uint32_t)mss;

	memset(ip, 0, 40);
	ip[0] = 0x45;
	wr16(ip + 2, (uint16_t)(len > 0xffff ? 0xffff : len));
	ip[8] = 64;
	ip[9] = 6;
	memcpy(ip + 12, "\x0a\x01\x00\x0a\x0a\x02\x00\x0a", 8);
	wr16(ip + 20, 1000);
	wr16(ip + 22, 2000);
	wr32(ip + 24, seq);
	ip[32] = 5 << 4;
	ip[33] = 0x10;
	memset(ip + 40, 0xab, len - 40);
	if (segments > 1) {
		h.flags = VNET_F_NEEDS_CSUM;
		h.gso_type = VNET_GSO_TCPV4;
		h.hdr_len = 40;
		h.gso_size = mss;
		h.csum_start = 20;
		h.csum_offset = 16;
	}
	memcpy(msg, &h, VNET_HDR_LEN);
	CHECK(write(fds[0], msg, VNET_HDR_LEN + len) == (ssize_t)(VNET_HDR_LEN + len), "queue");
}

/* One batch of at most max; returns its size and checks the segments come in order. */
static unsigned batch(unsigned max)
{
	uint64_t errors = 0;
	unsigned n = io_tun_read_vnet(fds[1], &b, max, &st, &errors);

	CHECK(errors == 0, "%llu read errors", (unsigned long long)errors);
	return n;
}

static uint32_t seq_of(unsigned i)
{
	return rd32(b.pkts[i].buf + b.pkts[i].off + 24);
}

int main(void)
{
	unsigned n;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, fds) || io_batch_init(&b) ||
	    !(st.buf = malloc(IO_BUF_SIZE))) {
		perror("setup");
		return 2;
	}

	/* three super-packets of 30 segments: 60 fit in a batch of 64, the third waits */
	queue(30, 100, 1000000);
	queue(30, 100, 2000000);
	queue(30, 100, 3000000);
	n = batch(IO_BATCH_MAX);
	CHECK(n == 60, "first batch %u, want 60 (two whole super-packets)", n);
	CHECK(seq_of(0) == 1000000 && seq_of(29) == 1000000 + 29 * 100 && seq_of(30) == 2000000,
	      "order");
	CHECK(st.next == 0 && st.count == 30, "the third is staged whole: %u/%u", st.next, st.count);
	n = batch(IO_BATCH_MAX);
	CHECK(n == 30 && seq_of(0) == 3000000, "second batch %u starts with the third", n);
	CHECK(batch(IO_BATCH_MAX) == 0, "queue drained");

	/* a plain packet, then a super-packet that fits behind it: one batch */
	queue(1, 100, 5);
	queue(40, 100, 4000000);
	n = batch(IO_BATCH_MAX);
	CHECK(n == 41 && seq_of(0) == 5 && seq_of(1) == 4000000, "plain + super: %u", n);

	/* more segments than a batch holds: it starts a batch and spans into the next */
	queue(20, 100, 6000000);
	queue(100, 100, 7000000);
	n = batch(IO_BATCH_MAX);
	CHECK(n == 20, "the 20 before the big one end their batch: %u", n);
	n = batch(IO_BATCH_MAX);
	CHECK(n == 64 && seq_of(0) == 7000000, "the big one fills a batch: %u", n);
	n = batch(IO_BATCH_MAX);
	CHECK(n == 36 && seq_of(0) == 7000000 + 64 * 100, "and ends in the next: %u", n);

	/* small batches (batch = 8): a super-packet larger than the batch still goes through */
	queue(3, 100, 8000000);
	queue(10, 100, 9000000);
	CHECK(batch(8) == 3, "3 then the 10 waits");
	CHECK(batch(8) == 8 && batch(8) == 2, "10 over two batches of 8");
	CHECK(batch(8) == 0, "drained");

	io_batch_free(&b);
	free(st.buf);
	printf("%lu passed, %lu failed\n", passed, failed);
	return failed != 0;
}
