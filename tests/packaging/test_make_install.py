"""`make install DESTDIR=...` into a scratch root, checked the way an operator would use it.

The installed unit passes `systemd-analyze verify`, its offline security exposure stays at
or below the 2.4 the unit had before `make install` existed, and the unit's own commands
(ExecStartPre=, ExecStart=, ExecReload=) run from the installed venv under the unit's
sandbox (unit_sandbox.py). `make uninstall` leaves exactly what was there before.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
from unit_sandbox import SANDBOX_MOUNTS, daemon_round, exposure, run_script, section

REPO = Path(__file__).resolve().parents[2]
# systemd-analyze security --offline=yes, systemd 252: 2.4 before make install existed,
# 2.2 since PrivateMounts=yes; the limit keeps it there
EXPOSURE_LIMIT = 2.2
PREFIX = "/usr/local"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="installs need root (chown, mounts)")


def make(*args: str) -> None:
    subprocess.run(["make", "-s", "-C", str(REPO), *args], check=True,
                   stdout=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def destdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("destdir")
    make("install", f"DESTDIR={root}")
    return root


def tree(root: Path) -> dict[str, str]:
    """Every file and link under ``root``: relative path -> content hash or link target."""
    out = {}
    for path in root.rglob("*"):
        name = str(path.relative_to(root))
        if path.is_symlink():
            out[name] = "-> " + os.readlink(path)
        elif path.is_file():
            out[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_layout(destdir: Path) -> None:
    venv = destdir / "usr/local/lib/espd"
    assert os.readlink(destdir / "usr/local/bin/espd") == "../lib/espd/bin/espd"
    for name in ("python", "python3", "python3.11"):  # relative, to Debian's interpreter
        target = f"{PREFIX}/lib/espd/bin/{name}"
        while target.startswith(f"{PREFIX}/lib/espd/"):
            link = os.readlink(destdir / target.lstrip("/"))
            assert not os.path.isabs(link), f"{target} -> {link}"
            target = os.path.normpath(os.path.join(os.path.dirname(target), link))
        assert target == os.path.realpath("/usr/bin/python3") == "/usr/bin/python3.11"
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "home = /usr/bin\n" in cfg and "include-system-site-packages = false" in cfg
    assert (venv / "bin/espd").read_text().startswith(f"#!{PREFIX}/lib/espd/bin/python\n")
    assert sorted(p.name for p in (venv / "bin").iterdir()) == [
        "espd", "python", "python3", "python3.11"]
    for page in ("man8/espd.8.gz", "man5/espd.toml.5.gz"):
        assert (destdir / "usr/local/share/man" / page).is_file(), page
    assert (destdir / "usr/local/share/bash-completion/completions/espd").is_file()
    assert (destdir / "usr/local/lib/systemd/system/espd.service").is_file()
    config = destdir / "etc/espd/espd.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o750
    assert config.read_bytes() == (REPO / "packaging/espd.toml").read_bytes()
    native = list(venv.glob("lib/python3*/site-packages/espd/_native*.so"))
    assert len(native) == 1, "the C data plane must be in the venv"


def test_nothing_names_the_staging_root(destdir: Path) -> None:
    staged = str(destdir).encode()
    named = [str(p) for p in destdir.rglob("*") if p.is_file() and not p.is_symlink()
             and staged in p.read_bytes()]
    assert named == []
    links = [str(p) for p in destdir.rglob("*") if p.is_symlink()
             and str(destdir) in os.readlink(p)]
    assert links == []
    # byte-compiled at install time (ProtectSystem=strict forbids it later), with the
    # target's source paths
    pyc = next(destdir.glob("usr/local/lib/espd/lib/python3*/site-packages/espd/"
                            "__pycache__/__init__.cpython-*.pyc"))
    code = marshal.loads(pyc.read_bytes()[16:])
    assert code.co_filename.startswith(f"{PREFIX}/lib/espd/lib/python3")


def overlay(destdir: Path) -> str:
    return f"""
R=""
LOG=/run/espd-test.log
mount -t overlay overlay -o ro,lowerdir={destdir}/usr:/usr /usr
mount -t overlay overlay -o ro,lowerdir={destdir}/etc:/etc /etc
mount --bind / / && mount -o remount,bind,ro /
mount -t tmpfs -o mode=0755 tmpfs /var/lib && mkdir /var/lib/espd  # hides the host's
ip link set lo up
""" + SANDBOX_MOUNTS


def test_unit_verifies_with_no_more_exposure(destdir: Path) -> None:
    unit = f"{PREFIX}/lib/systemd/system/espd.service"
    out = run_script(overlay(destdir) + f"""
echo "== verify"; systemd-analyze verify {unit} 2>&1; echo "== verify rc=$?"
echo "== security"; systemd-analyze security --offline=yes {unit} 2>&1 | tail -3
""")
    assert section(out, "verify") == "", out
    assert "== verify rc=0" in out
    measured = exposure(out)
    print(f"exposure of the installed unit: {measured} (limit {EXPOSURE_LIMIT}, 2.4 before)")
    assert measured <= EXPOSURE_LIMIT


def test_the_unit_commands_run_from_the_install(destdir: Path) -> None:
    unit = destdir / "usr/local/lib/systemd/system/espd.service"
    out = run_script(overlay(destdir) + daemon_round(unit))
    assert "OK: 0 crypto map entries" in section(out, "pre"), out
    assert "== pre rc=0" in out
    assert section(out, "version").strip() == f"espd {VERSION}"
    assert "reloaded: 0 changes" in section(out, "reload"), out
    assert f"espd {VERSION}, up" in section(out, "stats"), out
    assert "== run rc=0" in out, out
    log = section(out, "log")
    assert f"espd {VERSION} up: interface espd0" in log, out
    assert "cannot turn off core dumps" not in log


IKE_CONFIG = """
[daemon]
local = "192.0.2.1"
metrics = ""

[access_list.LAN]
rules = ["permit ip 10.1.0.0/16 10.2.0.0/16"]

[transform_set.GCM]
transforms = ["esp-gcm 256"]

[ike_peer.b]
address = "192.0.2.2"
psk = "sandbox-test-key-0123456789"

[[crypto_map]]
name = "VPN"
seq = 10
keying = "ike"
peer = "192.0.2.2"
match_address = "LAN"
transform_sets = ["GCM"]
start = "manual"
"""


def test_the_unit_can_run_ike(destdir: Path) -> None:
    """An IKE-keyed config under the unit: UDP 500 is a privileged port, so the unit's
    capabilities must include CAP_NET_BIND_SERVICE (they once did not: bind refused)."""
    unit = destdir / "usr/local/lib/systemd/system/espd.service"
    config = f"""
mount -t tmpfs -o mode=0755 tmpfs /etc/espd
cat >/etc/espd/espd.toml <<'TOML'
{IKE_CONFIG}
TOML
chmod 600 /etc/espd/espd.toml
ip link add wan0 type veth peer name wan1 && ip addr add 192.0.2.1/24 dev wan0
ip link set wan1 up && ip link set wan0 up
"""
    out = run_script(overlay(destdir) + config + daemon_round(unit))
    assert "== pre rc=0" in out, out
    assert "== run rc=0" in out, out
    log = section(out, "log")
    assert "IKE: 1 crypto map entries keyed by IKEv2, 1 peers" in log, out
    assert "Permission denied" not in log, out
    assert "sandbox-test-key" not in out


def test_uninstall_removes_only_what_install_put_there(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/other-tool").write_text("#!/bin/sh\n")
    (root / "etc/espd").mkdir(parents=True)
    (root / "etc/espd/in.key").write_text("00" * 36)
    before = tree(root)
    make("install", f"DESTDIR={root}")
    config = root / "etc/espd/espd.toml"
    config.write_text(config.read_text() + "# the operator's edit\n")
    edited = config.read_bytes()
    make("install", f"DESTDIR={root}")  # again, over the first: the edit stays
    assert config.read_bytes() == edited
    make("uninstall", f"DESTDIR={root}")
    after = tree(root)
    assert after.pop("etc/espd/espd.toml") == hashlib.sha256(edited).hexdigest()
    assert after == before
    assert not (root / "usr/local/lib/espd").exists()
    assert sorted(p.name for p in (root / "usr/local").iterdir()) == ["bin"]
