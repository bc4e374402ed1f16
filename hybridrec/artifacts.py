"""A fitted model directory: written elsewhere then swapped in atomically; checksummed; never a pickle."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np

from hybridrec.errors import ModelFileError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, extra: dict) -> None:
    """List every file with its checksum, so a truncated or altered file is named on load."""
    files = {
        str(p.relative_to(folder)): _sha256(p) for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST
    }
    payload = {"format_version": FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "files": files}
    (folder / MANIFEST).write_text(json.dumps(payload | extra, indent=1))


class ModelDir:
    """Read access to a saved model: resolves the symlink once, checks the format version and each file's checksum."""

    def __init__(self, path: str | Path):
        self.requested = Path(path)
        if not self.requested.exists():
            raise ModelFileError(f"no model at {self.requested} (run `hybridrec fit` first, or pass --model DIR)")
        self.root = self.requested.resolve()
        manifest_path = self.root / MANIFEST
        if not self.root.is_dir():
            raise ModelFileError(f"{self.requested}: not a model directory")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except FileNotFoundError:
            raise ModelFileError(f"{manifest_path}: missing; {self.requested} is not a hybridrec model") from None
        except (ValueError, UnicodeDecodeError):
            raise ModelFileError(f"{manifest_path}: corrupted (not valid JSON)") from None
        except OSError as exc:
            raise ModelFileError(f"{manifest_path}: cannot read ({exc.strerror or exc})") from None
        if not isinstance(self.manifest, dict) or not isinstance(self.manifest.get("files"), dict):
            raise ModelFileError(f"{manifest_path}: corrupted (no file list)")
        version = self.manifest.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ModelFileError(
                f"{manifest_path}: model format version {version} is newer than this hybridrec reads "
                f"(version {FORMAT_VERSION}); upgrade hybridrec"
            )
        self.verify()

    def verify(self) -> None:
        """Check every listed file now, so a damaged one is named on load, not at its first use (the network and
        the features load lazily); names that would leave the model folder are refused."""
        for name in self.manifest["files"]:
            parts = Path(name).parts
            if not isinstance(name, str) or Path(name).is_absolute() or ".." in parts or not parts:
                raise ModelFileError(f"{self.root / MANIFEST}: lists a file outside the model folder ({name!r})")
            self.path(name)

    def path(self, name: str) -> Path:
        """The path of one listed file, after checking that it exists and matches its checksum."""
        expected = self.manifest["files"].get(name)
        path = self.root / name
        if expected is None:
            raise ModelFileError(f"{path}: not listed in the model manifest")
        if not path.is_file():
            if not self.root.is_dir():  # pruned: two newer saves happened since this model was opened
                raise ModelFileError(f"{self.root}: this model version was replaced while in use; load it again")
            raise ModelFileError(f"{path}: missing from the model directory")
        try:
            actual = _sha256(path)
        except OSError as exc:
            raise ModelFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
        if actual != expected:
            raise ModelFileError(f"{path}: corrupted or truncated (checksum mismatch)")
        return path

    def has(self, name: str) -> bool:
        return name in self.manifest["files"]

    def json(self, name: str):
        try:
            return json.loads(self.path(name).read_text(encoding="utf-8"))
        except ValueError:
            raise ModelFileError(f"{self.root / name}: not valid JSON") from None

    def npy(self, name: str) -> np.ndarray:
        try:
            return np.load(self.path(name), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:  # ValueError: a pickled object array, never unpickled
            raise ModelFileError(f"{self.root / name}: refused ({exc})") from None


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
