"""The search space as data: which config keys a trial sets and from what distribution, per task, and a trial's
values applied to the base config's payload.

The default space holds the settings that mattered in benchmarks/results/tuning-notes.md: variant, dim, lr, l2,
the dropouts, the user-history bag, patience (or the epoch count without early stopping) and, with a ranking loss,
the loss, its negatives, user IDs on or off and the closed-form terms' recommend weights and penalties. Every
range is widened to hold the base config's own value, and trial 0 is the base config itself, so a study never
ends below the config it started from (on the validation rows).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hybridrec.config import Config
from hybridrec.config_checks import setting
from hybridrec.errors import ConfigError

KINDS = ("choice", "float", "log", "int")
TERM_PREFIX = "terms."  # `terms.TYPE.FIELD`: a field of the model.terms entry of that type


@dataclass(frozen=True)
class Task:
    """What a trial is scored on: the rows' metric and which way is better."""

    metric: str  # rmse | recall@K | cold_auc
    direction: Literal["minimize", "maximize"]
    loss: str  # the base config's train.loss, `auto` resolved
    cold: bool = False  # a cold-items split: trials are scored on the held-out validation items

    @property
    def ranking(self) -> bool:
        """A ranking loss: the loss, its negatives and the terms' recommend weights are searched too."""
        return self.loss != "mse"


def task_of(cfg: Config, feedback: str) -> Task:
    """Ratings trained with MSE are scored by validation RMSE; a ranking loss by full-ranking recall@k (seen
    training items left out); a cold-items split by the per-user AUC among its cold validation items."""
    from hybridrec.model.train import resolve_loss

    loss = resolve_loss(cfg.train.loss, feedback)
    if cfg.split.kind == "cold-items":
        return Task("cold_auc", "maximize", loss, cold=True)
    if loss == "mse":
        return Task("rmse", "minimize", loss)
    return Task(f"recall@{cfg.evaluate.k}", "maximize", loss)


@dataclass(frozen=True)
class Param:
    """One searched setting.

    key: a dotted config key, or `terms.TYPE.FIELD` for a score term's field (the term is added to model.terms
        when the base config has none of that type, and left out again when all its weights come out 0);
    kind: choice | float | log | int (float, log and int draw from [low, high]; log on a log scale);
    when: (config key, allowed values) pairs: the param is drawn only when the trial's config so far (the base
        config with the params before this one applied) has one of those values at each key;
    name: the Optuna parameter (default: key). Two params that set one key under different conditions need
        their own names: Optuna keeps one distribution per name.
    """

    key: str
    kind: str
    low: float = 0.0
    high: float = 1.0
    choices: tuple = ()
    when: tuple[tuple[str, tuple], ...] = ()
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or self.key

    def suggest(self, trial: Any) -> Any:
        """Draw this param's value for an Optuna trial."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.label, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.label, int(self.low), int(self.high))
        return trial.suggest_float(self.label, float(self.low), float(self.high), log=self.kind == "log")

    def including(self, value: Any) -> Param:
        """This param widened to hold `value` (the base config's), so trial 0 can be the base config. A value a
        log scale cannot hold (<= 0) is left out: trial 0 then draws this one param."""
        if value is None:
            return self
        if self.kind == "choice":
            return self if value in self.choices else dataclasses.replace(self, choices=(*self.choices, value))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (self.kind == "log" and value <= 0):
            return self
        return dataclasses.replace(self, low=min(self.low, value), high=max(self.high, value))

    def holds(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.choices
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def describe(self) -> dict:
        """A plain record of the param (the study's fingerprint and `--space` files use this shape)."""
        spread: dict[str, Any] = {"choices": list(self.choices)} if self.kind == "choice" else {}
        if self.kind != "choice":
            spread = {self.kind: [self.low, self.high]}
        return {"key": self.key, "name": self.label, **spread, "when": {k: list(v) for k, v in self.when}}


@dataclass
class Space:
    """An ordered list of params (a param's `when` sees the params before it)."""

    params: list[Param] = field(default_factory=list)

    def sample(self, trial: Any, base: dict) -> dict[str, Any]:
        """A trial's values (Optuna name -> value): each param whose `when` holds on the config built so far."""
        payload = copy.deepcopy(base)
        values: dict[str, Any] = {}
        for param in self.params:
            if self._applies(param, payload):
                values[param.label] = param.suggest(trial)
                set_key(payload, param.key, values[param.label])
        return values

    def base_values(self, base: dict) -> dict[str, Any]:
        """The base config's value of every param that applies to it: trial 0, the config as given."""
        out = {}
        for param in self.params:
            value = get_key(base, param.key)
            if self._applies(param, base) and param.holds(value):
                out[param.label] = value
        return out

    def apply(self, base: dict, values: dict[str, Any]) -> dict:
        """The base payload with a trial's values set, made consistent (see `consistent`)."""
        payload = copy.deepcopy(base)
        for param in self.params:
            if param.label in values:
                set_key(payload, param.key, values[param.label])
        return consistent(payload, base)

    def including_base(self, base: dict) -> Space:
        """Every param that applies to the base config widened to hold its value there."""
        return Space([p.including(get_key(base, p.key)) if self._applies(p, base) else p for p in self.params])

    @staticmethod
    def _applies(param: Param, payload: dict) -> bool:
        return all(get_key(payload, key) in allowed for key, allowed in param.when)


def default_space(cfg: Config, task: Task, n_items: int, has_content: bool) -> Space:
    """The settings that mattered in the tuning notes, for this config's task (see the module docstring)."""
    from hybridrec.scoring.ease import MAX_ITEMS

    hybrid = (("model.variant", ("hybrid",)),)
    content = (("model.variant", ("hybrid", "content-only")),)
    params = [] if task.cold else [Param("model.variant", "choice", choices=("hybrid", "id-only"))]
    params += [
        Param("model.dim", "choice", choices=(16, 32, 64, 128)),
        Param("train.lr", "log", 5e-4, 2e-2),
        Param("train.l2", "log", 1e-4, 1.0),
        Param("model.dropout", "float", 0.0, 0.5),
        Param("model.id_dropout", "float", 0.0, 0.5, when=hybrid),
        Param("model.feature_dropout", "float", 0.0, 0.5, when=content),
        Param("model.user_history.length", "choice", choices=(0, 20, 100)),
    ]
    if cfg.train.early_stopping:  # the epoch count is a cap; patience decides when to stop
        params.append(Param("train.patience", "choice", choices=(2, 3, 5)))
    else:  # no early stopping: the epoch count is the model (average_last needs at least that many)
        params.append(Param("train.epochs", "int", max(1, cfg.train.average_last), max(2, 2 * cfg.train.epochs)))
    if task.ranking:
        bpr, sampled = (("train.loss", ("bpr",)),), (("train.loss", ("sampled-softmax",)),)
        params += [
            Param("train.loss", "choice", choices=("bpr", "softmax", "sampled-softmax")),
            Param("train.negatives", "choice", choices=(1, 4, 16), when=bpr, name="train.negatives|bpr"),
            Param(
                "train.negatives",
                "choice",
                choices=(256, 1024, 4096, 16384),
                when=sampled,
                name="train.negatives|sampled-softmax",
            ),
            Param("model.user_id_dropout", "choice", choices=(0.0, 1.0)),
        ]
        if n_items <= MAX_ITEMS:  # the dense EASE term's own limit
            params += [Param("terms.ease.recommend_weight", "float", 0.0, 0.5), Param("terms.ease.l2", "log", 10, 3000)]
        if has_content:  # the ridge regresses users' items on item tokens (a ranking loss only)
            params += [
                Param("terms.content_ridge.recommend_weight", "float", 0.0, 0.5, when=content),
                Param("terms.content_ridge.l2", "log", 10, 3000, when=content),
            ]
    return Space(params)


def consistent(payload: dict, base: dict) -> dict:
    """Settings that other settings switch off: no history bag means no causal order, position weights or
    bought-with blend; a term tune added whose weights are all 0 is left out; an id-only model has no content
    ridge (it uses no item content)."""
    model = payload.setdefault("model", {})
    history = model.setdefault("user_history", {})
    if not history.get("length"):
        history.update({"order": "latest", "position_weights": False, "similar_weight": 0.0})
    had = {term.get("type") for term in (base.get("model") or {}).get("terms") or []}
    kept = []
    for term in model.get("terms") or []:
        weights = (term.get("recommend_weight") or 0) + (term.get("similar_weight") or 0)
        if term.get("type") not in had and weights == 0:
            continue
        if term.get("type") == "content_ridge" and model.get("variant") == "id-only":
            continue
        kept.append(term)
    model["terms"] = kept
    return payload


def get_key(payload: dict, key: str) -> Any:
    """A dotted key's value in a config payload; `terms.TYPE.FIELD` reads the term's field (its default when the
    term or the field is absent)."""
    if key.startswith(TERM_PREFIX):
        kind, name = key[len(TERM_PREFIX) :].split(".", 1)
        term = _term(payload, kind, create=False)
        if term is not None and name in term:
            return term[name]
        from hybridrec.scoring.base import registry

        return getattr(registry()[kind].Params(), name)
    node: Any = payload
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def set_key(payload: dict, key: str, value: Any) -> None:
    if key.startswith(TERM_PREFIX):
        kind, name = key[len(TERM_PREFIX) :].split(".", 1)
        term = _term(payload, kind, create=True)
        assert term is not None
        term[name] = value
        return
    *parents, last = key.split(".")
    node = payload
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _term(payload: dict, kind: str, create: bool) -> dict | None:
    terms = payload.setdefault("model", {}).setdefault("terms", [])
    for term in terms:
        if term.get("type") == kind:
            return term
    if not create:
        return None
    terms.append({"type": kind})
    return terms[-1]


def check_key(key: str, where: str) -> None:
    """A space file's key must be a config setting or a known term's field."""
    if key.startswith(TERM_PREFIX):
        from hybridrec.scoring.base import registry

        kind, _, name = key[len(TERM_PREFIX) :].partition(".")
        terms = registry()
        if kind not in terms or name not in {f.name for f in dataclasses.fields(terms[kind].Params)}:
            raise ConfigError(
                f"{where}: {key!r} is not a score term field (terms.TYPE.FIELD, TYPE one of {sorted(terms)})"
            )
        return
    try:
        setting(Config(), key)
    except AttributeError:
        raise ConfigError(f"{where}: {key!r} is not a config key") from None


def read_space(path: str | Path) -> Space:
    """A space file: `KEY: [choices]` or `KEY: {float|log|int: [low, high], when: {KEY: [values]}}` per line,
    in the order they are drawn; it replaces the default space."""
    from hybridrec.config_yaml import parse_yaml, read_config_text

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"space file not found: {path}")
    try:
        payload = parse_yaml(read_config_text(path), str(path))
    except Exception as exc:  # noqa: BLE001 - any YAML problem is one line naming the file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: not a valid space file ({first})") from None
    if not isinstance(payload, dict) or not payload:
        raise ConfigError(f"{path}: expected a mapping of config keys to distributions")
    params = []
    for key, spec in payload.items():
        where = f"{path}: {key}"
        check_key(str(key), str(path))
        if isinstance(spec, list) and spec:
            params.append(Param(str(key), "choice", choices=tuple(spec)))
            continue
        kinds = [k for k in KINDS[1:] if isinstance(spec, dict) and k in spec]
        extra = set(spec) - {*KINDS[1:], "when"} if isinstance(spec, dict) else set()
        bounds = spec.get(kinds[0]) if len(kinds) == 1 else None
        if extra or not isinstance(bounds, list) or len(bounds) != 2 or not all(_number(b) for b in bounds):
            raise ConfigError(f"{where}: expected [choices] or {{float|log|int: [low, high]}}")
        low, high = float(bounds[0]), float(bounds[1])
        if low > high or (kinds[0] == "log" and low <= 0):
            raise ConfigError(f"{where}: [{bounds[0]}, {bounds[1]}] is not a valid {kinds[0]} range")
        when = spec.get("when") or {}
        if not isinstance(when, dict) or not all(isinstance(v, list) for v in when.values()):
            raise ConfigError(f"{where}: `when` must map config keys to lists of values")
        params.append(Param(str(key), kinds[0], low, high, when=tuple((str(k), tuple(v)) for k, v in when.items())))
    return Space(params)  # a key twice is a YAML error already (parse_yaml refuses duplicate keys)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
