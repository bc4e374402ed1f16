"""`hybridrec recommend` (known users, unknown users from their items and features, nobody, a file of users),
`hybridrec remove` (retire items) and `hybridrec explain` (why a user gets an item), added to the main app by
`register`. Heavy imports happen inside the commands."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from hybridrec_cli.options import DebugOpt, JsonOpt, ModelOpt

from hybridrec.errors import QueryError

BATCH_USERS = 1000  # users per recommend_batch call from a users file (one progress step)
RECOMMEND_HELP = (
    "Top-k for a user, a user the model never saw (--history) or a file of users (--users-file).\n\n"
    "A user the model never saw is scored from their items (--history, most recent first) and features (--feature"
    " KEY=VALUE) with no retraining. With no user, no history and no features: the catalogue's most popular items"
    " (score = training interactions). --items and --exclude are allow- and deny-lists.\n\n"
    "Examples: hybridrec recommend U0001 -k 5 --exclude D0031 | hybridrec recommend --history D0031,D0042 |"
    " hybridrec recommend --users-file users.txt --out recs.parquet"
)
EXPLAIN_HELP = (
    "Why a user gets an item: the score split into parts, and what moved them.\n\n"
    "The parts add up to the score: global mean, biases, the dot product by the item vector's ID and content halves,"
    " each score term. Then the user's history items and the item's feature groups that moved it most.\n\n"
    "Example: hybridrec explain U0001 D0031"
)


def id_option(value: str | None) -> list[str] | None:
    """`A,B,C` -> ["A", "B", "C"] (blanks dropped); None stays None."""
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def feature_options(values: list[str] | None) -> dict[str, str] | None:
    """`--feature key=value` (repeatable) -> {key: value}; a malformed one is a QueryError naming it."""
    if not values:
        return None
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise QueryError(f"--feature {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def read_users_file(path: Path) -> list[str]:
    """User ids from a file: Parquet or CSV with a `user_id` column, or plain text with one id per line (blank
    lines and lines starting with # skipped)."""
    import pandas as pd

    from hybridrec.data.idmap import normalize_id
    from hybridrec.errors import DataError

    suffix = path.suffix.lower()
    if suffix in (".parquet", ".csv", ".tsv"):
        try:
            frame = (
                pd.read_parquet(path)
                if suffix == ".parquet"
                else pd.read_csv(path, dtype=str, sep="\t" if suffix == ".tsv" else ",", keep_default_na=False)
            )
        except (ValueError, OSError, ImportError) as exc:
            raise DataError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None
        if "user_id" not in frame.columns:
            raise DataError(f"{path}: no user_id column (columns: {', '.join(map(str, frame.columns))})")
        return [normalize_id(u) for u in frame["user_id"] if str(u).strip()]
    lines = path.read_text(encoding="utf-8").splitlines()
    return [normalize_id(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def write_table(frame, out: Path) -> None:
    """Parquet or CSV by the file's suffix, written beside it and renamed into place (never half a file)."""
    from hybridrec.errors import QueryError

    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise QueryError(f"--out {out}: the file name must end in .parquet or .csv")
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        if suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def recommend_file(
    rec, users_file: Path, out: Path, k: int, items, exclude, exclude_seen: bool, quiet: bool
) -> tuple[int, int]:
    """Top-k for every user in `users_file` into `out`, in chunks with a progress bar; (users, rows)."""
    import pandas as pd
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    users = read_users_file(users_file)
    if not users:
        raise QueryError(f"{users_file}: no user ids")
    unknown = [u for u in dict.fromkeys(users) if u not in rec.users_]
    if unknown:  # checked before any scoring: a bad file fails at once, not after most of it
        from hybridrec.queries import unknown_error

        raise unknown_error(unknown, str(users_file), "user")
    frames = []
    columns = [TextColumn("recommend"), BarColumn(), MofNCompleteColumn(), TextColumn("users"), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), disable=quiet, transient=False) as progress:
        task = progress.add_task("recommend", total=len(users))
        for start in range(0, len(users), BATCH_USERS):
            chunk = users[start : start + BATCH_USERS]
            frames.append(rec.recommend_batch(chunk, k, items=items, exclude=exclude, exclude_seen=exclude_seen))
            progress.advance(task, len(chunk))
    result = pd.concat(frames, ignore_index=True)
    write_table(result, out)
    return len(users), len(result)


def register(app: typer.Typer, run: Callable[[bool, Callable[[], Any]], Any], default_model: Path) -> None:
    """Add `recommend`, `remove` and `explain` to `app`; `run(debug, job)` is the CLI's error handler."""

    @app.command(help=RECOMMEND_HELP)
    def recommend(
        user_id: Annotated[
            str | None, typer.Argument(help="A user id from the training data (omit it for an unknown user).")
        ] = None,
        model: ModelOpt = default_model,
        k: Annotated[int, typer.Option("-k", "--k", help="How many results.")] = 10,
        history: Annotated[
            str | None,
            typer.Option("--history", help="A user the model never saw: their item ids, most recent first (A,B,C)."),
        ] = None,
        feature: Annotated[
            list[str] | None,
            typer.Option("--feature", "-f", help="A user feature of an unknown user: KEY=VALUE (repeatable)."),
        ] = None,
        items: Annotated[str | None, typer.Option("--items", help="Only these items (A,B,C).")] = None,
        exclude: Annotated[str | None, typer.Option("--exclude", help="Never these items (A,B,C).")] = None,
        users_file: Annotated[
            Path | None,
            typer.Option("--users-file", help="Many known users: ids one per line, or a CSV/Parquet user_id column."),
        ] = None,
        out: Annotated[
            Path | None, typer.Option("--out", "-o", help="With --users-file: write recs.parquet or recs.csv.")
        ] = None,
        include_seen: Annotated[bool, typer.Option("--include-seen", help="Also return items the user had.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
        as_json: JsonOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Top-k for a user, a user the model never saw or a file of users (RECOMMEND_HELP)."""

        def job():
            from hybridrec_cli.main import _item_rows, _item_table, _load

            allow, deny = id_option(items), id_option(exclude)
            features = feature_options(feature)
            if users_file is not None or out is not None:
                if users_file is None or out is None:
                    raise QueryError("--users-file and --out go together")
                if user_id is not None or history is not None or features:
                    raise QueryError("--users-file takes no USER_ID, --history or --feature")
                rec = _load(model)
                n_users, n_rows = recommend_file(rec, users_file, out, k, allow, deny, not include_seen, quiet)
                summary = {"users": n_users, "rows": n_rows, "out": str(out)}
                typer.echo(json.dumps(summary) if as_json else f"wrote {n_rows} rows for {n_users} users to {out}")
                return
            rec = _load(model)
            known = user_id is not None and user_id in rec.users_
            if known and (history is not None or features):
                typer.echo(f"note: {user_id} is a known user: --history and --feature are ignored", err=True)
            past = id_option(history)
            ids, scores = rec.recommend(
                user_id,
                k,
                exclude_seen=not include_seen,
                history=past,
                user_features=features,
                items=allow,
                exclude=deny,
            )
            if past and not known:
                from hybridrec.queries import reads_history

                if not reads_history(rec):
                    typer.echo(
                        "note: this model has no history bag (model.user_history.length) and no history term:"
                        " the history is only left out of the answer",
                        err=True,
                    )
            fallback = user_id is None and not past and not features
            shown = scores if fallback else rec.clip_ratings(scores)  # predicted ratings stay in the rating range
            rows = _item_rows(rec, ids, shown)
            who = user_id if known else ("nobody" if fallback else "an unknown user")
            if as_json:
                kind = "known" if known else ("popular" if fallback else "unknown")
                typer.echo(json.dumps({"user_id": user_id, "user": kind, "results": rows}))
                return
            if fallback:
                typer.echo("nothing known about the user: the most popular items (score = training interactions)")
            _item_table(f"recommendations for {who}", rows)

        run(debug, job)

    @app.command()
    def remove(
        item_ids: Annotated[list[str], typer.Argument(help="Catalogue item ids to retire.")],
        model: ModelOpt = default_model,
        debug: DebugOpt = False,
    ) -> None:
        """Retire items without refitting: no query answers them any more; saved atomically.

        Example: hybridrec remove D0031 D0042
        """

        def job():
            from hybridrec_cli.main import _load

            rec = _load(model)
            before = int(rec.retired_.sum())
            rec.remove_items(item_ids)
            rec.save(model)
            newly = int(rec.retired_.sum()) - before
            typer.echo(f"retired {newly} item(s) in {model} ({int(rec.retired_.sum())} retired in all)")

        run(debug, job)

    @app.command(help=EXPLAIN_HELP)
    def explain(
        user_id: Annotated[str, typer.Argument(help="A user id from the training data.")],
        item_id: Annotated[str, typer.Argument(help="A catalogue item id.")],
        model: ModelOpt = default_model,
        as_json: JsonOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Why a user gets an item (EXPLAIN_HELP)."""

        def job():
            from hybridrec_cli.main import _load, _table

            rec = _load(model)
            out = rec.explain(user_id, item_id)
            if as_json:
                typer.echo(json.dumps(out))
                return
            parts = [[name, f"{value:+.4f}"] for name, value in out["parts"].items()]
            parts.append(["= score", f"{out['score']:.4f}"])
            _table(f"{out['user_id']} x {out['item_id']}", ["part", "value"], parts, caption=out["title"])
            for source, listed in out["behaviour"].items():
                if listed:
                    rows = [[r["item_id"], r["title"], f"{r['effect']:+.4f}"] for r in listed]
                    _table(f"history items ({source})", ["item_id", "title", "effect"], rows)
            if out["content"]:
                rows = [[r["group"], f"{r['effect']:+.4f}"] for r in out["content"]]
                _table("item features (score drop when zeroed)", ["feature group", "effect"], rows)

        run(debug, job)
