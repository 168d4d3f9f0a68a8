"""Measuring a command as a whole: wall time, CPU time of its process tree,
peak memory of that tree, which modules it imported; and the load other
processes put on the machine meanwhile.

Every benchmark runs what it measures as a subprocess (``beet ...``, or a
``python -c`` program), so start-up is part of each figure, as a user pays it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

#: Seconds between two polls of a running command's process tree.
POLL_SECONDS = 0.1


@dataclasses.dataclass
class Measured:
    """What one command cost.

    Attributes
    ----------
    wall : float
        Seconds from start to exit.
    cpu : float
        User + system seconds of the command and all its descendants.
    peak_rss : int
        Largest sum of the resident memory of the whole tree seen at one poll (bytes).
    returncode : int
    stdout : str
    lines : list of (float, str)
        Each stderr line with the seconds since start when it came.
    other_cores : float
        Mean number of cores that processes outside the command kept busy while it ran.
    pid : int
        Process id of the command (its descendants are not listed).
    """

    wall: float
    cpu: float
    peak_rss: int
    returncode: int
    stdout: str
    lines: list
    other_cores: float
    pid: int

    @property
    def stderr(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def rate(self, count: int) -> float:
        """``count`` per second of wall time (tracks/s)."""
        return count / self.wall


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent so far (every process), from ``/proc/stat``."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(value) for value in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def busy_cores(seconds: float = 2.0) -> float:
    """Mean number of cores busy on the whole machine over the next ``seconds``."""
    before = busy_cpu_seconds()
    time.sleep(seconds)
    return (busy_cpu_seconds() - before) / seconds


class TreeWatcher:
    """Polls a process and its descendants: the peak of their summed RSS and each one's CPU time."""

    def __init__(self, pid: int):
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(pid)
        self.peak = 0
        self.cpu: dict = {}

    def sample(self) -> None:
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except self.psutil.Error:
            return
        total = 0
        for process in processes:
            try:
                with process.oneshot():
                    total += process.memory_info().rss
                    times = process.cpu_times()
                    self.cpu[process.pid] = times.user + times.system
            except self.psutil.Error:  # it ended between the listing and the reading
                continue
        self.peak = max(self.peak, total)


def _collect(stream, sink: list, start: float) -> None:
    for line in stream:
        sink.append((time.perf_counter() - start, line.rstrip("\n")))


def run(command: list, env: dict | None = None, cwd: Path | None = None) -> Measured:
    """Run ``command`` to its end, measuring it.

    Parameters
    ----------
    command : list
        The program and its arguments (paths are turned into strings).
    env : dict, optional
        The whole environment of the command (default: this process's), less
        ``PYTHONDONTWRITEBYTECODE``: commands run as an installed package
        does, from bytecode cached on first use (pip compiles it at install),
        not compiling their modules on every run.
    cwd : Path, optional

    Returns
    -------
    Measured

    Notes
    -----
    CPU time is the larger of two counts that each miss something: the
    polled times of every process seen in the tree (a process that lived
    less than a poll is missed) and the resource usage of reaped
    descendants (a worker its parent never waited for is missed).
    """
    env = {name: value for name, value in (os.environ if env is None else env).items()
           if name != "PYTHONDONTWRITEBYTECODE"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before = busy_cpu_seconds()
    start = time.perf_counter()
    process = subprocess.Popen([str(part) for part in command], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=env, cwd=cwd, text=True, errors="replace", bufsize=1)
    out_lines, err_lines, ended = [], [], {}
    readers = [threading.Thread(target=_collect, args=(process.stdout, out_lines, start), daemon=True),
               threading.Thread(target=_collect, args=(process.stderr, err_lines, start), daemon=True)]
    for reader in readers:
        reader.start()
    done = threading.Event()

    def wait():
        process.wait()
        ended["wall"] = time.perf_counter() - start
        done.set()

    threading.Thread(target=wait, daemon=True).start()
    watcher = TreeWatcher(process.pid)
    while not done.wait(POLL_SECONDS):
        watcher.sample()
    for reader in readers:
        reader.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = busy_cpu_seconds() - busy_before
    reaped = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu = max(reaped, sum(watcher.cpu.values()))
    wall = ended["wall"]
    return Measured(wall, cpu, watcher.peak or after.ru_maxrss * 1024, process.returncode,
                    "\n".join(line for _, line in out_lines), err_lines, max(0.0, (busy - cpu) / wall), process.pid)


def median_run(runs: list) -> Measured:
    """The run of median wall time (the lower middle one of an even count)."""
    return sorted(runs, key=lambda run: run.wall)[(len(runs) - 1) // 2]


def median_wall(runs: list) -> float:
    return statistics.median(run.wall for run in runs)


# ---------------------------------------------------------------- modules

_PROBE = '''"""Written by bench/measure.py: records, at exit, which modules this process imported."""
import atexit
import json
import os
import sys


def _record():
    folder = os.environ.get("CNNGENRE_BENCH_PROBE")
    if folder:
        record = {"pid": os.getpid(), "ppid": os.getppid(), "argv": sys.argv[:3], "modules": sorted(sys.modules)}
        with open(os.path.join(folder, f"{os.getpid()}.json"), "w") as handle:
            json.dump(record, handle)


atexit.register(_record)
'''


def module_probe(folder: Path) -> dict:
    """Make ``folder`` a probe; the environment variables (:func:`probe_env`) that turn it on.

    A ``sitecustomize`` module in ``folder`` (put first on ``PYTHONPATH``;
    no other ``sitecustomize`` is installed in the venv) writes, at exit,
    ``<folder>/records/<pid>.json`` with the names in ``sys.modules``. A
    process that ends by a signal or ``os._exit`` writes nothing.
    """
    (folder / "records").mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_PROBE)
    return probe_env(folder)


def probe_env(folder: Path) -> dict:
    """Environment variables under which every Python process records its modules in probe ``folder``."""
    return {"PYTHONPATH": str(folder), "CNNGENRE_BENCH_PROBE": str(folder / "records")}


def imported(folder: Path, pid: int, module: str) -> bool | None:
    """Whether the process ``pid`` probed by :func:`module_probe` had imported ``module``; None if unrecorded."""
    record = folder / "records" / f"{pid}.json"
    if not record.exists():
        return None
    return module in json.loads(record.read_text())["modules"]


# ------------------------------------------------------------------ load

#: 1-minute load averages seen by :func:`log`, for the report.
LOADS: list = []


def log(message: str) -> None:
    """Progress on stderr with the load average (kept in :data:`LOADS`)."""
    load = os.getloadavg()[0]
    LOADS.append(load)
    print(f"[{time.strftime('%H:%M:%S')} load {load:.2f}] {message}", file=sys.stderr, flush=True)


def load_summary() -> str:
    """The load averages seen during the run, in one line."""
    if not LOADS:
        return "load average not sampled"
    return (f"load average (1 min) {LOADS[0]:.2f} at the start, {LOADS[-1]:.2f} at the end, "
            f"highest {max(LOADS):.2f}")


def quiet_enough(busy: float, cores: int | None = None) -> str | None:
    """A warning when other work keeps more than a quarter of a core busy, else None."""
    cores = cores or os.cpu_count() or 1
    if busy <= 0.25:
        return None
    return (f"the machine was not idle: {busy:.2f} of {cores} cores busy before the run started; "
            "timings are only comparable with those of an idle machine")
