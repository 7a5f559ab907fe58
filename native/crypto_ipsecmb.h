/* crypto_ipsecmb: the AEAD transforms (AES-GCM 128/192/256, ChaCha20-Poly1305) on Intel's
 * libipsec-mb direct API; crypto.c is its only caller and keeps everything ESP-specific
 * (the nonce salt || IV, the IV = sequence number, the AAD): this file only encrypts and
 * authenticates what it is given.
 *
 * Built in when native/build.py finds the library (ESPD_HAVE_IPSECMB); otherwise every
 * function here says "not available" and crypto.c never keys a context with it.
 */
#ifndef ESPD_CRYPTO_IPSECMB_H
#define ESPD_CRYPTO_IPSECMB_H

#include <stddef.h>
#include <stdint.h>

struct imb_aead;

/* 1 if the library is built in and its manager initialised for this CPU. */
int imb_available(void);
/* The code path the library chose for this CPU ("avx512", "avx2", ...) or "none". */
const char *imb_arch(void);
/* Key schedule for cipher (enum espdp_cipher) with key_bytes of key (salt excluded);
 * NULL if not available, not an AEAD it does, or no memory. */
struct imb_aead *imb_aead_new(unsigned cipher, const uint8_t *key, size_t key_bytes);
/* Wipe the key schedule and free; NULL is allowed. */
void imb_aead_free(struct imb_aead *k);
/* One message in place: nonce 12 bytes, aad, payload of len > 0 bytes; the 16-byte tag
 * of the message is written to tag, when sealing and when opening (the caller compares:
 * opening decrypts first, so on a mismatch the payload is unspecified). 0, or -1. */
int imb_aead_run(struct imb_aead *k, int encrypt, const uint8_t nonce[12], const uint8_t *aad,
		 size_t aad_len, uint8_t *payload, size_t len, uint8_t tag[16]);

#endif
