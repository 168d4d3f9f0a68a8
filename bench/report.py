#!/usr/bin/env python
"""How long ``beet cnngenre --report`` takes and how large its page is on large libraries: the ``## Report
page`` section of ``bench/RESULTS.md``.

Usage (from the repository root)::

    nice -n 10 python bench/report.py [--items 3000 20000] [--quick]

1. A base library: every audio file of the shared data imported as-is (``beet import -A -q``), a model
   trained on its genre tags (``beet cnngenre -t``), every item predicted (``beet cnngenre``) and judged
   (``--suspects``): this fills the feature cache and the fields the report reads. Built once under
   ``--root`` and found again by later runs.
2. For each size: a library of that many items, each a hard link of a base file under a folder of its own
   copy, written straight into a beets database with the base item's fields (its predictions: same audio,
   same features) and albums of their own per copy. Importing 20,000 links with ``beet import`` would take
   about 10 minutes (28 ms per item, ``## Feature cache``) and measure beets, not the report; the report
   reads the same database, fields and cache either way. The links share the base files' audio, so the
   map repeats the base library's points; the projection is timed on distinct points separately (3.).
3. The projection alone on distinct embeddings (the base embeddings plus noise) of 50,000 tracks.

It times ``beet cnngenre --report`` as a whole (start-up of beets included) and records the page's size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import library
import measure
import numpy as np
import results

PROBLEMS: list = []
FOLDERS = ("gtzan-dev", "jamendo", "misc")
AUDIO_SUFFIXES = {".mp3", ".ogg", ".wav", ".flac", ".m4a"}
MODEL_FILE = "model.safetensors"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, nargs="+", help="library sizes (default 3000 20000; quick 500)")
    parser.add_argument("--projected", type=int, help="tracks of the projection-only run (default 50000; "
                                                      "quick 5000)")
    args = library.parse_run_args(parser, argv, {"items": ([3000, 20000], [500]), "projected": (50000, 5000)})
    return args


def base_library(root: Path) -> library.Beets:
    """The shared data imported, trained on, predicted and judged (built once)."""
    home = root / "report-base"
    done = home / ".complete"
    identity = model_id(home)
    if identity and done.exists() and done.read_text() == identity:
        return existing(home)
    beets = library.Beets(home)
    folders = [library.DATA / name for name in FOLDERS]
    expected = sum(1 for folder in folders for path in folder.rglob("*") if path.suffix.lower() in AUDIO_SUFFIXES)
    measure.log(f"base library: importing {expected} files of {library.DATA}")
    beets.import_folder(folders, expected)
    beets.configure(model=str(home / MODEL_FILE), min_tracks=5)
    for arguments in (["-t"], [], ["--suspects"]):
        measure.log(f"base library: beet cnngenre {' '.join(arguments)}")
        result = beets.run("cnngenre", *arguments)
        sys.stdout.write(result.stdout[-1500:])
    done.write_text(model_id(home))
    return beets


def model_id(home: Path) -> str:
    """The id of a library's model; "" when it has none this checkout reads (a library to build again)."""
    from genre_cnn_core import GenreModel, ModelError

    try:
        return GenreModel.load(str(home / MODEL_FILE)).model_id
    except ModelError:
        return ""


def existing(home: Path) -> library.Beets:
    """A library this script built before."""
    beets = library.Beets.__new__(library.Beets)
    beets.home, beets.code, beets.probe = home, library.REPO, None
    beets.cache, beets.db = home / "cache", home / "library.db"
    beets.config = json.loads((home / "config.yaml").read_text())
    return beets


def large_library(base: library.Beets, items: int, root: Path) -> library.Beets:
    """``items`` hard links of the base files, each an item with its base item's fields, albums per copy
    (built once)."""
    from beets.library import Library

    home = root / f"report-{items}"
    done = home / ".complete"
    if done.exists() and done.read_text() == model_id(base.home) != "":  # built from this base's predictions
        return existing(home)
    beets = library.Beets(home, cache_dir=str(base.cache), model=str(base.home / MODEL_FILE))
    source = Library(str(base.db))
    target = Library(str(beets.db), str(home / "music"))
    originals = list(source.items())
    groups: dict = {}
    for item in originals:
        groups.setdefault(item.album_id, []).append(item)
    made, copy = 0, 0
    with target.transaction():
        while made < items:
            folder = home / "links" / f"copy-{copy:03d}"
            folder.mkdir(parents=True)
            for album_id, tracks in groups.items():
                tracks = tracks[:items - made]
                if not tracks:
                    break
                linked = []
                for track in tracks:
                    original = os.fsdecode(track.path)
                    link = folder / f"{track.id}{Path(original).suffix}"
                    os.link(original, link)
                    new = track.copy()
                    new.id, new.album_id, new.path = None, None, os.fsencode(link)
                    new.album = f"{track.album} #{copy}" if track.album else track.album
                    linked.append(new)
                if album_id is None:
                    for new in linked:
                        target.add(new)
                else:
                    target.add_album(linked)
                made += len(linked)
            copy += 1
    done.write_text(model_id(base.home))
    return beets


WROTE = re.compile(r"wrote (\S+) \(([\d.]+) MiB\): (\d+) tracks, (\d+) on the map.*; ([\d.]+) s")


def report_run(beets: library.Beets, items: int) -> dict:
    """``beet cnngenre --report`` over the whole library, measured; and what the page holds."""
    from genre_cnn_core.library_report import page_data

    page = beets.home / "report.html"
    measure.log(f"{items} items: beet cnngenre --report")
    result = beets.run("cnngenre", "--report", page)
    match = WROTE.search(result.stdout)
    if not match:
        raise RuntimeError(f"no 'wrote' line: {result.stdout[-1000:]}{result.stderr[-2000:]}")
    data = page_data(page.read_text(encoding="utf-8"))
    counts = data["figures"]["counts"]
    if counts["matched"] != items or len(data["tracks"]["id"]) != items:
        PROBLEMS.append(f"{items} items: the page holds {len(data['tracks']['id'])} tracks, counts {counts}")
    return {"items": items, "wall": result.wall, "cpu": result.cpu, "peak": result.peak_rss,
            "own": float(match.group(5)), "bytes": page.stat().st_size, "on_map": int(match.group(4)),
            "projection": data["figures"]["projection_seconds"], "other": result.other_cores,
            "bundle": len(plotly_bundle().encode()), "albums": counts["albums"]}


def plotly_bundle() -> str:
    from genre_cnn_core.library_report import plotly_js

    return plotly_js()


def base_vectors(base: library.Beets) -> tuple[np.ndarray, list]:
    """The base library's cached vectors and each track's first tagged genre (None: untagged)."""
    from beets.library import Library

    from genre_cnn_core import FeatureCache, GenreModel
    from genre_cnn_core.library_report import cached_vectors

    items = list(Library(str(base.db)).items())
    model = GenreModel.load(str(base.home / MODEL_FILE))
    vectors = cached_vectors([os.fsdecode(i.path) for i in items], model.extractor(), FeatureCache(str(base.cache)))
    keep = [n for n, v in enumerate(vectors) if v is not None]
    return np.stack([vectors[n] for n in keep]), [(list(items[n].genres) or [None])[0] for n in keep]


PROJECTION_PROGRAM = """
import sys, time
started = time.perf_counter()
import numpy as np
vectors = np.load(sys.argv[1])
if sys.argv[2] == "pca":
    from genre_cnn_core.library_report import project
    placed = project(vectors)
else:
    import umap
    from sklearn.decomposition import PCA
    standard = (vectors - vectors.mean(0)) / np.maximum(vectors.std(0), 1e-6)
    reduced = PCA(min(50, len(vectors) - 1), random_state=0).fit_transform(standard)
    placed = umap.UMAP(n_components=2, random_state=0).fit_transform(reduced)
np.save(sys.argv[3], placed)
print(time.perf_counter() - started)
"""


def projection(vectors: np.ndarray, method: str, folder: Path) -> tuple[measure.Measured, np.ndarray]:
    """A fresh process projecting ``vectors``, measured (imports and UMAP's JIT compilation included)."""
    source, placed = folder / f"vectors-{len(vectors)}.npy", folder / f"placed-{method}-{len(vectors)}.npy"
    np.save(source, vectors)
    measure.log(f"projection of {len(vectors)} tracks: {method}")
    done = measure.run([sys.executable, "-c", PROJECTION_PROGRAM, source, method, placed],
                       env={**os.environ, "PYTHONPATH": str(library.REPO)})
    if done.returncode:
        raise RuntimeError(f"the {method} projection failed: {done.stderr[-2000:]}")
    return done, np.load(placed)


def neighbour_agreement(points: np.ndarray, genres: list, k: int = 5) -> float:
    """Mean share of each tagged track's ``k`` nearest tagged tracks (on the map) that share its first genre."""
    tagged = [n for n, g in enumerate(genres) if g]
    xy = np.asarray(points, dtype=np.float64)[tagged]
    labels = np.array([genres[n] for n in tagged])
    distances = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(distances, np.inf)
    nearest = np.argsort(distances, axis=1)[:, :k]
    return float((labels[nearest] == labels[:, None]).mean())


def main(argv=None) -> None:
    results.use_this_checkout()
    args = parse_args(argv)
    started = time.perf_counter()
    base = base_library(args.root)
    rows = []
    for items in args.items:
        beets = large_library(base, items, args.root)
        rows.append(report_run(beets, items))
    vectors, genres = base_vectors(base)
    standard = (vectors - vectors.mean(0)) / np.maximum(vectors.std(0), 1e-6)
    folder = args.root / "report-projection"
    folder.mkdir(parents=True, exist_ok=True)
    quality = {"whole embedding (no projection)": neighbour_agreement(standard, genres)}
    timings = {}
    for method in ("pca", "umap"):
        placed = projection(vectors, method, folder)[1]
        quality[f"{method}, 2-D"] = neighbour_agreement(placed, genres)
    rng = np.random.default_rng(0)
    many = vectors[rng.integers(0, len(vectors), args.projected)]
    many = many + rng.normal(0, 0.25, many.shape).astype(np.float32) * vectors.std(0)
    for method in ("pca", *(("umap",) if not args.quick else ())):
        timings[method] = projection(many, method, folder)[0]
    body = write_section(args, rows, quality, timings, len(vectors), started)
    print(body)


def write_section(args, rows: list, quality: dict, timings: dict, base_tracks: int, started: float) -> str:
    heading = "## Report page"
    lines = [results.context(results.command_line("report.py"), started),
             f"- {measure.load_summary()}; the machine is shared by other work (`nice -n 10`)",
             f"- base library: the {base_tracks} audio files of the shared data (gtzan-dev, jamendo, misc), "
             "imported as-is, trained on (`-t -m 5`), predicted and judged (`--suspects`); larger libraries are "
             "hard links of them written straight into a beets database with the base items' fields "
             "(see the docstring of bench/report.py), so every item's features are cached",
             "",
             "### `beet cnngenre --report` over the whole library",
             "",
             "wall: the whole `beet` command (Python, beets and the plugin starting included); in cnngenre: "
             "the time its `wrote` line reports (from loading the model to the written page); projection: "
             "standardising and placing the embeddings (in the page's data); page: the file, of which "
             f"{rows[0]['bundle'] / 2**20:.1f} MiB are plotly.js.",
             "",
             results.table(["items", "albums", "on the map", "wall", "in cnngenre", "projection", "CPU", "peak memory",
                            "page", "page without plotly.js", "other load"],
                           [[r["items"], r["albums"], r["on_map"], f"{r['wall']:.1f} s", f"{r['own']:.1f} s",
                             f"{r['projection']:.2f} s", f"{r['cpu']:.1f} s", f"{r['peak'] / 2**20:.0f} MiB",
                             f"{r['bytes'] / 2**20:.1f} MiB", f"{(r['bytes'] - r['bundle']) / 2**20:.1f} MiB",
                             f"{r['other']:.2f}"] for r in rows]),
             "",
             "### Projection: numpy PCA or UMAP (umap-learn, after scikit-learn's PCA to 50 dimensions)",
             "",
             f"A fresh process projecting {args.projected} distinct embeddings (the base library's, "
             "drawn with repetition, plus Gaussian noise of a quarter of each feature's spread), imports "
             "included (UMAP's include numba's compilation on first use):",
             "",
             results.table(["projection", "wall", "CPU", "peak memory", "other load"],
                           [[m, f"{r.wall:.1f} s", f"{r.cpu:.1f} s", f"{r.peak_rss / 2**20:.0f} MiB",
                             f"{r.other_cores:.2f}"] for m, r in timings.items()]),
             "",
             f"How well each map keeps genres together: of the {base_tracks} base tracks, the tagged ones; per "
             "track, the share of its 5 nearest tagged tracks that share its first tagged genre (chance is "
             "about 1 / genres):",
             "",
             results.table(["space", "5-NN genre agreement"], [[m, f"{q:.3f}"] for m, q in quality.items()])]
    body = "\n".join(lines) + "\n"
    return results.write_section(heading, body, args.out, PROBLEMS)


if __name__ == "__main__":
    main()
