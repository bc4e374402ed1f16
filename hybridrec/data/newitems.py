"""New items for cold-start scoring: JSON lines or CSV with at least item_id and title."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from hybridrec.errors import DataError


def read_new_items(path: str | Path) -> pd.DataFrame:
    """Read new items; a missing file, bad line or missing column is a DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text") from None
    if not text.strip():
        raise DataError(f"{path}: empty file")
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        rows = []
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
        frame = pd.DataFrame(rows)
    else:
        try:
            frame = pd.read_csv(path, dtype={"item_id": str})
        except (pd.errors.ParserError, ValueError) as exc:
            raise DataError(f"{path}: cannot parse CSV ({str(exc).splitlines()[0]})") from None
    for col in ("item_id", "title"):
        if col not in frame.columns:
            raise DataError(f"{path}: missing column {col!r}")
    frame["item_id"] = frame["item_id"].astype(str)
    return frame
