// sources: native/offload.c native/ip.c
/* test_offload: TUN offloads (native/offload.c) against an independent RFC 1071 checksum:
 * TSO and USO segmentation (offload_count, offload_segment), partial checksum completion
 * (offload_csum), TCP and UDP GRO coalescing (offload_coalesce) and robustness on hostile
 * input.
 *
 *   cc -O1 -g -fsanitize=address,undefined -Wall -Wextra -Werror -I native \
 *      native/offload.c native/ip.c tests/native/test_offload.c -o /tmp/test_offload && \
 *      /tmp/test_offload
 *
 * Prints "N passed, M failed" last; exits non-zero on any failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "offload.h"
#include "proto.h"
#include "check.h"


/* --- PRNG (splitmix64) --- */

static uint64_t rng_state = 0x0ff10adULL;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint32_t rndn(uint32_t n) { return n ? (uint32_t)(rnd() % n) : 0; }

/* --- Reference RFC 1071 checksum: plain big-endian 16-bit words, no tricks --- */

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

static uint64_t ref_sum(uint64_t sum, const uint8_t *p, size_t len)
{
	size_t i;

	for (i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)p[i] << 8 | p[i + 1];
	if (i < len)
		sum += (uint32_t)p[i] << 8;
	return sum;
}

static uint16_t ref_fold(uint64_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

/* pseudo header (RFC 793 / RFC 8200 8.1) of the packet at ip */
static uint64_t ref_pseudo(const uint8_t *ip, int v6, uint8_t proto, uint32_t l4_len)
{
	uint64_t s = v6 ? ref_sum(0, ip + 8, 32) : ref_sum(0, ip + 12, 8);

	return s + proto + (l4_len >> 16) + (l4_len & 0xffff);
}

static int ref_ip4_ok(const uint8_t *ip)
{
	return ref_fold(ref_sum(0, ip, (ip[0] & 15) * 4u)) == 0xffff;
}

static int ref_l4_ok(const uint8_t *ip, int v6, uint32_t l4, uint32_t len, uint8_t proto)
{
	return ref_fold(ref_sum(ref_pseudo(ip, v6, proto, len - l4), ip + l4, len - l4)) == 0xffff;
}

/* the checksum field value that makes l4 valid (field taken as zero) */
static uint16_t ref_l4_csum(const uint8_t *ip, int v6, uint32_t l4, uint32_t len, uint8_t proto,
			    uint32_t field)
{
	uint64_t s = ref_sum(ref_pseudo(ip, v6, proto, len - l4), ip + l4, len - l4);

	s -= be16(ip + field); /* the field counts as zero (s includes it, so no underflow) */
	return (uint16_t)~ref_fold(s);
}

/* --- Packet builder --- */

#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_PSH 0x08
#define TH_ACK 0x10
#define TH_URG 0x20
#define TH_ECE 0x40
#define TH_CWR 0x80

struct spec {
	int v6;
	int ipopt; /* IPv4: 4 bytes of options (IHL 6) */
	int ts; /* TCP timestamp option (NOP NOP TS = 12 bytes) */
	int udp; /* UDP instead of TCP */
	uint8_t tos, ttl;
	uint16_t id;
	uint16_t sport, dport;
	uint32_t seq, ack;
	uint8_t flags;
	uint16_t win;
	uint32_t tsval;
	uint32_t payload;
	uint8_t fill; /* payload content key */
};

static struct spec base_spec(int v6)
{
	struct spec s = { .v6 = v6, .tos = 0x10, .ttl = 61, .id = 0x1234, .sport = 40000,
			  .dport = 443, .seq = 0x10000000, .ack = 0x20000000, .flags = TH_ACK,
			  .win = 501, .tsval = 777777, .payload = 0, .fill = 1 };
	return s;
}

/* payload byte at absolute sequence number seq (so separately built segments agree) */
static uint8_t pbyte(const struct spec *s, uint32_t seq)
{
	uint32_t x = (seq + s->fill * 0x9e37u) * 2654435761u;

	return (uint8_t)(x >> 13 ^ s->sport);
}

static uint32_t spec_l4(const struct spec *s) { return s->v6 ? 40 : 20 + (s->ipopt ? 4 : 0); }
static uint32_t spec_hdr(const struct spec *s)
{
	return spec_l4(s) + (s->udp ? 8 : 20 + (s->ts ? 12 : 0));
}

/* Writes the packet with valid IPv4 and L4 checksums; returns its length. */
static size_t build(const struct spec *s, uint8_t *out)
{
	uint32_t l4 = spec_l4(s), hdr = spec_hdr(s), len = hdr + s->payload;
	uint8_t *t = out + l4;

	memset(out, 0, hdr);
	if (s->v6) {
		put32(out, 0x60000000u | (uint32_t)s->tos << 20 | 0x12345);
		put16(out + 4, (uint16_t)(len - 40));
		out[6] = s->udp ? 17 : 6;
		out[7] = s->ttl;
		for (int i = 0; i < 16; i++) {
			out[8 + i] = (uint8_t)(0x20 + i);
			out[24 + i] = (uint8_t)(0x30 + i * 3);
		}
		out[8] = 0x20, out[9] = 0x01, out[24] = 0x20, out[25] = 0x01;
	} else {
		out[0] = s->ipopt ? 0x46 : 0x45;
		out[1] = s->tos;
		put16(out + 2, (uint16_t)len);
		put16(out + 4, s->id);
		out[6] = 0x40; /* DF */
		out[8] = s->ttl;
		out[9] = s->udp ? 17 : 6;
		put32(out + 12, 0x0a010203);
		put32(out + 16, 0xc0a80a14);
		if (s->ipopt)
			out[20] = 1, out[21] = 1, out[22] = 1, out[23] = 0; /* NOP NOP NOP EOL */
	}
	put16(t, s->sport);
	put16(t + 2, s->dport);
	if (s->udp) {
		put16(t + 4, (uint16_t)(len - l4));
	} else {
		put32(t + 4, s->seq);
		put32(t + 8, s->ack);
		t[12] = (uint8_t)(((hdr - l4) / 4) << 4);
		t[13] = s->flags;
		put16(t + 14, s->win);
		if (s->ts) {
			t[20] = 1, t[21] = 1, t[22] = 8, t[23] = 10;
			put32(t + 24, s->tsval);
			put32(t + 28, 0xabcdef01);
		}
	}
	for (uint32_t i = 0; i < s->payload; i++)
		out[hdr + i] = pbyte(s, s->seq + i);
	if (!s->v6) {
		out[10] = out[11] = 0;
		put16(out + 10, (uint16_t)~ref_fold(ref_sum(0, out, l4)));
	}
	{
		uint32_t f = l4 + (s->udp ? 6 : 16);
		uint16_t c = ref_l4_csum(out, s->v6, l4, len, s->udp ? 17 : 6, f);

		put16(out + f, s->udp && !c ? 0xffff : c);
	}
	return len;
}

static struct vnet_hdr tso_hdr(const struct spec *s, uint16_t mss)
{
	struct vnet_hdr h = { .flags = VNET_F_NEEDS_CSUM,
			      .gso_type = s->v6 ? VNET_GSO_TCPV6 : VNET_GSO_TCPV4,
			      .hdr_len = (uint16_t)spec_hdr(s), .gso_size = mss,
			      .csum_start = (uint16_t)spec_l4(s), .csum_offset = 16 };
	return h;
}

/* The kernel hands super-packets with the TCP checksum field = folded pseudo-header sum. */
static void kernel_partial(uint8_t *pkt, size_t len, const struct spec *s)
{
	uint32_t l4 = spec_l4(s);

	put16(pkt + l4 + 16, ref_fold(ref_pseudo(pkt, s->v6, 6, (uint32_t)len - l4)));
}

static uint8_t super[70000], super_copy[70000];

/* --- TSO --- */

static void tso_case(struct spec s, uint16_t mss)
{
	size_t len = build(&s, super);
	struct vnet_hdr h = tso_hdr(&s, mss);
	uint32_t l4 = spec_l4(&s), hdr = spec_hdr(&s);
	unsigned n, want = s.payload ? (s.payload + mss - 1) / mss : 1;
	uint8_t *cat = malloc(s.payload + 1);
	uint32_t got = 0;
	int bad = 0;

	kernel_partial(super, len, &s);
	memcpy(super_copy, super, len);
	n = offload_count(super, len, &h);
	CHECK(n == want, "v%d ts%d opt%d payload %u mss %u: count %u, want %u", s.v6 ? 6 : 4, s.ts,
	      s.ipopt, s.payload, mss, n, want);
	if (n != want)
		n = 0;
	for (unsigned i = 0; i < n && bad < 3; i++) {
		uint32_t seg = s.payload - i * mss < mss ? s.payload - i * mss : mss;
		uint8_t *out = malloc(hdr + mss); /* exactly the documented room */
		size_t r = offload_segment(super, len, &h, i, out);
		int first = i == 0, last = i + 1 == n, ok = 1;
		uint8_t fl, wantfl;

#define SEG(cond)                                                                        \
	do {                                                                             \
		if (!(cond)) {                                                           \
			ok = 0;                                                          \
			CHECK(cond, "v%d ts%d opt%d payload %u mss %u flags %#x seg %u/%u", \
			      s.v6 ? 6 : 4, s.ts, s.ipopt, s.payload, mss, s.flags, i, n); \
		}                                                                        \
	} while (0)
		SEG(r == hdr + seg);
		if (r != hdr + seg) {
			free(out);
			bad++;
			continue;
		}
		if (s.v6) {
			SEG(be16(out + 4) == r - 40);
			SEG(!memcmp(out, super_copy, 4) && !memcmp(out + 6, super_copy + 6, 34));
		} else {
			SEG(be16(out + 2) == r);
			SEG(be16(out + 4) == (uint16_t)(s.id + i));
			SEG(ref_ip4_ok(out));
			SEG(!memcmp(out, super_copy, 2) && !memcmp(out + 6, super_copy + 6, 4) &&
			    !memcmp(out + 12, super_copy + 12, l4 - 12));
		}
		SEG(be32(out + l4 + 4) == s.seq + i * mss);
		fl = out[l4 + 13];
		wantfl = s.flags;
		if (!last)
			wantfl &= (uint8_t)~(TH_FIN | TH_PSH);
		if (!first)
			wantfl &= (uint8_t)~TH_CWR;
		SEG(fl == wantfl);
		SEG(!memcmp(out + l4, super_copy + l4, 4) && !memcmp(out + l4 + 8, super_copy + l4 + 8, 5) &&
		    !memcmp(out + l4 + 14, super_copy + l4 + 14, 2) &&
		    !memcmp(out + l4 + 18, super_copy + l4 + 18, hdr - l4 - 18));
		SEG(ref_l4_ok(out, s.v6, l4, (uint32_t)r, 6));
		memcpy(cat + got, out + hdr, seg);
		got += seg;
		passed += ok;
		bad += !ok;
		free(out);
#undef SEG
	}
	if (n) {
		CHECK(got == s.payload && !memcmp(cat, super_copy + hdr, s.payload),
		      "v%d payload %u mss %u: concatenated payloads differ (%u bytes)", s.v6 ? 6 : 4,
		      s.payload, mss, got);
	}
	CHECK(!memcmp(super, super_copy, len), "offload_segment changed its input");
	free(cat);
}

static void test_tso(void)
{
	static const uint16_t msses[] = { 1, 536, 1400 };
	static const uint8_t flagsets[] = { TH_ACK, TH_ACK | TH_PSH, TH_ACK | TH_PSH | TH_FIN | TH_CWR,
					    TH_ACK | TH_CWR | TH_ECE };

	for (int v6 = 0; v6 < 2; v6++)
		for (int ipopt = 0; ipopt < (v6 ? 1 : 2); ipopt++)
			for (int ts = 0; ts < 2; ts++)
				for (unsigned m = 0; m < 3; m++) {
					uint16_t mss = msses[m];
					struct spec s = base_spec(v6);
					uint32_t hdr, max, sizes[10];

					s.ipopt = ipopt;
					s.ts = ts;
					hdr = spec_hdr(&s);
					max = 65535 - hdr;
					sizes[0] = 0;
					sizes[1] = 1;
					sizes[2] = mss > 1 ? mss - 1u : 2;
					sizes[3] = mss;
					sizes[4] = mss + 1u;
					sizes[5] = 2u * mss;
					sizes[6] = 3u * mss + 7;
					sizes[7] = mss == 1 ? 777 : max / mss * mss; /* a multiple */
					sizes[8] = mss == 1 ? 1000 : max; /* the largest */
					sizes[9] = mss == 1 ? 1 : max - max % mss - 1;
					for (int k = 0; k < 10; k++)
						for (unsigned f = 0; f < sizeof(flagsets); f++) {
							s.payload = sizes[k];
							s.flags = flagsets[f];
							s.id = (uint16_t)(0xfff0 + k * 3); /* wraps */
							s.seq = 0xffffff00u + (uint32_t)k * 0x1111;
							tso_case(s, mss);
						}
				}
	/* ECN bit in gso_type is accepted */
	{
		struct spec s = base_spec(0);
		struct vnet_hdr h;
		size_t len;

		s.payload = 3000;
		len = build(&s, super);
		h = tso_hdr(&s, 1000);
		h.gso_type |= VNET_GSO_ECN;
		CHECK(offload_count(super, len, &h) == 3, "TCPV4|ECN count");
	}
	/* malformed super-packets count 0 */
	{
		struct spec s = base_spec(0);
		struct vnet_hdr h, g;
		size_t len;

		s.payload = 3000;
		len = build(&s, super);
		h = tso_hdr(&s, 1000);
		g = h, g.gso_type = VNET_GSO_NONE;
		CHECK(offload_count(super, len, &g) == 0, "GSO_NONE");
		g = h, g.gso_type = VNET_GSO_TCPV6;
		CHECK(offload_count(super, len, &g) == 0, "TCPV6 on an IPv4 packet");
		g = h, g.gso_size = 0;
		CHECK(offload_count(super, len, &g) == 0, "gso_size 0");
		g = h, g.csum_start = 19;
		CHECK(offload_count(super, len, &g) == 0, "csum_start inside the IPv4 header");
		g = h, g.csum_start = (uint16_t)(len - 19);
		CHECK(offload_count(super, len, &g) == 0, "csum_start without room for TCP");
		CHECK(offload_count(super, 39, &h) == 0, "truncated in the TCP header");
		CHECK(offload_count(super, 0, &h) == 0, "empty");
		super[32] = 0x40; /* data offset 4 */
		CHECK(offload_count(super, len, &h) == 0, "TCP data offset < 5");
		super[32] = 0xf0;
		CHECK(offload_count(super, 50, &h) == 0, "TCP options past the end");
	}
}

/* --- offload_csum --- */

static void csum_case(struct spec s, int forcezero)
{
	uint8_t *pkt = super;
	size_t len;
	uint32_t l4, f;
	uint8_t proto = s.udp ? 17 : 6;
	struct vnet_hdr h = { .flags = VNET_F_NEEDS_CSUM };
	uint16_t want;

	len = build(&s, pkt);
	l4 = spec_l4(&s);
	f = l4 + (s.udp ? 6 : 16);
	if (forcezero && s.payload >= 2) {
		/* choose the last two payload bytes (at an even offset) so the checksum is 0 */
		uint32_t at = (uint32_t)len - 2 - ((uint32_t)len - l4) % 2;
		uint16_t c;

		pkt[at] = pkt[at + 1] = 0;
		c = ref_l4_csum(pkt, s.v6, l4, (uint32_t)len, proto, f);
		put16(pkt + at, c);
		CHECK(ref_l4_csum(pkt, s.v6, l4, (uint32_t)len, proto, f) == 0,
		      "test setup: forced checksum 0");
	}
	want = ref_l4_csum(pkt, s.v6, l4, (uint32_t)len, proto, f);
	if (s.udp && !want)
		want = 0xffff;
	/* as the kernel hands it: the field holds the folded pseudo-header sum */
	put16(pkt + f, ref_fold(ref_pseudo(pkt, s.v6, proto, (uint32_t)len - l4)));
	memcpy(super_copy, pkt, len);
	h.csum_start = (uint16_t)l4;
	h.csum_offset = s.udp ? 6 : 16;
	CHECK(offload_csum(pkt, len, &h) == 0, "offload_csum v%d %s payload %u", s.v6 ? 6 : 4,
	      s.udp ? "udp" : "tcp", s.payload);
	CHECK(be16(pkt + f) == want, "v%d %s payload %u zero %d: checksum %#x, want %#x",
	      s.v6 ? 6 : 4, s.udp ? "udp" : "tcp", s.payload, forcezero, be16(pkt + f), want);
	CHECK(ref_l4_ok(pkt, s.v6, l4, (uint32_t)len, proto), "v%d %s payload %u: invalid",
	      s.v6 ? 6 : 4, s.udp ? "udp" : "tcp", s.payload);
	CHECK(!memcmp(pkt, super_copy, f) && !memcmp(pkt + f + 2, super_copy + f + 2, len - f - 2),
	      "offload_csum touched bytes besides the field");
}

static void test_csum(void)
{
	static const uint32_t sizes[] = { 0, 1, 2, 3, 7, 100, 1399, 1400, 8191, 65000 };

	for (int v6 = 0; v6 < 2; v6++)
		for (int udp = 0; udp < 2; udp++)
			for (int ts = 0; ts < 2; ts++)
				for (unsigned k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++)
					for (int z = 0; z < 2; z++) {
						struct spec s = base_spec(v6);

						s.udp = udp;
						s.ts = ts && !udp;
						s.ipopt = !v6 && (k & 1);
						s.payload = sizes[k];
						s.fill = (uint8_t)(k + 7 * z);
						csum_case(s, z);
					}

	/* no NEEDS_CSUM: nothing to do */
	{
		struct spec s = base_spec(0);
		struct vnet_hdr h = { .flags = 0, .csum_start = 20, .csum_offset = 16 };
		size_t len;

		s.payload = 100;
		len = build(&s, super);
		memcpy(super_copy, super, len);
		CHECK(offload_csum(super, len, &h) == 0 && !memcmp(super, super_copy, len),
		      "flags 0 must leave the packet alone");
	}
	/* generic: any start/offset inside the packet completes a valid sum over [start, len) */
	for (int it = 0; it < 3000; it++) {
		size_t len = 1 + rndn(300);
		struct vnet_hdr h = { .flags = VNET_F_NEEDS_CSUM };
		uint8_t *pkt = malloc(len);
		uint32_t at;

		for (size_t i = 0; i < len; i++)
			pkt[i] = (uint8_t)rnd();
		if (len < 2) {
			h.csum_start = 0, h.csum_offset = 0;
			CHECK(offload_csum(pkt, len, &h) == -1, "1-byte packet");
			free(pkt);
			continue;
		}
		h.csum_start = (uint16_t)rndn((uint32_t)len - 1);
		h.csum_offset = (uint16_t)(rndn((uint32_t)len - 1 - h.csum_start) & ~1u); /* 6, 16: even */
		at = (uint32_t)h.csum_start + h.csum_offset;
		memcpy(super_copy, pkt, len);
		CHECK(offload_csum(pkt, len, &h) == 0, "start %u offset %u len %zu", h.csum_start,
		      h.csum_offset, len);
		/* what the field held (the pseudo-header sum) plus the data sums to 0xffff */
		CHECK(ref_fold(ref_sum(be16(super_copy + at), pkt + h.csum_start, len - h.csum_start)) ==
			      0xffff,
		      "start %u offset %u len %zu: sum not complete", h.csum_start, h.csum_offset, len);
		CHECK(!memcmp(pkt, super_copy, at) && !memcmp(pkt + at + 2, super_copy + at + 2, len - at - 2),
		      "touched bytes besides the field");
		free(pkt);
	}
	/* malformed csum_start / csum_offset: rejected, packet untouched (exact-size buffers) */
	{
		static const struct { uint16_t start, off; size_t len; int ok; } cases[] = {
			{ 100, 0, 100, 0 },   { 99, 0, 100, 0 },    { 98, 0, 100, 1 },
			{ 20, 80, 100, 0 },   { 20, 79, 100, 0 },   { 20, 78, 100, 1 },
			{ 0, 99, 100, 0 },    { 0, 98, 100, 1 },    { 65535, 65535, 100, 0 },
			{ 20, 65535, 100, 0 }, { 65535, 0, 100, 0 }, { 0, 0, 0, 0 },
			{ 0, 0, 1, 0 },       { 0, 0, 2, 1 },       { 1, 0, 2, 0 },
		};
		for (unsigned k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
			struct vnet_hdr h = { .flags = VNET_F_NEEDS_CSUM, .csum_start = cases[k].start,
					      .csum_offset = cases[k].off };
			uint8_t *pkt = malloc(cases[k].len ? cases[k].len : 1);
			int r;

			for (size_t i = 0; i < cases[k].len; i++)
				pkt[i] = (uint8_t)(i * 7 + 3);
			memcpy(super_copy, pkt, cases[k].len);
			r = offload_csum(pkt, cases[k].len, &h);
			CHECK(r == (cases[k].ok ? 0 : -1), "start %u offset %u len %zu: %d",
			      cases[k].start, cases[k].off, cases[k].len, r);
			if (!cases[k].ok)
				CHECK(!memcmp(pkt, super_copy, cases[k].len), "rejected but modified");
			free(pkt);
		}
	}
}

/* --- GRO --- */

#define BIGCAP (ESPD_HEADROOM + 65536 + ESPD_TAILROOM)
#define MAXB 2048

struct batch {
	struct espdp_pkt p[MAXB];
	uint8_t *copy[MAXB]; /* buf as it was before offload_coalesce (whole buffer) */
	int32_t res0[MAXB];
	uint32_t len0[MAXB];
	unsigned n;
};

static struct batch B;

static void b_reset(void)
{
	for (unsigned i = 0; i < B.n; i++) {
		free(B.p[i].buf);
		free(B.copy[i]);
	}
	B.n = 0;
}

/* add pkt with `cap` bytes of buffer (0 = a full TUN buffer) */
static unsigned b_add(const uint8_t *pkt, size_t len, uint32_t cap, int32_t result)
{
	unsigned i = B.n++;
	struct espdp_pkt *p = &B.p[i];

	if (!cap)
		cap = BIGCAP;
	p->buf = malloc(cap);
	memset(p->buf, 0xaa, ESPD_HEADROOM);
	p->cap = cap;
	p->off = ESPD_HEADROOM;
	p->len = (uint32_t)len;
	p->result = result;
	p->sa = NULL;
	memcpy(p->buf + p->off, pkt, len);
	memset(p->buf + p->off + len, 0x55, cap - p->off - len);
	B.copy[i] = malloc(cap);
	memcpy(B.copy[i], p->buf, cap);
	B.res0[i] = result;
	B.len0[i] = (uint32_t)len;
	return i;
}

static unsigned b_spec(struct spec s, uint32_t cap, int32_t result)
{
	uint8_t tmp[70000];
	size_t len = build(&s, tmp);

	return b_add(tmp, len, cap, result);
}

/* TCP view of a packet: 0 when not TCP */
struct tview {
	int v6;
	uint32_t l4, hdr, seq;
	uint8_t flags;
};

static int tview(const uint8_t *ip, uint32_t len, struct tview *t)
{
	if (len < 1)
		return 0;
	t->v6 = (ip[0] >> 4) == 6;
	if (t->v6) {
		if (len < 60 || ip[6] != 6)
			return 0;
		t->l4 = 40;
	} else {
		if ((ip[0] >> 4) != 4 || len < 40 || ip[9] != 6)
			return 0;
		t->l4 = (ip[0] & 15) * 4u;
		if (t->l4 < 20 || t->l4 + 20 > len)
			return 0;
	}
	t->hdr = t->l4 + (ip[t->l4 + 12] >> 4) * 4u;
	if (t->hdr > len || t->hdr < t->l4 + 20)
		return 0;
	t->seq = be32(ip + t->l4 + 4);
	t->flags = ip[t->l4 + 13];
	return 1;
}

/* flow identity for the ordering check: version, addresses, ports */
static int same_conn(const uint8_t *a, const struct tview *ta, const uint8_t *b, const struct tview *tb)
{
	if (ta->v6 != tb->v6)
		return 0;
	if (ta->v6 ? memcmp(a + 8, b + 8, 32) : memcmp(a + 12, b + 12, 8))
		return 0;
	return !memcmp(a + ta->l4, b + tb->l4, 4);
}

static const uint8_t zero_vnet[VNET_HDR_LEN];
static int gone[MAXB];
static uint16_t SEG[MAXB]; /* offload_coalesce's segments[] for the batch under test */

static int uview(const uint8_t *ip, uint32_t len, struct tview *t);
static void verify_udp_head(unsigned i, const char *name, int udp);
static void verify_udp_run(unsigned i, const char *name);

/* Everything offload_coalesce promises, for any batch. ret: its return value; udp: the
 * argument it was called with. */
static void verify_batch_u(unsigned ret, const char *name, int udp)
{
	unsigned left = 0, alive = 0, carried = 0;

	for (unsigned i = 0; i < B.n; i++) { /* every passed packet is carried by one write */
		alive += B.res0[i] == 0;
		carried += B.res0[i] == 0 ? SEG[i] : 0;
		CHECK(B.res0[i] == 0 || SEG[i] == 0, "%s: pkt %u dropped yet counted", name, i);
		CHECK(B.p[i].result != -1 || SEG[i] == 0, "%s: consumed pkt %u counted", name, i);
		CHECK(B.p[i].result != 0 || SEG[i] >= 1, "%s: written pkt %u carries none", name, i);
	}
	CHECK(carried == alive, "%s: writes carry %u packets of %u", name, carried, alive);

	for (unsigned i = 0; i < B.n; i++) {
		struct espdp_pkt *p = &B.p[i];
		const uint8_t *orig = B.copy[i] + ESPD_HEADROOM;

		gone[i] = 0;
		if (B.res0[i]) {
			CHECK(p->result == B.res0[i] && p->len == B.len0[i] &&
				      !memcmp(p->buf, B.copy[i], p->cap),
			      "%s: pkt %u with result %d was touched", name, i, B.res0[i]);
			continue;
		}
		CHECK(p->result == 0 || p->result == -1, "%s: pkt %u result %d", name, i, p->result);
		CHECK(p->off == ESPD_HEADROOM, "%s: pkt %u off moved", name, i);
		if (p->result == -1) {
			gone[i] = 1;
			continue;
		}
		left++;
		CHECK(p->len <= p->cap - p->off && p->len <= 65535, "%s: pkt %u len %u cap %u", name, i,
		      p->len, p->cap);
		CHECK(!memcmp(p->buf, B.copy[i], ESPD_HEADROOM - VNET_HDR_LEN),
		      "%s: pkt %u: headroom before the vnet_hdr touched", name, i);
		if (!memcmp(p->buf + p->off - VNET_HDR_LEN, zero_vnet, VNET_HDR_LEN)) {
			CHECK(p->len == B.len0[i] && !memcmp(p->buf + p->off, orig, p->len),
			      "%s: pkt %u with a zero vnet_hdr is not as it came", name, i);
		} else {
			struct vnet_hdr h;
			struct tview t, to;
			const uint8_t *ip = p->buf + p->off;

			memcpy(&h, p->buf + p->off - VNET_HDR_LEN, VNET_HDR_LEN);
			if (uview(ip, p->len, &t) && uview(orig, B.len0[i], &to)) {
				verify_udp_head(i, name, udp);
				continue;
			}
			if (!tview(ip, p->len, &t) || !tview(orig, p->len, &to)) {
				CHECK(0, "%s: pkt %u has a vnet_hdr but is not TCP", name, i);
				continue;
			}
			CHECK(h.flags == VNET_F_NEEDS_CSUM &&
				      h.gso_type == (t.v6 ? VNET_GSO_TCPV6 : VNET_GSO_TCPV4) &&
				      h.hdr_len == t.hdr && h.csum_start == t.l4 && h.csum_offset == 16,
			      "%s: pkt %u vnet_hdr {%u %u %u %u %u %u}", name, i, h.flags, h.gso_type,
			      h.hdr_len, h.gso_size, h.csum_start, h.csum_offset);
			if (t.v6) {
				CHECK(be16(ip + 4) == p->len - 40, "%s: pkt %u IPv6 payload length", name, i);
				CHECK(!memcmp(ip, orig, 4) && !memcmp(ip + 6, orig + 6, 34),
				      "%s: pkt %u IPv6 header changed", name, i);
			} else {
				CHECK(be16(ip + 2) == p->len, "%s: pkt %u IPv4 total length", name, i);
				CHECK(ref_ip4_ok(ip), "%s: pkt %u IPv4 header checksum", name, i);
				CHECK(!memcmp(ip, orig, 2) && !memcmp(ip + 4, orig + 4, 6) &&
					      !memcmp(ip + 12, orig + 12, t.l4 - 12),
				      "%s: pkt %u IPv4 header changed", name, i);
			}
			CHECK(be16(ip + t.l4 + 16) ==
				      ref_fold(ref_pseudo(ip, t.v6, 6, p->len - t.l4)),
			      "%s: pkt %u TCP checksum field %#x is not the pseudo-header sum %#x", name,
			      i, be16(ip + t.l4 + 16), ref_fold(ref_pseudo(ip, t.v6, 6, p->len - t.l4)));
			CHECK(!memcmp(ip + t.l4, orig + t.l4, 13) && !memcmp(ip + t.l4 + 14, orig + t.l4 + 14, 2) &&
				      !memcmp(ip + t.l4 + 18, orig + t.l4 + 18, t.hdr - t.l4 - 18) &&
				      (ip[t.l4 + 13] & ~TH_PSH) == (orig[t.l4 + 13] & ~TH_PSH),
			      "%s: pkt %u TCP header changed", name, i);
		}
	}
	CHECK(ret == left, "%s: returned %u, %u packets left to write", name, ret, left);

	/* Per connection: the output packets, in order, are runs of the input packets, in
	 * order: a head followed by the consumed packets of its connection up to the next
	 * packet that was written. Payloads concatenate, PSH is the OR of the run. */
	for (unsigned i = 0; i < B.n; i++) {
		const uint8_t *oi = B.copy[i] + ESPD_HEADROOM;
		struct tview ti, tj;
		struct espdp_pkt *p = &B.p[i];
		uint32_t at, seq;
		uint8_t psh;
		unsigned joined = 1;
		uint32_t mss;

		if (B.res0[i] || p->result)
			continue;
		if (!tview(oi, B.len0[i], &ti)) {
			if (udp && uview(oi, B.len0[i], &ti))
				verify_udp_run(i, name);
			continue;
		}
		at = B.len0[i]; /* end of the head's own bytes in the output */
		seq = ti.seq + (B.len0[i] - ti.hdr);
		mss = B.len0[i] - ti.hdr;
		psh = ti.flags & TH_PSH;
		for (unsigned j = i + 1; j < B.n; j++) {
			const uint8_t *oj = B.copy[j] + ESPD_HEADROOM;
			uint32_t plen;

			if (B.res0[j] || !tview(oj, B.len0[j], &tj) || !same_conn(oi, &ti, oj, &tj))
				continue;
			if (B.p[j].result != -1)
				break; /* the next written packet of the connection ends the run */
			plen = B.len0[j] - tj.hdr;
			CHECK(tj.seq == seq, "%s: pkt %u joined to %u out of sequence", name, j, i);
			CHECK(plen <= mss, "%s: pkt %u (%u bytes) joined to %u (mss %u)", name, j, plen, i,
			      mss);
			CHECK(at + plen <= p->len && !memcmp(p->buf + p->off + at, oj + tj.hdr, plen),
			      "%s: pkt %u payload not at %u of head %u", name, j, at, i);
			gone[j] = 0;
			at += plen;
			seq += plen;
			psh |= tj.flags & TH_PSH;
			joined++;
		}
		CHECK(at == p->len, "%s: head %u has %u bytes, its run %u", name, i, p->len, at);
		CHECK((p->buf[p->off + ti.l4 + 13] & TH_PSH) == psh, "%s: head %u PSH", name, i);
		if (joined > 1) {
			struct vnet_hdr h;

			memcpy(&h, p->buf + p->off - VNET_HDR_LEN, VNET_HDR_LEN);
			CHECK(h.gso_size == mss, "%s: head %u gso_size %u, want %u", name, i, h.gso_size,
			      mss);
		} else {
			CHECK(!memcmp(p->buf + p->off - VNET_HDR_LEN, zero_vnet, VNET_HDR_LEN),
			      "%s: single pkt %u with a non-zero vnet_hdr", name, i);
		}
	}
	for (unsigned i = 0; i < B.n; i++)
		CHECK(!gone[i], "%s: pkt %u consumed but not found in a head", name, i);
}

static void verify_batch(unsigned ret, const char *name) { verify_batch_u(ret, name, 0); }

/* expect: per packet 'H' coalesced head, 'S' written as it came (zero vnet_hdr), 'c'
 * consumed, 'x' result != 0 left alone */
static void run_expect_u(const char *name, const char *expect, int udp)
{
	unsigned want = 0, ret;

	ret = offload_coalesce(B.p, B.n, udp, SEG);
	verify_batch_u(ret, name, udp);
	CHECK(strlen(expect) == B.n, "%s: test setup", name);
	for (unsigned i = 0; i < B.n && expect[i]; i++) {
		struct espdp_pkt *p = &B.p[i];
		int zero = !memcmp(p->buf + p->off - VNET_HDR_LEN, zero_vnet, VNET_HDR_LEN);
		char got = B.res0[i] ? 'x' : p->result == -1 ? 'c' : zero ? 'S' : 'H';

		want += expect[i] == 'H' || expect[i] == 'S';
		CHECK(got == expect[i], "%s: pkt %u is '%c', want '%c' (%s)", name, i, got, expect[i],
		      expect);
	}
	CHECK(ret == want, "%s: returned %u, want %u", name, ret, want);
	b_reset();
}

static void run_expect(const char *name, const char *expect) { run_expect_u(name, expect, 0); }

/* segment spec: packet k of a flow with payload mss each */
static struct spec seg_spec(int v6, int ts, uint32_t mss, unsigned k)
{
	struct spec s = base_spec(v6);

	s.ts = ts;
	s.payload = mss;
	s.seq += k * mss;
	s.id = (uint16_t)(s.id + k);
	return s;
}

static void roundtrip(int v6, int ts, uint32_t payload, uint16_t mss, uint8_t flags)
{
	struct spec s = base_spec(v6);
	size_t len;
	struct vnet_hdr h;
	unsigned n, ret;
	uint32_t l4;
	char name[96];

	s.ts = ts;
	s.payload = payload;
	s.flags = flags;
	len = build(&s, super);
	memcpy(super_copy, super, len);
	kernel_partial(super, len, &s);
	h = tso_hdr(&s, mss);
	l4 = spec_l4(&s);
	n = offload_count(super, len, &h);
	snprintf(name, sizeof(name), "roundtrip v%d ts%d payload %u mss %u flags %#x", v6 ? 6 : 4, ts,
		 payload, mss, flags);
	for (unsigned i = 0; i < n; i++) {
		uint8_t *out = malloc(spec_hdr(&s) + mss);
		size_t r = offload_segment(super, len, &h, i, out);

		b_add(out, r, 0, 0);
		free(out);
	}
	ret = offload_coalesce(B.p, B.n, 0, SEG);
	verify_batch(ret, name);
	CHECK(ret == 1, "%s: returned %u", name, ret);
	if (B.p[0].result == 0 && B.p[0].len == len) {
		struct espdp_pkt *p = &B.p[0];
		uint8_t *ip = p->buf + p->off;
		struct vnet_hdr g;

		CHECK(!memcmp(ip, super_copy, l4 + 16) &&
			      !memcmp(ip + l4 + 18, super_copy + l4 + 18, len - l4 - 18),
		      "%s: not the original super-packet", name);
		memcpy(&g, p->buf + p->off - VNET_HDR_LEN, VNET_HDR_LEN);
		if (n > 1) {
			CHECK(g.flags == 1 && g.gso_type == (v6 ? 4 : 1) && g.hdr_len == spec_hdr(&s) &&
				      g.gso_size == mss && g.csum_start == l4 && g.csum_offset == 16,
			      "%s: vnet_hdr {%u %u %u %u %u %u}", name, g.flags, g.gso_type, g.hdr_len,
			      g.gso_size, g.csum_start, g.csum_offset);
			CHECK(be16(ip + l4 + 16) == ref_fold(ref_pseudo(ip, v6, 6, (uint32_t)len - l4)),
			      "%s: TCP checksum field", name);
		} else {
			CHECK(!memcmp(&g, zero_vnet, VNET_HDR_LEN), "%s: single segment vnet_hdr", name);
			CHECK(ref_l4_ok(ip, v6, l4, (uint32_t)len, 6), "%s: single segment checksum", name);
		}
	} else {
		CHECK(0, "%s: head result %d len %u, want len %zu", name, B.p[0].result, B.p[0].len, len);
	}
	for (unsigned i = 1; i < B.n; i++)
		CHECK(B.p[i].result == -1, "%s: segment %u not consumed", name, i);
	b_reset();
}

static void test_gro_roundtrip(void)
{
	static const uint16_t msses[] = { 1, 536, 1400 };

	for (int v6 = 0; v6 < 2; v6++)
		for (int ts = 0; ts < 2; ts++)
			for (unsigned m = 0; m < 3; m++) {
				uint16_t mss = msses[m];
				uint32_t max = 65535 - (v6 ? 40 : 20) - 20 - (ts ? 12 : 0);
				uint32_t sizes[] = { 1, mss, mss + 1u, 2u * mss, 5u * mss - 1,
						     mss == 1 ? 200 : max / mss * mss, mss == 1 ? 333 : max };

				for (unsigned k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
					roundtrip(v6, ts, sizes[k], mss, TH_ACK);
					roundtrip(v6, ts, sizes[k], mss, TH_ACK | TH_PSH);
				}
			}
}

static void test_gro_cases(void)
{
	struct spec s;
	unsigned i;

	/* interleaved flows stay separate and in order */
	for (i = 0; i < 4; i++) {
		struct spec a = seg_spec(0, 1, 1000, i), b = seg_spec(1, 0, 700, i), c = seg_spec(0, 0, 1000, i);

		b.sport = 5555;
		c.sport = 40001; /* same addresses, other port */
		b_spec(a, 0, 0);
		b_spec(b, 0, 0);
		b_spec(c, 0, 0);
	}
	run_expect("three interleaved flows", "HHHccccccccc");

	/* more open flows than GRO tracks: everything stays in order and complete */
	for (i = 0; i < 3; i++)
		for (unsigned f = 0; f < 12; f++) {
			s = seg_spec(f & 1, 0, 100, i);
			s.sport = (uint16_t)(1000 + f);
			b_spec(s, 0, 0);
		}
	verify_batch(offload_coalesce(B.p, B.n, 0, SEG), "12 interleaved flows");
	b_reset();

	/* a gap in sequence numbers */
	for (i = 0; i < 5; i++)
		if (i != 2)
			b_spec(seg_spec(0, 1, 1000, i), 0, 0);
	run_expect("sequence gap", "HcHc");
	for (i = 0; i < 4; i++) {
		s = seg_spec(1, 0, 1000, i);
		if (i == 2)
			s.seq -= 1000; /* a retransmission of segment 1 */
		b_spec(s, 0, 0);
	}
	run_expect("repeated sequence number", "HcSS");
	/* a differing timestamp */
	for (i = 0; i < 4; i++) {
		s = seg_spec(0, 1, 1000, i);
		s.tsval += i >= 2;
		b_spec(s, 0, 0);
	}
	run_expect("timestamp changes", "HcHc");
	for (i = 0; i < 3; i++) {
		s = seg_spec(1, i != 1, 1000, i); /* the middle one has no options at all */
		b_spec(s, 0, 0);
	}
	run_expect("options differ in length", "SSS");
	/* a different ack number / window */
	for (i = 0; i < 4; i++) {
		s = seg_spec(0, 0, 1000, i);
		if (i >= 2)
			s.ack += 1000;
		b_spec(s, 0, 0);
	}
	run_expect("ack number changes", "HcHc");
	for (i = 0; i < 4; i++) {
		s = seg_spec(1, 1, 1000, i);
		if (i >= 2)
			s.win += 1;
		b_spec(s, 0, 0);
	}
	run_expect("window changes", "HcHc");

	/* SYN, FIN, RST, URG, ECE, CWR segments are not coalesced */
	{
		static const uint8_t bad[] = { TH_SYN | TH_ACK, TH_FIN | TH_ACK, TH_RST | TH_ACK,
					       TH_URG | TH_ACK, TH_ECE | TH_ACK, TH_CWR | TH_ACK, 0 };
		for (unsigned b = 0; b < sizeof(bad); b++)
			for (int v6 = 0; v6 < 2; v6++) {
				char name[64];

				snprintf(name, sizeof(name), "flags %#x in the middle, v%d", bad[b], v6 ? 6 : 4);
				for (i = 0; i < 5; i++) {
					s = seg_spec(v6, 1, 1000, i);
					if (i == 2)
						s.flags = bad[b];
					b_spec(s, 0, 0);
				}
				/* the segment after it follows it in sequence, not the head */
				run_expect(name, "HcSHc");
				snprintf(name, sizeof(name), "flags %#x first, v%d", bad[b], v6 ? 6 : 4);
				for (i = 0; i < 3; i++) {
					s = seg_spec(v6, 1, 1000, i);
					if (i == 0)
						s.flags = bad[b];
					b_spec(s, 0, 0);
				}
				run_expect(name, "SHc");
			}
	}
	/* a different TOS / TTL / traffic class / hop limit / DF */
	for (int what = 0; what < 3; what++)
		for (int v6 = 0; v6 < 2; v6++) {
			char name[64];

			if (what == 2 && v6)
				continue;
			snprintf(name, sizeof(name), "%s differs, v%d",
				 what == 0 ? "TOS" : what == 1 ? "TTL" : "DF", v6 ? 6 : 4);
			for (i = 0; i < 5; i++) {
				uint8_t tmp[2000];
				size_t len;

				s = seg_spec(v6, 0, 1000, i);
				if (i == 2 && what == 0)
					s.tos ^= 0x03; /* CE */
				if (i == 2 && what == 1)
					s.ttl--;
				len = build(&s, tmp);
				if (i == 2 && what == 2) {
					tmp[6] = 0; /* DF off */
					tmp[10] = tmp[11] = 0;
					put16(tmp + 10, (uint16_t)~ref_fold(ref_sum(0, tmp, 20)));
				}
				b_add(tmp, len, 0, 0);
			}
			run_expect(name, "HcSHc");
		}
	/* IPv4 options: never coalesced */
	for (i = 0; i < 4; i++) {
		s = seg_spec(0, 0, 1000, i);
		s.ipopt = 1;
		b_spec(s, 0, 0);
	}
	run_expect("IPv4 options", "SSSS");
	/* IPv4 fragments */
	for (i = 0; i < 3; i++) {
		uint8_t tmp[2000];
		size_t len;

		s = seg_spec(0, 0, 1000, i);
		len = build(&s, tmp);
		if (i == 1) {
			tmp[6] = 0x20; /* MF */
			tmp[10] = tmp[11] = 0;
			put16(tmp + 10, (uint16_t)~ref_fold(ref_sum(0, tmp, 20)));
		}
		b_add(tmp, len, 0, 0);
	}
	run_expect("IPv4 MF fragment", "SSS");

	/* a short segment closes the super-packet */
	for (int v6 = 0; v6 < 2; v6++) {
		for (i = 0; i < 5; i++) {
			s = seg_spec(v6, 1, 1000, i);
			if (i == 1)
				s.payload = 500;
			if (i > 1)
				s.seq -= 500;
			b_spec(s, 0, 0);
		}
		run_expect(v6 ? "short segment closes v6" : "short segment closes v4", "HcHcc");
		/* a longer segment after the head's size starts anew */
		for (i = 0; i < 4; i++) {
			s = seg_spec(v6, 0, 1000, i);
			if (i >= 1)
				s.payload = 1200, s.seq = 0x10000000 + 1000 + (i - 1) * 1200;
			b_spec(s, 0, 0);
		}
		run_expect(v6 ? "bigger segment after the head v6" : "bigger segment after the head v4",
			   "SHcc");
	}
	/* PSH: closes, and is kept on the head */
	for (i = 0; i < 5; i++) {
		s = seg_spec(0, 1, 1000, i);
		if (i == 2)
			s.flags |= TH_PSH;
		b_spec(s, 0, 0);
	}
	run_expect("PSH closes", "HccHc");
	for (i = 0; i < 3; i++) {
		s = seg_spec(1, 1, 1000, i);
		if (i == 0)
			s.flags |= TH_PSH;
		b_spec(s, 0, 0);
	}
	run_expect("PSH on the first segment", "SHc");

	/* capacity: the head's buffer, and 65535 */
	for (int v6 = 0; v6 < 2; v6++) {
		uint32_t hdr = v6 ? 60 : 40;

		for (i = 0; i < 7; i++)
			b_spec(seg_spec(v6, 0, 1000, i), ESPD_HEADROOM + hdr + 3000, 0);
		run_expect("cap fits exactly 3", "HccHccS");
		for (i = 0; i < 7; i++)
			b_spec(seg_spec(v6, 0, 1000, i), ESPD_HEADROOM + hdr + 3000 - 1, 0);
		run_expect("cap fits 2", "HcHcHcS");
		for (i = 0; i < 60; i++)
			b_spec(seg_spec(v6, 0, 1400, i), 0, 0);
		{
			char want[61];

			/* 46 * 1400 + hdr <= 65535 < 47 * 1400 + hdr */
			memset(want, 'c', 60);
			want[60] = 0;
			want[0] = 'H';
			want[46] = 'H';
			run_expect("65535 limit", want);
		}
		/* 65535 exactly */
		for (i = 0; i < 2; i++) {
			s = seg_spec(v6, 0, 1000, 0);
			/* the first the larger: the second, shorter, closes it */
			s.payload = i ? (65535 - hdr) / 2 : (65535 - hdr + 1) / 2;
			s.seq += i * ((65535 - hdr + 1) / 2);
			b_spec(s, 0, 0);
		}
		run_expect("exactly 65535", "Hc");
		for (i = 0; i < 2; i++) {
			s = seg_spec(v6, 0, 1000, 0);
			s.payload = (65535 - hdr) / 2 + 1;
			s.seq += i * s.payload;
			b_spec(s, 0, 0);
		}
		run_expect("65536", "SS");
	}

	/* non-TCP packets: zero vnet_hdr, counted, do not disturb a TCP flow */
	for (i = 0; i < 4; i++) {
		if (i == 1) {
			s = base_spec(0);
			s.udp = 1;
			s.payload = 1000;
			b_spec(s, 0, 0);
			continue;
		}
		b_spec(seg_spec(0, 0, 1000, i ? i - 1 : 0), 0, 0);
	}
	run_expect("UDP among TCP", "HScc");
	{
		uint8_t icmp[84] = { 0x45, 0, 0, 84, 0, 1, 0x40, 0, 64, 1 };

		put32(icmp + 12, 0x0a010203);
		put32(icmp + 16, 0xc0a80a14);
		put16(icmp + 10, (uint16_t)~ref_fold(ref_sum(0, icmp, 20)));
		b_add(icmp, sizeof(icmp), 0, 0);
		b_add(icmp, 20, 0, 0);
		b_add(icmp, 1, 0, 0);
		icmp[0] = 0x60;
		b_add(icmp, sizeof(icmp), 0, 0);
		run_expect("ICMP, truncated, junk", "SSSS");
	}
	/* a TCP segment with no payload (pure ACK) is written as it is */
	for (i = 0; i < 2; i++) {
		s = seg_spec(i, 1, 0, 0);
		b_spec(s, 0, 0);
		b_spec(s, 0, 0);
	}
	run_expect("pure ACKs", "SSSS");

	/* result != 0: untouched (vnet_hdr area too), not counted, not joined */
	for (i = 0; i < 3; i++)
		b_spec(seg_spec(0, 0, 1000, i), 0, i == 1 ? 5 : 0);
	run_expect("dropped segment in the middle", "SxS");
	for (i = 0; i < 4; i++) {
		if (i == 2) {
			s = seg_spec(1, 0, 1000, 0);
			b_spec(s, 0, 7);
			continue;
		}
		b_spec(seg_spec(0, 0, 1000, i > 2 ? i - 1 : i), 0, 0);
	}
	run_expect("dropped other packet in between", "Hcxc");
	for (i = 0; i < 3; i++)
		b_spec(seg_spec(0, 0, 1000, i), 0, -1);
	run_expect("all dropped", "xxx");
	CHECK(offload_coalesce(B.p, 0, 0, SEG) == 0, "empty batch");
}

/* A zero-payload segment of the same connection (a duplicate ACK) between two data
 * segments: offload.h promises never to reorder within a flow. */
static void test_gro_order_ack(void)
{
	struct spec s;

	b_spec(seg_spec(0, 1, 1000, 0), 0, 0);
	s = seg_spec(0, 1, 1000, 1);
	s.payload = 0;
	b_spec(s, 0, 0);
	b_spec(seg_spec(0, 1, 1000, 1), 0, 0);
	b_spec(seg_spec(0, 1, 1000, 2), 0, 0);
	run_expect("dup ACK between data segments", "SSHc");
}

/* GRO must not turn a corrupted TCP segment into a checksum-offloaded (trusted) one. */
static void test_gro_bad_checksum(void)
{
	for (int v6 = 0; v6 < 2; v6++) {
		for (unsigned i = 0; i < 4; i++) {
			unsigned k = b_spec(seg_spec(v6, 0, 1000, i), 0, 0);

			if (i == 1) /* corrupt one payload byte: its checksum no longer matches */
				B.p[k].buf[B.p[k].off + B.p[k].len - 10] ^= 0x40,
				B.copy[k][B.p[k].off + B.p[k].len - 10] ^= 0x40;
		}
		run_expect(v6 ? "corrupted segment, v6" : "corrupted segment, v4", "SSHc");
	}
}

/* random batches from a few flows with random defects: verify_batch's invariants */
static void test_gro_random(void)
{
	for (int it = 0; it < 1500; it++) {
		unsigned n = 1 + rndn(40), nflows = 1 + rndn(4);
		uint32_t next[4], mss[4];

		for (unsigned f = 0; f < nflows; f++)
			next[f] = 1000u * f, mss[f] = 1 + rndn(300);
		for (unsigned i = 0; i < n; i++) {
			unsigned f = rndn(nflows);
			struct spec s = base_spec(f & 1);
			uint32_t r = rndn(100);

			s.sport = (uint16_t)(100 + f);
			s.ts = f >= 2;
			s.seq = next[f];
			s.payload = mss[f];
			if (r < 8)
				s.payload = 1 + rndn(mss[f]); /* zero payload: test_gro_order_ack */
			else if (r < 10)
				s.payload = mss[f] + 1 + rndn(10);
			else if (r < 14)
				s.seq += rndn(3) * 7 - 7;
			else if (r < 18)
				s.flags |= TH_PSH;
			else if (r < 20)
				s.flags |= (uint8_t)(1u << rndn(8));
			else if (r < 22)
				s.tos ^= 1;
			else if (r < 24)
				s.tsval++;
			else if (r < 26)
				s.udp = 1;
			next[f] = s.seq + s.payload;
			b_spec(s, rndn(4) ? 0 : ESPD_HEADROOM + spec_hdr(&s) + s.payload + rndn(2000),
			       rndn(20) ? 0 : 3);
		}
		verify_batch(offload_coalesce(B.p, B.n, 0, SEG), "random batch");
		b_reset();
	}
}

/* --- Robustness: hostile input never makes these read or write out of bounds --- */

static void fuzz_one(const uint8_t *src, size_t len, const struct vnet_hdr *h)
{
	uint8_t *pkt = malloc(len ? len : 1);
	unsigned n;

	memcpy(pkt, src, len);
	n = offload_count(pkt, len, h);
	if (n) {
		/* the documented room: IP + TCP/UDP headers + gso_size */
		int udp = (h->gso_type & ~VNET_GSO_ECN) == VNET_GSO_UDP_L4;
		uint32_t hdr = h->csum_start + (udp ? 8u : (pkt[h->csum_start + 12] >> 4) * 4u);
		unsigned idx[3] = { 0, n - 1, rndn(n) };

		CHECK(hdr <= len, "count %u for a header past the end", n);
		for (int k = 0; k < 3; k++) {
			uint8_t *out = malloc(hdr + h->gso_size);
			size_t r = offload_segment(pkt, len, h, idx[k], out);

			CHECK(r >= hdr && r <= hdr + h->gso_size, "segment length %zu", r);
			free(out);
		}
	}
	{
		struct vnet_hdr c = *h;

		c.flags = VNET_F_NEEDS_CSUM;
		offload_csum(pkt, len, &c);
	}
	free(pkt);
}

static void test_robust(void)
{
	uint8_t buf[400];

	/* truncations of valid super-packets */
	for (int v6 = 0; v6 < 2; v6++)
		for (int ts = 0; ts < 2; ts++) {
			struct spec s = base_spec(v6);
			struct vnet_hdr h;
			size_t len;

			s.ts = ts;
			s.payload = 300;
			len = build(&s, buf);
			h = tso_hdr(&s, 100);
			for (size_t l = 0; l <= len; l++) {
				fuzz_one(buf, l, &h);
				h.gso_size = 1;
				fuzz_one(buf, l, &h);
				h.gso_size = 100;
			}
		}
	/* random bytes and random headers */
	for (int it = 0; it < 200000; it++) {
		size_t len = rndn(200);
		struct vnet_hdr h;
		static const uint8_t types[] = { 1, 4, 0x81, 0x84, 0, 3 };

		for (size_t i = 0; i < len; i++)
			buf[i] = (uint8_t)rnd();
		if (len && rndn(2))
			buf[0] = rndn(2) ? 0x45 : rndn(2) ? 0x60 : (uint8_t)(0x40 | rndn(16));
		h.flags = (uint8_t)rnd();
		h.gso_type = rndn(8) ? types[rndn(6)] : (uint8_t)rnd();
		h.hdr_len = (uint16_t)rnd();
		h.gso_size = (uint16_t)(rndn(2) ? 1 + rndn(64) : rnd());
		h.csum_start = (uint16_t)(rndn(4) ? rndn(80) : rnd());
		h.csum_offset = (uint16_t)(rndn(4) ? rndn(40) : rnd());
		fuzz_one(buf, len, &h);
	}
}

/* An IPv4 header whose IHL reaches past csum_start: offload_segment must not read past
 * the headers + gso_size it was given room for (ip4_set_checksum uses the IHL). */
static uint8_t buf_ihl[200];

static void test_robust_ihl(void)
{
	struct spec s = base_spec(0);
	struct vnet_hdr h;
	size_t len;

	s.payload = 4;
	len = build(&s, buf_ihl);
	buf_ihl[0] = 0x4f; /* IHL 15: 60 bytes, but TCP says it starts at 20 */
	h = tso_hdr(&s, 1);
	fuzz_one(buf_ihl, len, &h);
}

/* --- UDP: USO segmentation (VNET_GSO_UDP_L4) and UDP GRO (offload_coalesce(.., 1)) --- */

/* UDP view of a packet: 0 when not UDP (hdr = l4 + 8) */
static int uview(const uint8_t *ip, uint32_t len, struct tview *t)
{
	if (len < 1)
		return 0;
	t->v6 = (ip[0] >> 4) == 6;
	if (t->v6) {
		if (len < 48 || ip[6] != 17)
			return 0;
		t->l4 = 40;
	} else {
		if ((ip[0] >> 4) != 4 || len < 28 || ip[9] != 17)
			return 0;
		t->l4 = (ip[0] & 15) * 4u;
		if (t->l4 < 20 || t->l4 + 8 > len)
			return 0;
	}
	t->hdr = t->l4 + 8;
	t->seq = 0;
	t->flags = 0;
	return 1;
}

/* What may join a UDP super-packet: IPv4 without options or fragments and with a valid
 * header checksum, a consistent UDP length, a payload, a non-zero UDP checksum that verifies. */
static int udp_joinable(const uint8_t *ip, uint32_t len, const struct tview *u)
{
	if (!u->v6 && (ip[0] != 0x45 || (be16(ip + 6) & 0x3fff) || !ref_ip4_ok(ip)))
		return 0;
	return len > u->hdr && be16(ip + u->l4 + 4) == len - u->l4 && be16(ip + u->l4 + 6) &&
	       ref_l4_ok(ip, u->v6, u->l4, len, 17);
}

/* same addresses, ports, TOS/TTL/DF or traffic class/flow label/hop limit */
static int udp_same_flow(const uint8_t *a, const uint8_t *b, int v6, uint32_t l4)
{
	if (v6 ? memcmp(a, b, 4) || a[7] != b[7] || memcmp(a + 8, b + 8, 32)
	       : a[1] != b[1] || a[6] != b[6] || a[8] != b[8] || memcmp(a + 12, b + 12, 8))
		return 0;
	return !memcmp(a + l4, b + l4, 4);
}

/* a written UDP packet with a non-zero vnet_hdr: a well-formed UDP super-packet */
static void verify_udp_head(unsigned i, const char *name, int udp)
{
	struct espdp_pkt *p = &B.p[i];
	const uint8_t *ip = p->buf + p->off, *orig = B.copy[i] + ESPD_HEADROOM;
	struct vnet_hdr h;
	struct tview u;

	memcpy(&h, p->buf + p->off - VNET_HDR_LEN, VNET_HDR_LEN);
	uview(ip, p->len, &u);
	CHECK(udp, "%s: pkt %u: UDP coalesced with udp = 0", name, i);
	CHECK(h.flags == VNET_F_NEEDS_CSUM && h.gso_type == VNET_GSO_UDP_L4 && h.hdr_len == u.hdr &&
		      h.csum_start == u.l4 && h.csum_offset == 6 && h.gso_size > 0,
	      "%s: pkt %u UDP vnet_hdr {%u %u %u %u %u %u}", name, i, h.flags, h.gso_type, h.hdr_len,
	      h.gso_size, h.csum_start, h.csum_offset);
	if (u.v6) {
		CHECK(be16(ip + 4) == p->len - 40, "%s: pkt %u IPv6 payload length", name, i);
		CHECK(!memcmp(ip, orig, 4) && !memcmp(ip + 6, orig + 6, 34),
		      "%s: pkt %u IPv6 header changed", name, i);
	} else {
		CHECK(be16(ip + 2) == p->len, "%s: pkt %u IPv4 total length", name, i);
		CHECK(ref_ip4_ok(ip), "%s: pkt %u IPv4 header checksum", name, i);
		CHECK(!memcmp(ip, orig, 2) && !memcmp(ip + 4, orig + 4, 6) &&
			      !memcmp(ip + 12, orig + 12, u.l4 - 12),
		      "%s: pkt %u IPv4 header changed", name, i);
	}
	CHECK(!memcmp(ip + u.l4, orig + u.l4, 4), "%s: pkt %u UDP ports changed", name, i);
	CHECK(be16(ip + u.l4 + 4) == p->len - u.l4, "%s: pkt %u UDP length %u, want %u", name, i,
	      be16(ip + u.l4 + 4), p->len - u.l4);
	CHECK(be16(ip + u.l4 + 6) == ref_fold(ref_pseudo(ip, u.v6, 17, p->len - u.l4)),
	      "%s: pkt %u UDP checksum field %#x is not the pseudo-header sum %#x", name, i,
	      be16(ip + u.l4 + 6), ref_fold(ref_pseudo(ip, u.v6, 17, p->len - u.l4)));
}

/* The UDP run headed by written packet i: the consumed datagrams of its flow (addresses,
 * ports) up to the next written one, in order; all of the head's size but the last, which
 * may be shorter; each joinable and of the head's flow. Segmenting the super-packet again
 * (offload_segment) gives back exactly the datagrams of the run (IPv4 ID aside). */
static void verify_udp_run(unsigned i, const char *name)
{
	static unsigned run[MAXB];
	struct espdp_pkt *p = &B.p[i];
	const uint8_t *oi = B.copy[i] + ESPD_HEADROOM;
	struct tview ui, uj;
	uint32_t at = B.len0[i], mss, last;
	unsigned nrun = 0;

	uview(oi, B.len0[i], &ui);
	mss = last = B.len0[i] - ui.hdr;
	run[nrun++] = i;
	for (unsigned j = i + 1; j < B.n; j++) {
		const uint8_t *oj = B.copy[j] + ESPD_HEADROOM;
		uint32_t plen;

		if (B.res0[j] || !uview(oj, B.len0[j], &uj) || !same_conn(oi, &ui, oj, &uj))
			continue;
		if (B.p[j].result != -1)
			break; /* the next written datagram of the flow ends the run */
		plen = B.len0[j] - uj.hdr;
		CHECK(last == mss, "%s: pkt %u joined %u after a shorter datagram", name, j, i);
		CHECK(plen <= mss, "%s: pkt %u (%u bytes) joined to %u (gso %u)", name, j, plen, i, mss);
		CHECK(udp_joinable(oj, B.len0[j], &uj) && uj.l4 == ui.l4 &&
			      udp_same_flow(oi, oj, ui.v6, ui.l4),
		      "%s: pkt %u joined %u but may not", name, j, i);
		CHECK(at + plen <= p->len && !memcmp(p->buf + p->off + at, oj + uj.hdr, plen),
		      "%s: pkt %u payload not at %u of head %u", name, j, at, i);
		gone[j] = 0;
		at += plen;
		last = plen;
		run[nrun++] = j;
	}
	CHECK(at == p->len, "%s: UDP head %u has %u bytes, its run %u", name, i, p->len, at);
	if (nrun == 1) {
		CHECK(!memcmp(p->buf + p->off - VNET_HDR_LEN, zero_vnet, VNET_HDR_LEN),
		      "%s: single pkt %u with a non-zero vnet_hdr", name, i);
		return;
	}
	CHECK(udp_joinable(oi, B.len0[i], &ui), "%s: head %u may not be coalesced", name, i);
	if (at != p->len)
		return;
	{
		struct vnet_hdr h;
		unsigned n;

		memcpy(&h, p->buf + p->off - VNET_HDR_LEN, VNET_HDR_LEN);
		CHECK(h.gso_size == mss, "%s: head %u gso_size %u, want %u", name, i, h.gso_size, mss);
		if (h.gso_size != mss)
			return;
		n = offload_count(p->buf + p->off, p->len, &h);
		CHECK(n == nrun, "%s: head %u segments into %u, its run is %u", name, i, n, nrun);
		for (unsigned k = 0; k < n && k < nrun; k++) {
			const uint8_t *ok = B.copy[run[k]] + ESPD_HEADROOM;
			uint8_t *out = malloc(ui.hdr + mss);
			size_t r = offload_segment(p->buf + p->off, p->len, &h, k, out);
			int same = r == B.len0[run[k]];

			if (same && ui.v6)
				same = !memcmp(out, ok, r);
			else if (same)
				same = !memcmp(out, ok, 4) && !memcmp(out + 6, ok + 6, 4) &&
				       !memcmp(out + 12, ok + 12, r - 12) && ref_ip4_ok(out);
			CHECK(same, "%s: head %u segment %u (%zu bytes) is not pkt %u (%u bytes)", name, i,
			      k, r, run[k], B.len0[run[k]]);
			free(out);
		}
	}
}

static struct vnet_hdr uso_hdr(const struct spec *s, uint16_t mss)
{
	struct vnet_hdr h = { .flags = VNET_F_NEEDS_CSUM, .gso_type = VNET_GSO_UDP_L4,
			      .hdr_len = (uint16_t)spec_hdr(s), .gso_size = mss,
			      .csum_start = (uint16_t)spec_l4(s), .csum_offset = 6 };
	return h;
}

/* the kernel's USO super-packet: UDP checksum field = folded pseudo-header sum */
static void kernel_partial_udp(uint8_t *pkt, size_t len, const struct spec *s)
{
	uint32_t l4 = spec_l4(s);

	put16(pkt + l4 + 6, ref_fold(ref_pseudo(pkt, s->v6, 17, (uint32_t)len - l4)));
}

static void uso_case(struct spec s, uint16_t mss)
{
	size_t len;
	struct vnet_hdr h;
	uint32_t l4, hdr;
	unsigned n, want = s.payload ? (s.payload + mss - 1) / mss : 1;
	uint8_t *cat = malloc(s.payload + 1);
	uint32_t got = 0;
	int bad = 0;

	s.udp = 1;
	len = build(&s, super);
	h = uso_hdr(&s, mss);
	l4 = spec_l4(&s);
	hdr = spec_hdr(&s);
	kernel_partial_udp(super, len, &s);
	memcpy(super_copy, super, len);
	n = offload_count(super, len, &h);
	CHECK(n == want, "udp v%d opt%d payload %u mss %u: count %u, want %u", s.v6 ? 6 : 4,
	      s.ipopt, s.payload, mss, n, want);
	if (n != want)
		n = 0;
	for (unsigned i = 0; i < n && bad < 3; i++) {
		uint32_t seg = s.payload - i * mss < mss ? s.payload - i * mss : mss;
		uint8_t *out = malloc(hdr + mss); /* exactly the documented room */
		size_t r = offload_segment(super, len, &h, i, out);
		uint16_t c;
		int ok = 1;

#define SEG(cond)                                                                        \
	do {                                                                             \
		if (!(cond)) {                                                           \
			ok = 0;                                                          \
			CHECK(cond, "udp v%d opt%d payload %u mss %u seg %u/%u", s.v6 ? 6 : 4, \
			      s.ipopt, s.payload, mss, i, n);                            \
		}                                                                        \
	} while (0)
		SEG(r == hdr + seg);
		if (r != hdr + seg) {
			free(out);
			bad++;
			continue;
		}
		if (s.v6) {
			SEG(be16(out + 4) == r - 40);
			SEG(!memcmp(out, super_copy, 4) && !memcmp(out + 6, super_copy + 6, 34));
		} else {
			SEG(be16(out + 2) == r);
			SEG(be16(out + 4) == (uint16_t)(s.id + i));
			SEG(ref_ip4_ok(out));
			SEG(!memcmp(out, super_copy, 2) && !memcmp(out + 6, super_copy + 6, 4) &&
			    !memcmp(out + 12, super_copy + 12, l4 - 12));
		}
		SEG(!memcmp(out + l4, super_copy + l4, 4)); /* ports */
		SEG(be16(out + l4 + 4) == r - l4);
		c = ref_l4_csum(out, s.v6, l4, (uint32_t)r, 17, l4 + 6);
		SEG(be16(out + l4 + 6) == (c ? c : 0xffff));
		SEG(ref_l4_ok(out, s.v6, l4, (uint32_t)r, 17));
		memcpy(cat + got, out + hdr, seg);
		got += seg;
		passed += ok;
		bad += !ok;
		free(out);
#undef SEG
	}
	if (n) {
		CHECK(got == s.payload && !memcmp(cat, super_copy + hdr, s.payload),
		      "udp v%d payload %u mss %u: concatenated payloads differ (%u bytes)",
		      s.v6 ? 6 : 4, s.payload, mss, got);
	}
	CHECK(!memcmp(super, super_copy, len), "offload_segment changed its input (udp)");
	free(cat);
}

static void test_uso(void)
{
	static const uint16_t msses[] = { 1, 2, 536, 1400, 1472 };

	for (int v6 = 0; v6 < 2; v6++)
		for (unsigned m = 0; m < sizeof(msses) / sizeof(msses[0]); m++) {
			uint16_t mss = msses[m];
			uint32_t hdr = v6 ? 48 : 28, max = 65535 - hdr, sizes[10];

			sizes[0] = 0;
			sizes[1] = 1;
			sizes[2] = mss > 1 ? mss - 1u : 2;
			sizes[3] = mss;
			sizes[4] = mss + 1u;
			sizes[5] = 2u * mss;
			sizes[6] = 3u * mss + 7;
			sizes[7] = mss <= 2 ? 777 : max / mss * mss;
			sizes[8] = mss <= 2 ? 1000 : max;
			sizes[9] = mss <= 2 ? 1 : max - max % mss - 1;
			for (int k = 0; k < 10; k++) {
				struct spec s = base_spec(v6);

				s.payload = sizes[k];
				s.id = (uint16_t)(0xfff0 + k * 3); /* wraps */
				s.fill = (uint8_t)(k + 3);
				s.sport = (uint16_t)(5000 + m);
				uso_case(s, mss);
			}
		}
	/* an IPv4 header with options: csum_start = 24 */
	{
		struct spec s = base_spec(0);

		s.ipopt = 1;
		s.payload = 3001;
		uso_case(s, 1000);
		s.payload = 1000;
		uso_case(s, 1000);
	}
	/* a segment whose checksum computes to 0 is sent with 0xffff */
	for (int v6 = 0; v6 < 2; v6++) {
		struct spec s = base_spec(v6);
		struct vnet_hdr h;
		uint32_t l4, hdr, mss = 500;
		uint8_t out[600];
		size_t len, r;

		s.udp = 1;
		s.payload = 3 * mss;
		len = build(&s, super);
		h = uso_hdr(&s, (uint16_t)mss);
		l4 = spec_l4(&s);
		hdr = spec_hdr(&s);
		kernel_partial_udp(super, len, &s);
		/* choose the first two payload bytes of segment 1 so that its checksum is 0 */
		super[hdr + mss] = super[hdr + mss + 1] = 0;
		r = offload_segment(super, len, &h, 1, out);
		CHECK(r == hdr + mss, "udp zero checksum v%d: setup length %zu", v6 ? 6 : 4, r);
		if (r != hdr + mss)
			continue;
		put16(super + hdr + mss, ref_l4_csum(out, v6, l4, (uint32_t)r, 17, l4 + 6));
		r = offload_segment(super, len, &h, 1, out);
		CHECK(ref_l4_csum(out, v6, l4, (uint32_t)r, 17, l4 + 6) == 0,
		      "udp zero checksum v%d: test setup", v6 ? 6 : 4);
		CHECK(be16(out + l4 + 6) == 0xffff, "udp v%d: a computed 0 is sent as %#x, want 0xffff",
		      v6 ? 6 : 4, be16(out + l4 + 6));
		CHECK(ref_l4_ok(out, v6, l4, (uint32_t)r, 17), "udp zero checksum v%d: invalid",
		      v6 ? 6 : 4);
		r = offload_segment(super, len, &h, 0, out);
		CHECK(be16(out + l4 + 6) != 0xffff && ref_l4_ok(out, v6, l4, (uint32_t)r, 17),
		      "udp zero checksum v%d: the other segments", v6 ? 6 : 4);
	}
	/* the ECN bit in gso_type is masked like for TCP */
	{
		struct spec s = base_spec(1);
		struct vnet_hdr h;
		size_t len;

		s.udp = 1;
		s.payload = 3000;
		len = build(&s, super);
		h = uso_hdr(&s, 1000);
		h.gso_type |= VNET_GSO_ECN;
		CHECK(offload_count(super, len, &h) == 3, "UDP_L4|ECN count");
	}
	/* malformed UDP super-packets count 0 */
	for (int v6 = 0; v6 < 2; v6++) {
		struct spec s = base_spec(v6);
		struct vnet_hdr h, g;
		uint32_t l4;
		size_t len;

		s.udp = 1;
		s.payload = 3000;
		len = build(&s, super);
		h = uso_hdr(&s, 1000);
		l4 = spec_l4(&s);
		CHECK(offload_count(super, len, &h) == 3, "udp v%d: valid", v6 ? 6 : 4);
		g = h, g.gso_size = 0;
		CHECK(offload_count(super, len, &g) == 0, "udp v%d: gso_size 0", v6 ? 6 : 4);
		g = h, g.csum_start = (uint16_t)(l4 - 1);
		CHECK(offload_count(super, len, &g) == 0, "udp v%d: csum_start inside the IP header",
		      v6 ? 6 : 4);
		g = h, g.csum_start = (uint16_t)(len - 7);
		CHECK(offload_count(super, len, &g) == 0, "udp v%d: csum_start without room for UDP",
		      v6 ? 6 : 4);
		CHECK(offload_count(super, l4 + 7, &h) == 0, "udp v%d: truncated in the UDP header",
		      v6 ? 6 : 4);
		CHECK(offload_count(super, l4 + 8, &h) == 1, "udp v%d: header only", v6 ? 6 : 4);
		CHECK(offload_count(super, 0, &h) == 0, "udp v%d: empty", v6 ? 6 : 4);
		if (!v6) {
			g = h, g.csum_start = 24;
			CHECK(offload_count(super, len, &g) == 0, "udp v4: csum_start past the IHL");
		}
		super[0] = (uint8_t)(0x50 | (super[0] & 15));
		CHECK(offload_count(super, len, &h) == 0, "udp v%d: version 5", v6 ? 6 : 4);
		/* the version nibble decides: an IPv4 header read as IPv6 has csum_start 20 < 40,
		 * an IPv6 one read as IPv4 an IHL (0) that does not end at csum_start 40 */
		super[0] = (uint8_t)((v6 ? 0x40 : 0x60) | (super[0] & 15));
		CHECK(offload_count(super, len, &h) == 0, "udp v%d: other version nibble", v6 ? 6 : 4);
	}
}

/* USO super-packet -> segments -> coalesce(udp) -> the super-packet again */
static void uso_roundtrip(int v6, uint32_t payload, uint16_t mss)
{
	struct spec s = base_spec(v6);
	size_t len;
	struct vnet_hdr h;
	unsigned n, ret;
	uint32_t l4;
	char name[96];

	s.udp = 1;
	s.payload = payload;
	s.sport = 4500;
	len = build(&s, super);
	memcpy(super_copy, super, len);
	kernel_partial_udp(super, len, &s);
	h = uso_hdr(&s, mss);
	l4 = spec_l4(&s);
	n = offload_count(super, len, &h);
	snprintf(name, sizeof(name), "udp roundtrip v%d payload %u mss %u", v6 ? 6 : 4, payload, mss);
	for (int udp = 1; udp >= 0; udp--) {
		for (unsigned i = 0; i < n; i++) {
			uint8_t *out = malloc(spec_hdr(&s) + mss);
			size_t r = offload_segment(super, len, &h, i, out);

			b_add(out, r, 0, 0);
			free(out);
		}
		ret = offload_coalesce(B.p, B.n, udp, SEG);
		verify_batch_u(ret, name, udp);
		if (!udp) { /* left alone */
			CHECK(ret == n, "%s udp=0: returned %u, want %u", name, ret, n);
			for (unsigned i = 0; i < B.n; i++)
				CHECK(B.p[i].result == 0 &&
					      !memcmp(B.p[i].buf + B.p[i].off - VNET_HDR_LEN, zero_vnet,
						      VNET_HDR_LEN),
				      "%s udp=0: pkt %u touched", name, i);
			b_reset();
			continue;
		}
		/* a datagram without payload cannot be coalesced: it is written as it is */
		CHECK(ret == 1, "%s: returned %u", name, ret);
		if (B.p[0].result == 0 && B.p[0].len == len) {
			struct espdp_pkt *p = &B.p[0];
			uint8_t *ip = p->buf + p->off;
			struct vnet_hdr g;

			CHECK(!memcmp(ip, super_copy, l4 + 6) &&
				      !memcmp(ip + l4 + 8, super_copy + l4 + 8, len - l4 - 8),
			      "%s: not the original super-packet", name);
			memcpy(&g, p->buf + p->off - VNET_HDR_LEN, VNET_HDR_LEN);
			if (n > 1) {
				CHECK(g.flags == 1 && g.gso_type == 5 && g.hdr_len == l4 + 8 &&
					      g.gso_size == mss && g.csum_start == l4 && g.csum_offset == 6,
				      "%s: vnet_hdr {%u %u %u %u %u %u}", name, g.flags, g.gso_type,
				      g.hdr_len, g.gso_size, g.csum_start, g.csum_offset);
				CHECK(be16(ip + l4 + 6) ==
					      ref_fold(ref_pseudo(ip, v6, 17, (uint32_t)len - l4)),
				      "%s: UDP checksum field", name);
				/* the kernel completing it gives the original's checksum */
				CHECK(offload_csum(ip, len, &g) == 0 && !memcmp(ip, super_copy, len),
				      "%s: completed checksum differs from the original", name);
			} else {
				CHECK(!memcmp(&g, zero_vnet, VNET_HDR_LEN), "%s: single datagram vnet_hdr",
				      name);
				CHECK(ref_l4_ok(ip, v6, l4, (uint32_t)len, 17),
				      "%s: single datagram checksum", name);
			}
		} else {
			CHECK(0, "%s: head result %d len %u, want len %zu", name, B.p[0].result,
			      B.p[0].len, len);
		}
		for (unsigned i = 1; i < B.n; i++)
			CHECK(B.p[i].result == -1, "%s: datagram %u not consumed", name, i);
		b_reset();
	}
}

static void test_udp_gro_roundtrip(void)
{
	static const uint16_t msses[] = { 1, 536, 1400, 1472 };

	for (int v6 = 0; v6 < 2; v6++)
		for (unsigned m = 0; m < sizeof(msses) / sizeof(msses[0]); m++) {
			uint16_t mss = msses[m];
			uint32_t max = 65535 - (v6 ? 48 : 28);
			uint32_t sizes[] = { 1, mss, mss + 1u, 2u * mss, 5u * mss - 1,
					     mss == 1 ? 200 : max / mss * mss, mss == 1 ? 333 : max };

			for (unsigned k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++)
				uso_roundtrip(v6, sizes[k], mss);
		}
}

/* datagram k of a UDP flow, `size` bytes of payload each */
static struct spec udp_spec(int v6, uint32_t size, unsigned k)
{
	struct spec s = seg_spec(v6, 0, size, k);

	s.udp = 1;
	s.sport = 4500;
	s.dport = 4500;
	return s;
}

/* recompute the IPv4 header checksum after editing the header */
static void ip4_fix(uint8_t *ip)
{
	ip[10] = ip[11] = 0;
	put16(ip + 10, (uint16_t)~ref_fold(ref_sum(0, ip, (ip[0] & 15) * 4u)));
}

/* recompute the UDP checksum over the packet as it is (0 -> 0xffff) */
static void udp_fix(uint8_t *ip, uint32_t len)
{
	int v6 = (ip[0] >> 4) == 6;
	uint32_t l4 = v6 ? 40 : (ip[0] & 15) * 4u;
	uint16_t c = ref_l4_csum(ip, v6, l4, len, 17, l4 + 6);

	put16(ip + l4 + 6, c ? c : 0xffff);
}

/* Five datagrams of a flow, the middle one (k = 2) altered by `edit`: it may not join, so it
 * is written as it is and closes the super-packet before it: "HcSHc". */
enum udp_defect { UD_CSUM0, UD_CSUM0_SUMS, UD_CORRUPT, UD_BADLEN, UD_EMPTY, UD_IPCSUM, UD_MF, UD_OFFSET,
		  UD_OPTIONS, UD_TOS, UD_TTL, UD_DF, UD_TCLASS, UD_FLOWLABEL, UD_HOPLIMIT,
		  UD_NDEFECTS };
static const char *const udp_defect_name[] = {
	"checksum 0", "checksum 0 over data that sums to it", "corrupt payload", "UDP length short", "no payload", "bad IPv4 checksum",
	"IPv4 MF", "IPv4 fragment offset", "IPv4 options", "TOS", "TTL", "DF",
	"traffic class", "flow label", "hop limit",
};

/* build datagram k of the flow with defect d into out; its length, 0 if d does not apply */
static size_t udp_defective(int v6, uint32_t size, unsigned k, int d, uint8_t *out)
{
	struct spec s = udp_spec(v6, size, k);
	size_t len;
	uint32_t l4;

	if (v6 && (d == UD_IPCSUM || d == UD_MF || d == UD_OFFSET || d == UD_OPTIONS || d == UD_DF))
		return 0;
	if (!v6 && (d == UD_FLOWLABEL || d == UD_TCLASS || d == UD_HOPLIMIT))
		return 0;
	if (d == UD_EMPTY)
		s.payload = 0;
	if (d == UD_OPTIONS)
		s.ipopt = 1;
	if (d == UD_TOS || d == UD_TCLASS)
		s.tos ^= 0x03; /* ECN CE */
	if (d == UD_TTL || d == UD_HOPLIMIT)
		s.ttl--;
	len = build(&s, out);
	l4 = spec_l4(&s);
	switch (d) {
	case UD_CSUM0:
		out[l4 + 6] = out[l4 + 7] = 0;
		break;
	case UD_CSUM0_SUMS: /* field 0 ("none" in IPv4), yet a sum over it verifies */
		out[l4 + 6] = out[l4 + 7] = 0;
		out[l4 + 8] = out[l4 + 9] = 0;
		put16(out + l4 + 8, ref_l4_csum(out, v6, l4, (uint32_t)len, 17, l4 + 6));
		CHECK(ref_l4_ok(out, v6, l4, (uint32_t)len, 17), "test setup: checksum 0 verifies");
		break;
	case UD_CORRUPT:
		out[len - 3] ^= 0x21;
		break;
	case UD_BADLEN: /* UDP length 2 short of the packet, checksum valid over the packet */
		put16(out + l4 + 4, (uint16_t)(len - l4 - 2));
		udp_fix(out, (uint32_t)len);
		break;
	case UD_IPCSUM:
		out[10] ^= 0x10;
		break;
	case UD_MF:
		out[6] = 0x20;
		ip4_fix(out);
		break;
	case UD_OFFSET:
		out[6] = 0x40, out[7] = 0x01; /* DF and offset 8: a trailing fragment */
		ip4_fix(out);
		break;
	case UD_DF:
		out[6] = 0;
		ip4_fix(out);
		break;
	case UD_FLOWLABEL:
		out[3] ^= 0x01;
		break;
	}
	return len;
}

static void test_udp_gro_cases(void)
{
	uint8_t tmp[70000];
	struct spec s;
	unsigned i;
	char name[96];

	/* udp = 0: datagrams are left alone */
	for (int v6 = 0; v6 < 2; v6++) {
		for (i = 0; i < 5; i++)
			b_spec(udp_spec(v6, 1000, i), 0, 0);
		run_expect_u(v6 ? "udp=0 v6" : "udp=0 v4", "SSSSS", 0);
		for (i = 0; i < 5; i++)
			b_spec(udp_spec(v6, 1000, i), 0, 0);
		run_expect_u(v6 ? "udp=1 v6" : "udp=1 v4", "Hcccc", 1);
	}
	/* tiny datagrams: gso_size 1 */
	for (i = 0; i < 6; i++)
		b_spec(udp_spec(1, 1, i), 0, 0);
	run_expect_u("1-byte datagrams", "Hccccc", 1);
	for (i = 0; i < 2; i++)
		b_spec(udp_spec(0, 1, i), 0, 0);
	run_expect_u("two 1-byte datagrams", "Hc", 1);
	b_spec(udp_spec(0, 1000, 0), 0, 0);
	run_expect_u("one datagram", "S", 1);

	/* interleaved UDP flows stay separate and in order */
	for (i = 0; i < 4; i++) {
		struct spec a = udp_spec(0, 1000, i), b = udp_spec(1, 700, i), c = udp_spec(0, 1000, i);

		b.sport = 5555;
		c.sport = 4501; /* same addresses, other port */
		b_spec(a, 0, 0);
		b_spec(b, 0, 0);
		b_spec(c, 0, 0);
	}
	run_expect_u("three interleaved UDP flows", "HHHccccccccc", 1);
	/* more open flows than GRO tracks */
	for (i = 0; i < 3; i++)
		for (unsigned f = 0; f < 12; f++) {
			s = udp_spec(f & 1, 100, i);
			s.sport = (uint16_t)(1000 + f);
			b_spec(s, 0, 0);
		}
	verify_batch_u(offload_coalesce(B.p, B.n, 1, SEG), "12 interleaved UDP flows", 1);
	b_reset();

	/* TCP and UDP flows interleaved, UDP with the very same addresses and ports as TCP */
	for (int udp = 1; udp >= 0; udp--) {
		for (i = 0; i < 4; i++) {
			struct spec t = seg_spec(0, 1, 1000, i), u = udp_spec(0, 1000, i),
				    w = udp_spec(1, 1200, i), t6 = seg_spec(1, 0, 500, i);

			u.sport = t.sport, u.dport = t.dport;
			b_spec(t, 0, 0);
			b_spec(u, 0, 0);
			b_spec(w, 0, 0);
			b_spec(t6, 0, 0);
		}
		run_expect_u(udp ? "TCP and UDP flows, udp=1" : "TCP and UDP flows, udp=0",
			     udp ? "HHHHcccccccccccc" : "HSSH" "cSSc" "cSSc" "cSSc", udp);
	}

	/* a shorter datagram joins and closes; a longer one starts anew */
	for (int v6 = 0; v6 < 2; v6++) {
		for (i = 0; i < 5; i++) {
			s = udp_spec(v6, 1000, i);
			if (i == 2)
				s.payload = 999;
			b_spec(s, 0, 0);
		}
		run_expect_u(v6 ? "udp shorter closes v6" : "udp shorter closes v4", "HccHc", 1);
		for (i = 0; i < 3; i++) {
			s = udp_spec(v6, 1000, i);
			if (i == 1)
				s.payload = 1;
			b_spec(s, 0, 0);
		}
		run_expect_u(v6 ? "udp 1-byte closes v6" : "udp 1-byte closes v4", "HcS", 1);
		for (i = 0; i < 4; i++) {
			s = udp_spec(v6, 1000, i);
			if (i >= 1)
				s.payload = 1001;
			b_spec(s, 0, 0);
		}
		run_expect_u(v6 ? "udp longer starts anew v6" : "udp longer starts anew v4", "SHcc",
			     1);
		for (i = 0; i < 6; i++) {
			s = udp_spec(v6, 1000, i);
			if (i == 2)
				s.payload = 1400;
			if (i == 3)
				s.payload = 100;
			b_spec(s, 0, 0);
		}
		run_expect_u(v6 ? "udp longer then shorter v6" : "udp longer then shorter v4",
			     "HcHcHc", 1);
	}

	/* datagrams that may not join: written as they are, and they close the flow's
	 * super-packet so that the ones after them do not overtake them */
	for (int d = 0; d < UD_NDEFECTS; d++)
		for (int v6 = 0; v6 < 2; v6++) {
			size_t len;

			if (!udp_defective(v6, 1000, 2, d, tmp))
				continue;
			for (i = 0; i < 5; i++) {
				if (i == 2) {
					len = udp_defective(v6, 1000, 2, d, tmp);
				} else {
					s = udp_spec(v6, 1000, i);
					len = build(&s, tmp);
				}
				b_add(tmp, len, 0, 0);
			}
			snprintf(name, sizeof(name), "udp %s in the middle, v%d", udp_defect_name[d],
				 v6 ? 6 : 4);
			run_expect_u(name, "HcSHc", 1);
			for (i = 0; i < 3; i++) {
				if (i == 0) {
					len = udp_defective(v6, 1000, 0, d, tmp);
				} else {
					s = udp_spec(v6, 1000, i);
					len = build(&s, tmp);
				}
				b_add(tmp, len, 0, 0);
			}
			snprintf(name, sizeof(name), "udp %s first, v%d", udp_defect_name[d],
				 v6 ? 6 : 4);
			run_expect_u(name, "SHc", 1);
			for (i = 0; i < 2; i++) {
				len = udp_defective(v6, 1000, i, d, tmp);
				b_add(tmp, len, 0, 0);
			}
			snprintf(name, sizeof(name), "udp %s twice, v%d", udp_defect_name[d],
				 v6 ? 6 : 4);
			/* two altered alike are one flow of their own where only headers differ */
			run_expect_u(name, d >= UD_TOS ? "Hc" : "SS", 1);
		}
	/* a UDP checksum of 0xffff standing for a computed 0 verifies and may join */
	for (int v6 = 0; v6 < 2; v6++) {
		uint32_t hdr = v6 ? 48 : 28, l4 = v6 ? 40 : 20;

		for (i = 0; i < 3; i++) {
			size_t len;

			s = udp_spec(v6, 1000, i);
			len = build(&s, tmp);
			if (i == 1) { /* first two payload bytes make the checksum compute to 0 */
				tmp[hdr] = tmp[hdr + 1] = 0;
				put16(tmp + l4 + 6, 0);
				put16(tmp + hdr, ref_l4_csum(tmp, v6, l4, (uint32_t)len, 17, l4 + 6));
				udp_fix(tmp, (uint32_t)len);
				CHECK(be16(tmp + l4 + 6) == 0xffff, "test setup: 0xffff checksum");
			}
			b_add(tmp, len, 0, 0);
		}
		run_expect_u(v6 ? "udp checksum 0xffff v6" : "udp checksum 0xffff v4", "Hcc", 1);
	}
	/* a TCP segment with the UDP flow's addresses and ports (another protocol) that may
	 * not join does not close the UDP super-packet, nor a UDP one the TCP flow's */
	for (i = 0; i < 5; i++) {
		if (i == 2) {
			s = seg_spec(0, 0, 1000, 0);
			s.sport = s.dport = 4500;
			s.flags |= TH_SYN;
			b_spec(s, 0, 0);
			continue;
		}
		b_spec(udp_spec(0, 1000, i), 0, 0);
	}
	run_expect_u("TCP SYN amid a UDP flow, same ports", "HcScc", 1);
	for (i = 0; i < 5; i++) {
		if (i == 2) {
			size_t len = udp_defective(0, 1000, 0, UD_CORRUPT, tmp);

			put16(tmp + 20, 40000), put16(tmp + 22, 443); /* the TCP flow's ports */
			b_add(tmp, len, 0, 0);
			continue;
		}
		b_spec(seg_spec(0, 0, 1000, i > 2 ? i - 1 : i), 0, 0);
	}
	run_expect_u("corrupt UDP amid a TCP flow, same ports", "HcScc", 1);
	/* other addresses / ports are other flows */
	for (i = 0; i < 4; i++) {
		s = udp_spec(0, 1000, i);
		if (i & 1)
			s.dport = 4501;
		b_spec(s, 0, 0);
	}
	run_expect_u("udp other dport", "HHcc", 1);

	/* capacity: the head's buffer, and 65535 */
	for (int v6 = 0; v6 < 2; v6++) {
		uint32_t hdr = v6 ? 48 : 28;

		for (i = 0; i < 7; i++)
			b_spec(udp_spec(v6, 1000, i), ESPD_HEADROOM + hdr + 3000, 0);
		run_expect_u("udp cap fits exactly 3", "HccHccS", 1);
		for (i = 0; i < 7; i++)
			b_spec(udp_spec(v6, 1000, i), ESPD_HEADROOM + hdr + 3000 - 1, 0);
		run_expect_u("udp cap fits 2", "HcHcHcS", 1);
		for (i = 0; i < 60; i++)
			b_spec(udp_spec(v6, 1400, i), 0, 0);
		{
			char want[61];

			/* 46 * 1400 + hdr <= 65535 < 47 * 1400 + hdr */
			memset(want, 'c', 60);
			want[60] = 0;
			want[0] = 'H';
			want[46] = 'H';
			run_expect_u("udp 65535 limit", want, 1);
		}
		for (i = 0; i < 2; i++) {
			s = udp_spec(v6, 1000, 0);
			s.payload = i ? (65535 - hdr) / 2 : (65535 - hdr + 1) / 2;
			s.seq += i * ((65535 - hdr + 1) / 2);
			b_spec(s, 0, 0);
		}
		run_expect_u("udp exactly 65535", "Hc", 1);
		for (i = 0; i < 3; i++) {
			s = udp_spec(v6, (65535 - hdr) / 2 + 1, i);
			b_spec(s, 0, 0);
		}
		run_expect_u("udp 65536", "SSS", 1);
	}

	/* result != 0: untouched, not counted; without sequence numbers the datagrams
	 * around a dropped one still join */
	for (i = 0; i < 3; i++)
		b_spec(udp_spec(1, 1000, i), 0, i == 1 ? 5 : 0);
	run_expect_u("udp dropped datagram in the middle", "Hxc", 1);
	for (i = 0; i < 3; i++)
		b_spec(udp_spec(0, 1000, i), 0, 9);
	run_expect_u("udp all dropped", "xxx", 1);
	CHECK(offload_coalesce(B.p, 0, 1, SEG) == 0, "empty batch, udp");
}

/* A TCP segment whose IP header differs (TOS: an ECN CE mark) starts a super-packet of its
 * own; a later segment of the connection that continues the earlier super-packet's sequence
 * (a retransmission of the marked one) must not join it and so overtake the marked one. */
static void test_gro_order_header_change(void)
{
	struct spec s;

	for (int v6 = 0; v6 < 2; v6++) {
		b_spec(seg_spec(v6, 0, 1000, 0), 0, 0);
		s = seg_spec(v6, 0, 1000, 1);
		s.tos ^= 0x03;
		b_spec(s, 0, 0);
		b_spec(seg_spec(v6, 0, 1000, 1), 0, 0);
		run_expect_u(v6 ? "TCP: CE-marked segment, then its retransmission, v6" :
				  "TCP: CE-marked segment, then its retransmission, v4",
			     "SSS", 0);
	}
}

/* random batches of TCP and UDP flows with random defects, udp = 1 (mostly) */
static void test_udp_gro_random(void)
{
	uint8_t tmp[2000];

	for (int it = 0; it < 2000; it++) {
		unsigned n = 1 + rndn(48), nflows = 1 + rndn(5);
		uint32_t next[5], mss[5];
		int isudp[5], udp = rndn(5) != 0;

		for (unsigned f = 0; f < nflows; f++)
			next[f] = 1000u * f, mss[f] = 1 + rndn(300), isudp[f] = rndn(3) != 0;
		for (unsigned i = 0; i < n; i++) {
			unsigned f = rndn(nflows);
			struct spec s = base_spec(f & 1);
			uint32_t r = rndn(100);
			size_t len;

			s.sport = (uint16_t)(100 + f / 2 * 2); /* flows 2k, 2k+1 share ports */
			s.seq = next[f];
			s.payload = mss[f];
			if (isudp[f]) {
				s.udp = 1;
				s.id = (uint16_t)(s.seq / 7);
				if (r < 10)
					s.payload = rndn(mss[f] + 1); /* shorter, maybe empty */
				else if (r < 14)
					s.payload = mss[f] + 1 + rndn(10);
				else if (r < 16)
					s.tos ^= 1;
				else if (r < 18)
					s.ttl++;
				else if (r < 19)
					s.udp = 0; /* a TCP segment with the same addresses and ports */
				next[f] = s.seq + s.payload;
				len = build(&s, tmp);
				if (r >= 19 && r < 21) {
					tmp[spec_l4(&s) + 6] = tmp[spec_l4(&s) + 7] = 0;
				} else if (r >= 21 && r < 23) {
					/* (IP lengths are the caller's: esp_in sets len = total) */
					uint32_t l4 = spec_l4(&s);

					tmp[l4 + rndn((uint32_t)len - l4)] ^= (uint8_t)(1 + rndn(255));
				} else if (r >= 23 && r < 24 && len > 60) {
					len -= 1 + rndn(8); /* truncated: UDP length inconsistent */
				}
			} else {
				if (r < 8)
					s.payload = 1 + rndn(mss[f]);
				else if (r < 10)
					s.payload = mss[f] + 1 + rndn(10);
				else if (r < 14)
					s.seq += rndn(3) * 7 - 7;
				else if (r < 18)
					s.flags |= TH_PSH;
				else if (r < 20)
					s.tos ^= 1;
				next[f] = s.seq + s.payload;
				len = build(&s, tmp);
			}
			b_add(tmp, len, rndn(4) ? 0 : ESPD_HEADROOM + (uint32_t)len + rndn(2000),
			      rndn(20) ? 0 : 3);
		}
		verify_batch_u(offload_coalesce(B.p, B.n, udp, SEG), udp ? "random batch, udp" :
								    "random batch, udp=0", udp);
		b_reset();
	}
}

/* robustness of USO: truncations and random headers with gso_type UDP_L4 */
static void test_robust_udp(void)
{
	uint8_t buf[400];

	for (int v6 = 0; v6 < 2; v6++) {
		struct spec s = base_spec(v6);
		struct vnet_hdr h;
		size_t len;

		s.udp = 1;
		s.payload = 300;
		len = build(&s, buf);
		h = uso_hdr(&s, 100);
		for (size_t l = 0; l <= len; l++) {
			fuzz_one(buf, l, &h);
			h.gso_size = 1;
			fuzz_one(buf, l, &h);
			h.gso_size = 100;
		}
	}
	for (int it = 0; it < 100000; it++) {
		size_t len = rndn(200);
		struct vnet_hdr h;

		for (size_t i = 0; i < len; i++)
			buf[i] = (uint8_t)rnd();
		if (len && rndn(2))
			buf[0] = rndn(2) ? 0x45 : rndn(2) ? 0x60 : (uint8_t)(0x40 | rndn(16));
		h.flags = (uint8_t)rnd();
		h.gso_type = rndn(2) ? VNET_GSO_UDP_L4 : VNET_GSO_UDP_L4 | VNET_GSO_ECN;
		h.hdr_len = (uint16_t)rnd();
		h.gso_size = (uint16_t)(rndn(2) ? 1 + rndn(64) : rnd());
		h.csum_start = (uint16_t)(rndn(4) ? rndn(80) : rnd());
		h.csum_offset = 6;
		fuzz_one(buf, len, &h);
	}
	/* IHL past csum_start */
	{
		struct spec s = base_spec(0);
		struct vnet_hdr h;
		size_t len;

		s.udp = 1;
		s.payload = 4;
		len = build(&s, buf_ihl);
		buf_ihl[0] = 0x4f;
		h = uso_hdr(&s, 1);
		fuzz_one(buf_ihl, len, &h);
	}
}

int main(void)
{
	test_tso();
	test_csum();
	test_gro_roundtrip();
	test_gro_cases();
	test_gro_random();
	test_gro_order_ack();
	test_gro_bad_checksum();
	test_robust();
	test_robust_ihl();
	test_uso();
	test_udp_gro_roundtrip();
	test_udp_gro_cases();
	test_udp_gro_random();
	test_gro_order_header_change();
	test_robust_udp();
	printf("%lu passed, %lu failed\n", passed, failed);
	return failed ? 1 : 0;
}
