"""Line of every key, table header and array element in a TOML text tomllib accepted
(tomllib gives no positions; espd's errors name FILE:LINE).
"""

from __future__ import annotations

import bisect
import re
import tomllib

Path = tuple[str | int, ...]


class TomlLines:
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
