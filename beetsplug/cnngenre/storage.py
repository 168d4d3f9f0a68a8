"""Storing predictions: items in all-or-none transactions, the database first, then the files' tags."""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import contextmanager, suppress

from .fields import same_value
from .writing import Writer

#: Items are stored in transactions of this many, or of what arrived in this many seconds (each item all
#: or none): one commit per item made warm reruns of large libraries slow, and a slow cold run still
#: stores its results as they come.
BATCH, BATCH_SECONDS = 200, 2.0


class Batch:
    """Stores items in transactions of :data:`BATCH`, each item all or none, then writes their files.

    An item whose file tags change is marked ``cnn_write_pending`` whether or not this run writes, so
    that a run that writes later (``-W`` then ``-w``) writes the tags that lag.
    """

    def __init__(self, lib, write: bool, log, defer: bool = False):
        self.lib, self.write, self.log, self.defer = lib, write, log, defer
        self.writer = Writer(log)
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
        writes = [item for item, values in batch if _tags_change(values)]
        with all_or_nothing(self.lib):
            for item, values in batch:
                _assign(item, values)
                if _tags_change(values):
                    item["cnn_write_pending"] = True
                item.store()
        self.stored += len(batch)
        if self.write and not self.defer:
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
                item.update({"genres": values["genres"], "cnn_applied": values["cnn_applied"],
                             "cnn_write_pending": True})
                item.store()
        if self.write and items and not self.defer:
            self.write_pending(items)

    def remove_leftover_copies(self, items) -> None:
        """Remove the temporary copies that killed tag writes left beside these items' files, and say so.

        One listing per folder; a copy beside the target of a symbolic link is removed when that file is
        next written.
        """
        from genre_cnn_core import remove_leftover_copies

        for path in remove_leftover_copies({os.path.dirname(item.path) for item in items}):
            self.log.warning("{}: removed, a temporary copy left by an interrupted tag write", path)

    def write_pending(self, items) -> None:
        """Write the files of items whose tags lag the database, each once a run; a failure leaves them
        pending."""
        written = [item for item in items if item.id not in self.writer.tried and self.writer.write(item)]
        if written:
            with all_or_nothing(self.lib):
                for item in written:
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
