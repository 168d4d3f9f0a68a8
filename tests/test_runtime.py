"""Where work runs: a dying worker costs one item, workers die with their parent and stop
when the caller does (issue: workers). Real processes and real signals throughout."""

import contextlib
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
    assert results == {item: item.upper() for item in items if "poison" not in item}


@two_cores
def test_every_way_a_worker_dies_costs_that_item_only():
    items = ["a", f"signal{int(signal.SIGSEGV)}", "b", "exit3", "c", f"signal{int(signal.SIGABRT)}", "d"]
    function = functools.partial(die_as_told, protected=os.getpid())
    seen = list(runtime.map_batches(function, [items[:4], items[4:]], n_jobs=2))
    errors = {b[0] for b, _, e in seen if e}
    assert errors == {f"signal{int(signal.SIGSEGV)}", "exit3", f"signal{int(signal.SIGABRT)}"}
    assert all(isinstance(e, runtime.WorkerDied) for _, _, e in seen if e)
    assert sorted(i for b, r, e in seen if not e for i in r) == ["a", "b", "c", "d"]


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
            assert error == ("the worker process died while decoding this file: out of memory, or a crashing "
                             "decoder; skipped")
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


# ------------------------------------------------------------ a bound on the seconds one item may cost


@pytest.mark.parametrize("backend", ["inprocess", "loky"])
def test_an_item_over_its_time_bound_fails_alone_and_the_others_get_their_results(backend):
    if backend == "loky" and runtime.available_cores() < 2:
        pytest.skip("two workers need two cores")
    # Items are seconds to sleep; the batch holding the 600-s item runs over its bound, then each of its
    # items runs alone, with its own bound.
    batches = [[0, 600, 0], [0], [0, 0]]
    seen = list(runtime.map_batches(sleep_for, batches, n_jobs=2 if backend == "loky" else 1, backend=backend,
                                    item_seconds=2))
    failed = [(b, e) for b, _, e in seen if e]
    assert [b for b, _ in failed] == [[600]]
    assert isinstance(failed[0][1], runtime.TimeLimitExceeded) and str(failed[0][1]) == "took longer than 2 s"
    assert sorted(i for b, r, e in seen if not e for i in r) == [0] * 5


def test_the_time_bound_needs_the_main_thread_and_restores_the_alarm_handler():
    import threading

    before = signal.getsignal(signal.SIGALRM)
    with pytest.raises(runtime.TimeLimitExceeded):
        with runtime.time_limit(0.5):
            time.sleep(30)
    assert signal.getsignal(signal.SIGALRM) is before and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    finished = []

    def elsewhere():
        with runtime.time_limit(0.1):  # no timer signal off the main thread: unbounded, and no error
            time.sleep(0.3)
        finished.append(True)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert finished == [True]


def test_a_file_over_the_time_bound_fails_with_one_line_naming_the_bound(tmp_path):
    paths = []
    for name in ("slow.wav", "a.wav", "b.wav"):
        write_audio(tmp_path / name, synth_track("techno", len(paths), seconds=2.0), 22050)
        paths.append(str(tmp_path / name))
    extractor = HeldExtractor(FeatureSettings(excerpt_seconds=1.0, n_excerpts=1), str(tmp_path / "never"))
    # A bound far above what the others need, even on a busy machine.
    rows = {i: (f, e) for i, f, e in extract_features(paths, extractor, RunConfig(file_seconds=20), batch_size=1)}
    assert rows[0] == (None, "decoding and analysing this file took longer than 20 s (the bound per file); skipped")
    assert all(rows[i][1] is None and rows[i][0] is not None for i in (1, 2))


# ------------------------------------------------------------ the same audio under several items


def test_the_same_audio_under_several_paths_is_decoded_once(tmp_path, decoded_paths):
    first, second = tmp_path / "first.wav", tmp_path / "second.flac"
    write_audio(first, synth_track("techno", 1, seconds=2.0), 22050)
    write_audio(second, synth_track("ambient", 2, seconds=2.0), 22050)
    linked, copied = tmp_path / "linked.wav", tmp_path / "copied.wav"
    os.link(first, linked)
    copied.write_bytes(first.read_bytes())
    paths = [str(first), str(linked), str(second), str(copied), str(first), str(tmp_path / "missing.wav")]
    extractor = LogMelExtractor(FeatureSettings(excerpt_seconds=1.0, n_excerpts=1))
    rows = {i: (f, e) for i, f, e in extract_features(paths, extractor, RunConfig(FeatureCache(str(tmp_path / "c"))))}
    missing = paths[5]  # tried, and reported
    assert sorted(decoded_paths) == sorted([str(first), str(second), missing])  # the copy has the same audio id
    assert sorted(rows) == list(range(6)) and rows[5] == (None, "file not found")
    for i in (1, 3, 4):
        np.testing.assert_array_equal(rows[i][0], rows[0][0])
    decoded_paths.clear()
    # Without the cache no audio id is read: hard links and repeated paths still share, a copy does not.
    rows = {i: (f, e) for i, f, e in extract_features(paths, extractor, RunConfig())}
    assert sorted(decoded_paths) == sorted([str(first), str(second), str(copied), missing])
    assert all(rows[i][1] is None for i in range(5))


# ------------------------------------------------------------ results flow while a slow file is worked on


class HeldExtractor(LogMelExtractor):
    """Log-mels; a worker decoding a file named slow waits until ``release`` exists (a huge file, say)."""

    def __init__(self, settings, release):
        super().__init__(settings)
        self.release = release

    def compute(self, paths):
        if any("slow" in os.fsdecode(path) for path in paths):
            while not os.path.exists(self.release):
                time.sleep(0.05)
        return super().compute(paths)


@two_cores
def test_predictions_reach_the_caller_while_a_slow_file_is_worked_on(scratch_model, library_files, tmp_path,
                                                                     monkeypatch):
    from genre_cnn_core import Prediction, predict_files
    from genre_cnn_core.backbones.scratch import ScratchBackbone

    release = tmp_path / "release"
    monkeypatch.setattr(ScratchBackbone, "extractor",
                        lambda self, settings, device="cpu": HeldExtractor(settings, str(release)))
    paths = [str(tmp_path / "slow.wav")] + [str(p) for p, _ in library_files[:7]]
    os.link(library_files[8][0], paths[0])
    seen = []

    def on_wait():
        if len(seen) >= 4:  # the batch without the slow file is predicted and handed over: let it finish
            release.touch()

    # Without predictions handed over while waiting, the slow file is held until its time bound (a failure).
    for result in predict_files(scratch_model, paths, run=RunConfig(n_jobs=2, file_seconds=100),
                                on_wait=on_wait):
        seen.append(result)
    assert all(isinstance(r, Prediction) for r in seen), [getattr(r, "reason", "") for r in seen]
    assert sorted(r.index for r in seen) == list(range(8)) and 0 not in [r.index for r in seen[:4]]


class StoredHeldExtractor(LogMelExtractor):
    """Log-mels; a worker decoding a file named slow waits until the library holds ``stored`` predictions."""

    def __init__(self, settings, database, stored):
        super().__init__(settings)
        self.database, self.stored = database, stored

    def compute(self, paths):
        import sqlite3

        if any("slow" in os.fsdecode(path) for path in paths):
            while True:
                with (contextlib.suppress(sqlite3.OperationalError),
                      contextlib.closing(sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)) as db):
                    count = db.execute("SELECT count(*) FROM item_attributes WHERE key = 'cnn_model'").fetchone()
                    if count[0] >= self.stored:
                        break
                time.sleep(0.1)
        return super().compute(paths)


@two_cores
def test_the_plugin_stores_predictions_while_a_slow_file_is_worked_on(scratch_model_path, library_files, tmp_path,
                                                                      monkeypatch, capsys):
    import shutil

    from beets.library import Item
    from beets.test.helper import PluginTestHelper

    from genre_cnn_core.backbones.scratch import ScratchBackbone

    class Helper(PluginTestHelper):
        plugin = "cnngenre"
        db_on_disk = True

    helper = Helper()
    helper.setup_beets()
    helper.load_plugins()
    try:
        helper.config["import"]["write"] = False
        helper.config["cnngenre"]["model"] = scratch_model_path
        helper.config["cnngenre"]["file_seconds"] = 100
        database = helper.config["library"].as_filename()
        monkeypatch.setattr(ScratchBackbone, "extractor",
                            lambda self, settings, device="cpu": StoredHeldExtractor(settings, database, 4))
        for i, (path, _) in enumerate(library_files[:8]):
            target = tmp_path / (f"slow{path.suffix}" if i == 0 else path.name)
            shutil.copy(path, target)
            helper.lib.add(Item.from_path(str(target)))
        # Stored only at the end (or every 200 items), the slow file would wait for its bound and fail.
        helper.run_command("cnngenre", "-j", "2", "--no-cache")
        assert "predicted 8, skipped 0" in capsys.readouterr().out
    finally:
        helper.unload_plugins()
        helper.teardown_beets()
