// sources: native/offload.c native/ip.c
/* test_offload: TUN offloads (native/offload.c) against an independent RFC 1071 checksum:
 * TSO segmentation (offload_count, offload_segment), partial checksum completion
 * (offload_csum), GRO coalescing (offload_coalesce) and robustness on hostile input.
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

static unsigned long passed, failed;

#define CHECK(cond, ...)                                                        \
	do {                                                                    \
		if (cond) {                                                     \
			passed++;                                               \
		} else {                                                        \
			if (failed++ < 60) {                                    \
				fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__,   \
					__LINE__, #cond);                       \
				fprintf(stderr, __VA_ARGS__);                   \
				fputc('\n', stderr);                            \
			}                                                       \
		}                                                               \
	} while (0)

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

/* Everything offload_coalesce promises, for any batch. ret: its return value. */
static void verify_batch(unsigned ret, const char *name)
{
	unsigned left = 0;
	static int gone[MAXB];

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
		if (!tview(oi, B.len0[i], &ti))
			continue;
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

/* expect: per packet 'H' coalesced head, 'S' written as it came (zero vnet_hdr), 'c'
 * consumed, 'x' result != 0 left alone */
static void run_expect(const char *name, const char *expect)
{
	unsigned want = 0, ret;

	ret = offload_coalesce(B.p, B.n, 0);
	verify_batch(ret, name);
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
	ret = offload_coalesce(B.p, B.n, 0);
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
	verify_batch(offload_coalesce(B.p, B.n, 0), "12 interleaved flows");
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
	CHECK(offload_coalesce(B.p, 0, 0) == 0, "empty batch");
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
		verify_batch(offload_coalesce(B.p, B.n, 0), "random batch");
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
	printf("%lu passed, %lu failed\n", passed, failed);
	return failed ? 1 : 0;
}
