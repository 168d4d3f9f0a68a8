"""How good a genre model is, and how its scores become calibrated
probabilities: numpy and scipy only, no torch.

A model gives every genre its own probability that the genre applies to a
track (multi-label); the *primary* genre is the most probable one.
"""

from __future__ import annotations

import numpy as np

from . import THRESHOLD, TOP_K


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, without overflow for large negative inputs."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    positive = x >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-x[positive]))
    e = np.exp(x[~positive])
    out[~positive] = e / (1.0 + e)
    return out


def select_genres(probabilities: np.ndarray, threshold: float = THRESHOLD, top_k: int = TOP_K) -> list[int]:
    """The genres a track is given: those at or above ``threshold``, best first.

    At most ``top_k``, and never none: the most probable (primary) genre
    is always first.
    """
    probabilities = np.asarray(probabilities)
    order = np.argsort(-probabilities, kind="stable")
    chosen = [int(c) for c in order[:top_k] if probabilities[c] >= threshold]
    return chosen or [int(order[0])]


# -------------------------------------------------------------- calibration


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """Log of the softmax over genres of ``(tracks, genres)`` scores."""
    z = np.asarray(scores, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def fit_calibration(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Platt scaling of log-softmax scores, one slope and offset for all genres.

    ``p(genre applies) = sigmoid(a * log_softmax(scores)[genre] + b)``, with
    ``(a, b)`` minimising the held-out binary log loss over every (track,
    genre) pair. One pair for all genres keeps the order of the scores, so
    the primary genre is the network's own choice; per-genre pairs fitted on
    the few held-out tracks of a small library cost accuracy and
    calibration (bench/RESULTS.md).

    Parameters
    ----------
    scores : np.ndarray
        ``(tracks, genres)`` held-out scores (logits).
    targets : np.ndarray
        ``(tracks, genres)`` booleans: does the genre apply.

    Returns
    -------
    np.ndarray
        ``[a, b]``; ``[1, 0]`` without held-out tracks.
    """
    from scipy.optimize import minimize

    if len(scores) == 0:
        return np.array([1.0, 0.0])
    z = log_softmax(scores).ravel()
    y = np.asarray(targets, dtype=np.float64).ravel()

    def loss(params):
        a, b = params
        s = a * z + b
        residual = sigmoid(s) - y
        return np.logaddexp(0.0, s).sum() - (y * s).sum(), np.array([(residual * z).sum(), residual.sum()])

    result = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B", bounds=[(1e-3, None), (None, None)])
    return result.x


def calibrate(scores: np.ndarray, calibration: np.ndarray) -> np.ndarray:
    """Probabilities that each genre applies, from scores and :func:`fit_calibration`'s ``[a, b]``."""
    a, b = calibration
    return sigmoid(a * log_softmax(scores) + b)


def log_loss(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Mean over tracks of the summed per-genre binary log loss."""
    p = np.clip(probabilities, 1e-7, 1 - 1e-7)
    y = np.asarray(targets, dtype=np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).sum(axis=1).mean()) if len(p) else 0.0


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Gap between confidence and accuracy, averaged over confidence bins."""
    confidence, correct = np.asarray(confidence), np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        chosen = (confidence > low) & (confidence <= high)
        if chosen.any():
            error += chosen.mean() * abs(confidence[chosen].mean() - correct[chosen].mean())
    return float(error)


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """Area under the precision-recall curve of a ranking (None without positives)."""
    positives = np.asarray(positives, dtype=bool)
    if not positives.any():
        return None
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = positives[order]
    precision_at_hits = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
    return float(precision_at_hits.mean())


# ------------------------------------------------------------------- report


def genre_report(truth: np.ndarray, probabilities: np.ndarray, genres, first: np.ndarray,
                 threshold: float = THRESHOLD, top_k: int = TOP_K) -> dict:
    """Multi-label and primary-genre scores of predictions against tags.

    Parameters
    ----------
    truth : np.ndarray
        ``(tracks, genres)`` booleans: the tagged genres.
    probabilities : np.ndarray
        ``(tracks, genres)`` calibrated probabilities.
    genres : list of str
    first : np.ndarray
        Per track, the index of its first tagged genre the model knows
        (-1: none); the primary genre is scored against it.
    threshold, top_k
        The rule of :func:`select_genres` that decides a track's genres.

    Returns
    -------
    dict
        Plain data (JSON-compatible), as stored in the model file:
        ``per_genre`` (precision, recall, f1, support, average_precision;
        None where undefined), ``micro_f1``, ``macro_f1``,
        ``mean_average_precision``, ``top1_accuracy`` and ``top1_tracks``,
        ``ece`` (of the primary genre's probability), ``tracks``, and
        ``confusion`` (first tagged genre x primary genre).
    """
    truth = np.asarray(truth, dtype=bool)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n_genres = len(genres)
    decided = np.zeros_like(truth)
    for row, p in enumerate(probabilities):
        decided[row, select_genres(p, threshold, top_k)] = True
    tp = (decided & truth).sum(0)
    predicted, support = decided.sum(0), truth.sum(0)
    per_genre, f1s, precisions = {}, [], []
    for c, name in enumerate(genres):
        precision = tp[c] / predicted[c] if predicted[c] else None
        recall = tp[c] / support[c] if support[c] else None
        f1 = 2 * tp[c] / (predicted[c] + support[c]) if support[c] else None
        ap = average_precision(probabilities[:, c], truth[:, c])
        per_genre[name] = {"precision": _float(precision), "recall": _float(recall), "f1": _float(f1),
                           "support": int(support[c]), "average_precision": ap}
        if f1 is not None:
            f1s.append(f1)
        if ap is not None:
            precisions.append(ap)
    micro_p = tp.sum() / predicted.sum() if predicted.sum() else 0.0
    micro_r = tp.sum() / support.sum() if support.sum() else 0.0
    primary = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, int)
    first = np.asarray(first, dtype=int)
    scored = first >= 0
    confusion = np.zeros((n_genres, n_genres), dtype=int)
    np.add.at(confusion, (first[scored], primary[scored]), 1)
    rows = np.arange(len(primary))
    return {
        "per_genre": per_genre,
        "micro_f1": float(2 * micro_p * micro_r / (micro_p + micro_r)) if micro_p + micro_r else 0.0,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "mean_average_precision": float(np.mean(precisions)) if precisions else None,
        "top1_accuracy": float((primary[scored] == first[scored]).mean()) if scored.any() else None,
        "top1_tracks": int(scored.sum()),
        "ece": expected_calibration_error(probabilities[rows, primary], truth[rows, primary]) if len(rows) else None,
        "tracks": int(len(truth)),
        "threshold": float(threshold),
        "confusion": confusion.tolist(),
    }


def _float(value):
    return None if value is None else float(value)


def format_report(report: dict, genres, tracks_per_genre: dict | None = None,
                  scope: str = "validation tracks (their artists are not in training)") -> str:
    """A report as a terminal table, with the confusion matrix of the primary genre.

    Parameters
    ----------
    report : dict
        From :func:`genre_report`.
    genres : list of str
    tracks_per_genre : dict, optional
        Training tracks per genre, shown as a column when given.
    scope : str
        What the evaluated tracks are, for the summary line.
    """
    def cell(value, width, form="{:.2f}"):
        return f"{'n/a' if value is None else form.format(value):>{width}}"

    number_width = len(str(len(genres)))
    width = max([len(g) for g in genres] + [5]) + number_width + 1
    trained = tracks_per_genre is not None
    lines = [f"{'genre':<{width}}  precision  recall     f1     AP  support" + ("  trained on" if trained else "")]
    for number, name in enumerate(genres, 1):
        row = report["per_genre"][name]
        label = f"{number:>{number_width}} {name}"
        lines.append(f"{label:<{width}}  {cell(row['precision'], 9)}  {cell(row['recall'], 6)}  "
                     f"{cell(row['f1'], 5)}  {cell(row['average_precision'], 5)}  {row['support']:7d}"
                     + (f"  {tracks_per_genre.get(name, 0):10d}" if trained else ""))
    summary = (f"micro-F1 {report['micro_f1']:.3f}, macro-F1 {report['macro_f1']:.3f}, "
               f"mAP {_text(report['mean_average_precision'], '{:.3f}')}")
    lines.append(f"{summary} on {report['tracks']} {scope}")
    lines.append(f"primary genre = first tagged genre: {_text(report['top1_accuracy'], '{:.1%}')} of "
                 f"{report['top1_tracks']}; expected calibration error {_text(report['ece'], '{:.3f}')}")
    lines.append("confusion of the primary genre (rows: first tagged genre, columns: predicted; numbers as above):")
    cells = max(3, number_width, *(len(str(v)) for row in report["confusion"] for v in row))
    lines.append(" " * (width + 2) + " ".join(f"{n:>{cells}}" for n in range(1, len(genres) + 1)))
    for number, (name, row) in enumerate(zip(genres, report["confusion"]), 1):
        label = f"{number:>{number_width}} {name}"
        lines.append(f"{label:<{width}}  " + " ".join(f"{v:>{cells}}" for v in row))
    return "\n".join(lines)


def _text(value, form: str) -> str:
    return "n/a" if value is None else form.format(value)
