"""Big catalogues (issue 18, item 5): the index builds on several threads and still finds the exact neighbours; the
vectorised checks of a model's index file, id maps and display table refuse what the per-node loops refused; a
format-2 model still loads; a dense term is refused before any feature is computed."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hardening import rewrite_checksum

from hybridrec import modelcheck
from hybridrec.config import Config
from hybridrec.data.dataset import Dataset
from hybridrec.data.idmap import IdMap, first_unnormalized, normalize_id
from hybridrec.display import DisplayTable, display_columns, write_display
from hybridrec.errors import ConfigError, ModelFileError
from hybridrec.index import ItemIndex, build_threads, check_hnsw_file
from hybridrec.recommender import HybridRecommender

HEADER = struct.Struct("<QQQQQQiIQQQdQ")


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Vectors around 40 centres: neighbours are well defined, as in a trained catalogue."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim))
    return (centres[rng.integers(0, 40, n)] + 0.4 * rng.normal(size=(n, dim))).astype(np.float32)


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.argsort(-(unit[queries] @ unit.T), axis=1)[:, :k]


# ------------------------------------------------------------------------------------------- threaded build
def test_a_build_on_two_threads_finds_the_exact_neighbours_and_survives_a_save(tmp_path):
    vectors = clustered(4000, 32, seed=3)
    ids = IdMap([f"i{k}" for k in range(len(vectors))])
    index = ItemIndex(ids, 32).build(vectors, seed=5, threads=2)
    queries = np.random.default_rng(4).choice(len(vectors), 300, replace=False)
    got, _ = index.query_rows(vectors[queries], 10)
    exact = exact_neighbours(vectors, queries, 10)
    recall = np.mean([len(set(g) & set(e)) / 10 for g, e in zip(got, exact)])
    assert recall >= 0.95, recall
    index.save(tmp_path)
    again, _ = ItemIndex.load(tmp_path, ids).query_rows(vectors[queries], 10)
    assert (again == got).all()


def test_build_threads_defaults():
    assert build_threads(3, 10) == 3  # index.threads, when set, always wins
    assert build_threads(0, 1000, torch_threads=4) == 1  # small catalogue: one thread, the same graph every time
    assert build_threads(0, 10**6, torch_threads=2) == 2  # train.threads
    assert build_threads(0, 10**6) >= 1


# ---------------------------------------------------------------------------------- the index file's checks
def reference_check(raw: bytes, dim: int, M: int, count: int) -> bool:
    """The per-node loop check_hnsw_file replaced (accept / refuse), kept as the oracle for the vectorised one."""
    if len(raw) < HEADER.size:
        return False
    (off0, max_el, cur, per_el, label_off, data_off, max_level, entry, max_m, max_m0, m, _, _) = HEADER.unpack_from(raw)
    links0 = max_m0 * 4 + 4
    if (off0, m, max_m, max_m0, data_off, label_off, per_el, cur) != (
        0, M, M, 2 * M, links0, links0 + 4 * dim, links0 + 4 * dim + 8, count,
    ):  # fmt: skip
        return False
    if max_el < cur or not 0 <= max_level <= 64 or (cur and entry >= cur):
        return False
    end0 = HEADER.size + cur * per_el
    if len(raw) < end0:
        return False
    block = np.frombuffer(raw, np.uint8, cur * per_el, HEADER.size).reshape(cur, per_el)
    n_links = block[:, :2].copy().view(np.uint16).ravel()
    links = block[:, 4:links0].copy().view(np.uint32).reshape(cur, max_m0)
    labels = block[:, label_off:per_el].copy().view(np.uint64).ravel()
    used = np.arange(max_m0)[None, :] < n_links[:, None]
    if (n_links > max_m0).any() or (links[used] >= cur).any() or (labels >= max(count, 1)).any():
        return False
    per_level = max_m * 4 + 4
    levels, upper, pos = np.zeros(cur, np.int64), [], end0
    for node in range(cur):
        if pos + 4 > len(raw):
            return False
        (size,) = struct.unpack_from("<I", raw, pos)
        if size % per_level or size // per_level > max_level or pos + 4 + size > len(raw):
            return False
        levels[node] = size // per_level
        upper.append(raw[pos + 4 : pos + 4 + size])
        pos += 4 + size
    if pos != len(raw) or (cur and levels[entry] != max_level):
        return False
    for node, lists in enumerate(upper):
        for level in range(levels[node]):
            chunk = lists[level * per_level : (level + 1) * per_level]
            (n,) = struct.unpack_from("<H", chunk)
            if n > max_m:
                return False
            targets = np.frombuffer(chunk, np.uint32, n, 4)
            if (targets >= cur).any() or (levels[targets] < level + 1).any():
                return False
    return True


@pytest.fixture(scope="module")
def small_index(tmp_path_factory) -> tuple[Path, bytes]:
    """An index of 600 items with M 4, so that many nodes have upper levels."""
    folder = tmp_path_factory.mktemp("index")
    vectors = clustered(600, 8, seed=1)
    ItemIndex(IdMap([f"i{k}" for k in range(600)]), 8, M=4).build(vectors, seed=2).save(folder)
    return folder / "items.hnsw", (folder / "items.hnsw").read_bytes()


def vectorised_accepts(tmp_path: Path, raw: bytes) -> bool:
    path = tmp_path / "items.hnsw"
    path.write_bytes(raw)
    try:
        check_hnsw_file(path, 8, 4, 600)
    except ModelFileError as exc:
        assert str(path) in str(exc)
        return False
    return True


def upper_records(raw: bytes) -> list[tuple[int, int]]:
    """(byte offset, size) of each node's upper-level record, walked one by one."""
    fields = HEADER.unpack_from(raw)
    pos, out = HEADER.size + fields[2] * fields[3], []
    for _ in range(fields[2]):
        (size,) = struct.unpack_from("<I", raw, pos)
        out.append((pos, size))
        pos += 4 + size
    return out


def test_the_saved_index_passes_and_agrees_with_the_loop(small_index, tmp_path):
    _, raw = small_index
    assert reference_check(raw, 8, 4, 600) and vectorised_accepts(tmp_path, raw)
    assert sum(size > 0 for _, size in upper_records(raw)) > 50  # the upper levels are really exercised


def test_crafted_links_and_sizes_are_refused(small_index, tmp_path):
    _, raw = small_index
    records = [(pos, size) for pos, size in upper_records(raw) if size]
    fields = list(HEADER.unpack_from(raw))
    cases = {}
    wrong_entry = fields.copy()
    wrong_entry[7] = 10**6
    cases["entry point"] = HEADER.pack(*wrong_entry) + raw[HEADER.size :]
    low_entry = fields.copy()
    low_entry[7] = next(k for k, (_, size) in enumerate(upper_records(raw)) if size == 0)
    cases["entry point not on the top level"] = HEADER.pack(*low_entry) + raw[HEADER.size :]
    pos, size = records[0]
    cases["size not a multiple of a level"] = raw[:pos] + struct.pack("<I", size + 4) + raw[pos + 4 :]
    cases["link to a missing node"] = raw[: pos + 8] + struct.pack("<I", 10**6) + raw[pos + 12 :]
    cases["count above M"] = raw[: pos + 4] + struct.pack("<H", 9) + raw[pos + 6 :]
    level0_link = HEADER.size + 4  # node 0's first level-0 link
    cases["level-0 link"] = raw[:level0_link] + struct.pack("<I", 10**6) + raw[level0_link + 4 :]
    cases["truncated"] = raw[:-4]
    cases["trailing bytes"] = raw + b"\0\0\0\0"
    cases["odd trailing byte"] = raw + b"\0"
    for name, crafted in cases.items():
        assert not reference_check(crafted, 8, 4, 600), name
        assert not vectorised_accepts(tmp_path, crafted), name


def test_a_link_to_a_node_below_its_level_is_refused(small_index, tmp_path):
    _, raw = small_index
    levels = [size // 20 for _, size in upper_records(raw)]  # M 4: a level's list is 4 + 4 x 4 bytes
    level2 = next(  # the level-2 list of a node that has one, with at least one link in it
        p + 24 for p, s in upper_records(raw) if s // 20 >= 2 and struct.unpack_from("<H", raw, p + 24)[0] >= 1
    )
    low = levels.index(1)  # a node on level 1 only
    crafted = raw[: level2 + 4] + struct.pack("<I", low) + raw[level2 + 8 :]
    assert not reference_check(crafted, 8, 4, 600)
    assert not vectorised_accepts(tmp_path, crafted)


def test_random_damage_is_judged_as_the_loop_judges_it(small_index, tmp_path):
    """Seeded single-word changes all over the upper levels (sizes, counts, links) and the level-0 block: the
    vectorised check accepts exactly what the per-node loop accepted."""
    _, raw = small_index
    rng = np.random.default_rng(0)
    fields = HEADER.unpack_from(raw)
    end0 = HEADER.size + fields[2] * fields[3]
    refused = 0
    for trial in range(300):
        at = int(rng.integers(end0, len(raw) - 4)) if trial % 3 else int(rng.integers(HEADER.size, end0 - 4))
        at -= (at - HEADER.size) % 4
        value = int(rng.choice([0, 1, 20, 40, 599, 600, int(rng.integers(0, 2**32))]))
        crafted = raw[:at] + struct.pack("<I", value) + raw[at + 4 :]
        expected = reference_check(crafted, 8, 4, 600)
        assert vectorised_accepts(tmp_path, crafted) == expected, (trial, at, value)
        refused += not expected
    assert refused > 50  # the damage really is refused, not only accepted by both


def test_an_index_file_that_does_not_match_is_refused_on_load(small_index, tmp_path):
    path, raw = small_index
    folder = tmp_path / "index"
    shutil.copytree(path.parent, folder)
    (folder / "items.hnsw").write_bytes(raw[:-20])
    with pytest.raises(ModelFileError, match="items.hnsw: not a valid item index"):
        ItemIndex.load(folder, IdMap([f"i{k}" for k in range(600)]))


# --------------------------------------------------------------------------------------- id maps, display
def test_first_unnormalized_finds_exactly_the_ids_normalize_id_changes():
    ids = ["a", "042", "42", "a\n42.0", "x y", "\u00a0b", "7.0", " c", "d\t", "1.5", "+3.00"]
    expected = [k for k, raw in enumerate(ids) if normalize_id(raw) != raw]
    assert expected == [5, 6, 7, 8, 10]
    assert first_unnormalized(ids) == 5
    for k in expected:
        clean = [raw for j, raw in enumerate(ids) if j not in expected or j == k]
        assert first_unnormalized(clean) == clean.index(ids[k])
    assert first_unnormalized([raw for k, raw in enumerate(ids) if k not in expected]) is None
    assert first_unnormalized([]) is None


@pytest.mark.parametrize(
    "ids, message",
    [
        (["a", "b", "a"], "duplicate ids"),
        (["a", "", "b"], 'row 1: an id must be a non-empty string, got ""'),
        (["a", 7, "b"], "row 1: an id must be a non-empty string, got 7"),
        (["a", None], "row 1: an id must be a non-empty string, got null"),
        (["a", "42.0"], 'row 1: id "42.0" is not as hybridrec writes ids'),
        (["a", " b"], 'row 1: id " b" is not as hybridrec writes ids'),
    ],
)
def test_a_tampered_id_map_is_refused_naming_the_file_and_row(ids, message):
    path = Path("model/id_maps/items.json")
    with pytest.raises(ModelFileError, match=f"^{path}: ") as caught:
        modelcheck.id_map(path, {"entity": "item", "ids": ids}, "item")
    assert message in str(caught.value)


def test_a_checked_id_map_answers_as_one_built_id_by_id():
    ids = [f"P{k:05d}" for k in range(2000)] + ["a\nb", "ü", "042"]
    fast = modelcheck.id_map(Path("items.json"), {"entity": "item", "ids": ids}, "item")
    slow = IdMap(ids)
    assert fast.raw_ids == slow.raw_ids and len(fast) == len(slow)
    assert all(fast.index(raw) == slow.index(raw) for raw in ids)
    assert fast.get("42") == -1 and fast.index("042") == slow.index("042")  # "042" stays "042"
    fast.extend(["new"])  # still append-only and in order
    assert fast.index("new") == len(ids)


ROWS = [["Cable", 9.5, "Audio"], ["Drive", None, ""], ["Lens", 3, "Photo, Lenses"]]


def test_the_display_table_reads_by_column_and_by_row_alike():
    by_column = json.loads(json.dumps(display_columns(ROWS)))
    by_row = {"columns": ["title", "price", "category"], "rows": ROWS}
    path = Path("items.json")
    assert modelcheck.display_rows(path, by_column, 3) == ROWS == modelcheck.display_rows(path, by_row, 3)


def test_a_display_table_by_column_behaves_as_the_list_of_rows():
    table = DisplayTable(*(list(c) for c in zip(*ROWS)))
    assert len(table) == 3 and table[1] == ["Drive", None, ""] and table[-1] == ROWS[-1] and table[1:] == ROWS[1:]
    assert list(table) == ROWS and table == ROWS and [r[0] for r in table] == ["Cable", "Drive", "Lens"]
    grown = table + [["Hub", 20.0, "Computers"]]
    assert grown == [*ROWS, ["Hub", 20.0, "Computers"]] and len(table) == 3  # a new table; the old one unchanged
    grown[0] = ["<b>x</b>", None, "c"]
    assert grown[0] == ["<b>x</b>", None, "c"] and table[0] == ROWS[0]
    assert display_columns(grown)["by_column"]["title"] == ["<b>x</b>", "Drive", "Lens", "Hub"]
    with pytest.raises(IndexError):
        table[3]  # noqa: B018


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("price", float("nan"), "a price is not a finite number"),
        ("price", float("inf"), "a price is not a finite number"),
        ("price", 10**400, "a price is not a finite number"),
        ("price", True, "row 1: the price is not a number or null"),
        ("price", "9", "row 1: the price is not a number or null"),
        ("title", None, "row 1: the title is not a string"),
        ("category", 5, "row 1: the category is not a string"),
        ("title", "cut", "the title column holds 2 rows for 3 items"),
    ],
)
def test_a_tampered_display_table_is_refused(column, value, message):
    payload = display_columns(ROWS)
    if value == "cut":
        payload["by_column"][column] = payload["by_column"][column][:2]
    else:
        payload["by_column"][column][1] = value
    with pytest.raises(ModelFileError, match="^items.json: ") as caught:
        modelcheck.display_rows(Path("items.json"), payload, 3)
    assert message in str(caught.value)


def row_file(tmp_path: Path, rows: list, n: int | None = None):
    """A DisplayFile over rows written by write_display (format 4), checked for n rows (default: all)."""
    (tmp_path / "display").mkdir(parents=True)
    write_display(tmp_path / "display", rows)
    data = (tmp_path / "display/rows.jsonl").read_bytes()
    offsets = np.load(tmp_path / "display/offsets.npy")
    return modelcheck.display_file(tmp_path / "display/rows.jsonl", data, offsets, len(rows) if n is None else n)


def test_a_display_file_reads_a_row_at_a_time_and_whole_alike(tmp_path):
    table = row_file(tmp_path, ROWS)
    assert len(table) == 3 and table[1] == ["Drive", None, ""] and table[-1] == ROWS[-1]
    assert table._table is None  # rows read one at a time so far
    assert table[1:] == ROWS[1:] and list(table) == ROWS and table == ROWS
    grown = table + [["Hub", 20.0, "Computers"]]
    assert grown == [*ROWS, ["Hub", 20.0, "Computers"]] and len(table) == 3
    table[0] = ["<b>x</b>", None, "c"]
    assert table[0] == ["<b>x</b>", None, "c"] and table[1] == ROWS[1]
    with pytest.raises(IndexError):
        table[3]  # noqa: B018
    odd = [["Kabel \u00fc \n \ud800", 1e-3, "a,b"]]  # non-ASCII, a newline and a lone surrogate stay one line
    assert row_file(tmp_path / "odd", odd)[0] == odd[0]


def test_a_display_file_refuses_bad_offsets_and_bad_rows(tmp_path):
    with pytest.raises(ModelFileError, match="offsets.npy: is int64 \\(4,\\), expected 3 integer offsets"):
        row_file(tmp_path / "a", ROWS, n=2)
    table = row_file(tmp_path / "b", ROWS)
    path = tmp_path / "b/display/rows.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    bad = lines[0] + lines[1].replace(b"null", b"true") + lines[2]
    offsets = np.cumsum([0, len(lines[0]), len(lines[1]), len(lines[2])])
    table = modelcheck.display_file(path, bad, offsets, 3)
    assert table[0] == ROWS[0]  # a row is checked when read: the others are not read
    with pytest.raises(ModelFileError, match="rows.jsonl: row 1 is not \\[title, price or null, category\\]"):
        table[1]  # noqa: B018
    with pytest.raises(ModelFileError, match="rows.jsonl: row 1 is not"):
        list(table)  # whole: every row checked
    for cut in ([0, 5, 4, len(bad)], [1, 5, 9, len(bad)], [0, 5, 9, len(bad) + 1]):
        with pytest.raises(ModelFileError, match="the offsets do not cut rows.jsonl into 3 rows"):
            modelcheck.display_file(path, bad, np.array(cut), 3)
    merged = modelcheck.display_file(path, bad, np.array([0, len(lines[0]), len(bad) - 1, len(bad)]), 3)
    with pytest.raises(ModelFileError, match="rows.jsonl: row 1 is not valid JSON"):
        merged[1]  # noqa: B018 - two rows in one slice
    with pytest.raises(ModelFileError, match="rows.jsonl: not one JSON row per offset"):
        list(merged)


# ------------------------------------------------------------------------------------------- model folders
@pytest.mark.parametrize("version", [2, 3])
def test_an_earlier_format_model_still_loads_and_answers_the_same(demo_model, tmp_path, version):
    """Formats 2 and 3 stored the display table whole in items.json (by row, by column): such folders load."""
    old = tmp_path / "old"
    shutil.copytree(demo_model.path.resolve(), old)
    current = HybridRecommender.load(old)
    rows = list(current.display_)
    payload = {"columns": ["title", "price", "category"], "rows": rows} if version == 2 else display_columns(rows)
    (old / "items.json").write_text(json.dumps(payload))
    shutil.rmtree(old / "display")
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("display/")}
    (old / "manifest.json").write_text(json.dumps(manifest | {"format_version": version}))
    rewrite_checksum(old, "items.json")
    loaded = HybridRecommender.load(old)
    assert loaded.display_ == current.display_ == rows and not (old / "display").exists()
    item = current.items_.raw(0)
    assert loaded.similar_items(item, 5)[0] == current.similar_items(item, 5)[0]


def test_a_damaged_file_read_at_load_is_not_hashed_twice_but_a_change_after_load_is_caught(demo_model, tmp_path):
    from hybridrec.artifacts import ModelDir

    copy = tmp_path / "m"
    shutil.copytree(demo_model.path.resolve(), copy)
    md = ModelDir(copy)
    assert set(md._checked) == set(md.manifest["files"])  # every file checked once, on load
    weights = copy / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")  # changed after the load: caught at first use
    with pytest.raises(ModelFileError, match="weights.safetensors: corrupted or truncated"):
        md.path("weights.safetensors")


def test_a_dense_term_past_its_limit_is_refused_before_any_feature_is_computed(monkeypatch):
    """EASE's items x items solve is refused from the catalogue's size alone, with the limit in the message, before
    the feature pipeline (text encoding: minutes on a real catalogue) is even built."""
    from hybridrec.features import pipeline
    from hybridrec.scoring import ease

    def never(*args, **kwargs):
        raise AssertionError("the feature pipeline ran before the size check")

    monkeypatch.setattr(ease, "MAX_ITEMS", 50)
    monkeypatch.setattr(pipeline.FeaturePipeline, "__init__", never)
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(60)], "title": [f"item {k}" for k in range(60)]})
    rows = pd.DataFrame(
        {"user_id": ["u1", "u2"], "item_id": ["i1", "i2"], "rating": [4.0, 5.0], "timestamp": 0, "review": ""}
    )
    cfg = Config()
    cfg.model.terms = [{"type": "ease", "similar_weight": 0.5}]
    with pytest.raises(ConfigError, match="60 items, more than the 50 a dense EASE term allows"):
        HybridRecommender(cfg).fit(Dataset("big", rows, items))
