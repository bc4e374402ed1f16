"""A fitted model directory: written elsewhere then swapped in atomically; checksummed; never a pickle."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hybridrec.display import ROWS_FILE, write_display
from hybridrec.errors import ModelFileError
from hybridrec.limits import read_json_file
from hybridrec.modelcheck import finite_arrays, finite_weights, ids_digest
from hybridrec.safeio import diagnose, disk_error, model_lock
from hybridrec.verified import recorded, remember
from hybridrec.verified import stamp as _stamp

if TYPE_CHECKING:
    from concurrent.futures import Future

    from hybridrec.data.idmap import IdMap
    from hybridrec.index import ItemIndex

# 4: the display table as one JSON row per line (display/rows.jsonl, display.write_display), read a row at a time;
# 3: items.json by column; 2: items.json by row. Folders of versions 2 and 3 still load.
FORMAT_VERSION = 4
# every file a model writes gets this mode (less the umask), so a serving account can read what a trainer wrote
FILE_MODE, DIR_MODE = 0o644, 0o755
MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, extra: dict) -> None:
    """List every file with its checksum, so a truncated or altered file is named on load; give every file and
    folder the same mode."""
    umask = os.umask(0)
    os.umask(umask)
    for p in folder.rglob("*"):
        os.chmod(p, (DIR_MODE if p.is_dir() else FILE_MODE) & ~umask)
    os.chmod(folder, DIR_MODE & ~umask)
    files = {
        str(p.relative_to(folder)): _sha256(p) for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST
    }
    payload = {"format_version": FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "files": files}
    (folder / MANIFEST).write_text(json.dumps(payload | extra, indent=1))
    os.chmod(folder / MANIFEST, FILE_MODE & ~umask)


class ModelDir:
    """Read access to a saved model: resolves the symlink once, checks the format version and each file's checksum."""

    def __init__(self, path: str | Path, background: bool = False, mapped: bool = False):
        """`background`: the checksums run on threads while the caller reads files (`path` waits for the one it
        returns); the caller then calls `finish_verify`. Otherwise every file is checked before this returns.
        `mapped`: arrays are mapped, not read (`npy`)."""
        self.requested = Path(path)
        self.mapped = mapped
        if not self.requested.exists():
            raise ModelFileError(f"no model at {self.requested} (run `hybridrec fit` first, or pass --model DIR)")
        self.root = self.requested.resolve()
        self._checked: dict[str, tuple[int, ...]] = {}  # name -> the file's _stamp when its checksum matched
        self._pending: dict[str, Future] = {}  # name -> its checksum on a background thread (start_verify)
        self._read: set[str] = set()  # files read so far (their readers' checks passed if the load succeeds)
        self._known: set[str] = set()  # files a load that succeeded read and checked, unchanged since (verified.py)
        self._finishing = False
        manifest_path = self.root / MANIFEST
        if not self.root.is_dir():
            raise ModelFileError(f"{self.requested}: not a model directory")
        if manifest_path.is_symlink():
            raise ModelFileError(f"{manifest_path}: a link inside the model folder; refusing to follow it")
        try:
            self._manifest_stamp = _stamp(manifest_path)
            self.manifest = read_json_file(manifest_path, ModelFileError)  # bounded: never /dev/zero, never 1e5 `[`
            if _stamp(manifest_path) != self._manifest_stamp:  # rewritten while read: no record applies to it
                self._manifest_stamp = ()
        except FileNotFoundError:
            raise ModelFileError(f"{manifest_path}: missing; {self.requested} is not a hybridrec model") from None
        except (ValueError, UnicodeDecodeError):
            raise ModelFileError(f"{manifest_path}: corrupted (not valid JSON)") from None
        except OSError as exc:
            raise ModelFileError(f"{manifest_path}: cannot read ({exc.strerror or exc})") from None
        if not isinstance(self.manifest, dict) or not isinstance(self.manifest.get("files"), dict):
            raise ModelFileError(f"{manifest_path}: corrupted (no file list)")
        version = self.manifest.get("format_version")
        if version == 1:
            raise ModelFileError(
                f"{self.requested}: a hybridrec 0.1 model (format version 1); refit it with this version: hybridrec fit"
            )
        if not isinstance(version, int) or isinstance(version, bool) or version < 2:  # 2 to FORMAT_VERSION are read
            raise ModelFileError(f"{manifest_path}: corrupted (format version {version!r} is not a known version)")
        if version > FORMAT_VERSION:
            raise ModelFileError(
                f"{manifest_path}: model format version {version} is newer than this hybridrec reads "
                f"(version {FORMAT_VERSION}); upgrade hybridrec"
            )
        if background:
            self.start_verify()
        else:
            self.verify()

    def verify(self) -> None:
        """Check every listed file now, so a damaged one is named on load, not at its first use (the network and
        the features load lazily); names that would leave the model folder are refused."""
        self.start_verify()
        self.finish_verify()

    def start_verify(self) -> None:
        """Refuse names outside the folder and links or missing files (in manifest order), then hash every file on
        background threads, one per core, the biggest first (hashlib releases the GIL): a load reads and checks
        files while the others are hashed, and `path` waits only for the file it returns. Files unchanged since
        their checksums last matched on this machine (hybridrec/verified.py) are not hashed again."""
        names = list(self.manifest["files"])
        for name in names:
            parts = Path(name).parts if isinstance(name, str) else ()
            if not isinstance(name, str) or Path(name).is_absolute() or ".." in parts or not parts:
                raise ModelFileError(f"{self.root / MANIFEST}: lists a file outside the model folder ({name!r})")
        stamps = {name: _stamp(self._locate(name)) for name in names}  # regular files only: never a device
        known, read = recorded(self.root, self._manifest_stamp)
        for name in names:
            if known.get(name) == stamps[name]:
                self._checked[name] = stamps[name]
                if name in read:
                    self._known.add(name)
        names = [name for name in names if name not in self._checked]
        workers = min(len(names), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
        if workers < 1:
            return
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(workers)
        for name in sorted(names, key=lambda name: stamps[name][2], reverse=True):  # by size
            self._pending[name] = pool.submit(self._digest, self.root / name)
        pool.shutdown(wait=False)  # the queued checksums still run; nothing else is submitted

    def finish_verify(self) -> None:
        """Wait for the background checksums; the first damaged file in manifest order is the one named. All
        matched (and the load that calls this at its end succeeded): recorded, so that the next load of these
        unchanged files neither hashes them nor rescans what it read (`known`)."""
        self._finishing = True
        for name in self.manifest["files"]:
            self.path(name)
        self._finishing = False
        remember(self.root, self._manifest_stamp, self._checked, self._read)

    def known(self, *names: str) -> bool:
        """Whether these files were read and checked by a load that succeeded, and are unchanged since
        (verified.py): their readers may skip the checks that scan them whole (values, ranges, id maps)."""
        return all(name in self._known for name in names)

    @staticmethod
    def _digest(path: Path) -> tuple[tuple[int, ...], str]:
        return _stamp(path), _sha256(path)

    def _locate(self, name: str) -> Path:
        """The path of one listed file: no link on the way to it, and a regular file."""
        path = self.root / name
        step = self.root
        for part in Path(name).parts:  # a model folder never reaches outside itself: no link on the way to a file
            step = step / part
            if step.is_symlink():
                raise ModelFileError(f"{step}: a link inside the model folder; refusing to follow it")
        if not path.is_file():
            if not self.root.is_dir():  # pruned: two newer saves happened since this model was opened
                raise ModelFileError(f"{self.root}: this model version was replaced while in use; load it again")
            raise ModelFileError(f"{path}: missing from the model directory")
        return path

    def path(self, name: str) -> Path:
        """The path of one listed file, after checking that it exists and matches its checksum (not again while
        its inode, size and times are the ones checked; a checksum started by start_verify is waited for)."""
        expected = self.manifest["files"].get(name)
        if expected is None:
            raise ModelFileError(f"{self.root / name}: not listed in the model manifest")
        path = self._locate(name)
        pending = self._pending.pop(name, None)
        try:
            stamp = _stamp(path)
            if self._checked.get(name) == stamp:
                return self._reading(name, path)
            hashed, actual = pending.result() if pending is not None else (stamp, _sha256(path))
            if hashed != stamp:  # changed since the background checksum: check what is there now
                actual = _sha256(path)
        except OSError as exc:
            if not self.root.is_dir():  # pruned while its checksum ran
                raise ModelFileError(
                    f"{self.root}: this model version was replaced while in use; load it again"
                ) from None
            raise ModelFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
        if actual != expected:
            raise ModelFileError(f"{path}: corrupted or truncated (checksum mismatch)")
        self._checked[name] = stamp
        return self._reading(name, path)

    def _reading(self, name: str, path: Path) -> Path:
        if not self._finishing:
            self._read.add(name)
        return path

    def has(self, name: str) -> bool:
        return name in self.manifest["files"]

    def json(self, name: str):
        """One listed JSON file, checked (checksum) and read within bounds (size, nesting: hybridrec/limits.py)."""
        return read_json_file(self.path(name), ModelFileError)

    def npy(self, name: str, populate: bool = False) -> np.ndarray:
        """One listed array, checked (checksum, no pickle, finite). Values found finite at an earlier load of the
        unchanged file are not scanned again (verified.py): 512 MB of user vectors at 2e6 users.

        With `mapped` it is mapped copy-on-write rather than read: a process that asks one query touches the pages
        it needs (the CLI). Only for short-lived processes: the mapping shows a later in-place write to the file
        (`cp` over a model) and dies of SIGBUS if the file is cut short, so a server reads its arrays. Saves never
        rewrite a file in place (a new version folder is swapped in). `populate` (mapped): its pages are mapped
        now, for an array every query reads at random rows."""
        try:
            array = np.load(self.path(name), allow_pickle=False, mmap_mode="c" if self.mapped else None)
        except (ValueError, OSError, EOFError) as exc:  # ValueError: a pickled object array, never unpickled
            raise ModelFileError(f"{self.root / name}: refused ({exc})") from None
        if populate and self.mapped:
            _populate(array)
        if np.issubdtype(array.dtype, np.floating) and not self.known(name) and not np.all(np.isfinite(array)):
            raise ModelFileError(f"{self.root / name}: holds values that are not finite (NaN or infinity)")  # NaN ranks
        return array


PAGE = 4096


def _populate(array: np.ndarray) -> None:
    """Touch one byte per page of a mapped array, so the process maps its pages now: a similar-items query reads
    item vectors and counts at a few hundred random rows, and the first queries of a process each paid ~200 page
    faults for them (L model: p99 1.6-1.9 ms against 0.9 ms once mapped). A pass that reads the whole array (the
    CLI's exact one) maps them anyway; touching every page first costs a few ms per 100 MB."""
    if array.size and array.flags.c_contiguous:
        raw = array.reshape(-1).view(np.uint8)
        int(raw[::PAGE].sum())


def model_link(path: str | Path) -> Path:
    """The link a save must replace: `models/latest` -> `models/demo` -> version folder resolves to `models/demo`,
    so saving through `latest` updates the model it names instead of detaching `latest` from it.

    Only links to a sibling in the same folder are followed: a link that leads elsewhere is itself replaced, so
    a planted symlink can never make a save write outside the folder it was given."""
    link = Path(path)
    while link.is_symlink():
        raw = os.readlink(link)
        nxt = link.parent / raw
        if Path(raw).name != raw or raw in (".", "..") or not nxt.is_symlink():
            break
        link = nxt
    return link


def staging_dir(target: Path) -> Path:
    """A fresh folder beside the target's versions, on the same filesystem so the final rename is atomic."""
    versions = target.parent / f".{target.name}.versions"
    if versions.is_symlink() or (versions.exists() and not versions.is_dir()):
        raise ModelFileError(f"{versions}: not a plain folder; refusing to write a model through it")
    versions.mkdir(parents=True, exist_ok=True)
    path = versions / f"tmp-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    return path


def publish(staged: Path, target: Path, keep: int = 2) -> Path:
    """Swap `target` (a symlink) to the staged folder in one rename; earlier versions stay until pruned."""
    versions = staged.parent
    final = versions / f"v-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    for f in staged.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    os.rename(staged, final)
    if target.exists() and not target.is_symlink():
        # A plain folder from a copy: move it into the versions so the swap below stays a single rename.
        os.rename(target, versions / f"v-legacy-{uuid.uuid4().hex[:6]}")
    link = target.parent / f".{target.name}.link-{uuid.uuid4().hex[:8]}"
    os.symlink(os.path.relpath(final, target.parent), link)
    os.replace(link, target)
    _prune(versions, current=final, keep=keep)
    return final


def _prune(versions: Path, current: Path, keep: int) -> None:
    """Keep the newest `keep` versions: a reader that resolved the previous one can still finish."""
    done = sorted((p for p in versions.iterdir() if p.name.startswith("v-")), key=_mtime)
    for old in done[:-keep]:
        if old != current:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in versions.glob("tmp-*"):
        if time.time() - _mtime(tmp) > 3600:  # left by a killed save
            shutil.rmtree(tmp, ignore_errors=True)


def _mtime(path: Path) -> float:
    """Modification time, or 0 for an entry a concurrent save already removed (never a crash after publishing)."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def point_link(link: Path, target: Path) -> None:
    """Atomically make `link` (for example models/latest) point at `target`."""
    tmp = link.parent / f".{link.name}.link-{uuid.uuid4().hex[:8]}"
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)


# --------------------------------------------------------------------------------------------- model save / load
# The components of a model folder, each written and read by one pair of functions below; the manifest lists them
# (with each score term's type, folder and fitted scale) so the loader needs no knowledge of which terms exist.
VECTOR_FILES = ("item_vectors", "item_bias", "user_vectors", "user_bias", "item_has_id", "seen_indptr", "seen_items")


def save_model(
    rec, path: str | Path, metrics: dict, job: dict | None, extra_files: dict[str, bytes | str] | None = None
) -> Path:
    """Write every component into a fresh folder, then swap `path` to it in one rename.

    `extra_files` (plain names, such as the fit's report.html) are written into the folder and the manifest with
    the rest; a re-save of a loaded model keeps the ones it had (EXTRA_FILES) unless given new ones."""
    from safetensors import SafetensorError

    from hybridrec import __version__, similar
    from hybridrec.config import model_settings
    from hybridrec.index import TRUSTED

    target = model_link(path)
    staged = staging_dir(target)
    job = job if job is not None else getattr(rec, "job_", None)  # a re-save (add_items) keeps the job's record
    extra = _extra_files(rec, extra_files)
    try:
        _write_json(staged / "config.json", model_settings(rec.config))
        if job is not None:
            _write_json(staged / "job.json", job)
        towers = rec.towers_
        # a big catalogue's similar items standardise with TowerMoments: stored, so a one-query process need not
        # make them (similar.TowerMoments.seed)
        moments = similar.TowerMoments.of(rec) if len(rec.items_) > similar.CANDIDATE_PATH_ITEMS else None
        _write_json(
            staged / "model.json",
            {
                "feedback": rec.feedback_,
                "rating_range": list(rec.rating_range_) if rec.rating_range_ else None,
                "global_mean": float(towers.global_mean),
                "n_users": len(rec.users_),
                "n_items": len(rec.items_),
                "ids_sha256": {"users": ids_digest(rec.users_.raw_ids), "items": ids_digest(rec.items_.raw_ids)},
                "n_items_trained": int(rec.net.items.id_embedding.num_embeddings)
                if rec.net.items.id_embedding is not None
                else len(rec.item_has_id_),
                "item_spec": rec.item_spec_.to_json(),
                "user_spec": rec.user_spec_.to_json(),
                "review_slice": list(rec.review_slice_) if rec.review_slice_ else None,
                "text_slots": asdict(rec.text_slots_) if rec.text_slots_ is not None else None,
            }
            | ({"similar_moments_half": moments.half} if moments is not None else {}),
        )
        (staged / "id_maps").mkdir()
        _write_json(staged / "id_maps/users.json", rec.users_.to_json())
        _write_json(staged / "id_maps/items.json", rec.items_.to_json())
        finite_weights(rec.net)
        _save_weights(rec.net, staged / "weights.safetensors")
        rec.features.save(staged / "features")
        (staged / "vectors").mkdir()
        arrays = dict(
            zip(VECTOR_FILES[:4], (towers.item_vectors, towers.item_bias, towers.user_vectors, towers.user_bias))
        )
        arrays |= {"item_has_id": rec.item_has_id_, "seen_indptr": rec.seen_.indptr, "seen_items": rec.seen_.items}
        if towers.item_queries is not None:
            arrays["item_queries"] = towers.item_queries
        if rec.item_text_ is not None:
            arrays["item_text"] = rec.item_text_
        if moments is not None:
            arrays["similar_moments"] = moments.stored()
        for name, array in arrays.items():
            np.save(staged / "vectors" / f"{name}.npy", np.asarray(array), allow_pickle=False)
        save_query_state(rec, staged / "vectors")
        components = []
        for term in rec.terms_:
            folder = f"terms/{term.type}"
            (staged / folder).mkdir(parents=True)
            term.save(staged / folder)
            components.append({"kind": "term", "type": term.type, "path": folder, "scale": float(term.scale)})
        rec.index_.save(staged / "index")
        if rec.trusted_index_ is not None:
            rec.trusted_index_.save(staged / "index", TRUSTED)
        try:
            write_display(staged / "display", rec.display_)
        except ValueError:  # JSON has no NaN or infinity, and a model must not hold them
            raise ModelFileError(f"{ROWS_FILE}: a price is not finite (NaN or infinity); not saved") from None
        _write_json(staged / "metrics.json", metrics)
        result = rec.train_result_
        _write_json(
            staged / "training.json",
            {
                "history": result.history,
                "best_epoch": result.best_epoch,
                "stopped_early": result.stopped_early,
                "metric": result.metric,
            },
        )
        for name, content in extra.items():
            (staged / name).write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        write_manifest(
            staged,
            {"name": job.get("name") if job else None, "hybridrec_version": __version__, "components": components},
        )
        _verify_staged(rec, staged, target)
        with model_lock(target):
            _check_unchanged(rec, target)
            final = publish(staged, target)
        if getattr(rec, "_loaded_from", (None,))[0] == os.path.abspath(target):  # its next save starts from here
            rec._loaded_from = (os.path.abspath(target), final.resolve())
        return final
    except (OSError, SafetensorError) as exc:  # a full disk or `ulimit -f`: one line naming the file and the cause
        error = _save_disk_error(exc, staged, target)
        shutil.rmtree(staged, ignore_errors=True)
        raise error from None
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def _save_disk_error(exc: BaseException, staged: Path, target: Path) -> OSError:
    """The disk error of a save, naming the file as it would have been in the model (not the staging folder)."""
    named = isinstance(exc, OSError) and exc.filename and exc.errno
    error = exc if isinstance(exc, OSError) and named else disk_error(exc, target, staged)
    name = str(error.filename)
    if name.startswith(str(staged)):
        name = str(target / os.path.relpath(name, staged))
    return OSError(error.errno, error.strerror, name)


def _verify_staged(rec, staged: Path, target: Path) -> None:
    """Load the staged folder the way a query process will: a save never publishes a model that cannot load
    (a diverged fit, an index hnswlib refuses, a file cut short by a full disk)."""
    finite_arrays(staged)
    try:
        load_model(type(rec), staged)
    except ModelFileError as exc:
        code, where = diagnose(staged)
        if code is not None:
            name = target / os.path.relpath(where, staged) if where is not None else target
            raise OSError(code, os.strerror(code), str(name)) from None
        why = str(exc).replace(str(staged), str(target))
        raise ModelFileError(f"{target}: the saved model does not load back, so it was not published ({why})") from None


def _check_unchanged(rec, target: Path) -> None:
    """Compare-and-swap: a model loaded from `target` is saved back only if `target` still names the version it
    was loaded from (or last saved there), so a concurrent writer's change is never overwritten and lost. A model
    fitted, or loaded from elsewhere, replaces `target` whatever it holds: that is a deliberate replacement."""
    loaded = getattr(rec, "_loaded_from", None)
    if loaded is None or loaded[0] != os.path.abspath(target):
        return
    now = target.resolve() if target.exists() else None
    if now != loaded[1]:
        raise ModelFileError(f"{target}: the model changed since it was loaded (another process saved it); retry")


EXTRA_FILES = ("report.html",)  # files beside the components that a re-save carries over


def _extra_files(rec, given: dict[str, bytes | str] | None) -> dict[str, bytes | str]:
    """The extra files to write: plain names only (never a component's, never a path), and a loaded model's own
    ones when none are given."""
    extra: dict[str, bytes | str] = dict(given or {})
    for name in extra:
        if name not in EXTRA_FILES:
            raise ModelFileError(f"extra model file {name!r}: only {', '.join(EXTRA_FILES)} may be added")
    source = getattr(rec, "_model_dir", None)
    for name in EXTRA_FILES:
        if name not in extra and source is not None and source.has(name):
            extra[name] = source.path(name).read_bytes()
    return extra


def _write_json(path: Path, payload) -> None:
    try:
        text = json.dumps(payload, indent=1, allow_nan=False)
    except ValueError:  # NaN or infinity: JSON has no such numbers, and a model must not hold them
        raise ModelFileError(f"{path.name}: holds a value that is not finite (NaN or infinity); not saved") from None
    path.write_text(text)


def _save_weights(net, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(path))
    except SafetensorError as exc:  # its I/O errors are not OSErrors: name the file and the cause
        raise disk_error(exc, path) from None


def load_model(cls, path: str | Path, mapped: bool = False):
    """A recommender from a model folder, every file checked for type and shape; torch and the text model are not
    loaded (the network and features load on first use). `mapped`: arrays mapped, not read (ModelDir.npy)."""
    from hybridrec import modelcheck as check
    from hybridrec.config import config_from_dict
    from hybridrec.data.idmap import LazyIdMap
    from hybridrec.features.cache import default_cache_dir
    from hybridrec.index import TRUSTED, ItemIndex
    from hybridrec.model.history import UserHistory
    from hybridrec.model.spec import TrainResult
    from hybridrec.scoring.base import TermFiles, parse_term, registry
    from hybridrec.scoring.towers import TowerScores

    md = ModelDir(path, background=True, mapped=mapped)  # checksums on threads while this reads: finish_verify
    settings = md.json("config.json")
    job = md.json("job.json") if md.has("job.json") else {}
    try:
        if not isinstance(settings, dict) or not isinstance(job, dict):
            raise TypeError("not a mapping")
        payload = {k: v for k, v in job.items() if k not in ("format_version",)} | settings
        cfg = config_from_dict(payload)
    except ModelFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - any config problem means a bad model file
        raise ModelFileError(f"{md.root / 'config.json'}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    # the text cache of queries is the user's (HYBRIDREC_CACHE_DIR or the default), never a folder the model names
    cfg.features.cache_dir = default_cache_dir()
    rec = cls(cfg)
    rec._model_dir = md
    rec._loaded_from = (os.path.abspath(model_link(path)), md.root)  # what a save back must still find (CAS)
    rec.job_ = job or None
    where = md.root
    try:
        model = check.model_json(where / "model.json", md.json("model.json"))
        rec.feedback_ = _choice(model["feedback"], ("explicit", "implicit"))
        rating_range = model["rating_range"]
        rec.rating_range_ = tuple(float(v) for v in rating_range) if rating_range else None
        rec.item_spec_, rec.user_spec_ = check.specs(where / "model.json", model)
        rec.review_slice_ = tuple(int(v) for v in model["review_slice"]) if model["review_slice"] else None
        rec.text_slots_ = _text_slots(model.get("text_slots"), rec.item_spec_.text_dim)
        rec._n_items_trained = int(model["n_items_trained"])
        global_mean = float(model["global_mean"])
        rec.users_ = LazyIdMap(lambda: _read_id_map(md, model, "users"), int(model["n_users"]), "user")
        rec.items_ = _read_id_map(md, model, "items")
        hot = ("item_vectors", "item_bias")  # read at random rows by every query
        arrays = {name: md.npy(f"vectors/{name}.npy", populate=name in hot) for name in VECTOR_FILES}
        queries = md.npy("vectors/item_queries.npy") if md.has("vectors/item_queries.npy") else None
        rec.display_ = _read_display(md, len(rec.items_))
        rec.metrics_ = check.metrics(where / "metrics.json", md.json("metrics.json"))
        training = md.json("training.json")
        check.training(where / "training.json", training)
        check.features_json(
            where / "features/features.json", md.json("features/features.json"), rec.item_spec_, rec.user_spec_
        )
        rec.train_result_ = TrainResult(
            history=list(training["history"]),
            best_epoch=int(training["best_epoch"]),
            stopped_early=bool(training["stopped_early"]),
            metric=str(training.get("metric", "")),  # absent in models saved before 0.2's progress display
        )
        components = md.manifest.get("components", [])
        if not isinstance(components, list):
            raise TypeError("the manifest's components are not a list")
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{where}: inconsistent model files ({exc})") from None
    n_users, n_items = len(rec.users_), len(rec.items_)
    if len(arrays["user_vectors"]) != n_users:  # the users' id map is read at its first use: the vectors tell now
        rows = len(arrays["user_vectors"])
        raise ModelFileError(
            f"{where / 'model.json'}: n_users is {n_users}, but vectors/user_vectors.npy has {rows} rows"
        )
    _check_array(where, "item_vectors", arrays["item_vectors"], (n_items, None), np.floating)
    dim = arrays["item_vectors"].shape[1]
    _check_array(where, "item_bias", arrays["item_bias"], (n_items,), np.floating)
    _check_array(where, "user_vectors", arrays["user_vectors"], (n_users, dim), np.floating)
    _check_array(where, "user_bias", arrays["user_bias"], (n_users,), np.floating)
    _check_array(where, "item_has_id", arrays["item_has_id"], (n_items,), np.bool_)
    if queries is not None:
        _check_array(where, "item_queries", queries, (n_items, dim), np.floating)
    if len(rec.display_) != n_items:
        raise ModelFileError(f"{where}: the display table has {len(rec.display_)} rows for {n_items} items")
    seen_files = ("vectors/seen_indptr.npy", "vectors/seen_items.npy")
    rec.seen_ = UserHistory(
        arrays["seen_indptr"].astype(np.int64, copy=False), arrays["seen_items"].astype(np.int64, copy=False)
    )
    problem = rec.seen_.check(n_users, n_items, scan=not md.known(*seen_files))
    if problem:
        raise ModelFileError(f"{where}/vectors/seen_indptr.npy, seen_items.npy: {problem}")
    rec.item_has_id_ = arrays["item_has_id"]
    rec.towers_ = TowerScores(
        global_mean, arrays["user_vectors"], arrays["user_bias"], arrays["item_vectors"], arrays["item_bias"], queries
    )
    if cfg.model.mlp_residual:
        rec.towers_.residual = lambda u, v: _lazy_residual(rec, u, v)
    rec.terms_ = _load_terms(md, cfg, components, n_users, n_items, registry, parse_term, TermFiles)
    check.index_json(where / "index/index.json", md.json("index/index.json"), n_items, dim)
    rec.index_ = LazyIndex(md, rec, n_items, ItemIndex.load)  # its checksum now (finish_verify), the rest on first use
    rec.trusted_index_ = None
    if md.has(f"index/{TRUSTED}.hnsw"):
        check.index_json(where / f"index/{TRUSTED}.json", md.json(f"index/{TRUSTED}.json"), n_items, dim, "ip")
        rec.trusted_index_ = LazyIndex(md, rec, n_items, ItemIndex.load, TRUSTED)
    rec.fit_stats_ = {}
    if md.has("vectors/item_text.npy"):  # every file is checked on load, not at its first use
        rec._item_text = load_item_text(rec)
    load_query_state(md, rec, n_users, n_items, dim)
    if md.has("vectors/similar_moments.npy"):
        _seed_moments(md, rec, model.get("similar_moments_half"), dim)
    manifest = md.manifest
    rec.origin_ = {
        "model": str(md.root),
        "created": manifest.get("created"),
        "version": manifest.get("hybridrec_version"),
    }
    md.finish_verify()  # every file's checksum, read or not (the network and features load on first use)
    return rec


def _read_display(md: ModelDir, n_items: int):
    """The display table: display/rows.jsonl, its rows parsed when asked for (format 4), or items.json whole."""
    import mmap

    from hybridrec import modelcheck as check
    from hybridrec.display import OFFSETS_FILE

    if not md.has(ROWS_FILE):
        return check.display_rows(md.root / "items.json", md.json("items.json"), n_items)
    path = md.path(ROWS_FILE)
    offsets = md.npy(OFFSETS_FILE)
    try:
        with open(path, "rb") as fh:
            if md.mapped and os.fstat(fh.fileno()).st_size:
                data: bytes | mmap.mmap = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            else:
                data = fh.read()  # no JSON parsed: reading 50 MB costs ~20 ms
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: cannot read ({exc})") from None
    return check.display_file(path, data, offsets, n_items)


def _read_id_map(md: ModelDir, model: dict, entity: str) -> IdMap:
    """id_maps/{entity}.json, checked, and against model.json's count and digest ("users" or "items")."""
    from hybridrec import modelcheck as check

    name = f"id_maps/{entity}.json"
    payload = md.json(name)
    known = md.known(name, "model.json")  # read and checked by an earlier load, unchanged since
    mapping = check.id_map(md.root / name, payload, entity[:-1], scan=not known)
    check.check_counts(md.root, model, entity, mapping, scan=not known)
    return mapping


class LazyIndex:
    """A saved model's ANN index, read when a query first needs it (`HybridRecommender.index_`): the exact
    similar-items path of a long-tail catalogue, `info` and `explain` never do, and at 5e5 items the structure
    check and hnswlib's read cost ~0.5 s of a CLI query. Its checksum is checked on load like every file's; the
    structure, the width and the retired items' marks when it is read. `items`: the catalogue size saved with it;
    `stem`: which index (index/{stem}.hnsw), the cosine one or the trusted one (similar.build_trusted_index)."""

    def __init__(self, md: ModelDir, rec, items: int, load, stem: str = "items"):
        self.md, self.rec, self.items, self._load, self.stem = md, rec, items, load, stem

    def read(self) -> ItemIndex:
        self.md.path(f"index/{self.stem}.hnsw")  # still the file whose checksum was checked (else checked again)
        index = self._load(self.md.root / "index", self.rec.items_, self.items, self.stem)
        dim = self.rec.towers_.item_vectors.shape[1]
        if index.dim != dim:
            raise ModelFileError(f"{self.md.root}: the index holds vectors of width {index.dim}, the model {dim}")
        index.mark_deleted(np.flatnonzero(self.rec.retired_[: self.items]))
        return index


def _load_terms(md, cfg, components, n_users, n_items, registry, parse_term, TermFiles) -> list:
    """The score terms listed in the manifest, in config order; each reads and checks its own folder."""
    declared = [parse_term(p, f"model.terms[{k}]") for k, p in enumerate(cfg.model.terms)]
    listed = {c.get("type"): c for c in components if isinstance(c, dict) and c.get("kind") == "term"}
    terms = []
    for cls, params in declared:
        entry = listed.get(cls.type)
        if entry is None or entry.get("path") != f"terms/{cls.type}":
            raise ModelFileError(f"{md.root / MANIFEST}: the {cls.type!r} term of the config is not in the model")
        term = registry()[cls.type].load(TermFiles(md, entry["path"]), params, n_users, n_items)
        scale = entry.get("scale")
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not np.isfinite(scale):
            raise ModelFileError(f"{md.root / MANIFEST}: the {cls.type!r} term's scale is not a number")
        term.scale = float(scale)
        terms.append(term)
    return terms


def _text_slots(payload, text_dim: int):
    """model.json's free-text slot record, checked: two flags and one finite mean vector of the text width."""
    if payload is None:
        return None
    from hybridrec.fitting import TextSlots  # only here: a model without text loads without pandas

    slots = TextSlots(**payload)
    mean = np.asarray(slots.meta_mean, dtype=np.float64)
    flags_ok = isinstance(slots.meta_used, bool) and isinstance(slots.review_used, bool)
    if not flags_ok or mean.shape != ((text_dim - 1) // 2,) or not np.all(np.isfinite(mean)):
        raise ValueError("text_slots does not match the text features")
    return slots


def _choice(value, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{value!r} is not one of {allowed}")
    return value


def _check_array(where: Path, name: str, array: np.ndarray, shape: tuple, kind) -> None:
    """Refuse an array of the wrong shape or type: answers from it would be wrong. (Non-finite values were refused
    when ModelDir.npy read it: every array here comes from there, and a second pass cost 40 ms per 5e5 x 64.)"""
    ok = array.ndim == len(shape) and all(s is None or a == s for a, s in zip(array.shape, shape))
    if not ok or not np.issubdtype(array.dtype, kind):
        raise ModelFileError(f"{where / 'vectors' / name}.npy: is {array.dtype} {array.shape}, expected {shape}")


def _seed_moments(md: ModelDir, rec, half, dim: int) -> None:
    """vectors/similar_moments.npy and model.json's similar_moments_half (save_model), checked, into the similar
    items' cache."""
    from hybridrec.modelcheck import is_number
    from hybridrec.similar import TowerMoments

    sums = md.npy("vectors/similar_moments.npy")
    _check_array(md.root, "similar_moments", sums, (dim + 1, dim), np.floating)
    if not is_number(half) or half < 0:
        raise ModelFileError(f"{md.root / 'model.json'}: similar_moments_half {half!r} is not a count")
    TowerMoments.seed(rec, float(half), sums)


def load_item_text(rec) -> np.ndarray:
    """vectors/item_text.npy (free-text queries), read on first use: float16, one row per item, the text width."""
    array = rec._model_dir.npy("vectors/item_text.npy")
    width = (rec.item_spec_.text_dim - 1) // 2
    _check_array(rec._model_dir.root, "item_text", array, (len(rec.items_), width), np.floating)
    return array


def save_query_state(rec, folder: Path) -> None:
    """What queries beyond known users read (hybridrec/queries.py, explain.py): the retired-item mask, training
    interactions per item, the user tower's bag per user, the users' feature inputs, the items' content effects."""
    arrays = {"retired": rec.retired_, "item_counts": rec.item_counts_}
    if rec.bag_ is not None:
        arrays |= {"bag_indptr": rec.bag_.indptr, "bag_items": rec.bag_.items}
    inputs = rec.user_inputs_
    if inputs is not None and (inputs.numeric.shape[1] or inputs.categorical):
        arrays["user_numeric"] = inputs.numeric
        arrays |= {f"user_categorical_{k}": codes for k, codes in enumerate(inputs.categorical)}
    if rec.content_effects_ is not None:
        arrays["content_effects"] = rec.content_effects_.deltas
        _write_json(folder / "content_groups.json", rec.content_effects_.names)
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", np.asarray(array), allow_pickle=False)


def load_query_state(md: ModelDir, rec, n_users: int, n_items: int, dim: int) -> None:
    """Read and check what save_query_state wrote; a model saved before these files has nothing retired, item
    counts of 1 per trained item, and explanations without the bag or content effects."""
    from hybridrec.explain import ContentEffects
    from hybridrec.features.entity import EntityFeatures
    from hybridrec.model.history import UserHistory

    where = md.root

    def optional(name: str, populate: bool = False) -> np.ndarray | None:
        return md.npy(f"vectors/{name}.npy", populate) if md.has(f"vectors/{name}.npy") else None

    retired = optional("retired")
    if retired is not None:
        _check_array(where, "retired", retired, (n_items,), np.bool_)
    rec.retired_ = retired.copy() if retired is not None else np.zeros(n_items, bool)
    counts = optional("item_counts", populate=True)  # every similar query weighs rows by their counts
    if counts is not None:
        _check_array(where, "item_counts", counts, (n_items,), np.integer)
        if (counts < 0).any():
            raise ModelFileError(f"{where}: vectors/item_counts.npy holds negative counts")
    rec.item_counts_ = counts.astype(np.int64, copy=False) if counts is not None else rec.item_has_id_.astype(np.int64)
    rec.bag_ = None
    indptr, items = optional("bag_indptr"), optional("bag_items")
    if indptr is not None and items is not None:
        rec.bag_ = UserHistory(indptr.astype(np.int64, copy=False), items.astype(np.int64, copy=False))
        problem = rec.bag_.check(n_users, n_items, scan=not md.known("vectors/bag_indptr.npy", "vectors/bag_items.npy"))
        if problem:
            raise ModelFileError(f"{where}: the history bag: {problem}")
    spec = rec.user_spec_
    numeric = optional("user_numeric")
    rec.user_inputs_ = None
    if not spec.numeric_dim and not spec.vocab_sizes:
        rec.user_inputs_ = EntityFeatures(np.zeros((n_users, 0), np.float32), np.zeros((n_users, 0), np.float32), [])
    elif numeric is not None:
        _check_array(where, "user_numeric", numeric, (n_users, spec.numeric_dim), np.floating)
        codes = []
        for k, size in enumerate(spec.vocab_sizes):
            array = md.npy(f"vectors/user_categorical_{k}.npy")
            _check_array(where, f"user_categorical_{k}", array, (n_users, None), np.integer)
            if array.size and (array.min() < 0 or array.max() >= size):
                raise ModelFileError(f"{where}: vectors/user_categorical_{k}.npy holds codes outside its vocabulary")
            codes.append(array.astype(np.int64, copy=False))
        rec.user_inputs_ = EntityFeatures(np.zeros((n_users, 0), np.float32), numeric.astype(np.float32), codes)
    rec.content_effects_ = None
    deltas = optional("content_effects")
    if deltas is not None:
        names = md.json("vectors/content_groups.json")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ModelFileError(f"{where}: vectors/content_groups.json is not a list of names")
        _check_array(where, "content_effects", deltas, (n_items, len(names), dim + 1), np.floating)
        rec.content_effects_ = ContentEffects(names, deltas.astype(np.float32))


def _lazy_residual(rec, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    from hybridrec.fitting import residual_scorer

    return residual_scorer(rec.net)(u, v)


def load_network(rec):
    """The torch network of a loaded model (on first use: queries that need no torch never load it)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from hybridrec.model.network import HybridNet, NetShape

    path = rec._model_dir.path("weights.safetensors")
    shape = (len(rec.users_), rec._n_items_trained, rec.item_spec_, rec.user_spec_, NetShape.of(rec.config.model))
    _check_weight_shapes(path, HybridNet, shape)  # before allocating: model.json's sizes could be anything
    import torch

    with torch.device("meta"):  # no random init of tables the file replaces (~4 s for 2e6 users and 5e5 items)
        net = HybridNet(
            len(rec.users_),
            rec._n_items_trained,
            rec.item_spec_,
            rec.user_spec_,
            NetShape.of(rec.config.model),
            float(rec.towers_.global_mean),
        )
    try:
        net.load_state_dict(load_file(str(path)), assign=True)  # strict: every weight and buffer from the file
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise ModelFileError(f"{path}: cannot load weights ({str(exc).splitlines()[0]})") from None
    net.eval()
    return net


def _check_weight_shapes(path: Path, net_class, shape: tuple) -> None:
    """The tensors the network of these sizes has (built on torch's meta device, which allocates nothing) against
    the safetensors header, so a model.json naming huge sizes is refused instead of allocated."""
    import torch

    try:
        with open(path, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            if not 2 <= size <= 100 << 20:
                raise ValueError("header size out of range")
            header = json.loads(fh.read(size))
        stored = {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise ModelFileError(f"{path}: not a safetensors file ({exc})") from None
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in net_class(*shape, 0.0).state_dict().items()}
    if stored != expected:
        wrong = sorted(set(stored) ^ set(expected)) or [k for k in expected if stored[k] != expected[k]]
        raise ModelFileError(f"{path}: the weights do not match the model's sizes in model.json (first: {wrong[0]})")
