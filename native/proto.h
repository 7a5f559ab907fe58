/* Protocol constants: what the RFCs fix, kept apart from what espd chooses. */
#ifndef ESPD_PROTO_H
#define ESPD_PROTO_H

#include <stdint.h>

/* --- Specification (RFC 791, 8200, 768, 4303, 3948) --- */
#define IPPROTO_NUM_HOPOPTS 0
#define IPPROTO_NUM_ICMP 1
#define IPPROTO_NUM_IPIP 4 /* tunnel-mode next header: IPv4 */
#define IPPROTO_NUM_TCP 6
#define IPPROTO_NUM_UDP 17
#define IPPROTO_NUM_IPV6 41 /* tunnel-mode next header: IPv6 */
#define IPPROTO_NUM_ROUTING 43
#define IPPROTO_NUM_FRAGMENT 44
#define IPPROTO_NUM_ESP 50
#define IPPROTO_NUM_AH 51
#define IPPROTO_NUM_ICMPV6 58
#define IPPROTO_NUM_NONE 59 /* RFC 4303 2.6: dummy packet, drop silently */
#define IPPROTO_NUM_DSTOPTS 60

#define IPV4_HDR_MIN 20
#define IPV4_HDR_MAX 60
#define IPV6_HDR_LEN 40
#define UDP_HDR_LEN 8
#define ESP_HDR_LEN 8 /* SPI + sequence number */
#define ESP_TRAILER_LEN 2 /* pad length + next header */
#define ESP_SPI_RESERVED_MAX 255 /* RFC 4303 2.1: SPIs 1..255 are reserved */
#define NATT_PORT 4500 /* RFC 3948 */
#define NATT_KEEPALIVE 0xFF /* RFC 3948 2.3: one-byte NAT-keepalive */
#define NON_ESP_MARKER_LEN 4 /* RFC 3948 2.2: four zero bytes in front of IKE on 4500 */
#define IP_MAX_LEN 65535

#define ECN_MASK 0x03
#define ECN_NOT_ECT 0x00
#define ECN_ECT1 0x01
#define ECN_ECT0 0x02
#define ECN_CE 0x03

/* --- Implementation limits (espd's choices) --- */
#define ESPD_HEADROOM 128 /* >= IPv6 40 + UDP 8 + ESP 8 + IV 16 */
#define ESPD_TAILROOM 64 /* >= pad 15 + trailer 2 + ICV 32 */
#define ESPD_MAX_IV 16
#define ESPD_MAX_ICV 32
#define ESPD_MAX_KEY 64
#define ESPD_REPLAY_MAX 65536 /* largest anti-replay window in packets */
#define ESPD_DEFAULT_TTL 64
#define ESPD_PEER_MOVED_INTERVAL_NS 1000000000LL /* at most one peer_moved event per SA and second */

static inline uint16_t native_from_be16(uint16_t v)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return __builtin_bswap16(v);
#else
	return v;
#endif
}
#define be16_from_native native_from_be16

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = (uint8_t)v; }
static inline void wr32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24; p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline void wr64(uint8_t *p, uint64_t v) { wr32(p, (uint32_t)(v >> 32)); wr32(p + 4, (uint32_t)v); }

#endif
