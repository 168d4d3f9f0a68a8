#!/usr/bin/env python
"""What tagging on import costs, and throughput on a Dask cluster: the ``## Import and Dask`` section of ``bench/RESULTS.md``.

Usage (from the repository root)::

    /work/venv/bin/python bench/scaleout.py [--tracks 60] [--repeat 3]

It reuses the full-length library that ``bench/speed.py`` builds (and builds it
when missing), then measures in one run:

1. **Import overhead.** ``beet import -A -q`` of one 10-track album (3-5 min
   tracks), and of ``--albums`` albums in one session, into a fresh library
   with ``cnngenre.auto`` off, on, and on with ``-w`` (write tags to the
   files), alternated ``--repeat`` times with an empty feature cache; the
   overhead is the difference of the medians. As a yardstick, decoding the
   album's excerpts alone in one process.
2. **Dask.** ``beet cnngenre -f`` over ``--tracks`` tracks with ``backend:
   dask`` on a ``distributed.LocalCluster`` of 1 and then 2 worker processes
   (one thread each), cold feature cache, workers warmed by a one-track run
   first (a cluster outlives one command); and with the default loky backend
   and 2 workers for reference.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402  (the library builder and process measurement of bench/speed.py)



def import_albums(root: Path, albums: list, auto: bool, write: bool) -> speed.Measured:
    """Import fresh copies of ``albums`` as-is into a fresh library; checks fields were (not) set."""
    home = root / "import"
    beets = speed.Beets(home).configure(auto=auto)
    copies = []
    for album in albums:
        copies.append(home / "albums" / album.name)
        shutil.copytree(album, copies[-1])
    result = beets.run("import", "-A", "-q", *(["-w"] if write else []), *copies)
    tagged = beets.run("ls", "-f", "$cnn_genre").stdout.split()
    expected = sum(len(list(album.iterdir())) for album in albums) if auto else 0
    if len(tagged) != expected:
        speed.PROBLEMS.append(f"import of {len(albums)} albums, auto={auto} write={write}: "
                              f"{len(tagged)} of {expected} items tagged")
    return result


#: Import modes: (cnngenre.auto, beet import -w).
MODES = {"auto off": (False, False), "auto on": (True, False), "auto on, -w (write tags)": (True, True)}


def measure_import(root: Path, albums: list, repeat: int) -> dict:
    """``{(albums, mode): [Measured, ...]}`` for the first album alone and for all of ``albums``."""
    runs = {}
    for round_ in range(repeat):
        for count in (1, len(albums)):
            for name, (auto, write) in MODES.items():
                speed.log(f"import of {count} album(s), {name}, round {round_ + 1}")
                runs.setdefault((count, name), []).append(import_albums(root, albums[:count], auto, write))
    return runs


def decode_album(paths: list) -> float:
    """Seconds to decode the excerpts the default model reads, one process, one thread."""
    from genre_cnn_core import DEFAULT_MODEL
    from genre_cnn_core.audio import load_excerpts

    settings = speed.model_settings(DEFAULT_MODEL, "musicnn")
    load_excerpts(paths[0], settings.sample_rate, settings.excerpt_seconds, settings.n_excerpts)  # imports
    start = time.perf_counter()
    for path in paths:
        load_excerpts(path, settings.sample_rate, settings.excerpt_seconds, settings.n_excerpts)
    return time.perf_counter() - start


def measure_dask(root: Path, rows: list, tracks: int) -> dict:
    """``beet cnngenre -f`` on ``tracks`` tracks: loky 2 workers, Dask 1 and 2 workers."""
    from distributed import LocalCluster

    home = root / "dask"
    beets = speed.Beets(home)
    folder = home / "music"
    folder.mkdir()
    for row in rows[:tracks]:  # links: the same files, a library of just these tracks
        os.symlink(row["path"], folder / Path(row["path"]).name)
    speed.import_library(beets, folder, tracks)
    warm_title = f"title:{rows[0]['title']}"
    results = {}

    def cold_run(label, extra_env=None):
        beets.clear_cache()
        speed.log(f"beet cnngenre -f over {tracks} tracks, {label}, cold cache")
        result = beets.run("cnngenre", "-f", env=extra_env)
        done, failed = speed.predicted_counts(result)
        if done != tracks or failed:
            speed.PROBLEMS.append(f"{label}: predicted {done} of {tracks}, {failed} failed")
        results[label] = result

    cold_run("loky, 2 workers")
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster:
            beets.configure(backend="dask", dask_scheduler=cluster.scheduler_address)
            speed.log(f"warming {workers} Dask worker(s) with a one-track run")
            beets.clear_cache()
            beets.run("cnngenre", "-f", warm_title)
            cold_run(f"dask, {workers} worker{'s' if workers > 1 else ''}")
    return results


def row(label: str, runs: list, baseline: float | None = None) -> list:
    walls = [r.wall for r in runs]
    median = statistics.median(walls)
    cells = [label, f"{median:.2f} s", ", ".join(f"{w:.2f}" for w in walls),
             f"{statistics.median(r.cpu for r in runs):.2f} s"]
    cells.append("—" if baseline is None else f"{median - baseline:+.2f} s")
    return cells


def write_report(context: dict, imports: dict, decode: float, dask: dict, tracks: int) -> str:
    counts = sorted({count for count, _ in imports})
    import_rows = []
    for count in counts:
        base = statistics.median(r.wall for r in imports[(count, "auto off")])
        import_rows += [row(f"{count} album{'s' if count > 1 else ''}, {name}", imports[(count, name)],
                            None if name == "auto off" else base) for name in MODES]
    overhead = {count: statistics.median(r.wall for r in imports[(count, "auto on")])
                - statistics.median(r.wall for r in imports[(count, "auto off")]) for count in counts}
    later = (overhead[counts[-1]] - overhead[counts[0]]) / (counts[-1] - counts[0]) if len(counts) > 1 else None
    loky = dask["loky, 2 workers"]
    dask_rows = [[label, f"{tracks / r.wall:.2f} tracks/s", f"{r.wall:.1f} s",
                  f"{(tracks / r.wall) / (tracks / dask['dask, 1 worker'].wall):.2f} ×"]
                 for label, r in dask.items()]
    loads = [load[0] for load in speed.LOADS]
    text = f"""# cnngenre: import overhead and Dask throughput

Written by `bench/scaleout.py`; every number below comes from the run it describes.

- date: {context['date']}
- machine: {speed.machine()}; Python {platform.python_version()}, torch {context['torch']}
- load average (1 min) at start {loads[0]:.2f}, at end {loads[-1]:.2f}, highest seen {max(loads):.2f}
- command: `{context['command']}`
- code: {context['git']}
- run wall time: {context['wall'] / 60:.1f} min

## Tagging on import: one 10-track album

First album: {context['album']} ({context['album_minutes']:.1f} min of audio, {context['album_formats']});
the {counts[-1]}-album runs add the next albums of the library (10 tracks each).
`beet import -A -q` into a fresh library, empty feature cache, default model, `jobs: 2`;
{context['repeat']} rounds, the modes alternated within each round.

{speed.table(["import", "median wall", "each run (s)", "median CPU", "overhead vs auto off"], import_rows)}

Overhead of tagging on import (median wall, auto on − auto off): {overhead[counts[0]]:.2f} s for the
first album (start-up: torch, the model, 2 workers that import torch and load musicnn, then the
album's tracks){'' if later is None else f"; {later:.2f} s for each further album of the same import session (model and workers stay loaded)"}.

Yardstick: decoding the excerpts the default model reads (4 × 3 s per track) from the album's
10 tracks in one process takes {decode:.2f} s ({decode / 10 * 1000:.0f} ms per track).

## Dask: `beet cnngenre -f` over {tracks} tracks, cold feature cache

`backend: dask` with `dask_scheduler` set to a `distributed.LocalCluster` (worker processes, one
thread each) started by the benchmark; workers warmed by a one-track run before each measured run
(they import torch and load musicnn once, as on a long-lived cluster). The loky row is the default
backend with `jobs: 2`, for reference. Wall time includes the `beet` process start-up.

{speed.table(["backend", "throughput", "wall", "vs 1 Dask worker"], dask_rows)}

On this 2-core machine the Dask scheduler, its workers and the `beet` client share the two
cores, so 2 Dask workers cannot double 1; the figure shows what a second worker process adds
here, not how a cluster of separate machines scales.
{speed._problems()}"""
    speed.save_report(speed.RESULTS, text, "## Import and Dask")
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=60, help="tracks of the Dask runs (default 60)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the import runs (default 3)")
    parser.add_argument("--albums", type=int, default=3, help="albums of the longer import (default 3)")
    parser.add_argument("--root", type=Path, default=speed.DEFAULT_ROOT)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    import torch

    _, plan = speed.parse_args([])
    rows = speed.build_library(args.root, plan, speed.build_bases(args.root, plan))
    root = args.root / "run" / "scaleout"
    album_rows = [r for r in rows if Path(r["path"]).parent == Path(rows[0]["path"]).parent]
    album = Path(album_rows[0]["path"]).parent
    albums = sorted({Path(r["path"]).parent for r in rows})[:args.albums]
    state = speed.git_state()
    speed.log(f"album {album}: {len(album_rows)} tracks")
    imports = measure_import(root, albums, args.repeat)
    decode = decode_album([r["path"] for r in album_rows])
    dask = measure_dask(root, rows, args.tracks)
    formats = {}
    for r in album_rows:
        formats[r["format"]] = formats.get(r["format"], 0) + 1
    command = ["/work/venv/bin/python" if sys.executable.startswith("/work/venv") else sys.executable,
               "bench/scaleout.py", *(argv if argv is not None else sys.argv[1:])]
    context = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "torch": torch.__version__,
        "command": shlex.join(command), "git": state, "wall": time.perf_counter() - started,
        "album": album.name, "album_minutes": sum(r["seconds"] for r in album_rows) / 60,
        "album_formats": ", ".join(f"{c} {f.upper()}" for f, c in formats.items()), "repeat": args.repeat,
    }
    print(write_report(context, imports, decode, dask, args.tracks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
