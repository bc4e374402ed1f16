"""The options several `hybridrec` commands share, declared once so their flags and help read the same."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ModelOpt = Annotated[Path, typer.Option("--model", "-m", help="Model directory (default: the latest fitted model).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
KOpt = Annotated[int, typer.Option("-k", "--k", help="How many results.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show a traceback on errors.")]
DataOpt = Annotated[list[str] | None, typer.Option("--data", "-d", help="Override a data path: KEY=PATH (repeatable).")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override any config key: a.b=value (repeatable).")
]
