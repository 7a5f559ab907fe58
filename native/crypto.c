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

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>

#include "crypto_ipsecmb.h"
#include "espdp.h"
#include "proto.h"

/* Per packet, only the IV, the AAD and the tag reach OpenSSL. The key schedule is set up
 * once per context (OpenSSL 3.0 turns every EVP_CIPHER_CTX_ctrl and every re-init into
 * provider parameter look-ups, a tenth of the packet path); the OSSL_PARAM arrays that
 * carry the nonce and the tag are a few stores on the stack per packet, not 200 bytes
 * kept per context (issue 13: memory per SA).
 * One OpenSSL cipher context per crypto_ctx, whatever the transform: AES-CBC's IVs come
 * from the same CBC context (cbc_make_iv), not from an ECB context of their own. */
struct crypto_ctx {
	struct crypto_alg alg;
	uint8_t encrypt;
	uint8_t gcm_fast_iv; /* AES-GCM: the nonce goes in by a parameter, not a re-init */
	EVP_CIPHER_CTX *cipher; /* NULL for ENCR_NULL */
	EVP_MAC_CTX *mac; /* NULL for AEADs */
	struct imb_aead *imb; /* AEAD on libipsec-mb: its key schedule; cipher is then NULL */
	uint8_t nonce[12]; /* AEAD: salt || IV; the salt is written once */
	uint8_t chain[16]; /* AES-CBC: the cipher context's running chaining block */
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
static const uint8_t zero_block[16];

static atomic_uint backend_sel = ESPDP_CRYPTO_OPENSSL;

int crypto_backend_available(unsigned backend)
{
	return backend == ESPDP_CRYPTO_OPENSSL || (backend == ESPDP_CRYPTO_IPSECMB && imb_available());
}

int crypto_backend_set(unsigned backend)
{
	if (!crypto_backend_available(backend))
		return ESPDP_ERR_UNSUPPORTED;
	atomic_store(&backend_sel, backend);
	return ESPDP_OK;
}

unsigned crypto_backend_get(void)
{
	return atomic_load(&backend_sel);
}

const char *crypto_ipsecmb_arch(void)
{
	return imb_arch();
}

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
		alg->backend = (uint8_t)crypto_backend_get();
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

/* An octet-string parameter, as OSSL_PARAM_construct_octet_string builds it, inline. */
#define OCTETS(name, ptr, len) \
	((OSSL_PARAM){ (name), OSSL_PARAM_OCTET_STRING, (ptr), (len), OSSL_PARAM_UNMODIFIED })

/* The AEAD parameters of one message into set (3 entries): [nonce,] [tag (open),] end.
 * With gcm_fast_iv the whole nonce goes in as the "TLS fixed IV" with length -1, which
 * the GCM provider takes as the complete IV for the next message (what
 * EVP_CTRL_GCM_SET_IV_FIXED with -1 maps to); gcm_fast_iv_works() checks that against a
 * re-init before any SA relies on it. */
static void aead_params(struct crypto_ctx *ctx, uint8_t *icv, OSSL_PARAM set[3])
{
	OSSL_PARAM *p = set;

	if (ctx->gcm_fast_iv)
		*p++ = OCTETS(OSSL_CIPHER_PARAM_AEAD_TLS1_IV_FIXED, ctx->nonce, (size_t)-1);
	if (!ctx->encrypt)
		*p++ = OCTETS(OSSL_CIPHER_PARAM_AEAD_TAG, icv, 16);
	*p = (OSSL_PARAM)OSSL_PARAM_END;
}

static int gcm_fast_iv_ok = -1; /* -1: not checked yet; set once under gcm_once */
static pthread_once_t gcm_once = PTHREAD_ONCE_INIT;
static void gcm_fast_iv_check(void);

static int gcm_fast_iv_works(void)
{
	pthread_once(&gcm_once, gcm_fast_iv_check);
	return gcm_fast_iv_ok == 1;
}

static struct crypto_ctx *ctx_new(const struct crypto_alg *alg, const uint8_t *key,
				  const uint8_t *auth_key, int encrypt, int fast_iv)
{
	struct crypto_ctx *ctx = OPENSSL_zalloc(sizeof(*ctx));
	const EVP_CIPHER *cipher = cipher_for(alg);

	if (!ctx)
		return NULL;
	ctx->alg = *alg;
	ctx->encrypt = !!encrypt;
	if (alg->backend == ESPDP_CRYPTO_IPSECMB && alg->integ == ESPDP_INTEG_NONE) {
		ctx->imb = imb_aead_new(alg->cipher, key, alg->key_len - alg->salt_len);
		if (!ctx->imb)
			goto err;
		memcpy(ctx->nonce, key + alg->key_len - alg->salt_len, alg->salt_len);
		return ctx;
	}
	if (cipher) {
		ctx->cipher = EVP_CIPHER_CTX_new();
		if (!ctx->cipher || !EVP_CipherInit_ex2(ctx->cipher, cipher, key,
							alg->cipher == ESPDP_CIPHER_AES_CBC ? zero_block : NULL,
							encrypt, NULL))
			goto err;
		EVP_CIPHER_CTX_set_padding(ctx->cipher, 0); /* ESP pads itself */
		memcpy(ctx->nonce, key + alg->key_len - alg->salt_len, alg->salt_len);
	}
	ctx->gcm_fast_iv = alg->cipher == ESPDP_CIPHER_AES_GCM && fast_iv;
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

struct crypto_ctx *crypto_ctx_new(const struct crypto_alg *alg, const uint8_t *key,
				  const uint8_t *auth_key, int encrypt)
{
	return ctx_new(alg, key, auth_key, encrypt,
		       alg->cipher == ESPDP_CIPHER_AES_GCM && gcm_fast_iv_works());
}

void crypto_ctx_free(struct crypto_ctx *ctx)
{
	if (!ctx)
		return;
	EVP_CIPHER_CTX_free(ctx->cipher); /* cleanses the key schedule */
	imb_aead_free(ctx->imb); /* so does this */
	EVP_MAC_CTX_free(ctx->mac);
	OPENSSL_clear_free(ctx, sizeof(*ctx));
}

void crypto_prefetch(const struct crypto_ctx *ctx)
{
	__builtin_prefetch(ctx);
	if (ctx->cipher)
		__builtin_prefetch(ctx->cipher);
	if (ctx->imb)
		__builtin_prefetch(ctx->imb);
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

/* libipsec-mb seals straight into the ICV; opening decrypts and returns the tag, which is
 * compared here in constant time (an unverified payload never leaves crypto_open). */
static int imb_aead(struct crypto_ctx *ctx, const uint8_t *aad, size_t aad_len, uint8_t *payload,
		    size_t payload_len, uint8_t *icv)
{
	uint8_t tag[16];
	int bad;

	if (ctx->encrypt)
		return imb_aead_run(ctx->imb, 1, ctx->nonce, aad, aad_len, payload, payload_len, icv);
	bad = imb_aead_run(ctx->imb, 0, ctx->nonce, aad, aad_len, payload, payload_len, tag) ||
	      CRYPTO_memcmp(tag, icv, 16) != 0;
	OPENSSL_cleanse(tag, sizeof(tag));
	return bad ? -1 : 0;
}

static int aead(struct crypto_ctx *ctx, uint8_t *esp, size_t payload_len, uint64_t seq, int esn)
{
	EVP_CIPHER_CTX *c = ctx->cipher;
	uint8_t aad[12];
	uint8_t *iv = esp + ESP_HDR_LEN, *payload = iv + 8, *icv = payload + payload_len;
	size_t aad_len = aead_aad(esp, seq, esn, aad);
	OSSL_PARAM set[3], get[2];
	int n;

	if (payload_len > INT32_MAX)
		return -1;
	if (ctx->encrypt)
		wr64(iv, seq); /* RFC 4106 3.1: the counter is a fine unique IV */
	memcpy(ctx->nonce + 4, iv, 8);
	if (ctx->imb) /* the same nonce, AAD and in-place layout on the other backend */
		return imb_aead(ctx, aad, aad_len, payload, payload_len, icv);
	aead_params(ctx, icv, set);
	if (ctx->gcm_fast_iv ? !EVP_CIPHER_CTX_set_params(c, set) : /* nonce [+ tag] */
	    !EVP_CipherInit_ex2(c, NULL, NULL, ctx->nonce, ctx->encrypt, NULL) ||
		    (!ctx->encrypt && !EVP_CIPHER_CTX_set_params(c, set)))
		return -1;
	if (!EVP_CipherUpdate(c, NULL, &n, aad, (int)aad_len) ||
	    !EVP_CipherUpdate(c, payload, &n, payload, (int)payload_len) ||
	    EVP_CipherFinal_ex(c, payload + n, &n) <= 0)
		return -1; /* on open: the tag did not verify */
	if (ctx->encrypt) {
		get[0] = OCTETS(OSSL_CIPHER_PARAM_AEAD_TAG, icv, 16);
		get[1] = (OSSL_PARAM)OSSL_PARAM_END;
		if (!EVP_CIPHER_CTX_get_params(c, get))
			return -1;
	}
	return 0;
}

/* Checks once per process that the GCM provider takes a whole nonce by parameter: a
 * message sealed and opened that way must equal one sealed after a re-init with the
 * nonce, and a flipped tag bit must fail. Otherwise every context re-inits. */
static void gcm_fast_iv_check(void)
{
	static const uint8_t key[20] = "espd-gcm-check-key!";
	struct crypto_alg alg;
	struct crypto_ctx *fast = NULL, *slow = NULL, *open = NULL;
	uint8_t a[8 + 8 + 48 + 16], b[sizeof(a)];
	int ok = 0;

	if (crypto_alg_init(&alg, ESPDP_CIPHER_AES_GCM, 128, ESPDP_INTEG_NONE) == ESPDP_OK &&
	    (fast = ctx_new(&alg, key, NULL, 1, 1)) && (slow = ctx_new(&alg, key, NULL, 1, 0)) &&
	    (open = ctx_new(&alg, key, NULL, 0, 1))) {
		ok = 1;
		for (uint64_t seq = 1; seq <= 3 && ok; seq++) { /* a fresh nonce after each Final */
			memset(a, (int)seq, sizeof(a));
			memcpy(b, a, sizeof(a));
			ok = !aead(fast, a, 48, seq, 0) && !aead(slow, b, 48, seq, 0) &&
			     !memcmp(a, b, sizeof(a)) && !aead(open, b, 48, seq, 0) &&
			     (a[sizeof(a) - 1] ^= 1, aead(open, a, 48, seq, 0) != 0);
		}
	}
	crypto_ctx_free(fast);
	crypto_ctx_free(slow);
	crypto_ctx_free(open);
	gcm_fast_iv_ok = ok;
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

/* CBC under the IV `iv` without re-initialising the context: OpenSSL's CBC stream goes
 * on from its running chaining block (the last ciphertext block it saw, kept in
 * ctx->chain), so the first block is corrected by iv ^ chain, before encryption (the
 * cipher then sees P1 ^ iv) or after decryption (D(C1) ^ chain becomes D(C1) ^ iv).
 * A failed update leaves the stream unknown: it is restarted from a zero block. */
static int cbc(struct crypto_ctx *ctx, const uint8_t *iv, uint8_t *payload, size_t len)
{
	uint8_t last[16];
	int n;

	if (len > INT32_MAX || len % 16 || !len)
		return -1;
	memcpy(last, payload + len - 16, 16); /* opening: the next chaining block */
	if (ctx->encrypt)
		for (int i = 0; i < 16; i++)
			payload[i] ^= iv[i] ^ ctx->chain[i];
	if (!EVP_CipherUpdate(ctx->cipher, payload, &n, payload, (int)len) || n != (int)len) {
		memset(ctx->chain, 0, 16);
		(void)EVP_CipherInit_ex2(ctx->cipher, NULL, NULL, zero_block, ctx->encrypt, NULL);
		return -1;
	}
	if (!ctx->encrypt)
		for (int i = 0; i < 16; i++)
			payload[i] ^= iv[i] ^ ctx->chain[i];
	memcpy(ctx->chain, ctx->encrypt ? payload + len - 16 : last, 16);
	return 0;
}

/* IV = AES_K(seq || marker), from the sealing CBC stream itself: one block of
 * (seq || marker) ^ chain enciphers to AES_K(seq || marker), and leaves that IV as the
 * stream's chaining block, so the payload that follows is CBC under exactly this IV (cbc()
 * then corrects by iv ^ chain = 0). No second (ECB) AES context per SA. */
static int cbc_make_iv(struct crypto_ctx *ctx, uint64_t seq, uint8_t *iv)
{
	uint8_t block[16];
	int n;

	wr64(block, seq);
	memcpy(block + 8, iv_marker, 8);
	for (int i = 0; i < 16; i++)
		block[i] ^= ctx->chain[i];
	if (!EVP_CipherUpdate(ctx->cipher, iv, &n, block, 16) || n != 16) {
		memset(ctx->chain, 0, 16); /* the stream is unknown: restart it */
		(void)EVP_CipherInit_ex2(ctx->cipher, NULL, NULL, zero_block, 1, NULL);
		return -1;
	}
	memcpy(ctx->chain, iv, 16);
	return 0;
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
