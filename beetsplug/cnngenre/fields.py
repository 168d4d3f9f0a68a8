"""The plugin's fields: what a prediction becomes on an item and on an album, the genres ``-g`` applies
and how it records them, what ``--remove`` takes back, and the ``$cnn_sort_genre`` template field.

An album's fields have names of their own (``cnn_album_genre`` beside an item's ``cnn_genre``): beets
lets an item fall back to its album's flexible field of the same name in formats and queries, so with
shared names a track cnngenre never predicted (a file that failed, a track not yet run) would show and
match its album's prediction as its own. With distinct names an item shows its own prediction or nothing,
and ``cnn_album_genre`` on an item still reads its album's (``beet ls cnn_album_genre:jazz`` lists the
tracks of jazz albums).
"""

from __future__ import annotations

from beets.dbcore import types
from beets.library import Item

#: Scores kept in ``cnn_scores``: the best, down to this probability.
SCORES_KEPT, SCORE_FLOOR = 10, 0.01


class Genres(tuple):
    """The value of a list field (see :class:`GenreList`): a tuple that beets' queries match as they match
    lists. ``cnn_genres:=jazz`` is true when ``jazz`` is one of the values (beets' exact match compares
    with ``==``), and substring and regular-expression queries see the values as ``$cnn_genres`` shows
    them, joined by ``; ``."""

    __slots__ = ()

    def __eq__(self, other):
        if isinstance(other, str):
            return other in tuple(self)
        return tuple.__eq__(self, other)

    def __ne__(self, other):
        return not self == other

    __hash__ = tuple.__hash__

    def __str__(self) -> str:
        return "; ".join(self)


class GenreList(types.DelimitedString):
    """A list of genres stored like beets' multi-value fields, held as :class:`Genres`.

    Not as a list because beets' diff (``beets/util/diff.py``, ``_field_diff``)
    calls ``set()`` on both sides of a field whose old value is a list:
    ``beet modify FIELD!`` on a list-valued flexible field then crashes on
    ``set(None)``. A tuple takes beets' plain-value path, which shows a
    deleted field as deleted.
    """

    model_type = Genres

    def parse(self, string: str) -> Genres:
        return Genres(super().parse(string))

    def normalize(self, value) -> Genres:
        return Genres(super().normalize(value))

    @property
    def null(self) -> Genres:
        return Genres()


GENRE_LIST = GenreList(types.MULTI_VALUE_DELIMITER)

#: Fields items and albums both have, by their part of the name (``cnn_genre``, ``cnn_album_genre``).
_SHARED_TYPES = {
    "genre": types.STRING,
    "genre_score": types.Float(2),
    "genres": GENRE_LIST,
    "scores": GENRE_LIST,
    "model": types.STRING,
    "applied": GENRE_LIST,
    "replaced": GENRE_LIST,
    "suspect": types.Float(2),
}
#: The fields a prediction sets, by their part of the name.
PREDICTION = ("genre", "genre_score", "genres", "scores", "model")


def field(obj_or_kind, part: str) -> str:
    """The name of a field on an item (``cnn_PART``) or an album (``cnn_album_PART``)."""
    album = obj_or_kind == "album" if isinstance(obj_or_kind, str) else not isinstance(obj_or_kind, Item)
    return f"cnn_album_{part}" if album else f"cnn_{part}"


ITEM_TYPES = {field("item", part): kind for part, kind in _SHARED_TYPES.items()} | {
    "cnn_tags": GENRE_LIST,
    "cnn_error": types.STRING,
    "cnn_write_pending": types.BOOLEAN,
}
ALBUM_TYPES = {field("album", part): kind for part, kind in _SHARED_TYPES.items()}

#: Every field cnngenre adds: what ``--remove`` takes away.
ITEM_FIELDS, ALBUM_FIELDS = tuple(ITEM_TYPES), tuple(ALBUM_TYPES)


def own(obj, name: str):
    """An item's or album's own field; an item's missing field does not look at its album."""
    return obj.get(name, with_album=False) if isinstance(obj, Item) else obj.get(name)


def is_predicted(obj, model_id: str) -> bool:
    """Whether ``obj`` holds a whole prediction of this model (a field deleted by hand: it does not)."""
    values = [own(obj, field(obj, part)) for part in PREDICTION]
    return values[-1] == model_id and all(value not in (None, "", ()) for value in values)


def training_genres(obj, train_on_applied: bool = False) -> list:
    """An item's (or album's) genres that may teach or judge a model: not those cnngenre applied itself
    (``cnn_applied``), unless ``train_on_applied``."""
    from genre_cnn_core import genre_key

    genres = list(own(obj, "genres") or [])
    if train_on_applied:
        return genres
    applied = {genre_key(g) for g in own(obj, field(obj, "applied")) or []}
    return [g for g in genres if genre_key(g) not in applied]


def item_fields(prediction, model_id: str, settings, taxonomy=None) -> dict:
    """Every field of an item's prediction, computed before anything is assigned."""
    scores = dict(prediction.ranked())
    if taxonomy is not None and settings.parents:
        scores = taxonomy.with_parents(scores)
    values = prediction_fields(scores, model_id, settings, taxonomy)
    values["cnn_tags"] = [t for t, _ in prediction.tags]
    return values


def prediction_fields(scores: dict, model_id: str, settings, taxonomy=None, kind: str = "item") -> dict:
    """The fields of genre probabilities (an item's, or with ``kind="album"`` an album's).

    With a genre tree, a chosen genre comes before its chosen ancestors: the
    primary genre is then the most specific one that clears the threshold.
    Every probability is written with the same four decimals, so that what
    a change line shows is what is stored.
    """
    from genre_cnn_core import select_genres

    genres = list(scores)
    chosen = [genres[c] for c in select_genres([scores[g] for g in genres], settings.threshold, settings.top_k)]
    if taxonomy is not None:
        chosen = taxonomy.specific_first(chosen)
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    kept = [(g, p) for g, p in ranked[:SCORES_KEPT] if p >= SCORE_FLOOR] or ranked[:1]
    return {
        field(kind, "genre"): chosen[0],
        field(kind, "genre_score"): round(float(scores[chosen[0]]), 4),
        field(kind, "genres"): chosen,
        field(kind, "scores"): [f"{g} {p:.4f}" for g, p in kept],
        field(kind, "model"): model_id,
    }


def same_value(old, new) -> bool:
    """Whether a field's stored value (lists come back from beets as lists or tuples) equals a new one."""
    def plain(value):
        return list(value) if isinstance(value, (list, tuple)) else value
    return plain(old) == plain(new)


def parse_scores(values) -> dict:
    """Genre -> number from a ``cnn_scores`` field (``["jazz 0.8300", ...]``), unchecked: for display."""
    scores = {}
    for value in values or []:
        genre, _, number = str(value).rpartition(" ")
        try:
            scores[genre] = float(number)
        except ValueError:
            continue
    return scores


def stored_scores(item) -> dict:
    """An item's stored probabilities, checked (:func:`genre_cnn_core.checked_scores`).

    Raises
    ------
    ValueError
        When any of them is not a genre and a probability from 0 to 1 (someone edited ``cnn_scores``).
    """
    from genre_cnn_core import checked_scores

    values = own(item, "cnn_scores") or ()
    scores = parse_scores(values)
    if len(scores) != len(values):
        raise ValueError(f"cnn_scores holds {len(values) - len(scores)} values that are not 'genre number'")
    return checked_scores(scores)


def album_fields(album, tracks, model_id: str, settings, fresh: dict, taxonomy=None, log=None):
    """An album's prediction from every one of its tracks the current model predicted.

    ``fresh`` maps item ids to the probabilities predicted in this run (stored
    or not, as with ``-p``); the other tracks' come from the database, checked.

    Returns
    -------
    tuple
        ``(fields, tracks used)``, or ``(None, 0)`` when no track is predicted.
    """
    from genre_cnn_core import album_scores

    track_scores = []
    for item in tracks:
        if item.id in fresh:
            track_scores.append(fresh[item.id])
        elif is_predicted(item, model_id):
            try:
                track_scores.append(stored_scores(item))
            except ValueError as error:
                if log is not None:
                    log.warning("{}: left out of its album's prediction: {}; -f predicts it again",
                                item.filepath, error)
    if not track_scores:
        return None, 0
    return prediction_fields(album_scores(track_scores), model_id, settings, taxonomy, kind="album"), len(track_scores)


def owns_genres(obj) -> bool:
    """Whether ``genres`` is still what cnngenre's ``-g`` made it (the user has not changed it since)."""
    from genre_cnn_core import genre_key

    applied = own(obj, field(obj, "applied"))
    if not applied:
        return False
    keys = {genre_key(g) for g in own(obj, "genres") or ()}
    replaced = {genre_key(g) for g in own(obj, field(obj, "replaced")) or ()}
    applied_keys = {genre_key(g) for g in applied}
    return keys in (applied_keys, replaced | applied_keys)


def applied_genres(obj, genres, score: float, settings, spellings: dict) -> dict:
    """``genres`` from predicted ``genres`` (with the record of what changed), when ``-g`` may change them.

    Empty ``genres`` are filled. Genres the user set are left alone unless
    ``force``; then replaced, or with ``keep_existing`` kept and the
    predicted ones added (lastgenre's ``force`` and ``keep_existing``).
    Genres cnngenre applied itself count as empty: a new prediction
    replaces them. ``cnn_applied`` records the genres cnngenre wrote (they
    are left out of training) and ``cnn_replaced`` the user's genres it
    replaced or kept, which ``--remove`` restores.
    """
    from genre_cnn_core import genre_key

    if score is None or score < settings.threshold or not genres:
        return {}
    mine = owns_genres(obj)
    users = list(own(obj, field(obj, "replaced")) or ()) if mine else list(own(obj, "genres") or ())
    new = [spellings.get(g, g.title()) for g in genres]
    if users and not settings.force:
        return {}
    if users and settings.keep_existing:
        known = {genre_key(g) for g in users}
        added = [g for g in new if genre_key(g) not in known]
        result = users + added
    else:
        added = result = new
    if same_value(own(obj, "genres"), result):
        return {}
    return {"genres": result, field(obj, "applied"): added, field(obj, "replaced"): users or None}


def removal(obj) -> dict:
    """What ``--remove`` sets: every cnngenre field gone, and ``genres`` back to the user's when cnngenre
    applied them and they are unchanged since (None: a field removed)."""
    values = {name: None for name in (ITEM_FIELDS if isinstance(obj, Item) else ALBUM_FIELDS)
              if own(obj, name) is not None}
    if owns_genres(obj):
        values["genres"] = list(own(obj, field(obj, "replaced")) or ())
    return values


def spellings(model, taxonomy) -> dict:
    """How to write each predictable genre into ``genres``: the library's spelling."""
    spellings = dict(zip(model.genres, model.spellings))
    if taxonomy is not None:
        from genre_cnn_core import display_name, genre_key

        for name in model.genres:
            for ancestor in taxonomy.ancestors(genre_key(name)):
                tree_name = taxonomy.tree_name(ancestor) or ancestor
                spellings.setdefault(display_name(tree_name), tree_name.title())
    return spellings


def sort_genre(item) -> str:
    """Template field ``$cnn_sort_genre``: the album's genre for the tracks of an album, so an album stays
    in one folder; a singleton's own genre; empty when there is none.

    The same as the album's ``$cnn_sort_genre`` (:func:`album_sort_genre`), which beets uses instead of
    this one in path formats (album fields come first there): a compilation's tracks go by their own
    genre through ``$cnn_genre`` in the ``comp`` path format.
    """
    album = item.get_album() if item.get("album_id") else None
    if album is not None:
        return album_sort_genre(album)
    return item.get("cnn_genre", with_album=False) or ""


def album_sort_genre(album) -> str:
    """Album template field ``$cnn_sort_genre``: the album's genre (empty when there is none)."""
    return album.get("cnn_album_genre") or ""


def matched_items(lib, args, albums: bool) -> list:
    """The items a query matches; with ``albums``, the tracks of the albums it matches."""
    return [item for album in lib.albums(args) for item in album.items()] if albums else list(lib.items(args))
