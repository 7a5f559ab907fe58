/* ip: parsing and checksums of IPv4/IPv6 headers, shared by both directions. */
#ifndef ESPD_IP_H
#define ESPD_IP_H

#include <stddef.h>
#include <stdint.h>

#define IPV6_PLACE_MAX 8 /* extension headers ESP transport mode places itself after */
#define IPV6_EXT_MAX 16 /* extension headers walked to the upper layer before giving up */

/* What one walk of an IP header chain finds. Two results, for two users:
 *   placement (proto, nh_off, hdr_len): where ESP transport mode puts itself;
 *   upper layer (upper, upper_off, later_fragment, upper_ok): the protocol and offset
 *   of the transport header, for the selector (spd.c) and GRO (offload.c). */
struct ip_info {
	uint8_t family; /* 4 or 6 */
	uint8_t proto; /* protocol after the headers walked for placement */
	uint8_t tos; /* IPv4 TOS / IPv6 traffic class: DSCP << 2 | ECN */
	uint8_t df; /* IPv4 don't-fragment */
	uint8_t frag; /* IPv4 MF set or offset non-zero */
	uint8_t upper; /* the upper-layer protocol, after every extension header */
	uint8_t later_fragment; /* a non-first fragment: no upper-layer header follows */
	uint8_t upper_ok; /* 0: an extension header past the placement point is malformed,
			   * or there are more than IPV6_EXT_MAX: no upper layer known */
	uint16_t hdr_len; /* bytes of header(s) walked for placement */
	uint16_t nh_off; /* offset of the byte that names `proto` */
	uint32_t upper_off; /* offset of the upper-layer header */
	uint32_t total_len; /* length the header claims, <= the buffer's */
};

/* Walk the IP header(s) of pkt[0..len), the one walker of the data plane. IPv4: options
 * skipped by IHL; the upper layer follows. IPv6: extension headers walked the way ESP
 * transport mode places itself (RFC 4303 3.1.1, as Linux does): hop-by-hop (first
 * only), routing, and destination options met before a routing header; then on through
 * every extension header (destination options, AH, fragment) to the upper layer.
 * 0, or -1 when the fixed header or the placement part is malformed. */
int ip_parse(const uint8_t *pkt, size_t len, struct ip_info *out);
/* Internet checksum (RFC 1071) of data, folded with a running big-endian sum. */
uint16_t ip_checksum(const uint8_t *data, size_t len, uint32_t sum);
/* The same sum, folded but not complemented (for partial checksums). AVX2 where the
 * CPU has it, chosen once when the library loads. */
uint16_t ip_sum(const uint8_t *data, size_t len, uint32_t sum);
/* memcpy(dst, src, len) and ip_sum(src, len, 0) in one pass over the bytes. */
uint16_t ip_sum_copy(uint8_t *dst, const uint8_t *src, size_t len);
/* ip_sum without vector code: the reference the tests and benchmark compare against. */
uint16_t ip_sum_portable(const uint8_t *data, size_t len, uint32_t sum);
/* "avx2" or "scalar": the code ip_sum and ip_sum_copy run on this CPU. */
const char *ip_sum_impl(void);
void ip4_set_checksum(uint8_t *hdr);
/* UDP checksum over IPv6 (RFC 8200 8.1), written into the UDP header. */
void udp6_set_checksum(const uint8_t *ip6, uint8_t *udp, size_t udp_len);
/* Write a new TOS/traffic class, keeping an IPv4 header checksum right. */
void ip_set_tos(uint8_t *pkt, uint8_t family, uint8_t tos);

#endif
