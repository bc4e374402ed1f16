"""Text encoding speed and fidelity on real review documents: today's fp32 encoder against the fast paths.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python -m benchmarks.text_speed --threads 1,2

The texts are the review documents hybridrec builds for Amazon 2018 Gift Cards and Magazine Subscriptions
(../shared/data/amazon2018, 5-core reviews; hybridrec.features.documents.review_documents with the default 20 reviews
and 2,000 characters per item). Every variant encodes the same texts after a warm-up; texts/s is the best of
`--repeats` timed passes (a shared machine's noise only slows a pass down), and cosine is to today's fp32 vectors
(the model's own 256 tokens), mean and min over the texts. Variants:

- fp32-256: today's encoder (fp32, max_seq_length 256): the reference
- bf16-256: bf16 autocast (what features.text_precision: auto picks on a CPU with avx512_bf16 / AMX)
- fp32-128, bf16-192, bf16-128, bf16-64: review documents cut at 192 / 128 / 64 tokens (features.review_max_tokens)
- bf16w-256, bf16w-128: the model's weights converted to bf16 (no autocast: activations, LayerNorm and softmax
  in bf16 too)
- per-review-bf16-128: each review encoded alone (bf16, 128 tokens) and the item's vectors mean-pooled
- onnx-fp32-256, onnx-int8-256, onnx-int8-128 (with --onnx DIR): the bundled model's transformer exported by
  torch.onnx, dynamically quantised to int8 by onnxruntime, mean pooling in numpy. onnxruntime and onnx are no
  dependency of hybridrec: `pip install --target SITE onnxruntime onnx` and pass `--site SITE` (appended to
  sys.path, so the venv's own numpy and torch still win)

Writes a markdown table to stdout (and to --out when given).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.data import ROOT

DATA = ROOT.parent / "shared" / "data" / "amazon2018"
SOURCES = ("Gift_Cards_5.json.gz", "Magazine_Subscriptions_5.json.gz")


def review_texts(max_reviews: int = 20, max_chars: int = 2000) -> tuple[list[str], list[list[str]]]:
    """The review documents of both categories, and for each the reviews it joins (for per-review encoding)."""
    from hybridrec.data.amazon import read_amazon
    from hybridrec.features.documents import review_documents

    docs: list[str] = []
    parts: list[list[str]] = []
    for name in SOURCES:
        inter = read_amazon(DATA / name).interactions
        items = sorted(inter["item_id"].unique())
        docs += review_documents(items, inter, max_reviews, max_chars)
        reviews = inter.loc[inter["review"].str.len() > 0].sort_values(
            ["item_id", "timestamp"], ascending=[True, False], kind="stable"
        )
        top = reviews.groupby("item_id", sort=False).head(max_reviews)
        by_item = top.groupby("item_id", sort=False)["review"].agg(list)
        parts += [[" ".join(r.split()) for r in by_item.get(i, [])] for i in items]
    keep = [i for i, d in enumerate(docs) if d]
    return [docs[i] for i in keep], [parts[i] for i in keep]


def metadata_texts(max_chars: int = 2000) -> list[str]:
    """The metadata documents (title, description, brand, categories) of both categories' reviewed items: the
    short texts every item has, encoded at the model's own length whatever the review path does."""
    from hybridrec.data.amazon import read_amazon
    from hybridrec.features.documents import metadata_documents

    docs: list[str] = []
    for name in SOURCES:
        ds = read_amazon(DATA / name, DATA / ("meta_" + name.replace("_5.json.gz", ".json.gz")))
        docs += metadata_documents(ds.items, ds.item_schema, max_chars)
    return [d for d in docs if d]


def timed(fn: Callable[[], np.ndarray], repeats: int) -> tuple[np.ndarray, float]:
    """The output and the best wall time of `repeats` runs."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    assert out is not None
    return out, best


_BF16_MODELS: dict[int, object] = {}


def bf16_weights(model, tokens: int) -> Callable[[list[str]], np.ndarray]:
    """A bf16 copy of the model (made once), cutting texts at `tokens`."""
    import copy

    import torch

    if id(model) not in _BF16_MODELS:
        _BF16_MODELS[id(model)] = copy.deepcopy(model).to(torch.bfloat16)
    copy_ = _BF16_MODELS[id(model)]

    def encode(texts: list[str]) -> np.ndarray:
        copy_.max_seq_length = tokens
        with torch.inference_mode():
            out = copy_.encode(texts, batch_size=64, convert_to_tensor=True, normalize_embeddings=True)
        return out.float().cpu().numpy()

    return encode


def per_review(encoder, parts: list[list[str]]) -> np.ndarray:
    """Every review alone, then the unit mean of each item's vectors."""
    flat = [r for p in parts for r in p]
    vecs = encoder.encode(flat)
    out, at = [], 0
    for p in parts:
        mean = vecs[at : at + len(p)].mean(axis=0)
        out.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        at += len(p)
    return np.stack(out).astype(np.float32)


def onnx_encoders(model, folder: Path, threads: int) -> dict[str, Callable[[list[str], int], np.ndarray]]:
    """ONNX Runtime sessions (fp32 and dynamic int8) of the model's transformer; mean pooling and normalising as
    the model's own Pooling and Normalize modules do."""
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32_path, int8_path = folder / "model.onnx", folder / "model-int8.onnx"
    bert, tokenizer = model[0].auto_model, model.tokenizer
    if not int8_path.is_file():
        dummy = tokenizer(["a short text", "and a somewhat longer one"], padding=True, return_tensors="pt")
        names = ["input_ids", "attention_mask", "token_type_ids"]
        axes = {n: {0: "batch", 1: "tokens"} for n in names} | {"last_hidden_state": {0: "batch", 1: "tokens"}}

        class Hidden(torch.nn.Module):  # keyword arguments: the transformer's positional order varies by version
            def __init__(self):
                super().__init__()
                self.bert = bert

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.bert(
                    input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
                ).last_hidden_state

        with torch.no_grad():
            torch.onnx.export(
                Hidden(),
                tuple(dummy[n] for n in names),
                str(fp32_path),
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
        quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    out = {}
    for name, path in (("fp32", fp32_path), ("int8", int8_path)):
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def encode(texts: list[str], tokens: int, session=session) -> np.ndarray:
            order = np.argsort([-len(t) for t in texts], kind="stable")  # like sentence-transformers: less padding
            vecs = np.zeros((len(texts), 384), np.float32)
            for lo in range(0, len(texts), 64):
                idx = order[lo : lo + 64]
                batch = tokenizer(
                    [texts[i] for i in idx], padding=True, truncation=True, max_length=tokens, return_tensors="np"
                )
                feed = {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
                hidden = session.run(None, feed)[0]
                mask = feed["attention_mask"][:, :, None].astype(np.float32)
                mean = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
                vecs[idx] = mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
            return vecs

        out[name] = encode
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="torch thread counts to time, comma list")
    parser.add_argument("--limit", type=int, default=0, help="use the first N documents only (0: all)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", default="", help="comma list of variant names (default: all)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--texts", choices=("reviews", "metadata"), default="reviews", help="which documents")
    parser.add_argument("--onnx", type=Path, default=None, help="a folder for the ONNX exports: adds the onnx-* rows")
    parser.add_argument("--site", default=None, help="a folder with onnxruntime and onnx, appended to sys.path")
    args = parser.parse_args(argv)
    if args.site:
        sys.path.append(args.site)
    if not (DATA / SOURCES[0]).is_file():
        print(f"no data at {DATA}: see ../shared/data/README.md", file=sys.stderr)
        return 2

    import torch

    from hybridrec.features.text import SentenceTransformerEncoder, cpu_supports_bf16

    docs, parts = review_texts()
    if args.texts == "metadata":  # per-review rows make no sense here: one "review" per document
        docs = metadata_texts()
        parts = [[d] for d in docs]
    if args.limit:
        docs, parts = docs[: args.limit], parts[: args.limit]
    rng = np.random.default_rng(0)  # a shuffled order: sentence-transformers sorts by length inside each call
    order = rng.permutation(len(docs))
    docs, parts = [docs[i] for i in order], [parts[i] for i in order]

    base = SentenceTransformerEncoder(precision="fp32", batch_size=64)
    variants: dict[str, Callable[[], np.ndarray]] = {}

    def make(precision: str, tokens: int | None) -> SentenceTransformerEncoder:
        enc = SentenceTransformerEncoder(precision=precision, batch_size=64, max_seq_length=tokens)
        enc._shared = base._shared  # one loaded model for all
        return enc

    variants["fp32-256"] = lambda: base.encode(docs)
    variants["bf16-256"] = lambda: make("bf16", None).encode(docs)
    variants["fp32-128"] = lambda: make("fp32", 128).encode(docs)
    variants["bf16-192"] = lambda: make("bf16", 192).encode(docs)
    variants["bf16-128"] = lambda: make("bf16", 128).encode(docs)
    variants["bf16-64"] = lambda: make("bf16", 64).encode(docs)
    variants["per-review-bf16-128"] = lambda: per_review(make("bf16", 128), parts)
    variants["bf16w-256"] = lambda: bf16_weights(base._load(), 256)(docs)
    variants["bf16w-128"] = lambda: bf16_weights(base._load(), 128)(docs)
    wanted = [v for v in args.variants.split(",") if v] or list(variants)

    base.encode(docs[:8])  # load the model and warm up both precisions
    make("bf16", None).encode(docs[:8])
    chars = np.array([len(d) for d in docs])
    lines = [
        f"texts: {len(docs)} {args.texts.removesuffix('s')} documents "
        "(Amazon 2018 Gift Cards + Magazine Subscriptions, 5-core), "
        f"{chars.mean():.0f} characters on average (max {chars.max()})"
        + (f", {sum(len(p) for p in parts)} reviews in them" if args.texts == "reviews" else ""),
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"bf16 native: {cpu_supports_bf16()}; best of {args.repeats} passes",
        "",
        "| variant | torch threads | texts/s | x fp32-256 | mean cosine | min cosine |",
        "|---|---|---|---|---|---|",
    ]
    reference: np.ndarray | None = None
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        if args.onnx is not None:
            args.onnx.mkdir(parents=True, exist_ok=True)
            sessions = onnx_encoders(base._load(), args.onnx, threads)
            variants["onnx-fp32-256"] = lambda s=sessions: s["fp32"](docs, 256)
            variants["onnx-int8-256"] = lambda s=sessions: s["int8"](docs, 256)
            variants["onnx-int8-128"] = lambda s=sessions: s["int8"](docs, 128)
            wanted += [v for v in ("onnx-fp32-256", "onnx-int8-256", "onnx-int8-128") if v not in wanted]
        base_rate = None
        for name in wanted:
            out, seconds = timed(variants[name], args.repeats)
            rate = len(docs) / seconds
            if name == "fp32-256":
                base_rate = rate
                reference = out if reference is None else reference
            if reference is None:
                reference = base.encode(docs)
            unit = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)  # bf16 rows: not quite unit
            cos = np.sum(unit * reference, axis=1)
            ratio = f"{rate / base_rate:.2f}" if base_rate else "-"
            row = f"| {name} | {threads} | {rate:.1f} | {ratio} | {cos.mean():.5f} | {cos.min():.5f} |"
            lines.append(row)
            print(row, file=sys.stderr, flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
