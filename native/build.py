"""cffi builder for espd's data plane: reads espdp.h as the cdef, compiles native/*.c.

Environment: ESPD_SANITIZE=1 builds with AddressSanitizer and UBSan (make test-asan);
ESPD_CFLAGS adds compiler flags.
"""

from __future__ import annotations

import os
import shlex
import subprocess
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


def _flags() -> tuple[list[str], list[str]]:
    cflags = ["-std=gnu11", "-O2", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter",
              "-fvisibility=hidden", "-D_GNU_SOURCE"]
    ldflags = _pkg_config("--libs") or ["-lcrypto"]
    cflags += _pkg_config("--cflags") or []
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
