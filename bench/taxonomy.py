#!/usr/bin/env python
"""Training on long-tailed taxonomies: the ``## Long-tailed taxonomies`` section of ``bench/RESULTS.md``.

Real libraries have genres played by one or two artists (a soundtrack
composer, one label's sub-genre) beside well-populated ones. This builds
such libraries from ``../shared/data`` (gtzan-dev and jamendo) and trains
the musicnn head on each exactly as ``beet cnngenre -t`` does (labels by
:func:`genre_cnn_core.genres.choose_labels`, the backbone's trainer,
:func:`genre_cnn_core.pipeline.training_report`), from cached features:

* ``issue``: gtzan-dev + jamendo at the default ``min_tracks`` of 10, where
  jamendo's 12 soundtrack tracks (one artist, one album) clear it;
* ``synthetic``: the same at ``min_tracks`` 5 with synthetic tails drawn per
  seed: a genre of one album (GTZAN's largest artist group, 12 clips,
  renamed ``dub``), a sub-genre of 1-3 artist groups of one genre, and a
  "label" genre of 2-3 artist groups of different genres (5-20 tracks).

Each is compared with the same library without its tail (the tail's tracks
left out), on the same tracks: out-of-fold top-1 (primary genre = first
tag) and mAP of the well-populated genres, ECE of the scored held-out
tracks, the spread of the final model's top scores over the library, the
calibration slope, and what the usability check said. Variants: which
out-of-fold pairs choose the penalty and calibration
(:func:`genre_cnn_core.linear_head.judged_pairs`: ``all`` was the head
before, ``known``, ``judged``), and the head's input (tags only, or chosen
between tags and tags + pooled features).

Usage (from the repository root)::

    nice -n 10 python bench/taxonomy.py            # 10-40 minutes once the features are cached
    nice -n 10 python bench/taxonomy.py --quick    # one draw
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
import datasets  # noqa: E402
import results  # noqa: E402

DRAWS = (0, 1, 2, 3)
#: (name, scoring of the out-of-fold pairs, head inputs)
VARIANTS = (
    ("before: all pairs, tags", "all", ("tags",)),
    ("known pairs, tags", "known", ("tags",)),
    ("judged pairs, tags", "judged", ("tags",)),
    ("judged pairs, input chosen", "judged", ("tags", "tags+pooled")),
)


@dataclasses.dataclass
class Library:
    """Tracks (indices into the loaded tracks) with their genre lists; ``tail`` marks the tail's tracks."""

    name: str
    tracks: list
    genres: list
    tail: set
    min_tracks: int


def draw_libraries(tracks: list, seed: int) -> list[Library]:
    """The issue's library and one synthetic long-tailed library for this draw."""
    rng = np.random.default_rng(seed)
    every = list(range(len(tracks)))
    base = [[t.genre] for t in tracks]
    soundtrack = {i for i, t in enumerate(tracks) if t.genre == "soundtrack"}
    issue = Library("issue", every, base, soundtrack, 10)

    genres = [list(g) for g in base]
    tail = set(soundtrack)
    by_group: dict = {}
    for i, t in enumerate(tracks):
        if t.collection == "gtzan-dev" and not any(t.artist.endswith(c) for c in datasets.CATCH_ALL_GROUPS):
            by_group.setdefault(t.artist, []).append(i)
    largest = max(by_group, key=lambda g: len(by_group[g]))
    for i in by_group.pop(largest):  # one album, one artist
        genres[i], _ = ["dub"], tail.add(i)
    groups = [g for g in sorted(by_group) if len(by_group[g]) >= 2]
    parents = sorted({tracks[by_group[g][0]].genre for g in groups})
    rng.shuffle(parents)
    for parent in parents:  # a sub-genre: 1-3 artist groups of one genre, 5 tracks or more
        own = [g for g in groups if tracks[by_group[g][0]].genre == parent]
        rng.shuffle(own)
        chosen = []
        for group in own[:3]:
            chosen.append(group)
            if sum(len(by_group[g]) for g in chosen) >= 5:
                break
        if sum(len(by_group[g]) for g in chosen) >= 5:
            for group in chosen:
                for i in by_group[group]:
                    genres[i], _ = [f"{parent} b-side"], tail.add(i)
                groups.remove(group)
            break
    rng.shuffle(groups)
    label, seen = [], set()
    for group in groups:  # a label's genre: 2-3 artist groups of different genres, 5-20 tracks
        genre = tracks[by_group[group][0]].genre
        if genre not in seen and sum(len(by_group[g]) for g in label) + len(by_group[group]) <= 20:
            label.append(group)
            seen.add(genre)
        if len(label) == 3 or (len(label) >= 2 and sum(len(by_group[g]) for g in label) >= 5):
            break
    for group in label:
        for i in by_group[group]:
            genres[i], _ = ["label"], tail.add(i)
    return [issue, Library("synthetic", every, genres, tail, 5)]


def without_tail(library: Library) -> Library:
    kept = [i for i in library.tracks if i not in library.tail]
    return Library(library.name + " without tail", kept, library.genres, set(), library.min_tracks)


def train(library: Library, tracks: list, features: np.ndarray, scoring: str, inputs: tuple, seed: int) -> dict:
    """Train the musicnn head as ``beet cnngenre -t`` does (with ``scoring``); its figures and report."""
    from genre_cnn_core.backbones import TrainConfig, TrainedHead
    from genre_cnn_core.genres import choose_labels
    from genre_cnn_core.linear_head import judged_tracks, train_linear_head
    from genre_cnn_core.metrics import calibrate, expected_calibration_error
    from genre_cnn_core.pipeline import training_report
    from genre_cnn_core.runtime import compute_threads

    choice = choose_labels([library.genres[i] for i in library.tracks], min_tracks=library.min_tracks)
    used = choice.used()
    index = [library.tracks[p] for p in used]
    targets = choice.label_matrix(used)
    strata = np.array([choice.labels[p][0] for p in used])
    groups = [tracks[i].artist for i in index]
    config = TrainConfig(seed=seed)
    x = features[index]
    offsets = {"tags": x.shape[1] - config.head_tags, "tags+pooled": 0}
    started = time.perf_counter()
    with compute_threads(1):  # as the musicnn backbone trains it
        found = train_linear_head(x, targets, strata, groups, config.folds, [offsets[n] for n in inputs], seed,
                                  scoring)
    trained = TrainedHead(found.head.weights(), found.head.architecture, found.calibration, found.heldout,
                          found.heldout_probabilities, found.heldout_known)
    summary = training_report(trained, targets, strata, groups, choice.genres)
    scored = judged_tracks(targets[found.heldout], found.heldout_known)
    top = calibrate(found.head.logits(x), found.calibration).max(axis=1)
    probabilities = np.zeros((len(index), len(choice.genres)))
    probabilities[found.heldout] = found.heldout_probabilities
    rows = np.arange(len(index))
    primary = probabilities.argmax(axis=1)
    ece = expected_calibration_error(probabilities[rows, primary][scored], targets[rows, primary][scored])
    return {
        "index": index, "genres": choice.genres, "targets": targets, "strata": strata,
        "probabilities": probabilities, "slope": float(found.calibration[0]), "ece": ece,
        "spread": tuple(np.percentile(top, [10, 90])), "applied": float((top >= 0.5).mean()),
        "penalty": found.penalty, "input": next(n for n in inputs if offsets[n] == found.offset),
        "usability": summary["usability"], "seconds": time.perf_counter() - started,
        "not_scored": [g for g, row in summary["validation"]["per_genre"].items() if not row["support"]],
    }


def common_figures(run: dict, common: set, genre_names: list) -> tuple[float, float, float]:
    """Top-1, top-1 among the well-populated genres only, and mAP of the well-populated genres, on the
    tracks both libraries have."""
    from genre_cnn_core.metrics import average_precision

    rows = [r for r, i in enumerate(run["index"]) if i in common]
    first = run["strata"][rows]
    columns = np.array([run["genres"].index(g) for g in genre_names])
    probabilities = run["probabilities"][rows]
    top1 = float((probabilities.argmax(axis=1) == first).mean())
    among_well = float((columns[probabilities[:, columns].argmax(axis=1)] == first).mean())
    aps = [average_precision(probabilities[:, c], run["targets"][rows, c]) for c in columns]
    return top1, among_well, float(np.mean([a for a in aps if a is not None]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=datasets.DATA)
    parser.add_argument("--quick", action="store_true", help="one draw")
    parser.add_argument("--draws", type=int, default=len(DRAWS), help=f"draws (at most {len(DRAWS)})")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    from genre_cnn_core import FeatureCache

    tracks = datasets.load_library(args.data)
    features = np.stack(datasets.backbone_features("musicnn", [t.path for t in tracks],
                                                   FeatureCache(str(datasets.CACHE)))).astype(np.float32)
    draws = DRAWS[:1] if args.quick else DRAWS[:args.draws]
    figures: dict = {}
    said: dict = {}
    for seed in draws:
        for library in draw_libraries(tracks, seed):
            tidy = without_tail(library)
            common = set(tidy.tracks)
            for name, scoring, inputs in VARIANTS:
                base = train(tidy, tracks, features, scoring, inputs, seed)
                well = base["genres"]
                run = train(library, tracks, features, scoring, inputs, seed)
                tail_names = sorted(set(run["genres"]) - set(well))
                b_top1, _, b_map = common_figures(base, common, well)
                t_top1, t_well, t_map = common_figures(run, common, well)
                row = (b_top1, t_top1, t_top1 - b_top1, b_map, t_map, t_map - b_map, base["ece"], run["ece"],
                       run["spread"][0], run["spread"][1], run["applied"], base["slope"], run["slope"],
                       bool(run["usability"]), bool(base["usability"]), t_well - b_top1, base["seconds"],
                       run["seconds"])
                figures.setdefault((library.name, name), []).append(row)
                said.setdefault((library.name, name), []).append(
                    (seed, tail_names, run["not_scored"], run["usability"], run["penalty"], run["input"],
                     base["penalty"], base["input"]))
                print(library.name, seed, name, tail_names, " ".join(f"{v:.3f}" if isinstance(v, float) else str(v)
                                                                     for v in row), run["usability"][:120])
    rows = []
    for (library, name), values in figures.items():
        v = np.array(values, dtype=float)
        mean, sd = v.mean(axis=0), v.std(axis=0)
        rows.append([library, name, f"{mean[0]:.1%} → {mean[1]:.1%} ({mean[2] * 100:+.1f} ± {sd[2] * 100:.1f})",
                     f"{mean[15] * 100:+.1f} ± {sd[15] * 100:.1f}",
                     f"{mean[3]:.3f} → {mean[4]:.3f} ({mean[5]:+.3f} ± {sd[5]:.3f})",
                     f"{mean[6]:.3f} → {mean[7]:.3f}", f"{mean[8]:.2f}–{mean[9]:.2f}", f"{mean[10]:.0%}",
                     f"{mean[11]:.2f} → {mean[12]:.2f}", f"{int(v[:, 13].sum())} / {int(v[:, 14].sum())} of {len(v)}",
                     f"{mean[16]:.0f} / {mean[17]:.0f}"])
    noise = np.array([r[2] for (library, name), values in figures.items() for r in values])
    lines = []
    for (library, name), values in said.items():
        if name != VARIANTS[-1][0]:
            continue
        for seed, tail_names, not_scored, usability, penalty, chosen, base_penalty, base_chosen in values:
            lines.append(f"- {library}, draw {seed}: tail {', '.join(tail_names)}; not scored (one artist): "
                         f"{', '.join(not_scored) or 'none'}; chose {chosen}, penalty {penalty:g} "
                         f"(without the tail: {base_chosen}, {base_penalty:g}); check: {usability or 'usable'}")
    for (library, name), values in said.items():
        if name == VARIANTS[0][0]:
            for seed, _, _, usability, penalty, _, _, _ in values:
                lines.append(f"- before ({library}, draw {seed}): penalty {penalty:g}; check: "
                             f"{usability or 'usable'}")
    body = (results.context(results.command_line("taxonomy.py", argv), started)
            + f"{len(tracks)} tracks of gtzan-dev and jamendo, musicnn features (4 patches of 3 s); draws "
            f"{', '.join(map(str, draws))} (the draw seeds the synthetic tails and the folds). Each library is "
            "compared with itself without its tail, on the tracks both have: out-of-fold top-1 (primary genre = "
            "first tag) and mAP of the well-populated genres (mean over draws, then the change ± its standard "
            "deviation over draws), ECE of the primary genre on the scored held-out tracks, the final model's "
            "top score over the library (10th–90th percentile, share at or above 0.5: what `-g` applies), the "
            "calibration slope, how often the usability check fired (with tail / without), and the training "
            "time (without / with tail; the machine was shared by several helpers' jobs). The second column "
            "ranks only the well-populated genres: the first counts a track whose top genre is a tail genre "
            "(reggae clips called dub) as wrong, the second shows what the tail did to the others' learning.\n\n"
            + results.table(["library", "variant", "top-1 without → with tail (change)",
                             "change of top-1 among the well-populated genres", "mAP (change)", "ECE",
                             "top score spread", "≥ 0.5", "slope", "check fired", "training s"], rows)
            + f"\n\nSpread of the top-1 change over all draws and variants: sd {noise.std() * 100:.1f} points.\n\n"
            + "What training said (last variant, then the head before):\n\n" + "\n".join(lines) + "\n")
    results.write_section("## Long-tailed taxonomies", body,
                          results.REPO / "bench" / "out" / "RESULTS-quick.md" if args.quick else results.RESULTS)
    print(f"wrote the ## Long-tailed taxonomies section of {results.RESULTS}")


if __name__ == "__main__":
    main()
