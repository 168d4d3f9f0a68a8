"""Per-track features, computed in parallel (see :mod:`runtime`) and cached.

Two extractors serve the two backbones:

* :class:`LogMelExtractor` keeps the log-mel spectrograms of a track's
  excerpts; the scratch CNN learns from them.
* :class:`MusicnnExtractor` runs the frozen, pretrained musicnn network on
  a track's patches and keeps one small embedding per track; only a genre
  head is trained on top.
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
from .features import FeatureSettings, fixed_frames, track_log_mels

#: Bumped whenever an extractor's output changes, to retire old cache entries.
EXTRACTOR_VERSION = 1


class LogMelExtractor:
    """Log-mel spectrograms of a track's excerpts, stored as float16."""

    kind = "logmel"

    def __init__(self, settings: FeatureSettings):
        self.settings = settings

    def namespace(self) -> dict:
        return {"kind": self.kind, "version": EXTRACTOR_VERSION, **self.settings.as_dict()}

    def compute(self, paths: Sequence) -> list:
        """Features per path, or the :class:`AudioError` that stopped it."""
        results = []
        for path in paths:
            try:
                results.append(track_log_mels(path, self.settings).astype(np.float16))
            except AudioError as error:
                results.append(error)
        return results


class MusicnnExtractor:
    """Track embeddings from the pretrained musicnn network.

    A track's embedding concatenates, averaged over its patches, the temporal
    mean and max pooling of musicnn's mid-level features and its 50 tag
    probabilities.
    """

    kind = "musicnn"
    #: Patches in one forward pass: large enough to keep the CPU busy, small
    #: enough to bound memory.
    max_batch = 64

    def __init__(self, settings: FeatureSettings, device: str = "cpu"):
        self.settings = settings
        self.device = device

    def namespace(self) -> dict:
        return {"kind": self.kind, "version": EXTRACTOR_VERSION, **self.settings.as_dict()}

    def compute(self, paths: Sequence) -> list:
        import torch

        from . import musicnn

        results, patches, owners = [], [], []
        for path in paths:
            try:
                spectrograms = track_log_mels(path, self.settings)
            except AudioError as error:
                results.append(error)
                continue
            results.append(None)
            for spectrogram in spectrograms:
                patches.append(fixed_frames(spectrogram, musicnn.PATCH_FRAMES).T)
                owners.append(len(results) - 1)
        if not patches:
            return results

        network = _pretrained_musicnn(self.device)
        outputs = []
        with torch.inference_mode():
            batch = torch.from_numpy(np.stack(patches))
            for chunk in torch.split(batch, self.max_batch):
                out = network(chunk.to(self.device))
                outputs.append(torch.cat([out.mean_pool, out.max_pool, torch.sigmoid(out.logits)], dim=1))
        per_patch = torch.cat(outputs).float().cpu().numpy()
        owners = np.asarray(owners)
        for index in np.unique(owners):
            results[index] = per_patch[owners == index].mean(axis=0).astype(np.float16)
        return results


def tag_names() -> list[str]:
    """Names of the musicnn tag probabilities at the end of an embedding."""
    from . import musicnn

    return list(musicnn.MSD_TAGS)


_NETWORKS: dict = {}


def _pretrained_musicnn(device: str = "cpu"):
    """The pretrained network, loaded once per process and device."""
    if device not in _NETWORKS:
        from . import musicnn

        _NETWORKS[device] = musicnn.load_pretrained(device)
    return _NETWORKS[device]


EXTRACTORS = {LogMelExtractor.kind: LogMelExtractor, MusicnnExtractor.kind: MusicnnExtractor}


def _compute_batch(extractor, cache: FeatureCache, batch: list) -> list:
    """Worker side: features of a batch of ``(index, path, key)``, cached."""
    try:
        results = extractor.compute([path for _, path, _ in batch])
    except AudioError:
        raise
    except Exception as error:  # one bad file must not lose the others in its batch
        if len(batch) == 1:
            return [(batch[0][0], None, f"unexpected error: {type(error).__name__}: {error}")]
        return [row for item in batch for row in _compute_batch(extractor, cache, [item])]
    out = []
    for (index, _, key), result in zip(batch, results):
        if isinstance(result, AudioError):
            out.append((index, None, str(result)))
        else:
            cache.store(key, result)
            out.append((index, result, None))
    return out


def extract_features(
    paths: Sequence,
    extractor,
    cache: FeatureCache | None = None,
    n_jobs: int = 1,
    batch_size: int = 4,
    progress: bool = False,
    description: str = "features",
    backend: str = "loky",
) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
    """Features of many files, from the cache or computed in parallel.

    Parameters
    ----------
    paths : sequence of str or bytes
        Absolute paths of audio files.
    extractor : LogMelExtractor or MusicnnExtractor
    cache : FeatureCache, optional
        Reused entries skip decoding; new ones are stored by the workers.
    n_jobs : int
        Workers; 1 computes in this process, 0 uses every core, and more
        than the cores are not started (see :func:`runtime.worker_count`).
    batch_size : int
        Tracks per task: one task runs one batched forward pass.
    progress : bool
        Show a progress bar on stderr.
    description : str
        Label of the progress bar.
    backend : {"loky", "threading", "dask"}
        Where the work runs (see :func:`runtime.map_batches`). ``"dask"``
        runs on the Dask cluster of the active ``distributed.Client`` (see
        :func:`runtime.dask_client`).

    Yields
    ------
    tuple
        ``(index into paths, features or None, error message or None)``,
        in completion order. A file whose decoding killed its worker
        process gets an error; the others of its batch are recomputed.
    """
    from tqdm import tqdm

    cache = cache or FeatureCache(None)
    namespace = extractor.namespace()
    bar = tqdm(total=len(paths), desc=description, unit="track", file=sys.stderr,
               disable=not progress, dynamic_ncols=True, leave=False)
    todo = []
    with bar:
        for index, path in enumerate(paths):
            key = cache.key(path, namespace)
            features = cache.load(key)
            if features is None:
                todo.append((index, path, key))
            else:
                bar.update()
                yield index, features, None
        if not todo:
            return
        workers = runtime.worker_count(n_jobs, len(todo))
        # Small runs still give every worker a share.
        batch_size = max(1, min(batch_size, -(-len(todo) // workers)))
        batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
        compute = functools.partial(_compute_batch, extractor, cache)
        with contextlib.closing(runtime.map_batches(compute, batches, workers, backend)) as results:
            for batch, rows, died in results:
                if died is not None:
                    reason = (f"the worker process died while decoding this file, {died.cause}: "
                              "out of memory, or a crashing decoder; skipped")
                    rows = [(index, None, reason) for index, _, _ in batch]
                for index, features, error in rows:
                    if error == "file not found" and backend == "dask" and os.path.exists(paths[index]):
                        error = ("file not found on a Dask worker, though this machine has it: workers need "
                                 "the audio at the same paths (shared storage)")
                    bar.update()
                    yield index, features, error
