"""strongSwan charon as an independent IKEv2 peer, one instance per network namespace.

A ``Charon`` runs one charon (Debian's 5.9.8 or the 6.0.6 that ``make peers`` builds into
/opt/strongswan6) inside a namespace the test created, with everything of its own: a
strongswan.conf (STRONGSWAN_CONF) that loads only the plugins named below, a SWANCTL_DIR
with swanctl.conf and credentials, a vici socket, a log file, and a private directory bound
over the one its pid file is compiled into (5.9.8: /var/run/charon.pid; 6.0.6: PREFIX/run),
inside a mount namespace of its own (``unshare -m``), so several charons run side by side.
The kernel has XFRM but no ESP here: charon's userspace data plane (kernel-libipsec) carries
ESP through a TUN device ``ipsec0``, with routes in table 220.

Connections are written to swanctl.conf from ``Connection``/``Child`` parameters and loaded
with ``swanctl --load-all --uri``; the test then drives charon through vici (the PyPI
package ``vici``) and waits on its events (``EventLog``) instead of sleeping.

A ``Charon`` stops the process it started by its pid and removes only the directory it
made. Logging at ``ike 4`` (``key_dump=True``) prints every IKE and Child SA key: tests only.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# what charon loads: libipsec first, so it, not kernel-netlink, owns the IPsec interface
_PLUGINS_5 = ("random nonce openssl aes sha1 sha2 hmac gcm kdf pem pkcs1 pkcs8 x509 pubkey "
              "constraints revocation socket-default kernel-libipsec kernel-netlink vici "
              "updown")
_PLUGINS_6 = ("random nonce openssl aes sha1 sha2 hmac gcm kdf ml pem pkcs1 pkcs8 x509 pubkey "
              "constraints revocation counters socket-default kernel-libipsec kernel-netlink "
              "vici updown")
_SWANCTL_PLUGINS = "pem pkcs1 pkcs8 x509 revocation constraints pubkey openssl random"
STRONGSWAN6_PREFIX = "/opt/strongswan6"
VICI_EVENTS = ("ike-updown", "child-updown", "ike-rekey", "child-rekey")


class CharonError(RuntimeError):
    pass


@dataclass(frozen=True)
class Peer:
    """One strongSwan installation: where its programs are and what it can do."""

    version: str
    charon: str
    swanctl: str
    plugin_dir: str
    plugins: str
    pid_dir: str  # where the pid file is compiled to go: bound over per instance
    stamp: str | None = None  # a file that exists once the build is complete

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def unavailable(self) -> str | None:
        """Why this peer cannot run here, or None if it can."""
        if os.geteuid() != 0:
            return "strongSwan tests need root (namespaces, mounts, TUN)"
        if self.stamp is not None and not os.path.exists(self.stamp):
            return (f"strongSwan {self.version} is not built in {STRONGSWAN6_PREFIX}: "
                    f"'make peers' builds it from ../shared/peers/ (set SHARED=DIR when the "
                    f"shared folder is elsewhere); its source was not there")
        for path in (self.charon, self.swanctl,
                     os.path.join(self.plugin_dir, "libstrongswan-kernel-libipsec.so")):
            if not os.path.exists(path):
                return f"strongSwan {self.version}: {path} is missing ('make peers' installs it)"
        for tool in ("unshare", "setpriv"):
            if shutil.which(tool) is None:
                return f"needs util-linux's '{tool}'"
        return None


DEBIAN = Peer("5.9.8", "/usr/lib/ipsec/charon", "/usr/sbin/swanctl",
              "/usr/lib/ipsec/plugins", _PLUGINS_5, "/run")
STRONGSWAN6 = Peer("6.0.6", f"{STRONGSWAN6_PREFIX}/libexec/ipsec/charon",
                   f"{STRONGSWAN6_PREFIX}/sbin/swanctl",
                   f"{STRONGSWAN6_PREFIX}/lib/ipsec/plugins", _PLUGINS_6,
                   f"{STRONGSWAN6_PREFIX}/run", f"{STRONGSWAN6_PREFIX}/.built-6.0.6")
PEERS = {"5.9.8": DEBIAN, "6.0.6": STRONGSWAN6}


# -- swanctl.conf ----------------------------------------------------------------------------

_BARE = re.compile(r"[A-Za-z0-9_.:/@%+,*\[\]-]+")


def conf_value(value: Any) -> str:
    """A strongswan.conf/swanctl.conf value: yes/no, comma lists, quoted when not bare."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return conf_value(",".join(str(v) for v in value))
    text = str(value)
    if _BARE.fullmatch(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def render(section: Mapping[str, Any], indent: int = 0) -> str:
    """Nested dicts as strongSwan's settings syntax; None values are left out."""
    pad = "    " * indent
    out = []
    for key, value in section.items():
        if value is None:
            continue
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", key):
            raise ValueError(f"not a strongSwan settings key: {key!r}")
        if isinstance(value, Mapping):
            out.append(f"{pad}{key} {{\n{render(value, indent + 1)}{pad}}}\n")
        else:
            out.append(f"{pad}{key} = {conf_value(value)}\n")
    return "".join(out)


@dataclass
class Child:
    """A Child SA (tunnel) of a connection: swanctl.conf ``children.<name>``."""

    local_ts: Sequence[str]
    remote_ts: Sequence[str]
    name: str = "net"
    esp_proposals: Sequence[str] = ("aes128gcm16",)
    mode: str = "tunnel"
    start_action: str = "none"  # none | trap | start (5.9.8's libipsec cannot trap)
    rekey_time: int | str = 0  # 0: charon never rekeys on its own
    life_time: int | str | None = None
    rekey_bytes: int = 0
    rekey_packets: int = 0
    dpd_action: str | None = None  # clear | trap | restart
    close_action: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def section(self) -> dict[str, Any]:
        return {"local_ts": list(self.local_ts), "remote_ts": list(self.remote_ts),
                "esp_proposals": list(self.esp_proposals), "mode": self.mode,
                "start_action": self.start_action, "rekey_time": self.rekey_time,
                "life_time": self.life_time, "rekey_bytes": self.rekey_bytes,
                "rekey_packets": self.rekey_packets, "dpd_action": self.dpd_action,
                "close_action": self.close_action, **self.extra}


@dataclass
class Connection:
    """An IKE SA and its children: swanctl.conf ``connections.<name>`` plus its secret.

    ``psk`` makes a shared secret between ``local_id`` and ``remote_id``; with
    ``local_auth = "pubkey"`` name the certificate files (``local_certs``, loaded from
    Charon.load's ``certs``). ``encap = True`` is ESP in UDP (all 5.9.8's libipsec can do);
    raw ESP needs ``encap = False`` and a Charon with ``raw_esp=True`` (6.0.6).
    """

    local_addrs: Sequence[str]
    remote_addrs: Sequence[str]
    local_id: str
    remote_id: str
    children: Sequence[Child]
    name: str = "gw"
    psk: str | None = None
    local_auth: str = "psk"
    remote_auth: str = "psk"
    local_certs: Sequence[str] = ()
    remote_cacerts: Sequence[str] = ()
    proposals: Sequence[str] = ("aes128gcm16-prfsha256-x25519",)
    encap: bool = True
    fragmentation: str | None = None  # yes | accept | force | no
    rekey_time: int | str = 0
    reauth_time: int | str = 0
    over_time: int | str | None = None
    dpd_delay: int | str = 0
    dpd_timeout: int | str | None = None
    unique: str = "no"
    mobike: bool = False
    keyingtries: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    extra_local: dict[str, Any] = field(default_factory=dict)
    extra_remote: dict[str, Any] = field(default_factory=dict)

    def section(self) -> dict[str, Any]:
        local: dict[str, Any] = {"auth": self.local_auth, "id": self.local_id,
                                 "certs": list(self.local_certs) or None, **self.extra_local}
        remote: dict[str, Any] = {"auth": self.remote_auth, "id": self.remote_id,
                                  "cacerts": list(self.remote_cacerts) or None,
                                  **self.extra_remote}
        return {"version": 2, "local_addrs": list(self.local_addrs),
                "remote_addrs": list(self.remote_addrs), "proposals": list(self.proposals),
                "encap": self.encap, "fragmentation": self.fragmentation,
                "rekey_time": self.rekey_time, "reauth_time": self.reauth_time,
                "over_time": self.over_time, "dpd_delay": self.dpd_delay,
                "dpd_timeout": self.dpd_timeout, "unique": self.unique,
                "mobike": self.mobike, "keyingtries": self.keyingtries, **self.extra,
                "local": local, "remote": remote,
                "children": {c.name: c.section() for c in self.children}}


def swanctl_conf(connections: Sequence[Connection]) -> str:
    secrets: dict[str, Any] = {}
    for conn in connections:
        if conn.psk is not None:
            secrets[f"ike-{conn.name}"] = {"id-local": conn.local_id,
                                           "id-remote": conn.remote_id, "secret": conn.psk}
    names = [c.name for c in connections]
    if len(set(names)) != len(names):
        raise ValueError(f"connection names repeat: {names}")
    return render({"connections": {c.name: c.section() for c in connections},
                   "secrets": secrets})


# -- vici events -----------------------------------------------------------------------------

def decoded(value: Any) -> Any:
    """A vici message with bytes turned into str, recursively."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {k: decoded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decoded(v) for v in value]
    return value


@dataclass
class Event:
    kind: str  # ike-updown, child-updown, ike-rekey, child-rekey
    body: dict[str, Any]  # {"up": "yes" (updown only), ike_sa_name: {...}}, decoded
    at: float  # time.monotonic() when it was read

    @property
    def up(self) -> bool:
        """For *-updown: the SA came up (vici adds ``up = yes``), else it went down."""
        return self.body.get("up") == "yes"

    def ike_sas(self) -> dict[str, dict[str, Any]]:
        """IKE SA name -> its section (for *-rekey: {"old": ..., "new": ...})."""
        return {k: v for k, v in self.body.items() if isinstance(v, dict)}

    def children(self) -> dict[str, dict[str, Any]]:
        """Child SA (name-uniqueid) -> its section, over every IKE SA in the event."""
        out: dict[str, dict[str, Any]] = {}
        for sa in self.ike_sas().values():
            out.update(sa.get("child-sas") or {})
        return out


class EventLog:
    """Every vici event of the given kinds from the moment it is opened, in order.

    A thread reads a vici session of its own; ``wait`` returns the earliest matching event
    that no earlier ``wait`` returned (so two waits for child-updown get two events, and
    the order of waits for different kinds does not matter), or raises. Open it BEFORE the
    action whose events it waits for.
    """

    def __init__(self, socket_path: str, kinds: Iterable[str] = VICI_EVENTS,
                 describe: Callable[[], str] = lambda: "") -> None:
        import vici

        self.kinds = list(kinds)
        self.events: list[Event] = []
        self._describe = describe
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._taken: set[int] = set()  # indices wait() has returned
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(socket_path)
        self._session = vici.Session(sock)
        self._listen = self._session.listen(self.kinds, timeout=0.2)
        first = next(self._listen)  # registers every kind, then times out: (None, None)
        if first[0] is not None:
            self._add(*first)
        self._thread = threading.Thread(target=self._read, name="vici-events", daemon=True)
        self._thread.start()

    def _add(self, kind: bytes | str, body: Any) -> None:
        kind = kind.decode() if isinstance(kind, bytes) else kind
        with self._cond:
            self.events.append(Event(kind, decoded(body), time.monotonic()))
            self._cond.notify_all()

    def _read(self) -> None:
        try:
            for kind, body in self._listen:
                if self._stop.is_set():
                    break
                if kind is not None:
                    self._add(kind, body)
        except BaseException as e:  # charon went away: waiters are told
            with self._cond:
                self._error = e
                self._cond.notify_all()

    def wait(self, kind: str, match: Callable[[Event], bool] = lambda e: True,
             timeout: float = 10.0, after: int | None = None) -> Event:
        """The earliest ``kind`` event not yet returned (at index >= ``after``, if given)
        for which ``match`` holds."""
        deadline = time.monotonic() + timeout
        start = after or 0
        with self._cond:
            while True:
                for i in range(start, len(self.events)):
                    event = self.events[i]
                    if i not in self._taken and event.kind == kind and match(event):
                        self._taken.add(i)
                        return event
                start = len(self.events)
                left = deadline - time.monotonic()
                if self._error is not None or left <= 0:
                    seen = [f"{e.kind}{' up' if e.up else ''}" for e in self.events]
                    why = f" (reader stopped: {self._error!r})" if self._error else ""
                    raise CharonError(f"no matching {kind} event within {timeout:.1f} s{why};"
                                      f" events so far: {seen}\n{self._describe()}")
                self._cond.wait(left)

    def wait_up(self, kind: str = "child-updown", timeout: float = 10.0) -> Event:
        return self.wait(kind, lambda e: e.up, timeout)

    def wait_down(self, kind: str = "child-updown", timeout: float = 10.0) -> Event:
        return self.wait(kind, lambda e: not e.up, timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        try:
            if not self._thread.is_alive():
                self._listen.close()  # unregisters, while the socket is still open
        except Exception:  # charon is gone: nothing to unregister from
            pass
        try:
            self._session.transport.close()
        except OSError:
            pass

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- charon ----------------------------------------------------------------------------------

class Charon:
    """One charon in namespace ``ns``; its files live in a directory it makes and removes."""

    def __init__(self, ns: str, name: str = "charon", peer: Peer = DEBIAN, *,
                 key_dump: bool = False, log_levels: Mapping[str, int] | None = None,
                 raw_esp: bool = False, settings: Mapping[str, Any] | None = None) -> None:
        if raw_esp and peer.major < 6:
            raise ValueError(f"raw ESP needs strongSwan 6 (kernel-libipsec of {peer.version} "
                             f"does ESP in UDP only)")
        self.ns = ns
        self.name = name
        self.peer = peer
        self.levels = {"default": 1, "ike": 1, "knl": 1, "cfg": 1, "net": 1}
        if key_dump:  # prints nonces, DH secrets, SKEYSEED, SK_* and Child SA keys
            self.levels.update(ike=4, chd=4)
        self.levels.update(log_levels or {})
        self.raw_esp = raw_esp
        self.settings = dict(settings or {})  # extra charon.* settings, nested dicts
        # short, private, ours: the vici socket path must fit sockaddr_un
        self.dir = tempfile.mkdtemp(prefix=f"espd-charon-{name}-")
        os.chmod(self.dir, 0o700)
        self.swanctl_dir = os.path.join(self.dir, "swanctl")
        self.run_dir = os.path.join(self.dir, "run")
        self.conf = os.path.join(self.dir, "strongswan.conf")
        self.log_path = os.path.join(self.dir, "charon.log")
        self.out_path = os.path.join(self.dir, "charon.out")
        self.socket_path = os.path.join(self.dir, "charon.vici")
        self.uri = f"unix://{self.socket_path}"
        self.proc: subprocess.Popen | None = None
        self._closed = False
        for sub in ("x509", "x509ca", "x509crl", "private"):
            os.makedirs(os.path.join(self.swanctl_dir, sub))
        os.makedirs(self.run_dir)

    # -- files -------------------------------------------------------------------------------

    def strongswan_conf(self) -> str:
        plugins: dict[str, Any] = {"vici": {"socket": self.uri}}
        if self.raw_esp:
            plugins["kernel-libipsec"] = {"raw_esp": True}
        charon: dict[str, Any] = {
            "load": self.peer.plugins,
            "install_routes": True,
            "install_virtual_ip": False,
            "retransmit_tries": 3,
            "plugins": plugins,
            "syslog": {"daemon": {"default": -1}},
            "filelog": {"main": {"path": self.log_path, "time_format": "%H:%M:%S",
                                 "ike_name": True, "flush_line": True, **self.levels}},
        }
        for key, value in self.settings.items():
            if isinstance(value, Mapping) and isinstance(charon.get(key), dict):
                charon[key] = {**charon[key], **value}
            else:
                charon[key] = value
        return ("# written by tests/support/strongswan.py for one test's charon\n"
                + render({"charon": charon, "swanctl": {"load": _SWANCTL_PLUGINS}}))

    def env(self) -> dict[str, str]:
        return dict(os.environ, STRONGSWAN_CONF=self.conf, SWANCTL_DIR=self.swanctl_dir)

    # -- process -----------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise CharonError(f"{self.name}: not started")
        return self.proc.pid

    def start(self, timeout: float = 15.0) -> Charon:
        """Start charon and wait until its vici socket answers."""
        if self.alive():
            raise CharonError(f"{self.name}: already running (pid {self.pid})")
        with open(self.conf, "w") as f:
            f.write(self.strongswan_conf())
        # own mount namespace, own pid-file directory; every exec in place, so the pid we
        # get is charon's: ip netns exec -> setpriv -> unshare -> sh -> charon. The
        # parent-death signal outlives those execs: if this process (strictly: the thread
        # that calls start) dies without close(), charon gets SIGTERM, not an orphan's life
        script = 'mkdir -p "$1" && mount --bind "$0" "$1" && exec "$2"'
        argv = ["ip", "netns", "exec", self.ns, "setpriv", "--pdeathsig", "TERM",
                "unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                self.run_dir, self.peer.pid_dir, self.peer.charon]
        with open(self.out_path, "ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=out, env=self.env(), start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise CharonError(f"{self.name}: charon {self.peer.version} exited with "
                                  f"{self.proc.returncode} at start\n{self.describe()}")
            if os.path.exists(self.socket_path):
                try:
                    self.request("version")
                    return self
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise CharonError(f"{self.name}: no vici socket {self.socket_path} within "
                                  f"{timeout:.0f} s\n{self.describe()}")
            time.sleep(0.02)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM by pid, SIGKILL if it lingers; the exit status (None: never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a dead peer: no DELETE goes out."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            assert self.proc is not None
            self.proc.wait(5)

    def restart(self, timeout: float = 15.0) -> Charon:
        """Start again after ``kill()`` or ``stop()``, and load what ``load`` last wrote
        (a fresh charon knows no connections): the peer coming back after a crash."""
        self.stop()
        self.start(timeout)
        conf = os.path.join(self.swanctl_dir, "swanctl.conf")
        if os.path.exists(conf):
            self.swanctl("--load-all", "--noprompt", "--file", conf)
        return self

    def close(self) -> None:
        """Stop charon and remove the directory this instance made."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Charon:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def log(self, tail: int | None = None) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            return ""
        return text if tail is None else text[-tail:]

    def wait_log(self, pattern: str, timeout: float = 10.0, start: int = 0) -> re.Match:
        """The first match of ``pattern`` in charon.log (from character ``start`` on), for
        what vici has no event for (a notify sent, an authentication failure)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.log(), start)
            if found:
                return found
            if time.monotonic() > deadline:
                raise CharonError(f"{self.name}: no log line matching {pattern!r} within "
                                  f"{timeout:.1f} s\n{self.describe()}")
            time.sleep(0.02)

    def describe(self, tail: int = 3000) -> str:
        try:
            with open(self.out_path, encoding="utf-8", errors="replace") as f:
                out = f.read()[-1000:]
        except OSError:
            out = ""
        return (f"--- {self.name} ({self.peer.version}, ns {self.ns}) charon.log tail:\n"
                f"{self.log(tail)}" + (f"--- stdout/stderr:\n{out}" if out.strip() else ""))

    # -- configuration -----------------------------------------------------------------------

    def load(self, connections: Sequence[Connection], *, certs: Iterable[str] = (),
             cacerts: Iterable[str] = (), keys: Iterable[str] = (),
             crls: Iterable[str] = ()) -> str:
        """Write swanctl.conf (and copy credential files in), ``swanctl --load-all``."""
        for paths, sub in ((certs, "x509"), (cacerts, "x509ca"), (keys, "private"),
                           (crls, "x509crl")):
            for path in paths:
                target = os.path.join(self.swanctl_dir, sub, os.path.basename(path))
                shutil.copyfile(path, target)
                os.chmod(target, 0o600)
        conf = os.path.join(self.swanctl_dir, "swanctl.conf")
        with open(os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(swanctl_conf(connections))
        return self.swanctl("--load-all", "--noprompt", "--file", conf)

    def swanctl(self, *args: str, timeout: float = 30.0) -> str:
        """Run swanctl against this charon's vici socket; its output, or CharonError."""
        argv = [self.peer.swanctl, *args, "--uri", self.uri]
        try:
            r = subprocess.run(argv, capture_output=True, text=True, env=self.env(),
                               timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise CharonError(f"{self.name}: {' '.join(argv)}: no answer in {timeout} s") from e
        if r.returncode != 0:
            raise CharonError(f"{self.name}: {' '.join(argv)} failed ({r.returncode}):\n"
                              f"{(r.stdout + r.stderr).strip()[-2000:]}\n{self.describe()}")
        return r.stdout

    # -- vici --------------------------------------------------------------------------------

    def session(self):
        """A new vici session (close its transport when done)."""
        import vici

        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(30)
        sock.connect(self.socket_path)
        return vici.Session(sock)

    def request(self, command: str, message: Mapping[str, Any] | None = None) -> dict:
        session = self.session()
        try:
            return decoded(session.request(command, dict(message) if message else None))
        finally:
            session.transport.close()

    def _streamed(self, command: str, message: Mapping[str, Any], what: str) -> list[str]:
        import vici.exception

        session = self.session()
        lines: list[str] = []
        try:
            for entry in session.streamed_request(command, "control-log", dict(message)):
                lines.append(decoded(entry).get("msg", ""))
        except vici.exception.CommandException as e:
            raise CharonError(f"{self.name}: {what} failed: {e}\ncharon said:\n"
                              + "\n".join(lines[-30:]) + f"\n{self.describe()}") from e
        finally:
            session.transport.close()
        return lines

    def events(self, kinds: Iterable[str] = VICI_EVENTS) -> EventLog:
        return EventLog(self.socket_path, kinds, self.describe)

    def initiate(self, child: str = "net", ike: str | None = None,
                 timeout: float = 10.0) -> list[str]:
        """Initiate ``child`` (and its IKE SA); returns once it is up, raises if it fails."""
        message = {"child": child, "timeout": int(timeout * 1000), "loglevel": 1}
        if ike:
            message["ike"] = ike
        return self._streamed("initiate", message, f"initiate {child}")

    def terminate(self, ike: str | None = None, child: str | None = None,
                  timeout: float = 10.0, force: bool = False) -> list[str]:
        """Delete an SA; ``force`` drops it at once without waiting for the peer's answer
        (a peer that is gone or restarted never answers)."""
        message: dict[str, Any] = {"timeout": int(timeout * 1000), "loglevel": 1}
        if force:  # with a timeout, charon would still wait that long for the answer
            message = {"force": "yes", "loglevel": 1}
        if ike:
            message["ike"] = ike
        if child:
            message["child"] = child
        return self._streamed("terminate", message, f"terminate {ike or child}")

    def rekey(self, ike: str | None = None, child: str | None = None) -> dict:
        """Start a rekey (asynchronous: wait on ike-rekey/child-rekey events)."""
        message = {"ike": ike} if ike else {"child": child}
        return self.request("rekey", message)

    def list_sas(self) -> list[dict[str, Any]]:
        """``list-sas``: one {ike_sa_name: {...}} dict per IKE SA, decoded."""
        session = self.session()
        try:
            return [decoded(sa) for sa in session.list_sas()]
        finally:
            session.transport.close()

    def child_sas(self) -> list[dict[str, Any]]:
        """Every installed Child SA of every IKE SA."""
        out = []
        for entry in self.list_sas():
            for sa in entry.values():
                out.extend((sa.get("child-sas") or {}).values())
        return out


# -- the standard site-to-site shape (support.netns.Topology's addresses) --------------------

SITES = {  # (side, IP version) -> (gateway's underlay address, protected network, identity)
    ("a", 4): ("192.0.2.1", "10.1.0.0/16", "gwa"),
    ("b", 4): ("192.0.2.2", "10.2.0.0/16", "gwb"),
    ("a", 6): ("fd00:ff::1", "fd00:1::/64", "gwa"),
    ("b", 6): ("fd00:ff::2", "fd00:2::/64", "gwb"),
}


def site_to_site(side: str, psk: str | None, ip: int = 4, **kwargs: Any) -> Connection:
    """Gateway ``side`` ("a" or "b") of the Topology: 10.1.0.0/16 <-> 10.2.0.0/16 over
    192.0.2.1 <-> 192.0.2.2 (``ip=6``: fd00:1::/64 <-> fd00:2::/64 over fd00:ff::1 <->
    fd00:ff::2), identities gwa/gwb; Child ``net``. Keyword arguments are Connection
    fields; ``esp_proposals``, ``start_action``, ``child_rekey_time`` and ``child`` (a dict
    of Child fields) shape the Child SA."""
    other = "b" if side == "a" else "a"
    local, local_net, local_id = SITES[(side, ip)]
    remote, remote_net, remote_id = SITES[(other, ip)]
    child_fields = dict(kwargs.pop("child", {}))
    for key, target in (("esp_proposals", "esp_proposals"), ("start_action", "start_action"),
                        ("child_rekey_time", "rekey_time")):
        if key in kwargs:
            child_fields[target] = kwargs.pop(key)
    child = Child(local_ts=[local_net], remote_ts=[remote_net], **child_fields)
    fields: dict[str, Any] = dict(local_addrs=[local], remote_addrs=[remote], local_id=local_id,
                                  remote_id=remote_id, children=[child], psk=psk)
    fields.update(kwargs)
    return Connection(**fields)


# -- key material from charon's own log (key_dump=True), for tshark ----------------------------

_DUMP_HEAD = re.compile(r"\] (?:<[^>]*> )?(.+?) => (\d+) bytes @ 0x[0-9a-f]+$")
_DUMP_LINE = re.compile(r"\] (?:<[^>]*> )?\s*\d+: (.*)$")
_PROPOSAL = re.compile(r"selected proposal: (IKE|ESP):(\S+)")
_SA_SPI = re.compile(r"SPI 0x([0-9a-f]{8}), src (\S+) dst (\S+)")
_ALGS = {"AES_GCM_16": "aes-gcm-16", "AES_GCM_12": "aes-gcm-12", "AES_GCM_8": "aes-gcm-8",
         "AES_CBC": "aes-cbc", "AES_CCM_16": "aes-ccm-16",
         "HMAC_SHA1_96": "hmac-sha1-96", "HMAC_SHA2_256_128": "hmac-sha2-256-128",
         "HMAC_SHA2_384_192": "hmac-sha2-384-192", "HMAC_SHA2_512_256": "hmac-sha2-512-256"}


def _parse_suite(text: str) -> tuple[str | None, int, str | None]:
    """'AES_GCM_16_128/PRF_...' -> ("aes-gcm-16", 128, None); CBC+HMAC names the integ."""
    encr, bits, integ = None, 0, None
    for part in text.split("/"):
        head, _, size = part.rpartition("_")
        if head in _ALGS and size.isdigit() and head.startswith("AES"):
            encr, bits = _ALGS[head], int(size)
        elif part in _ALGS:
            integ = _ALGS[part]
    return encr, bits, integ


def dumps_in(log: str) -> list[tuple[str, Any]]:
    """charon's hex dumps ("NAME => N bytes") as (name, bytes), with the selected
    proposals ("proposal", (IKE|ESP, suite)) and SA lines ("sa", (spi, src, dst)) in order."""
    out: list[tuple[str, Any]] = []
    lines = log.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        head = _DUMP_HEAD.search(line)
        if head:
            name, size = head.group(1), int(head.group(2))
            data = bytearray()
            while len(data) < size and i < len(lines):
                body = _DUMP_LINE.search(lines[i])
                if not body:
                    break
                data += bytes.fromhex(" ".join(body.group(1).split()[:min(16, size - len(data))]))
                i += 1
            out.append((name, bytes(data)))
            continue
        proposal = _PROPOSAL.search(line)
        if proposal:
            out.append(("proposal", (proposal.group(1), proposal.group(2))))
            continue
        sa = _SA_SPI.search(line)
        if sa:
            out.append(("sa", (int(sa.group(1), 16), sa.group(2), sa.group(3))))
    return out


def first_sa_keys(charon: Charon):
    """(IkeSaKeys, [EspSaKeys, EspSaKeys]) of charon's first IKE SA and the Child SA it set
    up in IKE_AUTH, from its ``key_dump`` log and list-sas (the IKE SPIs). Enough to let
    tshark decrypt a capture of a charon<->charon run; espd's own key log is the general
    tool."""
    from support.tshark import ESP_AUTH, ESP_ENCR, IKE_ENCR, IKE_INTEG, EspSaKeys, IkeSaKeys

    sas = [sa for entry in charon.list_sas() for sa in entry.values()]
    if not sas:
        raise CharonError(f"{charon.name}: no IKE SA to take keys for")
    ike = sas[0]
    initiator_addr = ike["local-host"] if ike.get("initiator") == "yes" else ike["remote-host"]
    dumps = dumps_in(charon.log())
    suites = [v for k, v in dumps if k == "proposal"]
    keys = {k: v for k, v in reversed(dumps) if isinstance(v, bytes)}  # first wins
    try:
        ike_suite = next(s for kind, s in suites if kind == "IKE")
        esp_suite = next(s for kind, s in suites if kind == "ESP")
        encr, bits, integ = _parse_suite(ike_suite)
        ike_keys = IkeSaKeys(bytes.fromhex(ike["initiator-spi"]),
                             bytes.fromhex(ike["responder-spi"]), keys["Sk_ei secret"],
                             keys["Sk_er secret"], IKE_ENCR[(encr, bits)],
                             keys.get("Sk_ai secret", b""), keys.get("Sk_ar secret", b""),
                             IKE_INTEG[integ])
        esp_encr, _, esp_integ = _parse_suite(esp_suite)
        esp = []
        for spi, src, dst in [v for k, v in dumps if k == "sa"][:2]:
            side = "initiator" if src == initiator_addr else "responder"
            esp.append(EspSaKeys(src, dst, spi, ESP_ENCR[esp_encr],
                                 keys[f"encryption {side} key"], ESP_AUTH[esp_integ],
                                 keys.get(f"integrity {side} key", b"")))
    except (StopIteration, KeyError) as e:
        raise CharonError(f"{charon.name}: no key dump for {e} in its log (start it with "
                          f"key_dump=True)") from e
    return ike_keys, esp


def close_with_espd(daemon, charon: Charon, workdir) -> None:
    """The end of an espd-against-charon test: stop espd (if it was started; its exit
    status must be 0), print both logs for the report, close charon, remove `workdir`."""
    try:
        if daemon is not None:
            status = daemon.stop()
            print(daemon.log())
            assert status == 0
    finally:
        print(charon.describe(tail=3000))
        charon.close()
        shutil.rmtree(workdir, ignore_errors=True)
