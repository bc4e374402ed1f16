"""SIGKILL `hybridrec fit` and `rec.save()` at random points; the previous model must stay loadable and identical.

Run it directly (about 4 minutes on 2 shared cores with the defaults):

    .venv/bin/python tests/fault_kill.py                     # 20 fit kills + 30 save kills, seed 0
    .venv/bin/python tests/fault_kill.py --fit-kills 4 --save-kills 10 --seed 3 --json

Phase 1 fits the demo (configs/default.yaml, train.threads=1, a warm copy of the text cache) into WORK/models, then
starts the same fit again and again and kills it with SIGKILL, in turn: during training (after a random epoch line,
plus a random fraction of an epoch), between the last epoch and the save (vectors, index, evaluation), and during
the save (the fit is frozen with SIGSTOP as soon as its staging folder appears, then run on in 1 ms slices, a random
number of them, and killed there). Phase 2 loads the model once, then forks children that
save it in a loop over WORK/models/demo (padded to a few MB so a save takes long enough to be hit in every step)
and kills each child after a random delay. A reader process answers `similar`/`recommend` from WORK/models/latest
in a loop during both phases and must never see an answer that differs from the baseline.

After every kill the model at WORK/models/latest must load and give exactly the baseline's
answers. Kill delays come from random.Random(seed), so a run is repeatable. Exit code 0 when every check held; the
last line (or the --json output) gives the counts. tests/test_faults.py runs a short version in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "configs" / "default.yaml"
ITEMS = ("D0031", "D0001", "D0100", "D0218")
USERS = ("U0001", "U0002", "U0100")
EPOCHS = 6  # with patience = EPOCHS every run trains the same number of epochs, so the training window is known


def answers(path: str | Path) -> dict:
    """Everything a user sees from a model, for exact comparison (ids and float scores)."""
    from hybridrec.recommender import HybridRecommender

    rec = HybridRecommender.load(path)
    out = {"n_items": len(rec.items_), "n_users": len(rec.users_)}
    for item in ITEMS:
        ids, scores = rec.similar_items(item, 8)
        out[f"similar {item}"] = [ids, [float(s) for s in scores]]
    match = rec.similar_to_text("S-Video cable", 5)  # resolved by title: no torch needed
    out["text"] = [match.resolved_id, match.how, match.ids, [float(s) for s in match.scores]]
    for user in USERS:
        ids, scores = rec.recommend(user, 10)
        out[f"recommend {user}"] = [ids, [float(s) for s in scores]]
    return out


def fit_command(out: Path, cache: Path, quiet: bool) -> list[str]:
    sets = [f"features.cache_dir={cache}", "train.threads=1", f"train.epochs={EPOCHS}", f"train.patience={EPOCHS}"]
    cmd = [sys.executable, "-m", "hybridrec_cli.main", "fit", "--config", str(DEMO_CONFIG), "--out", str(out)]
    for item in sets:
        cmd += ["--set", item]
    return cmd + (["--quiet"] if quiet else [])


class Fit:
    """One `hybridrec fit` child whose stderr epoch lines are timestamped as they arrive."""

    def __init__(self, cmd: list[str]):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        self.start = time.monotonic()
        self.epochs: list[float] = []  # seconds since start at which each "epoch N" line arrived
        self.tail: list[str] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self.cond:
                if line.startswith("epoch"):
                    self.epochs.append(time.monotonic() - self.start)
                self.tail = (self.tail + [line.rstrip()])[-5:]
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_epoch(self, n: int, timeout: float) -> bool:
        """Block until the n-th epoch line (1-based) or the end of the process; True if the line came."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.epochs) < n and self.proc.poll() is None and time.monotonic() < deadline:
                self.cond.wait(0.05)
            return len(self.epochs) >= n


def current_version(link: Path) -> str:
    return str(link.resolve()) if link.exists() else ""


def staging_left(models: Path) -> int:
    """Half-written version folders (tmp-*) a killed save left behind, in every `.NAME.versions` folder."""
    return sum(1 for versions in models.glob(".*.versions") for _ in versions.glob("tmp-*"))


class Reader:
    """A separate process that answers from WORK/models/latest in a loop and reports any answer that differs.

    A load that outlives two newer saves finds its version folder pruned and gets a ModelFileError saying "load it
    again"; the reader does, and counts it as a retry (a clean error, not a half-written model)."""

    CODE = """
import json, os, sys, time
sys.path.insert(0, sys.argv[3])
from fault_kill import answers
want = json.load(open(sys.argv[2]))
reads = different = retries = 0
errors = []
while not os.path.exists(sys.argv[4]):
    for attempt in (1, 2):
        try:
            got = answers(sys.argv[1])
        except Exception as exc:
            if attempt == 1 and "load it again" in str(exc):
                retries += 1
                continue
            errors.append(f"{type(exc).__name__}: {exc}")
            break
        reads += 1
        different += got != want
        break
    time.sleep(0.01)
print(json.dumps({"reads": reads, "different": different, "retries": retries, "errors": errors[:5],
                  "n_errors": len(errors)}))
"""

    def __init__(self, link: Path, baseline: dict, work: Path):
        self.want = work / "reader-baseline.json"
        self.want.write_text(json.dumps(baseline))
        self.stop = work / "reader-stop"
        self.stop.unlink(missing_ok=True)
        cmd = [sys.executable, "-c", self.CODE, str(link), str(self.want), str(Path(__file__).parent), str(self.stop)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def finish(self) -> dict:
        self.stop.touch()
        out, _ = self.proc.communicate(timeout=120)
        return json.loads(out.strip().splitlines()[-1])


def baseline_fit(models: Path, cache: Path, log) -> dict:
    """Fit once to completion; returns the answers and the timeline (epoch length, time after the last epoch)."""
    base = Fit(fit_command(models, cache, quiet=False))
    wait_for_save(base, models / ".demo.versions", timeout=600)
    save_start = time.monotonic() - base.start
    if base.proc.wait(timeout=600) != 0:
        raise SystemExit(f"baseline fit failed: {base.tail}")
    total = time.monotonic() - base.start
    last_epoch = base.epochs[-1] if base.epochs else save_start * 0.8
    epoch_time = (base.epochs[-1] - base.epochs[0]) / max(len(base.epochs) - 1, 1) if len(base.epochs) > 1 else 0.2
    before_save = max(save_start - last_epoch, 0.05)  # vectors, index, evaluation
    log(f"baseline fit {total:.1f} s: {len(base.epochs)} epochs of ~{epoch_time:.2f} s, save began {before_save:.2f} s"
        " after the last one")  # fmt: skip
    return {"answers": answers(models / "latest"), "epoch_time": epoch_time, "before_save": before_save}


def adopt_baseline(model: Path, models: Path) -> dict:
    """Use an already fitted demo model (a copy) as the baseline instead of fitting one (CI saves a fit)."""
    versions = models / ".demo.versions"
    shutil.copytree(Path(model).resolve(), versions / "v-baseline")
    (models / "demo").symlink_to(Path(".demo.versions") / "v-baseline")
    (models / "latest").symlink_to("demo")
    return {"answers": answers(models / "latest"), "epoch_time": 0.2, "before_save": 0.5}


def _staging(versions: Path) -> set[str]:
    try:
        return {name for name in os.listdir(versions) if name.startswith("tmp-")}
    except FileNotFoundError:
        return set()


def wait_for_save(fit: Fit, versions: Path, timeout: float) -> bool:
    """Poll until the fit starts writing a new version (a fresh tmp-* folder) or ends; True if it started.
    A save inside a fit takes well under 0.1 s, so the poll is tight."""
    seen = _staging(versions)
    deadline = time.monotonic() + timeout
    while fit.proc.poll() is None and time.monotonic() < deadline:
        if _staging(versions) - seen:
            return True
        time.sleep(0.0005)
    return False


def kill_fits(work: Path, cache: Path, kills: int, rng: random.Random, log, base: dict, phases: tuple) -> dict:
    """`kills` fits killed with SIGKILL; `latest` must answer exactly as before after each kill.

    Phases, in turn: "training" (after a random epoch line plus part of an epoch), "before save" (a random point
    between the last epoch and the save: vectors, index, evaluation) and "saving" (as soon as the new version's
    staging folder appears, plus a random part of a save). A fit that published before the kill landed is not
    counted as a kill; its new model must load.
    """
    models = work / "models"
    started = time.monotonic()
    baseline, epoch_time, before_save = base["answers"], base["epoch_time"], base["before_save"]
    stats = {"fit_kills": 0, "fit_completed_first": 0, "fit_loads_intact": 0, "fit_staging_left": 0,
             "fit_failures": [], **{f"fit_kills_{p.replace(' ', '_')}": 0 for p in phases}}  # fmt: skip
    for i in range(kills):
        phase = phases[i % len(phases)]
        before = current_version(models / "demo")
        left_before = staging_left(models)
        staged_before = _staging(models / ".demo.versions")
        fit = Fit(fit_command(models, cache, quiet=False))
        if phase == "training":
            fit.wait_epoch(rng.randint(1, EPOCHS - 1), timeout=300)
            time.sleep(rng.uniform(0, epoch_time))
        elif phase == "before save":
            fit.wait_epoch(EPOCHS, timeout=300)
            time.sleep(rng.uniform(0, before_save * 0.9))
        else:
            # A save inside a fit takes a few tens of milliseconds: freeze the fit as soon as its staging folder
            # appears, then let it run on in 1 ms slices, a random number of them, and kill it there.
            if wait_for_save(fit, models / ".demo.versions", timeout=300):
                fit.proc.send_signal(signal.SIGSTOP)
                for _ in range(rng.randint(0, 10)):
                    fit.proc.send_signal(signal.SIGCONT)
                    time.sleep(0.001)
                    fit.proc.send_signal(signal.SIGSTOP)
        killed = fit.proc.poll() is None
        if killed:
            fit.proc.send_signal(signal.SIGKILL)  # also ends a stopped process
        fit.proc.wait(timeout=60)
        published = current_version(models / "demo") != before
        left = max(staging_left(models) - left_before, 0)
        stats["fit_staging_left"] += left
        try:
            got = answers(models / "latest")
            ok = got == baseline or published  # a completed save replaced the model: it must load, nothing more
        except Exception as exc:  # noqa: BLE001 - any failure to load is what this script looks for
            ok, got = False, f"{type(exc).__name__}: {exc}"
        if killed and not published:
            stats["fit_kills"] += 1
            stats[f"fit_kills_{phase.replace(' ', '_')}"] += 1
            stats["fit_loads_intact"] += ok
        else:
            stats["fit_completed_first"] += 1
        state = "killed" if killed and not published else "published first"
        new_staged = _staging(models / ".demo.versions") - staged_before
        written = sum(1 for n in new_staged for p in (models / ".demo.versions" / n).rglob("*") if p.is_file())
        where = f", {written} files of the new version written" if new_staged else ""
        log(f"fit {i + 1}/{kills} ({phase}, {state}{where}): {'intact' if ok else 'BROKEN'}")
        if not ok:
            stats["fit_failures"].append(f"fit {i + 1} ({phase}): {str(got)[:300]}")
        elif published:
            baseline = got  # the model the next kill must leave intact
    stats["fit_seconds"] = round(time.monotonic() - started, 1)
    return stats


def kill_saves(work: Path, kills: int, rng: random.Random, log, pad_mb: float = 8.0) -> dict:
    """Fork children that save the model in a loop over WORK/models/demo and SIGKILL each after a random delay."""
    from hybridrec.recommender import HybridRecommender

    started = time.monotonic()
    target = work / "models" / "demo"
    rec = HybridRecommender.load(target)
    rec.net, rec.features  # noqa: B018 - load torch weights and features once, before forking
    metrics = dict(rec.metrics_, padding=["x" * 1000] * int(pad_mb * 1000))  # a bigger save to hit
    t0 = time.monotonic()
    rec.save(target, metrics=metrics)
    save_time = time.monotonic() - t0
    baseline = answers(target)
    log(f"one save takes {save_time:.2f} s")
    stats = {"save_kills": 0, "save_loads_intact": 0, "save_staging_left": 0, "save_published_before_kill": 0,
             "save_failures": []}  # fmt: skip
    for i in range(kills):
        before = current_version(target)
        left_before = staging_left(target.parent)
        pid = os.fork()
        if pid == 0:  # child: save forever
            try:
                while True:
                    rec.save(target)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.0, 2.5 * save_time))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        stats["save_kills"] += 1
        stats["save_published_before_kill"] += current_version(target) != before
        stats["save_staging_left"] += max(staging_left(target.parent) - left_before, 0)
        try:
            got = answers(target)
            ok = got == baseline
        except Exception as exc:  # noqa: BLE001
            ok, got = False, f"{type(exc).__name__}: {exc}"
        stats["save_loads_intact"] += ok
        if not ok:
            stats["save_failures"].append(f"kill {i + 1}: {str(got)[:300]}")
            log(f"save kill {i + 1}: BROKEN {str(got)[:200]}")
    stats["save_seconds"] = round(time.monotonic() - started, 1)
    log(f"{stats['save_kills']} save kills, {stats['save_loads_intact']} intact, "
        f"{stats['save_staging_left']} half-written versions left behind")  # fmt: skip
    return stats


def warm_cache(cache: Path) -> None:
    """A private copy of the checkout's text cache (encoding the demo from scratch costs ~30 s of CPU)."""
    repo_cache = ROOT / ".hybridrec-cache"
    if repo_cache.is_dir():
        shutil.copytree(repo_cache, cache, dirs_exist_ok=True)


def run(
    fit_kills: int,
    save_kills: int,
    seed: int,
    work: Path,
    cache: Path | None = None,
    quiet: bool = False,
    baseline_model: Path | None = None,
    with_reader: bool = True,
    phases: tuple[str, ...] = (),
) -> dict:
    rng = random.Random(seed)
    log = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    if cache is None:
        cache = work / "cache"
        warm_cache(cache)
    stats: dict = {"seed": seed}
    models = work / "models"
    models.mkdir(parents=True, exist_ok=True)
    if baseline_model is None:
        base = baseline_fit(models, cache, log)
        phases = phases or ("training", "before save", "saving")
    else:  # a fitted model of a config we do not know the timeline of: only the phases that need no timeline
        base = adopt_baseline(baseline_model, models)
        phases = tuple(p for p in phases or ("training", "saving") if p != "before save")
    reader = Reader(models / "latest", base["answers"], work) if with_reader else None
    try:
        stats.update(kill_fits(work, cache, fit_kills, rng, log, base, phases))
        stats.update(kill_saves(work, save_kills, rng, log))
    finally:
        stats["reader"] = reader.finish() if reader else None
    stats["kills"] = stats["fit_kills"] + stats["save_kills"]
    stats["loads_intact"] = stats["fit_loads_intact"] + stats["save_loads_intact"]
    failures = stats["fit_failures"] + stats["save_failures"]
    reader_ok = reader is None or not (stats["reader"]["different"] or stats["reader"]["n_errors"])
    stats["ok"] = not failures and stats["loads_intact"] == stats["kills"] and reader_ok
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fit-kills", type=int, default=20)
    parser.add_argument("--save-kills", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a fresh temporary one)")
    parser.add_argument("--cache", type=Path, default=None, help="a warm text cache to use (default: a copy)")
    parser.add_argument("--baseline", type=Path, default=None, help="a fitted demo model to start from (no fit)")
    parser.add_argument("--no-reader", action="store_true", help="no concurrent reader process")
    parser.add_argument(
        "--phases", default="", help="fit kill phases in turn, comma-separated: training, before save, saving"
    )
    parser.add_argument("--json", action="store_true", help="print the counts as JSON on stdout")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="hybridrec-kill-"))
    work.mkdir(parents=True, exist_ok=True)
    phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
    unknown = set(phases) - {"training", "before save", "saving"}
    if unknown:
        parser.error(f"unknown phase {sorted(unknown)[0]!r}")
    stats = run(args.fit_kills, args.save_kills, args.seed, work, args.cache, args.json, args.baseline,
                not args.no_reader, phases)  # fmt: skip
    if args.json:
        print(json.dumps(stats))
    else:
        phases = ", ".join(f"{v} {k[10:].replace('_', ' ')}" for k, v in stats.items() if k.startswith("fit_kills_"))
        print(
            f"{stats['kills']} kills ({stats['fit_kills']} of fit: {phases}; {stats['save_kills']} of save), "
            f"{stats['loads_intact']} loaded intact; {stats['fit_completed_first']} fits published first; "
            f"reader: {stats['reader']}; {'OK' if stats['ok'] else 'FAILED'}"
        )
    return 0 if stats["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
