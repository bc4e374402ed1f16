"""`hybridrec serve` (a warm HTTP service) and `hybridrec export` (vectors as Parquet), added to the main app by
`register`. Heavy imports (fastapi, uvicorn, torch) happen inside the commands."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from hybridrec_cli.options import DebugOpt

ModelOpt = Annotated[
    Path, typer.Option("--model", "-m", help="Model directory or link (default: the latest fitted model).")
]


def register(app: typer.Typer, run: Callable[[bool, Callable[[], Any]], Any], default_model: Path) -> None:
    """Add `serve` and `export` to `app`; `run(debug, job)` is the CLI's error handler (one `error:` line, exit 2)."""

    @app.command()
    def serve(
        model: ModelOpt = default_model,
        host: Annotated[str, typer.Option("--host", help="Address to bind (loopback by default).")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535, help="TCP port.")] = 8000,
        token: Annotated[
            str | None,
            typer.Option(
                "--token",
                envvar="HYBRIDREC_TOKEN",
                show_default=False,
                help="Require 'Authorization: Bearer TOKEN' on every endpoint but /health (prefer the env variable: "
                "a command-line token shows in the process list).",
            ),
        ] = None,
        reload_interval: Annotated[
            float,
            typer.Option(
                "--reload-interval",
                min=0.0,
                help="Seconds between checks of the model link for a new version (0: never).",
            ),
        ] = 2.0,
        debug: DebugOpt = False,
    ) -> None:
        """Serve the model over HTTP: /similar, /recommend, /score-new, /items/{id}, /health, /version.

        The model (and its text model) stays loaded; when the model link (models/latest) moves to a new version,
        the new model is loaded in the background and swapped in without failing a request.

        Example: HYBRIDREC_TOKEN=s3cret hybridrec serve --model models/latest --port 8000
        """

        def job() -> None:
            import logging

            import uvicorn

            from hybridrec.serving import create_app

            # warnings from everything; the reloads from the service (not the per-query notes of the features)
            _check_port(host, port)  # before loading anything: a taken port is one line, not a traceback
            logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
            logging.getLogger("hybridrec.serve").setLevel(logging.INFO)
            if not _loopback(host) and not token:
                typer.echo(f"warning: serving on {host} with no token: anyone who reaches it can query", err=True)
            application = create_app(model, token=token, reload_interval=reload_interval)
            typer.echo(f"serving {application.state.holder.current.root} on http://{host}:{port}", err=True)
            uvicorn.run(application, host=host, port=port, log_level="warning", access_log=False)

        run(debug, job)

    @app.command()
    def export(
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for items.parquet, users.parquet, export.json.")],
        model: ModelOpt = default_model,
        fmt: Annotated[str, typer.Option("--format", "-f", help="Output format: parquet.")] = "parquet",
        debug: DebugOpt = False,
    ) -> None:
        """Export item and user vectors, biases and display columns (for FAISS or a vector database).

        Example: hybridrec export --model models/latest --format parquet --out export/
        """

        def job() -> None:
            from hybridrec.export import export_model
            from hybridrec.recommender import HybridRecommender

            if fmt != "parquet":  # before loading the model
                from hybridrec.errors import QueryError

                raise QueryError(f"unknown export format {fmt!r} (choose from parquet)")
            rec = HybridRecommender.load(model)
            paths = export_model(rec, out, fmt)
            typer.echo(
                f"exported {len(rec.items_)} items and {len(rec.users_)} users "
                f"(dim {rec.towers_.item_vectors.shape[1]}) to {paths['items'].parent}"
            )

        run(debug, job)


def _check_port(host: str, port: int) -> None:
    """Bind the address once, as uvicorn will (SO_REUSEADDR): a taken port or an address this machine does not
    have is an OSError naming `host:port` (the CLI's one `error:` line, exit 2)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(exc.errno, exc.strerror, f"{host}:{port}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, f"{host}:{port}") from None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
