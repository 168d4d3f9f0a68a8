"""Artist-grouped accuracy benchmark of the genre models, in one command.

    /work/venv/bin/python bench/accuracy.py [--data ../shared/data] [--quick]

On each labelled data set separately (``gtzan-dev``, grouped by
``artist_group``; ``jamendo``, grouped by ``artist``) three approaches are
cross-validated on the same artist-grouped folds (stratified group
5-fold; never a random split):

* ``baseline``: MFCC, log-mel, spectral-contrast and chroma statistics
  (mean and standard deviation over the frames of the excerpts the product
  decodes) with a standardised scikit-learn logistic regression;
* ``scratch``: the Dieleman-style CNN of
  :func:`genre_cnn_core.training.train_scratch` on log-mel excerpts;
* ``musicnn``: a head trained by :func:`genre_cnn_core.training.train_head`
  on frozen musicnn embeddings, plus variants (embedding parts, patches per
  track, hidden layer), one knob at a time.

The fast approaches are also run leave-one-artist-group-out on gtzan-dev
and on other shuffles of the folds; a cross-collection test trains on
gtzan-dev and tests on jamendo.

Out-of-fold predictions are pooled and scored: accuracy and macro-F1 with
95 % bootstrap intervals (tracks resampled), per-genre recall, confusion
matrix, training seconds per fold and the expected calibration error of
the temperature-calibrated probabilities. The Markdown report goes to
stdout and replaces the ``## Accuracy`` section of ``bench/RESULTS.md``
(``bench/out/accuracy-quick.md`` with ``--quick``).

Features are cached under ``bench/out/cache`` (git-ignored), so a rerun
only trains. Everything runs on one CPU thread.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from typing import Callable, Sequence

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
CACHE_DIR = os.path.join(HERE, "out", "cache")
RESULTS = os.path.join(HERE, "RESULTS.md")
QUICK_RESULTS = os.path.join(HERE, "out", "accuracy-quick.md")
HEADING = "## Accuracy"

#: Data sets: folder under the data root, and the labels.csv column naming the artist.
DATASETS = {"gtzan-dev": "artist_group", "jamendo": "artist"}

BOOTSTRAP_DRAWS = 1000
#: Inverse regularisation strengths tried for the baseline; an inner
#: artist-grouped split picks one, as train_head does for its L2 penalty.
BASELINE_C = (0.001, 0.01, 0.1, 1.0, 10.0)
#: Layout of a musicnn embedding: [mean pool (753), max pool (753), tag probabilities (50)].
MUSICNN_POOLED, MUSICNN_TAGS = 2 * 753, 50


# --------------------------------------------------------------------- data


@dataclasses.dataclass
class Dataset:
    """Labelled tracks of one data set.

    Attributes
    ----------
    name : str
    paths : list of str
        Absolute paths of the audio files.
    labels : np.ndarray
        Index into ``genres`` per track.
    genres : list of str
        Sorted genre names.
    groups : list of str
        Artist (or artist group) per track; folds never split one.
    """

    name: str
    paths: list
    labels: np.ndarray
    genres: list
    groups: list


def load_dataset(root: str, name: str, group_column: str) -> Dataset:
    """Read ``<root>/<name>/labels.csv`` (paths relative to ``root``).

    Parameters
    ----------
    root : str
        Folder holding the data sets.
    name : str
        Data set folder.
    group_column : str
        Column naming the artist of each track.

    Returns
    -------
    Dataset
    """
    with open(os.path.join(root, name, "labels.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    genres = sorted({row["genre"] for row in rows})
    return Dataset(
        name=name,
        paths=[os.path.abspath(os.path.join(root, row["path"])) for row in rows],
        labels=np.array([genres.index(row["genre"]) for row in rows], dtype=np.int64),
        genres=genres,
        groups=[row[group_column] for row in rows],
    )


def leave_one_group_out(groups: Sequence) -> list:
    """Test indices of each fold, one fold per group.

    Parameters
    ----------
    groups : sequence of hashable

    Returns
    -------
    list of np.ndarray
        Sorted track indices held out by each fold, in order of first appearance.
    """
    groups = np.asarray(groups)
    _, first = np.unique(groups, return_index=True)
    return [np.flatnonzero(groups == groups[i]) for i in sorted(first)]


def grouped_folds(labels: np.ndarray, groups: Sequence, n_splits: int, seed: int = 0) -> list:
    """Test indices of stratified group k-fold: no group in two folds, genres spread evenly.

    Parameters
    ----------
    labels : np.ndarray
        Class per track.
    groups : sequence of hashable
        Artist per track.
    n_splits : int
    seed : int
        Shuffles the groups before they are dealt out.

    Returns
    -------
    list of np.ndarray
    """
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "least populated class has fewer members than n_splits"
        warnings.simplefilter("ignore", UserWarning)
        return [test for _, test in splitter.split(np.zeros(len(labels)), labels, groups)]


def check_folds(folds: list, groups: Sequence, n_tracks: int) -> None:
    """Raise unless the folds partition the tracks and keep every group on one side."""
    held = np.concatenate(folds)
    if len(held) != n_tracks or len(np.unique(held)) != n_tracks:
        raise AssertionError("folds do not partition the tracks")
    groups = np.asarray(groups)
    for test in folds:
        if set(groups[test]) & set(np.delete(groups, test)):
            raise AssertionError("an artist is on both sides of a fold")


def evaluable_tracks(labels: np.ndarray, folds: list) -> np.ndarray:
    """Mask of tracks whose genre occurs in the training side of their fold.

    With leave-one-artist-out, a genre that only one artist plays is never
    in training when that artist is held out; such tracks cannot be right.
    """
    mask = np.zeros(len(labels), dtype=bool)
    for test in folds:
        train_labels = set(np.delete(labels, test).tolist())
        mask[test] = [label in train_labels for label in labels[test]]
    return mask


# ----------------------------------------------------------------- features


def extract_all(paths: Sequence, extractor, cache) -> list:
    """Features of every path through the product's extraction code, on one thread.

    The ``threading`` backend with one job computes in this process with one
    torch thread (the ``loky`` backend with one job would use every core).

    Raises
    ------
    RuntimeError
        When a file cannot be decoded: the benchmark needs every track.
    """
    from genre_cnn_core.extract import extract_features

    features = [None] * len(paths)
    for index, array, error in extract_features(paths, extractor, cache, n_jobs=1, backend="threading"):
        if error:
            raise RuntimeError(f"{paths[index]}: {error}")
        features[index] = array
    return features


def frame_descriptors(y: np.ndarray, settings) -> dict:
    """Frame-wise hand-crafted descriptors of one mono excerpt.

    Parameters
    ----------
    y : np.ndarray
        Audio at ``settings.sample_rate``.
    settings : FeatureSettings
        STFT and mel settings (those of the product's log-mel features).

    Returns
    -------
    dict of str to np.ndarray
        ``(dimensions, frames)`` arrays: 20 MFCCs, the product's log-mel
        bands, 6 spectral-contrast bands and 12 chroma bins.
    """
    import librosa

    from genre_cnn_core.features import log_mel

    sr, hop = settings.sample_rate, settings.hop_length
    return {
        "mfcc": librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20, n_fft=settings.n_fft, hop_length=hop),
        "logmel": log_mel(y, settings),
        # Five bands above 200 Hz fit under the 8 kHz Nyquist frequency of 16 kHz audio.
        "contrast": librosa.feature.spectral_contrast(y=y, sr=sr, n_fft=settings.n_fft, hop_length=hop,
                                                      n_bands=5),
        # tuning=0 (A440) skips librosa's tuning estimate, whose numba gufunc
        # crashes the interpreter with numba 0.68 / llvmlite 0.50 here.
        "chroma": librosa.feature.chroma_stft(y=y, sr=sr, n_fft=2048, hop_length=hop, tuning=0.0),
    }


def summary_statistics(per_excerpt: list) -> np.ndarray:
    """Mean and standard deviation of each descriptor over all frames of all excerpts."""
    parts = []
    for name in sorted(per_excerpt[0]):
        frames = np.concatenate([descriptors[name] for descriptors in per_excerpt], axis=1)
        parts += [frames.mean(axis=1), frames.std(axis=1)]
    return np.concatenate(parts).astype(np.float32)


class HandcraftedExtractor:
    """Hand-crafted statistics of the excerpts the product decodes.

    Follows the extractor protocol of :mod:`genre_cnn_core.extract`
    (``settings``, ``namespace()``, ``compute(paths)``), so features go
    through the same cache and error handling.
    """

    kind = "bench-handcrafted"
    version = 1

    def __init__(self, settings):
        self.settings = settings

    def namespace(self) -> dict:
        return {"kind": self.kind, "version": self.version, **self.settings.as_dict()}

    def compute(self, paths: Sequence) -> list:
        from genre_cnn_core.audio import AudioError, load_excerpts

        results = []
        for path in paths:
            s = self.settings
            try:
                excerpts = load_excerpts(path, s.sample_rate, s.excerpt_seconds, s.n_excerpts)
            except AudioError as error:
                results.append(error)
                continue
            results.append(summary_statistics([frame_descriptors(e, s) for e in excerpts]))
        return results


def embedding_columns(part: str) -> slice:
    """Columns of a musicnn embedding: ``"pooled"``, ``"tags"`` or ``"both"``."""
    return {"pooled": slice(0, MUSICNN_POOLED),
            "tags": slice(MUSICNN_POOLED, MUSICNN_POOLED + MUSICNN_TAGS),
            "both": slice(0, MUSICNN_POOLED + MUSICNN_TAGS)}[part]


# ------------------------------------------------------------------- models


def _quiet(*_args, **_kwargs):
    """Training log sink: discards the per-epoch lines."""


def full_logits(decision: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """Logits over all genres from a classifier that saw only ``classes``.

    Genres missing from training get a logit that no softmax can pick.
    """
    decision = np.asarray(decision, dtype=np.float64)
    if decision.ndim == 1:  # binary problems give one margin
        decision = np.column_stack([-decision / 2, decision / 2])
    logits = np.full((len(decision), n_classes), -1e9)
    logits[:, classes] = decision
    return logits


def fit_logistic(x: np.ndarray, y: np.ndarray, strength: float):
    """Standardisation and a class-balanced multinomial logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = LogisticRegression(C=strength, class_weight="balanced", max_iter=5000)
    return make_pipeline(StandardScaler(), classifier).fit(x, y)


def train_baseline(x: np.ndarray, y: np.ndarray, groups: Sequence, n_classes: int, seed: int = 0):
    """Logistic regression with C chosen on an inner grouped split, and a cross-fitted temperature.

    Mirrors :func:`genre_cnn_core.training.train_head`: the split is
    :func:`genre_cnn_core.training.grouped_split`, C minimises the
    validation log loss, the temperature is fitted on the pooled held-out
    logits of ``CALIBRATION_SPLITS`` grouped splits, and the final model is
    refit on every training track.

    Returns
    -------
    callable
        Maps features ``(tracks, dims)`` to probabilities ``(tracks, n_classes)``:
        a pair, calibrated (with the temperature) and not (temperature 1).
    """
    from genre_cnn_core.model import softmax
    from genre_cnn_core.training import CALIBRATION_SPLITS, fit_temperature, grouped_split

    train, val = grouped_split(y, groups, 0.2, seed)
    strength, temperature = 1.0, 1.0
    if len(val) and len(np.unique(y[train])) > 1:
        best = None
        for candidate in BASELINE_C:
            model = fit_logistic(x[train], y[train], candidate)
            logits = full_logits(model.decision_function(x[val]), model.classes_, n_classes)
            loss = -np.log(softmax(logits)[np.arange(len(val)), y[val]] + 1e-12).mean()
            if best is None or loss < best[0]:
                best = (loss, candidate, logits)
        _, strength, val_logits = best
        logits, truth = [val_logits], [y[val]]
        for extra in range(1, CALIBRATION_SPLITS):
            inner, held = grouped_split(y, groups, 0.2, seed + extra)
            if len(held) and len(np.unique(y[inner])) > 1:
                model = fit_logistic(x[inner], y[inner], strength)
                logits.append(full_logits(model.decision_function(x[held]), model.classes_, n_classes))
                truth.append(y[held])
        temperature = fit_temperature(np.concatenate(logits), np.concatenate(truth))
    model = fit_logistic(x, y, strength)

    def predict(features):
        logits = full_logits(model.decision_function(features), model.classes_, n_classes)
        return softmax(logits, temperature), softmax(logits)
    return predict


def baseline_approach(features: np.ndarray, data: Dataset) -> Callable:
    """``fit(train indices) -> predict(test indices)`` of the hand-crafted baseline."""
    def fit(train):
        predict = train_baseline(features[train], data.labels[train], [data.groups[i] for i in train],
                                 len(data.genres))
        return lambda test: predict(features[test])
    return fit


def model_predictions(model, features: list) -> tuple:
    """Calibrated probabilities (``GenreModel.predict_proba``) and those at temperature 1."""
    from genre_cnn_core.model import softmax

    return model.predict_proba(features), softmax(model.logits(features))


def head_approach(embeddings: np.ndarray, data: Dataset, settings, config) -> Callable:
    """``fit(train indices) -> predict(test indices)`` of a head on musicnn embeddings."""
    from genre_cnn_core.training import train_head

    def fit(train):
        model = train_head(embeddings[train], data.labels[train], [data.groups[i] for i in train],
                           data.genres, settings, config, log=_quiet)
        return lambda test: model_predictions(model, list(embeddings[test]))
    return fit


def scratch_approach(spectrograms: list, data: Dataset, settings, config) -> Callable:
    """``fit(train indices) -> predict(test indices)`` of the scratch CNN."""
    from genre_cnn_core.training import train_scratch

    def fit(train):
        model = train_scratch([spectrograms[i] for i in train], data.labels[train],
                              [data.groups[i] for i in train], data.genres, settings, config, log=_quiet)
        return lambda test: model_predictions(model, [spectrograms[i] for i in test])
    return fit


# --------------------------------------------------------------------- loop


def cross_validate(fit: Callable, folds: list, n_tracks: int, n_classes: int) -> tuple:
    """Out-of-fold probabilities of every track, and training seconds per fold.

    Parameters
    ----------
    fit : callable
        ``fit(train indices)`` trains a model and returns
        ``predict(test indices) -> (calibrated, uncalibrated probabilities)``.
    folds : list of np.ndarray
        Test indices of each fold; the other tracks train.
    n_tracks, n_classes : int

    Returns
    -------
    (np.ndarray, np.ndarray, list of float)
        Calibrated and uncalibrated probabilities ``(n_tracks, n_classes)``,
        seconds of each fold's training.
    """
    calibrated, uncalibrated = np.zeros((n_tracks, n_classes)), np.zeros((n_tracks, n_classes))
    seconds = []
    everything = np.arange(n_tracks)
    for test in folds:
        train = np.setdiff1d(everything, test)
        start = time.perf_counter()
        predict = fit(train)
        seconds.append(time.perf_counter() - start)
        calibrated[test], uncalibrated[test] = predict(test)
    return calibrated, uncalibrated, seconds


# ------------------------------------------------------------------ metrics


def bootstrap_scores(y_true: np.ndarray, y_pred: np.ndarray, genres: list, draws: int = BOOTSTRAP_DRAWS,
                     seed: int = 0) -> dict:
    """Accuracy and macro-F1 of ``draws`` resamplings of the tracks.

    The same seed draws the same resamplings for every approach, so two
    approaches' draws can be subtracted for a paired comparison.

    Returns
    -------
    dict
        ``accuracy`` and ``macro_f1``: arrays of ``draws`` values.
    """
    from genre_cnn_core.training import classification_report

    rng = np.random.default_rng(seed)
    scores = {"accuracy": np.empty(draws), "macro_f1": np.empty(draws)}
    for d in range(draws):
        sample = rng.integers(0, len(y_true), len(y_true))
        report = classification_report(y_true[sample], y_pred[sample], genres)
        scores["accuracy"][d], scores["macro_f1"][d] = report["accuracy"], report["macro_f1"]
    return scores


def interval(values: np.ndarray, level: float = 0.95) -> tuple:
    """Central percentile interval."""
    tail = 100 * (1 - level) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


@dataclasses.dataclass
class Result:
    """Pooled out-of-fold evaluation of one approach on one data set."""

    name: str
    report: dict  # classification_report of the pooled predictions
    ece: float  # of the calibrated probabilities
    ece_uncalibrated: float  # at temperature 1
    draws: dict  # bootstrap draws (see bootstrap_scores)
    seconds: list  # training time per fold
    subset_accuracy: float | None = None  # on evaluable tracks, when some are not
    subset_tracks: int = 0  # how many tracks are evaluable


def evaluate(name: str, probabilities: tuple, seconds: list, data: Dataset,
             evaluable: np.ndarray | None = None) -> Result:
    """Score pooled out-of-fold probabilities.

    Parameters
    ----------
    name : str
    probabilities : (np.ndarray, np.ndarray)
        Calibrated and uncalibrated probabilities of every track of ``data``.
    seconds : list of float
        Training time per fold.
    data : Dataset
    evaluable : np.ndarray, optional
        Tracks that can be right (see :func:`evaluable_tracks`).
    """
    probabilities, uncalibrated = probabilities
    from genre_cnn_core.training import classification_report, expected_calibration_error

    predicted = probabilities.argmax(axis=1)
    subset, subset_tracks = None, len(predicted)
    if evaluable is not None and not evaluable.all():
        subset = float((predicted[evaluable] == data.labels[evaluable]).mean())
        subset_tracks = int(evaluable.sum())
    return Result(
        name=name,
        report=classification_report(data.labels, predicted, data.genres),
        ece=expected_calibration_error(probabilities, data.labels),
        ece_uncalibrated=expected_calibration_error(uncalibrated, data.labels),
        draws=bootstrap_scores(data.labels, predicted, data.genres),
        seconds=seconds,
        subset_accuracy=subset,
        subset_tracks=subset_tracks,
    )


def paired_difference(a: Result, b: Result, metric: str = "accuracy") -> tuple:
    """Point difference ``a - b`` and its paired 95 % bootstrap interval."""
    return a.report[metric] - b.report[metric], interval(a.draws[metric] - b.draws[metric])


# ------------------------------------------------------------------- report


def _score(result: Result, metric: str) -> str:
    low, high = interval(result.draws[metric])
    value = result.report[metric]
    if metric == "accuracy":
        return f"{value:.1%} [{low:.1%}, {high:.1%}]"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def summary_table(results: list) -> str:
    """One row per approach: scores with intervals, calibration, training time."""
    subset = next((r.subset_tracks for r in results if r.subset_accuracy is not None), None)
    lines = ["| approach | accuracy [95% CI] | macro-F1 [95% CI] | ECE | ECE at T=1 | train s/fold (mean, total)"
             + (f" | accuracy on the {subset} evaluable tracks" if subset else "") + " |",
             "|---|---|---|---|---|---" + ("|---" if subset else "") + "|"]
    for r in results:
        row = (f"| {r.name} | {_score(r, 'accuracy')} | {_score(r, 'macro_f1')} | {r.ece:.3f} | "
               f"{r.ece_uncalibrated:.3f} | {np.mean(r.seconds):.2f} ({np.sum(r.seconds):.0f})")
        if subset:
            row += f" | {r.subset_accuracy:.1%}" if r.subset_accuracy is not None else " | "
        lines.append(row + " |")
    return "\n".join(lines)


def recall_table(results: list, genres: list) -> str:
    """Per-genre recall of each approach (support in the header)."""
    support = results[0].report["per_genre"]
    lines = ["| approach | " + " | ".join(f"{g} ({support[g]['support']})" for g in genres) + " |",
             "|---|" + "---|" * len(genres)]
    for r in results:
        lines.append(f"| {r.name} | " + " | ".join(f"{r.report['per_genre'][g]['recall']:.2f}" for g in genres)
                     + " |")
    return "\n".join(lines)


def confusion_block(result: Result, genres: list) -> str:
    """Pooled confusion matrix as preformatted text (rows: truth, columns: predicted)."""
    width = max(len(g) for g in genres)
    short = [g[:5] for g in genres]
    lines = [f"{result.name}: rows = tagged genre, columns = predicted",
             " " * (width + 2) + " ".join(f"{s:>5}" for s in short)]
    for genre, row in zip(genres, result.report["confusion"]):
        lines.append(f"{genre:<{width}}  " + " ".join(f"{v:5d}" for v in row))
    return "```\n" + "\n".join(lines) + "\n```"


def verdicts(comparisons: list) -> list:
    """"What helped / what did not" lines from paired bootstrap comparisons.

    Parameters
    ----------
    comparisons : list of (str, Result, Result)
        Description, changed approach, reference approach (same tracks).
    """
    lines = []
    for description, changed, reference in comparisons:
        difference, (low, high) = paired_difference(changed, reference)
        f1_difference, (f1_low, f1_high) = paired_difference(changed, reference, "macro_f1")
        if low > 0:
            verdict = "helped"
        elif high < 0:
            verdict = "hurt"
        else:
            verdict = "no clear difference"
        lines.append(f"- {description}: **{verdict}** (accuracy {difference:+.1%}, paired 95% CI "
                     f"[{low:+.1%}, {high:+.1%}]; macro-F1 {f1_difference:+.3f} [{f1_low:+.3f}, {f1_high:+.3f}]; "
                     f"ECE {changed.ece:.3f} vs {reference.ece:.3f})")
    return lines


def machine_description() -> str:
    """CPU model, CPUs and cores (from ``lscpu``), and the threads used."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = ""
    fields = dict(re.findall(r"^([^:\n]+):\s*(.+)$", text, flags=re.MULTILINE))
    model = fields.get("Model name", platform.processor() or "unknown CPU").strip()
    cpus = fields.get("CPU(s)", str(os.cpu_count())).strip()
    cores = fields.get("Core(s) per socket", "?").strip()
    sockets = fields.get("Socket(s)", "?").strip()
    return (f"{model} ({cpus} CPUs: {sockets} socket(s) x {cores} cores), shared with other work; "
            "this benchmark uses 1 thread (torch, BLAS and feature extraction)")


def replace_section(document: str, heading: str, body: str) -> str:
    """Put ``body`` under ``heading``, replacing that section or appending it.

    A section runs from its heading to the next heading of the same or a
    higher level.
    """
    level = len(heading) - len(heading.lstrip("#"))
    section = f"{heading}\n\n{body.strip()}\n"
    lines = document.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        return (document.rstrip() + "\n\n" if document.strip() else "# Benchmarks\n\n") + section
    end = len(lines)
    for i in range(start + 1, len(lines)):
        match = re.match(r"(#+)\s", lines[i])
        if match and len(match.group(1)) <= level:
            end = i
            break
    after = "".join(lines[end:])
    return "".join(lines[:start]) + section + ("\n" + after if after else "")


# -------------------------------------------------------------- experiments


@dataclasses.dataclass
class Plan:
    """What one run covers.

    Attributes
    ----------
    datasets : tuple of str
    n_splits : int
        Folds of the artist-grouped stratified k-fold shared by every approach.
    scratch_epochs : int or None
        Epochs of the scratch CNN; None trains the library's default recipe (``TrainConfig()``).
    n_excerpts, parts, hidden : tuple
        Values of the musicnn knobs tried, one knob at a time.
    checked_parts, checked_excerpts : tuple
        Embedding parts and patch counts whose variants (other than the
        default's) are also run leave-one-group-out and cross-collection.
    logo_check : bool
        Also run the fast approaches leave-one-artist-group-out on gtzan-dev.
    grid_parts, grid_excerpts, grid_seeds : tuple
        Embedding parts x patches per track tried together on gtzan-dev
        (the default's hidden units), each on the k folds shuffled with
        every seed of ``grid_seeds``.
    transfer : bool
        Also train on gtzan-dev and test on jamendo.
    """

    datasets: tuple
    n_splits: int
    scratch_epochs: int | None
    n_excerpts: tuple
    parts: tuple
    hidden: tuple
    checked_parts: tuple
    checked_excerpts: tuple
    logo_check: bool
    grid_parts: tuple
    grid_excerpts: tuple
    grid_seeds: tuple
    transfer: bool


FULL = Plan(
    datasets=("gtzan-dev", "jamendo"), n_splits=5, scratch_epochs=None,
    n_excerpts=(1, 2, 4, 8), parts=("pooled", "tags", "both"), hidden=(0, 256),
    checked_parts=("tags", "both"), checked_excerpts=(4,), logo_check=True,
    grid_parts=("tags", "both"), grid_excerpts=(1, 2, 4, 8), grid_seeds=(0, 1, 2), transfer=True,
)
QUICK = Plan(
    datasets=("gtzan-dev",), n_splits=5, scratch_epochs=8,
    n_excerpts=(1, 4), parts=("tags", "both"), hidden=(0,),
    checked_parts=(), checked_excerpts=(), logo_check=False,
    grid_parts=(), grid_excerpts=(), grid_seeds=(), transfer=False,
)


@dataclasses.dataclass
class Features:
    """Per-track features of one data set, aligned with its tracks."""

    handcrafted: np.ndarray  # (tracks, 268)
    logmel: list  # (excerpts, mels, frames) per track
    musicnn: dict  # n_excerpts -> (FeatureSettings, (tracks, 1556) array)


def load_features(data: Dataset, plan: Plan, cache, log) -> Features:
    """Every feature the plan needs, through the cache."""
    from genre_cnn_core.extract import LogMelExtractor, MusicnnExtractor
    from genre_cnn_core.pipeline import DEFAULT_SETTINGS

    scratch = DEFAULT_SETTINGS["scratch"]
    log(f"{data.name}: hand-crafted features")
    handcrafted = np.stack(extract_all(data.paths, HandcraftedExtractor(scratch), cache))
    log(f"{data.name}: log-mel excerpts")
    logmel = extract_all(data.paths, LogMelExtractor(scratch), cache)
    musicnn = {}
    for n in sorted(set(plan.n_excerpts) | set(plan.grid_excerpts) | {default_recipe().n_excerpts}):
        log(f"{data.name}: musicnn embeddings, {n} patches per track")
        settings = dataclasses.replace(DEFAULT_SETTINGS["musicnn"], n_excerpts=n)
        musicnn[n] = (settings, np.stack(extract_all(data.paths, MusicnnExtractor(settings), cache)).astype(np.float32))
    return Features(handcrafted, logmel, musicnn)


@dataclasses.dataclass
class Approach:
    """A named way to train, as ``fit(train indices) -> predict(test indices)``."""

    name: str
    fit: Callable
    fast: bool  # cheap enough for leave-one-group-out's many folds


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a musicnn head is trained: embedding part, patches per track, hidden units."""

    part: str
    n_excerpts: int
    hidden: int


def default_recipe() -> Recipe:
    """The recipe of the library's defaults (``DEFAULT_SETTINGS`` and ``TrainConfig()``).

    Raises
    ------
    RuntimeError
        When ``TrainConfig.head_tags`` selects columns no part matches.
    """
    from genre_cnn_core.pipeline import DEFAULT_SETTINGS
    from genre_cnn_core.training import TrainConfig

    config = TrainConfig()
    head_tags = getattr(config, "head_tags", 0)  # older versions read the whole embedding
    part = {0: "both", MUSICNN_TAGS: "tags"}.get(head_tags)
    if part is None:
        raise RuntimeError(f"TrainConfig.head_tags={head_tags} matches no embedding part of this benchmark")
    return Recipe(part, DEFAULT_SETTINGS["musicnn"].n_excerpts, config.hidden)


def head_config(hidden: int):
    """TrainConfig of a head that reads every column it is given (the benchmark slices them)."""
    from genre_cnn_core.training import TrainConfig

    config = TrainConfig(hidden=hidden, device="cpu")
    if hasattr(config, "head_tags"):
        config = dataclasses.replace(config, head_tags=0)
    return config


def default_name(recipe: Recipe) -> str:
    """Name of the default musicnn recipe."""
    return f"musicnn default ({recipe.part}, {recipe.n_excerpts} patches, hidden={recipe.hidden})"


def musicnn_variants(plan: Plan, default: Recipe) -> list:
    """(name, Recipe) of the musicnn heads: the default, then one knob changed at a time."""
    variants = [(default_name(default), default)]
    variants += [(f"musicnn parts={p}", dataclasses.replace(default, part=p)) for p in plan.parts if p != default.part]
    variants += [(f"musicnn patches={n}", dataclasses.replace(default, n_excerpts=n))
                 for n in plan.n_excerpts if n != default.n_excerpts]
    variants += [(f"musicnn hidden={h}", dataclasses.replace(default, hidden=h))
                 for h in plan.hidden if h != default.hidden]
    return variants


def scratch_name(plan: Plan) -> str:
    """Name of the scratch CNN approach of a plan."""
    if plan.scratch_epochs is None:
        return "scratch CNN (default recipe)"
    return f"scratch CNN ({plan.scratch_epochs} epochs)"


def scratch_config_text(plan: Plan) -> str:
    """The scratch CNN's training settings, as the report states them."""
    from genre_cnn_core.training import TrainConfig

    config = TrainConfig()
    epochs = config.epochs if plan.scratch_epochs is None else plan.scratch_epochs
    kind = "`TrainConfig()` (the library default)" if plan.scratch_epochs is None else \
        f"`TrainConfig(epochs={plan.scratch_epochs})`"
    return (f"{kind}: {epochs} epochs, batch {config.batch_size}, peak learning rate {config.learning_rate:g}, "
            f"mixup alpha {config.mixup:g}, network {config.network or 'defaults'}")


def scratch_excerpts_text() -> str:
    """The scratch CNN's excerpts, e.g. ``3 x 10 s``."""
    from genre_cnn_core.pipeline import DEFAULT_SETTINGS

    settings = DEFAULT_SETTINGS["scratch"]
    return f"{settings.n_excerpts} x {settings.excerpt_seconds:g} s at {settings.sample_rate // 1000} kHz"


def build_approaches(data: Dataset, features: Features, plan: Plan) -> list:
    """Baseline, scratch CNN, default musicnn head, then the musicnn variants."""
    from genre_cnn_core.pipeline import DEFAULT_SETTINGS
    from genre_cnn_core.training import TrainConfig

    scratch_config = TrainConfig(device="cpu")
    if plan.scratch_epochs is not None:
        scratch_config = dataclasses.replace(scratch_config, epochs=plan.scratch_epochs)
    found = [
        Approach("baseline (hand-crafted + logistic regression)", baseline_approach(features.handcrafted, data),
                 True),
        Approach(scratch_name(plan),
                 scratch_approach(features.logmel, data, DEFAULT_SETTINGS["scratch"], scratch_config), False),
    ]
    for name, recipe in musicnn_variants(plan, default_recipe()):
        settings, matrix = features.musicnn[recipe.n_excerpts]
        columns = np.ascontiguousarray(matrix[:, embedding_columns(recipe.part)])
        found.append(Approach(name, head_approach(columns, data, settings, head_config(recipe.hidden)),
                              recipe.hidden == 0))
    return found


def run_folds(data: Dataset, folds: list, approaches: list, log) -> list:
    """Cross-validate each approach on the same folds and score it."""
    check_folds(folds, data.groups, len(data.paths))
    evaluable = evaluable_tracks(data.labels, folds)
    results = []
    for approach in approaches:
        start = time.perf_counter()
        *probabilities, seconds = cross_validate(approach.fit, folds, len(data.paths), len(data.genres))
        results.append(evaluate(approach.name, probabilities, seconds, data, evaluable))
        log(f"  {approach.name}: accuracy {results[-1].report['accuracy']:.1%} "
            f"({time.perf_counter() - start:.0f} s, {len(folds)} folds)")
    return results


@dataclasses.dataclass
class DatasetRun:
    """Everything measured on one data set."""

    data: Dataset
    folds: list
    results: list
    seconds: float = 0.0
    logo_folds: list | None = None
    logo_results: list | None = None
    grid: dict = dataclasses.field(default_factory=dict)  # (part, n_excerpts) -> accuracy per grid seed


def checked_approaches(approaches: list, plan: Plan, fast_only: bool) -> list:
    """The main approaches and the plan's checked variants (optionally only the fast ones)."""
    names = ({f"musicnn parts={p}" for p in plan.checked_parts}
             | {f"musicnn patches={n}" for n in plan.checked_excerpts})
    chosen = approaches[:3] + [a for a in approaches[3:] if a.name in names]
    return [a for a in chosen if a.fast or not fast_only]


def recipe_grid(data: Dataset, features: Features, plan: Plan) -> dict:
    """Accuracy of every (part, patches) head of the plan's grid on each fold shuffle.

    Returns
    -------
    dict
        ``(part, n_excerpts) -> list of accuracies``, one per grid seed.
    """
    hidden = default_recipe().hidden
    shuffles = [grouped_folds(data.labels, data.groups, plan.n_splits, seed) for seed in plan.grid_seeds]
    grid = {}
    for part in plan.grid_parts:
        for n in plan.grid_excerpts:
            settings, matrix = features.musicnn[n]
            columns = np.ascontiguousarray(matrix[:, embedding_columns(part)])
            fit = head_approach(columns, data, settings, head_config(hidden))
            grid[part, n] = []
            for folds in shuffles:
                calibrated, _, _ = cross_validate(fit, folds, len(data.paths), len(data.genres))
                grid[part, n].append(float((calibrated.argmax(axis=1) == data.labels).mean()))
    return grid


def run_dataset(data: Dataset, features: Features, plan: Plan, log) -> DatasetRun:
    """All approaches on shared artist-grouped folds, then the checks of the fast ones on gtzan-dev."""
    start = time.perf_counter()
    approaches = build_approaches(data, features, plan)
    log(f"{data.name}: {plan.n_splits}-fold artist-grouped cross-validation")
    folds = grouped_folds(data.labels, data.groups, plan.n_splits)
    run = DatasetRun(data, folds, run_folds(data, folds, approaches, log))
    if data.name == "gtzan-dev":
        fast = checked_approaches(approaches, plan, fast_only=True)
        if plan.logo_check:
            run.logo_folds = leave_one_group_out(data.groups)
            log(f"{data.name}: leave-one-artist-group-out ({len(run.logo_folds)} folds)")
            run.logo_results = run_folds(data, run.logo_folds, fast, log)
        if plan.grid_seeds:
            log(f"{data.name}: parts x patches grid over fold seeds {plan.grid_seeds}")
            run.grid = recipe_grid(data, features, plan)
    run.seconds = time.perf_counter() - start
    return run


def concatenate_features(first: Features, second: Features, rows: list) -> Features:
    """``first``'s features followed by those of ``second``'s tracks ``rows``."""
    return Features(
        handcrafted=np.concatenate([first.handcrafted, second.handcrafted[rows]]),
        logmel=first.logmel + [second.logmel[i] for i in rows],
        musicnn={n: (settings, np.concatenate([matrix, second.musicnn[n][1][rows]]))
                 for n, (settings, matrix) in first.musicnn.items() if n in second.musicnn},
    )


def run_transfer(source: Dataset, source_features: Features, target: Dataset, target_features: Features,
                 plan: Plan, log) -> tuple:
    """Train on all of ``source``, test on the ``target`` tracks of genres ``source`` has.

    No artist is on both sides (different collections). The main
    approaches and the checked variants, one training each.

    Returns
    -------
    (Dataset, list of Result)
        The tested tracks (labels in ``source``'s genre space) and their scores.
    """
    shared = [i for i, label in enumerate(target.labels) if target.genres[label] in source.genres]
    tested = Dataset(name=f"{source.name} -> {target.name}", paths=[target.paths[i] for i in shared],
                     labels=np.array([source.genres.index(target.genres[target.labels[i]]) for i in shared]),
                     genres=source.genres, groups=[f"{target.name}:{target.groups[i]}" for i in shared])
    combined = Dataset(name=tested.name, paths=source.paths + tested.paths,
                       labels=np.concatenate([source.labels, tested.labels]), genres=source.genres,
                       groups=source.groups + tested.groups)
    features = concatenate_features(source_features, target_features, shared)
    train = np.arange(len(source.paths))
    test = np.arange(len(source.paths), len(combined.paths))
    check_folds([train, test], combined.groups, len(combined.paths))
    results = []
    for approach in checked_approaches(build_approaches(combined, features, plan), plan, fast_only=False):
        start = time.perf_counter()
        predict = approach.fit(train)
        seconds = [time.perf_counter() - start]
        results.append(evaluate(approach.name, predict(test), seconds, tested))
        log(f"transfer: {approach.name}: accuracy {results[-1].report['accuracy']:.1%}")
    return tested, results


# ------------------------------------------------------------------- render


def fold_sizes(folds: list) -> str:
    sizes = [len(f) for f in folds]
    return f"{min(sizes)}-{max(sizes)}"


def dataset_section(run: DatasetRun, plan: Plan) -> str:
    """Markdown of one data set's results."""
    data, results = run.data, run.results
    evaluable = evaluable_tracks(data.labels, run.folds)
    artists = len(set(data.groups))
    text = [f"### {data.name}: {len(data.paths)} tracks, {len(data.genres)} genres, {artists} artists",
            "",
            f"Folds: stratified group {plan.n_splits}-fold over artists (scikit-learn StratifiedGroupKFold, "
            f"shuffled, seed 0), the same for every approach; {fold_sizes(run.folds)} tracks held out per fold. "
            f"Run time {run.seconds:.0f} s."]
    if not evaluable.all():
        missing = sorted({data.genres[label] for label in data.labels[~evaluable]})
        text += ["", f"{(~evaluable).sum()} of {len(data.paths)} tracks are of genres only one artist plays "
                 f"({', '.join(missing)}): whatever the folds, that genre is absent from training when the "
                 "artist is held out, so those tracks are always wrong (leave-one-artist-out has the same "
                 "problem). The last column scores only the tracks whose genre is in training."]
    text += ["", summary_table(results), "", "Per-genre recall (pooled over folds; support in brackets):", "",
             recall_table(results, data.genres), "", "Confusion matrices (pooled over folds):", ""]
    for r in results[:3]:
        text += [confusion_block(r, data.genres), ""]
    if run.logo_results:
        text += [f"Leave-one-artist-group-out ({len(run.logo_folds)} folds, {fold_sizes(run.logo_folds)} tracks "
                 "held out each), for the approaches fast enough to train that often:", "",
                 summary_table(run.logo_results), "", recall_table(run.logo_results, data.genres), ""]
    if run.grid:
        text += [f"Embedding parts x patches per track (hidden={default_recipe().hidden}), accuracy on {plan.n_splits} "
                 f"artist-grouped folds, mean (min-max) over fold shuffles with seeds "
                 f"{', '.join(map(str, plan.grid_seeds))}:", "", grid_table(run.grid), ""]
    return "\n".join(text)


def grid_table(grid: dict) -> str:
    """Rows: embedding parts; columns: patches per track."""
    parts = list(dict.fromkeys(part for part, _ in grid))
    excerpts = sorted({n for _, n in grid})
    lines = ["| parts | " + " | ".join(f"{n} patches" for n in excerpts) + " |", "|---|" + "---|" * len(excerpts)]
    for part in parts:
        cells = [f"{np.mean(grid[part, n]):.1%} ({min(grid[part, n]):.1%}-{max(grid[part, n]):.1%})"
                 for n in excerpts]
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def grid_verdicts(grid: dict) -> list:
    """The best grid cell against the default recipe's cell."""
    default = default_recipe()
    means = {cell: float(np.mean(values)) for cell, values in grid.items()}
    best = max(means, key=means.get)
    line = (f"- parts x patches grid (mean accuracy over fold shuffles): best {best[0]} with {best[1]} patches "
            f"({means[best]:.1%})")
    if (default.part, default.n_excerpts) in means:
        line += (f"; the default ({default.part}, {default.n_excerpts} patches) "
                 f"{means[default.part, default.n_excerpts]:.1%}")
    return [line]


def transfer_section(subset: Dataset, results: list) -> str:
    """Markdown of the cross-collection test."""
    present = sorted({subset.genres[label] for label in subset.labels})
    return "\n".join([
        f"### Cross-collection: train on all of gtzan-dev, test on jamendo ({len(subset.paths)} tracks of "
        f"{', '.join(present)})", "",
        f"Predictions range over the {len(subset.genres)} GTZAN genres; no artist is on both sides. "
        "The training time is one training.", "",
        summary_table(results), "",
        recall_table(results, present), ""])


def comparisons(results: list) -> list:
    """(description, changed, reference) pairs for the verdicts.

    ``results`` starts with the baseline, then the scratch CNN when it was
    run, then the default musicnn head, then musicnn variants.
    """
    by_kind = {"baseline": None, "scratch": None}
    for r in results:
        for kind in by_kind:
            if r.name.startswith(kind) and by_kind[kind] is None:
                by_kind[kind] = r
    musicnn = next(r for r in results if r.name.startswith("musicnn default"))
    baseline, scratch = by_kind["baseline"], by_kind["scratch"]
    pairs = [("default musicnn head instead of the hand-crafted baseline", musicnn, baseline)]
    if scratch is not None:
        pairs += [("default musicnn head instead of the scratch CNN", musicnn, scratch),
                  ("scratch CNN instead of the hand-crafted baseline", scratch, baseline)]
    variants = [r for r in results if r.name.startswith("musicnn ") and r is not musicnn]
    return pairs + [(f"{r.name.replace('musicnn ', '')} instead of the default musicnn recipe", r, musicnn)
                    for r in variants]


#: Why the approaches share k artist-grouped folds rather than leave-one-group-out.
FOLD_CHOICE = (
    "Leave-one-artist-group-out on gtzan-dev (one fold per artist group) would cost 13-30 s per fold "
    "for the scratch CNN and for hidden=256 on one thread, far over the time budget, so all approaches "
    "share 5 artist-grouped folds; as checks, the fast ones are also run leave-one-artist-group-out, and a "
    "grid of musicnn parts x patches runs on several shuffles of the 5 folds (the knobs interact)."
)


def render(runs: list, transfer, plan: Plan, command: str, wall: float, feature_seconds: float) -> str:
    """The body of the ``## Accuracy`` section."""
    parts = [
        f"Date: {datetime.date.today().isoformat()}. Machine: {machine_description()}.",
        "",
        f"Command: `{command}`; wall time {wall / 60:.1f} min, of which {feature_seconds:.0f} s loading or "
        "extracting features (cached under bench/out/cache; a first run decodes and extracts everything, a few "
        "minutes more).",
        "",
        "Method: folds never split an artist (`artist_group` on gtzan-dev, `artist` on jamendo); every approach "
        "trains on the same folds, and the out-of-fold predictions are pooled and scored. Intervals: 95% "
        f"percentile bootstrap over tracks ({BOOTSTRAP_DRAWS} draws; tracks of one artist are not independent, "
        "so they are somewhat optimistic). ECE: expected calibration error (10 bins) of the temperature-"
        "calibrated probabilities (`GenreModel.predict_proba`); ECE at T=1: the same without the temperature, "
        "to show what the calibration does. Inside each training fold an inner artist-grouped "
        "split (`training.grouped_split`) picks the head's L2 penalty or the baseline's C (their temperature is "
        "fitted on the pooled held-out logits of 5 such splits); for the scratch CNN it only reports and fits the "
        "temperature, and the final weights are kept. Baseline: mean and std of 20 MFCCs, 96 log-mel bands, 6 spectral-contrast "
        "bands and 12 chroma bins over the frames of the scratch CNN's excerpts (3 x 10 s at 16 kHz, decoded by "
        "`audio.load_excerpts`), standardised, class-balanced logistic regression. Scratch CNN: "
        f"`train_scratch` with {scratch_config_text(plan)} on the default log-mel excerpts "
        f"(`DEFAULT_SETTINGS['scratch']`: {scratch_excerpts_text()}). "
        "The default musicnn recipe is read from the library (`DEFAULT_SETTINGS['musicnn']`, `TrainConfig()`'s "
        "`head_tags` and `hidden`); the variants change one knob of it at a time (the benchmark slices the "
        "embedding itself and trains with `head_tags=0`, equivalent to the library's slicing): parts (pooled = "
        "temporal mean and max of the 753 mid-level features, 1506 dims; tags = the 50 tag probabilities; both = "
        "1556 dims), "
        "patches per track (3 s each, `FeatureSettings(excerpt_seconds=3.0, n_excerpts=N)`), and "
        "`TrainConfig.hidden`. " + FOLD_CHOICE,
        "",
    ]
    for run in runs:
        parts += [dataset_section(run, plan), ""]
    if transfer is not None:
        parts += [transfer_section(*transfer), ""]
    parts += ["### What helped / what did not", "",
              "Paired bootstrap of the accuracy difference on the same tracks and folds; \"helped\" or \"hurt\" "
              "only when its 95% interval excludes zero.", ""]
    for run in runs:
        parts += [f"{run.data.name} ({plan.n_splits} artist-grouped folds):", ""] + verdicts(comparisons(run.results))
        parts += [""]
        if run.logo_results:
            parts += [f"{run.data.name} (leave-one-artist-group-out):", ""] + verdicts(comparisons(run.logo_results))
            parts += [""]
        if run.grid:
            parts += [f"{run.data.name} (parts x patches grid):", ""] + grid_verdicts(run.grid) + [""]
    if transfer is not None:
        parts += ["gtzan-dev -> jamendo:", ""] + verdicts(comparisons(transfer[1])) + [""]
    return "\n".join(parts).rstrip() + "\n"


def run_plan(plan: Plan, data_root: str, cache, log) -> tuple:
    """Every data set of the plan, then the cross-collection test.

    Returns
    -------
    (list of DatasetRun, tuple or None, float)
        The runs, the cross-collection test, and the seconds spent loading
        or extracting features.
    """
    loaded, runs, feature_seconds = {}, [], 0.0
    for name in plan.datasets:
        data = load_dataset(data_root, name, DATASETS[name])
        start = time.perf_counter()
        features = load_features(data, plan, cache, log)
        feature_seconds += time.perf_counter() - start
        loaded[name] = (data, features)
        runs.append(run_dataset(data, features, plan, log))
    transfer = None
    if plan.transfer and {"gtzan-dev", "jamendo"} <= set(loaded):
        transfer = run_transfer(*loaded["gtzan-dev"], *loaded["jamendo"], plan, log)
    return runs, transfer, feature_seconds


def write_section(path: str, body: str, heading: str = HEADING) -> None:
    """Replace (or add) the ``heading`` section (default ``## Accuracy``) of a Markdown file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    existing = ""
    if os.path.exists(path):
        with open(path) as handle:
            existing = handle.read()
    with open(path, "w") as handle:
        handle.write(replace_section(existing, heading, body))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help="folder holding gtzan-dev/ and jamendo/")
    parser.add_argument("--quick", action="store_true",
                        help="gtzan-dev only, fewer variants, short scratch training (about 2 min)")
    parser.add_argument("--output", help="Markdown file whose '## Accuracy' section is written "
                        f"(default {os.path.relpath(RESULTS, REPO)}; with --quick "
                        f"{os.path.relpath(QUICK_RESULTS, REPO)})")
    args = parser.parse_args(argv)

    import torch
    from threadpoolctl import threadpool_limits

    from genre_cnn_core.cache import FeatureCache

    def log(line):
        print(line, file=sys.stderr, flush=True)

    plan = QUICK if args.quick else FULL
    wall = time.perf_counter()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):  # BLAS too: the machine is shared
        runs, transfer, feature_seconds = run_plan(plan, args.data, FeatureCache(CACHE_DIR), log)

    arguments = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["/work/venv/bin/python", "bench/accuracy.py"] + [shlex.quote(a) for a in arguments])
    body = render(runs, transfer, plan, command, time.perf_counter() - wall, feature_seconds)
    print(f"{HEADING}\n\n{body}")
    output = args.output or (QUICK_RESULTS if args.quick else RESULTS)
    write_section(output, body)
    log(f"wrote {output}")


if __name__ == "__main__":
    main()
