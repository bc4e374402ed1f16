"""Child processes with one thread each, a wall-clock limit, their own peak RSS and time-stamped output lines."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


@dataclass
class Child:
    returncode: int
    seconds: float  # wall time from start to exit
    peak_rss_gb: float  # the child's own maximum resident set (wait4's rusage)
    timed_out: bool
    cpu_seconds: float = 0.0  # user + system CPU time: what the work cost, whatever else shared the cores
    lines: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, line) of stdout+stderr

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def tail(self, n: int = 5) -> str:
        return " | ".join(line for _, line in self.lines[-n:])


def run(cmd: list[str], timeout: float, echo: bool = False, cwd: str | None = None) -> Child:
    """Run `cmd` with one thread; kill its process group after `timeout` seconds. Output lines are kept with the
    time they arrived (how the fit's stages are timed) and printed as they come when `echo`."""
    env = {**os.environ, **ONE_THREAD}
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        text=True,
        errors="replace",
        start_new_session=True,  # its own group: a timeout kills whatever it started too
    )
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.perf_counter() - start, line.rstrip("\n")))
            if echo:
                print(f"    {line.rstrip()}", flush=True)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    timer = threading.Timer(timeout, kill)
    timer.start()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=10)
    cpu = usage.ru_utime + usage.ru_stime
    return Child(proc.returncode, seconds, usage.ru_maxrss / 2**20, expired.is_set(), cpu_seconds=cpu, lines=lines)
