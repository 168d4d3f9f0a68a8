"""Predicts genres from the audio of library items with a convolutional
neural network, and trains it on the library's own genre tags.

The work is done by :mod:`genre_cnn_core`; this module maps beets items,
options and fields onto it. torch is imported only when the command runs,
so every other ``beet`` command stays fast.
"""

from __future__ import annotations

import os
import sys
import time

import mediafile
from beets import config, ui
from beets.dbcore import types
from beets.plugins import BeetsPlugin
from beets.ui import Subcommand, should_write

FIELDS = ("cnn_genre", "cnn_genre_score", "cnn_genres", "cnn_model", "cnn_tags")


class CnnGenrePlugin(BeetsPlugin):
    item_types = {
        "cnn_genre": types.STRING,
        "cnn_genre_score": types.FLOAT,
        "cnn_genres": types.MULTI_VALUE_DSV,
        "cnn_model": types.STRING,
        "cnn_tags": types.MULTI_VALUE_DSV,
    }

    def __init__(self):
        super().__init__()
        self.config.add({
            "auto": True,
            "model": "",
            "cache": True,
            "cache_dir": "",
            "backbone": "musicnn",
            "jobs": 0,
            "backend": "loky",
            "dask_scheduler": "",
            "device": "auto",
            "top_k": 3,
            "threshold": 0.5,
            "apply_genres": False,
            "tags": True,
            "tag_threshold": 0.3,
            "min_tracks": 10,
            "max_genres": 0,
            "epochs": 30,
            "minutes": 2.5,
            "force": False,
        })
        self._model = None
        self._dask = None
        self._written_on_import = set()
        for name, descriptor in _media_fields().items():
            if name not in mediafile.MediaFile.__dict__:  # the plugin may be loaded twice in one process
                self.add_media_field(name, descriptor)
        if self.config["auto"].get(bool):
            self.import_stages = [self.imported]
            self.register_listener("import_task_files", self.write_after_import)

    # ------------------------------------------------------------ options

    def commands(self):
        cmd = Subcommand("cnngenre", help="predict genres from audio with a CNN (-t: train on tagged items)")
        add = cmd.parser.add_option
        add("-t", "--train", action="store_true", default=False,
            help="train a model on items that have genres, then exit")
        add("--eval", dest="evaluate", action="store_true", default=False,
            help="evaluate the model on items with genres it was not trained on")
        add("-f", "--force", action="store_true", default=None,
            help="predict again for items the current model already tagged")
        add("-p", "--pretend", action="store_true", default=False,
            help="show what would change; change nothing")
        add("-j", "--jobs", type="int", help="worker processes (default: all cores)")
        add("-b", "--backbone", choices=["musicnn", "scratch"],
            help="network to train: pretrained musicnn (default) or a CNN from scratch")
        add("-e", "--epochs", type="int", help="most training epochs (scratch CNN)")
        add("--minutes", type="float", help="training time budget in minutes (scratch CNN)")
        add("-m", "--min-tracks", dest="min_tracks", type="int",
            help="fewest tagged tracks a genre needs to be learned")
        add("--max-genres", dest="max_genres", type="int", help="learn at most this many genres")
        add("-a", "--apply-genres", dest="apply_genres", action="store_true", default=None,
            help="also fill empty `genres` fields when the score clears the threshold")
        add("--model", help="model file to use or write")
        add("--device", choices=["auto", "cpu", "cuda"], help="where networks run")
        add("--no-cache", dest="cache", action="store_false", default=None,
            help="neither read nor write the feature cache")
        cmd.parser.add_option("-w", "--write", action="store_true", default=None,
                              help="write fields to the files' tags")
        cmd.parser.add_option("-W", "--nowrite", action="store_false", dest="write",
                              help="do not write tags to files")
        cmd.func = self.command
        return [cmd]

    def _option(self, opts, name):
        """A CLI flag when given, else the configuration value."""
        value = getattr(opts, name, None)
        return self.config[name].get() if value is None else value

    def _model_path(self, opts=None):
        path = (opts and opts.model) or self.config["model"].as_str()
        return os.path.expanduser(path) if path else os.path.join(config.config_dir(), "cnngenre", "model.pt")

    def _cache(self, opts=None):
        from genre_cnn_core import FeatureCache

        if not self._option(opts, "cache"):
            return FeatureCache(None)
        folder = self.config["cache_dir"].as_str()
        return FeatureCache(os.path.expanduser(folder) if folder
                            else os.path.join(config.config_dir(), "cnngenre", "cache"))

    def _jobs(self, opts):
        jobs = self._option(opts, "jobs")
        return jobs if jobs and jobs > 0 else (os.cpu_count() or 1)

    def _backend(self):
        """The joblib backend; for ``dask``, connected to the scheduler once."""
        backend = self.config["backend"].as_choice(["loky", "threading", "dask"])
        if backend == "dask" and self._dask is None:
            from genre_cnn_core.runtime import dask_client

            try:
                self._dask = dask_client(self.config["dask_scheduler"].as_str() or None)
            except (RuntimeError, OSError) as error:
                raise ui.UserError(f"cannot use the dask backend: {error}") from None
        return backend

    # ------------------------------------------------------------ command

    def command(self, lib, opts, args):
        from genre_cnn_core import ModelError, TrainingError

        try:
            if opts.train:
                self.train(lib, opts, args)
            elif opts.evaluate:
                self.evaluate(lib, opts, args)
            else:
                self.predict(lib.items(args), opts, lib=lib, write=should_write(opts.write),
                             pretend=opts.pretend)
        except (ModelError, TrainingError) as error:
            raise ui.UserError(str(error)) from None

    def load_model(self, path):
        """The user's model, else the shipped default (said once), else an error."""
        from genre_cnn_core import DEFAULT_MODEL, GenreModel, ModelError

        if os.path.exists(path):
            return GenreModel.load(path)
        if os.path.exists(DEFAULT_MODEL):
            model = GenreModel.load(DEFAULT_MODEL)
            genres = ", ".join(model.genres)
            self._log.warning("no model at {} yet: using the default model ({}); train your own "
                              "on your genres with `beet cnngenre -t`", path, genres)
            return model
        raise ModelError(f"no model yet at {path}: train one with `beet cnngenre -t`")

    def train(self, lib, opts, args):
        from genre_cnn_core import TrainConfig, format_report, train_on_files

        started = time.perf_counter()
        items = [item for item in lib.items(args) if item.genres]
        if not items:
            raise ui.UserError("no items with genres to train on (beet ls genres::. lists them)")
        train_config = TrainConfig(epochs=self._option(opts, "epochs"), minutes=self._option(opts, "minutes"),
                                   device=self._option(opts, "device"), seed=0)
        ui.print_(f"cnngenre: training a {self._option(opts, 'backbone')} model on {len(items)} tagged items")
        model, choice, failures = train_on_files(
            [item.filepath for item in items],
            [list(item.genres) for item in items],
            artists=[item.artist or item.albumartist for item in items],
            backbone=self._option(opts, "backbone"),
            min_tracks=self._option(opts, "min_tracks"),
            max_genres=self._option(opts, "max_genres") or None,
            config=train_config,
            cache=self._cache(opts),
            n_jobs=self._jobs(opts),
            progress=sys.stderr.isatty(),
            log=lambda line: self._log.info("{}", line),
            backend=self._backend(),
        )
        for failure in failures:
            self._log.warning("{}: {}", items[failure.index].filepath, failure.reason)
        if choice.dropped:
            left_out = ", ".join(f"{g} ({n})" for g, n in choice.dropped.items())
            ui.print_(f"left out, fewer than {self._option(opts, 'min_tracks')} tracks: {left_out}")
        meta = model.metadata
        ui.print_("tracks per genre: " + ", ".join(f"{g} {n}" for g, n in meta["tracks_per_genre"].items()))
        if meta["validation"]:
            ui.print_(format_report(meta["validation"], model.genres, meta["tracks_per_genre"]))
        else:
            ui.print_("no validation report: too few artists per genre to hold any out")
        path = self._model_path(opts)
        try:
            model.save(path)
        except OSError as error:
            raise ui.UserError(f"cannot save the model to {path}: {error.strerror or error}; "
                               "the previous model file is unchanged") from None
        ui.print_(f"saved {model.model_id} to {path} ({len(model.genres)} genres, "
                  f"{len(items) - len(failures)} tracks, {len(failures)} failed, "
                  f"{time.perf_counter() - started:.1f} s)")
        self._save_plots(model, path)

    def _save_plots(self, model, path):
        from genre_cnn_core import plots

        if not plots.matplotlib_available():
            ui.print_("no plots: install matplotlib (pip install 'beets-cnngenre[plots]') for them")
            return
        stem = os.path.splitext(path)[0]
        written = []
        if model.metadata.get("validation"):
            plots.save_confusion_matrix(model.metadata["validation"], model.genres, stem + ".confusion.png")
            written.append(stem + ".confusion.png")
        if model.metadata.get("history"):
            plots.save_training_curve(model.metadata["history"], stem + ".training.png")
            written.append(stem + ".training.png")
        if written:
            ui.print_("plots: " + ", ".join(written))

    def evaluate(self, lib, opts, args):
        from genre_cnn_core import evaluate_files, format_report

        model = self.load_model(self._model_path(opts))
        items = [item for item in lib.items(args) if item.genres]
        report, counts = evaluate_files(
            model, [item.filepath for item in items], [list(item.genres) for item in items],
            cache=self._cache(opts), n_jobs=self._jobs(opts),
            device=_inference_device(self._option(opts, "device")),
            progress=sys.stderr.isatty(), backend=self._backend())
        ui.print_(f"cnngenre: evaluating {model.model_id} on {counts['used']} items; left out: "
                  f"{counts['trained_on']} it was trained on, {counts['other_genre']} with other genres, "
                  f"{counts['failed']} that failed to decode")
        if report is None:
            raise ui.UserError("no items to evaluate on: tag some tracks the model was not trained on")
        ui.print_(format_report(report, model.genres, scope="items the model was not trained on"))

    def predict(self, items, opts=None, lib=None, write=False, pretend=False, quiet=False):
        """Predict and store genres for ``items``; returns the items changed."""
        from genre_cnn_core import Failure, predict_files

        started = time.perf_counter()
        model = self._model or self.load_model(self._model_path(opts))
        force = self._option(opts, "force")
        items = list(items)
        todo = [item for item in items if force or item.get("cnn_model") != model.model_id]
        skipped = len(items) - len(todo)
        paths = [item.filepath for item in todo]
        tag_threshold = self.config["tag_threshold"].as_number() if self.config["tags"].get(bool) else None
        results = predict_files(model, paths, top_k=self.config["top_k"].get(int), tag_threshold=tag_threshold,
                                cache=self._cache(opts), n_jobs=self._jobs(opts),
                                device=_inference_device(self._option(opts, "device")),
                                progress=not quiet and sys.stderr.isatty(), backend=self._backend())
        apply_genres = self._option(opts, "apply_genres")
        threshold = self.config["threshold"].as_number()
        changed, failed, done = [], 0, 0
        try:
            for result in results:
                item = todo[result.index]
                if isinstance(result, Failure):
                    failed += 1
                    self._log.warning("{}: {}", paths[result.index], result.reason)
                    continue
                done += 1
                if pretend:
                    genres = ", ".join(f"{g} {p:.2f}" for g, p in result.genres)
                    ui.print_(f"{item}: {genres}")
                    continue
                self._set_fields(item, result, model, apply_genres and (force or not item.genres), threshold)
                # One item at a time: an interrupted run leaves each item with
                # all of its new fields or none.
                if write:
                    item.try_write()
                item.store()
                changed.append(item)
        except KeyboardInterrupt:
            if not quiet:
                ui.print_(f"cnngenre: interrupted after {done} of {len(todo)} items; they are saved, "
                          "and running the command again continues with the rest")
                # Worker shutdown after Ctrl-C can end the process before buffers are flushed.
                sys.stdout.flush()
            raise
        if not quiet:
            elapsed = time.perf_counter() - started
            rate = f" ({done / elapsed:.1f} tracks/s)" if elapsed > 0 and done else ""
            verb = "would predict" if pretend else "predicted"
            ui.print_(f"cnngenre: {verb} {done}, skipped {skipped} (already tagged by {model.model_id}; "
                      f"-f predicts again), failed {failed}, {elapsed:.1f} s{rate}")
        return changed

    @staticmethod
    def _set_fields(item, prediction, model, apply_genres, threshold):
        genre, score = prediction.genres[0]
        item["cnn_genre"] = genre
        item["cnn_genre_score"] = round(score, 4)
        item["cnn_genres"] = [g for g, _ in prediction.genres]
        item["cnn_model"] = model.model_id
        if prediction.tags:
            item["cnn_tags"] = [t for t, _ in prediction.tags]
        elif item.get("cnn_tags"):
            item["cnn_tags"] = []
        if apply_genres and score >= threshold:
            item.genres = [genre]

    # ------------------------------------------------------------- import

    def imported(self, session, task):
        """Import stage: predict for the task's items with a model kept for the session."""
        from genre_cnn_core import ModelError

        if self._model is False:
            return
        if self._model is None:
            try:
                self._model = self.load_model(self._model_path())
            except ModelError as error:
                self._log.warning("not tagging on import: {}", error)
                self._model = False  # said once per import session
                return
        items = task.imported_items()
        changed = self.predict(items, write=False, quiet=True)
        # As-is imports write no tags by themselves: write ours once the
        # files are in place (import_task_files).
        if config["import"]["write"].get(bool):
            self._written_on_import.update(item.id for item in changed)

    def write_after_import(self, session, task):
        for item in task.imported_items():
            if item.id in self._written_on_import:
                self._written_on_import.discard(item.id)
                if not task.apply:
                    item.try_write()


def _inference_device(name):
    from genre_cnn_core.training import resolve_device

    return resolve_device(name or "auto")


def _media_fields():
    """File tags for the prediction, so `-w` keeps it with the audio."""
    def field(name, out_type=str):
        return mediafile.MediaField(
            mediafile.MP3DescStorageStyle(name.upper()),
            mediafile.MP4StorageStyle(f"----:com.apple.iTunes:{name.upper()}"),
            mediafile.StorageStyle(name.upper()),
            mediafile.ASFStorageStyle(f"beets/{name}"),
            out_type=out_type,
        )

    return {"cnn_genre": field("cnn_genre"), "cnn_genre_score": field("cnn_genre_score", float)}
