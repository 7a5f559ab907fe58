"""Load espd's native TOML configuration (or an IOS config, by content) into a Config.

Every problem is reported at once, as ``FILE:LINE: what is wrong; what to write instead``.
tomllib gives no positions, so ``_Lines`` re-scans the accepted text to find the line of
every key, table and array element.
"""

from __future__ import annotations

import binascii
import bisect
import difflib
import errno
import ipaddress
import os
import re
import stat
import tomllib
from typing import Any

from espd import ios
from espd.acl import AclError, parse_rule
from espd.model import (
    DEFAULT_REPLAY_WINDOW,
    LIFETIME_MAX,
    REPLAY_WINDOW_MAX,
    SPI_MAX,
    SPI_MIN,
    AccessList,
    Config,
    ConfigError,
    CryptoMapEntry,
    IPAddress,
    Lifetime,
    Location,
    ManualKey,
    Problem,
    Settings,
    TransformSet,
    assemble,
    check_manual_key,
    quote,
    wipe,
)
from espd.transforms import RECOMMENDED, Transform, TransformError, parse_transform

Path = tuple[str | int, ...]

_KNOWN: dict[str, tuple[str, ...]] = {
    "": ("daemon", "access_list", "transform_set", "crypto_map", "include_ios"),
    "daemon": ("interface", "local", "workers", "control_socket", "metrics", "state_dir",
               "offload", "user", "nat_keepalive"),
    "access_list": ("rules",),
    "transform_set": ("transforms", "mode"),
    "crypto_map": (
        "name", "seq", "peer", "local", "match_address", "transform_set", "encapsulation",
        "replay_window", "esn", "lifetime", "inbound", "outbound",
    ),
    "lifetime": ("seconds", "kilobytes"),
    "sa": ("spi", "key", "key_file", "auth_key", "auth_key_file"),
}
_IOS_WORDS = frozenset((
    "access-list", "crypto", "interface", "hostname", "version", "ip", "ipv6", "service",
    "enable", "no", "end", "current", "building", "boot", "username", "line", "router",
))
_TOML_KEY = re.compile(r"""[\w"'.-]+\s*=""")
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_IFNAME = re.compile(r"[^\s/:]{1,15}")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})*")
_MISSING = object()
_FAILED = object()  # a key that was given but refused (and reported)
KEY_FILE_MAX = 4096  # bytes; the longest key (HMAC-SHA512, 64 bytes) is 128 hex digits
_HEX_DIGITS = b"0123456789abcdefABCDEF"
_BLANKS = b" \t\r\n\v\f"
_NOT_A_FILE = "key file {path} is not a regular file; point key_file at a file holding the key"


def load(path: str) -> Config:
    """Read ``path`` as IOS if it starts like an IOS config, else as espd TOML."""
    text = _read(path, Location(path))
    if looks_like_ios(text):
        return ios.parse_ios(text, path)
    return parse_toml(text, path)


def looks_like_ios(text: str) -> bool:
    """True if the first meaningful line is an IOS command or a '!' comment."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[") or _TOML_KEY.match(stripped):
            return False
        return stripped.startswith("!") or stripped.split()[0].lower() in _IOS_WORDS
    return False


def parse_toml(text: str, path: str = "<string>") -> Config:
    """Validate TOML ``text`` read from ``path`` (includes are relative to it)."""
    try:
        document = tomllib.loads(text)
    except RecursionError:
        problem = Problem(Location(path, 1), "invalid TOML: arrays or inline tables nested too "
                                             "deeply; espd's configuration needs at most 3 levels")
        raise ConfigError([problem]) from None
    except tomllib.TOMLDecodeError as e:
        found = re.search(r"\(at line (\d+), column \d+\)", str(e))
        line = int(found.group(1)) if found else text.count("\n") + 1
        what = re.sub(r"\s*\(at .*\)$", "", str(e))
        problem = Problem(Location(path, line), f"invalid TOML: {what}; see "
                                                f"config/espd.example.toml for the syntax")
        raise ConfigError([problem]) from None
    return _Loader(path, _Lines(text)).config(document)


def _read(path: str, where: Location) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise ConfigError([Problem(where, f"cannot read {path}: {reason}")]) from None


class KeyFileError(Exception):
    """A key file espd refuses to read; ``problems`` say what to do (never the key)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def read_key_file(path: str, wanted: str = "the key in hex") -> bytearray:
    """The key held in hex by ``path``: a regular file, not a symlink, owned by root or by
    this process's user, not readable or writable by group or others. Whitespace is
    ignored. ``wanted`` ("the key's 72 hex digits") goes into the advice. Raises
    KeyFileError.

    The file is read into a bytearray that is wiped before returning, so no str or bytes
    copy of the hex text is left behind; only the returned key exists."""
    try:
        mode = os.lstat(path).st_mode  # a device or FIFO is refused before it is opened
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            raise KeyFileError([_NOT_A_FILE.format(path=path)])
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise KeyFileError([_open_problem(path, e, wanted)]) from None
    buf = bytearray(KEY_FILE_MAX + 1)
    try:
        info = os.fstat(fd)
        _check_key_file(path, info)
        with open(fd, "rb", buffering=0, closefd=False) as f:
            size = 0
            while size < len(buf) and (n := f.readinto(memoryview(buf)[size:])):
                size += n
        if size > KEY_FILE_MAX:
            raise KeyFileError([f"key file {path} is larger than {KEY_FILE_MAX} bytes, too "
                                f"large for a key; write only {wanted}"])
        return _parse_hex(buf, size, path, wanted)
    finally:
        os.close(fd)
        wipe(buf)


def _open_problem(path: str, e: OSError, wanted: str) -> str:
    if e.errno == errno.ELOOP:
        return (f"key file {path} is a symlink; espd does not follow symlinks to keys: point "
                f"key_file at the file itself ({os.path.realpath(path)})")
    if e.errno == errno.ENOENT:
        return (f"cannot read key file {path}: {e.strerror}; fix the path (a relative path "
                f"starts at the config file's directory) or create it holding {wanted} and "
                f"run 'chmod 600 {path}'")
    if e.errno == errno.EACCES:
        return (f"cannot read key file {path}: {e.strerror}; run espd as root or as the "
                f"file's owner")
    return f"cannot read key file {path}: {e.strerror}"


def _check_key_file(path: str, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError([_NOT_A_FILE.format(path=path)])
    problems = []
    euid = os.geteuid()
    if info.st_uid not in (0, euid):
        owners = "root" if euid == 0 else f"root or espd's user (uid {euid})"
        problems.append(f"key file {path} is owned by uid {info.st_uid}, not by {owners}; "
                        f"run 'chown {'root' if euid == 0 else euid} {path}'")
    if info.st_mode & 0o066:
        problems.append(f"key file {path} is readable or writable by group or others (mode "
                        f"{stat.S_IMODE(info.st_mode):04o}); run 'chmod 600 {path}'")
    if problems:
        raise KeyFileError(problems)


def _parse_hex(buf: bytearray, size: int, path: str, wanted: str) -> bytes:
    text = buf[:size]
    digits = text.translate(None, _BLANKS)
    others = digits.translate(None, _HEX_DIGITS)
    try:
        if others:
            raise KeyFileError([f"key file {path} holds characters other than hex digits and "
                                f"whitespace; write only {wanted} (0-9, a-f), without '0x' "
                                f"or 'key ='"])
        if len(digits) % 2:
            raise KeyFileError([f"key file {path} holds an odd number of hex digits "
                                f"({len(digits)}); write {wanted}"])
        return bytearray(binascii.unhexlify(digits))
    finally:
        for scratch in (text, digits, others):
            wipe(scratch)




def _dotted(path: Path) -> str:
    return ".".join(str(p) for p in path if not isinstance(p, int))


def _type_name(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


class _Loader:
    """Turns the tomllib document into model objects, collecting located problems."""

    def __init__(self, path: str, lines: _Lines) -> None:
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
            config = assemble(settings, acls, tsets, maps, warnings)
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
        user = self.get(raw, path + ("user",), str, '"espd"', None)
        keepalive = self.integer(raw, path + ("nat_keepalive",), 0, 3600, "20",
                                 default.nat_keepalive)
        return Settings(
            nat_keepalive=default.nat_keepalive if keepalive is None else keepalive,
            user=user or None,
            offload=default.offload if offload is None else offload,
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
                configs.append(ios.parse_ios(_read(full, self.where(("include_ios", i))),
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
        peer = self.address(raw, path + ("peer",), "192.0.2.2")
        local = self.address(raw, path + ("local",), "192.0.2.1", settings.local)
        acl = self.reference(raw, path + ("match_address",), acls, "access list")
        tset_name = self.reference(raw, path + ("transform_set",), tsets, "transform set")
        encapsulation = self.choice(raw, path + ("encapsulation",), ("esp", "udp"))
        replay = self.integer(raw, path + ("replay_window",), 0, REPLAY_WINDOW_MAX, "1024",
                              DEFAULT_REPLAY_WINDOW)
        esn = self.get(raw, path + ("esn",), bool, "true", False)
        lifetime = self.lifetime(raw, path + ("lifetime",))
        transform = tsets[tset_name].transform if tset_name else None
        entry = f"crypto_map {name or '?'} {seq or '?'}"
        inbound = self.manual_key(raw, path + ("inbound",), transform, entry, 0x1000)
        outbound = self.manual_key(raw, path + ("outbound",), transform, entry, 0x2000)
        if peer is not None and local is None and "local" not in raw:
            self.error(path, f"{entry} has no local address; set 'local' in [daemon] or in "
                             f"this crypto_map, e.g. 'local = \"192.0.2.1\"'")
        elif peer is not None and local is not None and peer.version != local.version:
            self.error(path + ("peer",), f"{entry}: peer {peer} is IPv{peer.version} but the "
                       f"local address {local} is IPv{local.version}; use one IP version")
        values = (name, seq, peer, local, acl, tset_name, encapsulation, replay, esn, lifetime,
                  inbound, outbound)
        if len(self.problems) != before or any(v is None for v in values):
            return None  # reported here, or where the access list or transform set is
        return CryptoMapEntry(
            map_name=name, seq=seq, peer=peer, local=local, match_address=acl,
            transform_set=tset_name, inbound=inbound, outbound=outbound,
            encapsulation=encapsulation, replay_window=replay, esn=esn, lifetime=lifetime,
            where=self.where(path),
        )

    def lifetime(self, raw: dict[str, Any], path: Path) -> Lifetime | None:
        table = self.table(raw, path)
        self.keys(table, path, _KNOWN["lifetime"])
        default = Lifetime()
        seconds = self.integer(table, path + ("seconds",), 1, LIFETIME_MAX, "3600",
                               default.seconds)
        kilobytes = self.integer(table, path + ("kilobytes",), 1, LIFETIME_MAX, "4608000",
                                 default.kilobytes)
        if seconds is None or kilobytes is None:
            return None
        return Lifetime(seconds, kilobytes)

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


class _Lines:
    """Line of every key, table header and array element in a TOML text tomllib accepted.

    Paths are the document's keys, with the index of each [[array]] table and array element:
    ("crypto_map", 1, "inbound", "spi"), ("access_list", "101", "rules", 0).
    """

    _BARE = re.compile(r"[A-Za-z0-9_-]+")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
        self.found: dict[Path, int] = {}
        self.arrays: dict[Path, int] = {}
        self.document()

    def line(self, path: Path) -> int:
        """The line of ``path``, or of its nearest ancestor that is written; 0 if none."""
        while path:
            if path in self.found:
                return self.found[path]
            path = path[:-1]
        return 0

    def record(self, path: Path) -> None:
        self.found.setdefault(path, bisect.bisect_right(self.starts, self.pos))

    def peek(self, token: str) -> bool:
        return self.text.startswith(token, self.pos)

    def skip(self, newlines: bool) -> None:
        """Skip blanks (and newlines and comments when ``newlines``)."""
        blanks = " \t\r\n" if newlines else " \t"
        while self.pos < len(self.text):
            if self.text[self.pos] in blanks:
                self.pos += 1
            elif newlines and self.peek("#"):
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return

    def document(self) -> None:
        table: Path = ()
        while True:
            self.skip(newlines=True)
            if self.pos >= len(self.text):
                return
            if self.peek("["):
                array = self.peek("[[")
                self.pos += 2 if array else 1
                keys = self.key()
                table = ()
                for part in keys[:-1]:  # a header inside [[a]] extends a's last element
                    table += (part,)
                    self.record(table)
                    if table in self.arrays:
                        table += (self.arrays[table] - 1,)
                table += (keys[-1],)
                self.record(table)
                if array:
                    self.arrays[table] = self.arrays.get(table, 0) + 1
                    table += (self.arrays[table] - 1,)
                    self.record(table)
                self.pos += 2 if array else 1
            else:
                self.value(self.assignment(table))

    def assignment(self, table: Path) -> Path:
        """Scan ``key.path =``, recording the line of each prefix; return the full path."""
        keys = self.key()
        for i in range(len(keys)):
            self.record(table + keys[: i + 1])
        self.skip(newlines=False)
        self.pos += 1  # "="
        return table + keys

    def key(self) -> tuple[str, ...]:
        parts = []
        while True:
            self.skip(newlines=False)
            if self.peek('"') or self.peek("'"):
                start = self.pos
                self.string()
                parts.append(tomllib.loads(f"k = {self.text[start:self.pos]}")["k"])
            else:
                bare = self._BARE.match(self.text, self.pos)
                end = bare.end() if bare else self.pos + 1
                parts.append(self.text[self.pos:end])
                self.pos = end
            self.skip(newlines=False)
            if not self.peek("."):
                return tuple(parts)
            self.pos += 1

    def value(self, path: Path) -> None:
        self.skip(newlines=False)
        if self.peek("{"):
            self.pos += 1
            self.items(path, "}")
        elif self.peek("["):
            self.pos += 1
            self.items(path, "]")
        elif self.peek('"') or self.peek("'"):
            self.string()
        else:
            while self.pos < len(self.text) and self.text[self.pos] not in ",]}\n#":
                self.pos += 1

    def items(self, path: Path, close: str) -> None:
        """Scan an inline table ("}") or array ("]"), recording each item's line."""
        index = 0
        while self.pos < len(self.text):
            self.skip(newlines=True)
            if self.peek(close):
                self.pos += 1
                return
            if self.peek(","):
                self.pos += 1
            elif close == "}":
                self.value(self.assignment(path))
            else:
                self.record(path + (index,))
                self.value(path + (index,))
                index += 1

    def string(self) -> None:
        quote = next(q for q in ('"""', "'''", '"', "'") if self.peek(q))
        self.pos += len(quote)
        while self.pos < len(self.text) and not self.peek(quote):
            self.pos += 2 if quote[0] == '"' and self.peek("\\") else 1
        self.pos += len(quote)
        while len(quote) == 3 and self.peek(quote[0]):  # up to two more quotes may close
            self.pos += 1
