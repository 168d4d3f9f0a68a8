"""``beet cnngenre --report``: gathers the matched items' fields and cached embeddings as plain data and
hands them to :mod:`genre_cnn_core.library_report`, which builds the page."""

from __future__ import annotations

import functools
import os
import time

from beets import ui

from .fields import parse_scores, training_genres
from .settings import genre_taxonomy

#: Where the page goes when no FILE is given: the current folder.
DEFAULT_FILE = "cnngenre-report.html"
#: What makes the argument after ``--report`` its FILE rather than a query.
PAGE_SUFFIXES = (".html", ".htm")


def take_file(option, opt_str, value, parser) -> None:
    """optparse callback of ``--report [FILE]``: the next argument is FILE when it ends in ``.html``.

    beets makes every callback option take a value; the option is declared with ``nargs=0`` so that this
    callback, not optparse, decides whether the next argument is a file or the query.
    """
    rest = parser.rargs
    if rest and not rest[0].startswith("-") and rest[0].lower().endswith(PAGE_SUFFIXES):
        setattr(parser.values, option.dest, rest.pop(0))
    else:
        setattr(parser.values, option.dest, DEFAULT_FILE)


def track_record(item, known, tagged: list) -> dict:
    """What the page shows of one item: its tags and its own stored prediction (never its album's).

    ``known(genre)`` gives the model's genres a tagged genre names (after aliases).
    """
    def own(name, default=None):
        value = item.get(name, default, with_album=False)
        return default if value in (None, "") else value

    scores = parse_scores(own("cnn_scores", []))
    suspect = own("cnn_suspect")
    return {
        "id": item.id,
        "title": item.title,
        "artist": item.artist or item.albumartist,
        "album": item.album,
        "album_key": item.album_id or None,
        "tagged": [str(g) for g in tagged],
        "tagged_known": [g for tag in tagged for g in known(tag)],
        "tagged_unknown": [str(tag) for tag in tagged if not known(tag)],
        "predicted": sorted(scores.items(), key=lambda kv: -kv[1]),
        "genres": [str(g) for g in own("cnn_genres", []) or []],
        "primary": own("cnn_genre"),
        "model": own("cnn_model"),
        "suspect": float(suspect) if isinstance(suspect, (int, float)) else None,
    }


def write_report(plugin, lib, items: list, settings, destination: str, title: str) -> None:
    """Build the page of ``items`` from their fields and cached features, write it, and say where."""
    from genre_cnn_core.library_report import (
        ReportUnavailable,
        build_page,
        cached_vectors,
        describe_model,
        plotly_js,
        write_page,
    )

    try:
        plotly_js()  # before any work: a missing extra is one line
    except ReportUnavailable as error:
        raise ui.UserError(f"cnngenre: {error}") from None
    if not items:
        ui.print_("cnngenre: nothing matched")
        return
    from genre_cnn_core.pipeline import known_genres

    started = time.perf_counter()
    model = plugin.model(settings)
    taxonomy = genre_taxonomy(settings)

    @functools.lru_cache(maxsize=None)
    def known(tag: str) -> tuple:
        return tuple(model.genres[c] for c in known_genres(model, [tag], taxonomy))

    tracks = [track_record(item, known, training_genres(item, settings.train_on_applied)) for item in items]
    vectors = cached_vectors([str(item.filepath) for item in items], model.extractor(), plugin.cache(settings))
    page, figures = build_page(tracks, vectors, describe_model(model), title=title, threshold=settings.threshold,
                               suspect_threshold=settings.suspect_threshold)
    path = os.path.abspath(destination)
    try:
        write_page(path, page)
    except OSError as error:
        raise ui.UserError(f"cnngenre: cannot write the report to {path}: {error.strerror or error}") from None
    counts = figures["counts"]
    ui.print_(f"cnngenre: wrote {path} ({len(page.encode()) / 2**20:.1f} MiB): {counts['matched']} tracks, "
              f"{counts['on_map']} on the map, {counts['without_features']} without cached features, "
              f"{counts['not_predicted']} not predicted; {time.perf_counter() - started:.1f} s")
    if counts["without_features"] or counts["not_predicted"]:
        ui.print_("cnngenre: the report predicts nothing; `beet cnngenre QUERY` (or --report --predict) predicts "
                  "the missing tracks and caches their features")
