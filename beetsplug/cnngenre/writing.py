"""Writing items' files: through beets' ``Item.write``, so that beets' ``write`` and ``after_write`` events
fire and a file holds what ``beet write`` would write, and where :func:`genre_cnn_core.write_tags` finds
that a kill cannot damage the file (in place when the tags fit, otherwise on a copy renamed over it).

A prediction's file tags (``CNN_GENRE``, ``CNN_GENRE_SCORE``) are fields of mediafile's ``MediaFile``
but not media fields of beets' items (``add_media_field``): beets would then read them on every import
and ``beet update``, storing an empty prediction (``cnn_genre`` '' and ``cnn_genre_score`` 0.0) for every
file without them and overwriting a prediction with what a file says. Instead a ``write`` listener adds
an item's own prediction (never its album's) to every write beets makes: ``beet write``, ``beet modify``,
imports, other plugins' writes and cnngenre's own. ``cnn_write_pending`` marks an item whose file's tags
lag the database; any write of the file clears it (an ``after_write`` listener).
"""

from __future__ import annotations

import os
from collections import Counter

import mediafile
from beets import config
from beets.library import Item

#: The item fields written to a file's tags, and their tag names.
TAG_FIELDS = {"cnn_genre": "CNN_GENRE", "cnn_genre_score": "CNN_GENRE_SCORE"}

#: Files named one by one for each reason a write fails; the others are counted.
SHOWN_PER_REASON = 3


def register_media_fields() -> None:
    """Make the prediction's tags known to mediafile (not to beets' ``item.read``, see above)."""
    for name, tag in TAG_FIELDS.items():
        if name in mediafile.MediaFile.__dict__:  # the plugin may be loaded twice in one process
            continue
        mediafile.MediaFile.add_field(name, mediafile.MediaField(
            mediafile.MP3DescStorageStyle(tag),
            mediafile.MP4StorageStyle(f"----:com.apple.iTunes:{tag}"),
            mediafile.StorageStyle(tag),
            mediafile.ASFStorageStyle(f"beets/{name}"),
            out_type=float if name == "cnn_genre_score" else str,
        ))


def prediction_tags(item) -> dict:
    """The item's own prediction (never its album's) as file tags; None removes a tag."""
    return {name: item.get(name, with_album=False) for name in TAG_FIELDS}


def add_prediction_tags(item, path, tags) -> None:
    """Listener for beets' ``write`` event: every file beets writes gets the item's prediction."""
    tags.update(prediction_tags(item))


def mark_written(item, path) -> None:
    """Listener for beets' ``after_write`` event: the file holds the item's tags now."""
    if path == item.path and "cnn_write_pending" in item.keys(with_album=False):
        del item["cnn_write_pending"]  # stored by whoever wrote (beets stores after its writes)


def write_item(item) -> str:
    """Write an item's tags with beets' ``Item.write``, so that a kill leaves the old file or the new one.

    Returns ``"in place"`` or ``"rewritten"`` (:func:`genre_cnn_core.write_tags`); raises what it and
    ``Item.write`` raise. In the second case beets' events name the temporary copy that then takes the
    file's place.
    """
    from genre_cnn_core import write_tags

    register_media_fields()  # mediafile drops tags it does not know, silently
    id3v23 = config["id3v23"].get(bool)
    prediction = prediction_tags(item)
    # What Item.write writes, found out beforehand: whether it fits in place depends on it.
    tags = {name: value for name, value in dict(item).items() if name in Item._media_fields} | prediction

    def write(copy):
        item.write(path=None if copy is None else os.fsencode(copy), tags=prediction, id3v23=id3v23)

    outcome = write_tags(item.filepath, tags, write, id3v23=id3v23)
    mark_written(item, item.path)  # a copy's events name the copy
    item.mtime = item.current_mtime()
    return outcome


class Writer:
    """Writes the files of one run: at most one warning line per file, a count for a reason that repeats."""

    def __init__(self, log):
        self.log = log
        self.written = 0
        self.failures: Counter = Counter()  # reason -> files
        self.tried: set = set()  # item ids: a file that failed is tried once per run

    def write(self, item) -> bool:
        """Write an item's file; False, with a warning, when it could not be written."""
        self.tried.add(item.id)
        try:
            write_item(item)
        except Exception as error:  # noqa: BLE001 -- beets' try_write: log and go on
            reason = _reason(error)
            self.failures[reason] += 1
            if self.failures[reason] <= SHOWN_PER_REASON:
                self.log.warning("{}: tags not written ({}); the next run that writes tries again",
                                 item.filepath, reason)
            return False
        self.written += 1
        return True

    def report(self) -> str:
        """Warn once for each reason more files failed for than were named; the summary's phrase."""
        for reason, count in self.failures.items():
            if count > SHOWN_PER_REASON:
                self.log.warning("tags not written to {} files in all ({}); `beet ls cnn_write_pending:true` "
                                 "lists the files whose tags lag", count, reason)
        failed = sum(self.failures.values())
        return f"wrote {self.written} files" + (f" ({failed} not written)" if failed else "")


def _reason(error: BaseException) -> str:
    """One line on why a write failed, the same for every file that fails the same way."""
    reason = getattr(error, "reason", None)  # beets' ReadError and WriteError wrap what mediafile raised
    if isinstance(reason, BaseException):
        error = reason
    if isinstance(error, OSError) and error.strerror:
        return error.strerror  # without the file name, which the line gives
    text = str(error).splitlines()[0] if str(error) else ""
    return text or type(error).__name__
