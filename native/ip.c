/* ip: header parsing and checksums (see ip.h). */
#include "ip.h"

#include <string.h>

#include "proto.h"

static int ip4_parse(const uint8_t *p, size_t len, struct ip_info *o)
{
	uint32_t ihl = (p[0] & 0x0f) * 4u, total;

	if (len < IPV4_HDR_MIN || ihl < IPV4_HDR_MIN || ihl > len)
		return -1;
	total = rd16(p + 2);
	if (total < ihl || total > len)
		return -1;
	o->family = 4;
	o->tos = p[1];
	o->df = !!(p[6] & 0x40);
	o->frag = (rd16(p + 6) & 0x3fff) != 0;
	o->proto = o->upper = p[9];
	o->nh_off = 9;
	o->hdr_len = (uint16_t)ihl;
	o->upper_off = ihl;
	o->later_fragment = (rd16(p + 6) & 0x1fff) != 0;
	o->upper_ok = 1;
	o->total_len = total;
	return 0;
}

static int ip6_ext(uint8_t nh)
{
	return nh == IPPROTO_NUM_HOPOPTS || nh == IPPROTO_NUM_ROUTING || nh == IPPROTO_NUM_DSTOPTS ||
	       nh == IPPROTO_NUM_AH || nh == IPPROTO_NUM_FRAGMENT;
}

/* One walk of the IPv6 header chain, with two results:
 *   placement (proto, nh_off, hdr_len): where ESP transport mode goes, after hop-by-hop,
 *     routing, and destination options met before a routing header (RFC 4303 3.1.1);
 *     a malformed header inside that part fails the parse;
 *   upper layer (upper, upper_off, later_fragment, upper_ok): after every extension
 *     header, fragment and AH included; a malformed header past the placement point only
 *     clears upper_ok (the packet can still be sealed; it cannot be classified). */
static int ip6_parse(const uint8_t *p, size_t len, struct ip_info *o)
{
	uint32_t off = IPV6_HDR_LEN, total, hlen;
	int seen_routing = 0, placing = 1;
	uint8_t nh;

	if (len < IPV6_HDR_LEN)
		return -1;
	total = IPV6_HDR_LEN + rd16(p + 4);
	if (total > len)
		return -1;
	o->family = 6;
	o->tos = (uint8_t)(rd16(p) >> 4);
	o->df = 0;
	o->frag = 0;
	o->proto = nh = p[6];
	o->nh_off = 6;
	o->hdr_len = IPV6_HDR_LEN;
	o->total_len = total;
	o->later_fragment = 0;
	o->upper_ok = 0;
	for (unsigned n = 0; n < IPV6_EXT_MAX; n++) {
		if (placing && (n == IPV6_PLACE_MAX ||
				!(nh == IPPROTO_NUM_HOPOPTS || nh == IPPROTO_NUM_ROUTING ||
				  (nh == IPPROTO_NUM_DSTOPTS && !seen_routing))))
			placing = 0; /* ESP goes here: proto, nh_off and hdr_len stay */
		if (!ip6_ext(nh)) {
			o->upper = nh;
			o->upper_off = off;
			o->upper_ok = 1;
			return 0;
		}
		if ((nh == IPPROTO_NUM_HOPOPTS && off != IPV6_HDR_LEN) || total - off < 8)
			return placing ? -1 : 0; /* hop-by-hop must come first; every header has 8 */
		if (nh == IPPROTO_NUM_FRAGMENT)
			hlen = 8;
		else if (nh == IPPROTO_NUM_AH)
			hlen = (p[off + 1] + 2u) * 4;
		else
			hlen = (p[off + 1] + 1u) * 8;
		if (total - off < hlen)
			return placing ? -1 : 0;
		if (nh == IPPROTO_NUM_FRAGMENT && (rd16(p + off + 2) & 0xfff8)) {
			o->upper = p[off]; /* a non-first fragment: nothing after it to read */
			o->upper_off = off + hlen;
			o->later_fragment = 1;
			o->upper_ok = 1;
			return 0;
		}
		seen_routing |= nh == IPPROTO_NUM_ROUTING;
		nh = p[off];
		if (placing) {
			o->proto = nh;
			o->nh_off = (uint16_t)off;
			o->hdr_len = (uint16_t)(off + hlen);
		}
		off += hlen;
	}
	return placing ? -1 : 0; /* too many extension headers: no upper layer */
}

int ip_parse(const uint8_t *pkt, size_t len, struct ip_info *out)
{
	if (len < 1)
		return -1;
	switch (pkt[0] >> 4) {
	case 4: return ip4_parse(pkt, len, out);
	case 6: return ip6_parse(pkt, len, out);
	default: return -1;
	}
}

/* Sum of data as native-order 16-bit words, four bytes per step into 64 bits (no carry
 * can overflow: it would take 2^32 steps). The ones' complement sum commutes with byte
 * swapping (RFC 1071 2.B), so a native sum is swapped once at the end. With `copy`, the
 * bytes are also written there (the pass that sums them is the pass that copies them). */
static inline __attribute__((always_inline)) uint64_t sum_scalar(const uint8_t *p, size_t len,
								    uint64_t acc, uint8_t *copy)
{
	uint32_t w[4];
	uint16_t h;

	for (; len >= 16; p += 16, len -= 16) {
		memcpy(w, p, 16);
		if (copy) {
			memcpy(copy, w, 16);
			copy += 16;
		}
		acc += (uint64_t)w[0] + w[1] + w[2] + w[3];
	}
	if (copy)
		memcpy(copy, p, len);
	for (; len >= 4; p += 4, len -= 4) {
		memcpy(w, p, 4);
		acc += w[0];
	}
	if (len >= 2) {
		memcpy(&h, p, 2);
		acc += h;
		p += 2;
		len -= 2;
	}
	if (len) /* a last odd byte is the high byte of a big-endian word */
		acc += native_from_be16((uint16_t)(*p << 8));
	return acc;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* AVX2: 64 bytes per step in two pairs of accumulators. Each 32-bit lane of an `even`
 * accumulator takes the native 16-bit word at the lane's low half, `odd` the one at its
 * high half; a lane grows by at most 0xffff per step, so the lanes are drained into the
 * 64-bit sum every 2^16 steps (4 MiB): 2^16 x 0xffff < 2^32, no lane overflows. What is left under 64
 * bytes goes through the scalar loop, which starts at an even offset, so the odd-byte rule
 * stays right. `copy` is a constant at each call site below, so the compiler makes a
 * loop without the store and one with it. */
__attribute__((target("avx2"), always_inline)) static inline uint64_t
sum_avx2_body(const uint8_t *p, size_t len, uint64_t acc, uint8_t *copy, const int copying)
{
	const __m256i low16 = _mm256_set1_epi32(0xffff);

	while (len >= 64) {
		__m256i e0 = _mm256_setzero_si256(), o0 = e0, e1 = e0, o1 = e0;
		uint32_t lanes[32];

		for (unsigned steps = 0; len >= 64 && steps < (1u << 16); steps++) {
			__m256i a = _mm256_loadu_si256((const __m256i *)p);
			__m256i b = _mm256_loadu_si256((const __m256i *)(p + 32));

			if (copying) {
				_mm256_storeu_si256((__m256i *)copy, a);
				_mm256_storeu_si256((__m256i *)(copy + 32), b);
				copy += 64;
			}
			e0 = _mm256_add_epi32(e0, _mm256_and_si256(a, low16));
			o0 = _mm256_add_epi32(o0, _mm256_srli_epi32(a, 16));
			e1 = _mm256_add_epi32(e1, _mm256_and_si256(b, low16));
			o1 = _mm256_add_epi32(o1, _mm256_srli_epi32(b, 16));
			p += 64;
			len -= 64;
		}
		_mm256_storeu_si256((__m256i *)lanes, e0);
		_mm256_storeu_si256((__m256i *)(lanes + 8), o0);
		_mm256_storeu_si256((__m256i *)(lanes + 16), e1);
		_mm256_storeu_si256((__m256i *)(lanes + 24), o1);
		for (unsigned k = 0; k < 32; k++)
			acc += lanes[k];
	}
	return sum_scalar(p, len, acc, copying ? copy : NULL);
}

__attribute__((target("avx2"))) static uint64_t sum_avx2(const uint8_t *p, size_t len,
							  uint64_t acc, uint8_t *copy)
{
	return copy ? sum_avx2_body(p, len, acc, copy, 1) : sum_avx2_body(p, len, acc, NULL, 0);
}

typedef uint64_t (*sum_fn)(const uint8_t *, size_t, uint64_t, uint8_t *);
static sum_fn sum_best = sum_scalar;

/* Chosen once, before any worker runs (the library's constructor): read-only after. */
__attribute__((constructor)) static void sum_choose(void)
{
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2"))
		sum_best = sum_avx2;
}
/* Under 256 bytes the lanes' drain and the indirect call cost more than the vector loop
 * saves. */
#define SUM(p, len, acc, copy) \
	((len) < 256 ? sum_scalar(p, len, acc, copy) : sum_best(p, len, acc, copy))

const char *ip_sum_impl(void)
{
	return sum_best == sum_avx2 ? "avx2" : "scalar";
}
#else
#define SUM(p, len, acc, copy) sum_scalar(p, len, acc, copy)

const char *ip_sum_impl(void)
{
	return "scalar";
}
#endif

static uint16_t fold(uint64_t acc)
{
	while (acc >> 16)
		acc = (acc & 0xffff) + (acc >> 16);
	return (uint16_t)acc;
}

uint16_t ip_sum(const uint8_t *data, size_t len, uint32_t sum)
{
	return fold((uint64_t)be16_from_native(fold(SUM(data, len, 0, NULL))) + sum);
}

uint16_t ip_sum_copy(uint8_t *dst, const uint8_t *src, size_t len)
{
	return be16_from_native(fold(SUM(src, len, 0, dst)));
}

uint16_t ip_sum_portable(const uint8_t *data, size_t len, uint32_t sum)
{
	return fold((uint64_t)be16_from_native(fold(sum_scalar(data, len, 0, NULL))) + sum);
}

uint16_t ip_checksum(const uint8_t *data, size_t len, uint32_t sum)
{
	return (uint16_t)~ip_sum(data, len, sum);
}

void ip4_set_checksum(uint8_t *hdr)
{
	hdr[10] = hdr[11] = 0;
	wr16(hdr + 10, ip_checksum(hdr, (hdr[0] & 0x0f) * 4u, 0));
}

void udp6_set_checksum(const uint8_t *ip6, uint8_t *udp, size_t udp_len)
{
	uint32_t sum = 0;
	uint16_t c;

	for (int i = 8; i < 40; i += 2) /* source and destination addresses */
		sum += rd16(ip6 + i);
	sum += (uint32_t)(udp_len >> 16) + (uint32_t)(udp_len & 0xffff) + IPPROTO_NUM_UDP;
	udp[6] = udp[7] = 0;
	c = ip_checksum(udp, udp_len, sum);
	wr16(udp + 6, c ? c : 0xffff); /* RFC 768: a computed 0 is sent as all ones */
}

void ip_set_tos(uint8_t *pkt, uint8_t family, uint8_t tos)
{
	if (family == 4) {
		pkt[1] = tos;
		ip4_set_checksum(pkt);
	} else {
		wr16(pkt, (uint16_t)((rd16(pkt) & 0xf00f) | tos << 4));
	}
}
