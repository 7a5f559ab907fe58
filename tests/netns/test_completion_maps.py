"""The bash completion asks a running daemon for its crypto map names (keygen --map)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMPLETION = REPO / "contrib/bash-completion/espd"


def test_keygen_map_names_come_from_the_running_daemon(make_tunnel):
    tunnel = make_tunnel()
    bindir = Path(sys.executable).parent
    # the completion asks the default socket; in a private mount namespace that is this
    # test's daemon (the host's /run is not touched)
    script = f"""
mount -t tmpfs tmpfs /run && mkdir /run/espd || exit 1
ln -s {shlex.quote(tunnel.gw_a.control_socket)} /run/espd/control.sock
export PATH={shlex.quote(str(bindir))}:$PATH
source {shlex.quote(str(COMPLETION))}
COMP_WORDS=(espd keygen --map ""); COMP_CWORD=3; _espd; printf "%s\\n" "${{COMPREPLY[@]}}"
COMP_WORDS=(espd keygen --map x); COMP_CWORD=3; _espd; printf "x:%s\\n" "${{COMPREPLY[@]}}"
"""
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "--norc",
                          "-c", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    # the demo gateways have two entries (IPv4, IPv6) of one map, "demo": offered once
    assert out.stdout.splitlines() == ["demo", "x:"], out.stdout
