// sources: native/ip.c
/* test_checksum: ip_sum, ip_checksum and ip_sum_copy (native/ip.c) against a byte-wise
 * RFC 1071 reference written here, on every length up to 600 at every start offset
 * 0..33 (the vector loop's 32-byte steps, its scalar tail and the odd last byte), on
 * sums that carry (all 0xff), and across the AVX2 loop's 4 MiB lane drain; and that
 * ip_sum_copy copies exactly len bytes, no more.
 *
 *   cc -O1 -g -fsanitize=address,undefined -Wall -Wextra -Werror -I native \
 *      native/ip.c tests/native/test_checksum.c -o /tmp/test_checksum && /tmp/test_checksum
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ip.h"

/* RFC 1071: big-endian 16-bit words, a last odd byte padded with zero, end-around carry. */
static uint16_t reference_sum(const uint8_t *p, size_t len, uint32_t sum)
{
	uint64_t acc = sum;

	for (size_t i = 0; i + 1 < len; i += 2)
		acc += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (len & 1)
		acc += (uint32_t)p[len - 1] << 8;
	while (acc >> 16)
		acc = (acc & 0xffff) + (acc >> 16);
	return (uint16_t)acc;
}

static uint32_t rng = 0x9e3779b9;

static uint8_t next_byte(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 17;
	rng ^= rng << 5;
	return (uint8_t)rng;
}

static void check_one(const uint8_t *p, size_t len, uint32_t sum, const char *what)
{
	static uint8_t dst[(5u << 20) + 128];
	uint16_t want = reference_sum(p, len, sum);

	CHECK(ip_sum(p, len, sum) == want, "%s len %zu: ip_sum %04x, want %04x", what, len,
	      ip_sum(p, len, sum), want);
	CHECK(ip_sum_portable(p, len, sum) == want, "%s len %zu: portable %04x, want %04x",
	      what, len, ip_sum_portable(p, len, sum), want);
	uint16_t inverted = (uint16_t)(0xffff ^ want), got = ip_checksum(p, len, sum);

	CHECK(got == inverted, "%s len %zu: ip_checksum", what, len);
	if (len + 64 > sizeof(dst))
		return;
	memset(dst, 0xa5, len + 64);
	CHECK(ip_sum_copy(dst, p, len) == reference_sum(p, len, 0), "%s len %zu: ip_sum_copy",
	      what, len);
	CHECK(!memcmp(dst, p, len), "%s len %zu: ip_sum_copy copied other bytes", what, len);
	for (size_t k = len; k < len + 64; k++)
		if (dst[k] != 0xa5) {
			CHECK(0, "%s len %zu: ip_sum_copy wrote byte %zu past the end", what, len,
			      k - len);
			break;
		}
}

int main(void)
{
	static uint8_t buf[(5u << 20) + 128];
	size_t big[] = { 65535, 65536, 70001, (4u << 20) - 1, 4u << 20, (4u << 20) + 33,
			 (4u << 20) + 64 * 3 + 95 };

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = next_byte();
	for (size_t off = 0; off < 34; off++)
		for (size_t len = 0; len <= 600; len++)
			check_one(buf + off, len, (uint32_t)(len * 7919u + off), "random");
	memset(buf, 0xff, sizeof(buf));
	for (size_t len = 0; len <= 300; len++)
		check_one(buf + (len & 31), len, 0xffff, "all ones");
	for (size_t i = 0; i < sizeof(big) / sizeof(big[0]); i++) {
		check_one(buf + 1, big[i], 0, "all ones, large"); /* every lane near its limit */
		for (size_t k = 0; k < big[i] + 1; k++)
			buf[k] = next_byte();
		check_one(buf + 1, big[i], 0x1234, "random, large");
		memset(buf, 0xff, sizeof(buf));
	}
	printf("checksum code: %s\n", ip_sum_impl());
	printf("%lu passed, %lu failed\n", passed, failed);
	return failed ? 1 : 0;
}
