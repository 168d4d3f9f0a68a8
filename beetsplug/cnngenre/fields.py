"""The plugin's fields: what a prediction becomes on an item and on an album, the genres it applies,
the ``$cnn_sort_genre`` template field."""

from __future__ import annotations

from beets import config

#: Scores kept in ``cnn_scores``: the best, down to this probability.
SCORES_KEPT, SCORE_FLOOR = 10, 0.01


def item_fields(prediction, model_id: str, settings, taxonomy=None) -> dict:
    """Every field of an item's prediction, computed before anything is assigned."""
    scores = dict(prediction.ranked())
    if taxonomy is not None and settings.parents:
        scores = taxonomy.with_parents(scores)
    values = prediction_fields(scores, model_id, settings, taxonomy)
    values["cnn_tags"] = [t for t, _ in prediction.tags]
    return values


def prediction_fields(scores: dict, model_id: str, settings, taxonomy=None) -> dict:
    """The ``cnn_*`` fields of genre probabilities (an item's or an album's).

    With a genre tree, a chosen genre comes before its chosen ancestors: the
    primary genre is then the most specific one that clears the threshold.
    """
    from genre_cnn_core import select_genres

    genres = list(scores)
    chosen = [genres[c] for c in select_genres([scores[g] for g in genres], settings.threshold, settings.top_k)]
    if taxonomy is not None:
        chosen = taxonomy.specific_first(chosen)
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    return {
        "cnn_genre": chosen[0],
        "cnn_genre_score": round(float(scores[chosen[0]]), 4),
        "cnn_genres": chosen,
        "cnn_scores": [f"{g} {p:.3f}" for g, p in ranked[:SCORES_KEPT] if p >= SCORE_FLOOR] or
                      [f"{ranked[0][0]} {ranked[0][1]:.3f}"],
        "cnn_model": model_id,
    }


def same_value(old, new) -> bool:
    """Whether a field's stored value (lists come back from beets as lists or tuples) equals a new one."""
    return (list(old) if isinstance(old, (list, tuple)) else old) == new


def parse_scores(values) -> dict:
    """Genre -> probability from a ``cnn_scores`` field (``["jazz 0.830", ...]``)."""
    scores = {}
    for value in values or []:
        genre, _, number = str(value).rpartition(" ")
        try:
            scores[genre] = float(number)
        except ValueError:
            continue
    return scores


def album_fields(album, model_id: str, settings, fresh: dict | None = None, taxonomy=None) -> dict | None:
    """An album's prediction from its tracks that the current model tagged (None if none).

    ``fresh`` maps item ids to fields predicted in this run, which take the
    place of what the database holds (with ``-p`` they are never stored).
    """
    from genre_cnn_core import album_probabilities

    fresh = fresh or {}
    tracks = []
    for item in album.items():
        values = fresh.get(item.id)
        if values is None:  # two fields, not dict(item): that reads every field and the album's, per item
            values = {name: item.get(name, with_album=False) for name in ("cnn_model", "cnn_scores")}
        if values.get("cnn_model") == model_id and (scores := parse_scores(values.get("cnn_scores"))):
            tracks.append(scores)
    if not tracks:
        return None
    genres = sorted({g for t in tracks for g in t})
    mean = album_probabilities([[t.get(g, 0.0) for g in genres] for t in tracks])
    return prediction_fields(dict(zip(genres, mean)), model_id, settings, taxonomy)


def applied_genres(obj, values: dict, settings, spellings: dict) -> dict:
    """``genres`` (and the record that cnngenre chose them) when they may be filled."""
    existing = obj.get("genres", with_album=False) if hasattr(obj, "album_id") else obj.get("genres")
    if (existing and not settings.force) or values["cnn_genre_score"] < settings.threshold:
        return {}
    genres = [spellings.get(g, g.title()) for g in values["cnn_genres"]]
    return {"genres": genres, "cnn_applied": genres}


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
    in one folder; a singleton's or a compilation track's own genre; empty when there is none."""
    album = item.get_album() if item.get("album_id") else None
    compilation = album is not None and (album.get("comp") or album.get("albumartist") == config["va_name"].get())
    if album is not None and not compilation and album.get("cnn_genre"):
        return album["cnn_genre"]
    return item.get("cnn_genre", with_album=False) or ""
