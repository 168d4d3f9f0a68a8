#!/usr/bin/env python
"""A library of many items holding few recordings, before and after this round: the ``## Same audio
under many items`` section of ``bench/RESULTS.md``.

Usage (from the repository root)::

    python bench/repeats.py [--recordings 10] [--items 200] [--rounds 1] [--quick]

``--recordings`` full-length tracks (``bench/library.py``) are hard-linked
``--items / --recordings`` times each into album folders and imported into
two fresh beets libraries, one running the code of commit :data:`BEFORE`,
the other this checkout (2 workers, the CPU). Each round, before and after
in turn: ``beet cnngenre -f`` with an empty feature cache (cold), then
``beet cnngenre -f path:<one file>`` with an empty cache (a one-track run).
The whole ``beet`` command is timed, start-up included.
"""

from __future__ import annotations

import argparse
import statistics
import time

import library
import measure
import results

#: The code before this round's run configuration, executors and sharing of repeated audio.
BEFORE = "113d104"
HEADING = "## Same audio under many items"
PROBLEMS: list = []


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recordings", type=int, help="distinct recordings (default 10; quick 4)")
    parser.add_argument("--items", type=int, help="library items, hard links of them (default 200; quick 40)")
    parser.add_argument("--rounds", type=int, help="before/after rounds of each run (default 1)")
    return library.parse_run_args(parser, argv, {"recordings": (10, 4), "items": (200, 40), "rounds": (1, 1)})


def checked(beets: library.Beets, label: str, predicted: int, *args) -> measure.Measured:
    """``beet cnngenre -f ARGS`` with an empty cache; a problem is noted when it did not predict them all."""
    beets.clear_cache()
    measure.log(f"{label}: beet cnngenre -f {' '.join(args)}, cold cache")
    result = beets.run("cnngenre", "-f", *args)
    problem = library.unexpected(result, predicted)
    if problem:
        PROBLEMS.append(f"{label}: {problem}")
    return result


def main(argv=None) -> None:
    results.use_this_checkout()
    args = parse_args(argv)
    started = time.perf_counter()
    rows = library.full_length_library(args.recordings, args.root)
    copies = max(1, args.items // args.recordings)
    items = copies * args.recordings
    placed = library.place(rows, args.root / "repeats" / "music", "link", copies)
    code = {"before": library.checkout(BEFORE, args.root), "after": results.REPO}
    sides = {name: library.Beets(args.root / "repeats" / name, folder) for name, folder in code.items()}
    for name, beets in sides.items():
        measure.log(f"{name}: importing {items} items ({library.code_in_use(code[name])})")
        beets.import_folder(args.root / "repeats" / "music", items)
    one = f"path:{placed[0]['path']}"
    cold: dict = {name: [] for name in sides}
    single: dict = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, beets in sides.items():
            cold[name].append(checked(beets, f"{name} cold", items))
            single[name].append(checked(beets, f"{name} one track", 1, one))
    table = results.table(
        ["run (whole `beet` command)", "before", "after", "after ÷ before"],
        [[f"cold `beet cnngenre -f`, {items} items of {args.recordings} recordings",
          f"{measure.median_wall(cold['before']):.1f} s", f"{measure.median_wall(cold['after']):.1f} s",
          f"{measure.median_wall(cold['after']) / measure.median_wall(cold['before']):.2f}"],
         ["the same, tracks/s", f"{statistics.median(r.rate(items) for r in cold['before']):.2f}",
          f"{statistics.median(r.rate(items) for r in cold['after']):.2f}", ""],
         ["one-track run, cold cache (`beet cnngenre -f path:…`)", f"{measure.median_wall(single['before']):.2f} s",
          f"{measure.median_wall(single['after']):.2f} s",
          f"{measure.median_wall(single['after']) / measure.median_wall(single['before']):.2f}"]])
    body = (results.context(results.command_line("repeats.py", argv), started)
            + f"- library: {library.describe(rows)}, each hard-linked {copies} times into album folders "
              f"({items} items); 2 workers, `device: cpu`; before: commit {BEFORE}, after: this checkout\n"
            + f"- {measure.load_summary()}; the machine was shared with other work: compare the ratios\n\n"
            + table + "\n")
    print(results.write_section(HEADING, body, args.out, PROBLEMS))


if __name__ == "__main__":
    main()
