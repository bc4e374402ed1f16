"""Fit progress as logging records. The library says what it is doing through loggers named `hybridrec.*`; whoever
runs it decides how to show that: the CLI installs a rich display (hybridrec_cli/progress.py), a notebook can call
`logging.basicConfig(level=logging.INFO)`, a service routes the records into its own log pipeline.

Every record's message is a complete line. Records that move a progress bar also carry a structured `hybridrec`
attribute (see `event`): {"phase": "encode", "done": 512, "total": 2000, "unit": "texts", "info": "210 texts/s"}.
Bar updates are DEBUG records; everything a person should read once is INFO; problems are WARNING.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hybridrec.model.spec import TrainResult

ROOT = "hybridrec"
PHASES = ("read", "encode", "train", "evaluate", "save")


def get_logger(name: str) -> logging.Logger:
    """The logger of one part of hybridrec (`hybridrec.<name>`)."""
    return logging.getLogger(f"{ROOT}.{name}")


def event(
    logger: logging.Logger,
    message: str,
    phase: str,
    level: int = logging.INFO,
    done: int | None = None,
    total: int | None = None,
    unit: str = "",
    info: str = "",
) -> None:
    """Log `message` with the structured progress fields a display draws its bar from."""
    if logger.isEnabledFor(level):
        fields = {"phase": phase, "done": done, "total": total, "unit": unit, "info": info}
        logger.log(level, message, extra={ROOT: fields})


def duration(seconds: float) -> str:
    """12.3 -> '12 s', 75 -> '1m 15s', 4000 -> '1h 06m'."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


class Rate:
    """Counts work done since it was made and reports it as DEBUG progress events (a bar's updates)."""

    def __init__(self, logger: logging.Logger, phase: str, label: str, total: int, unit: str = "texts"):
        self.logger, self.phase, self.label, self.total, self.unit = logger, phase, label, total, unit
        self.start = time.perf_counter()
        self.done = 0

    @property
    def per_second(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def advance(self, n: int) -> None:
        self.done += n
        rate = f"{self.per_second:,.0f} {self.unit}/s"
        message = f"{self.label}: {self.done:,}/{self.total:,} {self.unit} ({rate})"
        event(self.logger, message, self.phase, logging.DEBUG, self.done, self.total, self.unit, rate)


def metric_label(metric: str) -> str:
    """How the early-stopping figure is named in messages: 'val rmse', 'val 1-AUC', or 'train loss' when a fit
    had no validation rows and stopped on its training loss."""
    return metric if metric == "train loss" else f"val {metric}"


def epoch_message(row: dict, epochs: int, metric: str, eta: float, sooner: bool) -> str:
    """'epoch 3/30  train loss 0.8123  val rmse 0.9312  1.2 s/epoch  ETA up to 32 s'."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"train loss {row['train_loss']:.4f}"]
    if metric != "train loss":
        parts.append(f"{metric_label(metric)} {row['val']:.4f}")
    if "seconds" in row:
        parts.append(f"{row['seconds']:.1f} s/epoch")
    if row["epoch"] < epochs:
        parts.append(f"ETA {'up to ' if sooner else ''}{duration(eta)}")
    return "  ".join(parts)


def stop_message(result: TrainResult, patience: int, averaged: int = 0) -> str:
    """What training ended with: 'stopped early after epoch 7: no gain in 3 epochs; keeping epoch 4 (val rmse
    0.9123)', 'trained 30 epochs; keeping epoch 28 (...)', or with `averaged` > 0 (weight averaging, no early
    stopping) 'trained 30 epochs; keeping the mean weights of the last 3 epochs'."""
    if not result.history:
        return "no epochs trained"
    last = result.history[-1]["epoch"]
    if averaged > 1:
        return f"trained {last} epochs; keeping the mean weights of the last {averaged} epochs"
    best = next((r for r in result.history if r["epoch"] == result.best_epoch), None)
    kept = f"keeping epoch {result.best_epoch}"
    if best is not None:
        kept += f" ({metric_label(result.metric)} {best['val']:.4f})"
    if result.stopped_early:
        return f"stopped early after epoch {last}: no gain in {patience} epoch{'' if patience == 1 else 's'}; {kept}"
    return f"trained {last} epochs; {kept}"


@contextmanager
def fit_output(quiet: bool) -> Iterator[None]:
    """With `quiet=False` and no logging configured for hybridrec's records, print them (INFO and up) to stderr
    for the duration of a fit; with logging configured, the records go there and nothing is added."""
    logger = logging.getLogger(ROOT)
    if quiet or logger.hasHandlers():
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.INFO)
    old_level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
