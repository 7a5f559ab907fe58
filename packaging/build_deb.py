"""Build build/espd_VERSION_ARCH.deb: dpkg-deb over the same install as "make install".

    python3 packaging/build_deb.py [--wheelhouse DIR] [--out DIR] [--lintian]

Why dpkg-deb and not debhelper: the package is "make install DESTDIR=stage PREFIX=/usr"
plus a control file, conffiles, md5sums and three short maintainer scripts, so what the
test suite installs from the Makefile is byte for byte what the package ships. debhelper's
helpers would mostly be switched off here: dh_python3 has no say over a private venv,
dh_installsystemd would enable and start the unit unless told not to (the scripts in
packaging/debian/ are what it writes with --no-enable --no-start), and a source package
(debian/rules, dpkg-buildpackage) adds a second build of the same tree. What debhelper
would compute is computed with Debian's own tools: dpkg-shlibdeps for Depends, strip as
dh_strip does, gzip -9n for man pages and the changelog, md5sums.

The venv inside must not name the build: the install rewrites the staged paths, strips
ELF objects (their debug info names the build directory), leaves byte-compiling to
postinst, and this script refuses a staging tree that still mentions the stage or the
checkout anywhere.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import install  # noqa: E402  (the sibling module, stdlib only)

SOURCE = install.SOURCE
DEBIAN = SOURCE / "packaging/debian"
CONFFILES = ("/etc/espd/espd.toml",)
INTERPRETER_PACKAGE = "python3.{minor}"  # the venv's bin/python -> /usr/bin/python3.X


class BuildError(Exception):
    pass


def stage_tree(stage: Path, wheelhouse: Path) -> None:
    if stage.exists():
        shutil.rmtree(stage)
    code = install.main(["install", "--destdir", str(stage), "--prefix", "/usr",
                         "--sysconfdir", "/etc", "--unitdir", "/lib/systemd/system",
                         "--wheelhouse", str(wheelhouse), "--no-pyc", "--strip",
                         "--no-manifest", "--dropin", "doc"])
    if code:
        raise BuildError("the staged install failed (above)")
    doc = stage / "usr/share/doc/espd"
    shutil.copy(DEBIAN / "copyright", doc / "copyright")
    (doc / "changelog.gz").write_bytes(
        gzip.compress((DEBIAN / "changelog").read_bytes(), compresslevel=9, mtime=0))
    overrides = stage / "usr/share/lintian/overrides"
    overrides.mkdir(parents=True)
    shutil.copy(DEBIAN / "lintian-overrides", overrides / "espd")
    for path in [stage, *stage.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    (stage / "etc/espd").chmod(0o750)


def check_clean(stage: Path) -> None:
    """No file may name the staging directory or the checkout (shebangs, pyvenv.cfg,
    RECORD files, debug info)."""
    needles = [str(stage).encode(), str(SOURCE).encode()]
    bad = []
    for path in stage.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            bad += [f"{path.relative_to(stage)} names {n.decode()}" for n in needles if n in data]
        elif path.is_symlink() and any(n.decode() in os.readlink(path) for n in needles):
            bad.append(f"{path.relative_to(stage)} links into the build")
    if bad:
        raise BuildError("the package would point at build paths:\n  " + "\n  ".join(bad))


def check_copyright(stage: Path) -> None:
    """Every bundled distribution must be named in debian/copyright."""
    text = (DEBIAN / "copyright").read_text()
    site = next((stage / "usr/lib/espd/lib").glob("python3*/site-packages"))
    missing = []
    for info in sorted(site.glob("*.dist-info")):
        name = info.name.split("-")[0].lower()
        if name != "espd" and f"site-packages/{name}" not in text:
            missing.append(name)
    if missing:
        raise BuildError(f"packaging/debian/copyright names no 'Files:' stanza for "
                         f"{', '.join(missing)}; add one with its copyright and license")


def changelog_version() -> str:
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    return first.split("(")[1].split(")")[0]


def shlib_depends(stage: Path) -> str:
    elves = [str(p) for p in stage.rglob("*.so*")
             if p.is_file() and p.read_bytes()[:4] == b"\x7fELF"]
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "debian").mkdir()
        (Path(work) / "debian/control").write_text(
            "Source: espd\n\nPackage: espd\nArchitecture: any\n")
        out = subprocess.run(["dpkg-shlibdeps", "-O", *[f"-e{e}" for e in elves]], cwd=work,
                             check=True, capture_output=True, text=True).stdout
    return out.strip().split("=", 1)[1]


def python_minor(stage: Path) -> str:
    lib = next((stage / "usr/lib/espd/lib").glob("python3.*"))
    return lib.name.removeprefix("python3.")


def control(stage: Path, version: str, arch: str) -> None:
    meta = stage / "DEBIAN"
    meta.mkdir()
    size = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file()
               and not p.is_symlink()) // 1024 + 1
    depends = f"{shlib_depends(stage)}, {INTERPRETER_PACKAGE.format(minor=python_minor(stage))}"
    text = (DEBIAN / "control").read_text()
    for key, value in (("@VERSION@", version), ("@ARCH@", arch), ("@SIZE@", str(size)),
                       ("@DEPENDS@", depends)):
        text = text.replace(key, value)
    (meta / "control").write_text(text)
    (meta / "conffiles").write_text("".join(f"{c}\n" for c in CONFFILES))
    for script in ("postinst", "prerm", "postrm"):
        shutil.copy(DEBIAN / script, meta / script)
        (meta / script).chmod(0o755)
    sums = []
    for path in sorted(stage.rglob("*")):
        relative = path.relative_to(stage)
        if path.is_file() and not path.is_symlink() and relative.parts[0] != "DEBIAN" \
                and f"/{relative}" not in CONFFILES:
            sums.append(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {relative}\n")
    (meta / "md5sums").write_text("".join(sums))
    for name in ("control", "conffiles", "md5sums"):
        (meta / name).chmod(0o644)


def lintian(deb: Path) -> int:
    """Run lintian at every level; each finding prints, overridden ones as "O:" (their
    reasons are in packaging/debian/lintian-overrides)."""
    result = subprocess.run(["lintian", "--pedantic", "-I", "--show-overrides",
                             "--tag-display-limit", "0", str(deb)], text=True,
                            capture_output=True)
    print(result.stdout, end="")
    print(result.stderr, end="", file=sys.stderr)
    return result.returncode


def build(wheelhouse: Path, out: Path, compression: str = "xz") -> Path:
    """The .deb in ``out``; ``compression`` only trades size for time (the tests: gzip)."""
    version = install.version()
    if changelog_version() != version:
        raise BuildError(f"packaging/debian/changelog starts at {changelog_version()} but "
                         f"pyproject.toml says {version}; add a changelog entry for {version}")
    arch = subprocess.run(["dpkg", "--print-architecture"], check=True, capture_output=True,
                          text=True).stdout.strip()
    stage = (out / "deb" / f"espd_{version}_{arch}").resolve()
    stage_tree(stage, wheelhouse)
    check_clean(stage)
    check_copyright(stage)
    control(stage, version, arch)
    deb = out / f"espd_{version}_{arch}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", str(stage),
                    str(deb)], check=True, stdout=subprocess.DEVNULL)
    print(f"built {deb}")
    return deb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheelhouse", default=str(SOURCE / "build/wheelhouse"))
    parser.add_argument("--out", default=str(SOURCE / "build"))
    parser.add_argument("--lintian", action="store_true", help="run lintian on the result")
    args = parser.parse_args(argv)
    os.umask(0o022)
    try:
        deb = build(Path(args.wheelhouse), Path(args.out))
    except BuildError as e:
        print(f"make deb: {e}", file=sys.stderr)
        return 1
    return lintian(deb) if args.lintian else 0


if __name__ == "__main__":
    sys.exit(main())
