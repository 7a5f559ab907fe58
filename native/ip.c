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
 * swapping (RFC 1071 2.B), so a native sum is swapped once at the end. */
static uint64_t sum_native(const uint8_t *p, size_t len, uint64_t acc)
{
	uint32_t w[4];
	uint16_t h;

	for (; len >= 16; p += 16, len -= 16) {
		memcpy(w, p, 16);
		acc += (uint64_t)w[0] + w[1] + w[2] + w[3];
	}
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

static uint16_t fold(uint64_t acc)
{
	while (acc >> 16)
		acc = (acc & 0xffff) + (acc >> 16);
	return (uint16_t)acc;
}

uint16_t ip_sum(const uint8_t *data, size_t len, uint32_t sum)
{
	return fold((uint64_t)be16_from_native(fold(sum_native(data, len, 0))) + sum);
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
