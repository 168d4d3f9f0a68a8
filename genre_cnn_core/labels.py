"""Genre label normalisation and selection of training labels.

Library tags are messy: ``Hip-Hop``, ``hip hop`` and ``hiphop`` are one
genre, and a single value may hold several (``Rock; Alternative``).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

_SEPARATORS = re.compile(r"\s*(?:;|,|/|\||\\)\s*")
_NON_ALNUM = re.compile(r"[\W_]+", re.UNICODE)

# Spellings whose letters differ, not only their punctuation.
_ALIASES = {
    "rb": "rnb",
    "randb": "rnb",
    "rhythmandblues": "rnb",
    "hiphoprap": "hiphop",
    "electronica": "electronic",
    "soundtracks": "soundtrack",
    "ost": "soundtrack",
}

#: How the canonical key of a genre is displayed when the library has no
#: better spelling of it.
_DISPLAY = {"rnb": "r&b", "hiphop": "hip-hop"}

MAX_GENRE_LENGTH = 64


def genre_key(value: str) -> str:
    """Return the comparison key of one genre value.

    Case, accents, spacing and punctuation are ignored, so
    ``"Hip-Hop"``, ``"hip hop"`` and ``"HipHop"`` share the key
    ``"hiphop"``.

    Parameters
    ----------
    value : str
        One genre, already split from any list.

    Returns
    -------
    str
        The key; empty when ``value`` holds no letters or digits.
    """
    text = unicodedata.normalize("NFKC", value).casefold()
    key = _NON_ALNUM.sub("", text.replace("&", "and"))
    return _ALIASES.get(key, key)


def split_genres(values: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Split genre values such as ``"Rock; Alternative"`` into single genres.

    Parameters
    ----------
    values : str or sequence of str or None
        A beets ``genres`` list or a single tag string.

    Returns
    -------
    list of str
        Stripped, non-empty genres in their original order.
    """
    if not values:
        return []
    if isinstance(values, str):
        values = [values]
    parts = []
    for value in values:
        for part in _SEPARATORS.split(str(value)):
            part = " ".join(part.split())
            if part and genre_key(part):
                parts.append(part)
    return parts


def display_name(spellings: Counter) -> str:
    """Pick how a genre is shown: its most frequent spelling, lower-cased."""
    (spelling, _), = spellings.most_common(1)
    key = genre_key(spelling)
    if key in _DISPLAY:
        return _DISPLAY[key]
    return " ".join(spelling.lower().split())[:MAX_GENRE_LENGTH]


@dataclass
class LabelChoice:
    """Training labels chosen from a library's genre tags.

    Attributes
    ----------
    genres : list of str
        Class names, most common first.
    labels : list of int or None
        Class index per input track; None for tracks left out.
    counts : dict
        Tracks per kept genre.
    dropped : dict
        Tracks per genre left out because it had too few tracks (or
        ``max_genres`` was reached).
    unlabelled : int
        Tracks without any usable genre.
    """

    genres: list[str]
    labels: list[int | None]
    counts: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    unlabelled: int = 0


def choose_labels(
    track_genres: list,
    min_tracks: int = 10,
    max_genres: int | None = None,
) -> LabelChoice:
    """Choose one training label per track.

    The first genre of a track is its label. Genres with fewer than
    ``min_tracks`` tracks are left out; ``max_genres`` keeps the most common.

    Parameters
    ----------
    track_genres : list
        Per track, its genres (a list of strings or one string).
    min_tracks : int
        Fewest tracks a genre needs to be learned.
    max_genres : int or None
        Most genres to keep; None or 0 keeps all.

    Returns
    -------
    LabelChoice
    """
    first_keys: list[str | None] = []
    spellings: dict[str, Counter] = {}
    for genres in track_genres:
        parts = split_genres(genres)
        if not parts:
            first_keys.append(None)
            continue
        key = genre_key(parts[0])
        first_keys.append(key)
        spellings.setdefault(key, Counter())[parts[0]] += 1

    counts = Counter(k for k in first_keys if k is not None)
    # Ties are broken by name so the same library always gives the same model.
    ranked = sorted(counts, key=lambda k: (-counts[k], k))
    kept = [k for k in ranked if counts[k] >= min_tracks]
    if max_genres:
        kept = kept[:max_genres]
    index = {k: i for i, k in enumerate(kept)}
    names = {k: display_name(spellings[k]) for k in counts}
    return LabelChoice(
        genres=[names[k] for k in kept],
        labels=[index.get(k) if k is not None else None for k in first_keys],
        counts={names[k]: counts[k] for k in kept},
        dropped={names[k]: counts[k] for k in ranked if k not in index},
        unlabelled=first_keys.count(None),
    )
