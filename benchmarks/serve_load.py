"""Load test of `hybridrec serve` on 127.0.0.1: p50/p99 latency and requests/s per endpoint, and during a reload.

A fixed number of requests per endpoint from a few concurrent clients (threads with one keep-alive connection
each), against a real `hybridrec serve` subprocess on a free loopback port. The last phase mixes /similar and
/recommend while the model is re-saved over the served link, so the server loads and swaps a new version under
load; it counts failed requests and the answers from each version. Writes benchmarks/results/serve.md.

Run from the repository root:

    python -m benchmarks.serve_load                       # fits the demo into a temp folder and serves it
    python -m benchmarks.serve_load --model models/latest # serves a copy of a fitted model
    python -m benchmarks.serve_load --requests 200        # a quick run

Never part of the test run. Each phase stops at --phase-seconds whatever its count (the table says how many ran).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
START_TIMEOUT = 300

TEXTS = [
    "cable to connect an old camcorder to a tv",
    "fast charger for a phone",
    "small speaker for the kitchen",
    "storage for photos from a camera",
    "headphones for running",
    "adapter for a laptop screen",
    "rugged drive for travel backups",
    "something to listen to music in the car",
]


@dataclass
class Phase:
    name: str
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    # one (start, seconds, version) per answered request; start is time.perf_counter() when it was sent
    answers: list[tuple[float, float, str]] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""

    def versions(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, _, version in self.answers:
            out[version] = out.get(version, 0) + 1
        return out

    def row(self, name: str | None = None, answers: list[tuple[float, float, str]] | None = None) -> str:
        answers = self.answers if answers is None else answers
        lat = np.array([a[1] for a in answers]) * 1000 if answers else np.zeros(1)
        if name is None:
            requests, failed, rate = self.requests, str(len(self.failures)), f"{self.requests / self.seconds:.0f}"
        else:
            requests, failed, rate = len(answers), "", ""
        return (
            f"| {name or self.name} | {requests} | {failed} | {np.percentile(lat, 50):.1f} | "
            f"{np.percentile(lat, 99):.1f} | {rate} | {self.note if name is None else ''} |"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_model(model: str | None, work: Path) -> Path:
    """A copy of the model as work/models/demo with work/models/latest pointing at it; its text cache in `work`
    (free-text queries add entries to it: never to the repository's or the user's cache)."""
    from hybridrec.artifacts import point_link
    from hybridrec.recommender import HybridRecommender

    cache = work / "text-cache"
    if (ROOT / ".hybridrec-cache").is_dir():
        shutil.copytree(ROOT / ".hybridrec-cache", cache)
    models = work / "models"
    if model is None:
        from hybridrec_cli.job import fit_from_config

        from hybridrec.config import load_config

        cfg = load_config(ROOT / "configs" / "default.yaml", [f"features.cache_dir={cache}", "train.threads=1"])
        rec = fit_from_config(cfg, work / "fit", quiet=True).recommender
    else:
        rec = HybridRecommender.load(model)
    rec.config.features.cache_dir = str(cache)
    rec.save(models / "demo")
    point_link(models / "latest", models / "demo")
    return models / "latest"


def start_server(link: Path, port: int, log: Path, cache: Path, reload_interval: float) -> subprocess.Popen:
    import httpx

    cmd = [sys.executable, "-m", "hybridrec_cli.main", "serve", "--model", str(link), "--port", str(port)]
    # no token; the text cache of queries in the benchmark's folder (never the repository's or the user's)
    env = {k: v for k, v in os.environ.items() if k != "HYBRIDREC_TOKEN"} | {"HYBRIDREC_CACHE_DIR": str(cache)}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [*cmd, "--reload-interval", str(reload_interval)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=log.parent,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"hybridrec serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"hybridrec serve did not start in {START_TIMEOUT} s:\n{log.read_text()}")


Request = Callable[[random.Random, int], tuple[str, str, dict]]  # (rng, n) -> (method, path, kwargs)


def run_phase(
    url: str,
    name: str,
    make: Request,
    count: int,
    clients: int,
    limit_s: float,
    during: Callable[[], None] | None = None,
    until: Callable[[Phase], bool] | None = None,
) -> Phase:
    """`count` requests made by `make`, shared by `clients` threads, within `limit_s` seconds. `during` runs (in
    a thread) once a twentieth of them are answered; with `until`, requests go on past `count` until it holds."""
    import httpx

    phase = Phase(name)
    lock = threading.Lock()
    issued = itertools.count()
    deadline = time.monotonic() + limit_s
    triggered = threading.Event()

    def more(n: int) -> bool:
        return n < count or (until is not None and not until(phase))

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=60) as c:
            while time.monotonic() < deadline:
                with lock:
                    n = next(issued)
                    if not more(n):
                        return
                method, path, kwargs = make(rng, n)
                t0 = time.perf_counter()
                try:
                    response = c.request(method, path, **kwargs)
                    ok = response.status_code == 200
                    why = "" if ok else f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, why, response = False, repr(exc), None
                elapsed = time.perf_counter() - t0
                with lock:
                    phase.requests += 1
                    if ok:
                        assert response is not None
                        phase.answers.append((t0, elapsed, response.json().get("model", "?")))
                    else:
                        phase.failures.append(f"{path}: {why}")
                    fire = during is not None and not triggered.is_set() and phase.requests >= max(count // 20, 1)
                    if fire:
                        triggered.set()
                if fire:
                    assert during is not None
                    threading.Thread(target=during, daemon=True).start()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phase.seconds = time.perf_counter() - t0
    if time.monotonic() >= deadline:
        phase.note = f"stopped at {limit_s:.0f} s"
    return phase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a fitted model (default: fit the demo into a temp folder)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per endpoint")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--phase-seconds", type=float, default=180.0, help="time bound of each phase")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve.md")
    args = parser.parse_args()

    import httpx

    from hybridrec.recommender import HybridRecommender

    work = Path(tempfile.mkdtemp(prefix="hybridrec-serve-load-"))
    proc = None
    try:
        link = prepare_model(args.model, work)
        rec = HybridRecommender.load(link)
        items, users = rec.items_.raw_ids, rec.users_.raw_ids
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        t0 = time.perf_counter()
        proc = start_server(link, port, work / "server.log", work / "text-cache", reload_interval=0.5)
        startup = time.perf_counter() - t0
        probe = httpx.post(f"{url}/recommend", json={"history": items[:3], "k": 10}, timeout=60)
        unknown_users = probe.status_code == 200

        def get(path: str, **params) -> tuple[str, str, dict]:
            return "GET", path, {"params": params}

        workloads: list[tuple[str, Request]] = [
            ("GET /health", lambda rng, n: get("/health")),
            ("GET /items/{id}", lambda rng, n: get(f"/items/{rng.choice(items)}")),
            ("GET /similar (item id)", lambda rng, n: get("/similar", q=rng.choice(items), k=10)),
            ("GET /recommend (known user)", lambda rng, n: get("/recommend", user_id=rng.choice(users), k=10)),
        ]
        if unknown_users:
            workloads.append(
                (
                    "POST /recommend (history of 5)",
                    lambda rng, n: ("POST", "/recommend", {"json": {"history": rng.sample(items, 5), "k": 10}}),
                )
            )
        workloads += [
            # a new text each time (the request number makes it unique): the text model encodes every one
            ("GET /similar (free text)", lambda rng, n: get("/similar", q=f"{rng.choice(TEXTS)} model {n}", k=10)),
            (
                "POST /score-new (1 item)",
                lambda rng, n: (
                    "POST",
                    "/score-new",
                    {"json": {"items": [{"item_id": f"NEW{n}", "title": f"{rng.choice(TEXTS)} {n}", "price": 9.99}]}},
                ),
            ),
        ]
        phases = [
            run_phase(url, name, make, args.requests, args.clients, args.phase_seconds, None)
            for name, make in workloads
        ]
        for p in phases:
            print(p.row(), flush=True)

        def mixed(rng: random.Random, n: int) -> tuple[str, str, dict]:
            if n % 2:
                return get("/recommend", user_id=rng.choice(users), k=10)
            return get("/similar", q=rng.choice(items), k=10)

        before = httpx.get(f"{url}/health", timeout=30).json()["model"]
        saved: dict[str, Any] = {}

        def resave() -> None:  # a new version folder of the same model: the server loads and swaps it under load
            saved["start"] = time.perf_counter()
            saved["version"] = HybridRecommender.load(link).save(link).name
            saved["saved"] = time.perf_counter()

        def swapped(phase: Phase) -> bool:  # go on until a tenth of the count was answered by the new version
            return phase.versions().get(str(saved.get("version")), 0) >= max(args.requests // 10, 1)

        name = "mixed /similar + /recommend during a reload"
        reload_phase = run_phase(
            url, name, mixed, args.requests, args.clients, args.phase_seconds, during=resave, until=swapped
        )
        after = httpx.get(f"{url}/health", timeout=30).json()
        new_version = str(saved.get("version"))
        counts = reload_phase.versions()
        reload_phase.note = f"{counts.get(before, 0)} answers from the old model, {counts.get(new_version, 0)} new"
        # the reload window: from the start of the save to the first answer from the new version
        start = float(saved.get("start", 0.0))
        first_new = min((t + d for t, d, v in reload_phase.answers if v == new_version), default=start)
        window = [a for a in reload_phase.answers if start <= a[0] <= first_new]
        window_row = reload_phase.row(f"... requests begun in the reload window ({first_new - start:.1f} s)", window)
        print(reload_phase.row(), window_row, sep="\n", flush=True)
        write(args, phases, reload_phase, window_row, rec, startup, unknown_users, after, new_version)
        failed = [f for p in [*phases, reload_phase] for f in p.failures]
        if failed:
            print(f"{len(failed)} failed requests, first: {failed[0]}", file=sys.stderr)
            sys.exit(1)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def write(args, phases, reload_phase, window_row, rec, startup, unknown_users, after, new_version) -> None:
    command = "python -m benchmarks.serve_load" + "".join(
        f" {flag} {value}"
        for flag, value, default in (
            ("--model", args.model, None),
            ("--requests", args.requests, 2000),
            ("--clients", args.clients, 4),
            ("--phase-seconds", args.phase_seconds, 180.0),
        )
        if value != default
    )
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    lines = [
        "# hybridrec serve: load test on 127.0.0.1",
        "",
        f"Command (from the repository root): `{command}`",
        "",
        f"- model: {args.model or 'the bundled demo, fitted by the benchmark'} "
        f"({len(rec.items_)} items, {len(rec.users_)} users, dim {rec.towers_.item_vectors.shape[1]}, "
        f"text encoder {rec.config.features.text_encoder})",
        f"- {args.requests} requests per endpoint from {args.clients} concurrent clients (threads, one keep-alive "
        "connection each); every request answered 200 unless counted under failures",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs shared with other work (load average at the end "
        f"{', '.join(f'{v:.1f}' for v in load) if load else 'n/a'}), Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}",
        f"- server start to the first /health answer (imports, model load, warm-up): {startup:.1f} s",
        "",
        "| endpoint | requests | failed | p50 ms | p99 ms | requests/s | note |",
        "|---|---|---|---|---|---|---|",
        *[p.row() for p in phases],
        reload_phase.row(),
        window_row,
        "",
        "The reload phase re-saves the model over the served link (in the benchmark's process, on the same CPUs) "
        "after a twentieth of its requests; the server loads and warms the new version in the background and swaps "
        "it in. The phase goes on past its count until a tenth of the count was answered by the new version. The "
        "reload window runs from the start of the save to the first answer from the new version. After the phase "
        f"the server serves {after['model']} (the saved version: {new_version}), reloads {after['reloads']}, "
        f"reload error: {after['reload_error']}.",
        "",
        "Free text and new items are encoded by the text model for each request (every text is new). The requests/s "
        "of a phase is its requests over its wall time.",
    ]
    if not unknown_users:
        lines += ["", "Unknown users (POST /recommend with a history) were not measured: this version lacks them."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
