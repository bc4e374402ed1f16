"""Disk errors as one line (`PATH: No space left on device`), and the lock that serialises updates of one model.

Writers below hybridrec report a full disk or a file-size limit (`ulimit -f`) in different ways: Python raises
`OSError(errno)` without the file name, numpy's `tofile` raises `OSError("1752 requested and 992 written")` with no
cause, safetensors raises `SafetensorError("... (os error 28)")`, and hnswlib's `save_index` truncates the file and
says nothing. `disk_error` turns any of them into an `OSError(errno, strerror, path)`, which the CLI prints as
`error: PATH: CAUSE` with exit code 2.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hybridrec.errors import ModelFileError

_OS_ERROR = re.compile(r"os error (\d+)")


def disk_error(exc: BaseException, path: str | Path, folder: str | Path | None = None) -> OSError:
    """An OSError naming `path` (or, when the writer did not say, the file that hit the limit in `folder`) and
    the cause, from whatever a writer raised while writing."""
    code = getattr(exc, "errno", None)
    if not isinstance(code, int) or not code:
        found = _OS_ERROR.search(str(exc))
        code = int(found.group(1)) if found else None
    if code is None or folder is not None:
        seen, where = diagnose(folder if folder is not None else Path(path).parent)
        code = code if code is not None else seen
        if where is not None and not getattr(exc, "filename", None):
            path = where
    if code is None:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return OSError(errno.EIO, f"write failed ({first})", str(path))
    return OSError(code, os.strerror(code), str(path))


def diagnose(folder: str | Path) -> tuple[int | None, Path | None]:
    """Why writes into `folder` fail when the writer gave no reason: a file at the process's size limit
    (EFBIG, `ulimit -f`) or no free space (ENOSPC); (None, None) when neither is the case."""
    folder = Path(folder)
    soft, _hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY and folder.is_dir():
        for p in folder.rglob("*"):
            try:
                if p.is_file() and not p.is_symlink() and p.stat().st_size >= soft:
                    return errno.EFBIG, p
            except OSError:
                continue
    try:
        stats = os.statvfs(folder if folder.exists() else folder.parent)
    except OSError:
        return None, None
    if stats.f_bavail * stats.f_frsize < (1 << 16):
        return errno.ENOSPC, None
    return None, None


def write_checked(path: Path, writer) -> None:
    """Call `writer(path)`; a disk error becomes `OSError(errno, cause, path)` and the partial file is removed."""
    try:
        writer(path)
    except OSError as exc:
        if isinstance(exc, OSError) and exc.filename and exc.errno:
            raise
        path.unlink(missing_ok=True)
        raise disk_error(exc, path) from None


# ------------------------------------------------------------------------------------------------ the model lock
LOCK_TIMEOUT_S = float(os.environ.get("HYBRIDREC_LOCK_TIMEOUT", "600"))
_held: dict[str, tuple[int, int]] = {}  # lock path -> (fd, depth): a process re-entering its own lock never waits


def lock_path(target: Path) -> Path:
    """The lock file of the model link `target` (models/demo -> models/.demo.lock)."""
    return target.parent / f".{target.name}.lock"


@contextmanager
def model_lock(target: str | Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the update lock of one model (an exclusive `flock` on a file beside its link) for a load-modify-save,
    so two writers never both start from the same version and one of them loses its change. A second writer waits
    for the first (up to `timeout`, default $HYBRIDREC_LOCK_TIMEOUT or 600 s), then fails with one line."""
    target = Path(target)
    path = lock_path(target)
    key = os.path.abspath(path)
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _held[key]
            _held[key] = (fd, depth - 1)
        return
    if not path.parent.is_dir():  # no model folder there: nothing to protect (the load will say so)
        yield
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ModelFileError(f"{path}: the model's lock file is a link; refusing to use it") from None
        raise
    try:
        deadline = time.monotonic() + (LOCK_TIMEOUT_S if timeout is None else timeout)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ModelFileError(
                        f"{target}: another process is updating this model (lock {path} still held); retry later"
                    ) from None
                time.sleep(0.05)
        _held[key] = (fd, 1)
        try:
            yield
        finally:
            del _held[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
