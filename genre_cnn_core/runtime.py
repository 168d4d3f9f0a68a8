"""Where work runs: this process, threads, worker processes or a Dask cluster.

:class:`RunConfig` says how a run's work runs (cache, workers, device,
backend, time bound), once. :func:`map_batches` is the one entry point of
the executors: it hands batches of items to an executor of :data:`BACKENDS`
and yields each batch's result as it completes, so the caller can store
results while the run goes on.

The ``loky`` executor runs batches in loky's reusable worker processes
(``get_reusable_executor``: kept warm between calls, started with this
module's thread limits and parent watch). What it adds, because neither
loky nor joblib does it: crash isolation, so that a worker killed by the
out-of-memory killer, or by a decoder that crashes in C, costs the one item
that killed it, never the run; a bound on the seconds one item may cost;
and workers that end soon after their parent does, however the parent dies.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, wait
from typing import Callable, Iterable, Iterator, Sequence

from .devices import available_cores, compute_threads, resolve_device

#: Seconds an idle worker process waits for work before it exits (joblib's
#: default); the pool is kept between calls so that each call does not pay
#: for starting workers and loading networks again.
IDLE_WORKER_SECONDS = 300

#: How often a worker process checks that its parent is still alive.
PARENT_POLL_SECONDS = 0.5

#: Thread-pool sizes of native libraries, limited in worker processes as
#: joblib does, so that workers do not fight over the cores.
THREAD_LIMIT_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                          "VECLIB_MAXIMUM_THREADS", "NUMBA_NUM_THREADS", "NUMEXPR_NUM_THREADS")

#: The most seconds one file may cost by default (:attr:`RunConfig.file_seconds`).
FILE_SECONDS = 120.0

#: A worker still busy this many seconds past its batch's bound (stuck in C code that no signal
#: reaches) is ended; its batch is then isolated as a crash.
HARD_BOUND_GRACE_SECONDS = 30.0


def worker_count(n_jobs: int | None, n_tasks: int, cores: int | None = None) -> int:
    """How many workers to start for ``n_tasks`` tasks.

    Parameters
    ----------
    n_jobs : int or None
        Workers asked for: 0 or None means one per core; a positive number
        is capped at the cores, since more workers than cores only add
        memory and contention.
    n_tasks : int
        Tasks to run; no more workers than tasks are started.
    cores : int, optional
        Cores available; by default :func:`~genre_cnn_core.devices.available_cores`.

    Returns
    -------
    int
        At least 1.

    Raises
    ------
    ValueError
        If ``n_jobs`` is negative.
    """
    if n_jobs is not None and n_jobs < 0:
        raise ValueError(f"n_jobs must be 0 (one worker per core) or a positive number of workers, not {n_jobs}")
    cores = max(1, cores or available_cores())
    wanted = cores if not n_jobs else min(n_jobs, cores)
    return max(1, min(wanted, n_tasks))


def dask_client(scheduler: str | None = None):
    """Connect to a Dask scheduler (``tcp://host:8786`` or a scheduler file).

    Returns the ``distributed.Client``; it becomes the default client, which
    joblib's ``dask`` backend uses. Needs the ``dask`` extra.
    """
    try:
        from distributed import Client
    except ImportError:
        raise RuntimeError("the dask backend needs Dask: pip install 'beets-cnngenre[dask]'") from None
    if scheduler and os.path.exists(scheduler):
        return Client(scheduler_file=scheduler)
    return Client(scheduler) if scheduler else Client()


# ------------------------------------------------------------ run configuration


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """How work runs: the same for training, evaluation, judging and prediction.

    Made once (the plugin makes it from its settings) and handed to
    :func:`~genre_cnn_core.pipeline.train_on_files`,
    :func:`~genre_cnn_core.pipeline.evaluate_files`,
    :func:`~genre_cnn_core.pipeline.judge_files` and
    :func:`~genre_cnn_core.pipeline.predict_files`; the defaults suit a
    notebook: no cache, this process, a GPU if PyTorch sees one, no progress bar.

    Attributes
    ----------
    cache : FeatureCache or None
        Where features are reused and stored (:class:`~genre_cnn_core.cache.FeatureCache`); None: nowhere.
    n_jobs : int
        Worker processes (see :func:`worker_count`): 0 is one per core,
        1 computes in this process.
    device : str
        Where the networks run. ``"auto"`` and the CUDA names are resolved
        (:func:`resolve_device`) when the configuration is made, once.
    progress : bool
        A progress bar on stderr.
    backend : str
        Where extraction runs, one of :data:`BACKENDS` (:func:`map_batches`);
        ``"dask"`` uses the active ``distributed.Client`` (:func:`dask_client`).
    file_seconds : float or None
        The most wall-clock seconds one file may cost in a worker (decoding
        and features); a file over it fails with that reason and the run
        goes on. None: no bound. Enforced where a signal can reach the
        work: worker processes and this process's main thread, not the
        ``threading`` and ``dask`` backends.

    Raises
    ------
    ValueError
        An unknown device or backend, a negative ``n_jobs`` or ``file_seconds``.
    RuntimeError
        A CUDA device asked for that PyTorch does not see.
    """

    cache: object = None
    n_jobs: int = 1
    device: str = "auto"
    progress: bool = False
    backend: str = "loky"
    file_seconds: float | None = FILE_SECONDS

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; one of {', '.join(BACKENDS)}")
        if self.n_jobs is not None and self.n_jobs < 0:
            raise ValueError(f"n_jobs must be 0 (one worker per core) or a positive number of workers, "
                             f"not {self.n_jobs}")
        if self.file_seconds is not None and not self.file_seconds > 0:
            raise ValueError(f"file_seconds must be a positive number of seconds or None, not {self.file_seconds}")
        object.__setattr__(self, "device", resolve_device(self.device))


# ------------------------------------------------------------ executors


class ItemFailed(BaseException):
    """Why the single item of a yielded batch has no result (see :func:`map_batches`).

    A BaseException, as KeyboardInterrupt is: :class:`TimeLimitExceeded` interrupts the work from
    outside, and the work's own ``except Exception`` must not catch it and carry on.
    """


class WorkerDied(ItemFailed):
    """The worker process running the item died (a signal, or an exit without a result)."""

    def __init__(self):
        super().__init__("the worker process died")


class TimeLimitExceeded(ItemFailed):
    """The work on a batch ran past its bound: ``seconds`` for each of its items.

    Raised inside the work by :func:`time_limit`; it is picklable, so it
    reaches the parent from a worker process like any exception.
    """

    def __init__(self, seconds: float):
        super().__init__(seconds)
        self.seconds = seconds

    def __str__(self):
        return f"took longer than {self.seconds:g} s"


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise :class:`TimeLimitExceeded` in the block once it has run ``seconds`` of wall-clock time.

    A timer signal (SIGALRM) interrupts Python code and blocking system
    calls; it exists only in a process's main thread on POSIX, so elsewhere
    (threads, Windows) and with ``seconds`` None the block runs unbounded.
    """
    if not seconds or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum, frame):
        raise TimeLimitExceeded(seconds)

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Executor:
    """Runs a function on batches and yields ``(batch, result, error)`` as batches complete.

    ``error`` is None, or an :class:`ItemFailed` for a single-item batch;
    other exceptions raised by the function propagate to the caller. With
    ``waits``, None is yielded each time the executor is about to wait for
    work in progress with nothing to hand over.
    """

    NAME = ""

    def __init__(self, workers: int, item_seconds: float | None = None, waits: bool = False):
        self.workers, self.item_seconds, self.waits = workers, item_seconds, waits

    def map(self, function: Callable, batches: Sequence[list]) -> Iterator:
        raise NotImplementedError


class InProcessExecutor(Executor):
    """One batch after another in this process, on one torch thread.

    One thread even when more cores are idle: on a busy machine two torch
    threads spin-waiting for each other made musicnn many times slower, and
    on an idle one a single thread costs little.
    """

    NAME = "inprocess"

    def map(self, function, batches):
        todo = collections.deque(batches)
        with compute_threads(1):
            while todo:
                batch = todo.popleft()
                if self.waits:
                    yield None
                try:
                    with time_limit(self.item_seconds and self.item_seconds * len(batch)):
                        result = function(batch)
                except TimeLimitExceeded as error:
                    if len(batch) == 1:
                        yield batch, None, error
                    else:
                        todo.extendleft([item] for item in reversed(batch))
                    continue
                yield batch, result, None


class ThreadingExecutor(Executor):
    """Threads of this process: no start-up cost, but they share its interpreter lock (and no time bound)."""

    NAME = "threading"

    def map(self, function, batches):
        from concurrent.futures import ThreadPoolExecutor

        todo, running = collections.deque(batches), {}
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="cnngenre")
        try:
            with compute_threads(1):  # the threads share this process's torch
                while todo or running:
                    while todo and len(running) < 2 * self.workers:
                        future = pool.submit(function, todo[0])
                        running[future] = todo.popleft()
                    if self.waits and not wait(running, timeout=0).done:
                        yield None
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        batch = running.pop(future)
                        yield batch, future.result(), None
        finally:
            # Running threads cannot be stopped; nothing waits for them.
            pool.shutdown(wait=False, cancel_futures=True)


class LokyExecutor(Executor):
    """Worker processes (loky's reusable executor) that split the cores, with crash isolation.

    When a worker dies, the batches that were in flight are suspects: each
    is rerun alone, and one that kills its worker again is split in halves
    until the single item that does it is found; that item is reported
    with a :class:`WorkerDied`, and every other item gets its result. The
    other batches run on a fresh pool as before, so a run without crashes
    does no serial work. A batch over its time bound is rerun item by item,
    each with its own bound; an item over it is reported with a
    :class:`TimeLimitExceeded`.
    """

    NAME = "loky"

    def map(self, function, batches):
        from joblib.externals.loky.process_executor import BrokenProcessPool, TerminatedWorkerError

        threads = max(1, available_cores() // self.workers)
        task = functools.partial(_in_worker, function, threads, self.item_seconds)
        # Up to two batches per worker in flight keeps workers busy between
        # results, and bounds the suspects when one dies.
        window = 2 * self.workers
        todo, suspects, running = collections.deque(batches), collections.deque(), {}
        pool = _pool(self.workers, threads)
        completed = False
        try:
            while todo or suspects or running:
                alone, broken = None, False
                try:
                    if suspects:
                        if not running:
                            alone = pool.submit(task, suspects[0])
                            running[alone] = suspects.popleft()
                    else:
                        while todo and len(running) < window:
                            future = pool.submit(task, todo[0])  # taken off the queue once submitted
                            running[future] = todo.popleft()
                except BrokenProcessPool:  # it broke while idle: the batch is still queued
                    broken = True
                if self.waits and not broken and not wait(running, timeout=0).done:
                    yield None
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                if broken or any(isinstance(f.exception(), TerminatedWorkerError) for f in done):
                    broken = True
                    # Every unfinished batch fails with the pool; some may have finished first.
                    done, _ = wait(running)
                for future in done:
                    batch = running.pop(future)
                    error = future.exception()
                    if error is None:
                        yield batch, future.result(), None
                    elif isinstance(error, TimeLimitExceeded):
                        if len(batch) == 1:
                            yield batch, None, error
                        else:
                            todo.extendleft([item] for item in reversed(batch))
                    elif not isinstance(error, TerminatedWorkerError):
                        raise error
                    elif future is not alone:
                        suspects.append(batch)
                    elif len(batch) == 1:
                        yield batch, None, WorkerDied()
                    else:
                        half = len(batch) // 2
                        suspects.extendleft([batch[half:], batch[:half]])
                if broken:  # loky's reusable executor replaces a broken pool
                    pool = _pool(self.workers, threads)
            completed = True
        finally:
            if not completed:  # the caller stopped early (exception, Ctrl-C, close): stop the work now
                pool.shutdown(wait=False, kill_workers=True)


class DaskExecutor(Executor):
    """The Dask cluster of the active ``distributed.Client``, through joblib's ``dask`` backend.

    Dask workers bring their own processes and threads: ``workers`` is not
    used, a worker's death is handled by Dask itself, and no time bound applies.
    """

    NAME = "dask"

    def map(self, function, batches):
        import joblib

        task = functools.partial(_with_threads, function, 1)
        # parallel_config, not Parallel(backend=...): it registers "dask" on first use.
        with joblib.parallel_config(backend="dask"):
            results = joblib.Parallel(n_jobs=-1, return_as="generator_unordered")(
                joblib.delayed(_numbered)(task, number, batch) for number, batch in enumerate(batches))
        with contextlib.closing(results):
            for number, result in results:
                yield batches[number], result, None


BACKENDS = {b.NAME: b for b in (InProcessExecutor, ThreadingExecutor, LokyExecutor, DaskExecutor)}


def map_batches(function: Callable[[list], object], batches: Iterable[list], n_jobs: int | None = 1,
                backend: str = "loky", item_seconds: float | None = None, waits: bool = False) -> Iterator:
    """Run ``function`` on each batch, in parallel, yielding results as they complete.

    Parameters
    ----------
    function : callable
        Takes one batch (a list) and returns its result. It must also accept
        any part of a batch: the ``loky`` backend reruns parts of a batch
        whose worker died or that ran over its time bound. With ``loky`` and
        ``dask`` it must be picklable (cloudpickle).
    batches : iterable of list
    n_jobs : int or None
        Workers (see :func:`worker_count`); with one, ``loky`` and
        ``threading`` run in this process.
    backend : {"loky", "threading", "dask", "inprocess"}
    item_seconds : float, optional
        The most wall-clock seconds one item may cost (a batch gets that
        many per item; see :func:`time_limit` for where it holds).
    waits : bool
        Also yield None each time the work in progress is about to be
        waited for with no result at hand: the moment for the caller to
        store what it has.

    Yields
    ------
    tuple
        ``(batch, result, error)`` in completion order: ``error`` is None,
        or an :class:`ItemFailed` (a :class:`WorkerDied` or a
        :class:`TimeLimitExceeded`; then ``result`` is None and ``batch`` is
        the single item it names). Every item of every batch is in exactly
        one yielded batch.

    Raises
    ------
    ValueError
        For an unknown backend or a negative ``n_jobs``. Exceptions raised
        by ``function`` propagate; the workers are then stopped, as they are
        when the caller stops iterating early.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; one of {', '.join(BACKENDS)}")
    batches = [list(batch) for batch in batches]
    workers = worker_count(n_jobs, len(batches))
    if workers == 1 and backend in ("loky", "threading"):
        backend = InProcessExecutor.NAME
    return BACKENDS[backend](workers, item_seconds, waits).map(function, batches)


# ------------------------------------------------------------ helpers


def _with_threads(function, threads, batch):
    """Worker side: run ``function`` on ``batch`` with this worker's share of the cores."""
    with compute_threads(threads):
        return function(batch)


def _in_worker(function, threads, item_seconds, batch):
    """Loky worker side: :func:`_with_threads` within the batch's time bound.

    Work stuck in C code that the timer signal cannot interrupt is ended
    with its process, :data:`HARD_BOUND_GRACE_SECONDS` after the bound.
    """
    if not item_seconds:
        return _with_threads(function, threads, batch)
    bound = item_seconds * len(batch)
    stuck = threading.Timer(bound + HARD_BOUND_GRACE_SECONDS, os._exit, (70,))
    stuck.daemon = True
    stuck.start()
    try:
        with time_limit(bound):
            return _with_threads(function, threads, batch)
    finally:
        stuck.cancel()


def _numbered(function, number, batch):
    return number, function(batch)


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: end this process soon after its parent dies.

    A dead parent's workers are adopted by another process, so a changed
    parent id is the sign; it covers every way to die, SIGKILL included,
    where a parent's own clean-up would not run. (loky's workers wait for
    their idle timeout instead.)
    """
    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="cnngenre-parent-watch", daemon=True).start()


def _pool(workers: int, threads: int):
    """loky's reusable executor with these workers: the running one when it fits, else a new one."""
    from joblib.externals.loky import get_reusable_executor

    env = {name: os.environ.get(name, str(threads)) for name in THREAD_LIMIT_VARIABLES}
    return get_reusable_executor(max_workers=workers, timeout=IDLE_WORKER_SECONDS, env=env,
                                 initializer=_exit_with_parent, initargs=(os.getpid(),))
