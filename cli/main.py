"""The `hybridrec` command: parse, call the library, print. Heavy imports happen inside the commands."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from hybridrec_cli.options import DataOpt, DebugOpt, JsonOpt, KOpt, ModelOpt, SetOpt
from hybridrec_cli.practitioner import register as register_practitioner
from hybridrec_cli.serve import register as register_serving
from hybridrec_cli.tune import register as register_tune

from hybridrec.errors import HybridrecError

DEFAULT_OUT = Path(os.environ.get("HYBRIDREC_HOME", "models"))
DEFAULT_MODEL = DEFAULT_OUT / "latest"

app = typer.Typer(
    help="Hybrid content + collaborative recommender: fit on review data, then ask for similar items, "
    "recommendations and cold-start scores.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(exc: BaseException, debug: bool) -> None:
    if debug:
        raise exc
    if isinstance(exc, OSError) and exc.filename and exc.strerror:  # "models: Not a directory", not "[Errno 20] ..."
        message = f"{exc.filename}: {exc.strerror}"
    else:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _run(debug: bool, fn):
    try:
        return fn()
    except HybridrecError as exc:
        _fail(exc, debug)
    except OSError as exc:  # a path the user gave that cannot be used: missing, a file, no permission, disk full
        _fail(exc, debug)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


def _load(model: Path):
    from hybridrec.recommender import HybridRecommender

    return HybridRecommender.load(model, mapped=True)  # one process, a few queries: read what they touch


def _table(title: str, columns: list[str], rows: list[list], caption: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=caption)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    # Piped output is not squeezed into 80 columns: keep one row per line for grep and logs.
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def _fmt_price(price) -> str:
    return "" if price is None else f"{price:,.2f}"


def _fmt_value(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else "" if v is None else str(v)


def _metrics_table(title: str, metrics: dict, baseline: dict | None = None, run: dict | None = None) -> None:
    """Held-out metrics (beside the popularity baseline when there is one), then the bookkeeping apart."""
    if baseline:
        rows = [[k, _fmt_value(v), _fmt_value(baseline.get(k))] for k, v in metrics.items()]
        caption = "baseline: the most popular training items; ratings: the item's mean"
        _table(title, ["metric", "model", "popularity baseline"], rows, caption=caption)
    else:
        _table(title, ["metric", "value"], [[k, _fmt_value(v)] for k, v in metrics.items()])
    if run:
        _table("run", ["field", "value"], [[k, _fmt_value(v)] for k, v in run.items()])


def _metrics_record(saved: dict) -> tuple[dict, dict, dict]:
    """(metrics, baseline, run) of a model's metrics.json; a model saved before the split keeps everything in
    one flat record: its floats other than the bookkeeping ones are its metrics."""
    if isinstance(saved.get("metrics"), dict):
        return saved["metrics"], saved.get("baseline") or {}, saved.get("run") or {}
    bookkeeping = ("validation_score", "fit_seconds", "feature_seconds", "terms_seconds", "train_seconds")
    metrics = {k: v for k, v in saved.items() if isinstance(v, float) and k not in bookkeeping}
    return metrics, {}, {k: v for k, v in saved.items() if k not in metrics}


ITEM_COLUMNS = ["rank", "item_id", "title", "price", "category", "score"]


def _item_rows(rec, ids: list[str], scores) -> list[dict]:
    """Ranked answers with their display fields, for tables and JSON alike."""
    return [
        {"rank": rank, **rec.item_info(item_id), "score": round(float(score), 4)}
        for rank, (item_id, score) in enumerate(zip(ids, scores), 1)
    ]


def _neighbours(row) -> str:
    """'Title (ID); Title (ID)': nearest catalogue items as people read them."""
    return "; ".join(f"{title} ({item_id})" for item_id, title in zip(row.neighbours, row.neighbour_titles))


def _item_table(title: str, rows: list[dict]) -> None:
    _table(
        title,
        ITEM_COLUMNS,
        [
            [r["rank"], r["item_id"], r["title"], _fmt_price(r["price"]), r["category"], f"{r['score']:.3f}"]
            for r in rows
        ],
    )


@app.command()
def fit(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config.")] = Path("configs/default.yaml"),
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory for models.")] = DEFAULT_OUT,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (overrides the config).")] = None,
    data: DataOpt = None,
    set_: SetOpt = None,
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            help="Use the task's recipe (rating, topn, similar, cold) in place of the config's model and train "
            "sections; --set applies on top.",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted fit of the same config from its checkpoint.")
    ] = False,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc",
            min=1,
            help="Train on this many local processes (torch.distributed under torchrun; gloo on CPU, NCCL on GPUs);"
            " rank 0 evaluates and saves.",
        ),
    ] = 1,
) -> None:
    """Train a model, evaluate it on the held-out split and save it.

    Example: hybridrec fit --config configs/movielens-100k.yaml --data ratings=~/ml-100k/u.data
    """
    from hybridrec.model import distributed

    if distributed.launched():  # one rank of a torchrun job: only rank 0 prints
        distributed.setup()
        if not distributed.is_main():
            quiet, as_json = True, False

    def job():
        from hybridrec_cli.job import fit_from_config
        from hybridrec_cli.progress import fit_display

        from hybridrec.config import load_config

        overrides = [f"data.paths.{kv}" for kv in (data or [])] + list(set_ or [])
        if seed is not None:
            overrides.append(f"seed={seed}")
        cfg = load_config(config, overrides, task=task)
        Path(out).mkdir(parents=True, exist_ok=True)  # an unusable --out fails now, not after training
        if nproc > 1 and not distributed.launched():  # the config holds: this same command as nproc torchrun ranks
            named = (("config", config), ("seed", seed), ("task", task))
            args = [f"--{name}={value}" for name, value in named if value is not None]
            args += [f"--out={out}", *(f"--data={d}" for d in data or []), *(f"--set={kv}" for kv in set_ or [])]
            args += [flag for flag, on in (("--quiet", quiet), ("--resume", resume), ("--json", as_json)) if on]
            raise typer.Exit(distributed.relaunch(nproc, ["fit", *args, *(["--debug"] if debug else [])]))
        with fit_display(quiet):  # progress on stderr: a live bar on a terminal, plain lines elsewhere
            report = fit_from_config(cfg, out, quiet=quiet, resume=resume)
        if as_json:
            payload = {"model": str(report.model_path), "metrics": report.metrics}
            typer.echo(json.dumps(payload | {"baseline": report.baseline, "run": report.run}))
            return
        _metrics_table("held-out metrics", report.metrics, report.baseline, report.run)
        typer.echo(f"model saved to {report.model_path} (also {Path(out) / 'latest'})")
        typer.echo(f"report: {report.model_path / 'report.html'}")

    try:
        _run(debug, job)
        distributed.barrier()  # rank 0, its model saved: the ranks that waited for it may now end the group
    except distributed.WorkerDone:  # a rank other than 0, done after training: rank 0 evaluates and saves
        # wait for it: a rank that tore the group down while rank 0 still held it aborted in gloo ("terminate
        # called without an active exception"), and the launcher then killed rank 0 mid-save
        distributed.barrier()
    finally:
        distributed.teardown()
    if distributed.launched():  # a rank of a torchrun job, done: no interpreter teardown for gloo to abort in
        distributed.end_process()


@app.command()
def similar(
    query: Annotated[str, typer.Argument(help="An item id, or free text such as a product title.")],
    model: ModelOpt = DEFAULT_MODEL,
    k: KOpt = 10,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Items similar to an item id or to free text, in content and in behaviour.

    Example: hybridrec similar "S-Video cable" -k 5
    """

    def job():
        if not query.strip():
            from hybridrec.errors import QueryError

            raise QueryError("the query is empty: give an item id or some text")  # before loading the model
        rec = _load(model)
        match = rec.similar_to_text(query, k, exact=True)  # one query: cheaper than reading a big index, and exact
        rows = _item_rows(rec, match.ids, match.scores)
        if match.how == "content":
            said = f"no catalogue title matched {query!r}: scored it as a new item from its text"
        else:
            said = f"query resolved to {match.resolved_id}: {match.resolved_title}"
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "query": query,
                        "resolved_id": match.resolved_id,
                        "resolved_title": match.resolved_title,
                        "match": match.how,
                        "results": rows,
                    }
                )
            )
            return
        typer.echo(said)
        _item_table(f"similar to {query!r}", rows)

    _run(debug, job)


@app.command("score-new")
def score_new(
    file: Annotated[Path, typer.Argument(help="New items as JSON lines or CSV with item_id, title, ...")],
    model: ModelOpt = DEFAULT_MODEL,
    users: Annotated[list[str] | None, typer.Option("--users", "-u", help="Score for these user ids.")] = None,
    add: Annotated[bool, typer.Option("--add", help="Also add the items to the model's index and save it.")] = False,
    neighbours: Annotated[int, typer.Option("--neighbours", "-n", help="Nearest catalogue items to show.")] = 5,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Score brand-new items (no interactions) from their content, and show their nearest catalogue items.

    Example: hybridrec score-new new_items.jsonl --users U0001 --users U0002 --add
    """

    def job():
        from hybridrec.data.newitems import read_new_items

        rec = _load(model)
        items = read_new_items(file)
        user_ids = [u for group in (users or []) for u in group.split(",") if u]
        scored = rec.score_new_items(items, user_ids or None, k_neighbours=neighbours)
        if add:
            rec.add_items(items)
            rec.save(model)
        if as_json:
            typer.echo(scored.to_json(orient="records", lines=True).strip())
        else:
            _table(
                "new items",
                ["item_id", "title", "user", "score", "nearest items"],
                [
                    [r.item_id, r.title, r.user_id or "(average user)", f"{r.score:.3f}", _neighbours(r)]
                    for r in scored.itertuples()
                ],
            )
        if add:
            typer.echo(f"added {len(items)} items to {model}", err=True)

    _run(debug, _locked(model, job) if add else job)


def _locked(model: Path, fn):
    """`fn` holding the model's update lock from its load to its save: a concurrent `--add` waits for this one
    and then starts from its result, so neither loses items."""

    def run():
        from hybridrec.artifacts import model_link
        from hybridrec.safeio import model_lock

        with model_lock(model_link(model)):
            return fn()

    return run


@app.command()
def evaluate(
    model: ModelOpt = DEFAULT_MODEL,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Re-read data with this config.")] = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Evaluate a saved model on its held-out split (re-read from the data with the model's config).

    Example: hybridrec evaluate --model models/movielens-100k
    """

    def job():
        from hybridrec_cli.job import held_out

        from hybridrec.config import load_config
        from hybridrec.data.readers import read_dataset
        from hybridrec.data.splits import split_interactions
        from hybridrec.errors import DataError
        from hybridrec.evaluation.holdout import training_overlap

        rec = _load(model)
        cfg = load_config(config) if config else rec.config
        dataset = read_dataset(cfg)
        split = split_interactions(dataset.interactions, cfg.split, cfg.seed)
        overlap = training_overlap(rec, split.test)
        if overlap:  # metrics over rows the model learned from would be inflated: a wrong answer, not a result
            raise DataError(
                f"{overlap} of {len(split.test)} test rows are (user, item) pairs the model was fitted on: this data"
                " or split is not the fit's (evaluate with the model's own settings, or fit on this config)"
            )
        metrics, baseline, counts = held_out(rec, split, cfg.evaluate.k, cfg.seed, cfg.evaluate.max_users)
        if as_json:
            typer.echo(json.dumps({"metrics": metrics, "baseline": baseline, "run": counts}))
            return
        _metrics_table("held-out metrics", metrics, baseline, counts)

    _run(debug, job)


@app.command()
def info(model: ModelOpt = DEFAULT_MODEL, as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """What a saved model is: data, variant, sizes, metrics and files.

    Example: hybridrec info --model models/latest
    """

    def job():
        rec = _load(model)
        summary = {
            "model": rec.origin_["model"],
            "name": rec.config.name,
            "created": rec.origin_["created"],
            "hybridrec_version": rec.origin_["version"],
            "variant": rec.config.model.variant,
            "feedback": rec.feedback_,
            "users": len(rec.users_),
            "items": len(rec.items_),
            "dim": int(rec.towers_.item_vectors.shape[1]),
            "terms": [term.type for term in rec.terms_],
            "text_encoder": rec.config.features.text_encoder,
        }
        metrics, baseline, run = _metrics_record(rec.metrics_ if isinstance(rec.metrics_, dict) else {})
        result = rec.train_result_
        training = {
            "metric": result.metric,
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "history": result.history,
        }
        if as_json:
            record = {"metrics": metrics, "baseline": baseline, "run": run, "training": training}
            typer.echo(json.dumps(summary | record))
            return
        _table("model", ["field", "value"], [[k, v] for k, v in summary.items()])
        _metrics_table("held-out metrics", metrics, baseline, run)
        _history_table(result)

    _run(debug, job)


register_serving(app, _run, DEFAULT_MODEL)  # `serve` and `export` (cli/serve.py)
register_practitioner(app, _run, DEFAULT_MODEL)  # `recommend`, `remove`, `explain` (cli/practitioner.py)
register_tune(app, _run)  # `tune` (cli/tune.py)


def _history_table(result) -> None:
    """The per-epoch training history saved in the model; the kept epoch is starred."""
    from hybridrec.progress import metric_label

    if not result.history:
        return
    val = metric_label(result.metric) if result.metric else "val"
    columns = ["epoch", "train loss"] + ([] if result.metric == "train loss" else [val]) + ["seconds"]
    rows = []
    for r in result.history:
        row = [f"{r['epoch']}{' *' if r['epoch'] == result.best_epoch else ''}", f"{r['train_loss']:.4f}"]
        row += [] if result.metric == "train loss" else [f"{r['val']:.4f}"]
        rows.append(row + [f"{r['seconds']:.1f}" if "seconds" in r else ""])
    stop = "stopped early" if result.stopped_early else "ran every epoch"
    _table("training", columns, rows, caption=f"* the kept epoch; {stop}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
