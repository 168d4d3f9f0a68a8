"""Per-track features of many files: from the cache, or computed in
parallel workers (:mod:`genre_cnn_core.runtime`) and cached.

What a track's features are is its backbone's extractor's business
(:mod:`genre_cnn_core.backbones`); this module only moves them: cache
lookups by audio id in the main process, computation in the workers,
each result checked by its extractor before it is stored or used.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from typing import Iterator, Sequence

import numpy as np

from . import runtime
from .audio import AudioError
from .cache import FeatureCache
from .container import audio_identity
from .runtime import RunConfig

#: How a failure caused by the file killing its worker process begins (:attr:`Failure.worker_died`).
WORKER_DIED = "the worker process died"


def _compute_batch(extractor, cache: FeatureCache, batch: list) -> list:
    """Worker side: features of a batch of ``(index, path, key)``, checked, then cached."""
    try:
        results = extractor.compute([path for _, path, _ in batch])
    except AudioError:
        raise
    except Exception as error:  # one bad file must not lose the others in its batch
        if len(batch) == 1:
            return [(batch[0][0], None, f"unexpected error: {type(error).__name__}: {error}")]
        return [row for item in batch for row in _compute_batch(extractor, cache, [item])]
    out = []
    namespace = extractor.namespace()
    for (index, _, key), result in zip(batch, results):
        problem = None if isinstance(result, AudioError) else extractor.check(result)
        if isinstance(result, AudioError):
            out.append((index, None, str(result)))
        elif problem:
            out.append((index, None, f"features out of range ({problem}): the audio holds values no music has"))
        else:
            cache.store(key, namespace, result)
            out.append((index, result, None))
    return out


def extract_features(
    paths: Sequence,
    extractor,
    run: RunConfig | None = None,
    batch_size: int = 4,
    description: str = "features",
    identities: Sequence | None = None,
    waits: bool = False,
) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
    """Features of many files, from the cache or computed in parallel.

    The same audio under several paths (its audio id, or one file under
    several names: hard links) is decoded and computed once, and its
    features go to every path that has it.

    Parameters
    ----------
    paths : sequence of str or bytes
        Absolute paths of audio files.
    extractor : genre_cnn_core.backbones.Extractor
    run : RunConfig, optional
        Its cache's entries skip decoding, and new ones are stored by the
        workers; entries are found by each file's audio id, so tag writes
        and moves keep hitting them. Its workers and backend run the rest
        (:func:`runtime.map_batches`) within its time bound per file.
    batch_size : int
        Tracks per task: one task runs one batched forward pass.
    description : str
        Label of the progress bar.
    identities : sequence, optional
        Audio ids of the files (:func:`genre_cnn_core.container.audio_identity`),
        when the caller has them already.
    waits : bool
        Also yield None each time the workers are about to be waited for,
        with every result so far yielded: the moment to store them.

    Yields
    ------
    tuple
        ``(index into paths, features or None, error message or None)``,
        in completion order. A file whose decoding killed its worker
        process, or ran over the time bound, gets an error; the others of
        its batch are recomputed.
    """
    from tqdm import tqdm

    run = run or RunConfig()
    cache = run.cache or FeatureCache(None)
    namespace = extractor.namespace()
    if identities is None:
        identities = audio_ids(paths) if cache.enabled else [None] * len(paths)
    same_audio: dict = {}  # what the audio is known by -> the indices of the paths that have it
    for index, path in enumerate(paths):
        same_audio.setdefault(_audio_key(path, identities[index], index), []).append(index)
    bar = tqdm(total=len(paths), desc=description, unit="track", file=sys.stderr,
               disable=not run.progress, dynamic_ncols=True, leave=False)
    todo, sharing = [], {}
    with bar:
        for indices in same_audio.values():
            first = indices[0]
            key = cache.key(identities[first], namespace) if cache.enabled else None
            features = cache.load(key, namespace)
            if features is not None and extractor.check(features):
                cache.discard(key)
                features = None
            if features is None:
                todo.append((first, paths[first], key))
                sharing[first] = indices
                continue
            for index in indices:
                bar.update()
                yield index, features, None
        if not todo:
            return
        workers = runtime.worker_count(run.n_jobs, len(todo))
        # Small runs still give every worker a share.
        batch_size = max(1, min(batch_size, -(-len(todo) // workers)))
        batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
        compute = functools.partial(_compute_batch, extractor, cache)
        results = runtime.map_batches(compute, batches, workers, run.backend, run.file_seconds, waits)
        with contextlib.closing(results):
            for done in results:
                if done is None:
                    yield None
                    continue
                batch, rows, failed = done
                if failed is not None:
                    rows = [(index, None, _failure_reason(failed)) for index, _, _ in batch]
                for first, features, error in rows:
                    for index in sharing[first]:
                        if error == "file not found" and run.backend == "dask" and os.path.exists(paths[index]):
                            error = ("file not found on a Dask worker, though this machine has it: workers need "
                                     "the audio at the same paths (shared storage)")
                        bar.update()
                        yield index, features, error


def _audio_key(path, identity: str | None, index: int):
    """What a file's audio is known by: its audio id, else the file itself (hard links share it)."""
    if identity:
        return identity
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return index  # the worker says what is wrong with it
    return (stat.st_dev, stat.st_ino)


def _failure_reason(failed: runtime.ItemFailed) -> str:
    if isinstance(failed, runtime.TimeLimitExceeded):
        return f"decoding and analysing this file {failed} (the bound per file); skipped"
    return f"{WORKER_DIED} while decoding this file: out of memory, or a crashing decoder; skipped"


def audio_ids(paths: Sequence) -> list[str | None]:
    """Audio id of each file (:func:`genre_cnn_core.container.audio_identity`); None if it cannot be read."""
    return [_identity(path) for path in paths]


def _identity(path) -> str | None:
    try:
        return audio_identity(path)
    except OSError:  # the worker, or the caller, says what is wrong with the file
        return None
