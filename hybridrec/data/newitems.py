"""New items for cold-start scoring: JSON lines or CSV with at least item_id and title."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from hybridrec.data.idmap import normalize_id
from hybridrec.data.io import PANDAS_CUTS_NUL, PANDAS_NA_WORDS, decode_json_line, json_id_text, open_bounded
from hybridrec.errors import DataError
from hybridrec.limits import bad_line_message


def read_new_items(path: str | Path) -> pd.DataFrame:
    """Read new items; a missing file, bad line or missing column is a DataError naming it."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    try:
        with open_bounded(path) as fh:  # bounded: line length and gzip expansion (hybridrec/limits.py)
            raw = fh.read()
    except (EOFError, OSError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{bad_line}: not UTF-8 text") from None
    if not text.strip():
        raise DataError(f"{path}: empty file")
    is_csv = path.suffix.lower() not in (".jsonl", ".json", ".ndjson")
    if not is_csv:
        rows, lines = [], []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = decode_json_line(line)  # an id such as 1e400 stays as written, not "inf"
            except ValueError as exc:
                raise DataError(f"{path}:{n}: malformed JSON ({bad_line_message(exc)})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{n}: expected a JSON object")
            if "item_id" in row:
                row["item_id"] = json_id_text(row["item_id"])
            rows.append(row)
            lines.append(n)
        frame = pd.DataFrame(rows)
    else:
        try:
            header = pd.read_csv(io.StringIO(text), nrows=0).columns
            # an item_id of "NaN", "None" or "null" is an id: only an empty cell is missing
            na = {c: [""] if c == "item_id" else sorted(PANDAS_NA_WORDS) for c in header}
            engine = "python" if PANDAS_CUTS_NUL and "\x00" in text else "c"  # io.PANDAS_CUTS_NUL says why
            frame = pd.read_csv(
                io.StringIO(text), dtype={"item_id": str}, keep_default_na=False, na_values=na, engine=engine
            )
            lines = list(range(2, len(frame) + 2))  # after the header (quoted newlines aside)
        except (pd.errors.ParserError, ValueError) as exc:
            raise DataError(f"{path}: cannot parse CSV ({str(exc).splitlines()[0]})") from None
    for col in ("item_id", "title"):
        if col not in frame.columns:
            raise DataError(f"{path}: missing column {col!r}")
    if frame.empty:
        raise DataError(f"{path}: no items (only a header)")
    ids = [normalize_id(v) if _is_scalar(v) else "" for v in frame["item_id"]]
    for line_no, value in zip(lines, ids, strict=True):
        if not value:
            raise DataError(f"{path}:{line_no}: item_id is missing or not a single value")
        if "\x00" in value:
            raise DataError(f"{path}:{line_no}: item_id holds a NUL byte")
    frame["item_id"] = ids
    return frame


def _is_scalar(value) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool) and value == value  # not NaN
