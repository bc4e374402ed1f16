"""The fit's progress display: a logging handler on the `hybridrec` loggers (hybridrec/progress.py).

On a terminal it draws one rich progress bar for the current phase (read, encode with texts/s, train with
epoch i/N and the ETA, evaluate, save) and prints each INFO line above it. Anywhere else (a pipe, a log file, CI)
it writes plain lines: every INFO message, and a bar's progress at most every PLAIN_EVERY seconds.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from hybridrec.progress import ROOT

PLAIN_EVERY = 10.0  # seconds between two plain progress lines of one bar


class FitDisplay(logging.Handler):
    """Shows hybridrec's records: a live bar on a terminal (`live`), plain lines otherwise."""

    def __init__(self, stream: TextIO | None = None, live: bool | None = None):
        super().__init__(logging.DEBUG)
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.live = bool(isatty and isatty()) if live is None else live
        self._last_plain = 0.0
        self._phase: str | None = None
        self.task = None  # one task per phase, made when the phase starts
        self.progress = None
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

            console = Console(file=self.stream, force_terminal=True, highlight=False)
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description:<8}"),
                BarColumn(),
                TextColumn("{task.fields[count]}"),  # "64/218", or nothing for a phase without a count
                TextColumn("{task.fields[info]}"),
                console=console,
                transient=True,
            )
            self.progress.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = getattr(record, ROOT, None) or {}
            message = record.getMessage()
            if record.levelno >= logging.WARNING:
                message = f"{record.levelname.lower()}: {message}"
            if self.progress is not None:
                self._update(fields)
                if record.levelno >= logging.INFO:
                    self.progress.console.print(message, markup=False, highlight=False, soft_wrap=True)
                return
            now = time.monotonic()
            if record.levelno >= logging.INFO:
                self._last_plain = now if fields.get("total") else self._last_plain
                self._write(message)
            elif fields.get("total") and fields.get("done") and now - self._last_plain >= PLAIN_EVERY:
                self._last_plain = now
                self._write(message)
        except Exception:  # noqa: BLE001 - a display must never break a fit
            self.handleError(record)

    def _write(self, message: str) -> None:
        self.stream.write(message + "\n")
        self.stream.flush()

    def _update(self, fields: dict) -> None:
        """Move the bar: a new phase replaces it; `done`/`total`/`info` fill it."""
        phase = fields.get("phase")
        if not phase or self.progress is None:
            return
        total, done = fields.get("total"), fields.get("done")
        if phase != self._phase or self.task is None:
            self._phase = phase
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(phase, total=total, completed=done or 0, info="", count="")
        changes: dict = {"info": fields.get("info") or ""}
        if total is not None:
            changes["count"] = f"{done or 0:,}/{total:,}"
        if total is not None:
            changes["total"] = total
        if done is not None:
            changes["completed"] = done
        self.progress.update(self.task, **changes)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        super().close()


@contextmanager
def fit_display(quiet: bool, stream: TextIO | None = None) -> Iterator[FitDisplay | None]:
    """Show hybridrec's progress records for the duration of a command (nothing with `quiet`)."""
    if quiet:
        yield None
        return
    logger = logging.getLogger(ROOT)
    handler = FitDisplay(stream)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)  # bar updates are DEBUG records; the handler prints INFO and up as lines
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()
