/* ring: raw ESP received through a TPACKET_V3 ring (see ring.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ring.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "proto.h"

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

/* Accept frames for this host (PACKET_HOST) that are IPv4 protocol 50 or IPv6 next header
 * 50, and did not come in on interface `skip` (espd's own TUN device: decrypted packets
 * that are themselves ESP belong to the kernel); everything else stays the kernel's
 * alone. Offsets are from the network header (SOCK_DGRAM). Instruction 3's k is `skip`. */
static const struct sock_filter esp_filter[] = {
	/* 0 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_PKTTYPE),
	/* 1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PACKET_HOST, 0, 10),
	/* 2 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_IFINDEX),
	/* 3 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 8, 0),
	/* 4 */ BPF_STMT(BPF_LD | BPF_H | BPF_ABS, SKF_AD_OFF + SKF_AD_PROTOCOL),
	/* 5 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, 0, 2),
	/* 6 */ BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 9),
	/* 7 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_NUM_ESP, 3, 4),
	/* 8 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IPV6, 0, 3),
	/* 9 */ BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 6),
	/* 10 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_NUM_ESP, 0, 1),
	/* 11 */ BPF_STMT(BPF_RET | BPF_K, 0x40000),
	/* 12 */ BPF_STMT(BPF_RET | BPF_K, 0),
};

int ring_mute(int fd)
{
	struct sock_filter none[] = { BPF_STMT(BPF_RET | BPF_K, 0) };
	struct sock_fprog prog = { 1, none };

	return setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog));
}

int ring_unmute(int fd)
{
	int none = 0;

	return setsockopt(fd, SOL_SOCKET, SO_DETACH_FILTER, &none, sizeof(none));
}

int ring_open(struct rx_ring *r, int fd, unsigned block_size, unsigned blocks,
	      unsigned timeout_ms, unsigned skip_ifindex)
{
	int v3 = TPACKET_V3, on = 1;
	struct sock_filter code[sizeof(esp_filter) / sizeof(esp_filter[0])];
	struct sock_fprog prog = { sizeof(code) / sizeof(code[0]), code };
	struct tpacket_req3 req = { .tp_block_size = block_size, .tp_block_nr = blocks,
				    .tp_frame_size = 2048, .tp_frame_nr = 0,
				    .tp_retire_blk_tov = timeout_ms ? timeout_ms : 1 };
	struct sockaddr_ll ll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL) };

	memset(r, 0, sizeof(*r));
	memcpy(code, esp_filter, sizeof(code));
	code[3].k = skip_ifindex;
	req.tp_frame_nr = block_size / 2048 * blocks;
	if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &v3, sizeof(v3)) ||
	    setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &on, sizeof(on)) ||
	    setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) ||
	    setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)))
		return -1;
	r->size = (size_t)block_size * blocks;
	r->map = mmap(NULL, r->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_LOCKED, fd, 0);
	if (r->map == MAP_FAILED)
		r->map = mmap(NULL, r->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (r->map == MAP_FAILED) {
		r->map = NULL;
		return -1;
	}
	r->block_size = block_size;
	r->blocks = blocks;
	if (bind(fd, (struct sockaddr *)&ll, sizeof(ll))) {
		ring_close(r);
		return -1;
	}
	return 0;
}

static struct tpacket_block_desc *block(const struct rx_ring *r, unsigned i)
{
	return (struct tpacket_block_desc *)(r->map + (size_t)i * r->block_size);
}

int ring_pending(const struct rx_ring *r)
{
	return r->map && r->pkt && r->left;
}

unsigned ring_recv(struct rx_ring *r, struct io_batch *b, unsigned max)
{
	unsigned n = 0;
	const uint32_t room = IO_BUF_SIZE - ESPD_HEADROOM - ESPD_TAILROOM;

	if (max > IO_BATCH_MAX)
		max = IO_BATCH_MAX;
	while (n < max && r->map) {
		struct tpacket_block_desc *bd = block(r, r->cur);

		if (!r->pkt) {
			if (!(__atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE) &
			      TP_STATUS_USER))
				break;
			r->left = bd->hdr.bh1.num_pkts;
			r->pkt = (uint8_t *)bd + bd->hdr.bh1.offset_to_first_pkt;
		}
		while (r->left && n < max) {
			const struct tpacket3_hdr *h = (const struct tpacket3_hdr *)r->pkt;
			size_t at = (size_t)(r->pkt - (uint8_t *)bd);
			uint32_t len = h->tp_snaplen;

			if (len != h->tp_len || len > room ||
			    at + h->tp_net + (size_t)len > r->block_size)
				len = 0; /* truncated: esp_in drops it as malformed */
			memcpy(b->bufs[n] + ESPD_HEADROOM, r->pkt + h->tp_net, len);
			io_pkt_reset(b, n, len);
			n++;
			r->left--;
			r->pkt += h->tp_next_offset;
		}
		if (!r->left) { /* the block goes back to the kernel */
			__atomic_store_n(&bd->hdr.bh1.block_status, TP_STATUS_KERNEL,
					 __ATOMIC_RELEASE);
			r->cur = (r->cur + 1) % r->blocks;
			r->pkt = NULL;
		}
	}
	b->n = n;
	return n;
}

uint64_t ring_drops(int fd)
{
	struct tpacket_stats_v3 st = { 0 };
	socklen_t len = sizeof(st);

	return getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &st, &len) ? 0 : st.tp_drops;
}

void ring_close(struct rx_ring *r)
{
	if (r->map)
		munmap(r->map, r->size);
	memset(r, 0, sizeof(*r));
}
