"""cffi builder for espd's data plane: reads espdp.h as the cdef, compiles native/*.c.

Environment: ESPD_SANITIZE=1 builds with AddressSanitizer and UBSan (make test-asan);
ESPD_CFLAGS adds compiler flags; ESPD_IPSECMB=0 leaves libipsec-mb out even when found
(by default it is built in when a test program including <intel-ipsec-mb.h> links with
-lIPSec_MB; without it the AEADs run on OpenSSL only, crypto_ipsecmb.c is a stub).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path

from cffi import FFI

NATIVE = Path(__file__).resolve().parent


def _cdef() -> str:
    # espdp.h is cdef-clean apart from its include lines.
    lines = (NATIVE / "espdp.h").read_text().splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def _pkg_config(*args: str) -> list[str] | None:
    try:
        out = subprocess.run(
            ["pkg-config", *args, "libcrypto"], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return shlex.split(out)


def ipsecmb_flags() -> tuple[list[str], list[str]]:
    """(cflags, ldflags) that build libipsec-mb in, or two empty lists if it is not found
    (or ESPD_IPSECMB=0). tests/native and tests/bench use this too."""
    if os.environ.get("ESPD_IPSECMB") == "0":
        return [], []
    cc = os.environ.get("CC", "cc")
    probe = ("#include <intel-ipsec-mb.h>\n"
             "int main(void) { IMB_MGR *m = alloc_mb_mgr(0); free_mb_mgr(m); return 0; }\n")
    try:
        with tempfile.TemporaryDirectory() as d:
            ok = subprocess.run([cc, "-x", "c", "-", "-o", os.path.join(d, "probe"),
                                 "-lIPSec_MB"], input=probe, capture_output=True,
                                text=True).returncode == 0
    except OSError:
        ok = False
    return (["-DESPD_HAVE_IPSECMB"], ["-lIPSec_MB"]) if ok else ([], [])


def _flags() -> tuple[list[str], list[str]]:
    cflags = ["-std=gnu11", "-O2", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter",
              "-fvisibility=hidden", "-D_GNU_SOURCE"]
    ldflags = _pkg_config("--libs") or ["-lcrypto"]
    cflags += _pkg_config("--cflags") or []
    imb_cflags, imb_ldflags = ipsecmb_flags()
    cflags += imb_cflags
    ldflags += imb_ldflags
    if os.environ.get("ESPD_SANITIZE") == "1":
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1"]
        cflags += san
        ldflags += san
    cflags += shlex.split(os.environ.get("ESPD_CFLAGS", ""))
    return cflags, ldflags


ffibuilder = FFI()
ffibuilder.cdef(_cdef())
_cflags, _ldflags = _flags()
ffibuilder.set_source(
    "espd._native",
    '#include "espdp.h"\n#include "drops.h"\n',
    sources=sorted(str(p.relative_to(NATIVE.parent)) for p in NATIVE.glob("*.c")),
    include_dirs=[str(NATIVE)],
    extra_compile_args=_cflags,
    extra_link_args=_ldflags,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
