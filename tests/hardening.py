"""Helpers for the reliability tests (test_bad_input, test_faults, test_security): time limits, outcome tallies and
re-checksummed model copies. Not a test file itself."""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hybridrec.errors import HybridrecError


class Hang(BaseException):
    """Raised by time_limit; a BaseException so that no `except Exception` in the code under test can swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail with Hang when the block runs longer than `seconds` (SIGALRM; main thread only, else no limit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise Hang(f"still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Tally:
    """Outcomes of malformed inputs: 'error' (a HybridrecError), 'skip' (read, with the bad rows counted),
    'bounded' (accepted within the time limit, e.g. absurdly long text) or 'other' (anything else: a bug)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []  # (group, case, outcome, detail)

    def add(self, group: str, case: str, outcome: str, detail: str = "") -> None:
        self.rows.append((group, case, outcome, detail))

    def counts(self, group: str | None = None) -> Counter:
        return Counter(o for g, _, o, _ in self.rows if group is None or g == group)

    def others(self) -> list[tuple[str, str, str, str]]:
        return [r for r in self.rows if r[2] == "other"]


def attempt(fn: Callable[[], Any], seconds: float = 20.0) -> tuple[str, Any]:
    """Run fn under a time limit: ('ok', result), ('error', HybridrecError) or ('other', any other exception)."""
    try:
        with time_limit(seconds):
            return "ok", fn()
    except HybridrecError as exc:
        return "error", exc
    except (Exception, Hang) as exc:  # noqa: BLE001 - classifying is the point
        return "other", exc


def rewrite_checksum(model_dir: Path, name: str) -> None:
    """Make the manifest agree with a planted file, as an attacker who can write the model folder would."""
    manifest = model_dir / "manifest.json"
    payload = json.loads(manifest.read_text())
    payload["files"][name] = hashlib.sha256((model_dir / name).read_bytes()).hexdigest()
    manifest.write_text(json.dumps(payload))
