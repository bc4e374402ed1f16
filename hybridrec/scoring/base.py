"""Score terms: plug-ins that add to the towers' score, declared in config as `model.terms`.

A term is one class in its own module, registered by type name. The facade only loops over the list: it never
knows which terms exist. Each term works on rows (never raw ids), owns its files, and validates its own
prerequisites. How terms combine is one rule (docs/architecture.md):

- recommend / predict / score matrices: towers + scale_t x term_t, with scale_t = w / (1 - w) x spread(towers) /
  spread(term_t) fixed at fit (w = the term's `recommend_weight`);
- similar items: (1 - sum w_t) x z(towers) + sum w_t x z(term_t), z standardised over the catalogue leaving out
  the query (w = `similar_weight`).
"""

from __future__ import annotations

import builtins
import dataclasses
import difflib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from hybridrec.errors import ConfigError

if TYPE_CHECKING:
    from scipy import sparse

    from hybridrec.config import Config
    from hybridrec.model.history import UserHistory

# users and items sampled at fit time to put a term's scores on the towers' scale
SCALE_USERS, SCALE_ITEMS = 1000, 5000


@dataclass
class TermParams:
    """Settings every term has; a term's own parameters extend this."""

    recommend_weight: float = 0.0  # share in recommend / predict / score matrices, in [0, 1)
    similar_weight: float = 0.0  # share in similar items, in [0, 1)


@dataclass
class FitContext:
    """What a term may learn from: training rows only (validation rows judge the network, they do not train)."""

    n_users: int
    n_items: int
    users: np.ndarray  # training rows: user row per interaction
    items: np.ndarray  # training rows: item row per interaction
    history: UserHistory  # every user's training items, latest first
    content_tokens: Callable[[], sparse.csr_matrix]  # items x content tokens (computed on first use)
    seed: int


@dataclass
class NewItems:
    """Items added to the catalogue without retraining (`add_items`): how many, and their content tokens."""

    count: int
    content_tokens: Callable[[], sparse.csr_matrix]


class TermFiles:
    """A term's own folder inside a saved model: validated reads through the model directory."""

    def __init__(self, model_dir: Any, folder: str):
        self.model_dir, self.folder = model_dir, folder
        self.where = model_dir.root / folder  # what an error names: the folder inside the model

    def npy(self, name: str, populate: bool = False) -> np.ndarray:
        """One of the term's arrays, checked (ModelDir.npy; `populate`: mapped into the process now)."""
        return self.model_dir.npy(f"{self.folder}/{name}.npy", populate)

    def json(self, name: str) -> Any:
        return self.model_dir.json(f"{self.folder}/{name}.json")

    def known(self, *names: str) -> bool:
        """Whether these arrays (by name, as `npy` takes) were checked by an earlier load and are unchanged since:
        their whole-array checks may be skipped (ModelDir.known)."""
        return self.model_dir.known(*(f"{self.folder}/{name}.npy" for name in names))

    def history(self, n_users: int, n_items: int) -> UserHistory:
        """The user histories a term saved with `save_history`, checked against the model's sizes."""
        from hybridrec.errors import ModelFileError
        from hybridrec.model.history import UserHistory

        history = UserHistory(self.npy("history_indptr"), self.npy("history_items"))
        problem = history.check(n_users, n_items, scan=not self.known("history_indptr", "history_items"))
        if problem:
            raise ModelFileError(f"{self.where}: {problem}")
        return history


def save_history(folder: Path, history: UserHistory) -> None:
    """A term's own copy of who had what (read back by TermFiles.history)."""
    np.save(folder / "history_indptr.npy", history.indptr, allow_pickle=False)
    np.save(folder / "history_items.npy", history.items, allow_pickle=False)


class ScoreTerm(ABC):
    """One score term. Subclasses set `type` and `Params`, and register with `@register_term`."""

    type: ClassVar[str]
    # learned from who had what: a content-only model, whose items are placed by content alone, refuses it in
    # similar items
    behavioural: ClassVar[bool] = False
    Params: ClassVar[builtins.type[TermParams]] = TermParams  # builtins: `type` here is the ClassVar above

    def __init__(self, params: TermParams):
        self.params = params
        self.scale = 1.0  # fixed at fit: puts the term's recommend scores on the towers' scale

    @classmethod  # noqa: B027 - an optional hook
    def check(cls, params: TermParams, config: Config) -> None:
        """Raise ConfigError when the model's settings cannot carry this term (before any data is read)."""

    def check_catalogue(self, n_items: int) -> None:  # noqa: B027 - optional hook
        """Raise ConfigError when the catalogue is too large for this term (before features are computed)."""

    @abstractmethod
    def fit(self, ctx: FitContext) -> None:
        """Learn from the training rows."""

    @abstractmethod
    def score(self, user_rows: np.ndarray, item_rows: np.ndarray | None = None) -> np.ndarray:
        """Raw scores, users x items (all items when item_rows is None)."""

    def similar(self, item_row: int) -> np.ndarray | None:
        """Raw similar-item scores of one item against the catalogue; None when the term has no such view."""
        return None

    def similar_entries(self, item_row: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The same row as (item rows, scores) of its non-zero entries, when it is sparse (every other item scores
        0), so similar items of a big catalogue blend over candidates; None: only the dense `similar` row."""
        return None

    def score_new(self, user_rows: np.ndarray, new: NewItems) -> np.ndarray | None:
        """Raw scores of users x items outside the catalogue (score_new_items); None: the term knows nothing."""
        return None

    def score_history(
        self,
        item_rows_per_user: list[np.ndarray],
        item_rows: np.ndarray | None = None,
        weights: list[np.ndarray] | None = None,
    ) -> np.ndarray | None:
        """Raw scores, users x items, of users the model does not know, given each one's items (rows of the
        catalogue; `weights`: one per item, 1 = as a known user's item counts). None: the term cannot score from
        a history (an unknown user then gets nothing from it)."""
        return None

    @abstractmethod
    def extend(self, new: NewItems) -> None:
        """Make room for items added to the catalogue (add_items)."""

    @abstractmethod
    def save(self, folder: Path) -> None:
        """Write the term's arrays into its own (existing, empty) folder: .npy or JSON, never pickles."""

    @classmethod
    @abstractmethod
    def load(cls, files: TermFiles, params: TermParams, n_users: int, n_items: int) -> ScoreTerm:
        """Read what `save` wrote, checking types and shapes against the model's sizes (ModelFileError)."""


TERMS: dict[str, type[ScoreTerm]] = {}


def register_term(cls: type[ScoreTerm]) -> type[ScoreTerm]:
    """Class decorator: make a term available to `model.terms` under its `type`."""
    TERMS[cls.type] = cls
    return cls


def registry() -> dict[str, type[ScoreTerm]]:
    """Every registered term type (importing the built-in ones on first use)."""
    from hybridrec.scoring import content_ridge, cooccurrence, ease  # noqa: F401 - registration happens on import

    return TERMS


def parse_term(payload: Any, where: str) -> tuple[type[ScoreTerm], TermParams]:
    """One `model.terms` entry -> its class and typed params; errors name the entry and suggest close keys."""
    from hybridrec.config import build_section
    from hybridrec.limits import shown

    terms = registry()
    if not isinstance(payload, dict) or "type" not in payload:
        raise ConfigError(f"{where}: expected a mapping with a `type` (one of {sorted(terms)}), got {shown(payload)}")
    kind = payload["type"]
    if not isinstance(kind, str) or kind not in terms:  # a list or a mapping is no term name (and not hashable)
        close = difflib.get_close_matches(shown(kind), list(terms), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f" (known: {sorted(terms)})"
        raise ConfigError(f"{where}.type: unknown score term {shown(kind)}{hint}")
    cls = terms[kind]
    params = build_section(cls.Params, {k: v for k, v in payload.items() if k != "type"}, where)
    for field in dataclasses.fields(params):
        value = getattr(params, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}.{field.name}: {value!r} is not a finite number")
    for key in ("recommend_weight", "similar_weight"):
        value = getattr(params, key)
        if not 0 <= value < 1:
            raise ConfigError(f"{where}.{key}: {value!r} is out of range [0, 1)")
    return cls, params


def check_terms(config: Config) -> None:
    """Validate `model.terms`: known types, typed params, each term's prerequisites, one term per type."""
    seen: set[str] = set()
    similar_total = 0.0
    for k, payload in enumerate(config.model.terms):
        where = f"model.terms[{k}]"
        cls, params = parse_term(payload, where)
        if cls.type in seen:
            raise ConfigError(f"{where}: a second {cls.type!r} term; each type may appear once")
        seen.add(cls.type)
        if params.similar_weight > 0 and cls.behavioural and config.model.variant == "content-only":
            raise ConfigError(
                f"{where} ({cls.type}): learned from who bought what, which a content-only model's items do not use"
            )
        if params.similar_weight > 0 and cls.similar is ScoreTerm.similar:
            raise ConfigError(f"{where}.similar_weight: a {cls.type!r} term has no similar-items view; set it to 0")
        try:
            cls.check(params, config)
        except ConfigError as exc:
            raise ConfigError(f"{where} ({cls.type}): {exc}") from None
        similar_total += params.similar_weight
    if similar_total > 1.0:
        raise ConfigError(f"model.terms: similar_weight adds up to {similar_total:g}, more than 1")


def build_terms(config: Config) -> list[ScoreTerm]:
    """Fresh (unfitted) terms as declared in `model.terms`."""
    return [
        cls(params) for cls, params in (parse_term(p, f"model.terms[{k}]") for k, p in enumerate(config.model.terms))
    ]


def uses_ranking_loss(config: Config) -> bool:
    """A blend of scores ranks; explicit data with MSE predicts ratings, which a term would shift."""
    return config.train.loss not in ("auto", "mse")


def history_matrix(
    item_rows_per_user: list[np.ndarray], n_items: int, weights: list[np.ndarray] | None = None
) -> sparse.csr_matrix:
    """Users x items, one row per given history: each distinct item once with its weight (1 when none is given),
    the form a known user's history takes in the closed-form terms (UserHistory.distinct)."""
    from scipy import sparse

    rows, cols, vals = [], [], []
    for u, items in enumerate(item_rows_per_user):
        items = np.asarray(items, np.int64)
        w = np.ones(len(items), np.float32) if weights is None else np.asarray(weights[u], np.float32)
        items, first = np.unique(items, return_index=True)
        rows.append(np.full(len(items), u, np.int64))
        cols.append(items)
        vals.append(w[first])
    if not rows:
        return sparse.csr_matrix((0, n_items), dtype=np.float32)
    return sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(item_rows_per_user), n_items),
        dtype=np.float32,
    )


def blend_scale(tower_scores: np.ndarray, term_scores: np.ndarray, weight: float) -> float:
    """The factor that gives a term `weight` of the blend once both are on one spread: weight / (1 - weight) x
    spread(towers) / spread(term), over a sample of users x items. 0 when the term is flat."""
    tower_spread, term_spread = float(np.std(tower_scores)), float(np.std(term_scores))
    if not np.isfinite(term_spread) or term_spread <= 0 or not np.isfinite(tower_spread):
        return 0.0
    return weight / (1.0 - weight) * tower_spread / term_spread


def standardised(scores: np.ndarray, skip: int | None) -> np.ndarray:
    """Scores minus their mean over the catalogue, over their spread, leaving out the query item `skip` (None: a
    query from outside the catalogue); a flat row (an item nobody bought) becomes all zeros, so it neither helps
    nor hurts any candidate."""
    rest = (scores if skip is None else np.delete(scores, skip)).astype(np.float64)
    spread = rest.std()
    if not np.isfinite(spread) or spread <= 0:
        return np.zeros(len(scores), np.float64)
    return (np.asarray(scores, dtype=np.float64) - rest.mean()) / spread


def evidence(counts: np.ndarray, half: float) -> np.ndarray:
    """n / (n + half) per item: how far an item's behavioural signal is trusted after n training interactions
    (1 everywhere when half is 0). Rarely seen items have ID vectors and co-occurrence rows made of noise."""
    n = np.asarray(counts, dtype=np.float64)
    return np.ones(len(n)) if half <= 0 else n / (n + half)


def blend_similar(tower_scores: np.ndarray, term_rows: list[tuple[float, np.ndarray]], row: int | None) -> np.ndarray:
    """(1 - sum w) x z(towers) + sum w x z(term) for item `row`; `term_rows` = [(similar_weight, raw row)].
    With no term share at all (every weight 0: a query nobody had), the towers' own scores."""
    if not any(weight > 0 for weight, _ in term_rows):
        return np.asarray(tower_scores, dtype=np.float64)
    rest = 1.0 - sum(weight for weight, _ in term_rows)
    blended = rest * standardised(tower_scores, row)
    for weight, scores in term_rows:
        blended = blended + weight * standardised(scores, row)
    return blended
