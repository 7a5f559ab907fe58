"""An immutable ordered table of int keys that shares structure between versions.

The SA owner and the IKE engine hand readers on other threads (control socket, metrics)
an immutable snapshot replaced whole after every change (keying/owner.py, rule 3). With
a plain tuple every change copied every entry: O(SAs) per Child SA rekey, 20,000 views on
a 10,000-tunnel hub. A ``CowTable`` is never changed in place either, but ``set`` and
``remove`` return a new table that copies only the chunk it touches and the tuple of
chunks: O(CHUNK + entries / CHUNK) pointer copies, a few microseconds at 20,000 entries,
and the old table stays valid for whoever still reads it.

Invariants: every chunk is a non-empty pair (keys, values) of equal-length tuples with
keys sorted ascending; chunks are in key order and hold at most CHUNK entries; a chunk
below CHUNK // 4 entries (there being others) is merged into a neighbour. Iteration is in
key order: keys the owner gives out ascending (SA cookies) iterate in insertion order.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from typing import Generic, TypeVar

V = TypeVar("V")
CHUNK = 128  # entries per chunk at most; a chunk that grows past it splits in two
_Chunk = tuple[tuple[int, ...], tuple]


class CowTable(Generic[V]):
    __slots__ = ("_chunks", "_firsts", "_len")

    def __init__(self, chunks: tuple[_Chunk, ...] = (), firsts: tuple[int, ...] = (),
                 length: int = 0) -> None:
        self._chunks = chunks
        self._firsts = firsts  # each chunk's first key, for bisect
        self._len = length

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[V]:
        for _, values in self._chunks:
            yield from values

    def values(self) -> tuple[V, ...]:
        """Every value in key order (O(entries): for readers, not for each change)."""
        return tuple(self)

    def get(self, key: int, default: V | None = None) -> V | None:
        if not self._chunks:
            return default
        keys, values = self._chunks[max(0, bisect_right(self._firsts, key) - 1)]
        j = bisect_left(keys, key)
        return values[j] if j < len(keys) and keys[j] == key else default

    def __contains__(self, key: int) -> bool:
        sentinel = object()
        return self.get(key, sentinel) is not sentinel  # type: ignore[arg-type]

    def set(self, key: int, value: V) -> CowTable[V]:
        """A table with `key` set to `value` (added, or replaced where it is)."""
        if not self._chunks:
            return CowTable((((key,), (value,)),), (key,), 1)
        i = max(0, bisect_right(self._firsts, key) - 1)
        keys, values = self._chunks[i]
        j = bisect_left(keys, key)
        if j < len(keys) and keys[j] == key:
            chunk = (keys, values[:j] + (value,) + values[j + 1:])
            return self._splice(i, 1, (chunk,), self._len)
        keys = keys[:j] + (key,) + keys[j:]
        values = values[:j] + (value,) + values[j:]
        return self._splice(i, 1, _split(keys, values), self._len + 1)

    def remove(self, key: int) -> CowTable[V]:
        """A table without `key` (the same table if it is not there)."""
        if not self._chunks:
            return self
        i = max(0, bisect_right(self._firsts, key) - 1)
        keys, values = self._chunks[i]
        j = bisect_left(keys, key)
        if j >= len(keys) or keys[j] != key:
            return self
        keys, values = keys[:j] + keys[j + 1:], values[:j] + values[j + 1:]
        if len(keys) >= CHUNK // 4 or len(self._chunks) == 1:
            new = ((keys, values),) if keys else ()
            return self._splice(i, 1, new, self._len - 1)
        # too small: merged with a neighbour (split again if that makes it too big)
        if i + 1 < len(self._chunks):
            nkeys, nvalues = self._chunks[i + 1]
            merged = _split(keys + nkeys, values + nvalues)
        else:
            i -= 1
            pkeys, pvalues = self._chunks[i]
            merged = _split(pkeys + keys, pvalues + values)
        return self._splice(i, 2, merged, self._len - 1)

    def _splice(self, i: int, count: int, new: tuple[_Chunk, ...], length: int
                ) -> CowTable[V]:
        """A table whose chunks i .. i+count-1 are replaced by `new`."""
        return CowTable(self._chunks[:i] + new + self._chunks[i + count:],
                        self._firsts[:i] + tuple(keys[0] for keys, _ in new) +
                        self._firsts[i + count:], length)


def _split(keys: tuple[int, ...], values: tuple) -> tuple[_Chunk, ...]:
    if not keys:
        return ()
    if len(keys) <= CHUNK:
        return ((keys, values),)
    half = len(keys) // 2
    return ((keys[:half], values[:half]), (keys[half:], values[half:]))


EMPTY: CowTable = CowTable()
