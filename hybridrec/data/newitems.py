"""New items for cold-start scoring: JSON lines or CSV with at least item_id and title."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from hybridrec.data.idmap import normalize_id
from hybridrec.errors import DataError


def read_new_items(path: str | Path) -> pd.DataFrame:
    """Read new items; a missing file, bad line or missing column is a DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        bad_line = path.read_bytes()[: exc.start].count(b"\n") + 1
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
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: malformed JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{n}: expected a JSON object")
            rows.append(row)
            lines.append(n)
        frame = pd.DataFrame(rows)
    else:
        try:
            frame = pd.read_csv(path, dtype={"item_id": str})
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
    frame["item_id"] = ids
    return frame


def _is_scalar(value) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool) and value == value  # not NaN
