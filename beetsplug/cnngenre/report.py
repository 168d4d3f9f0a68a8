"""What a run prints: one line per item or album whose fields change, the same with and without ``-p``,
printed once the change is stored (a transaction rolled back prints nothing)."""

from __future__ import annotations

import os

from beets import ui
from beets.library import Item

from .fields import field, own, parse_scores, same_value

#: The cnngenre fields a change line shows (beside beets' ``genres``), by their part of the name.
SHOWN_FIELDS = ("genre", "genre_score", "genres")


def label(obj) -> str:
    """How a change line names an item or album: its tags, or its path when it has none."""
    if isinstance(obj, Item):
        if obj.get("artist") or obj.get("title"):
            return f"{obj.get('artist') or '?'} - {obj.get('title') or '?'}"
        return os.fsdecode(obj.path)
    if obj.get("albumartist") or obj.get("album"):
        return f"{obj.get('albumartist') or '?'} - {obj.get('album') or '?'} (album)"
    return f"album at {os.fsdecode(obj.item_dir() or b'?')}"


def _shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "(none)"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value) if value not in (None, "") else "(none)"


class Report:
    """Counts and prints the changes of a run.

    ``describe`` is called before a change is assigned (it reads the old
    values) and ``stored`` once it is in the database, or at once with
    ``-p``. ``cnn_genres`` is shown with the probability of each genre.
    """

    def __init__(self, pretend: bool, quiet: bool):
        self.pretend, self.quiet = pretend, quiet
        self.changed: set = set()  # (kind, id): a track may change twice (its prediction, its album's genres)
        self.given_genres: set = set()

    @property
    def items(self) -> int:
        return sum(kind == "item" for kind, _ in self.changed)

    @property
    def albums(self) -> int:
        return sum(kind == "album" for kind, _ in self.changed)

    @property
    def applied(self) -> int:
        return len(self.given_genres)

    def describe(self, obj, values: dict, note: str = "") -> str | None:
        """The change line of ``values`` on ``obj`` (None when nothing shown changes)."""
        names = [*(field(obj, part) for part in SHOWN_FIELDS), "genres"]
        scores = field(obj, "scores")
        changes = []
        for name in names:
            if name not in values:
                continue
            old, new = own(obj, name), values[name]
            if same_value(old, new) or _shown(old) == _shown(new):
                continue
            if name == field(obj, "genres"):
                old = _with_scores(old, own(obj, scores))
                new = _with_scores(new, values.get(scores, own(obj, scores)))
            changes.append(f"{name} {_shown(old)} -> {_shown(new)}")
        if not changes:
            return None
        return f"{label(obj)}: " + "; ".join(changes) + (f" {note}" if note else "")

    def describe_removal(self, obj, values: dict) -> str | None:
        """The change line of ``--remove`` (``values`` from :func:`.fields.removal`)."""
        if not values:
            return None
        gone = [name for name, value in values.items() if value is None]
        line = f"{label(obj)}: removed " + ", ".join(gone) if gone else f"{label(obj)}:"
        if "genres" in values:
            line += f"{';' if gone else ''} genres {_shown(own(obj, 'genres'))} -> {_shown(values['genres'])}"
        return line

    def stored(self, obj, values: dict, line: str | None) -> None:
        """Count and print a change that is stored (or would be, with ``-p``)."""
        if line is None:
            return
        key = ("item" if isinstance(obj, Item) else "album", obj.id)
        self.changed.add(key)
        if "genres" in values:
            self.given_genres.add(key)
        if not self.quiet:
            ui.print_(line)


def _with_scores(genres, scores) -> list:
    known = parse_scores(scores)
    return [f"{g} {known[g]:.2f}" if g in known else g for g in genres or []]
