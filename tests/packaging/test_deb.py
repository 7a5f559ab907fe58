"""The Debian package: built as `make deb` builds it, checked by lintian, and installed
for real with `apt-get install ./espd_VERSION_ARCH.deb` into a copy-on-write overlay of
this Debian 12 machine's root (the host is never written: every change lands in a tmpfs
that goes away with the mount namespace). In that root the unit is verified and rated, is
neither enabled nor started, the unit's own commands run from /usr/lib/espd under the
unit's sandbox, and remove and purge leave what Debian's conffile rules say.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from unit_sandbox import SANDBOX_MOUNTS, daemon_round, exposure, run_script, section

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "packaging"))
import build_deb  # noqa: E402

EXPOSURE_LIMIT = 2.2  # 2.4 before PrivateMounts=yes (test_make_install.py)
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
UNIT = "/lib/systemd/system/espd.service"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dpkg and mounts need root")


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    subprocess.run(["make", "-s", "-C", str(REPO), "wheelhouse"], check=True,
                   stdout=subprocess.DEVNULL)
    out = tmp_path_factory.mktemp("deb")
    # as make deb builds it, but gzip instead of xz: 1.5 s instead of 30 on two cores
    return build_deb.build(REPO / "build/wheelhouse", out, compression="gzip")


def test_control_fields(deb: Path) -> None:
    fields = subprocess.run(["dpkg-deb", "-f", str(deb)], check=True, capture_output=True,
                            text=True).stdout
    assert f"Version: {VERSION}\n" in fields
    depends = next(line for line in fields.splitlines() if line.startswith("Depends:"))
    for package in ("libc6", "libssl3", "python3.11"):
        assert package in depends, depends
    conffiles = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], check=True,
                               capture_output=True).stdout
    assert b"./conffiles" in subprocess.run(["tar", "-t"], input=conffiles,
                                            capture_output=True, check=True).stdout


def test_lintian_has_no_findings_left(deb: Path) -> None:
    """Every finding is fixed or overridden with its reason (packaging/debian/)."""
    result = subprocess.run(["lintian", "--pedantic", "-I", str(deb)], capture_output=True,
                            text=True)
    findings = [line for line in (result.stdout + result.stderr).splitlines()
                if line[:2] in ("E:", "W:", "I:", "P:", "X:")]
    assert findings == [], "\n".join(findings)
    assert result.returncode == 0


def chroot_overlay(deb: Path) -> str:
    """A writable copy-on-write view of / at $R, with the .deb inside it."""
    return f"""
W=$(mktemp -d /dev/shm/espd-deb-test.XXXXXX)
mount -t tmpfs tmpfs "$W"
mkdir "$W/upper" "$W/work" "$W/root"
R="$W/root"
LOG=/run/espd-test.log
mount -t overlay overlay -o lowerdir=/,upperdir="$W/upper",workdir="$W/work" "$R"
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
mount --rbind /sys "$R/sys"
cp {deb} "$R/var/cache/apt/archives/{deb.name}"
ip link set lo up
in_root() {{ chroot "$R" "$@"; }}
"""


def test_apt_install_run_remove_purge(deb: Path) -> None:
    stage = deb.parent / "deb" / deb.stem  # the tree build_deb staged: its unit file
    unit = stage / UNIT.lstrip("/")
    out = run_script(chroot_overlay(deb) + f"""
echo "== apt"
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-download \\
    /var/cache/apt/archives/{deb.name} 2>&1 | tail -3
echo "== status"; in_root dpkg-query -W -f '${{Status}} ${{Version}}\\n' espd
echo "== conffiles"; in_root dpkg-query -W -f '${{Conffiles}}\\n' espd
echo "== enabled"
ls "$R/etc/systemd/system/multi-user.target.wants/" 2>/dev/null | grep espd || echo none
echo "== pyc"; find "$R/usr/lib/espd" -name '*.pyc' | wc -l
echo "== verify"; in_root systemd-analyze verify {UNIT} 2>&1; echo "== verify rc=$?"
echo "== security"; in_root systemd-analyze security --offline=yes {UNIT} 2>&1 | tail -2
mkdir -p "$R/var/lib/espd"
mount -o remount,ro "$R"
{SANDBOX_MOUNTS}
{daemon_round(unit, prefix='chroot "$R" ')}
umount "$R/var/lib/espd" "$R/run" "$R/tmp" "$R/root" "$R/home"
mount -o remount,rw "$R"
echo "== remove"; in_root env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q espd >/dev/null
ls "$R/etc/espd" "$R/usr/lib/espd" "$R{UNIT}" 2>&1 || true
echo "== purge"; in_root env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q espd >/dev/null
ls "$R/etc/espd" 2>&1 || true
in_root dpkg-query -W -f '${{Status}}\\n' espd 2>&1 || true
umount -R "$R"; umount "$W"; rmdir "$W"
""", timeout=180)
    assert section(out, "status").strip() == f"install ok installed {VERSION}", out
    assert "/etc/espd/espd.toml" in section(out, "conffiles"), out
    assert section(out, "enabled").strip() == "none", "the unit must not be enabled"
    assert int(section(out, "pyc")) > 100, "postinst byte-compiles the venv"
    assert section(out, "verify") == "", out
    assert exposure(out) <= EXPOSURE_LIMIT
    assert "OK: 0 crypto map entries" in section(out, "pre"), out
    assert section(out, "version").strip() == f"espd {VERSION}"
    assert "reloaded: 0 changes" in section(out, "reload"), out
    assert "== run rc=0" in out, out
    assert f"espd {VERSION} up: interface espd0" in section(out, "log"), out
    removed = section(out, "remove")
    assert "espd.toml" in removed, "remove keeps the conffile"
    assert "cannot access '" in removed and "/usr/lib/espd': No such file" in removed, \
        "remove takes the venv, .pyc files included"
    assert f"{UNIT}': No such file" in removed
    purged = section(out, "purge")
    assert "/etc/espd': No such file" in purged, "purge removes the conffile and /etc/espd"
    assert "no packages found" in purged or "not-installed" in purged
