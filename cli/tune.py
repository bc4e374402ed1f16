"""`hybridrec tune`: search a config's settings with Optuna (hybridrec/tuning), added to the main app by `register`.
Optuna and torch are imported inside the command."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from hybridrec_cli.options import DataOpt, DebugOpt, SetOpt


def register(app: typer.Typer, run: Callable[[bool, Callable[[], Any]], Any]) -> None:
    """Add `tune` to `app`; `run(debug, job)` is the CLI's error handler (one `error:` line, exit 2)."""

    @app.command()
    def tune(
        config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config to start from.")] = Path(
            "configs/default.yaml"
        ),
        data: DataOpt = None,
        set_: SetOpt = None,
        minutes: Annotated[
            float | None,
            typer.Option(
                "--minutes",
                help="Wall-clock budget of this run; no trial starts after it (the one running then finishes).",
            ),
        ] = None,
        trials: Annotated[
            int | None,
            typer.Option("--trials", help="Stop when the study holds this many finished trials (earlier runs count)."),
        ] = None,
        out: Annotated[
            Path | None, typer.Option("--out", "-o", help="Folder for the study and results (default: tune/NAME).")
        ] = None,
        resume: Annotated[
            bool, typer.Option("--resume", help="Continue the study in --out (same config, data and overrides).")
        ] = False,
        seed: Annotated[
            int | None, typer.Option("--seed", help="Seed of the sampler (default: the config's seed).")
        ] = None,
        space: Annotated[
            Path | None,
            typer.Option("--space", help="YAML search space replacing the default one (README: `hybridrec tune`)."),
        ] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
        debug: DebugOpt = False,
    ) -> None:
        """Search the config's settings with Optuna; write OUT/best.yaml (a config for `fit`) and OUT/trials.csv.

        Trials fit on the training part of the config's split and are scored on its validation rows; never on test.

        Trial 0 is the config as given; trials behind the median after an epoch are stopped (pruned).

        The study lives in OUT/study.journal: --resume continues it after an interruption or with more budget.

        Example: hybridrec tune --config configs/movielens-100k.yaml --minutes 60
        """

        def job() -> None:
            from hybridrec_cli.job import model_name

            from hybridrec.config import load_config
            from hybridrec.tuning import tune as run_tune

            overrides = [f"data.paths.{kv}" for kv in (data or [])] + list(set_ or [])
            cfg = load_config(config, overrides)
            folder = out if out is not None else Path("tune") / model_name(cfg)
            say = None if quiet else (lambda line: typer.echo(line, err=True))
            result = run_tune(
                cfg, folder, minutes=minutes, trials=trials, resume=resume, seed=seed, space_file=space, say=say
            )
            if as_json:
                typer.echo(
                    json.dumps(
                        {
                            "best_config": str(result.best_yaml),
                            "trials_table": str(result.trials_csv),
                            "metric": result.metric,
                            "direction": result.direction,
                            "best_trial": result.best_number,
                            "value": result.best_value,
                            "config_as_given": result.base_value,
                            "params": result.best_params,
                            "choice": result.choice,
                            "top_trial": result.top_number,
                            "top_value": result.top_value,
                            "trials": result.counts,
                            "new_trials": result.new_trials,
                        }
                    )
                )
                return
            given = "" if result.base_value is None else f" (the config as given: {result.base_value:.4f})"
            counts = ", ".join(f"{n} {state.lower()}" for state, n in result.counts.items())
            typer.echo(f"best: trial {result.best_number}, validation {result.metric} {result.best_value:.4f}{given}")
            typer.echo(f"why: {result.choice}")
            typer.echo(f"trials: {result.trials_csv} ({counts})")
            typer.echo(f"best config: {result.best_yaml}")
            typer.echo(f"next: hybridrec fit --config {result.best_yaml}")

        run(debug, job)
