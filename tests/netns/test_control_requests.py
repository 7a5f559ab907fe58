"""What a client may make a running daemon do (issue 10, items 4 and 10):

- `espd reload -c FILE` on a file with a TOML syntax error reaches the daemon (the client
  finds the socket without judging the file): the daemon refuses the reload, counts it as
  result="failure", the client exits 1 as docs/operations.md says, traffic keeps flowing;
- `plan_diff` reads only the daemon's own configuration: a path a client names (here a
  secret file that would load as TOML) is refused and never read; the daemon's own path
  (also through a symlink) is compared as before.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support import netns
from support.netns import HOST_B4

from espd.ops import control

pytestmark = pytest.mark.netns


def _espd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "espd", *args], capture_output=True,
                          text=True, timeout=60)


def test_reload_of_a_broken_file_is_judged_and_counted_by_the_daemon(make_tunnel):
    tunnel = make_tunnel()
    gw = tunnel.gw_a
    before = gw.state()["reloads"]
    good = open(gw.config).read()
    with open(gw.config, "a") as f:
        f.write("\n[daemon\nbroken = \n")  # not TOML at all
    try:
        result = _espd("reload", "-c", gw.config)
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert "reload failed; the running configuration is unchanged" in result.stdout \
            + result.stderr
        assert gw.config in result.stdout + result.stderr  # FILE:LINE from the daemon
        after = gw.state()["reloads"]
        assert after.get("failure", 0) == before.get("failure", 0) + 1
        assert netns.ping(tunnel.topo.host_a, HOST_B4, count=2, interval=0.1,
                          timeout=2).received == 2
    finally:
        with open(gw.config, "w") as f:
            f.write(good)


def test_plan_diff_reads_only_the_daemons_own_configuration(make_tunnel):
    tunnel = make_tunnel()
    gw = tunnel.gw_a
    secret = tunnel.workdir / "secret.toml"
    secret.write_text('[daemon]\nlocal = "not-an-address-SECRET-CANARY"\n')
    answer = control.request(gw.control_socket, "plan_diff", config=str(secret))
    assert answer["ok"] is False and "errors" not in answer
    assert "only its own configuration" in answer["error"]
    assert "SECRET-CANARY" not in str(answer)

    own = control.request(gw.control_socket, "plan_diff", config=gw.config)
    assert own == {"ok": True, "changes": []}
    link = tunnel.workdir / "link.toml"
    os.symlink(gw.config, link)
    assert control.request(gw.control_socket, "plan_diff", config=str(link))["ok"] is True
