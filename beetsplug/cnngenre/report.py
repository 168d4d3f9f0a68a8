"""What a run prints: one line per item or album whose fields change, the same with and without ``-p``."""

from __future__ import annotations

import os

from beets import ui

from .fields import parse_scores, same_value

#: The fields a change line shows.
SHOWN_FIELDS = ("cnn_genre", "cnn_genre_score", "cnn_genres", "genres")


def label(obj) -> str:
    """How a change line names an item or album: its tags, or its path when it has none."""
    if hasattr(obj, "album_id"):
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
    """Prints one line per item or album whose shown fields change, the same with and without ``-p``.

    ``cnn_genres`` is shown with the probability of each genre.
    """

    def __init__(self, pretend: bool, quiet: bool):
        self.pretend, self.quiet = pretend, quiet
        self.items = self.albums = self.applied = 0

    def change(self, obj, values: dict) -> None:
        item = hasattr(obj, "album_id")
        old_values = {name: obj.get(name, with_album=False) if item else obj.get(name)
                      for name in (*SHOWN_FIELDS, "cnn_scores")}
        changes = []
        for name in SHOWN_FIELDS:
            if name not in values:
                continue
            old, new = old_values[name], values[name]
            if isinstance(new, float) and isinstance(old, float) and abs(old - new) < 0.005:
                continue
            if same_value(old, new) or _shown(old) == _shown(new):
                continue
            if name == "cnn_genres":
                old, new = _with_scores(old, old_values["cnn_scores"]), _with_scores(new, values.get("cnn_scores"))
            changes.append(f"{name} {_shown(old)} -> {_shown(new)}")
        if not changes:
            return
        if item:
            self.items += 1
        else:
            self.albums += 1
        self.applied += "genres" in values
        if not self.quiet:
            ui.print_(f"{label(obj)}: " + "; ".join(changes))


def _with_scores(genres, scores) -> list:
    known = parse_scores(scores)
    return [f"{g} {known[g]:.2f}" if g in known else g for g in genres or []]
