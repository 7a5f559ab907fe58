// sources: native/crypto.c native/crypto_ipsecmb.c
// libs: -lcrypto
/* test_crypto: native/crypto.c against ESP's wire format composed here from the RFCs with
 * OpenSSL's one-shot calls (EVP_Encrypt* / HMAC()), not from crypto.c's own code:
 *
 *   AEAD (RFC 4106 / RFC 7634): ciphertext and tag = AEAD(key, salt || IV, AAD, payload),
 *        AAD = SPI || seq (8 bytes), or SPI || seq_hi || seq_lo with ESN (RFC 4106 5);
 *        the IV is unique per sequence number.
 *   CBC + HMAC (RFC 3602, 4868, 2404) and NULL + HMAC: ICV = HMAC(SPI || seq || IV ||
 *        ciphertext [|| seq_hi with ESN, RFC 4303 2.2.1]) truncated; the payload is
 *        CBC(key, IV) of the plaintext.
 *   open: round trip; one flipped bit anywhere (header, IV, payload, ICV) or the wrong
 *        high half of an ESN sequence number fails; transforms and key sizes refused as
 *        crypto_alg_init says (no AEAD with an HMAC, no cipher without integrity).
 *
 * Every case runs on each AEAD backend built in (OpenSSL, and libipsec-mb when
 * test_native_c.py found it: ESPD_HAVE_IPSECMB); a line per backend gives its count.
 * Prints "N passed, M failed" last; exits non-zero on any failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "crypto.h"
#include "espdp.h"
#include "check.h"

struct case_ {
	const char *name;
	unsigned cipher, bits, integ;
};

static const struct case_ cases[] = {
	{ "esp-gcm 128", ESPDP_CIPHER_AES_GCM, 128, ESPDP_INTEG_NONE },
	{ "esp-gcm 192", ESPDP_CIPHER_AES_GCM, 192, ESPDP_INTEG_NONE },
	{ "esp-gcm 256", ESPDP_CIPHER_AES_GCM, 256, ESPDP_INTEG_NONE },
	{ "esp-chacha20-poly1305", ESPDP_CIPHER_CHACHA20_POLY1305, 256, ESPDP_INTEG_NONE },
	{ "esp-aes 128 sha1", ESPDP_CIPHER_AES_CBC, 128, ESPDP_INTEG_HMAC_SHA1_96 },
	{ "esp-aes 192 sha256", ESPDP_CIPHER_AES_CBC, 192, ESPDP_INTEG_HMAC_SHA256_128 },
	{ "esp-aes 256 sha384", ESPDP_CIPHER_AES_CBC, 256, ESPDP_INTEG_HMAC_SHA384_192 },
	{ "esp-aes 256 sha512", ESPDP_CIPHER_AES_CBC, 256, ESPDP_INTEG_HMAC_SHA512_256 },
	{ "esp-null sha256", ESPDP_CIPHER_NULL, 0, ESPDP_INTEG_HMAC_SHA256_128 },
};

static void fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 8));
}

static const EVP_CIPHER *ref_cipher(const struct case_ *c)
{
	switch (c->cipher) {
	case ESPDP_CIPHER_AES_GCM:
		return c->bits == 128 ? EVP_aes_128_gcm() : c->bits == 192 ? EVP_aes_192_gcm() : EVP_aes_256_gcm();
	case ESPDP_CIPHER_CHACHA20_POLY1305:
		return EVP_chacha20_poly1305();
	case ESPDP_CIPHER_AES_CBC:
		return c->bits == 128 ? EVP_aes_128_cbc() : c->bits == 192 ? EVP_aes_192_cbc() : EVP_aes_256_cbc();
	default:
		return NULL;
	}
}

static const EVP_MD *ref_md(unsigned integ)
{
	switch (integ) {
	case ESPDP_INTEG_HMAC_SHA1_96: return EVP_sha1();
	case ESPDP_INTEG_HMAC_SHA256_128: return EVP_sha256();
	case ESPDP_INTEG_HMAC_SHA384_192: return EVP_sha384();
	default: return EVP_sha512();
	}
}

/* The reference check of a sealed packet: decrypt and authenticate it from the RFC's
 * definitions; 1 when the ICV and the plaintext are what they must be. */
static int ref_verify(const struct case_ *c, const struct crypto_alg *a, const uint8_t *key,
		      const uint8_t *akey, const uint8_t *esp, size_t plen, const uint8_t *plain,
		      uint64_t seq, int esn)
{
	const uint8_t *iv = esp + 8, *ct = iv + a->iv_len, *icv = ct + plen;
	uint8_t out[2048], mac[EVP_MAX_MD_SIZE], buf[2048 + 64];
	unsigned maclen = 0;
	int n = 0, ok;

	if (c->cipher == ESPDP_CIPHER_AES_GCM || c->cipher == ESPDP_CIPHER_CHACHA20_POLY1305) {
		EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
		uint8_t nonce[12], aad[12];
		size_t alen = 8;

		memcpy(nonce, key + a->key_len - 4, 4); /* the salt: the key's last 4 bytes */
		memcpy(nonce + 4, iv, 8);
		memcpy(aad, esp, 4);
		if (esn) { /* SPI || seq_hi || seq_lo */
			aad[4] = (uint8_t)(seq >> 56);
			aad[5] = (uint8_t)(seq >> 48);
			aad[6] = (uint8_t)(seq >> 40);
			aad[7] = (uint8_t)(seq >> 32);
			memcpy(aad + 8, esp + 4, 4);
			alen = 12;
		} else {
			memcpy(aad + 4, esp + 4, 4);
		}
		ok = EVP_DecryptInit_ex(x, ref_cipher(c), NULL, NULL, NULL) &&
		     EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL) &&
		     EVP_DecryptInit_ex(x, NULL, NULL, key, nonce) &&
		     EVP_DecryptUpdate(x, NULL, &n, aad, (int)alen) &&
		     EVP_DecryptUpdate(x, out, &n, ct, (int)plen) &&
		     EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_TAG, 16, (void *)icv) &&
		     EVP_DecryptFinal_ex(x, out + n, &n);
		EVP_CIPHER_CTX_free(x);
		return ok && !memcmp(out, plain, plen);
	}
	/* ICV over SPI || seq || IV || ciphertext [|| seq_hi] */
	memcpy(buf, esp, 8 + a->iv_len + plen);
	n = (int)(8 + a->iv_len + plen);
	if (esn) {
		buf[n++] = (uint8_t)(seq >> 56);
		buf[n++] = (uint8_t)(seq >> 48);
		buf[n++] = (uint8_t)(seq >> 40);
		buf[n++] = (uint8_t)(seq >> 32);
	}
	HMAC(ref_md(c->integ), akey, a->auth_key_len, buf, (size_t)n, mac, &maclen);
	if (memcmp(mac, icv, a->icv_len))
		return 0;
	if (c->cipher == ESPDP_CIPHER_NULL)
		return !memcmp(ct, plain, plen);
	{
		EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
		int m = 0;

		ok = EVP_DecryptInit_ex(x, ref_cipher(c), NULL, key, iv) &&
		     EVP_CIPHER_CTX_set_padding(x, 0) && EVP_DecryptUpdate(x, out, &m, ct, (int)plen) &&
		     EVP_DecryptFinal_ex(x, out + m, &m);
		EVP_CIPHER_CTX_free(x);
		return ok && !memcmp(out, plain, plen);
	}
}

static void test_case(const struct case_ *c)
{
	struct crypto_alg a;
	uint8_t key[64], akey[64], esp[2048], plain[1600], iv_seen[4][16];
	struct crypto_ctx *seal, *open;

	CHECK(crypto_alg_init(&a, c->cipher, c->bits, c->integ) == 0, "%s: init", c->name);
	fill(key, a.key_len, 1);
	fill(akey, a.auth_key_len, 2);
	seal = crypto_ctx_new(&a, key, a.auth_key_len ? akey : NULL, 1);
	open = crypto_ctx_new(&a, key, a.auth_key_len ? akey : NULL, 0);
	CHECK(seal && open, "%s: contexts", c->name);
	if (!seal || !open)
		return;
	for (int esn = 0; esn <= 1; esn++) {
		for (unsigned k = 0; k < 4; k++) {
			size_t plen = (size_t)a.block * (1 + k * 20); /* 1 block .. 61 blocks */
			uint64_t seq = esn ? 0x0000000500000000ull + k + 1 : k + 1;
			size_t total = 8 + a.iv_len + plen + a.icv_len;

			fill(plain, plen, k + 10);
			memset(esp, 0, sizeof(esp));
			memcpy(esp, "\x00\x00\x10\x01", 4);
			esp[4] = (uint8_t)(seq >> 24);
			esp[5] = (uint8_t)(seq >> 16);
			esp[6] = (uint8_t)(seq >> 8);
			esp[7] = (uint8_t)seq;
			memcpy(esp + 8 + a.iv_len, plain, plen);
			CHECK(crypto_seal(seal, esp, plen, seq, esn) == 0, "%s: seal", c->name);
			CHECK(ref_verify(c, &a, key, akey, esp, plen, plain, seq, esn),
			      "%s esn %d len %zu: the reference opens it", c->name, esn, plen);
			if (a.iv_len)
				memcpy(iv_seen[k], esp + 8, a.iv_len);
			for (unsigned j = 0; a.iv_len && j < k; j++)
				CHECK(memcmp(iv_seen[j], iv_seen[k], a.iv_len), "%s: IVs differ per seq", c->name);
			/* every flipped bit is refused (a bit per byte, all bytes) */
			for (size_t i = 0; i < total; i += (total > 256 ? 7 : 1)) {
				uint8_t copy[2048];
				uint64_t claimed;

				memcpy(copy, esp, total);
				copy[i] ^= (uint8_t)(1u << (i % 8));
				/* esp_in takes the number from the header: a flipped one is claimed */
				claimed = (seq & ~0xffffffffull) | (uint64_t)copy[4] << 24 |
					  (uint64_t)copy[5] << 16 | (uint64_t)copy[6] << 8 | copy[7];
				CHECK(crypto_open(open, copy, plen, claimed, esn) != 0,
				      "%s: bit %zu flipped opens", c->name, i);
			}
			if (esn) {
				uint8_t copy[2048];

				memcpy(copy, esp, total);
				CHECK(crypto_open(open, copy, plen, seq + (1ull << 32), esn) != 0,
				      "%s: the wrong seq_hi opens", c->name);
			}
			CHECK(crypto_open(open, esp, plen, seq, esn) == 0 &&
				      !memcmp(esp + 8 + a.iv_len, plain, plen),
			      "%s esn %d: round trip", c->name, esn);
		}
	}
	/* Contexts are set up once and carry state from packet to packet (CBC's running
	 * chaining block, the AEAD parameter arrays): packets sealed in one order open in
	 * another, on a context that has opened others before, and match the reference. */
	{
		uint8_t ring[5][2048], want[5][1600];
		size_t plen[5];

		for (unsigned k = 0; k < 5; k++) {
			uint64_t seq = 100 + k;

			plen[k] = (size_t)a.block * (1 + k * 7);
			fill(want[k], plen[k], k + 40);
			memset(ring[k], 0, sizeof(ring[k]));
			memcpy(ring[k], "\x00\x00\x10\x01\x00\x00\x00", 7);
			ring[k][7] = (uint8_t)seq;
			memcpy(ring[k] + 8 + a.iv_len, want[k], plen[k]);
			CHECK(crypto_seal(seal, ring[k], plen[k], seq, 0) == 0 &&
				      ref_verify(c, &a, key, akey, ring[k], plen[k], want[k], seq, 0),
			      "%s: sealed in a row, packet %u", c->name, k);
		}
		for (unsigned k = 5; k-- > 0;)
			CHECK(crypto_open(open, ring[k], plen[k], 100 + k, 0) == 0 &&
				      !memcmp(ring[k] + 8 + a.iv_len, want[k], plen[k]),
			      "%s: opened in reverse, packet %u", c->name, k);
	}
	crypto_ctx_free(seal);
	crypto_ctx_free(open);
}

int main(void)
{
	static const char *const backends[] = { "openssl", "ipsec-mb" };
	struct crypto_alg a;

#ifdef ESPD_HAVE_IPSECMB
	CHECK(crypto_backend_available(ESPDP_CRYPTO_IPSECMB), "ipsec-mb built in and usable here");
#else
	CHECK(crypto_backend_set(ESPDP_CRYPTO_IPSECMB) == ESPDP_ERR_UNSUPPORTED &&
		      crypto_backend_get() == ESPDP_CRYPTO_OPENSSL,
	      "ipsec-mb not built in: refused, the backend stays OpenSSL");
#endif
	for (unsigned b = 0; b < 2; b++) {
		unsigned long before = passed;

		if (crypto_backend_set(b) != ESPDP_OK)
			continue;
		CHECK(crypto_backend_get() == b, "%s selected", backends[b]);
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			CHECK(crypto_alg_init(&a, cases[i].cipher, cases[i].bits, cases[i].integ) == 0 &&
				      a.backend == (a.integ == ESPDP_INTEG_NONE ? b : ESPDP_CRYPTO_OPENSSL),
			      "%s: an AEAD takes the backend, the rest stay on OpenSSL", cases[i].name);
			test_case(&cases[i]);
		}
		printf("backend %s (arch %s): %lu passed\n", backends[b],
		       b ? crypto_ipsecmb_arch() : "-", passed - before);
	}
	crypto_backend_set(ESPDP_CRYPTO_OPENSSL);
	CHECK(crypto_alg_init(&a, ESPDP_CIPHER_AES_GCM, 128, ESPDP_INTEG_HMAC_SHA256_128) ==
		      ESPDP_ERR_INVALID, "AEAD with an HMAC refused");
	CHECK(crypto_alg_init(&a, ESPDP_CIPHER_AES_CBC, 128, ESPDP_INTEG_NONE) == ESPDP_ERR_INVALID,
	      "CBC without integrity refused");
	CHECK(crypto_alg_init(&a, ESPDP_CIPHER_NULL, 0, ESPDP_INTEG_NONE) == ESPDP_ERR_INVALID,
	      "NULL without integrity refused");
	CHECK(crypto_alg_init(&a, ESPDP_CIPHER_CHACHA20_POLY1305, 128, ESPDP_INTEG_NONE) ==
		      ESPDP_ERR_INVALID, "ChaCha20 with a 128-bit key refused");
	CHECK(crypto_alg_init(&a, ESPDP_CIPHER_AES_GCM, 160, ESPDP_INTEG_NONE) == ESPDP_ERR_INVALID,
	      "AES-160 refused");
	CHECK(crypto_alg_init(&a, 9, 128, ESPDP_INTEG_NONE) == ESPDP_ERR_INVALID, "unknown cipher");
	CHECK(crypto_alg_init(&a, ESPDP_CIPHER_AES_CBC, 128, 9) == ESPDP_ERR_INVALID, "unknown integ");
	printf("%lu passed, %lu failed\n", passed, failed);
	return failed ? 1 : 0;
}
