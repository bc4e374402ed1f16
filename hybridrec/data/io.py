"""File access shared by the readers: every way a file can be unreadable becomes one DataError line."""

from __future__ import annotations

import gzip
import io
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hybridrec.data.dataset import ReadReport
from hybridrec.data.idmap import normalize_id
from hybridrec.errors import DataError
from hybridrec.limits import BoundedStream, bad_line_message, decoder, loads, max_expanded_bytes, max_line_bytes
from hybridrec.progress import get_logger

LOG = get_logger("data")

GZIP_MAGIC = b"\x1f\x8b"
# Epoch seconds beyond +-2**53 are not exact as floats and overflow int64 as milliseconds: never a real date.
MAX_EPOCH_SECONDS = float(2**53)
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


@dataclass
class SourceReport(ReadReport):
    """A ReadReport that also keeps rows dropped by design apart from bad rows.

    `skipped` holds bad rows only (malformed, out of range...), so `check` measures damage, not policy;
    `filtered` holds rows dropped on purpose (cancelled invoices, duplicate meta lines...); `counts`
    holds named figures of intermediate stages; `first_bad` says where the first bad row was.
    """

    filtered: Counter = field(default_factory=Counter)
    counts: dict[str, int] = field(default_factory=dict)
    first_bad: str = ""

    def bad(self, reason: str, where: str, n: int = 1) -> None:
        """Count a bad row and remember where the first one was (e.g. "line 17")."""
        if n:
            self.skip(reason, n)
            if not self.first_bad:
                self.first_bad = f"{where} ({reason})"

    def filter(self, reason: str, n: int = 1) -> None:
        if n:
            self.filtered[reason] += int(n)

    def check(self, max_bad_fraction: float) -> None:
        """Like ReadReport.check, but the message also names the first bad line."""
        try:
            super().check(max_bad_fraction)
        except DataError as exc:
            if not self.first_bad:
                raise
            raise DataError(f"{exc}; first bad row at {self.first_bad}") from None

    def summary(self) -> str:
        extra = [f"{v} filtered ({k})" for k, v in self.filtered.most_common()]
        base = super().summary()
        return base + (", " + ", ".join(extra) if extra else "")


def dataset_name(path: Path) -> str:
    """File name without .gz and one format suffix: Gift_Cards_5.json.gz -> Gift_Cards_5."""
    name = path.name
    if name.endswith(".gz"):
        name = name[:-3]
    return Path(name).stem if "." in name else name


def check_file(path: Path | str) -> Path:
    """A readable, non-empty regular file, or a DataError naming it."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    return path


def is_gzip(path: Path) -> bool:
    """Gzip by magic bytes, so a misnamed compressed file is still read."""
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def open_bounded(path: Path):
    """The file's bytes (decompressed when gzip), refusing a line over HYBRIDREC_MAX_LINE_BYTES and a gzip that
    expands beyond HYBRIDREC_MAX_GZIP_RATIO times its size (hybridrec/limits.py): one DataError naming the file."""
    gz = is_gzip(path)
    raw = gzip.open(path, "rb") if gz else open(path, "rb")
    bounded = BoundedStream(raw, path, max_line_bytes(), max_expanded_bytes(path) if gz else None, DataError)
    return io.BufferedReader(bounded, buffer_size=1 << 20)  # 3x faster line iteration


def _decode(raw: bytes, path: Path, lineno: int, encoding: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        byte = raw[exc.start : exc.start + 1].hex()
        raise DataError(
            f"{path}, line {lineno}: not valid {encoding.upper()} (byte 0x{byte} at column {exc.start + 1})"
        ) from None


def iter_lines(path: Path | str, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Lazily yield (1-based line number, decoded line without its line ending)."""
    path = check_file(path)
    lineno = 0
    try:
        with open_bounded(path) as fh:
            for raw in fh:
                lineno += 1
                yield lineno, _decode(raw, path, lineno, encoding).rstrip("\r\n")
    except _GZIP_ERRORS as exc:
        where = f"after line {lineno}" if lineno else "before the first line"
        raise DataError(f"{path}: truncated or corrupt gzip {where} ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if lineno == 0:
        raise DataError(f"{path}: file is empty")


def read_text(path: Path | str, encoding: str = "utf-8") -> str:
    """The whole decoded file; a bad byte is reported with its line number."""
    path = check_file(path)
    try:
        with open_bounded(path) as fh:
            raw = fh.read()
    except _GZIP_ERRORS as exc:
        raise DataError(f"{path}: truncated or corrupt gzip ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        lineno = raw.count(b"\n", 0, exc.start) + 1
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        byte = raw[exc.start : exc.start + 1].hex()
        raise DataError(
            f"{path}, line {lineno}: not valid {encoding.upper()} "
            f"(byte 0x{byte} at column {exc.start - line_start + 1})"
        ) from None
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    return text


def read_delimited(
    path: Path | str,
    sep: str,
    names: list[str],
    report: SourceReport,
    encoding: str = "utf-8",
    min_fields: int | None = None,
) -> pd.DataFrame:
    """Split a headerless delimited file into string columns plus `_line`; short lines are bad rows.

    Lines with more fields than `names` keep the first len(names); lines with fewer than `min_fields`
    (default: all) are counted as "malformed line" and skipped. Blank lines are ignored.
    """
    path = Path(path)
    need = len(names) if min_fields is None else min_fields
    rows: list[list[str]] = []
    lines: list[int] = []
    for lineno, line in iter_lines(path, encoding):
        if not line.strip():
            continue
        report.rows_read += 1
        parts = line.split(sep)
        if len(parts) < need:
            report.bad("malformed line", f"line {lineno}")
            continue
        parts = parts[: len(names)] + [""] * (len(names) - len(parts))
        rows.append(parts)
        lines.append(lineno)
    frame = pd.DataFrame(rows, columns=names, dtype=object)
    frame["_line"] = lines
    return frame


def numeric_column(
    frame: pd.DataFrame,
    column: str,
    report: SourceReport,
    reason: str = "malformed line",
    limit: float = float("inf"),
) -> pd.DataFrame:
    """Coerce one column of a read_delimited frame to float, dropping rows that are not finite numbers
    (NaN, inf) or whose magnitude exceeds `limit` (e.g. MAX_EPOCH_SECONDS for timestamps)."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() | ~np.isfinite(values.astype(float)) | (values.astype(float).abs() > limit)
    if bad.any():
        report.bad(reason, f"line {int(frame.loc[bad, '_line'].iloc[0])}", int(bad.sum()))
    frame = frame.loc[~bad].copy()
    frame[column] = values[~bad].astype(float)
    return frame


def c_parser_cuts_nul() -> bool:
    """Whether this pandas' C parser cuts a cell at a NUL byte ("N\x002" read as "N": another id, silently). pandas 2
    and 3.0 do (3.0.6, seen on the GPU machine), 3.1 does not; their Python parser keeps the byte, so the readers
    can count the row as bad. Asked of the parser itself, once, on a two-line CSV: a version rule was wrong once."""
    import io

    return pd.read_csv(io.StringIO("id\nN\x002\n"), dtype=str, engine="c")["id"].iloc[0] != "N\x002"


PANDAS_CUTS_NUL = c_parser_cuts_nul()


def has_nul_byte(path: Path) -> bool:
    """Whether the (decompressed) file holds a NUL byte anywhere: one pass in 1 MiB blocks."""
    with open_bounded(path) as fh:
        while block := fh.read(1 << 20):
            if b"\x00" in block:
                return True
    return False


def _suffixes(path: Path) -> str:
    name = path.name.lower()
    return name[:-3] if name.endswith(".gz") else name


def read_table(
    path: Path | str, sep: str | None = None, text_columns: Iterable[str] = (), **kwargs: Any
) -> pd.DataFrame:
    """CSV / TSV / JSON lines / Parquet by extension via pandas; any failure is a DataError naming the file.

    `sep` overrides the CSV separator (".tsv" defaults to tab); `text_columns` (ids) are read as text from
    CSV/TSV, where pandas would otherwise turn "007" into 7; other keyword arguments go to pandas.
    """
    path = check_file(path)
    kind = _suffixes(path)
    text_dtypes = {str(c): str for c in text_columns}
    try:
        if kind.endswith(".parquet") or kind.endswith(".pq"):
            kwargs.pop("dtype", None)
            return pd.read_parquet(path, columns=kwargs.pop("usecols", None), **kwargs)
        if kind.endswith(".jsonl") or kind.endswith(".ndjson") or kind.endswith(".json"):
            return _read_json_lines(path, list(text_dtypes), kwargs.get("dtype"))
        if sep is None:
            sep = "\t" if kind.endswith(".tsv") or kind.endswith(".tab") else ","
        if text_dtypes:
            kwargs["dtype"] = {**text_dtypes, **(kwargs.get("dtype") or {})}
            # ids are text: only an empty cell is missing, never the words pandas reads as NaN ("NaN", "None", "null")
            with open_bounded(path) as fh:
                header = list(pd.read_csv(fh, sep=sep, nrows=0, **kwargs).columns)
            kwargs["keep_default_na"] = False
            kwargs["na_values"] = {c: [""] if c in text_dtypes else sorted(PANDAS_NA_WORDS) for c in header}
        if PANDAS_CUTS_NUL and has_nul_byte(path):
            kwargs["engine"] = "python"
        with open_bounded(path) as fh:
            return pd.read_csv(fh, sep=sep, **kwargs)
    except UnicodeDecodeError:
        # pandas does not say where; read_text does.
        read_text(path, kwargs.get("encoding") or "utf-8")
        raise DataError(f"{path}: not valid UTF-8") from None
    except _GZIP_ERRORS as exc:
        raise DataError(f"{path}: truncated or corrupt gzip ({exc})") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except (ValueError, TypeError, OSError, pd.errors.ParserError) as exc:  # TypeError: a JSON line that is a list
        if kind.endswith((".jsonl", ".ndjson", ".json")):
            where = _first_bad_json_line(path)
            if where:
                raise DataError(f"{path}, {where}") from None
        raise DataError(f"{path}: cannot read as a table ({_first_line(exc)})") from None
    except Exception as exc:  # pyarrow raises its own family (ArrowInvalid...) for broken parquet
        if type(exc).__module__.startswith("pyarrow"):
            raise DataError(f"{path}: cannot read as parquet ({_first_line(exc)})") from None
        raise


def _first_bad_json_line(path: Path) -> str:
    """Where a JSON-lines file stops being JSON objects ("line 7: ..."), since pandas does not say."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            record = loads(line)
        except ValueError as exc:
            return f"line {lineno}: not valid JSON ({bad_line_message(exc)})"
        if not isinstance(record, dict):
            return f"line {lineno}: expected a JSON object, got {type(record).__name__}"
    return ""


try:  # the words pandas reads as NaN by default
    from pandas._libs.parsers import STR_NA_VALUES as PANDAS_NA_WORDS
except ImportError:  # pragma: no cover - a pandas that moved it
    PANDAS_NA_WORDS = set(
        "|#N/A|#N/A N/A|#NA|-1.#IND|-1.#QNAN|-NaN|-nan|1.#IND|1.#QNAN|<NA>|N/A|NA|NULL|NaN|None".split("|")
    )
    PANDAS_NA_WORDS |= {"n/a", "nan", "null"}


class JsonNumber(float):
    """A JSON number with a fraction or exponent that remembers how it was written: an id column keeps `1e400` or
    `1e3` as written, where float() would give inf or 1000."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> JsonNumber:
        number = super().__new__(cls, text)
        number.text = text
        return number


decode_json_line = decoder(parse_float=JsonNumber)  # numbers with a fraction or exponent keep their text


def json_id_text(value: Any) -> Any:
    """An id cell from JSON: a number with a fraction or exponent as written, anything else as it is."""
    return value.text if isinstance(value, JsonNumber) else value


def _read_json_lines(path: Path, text_columns: list[str], dtype: Any = None) -> pd.DataFrame:
    """JSON lines into a frame, one object per line: bounded lines, nesting and size (limits.py), ids as written
    (pandas' read_json would turn "007" into 7 and "NaN" into a missing value)."""
    records: list[dict] = []
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            record = decode_json_line(line)
        except ValueError as exc:
            raise DataError(f"{path}, line {lineno}: not valid JSON ({bad_line_message(exc)})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}, line {lineno}: expected a JSON object, got {type(record).__name__}")
        for column in text_columns:
            if isinstance(record.get(column), JsonNumber):
                record[column] = record[column].text
        records.append(record)
    frame = pd.DataFrame(records)
    for column in text_columns:  # a column of whole numbers only would become int64: ids stay text
        if column in frame.columns and frame[column].dtype != object:
            frame[column] = frame[column].astype(object)
    for column, kind in (dtype or {}).items():
        if column in frame.columns:
            frame[column] = frame[column].astype(kind)
    return frame


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def require_columns(frame: pd.DataFrame, columns: Iterable[str], path: Path | str) -> None:
    """Every named column is present, or a DataError naming the file and the first missing column."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        have = ", ".join(map(str, list(frame.columns)[:12]))
        raise DataError(f"{path}: missing column {missing[0]!r} (columns: {have})")


def distinct(cells: np.ndarray) -> list:
    """The distinct values of an object array in first-seen order. Not pd.unique: pandas 2's hash table cuts a
    string at its first NUL byte, so "7\x00" and "7" would be one value there (pandas 3 keeps them apart)."""
    return list(dict.fromkeys(cells.tolist()))


def id_column(values: pd.Series) -> pd.Series:
    """Raw ids as normalized strings, computed once per distinct value (fast on large columns)."""
    mapping = {u: normalize_id(u) for u in distinct(values.to_numpy(dtype=object))}
    return pd.Series([mapping[v] for v in values.to_numpy(dtype=object)], index=values.index, dtype=object)


def nul_ids(values: pd.Series) -> pd.Series:
    """Rows whose id holds a NUL byte: bad rows to count, never a new id (computed once per distinct value)."""
    cells = values.to_numpy(dtype=object)
    try:
        uniques = distinct(cells)
    except TypeError:  # lists among the ids (JSON, Parquet): not_single_ids counts those
        return pd.Series([isinstance(v, str) and "\x00" in v for v in cells], index=values.index, dtype=bool)
    bad = {u for u in uniques if isinstance(u, str) and "\x00" in u}
    if not bad:
        return pd.Series(False, index=values.index)
    return pd.Series([v in bad for v in cells.tolist()], index=values.index, dtype=bool)  # not isin: see distinct


def not_single_ids(values: pd.Series) -> pd.Series:
    """Rows whose id is a list or a mapping (JSON lines, Parquet): bad rows, never the id "['a', 'b']"."""
    if values.dtype != object:
        return pd.Series(False, index=values.index)
    many = (list, tuple, dict, set, np.ndarray)
    return pd.Series([isinstance(v, many) for v in values.to_numpy(dtype=object)], index=values.index, dtype=bool)


def text_value(value: Any) -> str:
    """A text cell: str, "" for None/NaN."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if value is pd.NA or value is pd.NaT:
        return ""
    return str(value)


def category_value(value: Any) -> str:
    """A categorical cell: a normalized string ("" for missing), so 3.0 and "3" agree."""
    text = text_value(value)
    return normalize_id(value) if text else ""


def list_value(value: Any, separator: str | None = None, clean: Callable[[str], str] = str.strip) -> list[str]:
    """A multi-valued cell: a list of non-empty, de-duplicated strings (never NaN)."""
    if value is None:
        return []
    if isinstance(value, str):
        parts: Iterable[Any] = value.split(separator) if separator else [value]
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, dict)):
        parts = value
    else:
        text = text_value(value)
        parts = [text] if text else []
    out: list[str] = []
    for part in parts:
        item = clean(text_value(part))
        if item and item not in out:
            out.append(item)
    return out


def interactions_frame(
    user_id: Iterable[str],
    item_id: Iterable[str],
    rating: Iterable[float],
    timestamp: Iterable[int],
    review: Iterable[str] | None = None,
    fold: Iterable[str] | None = None,
) -> pd.DataFrame:
    """The canonical interaction columns with their canonical dtypes."""
    frame = pd.DataFrame(
        {
            "user_id": pd.Series(list(user_id), dtype=object),
            "item_id": pd.Series(list(item_id), dtype=object),
            "rating": pd.Series(list(rating), dtype="float32"),
            "timestamp": pd.Series(list(timestamp), dtype="int64"),
        }
    )
    frame["review"] = pd.Series([""] * len(frame) if review is None else list(review), dtype=object)
    if fold is not None:
        frame["fold"] = pd.Series(list(fold), dtype=object)
    return frame


def check_coverage(
    report: SourceReport, what: str, interacted: int, matched: int, path_key: str, optional: bool = True
) -> None:
    """A metadata file that matches none of the interacted ids is some other dataset's file (a config's default
    left in place when only the interactions were overridden): a DataError naming it, its row count and the cure.
    One that matches under half of them is said loudly: a note in its report and a warning, before any training."""
    if interacted == 0 or matched * 2 >= interacted:
        return
    rows = f"{report.rows_read} rows"
    if matched == 0:
        cure = f"pass --data {path_key}=PATH with the {what} metadata of these interactions"
        cure += f", or --data {path_key}=none to read them without {what} metadata" if optional else ""
        raise DataError(
            f"{report.source}: none of its {rows} match the {interacted} {what}s in the interactions; {cure}"
        )
    note = f"only {matched} of {interacted} interacted {what}s have a row in this file ({rows}): is it their metadata?"
    report.notes.append(note)
    LOG.warning(f"{report.source}: {note}")


def fill_missing(
    table: pd.DataFrame,
    key: str,
    used: Iterable[str],
    defaults: dict[str, Any],
    report: SourceReport,
    what: str = "item",
    path_key: str | None = None,
    optional: bool = True,
) -> pd.DataFrame:
    """Give every interacted id a row: ids without metadata get empty defaults (and are counted). With `path_key`
    (the table came from that `data.paths` file) the share of interacted ids it matched is checked first."""
    known = set(table[key])
    interacted = pd.unique(pd.Series(list(used), dtype=object))
    missing = [i for i in interacted if i not in known]
    if path_key is not None:
        check_coverage(report, what, len(interacted), len(interacted) - len(missing), path_key, optional)
    if not missing:
        return table
    report.notes.append(f"{len(missing)} interacted {what}s had no metadata row (empty features)")
    report.counts[f"{what}s_without_metadata"] = len(missing)
    extra = pd.DataFrame({key: missing})
    for column, default in defaults.items():
        extra[column] = [list(default) if isinstance(default, list) else default for _ in missing]
    return pd.concat([table, extra[table.columns]], ignore_index=True)


def drop_duplicate_pairs(frame: pd.DataFrame, report: SourceReport, reason: str) -> pd.DataFrame:
    """Keep the latest interaction per (user, item) (the last line on equal timestamps); count the rest."""
    ordered = frame.sort_values("timestamp", kind="stable")
    dup = ordered.duplicated(["user_id", "item_id"], keep="last")
    if dup.any():
        first = ordered.loc[dup].iloc[0]
        report.bad(reason, f"user {first['user_id']!r} item {first['item_id']!r}", int(dup.sum()))
    return ordered.loc[~dup].sort_index().reset_index(drop=True)


def keep_interacted(
    table: pd.DataFrame, key: str, used: Iterable[str], report: SourceReport, what: str
) -> pd.DataFrame:
    """Keep only rows whose id occurs in the interactions; the rest are counted as filtered."""
    mask = table[key].isin(set(used))
    report.filter(f"{what} without interactions", int((~mask).sum()))
    return table.loc[mask].reset_index(drop=True)
