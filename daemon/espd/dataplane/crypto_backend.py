"""Which library runs the data plane's AEADs (``[daemon] crypto_backend``).

AES-GCM and ChaCha20-Poly1305 run on OpenSSL or on Intel's libipsec-mb (native/
crypto_ipsecmb.c, built in when native/build.py found the library); AES-CBC, NULL and
HMAC always run on OpenSSL. The choice is process-wide and read when an SA is created:
an SA keeps its backend for life, so the daemon sets it once, before the first SA.
The config schema imports this module, so the binding loads only when a function runs.
"""

from __future__ import annotations

# the setting's values; the first is the default (docs/configuration.md says why)
CHOICES = ("openssl", "ipsec-mb", "auto")


class CryptoBackendError(Exception):
    pass


def available(name: str) -> bool:
    """Whether `name` ("openssl", "ipsec-mb" or "auto") can run here; auto always can."""
    from espd.dataplane import binding

    return name == "auto" or binding.crypto_backend_available(name)


def resolve(name: str) -> str:
    """The backend `name` stands for: auto is ipsec-mb where it can run, else openssl."""
    if name == "auto":
        return "ipsec-mb" if available("ipsec-mb") else "openssl"
    return name


def why_unavailable(name: str) -> str | None:
    """None if `name` can run here, else a sentence for the operator."""
    if name not in CHOICES:
        return f"unknown crypto backend {name!r}; use one of {', '.join(CHOICES)}"
    if available(name):
        return None
    return ("libipsec-mb is not built into this espd (install libipsec-mb-dev and rebuild), "
            "or this CPU lacks AES-NI; use \"openssl\" or \"auto\"")


def select(name: str) -> str:
    """Make `name` the backend of SAs created from now on; returns the one chosen."""
    from espd.dataplane import binding

    chosen = resolve(name)
    problem = why_unavailable(chosen)
    if problem or not binding.crypto_backend_set(chosen):
        raise CryptoBackendError(problem or f"crypto backend {chosen} refused")
    return chosen


def current() -> str:
    from espd.dataplane import binding

    return binding.crypto_backend_get()


def ipsecmb_arch() -> str:
    """The code path libipsec-mb chose for this CPU ("avx512", "avx2", "sse"), or "none"."""
    from espd.dataplane import binding

    return binding.crypto_ipsecmb_arch()


def describe() -> str:
    """For `espd stats`: e.g. "ipsec-mb (avx512)" or "openssl"."""
    name = current()
    return f"{name} ({ipsecmb_arch()})" if name == "ipsec-mb" else name
