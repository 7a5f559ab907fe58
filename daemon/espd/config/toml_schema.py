"""espd's TOML schema: the tomllib document -> model objects, every problem located.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from typing import Any

from espd.config import ios
from espd.config.acl import AclError, parse_rule
from espd.config.key_files import KeyFileError, read_key_file
from espd.config.model import (
    DEFAULT_REPLAY_WINDOW,
    LIFETIME_MAX,
    PEER_SOURCES,
    RECEIVE_PATHS,
    REPLAY_WINDOW_MAX,
    SEND_PATHS,
    SPI_MAX,
    SPI_MIN,
    AccessList,
    Config,
    ConfigError,
    CryptoMapEntry,
    IPAddress,
    Location,
    ManualKey,
    MapLifetime,
    Problem,
    Settings,
    TransformSet,
    assemble,
    check_manual_key,
    quote,
)
from espd.config.read import read_text
from espd.config.toml_ike import IKE_KNOWN, IkeSchema
from espd.config.toml_lines import Path, TomlLines
from espd.config.transforms import RECOMMENDED, Transform, TransformError, parse_transform
from espd.dataplane import crypto_backend as crypto_backends

_KNOWN: dict[str, tuple[str, ...]] = {
    **IKE_KNOWN,
    "": ("daemon", "access_list", "transform_set", "crypto_map", "include_ios", "ike",
         "ike_peer"),
    "daemon": ("interface", "local", "workers", "control_socket", "metrics", "state_dir",
               "offload", "user", "nat_keepalive", "drop_log_interval", "send_path",
               "receive_path", "crypto_backend"),
    "access_list": ("rules",),
    "transform_set": ("transforms", "mode"),
    "crypto_map": (
        "name", "seq", "keying", "peer", "peers", "local", "match_address", "transform_set",
        "transform_sets", "encapsulation", "replay_window", "esn", "lifetime", "inbound",
        "outbound", "pfs", "start", "peer_source",
    ),
    "lifetime": ("seconds", "kilobytes", "packets"),
    "sa": ("spi", "key", "key_file", "auth_key", "auth_key_file"),
}
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_IFNAME = re.compile(r"[^\s/:]{1,15}")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})*")
_MISSING = object()
_FAILED = object()  # a key that was given but refused (and reported)


def _dotted(path: Path) -> str:
    return ".".join(str(p) for p in path if not isinstance(p, int))


def _type_name(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


class SchemaLoader(IkeSchema):
    """Turns the tomllib document into model objects, collecting located problems."""

    def __init__(self, path: str, lines: TomlLines) -> None:
        self.path = path
        self.lines = lines
        self.problems: list[Problem] = []
        self.refused: set[str] = set()  # names of sections already reported as broken

    def where(self, path: Path) -> Location:
        return Location(self.path, self.lines.line(path))

    def error(self, path: Path, message: str) -> None:
        self.problems.append(Problem(self.where(path), message))

    def config(self, document: dict[str, Any]) -> Config:
        self.keys(document, (), _KNOWN[""])
        settings = self.settings(self.table(document, ("daemon",)))
        acls: dict[str, AccessList] = {}
        tsets: dict[str, TransformSet] = {}
        maps: list[CryptoMapEntry] = []
        warnings: list[Problem] = []
        for included in self.includes(document, settings):
            warnings.extend(included.warnings)
            maps.extend(included.crypto_maps)
            acls.update(included.access_lists)
            tsets.update(included.transform_sets)
        for name, raw in self.table(document, ("access_list",)).items():
            self.define(acls, name, ("access_list", name), "access list",
                        self.access_list(name, raw))
        for name, raw in self.table(document, ("transform_set",)).items():
            self.define(tsets, name, ("transform_set", name), "transform set",
                        self.transform_set(name, raw))
        ike = self.ike_settings(self.table(document, ("ike",)))
        ike_peers = [p for name, raw in self.table(document, ("ike_peer",)).items()
                     if (p := self.ike_peer(name, raw)) is not None]
        raw_maps = document.get("crypto_map", [])
        if not isinstance(raw_maps, list):
            self.error(("crypto_map",), "crypto_map must be an array of tables; write each "
                                        "entry under its own '[[crypto_map]]' header")
            raw_maps = []
        for i, raw in enumerate(raw_maps):
            entry = self.crypto_map(("crypto_map", i), raw, settings, acls, tsets)
            if entry is not None:
                maps.append(entry)
        try:
            config = assemble(settings, acls, tsets, maps, warnings, ike, ike_peers)
        except ConfigError as e:
            self.problems.extend(e.problems)
        if self.problems:
            raise ConfigError(sorted(self.problems, key=lambda p: p.where))
        return config

    def define(self, into: dict, name: str, path: Path, what: str, value: Any) -> None:
        if value is None:
            self.refused.add(f"{what} {name}")
            return
        if name in into:
            self.error(path, f"{what} {name} is also defined at {into[name].where}; "
                             f"rename one of them")
        into[name] = value

    # -- generic checks --------------------------------------------------------------------

    def keys(self, table: dict[str, Any], path: Path, known: tuple[str, ...]) -> None:
        for key in table:
            if key in known:
                continue
            where = _dotted(path + (key,))
            close = difflib.get_close_matches(key, known, n=1)
            guess = f"did you mean '{close[0]}'? " if close else ""
            self.error(path + (key,), f"unknown key '{where}'; {guess}known keys: "
                                      f"{', '.join(known)}")

    def table(self, parent: dict[str, Any], path: Path) -> dict[str, Any]:
        value = parent.get(path[-1], {})
        if isinstance(value, dict):
            return value
        self.error(path, f"{_dotted(path)} must be a table, not {_type_name(value)}; "
                         f"write it as '[{_dotted(path)}]' or '{path[-1]} = {{ ... }}'")
        return {}

    def get(self, table: dict[str, Any], path: Path, kind: type, example: str,
            default: Any = _MISSING) -> Any:
        """Return table[path[-1]] if it is a ``kind``, else report it and return None."""
        key = path[-1]
        if key not in table:
            if default is _MISSING:
                self.error(path[:-1], f"{_dotted(path[:-1])} needs '{key}', e.g. "
                                      f"'{key} = {example}'")
                return None
            return default
        value = table[key]
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        self.error(path, f"{_dotted(path)} must be {_type_name(kind())}, not "
                         f"{_type_name(value)}; write e.g. '{key} = {example}'")
        return None

    def integer(self, table: dict[str, Any], path: Path, low: int, high: int, example: str,
                default: Any = _MISSING, why: str = "") -> int | None:
        value = self.get(table, path, int, example, default)
        if value is None or low <= value <= high:
            return value
        bounds = "positive" if (low, high) == (1, LIFETIME_MAX) else f"from {low} to {high}"
        self.error(path, f"{_dotted(path)} must be {bounds}{why}, not {value}; "
                         f"write e.g. '{path[-1]} = {example}'")
        return None

    def address(self, table: dict[str, Any], path: Path, example: str,
                default: Any = _MISSING) -> IPAddress | None:
        value = self.get(table, path, str, f'"{example}"', default)
        if not isinstance(value, str):
            return value
        try:
            return ipaddress.ip_address(value)
        except ValueError:
            self.error(path, f"{_dotted(path)}: {quote(value)} is not an IPv4 or IPv6 address; "
                             f"write e.g. '{path[-1]} = \"{example}\"'")
            return None

    def name(self, table: dict[str, Any], path: Path, example: str) -> str | None:
        value = self.get(table, path, str, f'"{example}"')
        if value is None or _NAME.fullmatch(value):
            return value
        self.error(path, f"{_dotted(path)}: {quote(value)} is not a valid name; use 1-64 letters, "
                         f"digits, '_', '.', ':' or '-'")
        return None

    def reference(self, table: dict[str, Any], path: Path, defined: dict[str, Any],
                  what: str) -> str | None:
        value = self.get(table, path, str, '"101"' if what == "access list" else '"STRONG"')
        if value is None or value in defined:
            return value
        if f"{what} {value}" in self.refused:
            return None
        close = difflib.get_close_matches(value, list(defined), n=1)
        if close:
            hint = f"did you mean '{close[0]}'?"
        elif defined:
            hint = f"defined: {', '.join(sorted(defined))}"
        else:
            hint = f"define it under [{what.replace(' ', '_')}.{value}]"
        self.error(path, f"{_dotted(path)}: {what} {quote(value)} is not defined; {hint}")
        return None

    # -- sections --------------------------------------------------------------------------

    def settings(self, raw: dict[str, Any]) -> Settings:
        path: Path = ("daemon",)
        self.keys(raw, path, _KNOWN["daemon"])
        default = Settings()
        interface = self.get(raw, path + ("interface",), str, '"espd0"', default.interface)
        if interface is not None and not _IFNAME.fullmatch(interface):
            self.error(path + ("interface",), f"daemon.interface: {quote(interface)} is not a "
                       f"Linux interface name; use 1-15 characters without spaces, '/' or ':'")
        workers = self.integer(raw, path + ("workers",), 1, 1024, "2", None)
        control_socket = self.absolute(raw, path + ("control_socket",), default.control_socket)
        state_dir = self.absolute(raw, path + ("state_dir",), default.state_dir)
        metrics = self.get(raw, path + ("metrics",), str, '"127.0.0.1:9661"', default.metrics)
        if metrics and not _valid_listen(metrics):
            self.error(path + ("metrics",), f"daemon.metrics: {quote(metrics)} is not HOST:PORT; "
                       f"write e.g. '\"127.0.0.1:9661\"' or '\"[::1]:9661\"', or '\"\"' to "
                       f"turn the exporter off")
        offload = self.get(raw, path + ("offload",), bool, "true", default.offload)
        send_path = self.choice(raw, path + ("send_path",), SEND_PATHS)
        receive_path = self.choice(raw, path + ("receive_path",), RECEIVE_PATHS)
        crypto_backend = self.choice(raw, path + ("crypto_backend",), crypto_backends.CHOICES)
        problem = crypto_backend and crypto_backends.why_unavailable(crypto_backend)
        if problem:
            self.error(path + ("crypto_backend",),
                       f"daemon.crypto_backend: {quote(crypto_backend)}: {problem}")
            crypto_backend = None
        user = self.get(raw, path + ("user",), str, '"espd"', None)
        keepalive = self.integer(raw, path + ("nat_keepalive",), 0, 3600, "20",
                                 default.nat_keepalive)
        drop_log = self.integer(raw, path + ("drop_log_interval",), 0, 3600, "10",
                                default.drop_log_interval)
        return Settings(
            nat_keepalive=default.nat_keepalive if keepalive is None else keepalive,
            drop_log_interval=default.drop_log_interval if drop_log is None else drop_log,
            user=user or None,
            offload=default.offload if offload is None else offload,
            send_path=send_path or default.send_path,
            receive_path=receive_path or default.receive_path,
            crypto_backend=crypto_backend or default.crypto_backend,
            interface=interface or default.interface,
            local=self.address(raw, path + ("local",), "192.0.2.1", None),
            workers=workers,
            control_socket=control_socket or default.control_socket,
            metrics=metrics if metrics is not None else default.metrics,
            state_dir=state_dir or default.state_dir,
        )

    def absolute(self, raw: dict[str, Any], path: Path, default: str) -> str | None:
        value = self.get(raw, path, str, f'"{default}"', default)
        if value is None or os.path.isabs(value):
            return value
        self.error(path, f"{_dotted(path)}: {quote(value)} is not an absolute path; "
                         f"write e.g. '{path[-1]} = \"{default}\"'")
        return None

    def includes(self, document: dict[str, Any], settings: Settings) -> list[Config]:
        paths = self.get(document, ("include_ios",), list, '["router.ios"]', [])
        configs = []
        for i, name in enumerate(paths or []):
            if not isinstance(name, str):
                self.error(("include_ios", i), f"include_ios entries must be file names, "
                                               f"not {_type_name(name)}")
                continue
            full = os.path.join(os.path.dirname(self.path), name)
            try:
                configs.append(ios.parse_ios(read_text(full, self.where(("include_ios", i))),
                                             full, settings))
            except ConfigError as e:
                self.problems.extend(e.problems)
        return configs

    def access_list(self, name: str, raw: Any) -> AccessList | None:
        path: Path = ("access_list", name)
        if not isinstance(raw, dict):
            self.error(path, f"access_list.{name} must be a table; write "
                             f"'[access_list.{name}]' and 'rules = [...]' under it")
            return None
        self.keys(raw, path, _KNOWN["access_list"])
        rules = self.get(raw, path + ("rules",), list,
                         '["permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255"]')
        if rules is None:
            return None
        entries = []
        for i, rule in enumerate(rules):
            rule_path = path + ("rules", i)
            if not isinstance(rule, str):
                self.error(rule_path, f"access_list.{name}.rules: each rule is a string, "
                                      f"not {_type_name(rule)}")
                continue
            try:
                entries.append(parse_rule(rule, self.where(rule_path)))
            except AclError as e:
                self.error(rule_path, f"access_list.{name}: {e}")
        if not rules:
            self.error(path + ("rules",), f"access_list.{name} has no rules; add e.g. "
                       f"'\"permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255\"'")
        if len(entries) != len(rules) or not entries:
            return None
        return AccessList(name, tuple(entries), self.where(path))

    def transform_set(self, name: str, raw: Any) -> TransformSet | None:
        path: Path = ("transform_set", name)
        if not isinstance(raw, dict):
            self.error(path, f"transform_set.{name} must be a table; write "
                             f"'[transform_set.{name}]' and 'transforms = [...]' under it")
            return None
        self.keys(raw, path, _KNOWN["transform_set"])
        transforms = self.get(raw, path + ("transforms",), list, f'["{RECOMMENDED}"]')
        mode = self.choice(raw, path + ("mode",), ("tunnel", "transport"))
        if transforms is None or mode is None:
            return None
        if not all(isinstance(t, str) for t in transforms):
            self.error(path + ("transforms",), f"transform_set.{name}.transforms: each "
                       f"transform is a string; write e.g. 'transforms = [\"{RECOMMENDED}\"]'")
            return None
        try:
            transform = parse_transform(" ".join(transforms))
        except TransformError as e:
            self.error(path + ("transforms",), f"transform_set.{name}: {e}")
            return None
        return TransformSet(name, transform, mode, self.where(path))

    def choice(self, raw: dict[str, Any], path: Path, choices: tuple[str, ...]) -> str | None:
        value = self.get(raw, path, str, f'"{choices[0]}"', choices[0])
        if value is None or value in choices:
            return value
        options = " or ".join(f'"{c}"' for c in choices)
        self.error(path, f"{_dotted(path)}: {quote(value)} is not allowed; write {options}")
        return None

    def crypto_map(self, path: Path, raw: Any, settings: Settings,
                   acls: dict[str, AccessList], tsets: dict[str, TransformSet],
                   ) -> CryptoMapEntry | None:
        if not isinstance(raw, dict):
            self.error(path, "each crypto_map must be a table under '[[crypto_map]]'")
            return None
        before = len(self.problems)
        self.keys(raw, path, _KNOWN["crypto_map"])
        name = self.name(raw, path + ("name",), "armadillo")
        seq = self.integer(raw, path + ("seq",), 1, 65535, "10")
        keying = self.choice(raw, path + ("keying",), ("manual", "ike"))
        entry = f"crypto_map {name or '?'} {seq or '?'}"
        ike = keying == "ike"
        peers = self.several(raw, path, "peer", "peers", ike, entry,
                             lambda t, p: self.address(t, p, "192.0.2.2"))
        local = self.address(raw, path + ("local",), "192.0.2.1", settings.local)
        acl = self.reference(raw, path + ("match_address",), acls, "access list")
        tset_names = self.several(raw, path, "transform_set", "transform_sets", ike, entry,
                                  lambda t, p: self.reference(t, p, tsets, "transform set"))
        encapsulation = self.choice(raw, path + ("encapsulation",),
                                    ("auto", "esp", "udp") if ike else ("esp", "udp"))
        replay = self.integer(raw, path + ("replay_window",), 0, REPLAY_WINDOW_MAX, "1024",
                              DEFAULT_REPLAY_WINDOW)
        esn = self.get(raw, path + ("esn",), bool, "true", False)
        peer_source = self.choice(raw, path + ("peer_source",), PEER_SOURCES)
        lifetime = self.lifetime(raw, path + ("lifetime",))
        if ike:
            inbound = outbound = None
            for direction in ("inbound", "outbound"):
                if direction in raw:
                    self.error(path + (direction,), f"{entry}: keying = \"ike\" negotiates "
                               f"its keys; remove '{direction}' (or write keying = "
                               f"\"manual\")")
            pfs = self.pfs(raw, path + ("pfs",))
            start = self.choice(raw, path + ("start",), ("on-demand", "immediate", "manual"))
        else:
            for key in ("pfs", "start"):
                if key in raw:
                    self.error(path + (key,), f"{entry}: '{key}' applies to keying = "
                               f"\"ike\"; a manually keyed entry has no negotiation")
            pfs, start = None, "on-demand"
            transform = tsets[tset_names[0]].transform if tset_names else None
            inbound = self.manual_key(raw, path + ("inbound",), transform, entry, 0x1000)
            outbound = self.manual_key(raw, path + ("outbound",), transform, entry, 0x2000)
        peer = peers[0] if peers else None
        if peer is not None and local is None and "local" not in raw:
            self.error(path, f"{entry} has no local address; set 'local' in [daemon] or in "
                             f"this crypto_map, e.g. 'local = \"192.0.2.1\"'")
        elif peer is not None and local is not None and peer.version != local.version:
            self.error(path + ("peer",), f"{entry}: peer {peer} is IPv{peer.version} but the "
                       f"local address {local} is IPv{local.version}; use one IP version")
        values = (name, seq, keying, peers, local, acl, tset_names, encapsulation, replay, esn,
                  lifetime, start, peer_source)
        if len(self.problems) != before or any(v is None for v in values):
            return None  # reported here, or where the access list or transform set is
        return CryptoMapEntry(
            map_name=name, seq=seq, peer=peers[0], local=local, match_address=acl,
            transform_set=tset_names[0], inbound=inbound, outbound=outbound,
            encapsulation=encapsulation, replay_window=replay, esn=esn, lifetime=lifetime,
            keying=keying, more_peers=tuple(peers[1:]),
            more_transform_sets=tuple(tset_names[1:]), pfs=pfs, start=start,
            peer_source=peer_source, where=self.where(path),
        )

    def several(self, raw: dict[str, Any], path: Path, one: str, many: str, allowed: bool,
                entry: str, read: Any) -> list | None:
        """``one = X`` or (IKE only) ``many = [X, Y, ...]``, each read by ``read``."""
        if one in raw and many in raw:
            self.error(path + (many,), f"{entry} has both '{one}' and '{many}'; keep one")
            return None
        if many not in raw:
            value = read(raw, path + (one,))
            return None if value is None else [value]
        if not allowed:
            self.error(path + (many,), f"{entry}: a manually keyed entry takes one {one}; "
                       f"write '{one} = ...', or keying = \"ike\" to list several")
            return None
        items = self.get(raw, path + (many,), list, f'["{one}-1", "{one}-2"]')
        if not items:
            if items is not None:
                self.error(path + (many,), f"{entry}: '{many}' is empty; list at least one")
            return None
        values = [read({many: item}, path + (many,)) for item in items]
        return None if any(v is None for v in values) else values

    def lifetime(self, raw: dict[str, Any], path: Path) -> MapLifetime | None:
        table = self.table(raw, path)
        self.keys(table, path, _KNOWN["lifetime"])
        default = MapLifetime()
        seconds = self.integer(table, path + ("seconds",), 1, LIFETIME_MAX, "3600",
                               default.seconds)
        kilobytes = self.integer(table, path + ("kilobytes",), 1, LIFETIME_MAX, "4608000",
                                 default.kilobytes)
        packets = self.integer(table, path + ("packets",), 0, LIFETIME_MAX, "1000000",
                               default.packets)
        if seconds is None or kilobytes is None or packets is None:
            return None
        return MapLifetime(seconds, kilobytes, packets)

    def manual_key(self, raw: dict[str, Any], path: Path, transform: Transform | None,
                   entry: str, example_spi: int) -> ManualKey | None:
        direction = str(path[-1])
        if path[-1] not in raw:
            self.error(path[:-1], f"crypto_map needs '{direction}', e.g. '{direction} = "
                                  f"{{ spi = {example_spi:#x}, key = \"<hex>\" }}'")
            return None
        table = self.table(raw, path)
        self.keys(table, path, _KNOWN["sa"])
        spi = self.integer(table, path + ("spi",), SPI_MIN, SPI_MAX, f"{example_spi:#x}",
                           why=" (RFC 4303 reserves 1-255)")
        key, key_file = self.key_material(table, path, "key", transform, required=True)
        auth_key, auth_file = self.key_material(table, path, "auth_key", transform,
                                                required=False)
        if spi is None or key is None or key is _FAILED or auth_key is _FAILED:
            return None
        sa = ManualKey(spi, key, auth_key)
        if transform is not None:
            for message in check_manual_key(transform, direction, sa, key_file=key_file,
                                            auth_key_file=auth_file):
                auth = message.startswith((f"{direction} authentication",
                                           f"{direction} SA has"))
                name = "auth_key" if auth else "key"
                written = f"{name}_file" if f"{name}_file" in table else name
                self.error(path + (written,), f"{entry}: {message}")
        return sa

    def key_material(self, table: dict[str, Any], path: Path, name: str,
                     transform: Transform | None, required: bool) -> tuple[Any, str | None]:
        """(key, file it came from) of ``name`` or ``name_file``: (None, None) if neither
        is written, (_FAILED, None) if what is written was refused."""
        file_key = f"{name}_file"
        if name in table and file_key in table:
            self.error(path + (file_key,), f"{_dotted(path)} has both '{name}' and "
                                           f"'{file_key}'; keep one of them")
            return _FAILED, None
        if file_key not in table:
            if required and name not in table:
                self.error(path, f"{_dotted(path)} needs '{name}' or '{file_key}', e.g. "
                                 f"'{name} = {self.key_example(name, transform)}' or "
                                 f"'{file_key} = \"/etc/espd/{path[-1]}.key\"'")
                return _FAILED, None
            key = self.hex_key(table, path + (name,), transform)
            return (_FAILED if key is None and name in table else key), None
        value = self.get(table, path + (file_key,), str, f'"/etc/espd/{path[-1]}.key"')
        if value is None:
            return _FAILED, None
        full = os.path.normpath(os.path.join(os.path.dirname(self.path), value))
        length = self.key_length(name, transform)
        wanted = f"the key's {length * 2} hex digits" if length else "the key in hex"
        try:
            return read_key_file(full, wanted), full
        except KeyFileError as e:
            for problem in e.problems:
                self.error(path + (file_key,), f"{_dotted(path + (file_key,))}: {problem}")
            return _FAILED, None

    @staticmethod
    def key_length(name: str, transform: Transform | None) -> int:
        if transform is None:
            return 0
        return transform.key_len if name == "key" else transform.auth_key_len

    def key_example(self, name: str, transform: Transform | None) -> str:
        length = self.key_length(name, transform)
        return f'"<{length * 2} hex digits>"' if length else '"<hex>"'

    def hex_key(self, table: dict[str, Any], path: Path,
                transform: Transform | None) -> bytes | None:
        example = self.key_example(str(path[-1]), transform)
        value = self.get(table, path, str, example, None)
        if value is None:
            return None
        if not _HEX.fullmatch(value):
            self.error(path, f"{_dotted(path)} must be an even number of hex digits (0-9, a-f) "
                             f"without spaces or '0x'; write '{path[-1]} = {example}'")
            return None
        return bytearray.fromhex(value)  # mutable: wiped once the data plane has it


def _valid_listen(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return False
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    return True
