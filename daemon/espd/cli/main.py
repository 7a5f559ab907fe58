"""The ``espd`` command: run the daemon, check configs, talk to a running daemon, make keys.

Exit status: 0 success; 1 the config or the request failed; 2 the daemon cannot be
reached (or the command line is wrong).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import secrets
import sys
from pathlib import Path

from espd import __version__
from espd.config.load import load
from espd.config.model import SPI_MAX, SPI_MIN, Config, ConfigError
from espd.config.read import MAX_CONFIG_BYTES
from espd.config.transforms import Transform, TransformError, parse_transform
from espd.ops.control import DEFAULT_SOCKET, ControlError, request
from espd.service import state_dir

RELOAD_TIMEOUT = 60.0  # seconds: a reload rebuilds every table


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except ControlError as e:
        print(f"espd: {e}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="espd", description=(
        "Userspace IPsec ESP data plane: run the daemon, check its configuration, and "
        "look at or reload a running daemon."))
    parser.add_argument("--version", action="version", version=f"espd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    client = argparse.ArgumentParser(add_help=False)
    where = client.add_mutually_exclusive_group()
    where.add_argument("-c", "--config", metavar="FILE",
                       help="find the daemon through this config's control_socket")
    where.add_argument("--socket", metavar="PATH",
                       help=f"the daemon's control socket (default {DEFAULT_SOCKET})")

    run = commands.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("-c", "--config", metavar="FILE", required=True)
    run.set_defaults(func=_run)

    check = commands.add_parser("check", help="validate a config; show what a reload would do")
    check.add_argument("-c", "--config", metavar="FILE", required=True)
    check.add_argument("--socket", metavar="PATH",
                       help="compare with the daemon at this socket instead of the config's")
    check.set_defaults(func=_check)

    show = commands.add_parser("show", help="show the running daemon's SAs, maps or ACLs")
    what = show.add_subparsers(dest="what", required=True, metavar="WHAT")
    show_sa = what.add_parser("sa", parents=[client], help="show crypto ipsec sa")
    show_sa.add_argument("--json", action="store_true", help="the SAs as a JSON list")
    show_sa.set_defaults(func=_show_sa)
    show_ike = what.add_parser("ike", parents=[client],
                               help="show crypto ikev2 sa | show crypto ikev2 proposal")
    show_ike.add_argument("target", choices=["sa", "proposal"],
                          help="sa: the IKE SAs; proposal: the configured IKE proposals")
    show_ike.add_argument("--detail", action="store_true",
                          help="SPIs, identities and Child SAs too")
    show_ike.add_argument("--json", action="store_true", help="the IKE SAs as JSON")
    show_ike.set_defaults(func=_show_ike_sa)
    for name, command, text in (("map", "show_map", "show crypto map"),
                                ("acl", "show_acl", "access lists with hit counts"),
                                ("transform-set", "show_transform_set",
                                 "show crypto ipsec transform-set"),
                                ("certificates", "show_certificates",
                                 "show crypto pki certificates: loaded, with expiry")):
        sub = what.add_parser(name, parents=[client], help=text)
        sub.set_defaults(func=_show_text, request=command)

    stats = commands.add_parser("stats", parents=[client], help="global counters and drops")
    stats.set_defaults(func=_show_text, request="stats")

    initiate = commands.add_parser("initiate", parents=[client], help=(
        "negotiate an IKE-keyed crypto map entry now (start = \"manual\" entries need it)"))
    initiate.add_argument("map", metavar="MAP", help="crypto map name")
    initiate.add_argument("seq", metavar="SEQ", type=int, help="crypto map entry seq")
    initiate.set_defaults(func=_action, action="initiate")
    clear = commands.add_parser("clear", help="delete negotiated SAs (IOS clear crypto ...)")
    clear_what = clear.add_subparsers(dest="clear_what", required=True, metavar="WHAT")
    for words, action, text in ((("sa",), "clear_sa", "Child SAs (IOS clear crypto sa)"),
                                (("ike",), "clear_ike_sa",
                                 "IKE SAs and their Child SAs (IOS clear crypto session)")):
        sub = clear_what.add_parser(words[0], parents=[client], help=text)
        if action == "clear_ike_sa":
            sub.add_argument("object", choices=("sa",), help="sa")
        sub.add_argument("peer", nargs="?", metavar="PEER", help="only this peer's")
        sub.set_defaults(func=_action, action=action)

    reload = commands.add_parser("reload", parents=[client],
                                 help="ask the daemon to reload its config file")
    reload.set_defaults(func=_reload)

    keygen = commands.add_parser("keygen", help=(
        "print a matching pair of manually keyed crypto map entries with fresh SPIs and keys"))
    keygen.add_argument("--peer-a", required=True, metavar="ADDR", help="outer address of end A")
    keygen.add_argument("--peer-b", required=True, metavar="ADDR", help="outer address of end B")
    keygen.add_argument("--transform", default="esp-gcm 256", metavar="T",
                        help='the transform set (default "esp-gcm 256")')
    keygen.add_argument("--format", choices=("toml", "ios"), default="toml")
    keygen.add_argument("--map", default="VPN", metavar="NAME", help="crypto map name")
    keygen.add_argument("--seq", type=int, default=10, metavar="N", help="crypto map seq")
    keygen.add_argument("--acl", default="101", metavar="NAME",
                        help="the access list the entries match (define it on both ends)")
    keygen.add_argument("--pki", metavar="DIR", type=Path, help=(
        "instead: write a lab CA and a certificate for each end into DIR (keys 0600, "
        "nothing overwritten) and print each end's [ike] and [ike_peer] lines"))
    keygen.add_argument("--name-a", default="gw-a.example", metavar="DNS",
                        help="with --pki: end A's name (CN, SAN, IKE identity)")
    keygen.add_argument("--name-b", default="gw-b.example", metavar="DNS",
                        help="with --pki: end B's name")
    keygen.set_defaults(func=_keygen)

    demo = commands.add_parser("demo", help="two gateways in network namespaces (root)")
    demo.add_argument("--keying", choices=("manual", "ike", "certificate", "both", "all"),
                      default="all", help="keys written by hand, negotiated by IKEv2 with a "
                      "pre-shared key or with certificates; both: the first two in turn; "
                      "all (default): the three")
    demo.add_argument("--no-ipv6", action="store_true", help="IPv4 traffic only")
    demo.add_argument("--config-dir", metavar="DIR", help="where the demo configs are")
    demo.set_defaults(func=_demo)
    return parser


def _run(args: argparse.Namespace) -> int:
    from espd.service import main_loop

    return main_loop.run(args.config)


def _demo(args: argparse.Namespace) -> int:
    from espd.cli.demo import steps

    argv = ["--keying", args.keying, *(["--no-ipv6"] if args.no_ipv6 else []),
            *(["--config-dir", args.config_dir] if args.config_dir else [])]
    return steps.main(argv)


# --- check ---

def _check(args: argparse.Namespace) -> int:
    try:
        config = load(args.config)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        count = len(e.problems)
        print(f"{args.config}: {count} error{'s' if count != 1 else ''}; not usable",
              file=sys.stderr)
        return 1
    state = state_dir.problem(config.settings.state_dir)
    if state is not None and state_dir.fatal(state):
        print(f"{args.config}: state_dir {config.settings.state_dir} is not usable: "
              f"{state.strerror}; espd run would refuse it (it keeps its instance lock and "
              "sequence-number reservations there): set [daemon] state_dir to a writable "
              "directory", file=sys.stderr)
        print(f"{args.config}: 1 error; not usable", file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(f"{warning.where}: warning: {warning.message}", file=sys.stderr)
    if state is not None:
        print(f"{args.config}: warning: state_dir {config.settings.state_dir}: "
              f"{state.strerror} as uid {os.geteuid()}; espd run, started as root, may still "
              "use it: run this check as root to know", file=sys.stderr)
    print(_summary(args.config, config))
    return _compare_with_daemon(args.socket or config.settings.control_socket, args.config)


def _summary(path: str, config: Config) -> str:
    rules = sum(len(acl.entries) for acl in config.access_lists.values())
    maps = len(config.crypto_maps)
    manual = sum(1 for e in config.crypto_maps if e.manual)
    lines = [
        f"{path}: OK: {maps} crypto map entr{'y' if maps == 1 else 'ies'} ({2 * manual} SAs"
        + (f", {maps - manual} keyed by IKEv2" if manual != maps else "") + "), "
        f"{len(config.access_lists)} access lists ({rules} rules), "
        f"{len(config.transform_sets)} transform sets"
    ]
    for entry in config.crypto_maps:
        tsets = [config.transform_sets[name] for name in entry.transform_sets]
        transforms = " | ".join(f"{t.transform.name}, {t.mode}" for t in tsets)
        if entry.manual:
            assert entry.inbound is not None and entry.outbound is not None
            keying = f"SPI in 0x{entry.inbound.spi:08X} out 0x{entry.outbound.spi:08X}"
        else:
            pfs = f", pfs {entry.pfs}" if entry.pfs else ""
            keying = f"IKEv2 ({entry.start}{pfs})"
        peers = ", ".join(str(p) for p in entry.peers)
        lines.append(
            f"  crypto map {entry.map_name} {entry.seq}: {entry.local} -> {peers}, "
            f"{transforms}, {entry.encapsulation}, match address "
            f"{entry.match_address}, {keying}"
        )
    if any(not e.manual for e in config.crypto_maps):
        lines.append(f"  IKE proposals: {', '.join(config.ike.proposals)}; lifetime "
                     f"{config.ike.lifetime} s; peers: "
                     + (", ".join(f"{p.name} ({p.address}"
                                  f"{', certificate' if p.auth == 'certificate' else ''})"
                                  for p in config.ike_peers) or "none"))
    if config.ike.certificate is not None:
        from espd.ike.auth.certificates import describe

        own, trust = config.ike.certificate, config.ike.trust
        lines.append(f"  IKE certificate: {describe(own.certificate)}; "
                     f"{len(own.chain) - 1} intermediates; trusted CAs: "
                     + "; ".join(a.subject.rfc4514_string() for a in trust.anchors)
                     + (f"; {len(trust.crls)} CRLs" if trust.crls else ""))
    return "\n".join(lines)


def _compare_with_daemon(socket_path: str, config_path: str) -> int:
    try:
        answer = request(socket_path, "plan_diff", config=os.path.abspath(config_path))
    except ControlError as e:
        print(f"not compared with a running daemon: {e}")
        return 0
    if not answer.get("ok") and not answer.get("errors"):  # refused: another file
        print(f"not compared with a running daemon: {answer.get('error')}")
        return 0
    if not answer.get("ok"):
        _print_failure("the running daemon cannot use this config", answer)
        return 1
    changes = answer.get("changes", [])
    if not changes:
        print("a reload would change nothing")
    else:
        print(f"a reload would make {len(changes)} change{'s' if len(changes) != 1 else ''}:")
        for change in changes:
            print(f"  {change}")
    return 0


# --- client commands ---

def _socket(args: argparse.Namespace) -> str:
    if args.socket:
        return args.socket
    if not args.config:
        return DEFAULT_SOCKET
    try:
        return load(args.config).settings.control_socket
    except ConfigError as e:
        # The daemon judges the file (a refused reload is counted there and exits 1 here):
        # the client only needs the socket, read leniently from a file that does not load.
        try:
            with open(args.config, "rb") as f:
                text = f.read(MAX_CONFIG_BYTES).decode("utf-8", "replace")
        except OSError:
            raise ControlError(f"cannot tell the control socket from {args.config}: "
                               f"{e.problems[0]}; pass --socket PATH") from None
        return _socket_setting(text) or DEFAULT_SOCKET


_TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\"' -]+?)\s*\]")
_CONTROL_SOCKET = re.compile(r"""^\s*control_socket\s*=\s*(["'])([^"'\n]+)\1""")


def _socket_setting(text: str) -> str | None:
    """[daemon] control_socket from a TOML file that may not load as a whole (or None)."""
    table = ""
    for line in text.splitlines():
        if m := _TABLE.match(line):
            table = m.group(1)
        elif table == "daemon" and (m := _CONTROL_SOCKET.match(line)):
            return m.group(2)
    return None


def _ask(args: argparse.Namespace, command: str) -> dict | None:
    """The daemon's answer, or None after printing why it failed."""
    answer = request(_socket(args), command)
    if not answer.get("ok"):
        _print_failure(f"espd: {command.replace('_', ' ')} failed", answer)
        return None
    return answer


def _print_failure(title: str, answer: dict) -> None:
    print(f"{title}: {answer.get('error', 'no reason given')}", file=sys.stderr)
    for error in answer.get("errors", []):
        print(f"  {error}", file=sys.stderr)


def _show_sa(args: argparse.Namespace) -> int:
    answer = _ask(args, "show_sa")
    if answer is None:
        return 1
    if args.json:
        print(json.dumps(answer.get("sas", []), indent=2))
    else:
        print(answer.get("text", ""), end="")
    return 0


def _action(args: argparse.Namespace) -> int:
    fields = ({"map": args.map, "seq": args.seq} if args.action == "initiate"
              else {"peer": args.peer})
    answer = request(_socket(args), args.action, **fields)
    if not answer.get("ok"):
        _print_failure(f"espd: {args.action.replace('_', ' ')} failed", answer)
        return 1
    for line in answer.get("done", []):
        print(line)
    return 0


def _show_ike_sa(args: argparse.Namespace) -> int:
    if args.target == "proposal":
        args.request = "show_ike_proposal"
        return _show_text(args)
    answer = request(_socket(args), "show_ike_sa", detail=args.detail)
    if not answer.get("ok"):
        _print_failure("espd: show ike sa failed", answer)
        return 1
    if args.json:
        print(json.dumps(answer.get("ike_sas", []), indent=2))
    else:
        print(answer.get("text", ""), end="")
    return 0


def _show_text(args: argparse.Namespace) -> int:
    answer = _ask(args, args.request)
    if answer is None:
        return 1
    print(answer.get("text", ""), end="")
    return 0


def _reload(args: argparse.Namespace) -> int:
    answer = request(_socket(args), "reload", timeout=RELOAD_TIMEOUT)
    if not answer.get("ok"):
        _print_failure("reload failed; the running configuration is unchanged", answer)
        return 1
    changes = answer.get("changes", [])
    print(f"reloaded: {len(changes)} change{'s' if len(changes) != 1 else ''}")
    for change in changes:
        print(f"  {change}")
    return 0


# --- keygen ---

def _keygen(args: argparse.Namespace) -> int:
    try:
        transform = parse_transform(args.transform)
        peers = [ipaddress.ip_address(args.peer_a), ipaddress.ip_address(args.peer_b)]
    except (TransformError, ValueError) as e:
        print(f"espd keygen: {e}", file=sys.stderr)
        return 2
    from espd.config.toml_schema import _NAME  # the loader's own rule: what check accepts

    for flag, value in (("--map", args.map), ("--acl", args.acl)):
        if not _NAME.fullmatch(value):
            print(f"espd keygen: {flag} {value!r} is not a valid name; use 1-64 letters, "
                  "digits, '_', '.', ':' or '-'", file=sys.stderr)
            return 2
    if not 1 <= args.seq <= 65535:
        print(f"espd keygen: --seq {args.seq} is out of range; use 1 to 65535",
              file=sys.stderr)
        return 2
    if peers[0] == peers[1]:
        print(f"espd keygen: --peer-a and --peer-b are both {peers[0]}; give each end its "
              "own outer address", file=sys.stderr)
        return 2
    if peers[0].version != peers[1].version:
        print(f"espd keygen: --peer-a {peers[0]} is IPv{peers[0].version} but --peer-b "
              f"{peers[1]} is IPv{peers[1].version}; use one IP version", file=sys.stderr)
        return 2
    if args.pki is not None:
        return _keygen_pki(args, peers)
    spi_a, spi_b = _spis()  # inbound SPI of end A, of end B
    key_a, key_b = _keys(transform), _keys(transform)  # what end A, end B receives with
    ends = [(peers[0], peers[1], (spi_a, key_a), (spi_b, key_b)),
            (peers[1], peers[0], (spi_b, key_b), (spi_a, key_a))]
    render = _toml_end if args.format == "toml" else _ios_end
    mark = "#" if args.format == "toml" else "!"
    print(f"{mark} espd keygen: {transform.name} between {peers[0]} and {peers[1]}.\n"
          f"{mark} Fresh random keys: keep this secret; delete it once both ends are set.\n"
          f"{mark} Each end also needs access list {args.acl} naming its protected "
          f"subnets, mirrored on the other end.")
    for local, peer, inbound, outbound in ends:
        print(f"\n{mark} ==== on {local} ====")
        print(render(args, transform, local, peer, inbound, outbound))
    return 0


def _keygen_pki(args: argparse.Namespace, peers: list) -> int:
    from espd.cli import pki

    for flag, name in (("--name-a", args.name_a), ("--name-b", args.name_b)):
        if not re.fullmatch(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
                            r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*", name):
            print(f"espd keygen: {flag} {name!r} is not a DNS name", file=sys.stderr)
            return 2
    if args.name_a.lower() == args.name_b.lower():
        print(f"espd keygen: --name-a and --name-b are both {args.name_a}; give each end its "
              f"own name", file=sys.stderr)
        return 2
    directory = args.pki.resolve()
    a, b = pki.Gateway(args.name_a, peers[0]), pki.Gateway(args.name_b, peers[1])
    try:
        pki.make_pki(directory, a, b)
    except pki.PkiError as e:
        print(f"espd keygen: {e}", file=sys.stderr)
        return 1
    print(f"# espd keygen --pki: a lab CA and certificates for {a.name} ({a.address}) and "
          f"{b.name} ({b.address})\n# in {directory}: {', '.join(pki.FILES)} (keys 0600; "
          f"ca.key only signs, keep it away from the gateways).\n# Copy each end's .pem, "
          f".key and ca.pem to it; each crypto map entry needs keying = \"ike\".")
    for stem, me, other in (("gw-a", a, b), ("gw-b", b, a)):
        print(f"\n# ==== on {me.name} ({me.address}) ====")
        print(pki.ike_lines(directory, stem, other))
    return 0


def _spis() -> tuple[int, int]:
    first = SPI_MIN + secrets.randbelow(SPI_MAX - SPI_MIN + 1)
    while True:
        second = SPI_MIN + secrets.randbelow(SPI_MAX - SPI_MIN + 1)
        if second != first:
            return first, second


def _keys(transform: Transform) -> tuple[str, str]:
    """Hex cipher key (salt included for AEADs) and hex auth key ('' for AEADs)."""
    auth = secrets.token_hex(transform.auth_key_len) if transform.auth_key_len else ""
    return secrets.token_hex(transform.key_len), auth


def _set_name(transform: Transform) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", transform.name).strip("_").upper()


def _toml_end(args: argparse.Namespace, transform: Transform, local: object, peer: object,
              inbound: tuple[int, tuple[str, str]], outbound: tuple[int, tuple[str, str]]) -> str:
    words = re.split(r" (?=esp-)", transform.name)
    lines = [f"[transform_set.{_set_name(transform)}]",
             f"transforms = {json.dumps(words)}",
             "",
             "[[crypto_map]]",
             f"name = {json.dumps(args.map)}",
             f"seq = {args.seq}",
             f'peer = "{peer}"',
             f'local = "{local}"',
             f"match_address = {json.dumps(args.acl)}",
             f'transform_set = "{_set_name(transform)}"']
    for direction, (spi, (key, auth)) in (("inbound", inbound), ("outbound", outbound)):
        auth_text = f', auth_key = "{auth}"' if auth else ""
        lines.append(f'{direction} = {{ spi = 0x{spi:08X}, key = "{key}"{auth_text} }}')
    return "\n".join(lines)


def _ios_end(args: argparse.Namespace, transform: Transform, local: object, peer: object,
             inbound: tuple[int, tuple[str, str]], outbound: tuple[int, tuple[str, str]]) -> str:
    lines = [f"crypto ipsec transform-set {_set_name(transform)} {transform.name}",
             " mode tunnel",
             "!",
             f"crypto map {args.map} {args.seq} ipsec-manual",
             f" set peer {peer}",
             f" set transform-set {_set_name(transform)}",
             f" match address {args.acl}"]
    for direction, (spi, (key, auth)) in (("inbound", inbound), ("outbound", outbound)):
        cipher_text = f" cipher {key}" if key else ""
        auth_text = f" authenticator {auth}" if auth else ""
        lines.append(f" set session-key {direction} esp {spi}{cipher_text}{auth_text}")
    lines += ["!", f"! apply the map to the interface whose address is {local}:",
              f"!   interface NAME / crypto map {args.map}"]
    return "\n".join(lines)
