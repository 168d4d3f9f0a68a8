"""A library on one page: a map of its tracks placed by their audio, where its genre tags and the
model's predictions agree and where they do not, and the model that made them.

:func:`build_page` takes plain data (one dict per track, their cached embeddings, the model's
description) and returns one self-contained HTML file: the data as JSON, plotly.js inline, and a small
script that draws the map (WebGL scatter) and the tables from the data. Nothing in it loads from the
network, so it opens from a USB stick on a machine without internet.

Plotly writes the map because it is a well-kept library whose standalone bundle draws tens of thousands
of points with hover, zoom, legend toggling and selection; its bundle is most of the page's size
(bench/RESULTS.md, "Report page"), which is why it is an extra (``pip install 'beets-cnngenre[report]'``).
The figure is built in the page from the data, not by plotly's Python figure API: that would store every
hover text in the figure beside the same data for the tables. The projection is numpy's
(:func:`project`): why not UMAP is measured in bench/RESULTS.md.
"""

from __future__ import annotations

import datetime
import html
import json
import os
from collections import Counter
from typing import Sequence

import numpy as np

from .files import atomic_write

#: The page's install hint when plotly is missing.
EXTRA = "report"
#: Rows the principal axes are fitted on: more add time, not a visibly different map.
FIT_ROWS = 5000
#: An album is split when its most common predicted genre covers at most this share of its predicted tracks.
SPLIT_SHARE = 0.5
#: Tracks of an album whose predictions are compared (fewer cannot split).
ALBUM_MIN_TRACKS = 2
#: Colours of the predicted genres (Plotly's "Dark24" and "Light24" qualitative palettes, in this order).
UNPREDICTED_COLOUR = "#b0b0b0"

#: The keys of a track's dict (:func:`build_page`).
TRACK_KEYS = ("id", "title", "artist", "album", "album_key", "tagged", "tagged_known", "tagged_unknown",
              "predicted", "genres", "primary", "model", "suspect")


class ReportUnavailable(Exception):
    """A library the page needs is missing (one line naming the extra that installs it)."""


def plotly_js() -> str:
    """The plotly.js bundle of the installed plotly package.

    Raises
    ------
    ReportUnavailable
        When plotly is not installed.
    """
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise ReportUnavailable(f"the report page needs plotly: pip install 'beets-cnngenre[{EXTRA}]'") from None
    return get_plotlyjs()


def track_vector(features: np.ndarray) -> np.ndarray:
    """One vector per track from its cached features: a musicnn embedding as it is; a scratch model's
    log-mel excerpts ``(excerpts, mels, frames)`` as each mel band's mean and standard deviation."""
    values = np.asarray(features, dtype=np.float32)
    if values.ndim == 1:
        return values
    bands = np.moveaxis(values, -2, 0).reshape(values.shape[-2], -1)
    return np.concatenate([bands.mean(axis=1), bands.std(axis=1)])


def project(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """Two coordinates per row: the rows standardised, on their first two principal axes.

    The axes are fitted on at most :data:`FIT_ROWS` rows drawn with ``seed``, then every row is placed
    on them; the same library gives the same map. Columns that do not vary are left out.

    Parameters
    ----------
    vectors : np.ndarray
        ``(tracks, features)``.

    Returns
    -------
    np.ndarray
        ``(tracks, 2)`` float32, scaled so that the first axis has unit standard deviation.
    """
    data = np.asarray(vectors, dtype=np.float32)
    if data.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array, not {data.shape}")
    if len(data) < 3:
        return np.zeros((len(data), 2), np.float32)
    rng = np.random.default_rng(seed)
    sample = data[rng.choice(len(data), FIT_ROWS, replace=False)] if len(data) > FIT_ROWS else data
    mean, spread = sample.mean(axis=0), sample.std(axis=0)
    varying = spread > 1e-6 * max(float(spread.max()), 1e-12)
    standard = (sample[:, varying] - mean[varying]) / spread[varying]
    axes = _leading_axes(standard, 2, rng)
    # An axis's sign is arbitrary: point it where its largest loading is positive, so reruns agree.
    axes *= np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])[:, None]
    # Standardising folded into the weights: no standardised copy of every row.
    weights = np.zeros((len(axes), data.shape[1]), np.float32)
    weights[:, varying] = axes / spread[varying]
    placed = data @ weights.T - mean @ weights.T
    placed /= max(float(placed[:, 0].std()), 1e-12)  # one scale for both: the second axis spreads less
    if placed.shape[1] < 2:
        placed = np.pad(placed, ((0, 0), (0, 2 - placed.shape[1])))
    return placed.astype(np.float32)


def cached_vectors(paths: Sequence, extractor, cache) -> list:
    """Each file's vector (:func:`track_vector`) from the feature cache, never computed: None for a file
    whose features are not cached (or whose entry fails its checks, or whose file cannot be read).

    Parameters
    ----------
    paths : sequence of str or bytes
    extractor : genre_cnn_core.backbones.Extractor
        The model's extractor: its namespace finds the entries, its check vets them.
    cache : FeatureCache
    """
    from .extract import audio_ids

    if not cache.enabled:
        return [None] * len(paths)
    namespace = extractor.namespace()
    vectors = []
    for identity in audio_ids(paths):
        features = cache.load(cache.key(identity, namespace), namespace)
        vectors.append(None if features is None or extractor.check(features) else track_vector(features))
    return vectors


def _leading_axes(matrix: np.ndarray, count: int, rng, iterations: int = 4, extra: int = 8) -> np.ndarray:
    """The ``count`` leading right singular vectors of ``matrix`` by randomised subspace iteration (Halko,
    Martinsson and Tropp 2011): a few products with a thin random block, a fixed cost however flat the
    spectrum, where a full SVD of 5,000 x 1,556 took a minute on a busy machine and ARPACK hundreds of
    products on a flat one. Written here because numpy and scipy have no randomised SVD (scikit-learn's
    is not a dependency)."""
    width = min(count + extra, *matrix.shape)
    basis = np.linalg.qr(matrix @ rng.standard_normal((matrix.shape[1], width)).astype(matrix.dtype))[0]
    for _ in range(iterations):
        basis = np.linalg.qr(matrix.T @ basis)[0]
        basis = np.linalg.qr(matrix @ basis)[0]
    return np.linalg.svd(basis.T @ matrix, full_matrices=False)[2][:count]


# ---------------------------------------------------------------- the figures


def summarise(tracks: Sequence[dict], placed: Sequence[bool], model: dict, threshold: float = 0.5,
              suspect_threshold: float = 0.9) -> dict:
    """Every figure of the page from plain data (JSON-compatible).

    Parameters
    ----------
    tracks : sequence of dict
        One per matched track, with the keys of :data:`TRACK_KEYS`: ``tagged`` the track's genres as the
        library spells them, ``tagged_known`` those of them the model knows (its genre names),
        ``predicted`` ``[(genre, probability), ...]`` best first (empty: not predicted), ``genres`` the
        genres it was given, ``primary`` its first (None: not predicted), ``model`` the id of the model
        that predicted it, ``suspect`` its ``--suspects`` score or None, ``album_key`` its album's id or
        None for a singleton.
    placed : sequence of bool
        Whether each track is on the map (its features are cached).
    model : dict
        :func:`describe_model`.
    threshold : float
        The probability a genre must reach to be given; a singleton whose best genre falls short of it
        is far from every genre.
    suspect_threshold : float
        The ``cnn_suspect`` score from which a track stands out as a suspect.

    Returns
    -------
    dict
        ``counts``, ``per_genre``, ``matrix`` (``rows``, ``columns``, ``cells`` as ``[row, column,
        [track positions]]``), ``split_albums``, ``far_singletons``, ``unjudged_genres``.
    """
    genres = list(model.get("genres", []))
    predicted = [bool(t["primary"]) for t in tracks]
    counts = {
        "matched": len(tracks),
        "on_map": int(sum(placed)),
        "without_features": int(len(tracks) - sum(placed)),
        "predicted": int(sum(predicted)),
        "not_predicted": int(len(tracks) - sum(predicted)),
        "predicted_by_other_model": sum(1 for t in tracks if t["primary"] and t["model"] != model.get("id")),
        "not_predicted_without_features": sum(1 for t, p, on in zip(tracks, predicted, placed) if not p and not on),
        "tagged": sum(1 for t in tracks if t["tagged"]),
        "suspects": sum(1 for t in tracks if t["suspect"] is not None and t["suspect"] >= suspect_threshold),
        "albums": len({t["album_key"] for t in tracks if t["album_key"] is not None}),
        "singletons": sum(1 for t in tracks if t["album_key"] is None),
    }
    tagged_count = Counter(g for t in tracks for g in dict.fromkeys(t["tagged_known"]))
    predicted_count = Counter(g for t in tracks for g in dict.fromkeys(t["genres"]))
    per_genre = [[g, tagged_count[g], predicted_count[g]] for g in genres]
    per_genre += [[g, tagged_count[g], predicted_count[g]] for g in sorted(set(predicted_count) - set(genres))]

    other, untagged, unpredicted = "(other genres)", "(no genre tag)", "(not predicted)"
    rows = [*genres, other, untagged]
    columns = [*genres, *sorted({t["primary"] for t in tracks if t["primary"]} - set(genres)), unpredicted]
    row_of, column_of = {g: i for i, g in enumerate(rows)}, {g: i for i, g in enumerate(columns)}
    cells: dict = {}
    unjudged: Counter = Counter()
    for position, track in enumerate(tracks):
        column = column_of[track["primary"] or unpredicted]
        known, unknown = list(dict.fromkeys(track["tagged_known"])), list(dict.fromkeys(track["tagged_unknown"]))
        unjudged.update(unknown)
        track_rows = [row_of[g] for g in known if g in row_of]
        if unknown and not known:
            track_rows.append(row_of[other])
        if not track["tagged"]:
            track_rows.append(row_of[untagged])
        for row in track_rows:
            cells.setdefault((row, column), []).append(position)
    matrix = {"rows": rows, "columns": columns,
              "cells": [[r, c, members] for (r, c), members in sorted(cells.items())]}
    return {
        "counts": counts,
        "per_genre": per_genre,
        "matrix": matrix,
        "split_albums": split_albums(tracks),
        "far_singletons": far_singletons(tracks, threshold),
        "unjudged_genres": [list(kv) for kv in sorted(unjudged.items(), key=lambda kv: (-kv[1], kv[0]))],
    }


def split_albums(tracks: Sequence[dict]) -> list[dict]:
    """Albums whose tracks' predicted genres split: the most common primary genre covers at most
    :data:`SPLIT_SHARE` of its predicted tracks. Most split first."""
    albums: dict = {}
    for position, track in enumerate(tracks):
        if track["album_key"] is not None:
            albums.setdefault(track["album_key"], []).append(position)
    found = []
    for key, positions in albums.items():
        primaries = Counter(tracks[p]["primary"] for p in positions if tracks[p]["primary"])
        total = sum(primaries.values())
        if total < ALBUM_MIN_TRACKS:
            continue
        share = primaries.most_common(1)[0][1] / total
        if share <= SPLIT_SHARE:
            first = tracks[positions[0]]
            found.append({"album": first["album"], "artist": first["artist"], "album_key": key,
                          "share": round(share, 3), "split": [list(kv) for kv in primaries.most_common()],
                          "tracks": positions})
    return sorted(found, key=lambda a: (a["share"], -len(a["tracks"]), str(a["album"])))


def far_singletons(tracks: Sequence[dict], threshold: float) -> list[list]:
    """``[position, best probability]`` of the predicted singletons whose best genre is below
    ``threshold``, farthest first."""
    far = [[p, t["predicted"][0][1]] for p, t in enumerate(tracks)
           if t["album_key"] is None and t["predicted"] and t["predicted"][0][1] < threshold]
    return sorted(far, key=lambda row: row[1])


def describe_model(model) -> dict:
    """What the page shows of a model (:class:`genre_cnn_core.model.GenreModel`), as plain data."""
    meta = model.metadata
    return {
        "id": model.model_id,
        "backbone": model.backbone.name,
        "genres": list(model.genres),
        "trained_at": meta.get("trained_at"),
        "train_tracks": meta.get("train_tracks"),
        "heldout_tracks": meta.get("heldout_tracks"),
        "tracks_per_genre": meta.get("tracks_per_genre") or {},
        "from_children": meta.get("from_children") or {},
        "validation": meta.get("validation"),
        "name": meta.get("name"),
    }


# ---------------------------------------------------------------- the page


def build_page(tracks: Sequence[dict], vectors: Sequence, model: dict, title: str = "cnngenre",
               threshold: float = 0.5, suspect_threshold: float = 0.9, created: str | None = None) -> tuple[str, dict]:
    """The self-contained HTML page of a library, and its figures.

    Parameters
    ----------
    tracks : sequence of dict
        One per matched track (see :func:`summarise`).
    vectors : sequence
        Each track's vector (:func:`track_vector`), or None when its features are not cached: such a
        track is counted and listed, but not on the map.
    model : dict
        :func:`describe_model`.
    title : str
        What the page is of (the query).
    threshold, suspect_threshold : float
        See :func:`summarise`.
    created : str, optional
        When the page was made (ISO 8601); now by default.

    Returns
    -------
    (str, dict)
        The page and :func:`summarise`'s figures (with ``projection_seconds``).

    Raises
    ------
    ReportUnavailable
        When plotly is not installed.
    """
    import time

    script = plotly_js()
    if len(vectors) != len(tracks):
        raise ValueError(f"{len(vectors)} vectors for {len(tracks)} tracks")
    placed = [v is not None for v in vectors]
    started = time.perf_counter()
    xy = np.full((len(tracks), 2), np.nan, np.float32)
    rows = [np.asarray(v) for v in vectors if v is not None]
    if rows and len({r.shape for r in rows}) > 1:
        raise ValueError("the tracks' vectors differ in length (features of different extractors)")
    if rows:
        xy[np.asarray(placed)] = project(np.stack(rows))
    figures = summarise(tracks, placed, model, threshold, suspect_threshold)
    figures["projection_seconds"] = round(time.perf_counter() - started, 3)
    data = {
        "title": title,
        "created": created or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "threshold": threshold,
        "suspect_threshold": suspect_threshold,
        "model": model,
        "figures": figures,
        "tracks": _track_columns(tracks, xy),
    }
    page = _page_part(".html").format(
        title=html.escape(f"cnngenre: {title}"),
        style=_page_part(".css"),
        plotly=script.replace("</script", "<\\/script"),
        data=_json_for_script(data),
        code=_page_part(".js"),
    )
    return page, figures


def write_page(path, page: str) -> None:
    """Write the page atomically (a temporary file, then a rename)."""
    atomic_write(path, lambda handle: handle.write(page.encode("utf-8")), durable=False)


def _track_columns(tracks: Sequence[dict], xy: np.ndarray) -> dict:
    """The tracks as columns (one list per field): the page's data without a key per value."""
    def rounded(value):
        return None if not np.isfinite(value) else round(float(value), 4)

    return {
        "id": [t["id"] for t in tracks],
        "title": [t["title"] or "" for t in tracks],
        "artist": [t["artist"] or "" for t in tracks],
        "album": [t["album"] or "" for t in tracks],
        "album_key": [t["album_key"] for t in tracks],
        "tagged": [list(t["tagged"]) for t in tracks],
        "predicted": [[[g, round(float(p), 3)] for g, p in t["predicted"]] for t in tracks],
        "primary": [t["primary"] for t in tracks],
        "suspect": [None if t["suspect"] is None else round(float(t["suspect"]), 3) for t in tracks],
        "x": [rounded(x) for x in xy[:, 0]],
        "y": [rounded(y) for y in xy[:, 1]],
    }


def _json_for_script(data) -> str:
    """JSON that cannot end its ``<script>`` element early (``<`` and ``>`` escaped), nor be NaN."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page_data(page: str) -> dict:
    """The data a page was built from (for tests and tools)."""
    start = page.index(_DATA_OPEN) + len(_DATA_OPEN)
    return json.loads(page[start:page.index("</script>", start)])


_DATA_OPEN = '<script id="cnngenre-data" type="application/json">'
#: The page's template, style and script, beside the shipped model.
_PAGE_FILES = os.path.join(os.path.dirname(__file__), "data", "report_page")


def _page_part(suffix: str) -> str:
    with open(_PAGE_FILES + suffix, encoding="utf-8") as handle:
        return handle.read()
