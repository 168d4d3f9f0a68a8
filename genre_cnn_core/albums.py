"""An album's genres from its tracks' predictions."""

from __future__ import annotations

import numpy as np


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
