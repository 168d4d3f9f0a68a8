#!/usr/bin/env python
"""Speed of ``beet cnngenre`` before and after this round, side by side in one run: the ``## Speed``
section of ``bench/RESULTS.md``.

Usage (from the repository root)::

    python bench/speed.py [--tracks 120] [--rounds 2] [--quick]

One run, 2 workers and the CPU everywhere:

1. ``--tracks`` full-length tracks (3-5 min, mixed formats; ``bench/library.py``)
   are imported as-is into two fresh beets libraries: "before" runs the code of
   commit 36fe3e5 (round 1, with its own default model and cache), "after" runs
   this checkout. Every ``beet`` records the modules it imported.
2. ``--rounds`` rounds, each: the decoding floor (a program of 2 processes that
   only open, seek, decode and resample three 10-s excerpts per track), then for
   before and after in turn (ABAB): ``beet cnngenre -f`` with an empty feature
   cache (cold), the same again (warm), and ``beet cnngenre`` (every item skipped).
3. One-track runs (``beet cnngenre -f title:...``, empty cache) and the import of
   one album into a fresh library (``beet import -A -q``, auto off, then on),
   before and after alternated.
4. The scratch backbone (after only): a model trained for one epoch on the
   library, then a cold and a warm run, against the floor.
5. Predictions unchanged: the numpy network against round 1's float32 torch port on
   gtzan-dev and jamendo: the default model's top-1 agreement, and the out-of-fold
   accuracy of the default recipe's head on gtzan-dev with either network's
   embeddings; full runs also quote ``scripts/check_musicnn_numpy.py``.

It prints the section and writes it to ``bench/RESULTS.md`` (``--quick``: a
small run of a few minutes, written to ``bench/out/RESULTS-quick.md``).
Timings are only valid on an idle machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
from pathlib import Path

import library
import measure
import numpy as np
import results

BEFORE = "36fe3e5"
#: Issue targets: after ÷ before cold, after cold ÷ floor, scratch cold ÷ floor, seconds, agreement, points.
TARGETS = {"speed-up": 2.0, "floor": 0.33, "scratch floor": 0.8, "one track": 2.0, "import": 4.0,
           "skip all": 1.0, "agreement": 0.99, "accuracy points": 1.0}
PROBLEMS: list = []

FLOOR_PROGRAM = """
import sys
from concurrent.futures import ProcessPoolExecutor

from genre_cnn_core.audio import load_excerpts

RATE, SECONDS, COUNT = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])


def decode(path):
    return sum(len(excerpt) for excerpt in load_excerpts(path, RATE, SECONDS, COUNT))


if __name__ == "__main__":
    paths = open(sys.argv[1]).read().splitlines()
    with ProcessPoolExecutor(2) as pool:
        print(sum(pool.map(decode, paths, chunksize=4)))
"""


# ------------------------------------------------------------ the plan


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, help="tracks of the library (default 120; quick 20)")
    parser.add_argument("--rounds", type=int, help="ABAB rounds of the floor, cold, warm and skip runs "
                                                   "(default 2; quick 1)")
    parser.add_argument("--repeats", type=int, help="one-track runs and album imports of each side (default 3; "
                                                    "quick 1)")
    parser.add_argument("--no-networks", action="store_true",
                        help="leave out the agreement and accuracy of the numpy and torch networks")
    return library.parse_run_args(parser, argv, {"tracks": (120, 20), "rounds": (2, 1), "repeats": (3, 1)})


@dataclasses.dataclass
class Side:
    """One version of the code, its library and everything measured with it."""

    name: str
    code: Path
    beets: library.Beets
    cold: list = dataclasses.field(default_factory=list)
    warm: list = dataclasses.field(default_factory=list)
    skip: list = dataclasses.field(default_factory=list)
    one: list = dataclasses.field(default_factory=list)
    imports: dict = dataclasses.field(default_factory=dict)  # "auto off"/"auto on" -> [Measured]
    cache: tuple = (0, 0)  # entries and bytes after the first cold run
    torch: dict = dataclasses.field(default_factory=dict)  # run -> imported torch (True/False/None)


def check_counts(result: measure.Measured, label: str, predicted: int, skipped: int = 0) -> None:
    """Note a problem when a run did not predict and skip what it should have."""
    problem = library.unexpected(result, predicted, skipped)
    if problem:
        PROBLEMS.append(f"{label}: {problem}")


# ------------------------------------------------------------ the runs


def measure_floor(paths: list, folder: Path) -> measure.Measured:
    """The decoding floor: a fresh program of 2 processes decoding the default excerpts of every track."""
    from genre_cnn_core.features import FeatureSettings

    settings = FeatureSettings()
    listing = folder / "floor-paths.txt"
    listing.write_text("\n".join(paths))
    result = measure.run([sys.executable, "-c", FLOOR_PROGRAM, listing, settings.sample_rate,
                          settings.excerpt_seconds, settings.n_excerpts],
                         env={**os.environ, "PYTHONPATH": str(results.REPO)})
    if result.returncode:
        raise RuntimeError(f"the decoding floor failed:\n{result.stderr[-3000:]}")
    return result


def predict_round(side: Side, tracks: int) -> None:
    """Cold, warm and skip-all runs over the whole library."""
    beets = side.beets
    beets.clear_cache()
    measure.log(f"{side.name}: beet cnngenre -f, cold cache")
    side.cold.append(beets.run("cnngenre", "-f"))
    check_counts(side.cold[-1], f"{side.name} cold", tracks)
    if len(side.cold) == 1:
        side.cache = beets.cache_usage()
        side.torch["cold run"] = beets.imported_torch(side.cold[-1])
    measure.log(f"{side.name}: beet cnngenre -f, warm cache")
    side.warm.append(beets.run("cnngenre", "-f"))
    check_counts(side.warm[-1], f"{side.name} warm", tracks)
    measure.log(f"{side.name}: beet cnngenre, every item already tagged")
    side.skip.append(beets.run("cnngenre"))
    check_counts(side.skip[-1], f"{side.name} skip-all", 0, tracks)
    side.torch.setdefault("skip-all run", beets.imported_torch(side.skip[-1]))


def one_track(side: Side, title: str) -> None:
    side.beets.clear_cache()
    measure.log(f"{side.name}: beet cnngenre -f title:{title}, cold cache")
    side.one.append(side.beets.run("cnngenre", "-f", f"title:{title}"))
    check_counts(side.one[-1], f"{side.name} one track", 1)
    side.torch.setdefault("one-track run", side.beets.imported_torch(side.one[-1]))


def import_album(side: Side, album: Path, tracks: int, auto: bool, home: Path) -> None:
    """``beet import -A -q`` of one album into a fresh library with an empty cache; checks it was tagged."""
    mode = "auto on" if auto else "auto off"
    beets = library.Beets(home, side.code, side.beets.probe, auto=auto)
    measure.log(f"{side.name}: beet import -A -q of one album, {mode}")
    result = beets.import_folder(album, tracks)
    side.imports.setdefault(mode, []).append(result)
    tagged = [value for value in beets.run("ls", "-f", "$cnn_genre").stdout.split() if value.strip()]
    if len(tagged) != (tracks if auto else 0):
        PROBLEMS.append(f"{side.name} import, {mode}: {len(tagged)} of {tracks} items tagged")
    if auto:
        side.torch.setdefault("import, auto on", beets.imported_torch(result))


@dataclasses.dataclass
class Scratch:
    """The scratch backbone's cold and warm runs (after only)."""

    train: measure.Measured | None = None
    cold: measure.Measured | None = None
    warm: measure.Measured | None = None


def measure_scratch(side: Side, tracks: int) -> Scratch:
    """Train a scratch model for one epoch on the library (its speed, not its accuracy, matters
    here), then predict with it from an empty and from a full cache."""
    beets, model = side.beets, side.beets.home / "scratch.pt"
    scratch = Scratch()
    beets.clear_cache()
    measure.log("after: beet cnngenre -t -b scratch, one epoch")
    # -f: one epoch makes a model the usability check calls unusable, which -t saves only when forced.
    scratch.train = beets.run("cnngenre", "-t", "-f", "-b", "scratch", "-e", "1", "--minutes", "0.5", "-m", "2",
                              "--model", model, check=False)
    if scratch.train.returncode:
        PROBLEMS.append(f"scratch training failed, no scratch figures: {scratch.train.stdout[-300:]} "
                        f"{scratch.train.stderr[-300:]}")
        return scratch
    beets.clear_cache()
    measure.log("after: beet cnngenre -f with the scratch model, cold cache")
    scratch.cold = beets.run("cnngenre", "-f", "--model", model)
    check_counts(scratch.cold, "scratch cold", tracks)
    measure.log("after: beet cnngenre -f with the scratch model, warm cache")
    scratch.warm = beets.run("cnngenre", "-f", "--model", model)
    check_counts(scratch.warm, "scratch warm", tracks)
    return scratch


# -------------------------------------------------- predictions unchanged


def check_networks_script() -> str:
    """The output of ``scripts/check_musicnn_numpy.py`` on the shared data, quoted as a cross-check."""
    measure.log("scripts/check_musicnn_numpy.py: numpy vs torch musicnn on the shared data")
    script = results.REPO / "scripts" / "check_musicnn_numpy.py"
    result = measure.run([sys.executable, script, "--data", library.DATA],
                         env={**os.environ, "PYTHONPATH": str(results.REPO)})
    if result.returncode:
        PROBLEMS.append(f"check_musicnn_numpy.py failed: {result.stderr[-500:]}")
    return result.stdout + (result.stderr[-1000:] if result.returncode else "")


def embeddings_both_ways(paths: list) -> tuple[np.ndarray, np.ndarray]:
    """Per-track embeddings of the float32 torch port (round 1's network) and of the numpy network,
    each rounded to float16 as its pipeline caches it."""
    import torch

    from genre_cnn_core import get_backbone, musicnn, musicnn_numpy
    from genre_cnn_core.features import fixed_frames, track_log_mels

    settings = get_backbone("musicnn").default_settings
    reference, numpy_network = musicnn.load_pretrained(), musicnn_numpy.load_pretrained()
    by_torch, by_numpy = [], []
    for path in paths:
        patches = np.stack([fixed_frames(s, musicnn_numpy.PATCH_FRAMES).T for s in track_log_mels(path, settings)])
        with torch.inference_mode():
            out = reference(torch.from_numpy(patches))
        by_torch.append(torch.cat([out.mean_pool, out.max_pool, torch.sigmoid(out.logits)], dim=1).numpy().mean(0))
        by_numpy.append(numpy_network.embed(patches).mean(0))
    return np.stack(by_torch).astype(np.float16), np.stack(by_numpy).astype(np.float16)


def first_of_each_genre(rows: list, count: int | None) -> list:
    """The first ``count`` rows of each genre (all rows when ``count`` is None)."""
    if count is None:
        return rows
    kept, seen = [], {}
    for row in rows:
        seen[row["genre"]] = seen.get(row["genre"], 0) + 1
        if seen[row["genre"]] <= count:
            kept.append(row)
    return kept


def compare_networks(per_genre: int | None = None) -> dict:
    """The numpy network against the float32 torch port on gtzan-dev and jamendo.

    Returns the top-1 agreement of the shipped default model on either
    network's embeddings (all tracks), and the primary-genre accuracy of
    the default recipe's head trained out of fold on gtzan-dev (5
    artist-grouped folds, as the default model is trained) on each.
    ``per_genre`` keeps only that many tracks of each genre (a quick check
    of the code, not a figure).
    """
    from genre_cnn_core import DEFAULT_MODEL, GenreModel, TrainConfig
    from genre_cnn_core.backbones.musicnn import EMBEDDING_SIZE
    from genre_cnn_core.linear_head import train_linear_head

    gtzan, jamendo = (first_of_each_genre(library.read_labels(name), per_genre) for name in ("gtzan-dev", "jamendo"))
    measure.log(f"embedding {len(gtzan) + len(jamendo)} tracks of gtzan-dev and jamendo with both networks")
    by_torch, by_numpy = embeddings_both_ways([library.DATA / row["path"] for row in gtzan + jamendo])
    model = GenreModel.load(DEFAULT_MODEL)
    top = {name: model.predict_proba(list(x)).argmax(axis=1) for name, x in (("torch", by_torch),
                                                                            ("numpy", by_numpy))}
    out = {"tracks": len(by_torch), "agreement": float(np.mean(top["torch"] == top["numpy"])),
           "gtzan": len(gtzan)}
    genres = sorted({row["genre"] for row in gtzan})
    strata = np.array([genres.index(row["genre"]) for row in gtzan])
    targets = np.eye(len(genres), dtype=bool)[strata]
    groups = [row["artist_group"] for row in gtzan]
    config = TrainConfig()
    heldout = {}
    for name, x in (("torch", by_torch), ("numpy", by_numpy)):
        found = train_linear_head(x[:len(gtzan)].astype(np.float32), targets, strata, groups, config.folds,
                                  EMBEDDING_SIZE - config.head_tags, config.seed)
        heldout[name] = np.full(len(gtzan), -1)
        heldout[name][found.heldout] = found.heldout_probabilities.argmax(axis=1)
        out[f"accuracy {name}"] = float(np.mean(heldout[name] == strata))
    out["heldout agreement"] = float(np.mean(heldout["torch"] == heldout["numpy"]))
    return out


# ------------------------------------------------------------ the report


def _yes_no(value) -> str:
    return {True: "yes", False: "no", None: "not recorded"}[value]


def _met(value: float | None, bound: float, at_least: bool = True) -> str:
    if value is None:
        return "—"
    return "**met**" if (value >= bound if at_least else value <= bound) else "**not met**"


def _load(runs) -> str:
    runs = [run for run in runs if run is not None]
    return f"{max(run.other_cores for run in runs):.2f}" if runs else ""


def figures_table(sides: dict, floors: list, tracks: int, scratch: Scratch, networks: dict) -> str:
    """The before/after table: one row per figure, with the target and whether it is met."""
    before, after = sides["before"], sides["after"]
    floor = statistics.median(run.rate(tracks) for run in floors)

    def rate(runs):
        return statistics.median(run.rate(tracks) for run in runs)

    def added(side):
        return measure.median_wall(side.imports["auto on"]) - measure.median_wall(side.imports["auto off"])

    cold = {name: rate(side.cold) for name, side in sides.items()}
    warm = {name: rate(side.warm) for name, side in sides.items()}
    one = {name: measure.median_wall(side.one) for name, side in sides.items()}
    skip = {name: measure.median_wall(side.skip) for name, side in sides.items()}
    first_album = {name: added(side) for name, side in sides.items()}
    cpu = {name: statistics.median(run.cpu for run in side.cold) / tracks for name, side in sides.items()}
    peak = {name: max(run.peak_rss for run in side.cold + side.warm + side.one) / 2**30
            for name, side in sides.items()}
    cache = {name: side.cache[1] / max(1, side.cache[0]) / 1024 for name, side in sides.items()}
    torch_used = {name: any(side.torch.get(run) for run in ("cold run", "one-track run", "skip-all run",
                                                            "import, auto on")) for name, side in sides.items()}
    speedup = cold["after"] / cold["before"]
    rows = [
        ["decoding floor: 2 processes, 3 × 10 s excerpts per track (one program)", f"{floor:.1f} tracks/s",
         f"{floor:.1f} tracks/s", "", "", "", _load(floors)],
        ["default backbone, cold cache", f"{cold['before']:.2f} tracks/s", f"{cold['after']:.2f} tracks/s",
         f"{speedup:.2f} ×", f"≥ {TARGETS['speed-up']:g} ×", _met(speedup, TARGETS["speed-up"]),
         _load(before.cold + after.cold)],
        ["default backbone cold ÷ floor", f"{cold['before'] / floor:.2f} ×", f"{cold['after'] / floor:.2f} ×",
         "", f"≥ {TARGETS['floor']:g} ×", _met(cold["after"] / floor, TARGETS["floor"]), ""],
        ["default backbone, warm cache", f"{warm['before']:.1f} tracks/s", f"{warm['after']:.1f} tracks/s",
         f"{warm['after'] / warm['before']:.2f} ×", "", "", _load(before.warm + after.warm)],
        ["one-track run, cold cache (`beet cnngenre -f title:…`)", f"{one['before']:.2f} s", f"{one['after']:.2f} s",
         "", f"≤ {TARGETS['one track']:g} s", _met(one["after"], TARGETS["one track"], False),
         _load(before.one + after.one)],
        ["import of one album: added by auto on (10 tracks)", f"{first_album['before']:+.2f} s",
         f"{first_album['after']:+.2f} s", "", f"≤ {TARGETS['import']:g} s",
         _met(first_album["after"], TARGETS["import"], False),
         _load([run for side in sides.values() for runs in side.imports.values() for run in runs])],
        ["every item skipped (`beet cnngenre`)", f"{skip['before']:.2f} s", f"{skip['after']:.2f} s", "",
         f"≤ {TARGETS['skip all']:g} s", _met(skip["after"], TARGETS["skip all"], False),
         _load(before.skip + after.skip)],
        ["CPU time per track, cold (beet and workers)", f"{cpu['before']:.3f} s", f"{cpu['after']:.3f} s",
         f"{cpu['after'] / cpu['before']:.2f} ×", "", "", ""],
        ["peak memory, beet + workers (sum of RSS)", f"{peak['before']:.2f} GiB", f"{peak['after']:.2f} GiB",
         "", "", "", ""],
        ["feature cache per track", f"{cache['before']:.2f} KiB", f"{cache['after']:.2f} KiB", "", "", "", ""],
        ["`beet` process imported torch (default backbone)", _yes_no(torch_used["before"]),
         _yes_no(torch_used["after"]), "", "no", _met(0 if torch_used["after"] else 1, 1), ""],
    ]
    if scratch.cold is not None:
        scratch_floor = scratch.cold.rate(tracks) / floor
        rows += [
            ["scratch backbone, cold cache", "", f"{scratch.cold.rate(tracks):.2f} tracks/s", "", "", "",
             _load([scratch.cold])],
            ["scratch backbone cold ÷ floor", "", f"{scratch_floor:.2f} ×", "", f"≥ {TARGETS['scratch floor']:g} ×",
             _met(scratch_floor, TARGETS["scratch floor"]), ""],
            ["scratch backbone, warm cache", "", f"{scratch.warm.rate(tracks):.1f} tracks/s", "", "", "",
             _load([scratch.warm])],
        ]
    if networks:
        points = 100 * (networks["accuracy numpy"] - networks["accuracy torch"])
        rows += [
            [f"top-1 agreement with the float32 torch port, default model, gtzan-dev + jamendo "
             f"({networks['tracks']} tracks)", "(reference)", f"{100 * networks['agreement']:.1f} %", "",
             f"≥ {100 * TARGETS['agreement']:g} %", _met(networks["agreement"], TARGETS["agreement"]), ""],
            [f"accuracy, out of fold, default recipe, gtzan-dev ({networks['gtzan']} clips)",
             f"{100 * networks['accuracy torch']:.1f} %", f"{100 * networks['accuracy numpy']:.1f} %",
             f"{points:+.1f} points", f"within {TARGETS['accuracy points']:g} point",
             _met(-abs(points), -TARGETS["accuracy points"]), ""],
        ]
    return results.table(["figure", f"before ({BEFORE})", "after", "after ÷ before", "target", "status",
                          "other load"], rows)


def runs_table(sides: dict, floors: list, tracks: int) -> str:
    """Every run's wall time, in the order they ran, so drift between rounds shows."""
    rows = [["floor", ", ".join(f"{run.wall:.2f}" for run in floors), ", ".join(f"{run.cpu:.1f}" for run in floors)]]
    for name, side in sides.items():
        for label, runs in (("cold", side.cold), ("warm", side.warm), ("skip-all", side.skip),
                            ("one track", side.one), *((f"import, {mode}", imports)
                                                       for mode, imports in side.imports.items())):
            rows.append([f"{name}: {label}", ", ".join(f"{run.wall:.2f}" for run in runs),
                         ", ".join(f"{run.cpu:.1f}" for run in runs)])
    return results.table(["run", "wall (s), in run order", "CPU (s)"], rows)


def write_report(args, sides: dict, floors: list, rows: list, scratch: Scratch, networks: dict,
                 script_output: str | None, busy: float) -> str:
    tracks = len(rows)
    command = results.command_line("speed.py")
    code = {name: library.code_in_use(side.code) for name, side in sides.items()}
    agreement = ("" if not networks else
                 f" The two heads' out-of-fold top-1 predictions agree on {100 * networks['heldout agreement']:.1f} %"
                 " of the clips.")
    body = f"""{results.context(command)}- {measure.load_summary()}; cores busy before the run: {busy:.2f}
- library: {library.describe(rows)}; imported as-is (`beet import -A -q`) into a fresh library per side
- before: commit {BEFORE} ({code['before']}), with its own default model and feature cache;
  after: this checkout ({code['after']})
- every run: `jobs: 2`, `device: cpu`, `import.write: no`; the whole `beet` command is timed, start-up included;
  {args.rounds} round(s) of the floor, then before and after (cold, warm, skip-all) in turn; one-track runs and
  album imports alternated, {args.repeats} of each; figures are medians

### Before and after

{figures_table(sides, floors, tracks, scratch, networks)}

"other load": most cores that processes outside the measured commands kept busy while any of them ran
(from /proc/stat); near 1 or above, the figure is pessimistic. The status is that of "after".

### Every run

{runs_table(sides, floors, tracks)}

### How the figures are measured

- Decoding floor: a fresh Python process with a pool of 2 processes that call
  `genre_cnn_core.audio.load_excerpts(path, 16000, 10.0, 3)` on every track (open, seek, decode, resample:
  more audio than the default backbone's 4 × 3 s), 4 tracks a task; tracks ÷ wall time of the whole program.
- Cold: `beet cnngenre -f` after the feature cache folder is removed; warm: the same command again;
  skip-all: `beet cnngenre` (no `-f`) after them, every item already tagged by the model.
- One-track run: `beet cnngenre -f title:<the first track>` with an empty cache.
- Import of one album: `beet import -A -q <album folder>` into a fresh library (empty cache), `cnngenre.auto`
  off and on; the figure is the difference of the medians.
- CPU time: user + system of `beet` and every descendant. Peak memory: the largest sum of RSS of `beet` and
  its workers at one 100 ms poll (psutil). Cache per track: bytes in the cache folder after the first cold
  run ÷ its files.
- torch: a `sitecustomize` on `PYTHONPATH` records each process's `sys.modules` at exit; "yes" when the
  `beet` process itself (not a worker) had imported `torch` in its cold, one-track, skip-all or import run.
- Scratch backbone: a model trained by `beet cnngenre -t -b scratch -e 1 -m 2` on the library (its accuracy
  is beside the point here), then cold and warm `beet cnngenre -f --model …`.
- Networks: every clip of gtzan-dev and jamendo embedded (4 × 3 s patches) by round 1's float32 torch port
  and by the numpy network, each rounded to float16 as its pipeline caches it. Agreement: the shipped
  default model's top-1 genre on either. Accuracy: the default recipe's head
  (`linear_head.train_linear_head`: 5 artist-grouped folds, on musicnn's tag probabilities) trained on each
  network's gtzan-dev embeddings; primary-genre accuracy of its out-of-fold predictions, as `bench/accuracy.py`
  measures the default backbone.{agreement} `scripts/check_musicnn_numpy.py` checks the same independently
  (its output below, full runs only).
"""
    if script_output:
        body += f"\n### `scripts/check_musicnn_numpy.py`\n\n```\n{script_output.strip()}\n```\n"
    warning = measure.quiet_enough(busy)
    return results.write_section("## Speed", body, args.out, PROBLEMS + ([warning] if warning else []))


# ------------------------------------------------------------------ main


def main(argv=None) -> int:
    results.use_this_checkout()
    args = parse_args(argv)
    busy = measure.busy_cores()
    measure.log(f"{args.tracks} tracks, {args.rounds} round(s), {args.repeats} repeats; "
                f"cores busy now: {busy:.2f}")
    run_root = args.root / "run" / "speed"
    rows = library.place(library.full_length_library(args.tracks, args.root), run_root / "music", "link")
    probe = run_root / "probe"
    measure.module_probe(probe)
    sides = {}
    for name, code in (("before", library.checkout(BEFORE, args.root)), ("after", results.REPO)):
        library.code_in_use(code)
        sides[name] = Side(name, code, library.Beets(run_root / name, code, probe))
        measure.log(f"{name}: importing the library")
        sides[name].beets.import_folder(run_root / "music", len(rows))

    floors = []
    for number in range(args.rounds):
        measure.log(f"round {number + 1}: decoding floor")
        floors.append(measure_floor([row["path"] for row in rows], run_root))
        for side in sides.values():
            predict_round(side, len(rows))
    album = Path(rows[0]["path"]).parent
    album_tracks = sum(1 for row in rows if Path(row["path"]).parent == album)
    for number in range(args.repeats):
        for side in sides.values():
            one_track(side, rows[0]["title"])
        for side in sides.values():
            for auto in (False, True):
                import_album(side, album, album_tracks, auto, run_root / "import" / f"{side.name}-{auto}-{number}")
    scratch = measure_scratch(sides["after"], len(rows))
    networks = {} if args.no_networks else compare_networks(3 if args.quick else None)
    script_output = None if args.no_networks or args.quick else check_networks_script()
    print(write_report(args, sides, floors, rows, scratch, networks, script_output, busy))
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
