"""Bounds on what hybridrec reads: line length, gzip expansion, JSON size and nesting.

A hostile or broken input (a gzip bomb, a 4 GB line, a manifest linked to /dev/zero, `[` nested 200,000 deep) ends
in one error line naming the file, not in a MemoryError or RecursionError traceback. The limits are environment
variables, so every reader (data files, `score-new` files, model folders) honours the same ones:

- `HYBRIDREC_MAX_LINE_BYTES` (default 64 MiB): the longest line of a text data file (CSV, TSV, JSON lines,
  MovieLens, Amazon, a `score-new` file), after decompression; 0 turns the check off;
- `HYBRIDREC_MAX_GZIP_RATIO` (default 100): a `.gz` input may expand to this many times its compressed size (and
  always to 64 MiB); 0 turns the check off;
- `HYBRIDREC_MAX_JSON_BYTES` (default 1 GiB): the largest whole JSON or YAML document (a model's manifest, id maps,
  `items.json`, `config.json`; a config file); 0 turns the check off.

JSON nesting is bounded by Python's recursion limit (about 1,000 levels): deeper is an error, never a traceback.
Nothing here imports numpy or pandas.
"""

from __future__ import annotations

import io
import json
import os
import reprlib
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hybridrec.errors import ConfigError, HybridrecError

MIB = 1 << 20
DEFAULTS = {
    "HYBRIDREC_MAX_LINE_BYTES": 64 * MIB,
    "HYBRIDREC_MAX_GZIP_RATIO": 100,
    "HYBRIDREC_MAX_JSON_BYTES": 1024 * MIB,
}
# a gzip may always expand to this much, whatever its ratio: small, very repetitive files are fine
GZIP_FLOOR_BYTES = 64 * MIB


def limit(name: str) -> int:
    """The current value of one limit (its environment variable, else the default)."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return DEFAULTS[name]
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"{name}: expected a non-negative integer, got {shown(raw)}")
    return value


def max_line_bytes() -> int:
    return limit("HYBRIDREC_MAX_LINE_BYTES") or sys.maxsize  # 0: no bound


def max_expanded_bytes(path: Path) -> int | None:
    """How many bytes a gzip file may decompress to (None: no bound)."""
    ratio = limit("HYBRIDREC_MAX_GZIP_RATIO")
    if not ratio:
        return None
    return max(GZIP_FLOOR_BYTES, ratio * path.stat().st_size)


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 6
_SHORT.maxlevel = 3


def shown(value: Any, width: int = 120) -> str:
    """A repr for an error message, cut short: a huge or deeply nested value never floods (or hangs) a message."""
    text = _SHORT.repr(value)  # bounded work: reprlib stops at a few items per level and a few levels
    return text if len(text) <= width else text[: width - 3] + "..."


def bad_line_message(exc: BaseException) -> str:
    """Why one JSON document failed to parse, in a few words."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return getattr(exc, "msg", None) or str(exc).splitlines()[0]


def loads(text: str | bytes, **hooks: Any) -> Any:
    """`json.loads`, with nesting too deep for the parser raised as ValueError("nested too deeply")."""
    try:
        return json.loads(text, **hooks)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def decoder(**hooks: Any) -> Callable[[str], Any]:
    """`loads` with hooks (parse_float=...), the decoder built once: json.loads(text, **hooks) builds one per call."""
    built = json.JSONDecoder(**hooks)

    def decode(text: str) -> Any:
        try:
            return built.decode(text)
        except RecursionError:
            raise ValueError("nested too deeply") from None

    return decode


def read_json_file(path: Path, error: type[HybridrecError], max_bytes: int | None = None) -> Any:
    """One whole JSON file: a regular file (not a device or a pipe), at most HYBRIDREC_MAX_JSON_BYTES, nesting
    within bounds; every failure is `error` naming the file."""
    cap = limit("HYBRIDREC_MAX_JSON_BYTES") if max_bytes is None else max_bytes
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path}: not a regular file")
        if cap and info.st_size > cap:
            raise error(f"{path}: {info.st_size} bytes, more than the {cap} allowed (HYBRIDREC_MAX_JSON_BYTES)")
        with open(path, "rb") as fh:
            raw = fh.read(cap + 1) if cap else fh.read()
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    if cap and len(raw) > cap:  # grew while being read
        raise error(f"{path}: more than the {cap} bytes allowed (HYBRIDREC_MAX_JSON_BYTES)")
    try:
        return loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise error(f"{path}: corrupted (not valid JSON: not UTF-8)") from None
    except ValueError as exc:
        raise error(f"{path}: corrupted (not valid JSON: {bad_line_message(exc)})") from None


class BoundedStream(io.RawIOBase):
    """A binary stream that refuses to yield a line longer than `max_line` bytes or more than `max_total` bytes in
    all (a gzip's expansion), raising `error` naming `path`. Cheap: it looks at one byte range per half-limit."""

    def __init__(self, raw: Any, path: Path, max_line: int, max_total: int | None, error: type[HybridrecError]) -> None:
        super().__init__()
        self._raw, self._path, self._error = raw, path, error
        self._max_line, self._max_total = max_line, max_total
        self._run = 0  # bytes since the last newline
        self._total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._raw.read(len(view))
        n = len(data)
        view[:n] = data
        self._check(bytes(data) if not isinstance(data, bytes) else data)
        return n

    def _check(self, data: bytes) -> None:
        self._total += len(data)
        if self._max_total is not None and self._total > self._max_total:
            raise self._error(
                f"{self._path}: decompresses to more than {self._max_total} bytes, over HYBRIDREC_MAX_GZIP_RATIO"
                " times its size: refused as a possible gzip bomb (raise HYBRIDREC_MAX_GZIP_RATIO to read it)"
            )
        self._run = longest_run_check(data, self._run, self._max_line, self._path, self._error)

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def longest_run_check(data: bytes, carry: int, max_line: int, path: Path, error: type[HybridrecError]) -> int:
    """Raise `error` when `data` (after `carry` bytes of an unfinished line) holds a line over `max_line` bytes;
    return the length of the unfinished line at its end."""
    first = data.find(b"\n")
    if first < 0:
        run = carry + len(data)
        if run > max_line:
            raise error(too_long(path, max_line))
        return run
    if carry + first > max_line:
        raise error(too_long(path, max_line))
    last = data.rfind(b"\n")
    if last - first > max_line:  # whole lines between: only a window of max_line/2 bytes with no newline can hide one
        step = max(1, max_line // 2)
        for start in range(first + 1, last, step):
            end = min(start + step, last)
            if data.find(b"\n", start, end) < 0:
                before = data.rfind(b"\n", 0, start)
                after = data.find(b"\n", end)
                if after - before - 1 > max_line:
                    raise error(too_long(path, max_line))
    tail = len(data) - last - 1
    if tail > max_line:
        raise error(too_long(path, max_line))
    return tail


def too_long(path: Path, max_line: int) -> str:
    return f"{path}: a line is longer than {max_line} bytes (raise HYBRIDREC_MAX_LINE_BYTES to read it)"
