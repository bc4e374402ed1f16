"""`hybridrec serve`: a FastAPI app over one warm HybridRecommender that follows its model link.

One loaded model answers every request: the network, the feature pipeline and the text model stay in memory, so a
free-text query or a new item costs one encoding, not a process start. A background thread watches the model link
(`latest`, or the folder given): when it resolves to another version folder, the new model is loaded and warmed
beside the old one and one reference is swapped. A request reads that reference once, at its start, so a request
in flight finishes on the model it began with; no request waits for a load or fails during a swap.
"""

from __future__ import annotations

import hmac
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from hybridrec.errors import ConfigError, HybridrecError, ModelFileError, QueryError

if TYPE_CHECKING:
    from hybridrec.recommender import HybridRecommender

log = logging.getLogger("hybridrec.serve")

MAX_K = 1000  # answers longer than this are a batch job, not a request
MAX_NEW_ITEMS = 1000  # items in one /score-new request
MAX_IDS = 100_000  # ids in one allow-list, deny-list or history
DEFAULT_RELOAD_INTERVAL = 2.0
MEMO_TEXTS = 10_000  # query texts whose vectors a served model keeps in memory (about 15 MB at width 384)
UNKNOWN_ID = re.compile(r"\bunknown (user|item) ids?\b")  # the library's words for an id it does not know: 404


# --------------------------------------------------------------------------------------------- the served model
@dataclass(frozen=True)
class Served:
    """One loaded, warmed model and where it came from; never mutated after it is published."""

    rec: HybridRecommender
    root: Path  # the version folder the model link resolved to
    loaded_at: str

    @property
    def version(self) -> str:
        return self.root.name


def load_served(root: Path) -> Served:
    """Load the model in `root` (a version folder) and warm it: network, features, text model and title matcher."""
    from hybridrec.recommender import HybridRecommender

    rec = HybridRecommender.load(root)
    encode_in_memory(rec.features)
    warm(rec)
    return Served(rec, root, time.strftime("%Y-%m-%dT%H:%M:%S"))


def encode_in_memory(features: Any, max_texts: int = MEMO_TEXTS) -> None:
    """Make the served feature pipeline encode texts with its warm text model and an in-memory LRU of the last
    `max_texts` texts, never through the on-disk embedding cache.

    The disk cache is built for fits (thousands of texts a call, shared between processes): each call reads and
    checks every cached entry and a new text adds a file. Per query that costs far more than encoding the one
    text (benchmarks/results/serve.md). One lock around the encoder: the tokenizer is not made for concurrent
    calls, and torch already spreads one encoding over the CPU's threads."""
    encoder = getattr(features, "encoder_", None)
    if encoder is None:  # no text encoder (features.text_encoder: none): nothing to encode
        return
    memo: OrderedDict[str, np.ndarray] = OrderedDict()
    memo_lock, encode_lock = threading.Lock(), threading.Lock()

    def encode_texts(texts: list[str], *_args: Any, **_kwargs: Any) -> np.ndarray:
        texts = [str(t) for t in texts]
        with memo_lock:
            found = {t: memo[t] for t in dict.fromkeys(texts) if t in memo}
            for t in found:
                memo.move_to_end(t)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            with encode_lock:
                fresh = np.asarray(encoder.encode(missing), dtype=np.float32)
            found.update(zip(missing, fresh))
            with memo_lock:
                memo.update(zip(missing, fresh))
                while len(memo) > max_texts:
                    memo.popitem(last=False)
        if not texts:
            return np.zeros((0, int(encoder.dim)), np.float32)
        return np.stack([found[t] for t in texts])

    features.encode_texts = encode_texts


def warm(rec: HybridRecommender) -> None:
    """Load everything a query loads lazily, once, before the model serves: the first request on a new model is
    then as fast as the rest, and no request reads files from a version folder a later save may prune."""
    import pandas as pd

    rec.users_.ready()  # the users' id map (read at its first use)
    rec.net  # noqa: B018 - the property loads the torch network
    rec.index_  # noqa: B018 - and this one the ANN index
    rec.trusted_index_  # noqa: B018 - and the trusted index of a big catalogue (similar.build_trusted_index)
    rec.features  # noqa: B018 - the property loads the feature pipeline
    try:
        # the text model (sentence-transformers) loads on its first encoding; the title matcher on its first query
        rec.score_new_items(pd.DataFrame([{"item_id": "<warm-up>", "title": "warm-up item"}]), k_neighbours=1)
        rec.similar_to_text("warm-up query", 1)
    except HybridrecError as exc:  # a model that cannot score new items still serves the rest
        log.warning("warm-up: %s", exc)


@dataclass
class ModelHolder:
    """The served model behind one reference, and the thread that swaps it when the model link moves.

    Parameters
    ----------
    path : Path
        The model link or folder (`models/latest`, `models/demo`, or a plain model folder).
    reload_interval : float
        Seconds between checks of where `path` resolves; 0 never reloads.
    """

    path: Path
    reload_interval: float = DEFAULT_RELOAD_INTERVAL
    current: Served = field(init=False)
    reloads: int = 0
    reload_error: str | None = None
    _failed: Path | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.path.exists():
            raise ModelFileError(f"no model at {self.path} (run `hybridrec fit` first, or pass --model DIR)")
        self.current = load_served(self.path.resolve())

    def check(self) -> bool:
        """Load and publish the model `path` resolves to now, when that is a new version; True when swapped.

        A version that fails to load is logged, reported by /health and not retried until the link moves again;
        the previous model keeps serving."""
        with self._lock:  # one load at a time (the watcher and a test calling check directly)
            target = self.path.resolve()
            if target == self.current.root or target == self._failed:
                return False
            try:
                served = load_served(target)
            except Exception as exc:  # noqa: BLE001 - any failure keeps the old model serving
                self._failed = target
                self.reload_error = f"{target}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
                log.error("reload failed, still serving %s: %s", self.current.version, self.reload_error)
                return False
            self.current = served  # one reference: requests that began on the old model finish on it
            self.reloads += 1
            self.reload_error, self._failed = None, None
            log.info("now serving %s (%s)", served.version, target)
            return True

    def start(self) -> None:
        """Watch the model link in a daemon thread (nothing when reload_interval is 0)."""
        if self.reload_interval <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="hybridrec-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(self.reload_interval):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watcher never dies; check() already logs load failures
                log.exception("model link check failed")


# --------------------------------------------------------------------------------------------- request / response
class ItemOut(BaseModel):
    item_id: str
    title: str | None = None
    price: float | None = None
    category: str | None = None


class RankedItem(ItemOut):
    rank: int
    score: float


class SimilarResponse(BaseModel):
    query: str
    resolved_id: str | None = Field(description="The catalogue item the query resolved to (None: scored as text)")
    resolved_title: str | None
    match: str = Field(description="id, title or content")
    results: list[RankedItem]
    model: str = Field(description="The model version that answered")


class HistoryEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: str
    weight: float | None = Field(None, description="A rating or weight for this item (optional)")


class RecommendRequest(BaseModel):
    """A known user by `user_id`, or an unknown one by `history` and/or `user_features`."""

    model_config = ConfigDict(extra="forbid")
    user_id: str | None = None
    k: int = Field(10, ge=1, le=MAX_K)
    exclude_seen: bool = True
    history: list[str | HistoryEntry] | None = Field(None, max_length=MAX_IDS)
    user_features: dict[str, str | float | int | bool | None] | None = None
    items: list[str] | None = Field(None, max_length=MAX_IDS, description="Allow-list: rank only these items")
    exclude: list[str] | None = Field(None, max_length=MAX_IDS, description="Deny-list: never return these items")


class RecommendResponse(BaseModel):
    user_id: str | None
    kind: str = Field(description="known (a user the model knows), unknown (scored from history/features), popular")
    known_user: bool
    results: list[RankedItem]
    model: str


class ScoreNewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_NEW_ITEMS, description="New items as records: item_id, title, metadata columns"
    )
    user_ids: list[str] | None = Field(None, max_length=MAX_NEW_ITEMS, description="Score for these users")
    neighbours: int = Field(5, ge=1, le=100)


class Neighbour(BaseModel):
    item_id: str
    title: str | None
    similarity: float


class ScoredItem(BaseModel):
    item_id: str
    title: str
    user_id: str | None = Field(description="None: an average user")
    score: float
    neighbours: list[Neighbour]


class ScoreNewResponse(BaseModel):
    results: list[ScoredItem]
    model: str


class ItemResponse(ItemOut):
    in_training: bool = Field(description="The item had interactions at fit time (else it ranks by content)")
    retired: bool = Field(description="Retired by remove_items: no query answers it")
    model: str


class HealthResponse(BaseModel):
    status: str
    model: str
    loaded_at: str
    reloads: int
    reload_error: str | None


class VersionResponse(BaseModel):
    hybridrec: str = Field(description="The serving library's version")
    model: str
    model_path: str
    created: str | None
    model_hybridrec_version: str | None
    name: str
    variant: str
    feedback: str
    users: int
    items: int


# --------------------------------------------------------------------------------------------- the app
_bearer = HTTPBearer(auto_error=False)


def _served(request: Request) -> Served:
    """The model for this request, read once: the request keeps it to its end, whatever a reload swaps in."""
    return request.app.state.holder.current


def _authorised(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    token = request.app.state.token
    if token is None:
        return
    if creds is None or not hmac.compare_digest(creds.credentials.encode(), token.encode()):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


Model = Annotated[Served, Depends(_served)]
Auth = [Depends(_authorised)]


def create_app(
    model_path: str | Path, token: str | None = None, reload_interval: float = DEFAULT_RELOAD_INTERVAL
) -> FastAPI:
    """The serving app over the model at `model_path`, loaded and warmed now (a bad model fails here, not on the
    first request).

    Parameters
    ----------
    model_path : path
        A model link or folder; when it is a link (`models/latest`), the app follows it to new versions.
    token : str, optional
        When set, every endpoint but /health needs `Authorization: Bearer <token>` (401 otherwise).
    reload_interval : float
        Seconds between checks of the model link; 0 never reloads.

    Returns
    -------
    FastAPI
        The app; `app.state.holder` is its ModelHolder.
    """
    from hybridrec import __version__

    if token is not None and not token:
        raise ConfigError("the bearer token is empty: give a non-empty token, or none for an open service")
    holder = ModelHolder(Path(model_path), reload_interval)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        holder.start()
        try:
            yield
        finally:
            holder.stop()

    app = FastAPI(title="hybridrec", version=__version__, lifespan=lifespan)
    app.state.holder = holder
    app.state.token = token

    @app.exception_handler(HybridrecError)
    async def _hybridrec_error(_request: Request, exc: HybridrecError) -> JSONResponse:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, QueryError):
            status = 404 if UNKNOWN_ID.search(message) else 422
        else:
            status = 503 if isinstance(exc, ModelFileError) else 422
        return JSONResponse({"detail": message}, status_code=status)

    @app.get("/health", response_model=HealthResponse)
    def health(m: Model) -> HealthResponse:
        """Liveness and the model version being served (no token needed)."""
        return HealthResponse(
            status="ok",
            model=m.version,
            loaded_at=m.loaded_at,
            reloads=holder.reloads,
            reload_error=holder.reload_error,
        )

    @app.get("/version", response_model=VersionResponse, dependencies=Auth)
    def version(m: Model) -> VersionResponse:
        """What is being served: library version, model version folder, sizes."""
        rec = m.rec
        origin = getattr(rec, "origin_", {})
        return VersionResponse(
            hybridrec=__version__,
            model=m.version,
            model_path=str(m.root),
            created=origin.get("created"),
            model_hybridrec_version=origin.get("version"),
            name=rec.config.name,
            variant=rec.config.model.variant,
            feedback=rec.feedback_,
            users=len(rec.users_),
            items=len(rec.items_),
        )

    @app.get("/similar", response_model=SimilarResponse, dependencies=Auth)
    def similar(
        m: Model,
        q: Annotated[str, Query(min_length=1, max_length=2000, description="An item id or free text")],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    ) -> SimilarResponse:
        """Items similar to an item id or to free text (a title, or text scored as a new item)."""
        match = m.rec.similar_to_text(q, k)
        return SimilarResponse(
            query=q,
            resolved_id=match.resolved_id,
            resolved_title=match.resolved_title,
            match=match.how,
            results=_ranked(m.rec, match.ids, match.scores),
            model=m.version,
        )

    def _recommend(m: Served, req: RecommendRequest) -> RecommendResponse:
        rec = m.rec
        known = req.user_id is not None and req.user_id in rec.users_
        history = None if req.history is None else _history(req.history)
        described = bool(history) or bool(req.user_features)
        # an unknown id with a history or features is a new user, scored from what the request says about them;
        # an unknown id with nothing else is the library's QueryError (a 404), never silently a stranger
        user: Any = req.user_id if known or not described else None
        ids, scores = rec.recommend(
            user,
            req.k,
            exclude_seen=req.exclude_seen,
            history=history,
            user_features=req.user_features,
            items=req.items,
            exclude=req.exclude,
        )
        kind = "known" if known else ("unknown" if described else "popular")
        shown = scores if kind == "popular" else rec.clip_ratings(scores)  # as `hybridrec recommend` shows them
        return RecommendResponse(
            user_id=req.user_id, kind=kind, known_user=known, results=_ranked(rec, ids, shown), model=m.version
        )

    @app.post("/recommend", response_model=RecommendResponse, dependencies=Auth)
    def recommend_post(m: Model, req: RecommendRequest) -> RecommendResponse:
        """Top-k for a known user (`user_id`) or an unknown one (`history`, `user_features`), with an allow-list
        (`items`) and a deny-list (`exclude`)."""
        return _recommend(m, req)

    @app.get("/recommend", response_model=RecommendResponse, dependencies=Auth)
    def recommend_get(
        m: Model,
        user_id: str | None = None,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        exclude_seen: bool = True,
        history: Annotated[list[str] | None, Query(description="Item ids (repeat or comma-separate)")] = None,
        items: Annotated[list[str] | None, Query(description="Allow-list (repeat or comma-separate)")] = None,
        exclude: Annotated[list[str] | None, Query(description="Deny-list (repeat or comma-separate)")] = None,
    ) -> RecommendResponse:
        """As POST /recommend, with lists as repeated or comma-separated query parameters (no user features)."""
        ids: list[str | HistoryEntry] | None = _split(history)  # type: ignore[assignment]
        req = RecommendRequest(
            user_id=user_id,
            k=k,
            exclude_seen=exclude_seen,
            history=ids,
            items=_split(items),
            exclude=_split(exclude),
        )
        return _recommend(m, req)

    @app.post("/score-new", response_model=ScoreNewResponse, dependencies=Auth)
    def score_new(m: Model, req: ScoreNewRequest) -> ScoreNewResponse:
        """Scores of new items (no interactions) from their content, with their nearest catalogue items."""
        import pandas as pd

        for n, record in enumerate(req.items, 1):
            for column in ("item_id", "title"):
                if column not in record:
                    raise HTTPException(422, f"items[{n - 1}] has no {column!r}")
        frame = pd.DataFrame(req.items)
        rec = m.rec
        scored = rec.score_new_items(frame, req.user_ids, k_neighbours=req.neighbours)
        results = [
            ScoredItem(
                item_id=str(row.item_id),
                title=str(row.title),
                user_id=row.user_id,
                score=float(row.score),
                neighbours=[
                    Neighbour(item_id=i, title=_title(rec, i), similarity=float(s))
                    for i, s in zip(row.neighbours, row.neighbour_similarities)
                ],
            )
            for row in scored.itertuples()
        ]
        return ScoreNewResponse(results=results, model=m.version)

    @app.get("/items/{item_id:path}", response_model=ItemResponse, dependencies=Auth)
    def item(m: Model, item_id: str) -> ItemResponse:
        """One catalogue item's display fields."""
        rec = m.rec
        info = _display(rec, item_id)
        row = rec.items_.index(item_id)
        return ItemResponse(
            **info.model_dump(),
            in_training=bool(rec.item_has_id_[row]),
            retired=bool(rec.retired_[row]),
            model=m.version,
        )

    return app


def _split(values: list[str] | None) -> list[str] | None:
    """Repeated and comma-separated query values as one list (`?items=A,B&items=C`)."""
    if values is None:
        return None
    return [v.strip() for group in values for v in group.split(",") if v.strip()]


def _history(entries: list[str | HistoryEntry]) -> list[str] | dict[str, float]:
    """Plain ids (most recent first) as a list; with any weight given, {id: weight} in the order given (a missing
    weight counts as 1), the two forms `recommend(history=...)` takes."""
    if all(isinstance(e, str) for e in entries):
        return [e for e in entries if isinstance(e, str)]
    weights: dict[str, float] = {}
    for e in entries:
        item_id, weight = (e, None) if isinstance(e, str) else (e.item_id, e.weight)
        weights.setdefault(item_id, 1.0 if weight is None else float(weight))
    return weights


def _finite(value: Any) -> float | None:
    """JSON has no NaN or infinity: a missing price is null."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _display(rec: HybridRecommender, item_id: str) -> ItemOut:
    info = rec.item_info(item_id)
    title, category = info.get("title"), info.get("category")
    return ItemOut(
        item_id=info["item_id"],
        title=None if title is None else str(title),
        price=_finite(info.get("price")),
        category=None if category is None else str(category),
    )


def _title(rec: HybridRecommender, item_id: str) -> str | None:
    return _display(rec, item_id).title


def _ranked(rec: HybridRecommender, ids: list[str], scores: Any) -> list[RankedItem]:
    return [
        RankedItem(**_display(rec, i).model_dump(), rank=rank, score=float(s))
        for rank, (i, s) in enumerate(zip(ids, scores), 1)
    ]
