"""Where work runs: this process, threads, worker processes or a Dask cluster.

:func:`map_batches` is the one entry point. It hands batches of items to an
executor of :data:`BACKENDS` and yields each batch's result as it
completes, so the caller can store results while the run goes on.

The ``loky`` executor runs batches in worker processes and survives their
death: a worker killed by the out-of-memory killer, or by a decoder that
crashes in C, costs the one item that killed it, never the run. Its workers
also end soon after their parent does, however the parent dies.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import functools
import os
import re
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, wait
from typing import Callable, Iterable, Iterator, Sequence

#: Seconds an idle worker process waits for work before it exits (joblib's
#: default); a pool is kept between calls so that each call does not pay
#: for starting workers and loading networks again.
IDLE_WORKER_SECONDS = 300

#: How often a worker process checks that its parent is still alive.
PARENT_POLL_SECONDS = 0.5

#: Thread-pool sizes of native libraries, limited in worker processes as
#: joblib does, so that workers do not fight over the cores.
THREAD_LIMIT_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                          "VECLIB_MAXIMUM_THREADS", "NUMBA_NUM_THREADS", "NUMEXPR_NUM_THREADS")


# ------------------------------------------------------------ devices


def resolve_device(name: str = "auto") -> str:
    """Where the networks run: ``"cpu"``, or ``"cuda"``/``"cuda:N"``.

    ``"auto"`` is CUDA when PyTorch is installed and sees a GPU. It imports
    torch only on a machine with an NVIDIA driver, so that prediction on a
    CPU-only machine never pays for importing torch.

    Raises
    ------
    ValueError
        An unknown device name.
    RuntimeError
        CUDA asked for, and PyTorch sees no such GPU or is not installed
        (:class:`TorchMissing`).
    """
    if not is_device_name(name):
        raise ValueError(f"unknown device {name!r}; choose auto, cpu, cuda or cuda:N")
    if name == "cpu":
        return "cpu"
    if name == "auto":
        if not _nvidia_driver():
            return "cpu"
        try:
            import torch
        except ImportError:  # the plain install: the CPU
            return "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"
    match = re.fullmatch(_CUDA, name)
    torch = import_torch(f"--device {name}")

    if not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
    if match.group(1) and int(match.group(1)) >= torch.cuda.device_count():
        raise RuntimeError(f"device {name!r} asked for, but PyTorch sees {torch.cuda.device_count()} GPU(s)")
    return name


_CUDA = r"cuda(?::(\d+))?"

#: What installs PyTorch with cnngenre (setup.py's extra).
TORCH_EXTRA = "beets-cnngenre[torch]"


class TorchMissing(RuntimeError):
    """Something asked for needs PyTorch, which is not installed (one line naming the extra)."""


def import_torch(purpose: str):
    """The torch module, or :class:`TorchMissing` saying that ``purpose`` needs the ``[torch]`` extra.

    PyTorch is an extra: the plain install predicts with both backbones on the
    CPU and trains musicnn's head in numpy; training the scratch CNN and
    running on a GPU need torch.
    """
    try:
        import torch
    except ImportError:
        raise TorchMissing(f"{purpose} needs PyTorch, which is not installed: pip install '{TORCH_EXTRA}' "
                           "(on a GPU, install PyTorch's CUDA build first)") from None
    return torch


def is_device_name(name) -> bool:
    """Whether ``name`` is one :func:`resolve_device` takes: auto, cpu, cuda or cuda:N."""
    return isinstance(name, str) and (name in ("auto", "cpu") or re.fullmatch(_CUDA, name) is not None)


def _nvidia_driver() -> bool:
    if sys.platform.startswith("linux"):
        return os.path.exists("/proc/driver/nvidia/version")
    import shutil

    return shutil.which("nvidia-smi") is not None


# ------------------------------------------------------------ threads and cores


def set_torch_threads(threads: int) -> int | None:
    """Set torch's thread count if this process uses torch; the previous count, else None.

    Log-mel workers never import torch (it costs seconds per process).
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    before = torch.get_num_threads()
    if before != threads:
        torch.set_num_threads(threads)
    return before


@contextlib.contextmanager
def compute_threads(threads: int):
    """Run a block with ``threads`` threads for torch and for the native thread pools (BLAS, OpenMP),
    then restore the caller's counts.

    On a machine whose cores are busy (with worker processes, or anything
    else), a second thread of a pool spin-waits for the first and slows the
    block by an order of magnitude or more (bench/RESULTS.md); one thread
    costs little on an idle machine.
    """
    from threadpoolctl import threadpool_limits

    before = set_torch_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        if before is not None:
            set_torch_threads(before)


def available_cores() -> int:
    """Cores this process may use: affinity, container limits and ``LOKY_MAX_CPU_COUNT`` included."""
    from joblib.externals.loky import cpu_count

    return cpu_count()


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
        Cores available; by default :func:`available_cores`.

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

    Raises
    ------
    ValueError
        An unknown device or backend, or a negative ``n_jobs``.
    RuntimeError
        A CUDA device asked for that PyTorch does not see.
    """

    cache: object = None
    n_jobs: int = 1
    device: str = "auto"
    progress: bool = False
    backend: str = "loky"

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; one of {', '.join(BACKENDS)}")
        if self.n_jobs is not None and self.n_jobs < 0:
            raise ValueError(f"n_jobs must be 0 (one worker per core) or a positive number of workers, "
                             f"not {self.n_jobs}")
        object.__setattr__(self, "device", resolve_device(self.device))


# ------------------------------------------------------------ executors


class WorkerDied(Exception):
    """The worker process running a batch died (a signal, or an exit without a result).

    Attributes
    ----------
    cause : str
        ``"killed by signal 9 (SIGKILL)"``, ``"exited with code 3"`` or
        ``"cause unknown"``.
    """

    def __init__(self, cause: str):
        super().__init__(f"the worker process died, {cause}")
        self.cause = cause


class Executor:
    """Runs a function on batches and yields ``(batch, result, error)`` as batches complete.

    ``error`` is None, or a :class:`WorkerDied` when the process running the
    batch died; exceptions raised by the function propagate to the caller.
    """

    NAME = ""

    def __init__(self, workers: int):
        self.workers = workers

    def map(self, function: Callable, batches: Sequence[list]) -> Iterator[tuple[list, object, WorkerDied | None]]:
        raise NotImplementedError


class InProcessExecutor(Executor):
    """One batch after another in this process, on one torch thread.

    One thread even when more cores are idle: on a busy machine two torch
    threads spin-waiting for each other made musicnn many times slower, and
    on an idle one a single thread costs little.
    """

    NAME = "inprocess"

    def map(self, function, batches):
        with compute_threads(1):
            for batch in batches:
                yield batch, function(batch), None


class ThreadingExecutor(Executor):
    """Threads of this process: no start-up cost, but they share its interpreter lock."""

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
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        batch = running.pop(future)
                        yield batch, future.result(), None
        finally:
            # Running threads cannot be stopped; nothing waits for them.
            pool.shutdown(wait=False, cancel_futures=True)


class LokyExecutor(Executor):
    """Worker processes (loky) that split the cores, with crash isolation.

    When a worker dies, the batches that were in flight are suspects: each
    is rerun alone, and one that kills its worker again is split in halves
    until the single item that does it is found; that item is reported
    with a :class:`WorkerDied`, and every other item gets its result. The
    other batches run on a fresh pool as before, so a run without crashes
    does no serial work.
    """

    NAME = "loky"

    def map(self, function, batches):
        from joblib.externals.loky.process_executor import BrokenProcessPool, TerminatedWorkerError

        threads = max(1, available_cores() // self.workers)
        task = functools.partial(_with_threads, function, threads)
        # Up to two batches per worker in flight keeps workers busy between
        # results, and bounds the suspects when one dies.
        window = 2 * self.workers
        todo, suspects, running = collections.deque(batches), collections.deque(), {}
        pool = _take_pool(self.workers, threads)
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
                    elif not isinstance(error, TerminatedWorkerError):
                        raise error
                    elif future is not alone:
                        suspects.append(batch)
                    elif len(batch) == 1:
                        yield batch, None, WorkerDied(_death_cause(error))
                    else:
                        half = len(batch) // 2
                        suspects.extendleft([batch[half:], batch[:half]])
                if broken:
                    pool.shutdown(wait=False, kill_workers=True)
                    pool = _new_pool(self.workers, threads)
            completed = True
        finally:
            if completed:
                _keep_pool(pool, self.workers, threads)
            else:  # the caller stopped early (exception, Ctrl-C, close): stop the work now
                pool.shutdown(wait=False, kill_workers=True)


class DaskExecutor(Executor):
    """The Dask cluster of the active ``distributed.Client``, through joblib's ``dask`` backend.

    Dask workers bring their own processes and threads: ``workers`` is not
    used, and a worker's death is handled by Dask itself.
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
                backend: str = "loky") -> Iterator[tuple[list, object, WorkerDied | None]]:
    """Run ``function`` on each batch, in parallel, yielding results as they complete.

    Parameters
    ----------
    function : callable
        Takes one batch (a list) and returns its result. It must also accept
        any part of a batch: the ``loky`` backend reruns parts of a batch
        whose worker died. With ``loky`` and ``dask`` it must be picklable
        (cloudpickle).
    batches : iterable of list
    n_jobs : int or None
        Workers (see :func:`worker_count`); with one, ``loky`` and
        ``threading`` run in this process.
    backend : {"loky", "threading", "dask", "inprocess"}

    Yields
    ------
    tuple
        ``(batch, result, error)`` in completion order: ``error`` is None,
        or a :class:`WorkerDied` (then ``result`` is None and ``batch`` is
        the single item that killed its worker). Every item of every batch
        is in exactly one yielded batch.

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
    return BACKENDS[backend](workers).map(function, batches)


# ------------------------------------------------------------ helpers


def _with_threads(function, threads, batch):
    """Worker side: run ``function`` on ``batch`` with this worker's share of the cores."""
    with compute_threads(threads):
        return function(batch)


def _numbered(function, number, batch):
    return number, function(batch)


def _death_cause(error) -> str:
    """What killed a worker, from the exit codes loky lists in its error."""
    listed = str(error).partition("exit codes of the workers are")[2]
    codes = [int(code) for code in re.findall(r"\((-?\d+)\)", listed)]
    if not codes:
        return "cause unknown"
    code = min(codes)  # a signal (negative) says more than an exit status
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"killed by signal {-code} ({signal.Signals(-code).name})"
    except ValueError:
        return f"killed by signal {-code}"


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: end this process soon after its parent dies.

    A dead parent's workers are adopted by another process, so a changed
    parent id is the sign; it covers every way to die, SIGKILL included,
    where a parent's own clean-up would not run.
    """
    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="cnngenre-parent-watch", daemon=True).start()


# One idle pool at most, kept warm between calls; a pool in use belongs to one call.
_idle_pool: list = []
_idle_pool_lock = threading.Lock()


def _new_pool(workers: int, threads: int):
    from joblib.externals.loky import ProcessPoolExecutor

    env = {name: os.environ.get(name, str(threads)) for name in THREAD_LIMIT_VARIABLES}
    return ProcessPoolExecutor(max_workers=workers, timeout=IDLE_WORKER_SECONDS, env=env,
                               initializer=_exit_with_parent, initargs=(os.getpid(),))


def _take_pool(workers: int, threads: int):
    """The idle pool if it fits, else a new one; the pool is the caller's until it gives it back."""
    with _idle_pool_lock:
        idle = _idle_pool.pop() if _idle_pool else None
    if idle is not None:
        key, pool = idle
        if key == (os.getpid(), workers, threads):
            return pool
        if key[0] == os.getpid():  # a forked child must not stop its parent's workers
            pool.shutdown(wait=False, kill_workers=True)
    return _new_pool(workers, threads)


def _keep_pool(pool, workers: int, threads: int) -> None:
    with _idle_pool_lock:
        if not _idle_pool:
            _idle_pool.append(((os.getpid(), workers, threads), pool))
            return
    pool.shutdown(wait=False)


@atexit.register
def _stop_idle_pool() -> None:
    """Stop the kept pool's workers while the interpreter can still do it cleanly."""
    with _idle_pool_lock:
        idle = _idle_pool.pop() if _idle_pool else None
    if idle is not None and idle[0][0] == os.getpid():
        idle[1].shutdown(wait=False, kill_workers=True)
