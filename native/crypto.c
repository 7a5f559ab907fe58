/* crypto: seal and open ESP payloads with OpenSSL (see crypto.h for the layout).
 *
 *   AEAD (RFC 4106 AES-GCM, RFC 7634 ChaCha20-Poly1305):
 *     nonce = salt(4) || IV(8), IV = the 64-bit sequence number (unique per key);
 *     AAD = SPI || seq (or SPI || seq_hi || seq_lo with ESN); ICV = 16-byte tag.
 *   AES-CBC + HMAC (RFC 3602, 2404, 4868), ENCR_NULL + HMAC (RFC 4303):
 *     IV = AES_K(seq || "espd-iv")  (NIST SP 800-38A appendix C: unpredictable, unique);
 *     ICV = HMAC(SPI || seq || IV || ciphertext [|| seq_hi with ESN]), truncated;
 *     verified in constant time before anything is decrypted.
 */
#include "crypto.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>

#include "espdp.h"
#include "proto.h"

struct crypto_ctx {
	struct crypto_alg alg;
	int encrypt;
	EVP_CIPHER_CTX *cipher; /* NULL for ENCR_NULL */
	EVP_MAC_CTX *mac; /* NULL for AEADs */
	uint8_t salt[4];
};

struct integ_desc {
	const char *digest;
	uint8_t icv_len;
	uint8_t key_len;
};

static const struct integ_desc integs[] = {
	[ESPDP_INTEG_NONE] = { NULL, 0, 0 },
	[ESPDP_INTEG_HMAC_SHA1_96] = { "SHA1", 12, 20 },
	[ESPDP_INTEG_HMAC_SHA256_128] = { "SHA256", 16, 32 },
	[ESPDP_INTEG_HMAC_SHA384_192] = { "SHA384", 24, 48 },
	[ESPDP_INTEG_HMAC_SHA512_256] = { "SHA512", 32, 64 },
};

static const uint8_t iv_marker[8] = { 'e', 's', 'p', 'd', '-', 'i', 'v', 0 };

int crypto_alg_init(struct crypto_alg *alg, unsigned cipher, unsigned key_bits, unsigned integ)
{
	memset(alg, 0, sizeof(*alg));
	if (integ >= sizeof(integs) / sizeof(integs[0]))
		return ESPDP_ERR_INVALID;
	alg->cipher = (uint8_t)cipher;
	alg->integ = (uint8_t)integ;
	switch (cipher) {
	case ESPDP_CIPHER_AES_GCM:
	case ESPDP_CIPHER_CHACHA20_POLY1305:
		if (integ != ESPDP_INTEG_NONE)
			return ESPDP_ERR_INVALID; /* an AEAD carries its own integrity */
		if (cipher == ESPDP_CIPHER_CHACHA20_POLY1305 ? key_bits != 256 :
		    key_bits != 128 && key_bits != 192 && key_bits != 256)
			return ESPDP_ERR_INVALID;
		alg->iv_len = 8;
		alg->icv_len = 16;
		alg->block = 4;
		alg->salt_len = 4;
		alg->key_len = (uint16_t)(key_bits / 8 + 4);
		return ESPDP_OK;
	case ESPDP_CIPHER_AES_CBC:
		if (key_bits != 128 && key_bits != 192 && key_bits != 256)
			return ESPDP_ERR_INVALID;
		alg->iv_len = 16;
		alg->block = 16;
		alg->key_len = (uint16_t)(key_bits / 8);
		break;
	case ESPDP_CIPHER_NULL:
		if (key_bits != 0)
			return ESPDP_ERR_INVALID;
		alg->block = 4;
		break;
	default:
		return ESPDP_ERR_INVALID;
	}
	if (integ == ESPDP_INTEG_NONE)
		return ESPDP_ERR_INVALID; /* RFC 8221: no cipher without integrity */
	alg->icv_len = integs[integ].icv_len;
	alg->auth_key_len = integs[integ].key_len;
	return ESPDP_OK;
}

static const EVP_CIPHER *cipher_for(const struct crypto_alg *alg)
{
	unsigned bits = (alg->key_len - alg->salt_len) * 8u;

	switch (alg->cipher) {
	case ESPDP_CIPHER_AES_GCM:
		return bits == 128 ? EVP_aes_128_gcm() : bits == 192 ? EVP_aes_192_gcm() : EVP_aes_256_gcm();
	case ESPDP_CIPHER_CHACHA20_POLY1305:
		return EVP_chacha20_poly1305();
	case ESPDP_CIPHER_AES_CBC:
		return bits == 128 ? EVP_aes_128_cbc() : bits == 192 ? EVP_aes_192_cbc() : EVP_aes_256_cbc();
	default:
		return NULL;
	}
}

static EVP_MAC_CTX *mac_new(const struct crypto_alg *alg, const uint8_t *auth_key)
{
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
	OSSL_PARAM params[2];

	EVP_MAC_free(mac); /* the context keeps its own reference */
	if (!ctx)
		return NULL;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
						     (char *)integs[alg->integ].digest, 0);
	params[1] = OSSL_PARAM_construct_end();
	if (!EVP_MAC_init(ctx, auth_key, alg->auth_key_len, params)) {
		EVP_MAC_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

struct crypto_ctx *crypto_ctx_new(const struct crypto_alg *alg, const uint8_t *key,
				  const uint8_t *auth_key, int encrypt)
{
	struct crypto_ctx *ctx = OPENSSL_zalloc(sizeof(*ctx));
	const EVP_CIPHER *cipher = cipher_for(alg);

	if (!ctx)
		return NULL;
	ctx->alg = *alg;
	ctx->encrypt = encrypt;
	if (cipher) {
		ctx->cipher = EVP_CIPHER_CTX_new();
		if (!ctx->cipher || !EVP_CipherInit_ex2(ctx->cipher, cipher, key, NULL, encrypt, NULL))
			goto err;
		EVP_CIPHER_CTX_set_padding(ctx->cipher, 0); /* ESP pads itself */
		memcpy(ctx->salt, key + alg->key_len - alg->salt_len, alg->salt_len);
	}
	if (alg->integ != ESPDP_INTEG_NONE) {
		ctx->mac = mac_new(alg, auth_key);
		if (!ctx->mac)
			goto err;
	}
	return ctx;
err:
	crypto_ctx_free(ctx);
	return NULL;
}

void crypto_ctx_free(struct crypto_ctx *ctx)
{
	if (!ctx)
		return;
	EVP_CIPHER_CTX_free(ctx->cipher); /* cleanses the key schedule */
	EVP_MAC_CTX_free(ctx->mac);
	OPENSSL_clear_free(ctx, sizeof(*ctx));
}

void crypto_prefetch(const struct crypto_ctx *ctx)
{
	__builtin_prefetch(ctx);
	if (ctx->cipher)
		__builtin_prefetch(ctx->cipher);
}

void crypto_wipe(void *p, size_t n)
{
	OPENSSL_cleanse(p, n);
}

/* AAD of an AEAD: SPI || seq_lo, or SPI || seq_hi || seq_lo with ESN. Returns its length. */
static size_t aead_aad(const uint8_t *esp, uint64_t seq, int esn, uint8_t aad[12])
{
	memcpy(aad, esp, 4);
	if (!esn) {
		memcpy(aad + 4, esp + 4, 4);
		return 8;
	}
	wr64(aad + 4, seq);
	return 12;
}

static int aead(struct crypto_ctx *ctx, uint8_t *esp, size_t payload_len, uint64_t seq, int esn)
{
	EVP_CIPHER_CTX *c = ctx->cipher;
	uint8_t nonce[12], aad[12];
	uint8_t *iv = esp + ESP_HDR_LEN, *payload = iv + 8, *icv = payload + payload_len;
	size_t aad_len = aead_aad(esp, seq, esn, aad);
	int n;

	if (payload_len > INT32_MAX)
		return -1;
	if (ctx->encrypt)
		wr64(iv, seq); /* RFC 4106 3.1: the counter is a fine unique IV */
	memcpy(nonce, ctx->salt, 4);
	memcpy(nonce + 4, iv, 8);
	if (!EVP_CipherInit_ex2(c, NULL, NULL, nonce, ctx->encrypt, NULL))
		return -1;
	if (!ctx->encrypt && !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, 16, icv))
		return -1;
	if (!EVP_CipherUpdate(c, NULL, &n, aad, (int)aad_len) ||
	    !EVP_CipherUpdate(c, payload, &n, payload, (int)payload_len) ||
	    EVP_CipherFinal_ex(c, payload + n, &n) <= 0)
		return -1; /* on open: the tag did not verify */
	if (ctx->encrypt && !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 16, icv))
		return -1;
	return 0;
}

/* ICV of a non-AEAD transform over esp[0 .. auth_len) (+ seq_hi with ESN). */
static int hmac_icv(struct crypto_ctx *ctx, const uint8_t *esp, size_t auth_len, uint64_t seq,
		    int esn, uint8_t out[64])
{
	uint8_t seq_hi[4];
	size_t n;

	wr32(seq_hi, (uint32_t)(seq >> 32));
	if (!EVP_MAC_init(ctx->mac, NULL, 0, NULL) || /* same key, fresh state */
	    !EVP_MAC_update(ctx->mac, esp, auth_len) ||
	    (esn && !EVP_MAC_update(ctx->mac, seq_hi, 4)) ||
	    !EVP_MAC_final(ctx->mac, out, &n, 64))
		return -1;
	return 0;
}

static int cbc(struct crypto_ctx *ctx, uint8_t *iv, uint8_t *payload, size_t len)
{
	int n;

	if (len > INT32_MAX || len % 16)
		return -1;
	return EVP_CipherInit_ex2(ctx->cipher, NULL, NULL, iv, ctx->encrypt, NULL) &&
			       EVP_CipherUpdate(ctx->cipher, payload, &n, payload, (int)len) ?
		       0 : -1;
}

/* IV = AES_K(seq || marker): one CBC block under a zero IV is one ECB block. */
static int cbc_make_iv(struct crypto_ctx *ctx, uint64_t seq, uint8_t *iv)
{
	static const uint8_t zero[16];
	int n;

	wr64(iv, seq);
	memcpy(iv + 8, iv_marker, 8);
	return EVP_CipherInit_ex2(ctx->cipher, NULL, NULL, zero, 1, NULL) &&
			       EVP_CipherUpdate(ctx->cipher, iv, &n, iv, 16) ?
		       0 : -1;
}

int crypto_seal(struct crypto_ctx *ctx, uint8_t *esp, size_t payload_len, uint64_t seq, int esn)
{
	uint8_t *iv = esp + ESP_HDR_LEN, *payload = iv + ctx->alg.iv_len;
	uint8_t mac[64];
	size_t auth_len = ESP_HDR_LEN + ctx->alg.iv_len + payload_len;

	if (ctx->alg.integ == ESPDP_INTEG_NONE)
		return aead(ctx, esp, payload_len, seq, esn);
	if (ctx->cipher && (cbc_make_iv(ctx, seq, iv) || cbc(ctx, iv, payload, payload_len)))
		return -1;
	if (hmac_icv(ctx, esp, auth_len, seq, esn, mac))
		return -1;
	memcpy(esp + auth_len, mac, ctx->alg.icv_len);
	return 0;
}

int crypto_open(struct crypto_ctx *ctx, uint8_t *esp, size_t payload_len, uint64_t seq, int esn)
{
	uint8_t *iv = esp + ESP_HDR_LEN, *payload = iv + ctx->alg.iv_len;
	uint8_t mac[64];
	size_t auth_len = ESP_HDR_LEN + ctx->alg.iv_len + payload_len;

	if (ctx->alg.integ == ESPDP_INTEG_NONE)
		return aead(ctx, esp, payload_len, seq, esn);
	if (hmac_icv(ctx, esp, auth_len, seq, esn, mac) ||
	    CRYPTO_memcmp(mac, esp + auth_len, ctx->alg.icv_len) != 0)
		return -1;
	if (ctx->cipher && cbc(ctx, iv, payload, payload_len))
		return -1;
	return 0;
}

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

const char *crypto_features(void)
{
	static char buf[128];
	unsigned a, b, c, d, b7 = 0, c7 = 0;

	if (!__get_cpuid(1, &a, &b, &c, &d))
		return "unknown";
	if (__get_cpuid_max(0, NULL) >= 7)
		__cpuid_count(7, 0, a, b7, c7, d);
	snprintf(buf, sizeof(buf), "%s%s%s%s%s%s%s", c & bit_AES ? "aes-ni " : "",
		 c & bit_PCLMUL ? "pclmulqdq " : "", b7 & bit_AVX2 ? "avx2 " : "",
		 b7 & bit_AVX512F ? "avx512f " : "", c7 & (1u << 9) ? "vaes " : "",
		 c7 & (1u << 10) ? "vpclmulqdq " : "", b7 & bit_SHA ? "sha-ni" : "");
	return buf[0] ? buf : "none";
}
#else
const char *crypto_features(void)
{
	return "not x86";
}
#endif
