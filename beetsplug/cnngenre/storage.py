"""Storing predictions: items in all-or-none transactions, the database first, then the files' tags.

Each change comes with a callback run once its transaction is committed, so that what a run prints
(:class:`.report.Report`) is what was stored: on a full disk, a rolled-back batch prints nothing.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import contextmanager, suppress

from .fields import field, own, same_value
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

    def add(self, item, values: dict, stored=None) -> None:
        """Store ``values`` on ``item`` with the next batch; ``stored()`` is called once they are committed."""
        self.pending.append((item, values, stored))
        if len(self.pending) >= BATCH or time.monotonic() - self.flushed >= BATCH_SECONDS:
            self.flush()

    def flush(self) -> None:
        self.flushed = time.monotonic()
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        writes = [item for item, values, _ in batch if _tags_change(values)]
        with all_or_nothing(self.lib):
            for item, values, _ in batch:
                _assign(item, values)
                if _tags_change(values):
                    item["cnn_write_pending"] = True
                item.store()
        self.stored += len(batch)
        for _, _, stored in batch:
            if stored is not None:
                stored()
        if self.write and not self.defer:
            self.write_pending(writes)

    def store_album(self, album, values: dict, tracks=(), stored=None) -> None:
        """An album's fields and its tracks' (``(item, values, stored)``, e.g. the genres ``-a -g`` gives them),
        in one transaction; each ``stored()`` is called once it is committed.

        Not through beets' inheritance (``album.store()``), which would copy
        every album field of the same name onto every track.
        """
        self.flush()
        with all_or_nothing(self.lib):
            _assign(album, values)
            album.store(inherit=False)
            for item, item_values, _ in tracks:
                _assign(item, item_values)
                if _tags_change(item_values):
                    item["cnn_write_pending"] = True
                item.store()
        for callback in (stored, *(track_stored for _, _, track_stored in tracks)):
            if callback is not None:
                callback()
        writes = [item for item, item_values, _ in tracks if _tags_change(item_values)]
        if self.write and writes and not self.defer:
            self.write_pending(writes)

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
    return all(same_value(own(obj, name), value) for name, value in values.items())


#: Album fields of cnngenre 0.2 and before, which shared their names with the items' (see :mod:`.fields`).
_OLD_ALBUM_FIELDS = ("genre", "genre_score", "genres", "scores", "model", "applied", "suspect")


def upgrade_album_fields(lib) -> int:
    """Rename the album fields of earlier versions (``cnn_genre`` on an album) to ``cnn_album_*``, once;
    the number of albums upgraded. A value already under the new name wins."""
    old = [f"cnn_{part}" for part in _OLD_ALBUM_FIELDS]
    marks = ", ".join("?" * len(old))
    with all_or_nothing(lib) as tx:
        (count,), = tx.query(f"SELECT COUNT(DISTINCT entity_id) FROM album_attributes WHERE key IN ({marks})", old)
        if not count:
            return 0
        for name, part in zip(old, _OLD_ALBUM_FIELDS):
            new = field("album", part)
            tx.mutate("DELETE FROM album_attributes WHERE key = ? AND entity_id IN "
                      "(SELECT entity_id FROM album_attributes WHERE key = ?)", (name, new))
            tx.mutate("UPDATE album_attributes SET key = ? WHERE key = ?", (new, name))
    return count


def _assign(obj, values: dict) -> None:
    """Set fields on an item or album; None removes a field."""
    for name, value in values.items():
        if value is not None:
            obj[name] = value
        elif name in obj:
            del obj[name]


def _tags_change(values: dict) -> bool:
    """Whether ``values`` change what goes into the file (set or removed)."""
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
