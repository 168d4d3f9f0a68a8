#!/usr/bin/env python
"""What tagging on import costs, and feature extraction on a Dask cluster: the ``## Import and Dask``
section of ``bench/RESULTS.md``.

Usage (from the repository root)::

    python bench/imports.py [--albums 3] [--repeats 3] [--tracks 60] [--quick]

One run, this checkout only, 2 workers and the CPU:

1. Import: ``beet import -A -q`` of the first album (10 full-length tracks of
   ``bench/library.py``) and of the first ``--albums`` albums in one session,
   each into a fresh library with an empty feature cache, ``cnngenre.auto`` off
   and on, alternated ``--repeats`` times. What tagging adds is the difference
   of the medians: for the first album of a session, and for each further one.
2. Dask: ``beet cnngenre -f`` over ``--tracks`` tracks with an empty cache, with
   the default loky backend (2 workers) for reference, then with ``backend:
   dask`` on a ``distributed.LocalCluster`` of 1 and of 2 worker processes (one
   thread each), warmed by a one-track run first (a cluster outlives one command).

It prints the section and writes it to ``bench/RESULTS.md`` (``--quick``: a
small run of a few minutes, written to ``bench/out/RESULTS-quick.md``).
Timings are only valid on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import library
import measure
import results

PROBLEMS: list = []
MODES = {"auto off": False, "auto on": True}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--albums", type=int, help="albums of the longer import session (default 3; quick 2)")
    parser.add_argument("--repeats", type=int, help="rounds of the import runs (default 3; quick 1)")
    parser.add_argument("--tracks", type=int, help="tracks of the Dask runs (default 60; quick 12)")
    return library.parse_run_args(parser, argv, {"albums": (3, 2), "repeats": (3, 1), "tracks": (60, 12)})


# ---------------------------------------------------------------- import


def import_session(albums: list, tracks: int, auto: bool, home: Path) -> measure.Measured:
    """``beet import -A -q`` of ``albums`` in one session into a fresh library; checks what got tagged."""
    beets = library.Beets(home, auto=auto)
    result = beets.import_folder(albums, tracks)
    tagged = [value for value in beets.run("ls", "-f", "$cnn_genre").stdout.split() if value.strip()]
    if len(tagged) != (tracks if auto else 0):
        PROBLEMS.append(f"import of {len(albums)} albums, auto {'on' if auto else 'off'}: "
                        f"{len(tagged)} of {tracks} items tagged")
    return result


def measure_imports(album_folders: list, album_tracks: list, repeats: int, root: Path) -> dict:
    """``{(albums, mode): [Measured, ...]}`` for the first album alone and for all of ``album_folders``."""
    runs: dict = {}
    for number in range(repeats):
        for count in sorted({1, len(album_folders)}):
            for mode, auto in MODES.items():
                measure.log(f"round {number + 1}: import of {count} album(s), {mode}")
                home = root / "import" / f"{count}-{mode.replace(' ', '-')}-{number}"
                runs.setdefault((count, mode), []).append(
                    import_session(album_folders[:count], sum(album_tracks[:count]), auto, home))
    return runs


# ------------------------------------------------------------------ Dask


def measure_dask(rows: list, root: Path) -> dict:
    """``beet cnngenre -f`` over ``rows`` with an empty cache: loky with 2 workers, Dask with 1 and 2."""
    from distributed import LocalCluster

    os.environ["PYTHONPATH"] = str(results.REPO)  # Dask's worker processes import this checkout too
    library.place(rows, root / "dask-music", "link")
    beets = library.Beets(root / "dask")
    beets.import_folder(root / "dask-music", len(rows))
    runs = {}

    def cold(label: str) -> None:
        beets.clear_cache()
        measure.log(f"beet cnngenre -f over {len(rows)} tracks, {label}, cold cache")
        runs[label] = beets.run("cnngenre", "-f")
        problem = library.unexpected(runs[label], len(rows))
        if problem:
            PROBLEMS.append(f"{label}: {problem}")

    cold("loky, 2 workers")
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            beets.configure(backend="dask", dask_scheduler=cluster.scheduler_address)
            measure.log(f"warming {workers} Dask worker(s) with a one-track run")
            beets.clear_cache()
            beets.run("cnngenre", "-f", f"title:{rows[0]['title']}")
            cold(f"dask, {workers} worker{'s' if workers > 1 else ''}")
        beets.configure(backend="loky", dask_scheduler="")
    return runs


# ---------------------------------------------------------------- report


def import_table(runs: dict) -> tuple[str, dict]:
    rows, added = [], {}
    for count in sorted({count for count, _ in runs}):
        base = measure.median_wall(runs[(count, "auto off")])
        for mode in MODES:
            each = runs[(count, mode)]
            median = measure.median_wall(each)
            if mode == "auto on":
                added[count] = median - base
            rows.append([f"{count} album{'s' if count > 1 else ''}, {mode}", f"{median:.2f} s",
                         ", ".join(f"{run.wall:.2f}" for run in each),
                         f"{measure.median_run(each).cpu:.2f} s",
                         "—" if mode == "auto off" else f"{median - base:+.2f} s",
                         f"{max(run.other_cores for run in each):.2f}"])
    return results.table(["import", "median wall", "each run (s)", "CPU (median run)", "added by auto on",
                          "other load"], rows), added


def dask_table(runs: dict, tracks: int) -> str:
    one = runs["dask, 1 worker"].rate(tracks)
    rows = [[label, f"{run.rate(tracks):.2f} tracks/s", f"{run.wall:.1f} s", f"{run.rate(tracks) / one:.2f} ×",
             f"{run.other_cores:.2f}"] for label, run in runs.items()]
    return results.table(["backend", "throughput", "wall", "vs 1 Dask worker", "other load"], rows)


def write_report(args, imports: dict, album_rows: list, dask: dict, tracks: int, busy: float) -> str:
    command = results.command_line("imports.py")
    table, added = import_table(imports)
    counts = sorted(added)
    further = ((added[counts[-1]] - added[counts[0]]) / (counts[-1] - counts[0])) if len(counts) > 1 else None
    further_text = ("" if further is None else
                    f"; each further album of the same session adds {further:.2f} s (model and workers stay loaded)")
    body = f"""{results.context(command)}- {measure.load_summary()}; cores busy before the run: {busy:.2f}
- this checkout only; `jobs: 2`, `device: cpu`, default model; the whole `beet` command is timed

### Tagging on import

The first album: {library.describe(album_rows)}; the {counts[-1]}-album session adds the next albums
(10 tracks each). `beet import -A -q` into a fresh library with an empty feature cache, {args.repeats}
round(s), the modes alternated within each round.

{table}

Tagging on import adds {added[1]:.2f} s to the first album of a session (start-up: the model, 2 workers
that load the numpy musicnn, then the album's tracks){further_text}.

### Dask: `beet cnngenre -f` over {tracks} tracks, cold cache

`backend: dask` with `dask_scheduler` set to a `distributed.LocalCluster` (worker processes, one thread
each) that the benchmark starts; the workers are warmed by a one-track run before the measured run (they
load the network once, as on a long-lived cluster). The loky row is the default backend with `jobs: 2`.

{dask_table(dask, tracks)}

On one 2-core machine the scheduler, its workers and `beet` share the cores: the figure shows what a
second worker process adds here, not how a cluster of separate machines scales. The Dask workers are
not descendants of `beet`, so their work shows in "other load" of the Dask rows.
"""
    warning = measure.quiet_enough(busy)
    return results.write_section("## Import and Dask", body, args.out, PROBLEMS + ([warning] if warning else []))


def main(argv=None) -> int:
    results.use_this_checkout()
    args = parse_args(argv)
    busy = measure.busy_cores()
    measure.log(f"{args.albums} albums, {args.repeats} rounds, {args.tracks} Dask tracks; cores busy now: {busy:.2f}")
    run_root = args.root / "run" / "imports"
    needed = max(args.tracks, args.albums * library.TRACKS_PER_ALBUM)
    rows = library.place(library.full_length_library(needed, args.root), run_root / "music", "link")
    folders = sorted({Path(row["path"]).parent for row in rows})[:args.albums]
    tracks_of = [sum(1 for row in rows if Path(row["path"]).parent == folder) for folder in folders]
    imports = measure_imports(folders, tracks_of, args.repeats, run_root)
    dask = measure_dask(rows[:args.tracks], run_root)
    album_rows = [row for row in rows if Path(row["path"]).parent == folders[0]]
    print(write_report(args, imports, album_rows, dask, args.tracks, busy))
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
