"""What every file of a model folder must hold (types, shapes, ranges, finiteness, agreement between files).

The manifest's checksums catch accidents; a model is also a file people copy and download, so each reader checks
what it reads instead of trusting the checksum. Every failure is a ModelFileError naming the file. Used by
`artifacts.load_model` (every load, and every save before it is published).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hybridrec.display import DISPLAY_COLUMNS, DisplayFile, DisplayTable
from hybridrec.errors import ModelFileError
from hybridrec.limits import bad_line_message, loads, shown

MAX_SIZE = 2**31 - 1  # a count or width above this is not a model this library wrote
MAX_TEXT_WIDTH = 2 * 16384 + 1  # meta + review embeddings + a flag; no text encoder is wider than 16,384
MAX_HNSW_M = 10_000  # hnswlib caps M here (a larger M is silently lowered, and the file then disagrees)


def _bad(path: Path, why: str) -> ModelFileError:
    return ModelFileError(f"{path}: {why}")


def is_int(value: Any, low: int = 0, high: int = MAX_SIZE) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def is_number(value: Any) -> bool:
    """A finite int or float (an int too big for a float, such as 10 ** 400 in a JSON file, is not)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def ids_digest(ids: list[str]) -> str:
    """A digest of an id map's ids in row order; model.json keeps it, so ids edited or shifted by a row in
    id_maps/*.json (with the manifest rewritten) are caught instead of naming every answer wrongly."""
    return hashlib.sha256(json.dumps(ids, ensure_ascii=False).encode("utf-8", "surrogatepass")).hexdigest()


def id_map(path: Path, payload: Any, entity: str, scan: bool = True):
    """An IdMap from id_maps/<entity>s.json: a list of distinct, non-empty strings in normal form (as
    normalize_id writes them), in row order. Checked with C-level passes (types, one dict, one regex), never a
    Python step per id: a 5e5-item map loads in a fraction of a second. `scan` False: the types and the normal
    form are not checked again (a map an earlier load checked, unchanged since); distinct ids always are."""
    from hybridrec.data.idmap import IdMap, first_unnormalized, normalize_id

    if not isinstance(payload, dict) or not isinstance(payload.get("ids"), list):
        raise _bad(path, "not an id map (expected an object with a list of ids)")
    if payload.get("entity", entity) != entity:
        raise _bad(path, f"holds {payload.get('entity')!r} ids, expected {entity!r}")
    ids = payload["ids"]
    if scan and (set(map(type, ids)) - {str} or "" in ids):
        row, raw = next((k, v) for k, v in enumerate(ids) if not isinstance(v, str) or not v)
        shown = json.dumps(raw, ensure_ascii=False, default=str)[:60]
        raise _bad(path, f"row {row}: an id must be a non-empty string, got {shown}")
    try:
        mapping = IdMap.of_normalized(ids, entity=entity)
    except ValueError:
        raise _bad(path, "holds duplicate ids") from None
    changed = first_unnormalized(ids) if scan else None
    if changed is not None:
        shown = json.dumps(ids[changed], ensure_ascii=False)[:60]
        raise _bad(path, f"row {changed}: id {shown} is not as hybridrec writes ids ({normalize_id(ids[changed])!r})")
    return mapping


def model_json(path: Path, payload: Any) -> dict:
    """model.json's scalar fields, checked (the tower specs are checked by TowerSpec.from_json)."""
    if not isinstance(payload, dict):
        raise _bad(path, "not a JSON object")
    for key in ("feedback", "rating_range", "global_mean", "n_users", "n_items_trained", "item_spec", "user_spec"):
        if key not in payload:
            raise _bad(path, f"no {key!r}")
    if payload["feedback"] not in ("explicit", "implicit"):
        raise _bad(path, f"feedback {payload['feedback']!r} is not 'explicit' or 'implicit'")
    rating_range = payload["rating_range"]
    if rating_range is not None and not (
        isinstance(rating_range, list)
        and len(rating_range) == 2
        and all(is_number(v) for v in rating_range)
        and rating_range[0] <= rating_range[1]
    ):
        raise _bad(path, f"rating_range {rating_range!r} is not [low, high]")
    if not is_number(payload["global_mean"]):
        raise _bad(path, f"global_mean {payload['global_mean']!r} is not a finite number")
    for key in ("n_users", "n_items_trained", "n_items"):
        if key in payload and not is_int(payload[key]):
            raise _bad(path, f"{key} {payload[key]!r} is not a count")
    review = payload.get("review_slice")
    if review is not None and not (isinstance(review, list) and len(review) == 2 and all(is_int(v) for v in review)):
        raise _bad(path, f"review_slice {review!r} is not [start, end]")
    digests = payload.get("ids_sha256")
    if digests is not None and not (isinstance(digests, dict) and all(isinstance(v, str) for v in digests.values())):
        raise _bad(path, "ids_sha256 is not a mapping of digests")
    return payload


def specs(path: Path, model: dict):
    """The two tower specs of model.json, with the text width and review slice agreeing with each other."""
    from hybridrec.model.spec import TowerSpec

    try:
        item_spec, user_spec = TowerSpec.from_json(model["item_spec"]), TowerSpec.from_json(model["user_spec"])
    except (TypeError, ValueError, KeyError) as exc:
        raise _bad(path, f"a tower spec is not valid ({str(exc)[:200]})") from None
    width = item_spec.text_dim
    if width and (width % 2 != 1 or width > MAX_TEXT_WIDTH) or user_spec.text_dim:
        raise _bad(path, f"text_dim {width} is not 2 x an encoder width + 1 (at most {MAX_TEXT_WIDTH})")
    review = model.get("review_slice")
    expected = [(width - 1) // 2, width] if width else None
    if review != expected:
        raise _bad(path, f"review_slice {review!r} does not match text_dim {width} (expected {expected!r})")
    return item_spec, user_spec


def check_counts(root: Path, model: dict, entity: str, mapping, scan: bool = True) -> None:
    """model.json's count and id digest of one entity ("users" or "items") against its id map (the digest only
    when `scan`: files an earlier load checked, unchanged since, agree)."""
    where, ids_file = root / "model.json", root / f"id_maps/{entity}.json"
    key = "n_users" if entity == "users" else "n_items"
    if key in model and model[key] != len(mapping):
        raise _bad(where, f"{key} is {model[key]}, but {ids_file} holds {len(mapping)} ids")
    if entity == "items" and model["n_items_trained"] > len(mapping):
        raise _bad(where, f"n_items_trained {model['n_items_trained']} is more than the {len(mapping)} items")
    expected = (model.get("ids_sha256") or {}).get(entity)
    if scan and expected is not None and expected != ids_digest(mapping.raw_ids):
        raise _bad(ids_file, "does not match model.json (ids changed or reordered)")


def display_rows(path: Path, payload: Any, n_items: int) -> Sequence[list]:
    """items.json: one [title, price or null, category] row per item, stored by column (format 3: a DisplayTable
    over the three lists) or by row (format 2)."""
    if isinstance(payload, dict) and "by_column" in payload:
        return _display_by_column(path, payload["by_column"], n_items)
    if not isinstance(payload, dict) or not isinstance(payload.get("rows"), list):
        raise _bad(path, "not a display table (expected an object with a list of rows)")
    rows = payload["rows"]
    if len(rows) != n_items:
        raise _bad(path, f"holds {len(rows)} rows for {n_items} items")
    return [display_row(path, k, row) for k, row in enumerate(rows)]


def display_row(path: Path, k: int, row: Any) -> list:
    """Row k of a display table: [title, price or null, category]."""
    ok = (
        isinstance(row, list)
        and len(row) == 3
        and isinstance(row[0], str)
        and (row[1] is None or is_number(row[1]))
        and isinstance(row[2], str)
    )
    if not ok:
        raise _bad(path, f"row {k} is not [title, price or null, category]: {shown(row)}")
    return list(row)


def display_file(path: Path, data: Any, offsets: np.ndarray, n_items: int) -> DisplayFile:
    """display/rows.jsonl (format 4) over its checked offsets (display/offsets.npy, beside `path`): one row per
    item, inside the file, in order; each row is parsed and checked when read (`DisplayFile`)."""
    where = path.parent / "offsets.npy"
    if offsets.shape != (n_items + 1,) or not np.issubdtype(offsets.dtype, np.integer):
        raise _bad(where, f"is {offsets.dtype} {offsets.shape}, expected {n_items + 1} integer offsets")
    if offsets[0] != 0 or offsets[-1] != len(data) or (np.diff(offsets) < 1).any():
        raise _bad(where, f"the offsets do not cut {path.name} into {n_items} rows")

    def parse(k: int, raw: bytes) -> list:
        try:
            row = loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _bad(path, f"row {k} is not valid JSON ({bad_line_message(exc)})") from None
        return display_row(path, k, row)

    def table(raws: list[bytes]) -> DisplayTable:
        try:
            rows = loads(b"[" + b",".join(raws) + b"]")
        except (ValueError, UnicodeDecodeError) as exc:
            raise _bad(path, f"not one JSON row per offset ({bad_line_message(exc)})") from None
        if len(rows) != n_items:
            raise _bad(path, f"holds {len(rows)} rows for {n_items} items")
        checked = [display_row(path, k, row) for k, row in enumerate(rows)]  # each row checked once, here
        titles, prices, categories = ([row[j] for row in checked] for j in range(len(DISPLAY_COLUMNS)))
        return DisplayTable(titles, prices, categories)

    return DisplayFile(data, offsets, parse, table)


def _display_by_column(path: Path, columns: Any, n_items: int) -> DisplayTable:
    if not isinstance(columns, dict) or not all(isinstance(columns.get(c), list) for c in DISPLAY_COLUMNS):
        raise _bad(path, f"not a display table (expected a list per column: {', '.join(DISPLAY_COLUMNS)})")
    titles, prices, categories = (columns[c] for c in DISPLAY_COLUMNS)
    for name, values in zip(DISPLAY_COLUMNS, (titles, prices, categories)):
        if len(values) != n_items:
            raise _bad(path, f"the {name} column holds {len(values)} rows for {n_items} items")
    for name, values in (("title", titles), ("category", categories)):
        if set(map(type, values)) - {str}:
            row = next(k for k, v in enumerate(values) if not isinstance(v, str))
            raise _bad(path, f"row {row}: the {name} is not a string: {str(values[row])[:60]}")
    if set(map(type, prices)) - {int, float, type(None)}:
        row = next(k for k, v in enumerate(prices) if not (v is None or is_number(v)))
        raise _bad(path, f"row {row}: the price is not a number or null: {str(prices[row])[:60]}")
    try:
        numbers = np.array(prices, dtype=np.float64)  # null -> NaN
    except OverflowError:
        numbers = np.array([np.inf])
    if np.isinf(numbers).any() or int(np.isnan(numbers).sum()) != prices.count(None):
        raise _bad(path, "a price is not a finite number")
    return DisplayTable(titles, prices, categories)


def metrics(path: Path, payload: Any) -> dict:
    if not isinstance(payload, dict):
        raise _bad(path, f"expected a JSON object, got {type(payload).__name__}")
    return payload


def training(path: Path, payload: Any) -> None:
    """training.json: the epoch history (objects of numbers and names), the best epoch, whether it stopped early."""
    if not isinstance(payload, dict):
        raise _bad(path, f"expected a JSON object, got {type(payload).__name__}")
    history, best, stopped = payload.get("history"), payload.get("best_epoch"), payload.get("stopped_early")
    if not isinstance(history, list) or not all(
        isinstance(row, dict) and all(v is None or isinstance(v, (int, float, str)) for v in row.values())
        for row in history
    ):
        raise _bad(path, "history is not a list of epoch records")
    if not is_int(best) or not isinstance(stopped, bool):
        raise _bad(path, f"best_epoch {best!r} / stopped_early {stopped!r} are not a count and a boolean")


def index_json(path: Path, payload: Any, n_items: int, dim: int, space: str = "cosine") -> None:
    """index/index.json (the cosine index, one node per item) or index/trusted.json (`space` "ip": at most one node
    per item, and the finite, non-negative evidence half its vectors were weighed with): the hnswlib parameters,
    within what hnswlib honours, for the model's vectors."""
    if not isinstance(payload, dict):
        raise _bad(path, "not a JSON object")
    limits = {"dim": (1, MAX_SIZE), "M": (2, MAX_HNSW_M), "ef_construction": (1, MAX_SIZE), "count": (0, MAX_SIZE)}
    limits["ef_search"] = (1, 1_000_000)
    for key, (low, high) in limits.items():
        if not is_int(payload.get(key), low, high):
            raise _bad(path, f"{key} {payload.get(key)!r} is not an integer in [{low}, {high}]")
    if payload["dim"] != dim:
        raise _bad(path, f"describes vectors of width {payload['dim']}, the model's are {dim}")
    if space == "cosine":
        if payload["count"] != n_items:
            raise _bad(path, f"describes {payload['count']} items, the model has {n_items}")
        return
    if payload.get("space") != space:
        raise _bad(path, f"space {payload.get('space')!r} is not {space!r}")
    half = payload.get("half")
    if isinstance(half, bool) or not isinstance(half, (int, float)) or not np.isfinite(half) or half < 0:
        raise _bad(path, f"half {half!r} is not a finite number >= 0")
    if payload["count"] > n_items:
        raise _bad(path, f"count {payload['count']} is more than the model's {n_items} items")


def features_json(path: Path, payload: Any, item_spec, user_spec) -> None:
    """features/features.json: scalers with finite numbers, vocabularies of strings, bins in order, and the
    widths the network was built with (model.json's tower specs)."""
    if not isinstance(payload, dict):
        raise _bad(path, "not a JSON object")
    text_dim = payload.get("text_dim")
    if text_dim != item_spec.text_dim:
        raise _bad(path, f"text_dim {text_dim!r} does not match model.json ({item_spec.text_dim})")
    encoder = payload.get("encoder")
    if (encoder is None) != (text_dim == 0):
        raise _bad(path, "the text encoder and text_dim disagree")
    if encoder is not None and not (
        isinstance(encoder, dict)
        and encoder.get("kind") in ("tfidf", "sentence-transformer")
        and isinstance(encoder.get("key"), str)
    ):
        raise _bad(path, f"encoder {str(encoder)[:120]} is not a known text encoder")
    for schema in ("item_schema", "user_schema"):
        value = payload.get(schema)
        if value is None and schema == "user_schema":
            continue
        if not isinstance(value, dict):
            raise _bad(path, f"{schema} is not a JSON object")
        columns = [v for k, v in value.items() if k != "title"]
        title_ok = value.get("title") is None or isinstance(value.get("title"), str)
        if not title_ok or not all(isinstance(v, list) and all(isinstance(c, str) for c in v) for v in columns):
            raise _bad(path, f"{schema} is not a title and lists of column names")
    for entity, spec in (("items", item_spec), ("users", user_spec)):
        block = payload.get(entity)
        if block is None and entity == "users":
            if spec.numeric_dim or spec.vocab_sizes:
                raise _bad(path, "no user features, but model.json's user tower has some")
            continue
        _tabular(path, entity, block, spec)


def _tabular(path: Path, entity: str, block: Any, spec) -> None:
    if not isinstance(block, dict):
        raise _bad(path, f"{entity} is not a JSON object")
    scalers, vocabs, bins = block.get("numeric"), block.get("categorical"), block.get("bins", [])
    if not (isinstance(scalers, list) and isinstance(vocabs, list) and isinstance(bins, list)):
        raise _bad(path, f"{entity}: numeric, categorical and bins must be lists")
    for s in scalers:
        ok = isinstance(s, dict) and isinstance(s.get("column"), str) and isinstance(s.get("log1p"), bool)
        if not ok or not is_number(s.get("median")) or not is_number(s.get("scale")) or s.get("scale") == 0:
            raise _bad(path, f"{entity}: numeric scaler {str(s)[:120]} is not valid")
    for v in vocabs:
        values = v.get("values") if isinstance(v, dict) else None
        if not isinstance(values, list) or not all(isinstance(x, str) for x in values):
            raise _bad(path, f"{entity}: a vocabulary is not a list of strings")
        if not isinstance(v.get("column"), str) or not is_int(v.get("max_values", 1), 1, 1_000_000):
            raise _bad(path, f"{entity}: vocabulary {str(v.get('column'))[:60]!r} is not valid")
    for b in bins:
        edges = b.get("edges") if isinstance(b, dict) else None
        if not isinstance(edges, list) or not all(is_number(e) for e in edges) or edges != sorted(edges):
            raise _bad(path, f"{entity}: numeric bins are not finite increasing edges")
    if 2 * len(scalers) != spec.numeric_dim or tuple(len(v["values"]) + 2 for v in vocabs) != spec.vocab_sizes:
        raise _bad(path, f"{entity}: the features do not match model.json's tower widths")


def finite_arrays(folder: Path) -> None:
    """Every floating array a save is about to publish is finite (a diverged or damaged state never goes out)."""
    for path in sorted(folder.rglob("*.npy")):
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            raise _bad(path, "holds values that are not finite (NaN or infinity); the model is not saved")


def finite_weights(net) -> None:
    """The network's weights are finite before they are written."""
    for name, tensor in net.state_dict().items():
        if not tensor.is_floating_point():
            continue
        if not np.isfinite(tensor.detach().cpu().float().numpy()).all():  # numpy: no dispatch cost per tensor
            raise ModelFileError(f"the network weight {name} holds values that are not finite; the model is not saved")
