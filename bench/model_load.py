#!/usr/bin/env python
"""What loading a model costs: the ``## Model load`` section of ``bench/RESULTS.md``.

Usage (from the repository root)::

    python bench/model_load.py [--repeats 20] [--before CHECKOUT]

For this checkout, and for another one given with ``--before`` (e.g. the commit before the
safetensors files, extracted with ``git archive 113d104 | tar -x -C /tmp/before``), each figure is
measured in fresh processes that import that checkout's ``genre_cnn_core``:

- a cold start: importing ``genre_cnn_core`` and loading the shipped default model, in a new
  process (what every ``beet cnngenre`` run pays before its first track), median of ``--repeats``
  processes;
- loading the default model again in a warm process (reading and checking the file), and
  loading the musicnn weights into the numpy network (``musicnn_numpy.load_pretrained``: reading,
  checking and pruning), median of ``--repeats`` loads;
- whether torch was imported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import results

ROOT = Path(__file__).resolve().parent.parent

#: Runs in a child process whose sys.path starts with the checkout measured; prints one JSON object.
CHILD = """
import json, statistics, sys, time
started = time.perf_counter()
from genre_cnn_core import DEFAULT_MODEL, GenreModel
GenreModel.load(DEFAULT_MODEL)
cold = time.perf_counter() - started
repeats = int(sys.argv[1])
if repeats:
    from genre_cnn_core import musicnn_numpy

    def median_ms(load):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            load()
            times.append(time.perf_counter() - t)
        return 1000 * statistics.median(times)

    warm, musicnn = median_ms(lambda: GenreModel.load(DEFAULT_MODEL)), median_ms(musicnn_numpy.load_pretrained)
else:
    warm = musicnn = None
print(json.dumps({"cold_ms": 1000 * cold, "warm_ms": warm, "musicnn_ms": musicnn, "file": DEFAULT_MODEL,
                  "torch": "torch" in sys.modules}))
"""


def measure(checkout: Path, repeats: int) -> dict:
    """The figures of one checkout, each from fresh processes."""
    environment = dict(os.environ, PYTHONPATH=str(checkout))

    def child(n):
        out = subprocess.run([sys.executable, "-c", CHILD, str(n)], env=environment, cwd=checkout,
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    colds = [child(0)["cold_ms"] for _ in range(repeats)]
    figures = child(repeats)
    figures["cold_ms"] = statistics.median(colds)
    return figures


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="processes and loads per figure (default 20)")
    parser.add_argument("--before", type=Path, help="another checkout to measure the same way")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    checkouts = ([("before: " + str(args.before), args.before.resolve())] if args.before else []) + [
        ("this checkout", ROOT)]
    rows = []
    for name, checkout in checkouts:
        figures = measure(checkout, args.repeats)
        rows.append([name, Path(figures["file"]).name, f"{os.path.getsize(figures['file']):,}",
                     f"{figures['cold_ms']:.0f} ms", f"{figures['warm_ms']:.1f} ms", f"{figures['musicnn_ms']:.1f} ms",
                     "yes" if figures["torch"] else "no"])
        print(rows[-1])
    body = (results.context(results.command_line("model_load.py", argv), started)
            + f"Medians of {args.repeats}. \"cold\": a new process importing `genre_cnn_core` and loading the shipped "
            "default model (what each `beet cnngenre` run pays once); \"warm\": loading it again in that process "
            "(read, check every part, hash); \"musicnn\": `musicnn_numpy.load_pretrained()` (read and check the "
            "weights file, prune the dead filters, build the matrices); \"torch\": whether torch was imported. "
            "The machine was shared with other work: compare rows of one run, not runs.\n\n"
            + results.table(["code", "default model file", "bytes", "cold", "warm", "musicnn", "torch"], rows) + "\n")
    results.write_section("## Model load", body)
    print(f"wrote the ## Model load section of {results.RESULTS}")


if __name__ == "__main__":
    main()
