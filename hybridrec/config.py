"""Typed config: dataclasses with defaults, YAML loading that names bad keys, dotted overrides."""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hybridrec.config_checks import check_config, migrate_bf16
from hybridrec.config_yaml import check_size, parse_yaml, read_config_text
from hybridrec.errors import ConfigError
from hybridrec.limits import shown

FORMAT_VERSION = 2
# the sections that are the model's own (saved as config.json); the others are the job's (job.json)
MODEL_SECTIONS = ("seed", "features", "model", "train", "index")
JOB_SECTIONS = ("name", "data", "split", "evaluate")


@dataclass
class DataConfig:
    """Where the data is and how to read it. Relative paths resolve against the config file's folder."""

    format: str = "table"  # amazon | movielens-100k | movielens-1m | goodbooks | online-retail | table
    # reader-specific keys: reviews, meta, ratings, items...; `none` (or null) = no file for an optional key
    paths: dict[str, str | None] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)  # table reader: canonical name -> file column
    item_text: list[str] = field(default_factory=list)  # table reader: extra item text columns
    item_numeric: list[str] = field(default_factory=list)
    item_categorical: list[str] = field(default_factory=list)
    item_multi: list[str] = field(default_factory=list)  # list-valued columns ("a|b|c" strings or lists)
    multi_separator: str = "|"
    feedback: str = "explicit"  # implicit: every row is a positive (any format; a table needs no rating column)
    rating_range: list[float] | None = None  # rows outside are skipped and counted
    max_bad_fraction: float = 0.05  # more skipped rows than this is an error
    options: dict[str, Any] = field(default_factory=dict)  # reader-specific switches


@dataclass
class SplitConfig:
    kind: str = "random"  # random | leave-last-out | time | cold-items | given
    test_fraction: float = 0.2
    cutoff: str | None = None  # time split: ISO date or epoch seconds
    validation_fraction: float = 0.1


@dataclass
class FeatureConfig:
    text_encoder: str = "sentence-transformer"  # sentence-transformer | tfidf | none
    text_model: str | None = None  # name or path; None = bundled all-MiniLM-L6-v2
    # auto: bf16 where the CPU computes it natively (avx512_bf16/AMX) or on a GPU, fp32 elsewhere | fp32 | bf16
    text_precision: str = "auto"
    bf16: bool | None = None  # replaced by text_precision: true/false (0.2 configs, saved models) = bf16/fp32
    batch_size: int = 64
    tfidf_dim: int = 128
    max_reviews_per_item: int = 20
    max_document_chars: int = 2000
    review_max_tokens: int = 128  # review documents are cut at this many tokens (0: the text model's own)
    cache_dir: str = ".hybridrec-cache"
    min_count: int = 2  # categorical values seen fewer times share the out-of-vocabulary slot
    # item title and text words as a bag of trainable word embeddings (shared words tie new items to warm ones)
    title_words: bool = False
    # > 0: each numeric column also becomes a categorical token of its quantile bin (this many bins over the
    # training entities), for effects that are not smooth in the value (release decades, price bands)
    numeric_bins: int = 0
    log1p: list[str] | None = None  # numeric columns to log1p; None = every non-negative column


@dataclass
class UserHistoryConfig:
    """The user's training items as a bag in the user tower (SVD++-like implicit feedback)."""

    length: int = 0  # 0 = off; N = the user's N most recent training items
    # latest: every training row sees its user's latest items (minus the target); causal: each row sees only the
    # user's items before it in time, which is what the served bag is for the user's next item; auto: causal when
    # the training rows carry times and the loss ranks, latest otherwise (data without times has no "before")
    order: str = "latest"
    position_weights: bool = False  # one learned weight per history position (most recent first) instead of a mean
    # similar items: 0 ranks by the item's own fused vector; 1 by the user vector of someone whose history is only
    # this item ("bought with it"); between: a blend of the two unit vectors
    similar_weight: float = 0.0


@dataclass
class ModelConfig:
    variant: str = "hybrid"  # hybrid | id-only | content-only
    dim: int = 64
    hidden: int = 128
    id_dropout: float = 0.3  # probability of hiding an item's ID embedding in training (DropoutNet)
    # probability of hiding a user's ID embedding in training; 1 = no user IDs at all, users are their history
    # and features (short histories: one embedding per user overfits)
    user_id_dropout: float = 0.0
    feature_dropout: float = 0.3  # probability of hiding each categorical column / the numeric block in training
    dropout: float = 0.3
    mlp_residual: bool = False  # an MLP residual on (u, v, u*v) beside the dot product (the NeuMF answer)
    user_history: UserHistoryConfig = field(default_factory=UserHistoryConfig)
    # similar items trust what was learned from behaviour in proportion to evidence: a neighbour with n training
    # interactions counts n / (n + h), in the towers' cosine and in every behavioural term's row, with
    # h = similar_evidence_share x the median item's interactions (a share, so a catalogue of rarely bought items
    # and one of blockbusters are each judged on their own scale; chosen over the P4 datasets with the co-occurrence
    # term's settings, leave-one-dataset-out beside it: benchmarks/results/lodo-similar.md); similar_evidence, when
    # set, is h itself (0.2's setting, kept by 0.2 models); 0 trusts every item fully
    similar_evidence: float | None = None
    similar_evidence_share: float = 0.3
    # score terms beside the towers, each {type: NAME, recommend_weight: w, similar_weight: w, ...own params}
    terms: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainConfig:
    loss: str = "auto"  # auto | mse | bpr | softmax (in-batch negatives) | sampled-softmax (shared uniform negatives)
    epochs: int = 30
    batch_size: int = 512
    lr: float = 0.005
    weight_decay: float = 1e-5
    l2: float = 0.01  # penalty on the embeddings and biases touched in a batch
    patience: int = 3
    # False: train all `epochs` and keep the last weights; validation is still scored each epoch, only not used to
    # choose (a small validation set, such as a few dozen cold items, picks a noisy epoch)
    early_stopping: bool = True
    # True, with early stopping and validation rows: train again from the start, for the epoch count early stopping
    # kept, on the training and validation rows together (twice the training time; the model sees the newest rows,
    # which a time split's validation otherwise holds back: +0.006-0.011 recall@10 on the S scale benchmark)
    refit: bool = False
    # > 0, with early_stopping off: the model is the mean of the weights after each of the last N epochs (stochastic
    # weight averaging), which steadies what one last epoch of noisy mini-batch steps would leave
    average_last: int = 0
    negatives: int = 4  # bpr: negatives per positive; sampled-softmax: negatives shared by a batch (>= catalogue: all)
    device: str = "auto"  # auto | cpu | cuda
    # the item text projection's products in training: auto is bf16 where they run natively (a CPU with
    # avx512_bf16/AMX, a GPU with bf16), fp32 elsewhere | fp32 | bf16. Text vectors are stored and projected in
    # bfloat16 with float32 accumulation; everything else trains in float32, and serving always projects in float32
    precision: str = "auto"
    # torch CPU threads; 0 = auto: training on one thread where the process may use <= 2 cores (there a second
    # thread made steps 5-33x slower: benchmarks/results/train-step.md), torch's default on larger machines
    threads: int = 0
    # per-epoch validation scores at most this many validation rows (a seeded subsample, the same every epoch;
    # 0 = all): early stopping needs a stable estimate, not every row of a big split
    validation_max_rows: int = 100_000


@dataclass
class IndexConfig:
    M: int = 16
    ef_construction: int = 200
    ef_search: int = 100
    # build threads; 0 = one below 20,000 items (the graph stays reproducible), else train.threads or every core
    threads: int = 0


@dataclass
class EvalConfig:
    k: int = 10
    similar_k: int = 10
    # the held-out ranking metrics rank the whole catalogue for at most this many test users (a seeded subsample,
    # the same for the model and its baseline; 0 = all): at 2e6 users x 5e5 items every user would take most of an
    # hour, and 100,000 users pin recall@10 to about +-0.001
    max_users: int = 100_000


@dataclass
class Config:
    name: str = "default"
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    base_dir: str = "."  # folder relative data paths resolve against (set on load)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @typing.overload
    def data_path(self, key: str, required: typing.Literal[True] = ...) -> Path: ...

    @typing.overload
    def data_path(self, key: str, required: bool) -> Path | None: ...

    def data_path(self, key: str, required: bool = True) -> Path | None:
        """A data path by key, resolved against the config's folder; missing key is a ConfigError."""
        return resolve_data_path(self.data, self.base_dir, key, required)


def no_file(raw: str | None) -> bool:
    """`data.paths.KEY: none` (or null, or absent) says "no file": the one rule, so `--data meta=none` turns off a
    config's default metadata file instead of leaving it to be read (a file really named none: write ./none)."""
    return raw is None or raw.strip().lower() == "none"


def resolve_data_path(data: DataConfig, base_dir: str | Path, key: str, required: bool = True) -> Path | None:
    """`data.paths[key]` resolved against base_dir; None when it says no file; a required key without a file is a
    ConfigError."""
    raw = data.paths.get(key)
    if raw is None or no_file(raw):
        if required:
            said = " (it says none; this format cannot read without that file)" if key in data.paths else ""
            raise ConfigError(f"data.paths.{key} is required for format {data.format!r}{said}")
        return None
    path = Path(raw).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


CHOICES = {
    "data.format": {"amazon", "movielens-100k", "movielens-1m", "goodbooks", "online-retail", "table"},
    "data.feedback": {"explicit", "implicit"},
    "split.kind": {"random", "leave-last-out", "time", "cold-items", "given"},
    "features.text_encoder": {"sentence-transformer", "tfidf", "none"},
    "features.text_precision": {"auto", "fp32", "bf16"},
    "model.variant": {"hybrid", "id-only", "content-only"},
    "model.user_history.order": {"latest", "causal", "auto"},
    "train.loss": {"auto", "mse", "bpr", "softmax", "sampled-softmax"},
    "train.device": {"auto", "cpu", "cuda"},
    "train.precision": {"auto", "fp32", "bf16"},
}


def build_section(cls: type, payload: Any, where: str) -> Any:
    """A dataclass from a mapping; unknown keys are errors that suggest the closest valid key."""
    if not isinstance(payload, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(payload).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in payload.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {(where + '.' if where else '') + close[0]!r}?" if close else ""
            raise ConfigError(f"unknown config key {shown(dotted)}{hint}")
        hint_type = hints[key]
        if dataclasses.is_dataclass(hint_type):
            kwargs[key] = build_section(typing.cast(type, hint_type), value, dotted)
        else:
            kwargs[key] = _coerce(value, hint_type, dotted)
    return cls(**kwargs)


# a decimal number as text (`1e-3`, `-2.5E+4`, `.5`); not `nan`, `inf` or `0x10`
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check a leaf value against its annotation; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(value, datetime.date):  # YAML reads an unquoted 2020-01-01 as a date: the config means the text
        value = value.isoformat()
    if hint is Any:
        return _plain(value, where)
    if origin in (typing.Union, getattr(types, "UnionType", None)):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                if len(args) == 2 and type(None) in args:
                    raise  # X | None: say what X expects ("expected a string, got [1]")
                continue
        raise ConfigError(f"{where}: {shown(value)} is not a valid {hint}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {shown(value)}")
        return [_coerce(v, args[0], f"{where}[{k}]") for k, v in enumerate(value)] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {shown(value)}")
        if not args:
            return value
        out = {}
        for key, item in value.items():  # data.paths: {str: str}; a list as a path was a TypeError deep in a reader
            if not isinstance(key, str):
                raise ConfigError(f"{where}: keys must be strings, got {shown(key)}")
            out[key] = _coerce(item, args[1], f"{where}.{key}")
        return out
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and _NUMBER.match(value.strip()):
        return float(value)  # `1e-3`: YAML 1.1 (PyYAML) reads a float without a dot as a string
    if hint is float:
        raise ConfigError(f"{where}: expected a number, got {shown(value)}")
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {shown(value)}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}: expected an integer, got {shown(value)}")
    if hint is str and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # a name, a path or split.cutoff (epoch seconds) written as a number
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {shown(value)}")
    choices = CHOICES.get(where)
    if choices and value not in choices:
        raise ConfigError(f"{where}: {shown(value)} is not one of {sorted(choices)}")
    return value


def _plain(value: Any, where: str) -> Any:
    """A free-form value (data.options, a term's own settings) as plain JSON data, since the config is saved as
    JSON with the model: dates become ISO text; sets, binary and other YAML types are ConfigErrors."""
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {value!r} is not a finite number")
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, list):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        return {_plain(k, where): _plain(v, where) for k, v in value.items()}
    raise ConfigError(f"{where}: {shown(value)} is not a plain value (text, a number, a list or a mapping)")


def config_from_dict(payload: dict, base_dir: str | Path | None = None) -> Config:
    """Build a Config; `base_dir` (else the payload's own, as saved in a model) anchors relative data paths."""
    check_size(payload)
    payload = dict(payload or {})
    payload.pop("format_version", None)
    saved_base = payload.pop("base_dir", None)
    cfg = build_section(Config, payload, "")
    migrate_bf16(cfg.features)
    model = payload.get("model")
    if not (isinstance(model, dict) and "terms" in model):  # `terms: []` says "none"; leaving it out, the default
        from hybridrec.recipes import default_terms

        cfg.model.terms = default_terms(cfg.model.variant)
    check_config(cfg)
    cfg.base_dir = str(base_dir if base_dir is not None else (saved_base or "."))
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None, task: str | None = None) -> Config:
    """Load a YAML config (or the defaults when path is None), put `task`'s recipe in place of its model and train
    sections (hybridrec/recipes.py), and apply `key.sub=value` overrides."""
    payload: dict = {}
    base_dir: Path = Path(".")
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            payload = parse_yaml(read_config_text(path), str(path)) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"{path}: not valid YAML ({first})") from None
        if not isinstance(payload, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        base_dir = path.parent
        version = payload.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            why = " (the 0.1 layout: docs/architecture.md maps its keys to the new ones)" if version == 1 else ""
            raise ConfigError(
                f"{path}: format_version {shown(version)} is not supported (this hybridrec reads {FORMAT_VERSION}){why}"
            )
    if task is not None:
        from hybridrec.recipes import with_task

        payload = with_task(payload, task)
    for item in overrides or []:
        apply_override(payload, item)
    return config_from_dict(payload, base_dir)


def apply_override(payload: dict, item: str) -> None:
    """Set one dotted key from `a.b.c=value`; the value is parsed as YAML (numbers, lists, booleans)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    try:
        value = parse_yaml(raw, f"override {shown(key)}") if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node = payload
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
    node[parts[-1]] = value


def model_settings(cfg: Config) -> dict:
    """The sections that are the model's own: saved with it as config.json and read by every query."""
    payload = cfg.to_dict()
    return {"format_version": FORMAT_VERSION, **{key: payload[key] for key in MODEL_SECTIONS}}


def job_settings(cfg: Config) -> dict:
    """The job's sections (data, split, evaluation, name): saved beside a model for provenance and `evaluate`."""
    payload = dump_config(cfg)
    return {"format_version": FORMAT_VERSION, "base_dir": payload["base_dir"], **{k: payload[k] for k in JOB_SECTIONS}}


def dump_config(cfg: Config) -> dict:
    """The config as saved in a model: base_dir made absolute so `evaluate` finds the data from anywhere."""
    payload = cfg.to_dict()
    payload["base_dir"] = str(Path(cfg.base_dir).resolve())
    return {"format_version": FORMAT_VERSION, **payload}
