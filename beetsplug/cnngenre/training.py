"""``beet cnngenre -t`` and ``--eval``: train a model on the library's genre tags, and score one on
tagged items it was not trained on."""

from __future__ import annotations

import os
import time

from beets import ui

from .fields import matched_items, training_genres
from .settings import Settings, genre_taxonomy


def tagged_items(lib, args, albums: bool, settings: Settings) -> tuple[list, list]:
    """The matching items (of matching albums with ``albums``) that have genres to learn or be scored
    on, and those genres, item by item."""
    pairs = [(item, training_genres(item, settings.train_on_applied)) for item in matched_items(lib, args, albums)]
    pairs = [(item, genres) for item, genres in pairs if genres]
    return [item for item, _ in pairs], [genres for _, genres in pairs]


def train(plugin, lib, opts, args, settings: Settings):
    from genre_cnn_core import TrainConfig, format_report, train_on_files
    from genre_cnn_core.metrics import plural

    started = time.perf_counter()
    items, genres = tagged_items(lib, args, opts.album, settings)
    if not items:
        raise ui.UserError("no items with genres to train on (beet ls genres::. lists them; genres cnngenre "
                           "applied itself are left out unless train_on_applied is on)")
    folder = os.path.dirname(settings.model)
    if settings.model_given and not opts.pretend and not os.path.isdir(folder):
        raise ui.UserError(f"cnngenre: cannot save the model to {settings.model}: no folder {folder}")
    run = plugin.run_config(settings)
    train_config = TrainConfig(epochs=settings.epochs, minutes=settings.minutes)
    ui.print_(f"cnngenre: training a {settings.backbone} model on {len(items)} tagged items")
    model, choice, failures = train_on_files(
        [str(item.filepath) for item in items],
        genres,
        artists=[item.artist or item.albumartist for item in items],
        backbone=settings.backbone,
        taxonomy=genre_taxonomy(settings),
        min_tracks=settings.min_tracks,
        max_genres=settings.max_genres or None,
        config=train_config,
        run=run,
        log=lambda line: plugin._log.info("{}", line),
        threshold=settings.threshold,
        top_k=settings.top_k,
    )
    for failure in failures:
        plugin._log.warning("{}: {}", items[failure.index].filepath, failure.reason)
    if choice.dropped:
        ui.print_("cnngenre: left out: " + ", ".join(f"{g} ({plural(n, 'track')}, {why})"
                                                     for g, (n, why) in choice.dropped.items()))
    for genre, children in model.metadata["from_children"].items():
        ui.print_(f"{genre}: learned from its sub-genres only ({', '.join(children)})")
    meta = model.metadata
    ui.print_("tracks (artists) per genre: " + ", ".join(f"{g} {n} ({meta['artists_per_genre'][g]})"
                                                           for g, n in meta["tracks_per_genre"].items()))
    if meta["validation"]:
        ui.print_(format_report(meta["validation"], model.genres, meta["tracks_per_genre"],
                                model.backbone.heldout_tracks, meta["artists_per_genre"]))
    else:
        ui.print_("no validation report: too few artists to hold any out")
    summary = (f"{len(model.genres)} genres, {meta['train_tracks']} tracks trained on, {len(failures)} failed, "
               f"{time.perf_counter() - started:.1f} s")
    if meta["usability"]:
        plugin._log.warning("{}", meta["usability"])
    if opts.pretend:
        ui.print_(f"cnngenre: trained {model.model_id} ({summary}); not saved (-p)")
        return
    if meta["usability"] and not settings.force:
        raise ui.UserError(f"cnngenre: not saved: the model looks unusable (see above); {settings.model} is "
                           "unchanged. -f saves it anyway")
    try:
        model.save(settings.model)
    except OSError as error:
        raise ui.UserError(f"cannot save the model to {settings.model}: {error.strerror or error}; "
                           "the previous model file is unchanged") from None
    ui.print_(f"saved {model.model_id} to {settings.model} ({summary})")
    save_plots(plugin, model, settings.model)


def save_plots(plugin, model, path):
    from genre_cnn_core import matplotlib_available, save_confusion_matrix, save_training_curve

    if not matplotlib_available():
        ui.print_("no plots: install matplotlib (pip install 'beets-cnngenre[plots]') for them")
        return
    stem = os.path.splitext(path)[0]
    written = []
    try:
        if model.metadata.get("validation"):
            save_confusion_matrix(model.metadata["validation"], model.genres, stem + ".confusion.png")
            written.append(stem + ".confusion.png")
        if model.metadata.get("history"):
            save_training_curve(model.metadata["history"], stem + ".training.png")
            written.append(stem + ".training.png")
    except (OSError, ValueError, RuntimeError) as error:
        plugin._log.warning("the model is saved, but a plot could not be written: {}", error)
    if written:
        ui.print_("plots: " + ", ".join(written))


def evaluate(plugin, lib, opts, args, settings: Settings):
    from genre_cnn_core import evaluate_files, format_report

    model = plugin.model(settings)
    items, genres = tagged_items(lib, args, opts.album, settings)
    report, counts = evaluate_files(
        model, [str(item.filepath) for item in items], genres, taxonomy=genre_taxonomy(settings),
        run=plugin.run_config(settings), threshold=settings.threshold, top_k=settings.top_k,
        artists=[item.artist or item.albumartist for item in items])
    validation = (f" ({counts['validation']} of them its validation tracks, which its calibration was "
                  "fitted on)" if counts["validation"] else "")
    ui.print_(f"cnngenre: evaluating {model.model_id} on {counts['used']} items{validation}; left out: "
              f"{counts['trained_on']} it was trained on, {counts['other_genre']} with other genres, "
              f"{counts['failed']} that failed to decode")
    if report is None:
        raise ui.UserError("no items to evaluate on: tag some tracks the model was not trained on")
    ui.print_(format_report(report, model.genres, scope="items the model was not trained on"))
