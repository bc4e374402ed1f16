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

import contextlib
import hashlib
import json
import os
import stat
import tempfile
import time
from pathlib import Path

from hybridrec import __version__
from hybridrec.limits import loads

Stamp = tuple[int, ...]
SETTLED_S = 3.0  # a file whose status changed more recently than this is hashed next time too
RECORD_BYTES = 4 << 20  # a record lists a model's files: a few KB; anything bigger is not one


def stamp(path: Path) -> Stamp:
    """What changes when a file is rewritten or replaced: device, inode, size, modification and status-change times."""
    info = path.stat()
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def record_folder() -> Path | None:
    """Where records live (None: nowhere, as when there is no home folder to put them in)."""
    explicit = os.environ.get("HYBRIDREC_CACHE_DIR")
    if explicit:
        return Path(explicit).absolute() / "verified"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hybridrec" / "verified" if os.path.isabs(base) else None


def _record_name(root: Path) -> str:
    return f"{hashlib.sha256(str(root).encode('utf-8', 'surrogatepass')).hexdigest()[:32]}.json"


def _read_own(path: Path) -> bytes | None:
    """A record's bytes if it is a regular file of this user's, within RECORD_BYTES, reached without a link
    (never a FIFO that hangs, /dev/zero, or a record someone else planted in a shared cache folder)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        own = not hasattr(os, "geteuid") or info.st_uid == os.geteuid()
        if not stat.S_ISREG(info.st_mode) or not own or info.st_size > RECORD_BYTES:
            return None
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read(RECORD_BYTES + 1)
    finally:
        os.close(fd)


def recorded(root: Path, manifest: Stamp) -> tuple[dict[str, Stamp], set[str]]:
    """The files of model folder `root` recorded as checked while its manifest had this stamp, and those of them
    a load that succeeded read (so every check of them made on load passed); empty when there is no such record,
    or it was written by another hybridrec version (whose checks may differ), or is not a record of this user's."""
    folder = record_folder()
    if not manifest or folder is None:
        return {}, set()
    try:
        raw = _read_own(folder / _record_name(root))
        if raw is None or len(raw) > RECORD_BYTES:
            return {}, set()
        payload = loads(raw)
        same = payload.get("root") == str(root) and payload.get("version") == __version__
        if not same or tuple(payload.get("manifest", ())) != manifest:
            return {}, set()
        files = payload.get("files", {})
        stamps = {n: tuple(v) for n, v in files.items() if isinstance(v, list) and all(type(x) is int for x in v)}
        read = {n for n in payload.get("read", []) if isinstance(n, str) and n in stamps}
        return stamps, read
    except (OSError, ValueError, TypeError, AttributeError, UnicodeDecodeError, MemoryError):
        return {}, set()


KEEP_RECORDS = 256  # one per model version folder loaded; the oldest beyond this are dropped (hashed again)


def remember(root: Path, manifest: Stamp, checked: dict[str, Stamp], read: set[str]) -> None:
    """Record the files whose checksums matched, and which of them a load that succeeded read, less those changed
    too recently to tell apart by their times. The folder is made this user's own (0700)."""
    newest = time.time_ns() - int(SETTLED_S * 1e9)
    folder = record_folder()
    if not manifest or manifest[-1] > newest or folder is None:
        return
    files = {name: list(s) for name, s in checked.items() if s[-1] <= newest and s[-2] <= newest}
    payload = {
        "root": str(root),
        "version": __version__,
        "manifest": list(manifest),
        "files": files,
        "read": sorted(read & set(files)),
    }
    temp = None
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False, encoding="utf-8") as fh:
            temp = fh.name
            fh.write(json.dumps(payload))
        os.replace(temp, folder / _record_name(root))
        temp = None
        _prune(folder)
    except OSError:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)


def _prune(folder: Path) -> None:
    records = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
    for old in records[:-KEEP_RECORDS]:
        with contextlib.suppress(OSError):
            old.unlink()
