"""The labelled data of ``../shared/data`` as the accuracy, albums and
suspects benchmarks use it, and what they share: features through the
product's cache, held-out predictions on artist-grouped folds,
resampling by artist, and throwaway beets libraries driven by ``beet``.

* ``gtzan-dev``: 30 s GTZAN clips; the artist is the clip's artist group
  (Sturm's analysis, ``labels.csv``). Its albums are the artist groups of
  two clips or more, except the catch-all groups (``...-excluded_by_sturm_
  filter``, ``...-unknown``), whose clips need not share an artist.
* ``jamendo``: full tracks; the artist from ``labels.csv``, the album from
  the file's tags; an album needs two tracks or more.

Tracks outside an album are singletons. Folds always hold whole artists.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from results import DATA, REPO

#: The shared data: beside the checkout (results.DATA, or $CNNGENRE_DATA), or beside a folder of worktrees.
DATA = next((folder for folder in (DATA, REPO.parent.parent / "shared" / "data") if folder.is_dir()), DATA)
#: Feature cache of the benchmarks (git-ignored); the beets libraries they build use it too.
CACHE = REPO / "bench" / "out" / "cache"
#: Artist groups of gtzan-dev that collect clips of unknown or unchecked artists.
CATCH_ALL_GROUPS = ("excluded_by_sturm_filter", "unknown")
#: How the library spells a genre of ``labels.csv`` (the files' own tags); others are title-cased.
SPELLINGS = {"hiphop": "Hip-Hop"}
#: GTZAN's metal under the name lastgenre's genre tree gives it.
TREE_NAMES = {"metal": "heavy metal"}
#: Second genres of the share of artists tagged with two: genres that commonly go with the first.
#: Chosen by rule, not by listening (the files carry one genre each).
SECOND_GENRES = {"blues": "Rock", "country": "Rock", "disco": "Pop", "hiphop": "Pop", "jazz": "Blues",
                 "pop": "Rock", "reggae": "Pop", "rock": "Pop", "soundtrack": "Classical", "electronic": "Pop"}


class DataError(Exception):
    """The shared data is missing or not as described (one-line reason)."""


@dataclasses.dataclass(frozen=True)
class Track:
    """One labelled audio file.

    Attributes
    ----------
    path : str
        Absolute path.
    collection : str
        ``"gtzan-dev"`` or ``"jamendo"``.
    genre : str
        Genre of ``labels.csv`` (``"hiphop"``).
    artist : str
        Artist (gtzan-dev: artist group); folds never split one.
    album : str or None
        Album title, None for a singleton.
    title : str
    """

    path: str
    collection: str
    genre: str
    artist: str
    album: str | None
    title: str

    @property
    def spelling(self) -> str:
        """The genre as the library spells it (``"Hip-Hop"``)."""
        return SPELLINGS.get(self.genre, self.genre.title())


def _rows(root: Path, name: str, columns: set) -> list[dict]:
    labels = root / name / "labels.csv"
    try:
        with open(labels, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise DataError(f"{labels}: {error.strerror or error} (see {root / 'README.md'})") from None
    if not rows or not columns <= set(rows[0]):
        raise DataError(f"{labels}: expected the columns {', '.join(sorted(columns))}")
    for row in rows:
        path = root / row["path"]
        if not path.is_file():
            raise DataError(f"{path}: listed in {labels} but missing")
        if path.parent.name != row["genre"]:
            raise DataError(f"{path}: in the folder of another genre than {row['genre']!r}")
    return rows


def _album_tag(path: Path) -> str | None:
    import mutagen

    try:
        tags = mutagen.File(path, easy=True)
    except mutagen.MutagenError as error:
        raise DataError(f"{path}: tags cannot be read ({error})") from None
    values = (tags.get("album") if tags is not None else None) or [None]
    return values[0] or None


def _with_albums(tracks: list[Track], album_of: Callable[[Track], str | None]) -> list[Track]:
    """Tracks with their album when at least two tracks of one artist share it, else as singletons."""
    counts: dict = {}
    for track in tracks:
        counts[track.artist, album_of(track)] = counts.get((track.artist, album_of(track)), 0) + 1
    return [dataclasses.replace(track, album=album_of(track) if album_of(track) and
                                counts[track.artist, album_of(track)] >= 2 else None) for track in tracks]


def load_gtzan(root: Path = DATA) -> list[Track]:
    """The gtzan-dev clips, with artist groups as artists and albums."""
    rows = _rows(Path(root), "gtzan-dev", {"path", "genre", "artist_group"})
    tracks = [Track(str(Path(root, row["path"]).resolve()), "gtzan-dev", row["genre"], row["artist_group"], None,
                    Path(row["path"]).stem) for row in rows]

    def album(track):
        catch_all = any(track.artist.endswith("-" + name) for name in CATCH_ALL_GROUPS)
        return None if catch_all else f"GTZAN {track.artist.replace('-', ' ', 1)}"
    return _with_albums(tracks, album)


def load_jamendo(root: Path = DATA) -> list[Track]:
    """The Jamendo tracks, with their artists and their albums' tags."""
    rows = _rows(Path(root), "jamendo", {"path", "genre", "artist"})
    tracks = [Track(str(Path(root, row["path"]).resolve()), "jamendo", row["genre"], row["artist"], None,
                    Path(row["path"]).stem) for row in rows]
    albums = {track.path: _album_tag(Path(track.path)) for track in tracks}
    return _with_albums(tracks, lambda track: albums[track.path])


def load_library(root: Path = DATA) -> list[Track]:
    """gtzan-dev and jamendo together: a small library of albums and singletons."""
    tracks = load_gtzan(root) + load_jamendo(root)
    shared = ({t.artist for t in tracks if t.collection == "gtzan-dev"}
              & {t.artist for t in tracks if t.collection == "jamendo"})
    if shared:
        raise DataError(f"artists in both collections: {', '.join(sorted(shared))}")
    return tracks


def albums_of(tracks: Sequence[Track]) -> dict[tuple, list[int]]:
    """``(artist, album) -> indices`` of the albums' tracks (singletons left out)."""
    found: dict = {}
    for index, track in enumerate(tracks):
        if track.album:
            found.setdefault((track.artist, track.album), []).append(index)
    return found


# ------------------------------------------------------------ genre lists


@functools.lru_cache(maxsize=1)
def lastgenre_tree():
    """lastgenre's genre tree (beets' ``genres-tree.yaml``) as a :class:`~genre_cnn_core.genres.Taxonomy`."""
    import importlib.util

    from genre_cnn_core.genres import Taxonomy, load_tree

    spec = importlib.util.find_spec("beetsplug.lastgenre")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("beets' lastgenre plugin (its genre tree) is not installed")
    return Taxonomy(tree=load_tree(os.path.join(list(spec.submodule_search_locations)[0], "genres-tree.yaml")))


def tree_parents(genre: str) -> list[str]:
    """A genre's ancestors in lastgenre's genre tree, closest first, title-cased."""
    from genre_cnn_core.genres import genre_key

    tree = lastgenre_tree()
    key = genre_key(TREE_NAMES.get(genre.lower(), genre))
    return [(tree.tree_name(a) or a).title() for a in tree.ancestors(key)]


def genre_lists(tracks: Sequence[Track], two_genre_share: float = 0.25, seed: int = 0) -> list[list[str]]:
    """Genre lists as a tagged library holds them.

    Every track carries its genre and that genre's parents in lastgenre's
    tree (Disco: Electronic; Metal, heavy metal in the tree: Rock); the
    tracks of about ``two_genre_share`` of the artists (drawn at random,
    whole artists) also carry the second genre of :data:`SECOND_GENRES`,
    before the parents. The first genre is always the track's own.
    """
    artists = sorted({t.artist for t in tracks if t.genre in SECOND_GENRES})
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(artists, size=round(two_genre_share * len(artists)), replace=False).tolist())
    lists = []
    for track in tracks:
        genres = [track.spelling] + ([SECOND_GENRES[track.genre]] if track.artist in chosen else [])
        for genre in list(genres):
            genres += [parent for parent in tree_parents(genre) if parent not in genres]
        lists.append(genres)
    return lists


# ------------------------------------------------------------ features


def features_of(paths: Sequence[str], extractor, cache, log=print) -> list:
    """Features of every file through the product's extraction code and cache, in this process.

    Raises
    ------
    DataError
        A file cannot be decoded: a benchmark needs every track.
    """
    from genre_cnn_core import RunConfig
    from genre_cnn_core.extract import extract_features

    started = time.perf_counter()
    found = [None] * len(paths)
    # threading with one job computes here, on one thread (the machine is shared).
    for index, array, error in extract_features(paths, extractor, RunConfig(cache, device="cpu", backend="threading")):
        if error:
            raise DataError(f"{paths[index]}: {error}")
        found[index] = array
    log(f"{extractor.namespace()['kind']} features of {len(paths)} tracks: {time.perf_counter() - started:.0f} s")
    return found


def backbone_features(backbone: str, paths: Sequence[str], cache, log=print) -> list:
    """A backbone's default features of every file (what ``beet cnngenre -t`` trains on)."""
    from genre_cnn_core.backbones import get_backbone

    chosen = get_backbone(backbone)
    return features_of(paths, chosen.extractor(chosen.default_settings, "cpu"), cache, log)


# ------------------------------------------------------------ held-out predictions


def one_hot(labels: np.ndarray, n_genres: int) -> np.ndarray:
    """``(tracks, genres)`` booleans of one genre per track."""
    targets = np.zeros((len(labels), n_genres), dtype=bool)
    targets[np.arange(len(labels)), labels] = True
    return targets


def leave_one_group_out(groups: Sequence) -> np.ndarray:
    """Fold of each track, one fold per artist."""
    _, folds = np.unique(np.asarray(groups), return_inverse=True)
    return folds


def heldout_probabilities(fit: Callable, folds: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, list]:
    """Every track's probabilities from a model trained without its fold, and the seconds of each training.

    Parameters
    ----------
    fit : callable
        ``fit(train indices, genre columns) -> predict(test indices) -> (tests, columns)``
        probabilities; it learns only the genres that have training tracks,
        as ``train_on_files`` does.
    folds : np.ndarray
        Fold of each track.
    targets : np.ndarray
        ``(tracks, genres)`` booleans.

    Returns
    -------
    (np.ndarray, list of float)
        ``(tracks, genres)`` probabilities (0 for genres a fold could not learn).
    """
    probabilities = np.zeros(targets.shape)
    seconds = []
    for fold in np.unique(folds):
        test, train = np.flatnonzero(folds == fold), np.flatnonzero(folds != fold)
        columns = np.flatnonzero(targets[train].any(axis=0))
        started = time.perf_counter()
        predict = fit(train, columns)
        seconds.append(time.perf_counter() - started)
        probabilities[np.ix_(test, columns)] = predict(test)
    return probabilities, seconds


def backbone_fit(backbone: str, features: list, targets: np.ndarray, strata: np.ndarray, groups: Sequence,
                 config, log: Callable[[str], None] | None = None) -> Callable:
    """``fit`` of :func:`heldout_probabilities` for a backbone's own trainer and calibration.

    ``strata`` holds each track's first genre (one of its genres); ``log``
    receives the trainer's lines (discarded by default).
    """
    from genre_cnn_core.backbones import get_backbone
    from genre_cnn_core.metrics import calibrate

    chosen = get_backbone(backbone)

    def fit(train, columns):
        # A training track's first genre is one of its genres, so the fold learns it.
        renumber = {int(c): n for n, c in enumerate(columns)}
        train_strata = np.array([renumber[int(strata[i])] for i in train])
        head = chosen.train([features[i] for i in train], targets[np.ix_(train, columns)], train_strata,
                            [groups[i] for i in train], chosen.default_settings, config, log or (lambda line: None))

        def predict(test):
            logits = chosen.logits(head.weights, head.architecture, [features[i] for i in test])
            return calibrate(logits, head.calibration)
        return predict
    return fit


# ------------------------------------------------------------ resampling by artist


def group_resamples(groups: Sequence, draws: int = 1000, seed: int = 0) -> list[np.ndarray]:
    """Track indices of ``draws`` resamplings of whole artists, with replacement.

    Tracks of one artist are not independent (a model that gets one right
    tends to get them all), so intervals resample artists, not tracks.
    The same seed gives the same draws, so two approaches' statistics on
    them can be subtracted (a paired comparison).
    """
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
    rng = np.random.default_rng(seed)
    return [np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
            for _ in range(draws)]


def interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Central percentile interval of bootstrap values."""
    tail = 100 * (1 - level) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (independent trials)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


# ------------------------------------------------------------ beets libraries


def copy_tagged(track: Track, folder: Path, genres: list[str], album: str | None, albumartist: str | None,
                number: int, compilation: bool = False) -> Path:
    """A copy of a track's file under ``folder`` with the tags a library item would have.

    Only the tags change, not the audio, so the copy has the audio id of
    the original and hits its cached features.
    """
    from mutagen.easyid3 import EasyID3

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{number:02d} {Path(track.path).name}"
    shutil.copyfile(track.path, target)
    tags = EasyID3(str(target))
    for key in list(tags):
        del tags[key]
    tags.update({"artist": track.artist, "title": track.title, "genre": list(genres),
                 "tracknumber": str(number), "compilation": "1" if compilation else "0"})
    if album:
        tags.update({"album": album, "albumartist": albumartist or track.artist})
    tags.save()
    return target


class BeetsLibrary:
    """A throwaway beets library in a folder, driven by the real ``beet`` command.

    Parameters
    ----------
    folder : Path
        Holds the configuration (``config/``), the database and the music
        (``music/``); made if missing.
    settings : dict
        Configuration on top of the library's own (``plugins``, ``paths``,
        ``cnngenre``, ...).
    """

    def __init__(self, folder: Path, settings: dict):
        import yaml

        self.folder = Path(folder)
        self.config_dir = self.folder / "config"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.database = self.folder / "library.db"
        base = {"directory": str(self.folder / "music"), "library": str(self.database),
                "import": {"copy": False, "move": False, "write": False, "resume": False, "incremental": False,
                           "quiet_fallback": "asis", "log": None},
                "ui": {"color": False}, "threaded": False}
        base.update(settings)
        (self.config_dir / "config.yaml").write_text(yaml.safe_dump(base))

    def beet(self, *args: str, extra_config: dict | None = None, log=None) -> str:
        """Run ``beet ARGS`` on this library; its output.

        Raises
        ------
        RuntimeError
            The command failed: its last line of output says why.
        """
        import yaml

        command = [sys.executable, "-m", "beets"]
        if extra_config is not None:
            extra = self.config_dir / "extra.yaml"
            extra.write_text(yaml.safe_dump(extra_config))
            command += ["-c", str(extra)]
        command += list(args)
        environment = {**os.environ, "BEETSDIR": str(self.config_dir), "OMP_NUM_THREADS": "1",
                       "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=str(REPO))
        if log is not None:
            log(f"beet {' '.join(args)}: {time.perf_counter() - started:.1f} s")
        output = done.stdout + done.stderr
        if done.returncode != 0:
            last = (output.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"beet {' '.join(args)} failed ({done.returncode}): {last}")
        return output

    def open(self):
        """The library's database, for reading fields (with the plugin's field types)."""
        from beets import config
        from beets.library import Library

        config.clear()
        config.read(user=False, defaults=True)
        config.set_file(str(self.config_dir / "config.yaml"))
        return Library(str(self.database), str(self.folder / "music"))


#: The path formats of the README: an album stays in its album's genre folder.
README_PATHS = {
    "default": "%if{$cnn_sort_genre,$cnn_sort_genre,Unsorted}/$albumartist/$album%aunique{}/$track $title",
    "singleton": "%if{$cnn_sort_genre,$cnn_sort_genre,Unsorted}/Non-Album/$artist/$title",
    "comp": "%if{$cnn_genre,$cnn_genre,Unsorted}/Compilations/$album%aunique{}/$track $title",
}


def import_library(folder: Path, tracks: Sequence[Track], lists: Sequence[list], settings: dict,
                   compilation: Sequence[int] = (), log=print) -> tuple[BeetsLibrary, list[int]]:
    """A beets library of tagged copies of the tracks, imported as they are by ``beet import -A``.

    Albums are laid out one folder each and imported as albums; the
    tracks of ``compilation`` (indices) form one Various Artists
    compilation; the other tracks are imported as singletons.

    Returns
    -------
    (BeetsLibrary, list of int)
        The library, and each track's item id.

    Raises
    ------
    DataError
        The library does not hold what was laid out (items, albums, genres).
    """
    library = BeetsLibrary(folder, settings)
    incoming = Path(folder) / "incoming"
    in_compilation = set(compilation)
    copies = {}
    for (artist, album), members in albums_of(tracks).items():
        for number, index in enumerate(members, 1):
            if index not in in_compilation:
                copies[index] = copy_tagged(tracks[index], incoming / "albums" / f"{artist} - {album}",
                                            lists[index], album, artist, number)
    # Each track's own artist as its album artist: beets' as-is import then makes the album a Various
    # Artists compilation (when the album artists agree, it takes their name and clears the flag).
    for number, index in enumerate(compilation, 1):
        copies[index] = copy_tagged(tracks[index], incoming / "albums" / "compilation", lists[index],
                                    "GTZAN Sampler", None, number, compilation=True)
    for number, index in enumerate(i for i in range(len(tracks)) if i not in copies):
        copies[index] = copy_tagged(tracks[index], incoming / "singles", lists[index], None, None, number + 1)
    library.beet("import", "-A", "-q", str(incoming / "albums"), log=log)
    if (incoming / "singles").exists():
        library.beet("import", "-A", "-q", "-s", str(incoming / "singles"), log=log)
    lib = library.open()
    by_path = {os.fsdecode(item.path): item for item in lib.items()}
    ids = []
    for index in range(len(tracks)):
        item = by_path.get(str(copies[index]))
        if item is None:
            raise DataError(f"beet import left out {copies[index]}")
        if list(item.genres) != list(lists[index]):
            raise DataError(f"{copies[index]}: imported with genres {list(item.genres)}, tagged {lists[index]}")
        ids.append(item.id)
    expected = (len({tracks[i].album for i in copies if tracks[i].album and i not in in_compilation})
                + bool(in_compilation))
    found = len(lib.albums())
    if len(by_path) != len(tracks) or found != expected:
        raise DataError(f"the library holds {len(by_path)} items and {found} albums, not {len(tracks)} and {expected}")
    lib._close()
    return library, ids


def top_folders(lib, album) -> set[str]:
    """The folders right under the library's directory that hold an album's tracks."""
    root = os.fsdecode(lib.directory)
    return {os.path.relpath(os.fsdecode(item.path), root).split(os.sep)[0] for item in album.items()}
