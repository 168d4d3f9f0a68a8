"""Training and prediction on plain lists of audio files.

This is the whole product without beets: the plugin maps library items
onto these two functions, and a notebook can call them on a folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from typing import Iterator, Sequence

import numpy as np

from .cache import FeatureCache
from .extract import EXTRACTORS, extract_features, tag_names
from .features import FeatureSettings
from .labels import LabelChoice, choose_labels, genre_key, split_genres
from .model import BACKBONES, GenreModel
from .runtime import torch_threads
from .training import (TrainConfig, classification_report, expected_calibration_error, resolve_device, train_head,
                       train_scratch)

#: Feature settings of a new model of each backbone. musicnn sees 3 s
#: patches (what it was trained on) spread over the track: 4 beat 1, 2 and 8
#: in bench/accuracy; the scratch CNN learns from random 3 s windows of
#: longer excerpts.
DEFAULT_SETTINGS = {
    "musicnn": FeatureSettings(excerpt_seconds=3.0, n_excerpts=4),
    "scratch": FeatureSettings(excerpt_seconds=10.0, n_excerpts=3),
}

#: The model shipped in the package, used until the user trains one.
DEFAULT_MODEL = os.path.join(os.path.dirname(__file__), "data", "default_model.pt")


class TrainingError(Exception):
    """Training cannot start (one-line reason with what to do)."""


@dataclasses.dataclass
class Prediction:
    """Genre scores of one track, best first, and musicnn's tags above a threshold."""

    index: int
    genres: list  # [(genre, probability), ...], best first
    tags: list = dataclasses.field(default_factory=list)  # [(tag, probability), ...]


@dataclasses.dataclass
class Failure:
    """A track that could not be used, with a one-line reason."""

    index: int
    reason: str


def extractor_for(backbone: str, settings: FeatureSettings | None = None):
    if backbone not in BACKBONES:
        raise TrainingError(f"unknown backbone {backbone!r}; choose one of: {', '.join(BACKBONES)}")
    kind = "musicnn" if backbone == "musicnn" else "logmel"
    return EXTRACTORS[kind](settings or DEFAULT_SETTINGS[backbone])


def _with_device(extractor, device: str):
    """Run the pretrained backbone where the genre network runs."""
    if hasattr(extractor, "device"):
        extractor.device = device
    return extractor


def train_on_files(
    paths: Sequence,
    track_genres: Sequence,
    artists: Sequence | None = None,
    backbone: str = "musicnn",
    min_tracks: int = 10,
    max_genres: int | None = None,
    config: TrainConfig | None = None,
    cache: FeatureCache | None = None,
    n_jobs: int = 1,
    progress: bool = False,
    log=print,
    backend: str = "loky",
) -> tuple[GenreModel, LabelChoice, list[Failure]]:
    """Train a genre model on tagged audio files.

    Parameters
    ----------
    paths : sequence of str or bytes
        Audio files.
    track_genres : sequence
        Genres of each file (list of strings or one string); the first
        is its label.
    artists : sequence, optional
        Artist of each file; validation tracks never share an artist with
        training tracks. Files without one form groups of their own.
    backbone : {"musicnn", "scratch"}
    min_tracks, max_genres : int
        See :func:`genre_cnn_core.labels.choose_labels`.
    config : TrainConfig, optional
    cache : FeatureCache, optional
    n_jobs : int
        Feature-extraction worker processes.
    progress : bool
        Progress bar on stderr.
    log : callable
        Receives one line of text at a time.
    backend : {"loky", "threading", "dask"}
        joblib backend of the feature extraction.

    Returns
    -------
    (GenreModel, LabelChoice, list of Failure)

    Raises
    ------
    TrainingError
        Fewer than two genres have enough tracks.
    """
    config = config or TrainConfig()
    extractor = _with_device(extractor_for(backbone), resolve_device(config.device))
    choice = choose_labels(list(track_genres), min_tracks, max_genres)
    _check_genres(choice, min_tracks)

    chosen = [i for i, label in enumerate(choice.labels) if label is not None]
    features: dict = {}
    failures = []
    for position, array, error in extract_features([paths[i] for i in chosen], extractor, cache, n_jobs,
                                                   progress=progress, description="features", backend=backend):
        if error:
            failures.append(Failure(chosen[position], error))
        else:
            features[chosen[position]] = array
    used = sorted(features)
    labels = [choice.labels[i] for i in used]
    # Failed files can leave a genre short of tracks: check again.
    present = set(labels)
    if len(present) < 2:
        raise TrainingError("fewer than 2 genres have decodable tracks; see the warnings above")
    groups = [(artists[i] if artists and artists[i] else f"\0track{i}") for i in used]
    trainer = train_head if backbone == "musicnn" else train_scratch
    model = trainer([features[i] for i in used], labels, groups, choice.genres, extractor.settings, config,
                    log=log)
    model.metadata["trained_on"] = sorted(track_fingerprint(paths[i]) for i in used)
    return model, choice, failures


def track_fingerprint(path) -> str:
    """Short identifier of a file's location, recorded for the tracks a model learned from."""
    return hashlib.sha1(os.fsencode(os.path.abspath(path))).hexdigest()[:16]


def evaluate_files(
    model: GenreModel,
    paths: Sequence,
    track_genres: Sequence,
    cache: FeatureCache | None = None,
    n_jobs: int = 1,
    device: str = "cpu",
    progress: bool = False,
    backend: str = "loky",
) -> tuple[dict | None, dict]:
    """Evaluate a model on tagged files it was not trained on.

    A file counts when its first genre is one of the model's genres (after
    normalisation) and the model did not learn from it.

    Returns
    -------
    (dict or None, dict)
        The report of :func:`genre_cnn_core.training.classification_report`
        with ``ece`` added (None when no file counts), and counts of the
        files ``used``, ``trained_on``, ``other_genre`` and ``failed``.
    """
    known = {genre_key(g): c for c, g in enumerate(model.genres)}
    seen = set(model.metadata.get("trained_on", []))
    counts = {"used": 0, "trained_on": 0, "other_genre": 0, "failed": 0}
    chosen, labels = [], []
    for i, (path, genres) in enumerate(zip(paths, track_genres)):
        first = split_genres(genres)[:1]
        if not first or genre_key(first[0]) not in known:
            counts["other_genre"] += 1
        elif track_fingerprint(path) in seen:
            counts["trained_on"] += 1
        else:
            chosen.append(i)
            labels.append(known[genre_key(first[0])])
    extractor = _with_device(model.extractor(), device)
    features, truth = [], []
    for position, array, error in extract_features([paths[i] for i in chosen], extractor, cache, n_jobs,
                                                   progress=progress, description="evaluate", backend=backend):
        if error:
            counts["failed"] += 1
        else:
            features.append(array)
            truth.append(labels[position])
    counts["used"] = len(features)
    if not features:
        return None, counts
    probabilities = model.predict_proba(features, device)
    truth = np.asarray(truth)
    report = classification_report(truth, probabilities.argmax(axis=1), model.genres)
    report["ece"] = expected_calibration_error(probabilities, truth)
    return report, counts


def _check_genres(choice: LabelChoice, min_tracks: int) -> None:
    if len(choice.genres) >= 2:
        return
    found = {**choice.counts, **choice.dropped}
    listing = ", ".join(f"{g} ({n})" for g, n in sorted(found.items(), key=lambda kv: -kv[1])[:12]) or "none"
    raise TrainingError(
        f"need at least 2 genres with {min_tracks} or more tagged tracks; found: {listing}. "
        f"Tag more tracks or lower min_tracks (e.g. `-m {max(2, min_tracks // 2)}`)"
    )


def predict_files(
    model: GenreModel,
    paths: Sequence,
    top_k: int = 3,
    tag_threshold: float | None = None,
    cache: FeatureCache | None = None,
    n_jobs: int = 1,
    device: str = "cpu",
    progress: bool = False,
    batch_tracks: int = 64,
    backend: str = "loky",
) -> Iterator[Prediction | Failure]:
    """Predict the genres of audio files.

    Parameters
    ----------
    model : GenreModel
    paths : sequence of str or bytes
    top_k : int
        Genres kept per track.
    tag_threshold : float or None
        With the musicnn backbone, also report its tags at or above this
        probability; None skips tags.
    cache : FeatureCache, optional
    n_jobs : int
        Worker processes for decoding and feature extraction.
    device : str
        Where the genre network runs.
    progress : bool
        Progress bar on stderr.
    batch_tracks : int
        Tracks per forward pass of the genre network.
    backend : {"loky", "threading", "dask"}
        joblib backend of the feature extraction.

    Yields
    ------
    Prediction or Failure
        One per path, in completion order.
    """
    tags = tag_names() if tag_threshold is not None and model.backbone == "musicnn" else None
    pending: list = []

    def flush():
        probabilities = model.predict_proba([f for _, f in pending], device)
        for (index, features), row in zip(pending, probabilities):
            order = np.argsort(-row)[:top_k]
            found = []
            if tags is not None:
                tag_probs = np.asarray(features[-len(tags):], dtype=np.float32)
                found = [(tags[t], float(tag_probs[t])) for t in np.argsort(-tag_probs)
                         if tag_probs[t] >= tag_threshold]
            yield Prediction(index, [(model.genres[c], float(row[c])) for c in order], found)
        pending.clear()

    extractor = _with_device(model.extractor(), device)
    # With workers, the genre network here gets one thread: two threads
    # waiting on each other while workers hold the cores made it 13x
    # slower (40 tracks: 23.5 s wall, 11.5 s with one), and the workers do the heavy part.
    with torch_threads(1) if n_jobs != 1 and device == "cpu" else contextlib.nullcontext():
        for index, features, error in extract_features(paths, extractor, cache, n_jobs, progress=progress,
                                                       description="cnngenre", backend=backend):
            if error:
                yield Failure(index, error)
                continue
            pending.append((index, features))
            if len(pending) >= batch_tracks:
                yield from flush()
        if pending:
            yield from flush()
