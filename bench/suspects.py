"""Suspects: does ``beet cnngenre --suspects`` find genre tags planted wrong (issue 16)?

    python bench/suspects.py [--quick] [--data ../shared/data]

A beets library built from ``../shared/data`` (:func:`datasets.load_library`,
imported with ``beet import -A``; every item tagged with its own genre).
For each seed, 10% of the items get a wrong genre on purpose: one whole
artist (3 to 6 tracks, drawn at random) relabelled to one other genre,
then single items drawn at random, each to a random other genre. Then the
real commands: ``beet cnngenre -t`` on the partly mislabelled library and
``beet cnngenre --suspects`` at the default threshold (``suspect_threshold``),
and the ``cnn_suspect`` of every item is read back: precision and recall
of the flagged items, the precision-recall curve over thresholds
(``bench/suspects_pr.png``), and where the false alarms come from.

Writes the ``## Suspects`` section of ``bench/RESULTS.md`` (``--quick``:
``bench/out/suspects-quick.md``, ``bench/out/suspects_pr-quick.png``) and prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import tempfile
import time
from pathlib import Path

import datasets
import measure
import numpy as np
import results

HEADING = "## Suspects"
QUICK_OUTPUT = results.REPO / "bench" / "out" / "suspects-quick.md"
PLOT = results.REPO / "bench" / "suspects_pr.png"
QUICK_PLOT = results.REPO / "bench" / "out" / "suspects_pr-quick.png"
PLANTED_SHARE = 0.10
#: Tracks of the artist mislabelled at once.
WHOLE_ARTIST_TRACKS = (3, 6)
#: ``-m`` of ``beet cnngenre -t``: the library's genres have 10-20 tracks, and a planting that takes
#: some away must not drop a genre from the model (the default, 10, would).
MIN_TRACKS = 5
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)


# ------------------------------------------------------------------ planting


@dataclasses.dataclass
class Planting:
    """Which tracks carry a wrong genre, and which."""

    seed: int
    genres: list  # the genre every track is tagged with
    planted: np.ndarray  # booleans: tagged wrong on purpose
    whole_artist: str  # the artist mislabelled at once
    in_whole_artist: np.ndarray  # booleans: that artist's tracks


def plant(tracks: list, learnable: list, seed: int) -> Planting:
    """Wrong genres for ``PLANTED_SHARE`` of the tracks: one whole artist, then single tracks.

    Wrong genres are drawn from ``learnable`` (genres the model will know),
    never the track's own.
    """
    rng = np.random.default_rng(seed)
    genres = [t.spelling for t in tracks]
    planted = np.zeros(len(tracks), dtype=bool)
    artists = sorted({t.artist for t in tracks})
    sizes = {a: sum(t.artist == a for t in tracks) for a in artists}
    low, high = WHOLE_ARTIST_TRACKS
    whole = str(rng.choice([a for a in artists if low <= sizes[a] <= high]))
    members = np.array([t.artist == whole for t in tracks])
    wrong = str(rng.choice([g for g in learnable if g != tracks[np.flatnonzero(members)[0]].spelling]))
    for index in np.flatnonzero(members):
        genres[index], planted[index] = wrong, True
    wanted = round(PLANTED_SHARE * len(tracks))
    for index in rng.permutation(np.flatnonzero(~members))[:max(0, wanted - int(members.sum()))]:
        genres[index] = str(rng.choice([g for g in learnable if g != tracks[index].spelling]))
        planted[index] = True
    return Planting(seed, genres, planted, whole, members)


# ------------------------------------------------------------------ the product


def judge(library: datasets.BeetsLibrary, ids: list, planting: Planting, log) -> tuple[np.ndarray, dict]:
    """Tag the library as planted, train, run ``--suspects``; every item's ``cnn_suspect`` (NaN: not judged).

    Raises
    ------
    RuntimeError
        The command's summary disagrees with the fields it stored.
    """
    lib = library.open()
    items = {item.id: item for item in lib.items()}
    for index, item_id in enumerate(ids):
        items[item_id].genres = [planting.genres[index]]
        items[item_id].store()
    lib._close()
    library.beet("cnngenre", "-t", "-m", str(MIN_TRACKS), log=log)
    output = library.beet("cnngenre", "--suspects", log=log)
    summary = re.search(r"flagged (\d+) of (\d+) judged items at cnn_suspect >= ([\d.]+) \(suspect_threshold\); "
                        r"not judged: (.*?); failed (\d+)", output)
    if summary is None:
        raise RuntimeError("beet cnngenre --suspects printed no summary line")
    lib = library.open()
    found = {item.id: item.get("cnn_suspect") for item in lib.items()}
    lib._close()
    scores = np.array([float(found[i]) if found[i] is not None else np.nan for i in ids])
    threshold = float(summary.group(3))
    flagged, judged = int(summary.group(1)), int(summary.group(2))
    if flagged != int((scores >= threshold).sum()) or judged != int(np.isfinite(scores).sum()):
        raise RuntimeError(f"--suspects said {flagged} of {judged} flagged; the library holds "
                           f"{int((scores >= threshold).sum())} of {int(np.isfinite(scores).sum())}")
    return scores, {"threshold": threshold, "not_judged": summary.group(4), "failed": int(summary.group(5))}


# ------------------------------------------------------------------ scores


def precision_recall(scores: np.ndarray, planted: np.ndarray, threshold: float) -> tuple:
    """Precision (None when nothing is flagged), recall, flagged count; unjudged items are never flagged."""
    flagged = np.nan_to_num(scores, nan=-1.0) >= threshold
    hits = int((flagged & planted).sum())
    return (hits / flagged.sum() if flagged.sum() else None), hits / planted.sum(), int(flagged.sum())


def curve(scores: np.ndarray, planted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at every distinct score, highest threshold first."""
    points = [precision_recall(scores, planted, t) for t in np.unique(scores[np.isfinite(scores)])[::-1]]
    return np.array([p for p, _, _ in points]), np.array([r for _, r, _ in points])


@dataclasses.dataclass
class Outcome:
    planting: Planting
    scores: np.ndarray
    summary: dict


def save_plot(outcomes: list, alone: np.ndarray, threshold: float, path: Path) -> None:
    """Precision-recall curves as a small PNG: each seed (thin), all seeds pooled (thick), pooled without the
    single-artist genres (dashed); dots at ``threshold``."""
    import matplotlib

    from genre_cnn_core.files import atomic_write

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 3.6))
    for n, outcome in enumerate(outcomes):
        precision, recall = curve(outcome.scores, outcome.planting.planted)
        axes.plot(recall, precision, lw=0.8, alpha=0.5, color=f"C{n}", label=f"seed {outcome.planting.seed}")
    scores = np.concatenate([o.scores for o in outcomes])
    planted = np.concatenate([o.planting.planted for o in outcomes])
    rest = ~np.concatenate([alone] * len(outcomes))
    for chosen, style, label in ((np.ones_like(rest), "-", "all seeds"),
                                 (rest, "--", "all seeds, without single-artist genres")):
        precision, recall = curve(scores[chosen], planted[chosen])
        axes.plot(recall, precision, style, lw=2, color="black", label=label)
        p, r, _ = precision_recall(scores[chosen], planted[chosen], threshold)
        if p is not None:
            axes.plot([r], [p], "o", color="black")
    axes.set_xlabel("recall (planted wrong tags found)")
    axes.set_ylabel("precision (flagged items planted)")
    axes.set_xlim(0, 1.02)
    axes.set_ylim(0, 1.02)
    axes.set_title(f"beet cnngenre --suspects (dots: threshold {threshold:g})", fontsize=9)
    axes.legend(fontsize=6, loc="upper right")
    figure.tight_layout()
    atomic_write(str(path), lambda handle: figure.savefig(handle, format="png", dpi=80))
    plt.close(figure)


def render(tracks: list, outcomes: list, single_artist: set, learnable: list, plot: Path, commands: list) -> str:
    from genre_cnn_core.metrics import average_precision

    threshold = outcomes[0].summary["threshold"]
    alone = np.array([t.spelling in single_artist for t in tracks])
    rows = []
    for o in outcomes:
        planted = o.planting.planted
        p, r, flagged = precision_recall(o.scores, planted, threshold)
        judged = np.isfinite(o.scores)
        false_alarms = (np.nan_to_num(o.scores, nan=-1) >= threshold) & ~planted
        whole = o.planting.in_whole_artist
        _, whole_recall, _ = precision_recall(o.scores[whole], planted[whole], threshold)
        _, single_recall, _ = precision_recall(o.scores[~whole], planted[~whole], threshold)
        p_rest, r_rest, _ = precision_recall(o.scores[~alone], planted[~alone], threshold)
        rows.append([o.planting.seed, int(planted.sum()), f"{o.planting.whole_artist} ({int(whole.sum())})",
                     f"{flagged} of {int(judged.sum())}", "n/a" if p is None else f"{p:.2f}", f"{r:.2f}",
                     f"{whole_recall:.2f}", f"{single_recall:.2f}",
                     f"{int(false_alarms.sum())} ({int((false_alarms & alone).sum())})",
                     f"{average_precision(np.nan_to_num(o.scores, nan=-1), planted):.2f}",
                     "n/a" if p_rest is None else f"{p_rest:.2f} / {r_rest:.2f}"])
    pooled_scores = np.concatenate([o.scores for o in outcomes])
    pooled_planted = np.concatenate([o.planting.planted for o in outcomes])
    pooled_alone = np.concatenate([alone] * len(outcomes))
    sweep = []
    for t in THRESHOLDS:
        p, r, flagged = precision_recall(pooled_scores, pooled_planted, t)
        p_rest, r_rest, _ = precision_recall(pooled_scores[~pooled_alone], pooled_planted[~pooled_alone], t)
        sweep.append([f"{t:g}" + (" (default)" if t == threshold else ""), f"{flagged / len(outcomes):.1f}",
                      "n/a" if p is None else f"{p:.2f}", f"{r:.2f}",
                      "n/a" if p_rest is None else f"{p_rest:.2f}", f"{r_rest:.2f}"])
    seeds = ", ".join(str(o.planting.seed) for o in outcomes)
    return "\n".join([
        f"Library: {len(tracks)} items of `datasets.load_library` (gtzan-dev and Jamendo) imported with `beet "
        "import -A -q`, each tagged with its own genre. Per seed, "
        f"{round(PLANTED_SHARE * len(tracks))} items ({PLANTED_SHARE:.0%}) get a wrong genre: one whole artist of "
        f"{WHOLE_ARTIST_TRACKS[0]}-{WHOLE_ARTIST_TRACKS[1]} tracks relabelled to one other genre, then single "
        "items at random, each to a random other genre (wrong genres drawn from those the model learns: "
        f"{', '.join(learnable)}). Then `beet cnngenre -t -m {MIN_TRACKS}` on the partly mislabelled library "
        f"(`-m {MIN_TRACKS}`: genres have 10-20 tracks, and a planting must not drop one from the model) and "
        f"`beet cnngenre --suspects` at the default `suspect_threshold` {threshold:g}; `cnn_suspect` of every "
        "item read back from the library (training tracks are judged by their held-out prediction, made by a "
        "head that never heard their artist). Not judged: items of genres the model does not learn "
        f"({outcomes[0].summary['not_judged']}); they count as not flagged.",
        "",
        f"{', '.join(sorted(single_artist)) or 'No genre'} is played by one artist only. A track is never "
        "judged by a held-out head that did not learn its genre (the model records which genres each fold's "
        "head learned), but when planted labels give such a genre a second artist, the folds that hold the real "
        "artist out learn the genre from the planted tracks alone, and the real artist's correctly tagged items "
        "are flagged. The columns \"false alarms\" (in brackets: of such a genre) and \"without single-artist "
        "genres\" separate them.",
        "",
        f"At the default threshold ({threshold:g}), seeds {seeds}:",
        "",
        results.table(["seed", "planted", "whole artist (tracks)", "flagged of judged", "precision", "recall",
                       "recall, whole artist", "recall, single items", "false alarms (single-artist genre)",
                       "average precision", "precision / recall without single-artist genres"], rows),
        "",
        "Over thresholds (all seeds pooled; flagged = mean items per seed):",
        "",
        results.table(["threshold", "flagged", "precision", "recall", "precision without single-artist genres",
                       "recall without"], sweep),
        "",
        f"![precision-recall of --suspects]({plot.name})",
        "",
        "Commands of the first seed and their seconds: " + "; ".join(f"`{c}`" for c in commands) + ".",
        "",
    ])


def main(argv=None) -> None:
    results.use_this_checkout()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=datasets.DATA, help="folder holding gtzan-dev/ and jamendo/")
    parser.add_argument("--quick", action="store_true", help=f"one seed; writes {QUICK_OUTPUT.name}")
    parser.add_argument("--seeds", type=int, default=5, help="plantings (default 5; --quick: 1)")
    args = parser.parse_args(argv)

    from collections import Counter

    from genre_cnn_core.genres import choose_labels

    command = results.command_line("suspects.py", argv)
    started = time.perf_counter()
    commands: list = []
    try:
        tracks = datasets.load_library(args.data)
        counts = choose_labels([t.spelling for t in tracks], min_tracks=MIN_TRACKS).counts
        learnable = sorted({t.spelling for t in tracks if any(t.spelling.lower() == g for g in counts)})
        artists_per_genre = Counter(g for g, _ in {(t.spelling, t.artist) for t in tracks})
        single_artist = {g for g in learnable if artists_per_genre[g] == 1}
        settings = {"plugins": ["cnngenre"],
                    "cnngenre": {"auto": False, "cache_dir": str(datasets.CACHE), "jobs": 1, "device": "cpu"}}
        outcomes = []
        with tempfile.TemporaryDirectory(prefix="cnngenre-suspects-") as scratch:
            library, ids = datasets.import_library(Path(scratch), tracks, [[t.spelling] for t in tracks], settings,
                                                   log=measure.log)
            for seed in range(1 if args.quick else args.seeds):
                planting = plant(tracks, learnable, seed)
                scores, summary = judge(library, ids, planting,
                                        log=commands.append if seed == 0 else measure.log)
                outcomes.append(Outcome(planting, scores, summary))
                p, r, flagged = precision_recall(scores, planting.planted, summary["threshold"])
                measure.log(f"seed {seed}: flagged {flagged}, precision {p}, recall {r:.2f}")
    except (datasets.DataError, RuntimeError) as error:
        sys.exit(f"suspects: {error}")
    plot = QUICK_PLOT if args.quick else PLOT
    plot.parent.mkdir(parents=True, exist_ok=True)
    save_plot(outcomes, np.array([t.spelling in single_artist for t in tracks]), outcomes[0].summary["threshold"],
              plot)
    body = (results.context(command, started)
            + render(tracks, outcomes, single_artist, learnable, plot, commands))
    print(f"{HEADING}\n\n{body}")
    output = QUICK_OUTPUT if args.quick else results.RESULTS
    results.write_section(HEADING, body, output)
    measure.log(f"wrote the {HEADING} section of {output} and {plot}")


if __name__ == "__main__":
    main()
