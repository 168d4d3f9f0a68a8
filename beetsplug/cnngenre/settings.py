"""The plugin's configuration: its keys and defaults, each value checked once when a command starts, and the
genre taxonomy (aliases, tree, whitelist) it configures."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
import re

import confuse
from beets import config, ui

from genre_cnn_core import THRESHOLD, TOP_K
from genre_cnn_core.runtime import FILE_SECONDS

DEFAULTS = {
    "auto": True,
    "model": "",
    "cache": True,
    "cache_dir": "",
    "backbone": "musicnn",
    "jobs": 0,
    "backend": "loky",
    "dask_scheduler": "",
    "device": "auto",
    "file_seconds": FILE_SECONDS,
    "top_k": TOP_K,
    "threshold": THRESHOLD,
    "apply_genres": False,
    "train_on_applied": False,
    "tags": True,
    "tag_threshold": 0.3,
    "min_tracks": 10,
    "max_genres": 0,
    "epochs": 30,
    "minutes": 2.5,
    "force": False,
    "keep_existing": False,
    "canonical": False,
    "parents": False,
    "whitelist": False,
    "aliases": {},
    "suspect_threshold": 0.9,
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The plugin's configuration with the command line on top, checked once."""

    model: str
    model_given: bool
    backbone: str
    cache: bool
    cache_dir: str
    jobs: int
    backend: str
    dask_scheduler: str
    device: str
    file_seconds: float
    top_k: int
    threshold: float
    apply_genres: bool
    train_on_applied: bool
    tags: bool
    tag_threshold: float
    min_tracks: int
    max_genres: int
    epochs: int
    minutes: float
    force: bool
    keep_existing: bool
    canonical: object
    parents: bool
    whitelist: object
    aliases: object
    suspect_threshold: float


#: Variables in a path: ``$NAME`` or ``${NAME}``, left as they are by :func:`os.path.expandvars` when unset.
_VARIABLE = re.compile(r"\$(\w+|\{[^}]*\})")


class OptionError(ui.UserError):
    """A command-line option's value that cannot be used (``cnngenre: --device: ...``), which beets reports
    as ``error: ...`` (not as a configuration file's error)."""


class _BadValue(confuse.ConfigValueError):
    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def _bad(view, accepts: str):
    raise _BadValue(view.key, f"{view.name}: must be {accepts}, not {view.get()!r}")


def _known_keys(view) -> None:
    """Every key of the plugin's configuration is one it reads: a misspelt key is an error, not ignored."""
    for key in view.keys():
        if key not in DEFAULTS:
            close = difflib.get_close_matches(key, list(DEFAULTS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise confuse.ConfigError(f"{view.name}.{key}: not a cnngenre setting{hint}")


def _integer(view, low: int, high: int | None = None) -> int:
    value = view.get()
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        _bad(view, f"a whole number from {low}" + (f" to {high}" if high is not None else " up"))
    return value


def _number(view, low: float, high: float | None = None, low_open: bool = False) -> float:
    value = view.get()
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value
            or value < low or (low_open and value == low) or (high is not None and value > high)):
        _bad(view, f"a number {'above' if low_open else 'from'} {low}" + (f" to {high}" if high is not None else ""))
    return float(value)


def _boolean(view) -> bool:
    value = view.get()
    if not isinstance(value, bool):
        _bad(view, "yes or no")
    return value


def _path(view, default: str) -> str:
    """A path setting: ``~`` and environment variables expanded, relative to the config folder (or, from
    the command line, to the current folder); empty means ``default``."""
    value = view.get()
    if value in ("", None):
        return default
    if not isinstance(value, str):
        _bad(view, "a path")
    path = os.path.expanduser(os.path.expandvars(value))
    if unset := _VARIABLE.search(path):
        _bad(view, f"a path whose variables are set (${unset.group(1).strip('{}')} is not)")
    if not os.path.isabs(path):
        _, source = view.first()
        path = os.path.join(config.config_dir() if source.filename else os.getcwd(), path)
    return os.path.normpath(path)


def _file_or_flag(view):
    """``no``, ``yes`` (lastgenre's file) or the path of a file that exists (checked for every command)."""
    value = view.get()
    if isinstance(value, bool):
        return value
    if not isinstance(value, str) or not value:
        _bad(view, "yes, no or a file")
    path = _path(view, "")
    if not os.path.isfile(path):
        _bad(view, f"yes, no or a file that exists ({path} does not)")
    return path


def read_settings(view, opts=None) -> Settings:
    """The plugin's configuration ``view`` with the command-line options on top, each value checked.

    Raises
    ------
    confuse.ConfigError
        A value beets reports as ``configuration error: cnngenre.KEY: ...``.
    """
    _known_keys(view)
    given = {k: v for k, v in vars(opts).items() if k in DEFAULTS and v is not None} if opts is not None else {}
    if given:
        view.set_args(given)
    try:
        return _checked(view)
    except _BadValue as error:
        if error.key not in given:
            raise
        raise OptionError(f"cnngenre: --{error.key.replace('_', '-')}: {str(error).split(': ', 1)[1]}") from None


def _checked(c) -> Settings:
    from genre_cnn_core import BACKBONES, BACKENDS, is_device_name

    default_model = os.path.join(config.config_dir(), "cnngenre", "model.safetensors")
    device = c["device"].get()
    if not is_device_name(device):
        _bad(c["device"], "auto, cpu, cuda or cuda:N")
    aliases = c["aliases"].get()
    if not (isinstance(aliases, bool) or
            isinstance(aliases, dict) and all(isinstance(v, str) for v in aliases.values())):
        _bad(c["aliases"], "yes (lastgenre's aliases), no, or a mapping of spellings to genres")
    model = _path(c["model"], default_model)
    return Settings(
        model=model,
        model_given=model != default_model,
        backbone=c["backbone"].as_choice(list(BACKBONES)),
        cache=_boolean(c["cache"]),
        cache_dir=_path(c["cache_dir"], os.path.join(config.config_dir(), "cnngenre", "cache")),
        jobs=_integer(c["jobs"], 0),
        backend=c["backend"].as_choice(list(BACKENDS)),
        dask_scheduler=c["dask_scheduler"].as_str_expanded(),
        device=device,
        file_seconds=_number(c["file_seconds"], 0.0),
        top_k=_integer(c["top_k"], 1),
        threshold=_number(c["threshold"], 0.0, 1.0),
        apply_genres=_boolean(c["apply_genres"]),
        train_on_applied=_boolean(c["train_on_applied"]),
        tags=_boolean(c["tags"]),
        tag_threshold=_number(c["tag_threshold"], 0.0, 1.0),
        min_tracks=_integer(c["min_tracks"], 1),
        max_genres=_integer(c["max_genres"], 0),
        epochs=_integer(c["epochs"], 1),
        minutes=_number(c["minutes"], 0.0, low_open=True),
        force=_boolean(c["force"]),
        keep_existing=_boolean(c["keep_existing"]),
        canonical=_file_or_flag(c["canonical"]),
        parents=_boolean(c["parents"]),
        whitelist=_file_or_flag(c["whitelist"]),
        aliases=aliases,
        suspect_threshold=_number(c["suspect_threshold"], 0.0, 1.0),
    )


def genre_taxonomy(settings: Settings):
    """Aliases, genre tree and whitelist as configured (lastgenre's files for ``yes``)."""
    from genre_cnn_core import Taxonomy, load_alias_patterns, load_tree, load_whitelist

    def chosen(value, name):
        return _lastgenre_file(name) if value is True else value

    try:
        tree_file = (chosen(settings.canonical, "genres-tree.yaml")
                     or (_lastgenre_file("genres-tree.yaml") if settings.parents else None))
        whitelist_file = chosen(settings.whitelist, "genres.txt")
        return Taxonomy(
            aliases=settings.aliases if isinstance(settings.aliases, dict) else {},
            alias_patterns=load_alias_patterns(_lastgenre_file("aliases.yaml")) if settings.aliases is True
            else {},
            tree=load_tree(tree_file) if tree_file else {},
            learn_parents=bool(settings.canonical),
            whitelist=load_whitelist(whitelist_file) if whitelist_file else None,
        )
    except (OSError, ValueError) as error:
        raise ui.UserError(f"cnngenre: cannot read the genre taxonomy: {error}") from None


def _lastgenre_file(name: str) -> str:
    """A data file of beets' lastgenre plugin, as installed with beets."""
    spec = importlib.util.find_spec("beetsplug.lastgenre")
    if spec is None or not spec.submodule_search_locations:
        raise ui.UserError("cnngenre: beets' lastgenre plugin files were not found; give a file instead of yes")
    return os.path.join(list(spec.submodule_search_locations)[0], name)
