/* crypto_ipsecmb: AEADs on libipsec-mb (see crypto_ipsecmb.h).
 *
 * Invariants:
 *  - One IMB_MGR per process, initialised once (pthread_once) and then only read: the
 *    direct GCM and ChaCha20-Poly1305 calls used here take the key and a per-call context
 *    on the stack, never the manager's job queues, so any number of threads may share it.
 *    (Each call also stores its status into the library's one process-wide imb_errno:
 *    0 with the valid inputs given here; espd never reads it. See docs/performance.md.)
 *  - A key schedule (struct imb_aead) is written once at creation; freeing wipes it.
 *  - The per-message context on the stack (GHASH / Poly1305 state, one-time Poly1305 key)
 *    is wiped after every message (imb_clear_mem, the library's own wipe: this file does
 *    not include OpenSSL; the tag compare is crypto.c's).
 */
#include "crypto_ipsecmb.h"

#include <string.h>

#include "espdp.h"

#ifdef ESPD_HAVE_IPSECMB
#include <pthread.h>
#include <stdlib.h>

#include <intel-ipsec-mb.h>

/* The key schedule first and 64-byte aligned: the library's vector loads of it need it
 * (the header does not declare the alignment). */
struct imb_aead {
	union {
		struct gcm_key_data gcm; /* expanded AES keys and GHASH key powers */
		uint8_t chacha[32];
	} k __attribute__((aligned(64)));
	uint8_t cipher;
	uint8_t key_bytes;
};

static IMB_MGR *mgr;
static IMB_ARCH mgr_arch = IMB_ARCH_NONE;
static pthread_once_t mgr_once = PTHREAD_ONCE_INIT;

static void mgr_init(void)
{
	IMB_MGR *m = alloc_mb_mgr(0);

	if (!m)
		return;
	init_mb_mgr_auto(m, &mgr_arch);
	/* below AES-NI the library runs portable code far slower than OpenSSL's: refuse */
	if (imb_get_errno(m) || mgr_arch < IMB_ARCH_SSE) {
		free_mb_mgr(m);
		mgr_arch = IMB_ARCH_NONE;
		return;
	}
	mgr = m;
}

int imb_available(void)
{
	pthread_once(&mgr_once, mgr_init);
	return mgr != NULL;
}

const char *imb_arch(void)
{
	static const char *const names[] = {
		[IMB_ARCH_NONE] = "none", [IMB_ARCH_NOAESNI] = "noaesni", [IMB_ARCH_SSE] = "sse",
		[IMB_ARCH_AVX] = "avx", [IMB_ARCH_AVX2] = "avx2", [IMB_ARCH_AVX512] = "avx512",
	};

	if (!imb_available() || (unsigned)mgr_arch >= sizeof(names) / sizeof(names[0]))
		return "none";
	return names[mgr_arch];
}

struct imb_aead *imb_aead_new(unsigned cipher, const uint8_t *key, size_t key_bytes)
{
	struct imb_aead *k;

	if (!imb_available())
		return NULL;
	if (cipher == ESPDP_CIPHER_AES_GCM ? key_bytes != 16 && key_bytes != 24 && key_bytes != 32 :
	    cipher != ESPDP_CIPHER_CHACHA20_POLY1305 || key_bytes != 32)
		return NULL;
	if (posix_memalign((void **)&k, 64, sizeof(*k)))
		return NULL;
	memset(k, 0, sizeof(*k));
	k->cipher = (uint8_t)cipher;
	k->key_bytes = (uint8_t)key_bytes;
	if (cipher == ESPDP_CIPHER_CHACHA20_POLY1305)
		memcpy(k->k.chacha, key, 32);
	else if (key_bytes == 16)
		IMB_AES128_GCM_PRE(mgr, key, &k->k.gcm);
	else if (key_bytes == 24)
		IMB_AES192_GCM_PRE(mgr, key, &k->k.gcm);
	else
		IMB_AES256_GCM_PRE(mgr, key, &k->k.gcm);
	return k;
}

void imb_aead_free(struct imb_aead *k)
{
	if (!k)
		return;
	imb_clear_mem(k, sizeof(*k));
	free(k);
}

static void gcm(const struct imb_aead *k, int encrypt, const uint8_t *nonce, const uint8_t *aad,
		size_t aad_len, uint8_t *p, size_t len, uint8_t *tag)
{
	struct gcm_context_data c;
	const struct gcm_key_data *g = &k->k.gcm;

	switch (k->key_bytes | (encrypt ? 0x100 : 0)) {
	case 0x110: IMB_AES128_GCM_ENC(mgr, g, &c, p, p, len, nonce, aad, aad_len, tag, 16); break;
	case 0x118: IMB_AES192_GCM_ENC(mgr, g, &c, p, p, len, nonce, aad, aad_len, tag, 16); break;
	case 0x120: IMB_AES256_GCM_ENC(mgr, g, &c, p, p, len, nonce, aad, aad_len, tag, 16); break;
	case 0x010: IMB_AES128_GCM_DEC(mgr, g, &c, p, p, len, nonce, aad, aad_len, tag, 16); break;
	case 0x018: IMB_AES192_GCM_DEC(mgr, g, &c, p, p, len, nonce, aad, aad_len, tag, 16); break;
	default:    IMB_AES256_GCM_DEC(mgr, g, &c, p, p, len, nonce, aad, aad_len, tag, 16); break;
	}
	imb_clear_mem(&c, sizeof(c));
}

static void chacha(const struct imb_aead *k, int encrypt, const uint8_t *nonce, const uint8_t *aad,
		   size_t aad_len, uint8_t *p, size_t len, uint8_t *tag)
{
	struct chacha20_poly1305_context_data c;

	IMB_CHACHA20_POLY1305_INIT(mgr, k->k.chacha, &c, nonce, aad, aad_len);
	if (encrypt) {
		IMB_CHACHA20_POLY1305_ENC_UPDATE(mgr, k->k.chacha, &c, p, p, len);
		IMB_CHACHA20_POLY1305_ENC_FINALIZE(mgr, &c, tag, 16);
	} else {
		IMB_CHACHA20_POLY1305_DEC_UPDATE(mgr, k->k.chacha, &c, p, p, len);
		IMB_CHACHA20_POLY1305_DEC_FINALIZE(mgr, &c, tag, 16);
	}
	imb_clear_mem(&c, sizeof(c));
}

int imb_aead_run(struct imb_aead *k, int encrypt, const uint8_t nonce[12], const uint8_t *aad,
		 size_t aad_len, uint8_t *payload, size_t len, uint8_t tag[16])
{
	if (!len)
		return -1; /* ESP always carries at least the trailer; the library wants len > 0 */
	if (k->cipher == ESPDP_CIPHER_CHACHA20_POLY1305)
		chacha(k, encrypt, nonce, aad, aad_len, payload, len, tag);
	else
		gcm(k, encrypt, nonce, aad, aad_len, payload, len, tag);
	return 0;
}

#else /* !ESPD_HAVE_IPSECMB */

int imb_available(void)
{
	return 0;
}

const char *imb_arch(void)
{
	return "none";
}

struct imb_aead *imb_aead_new(unsigned cipher, const uint8_t *key, size_t key_bytes)
{
	(void)cipher, (void)key, (void)key_bytes;
	return NULL;
}

void imb_aead_free(struct imb_aead *k)
{
	(void)k;
}

int imb_aead_run(struct imb_aead *k, int encrypt, const uint8_t nonce[12], const uint8_t *aad,
		 size_t aad_len, uint8_t *payload, size_t len, uint8_t tag[16])
{
	(void)k, (void)encrypt, (void)nonce, (void)aad, (void)aad_len, (void)payload, (void)len,
		(void)tag;
	return -1;
}

#endif
