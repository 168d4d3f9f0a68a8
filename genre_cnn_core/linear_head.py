"""A multi-label genre head on pretrained embeddings: a linear layer
trained with numpy and scipy in seconds.

The regularisation is chosen, and the probabilities calibrated, on
out-of-fold predictions: the tracks are split into artist-grouped folds,
and each track is predicted by heads that never heard its artist. Those
held-out probabilities also make the training report.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .metrics import calibrate, fit_calibration, log_loss
from .splits import grouped_folds

#: L2 penalties tried; the out-of-fold log loss picks one.
PENALTIES = (100.0, 10.0, 1.0, 0.1, 0.01)


@dataclasses.dataclass
class LinearHead:
    """Standardise part of an embedding, then one linear score per genre.

    Attributes
    ----------
    mean, scale : np.ndarray
        ``(in_dim,)``: the features are ``(x - mean) * scale``.
    weight : np.ndarray
        ``(genres, in_dim)``.
    bias : np.ndarray
        ``(genres,)``.
    offset : int
        Index of the first embedding feature the head reads: it sees
        ``x[:, offset:offset + in_dim]`` (e.g. only musicnn's tag probabilities).
    """

    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    offset: int = 0

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        x = np.asarray(embeddings, dtype=np.float64)[:, self.offset:self.offset + len(self.mean)]
        return ((x - self.mean) * self.scale) @ self.weight.T + self.bias

    @property
    def architecture(self) -> dict:
        return {"in_dim": int(len(self.mean)), "n_genres": int(len(self.bias)), "offset": int(self.offset)}

    def weights(self) -> dict:
        return {"mean": self.mean, "scale": self.scale, "weight": self.weight, "bias": self.bias}

    @classmethod
    def from_weights(cls, weights: dict, architecture: dict) -> "LinearHead":
        return cls(weights["mean"], weights["scale"], weights["weight"], weights["bias"],
                   int(architecture.get("offset", 0)))


def standardisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and inverse spread of each feature; a single row is only centred."""
    mean = x.mean(axis=0)
    if len(x) < 2:
        return mean, np.ones_like(mean)
    return mean, 1.0 / np.maximum(x.std(axis=0, ddof=1), 1e-4)


def fit_head(x: np.ndarray, targets: np.ndarray, strata: np.ndarray, penalty: float, offset: int = 0,
             start: LinearHead | None = None) -> LinearHead:
    """Fit the head's scores with L-BFGS: softmax cross-entropy against each track's genres.

    A track's genres share its target (``[rock, indie]`` -> 1/2 each), the
    softmax training of multi-label data of Mahajan et al. (2018); it ranks
    better than one logistic regression per genre on single-genre
    libraries (bench/RESULTS.md). Tracks weigh so that every first genre
    counts the same in total, so a rare genre is learned as well as a
    common one.

    Parameters
    ----------
    x : np.ndarray
        ``(tracks, embedding)``; the head reads it from ``offset`` on.
    targets : np.ndarray
        ``(tracks, genres)`` booleans; every track has at least one.
    strata : np.ndarray
        Each track's first genre, for the weights.
    penalty : float
        L2 penalty on the weights (a prior: divided by the number of tracks).
    offset : int
    start : LinearHead, optional
        Initial weights (a warm start).
    """
    from scipy.optimize import minimize

    from .metrics import log_softmax

    features = np.asarray(x, dtype=np.float64)[:, offset:]
    mean, scale = standardisation(features)
    z = (features - mean) * scale
    # With more features than tracks, the L2-penalised weights lie in the span of the tracks
    # (representer theorem): fitting in that orthonormal basis gives the same head, far faster.
    basis = np.linalg.svd(z, full_matrices=False)[2] if z.shape[1] > z.shape[0] else None
    if basis is not None:
        z = z @ basis.T
    y = np.asarray(targets, dtype=np.float64)
    y = y / np.maximum(y.sum(axis=1, keepdims=True), 1)
    n, dim = z.shape
    n_genres = y.shape[1]
    counts = np.bincount(strata, minlength=n_genres)
    track_weight = (n / (np.count_nonzero(counts) * counts[strata]))[:, None]

    def loss(params):
        weight = params[:n_genres * dim].reshape(n_genres, dim)
        bias = params[n_genres * dim:]
        log_p = log_softmax(z @ weight.T + bias)
        value = -(track_weight * y * log_p).sum() / n + penalty * np.square(weight).sum() / n
        residual = track_weight * (np.exp(log_p) * y.sum(axis=1, keepdims=True) - y) / n
        grad_weight = residual.T @ z + 2 * penalty * weight / n
        return value, np.concatenate([grad_weight.ravel(), residual.sum(axis=0)])

    if start is None:
        initial = np.zeros(n_genres * dim + n_genres)
    else:
        initial = np.concatenate([(start.weight if basis is None else start.weight @ basis.T).ravel(), start.bias])
    result = minimize(loss, initial, jac=True, method="L-BFGS-B", options={"maxiter": 500})
    weight = result.x[:n_genres * dim].reshape(n_genres, dim)
    return LinearHead(mean, scale, weight.copy() if basis is None else weight @ basis,
                      result.x[n_genres * dim:].copy(), offset)


@dataclasses.dataclass
class HeadTraining:
    """What :func:`train_linear_head` found.

    Attributes
    ----------
    head : LinearHead
        Fitted on every track.
    calibration : np.ndarray
        ``[a, b]`` of :func:`genre_cnn_core.metrics.calibrate`, fitted on the scored out-of-fold logits.
    heldout : np.ndarray
        Indices of the tracks with an out-of-fold prediction.
    heldout_probabilities : np.ndarray
        Their calibrated out-of-fold probabilities, ``(len(heldout), genres)``.
    heldout_known : np.ndarray
        Booleans of the same shape: whether the head that made each held-out
        prediction learned that genre at all (a genre played by one artist
        is unknown to the head that held that artist out).
    penalty : float
        The chosen L2 penalty.
    folds : int
        Folds that held tracks out (0 when there were too few artists).
    offset : int
        The chosen input: the first embedding feature the head reads.
    """

    head: LinearHead
    calibration: np.ndarray
    heldout: np.ndarray
    heldout_probabilities: np.ndarray
    heldout_known: np.ndarray
    penalty: float
    folds: int
    offset: int = 0


def out_of_fold_logits(x, targets, strata, folds, penalties, offset=0) -> dict:
    """Held-out logits of every track for each penalty (warm-started from strong to weak)."""
    logits = {p: np.zeros(targets.shape, dtype=np.float64) for p in penalties}
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        head = None
        for penalty in penalties:
            head = fit_head(x[train], targets[train], strata[train], penalty, offset, start=head)
            logits[penalty][test] = head.logits(x[test])
    return logits


def fold_known(targets: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """``(tracks, genres)``: whether the head that held each track out had any track of the genre to learn."""
    known = np.zeros(targets.shape, dtype=bool)
    for fold in np.unique(folds):
        known[folds == fold] = targets[folds != fold].any(axis=0)
    return known


def judged_pairs(targets: np.ndarray, known: np.ndarray, scoring: str = "judged") -> np.ndarray:
    """The (track, genre) pairs of out-of-fold predictions that choose the penalty and the calibration.

    ``"judged"`` (the product's): the known genres of the tracks whose
    every genre its head knew; ``"known"``: every known genre of every
    track; ``"all"``: every pair. A held-out head cannot predict a genre
    it never learned (one played by the artists it held out), so such a
    track's tagged genre scores as a certain miss and its probability goes
    to genres it is not; scored, those pairs pull the one calibration
    towards "nothing is ever sure" (bench/RESULTS.md, "Long-tailed taxonomies").
    """
    targets, known = np.asarray(targets, dtype=bool), np.asarray(known, dtype=bool)
    if scoring == "all":
        return np.ones(targets.shape, dtype=bool)
    if scoring == "known":
        return known.copy()
    if scoring == "judged":
        return known & judged_tracks(targets, known)[:, None]
    raise ValueError(f"unknown scoring {scoring!r}: all, known or judged")


def judged_tracks(targets: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Held-out tracks whose head knew every one of their genres: those a report can score."""
    return ~(np.asarray(targets, dtype=bool) & ~np.asarray(known, dtype=bool)).any(axis=1)


def train_linear_head(embeddings, targets, strata, groups, n_folds: int = 5, offset=0,
                      seed: int = 0, scoring: str = "judged") -> HeadTraining:
    """Train a multi-label head with out-of-fold choice of input and penalty, and calibration.

    Parameters
    ----------
    embeddings : array-like
        ``(tracks, embedding)``.
    targets : np.ndarray
        ``(tracks, genres)`` booleans.
    strata : sequence of int
        Each track's first genre, to balance the folds.
    groups : sequence
        Each track's artist: a fold holds whole artists.
    n_folds : int
    offset : int or sequence of int
        First embedding feature the head reads; with several, the one
        whose held-out log loss is lowest (with its best penalty).
    seed : int
    scoring : str
        Which out-of-fold pairs choose and calibrate (:func:`judged_pairs`).
    """
    x = np.asarray(embeddings, dtype=np.float64)
    targets, strata = np.asarray(targets, dtype=bool), np.asarray(strata)
    offsets = [int(offset)] if np.ndim(offset) == 0 else [int(o) for o in offset]
    folds = grouped_folds(strata, groups, n_folds, seed)
    used_folds = len(np.unique(folds))
    if used_folds < 2:
        head = fit_head(x, targets, strata, 1.0, offsets[0])
        empty = np.zeros((0, targets.shape[1]))
        return HeadTraining(head, np.array([1.0, 0.0]), np.zeros(0, int), empty, empty.astype(bool), 1.0, 0,
                            offsets[0])
    known = fold_known(targets, folds)
    pairs = judged_pairs(targets, known, scoring)
    if not pairs.any():  # no track's genres were all known to its head: score what there is
        pairs = known
    scored = {}
    for start in offsets:
        for penalty, fold_logits in out_of_fold_logits(x, targets, strata, folds, PENALTIES, start).items():
            calibration = fit_calibration(fold_logits, targets, pairs)
            loss = log_loss(calibrate(fold_logits, calibration), targets, pairs)
            scored[start, penalty] = (loss, calibration, fold_logits)
    # Ties go to the stronger penalty and the smaller input.
    start, penalty = min(scored, key=lambda key: (scored[key][0], -key[1], -key[0]))
    _, calibration, fold_logits = scored[start, penalty]
    head = fit_head(x, targets, strata, penalty, start)
    return HeadTraining(head, calibration, np.arange(len(x)), calibrate(fold_logits, calibration), known,
                        penalty, used_folds, start)
