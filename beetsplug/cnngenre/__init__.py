"""Predicts genres from the audio of library items with a convolutional
neural network, and trains it on the library's own genre tags.

The work is done by :mod:`genre_cnn_core`; this package maps beets items,
albums, options and fields onto it: :mod:`.settings` (configuration and the
genre taxonomy it names), :mod:`.fields` (what a prediction becomes on items
and albums, what ``-g`` and ``--remove`` change), :mod:`.storage` (transactions),
:mod:`.writing` (tag writes), :mod:`.report` (what a run prints),
:mod:`.library_page` (``--report``), :mod:`.training` (``-t``, ``--eval``),
:mod:`.suspects` (``--suspects``), and here the command and the import hook. Nothing heavy is
imported until the command runs, so every other ``beet`` command stays fast.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import sqlite3
import sys
import time
from contextlib import contextmanager

from beets import config, ui
from beets.library import Item
from beets.plugins import BeetsPlugin
from beets.ui import Subcommand, should_write

from . import suspects, training
from .fields import (
    ALBUM_TYPES,
    ITEM_TYPES,
    album_fields,
    album_sort_genre,
    applied_genres,
    field,
    is_predicted,
    item_fields,
    matched_items,
    own,
    parse_scores,
    removal,
    sort_genre,
    spellings,
)
from .library_page import DEFAULT_FILE, take_file, write_report
from .report import Report
from .settings import DEFAULTS, Settings, genre_taxonomy, read_settings
from .storage import Batch, holds, upgrade_album_fields
from .writing import add_prediction_tags, mark_written, register_media_fields


class Interrupted(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


class CnnGenrePlugin(BeetsPlugin):
    item_types = ITEM_TYPES
    album_types = ALBUM_TYPES

    def __init__(self):
        super().__init__()
        self.config.add(DEFAULTS)
        self._model = None
        self._run = None  # (settings, RunConfig) of the command running
        self._dask = None
        self._said = set()
        self._import_disabled = False
        self.template_fields["cnn_sort_genre"] = sort_genre
        self.album_template_fields["cnn_sort_genre"] = album_sort_genre
        register_media_fields()
        self.register_listener("write", add_prediction_tags)
        self.register_listener("after_write", mark_written)
        if self.config["auto"].get(bool):
            self.import_stages = [self.imported]
            self.register_listener("import_task_files", self.write_after_import)

    # ------------------------------------------------------------ settings

    def settings(self, opts=None) -> Settings:
        """The configuration with the command-line options on top, each value checked (:func:`read_settings`)."""
        return read_settings(self.config, opts)

    def say_once(self, message: str, *args) -> None:
        """A warning given once per process (per import session, per command)."""
        if message not in self._said:
            self._said.add(message)
            self._log.warning(message, *args)

    def cache(self, settings: Settings):
        from genre_cnn_core import FeatureCache

        cache = FeatureCache(settings.cache_dir if settings.cache else None)
        if cache.problem:
            self.say_once("the feature cache cannot be used ({}); features are computed without it",
                          cache.problem)
        return cache

    def run_config(self, settings: Settings):
        """How the work runs (:class:`genre_cnn_core.RunConfig`), made once per command (and import session):
        the cache, the workers, the device resolved, the Dask scheduler connected."""
        from genre_cnn_core import RunConfig, available_cores, dask_client

        if self._run is not None and self._run[0] == settings:
            return self._run[1]
        cores = available_cores()  # the count the workers are capped at (affinity and container limits)
        if settings.jobs > cores:
            self.say_once("-j {} asks for more workers than the {} cores: using {}", settings.jobs, cores, cores)
        if settings.backend == "dask" and self._dask is None:
            try:
                self._dask = dask_client(settings.dask_scheduler or None)
            except (RuntimeError, OSError) as error:
                raise ui.UserError(f"cannot use the dask backend: {error}") from None
        try:
            run = RunConfig(cache=self.cache(settings), n_jobs=min(settings.jobs, cores), device=settings.device,
                            progress=sys.stderr.isatty(), backend=settings.backend,
                            file_seconds=settings.file_seconds or None)
        except (RuntimeError, ValueError) as error:
            raise ui.UserError(f"cnngenre: {error}") from None
        self._run = (settings, run)
        return run

    # ------------------------------------------------------------ command

    def commands(self):
        cmd = Subcommand("cnngenre", help="predict genres from audio with a CNN (-t: train on tagged items)")
        cmd.parser.usage += " [QUERY]"
        add = cmd.parser.add_option
        add("-t", "--train", action="store_true", default=False,
            help="train a model on the matching items that have genres (with -p: report, do not save)")
        add("--eval", dest="evaluate", action="store_true", default=False,
            help="evaluate the model on items with genres it was not trained on")
        add("--suspects", action="store_true", default=False,
            help="list items whose genre tags the audio contradicts, most confident first")
        add("--prune-cache", dest="prune_cache", action="store_true", default=False,
            help="remove cached features of audio no library item has, and say how big the cache is")
        add("--report", action="callback", callback=take_file, nargs=0, dest="report", default=None,
            help=f"write an HTML page of the matching items: a map by their audio, tags vs predictions, the "
                 f"model; to FILE when the next argument ends in .html (default ./{DEFAULT_FILE}); "
                 "predicts nothing unless --predict")
        add("--predict", action="store_true", default=False,
            help="with --report: first predict the matching items the model has not predicted, as without --report")
        add("--remove", action="store_true", default=False,
            help="take back what cnngenre added to the matching items (with -a: albums and their tracks): its "
                 "fields, its file tags with -w, and the genres -g applied unless you changed them since")
        add("-a", "--album", action="store_true", default=False,
            help="match albums instead of items; albums get their own genres from their tracks")
        add("-f", "--force", action="store_true", default=None,
            help="predict again for items the current model already tagged; with -g, replace existing genres")
        add("-F", "--no-force", dest="force", action="store_false",
            help="neither predict again nor replace genres (overrides force: yes)")
        add("-k", "--keep-existing", dest="keep_existing", action="store_true", default=None,
            help="with -g -f, keep existing genres and add the predicted ones")
        add("-K", "--no-keep-existing", dest="keep_existing", action="store_false",
            help="with -g -f, replace existing genres (overrides keep_existing: yes)")
        add("-p", "--pretend", action="store_true", default=False,
            help="show what would change; change nothing")
        add("-j", "--jobs", type="int", help="worker processes (default: all cores)")
        add("-b", "--backbone", help="network to train: musicnn (pretrained, default) or scratch")
        add("-e", "--epochs", type="int", help="most training epochs (scratch CNN)")
        add("--minutes", type="float", help="training time budget in minutes (scratch CNN)")
        add("-m", "--min-tracks", dest="min_tracks", type="int",
            help="fewest tagged tracks a genre needs to be learned")
        add("--max-genres", dest="max_genres", type="int", help="learn at most this many genres")
        add("-g", "--apply-genres", dest="apply_genres", action="store_true", default=None,
            help="also fill empty genres with the predicted genres that clear the threshold, also on items and "
                 "albums predicted before (-f -g replaces existing genres, -f -g -k adds to them)")
        add("--model", help="model file to use or write")
        add("--device", help="where networks run: auto, cpu, cuda")
        add("--no-cache", dest="cache", action="store_false", default=None,
            help="neither read nor write the feature cache")
        add("-w", "--write", action="store_true", default=None, help="write fields to the files' tags")
        add("-W", "--nowrite", action="store_false", dest="write", help="do not write tags to files")
        cmd.func = self.command
        return [cmd]

    def command(self, lib, opts, args):
        from genre_cnn_core import ModelError, TrainingError

        modes = [name for name, on in (("-t", opts.train), ("--eval", opts.evaluate), ("--suspects", opts.suspects),
                                       ("--prune-cache", opts.prune_cache), ("--remove", opts.remove),
                                       ("--report", opts.report)) if on]
        if len(modes) > 1:
            raise ui.UserError(f"cnngenre: {' and '.join(modes)} do not go together; choose one")
        if opts.pretend and opts.evaluate:
            raise ui.UserError("cnngenre: --eval changes nothing; -p does not go with it")
        if opts.predict and not opts.report:
            raise ui.UserError("cnngenre: --predict goes with --report (a plain run predicts)")
        if opts.pretend and opts.report:
            raise ui.UserError("cnngenre: --report changes nothing; -p does not go with it")
        if opts.prune_cache and args:
            raise ui.UserError("cnngenre: --prune-cache keeps what any library item needs; it takes no query")
        settings = self.settings(opts)
        self.upgrade(lib)
        try:
            with _sigterm_as_interrupt():
                if opts.train:
                    training.train(self, lib, opts, args, settings)
                elif opts.evaluate:
                    training.evaluate(self, lib, opts, args, settings)
                elif opts.suspects:
                    suspects.suspects(self, lib, opts, args, settings)
                elif opts.prune_cache:
                    self.prune_cache(lib, settings, pretend=opts.pretend)
                elif opts.report:
                    if opts.predict:
                        objects = lib.albums(args) if opts.album else lib.items(args)
                        self.predict(lib, list(objects), settings, albums=opts.album,
                                     write=should_write(opts.write))
                    write_report(self, lib, matched_items(lib, args, opts.album), settings, opts.report,
                                 title=" ".join(args) or "the whole library")
                elif opts.remove:
                    self.remove(lib, args, albums=opts.album, write=should_write(opts.write), pretend=opts.pretend)
                else:
                    objects = lib.albums(args) if opts.album else lib.items(args)
                    self.predict(lib, list(objects), settings, albums=opts.album, write=should_write(opts.write),
                                 pretend=opts.pretend)
        except (ModelError, TrainingError) as error:
            raise ui.UserError(str(error)) from None
        except sqlite3.OperationalError as error:
            raise ui.UserError(f"cnngenre: cannot write the library database ({error}); items stored "
                               "before this are kept, and running the command again continues") from None
        except KeyboardInterrupt as interrupt:
            sys.stdout.flush()
            sys.exit(143 if isinstance(interrupt, Interrupted) else 130)

    def upgrade(self, lib) -> None:
        """Move the album fields of earlier versions to their own names, once, and say so."""
        count = upgrade_album_fields(lib)
        if count:
            self._log.warning("upgraded {} albums: an album's prediction is now in cnn_album_genre, "
                              "cnn_album_genre_score, cnn_album_genres, cnn_album_scores, cnn_album_model (and "
                              "cnn_album_applied, cnn_album_suspect), so that a track shows only its own cnn_genre",
                              count)

    def load_model(self, settings: Settings):
        """The user's model; at the default location, the shipped model until one is trained."""
        import genre_cnn_core
        from genre_cnn_core import GenreModel, ModelError

        if os.path.exists(settings.model) or settings.model_given:
            return GenreModel.load(settings.model)
        older = os.path.join(os.path.dirname(settings.model), "model.pt")  # where cnngenre 0.2 saved it
        if os.path.exists(older):
            return GenreModel.load(older)  # refused: made by an older cnngenre, retrain
        if os.path.exists(genre_cnn_core.DEFAULT_MODEL):
            model = GenreModel.load(genre_cnn_core.DEFAULT_MODEL)
            self.say_once("no model at {} yet: using the default model ({}); train your own on your genres "
                          "with `beet cnngenre -t`", settings.model, ", ".join(model.genres))
            return model
        raise ModelError(f"no model yet at {settings.model}: train one with `beet cnngenre -t`")

    def model(self, settings: Settings):
        if self._model is None:
            self._model = self.load_model(settings)
        return self._model

    # ------------------------------------------------------------ training

    # ------------------------------------------------------------ prediction

    def predict(self, lib, objects, settings: Settings, albums=False, write=False, pretend=False, quiet=False,
                defer_writes=False):
        """Predict for items (or the items of albums), store the fields, then the albums' fields.

        Items are stored as their predictions arrive, in transactions of
        :data:`.storage.BATCH` items, each item with all of its new fields or
        none. An album's prediction comes from all of its tracks the current
        model predicted, in this run or before. With ``-g``, genres are applied
        to the matched items (or albums and their tracks) whether they were
        predicted now or before. With ``write``, the database is written first
        and then the files' tags; an item whose file could not be written
        keeps ``cnn_write_pending`` and is written by the next run that writes.
        With ``defer_writes`` (an import, before the files are in place),
        items are only marked pending.
        """
        from genre_cnn_core import Failure, predict_files

        started = time.perf_counter()
        if not objects:
            if not quiet:
                ui.print_("cnngenre: nothing matched")
            return
        model = self.model(settings)
        model_id = model.model_id
        tracks_of = {album.id: list(album.items()) for album in objects} if albums else {}
        items = [item for tracks in tracks_of.values() for item in tracks] if albums else list(objects)
        todo = [item for item in items if settings.force or
                not (is_predicted(item, model_id) or own(item, "cnn_error"))]
        crashed = sum(1 for item in items if not settings.force and own(item, "cnn_error")
                      and not is_predicted(item, model_id))
        taxonomy = genre_taxonomy(settings) if settings.parents or settings.canonical else None
        spelled = spellings(model, taxonomy)
        report = Report(pretend=pretend, quiet=quiet)
        batch = Batch(lib, write and not pretend, self._log, defer=defer_writes)
        if not pretend:
            batch.remove_leftover_copies(items)

        def stage(item, values):
            if pretend:
                report.stored(item, values, report.describe(item, values))
            elif values and not holds(item, values):
                line = report.describe(item, values)
                batch.add(item, values, lambda: report.stored(item, values, line))

        def genres_for(obj, values):
            if not settings.apply_genres:
                return {}
            return applied_genres(obj, values[field(obj, "genres")], values[field(obj, "genre_score")],
                                  settings, spelled)

        fresh: dict = {}  # item id -> this run's probabilities, for the albums (stored or not, as with -p)
        failed = 0
        try:
            if todo:
                run = self.run_config(settings)
                results = predict_files(
                    model, [str(item.filepath) for item in todo],
                    tag_threshold=settings.tag_threshold if settings.tags else None,
                    run=dataclasses.replace(run, progress=False) if quiet else run, on_wait=batch.flush)
                for result in results:
                    item = todo[result.index]
                    if isinstance(result, Failure):
                        failed += 1
                        self._log.warning("{}: {}", item.filepath, result.reason)
                        if result.worker_died:
                            stage(item, {"cnn_error": result.reason[:200]})
                        continue
                    values = item_fields(result, model_id, settings, taxonomy)
                    if own(item, "cnn_error"):
                        values["cnn_error"] = None  # decoded this time: no longer skipped
                    fresh[item.id] = parse_scores(values["cnn_scores"])
                    if not albums:
                        values.update(genres_for(item, values))
                    stage(item, values)
            if settings.apply_genres and not albums:
                predicted_before = [item for item in items if item.id not in fresh and is_predicted(item, model_id)]
                for item in predicted_before:
                    stage(item, genres_for(item, {name: own(item, name) for name in ("cnn_genres", "cnn_genre_score")}))
            batch.flush()
            if write and not pretend and not defer_writes:
                batch.write_pending([item for item in items if own(item, "cnn_write_pending")])
            for album in (objects if albums else _albums_of(lib, items)):
                self.predict_album(album, tracks_of.get(album.id) or list(album.items()), model_id, settings,
                                   fresh, taxonomy, batch, report, pretend, genres_for if albums else None)
        except KeyboardInterrupt:
            batch.flush()
            if not quiet:
                rest = ("running the command again without -f continues with the rest" if settings.force
                        else "running the command again continues with the rest")
                ui.print_(f"cnngenre: interrupted after {batch.stored} of {len(todo)} items; they are saved, "
                          f"and {rest}")
            raise
        if not quiet:
            elapsed = time.perf_counter() - started
            done = len(todo) - failed
            rate = f" ({done / elapsed:.1f} tracks/s)" if elapsed > 0 and done else ""
            verb = "would change" if pretend else "changed"
            written = f"; {batch.writer.report()}" if write and not pretend else ""
            ui.print_(f"cnngenre: {verb} {report.items} items and {report.albums} albums, applied genres to "
                      f"{report.applied}; predicted {done}, skipped {len(items) - len(todo)} (already tagged by "
                      f"{model_id}; -f predicts again), failed {failed}{written}, {elapsed:.1f} s{rate}")
            if crashed:
                ui.print_(f"cnngenre: {crashed} items whose files crashed a worker before were skipped "
                          "(beet ls cnn_error::. lists them; -f tries again)")

    def predict_album(self, album, tracks, model_id, settings, fresh, taxonomy, batch, report, pretend,
                      genres_for=None):
        """An album's prediction from all of its predicted tracks; with ``genres_for`` (``-a -g``), the genres
        it applies to the album and, the same way, to each of its tracks."""
        values, used = album_fields(album, tracks, model_id, settings, fresh, taxonomy, self._log)
        if values is None:
            return
        track_changes = []
        if genres_for is not None:
            values.update(genres_for(album, values))
            given = {"cnn_genres": values["cnn_album_genres"], "cnn_genre_score": values["cnn_album_genre_score"]}
            for item in tracks:
                item_values = genres_for(item, given)
                if item_values and not holds(item, item_values):
                    line = report.describe(item, item_values, "(from its album)")
                    track_changes.append((item, item_values, functools.partial(report.stored, item, item_values,
                                                                                line)))
        in_run = sum(item.id in fresh for item in tracks)
        before = f", {used - in_run} of them predicted before" if 0 < in_run < used else ""
        note = f"(from {used} of its {len(tracks)} tracks{before})" if used < len(tracks) or before else ""
        line = report.describe(album, values, note)
        if pretend:
            report.stored(album, values, line)
            for _, _, stored in track_changes:
                stored()
        elif not holds(album, values) or track_changes:
            batch.store_album(album, values, track_changes, lambda: report.stored(album, values, line))

    # ------------------------------------------------------------ suspects

    # ------------------------------------------------------------ cache

    def prune_cache(self, lib, settings: Settings, pretend: bool = False):
        from genre_cnn_core import audio_ids

        cache = self.cache(settings)
        if not cache.enabled:
            raise ui.UserError("cnngenre: the feature cache is off (cache: no) or cannot be used")
        keep = {i for i in audio_ids([str(item.filepath) for item in lib.items()]) if i}
        removed, freed = cache.prune(keep, pretend=pretend)
        count, size = cache.size()
        verb = "would remove" if pretend else "removed"
        ui.print_(f"cnngenre: {verb} {removed} cached entries ({freed / 2**20:.1f} MiB) of audio no library "
                  f"item has; the cache at {cache.directory} holds {count} entries ({size / 2**20:.1f} MiB)")

    # ------------------------------------------------------------ undo

    def remove(self, lib, args, albums: bool, write: bool, pretend: bool):
        """Take back what cnngenre added to the matching items (with ``albums``: albums and their tracks): its
        fields, and the genres ``-g`` applied unless changed since; with ``write``, its tags in the files."""
        matched = list(lib.albums(args)) if albums else []
        items = [item for album in matched for item in album.items()] if albums else list(lib.items(args))
        if not items and not matched:
            ui.print_("cnngenre: nothing matched")
            return
        report = Report(pretend=pretend, quiet=False)
        batch = Batch(lib, write and not pretend, self._log)
        kept = 0
        for obj in [*items, *matched]:
            values = removal(obj)
            kept += bool(own(obj, field(obj, "applied"))) and "genres" not in values
            line = report.describe_removal(obj, values)
            if pretend:
                report.stored(obj, values, line)
            elif values and isinstance(obj, Item):
                batch.add(obj, values, functools.partial(report.stored, obj, values, line))
            elif values:
                batch.store_album(obj, values, (), functools.partial(report.stored, obj, values, line))
        batch.flush()
        verb = "would take back" if pretend else "took back"
        ui.print_(f"cnngenre: {verb} cnngenre's fields from {report.items} items and {report.albums} albums, "
                  f"restored genres on {report.applied}" +
                  (f"; kept genres you changed since -g applied them on {kept}" if kept else ""))

    # ------------------------------------------------------------- import

    def imported(self, session, task):
        """Import stage: predict for the task's items; nothing here may stop or half-finish an import."""
        if self._import_disabled:
            return
        try:
            settings = self.settings()
            self.upgrade(session.lib)
            self.model(settings)
            objects = [task.album] if task.is_album else list(task.imported_items())
            self.predict(session.lib, objects, settings, albums=task.is_album,
                         write=config["import"]["write"].get(bool), quiet=True, defer_writes=True)
        except Exception as error:  # noqa: BLE001 -- an import must never fail because of cnngenre
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            self._log.warning("not tagging on import: {}", message.removeprefix("cnngenre: "))
            self._import_disabled = True  # said once per import session

    def write_after_import(self, session, task):
        """Write the files beets left lagging once they are in place (beets writes only the tracks it tagged)."""
        if not config["import"]["write"].get(bool):
            return
        stored = (session.lib.get_item(item.id) for item in task.imported_items())  # as predicted
        pending = [item for item in stored if item and item.get("cnn_write_pending", with_album=False)]
        if not pending:
            return
        try:
            with _listeners_nested(self._log):  # the writes send `write` and `after_write` to this plugin
                batch = Batch(session.lib, True, self._log)
                batch.write_pending(pending)
                batch.writer.report()
        except Exception as error:  # noqa: BLE001 -- an import must never fail because of cnngenre
            self._log.warning("could not write tags after import: {}", error)


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (``kill``, ``timeout``, systemd) stops a run the way Ctrl-C does."""
    def handler(signum, frame):
        raise Interrupted()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _listeners_nested(log):
    """Let this plugin's listeners run inside one of them.

    beets wraps each listener so that it sets the plugin's log level for its run, and asserts that the
    level is unset when it starts: a listener that writes a file, which sends beets' ``write`` event to
    this plugin's listener, fails that check unless the level is unset meanwhile.
    """
    level = log.level
    log.setLevel(logging.NOTSET)
    try:
        yield
    finally:
        log.setLevel(level)


def _albums_of(lib, items):
    ids = sorted({item.album_id for item in items if item.get("album_id")})
    return [album for album in (lib.get_album(i) for i in ids) if album is not None]
