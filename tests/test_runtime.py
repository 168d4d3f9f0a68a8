"""Where work runs: a dying worker costs one item, workers die with their parent and stop
when the caller does (issue: workers). Real processes and real signals throughout."""

import functools
import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
from processes import processes_with

import genre_cnn_core
from genre_cnn_core import FeatureCache, RunConfig, runtime
from genre_cnn_core.backbones.scratch import LogMelExtractor
from genre_cnn_core.extract import extract_features
from genre_cnn_core.features import FeatureSettings

from synth import synth_track, write_audio

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
two_cores = pytest.mark.skipif(runtime.available_cores() < 2, reason="two workers need two cores")

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(genre_cnn_core.__file__)))


def upper_or_die(batch, protected):
    """Upper-cased items; a worker (any process but ``protected``) SIGKILLs itself on a poison item."""
    for item in batch:
        if "poison" in item and os.getpid() != protected:
            os.kill(os.getpid(), signal.SIGKILL)
    return [item.upper() for item in batch]


def die_as_told(batch, protected):
    """A worker process ends itself as its item says: by a signal, or by a C-level exit."""
    for item in batch:
        if os.getpid() != protected:
            if item.startswith("signal"):
                os.kill(os.getpid(), int(item[len("signal"):]))
            elif item.startswith("exit"):
                os._exit(int(item[len("exit"):]))
    return batch


def slow_upper(batch):
    time.sleep(0.3 * len(batch))
    return [str(item).upper() for item in batch]


def sleep_for(batch):
    time.sleep(sum(batch))
    return batch


def raise_on_bad(batch):
    if "bad" in batch:
        raise ValueError("a bad item")
    return batch


def process_id(batch):
    return os.getpid()


class PoisonExtractor(LogMelExtractor):
    """Log-mels, except that a worker decoding a file named poison dies as in a crashing C decoder."""

    def __init__(self, settings, protected):
        super().__init__(settings)
        self.protected = protected

    def compute(self, paths):
        for path in paths:
            if "poison" in os.fsdecode(path) and os.getpid() != self.protected:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().compute(paths)


def _alive(pid):
    """True for a running process (a zombie has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _worker_children():
    """Live loky worker processes of this process."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat, open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                ppid = int(stat.read().rpartition(")")[2].split()[1])
                command = cmdline.read()
        except (OSError, ValueError):
            continue
        if ppid == os.getpid() and b"popen_loky_posix" in command and _alive(pid):
            found.append(int(pid))
    return found


def _wait_until(condition, seconds):
    """Poll ``condition`` until it holds or ``seconds`` pass; its last value."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


# ------------------------------------------------------------ crash isolation


@two_cores
@pytest.mark.parametrize("culprits", [(0,), (19,), (4, 5), (2, 16)],
                         ids=["first", "last", "two in one batch", "two in two batches"])
def test_a_worker_killed_by_an_item_costs_that_item_only(culprits):
    items = [f"poison{i}" if i in culprits else f"item{i}" for i in range(20)]
    batches = [items[i:i + 3] for i in range(0, len(items), 3)]
    results, errors = {}, {}
    function = functools.partial(upper_or_die, protected=os.getpid())
    for batch, result, error in runtime.map_batches(function, batches, n_jobs=2):
        if error is None:
            for item, value in zip(batch, result):
                assert item not in results and item not in errors
                results[item] = value
        else:
            assert len(batch) == 1 and result is None and isinstance(error, runtime.WorkerDied)
            errors[batch[0]] = error
    assert sorted(errors) == sorted(f"poison{i}" for i in culprits)
    assert all(e.cause == "killed by signal 9 (SIGKILL)" for e in errors.values())
    assert results == {item: item.upper() for item in items if "poison" not in item}


@two_cores
def test_the_error_names_how_the_worker_died():
    items = ["a", f"signal{int(signal.SIGSEGV)}", "b", "exit3", "c", f"signal{int(signal.SIGABRT)}", "d"]
    function = functools.partial(die_as_told, protected=os.getpid())
    errors = {b[0]: e.cause for b, _, e in runtime.map_batches(function, [items[:4], items[4:]], n_jobs=2) if e}
    assert errors == {f"signal{int(signal.SIGSEGV)}": f"killed by signal {int(signal.SIGSEGV)} (SIGSEGV)",
                      "exit3": "exited with code 3",
                      f"signal{int(signal.SIGABRT)}": f"killed by signal {int(signal.SIGABRT)} (SIGABRT)"}
    assert str(runtime.WorkerDied("exited with code 3")) == "the worker process died, exited with code 3"


@two_cores
def test_without_a_crash_each_batch_runs_once_whole():
    items = [f"item{i}" for i in range(20)]
    batches = [items[i:i + 3] for i in range(0, len(items), 3)]
    function = functools.partial(upper_or_die, protected=os.getpid())
    seen = [(tuple(batch), tuple(result), error) for batch, result, error in runtime.map_batches(function, batches, 2)]
    assert sorted(seen) == sorted((tuple(b), tuple(i.upper() for i in b), None) for b in batches)


@two_cores
def test_an_exception_in_a_worker_reaches_the_caller_and_blames_no_one():
    with pytest.raises(ValueError, match="a bad item"):
        list(runtime.map_batches(raise_on_bad, [["a"], ["bad"], ["c"], ["d"]], n_jobs=2))
    assert sorted(b for b, _, _ in runtime.map_batches(raise_on_bad, [["a"], ["c"]], n_jobs=2)) == [["a"], ["c"]]


@two_cores
def test_extract_features_reports_the_poison_file_and_computes_the_others(tmp_path):
    paths = []
    for i in range(8):
        path = tmp_path / (f"poison{i}.wav" if i == 5 else f"track{i}.wav")
        write_audio(path, synth_track("techno", i, seconds=2.0), 22050)
        paths.append(str(path))
    extractor = PoisonExtractor(FeatureSettings(excerpt_seconds=1.0, n_excerpts=1), protected=os.getpid())
    cache = FeatureCache(str(tmp_path / "cache"))
    rows = list(extract_features(paths, extractor, RunConfig(cache, n_jobs=2), batch_size=3))
    assert sorted(index for index, _, _ in rows) == list(range(8))
    for index, features, error in rows:
        if index == 5:
            assert features is None
            assert error == ("the worker process died while decoding this file, killed by signal 9 (SIGKILL): "
                             "out of memory, or a crashing decoder; skipped")
        else:
            assert error is None and isinstance(features, np.ndarray) and features.shape[0] == 1
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 7  # the workers stored the others' features


# ------------------------------------------------------------ workers end with their parent

PARENT = """
import sys
from genre_cnn_core import runtime
from test_runtime import slow_upper

for batch, result, error in runtime.map_batches(slow_upper, [[i] for i in range(60)], n_jobs=2):
    print(batch[0], flush=True)
"""


@linux_only
@two_cores
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_workers_end_soon_after_their_parent_dies(signum, tmp_path):
    mark = uuid.uuid4().hex
    env = {**os.environ, "CNNGENRE_TEST_MARK": mark,
           "PYTHONPATH": os.pathsep.join([ROOT, TESTS, os.environ.get("PYTHONPATH", "")])}
    # The orphaned resource trackers warn about what they clean up: kept out of the test's output.
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        parent = subprocess.Popen([sys.executable, "-c", PARENT], env=env, stdout=subprocess.PIPE, stderr=stderr,
                                  text=True)
    try:
        assert parent.stdout.readline().strip().isdigit(), log.read_text()[-2000:]  # the workers are running
        assert len(processes_with(mark)) >= 3  # the parent and its two workers, at least
        parent.send_signal(signum)
        parent.wait(timeout=30)
        assert parent.returncode == -signum
        # Their idle timeout is minutes: ending within seconds is the parent watch.
        assert _wait_until(lambda: not processes_with(mark), 10) is True, processes_with(mark)
    finally:
        parent.kill()
        parent.wait()
        for pid in processes_with(mark):
            os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------ stopping early


@linux_only
@two_cores
@pytest.mark.parametrize("stop", ["close", "exception", "KeyboardInterrupt"])
def test_a_caller_that_stops_early_ends_the_workers(stop):
    workers = []

    def consume():
        # Minutes of work after the first batch: only a kill ends these workers within seconds.
        results = runtime.map_batches(sleep_for, [[0]] + [[120]] * 10, n_jobs=2)
        for _ in results:
            workers.extend(_worker_children())
            if stop == "close":
                results.close()
                return
            raise KeyboardInterrupt if stop == "KeyboardInterrupt" else RuntimeError("the caller failed")

    try:
        consume()
    except (KeyboardInterrupt, RuntimeError):
        pass
    assert len(workers) == 2
    assert _wait_until(lambda: not any(_alive(pid) for pid in workers), 5) is True
    # The next call gets a fresh pool.
    assert sorted(b for b, _, _ in runtime.map_batches(slow_upper, [["a"], ["b"]], n_jobs=2)) == [["a"], ["b"]]


# ------------------------------------------------------------ backends and worker counts


@pytest.mark.parametrize("backend", ["inprocess", "threading", "loky"])
def test_every_local_backend_yields_every_batch_once(backend):
    batches = [[f"item{i}", f"more{i}"] for i in range(7)]
    function = functools.partial(upper_or_die, protected=os.getpid())
    got = sorted((tuple(b), tuple(r)) for b, r, e in runtime.map_batches(function, batches, 2, backend) if not e)
    assert got == sorted((tuple(b), tuple(i.upper() for i in b)) for b in batches)


def test_one_job_runs_in_this_process():
    pids = {r for _, r, _ in runtime.map_batches(process_id, [[1], [2], [3]], n_jobs=1, backend="loky")}
    assert pids == {os.getpid()}


def test_worker_count():
    assert runtime.worker_count(16, 100, cores=2) == 2
    assert runtime.worker_count(0, 100, cores=4) == 4
    assert runtime.worker_count(None, 100, cores=3) == 3
    assert runtime.worker_count(3, 100, cores=8) == 3
    assert runtime.worker_count(8, 2, cores=8) == 2
    assert runtime.worker_count(2, 0, cores=8) == 1
    assert 1 <= runtime.worker_count(0, 1000) == runtime.available_cores()
    with pytest.raises(ValueError, match="n_jobs must be 0 .* or a positive number of workers, not -1"):
        runtime.worker_count(-1, 10)


def test_bad_arguments_are_refused_before_any_work():
    with pytest.raises(ValueError, match="n_jobs"):
        runtime.map_batches(slow_upper, [[1]], n_jobs=-2)
    with pytest.raises(ValueError, match="unknown backend 'spark'; one of inprocess, threading, loky, dask"):
        runtime.map_batches(slow_upper, [[1]], backend="spark")
