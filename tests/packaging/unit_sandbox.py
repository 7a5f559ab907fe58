"""Run an installed espd the way its systemd unit would, without systemd as PID 1.

systemd is not running here, so the unit cannot be started; what it would do to the
process is reproduced with real kernel mechanisms in a private mount and network
namespace (unshare): the installed tree is laid over the host (overlayfs, read-only, or a
chroot into a copy-on-write overlay of the root), /home, /root and /run/user are empty
(ProtectHome=yes), /tmp is private (PrivateTmp=yes), the root is read-only apart from
/run/espd and /var/lib/espd (ProtectSystem=strict with RuntimeDirectory= and
StateDirectory=), the capability bounding and ambient sets are the unit's, no_new_privs is
set, the environment is systemd's bare one and the umask the unit's. The commands run are
the unit's own ExecStartPre=, ExecStart= and ExecReload= lines, read from the installed file.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def unit_settings(unit: Path) -> dict[str, list[str]]:
    """Every KEY=VALUE of the unit, in order (a key may repeat)."""
    settings: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        found = re.match(r"([A-Za-z]+)=(.*)", line)
        if found:
            settings.setdefault(found.group(1), []).append(found.group(2))
    return settings


def unit_command(unit: Path, key: str) -> list[str]:
    values = unit_settings(unit)[key]
    assert len(values) == 1, f"{unit}: {key}= appears {len(values)} times"
    return shlex.split(values[0])


def _caps(unit: Path) -> str:
    names = unit_settings(unit)["CapabilityBoundingSet"][0].split()
    return ",".join(["-all"] + [f"+{n.removeprefix('CAP_').lower()}" for n in names])


def as_unit(unit: Path, argv: list[str]) -> str:
    """Shell words that run ``argv`` with the unit's credentials, environment and umask."""
    settings = unit_settings(unit)
    caps = _caps(unit)
    umask = settings.get("UMask", ["0022"])[0]
    return (f"setpriv --no-new-privs --bounding-set={caps} --inh-caps={caps} "
            f"--ambient-caps={caps} env -i PATH={SYSTEMD_PATH} "
            f"/bin/sh -c 'umask {umask}; exec \"$0\" \"$@\"' {shlex.join(argv)}")


# $R is the root the unit sees ("" or a chroot); $R/var/lib/espd must exist.
SANDBOX_MOUNTS = """
mount -t tmpfs -o mode=0755 tmpfs "$R/home"
mount -t tmpfs -o mode=0700 tmpfs "$R/root"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
mount -t tmpfs -o mode=0755 tmpfs "$R/run"
mkdir -m 0750 "$R/run/espd"
mount -t tmpfs -o mode=0700 tmpfs "$R/var/lib/espd"
"""


def daemon_round(unit: Path, prefix: str = "") -> str:
    """Shell that runs ExecStartPre=, --version, ExecStart= in the background until the
    control socket answers, then ExecReload= and `stats`, then SIGTERM; prints markers."""
    pre = as_unit(unit, unit_command(unit, "ExecStartPre"))
    start = unit_command(unit, "ExecStart")
    reload_ = as_unit(unit, unit_command(unit, "ExecReload"))
    espd = start[0]
    return f"""
echo "== pre"; {prefix}{pre}; echo "== pre rc=$?"
echo "== version"; {prefix}{as_unit(unit, [espd, "--version"])}
echo "== run"
{prefix}{as_unit(unit, start)} >"$LOG" 2>&1 &
daemon=$!
for i in $(seq 300); do [ -S "$R/run/espd/control.sock" ] && break; sleep 0.1; done
echo "== reload"; {prefix}{reload_}; echo "== reload rc=$?"
echo "== stats"; {prefix}{as_unit(unit, [espd, "stats"])}
kill -TERM $daemon; wait $daemon; echo "== run rc=$?"
echo "== log"; cat "$LOG"
"""


def run_script(script: str, timeout: float = 120) -> str:
    """``script`` under bash -e in fresh mount and network namespaces; its output."""
    result = subprocess.run(["unshare", "--mount", "--net", "--propagation", "private",
                             "bash", "-euo", "pipefail", "-c", script],
                            capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"sandbox script failed ({result.returncode}):\n{output}"
    return output


def section(output: str, name: str) -> str:
    """The lines printed after the "== name" marker, up to the next marker."""
    found = re.search(rf"^== {re.escape(name)}\n(.*?)(?=^== |\Z)", output, re.S | re.M)
    assert found, f"no '== {name}' in:\n{output}"
    return found.group(1)


def exposure(output: str) -> float:
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
    assert found, output
    return float(found.group(1))
