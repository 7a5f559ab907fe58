/* crypto: ESP's cryptographic transforms, the data plane's one crypto interface.
 * crypto.c owns ESP's rules (IV = sequence number, nonce = salt || IV, AAD, ICV checks) and
 * the OpenSSL backend; an AEAD context may instead be keyed on libipsec-mb
 * (crypto_ipsecmb.c), chosen process-wide by crypto_backend_set() and fixed per SA when
 * its crypto_alg is made. The rest of the data plane never sees which backend runs.
 *
 * A crypto_ctx is keyed once (key schedule, GHASH tables, HMAC pads) and then reused for
 * every packet with only IV, AAD and tag set: no EVP fetch, no allocation and no re-init
 * per packet (AES-GCM's nonce and every AEAD tag go through OSSL_PARAM arrays built at
 * setup; CBC continues one stream, its first block corrected for the packet's IV).
 * A context is used by one thread at a time; the SA keeps one per worker.
 *
 * Buffer layout seen by seal/open, `esp` pointing at the SPI:
 *   | SPI 4 | seq 4 | IV iv_len | payload incl. padding and trailer | ICV icv_len |
 */
#ifndef ESPD_CRYPTO_H
#define ESPD_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

struct crypto_alg {
	uint8_t cipher; /* enum espdp_cipher */
	uint8_t integ; /* enum espdp_integ */
	uint8_t iv_len;
	uint8_t icv_len;
	uint8_t block; /* the payload + trailer is padded to a multiple of this */
	uint8_t salt_len; /* trailing bytes of the key that are the AEAD nonce salt */
	uint16_t key_len; /* cipher key bytes, salt included */
	uint16_t auth_key_len;
	uint8_t backend; /* enum espdp_crypto_backend; AEADs only, else always OpenSSL */
};

struct crypto_ctx;

/* The backend that crypto_alg_init gives AEADs from now on: 0, or ESPDP_ERR_UNSUPPORTED
 * (not built in, or this CPU lacks what it needs; the choice is then unchanged). */
int crypto_backend_set(unsigned backend);
unsigned crypto_backend_get(void);
int crypto_backend_available(unsigned backend);
/* Which code path libipsec-mb chose for this CPU ("avx512", ...), or "none". */
const char *crypto_ipsecmb_arch(void);
/* Fill *alg for a transform, with the current backend; 0, or a negative enum espdp_status. */
int crypto_alg_init(struct crypto_alg *alg, unsigned cipher, unsigned key_bits, unsigned integ);
/* Key a context for sealing (encrypt=1) or opening; NULL on failure (bad key, no memory). */
struct crypto_ctx *crypto_ctx_new(const struct crypto_alg *alg, const uint8_t *key,
				  const uint8_t *auth_key, int encrypt);
/* Wipe and free; NULL is allowed. */
void crypto_ctx_free(struct crypto_ctx *ctx);
/* Write the IV for `seq`, encrypt payload_len bytes after it in place and append the ICV.
 * With esn, the high 32 bits of seq are authenticated (RFC 4303 2.2.1). 0 or -1. */
int crypto_seal(struct crypto_ctx *ctx, uint8_t *esp, size_t payload_len, uint64_t seq, int esn);
/* Verify the ICV in constant time, then decrypt payload_len bytes in place.
 * Returns 0, or -1 when the ICV does not verify (the payload is then unspecified). */
int crypto_open(struct crypto_ctx *ctx, uint8_t *esp, size_t payload_len, uint64_t seq, int esn);
/* Start loading the context's memory (batch prefetch hint). */
void crypto_prefetch(const struct crypto_ctx *ctx);
/* OPENSSL_cleanse */
void crypto_wipe(void *p, size_t n);
/* Which CPU features OpenSSL's code paths use (AES-NI, VAES, PCLMUL, SHA-NI, AVX2...). */
const char *crypto_features(void);

#endif
