"""espd TOML configs for netns tests: one IKE gateway with a pre-shared key."""

from __future__ import annotations

from pathlib import Path


def psk_gateway(name: str, tmp: Path, psk: str, local: str, peer: str, mine: str,
                theirs: str, *, daemon: str = "", ike: str = "", ike_peer: str = "",
                entry: str = "") -> str:
    """Gateway `name` (its control socket and state_dir in `tmp`, named after it) at
    `local`, one IKE peer at `peer` with `psk`, crypto map VPN 10 protecting `mine` to
    `theirs` with esp-gcm 256 under aes256gcm16-prfsha384-x25519; `daemon`, `ike`,
    `ike_peer` and `entry` are further TOML lines for those tables."""
    return f"""
[daemon]
interface = "espd0"
local = "{local}"
workers = 1
control_socket = "{tmp}/{name}.sock"
metrics = ""
state_dir = "{tmp}/{name}-state"
{daemon}

[access_list.LAN]
rules = ["permit ip {mine} {theirs}"]

[transform_set.GCM]
transforms = ["esp-gcm 256"]

[ike]
proposals = ["aes256gcm16-prfsha384-x25519"]
{ike}

[ike_peer.other]
address = "{peer}"
psk = "{psk}"
{ike_peer}

[[crypto_map]]
name = "VPN"
seq = 10
keying = "ike"
peer = "{peer}"
match_address = "LAN"
transform_sets = ["GCM"]
{entry}
"""
