"""How good a genre model is, and how its scores become calibrated
probabilities: numpy and scipy only, no torch.

A model gives every genre its own probability that the genre applies to a
track (multi-label); the *primary* genre is the most probable one.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import THRESHOLD, TOP_K

#: A genre whose held-out tracks come from fewer artists is marked in reports: its figures
#: describe those few artists more than the genre.
MIN_JUDGED_ARTISTS = 3


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


def fit_calibration(scores: np.ndarray, targets: np.ndarray, pairs: np.ndarray | None = None) -> np.ndarray:
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
    pairs : np.ndarray, optional
        ``(tracks, genres)`` booleans: the pairs to fit on (by default all).

    Returns
    -------
    np.ndarray
        ``[a, b]``; ``[1, 0]`` without held-out pairs.
    """
    from scipy.optimize import minimize

    chosen = np.ones(np.shape(targets), dtype=bool) if pairs is None else np.asarray(pairs, dtype=bool)
    if len(scores) == 0 or not chosen.any():
        return np.array([1.0, 0.0])
    z = log_softmax(scores)[chosen]
    y = np.asarray(targets, dtype=np.float64)[chosen]

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


def log_loss(probabilities: np.ndarray, targets: np.ndarray, pairs: np.ndarray | None = None) -> float:
    """Mean over tracks of the summed per-genre binary log loss (of the given ``(tracks, genres)`` pairs)."""
    p = np.clip(probabilities, 1e-7, 1 - 1e-7)
    y = np.asarray(targets, dtype=np.float64)
    chosen = np.ones(p.shape, dtype=bool) if pairs is None else np.asarray(pairs, dtype=bool)
    losses = np.where(chosen, -(y * np.log(p) + (1 - y) * np.log(1 - p)), 0.0)
    tracks = chosen.any(axis=1).sum()
    return float(losses.sum() / tracks) if tracks else 0.0


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
                 threshold: float = THRESHOLD, top_k: int = TOP_K, artists=None) -> dict:
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
    artists : sequence, optional
        Each track's artist, to count the artists behind each genre's support.

    Returns
    -------
    dict
        Plain data (JSON-compatible), as stored in the model file:
        ``per_genre`` (precision, recall, f1, support, artists (None
        without ``artists``), average_precision; None where undefined), ``micro_f1``, ``macro_f1``,
        ``mean_average_precision``, ``top1_accuracy`` and ``top1_tracks``,
        ``ece`` (of the primary genre's probability), ``tracks``,
        ``threshold``, ``top_k``, and ``confusion`` (first tagged genre x primary genre).
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
    supporting = artist_counts(truth, artists) if artists is not None else [None] * n_genres
    for c, name in enumerate(genres):
        precision = tp[c] / predicted[c] if predicted[c] else None
        recall = tp[c] / support[c] if support[c] else None
        f1 = 2 * tp[c] / (predicted[c] + support[c]) if support[c] else None
        ap = average_precision(probabilities[:, c], truth[:, c])
        per_genre[name] = {"precision": _float(precision), "recall": _float(recall), "f1": _float(f1),
                           "support": int(support[c]), "artists": supporting[c], "average_precision": ap}
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
        "top_k": int(top_k),
        "confusion": confusion.tolist(),
    }


def artist_counts(truth: np.ndarray, artists) -> list[int]:
    """Per genre, the number of distinct artists among the tracks that carry it."""
    truth = np.asarray(truth, dtype=bool)
    return [len({artists[i] for i in np.flatnonzero(truth[:, c])}) for c in range(truth.shape[1])]


def _float(value):
    return None if value is None else float(value)


def plural(count: int, word: str) -> str:
    """``"1 track"``, ``"2 tracks"``."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def format_report(report: dict, genres, tracks_per_genre: dict | None = None,
                  scope: str = "validation tracks (their artists are not in training)",
                  artists_per_genre: dict | None = None) -> str:
    """A report as a terminal table, with the confusion matrix of the primary genre.

    Genres whose scored tracks come from fewer than
    :data:`MIN_JUDGED_ARTISTS` artists are marked ``*``; genres with no
    scored track are named below the table with why.

    Parameters
    ----------
    report : dict
        From :func:`genre_report`.
    genres : list of str
    tracks_per_genre, artists_per_genre : dict, optional
        Training tracks and artists per genre, shown as columns when given.
    scope : str
        What the evaluated tracks are, for the summary line.
    """
    def cell(value, width, form="{:.2f}"):
        return f"{'n/a' if value is None else form.format(value):>{width}}"

    number_width = len(str(len(genres)))
    width = max([len(g) for g in genres] + [5]) + number_width + 2
    trained = tracks_per_genre is not None
    by_artist = any(row.get("artists") is not None for row in report["per_genre"].values())
    lines = [f"{'genre':<{width}}  precision  recall     f1     AP  support" + ("  artists" if by_artist else "")
             + ("  trained on" if trained else "")]
    few, unjudged = [], []
    for number, name in enumerate(genres, 1):
        row = report["per_genre"][name]
        judged_artists = row.get("artists")
        marked = by_artist and row["support"] and judged_artists < MIN_JUDGED_ARTISTS
        if marked:
            few.append(name)
        if not row["support"]:
            unjudged.append(name)
        label = f"{number:>{number_width}} {name}" + ("*" if marked else "")
        training = ""
        if trained:
            training = f"  {tracks_per_genre.get(name, 0):>5} tracks"
            if artists_per_genre is not None:
                training += f", {plural(artists_per_genre.get(name, 0), 'artist')}"
        lines.append(f"{label:<{width}}  {cell(row['precision'], 9)}  {cell(row['recall'], 6)}  "
                     f"{cell(row['f1'], 5)}  {cell(row['average_precision'], 5)}  {row['support']:7d}"
                     + (f"  {judged_artists:7d}" if by_artist else "") + training)
    if few:
        lines.append(f"* scored on tracks of fewer than {MIN_JUDGED_ARTISTS} artists: its figures say more about "
                     "those artists than about the genre")
    if unjudged:
        why = ""
        if artists_per_genre is not None and all(artists_per_genre.get(g) == 1 for g in unjudged):
            why = " (played by one artist only: the head that held that artist out could not learn it)"
        lines.append(f"not scored: {', '.join(unjudged)}{why}")
    summary = (f"micro-F1 {report['micro_f1']:.3f}, macro-F1 {report['macro_f1']:.3f}, "
               f"mAP {_text(report['mean_average_precision'], '{:.3f}')}")
    lines.append(f"{summary} on {report['tracks']} {scope}")
    if "top_k" in report:
        lines.append(f"a track's genres: those at or above threshold {report['threshold']:g}, at most "
                     f"{report['top_k']} (top_k), never none")
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


# ------------------------------------------------------------- usability

#: Bounds of the usability check (bench/RESULTS.md, "Long-tailed taxonomies", gives the healthy range).
MIN_SPREAD = 0.1
#: A slope under this flattens every score towards one value (a collapse); a large one only sharpens
#: underconfident scores (a scratch CNN on a small validation split), which is no fault.
MIN_SLOPE = 0.3
MIN_GAIN_OVER_MAJORITY = 0.1


@dataclasses.dataclass
class Usability:
    """Whether a trained model's held-out scores are worth using, and if not, why.

    Attributes
    ----------
    problems : list of str
        What failed, one short clause each (empty: usable).
    cause : str or None
        The likely cause, e.g. ``"soundtrack: 12 tracks, all by one artist"``.
    advice : str or None
        What to do about it.
    """

    problems: list
    cause: str | None = None
    advice: str | None = None

    @property
    def usable(self) -> bool:
        return not self.problems

    def line(self) -> str:
        """One line: what failed, the likely cause and what to do ('' when usable)."""
        if self.usable:
            return ""
        text = "the model looks unusable: " + "; ".join(self.problems)
        if self.cause:
            text += f". Likely cause: {self.cause}"
        return text + (f". {self.advice}" if self.advice else "")


def check_usability(truth: np.ndarray, probabilities: np.ndarray, first: np.ndarray, calibration,
                    genres, tracks_per_genre: dict, artists_per_genre: dict) -> Usability:
    """Check held-out predictions for the signs of a collapsed head.

    The primary genre's probabilities must spread: the tenth to ninetieth
    percentile at least half :data:`MIN_SPREAD` apart (unless nearly all
    are sure), and :data:`MIN_SPREAD` apart when all are under 0.5 (``-g``
    would apply nothing); the calibration slope
    be at least :data:`MIN_SLOPE`, and the primary genre be right at least
    :data:`MIN_GAIN_OVER_MAJORITY` more often than always answering the
    most common first genre.

    Parameters
    ----------
    truth, probabilities : np.ndarray
        ``(tracks, genres)`` of the scored held-out tracks.
    first : np.ndarray
        Each track's first tagged genre.
    calibration : sequence
        ``[a, b]`` of :func:`fit_calibration`.
    genres : list of str
    tracks_per_genre, artists_per_genre : dict
        Training tracks and artists of each genre, to name a likely cause.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    first = np.asarray(first, dtype=int)
    problems = []
    if len(probabilities) >= 2:
        low, high = np.percentile(probabilities.max(axis=1), [10, 90])
        spread = high - low
        # Collapsed: nearly all the same (unless all sure), or close together and all unsure.
        if (spread < MIN_SPREAD / 2 and high < 1 - MIN_SPREAD / 2) or (spread < MIN_SPREAD and high < 0.5):
            problems.append(f"scores hardly spread (80% of held-out tracks' top scores between {low:.2f} and "
                            f"{high:.2f})")
    slope = float(calibration[0])
    if slope < MIN_SLOPE:
        problems.append(f"calibration slope {slope:.3g} under {MIN_SLOPE:g}")
    if len(first):
        accuracy = float((probabilities.argmax(axis=1) == first).mean())
        counts = np.bincount(first, minlength=len(genres))
        majority = counts.max() / len(first)
        if accuracy < majority + MIN_GAIN_OVER_MAJORITY:
            problems.append(f"held-out primary genre right for {accuracy:.0%} of tracks, against {majority:.0%} "
                            f"by always answering {genres[int(counts.argmax())]}")
    if not problems:
        return Usability([])
    lonely = [g for g in genres if artists_per_genre.get(g) == 1]
    few = [g for g in genres if artists_per_genre.get(g, 0) == 2]
    if lonely:
        cause = "; ".join(f"{g}: {plural(tracks_per_genre[g], 'track')}, all by one artist" for g in lonely[:3])
        if len(lonely) > 3:
            cause += f"; and {plural(len(lonely) - 3, 'other genre')} of one artist"
        advice = ("Tag tracks of other artists with " + ("that genre" if len(lonely) == 1 else "those genres")
                  + ", or leave it out of training (a whitelist, or a higher -m), and train again")
    elif few:
        cause = "; ".join(f"{g}: {plural(tracks_per_genre[g], 'track')} by 2 artists" for g in few[:3])
        if len(few) > 3:
            cause += f"; and {plural(len(few) - 3, 'other genre')} of 2 artists"
        advice = "Tag tracks of more artists with those genres, or leave them out (a higher -m), and train again"
    else:
        cause = "the tagged genres are not told apart by the audio, or the tags disagree with it"
        advice = ("Check the tags (beet cnngenre --suspects), tag more tracks, or learn fewer, broader genres "
                  "(--max-genres), and train again")
    return Usability(problems, cause, advice)
