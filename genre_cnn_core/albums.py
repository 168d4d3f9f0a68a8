"""Albums: an album's genres from its tracks' predictions, and how strongly its audio contradicts its tags."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .genres import Taxonomy
from .model import GenreModel
from .pipeline import Judgement, _judgement, agreeing_genres


def album_probabilities(track_probabilities) -> np.ndarray:
    """Probability that each genre applies to an album: the mean over its tracks.

    The mean of calibrated probabilities stays a probability (a track that
    is unsure counts less than it would in a vote), and one odd track
    cannot outvote the rest as it can in a product (bench/RESULTS.md,
    "Albums", compares it with a vote and the geometric mean).

    Parameters
    ----------
    track_probabilities : array-like
        ``(tracks, genres)`` calibrated probabilities of the album's tracks.

    Returns
    -------
    np.ndarray
        ``(genres,)``.
    """
    probabilities = np.asarray(track_probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or not len(probabilities):
        raise ValueError("an album needs the probabilities of at least one track")
    return probabilities.mean(axis=0)


def checked_scores(scores: Mapping) -> dict[str, float]:
    """Genre -> probability, each one checked: a genre name and a finite number from 0 to 1.

    Scores read back from a library (where anyone can edit them) pass
    through here before they count towards an album.

    Raises
    ------
    ValueError
        Naming the first value that is not a probability.
    """
    checked = {}
    for genre, value in scores.items():
        if not isinstance(genre, str) or not genre:
            raise ValueError(f"{genre!r} is not a genre name")
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or not 0.0 <= value <= 1.0):
            raise ValueError(f"{genre} {value!r} is not a probability")
        checked[genre] = float(value)
    if not checked:
        raise ValueError("no scores")
    return checked


def album_scores(track_scores: Sequence[Mapping]) -> dict[str, float]:
    """An album's genre probabilities from its tracks' (each a genre -> probability mapping, checked by
    :func:`checked_scores`); a genre a track does not list counts as 0 for it (below the floor it keeps)."""
    tracks = [checked_scores(scores) for scores in track_scores]
    genres = sorted({genre for scores in tracks for genre in scores})
    mean = album_probabilities([[scores.get(genre, 0.0) for genre in genres] for scores in tracks])
    return dict(zip(genres, (float(p) for p in mean)))


def judge_album(model: GenreModel, track_probabilities: Sequence, album_genres, taxonomy: Taxonomy | None = None,
                index: int = 0) -> Judgement:
    """How strongly an album's audio (the mean of its judged tracks' probabilities) contradicts its genre tags."""
    agreeing = agreeing_genres(model, album_genres, taxonomy)
    if not agreeing:
        return Judgement(index, None, [], None, "unknown genres" if album_genres else "no genres")
    rows = np.asarray(track_probabilities, dtype=np.float64)
    if not len(rows):
        return Judgement(index, None, [], None, "no judged tracks")
    # Genres a track's held-out model never learned (NaN) are judged by the album's other tracks.
    learned = ~np.isnan(rows)
    mean = np.where(learned.any(axis=0), np.where(learned, rows, 0).sum(axis=0) / np.maximum(learned.sum(axis=0), 1),
                    np.nan)
    return _judgement(model, index, mean, agreeing, "its tracks")
