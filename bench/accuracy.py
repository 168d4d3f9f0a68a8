"""Accuracy of the genre models on artists they have never heard, in one command.

    python bench/accuracy.py [--quick] [--data ../shared/data]

One experiment, read top to bottom:

1. Data: the gtzan-dev clips (10 genres, artists = Sturm's artist groups),
   and for the transfer test the Jamendo tracks of genres GTZAN has.
2. Features, through the product's extractors and cache (``bench/out/cache``):
   hand-crafted statistics for the baseline, musicnn embeddings, log-mel
   excerpts for the scratch CNN.
3. Approaches, each trained on the training side of a fold only:

   * ``baseline``: round 1's hand-crafted features (MFCC, log-mel, spectral
     contrast and chroma statistics) with the product's linear head
     (:func:`genre_cnn_core.linear_head.train_linear_head`: standardised
     multinomial logistic regression, L2 penalty chosen on inner
     artist-grouped folds, Platt-calibrated), so that only the features
     differ from the musicnn head;
   * ``musicnn``: the default head, ``get_backbone("musicnn").train`` on the
     cached embeddings (it runs its own inner folds);
   * ``softmax``: a plain single-label softmax head on the same musicnn
     features, with temperature scaling, for comparison with the
     multi-label head;
   * ``scratch``: the scratch CNN's default recipe, ``get_backbone("scratch").train``.

4. Folds: 5 artist-grouped folds (:func:`genre_cnn_core.splits.grouped_folds`,
   seed 0, and seeds 1 and 2 as checks), and leave-one-artist-group-out
   for the fast approaches. Never a random split.
5. Scores of the pooled held-out probabilities with the product's
   :func:`genre_cnn_core.metrics.genre_report`: top-1 accuracy of the primary
   genre (95% intervals by resampling artists, and Wilson's), micro- and
   macro-F1, mAP, ECE; paired differences on the same artist resamplings.
6. Transfer: train on all of gtzan-dev, test on Jamendo.

Writes the ``## Accuracy`` section of ``bench/RESULTS.md`` (``--quick``:
``bench/out/accuracy-quick.md``) and prints it. Everything runs on one CPU
thread; the figures do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import datasets
import measure
import numpy as np
import results

HEADING = "## Accuracy"
QUICK_OUTPUT = results.REPO / "bench" / "out" / "accuracy-quick.md"
FOLDS = 5
#: Round 1's figure for the default musicnn head, on the 87 clips gtzan-dev had then.
ROUND1_MUSICNN = "71.3% [95% CI 62.1-80.5%] on the 87 clips of round 1"


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one run covers."""

    fold_seeds: tuple  # 5-fold shuffles; the first is the main table
    leave_one_out: bool  # also leave one artist group out (fast approaches)
    scratch_config: dict  # TrainConfig arguments of the scratch CNN
    draws: int  # artist resamplings for the intervals


#: The scratch CNN's schedule has a time budget (``TrainConfig.minutes``) that a loaded machine can make
#: it shorten; the benchmark raises it so that the recipe's full schedule is what it measures.
SCRATCH_MINUTES = 60.0
FULL = Plan(fold_seeds=(0, 1, 2), leave_one_out=True, scratch_config={}, draws=2000)
QUICK = Plan(fold_seeds=(0,), leave_one_out=False, scratch_config={"epochs": 4}, draws=500)


# ------------------------------------------------------------------ data


@dataclasses.dataclass
class Dataset:
    """Single-genre tracks: what the folds split and the scores judge."""

    name: str
    tracks: list
    genres: list  # sorted genre names
    labels: np.ndarray  # index into genres, per track

    @property
    def groups(self) -> list:
        return [t.artist for t in self.tracks]

    @property
    def paths(self) -> list:
        return [t.path for t in self.tracks]

    @property
    def targets(self) -> np.ndarray:
        return datasets.one_hot(self.labels, len(self.genres))


def gtzan(root: Path) -> Dataset:
    tracks = datasets.load_gtzan(root)
    genres = sorted({t.genre for t in tracks})
    return Dataset("gtzan-dev", tracks, genres, np.array([genres.index(t.genre) for t in tracks]))


def jamendo_in(root: Path, genres: list) -> Dataset:
    """The Jamendo tracks of the given genres, labelled in their order."""
    tracks = [t for t in datasets.load_jamendo(root) if t.genre in genres]
    return Dataset("jamendo", tracks, genres, np.array([genres.index(t.genre) for t in tracks]))


# ------------------------------------------------------------------ features


def frame_descriptors(y: np.ndarray, settings) -> dict:
    """Frame-wise hand-crafted descriptors of one mono excerpt.

    Returns
    -------
    dict of str to np.ndarray
        ``(dimensions, frames)``: 20 MFCCs, the product's log-mel bands,
        6 spectral-contrast bands and 12 chroma bins.
    """
    import librosa

    from genre_cnn_core.features import log_mel

    sr, hop = settings.sample_rate, settings.hop_length
    return {
        "mfcc": librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20, n_fft=settings.n_fft, hop_length=hop),
        "logmel": log_mel(y, settings),
        # Five bands above 200 Hz fit under the 8 kHz Nyquist frequency of 16 kHz audio.
        "contrast": librosa.feature.spectral_contrast(y=y, sr=sr, n_fft=settings.n_fft, hop_length=hop, n_bands=5),
        # tuning=0 (A440) skips librosa's tuning estimate, whose numba gufunc
        # crashed the interpreter with numba 0.68 / llvmlite 0.50 here.
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
    """Round 1's baseline features of the excerpts the scratch CNN decodes.

    Follows the extractor protocol of :mod:`genre_cnn_core.backbones`, so its
    features go through the product's cache and checks.
    """

    kind = "bench-handcrafted"
    version = 1
    size = 2 * (20 + 96 + 6 + 12)

    def __init__(self, settings):
        self.settings = settings

    def namespace(self) -> dict:
        return {"kind": self.kind, "version": self.version, **self.settings.as_dict()}

    def check(self, features: np.ndarray) -> str | None:
        if features.shape != (self.size,) or features.dtype != np.float32 or not np.isfinite(features).all():
            return f"{self.size} finite float32 values expected, not {features.shape} {features.dtype}"
        return None

    def compute(self, paths: Sequence) -> list:
        from genre_cnn_core.audio import AudioError, load_excerpts

        s = self.settings
        found = []
        for path in paths:
            try:
                excerpts = load_excerpts(path, s.sample_rate, s.excerpt_seconds, s.n_excerpts)
            except AudioError as error:
                found.append(error)
                continue
            found.append(summary_statistics([frame_descriptors(e, s) for e in excerpts]))
        return found


@dataclasses.dataclass
class Features:
    """Each approach's features of one data set's tracks."""

    handcrafted: np.ndarray
    musicnn: list
    logmel: list


def load_features(data: Dataset, cache, log) -> Features:
    from genre_cnn_core.backbones import get_backbone

    scratch_settings = get_backbone("scratch").default_settings
    return Features(
        handcrafted=np.stack(datasets.features_of(data.paths, HandcraftedExtractor(scratch_settings), cache, log)),
        musicnn=datasets.backbone_features("musicnn", data.paths, cache, log),
        logmel=datasets.backbone_features("scratch", data.paths, cache, log),
    )


# ------------------------------------------------------------------ approaches
#
# Each approach is ``fit(train indices, genre columns) -> predict(test indices)``
# (see datasets.heldout_probabilities): it learns the genres that have training
# tracks and returns held-out probabilities over them.


def renumbered(labels: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Labels as indices into ``columns``."""
    position = {int(c): n for n, c in enumerate(columns)}
    return np.array([position[int(label)] for label in labels])


def baseline_fit(x: np.ndarray, labels: np.ndarray, groups: list) -> Callable:
    """The product's linear head on hand-crafted features."""
    from genre_cnn_core.linear_head import train_linear_head
    from genre_cnn_core.metrics import calibrate

    def fit(train, columns):
        strata = renumbered(labels[train], columns)
        found = train_linear_head(x[train], datasets.one_hot(strata, len(columns)), strata,
                                  [groups[i] for i in train])
        return lambda test: calibrate(found.head.logits(x[test]), found.calibration)
    return fit


def musicnn_fit(features: list, data: Dataset) -> Callable:
    """The product's default musicnn head."""
    from genre_cnn_core.backbones import TrainConfig

    return datasets.backbone_fit("musicnn", features, data.targets, data.labels, data.groups,
                                 TrainConfig())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature minimising the softmax log loss of held-out logits."""
    from scipy.optimize import minimize_scalar

    from genre_cnn_core.metrics import log_softmax

    def loss(log_t):
        return -log_softmax(logits / np.exp(log_t))[np.arange(len(labels)), labels].mean()
    return float(np.exp(minimize_scalar(loss, bounds=(-3.0, 3.0), method="bounded").x))


def softmax_fit(features: list, labels: np.ndarray, groups: list) -> Callable:
    """A plain single-label softmax head on the musicnn head's features, temperature-scaled.

    The penalty that minimises the softmax log loss (at its fitted
    temperature) on inner artist-grouped folds is refit on every training
    track; the musicnn head instead scores each genre with its own
    calibrated probability (Platt scaling of the log-softmax).
    """
    from genre_cnn_core.backbones import TrainConfig
    from genre_cnn_core.linear_head import PENALTIES, fit_head, out_of_fold_logits
    from genre_cnn_core.metrics import log_softmax
    from genre_cnn_core.splits import grouped_folds

    x = np.stack(features).astype(np.float64)
    offset = x.shape[1] - TrainConfig().head_tags

    def fit(train, columns):
        y = renumbered(labels[train], columns)
        targets = datasets.one_hot(y, len(columns))
        folds = grouped_folds(y, [groups[i] for i in train], FOLDS, 0)
        heldout = out_of_fold_logits(x[train], targets, y, folds, PENALTIES, offset)
        scored = {}
        for penalty, logits in heldout.items():
            temperature = fit_temperature(logits, y)
            scored[penalty] = (-log_softmax(logits / temperature)[np.arange(len(y)), y].mean(), temperature)
        penalty = min(scored, key=lambda p: (scored[p][0], -p))
        head, temperature = fit_head(x[train], targets, y, penalty, offset), scored[penalty][1]
        return lambda test: np.exp(log_softmax(head.logits(x[test]) / temperature))
    return fit


def scratch_fit(features: list, data: Dataset, plan: Plan, notes: list) -> Callable:
    """The scratch CNN's default recipe (``TrainConfig()``, on the CPU)."""
    from genre_cnn_core.backbones import TrainConfig

    def log(line):
        if "shortened" in line:  # the time budget cut the schedule: say so in the report
            notes.append(line)
    config = TrainConfig(minutes=SCRATCH_MINUTES, **plan.scratch_config)
    return datasets.backbone_fit("scratch", features, data.targets, data.labels, data.groups, config, log=log)


@dataclasses.dataclass
class Approach:
    name: str
    fit: Callable
    fast: bool  # run leave-one-artist-group-out too (84 trainings)


def approaches(data: Dataset, features: Features, plan: Plan, notes: list) -> list:
    from genre_cnn_core.backbones import TrainConfig

    default = TrainConfig()
    scratch = ("scratch CNN (default recipe)" if not plan.scratch_config
               else f"scratch CNN ({plan.scratch_config['epochs']} epochs, quick)")
    return [
        Approach("baseline (hand-crafted features, linear head)", baseline_fit(features.handcrafted, data.labels,
                                                                             data.groups), True),
        Approach(f"musicnn default head (multi-label, {default.head_tags} tags)", musicnn_fit(features.musicnn,
                                                                                          data), True),
        Approach("musicnn softmax single-label head", softmax_fit(features.musicnn, data.labels, data.groups), False),
        Approach(scratch, scratch_fit(features.logmel, data, plan, notes), False),
    ]


# ------------------------------------------------------------------ scores


@dataclasses.dataclass
class Scores:
    """Pooled held-out predictions of one approach, scored."""

    name: str
    report: dict  # genre_report
    correct: np.ndarray  # primary genre right, per track
    seconds: list  # training time per fold


def score(name: str, probabilities: np.ndarray, data: Dataset, seconds: list) -> Scores:
    from genre_cnn_core.metrics import genre_report

    report = genre_report(data.targets, probabilities, data.genres, data.labels)
    return Scores(name, report, probabilities.argmax(axis=1) == data.labels, seconds)


def cross_validate(data: Dataset, folds: np.ndarray, chosen: list, log) -> list:
    """Every approach on the same folds."""
    check_folds(folds, data.groups)
    found = []
    for approach in chosen:
        started = time.perf_counter()
        probabilities, seconds = datasets.heldout_probabilities(approach.fit, folds, data.targets)
        found.append(score(approach.name, probabilities, data, seconds))
        log(f"  {approach.name}: top-1 {found[-1].report['top1_accuracy']:.1%} "
            f"({time.perf_counter() - started:.0f} s, {len(np.unique(folds))} folds)")
    return found


def check_folds(folds: np.ndarray, groups: list) -> None:
    """Raise unless every artist is on one side of every fold."""
    owner = {}
    for fold, group in zip(folds, groups):
        if owner.setdefault(group, fold) != fold:
            raise AssertionError(f"artist {group} is in two folds")


def accuracy_cell(scores: Scores, resamples: list) -> str:
    low, high = datasets.interval([scores.correct[s].mean() for s in resamples])
    return f"{scores.correct.mean():.1%} [{low:.1%}, {high:.1%}]"


def wilson_cell(scores: Scores) -> str:
    low, high = datasets.wilson_interval(int(scores.correct.sum()), len(scores.correct))
    return f"[{low:.1%}, {high:.1%}]"


def number(value, form="{:.3f}") -> str:
    return "n/a" if value is None else form.format(value)


def summary_table(found: list, resamples: list) -> str:
    rows = [[s.name, accuracy_cell(s, resamples), wilson_cell(s), number(s.report["micro_f1"]),
             number(s.report["macro_f1"]), number(s.report["mean_average_precision"]), number(s.report["ece"]),
             f"{np.mean(s.seconds):.1f}"] for s in found]
    return results.table(["approach", "top-1 [95% CI, artists resampled]", "Wilson 95% CI", "micro-F1",
                          "macro-F1", "mAP", "ECE", "train s/fold"], rows)


def recall_table(found: list, data: Dataset) -> str:
    support = np.bincount(data.labels, minlength=len(data.genres))
    rows = [[s.name] + [f"{s.correct[data.labels == g].mean():.2f}" if support[g] else "" for g in
                        range(len(data.genres))] for s in found]
    return results.table(["approach"] + [f"{g} ({n})" for g, n in zip(data.genres, support)], rows)


def confusion_block(scores: Scores, genres: list) -> str:
    width = max(len(g) for g in genres)
    lines = [f"{scores.name}: rows = tagged genre, columns = predicted",
             " " * (width + 2) + " ".join(f"{g[:5]:>5}" for g in genres)]
    lines += [f"{g:<{width}}  " + " ".join(f"{v:5d}" for v in row)
              for g, row in zip(genres, scores.report["confusion"])]
    return "```\n" + "\n".join(lines) + "\n```"


def paired_line(changed: Scores, reference: Scores, resamples: list) -> str:
    """The top-1 difference ``changed - reference`` on the same tracks, with its paired interval."""
    difference = changed.correct.mean() - reference.correct.mean()
    low, high = datasets.interval([changed.correct[s].mean() - reference.correct[s].mean() for s in resamples])
    verdict = "better" if low > 0 else "worse" if high < 0 else "no clear difference"
    return (f"- {changed.name} vs {reference.name}: {difference:+.1%} top-1, paired 95% CI [{low:+.1%}, {high:+.1%}] "
            f"(**{verdict}**); macro-F1 {changed.report['macro_f1'] - reference.report['macro_f1']:+.3f}, "
            f"mAP {changed.report['mean_average_precision'] - reference.report['mean_average_precision']:+.3f}")


# ------------------------------------------------------------------ experiment


@dataclasses.dataclass
class Run:
    """Everything measured."""

    data: Dataset
    folds: np.ndarray  # the main folds (seed 0)
    main: list  # Scores on them
    resamples: list
    by_seed: dict = dataclasses.field(default_factory=dict)  # approach name -> top-1 per fold seed
    leave_one_out: list = dataclasses.field(default_factory=list)
    transfer: tuple | None = None  # (Dataset, list of Scores, resamples)
    notes: list = dataclasses.field(default_factory=list)


def transfer(source: Dataset, source_features: Features, root: Path, cache, plan: Plan, log) -> tuple:
    """Train on all of ``source``, test on the Jamendo tracks of its genres (no artist on both sides)."""
    target = jamendo_in(root, source.genres)
    target_features = load_features(target, cache, log)
    combined = Dataset(f"{source.name} -> {target.name}", source.tracks + target.tracks, source.genres,
                       np.concatenate([source.labels, target.labels]))
    features = Features(np.concatenate([source_features.handcrafted, target_features.handcrafted]),
                        source_features.musicnn + target_features.musicnn,
                        source_features.logmel + target_features.logmel)
    folds = np.array([0] * len(source.tracks) + [1] * len(target.tracks))
    test = np.flatnonzero(folds == 1)
    found = []
    for approach in approaches(combined, features, plan, []):
        columns = np.flatnonzero(combined.targets[folds == 0].any(axis=0))
        started = time.perf_counter()
        predict = approach.fit(np.flatnonzero(folds == 0), columns)
        seconds = [time.perf_counter() - started]
        probabilities = np.zeros((len(test), len(source.genres)))
        probabilities[:, columns] = predict(test)
        found.append(score(approach.name, probabilities, target, seconds))
        log(f"  transfer, {approach.name}: top-1 {found[-1].report['top1_accuracy']:.1%}")
    return target, found, datasets.group_resamples(target.groups, plan.draws)


def run(plan: Plan, root: Path, cache, log) -> Run:
    from genre_cnn_core.splits import grouped_folds

    data = gtzan(root)
    features = load_features(data, cache, log)
    notes: list = []
    chosen = approaches(data, features, plan, notes)
    resamples = datasets.group_resamples(data.groups, plan.draws)
    by_seed: dict = {a.name: [] for a in chosen}
    main, main_folds = None, None
    for seed in plan.fold_seeds:
        log(f"{data.name}: {FOLDS} artist-grouped folds, seed {seed}")
        folds = grouped_folds(data.labels, data.groups, FOLDS, seed)
        found = cross_validate(data, folds, chosen, log)
        for s in found:
            by_seed[s.name].append(s.correct.mean())
        if main is None:
            main, main_folds = found, folds
    result = Run(data, main_folds, main, resamples, by_seed, notes=notes)
    if plan.leave_one_out:
        folds = datasets.leave_one_group_out(data.groups)
        log(f"{data.name}: leave one artist group out ({len(np.unique(folds))} folds)")
        result.leave_one_out = cross_validate(data, folds, [a for a in chosen if a.fast], log)
    log("transfer: all of gtzan-dev -> jamendo")
    result.transfer = transfer(data, features, root, cache, plan, log)
    return result


# ------------------------------------------------------------------ report


def render(result: Run, plan: Plan) -> str:
    data, main = result.data, result.main
    baseline, musicnn, softmax, scratch = main
    sizes = np.bincount(result.folds)
    text = [
        f"**musicnn default head on gtzan-dev, {FOLDS} artist-grouped folds (seed 0): "
        f"{musicnn.correct.mean():.1%} top-1** (primary genre), {accuracy_cell(musicnn, result.resamples)} "
        f"with artists resampled; round 1 measured {ROUND1_MUSICNN}, a different and smaller set, not "
        "comparable. Speed work compares against this figure (the musicnn rows do not depend on `--quick`).",
        "",
        f"Data: gtzan-dev, {len(data.tracks)} clips, {len(data.genres)} genres "
        f"({', '.join(f'{g} {n}' for g, n in zip(data.genres, np.bincount(data.labels)))}), "
        f"{len(set(data.groups))} artist groups. Folds: `genre_cnn_core.splits.grouped_folds` (whole artists, "
        f"genres spread), {sizes.min()}-{sizes.max()} clips held out per fold; every approach trains on the "
        "same folds and only on the training side (the musicnn head's own inner folds and penalty choice "
        "included); the held-out probabilities are pooled and scored by `genre_cnn_core.metrics.genre_report`.",
        "",
        "Columns: top-1 = the primary (most probable) genre is the tagged one; its 95% interval resamples whole "
        f"artist groups ({plan.draws} draws: clips of one artist are not independent), next to Wilson's "
        "interval, which treats clips as independent and is narrower. micro/macro-F1: of the genres each clip "
        "is given (probability >= 0.5, at most 3, at least the primary: what `cnn_genres` holds). mAP: mean "
        "over genres of the average precision of ranking the clips by that genre's probability. ECE: expected "
        "calibration error (10 bins) of the primary genre's probability.",
        "",
        "Approaches: baseline = round 1's hand-crafted features (mean and std of 20 MFCCs, 96 log-mel bands, 6 "
        "spectral-contrast bands and 12 chroma bins over the scratch CNN's excerpts, 3 x 10 s) with the "
        "product's linear head (`train_linear_head`: standardised multinomial logistic regression, L2 penalty "
        "chosen on inner artist-grouped folds, Platt-calibrated), so that only the features differ from the "
        "musicnn head; round 1 used scikit-learn's logistic regression with a temperature, so its baseline "
        "figures differ. musicnn default head = `get_backbone('musicnn').train` on the cached embeddings "
        "(`TrainConfig()`). Softmax single-label head = the same features and penalties, one softmax over "
        "genres with a fitted temperature instead of per-genre Platt probabilities. Scratch CNN = "
        "`get_backbone('scratch').train` with " + ("`TrainConfig()`, the default recipe"
                                                  if not plan.scratch_config else
                                                  f"`TrainConfig({plan.scratch_config})` (quick mode)")
        + f", on the CPU, its time budget raised to {SCRATCH_MINUTES:g} minutes so that the shared machine's "
        "load cannot shorten the schedule (on 103 training clips the recipe's 480 steps take well under the "
        "default 2.5 minutes on an idle core).",
        "",
        f"### gtzan-dev, {FOLDS} artist-grouped folds (seed 0)",
        "",
        summary_table(main, result.resamples),
        "",
        "Top-1 recall per genre (clips in brackets):",
        "",
        recall_table(main, data),
        "",
        confusion_block(musicnn, data.genres),
        "",
    ]
    if len(plan.fold_seeds) > 1:
        rows = [[name] + [f"{v:.1%}" for v in values] + [f"{np.mean(values):.1%}"]
                for name, values in result.by_seed.items()]
        text += [f"Top-1 over fold shuffles (seeds {', '.join(map(str, plan.fold_seeds))}; one clip is "
                 f"{1 / len(data.tracks):.1%}):", "",
                 results.table(["approach"] + [f"seed {s}" for s in plan.fold_seeds] + ["mean"], rows), ""]
    if result.notes:
        text += ["The scratch CNN's time budget shortened its schedule: " + "; ".join(sorted(set(result.notes))), ""]
    if result.leave_one_out:
        text += [f"### gtzan-dev, leave one artist group out ({len(set(data.groups))} folds), fast approaches", "",
                 summary_table(result.leave_one_out, result.resamples), ""]
    text += ["### Paired differences (same clips, same artist resamplings)", ""]
    text += [paired_line(musicnn, baseline, result.resamples), paired_line(musicnn, scratch, result.resamples),
             paired_line(scratch, baseline, result.resamples), paired_line(musicnn, softmax, result.resamples)]
    if result.leave_one_out:
        logo_baseline, logo_musicnn = result.leave_one_out
        text += [paired_line(logo_musicnn, logo_baseline, result.resamples) + " (leave one artist group out)"]
    text += [""]
    if result.transfer is not None:
        target, found, resamples = result.transfer
        present = sorted({target.genres[label] for label in target.labels})
        text += [f"### Transfer: train on all of gtzan-dev, test on jamendo ({len(target.tracks)} tracks of "
                 f"{', '.join(present)}, {len(set(target.groups))} artists)", "",
                 f"Predictions range over the {len(target.genres)} GTZAN genres; full-length tracks, other "
                 "recordings and artists than the training clips. Intervals resample the Jamendo artists.", "",
                 summary_table(found, resamples), "", paired_line(found[1], found[0], resamples), ""]
    return "\n".join(text)


def main(argv=None) -> None:
    results.use_this_checkout()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=datasets.DATA, help="folder holding gtzan-dev/ and jamendo/")
    parser.add_argument("--quick", action="store_true",
                        help=f"one fold shuffle, no leave-one-out, a short scratch CNN; writes {QUICK_OUTPUT.name}")
    args = parser.parse_args(argv)

    import torch
    from threadpoolctl import threadpool_limits

    from genre_cnn_core.cache import FeatureCache

    plan = QUICK if args.quick else FULL
    command = results.command_line("accuracy.py", argv)
    started = time.perf_counter()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):  # BLAS too: the machine is shared
            result = run(plan, args.data, FeatureCache(str(datasets.CACHE)), measure.log)
    except datasets.DataError as error:
        sys.exit(f"accuracy: {error}")
    body = (results.context(command, started)
            + render(result, plan))
    print(f"{HEADING}\n\n{body}")
    output = QUICK_OUTPUT if args.quick else results.RESULTS
    results.write_section(HEADING, body, output)
    measure.log(f"wrote the {HEADING} section of {output}")


if __name__ == "__main__":
    main()
