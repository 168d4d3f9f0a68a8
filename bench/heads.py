#!/usr/bin/env python
"""How the musicnn head is trained and calibrated: the ``## Head variants`` section of ``bench/RESULTS.md``.

The shipped head (:func:`genre_cnn_core.linear_head.train_linear_head`) is a
linear layer trained with a softmax over each track's genres, calibrated
with one Platt scaling of its log-softmax scores for all genres. This
compares it, on the same artist-grouped folds of gtzan-dev and the same
musicnn features, with the obvious alternatives of a multi-label head: one
logistic regression per genre, and a calibration of its own for each genre.

Usage (from the repository root)::

    python bench/heads.py            # about a minute once the features are cached
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import datasets
import numpy as np
import results

FOLDS = 5
SEEDS = (0, 1, 2)


def fit_one_vs_rest(x: np.ndarray, targets: np.ndarray, penalty: float) -> tuple:
    """One logistic regression per genre, balanced positives and negatives, jointly by L-BFGS."""
    from scipy.optimize import minimize

    from genre_cnn_core.linear_head import standardisation
    from genre_cnn_core.metrics import sigmoid

    mean, scale = standardisation(x)
    z = (x - mean) * scale
    y = targets.astype(np.float64)
    n, dim = z.shape
    genres = y.shape[1]
    positives = y.sum(axis=0)
    weight = y * (n / (2 * np.maximum(positives, 1))) + (1 - y) * (n / (2 * np.maximum(n - positives, 1)))

    def loss(params):
        w, b = params[:genres * dim].reshape(genres, dim), params[genres * dim:]
        s = z @ w.T + b
        residual = weight * (sigmoid(s) - y) / n
        value = (weight * (np.logaddexp(0.0, s) - y * s)).sum() / n + penalty * np.square(w).sum() / n
        return value, np.concatenate([(residual.T @ z + 2 * penalty * w / n).ravel(), residual.sum(axis=0)])

    found = minimize(loss, np.zeros(genres * dim + genres), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    w, b = found.x[:genres * dim].reshape(genres, dim), found.x[genres * dim:]
    return lambda test: ((test - mean) * scale) @ w.T + b


def fit_platt_per_genre(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """A slope and offset per genre on held-out scores (pulled towards the identity)."""
    from scipy.optimize import minimize

    from genre_cnn_core.metrics import sigmoid

    y = targets.astype(np.float64)
    genres = y.shape[1]

    def loss(params):
        a, b = params[:genres], params[genres:]
        s = scores * a + b
        residual = sigmoid(s) - y
        value = (np.logaddexp(0.0, s) - y * s).sum() + np.square(a - 1).sum() + np.square(b).sum()
        return value, np.concatenate([(residual * scores).sum(0) + 2 * (a - 1), residual.sum(0) + 2 * b])

    found = minimize(loss, np.concatenate([np.ones(genres), np.zeros(genres)]), jac=True, method="L-BFGS-B")
    return found.x.reshape(2, genres)


def variant(train_scores, calibrate, x, targets, strata, groups, train, test):
    """Held-out probabilities of ``test``: penalty and calibration chosen on inner artist-grouped folds of
    ``train``, as the product chooses them."""
    from genre_cnn_core.linear_head import PENALTIES
    from genre_cnn_core.metrics import log_loss
    from genre_cnn_core.splits import grouped_folds

    inner = grouped_folds(strata[train], [groups[i] for i in train], FOLDS, 0)
    best = None
    for penalty in PENALTIES:
        heldout = np.zeros((len(train), targets.shape[1]))
        for fold in np.unique(inner):
            fit = train_scores(train[inner != fold], penalty)
            heldout[inner == fold] = fit(train[inner == fold])
        probability = calibrate(heldout, targets[train])
        loss = log_loss(probability(heldout), targets[train])
        if best is None or loss < best[0]:
            best = (loss, penalty, probability)
    _, penalty, probability = best
    return probability(train_scores(train, penalty)(test))


def main(argv=None) -> None:
    results.use_this_checkout()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=datasets.DATA)
    args = parser.parse_args(argv)
    started = time.perf_counter()

    from genre_cnn_core import FeatureCache
    from genre_cnn_core.linear_head import fit_head
    from genre_cnn_core.metrics import calibrate, fit_calibration, genre_report, log_softmax
    from genre_cnn_core.splits import grouped_folds

    tracks = datasets.load_gtzan(args.data)
    genres = sorted({t.genre for t in tracks})
    strata = np.array([genres.index(t.genre) for t in tracks])
    groups = [t.artist for t in tracks]
    targets = datasets.one_hot(strata, len(genres))
    features = datasets.backbone_features("musicnn", [t.path for t in tracks], FeatureCache(str(datasets.CACHE)))
    x = np.stack(features).astype(np.float64)[:, -50:]  # the head reads the 50 tag probabilities

    def softmax_scores(train, penalty):
        head = fit_head(x[train], targets[train], strata[train], penalty)
        return lambda test: head.logits(x[test])

    def ovr_scores(train, penalty):
        fit = fit_one_vs_rest(x[train], targets[train], penalty)
        return lambda test: fit(x[test])

    def shared(scores, truth):  # the product's: one Platt scaling of the log-softmax for all genres
        found = fit_calibration(scores, truth)
        return lambda s: calibrate(s, found)

    def shared_raw(scores, truth):  # one Platt scaling of the raw scores for all genres
        found = fit_calibration_raw(scores, truth)
        return lambda s: found(s)

    def per_genre_softmax(scores, truth):
        a, b = fit_platt_per_genre(log_softmax(scores), truth)
        return lambda s: 1 / (1 + np.exp(-(log_softmax(s) * a + b)))

    def per_genre_raw(scores, truth):
        a, b = fit_platt_per_genre(scores, truth)
        return lambda s: 1 / (1 + np.exp(-(s * a + b)))

    variants = {
        "softmax over the track's genres, one calibration for all genres (shipped)": (softmax_scores, shared),
        "softmax over the track's genres, a calibration per genre": (softmax_scores, per_genre_softmax),
        "one logistic regression per genre, one calibration for all genres": (ovr_scores, shared_raw),
        "one logistic regression per genre, a calibration per genre": (ovr_scores, per_genre_raw),
    }
    rows, means = [], {}
    for name, (scores, calibration) in variants.items():
        figures = []
        for seed in SEEDS:
            folds = grouped_folds(strata, groups, FOLDS, seed)
            probability = np.zeros(targets.shape)
            for fold in range(FOLDS):
                train, test = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
                probability[test] = variant(scores, calibration, x, targets, strata, groups, train, test)
            report = genre_report(targets, probability, genres, strata)
            figures.append((report["top1_accuracy"], report["ece"], report["mean_average_precision"],
                            report["micro_f1"]))
        mean = means[name] = np.mean(figures, axis=0)
        per_seed = " / ".join(f"{f[0]:.1%}" for f in figures)
        rows.append([name, f"{mean[0]:.1%} ({per_seed})", f"{mean[1]:.3f}", f"{mean[2]:.3f}", f"{mean[3]:.3f}"])
        print(rows[-1])
    body = (results.context(results.command_line("heads.py", argv), started) +
            f"gtzan-dev, {len(tracks)} clips, {len(set(groups))} artist groups; musicnn's 50 tag probabilities "
            f"(4 patches of 3 s), standardised. Held-out predictions of {FOLDS} artist-grouped folds "
            f"(`splits.grouped_folds`, seeds {', '.join(map(str, SEEDS))}); inside each training side, the L2 "
            "penalty (`linear_head.PENALTIES`) and the calibration are chosen on inner artist-grouped folds by "
            "the held-out log loss, as the product does. ECE: of the primary genre's probability.\n\n"
            + results.table(["head", "primary genre right, mean (per seed)", "ECE", "mAP", "micro-F1"], rows)
            + "\n\nOne calibration for all genres keeps the order of each track's scores, so the primary genre is "
            "the network's own choice; a calibration per genre, fitted on 10-17 held-out clips per genre, "
            "reorders them. " + verdict(means) + "\n")
    results.write_section("## Head variants", body)
    print(f"wrote the ## Head variants section of {results.RESULTS}")


def verdict(means: dict) -> str:
    """What the table says about the shipped head against the best of the others, from its figures."""
    shipped = next(name for name in means if name.endswith("(shipped)"))
    most_right = max(means, key=lambda name: means[name][0])
    best_calibrated = min(means, key=lambda name: means[name][1])
    if most_right == shipped:
        return "The shipped head puts the primary genre right most often."
    gain = means[most_right][0] - means[shipped][0]
    ece = means[most_right][1] / means[shipped][1]
    calibrated = ("and is the best calibrated" if best_calibrated == shipped
                  else f"against {means[best_calibrated][1]:.3f} for \"{best_calibrated}\"")
    return (f"\"{most_right}\" puts {gain * 100:.1f} points more primary genres right, with an ECE "
            f"{ece:.1f} × the shipped head's ({means[shipped][1]:.3f}, {calibrated}): the scores are what "
            "users filter on (`cnn_genre_score:0.8..`) and what `threshold` cuts, so the shipped head keeps "
            "the better calibration.")


def fit_calibration_raw(scores: np.ndarray, targets: np.ndarray):
    """One Platt scaling of raw per-genre scores for all genres (for the one-vs-rest heads)."""
    from scipy.optimize import minimize

    from genre_cnn_core.metrics import sigmoid

    z, y = scores.ravel(), targets.astype(np.float64).ravel()

    def loss(params):
        s = params[0] * z + params[1]
        residual = sigmoid(s) - y
        return np.logaddexp(0.0, s).sum() - (y * s).sum(), np.array([(residual * z).sum(), residual.sum()])

    a, b = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B").x
    return lambda s: sigmoid(a * s + b)


if __name__ == "__main__":
    main()
