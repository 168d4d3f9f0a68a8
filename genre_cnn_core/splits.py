"""Artist-grouped partitions of tracks: no artist is ever on both sides.

A model is judged on artists it has never heard, so the split is by
artist, and each genre is spread over the sides in proportion.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np


def _shuffled_groups(groups, seed: int) -> tuple[dict, list]:
    """Each group's track indices, and the groups in a random order drawn from ``seed``."""
    members: dict = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    order = list(members)
    np.random.default_rng(seed).shuffle(order)
    return members, order


def _main_stratum(strata: np.ndarray, index) -> int:
    """The genre most of a group's tracks balance by."""
    return Counter(strata[index].tolist()).most_common(1)[0][0]


def grouped_split(strata, groups, val_fraction: float = 0.2, seed: int = 0):
    """Split tracks into training and validation with no group on both sides.

    Groups (artists) are drawn in random order into the validation side
    while their genre still needs validation tracks, so each genre gets
    about ``val_fraction`` of its tracks held out; a genre with a single
    artist stays wholly in training, so the trained network still learns it.

    Parameters
    ----------
    strata : sequence of int
        The genre that balances the split, per track (its first genre).
    groups : sequence of hashable
        Group (artist) per track.
    val_fraction : float
    seed : int

    Returns
    -------
    (np.ndarray, np.ndarray)
        Indices of training and validation tracks.
    """
    strata = np.asarray(strata)
    members, order = _shuffled_groups(groups, seed)
    totals = Counter(strata.tolist())
    artists_per_genre = Counter()
    for group in order:
        for c in set(strata[members[group]].tolist()):
            artists_per_genre[c] += 1
    held, held_artists = Counter(), Counter()
    val = []
    for group in order:
        index = members[group]
        genre = _main_stratum(strata, index)
        wanted = math.floor(val_fraction * totals[genre] + 0.5)
        fits = held[genre] == 0 or held[genre] + len(index) <= wanted
        if (held[genre] < wanted and fits and held_artists[genre] + 1 < artists_per_genre[genre]
                and held[genre] + len(index) < totals[genre]):
            val.extend(index)
            held[genre] += len(index)
            held_artists[genre] += 1
    val_set = set(val)
    train = [i for i in range(len(strata)) if i not in val_set]
    return np.asarray(train, dtype=int), np.asarray(sorted(val), dtype=int)


def grouped_folds(strata, groups, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Assign every track to one of ``n_folds`` folds, whole artists at a time.

    Artists are placed largest first (ties in random order) into the fold
    that holds the fewest tracks of their genre, then the fewest tracks,
    so each genre is spread over the folds. Held out fold by fold, every
    track gets exactly one prediction from a model that never heard its
    artist (out-of-fold predictions).

    Parameters
    ----------
    strata : sequence of int
        The genre that balances the folds, per track (its first genre).
    groups : sequence of hashable
        Group (artist) per track.
    n_folds : int
    seed : int

    Returns
    -------
    np.ndarray
        Fold of each track, ``0 .. n_folds - 1``.
    """
    strata = np.asarray(strata)
    members, order = _shuffled_groups(groups, seed)
    order.sort(key=lambda g: -len(members[g]))  # stable: random among equal sizes
    per_genre = np.zeros((n_folds, int(strata.max(initial=0)) + 1), dtype=int)
    sizes = np.zeros(n_folds, dtype=int)
    folds = np.zeros(len(strata), dtype=int)
    for group in order:
        index = members[group]
        genre = _main_stratum(strata, index)
        fold = min(range(n_folds), key=lambda f: (per_genre[f, genre], sizes[f], f))
        folds[index] = fold
        per_genre[fold, genre] += len(index)
        sizes[fold] += len(index)
    return folds
