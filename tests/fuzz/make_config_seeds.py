"""Write the seed corpora of fuzz_config.py and fuzz_ios.py from the example configs.

Full-line comments are dropped (shorter seeds mutate faster) and every key is replaced by
the canary of _oracle.py cut to the same length, so a message that leaks a key is caught
by the canary check too. Usage: python tests/fuzz/make_config_seeds.py (from anywhere).
"""

import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CANARY = "c0ffee00" * 8 * 2  # long enough for a 128-digit HMAC-SHA512 key

SOURCES = {
    "config": ["config/espd.example.toml", "config/demo/gateway-a.toml",
               "config/demo/gateway-b.toml"],
    "ios": ["config/router.example.ios", "config/goss-c2-2513.ios", "config/goss-e4-2513.ios",
            "config/goss-e4-2513-manual.ios",
            "config/demo/gateway-a.ios", "config/seed/dt3-45a-fragments.ios"],
}
SMALL_IOS = """\
access-list 110 permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255
crypto ipsec transform-set GCM esp-gcm 128
 mode tunnel
crypto map m 10 ipsec-manual
 set peer 198.51.100.1
 set transform-set GCM
 match address 110
 set session-key inbound esp 4352 cipher {k1}
 set session-key outbound esp 4608 cipher {k2}
interface eth0
 ip address 192.0.2.1 255.255.255.0
 crypto map m
""".format(k1=CANARY[:40], k2="c0ffee01" + CANARY[8:40])
# SMALL_IOS as typed into "configure terminal": unindented, abbreviated, with a banner
_TYPED = (("crypto ipsec transform-set", "cry ipsec trans"), ("crypto map", "cry map"),
          ("ipsec-manual", "ipsec-m"), ("set peer", "set pe"), ("set transform-set", "set trans"),
          ("match address", "mat add"), ("inbound", "inb"), ("cipher", "ciph"),
          ("interface", "int"), ("ip address", "ip add"), ("permit", "perm"))
PASTED_IOS = "conf t\nbanner motd ^C\ninterface text ^C\n" + "".join(
    line.strip() + "\n" for line in SMALL_IOS.splitlines()) + "end\n"
for _whole, _short in _TYPED:
    PASTED_IOS = PASTED_IOS.replace(_whole, _short)
SMALL_TOML = """\
[daemon]
local = "192.0.2.1"
[access_list.A]
rules = ["permit ip 10.1.0.0/16 10.2.0.0/16"]
[transform_set.T]
transforms = ["esp-gcm 128"]
[[crypto_map]]
name = "m"
seq = 10
peer = "198.51.100.1"
match_address = "A"
transform_set = "T"
inbound = {{ spi = 0x1000, key = "{k1}" }}
outbound = {{ spi = 0x2000, key = "{k2}" }}
""".format(k1=CANARY[:40], k2="c0ffee01" + CANARY[8:40])
INCLUDE_TOML = """\
include_ios = ["inc.ios"]
[daemon]
local = "192.0.2.1"
"""
KEYFILE_TOML = SMALL_TOML.replace(f'key = "{CANARY[:40]}" }}', 'key_file = "in.key" }').replace(
    f'key = "c0ffee01{CANARY[8:40]}" }}', 'key_file = "out.key" }')

_KEY = re.compile(r"""((?:key\s*=\s*["'])|(?:cipher|authenticator)\s+)([0-9A-Fa-f]{16,})""")


def key(i: int, digits: int) -> str:
    """Key number i: the canary with its first 8 digits made unique (no two SAs share one)."""
    return (f"c0ffee{i:02x}" + CANARY[8:])[:digits]


def canaried(text: str) -> str:
    count = iter(range(1, 256))
    return _KEY.sub(lambda m: m.group(1) + key(next(count), len(m.group(2))), text)


def strip_comments(text: str, kind: str) -> str:
    mark = "!" if kind == "ios" else "#"
    return "".join(line for line in text.splitlines(True) if not line.lstrip().startswith(mark))


def main() -> None:
    for kind, paths in SOURCES.items():
        out = os.path.join(HERE, "corpus", kind)
        os.makedirs(out, exist_ok=True)
        for rel in paths:
            with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
                text = canaried(strip_comments(f.read(), kind))
            name = rel.replace("config/", "").replace("/", "-")
            with open(os.path.join(out, name), "w", encoding="utf-8") as f:
                f.write(text)
    extra = {("ios", "small.ios"): SMALL_IOS, ("ios", "pasted.ios"): PASTED_IOS,
             ("config", "small.toml"): SMALL_TOML,
             ("config", "include.toml"): INCLUDE_TOML, ("config", "key-file.toml"): KEYFILE_TOML}
    for (kind, name), text in extra.items():
        with open(os.path.join(HERE, "corpus", kind, name), "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
