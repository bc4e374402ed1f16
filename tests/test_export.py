"""`hybridrec export --format parquet`: the vectors, biases and display columns a vector database needs."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from hybridrec_cli.main import app
from typer.testing import CliRunner


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def exported(demo_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "vectors"
    result = invoke("export", "--model", demo_model.path, "--format", "parquet", "--out", out)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "exported 218 items and 400 users (dim 32)" in result.stdout
    return out, demo_model.load()


def test_item_vectors_and_biases_equal_the_model_for_the_same_ids(exported):
    out, rec = exported
    table = pq.read_table(out / "items.parquet")
    assert table.column_names[:7] == ["item_id", "title", "price", "category", "in_training", "bias", "vector"]
    ids = table.column("item_id").to_pylist()
    assert sorted(ids) == sorted(rec.items_.raw_ids) and len(ids) == len(set(ids))
    rows = np.array([rec.items_.index(i) for i in ids])
    vectors = np.stack(table.column("vector").to_numpy(zero_copy_only=False))
    assert vectors.dtype == np.float32 and vectors.shape == (218, 32)
    np.testing.assert_array_equal(vectors, rec.towers_.item_vectors[rows])
    np.testing.assert_array_equal(table.column("bias").to_numpy(), rec.towers_.item_bias[rows])
    np.testing.assert_array_equal(table.column("in_training").to_numpy(zero_copy_only=False), rec.item_has_id_[rows])
    first = table.slice(0, 1).to_pylist()[0]
    info = rec.item_info(first["item_id"])
    assert (first["title"], first["category"]) == (info["title"], info["category"])
    assert first["price"] == pytest.approx(info["price"]) if info["price"] is not None else first["price"] is None


def test_user_vectors_and_the_score_formula_rebuild_the_towers_score(exported):
    out, rec = exported
    users = pq.read_table(out / "users.parquet")
    items = pq.read_table(out / "items.parquet")
    meta = json.loads((out / "export.json").read_text())
    assert meta["dim"] == 32 and meta["items"] == 218 and meta["users"] == 400
    u_ids, i_ids = users.column("user_id").to_pylist(), items.column("item_id").to_pylist()
    u_rows = np.array([rec.users_.index(u) for u in u_ids])
    u = np.stack(users.column("vector").to_numpy(zero_copy_only=False))
    v = np.stack(items.column("vector").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(u, rec.towers_.user_vectors[u_rows])
    # the towers' score from the exported numbers alone, against the library's for the same users and items
    score = (
        meta["global_mean"] + users.column("bias").to_numpy()[:5, None] + items.column("bias").to_numpy() + u[:5] @ v.T
    )
    i_rows = np.array([rec.items_.index(i) for i in i_ids])
    np.testing.assert_allclose(score, rec.towers_.matrix(u_rows[:5], i_rows), rtol=1e-5, atol=1e-5)


def test_cosine_search_on_the_export_matches_the_towers_part_of_similar_items(exported):
    """The README's numpy example: cosine over items.parquet, weighed by each item's evidence, gives the towers'
    part of the model's similar items (what the index answers when no score term has a similar weight)."""
    out, rec = exported
    table = pq.read_table(out / "items.parquet", columns=["item_id", "vector", "interactions"])
    half = json.loads((out / "export.json").read_text())["similar_evidence"]
    n = rec.item_counts_
    assert np.isclose(half, rec.config.model.similar_evidence_share * np.median(n[n > 0])) and half > 0
    ids = table.column("item_id").to_pylist()
    vectors = np.stack(table.column("vector").to_numpy(zero_copy_only=False))
    n = table.column("interactions").to_numpy().astype(np.float64)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    query = unit[ids.index("D0031")]
    order = [ids[j] for j in np.argsort(-(unit @ query) * n / (n + half)) if ids[j] != "D0031"][:5]
    assert order == rec._similar_from_index(rec.items_.index("D0031"), 5)[0]
    assert order != [ids[j] for j in np.argsort(-(unit @ query)) if ids[j] != "D0031"][:5]  # the weight matters


def test_an_unknown_format_is_one_error_line(demo_model, tmp_path):
    result = invoke("export", "--model", demo_model.path, "--format", "faiss", "--out", tmp_path / "x")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: unknown export format 'faiss' (choose from parquet)"
    assert not (tmp_path / "x").exists()
