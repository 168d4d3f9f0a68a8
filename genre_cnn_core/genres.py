"""Genre values as a library holds them, and the genres a model learns from them.

Library tags are messy: ``Hip-Hop``, ``hip hop`` and ``hiphop`` are one
genre, and one value may hold several (``Rock; Alternative``). A
:class:`Taxonomy` adds what the built-in normalisation cannot know: aliases
(``nyhc`` is ``new york hardcore``), a genre tree (``bebop`` is ``jazz``) and
a whitelist, in the formats of beets' lastgenre plugin.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections import Counter
from typing import Iterable, Sequence

_SEPARATORS = re.compile(r"\s*(?:;|,|/|\||\\)\s*")
_NON_ALNUM = re.compile(r"[\W_]+", re.UNICODE)

# Spellings whose letters differ, not only their punctuation.
_BUILTIN_ALIASES = {
    "rb": "rnb",
    "randb": "rnb",
    "rhythmandblues": "rnb",
    "hiphoprap": "hiphop",
    "electronica": "electronic",
    "soundtracks": "soundtrack",
    "ost": "soundtrack",
}

#: How a genre key is displayed when the library has no better spelling of it.
_DISPLAY = {"rnb": "r&b", "hiphop": "hip-hop"}

MAX_GENRE_LENGTH = 64


def genre_key(value: str) -> str:
    """Return the comparison key of one genre value.

    Case, accents, spacing and punctuation are ignored, so ``"Hip-Hop"``,
    ``"hip hop"`` and ``"HipHop"`` share the key ``"hiphop"``.

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
    return _BUILTIN_ALIASES.get(key, key)


def split_genres(values: str | Sequence[str] | None) -> list[str]:
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


def display_name(spelling: str) -> str:
    """How a genre is shown in the ``cnn_*`` fields: its spelling, lower-cased."""
    return _DISPLAY.get(genre_key(spelling), " ".join(spelling.lower().split())[:MAX_GENRE_LENGTH])


# ------------------------------------------------------------ lastgenre's files


def load_tree(path: str) -> dict[str, list[str]]:
    """Read a genre tree in lastgenre's YAML format (nested lists and mappings).

    Returns
    -------
    dict
        Each genre's name mapped to its ancestors, closest first. A genre
        that appears in several branches keeps its first, as lastgenre's
        ``find_parents`` does.

    Raises
    ------
    ValueError
        The file is not such a tree.
    """
    import yaml

    with open(path, encoding="utf-8") as handle:
        tree = yaml.safe_load(handle)
    if not isinstance(tree, (list, dict)):
        raise ValueError(f"{path}: not a genre tree (a YAML list or mapping of genres)")
    parents: dict[str, list[str]] = {}

    def walk(node, path_so_far):
        if isinstance(node, dict):
            for name, children in node.items():
                parents.setdefault(str(name), list(reversed(path_so_far)))
                walk(children, [*path_so_far, str(name)])
        elif isinstance(node, list):
            for child in node:
                walk(child, path_so_far)
        elif node is not None:
            parents.setdefault(str(node), list(reversed(path_so_far)))

    walk(tree, [])
    return parents


def load_whitelist(path: str) -> set[str]:
    """Genres listed one per line (``#`` starts a comment), as lastgenre's ``genres.txt``."""
    with open(path, encoding="utf-8") as handle:
        return {line.strip() for line in handle if line.strip() and not line.lstrip().startswith("#")}


def load_alias_patterns(path: str) -> dict[str, list[str]]:
    """Read lastgenre's ``aliases.yaml``: each genre mapped to the regular expressions of its spellings."""
    import yaml

    with open(path, encoding="utf-8") as handle:
        table = yaml.safe_load(handle) or {}
    if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
        raise ValueError(f"{path}: not an alias table (genre: [patterns])")
    return {str(genre): [str(p) for p in patterns] for genre, patterns in table.items()}


# ------------------------------------------------------------------ taxonomy


@dataclasses.dataclass
class Taxonomy:
    """How genre values map to the genres a model learns and predicts.

    The default taxonomy is the library's own: values are only split and
    normalised (:func:`genre_key`).

    Parameters
    ----------
    aliases : dict, optional
        Spelling -> the genre it means (``{"nyhc": "new york hardcore"}``);
        spellings are compared by :func:`genre_key`.
    alias_patterns : dict, optional
        Genre -> regular expressions of its spellings, matched against the
        whole lower-cased value (lastgenre's ``aliases.yaml``; the genre
        may use the groups as ``\\1``).
    tree : dict, optional
        Genre -> its ancestors, closest first (:func:`load_tree`).
    learn_parents : bool
        Count a track's genres' ancestors as its genres when learning
        (lastgenre's ``canonical``): "Bebop" then also teaches "Jazz".
    whitelist : iterable of str, optional
        Only these genres are learned.
    """

    aliases: dict = dataclasses.field(default_factory=dict)
    alias_patterns: dict = dataclasses.field(default_factory=dict)
    tree: dict = dataclasses.field(default_factory=dict)
    learn_parents: bool = False
    whitelist: Iterable | None = None

    def __post_init__(self):
        self._aliases = {genre_key(k): str(v) for k, v in self.aliases.items() if genre_key(k)}
        self._patterns = []
        for genre, patterns in self.alias_patterns.items():
            for pattern in patterns:
                try:
                    self._patterns.append((re.compile(pattern, re.IGNORECASE), str(genre)))
                except re.error as error:
                    raise ValueError(f"alias pattern {pattern!r} of {genre!r}: {error}") from None
        self._parents = {}
        self._tree_names = {}
        for name, ancestors in self.tree.items():
            key = genre_key(name)
            if key and key not in self._parents:
                self._parents[key] = [genre_key(a) for a in ancestors if genre_key(a)]
                self._tree_names[key] = name
            for ancestor in ancestors:
                self._tree_names.setdefault(genre_key(ancestor), ancestor)
        self._whitelist = None if self.whitelist is None else {genre_key(g) for g in self.whitelist}

    def resolve(self, value: str) -> str:
        """The spelling a genre value stands for, after aliases (else the value itself)."""
        alias = self._aliases.get(genre_key(value))
        if alias is not None:
            return alias
        lowered = " ".join(value.lower().split())
        for pattern, template in self._patterns:
            match = pattern.fullmatch(lowered)
            if match:
                try:
                    return match.expand(template)
                except (re.error, IndexError):
                    continue
        return value

    def ancestors(self, key: str) -> list[str]:
        """Keys of a genre's ancestors in the tree, closest first."""
        return self._parents.get(key, [])

    def relatives(self, key: str) -> set[str]:
        """A genre's key with those of its ancestors and descendants: genres it does not contradict."""
        found = {key, *self.ancestors(key)}
        found.update(child for child, ancestors in self._parents.items() if key in ancestors)
        return found

    def tree_name(self, key: str) -> str | None:
        """How the tree spells a genre, if the tree has it."""
        return self._tree_names.get(key)

    def allowed(self, key: str) -> bool:
        return self._whitelist is None or key in self._whitelist

    def track_genres(self, values) -> list[tuple[str, str, bool]]:
        """A track's genres as ``(key, spelling, own)``, its own genres first, in order.

        ``own`` is False for ancestors added by ``learn_parents``. Values
        outside the whitelist are kept (the caller reports them).
        """
        found, seen = [], set()
        own = [self.resolve(v) for v in split_genres(values)]
        for spelling in own:
            key = genre_key(spelling)
            if key and key not in seen:
                seen.add(key)
                found.append((key, spelling, True))
        if self.learn_parents:
            for key, _, _ in list(found):
                for ancestor in self.ancestors(key):
                    if ancestor not in seen:
                        seen.add(ancestor)
                        found.append((ancestor, self.tree_name(ancestor), False))
        return found

    def specific_first(self, names: list) -> list:
        """Genre names in their order, except that a genre comes before its ancestors in the tree.

        A track that is metal and rock (its parent) is first of all metal:
        the more specific genre says more, and implies the other.
        """
        ordered: list = []
        for name in names:
            ancestors = set(self.ancestors(genre_key(name)))
            place = next((i for i, other in enumerate(ordered) if genre_key(other) in ancestors), len(ordered))
            ordered.insert(place, name)
        return ordered

    def with_parents(self, scores: dict) -> dict:
        """Add the tree ancestors of predicted genres (display names -> probabilities).

        An ancestor gets the highest probability of itself and its
        predicted descendants: a track that is bebop with 0.8 is jazz with
        at least 0.8.
        """
        out = dict(scores)
        names = {genre_key(name): name for name in scores}
        for name, probability in scores.items():
            for ancestor in self.ancestors(genre_key(name)):
                label = names.setdefault(ancestor, display_name(self.tree_name(ancestor) or ancestor))
                out[label] = max(out.get(label, 0.0), probability)
        return out


# ------------------------------------------------------------ label choice


@dataclasses.dataclass
class LabelChoice:
    """Training labels chosen from a library's genre tags.

    Attributes
    ----------
    genres : list of str
        Learned genres (display names), most common first.
    spellings : list of str
        How the library spells each learned genre: its most common original
        spelling (a genre known only from the tree: the tree's name, title-cased).
    labels : list of tuple of int
        Per input track, the indices of its learned genres, its first genre
        first; empty for tracks left out.
    counts : dict
        Tracks per learned genre.
    dropped : dict
        Genre -> ``(tracks, reason)`` for genres found but not learned.
    from_children : dict
        Learned genre -> the genres it was learned from, for a genre no
        track carries itself (known only as an ancestor in the tree).
    unlabelled : int
        Tracks without any learned genre.
    """

    genres: list[str]
    spellings: list[str]
    labels: list[tuple[int, ...]]
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    dropped: dict[str, tuple[int, str]] = dataclasses.field(default_factory=dict)
    from_children: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    unlabelled: int = 0

    def used(self) -> list[int]:
        """Indices of the tracks that carry at least one learned genre."""
        return [i for i, labels in enumerate(self.labels) if labels]

    def label_matrix(self, tracks: Sequence[int]):
        """``(len(tracks), genres)`` boolean matrix of the given tracks' genres."""
        import numpy as np

        matrix = np.zeros((len(tracks), len(self.genres)), dtype=bool)
        for row, track in enumerate(tracks):
            matrix[row, list(self.labels[track])] = True
        return matrix


def choose_labels(track_genres: Sequence, taxonomy: Taxonomy | None = None, min_tracks: int = 10,
                  max_genres: int | None = None) -> LabelChoice:
    """Choose the genres to learn and each track's labels.

    Every genre of a track counts, not only its first. Genres outside the
    whitelist, with fewer than ``min_tracks`` tracks, or beyond the
    ``max_genres`` most common are left out, each with its reason.

    Parameters
    ----------
    track_genres : sequence
        Per track, its genres (a list of strings or one string).
    taxonomy : Taxonomy, optional
        Aliases, tree and whitelist; by default the library's own genres.
    min_tracks : int
        Fewest tracks a genre needs to be learned.
    max_genres : int or None
        Most genres to keep; None or 0 keeps all.

    Returns
    -------
    LabelChoice
    """
    taxonomy = taxonomy or Taxonomy()
    per_track = [taxonomy.track_genres(values) for values in track_genres]
    spellings: dict[str, Counter] = {}
    counts, own_counts = Counter(), Counter()
    children: dict[str, set] = {}
    for genres in per_track:
        for key, spelling, own in genres:
            counts[key] += 1
            if own:
                own_counts[key] += 1
                spellings.setdefault(key, Counter())[spelling] += 1
        own_keys = [key for key, _, own in genres if own]
        for key, _, own in genres:
            if not own:
                children.setdefault(key, set()).update(k for k in own_keys if key in taxonomy.ancestors(k))

    def spelling_of(key):
        if key in spellings:
            return spellings[key].most_common(1)[0][0]
        return (taxonomy.tree_name(key) or key).title()

    names = {key: display_name(spelling_of(key)) for key in counts}
    # Ties are broken by key so the same library always gives the same model.
    ranked = sorted(counts, key=lambda k: (-counts[k], k))
    dropped, kept = {}, []
    for key in ranked:
        if not taxonomy.allowed(key):
            dropped[key] = "not in the whitelist"
        elif counts[key] < min_tracks:
            dropped[key] = f"fewer than {min_tracks} tracks"
        elif max_genres and len(kept) >= max_genres:
            dropped[key] = f"only the {max_genres} most common genres are learned (max_genres)"
        else:
            kept.append(key)
    index = {key: i for i, key in enumerate(kept)}
    labels = [tuple(index[key] for key, _, _ in genres if key in index) for genres in per_track]
    return LabelChoice(
        genres=[names[k] for k in kept],
        spellings=[spelling_of(k) for k in kept],
        labels=labels,
        counts={names[k]: counts[k] for k in kept},
        dropped={names[k]: (counts[k], dropped[k]) for k in ranked if k in dropped},
        from_children={names[k]: sorted(names[c] for c in children.get(k, ()))
                       for k in kept if own_counts[k] == 0},
        unlabelled=sum(1 for track in labels if not track),
    )
