"""Persisted sequence-number reservations: no (SPI, sequence number) is sent twice.

Manually keyed SAs keep their keys across restarts; with AES-GCM and ChaCha20-Poly1305
the sequence number is the nonce, so starting again at 1 would repeat nonces under the same
key (VPP's CVE-2022-46397). espd therefore reserves sequence space ahead of use:

  - one file per outbound SA, ``STATE_DIR/seq/out-<peer>-<SPI>``, holds the highest
    sequence number the data plane may use;
  - it is written (temporary file, fsync, rename, fsync of the directory) BEFORE the data
    plane is allowed to use the numbers (``Dataplane.reserve``);
  - a stored limit never goes down (``reserve`` keeps the higher of the two), except by
    ``release`` at a clean stop, and then only from the exact limit this process wrote;
  - every write has a temporary file of its own (unique name, O_EXCL), so two writers can
    never rename each other's half-written file into place;
  - after any restart, kill -9 included, the SA resumes above the stored number.

A file that cannot be read as a number is an error, never a zero: guessing low would risk
nonce reuse.
"""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path

DEFAULT_RESERVE_BLOCK = 1 << 24  # sequence numbers per reservation (16.7 M packets)
MIN_RESERVE_BLOCK = 16
TEST_RESERVE_BLOCK = "ESPD_TEST_RESERVE_BLOCK"


def _reserve_block() -> int:
    """Sequence numbers per reservation: DEFAULT_RESERVE_BLOCK.

    TEST HOOK, never for production: the environment variable ESPD_TEST_RESERVE_BLOCK
    (MIN_RESERVE_BLOCK .. DEFAULT_RESERVE_BLOCK) makes blocks tiny, so that a test sees
    ``seq_reserve`` events constantly (tests/netns/test_races.py)."""
    text = os.environ.get(TEST_RESERVE_BLOCK)
    if not text:
        return DEFAULT_RESERVE_BLOCK
    value = int(text)
    if not MIN_RESERVE_BLOCK <= value <= DEFAULT_RESERVE_BLOCK:
        raise ValueError(f"{TEST_RESERVE_BLOCK}={text} is outside {MIN_RESERVE_BLOCK}.."
                         f"{DEFAULT_RESERVE_BLOCK}")
    return value


RESERVE_BLOCK = _reserve_block()


class SequenceStoreError(OSError):
    pass


class SequenceStore:
    def __init__(self, state_dir: str) -> None:
        self.dir = Path(state_dir) / "seq"
        self._lock = threading.Lock()  # read-compare-write of one file is one step
        self._tmp_names = itertools.count(1)
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            probe = self.dir / ".probe"
            self._write(probe, 0)
            probe.unlink()
        except OSError as e:
            raise SequenceStoreError(
                f"state_dir {state_dir} is not writable ({e.strerror or e}); espd keeps "
                "outbound sequence-number reservations there so that a restart never reuses "
                "a (key, sequence number) pair: set [daemon] state_dir to a writable "
                "directory (systemd: StateDirectory=espd gives /var/lib/espd)"
            ) from e

    def path(self, peer: str, spi: int) -> Path:
        return self.dir / f"out-{peer.replace(':', '_')}-{spi:08x}"

    def last(self, peer: str, spi: int) -> int:
        """The highest number ever reserved for this SA (0 when it never sent)."""
        path = self.path(peer, spi)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return 0
        except OSError as e:
            raise SequenceStoreError(f"cannot read sequence reservation {path}: {e}") from e
        try:
            value = int(text.strip())
        except ValueError:
            value = -1
        if value < 0:
            raise SequenceStoreError(
                f"sequence reservation {path} is corrupt ({text[:40]!r}); espd will not guess "
                "(a guess too low reuses nonces): write a number at least as high as the "
                "peer's last received sequence number into it, or use a new SPI and key"
            )
        return value

    def reserve(self, peer: str, spi: int, limit: int) -> int:
        """Persist `limit` durably, unless a higher limit is stored already (it stands: a
        stored limit never goes down). Returns the limit now on disk: only then may the data
        plane use numbers up to it."""
        with self._lock:
            stored = self.last(peer, spi)
            if limit <= stored:
                return stored
            self._write(self.path(peer, spi), limit)
            return limit

    def release(self, peer: str, spi: int, *, used: int, granted: int) -> bool:
        """At a clean stop, with no worker running: lower the stored limit to `used`, the
        last number the SA sent, so a restart resumes right after it. Only if the file
        still holds `granted`, the limit this process persisted: anything else there was
        written by someone else and stands. Returns whether it was lowered."""
        with self._lock:
            if not 0 <= used <= granted or self.last(peer, spi) != granted:
                return False
            self._write(self.path(peer, spi), used)
            return True

    def _write(self, path: Path, value: int) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(self._tmp_names)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                os.write(fd, f"{value}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
