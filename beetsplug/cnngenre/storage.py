"""Storing predictions: items in all-or-none transactions, the database first, then the files' tags."""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager, suppress

from beets import config

from .fields import same_value

#: Items are stored in transactions of this many, or of what arrived in this many seconds (each item all
#: or none): one commit per item made warm reruns of large libraries slow, and a slow cold run still
#: stores its results as they come.
BATCH, BATCH_SECONDS = 200, 2.0


class Batch:
    """Stores items in transactions of :data:`BATCH`, each item all or none, then writes their files."""

    def __init__(self, lib, write: bool, log, defer: bool = False):
        self.lib, self.write, self.log, self.defer = lib, write, log, defer
        self.pending: list = []
        self.stored = 0
        self.flushed = time.monotonic()

    def add(self, item, values: dict) -> None:
        self.pending.append((item, values))
        if len(self.pending) >= BATCH or time.monotonic() - self.flushed >= BATCH_SECONDS:
            self.flush()

    def flush(self) -> None:
        self.flushed = time.monotonic()
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        writes = [item for item, values in batch if self.write and _tags_change(values)]
        with all_or_nothing(self.lib):
            for item, values in batch:
                _assign(item, values)
                if self.write and _tags_change(values):
                    item["cnn_write_pending"] = True
                item.store()
        self.stored += len(batch)
        if not self.defer:
            self.write_pending(writes)

    def store_album(self, album, values: dict) -> None:
        """An album's fields; genres it is given go to its items too, as ``beet modify -a`` does.

        Not through beets' inheritance: that would also copy the album's
        ``cnn_*`` prediction over each track's own.
        """
        items = list(album.items()) if "genres" in values else []
        with all_or_nothing(self.lib):
            _assign(album, values)
            album.store(inherit=False)
            for item in items:
                item.update({"genres": values["genres"], "cnn_applied": values["cnn_applied"]})
                if self.write:
                    item["cnn_write_pending"] = True
                item.store()
        if self.write and items and not self.defer:
            self.write_pending(items)

    def write_pending(self, items) -> None:
        """Write the files of items whose tags lag the database; a failure leaves them pending."""
        from genre_cnn_core import write_tags

        written = []
        for item in items:
            try:
                write_tags(str(item.filepath), _tag_assigner(item), id3v23=config["id3v23"].get(bool))
            except Exception as error:  # noqa: BLE001 -- beets' try_write: log and go on
                self.log.warning("{}: tags not written ({}); the next run that writes tries again",
                                 item.filepath, str(error).splitlines()[0] if str(error) else type(error).__name__)
                continue
            written.append(item)
        self.written(written)

    def written(self, items) -> None:
        """Record that the files of these items hold their tags now."""
        if items:
            with all_or_nothing(self.lib):
                for item in items:
                    del item["cnn_write_pending"]
                    item.mtime = item.current_mtime()
                    item.store()


def holds(obj, values: dict) -> bool:
    """Whether ``obj`` already holds every one of ``values`` (a rerun that changes nothing stores nothing)."""
    return all(same_value(obj.get(name), value) for name, value in values.items())


def _assign(obj, values: dict) -> None:
    """Set fields on an item or album; None removes a field."""
    for name, value in values.items():
        if value is not None:
            obj[name] = value
        elif name in obj:
            del obj[name]


def _tags_change(values: dict) -> bool:
    return any(name in values for name in ("cnn_genre", "cnn_genre_score", "genres"))


def _tag_assigner(item):
    """Sets the file tags cnngenre owns (and ``genres`` when it applied them) on a MediaFile."""
    def assign(media):  # the track's own prediction, never its album's
        media.cnn_genre = item.get("cnn_genre", with_album=False)
        media.cnn_genre_score = item.get("cnn_genre_score", with_album=False)
        if item.get("cnn_applied", with_album=False):
            media.genres = list(item.genres)
    return assign


@contextmanager
def all_or_nothing(lib):
    """A transaction that is rolled back when anything goes wrong inside it (beets' own commits anyway)."""
    with lib.transaction() as tx:
        try:
            yield tx
        except BaseException:
            with suppress(sqlite3.OperationalError):  # nothing written yet: no transaction to roll back
                tx.mutate("ROLLBACK")
            raise
