"""Install espd the way an operator runs it, or remove exactly what an install put there.

    python3 packaging/install.py install   [--destdir D] [--prefix P] [options]
    python3 packaging/install.py uninstall [--destdir D] [--prefix P]

What an install lays out (paths as on the target; DESTDIR is only a staging root):

    PREFIX/lib/espd/            a virtual environment made from the SYSTEM Python
                                (/usr/bin/python3.X, never pyenv's or a home directory's:
                                the unit's ProtectHome=yes hides those), holding espd, its
                                C data plane and its PyPI dependencies from the wheelhouse
    PREFIX/bin/espd             -> ../lib/espd/bin/espd
    UNITDIR/espd.service        ExecStart= and friends pointing at PREFIX/bin/espd
    UNITDIR/espd.service.d/notify-reload.conf   only where systemd >= 253 (else: docs)
    PREFIX/share/man/man8/espd.8.gz, man5/espd.toml.5.gz
    PREFIX/share/bash-completion/completions/espd
    PREFIX/share/doc/espd/      examples (config, IOS, drop-in), Grafana and Prometheus files
    SYSCONFDIR/espd/espd.toml   0600, a config without crypto maps; never overwritten

Every path an install creates goes into PREFIX/lib/espd/install-manifest; uninstall removes
those and nothing else. The config stays if it changed since the install (it then holds the
operator's keys), and so does every directory that still holds something the install did
not put there. The Debian package (build_deb.py) uses the same install without a manifest:
dpkg keeps its own.

Only the standard library: this runs under the system Python before any venv exists.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent
MANIFEST = "install-manifest"
HIDDEN_PYTHON = ("/home/", "/root/", "/tmp/", "/var/tmp/", "/run/user/")  # ProtectHome etc.
SYSTEMD_UNIT_PATH = ("/etc/systemd/system", "/usr/local/lib/systemd/system",
                     "/lib/systemd/system", "/usr/lib/systemd/system")
SHIPPED_UNIT_BINDIR = "/usr/local/bin"  # what systemd/espd.service names; rewritten per PREFIX
NOTIFY_RELOAD_SYSTEMD = 253  # Type=notify-reload appeared in systemd 253


class InstallError(Exception):
    """The install cannot go on; the message says why and what to do."""


def version() -> str:
    with open(SOURCE / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["version"]


@dataclass(frozen=True)
class Layout:
    """Where things go on the target; ``stage(path)`` is that path under DESTDIR."""

    destdir: str
    prefix: str
    sysconfdir: str
    unitdir: str

    @property
    def libdir(self) -> str:
        return f"{self.prefix}/lib/espd"

    @property
    def bindir(self) -> str:
        return f"{self.prefix}/bin"

    @property
    def mandir(self) -> str:
        return f"{self.prefix}/share/man"

    @property
    def docdir(self) -> str:
        return f"{self.prefix}/share/doc/espd"

    @property
    def completiondir(self) -> str:
        return f"{self.prefix}/share/bash-completion/completions"

    @property
    def confdir(self) -> str:
        return f"{self.sysconfdir}/espd"

    def stage(self, path: str) -> Path:
        return Path(self.destdir + path) if self.destdir else Path(path)


class Manifest:
    """What this install created: ``kind<TAB>target path<TAB>sha256`` lines, in the order
    made (so directories come before what is in them)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.entries: list[tuple[str, str, str]] = []

    def made_dirs(self, path: str) -> None:
        """Create ``path`` and its missing parents, recording each one created."""
        missing = []
        target = Path(path)
        while target != target.parent and not self.layout.stage(str(target)).exists():
            missing.append(target)
            target = target.parent
        for directory in reversed(missing):
            self.layout.stage(str(directory)).mkdir(mode=0o755)
            self.entries.append(("dir", str(directory), "-"))

    def add(self, kind: str, path: str) -> None:
        staged = self.layout.stage(path)
        digest = "-" if kind in ("dir", "link") else _sha256(staged)
        self.entries.append((kind, path, digest))

    def write(self) -> None:
        path = f"{self.layout.libdir}/{MANIFEST}"
        lines = [f"{kind}\t{target}\t{digest}\n" for kind, target, digest in self.entries]
        lines.append(f"file\t{path}\t-\n")
        self.layout.stage(path).write_text("".join(lines))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- install ---

def install(layout: Layout, python: str, wheelhouse: Path, *, pyc: bool, strip: bool,
            manifest: bool, dropin: str) -> None:
    interpreter = _system_python(python)
    venv = layout.stage(layout.libdir)
    old = venv / MANIFEST
    if old.exists():
        print(f"removing the previous install listed in {layout.libdir}/{MANIFEST}")
        uninstall(layout)
    elif venv.exists():
        raise InstallError(f"{venv} exists but holds no {MANIFEST}: it was not made by "
                           f"'make install'; remove it yourself or pick another PREFIX")
    if layout.destdir:
        os.makedirs(layout.destdir, exist_ok=True)
    record = Manifest(layout)
    _venv(layout, record, interpreter, wheelhouse, pyc=pyc, strip=strip)
    _command(layout, record)
    _unit(layout, record, dropin)
    _man_pages(layout, record)
    _completion(layout, record)
    _docs(layout, record)
    _config(layout, record)
    if manifest:
        record.write()
    if layout.unitdir not in SYSTEMD_UNIT_PATH:
        print(f"note: systemd does not look in {layout.unitdir}; pass "
              f"UNITDIR=/etc/systemd/system, or link the unit there")
    print(f"espd {version()} installed under {layout.destdir or '/'} "
          f"(venv {layout.libdir}, from {interpreter})")


def _system_python(python: str) -> str:
    """The versioned system interpreter (/usr/bin/python3.11) behind ``python``."""
    probe = subprocess.run(
        [python, "-c", "import sys; print(sys.prefix == sys.base_prefix, "
         "f'{sys.version_info[0]}.{sys.version_info[1]}', sys.base_prefix)"],
        check=True, capture_output=True, text=True).stdout.split()
    plain, minor, base = probe[0] == "True", probe[1], probe[2]
    interpreter = f"{base}/bin/python{minor}"
    real = os.path.realpath(interpreter)
    if not plain:
        raise InstallError(f"{python} is a virtual environment's Python; pass the system one, "
                           f"e.g. PYTHON=/usr/bin/python3")
    if real.startswith(HIDDEN_PYTHON) or not os.access(interpreter, os.X_OK):
        raise InstallError(f"{python} is {real}, which the unit cannot run (ProtectHome=yes "
                           f"and PrivateTmp=yes hide it); use Debian's: PYTHON=/usr/bin/python3")
    return interpreter


def _venv(layout: Layout, record: Manifest, interpreter: str, wheelhouse: Path, *,
          pyc: bool, strip: bool) -> None:
    record.made_dirs(str(Path(layout.libdir).parent))
    record.entries.append(("dir", layout.libdir, "-"))
    venv = layout.stage(layout.libdir)
    subprocess.run([interpreter, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip = sorted(Path("/usr/share/python-wheels").glob("pip-*.whl"))
    if not pip:
        raise InstallError("no pip wheel in /usr/share/python-wheels; apt-get install "
                           "python3-venv")
    wheels = sorted(wheelhouse.glob(f"espd-{version()}-*.whl"))
    if not wheels:
        raise InstallError(f"no espd {version()} wheel in {wheelhouse}; run 'make wheelhouse'")
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INPUT": "1",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    # pip runs from Debian's wheel under the venv's own interpreter: no pip in the venv.
    # By name, not by path: a path would be recorded in direct_url.json.
    subprocess.run([str(venv / "bin/python"), f"{pip[-1]}/pip", "install", "--quiet",
                    "--no-index", "--find-links", str(wheelhouse), "--no-compile",
                    "--no-warn-script-location", f"espd=={version()}"], check=True, env=env)
    _tidy_bin(layout, venv)
    if not any(p.is_file() for p in (venv / "include").rglob("*")):  # empty include/python3.X
        shutil.rmtree(venv / "include")
    if layout.destdir:
        _unstage_paths(layout, venv)
    if strip:
        _strip(venv)
    if pyc:
        _compile(layout, venv, interpreter)
    for directory, dirs, files in os.walk(venv):
        for name in sorted(dirs) + sorted(files):
            full = Path(directory) / name
            kind = "link" if full.is_symlink() else "dir" if full.is_dir() else "file"
            record.add(kind, "/" + str(full.relative_to(layout.stage("/"))))


def _tidy_bin(layout: Layout, venv: Path) -> None:
    """Keep espd and the interpreter links only: the activate scripts and the bundled
    packages' own commands (pyroute2's ss2, cffi-gen-src, ...) are not what espd ships.
    The interpreter links become relative, so the tree does not depend on its root."""
    bindir = venv / "bin"
    for path in sorted(bindir.iterdir()):
        if path.name == "espd":
            continue
        if not path.name.startswith("python"):
            path.unlink()
        elif path.is_symlink() and os.path.isabs(os.readlink(path)):
            target = os.readlink(path)
            path.unlink()
            path.symlink_to(os.path.relpath(target, f"{layout.libdir}/bin"))


def _unstage_paths(layout: Layout, venv: Path) -> None:
    """Scripts and pyvenv.cfg name the venv by where it was made: make that the target."""
    staged, target = str(venv).encode(), layout.libdir.encode()
    for path in [venv / "pyvenv.cfg", *sorted((venv / "bin").iterdir())]:
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if staged in data:
            path.write_bytes(data.replace(staged, target))


def _strip(venv: Path) -> None:
    """Strip ELF objects as dh_strip does (no debug sections naming the build paths)."""
    for path in sorted(venv.rglob("*.so*")):
        if path.is_file() and not path.is_symlink() and path.read_bytes()[:4] == b"\x7fELF":
            subprocess.run(["strip", "--strip-unneeded", "--remove-section=.comment",
                            "--remove-section=.note", str(path)], check=True)
            path.chmod(0o644)


def _compile(layout: Layout, venv: Path, interpreter: str) -> None:
    """Byte-compile now: under ProtectSystem=strict espd could never write its .pyc files.
    The recorded source paths are the target's, not DESTDIR's."""
    staging = ["-s", layout.destdir, "-p", "/"] if layout.destdir else []
    site = venv / "lib"
    # The system interpreter: the venv's links are relative to the target, not the stage.
    subprocess.run([interpreter, "-m", "compileall", "-q", "-j", "0", *staging, str(site)],
                   check=True, stdout=subprocess.DEVNULL)


def _install_file(layout: Layout, record: Manifest, source: Path | bytes, target: str,
                  mode: int = 0o644, kind: str = "file") -> None:
    record.made_dirs(str(Path(target).parent))
    staged = layout.stage(target)
    data = source if isinstance(source, bytes) else source.read_bytes()
    staged.write_bytes(data)
    staged.chmod(mode)
    record.add(kind, target)


def _command(layout: Layout, record: Manifest) -> None:
    target = f"{layout.bindir}/espd"
    record.made_dirs(layout.bindir)
    staged = layout.stage(target)
    if staged.is_symlink() or staged.exists():
        raise InstallError(f"{target} exists and was not installed by this install; remove it "
                           f"(an old hand-made symlink?) and run make install again")
    staged.symlink_to(os.path.relpath(f"{layout.libdir}/bin/espd", layout.bindir))
    record.add("link", target)


def unit_text(bindir: str) -> bytes:
    """systemd/espd.service with its commands pointing at ``bindir``/espd."""
    text = (SOURCE / "systemd/espd.service").read_text()
    text = text.replace(f"{SHIPPED_UNIT_BINDIR}/espd ", f"{bindir}/espd ")
    return text.encode()


def _systemd_version() -> int:
    try:
        out = subprocess.run(["systemctl", "--version"], capture_output=True, text=True).stdout
    except OSError:
        return 0
    found = re.match(r"systemd (\d+)", out)
    return int(found.group(1)) if found else 0


def _unit(layout: Layout, record: Manifest, dropin: str) -> None:
    _install_file(layout, record, unit_text(layout.bindir), f"{layout.unitdir}/espd.service")
    source = SOURCE / "systemd/espd-notify-reload.conf"
    if dropin == "auto":
        dropin = "unit" if _systemd_version() >= NOTIFY_RELOAD_SYSTEMD else "doc"
    if dropin == "unit":
        _install_file(layout, record, source,
                      f"{layout.unitdir}/espd.service.d/notify-reload.conf")
    else:  # systemd 252 (Debian 12) would ignore Type=notify-reload and lose ExecReload=
        _install_file(layout, record, source, f"{layout.docdir}/examples/{source.name}")


def _gzip(path: Path) -> bytes:
    return gzip.compress(path.read_bytes(), compresslevel=9, mtime=0)


def _man_pages(layout: Layout, record: Manifest) -> None:
    for page in sorted((SOURCE / "man").glob("*.[0-9]")):
        section = page.suffix[1:]
        _install_file(layout, record, _gzip(page),
                      f"{layout.mandir}/man{section}/{page.name}.gz")


def _completion(layout: Layout, record: Manifest) -> None:
    _install_file(layout, record, SOURCE / "contrib/bash-completion/espd",
                  f"{layout.completiondir}/espd")


def _docs(layout: Layout, record: Manifest) -> None:
    examples = f"{layout.docdir}/examples"
    for name in ("espd.example.toml", "router.example.ios"):
        _install_file(layout, record, SOURCE / "config" / name, f"{examples}/{name}")
    for source in sorted((SOURCE / "contrib").rglob("*")):
        relative = source.relative_to(SOURCE / "contrib")
        if source.is_file() and relative.parts[0] in ("grafana", "prometheus"):
            _install_file(layout, record, source, f"{layout.docdir}/contrib/{relative}")


def _config(layout: Layout, record: Manifest) -> None:
    target = f"{layout.confdir}/espd.toml"
    if not layout.stage(layout.confdir).exists():
        record.made_dirs(layout.confdir)
        layout.stage(layout.confdir).chmod(0o750)  # keys live here
    if layout.stage(target).exists():
        print(f"kept {target}: it exists already (the example is in "
              f"{layout.docdir}/examples/espd.example.toml)")
        return
    _install_file(layout, record, SOURCE / "packaging/espd.toml", target, mode=0o600,
                  kind="config")


# --- uninstall ---

def uninstall(layout: Layout) -> None:
    """Remove what the manifest lists; say what stays and why."""
    listing = layout.stage(f"{layout.libdir}/{MANIFEST}")
    if not listing.exists():
        raise InstallError(f"no {layout.libdir}/{MANIFEST}: nothing installed by "
                           f"'make install' with PREFIX={layout.prefix} here")
    entries = [line.split("\t") for line in listing.read_text().splitlines() if line]
    kept = []
    for kind, target, digest in entries:
        staged = layout.stage(target)
        if kind == "config":
            if staged.exists() and _sha256(staged) != digest:
                kept.append(f"{target} (changed since the install; remove it yourself)")
                continue
        if kind in ("file", "config", "link") and (staged.is_symlink() or staged.exists()):
            staged.unlink()
    directories = [target for kind, target, _ in entries if kind == "dir"]
    for target in reversed(directories):
        staged = layout.stage(target)
        if not staged.is_dir():
            continue
        try:
            staged.rmdir()
        except OSError:
            left = ", ".join(sorted(p.name for p in staged.iterdir()))
            kept.append(f"{target}/ (holds what the install did not put there: {left})")
    for line in kept:
        print(f"kept {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("install", "uninstall"))
    parser.add_argument("--destdir", default="")
    parser.add_argument("--prefix", default="/usr/local")
    parser.add_argument("--sysconfdir", default="/etc")
    parser.add_argument("--unitdir", default="", help="default PREFIX/lib/systemd/system; "
                        "for PREFIX=/usr, /lib/systemd/system as on Debian 12")
    parser.add_argument("--python", default="/usr/bin/python3")
    parser.add_argument("--wheelhouse", default=str(SOURCE / "build/wheelhouse"))
    parser.add_argument("--no-pyc", action="store_true", help="leave byte-compiling to the "
                        "package's postinst")
    parser.add_argument("--strip", action="store_true")
    parser.add_argument("--no-manifest", action="store_true", help="dpkg keeps the list")
    parser.add_argument("--dropin", choices=("auto", "unit", "doc"), default="auto")
    args = parser.parse_args(argv)
    os.umask(0o022)
    prefix = args.prefix.rstrip("/") or "/"
    unitdir = args.unitdir or ("/lib/systemd/system" if prefix == "/usr"
                               else f"{prefix}/lib/systemd/system")
    destdir = os.path.abspath(args.destdir) if args.destdir else ""
    layout = Layout(destdir, prefix, args.sysconfdir.rstrip("/"), unitdir.rstrip("/"))
    try:
        if args.action == "install":
            install(layout, args.python, Path(args.wheelhouse), pyc=not args.no_pyc,
                    strip=args.strip, manifest=not args.no_manifest, dropin=args.dropin)
        else:
            uninstall(layout)
    except InstallError as e:
        print(f"espd {args.action}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
