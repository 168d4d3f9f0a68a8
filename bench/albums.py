"""Albums and genre lists, measured (issue 12), in one command.

    python bench/albums.py [--quick] [--data ../shared/data]

A library built from ``../shared/data`` (:func:`datasets.load_library`):
gtzan-dev's artist-group albums, the Jamendo albums, singletons, and on
every item a genre list (:func:`datasets.genre_lists`: the genre, its
parents in lastgenre's tree, and for a quarter of the artists a second
genre).

1. Held-out artists, in this process with the product's code: on 5
   artist-grouped folds (seeds 0-2), the default musicnn head trained on the
   items' whole genre lists (the multi-label model, what ``beet cnngenre
   -t`` learns) and on each item's first genre only (the single-label
   model). Track level: top-1, micro/macro-F1 and mAP against the genre
   lists. Album level: three ways to agree on an album's genre from its
   tracks' held-out probabilities (the mean the product ships in
   ``genre_cnn_core/albums.py``, the geometric mean, a majority vote), top-1
   of albums against the top-1 of their tracks.
2. Through the product: the library imported with ``beet import -A``, each
   half of the artists predicted by ``beet cnngenre`` with a model that
   ``beet cnngenre -t`` trained on the other half, then ``beet move`` with
   the README's path format (``$cnn_sort_genre``), and again with round 1's
   (``$cnn_genre``): the share of albums whose tracks land in more than one
   top folder. Since album predictions have names of their own
   (``cnn_album_genre``), ``$cnn_genre`` is always a track's own prediction, so
   round 1's format gives the same folders with and without them.

Writes the ``## Albums and genre lists`` section of ``bench/RESULTS.md``
(``--quick``: ``bench/out/albums-quick.md``) and prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import datasets
import measure
import numpy as np
import results

HEADING = "## Albums and genre lists"
QUICK_OUTPUT = results.REPO / "bench" / "out" / "albums-quick.md"
FOLDS = 5
#: Fewest tracks a genre needs to be learned: the product's default, on the whole library.
MIN_TRACKS = 10
#: ``-m`` of ``beet cnngenre -t`` on half the library: with 10, half of the genres would be left out.
HALF_MIN_TRACKS = 5
#: Singletons gathered into one Various Artists compilation (one per genre, the first of each).
COMPILATION_TRACKS = 6
ROUND1_PATHS = {name: "$cnn_genre/" + rest for name, rest in {
    "default": "$albumartist/$album%aunique{}/$track $title", "singleton": "Non-Album/$artist/$title",
    "comp": "Compilations/$album%aunique{}/$track $title"}.items()}


# ------------------------------------------------------------------ labels


@dataclasses.dataclass
class Labels:
    """The library's genres as training sees them."""

    genres: list  # learned genres (display names), those of the multi-label model
    multi: np.ndarray  # (tracks, genres) booleans: every listed genre
    single: np.ndarray  # (tracks, genres) booleans: the first genre only, if the single-label model learns it
    first: np.ndarray  # index of each track's first genre


def labels_of(lists: list) -> Labels:
    """Genres chosen by the product's :func:`genre_cnn_core.genres.choose_labels` from the lists.

    The single-label model learns from first genres only, so a genre that
    is rarely first (Electronic: mostly Disco's parent) may not reach
    ``MIN_TRACKS`` and is not learned by it.
    """
    from genre_cnn_core.genres import choose_labels

    multi = choose_labels(lists, min_tracks=MIN_TRACKS)
    single = choose_labels([values[:1] for values in lists], min_tracks=MIN_TRACKS)
    if multi.unlabelled:
        raise datasets.DataError(f"{multi.unlabelled} tracks have no genre with {MIN_TRACKS} tracks")
    first = np.array([labels[0] for labels in multi.labels])
    single_targets = np.zeros((len(lists), len(multi.genres)), dtype=bool)
    for track, labels in enumerate(single.labels):
        if labels:
            single_targets[track, multi.genres.index(single.genres[labels[0]])] = True
    labelled = single_targets.any(axis=1)
    if not (single_targets[labelled].argmax(axis=1) == first[labelled]).all():
        raise AssertionError("a track's first genre differs between the single- and the multi-label choice")
    return Labels(multi.genres, multi.label_matrix(range(len(lists))), single_targets, first)


# ------------------------------------------------------------------ held-out predictions


def heldout(features: list, targets: np.ndarray, strata: np.ndarray, groups: list, folds: np.ndarray) -> np.ndarray:
    """Held-out probabilities of the default musicnn head trained on ``targets``.

    Tracks without a target (their first genre is not learned) are left
    out of training; every track is predicted.
    """
    from genre_cnn_core.backbones import TrainConfig

    fit = datasets.backbone_fit("musicnn", features, targets, strata, groups, TrainConfig())
    labelled = targets.any(axis=1)

    def fit_labelled(train, columns):
        return fit(train[labelled[train]], columns)
    probabilities, _ = datasets.heldout_probabilities(fit_labelled, folds, targets & labelled[:, None])
    return probabilities


def learnable(targets: np.ndarray, first: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Tracks whose first genre has training tracks in their fold (others cannot be right)."""
    found = np.zeros(len(first), dtype=bool)
    for fold in np.unique(folds):
        inside = folds == fold
        found[inside] = targets[~inside][:, first[inside]].any(axis=0)
    return found


def track_scores(probabilities: np.ndarray, labels: Labels, scored: np.ndarray) -> dict:
    from genre_cnn_core.metrics import genre_report

    report = genre_report(labels.multi[scored], probabilities[scored], labels.genres, labels.first[scored])
    primary = probabilities[scored].argmax(axis=1)
    report["primary_tagged"] = float(labels.multi[scored][np.arange(len(primary)), primary].mean())
    return report


# ------------------------------------------------------------------ album consensus


def consensus_mean(p: np.ndarray) -> int:
    """The product's: mean of the calibrated probabilities (``album_probabilities``)."""
    from genre_cnn_core.albums import album_probabilities

    return int(np.argmax(album_probabilities(p)))


def consensus_geometric(p: np.ndarray) -> int:
    """Mean log-probability: one track that rules a genre out vetoes it."""
    return int(np.argmax(np.log(np.clip(p, 1e-6, 1.0)).mean(axis=0)))


def consensus_vote(p: np.ndarray) -> int:
    """Majority of the tracks' primary genres; ties go to the highest mean probability."""
    votes = np.bincount(p.argmax(axis=1), minlength=p.shape[1])
    tied = np.flatnonzero(votes == votes.max())
    return int(tied[np.argmax(p[:, tied].mean(axis=0))])


CONSENSUS = {"mean of probabilities (shipped)": consensus_mean, "geometric mean": consensus_geometric,
             "majority vote": consensus_vote}


@dataclasses.dataclass
class AlbumScores:
    albums: int
    album_right: dict  # consensus name -> albums right
    tracks: int
    tracks_right: int  # album tracks whose own primary is the album's genre
    album_share_right: float  # mean over albums of the share of their tracks right
    disagreeing: int  # albums whose tracks' primaries are not all the same


def album_scores(probabilities: np.ndarray, albums: dict, labels: Labels, scored: np.ndarray) -> AlbumScores:
    chosen = [members for members in albums.values() if scored[members].all()]
    right = {name: 0 for name in CONSENSUS}
    tracks = tracks_right = disagreeing = 0
    shares = []
    for members in chosen:
        p, genre = probabilities[members], int(np.bincount(labels.first[members]).argmax())
        for name, method in CONSENSUS.items():
            right[name] += method(p) == genre
        primaries = p.argmax(axis=1)
        tracks += len(members)
        tracks_right += int((primaries == genre).sum())
        shares.append(float((primaries == genre).mean()))
        disagreeing += len(set(primaries.tolist())) > 1
    return AlbumScores(len(chosen), right, tracks, tracks_right, float(np.mean(shares)), disagreeing)


# ------------------------------------------------------------------ held-out experiment


@dataclasses.dataclass
class Heldout:
    seeds: tuple
    tracks: dict  # model -> list of track reports, one per seed
    albums: list  # AlbumScores of the multi-label model, one per seed
    excluded: list  # tracks left out per seed (first genre not learnable in their fold)
    excluded_genres: set


def held_out_experiment(tracks: list, lists: list, features: list, seeds: tuple, log) -> Heldout:
    from genre_cnn_core.splits import grouped_folds

    labels = labels_of(lists)
    groups = [t.artist for t in tracks]
    albums = datasets.albums_of(tracks)
    found = Heldout(seeds, {"multi-label (genre lists)": [], "single-label (first genre)": []}, [], [], set())
    for seed in seeds:
        started = time.perf_counter()
        folds = grouped_folds(labels.first, groups, FOLDS, seed)
        scored = learnable(labels.multi, labels.first, folds)
        found.excluded.append(int((~scored).sum()))
        found.excluded_genres |= {labels.genres[g] for g in labels.first[~scored]}
        multi = heldout(features, labels.multi, labels.first, groups, folds)
        single = heldout(features, labels.single, labels.first, groups, folds)
        found.tracks["multi-label (genre lists)"].append(track_scores(multi, labels, scored))
        found.tracks["single-label (first genre)"].append(track_scores(single, labels, scored))
        found.albums.append(album_scores(multi, albums, labels, scored))
        log(f"held-out, fold seed {seed}: {time.perf_counter() - started:.0f} s")
    return found


# ------------------------------------------------------------------ through the product


@dataclasses.dataclass
class Folders:
    """Albums split across top folders after ``beet move``, per path format."""

    albums: int
    compilations: int
    split: dict  # format name -> albums (not compilations) in more than one top folder
    compilations_split: dict  # format name -> compilations in more than one top folder
    album_right: int  # albums whose cnn_genre is their genre
    tracks: int
    tracks_right: int  # album tracks whose cnn_genre is their album's genre
    unsorted: int  # items in the fallback folder after the README's format
    commands: list  # the beet commands run, with seconds


def compilation_tracks(tracks: list) -> list:
    """The first singleton of each of a few genres."""
    chosen, genres = [], set()
    for index, track in enumerate(tracks):
        if track.album is None and track.genre not in genres and len(chosen) < COMPILATION_TRACKS:
            chosen.append(index)
            genres.add(track.genre)
    return chosen


def drop_album_predictions(library: datasets.BeetsLibrary) -> None:
    """Remove the albums' own prediction fields, as round 1 had none (items keep theirs)."""
    lib = library.open()
    for album in lib.albums():
        for field in ("cnn_album_genre", "cnn_album_genre_score", "cnn_album_genres", "cnn_album_scores",
                      "cnn_album_model"):
            if field in album:
                del album[field]
        album.store(inherit=False)
    lib._close()


def through_the_product(tracks: list, lists: list, folder: Path, log) -> Folders:
    """Import, two-fold cross-fitting with ``beet cnngenre -t``/``beet cnngenre``, then ``beet move``."""
    from genre_cnn_core.genres import genre_key
    from genre_cnn_core.splits import grouped_split

    commands = []

    def note(line):
        commands.append(line.replace(str(folder), "LIBRARY"))
        log(line)
    settings = {"plugins": ["cnngenre"], "paths": datasets.README_PATHS,
                "cnngenre": {"auto": False, "cache_dir": str(datasets.CACHE), "jobs": 1, "device": "cpu"}}
    compilation = compilation_tracks(tracks)
    library, ids = datasets.import_library(folder, tracks, lists, settings, compilation, log=note)
    labels = labels_of(lists)
    train, _ = grouped_split(labels.first, [t.artist for t in tracks], 0.5, seed=0)
    first_half = set(train.tolist())
    half = {ids[i]: "a" if i in first_half else "b" for i in range(len(tracks))}
    lib = library.open()
    for item in lib.items():
        item["bench_half"] = half[item.id]
        item.store()
    lib._close()
    for learn, predict in (("a", "b"), ("b", "a")):
        model = str(folder / f"model-{learn}.pt")
        library.beet("cnngenre", "-t", "-m", str(HALF_MIN_TRACKS), "--model", model, f"bench_half:{learn}", log=note)
        library.beet("cnngenre", "--model", model, f"bench_half:{predict}", log=note)
    found = Folders(0, 0, {}, {}, 0, 0, 0, 0, commands)
    formats = (("README ($cnn_sort_genre)", None, False), ("round 1's ($cnn_genre)", ROUND1_PATHS, False),
               ("round 1's, without album predictions (as in round 1)", ROUND1_PATHS, True))
    for name, paths, drop_albums in formats:
        if drop_albums:
            drop_album_predictions(library)
        library.beet("move", extra_config=None if paths is None else {"paths": paths}, log=note)
        lib = library.open()
        albums = list(lib.albums())
        regular = [a for a in albums if not a.comp]
        found.albums, found.compilations = len(regular), len(albums) - len(regular)
        found.split[name] = sum(len(datasets.top_folders(lib, a)) > 1 for a in regular)
        found.compilations_split[name] = sum(len(datasets.top_folders(lib, a)) > 1 for a in albums if a.comp)
        if paths is None:
            root = Path(os.fsdecode(lib.directory))
            found.unsorted = sum(Path(os.fsdecode(item.path)).relative_to(root).parts[0] == "Unsorted"
                                 for item in lib.items())
            truth = {ids[i]: genre_key(tracks[i].spelling) for i in range(len(tracks))}
            for album in regular:
                items = list(album.items())
                genre = truth[items[0].id]
                found.album_right += genre_key(album.get("cnn_album_genre") or "") == genre
                found.tracks += len(items)
                found.tracks_right += sum(genre_key(item.get("cnn_genre", with_album=False) or "") == genre
                                          for item in items)
        lib._close()
    return found


# ------------------------------------------------------------------ report


def mean_of(reports: list, key: str) -> str:
    values = [r[key] for r in reports if r[key] is not None]
    return f"{np.mean(values):.3f}" if values else "n/a"


def render(tracks: list, lists: list, held: Heldout, folders: Folders | None) -> str:
    from collections import Counter

    labels = labels_of(lists)
    albums = datasets.albums_of(tracks)
    kinds = Counter(len(values) for values in lists)
    seeds = ", ".join(map(str, held.seeds))
    text = [
        f"Library: {len(tracks)} items ({sum(t.collection == 'gtzan-dev' for t in tracks)} gtzan-dev clips, "
        f"{sum(t.collection == 'jamendo' for t in tracks)} Jamendo tracks), {len(set(t.artist for t in tracks))} "
        f"artists, {len(albums)} albums of 2-12 tracks ({sum(len(m) for m in albums.values())} tracks; gtzan-dev: "
        "artist groups of two clips or more, not the catch-all groups; Jamendo: albums of their tags), the rest "
        f"singletons. Genre lists: {kinds[1]} items with one genre, {kinds[2]} with two, {kinds[3]} with three "
        "(the genre, then a second genre for a quarter of the artists, drawn by seed 0: Blues -> Rock, Country "
        "-> Rock, Disco -> Pop, Hip-Hop -> Pop, Jazz -> Blues, Pop -> Rock, Reggae -> Pop, Rock -> Pop, "
        "Soundtrack -> Classical, Electronic -> Pop; then parents from lastgenre's genre tree: Disco -> "
        "Electronic, Metal (heavy metal) -> Rock). The second genres are set by rule, not by listening.",
        "",
        f"Learned genres (`choose_labels`, at least {MIN_TRACKS} tracks): "
        + ", ".join(f"{g} {n}" for g, n in zip(labels.genres, labels.multi.sum(axis=0))) + "; the single-label "
        "model learns " + ", ".join(g for g, n in zip(labels.genres, labels.single.sum(axis=0)) if n) + ".",
        "",
        f"### Held-out artists: {FOLDS} artist-grouped folds, seeds {seeds}",
        "",
        "Both models are the default musicnn head (`get_backbone('musicnn').train` with `TrainConfig()`) on the "
        "same folds, trained on the training side only; scores are of the pooled held-out probabilities "
        "(`genre_report`), averaged over the fold seeds. "
        f"Left out of every score: the tracks whose first genre has no training track in their fold "
        f"({', '.join(sorted(held.excluded_genres)) or 'none'}: one artist plays it; "
        f"{', '.join(map(str, held.excluded))} tracks per seed).",
        "",
    ]
    rows = []
    for name, reports in held.tracks.items():
        rows.append([name, f"{np.mean([r['top1_accuracy'] for r in reports]):.1%}",
                     f"{np.mean([r['primary_tagged'] for r in reports]):.1%}", mean_of(reports, "micro_f1"),
                     mean_of(reports, "macro_f1"), mean_of(reports, "mean_average_precision"),
                     mean_of(reports, "ece")])
    text += [results.table(["model", "top-1 (first genre)", "primary is a tagged genre", "micro-F1", "macro-F1",
                            "mAP", "ECE"], rows), ""]
    ap_rows = []
    for name, reports in held.tracks.items():
        ap_rows.append([name] + [mean_of([r["per_genre"][g] for r in reports], "average_precision")
                                 for g in labels.genres])
    text += ["Average precision per genre (the genres that are often second or parent genres show what the "
             "lists teach):", "", results.table(["model"] + labels.genres, ap_rows), ""]
    text += ["Album level, multi-label model (the product): each album's genre from its tracks' held-out "
             "probabilities, against the top-1 of the same tracks on their own; albums count once each. One "
             "album is " + f"{1 / max(1, held.albums[0].albums):.1%}.", ""]
    rows = []
    for seed, a in zip(held.seeds, held.albums):
        rows.append([seed, a.albums] + [f"{a.album_right[name] / a.albums:.1%}" for name in CONSENSUS]
                    + [f"{a.tracks_right / a.tracks:.1%}", f"{a.album_share_right:.1%}",
                       f"{a.disagreeing} of {a.albums}"])

    def total(key):
        return sum(getattr(a, key) for a in held.albums)
    pooled_right = {n: sum(a.album_right[n] for a in held.albums) for n in CONSENSUS}
    rows.append(["seeds pooled", total("albums")] + [f"{pooled_right[n] / total('albums'):.1%}" for n in CONSENSUS]
                + [f"{total('tracks_right') / total('tracks'):.1%}",
                   f"{np.mean([a.album_share_right for a in held.albums]):.1%}",
                   f"{total('disagreeing')} of {total('albums')}"])
    text += [results.table(["fold seed", "albums"] + [f"album top-1: {n}" for n in CONSENSUS]
                           + ["track top-1 (album tracks)", "track top-1, mean per album",
                              "albums whose tracks disagree"], rows), ""]
    if folders is not None:
        text += [
            "### Albums across folders, through the product",
            "",
            "The library above imported with `beet import -A -q` (albums one folder each; "
            f"{folders.compilations} Various Artists compilation of {COMPILATION_TRACKS} singletons of different "
            "genres; the other singletons with `-s`). The artists split in two halves "
            "(`grouped_split`, 50%); for each half, `beet cnngenre -t -m "
            f"{HALF_MIN_TRACKS} --model model-X.pt bench_half:X` trains on the other half and `beet cnngenre "
            "--model model-X.pt bench_half:Y` predicts it, so every item and album is predicted by a model that "
            "never heard its artist. Then `beet move` with the README's path format "
            f"(`{datasets.README_PATHS['default']}`, singletons and compilations by their own genre), and again "
            f"with round 1's (`{ROUND1_PATHS['default']}`): first with the albums' own fields (`cnn_album_*`, "
            "which `$cnn_genre` never reads: a track shows only its own prediction), then without them, as "
            "round 1 left albums. An album is split when its tracks land in more than one top folder.",
            "",
            results.table(["path format", f"albums split (of {folders.albums})", "share",
                           f"compilations split (of {folders.compilations})"],
                          [[name, folders.split[name], f"{folders.split[name] / folders.albums:.1%}",
                            folders.compilations_split[name]] for name in folders.split]),
            "",
            f"An album's `cnn_album_genre` is its genre for {folders.album_right} of {folders.albums} albums "
            f"({folders.album_right / folders.albums:.1%}); the tracks' own `cnn_genre` for {folders.tracks_right} "
            f"of their {folders.tracks} tracks ({folders.tracks_right / folders.tracks:.1%}). Items left in "
            f"`Unsorted` (no prediction): {folders.unsorted}. Target for non-compilation albums: 0 split.",
            "",
            "Commands and their seconds (LIBRARY: the library's folder): "
            + "; ".join(f"`{c}`" for c in folders.commands) + ".",
            "",
        ]
    return "\n".join(text)


def main(argv=None) -> None:
    results.use_this_checkout()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=datasets.DATA, help="folder holding gtzan-dev/ and jamendo/")
    parser.add_argument("--quick", action="store_true", help=f"one fold seed; writes {QUICK_OUTPUT.name}")
    parser.add_argument("--keep", type=Path, help="build the beets library in this (new) folder and keep it")
    args = parser.parse_args(argv)

    from threadpoolctl import threadpool_limits

    from genre_cnn_core.cache import FeatureCache

    command = results.command_line("albums.py", argv)
    started = time.perf_counter()
    seeds = (0,) if args.quick else (0, 1, 2)
    if args.keep is not None and args.keep.exists():
        sys.exit(f"albums: {args.keep} exists; give a new folder")
    try:
        tracks = datasets.load_library(args.data)
        lists = datasets.genre_lists(tracks)
        with threadpool_limits(limits=1):  # the machine is shared
            features = datasets.backbone_features("musicnn", [t.path for t in tracks],
                                                  FeatureCache(str(datasets.CACHE)), measure.log)
            held = held_out_experiment(tracks, lists, features, seeds, measure.log)
        with tempfile.TemporaryDirectory(prefix="cnngenre-albums-") as scratch:
            folders = through_the_product(tracks, lists, args.keep or Path(scratch), measure.log)
    except (datasets.DataError, RuntimeError) as error:
        sys.exit(f"albums: {error}")
    body = (results.context(command, started)
            + render(tracks, lists, held, folders))
    print(f"{HEADING}\n\n{body}")
    output = QUICK_OUTPUT if args.quick else results.RESULTS
    results.write_section(HEADING, body, output)
    measure.log(f"wrote the {HEADING} section of {output}")


if __name__ == "__main__":
    main()
