"""A record, per machine user, of the model files whose checksums matched, so that a later load of the same
unchanged files does not hash them again: at 5e5 items a model is 2.5 GB, ~2.5 s of hashing in every CLI query.

A file counts as unchanged while its device, inode, size, modification and status-change times are the ones
recorded (as git's index and rsync judge files). Writing a file, or setting its times back, moves its status-change
time, which no user can set. A file changed within the last few seconds is not recorded: a rewrite within the
clock's tick would keep its times (git's "racy" entries).

What a load that succeeded read was also checked by its reader then (types, shapes, ranges: modelcheck.py). While
the manifest and those files keep their stamps, their content is what was checked (each is pinned by its checksum
in the unchanged manifest), so the checks that scan whole arrays and id maps need not run again (`ModelDir.known`).
A folder changed since, by anyone, has new stamps and is hashed and checked in full; a record is the user's own
(their cache folder), and is ignored when another hybridrec version wrote it (its checks may differ).

The record lives in $HYBRIDREC_CACHE_DIR/verified when that is set, else in the user's cache folder
($XDG_CACHE_HOME or ~/.cache)/hybridrec/verified; one small JSON file per model version folder. Failing to read or
write it is never an error: the files are then hashed, as without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from hybridrec import __version__

Stamp = tuple[int, ...]
SETTLED_S = 3.0  # a file whose status changed more recently than this is hashed next time too
RECORD_BYTES = 4 << 20  # a record lists a model's files: a few KB; anything bigger is not one


def stamp(path: Path) -> Stamp:
    """What changes when a file is rewritten or replaced: device, inode, size, modification and status-change times."""
    info = path.stat()
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def record_folder() -> Path:
    explicit = os.environ.get("HYBRIDREC_CACHE_DIR")
    if explicit:
        return Path(explicit) / "verified"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hybridrec" / "verified"


def _record_path(root: Path) -> Path:
    return record_folder() / f"{hashlib.sha256(str(root).encode('utf-8', 'surrogatepass')).hexdigest()[:32]}.json"


def recorded(root: Path, manifest: Stamp) -> tuple[dict[str, Stamp], set[str]]:
    """The files of model folder `root` recorded as checked while its manifest had this stamp, and those of them
    a load that succeeded read (so every check of them made on load passed); empty when there is no such record,
    or it was written by another hybridrec version (whose checks may differ)."""
    if not manifest:
        return {}, set()
    try:
        path = _record_path(root)
        if path.stat().st_size > RECORD_BYTES:
            return {}, set()
        payload = json.loads(path.read_text(encoding="utf-8"))
        same = payload.get("root") == str(root) and payload.get("version") == __version__
        if not same or tuple(payload.get("manifest", ())) != manifest:
            return {}, set()
        files = payload.get("files", {})
        stamps = {n: tuple(v) for n, v in files.items() if isinstance(v, list) and all(type(x) is int for x in v)}
        read = {n for n in payload.get("read", []) if isinstance(n, str) and n in stamps}
        return stamps, read
    except (OSError, ValueError, TypeError, AttributeError):
        return {}, set()


def remember(root: Path, manifest: Stamp, checked: dict[str, Stamp], read: set[str]) -> None:
    """Record the files whose checksums matched, and which of them a load that succeeded read, less those changed
    too recently to tell apart by their times."""
    newest = time.time_ns() - int(SETTLED_S * 1e9)
    if not manifest or manifest[-1] > newest:
        return
    files = {name: list(s) for name, s in checked.items() if s[-1] <= newest and s[-2] <= newest}
    try:
        folder = record_folder()
        folder.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(
            {
                "root": str(root),
                "version": __version__,
                "manifest": list(manifest),
                "files": files,
                "read": sorted(read & set(files)),
            }
        )
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False, encoding="utf-8") as fh:
            fh.write(payload)
        os.replace(fh.name, _record_path(root))
    except OSError:
        try:
            os.unlink(fh.name)
        except (OSError, NameError):
            pass
