#!/usr/bin/env python
"""Speed benchmark of cnngenre: one command, every figure written to ``bench/RESULTS.md``.

Usage (from the repository root)::

    /work/venv/bin/python bench/speed.py [--tracks 200] [--train-tracks 1000] [--quick]

One run, with 2 workers everywhere:

1. builds (once, cached under ``/tmp/cnngenre-bench``) a library of full-length
   tracks (3-5 min, 44.1 kHz stereo; mostly MP3, some FLAC, Ogg Vorbis and M4A)
   from medleys of ``/work/shared/data`` audio, every file distinct on disk, and
   a training library of short GTZAN clips copied under distinct paths; both are
   imported into fresh beets libraries with ``beet import -A -q``;
2. measures the decoding floor, ``beet cnngenre -f`` cold and warm for both
   backbones, a per-stage breakdown, a one-track run, peak memory, cache size,
   training speed, and the Essentia ``MusicExtractor`` as a peer;
3. writes the figures, with the targets beside them, as the ``## Speed``
   section of ``bench/RESULTS.md`` (``--quick``: a 40-track smoke run written
   to ``bench/out/SPEED-quick.md`` unless ``--out`` says otherwise).

Audio from ``/work/shared/data`` is never copied into the repository.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import math
import os
import platform
import re
import resource
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = Path("/work/shared/data")
DEFAULT_ROOT = Path("/tmp/cnngenre-bench")
ESSENTIA_VENV = Path("/tmp/essentia-venv")
BEET = Path(sys.executable).with_name("beet")
WORKERS = 2
SAMPLE_RATE = 44100
#: Bumped when the way libraries are built changes, to rebuild the cached ones.
BUILD_VERSION = 1
#: Diagnostics, not the product as shipped: torch's OpenMP threads in the ``beet``
#: process sleeping instead of spinning while they wait, or limited to one thread
#: (the core's ``torch.set_num_threads`` overrides the latter during extraction).
PASSIVE_LABEL = "OMP_WAIT_POLICY=PASSIVE"
PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE"}
DIAGNOSTICS = {"OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"}, PASSIVE_LABEL: PASSIVE}
#: Share of each non-MP3 format in the prediction library; the rest is MP3.
FORMAT_SHARES = {"flac": 0.07, "ogg": 0.07, "m4a": 0.06}


# ------------------------------------------------------------------ settings


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes of one benchmark run."""

    tracks: int
    train_tracks: int
    jamendo_medleys: int
    gtzan_medleys: int
    scratch_epochs: int
    stage_sample: int
    essentia_tracks: int


def parse_args(argv=None) -> tuple[argparse.Namespace, Plan]:
    """Command-line options and the sizes they imply."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, help="tracks in the prediction library (default 200; quick 40)")
    parser.add_argument("--train-tracks", type=int, help="tracks in the training library (default 1000; quick 200)")
    parser.add_argument("--scratch-epochs", type=int,
                        help="epochs of the short scratch training that times an epoch (default 4; quick 3)")
    parser.add_argument("--quick", action="store_true", help="a small run of a few minutes")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where libraries and runs live")
    parser.add_argument("--out", type=Path,
                        help="report file (default: the Speed section of bench/RESULTS.md; quick: bench/out/SPEED-quick.md)")
    parser.add_argument("--no-essentia", action="store_true", help="skip the Essentia peer")
    args = parser.parse_args(argv)
    quick = args.quick
    tracks = args.tracks or (40 if quick else 200)
    plan = Plan(
        tracks=tracks,
        train_tracks=args.train_tracks or (200 if quick else 1000),
        jamendo_medleys=3 if quick else 10,
        gtzan_medleys=5 if quick else 20,
        scratch_epochs=args.scratch_epochs or (3 if quick else 4),
        stage_sample=min(tracks, 8 if quick else 20),
        essentia_tracks=2 if quick else 5,
    )
    if args.out is None:
        args.out = REPO / "bench" / ("out/SPEED-quick.md" if quick else "RESULTS.md")
    return args, plan


# --------------------------------------------------------- building the audio


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A full-length track made by concatenating source recordings."""

    name: str
    genre: str
    artist: str
    sources: tuple
    seconds: float


def _read_labels(name: str) -> list[dict]:
    with open(DATA / name / "labels.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def jamendo_recipes(count: int) -> list[Recipe]:
    """Medleys of consecutive Jamendo tracks (sorted by genre), 3-5 minutes each."""
    rows = sorted(_read_labels("jamendo"), key=lambda r: (r["genre"], r["path"]))
    recipes = []
    for i in range(count):
        seconds = float(np.random.default_rng(1000 + i).uniform(180, 300))
        sources, total, position = [], 0.0, (2 * i) % len(rows)
        while total < seconds:
            row = rows[position % len(rows)]
            sources.append(str(DATA / row["path"]))
            total += float(row["duration_s"])
            position += 1
        first = rows[(2 * i) % len(rows)]
        recipes.append(Recipe(f"jamendo-{i:02d}", first["genre"], first["artist"], tuple(sources), seconds))
    return recipes


def gtzan_recipes(count: int) -> list[Recipe]:
    """Medleys of GTZAN clips of one genre (upsampled later), 3-5 minutes each."""
    rows = _read_labels("gtzan-dev")
    genres = sorted({r["genre"] for r in rows})
    recipes = []
    for i in range(count):
        genre = genres[i % len(genres)]
        rng = np.random.default_rng(2000 + i)
        seconds = float(rng.uniform(180, 300))
        clips = [str(DATA / r["path"]) for r in rows if r["genre"] == genre]
        order = rng.permutation(len(clips))
        needed = math.ceil(seconds / 29.0)
        sources = tuple(clips[order[k % len(clips)]] for k in range(needed))
        recipes.append(Recipe(f"gtzan-{i:02d}-{genre}", genre, f"GTZAN {genre} medley {i}", sources, seconds))
    return recipes


def read_stereo(path: str) -> np.ndarray:
    """A whole recording as float32 ``(frames, 2)`` at 44.1 kHz."""
    import soundfile as sf
    import soxr

    with open(path, "rb") as handle:
        audio, sr = sf.read(handle, dtype="float32", always_2d=True)
    if sr != SAMPLE_RATE:
        audio = soxr.resample(audio, sr, SAMPLE_RATE).astype(np.float32)
    if audio.shape[1] == 1:
        audio = np.repeat(audio, 2, axis=1)
    return audio[:, :2]


def render(recipe: Recipe) -> np.ndarray:
    """The recipe's audio: its sources back to back, cut to its length."""
    frames = int(recipe.seconds * SAMPLE_RATE)
    parts, total = [], 0
    while total < frames:  # repeat the sources when they fall short
        for source in recipe.sources:
            parts.append(read_stereo(source))
            total += len(parts[-1])
            if total >= frames:
                break
    return np.concatenate(parts)[:frames]


def encode(audio: np.ndarray, path: Path, fmt: str) -> None:
    """Encode 44.1 kHz stereo audio: MP3, FLAC, Ogg Vorbis (libsndfile) or M4A/AAC (PyAV)."""
    if fmt == "m4a":
        _encode_aac(audio, path)
        return
    import soundfile as sf

    kinds = {"mp3": ("MP3", "MPEG_LAYER_III"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS")}
    container, subtype = kinds[fmt]
    # Written a second at a time: libsndfile's Vorbis encoder crashes on one huge write.
    with sf.SoundFile(path, "w", SAMPLE_RATE, 2, format=container, subtype=subtype) as out:
        for begin in range(0, len(audio), SAMPLE_RATE):
            out.write(audio[begin:begin + SAMPLE_RATE])


def _encode_aac(audio: np.ndarray, path: Path, bit_rate: int = 192000) -> None:
    import av

    with av.open(str(path), "w", format="ipod") as container:
        stream = container.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
        stream.bit_rate = bit_rate
        step = 1024 * 32
        for begin in range(0, len(audio), step):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[begin:begin + step].T),
                                               format="fltp", layout="stereo")
            frame.sample_rate = SAMPLE_RATE
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def tag_file(path: Path, tags: dict) -> None:
    """Set text tags with mutagen's easy interface (ID3, Vorbis comments, MP4 atoms)."""
    import mutagen

    handle = mutagen.File(path, easy=True)
    if handle is None:
        raise RuntimeError(f"mutagen cannot tag {path}")
    if handle.tags is None:
        handle.add_tags()
    for key, value in tags.items():
        handle[key] = [str(value)]
    handle.save()


def build_base(recipe: Recipe, formats: list, folder: Path) -> None:
    """Render one recipe and encode it in each missing format (written, then renamed)."""
    audio = render(recipe)
    for fmt in formats:
        final = folder / f"{recipe.name}.{fmt}"
        temp = folder / f".tmp-{recipe.name}.{fmt}"
        encode(audio, temp, fmt)
        tag_file(temp, {"title": recipe.name, "artist": recipe.artist, "genre": recipe.genre})
        os.replace(temp, final)


def base_formats(jamendo: list, gtzan: list) -> dict:
    """Formats wanted of each recipe: MP3 for all; FLAC, Ogg and M4A transcodes of a few Jamendo medleys."""
    wanted = {r.name: ["mp3"] for r in jamendo + gtzan}
    others = list(FORMAT_SHARES)
    for i, recipe in enumerate(jamendo[:9]):
        wanted[recipe.name].append(others[i % len(others)])
    return wanted


def build_bases(root: Path, plan: Plan) -> dict:
    """Encoded base tracks, built once and cached: ``{fmt: [(recipe, path), ...]}``."""
    import joblib

    folder = root / f"bases-v{BUILD_VERSION}"
    folder.mkdir(parents=True, exist_ok=True)
    jamendo, gtzan = jamendo_recipes(plan.jamendo_medleys), gtzan_recipes(plan.gtzan_medleys)
    wanted = base_formats(jamendo, gtzan)
    recipes = {r.name: r for r in jamendo + gtzan}
    missing = {name: [f for f in fmts if not (folder / f"{name}.{f}").exists()] for name, fmts in wanted.items()}
    jobs = [(recipes[name], fmts) for name, fmts in missing.items() if fmts]
    if jobs:
        log(f"encoding {sum(len(f) for _, f in jobs)} base tracks (once; cached in {folder})")
        joblib.Parallel(n_jobs=WORKERS)(joblib.delayed(build_base)(r, f, folder) for r, f in jobs)
    bases: dict = {}
    for name, fmts in wanted.items():
        for fmt in fmts:
            bases.setdefault(fmt, []).append((recipes[name], folder / f"{name}.{fmt}"))
    return bases


def library_formats(n: int) -> list[str]:
    """The format of each library track: mostly MP3, shuffled with a fixed seed."""
    counts = {fmt: max(1, round(share * n)) for fmt, share in FORMAT_SHARES.items()}
    formats = [fmt for fmt, c in counts.items() for _ in range(c)]
    formats += ["mp3"] * (n - len(formats))
    np.random.default_rng(0).shuffle(formats)
    return formats


def _load_manifest(folder: Path) -> list | None:
    manifest = folder / "manifest.json"
    if not manifest.exists():
        return None
    rows = json.loads(manifest.read_text())
    return rows if all(Path(r["path"]).exists() for r in rows) else None


def _save_manifest(folder: Path, rows: list) -> list:
    (folder / "manifest.json").write_text(json.dumps(rows, indent=1))
    return rows


def build_library(root: Path, plan: Plan, bases: dict) -> list[dict]:
    """The prediction library: tagged copies of the bases, 10 per album folder, every file distinct."""
    folder = root / f"library-{plan.tracks}-v{BUILD_VERSION}"
    rows = _load_manifest(folder)
    if rows is not None:
        return rows
    shutil.rmtree(folder, ignore_errors=True)
    log(f"building the {plan.tracks}-track library in {folder}")
    rows, used = [], {fmt: 0 for fmt in bases}
    for i, fmt in enumerate(library_formats(plan.tracks)):
        recipe, source = bases[fmt][used[fmt] % len(bases[fmt])]
        used[fmt] += 1
        album = folder / f"album-{i // 10:03d}"
        album.mkdir(parents=True, exist_ok=True)
        path = album / f"{i:04d} {recipe.name}.{fmt}"
        shutil.copyfile(source, path)
        tag_file(path, {"title": f"cnnbench{i:04d} {recipe.name}", "album": f"cnnbench album {i // 10:03d}",
                        "albumartist": "cnnbench", "tracknumber": i % 10 + 1})
        rows.append({"path": str(path), "format": fmt, "title": f"cnnbench{i:04d}", "seconds": recipe.seconds,
                     "genre": recipe.genre})
    return _save_manifest(folder, rows)


def build_training_library(root: Path, plan: Plan) -> list[dict]:
    """The training library: GTZAN clips copied under distinct paths and albums."""
    folder = root / f"train-{plan.train_tracks}-v{BUILD_VERSION}"
    rows = _load_manifest(folder)
    if rows is not None:
        return rows
    shutil.rmtree(folder, ignore_errors=True)
    log(f"building the {plan.train_tracks}-track training library in {folder}")
    clips = _read_labels("gtzan-dev")
    rows = []
    for i in range(plan.train_tracks):
        copy, position = divmod(i, len(clips))
        clip = clips[position]
        source = DATA / clip["path"]
        path = folder / f"copy-{copy:02d}" / clip["genre"] / source.name
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)
        # Copies share the clip's artist (so validation stays artist-disjoint) but not its album.
        tag_file(path, {"title": f"cnntrain{i:05d}", "album": f"{clip['artist_group']} copy {copy}"})
        rows.append({"path": str(path), "format": "mp3", "genre": clip["genre"]})
    return _save_manifest(folder, rows)


# ------------------------------------------------------ measuring processes


@dataclasses.dataclass
class Measured:
    """What one subprocess cost."""

    wall: float
    cpu: float
    peak_rss: int
    returncode: int
    stdout: str
    lines: list  # [(seconds since start, stderr line), ...]
    other_cores: float  # mean cores kept busy by processes outside this command meanwhile

    @property
    def stderr(self) -> str:
        return "\n".join(line for _, line in self.lines)


class TreeWatcher:
    """Polls a process and its descendants: peak of their summed RSS, CPU time of each."""

    def __init__(self, pid: int):
        try:
            import psutil
        except ImportError:
            psutil = None
        self.psutil = psutil
        self.root = psutil.Process(pid) if psutil else None
        self.peak = 0
        self.cpu: dict = {}

    def sample(self) -> None:
        if self.root is None:
            return
        try:
            processes = [self.root] + self.root.children(recursive=True)
        except self.psutil.Error:
            return
        total = 0
        for process in processes:
            try:
                with process.oneshot():
                    total += process.memory_info().rss
                    times = process.cpu_times()
                    self.cpu[process.pid] = times.user + times.system
            except self.psutil.Error:
                continue
        self.peak = max(self.peak, total)


def busy_cpu_seconds() -> float:
    """CPU seconds spent by the whole machine so far (all processes), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _collect(stream, sink: list, start: float) -> None:
    for line in stream:
        sink.append((time.perf_counter() - start, line.rstrip("\n")))


def run_measured(cmd: list, env: dict | None = None, poll: float = 0.1) -> Measured:
    """Run a command; wall time, CPU time and peak memory of its whole process tree.

    CPU time is the larger of the polled per-process times and the rusage of
    reaped descendants; peak memory is the largest sum of RSS seen at one poll
    (psutil), or the largest single process when psutil is missing.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before = busy_cpu_seconds()
    start = time.perf_counter()
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            text=True, errors="replace", bufsize=1)
    out_lines, err_lines, finished = [], [], {}
    readers = [threading.Thread(target=_collect, args=(proc.stdout, out_lines, start), daemon=True),
               threading.Thread(target=_collect, args=(proc.stderr, err_lines, start), daemon=True)]
    for reader in readers:
        reader.start()
    done = threading.Event()

    def wait():
        proc.wait()
        finished["wall"] = time.perf_counter() - start
        done.set()

    threading.Thread(target=wait, daemon=True).start()
    watcher = TreeWatcher(proc.pid)
    while not done.wait(poll):
        watcher.sample()
    for reader in readers:
        reader.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = busy_cpu_seconds() - busy_before
    reaped = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu = max(reaped, sum(watcher.cpu.values()))
    peak = watcher.peak or after.ru_maxrss * 1024
    wall = finished["wall"]
    return Measured(wall, cpu, peak, proc.returncode, "\n".join(line for _, line in out_lines), err_lines,
                    max(0.0, (busy - cpu) / wall))


# -------------------------------------------------------------------- beets


class Beets:
    """A fresh beets library in its own BEETSDIR, with cnngenre and 2 workers."""

    def __init__(self, home: Path):
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        self.home = home
        self.cache = home / "cache"
        self.db = home / "library.db"
        config = {
            "directory": str(home / "music"),
            "library": str(self.db),
            "plugins": ["cnngenre"],
            "import": {"copy": False, "move": False, "write": False, "duplicate_action": "keep"},
            "cnngenre": {"auto": False, "cache_dir": str(self.cache), "jobs": WORKERS, "device": "cpu"},
        }
        (home / "config.yaml").write_text(json.dumps(config, indent=1))  # JSON is YAML

    def configure(self, **cnngenre) -> "Beets":
        """Change cnngenre settings of this library's configuration."""
        path = self.home / "config.yaml"
        config = json.loads(path.read_text())
        config["cnngenre"].update(cnngenre)
        path.write_text(json.dumps(config, indent=1))
        return self

    def env(self) -> dict:
        return {**os.environ, "BEETSDIR": str(self.home)}

    def run(self, *args, check: bool = True, env: dict | None = None) -> Measured:
        """``beet ARGS``, measured; ``env`` adds variables; raises on a non-zero exit when ``check``."""
        result = run_measured([BEET, *args], env={**self.env(), **(env or {})})
        if check and result.returncode != 0:
            raise RuntimeError(f"beet {' '.join(map(str, args))} failed ({result.returncode}):\n"
                               f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
        return result

    def item_count(self) -> int:
        with sqlite3.connect(self.db) as db:
            return db.execute("SELECT count(*) FROM items").fetchone()[0]

    def clear_cache(self) -> None:
        shutil.rmtree(self.cache, ignore_errors=True)

    def cache_bytes(self) -> tuple[int, int, int]:
        """Entries, their total size in bytes, and the disk space they take."""
        files = list(self.cache.rglob("*.npy")) if self.cache.exists() else []
        stats = [p.stat() for p in files]
        return len(files), sum(s.st_size for s in stats), sum(s.st_blocks * 512 for s in stats)


def import_library(beets: Beets, folder: Path, expected: int) -> float:
    """``beet import -A -q FOLDER``; its wall time. Checks every track arrived."""
    result = beets.run("import", "-A", "-q", folder)
    found = beets.item_count()
    if found != expected:
        raise RuntimeError(f"imported {found} of {expected} items from {folder}:\n{result.stderr[-3000:]}")
    return result.wall


PREDICTED = re.compile(r"predicted (\d+), skipped (\d+) .*failed (\d+)")


def predicted_counts(result: Measured) -> tuple[int, int]:
    """``(predicted, failed)`` from the summary line of ``beet cnngenre``."""
    match = PREDICTED.search(result.stdout)
    if not match:
        raise RuntimeError(f"no summary line in beet cnngenre's output:\n{result.stdout[-2000:]}")
    return int(match.group(1)), int(match.group(3))


# ------------------------------------------------------------------- models


def model_metadata(path) -> dict:
    """A model file's metadata, read as plain data without rebuilding its network (so a file
    written by a core edited since this process started still reads); {} when unreadable."""
    import torch

    try:
        return json.loads(torch.load(path, map_location="cpu", weights_only=True)["metadata"])
    except Exception as error:  # noqa: BLE001 - reported, the run goes on
        PROBLEMS.append(f"{path}: cannot read the model's metadata ({type(error).__name__}: {error})")
        return {}


def model_settings(path, backbone: str):
    """Feature settings a model file predicts with; the core's default for ``backbone`` if unreadable."""
    from genre_cnn_core import DEFAULT_SETTINGS, FeatureSettings

    saved = model_metadata(path).get("settings")
    return FeatureSettings.from_dict(saved) if saved else DEFAULT_SETTINGS[backbone]


def try_load_model(path):
    """``GenreModel.load``, or None (reported) when this process's core cannot load the file."""
    from genre_cnn_core import GenreModel, ModelError

    try:
        return GenreModel.load(str(path))
    except ModelError as error:
        PROBLEMS.append(f"stage breakdown: {error}")
        return None


def layout(settings) -> str:
    """Excerpts decoded per track, e.g. ``4 × 3 s``."""
    return f"{settings.n_excerpts} × {settings.excerpt_seconds:g} s"


# ------------------------------------------------------------- measurements


LOADS: list = []
PROBLEMS: list = []


def log(message: str) -> None:
    """Progress on stderr, with the load average (also kept for the report)."""
    load = os.getloadavg()
    LOADS.append(load)
    print(f"[{time.strftime('%H:%M:%S')} load {load[0]:.2f}] {message}", file=sys.stderr, flush=True)


def _warm_worker() -> int:
    import genre_cnn_core.audio  # noqa: F401  (numpy, soundfile, soxr, av)

    return os.getpid()


def _decode_batch(paths: list, settings: dict) -> int:
    from genre_cnn_core.audio import load_excerpts

    for path in paths:
        load_excerpts(path, settings["sample_rate"], settings["excerpt_seconds"], settings["n_excerpts"])
    return len(paths)


def own_cpu_seconds() -> float:
    """CPU seconds of this process and its live descendants (the loky workers)."""
    import psutil

    me = psutil.Process()
    return sum(sum(p.cpu_times()[:2]) for p in [me, *me.children(recursive=True)])


def decoding_floor(paths: list, settings) -> tuple[float, float]:
    """Tracks/s of ``load_excerpts`` alone over ``paths`` with 2 warm loky workers, batches of 4,
    and the cores other processes kept busy meanwhile."""
    import joblib

    batches = [paths[i:i + 4] for i in range(0, len(paths), 4)]
    with joblib.Parallel(n_jobs=WORKERS, backend="loky") as parallel:
        parallel(joblib.delayed(_warm_worker)() for _ in range(2 * WORKERS))
        busy, own, start = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
        parallel(joblib.delayed(_decode_batch)(batch, settings.as_dict()) for batch in batches)
        wall = time.perf_counter() - start
        other = (busy_cpu_seconds() - busy) - (own_cpu_seconds() - own)
    return len(paths) / wall, max(0.0, other / wall)


def floor_program(list_file: str, settings_json: str) -> None:
    """The decoding floor as a program of its own: decode every listed track with 2 loky workers."""
    import joblib

    paths = Path(list_file).read_text().splitlines()
    batches = [paths[i:i + 4] for i in range(0, len(paths), 4)]
    settings = json.loads(settings_json)
    joblib.Parallel(n_jobs=WORKERS, backend="loky")(joblib.delayed(_decode_batch)(b, settings) for b in batches)


def decoding_floor_process(paths: list, settings, folder: Path) -> Measured:
    """A fresh Python process running :func:`floor_program`: start-up, imports, 2 workers, decoding."""
    folder.mkdir(parents=True, exist_ok=True)
    list_file = folder / f"floor-{len(paths)}.txt"
    list_file.write_text("\n".join(paths))
    code = (f"import sys; sys.path.insert(0, {str(REPO / 'bench')!r}); import speed; "
            f"speed.floor_program({str(list_file)!r}, {json.dumps(settings.as_dict())!r})")
    result = run_measured([sys.executable, "-c", code])
    if result.returncode:
        raise RuntimeError(f"the decoding floor program failed:\n{result.stderr[-3000:]}")
    return result


@dataclasses.dataclass
class FloorRuns:
    """The fresh-process decoding floor over the whole library and its first :data:`HALF` tracks."""

    whole: Measured
    half: Measured


#: Tracks of the smaller run of each marginal (per-extra-track) comparison.
HALF = 100
#: Title prefix of the first :data:`HALF` library tracks (titles are cnnbench0000, cnnbench0001, ...).
HALF_QUERY = "title::^cnnbench00"


def measure_floor_processes(rows: list, settings: dict, folder: Path) -> dict:
    runs = {}
    paths = [r["path"] for r in rows]
    for name, value in settings.items():
        log(f"decoding floor as a fresh process, {name} settings, {len(paths)} and {HALF} tracks")
        runs[name] = FloorRuns(decoding_floor_process(paths, value, folder),
                               decoding_floor_process(paths[:HALF], value, folder))
    return runs


@dataclasses.dataclass
class PredictRuns:
    """Cold and warm ``beet cnngenre -f`` of one backbone over the library."""

    cold: Measured
    warm: Measured
    cache_entries: int
    cache_size: int
    cache_disk: int
    warm_passive: Measured | None = None  # diagnostic: warm again with PASSIVE
    cold_half: Measured | None = None  # cold again over the first HALF tracks only


def measure_predict(beets: Beets, tracks: int, model_args: list, label: str,
                    diagnose: bool = False) -> PredictRuns:
    """Cold then warm feature cache, the cache's size in between; with ``diagnose``,
    warm once more with :data:`PASSIVE`."""
    beets.clear_cache()
    log(f"beet cnngenre -f, {label}, cold cache")
    cold = beets.run("cnngenre", "-f", *model_args)
    entries, size, disk = beets.cache_bytes()
    log(f"beet cnngenre -f, {label}, warm cache")
    warm = beets.run("cnngenre", "-f", *model_args)
    runs = {"cold": cold, "warm": warm}
    if diagnose:
        log(f"beet cnngenre -f, {label}, warm cache, {PASSIVE_LABEL}")
        runs["warm_passive"] = beets.run("cnngenre", "-f", *model_args, env=PASSIVE)
    for name, run in runs.items():
        done, failed = predicted_counts(run)
        if done != tracks or failed:
            PROBLEMS.append(f"{label} {name}: predicted {done} of {tracks}, {failed} failed: "
                            f"{run.stderr[-500:]}")
    return PredictRuns(cold, warm, entries, size, disk, runs.get("warm_passive"))


def measure_one_track(beets: Beets, title: str, repeat: int = 3, env: dict | None = None) -> list[Measured]:
    """``beet cnngenre -f title:...`` on one track, cold cache each time, default model."""
    log(f"beet cnngenre -f on one track, cold cache, {repeat} times{' (diagnostic env)' if env else ''}")
    runs = []
    for _ in range(repeat):
        beets.clear_cache()
        runs.append(beets.run("cnngenre", "-f", f"title:{title}", env=env))
        done, failed = predicted_counts(runs[-1])
        if done != 1 or failed:
            PROBLEMS.append(f"one-track run predicted {done}, failed {failed}")
    return runs


@dataclasses.dataclass
class TrainRun:
    """One ``beet -v cnngenre -t`` run."""

    result: Measured
    train_seconds: float | None  # the model's training loop (metadata)
    epochs: list  # seconds between consecutive epoch log lines
    model: Path


EPOCH_LINE = re.compile(r"epoch\s+(\d+):")


def train(beets: Beets, model: Path, extra: list, env: dict | None = None) -> TrainRun:
    """Train and save a model; parse its timings from the output and the model file."""
    result = beets.run("-v", "cnngenre", "-t", "--model", model, *extra, env=env)
    stamps = [t for t, line in result.lines if EPOCH_LINE.search(line)]
    return TrainRun(result, model_metadata(model).get("train_seconds"), list(np.diff(stamps)), model)


def measure_training(beets: Beets, plan: Plan) -> dict:
    """Head and scratch training, each with a cold then a warm feature cache."""
    beets.clear_cache()
    runs = {}
    # The scratch CNN: its default recipe from a cold cache (the model the prediction
    # runs use), then a short run on the cached features for the time per epoch.
    plans = (("musicnn_cold", "musicnn.pt", []), ("musicnn_warm", "musicnn.pt", []),
             ("scratch_cold", "scratch.pt", ["-b", "scratch"]),
             ("scratch_warm", "scratch-epochs.pt", ["-b", "scratch", "-e", str(plan.scratch_epochs)]))
    for name, model, extra in plans:
        log(f"beet cnngenre -t, {name}, {plan.train_tracks} tracks {' '.join(extra)}")
        runs[name] = train(beets, beets.home / model, extra)
    for label, env in DIAGNOSTICS.items():
        log(f"beet cnngenre -t, musicnn, warm cache, {label}")
        runs[label] = train(beets, beets.home / "musicnn-diagnostic.pt", [], env=env)
    return runs


# ------------------------------------------------------- stage breakdown


@dataclasses.dataclass
class Stage:
    """Mean cost of one stage, per track (or per run for fixed costs)."""

    name: str
    seconds: float
    per: str = "track"
    note: str = ""
    counted: bool = True  # part of the per-track sum (False for cross-checks)


def _mean_time(function, items: list) -> float:
    """Mean wall seconds of ``function(item)`` over ``items``."""
    start = time.perf_counter()
    for item in items:
        function(item)
    return (time.perf_counter() - start) / len(items)


def _median_wall(cmd: list, env: dict | None = None, repeat: int = 3) -> float:
    return statistics.median(run_measured(cmd, env).wall for _ in range(repeat))


def _load_ready_worker() -> int:
    from genre_cnn_core import musicnn

    musicnn.load_pretrained("cpu")
    return os.getpid()


def fixed_costs(beets: Beets) -> list[Stage]:
    """Start-up costs paid once per run (subprocesses, or fresh loky workers)."""
    import joblib
    from joblib.externals.loky import get_reusable_executor

    from genre_cnn_core import DEFAULT_MODEL, musicnn

    python = sys.executable
    stages = [
        Stage("`beet version` (beets + plugin start-up)", _median_wall([BEET, "version"], beets.env()), "run"),
        Stage('`python -c "import torch"`', _median_wall([python, "-c", "import torch"]), "run"),
        Stage('`python -c "import genre_cnn_core"`', _median_wall([python, "-c", "import genre_cnn_core"]), "run"),
    ]
    start = time.perf_counter()
    try_load_model(DEFAULT_MODEL)
    stages.append(Stage("load the default model file", time.perf_counter() - start, "run"))
    start = time.perf_counter()
    musicnn.load_pretrained("cpu")
    stages.append(Stage("load musicnn weights", time.perf_counter() - start, "worker"))
    get_reusable_executor().shutdown(wait=True)
    start = time.perf_counter()
    joblib.Parallel(n_jobs=WORKERS)(joblib.delayed(_load_ready_worker)() for _ in range(WORKERS))
    stages.append(Stage("start 2 loky workers, import torch, load musicnn", time.perf_counter() - start, "run"))
    get_reusable_executor().shutdown(wait=True)
    return stages


def musicnn_stages(paths: list, scratch_dir: Path, settings) -> list[Stage]:
    """Decode, resample, log-mel, forward, cache and head costs of the default model, per track."""
    import torch

    from genre_cnn_core import DEFAULT_MODEL, log_mel, musicnn
    from genre_cnn_core.audio import load_excerpts, resample
    from genre_cnn_core.extract import MusicnnExtractor
    from genre_cnn_core.features import fixed_frames

    network, cut, n = musicnn.load_pretrained("cpu"), (settings.excerpt_seconds, settings.n_excerpts), len(paths)
    native = {p: load_excerpts(p, SAMPLE_RATE, *cut) for p in paths[:1]}  # warm-up
    decode = _mean_time(lambda p: native.__setitem__(p, load_excerpts(p, SAMPLE_RATE, *cut)), paths)
    excerpts = {}
    resampling = _mean_time(lambda p: excerpts.__setitem__(
        p, [resample(e, SAMPLE_RATE, settings.sample_rate) for e in native[p]]), paths)
    log_mel(excerpts[paths[0]][0], settings)  # warm-up (torch's first STFT)
    spectra = {}
    logmel = _mean_time(lambda p: spectra.__setitem__(p, [log_mel(e, settings) for e in excerpts[p]]), paths)
    batches = [paths[i:i + 4] for i in range(0, n, 4)]  # extract_features' batch of 4 tracks

    def forward(batch):
        patches = [fixed_frames(s, musicnn.PATCH_FRAMES).T for p in batch for s in spectra[p]]
        with torch.inference_mode():
            network(torch.from_numpy(np.stack(patches)))

    forward(batches[0])  # warm-up
    forward_s = _mean_time(forward, batches) * len(batches) / n
    extractor = MusicnnExtractor(settings)
    embeddings = []
    end_to_end = _mean_time(lambda b: embeddings.extend(extractor.compute(b)), batches) * len(batches) / n
    stages = [
        Stage(f"decode {layout(settings)} excerpts (44.1 kHz)", decode),
        Stage(f"resample to {settings.sample_rate / 1000:g} kHz (soxr HQ)", resampling),
        Stage(f"log-mel, {settings.n_excerpts} excerpts", logmel),
        Stage(f"musicnn forward, {settings.n_excerpts} patches (batches of 4 tracks)", forward_s),
        *_cache_stages(paths, embeddings, extractor.namespace(), scratch_dir / "musicnn-cache", "embedding"),
    ]
    model = try_load_model(DEFAULT_MODEL)
    if model is not None:
        head = _mean_time(lambda _: model.predict_proba(embeddings), [None]) / n
        stages.append(Stage("genre head (default model), batch of the sample", head))
    stages.append(Stage("check: MusicnnExtractor.compute end to end", end_to_end, note="decode → embedding",
                        counted=False))
    return stages


def _cache_stages(paths: list, arrays: list, namespace: dict, folder: Path, what: str) -> list[Stage]:
    from genre_cnn_core import FeatureCache

    cache = FeatureCache(str(folder))
    keys = [cache.key(p, namespace) for p in paths]
    write = _mean_time(lambda i: cache.store(keys[i], arrays[i]), range(len(paths)))
    read = _mean_time(lambda k: cache.load(k), keys)
    return [Stage(f"cache write ({what}, atomic, checksummed)", write), Stage(f"cache read ({what})", read)]


def scratch_stages(paths: list, model_path: Path, scratch_dir: Path, settings) -> list[Stage]:
    """Decode, log-mel, cache and network costs of a scratch model, per track."""
    from genre_cnn_core.audio import load_excerpts
    from genre_cnn_core.extract import LogMelExtractor

    cut = (settings.excerpt_seconds, settings.n_excerpts)
    decode = _mean_time(lambda p: load_excerpts(p, SAMPLE_RATE, *cut), paths)
    extractor = LogMelExtractor(settings)
    features = []
    end_to_end = _mean_time(lambda p: features.extend(extractor.compute([p])), paths)
    stages = [
        Stage(f"decode {layout(settings)} excerpts (44.1 kHz)", decode, note="part of the next row", counted=False),
        Stage("LogMelExtractor.compute end to end", end_to_end, note="decode → resample → log-mel"),
        *_cache_stages(paths, features, extractor.namespace(), scratch_dir / "scratch-cache", "log-mel"),
    ]
    model = try_load_model(model_path)
    if model is not None:
        network = _mean_time(lambda _: model.predict_proba(features), [None]) / len(paths)
        stages.append(Stage("scratch CNN, sliding windows, batch of the sample", network))
    return stages


def store_stage(beets: Beets, count: int, scratch_dir: Path) -> Stage:
    """``item.store()`` with the five cnngenre fields, on a copy of the library database."""
    os.environ["BEETSDIR"] = str(beets.home)
    from beets.library import Library

    copy = scratch_dir / "library-copy.db"
    shutil.copyfile(beets.db, copy)
    items = list(Library(str(copy)).items())[:count]

    def store(item):
        item["cnn_genre"], item["cnn_genre_score"] = "jazz", 0.8123
        item["cnn_genres"], item["cnn_model"], item["cnn_tags"] = "jazz; blues; soul", "musicnn-bench", "piano"
        item.store()

    return Stage("item.store() with the cnngenre fields", _mean_time(store, items))


def decode_by_format(rows: list, settings) -> list[Stage]:
    """Decode cost (default model's excerpts, 44.1 kHz) of up to 3 tracks of each format."""
    from genre_cnn_core.audio import load_excerpts

    stages = []
    for fmt in sorted({r["format"] for r in rows}):
        paths = [r["path"] for r in rows if r["format"] == fmt][:3]
        load_excerpts(paths[0], SAMPLE_RATE, settings.excerpt_seconds, settings.n_excerpts)  # warm-up (imports)
        seconds = _mean_time(lambda p: load_excerpts(p, SAMPLE_RATE, settings.excerpt_seconds,
                                                     settings.n_excerpts), paths)
        stages.append(Stage(f"decode {layout(settings)}, {fmt.upper()}", seconds, note=f"{len(paths)} tracks"))
    return stages


def measure_stages(beets: Beets, rows: list, sample: list, scratch_model: Path, settings: dict) -> dict:
    """The per-stage breakdown, in this process with one torch thread (as in each of 2 workers)."""
    import torch

    torch.set_num_threads(1)
    scratch_dir = beets.home / "stages"
    shutil.rmtree(scratch_dir, ignore_errors=True)
    scratch_dir.mkdir()
    log(f"stage breakdown on {len(sample)} tracks")
    return {
        "fixed": fixed_costs(beets),
        "musicnn": musicnn_stages(sample, scratch_dir, settings["musicnn"]),
        "scratch": scratch_stages(sample, scratch_model, scratch_dir, settings["scratch"]),
        "store": [store_stage(beets, len(sample), scratch_dir)],
        "formats": decode_by_format(rows, settings["musicnn"]),
    }


# ------------------------------------------------------------------ Essentia


ESSENTIA_SCRIPT = r"""
import json, sys, time
import essentia
essentia.log.infoActive = False
essentia.log.warningActive = False
import essentia.standard as es
start = time.perf_counter()
extractor = es.MusicExtractor()
out = {"version": essentia.__version__, "setup": time.perf_counter() - start, "seconds": []}
for path in sys.argv[1:]:
    start = time.perf_counter()
    extractor(path)
    out["seconds"].append(time.perf_counter() - start)
print(json.dumps(out))
"""


def ensure_essentia() -> tuple[Path | None, str]:
    """Essentia in its own venv (never /work/venv): its python, or None and the install error."""
    python = ESSENTIA_VENV / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", "import essentia.standard"],
                                          capture_output=True).returncode == 0:
        return python, "already installed"
    log(f"installing essentia into {ESSENTIA_VENV}")
    steps = [[sys.executable, "-m", "venv", str(ESSENTIA_VENV)],
             [str(python), "-m", "pip", "install", "-q", "essentia"]]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            return None, f"`{' '.join(step)}` timed out"
        if done.returncode != 0:
            lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            return None, f"`{' '.join(step)}` failed: " + " / ".join(lines[-3:])
    return python, "installed by this run"


def measure_essentia(paths: list) -> dict:
    """Seconds per track of ``essentia.standard.MusicExtractor()`` (one process, one thread)."""
    python, status = ensure_essentia()
    if python is None:
        return {"error": status}
    log(f"Essentia MusicExtractor on {len(paths)} tracks")
    result = run_measured([python, "-c", ESSENTIA_SCRIPT, *paths])
    if result.returncode != 0:
        return {"error": f"MusicExtractor failed: {result.stderr[-500:]}", "install": status}
    out = json.loads(result.stdout.strip().splitlines()[-1])
    out.update(install=status, cpu=result.cpu, wall=result.wall, peak_rss=result.peak_rss,
               other_cores=result.other_cores)
    return out


# --------------------------------------------------------------------- report


@dataclasses.dataclass
class Figure:
    """One row of the results table."""

    name: str
    value: float | None
    unit: str
    target: str = ""
    met: bool | None = None
    other: float | None = None  # cores kept busy by other processes while it was measured
    digits: int = 2

    def cells(self) -> list[str]:
        value = "—" if self.value is None else f"{self.value:,.{self.digits}f} {self.unit}".strip()
        status = {True: "**met**", False: "**not met**", None: "n/a"}[self.met]
        other = "" if self.other is None else f"{self.other:.2f}"
        return [self.name, value, self.target or "—", status if self.target else "—", other]


def _check(value, bound, at_least=True, applies=True):
    """Met/not met against a bound; None when the figure is missing or not comparable."""
    if value is None or not applies:
        return None
    return value >= bound if at_least else value <= bound


def _rate(tracks: int, result: Measured) -> float:
    return tracks / result.wall


def _other(*runs: Measured) -> float:
    """Most cores that other processes kept busy during any of ``runs``."""
    return max(run.other_cores for run in runs)


def _median_run(runs: list) -> Measured:
    return sorted(runs, key=lambda run: run.wall)[len(runs) // 2]


def throughput_figures(n: int, floors: dict, floor_load: dict, predict: dict, settings: dict) -> list[Figure]:
    """Tracks/s of ``beet cnngenre -f``, cold and warm, against the decoding floor."""
    default, scratch = predict["musicnn"], predict["scratch"]
    cold_m, warm_m = _rate(n, default.cold), _rate(n, default.warm)
    cold_s, warm_s = _rate(n, scratch.cold), _rate(n, scratch.warm)
    return [
        Figure(f"decoding floor, musicnn settings ({layout(settings['musicnn'])})", floors["musicnn"], "tracks/s",
               other=floor_load["musicnn"]),
        Figure(f"decoding floor, scratch settings ({layout(settings['scratch'])})", floors["scratch"], "tracks/s",
               other=floor_load["scratch"]),
        Figure("default backbone (musicnn), cold cache", cold_m, "tracks/s", "≥ 5 (stretch 10)",
               _check(cold_m, 5), other=default.cold.other_cores),
        Figure("default backbone, cold cache: stretch target", cold_m, "tracks/s", "≥ 10", _check(cold_m, 10),
               other=default.cold.other_cores),
        Figure("default backbone, warm cache", warm_m, "tracks/s", other=default.warm.other_cores),
        Figure("default backbone cold ÷ floor", cold_m / floors["musicnn"], "×"),
        Figure("default backbone warm speed-up over cold", warm_m / cold_m, "×", "≥ 5", _check(warm_m / cold_m, 5),
               other=_other(default.cold, default.warm)),
        Figure("scratch backbone, cold cache", cold_s, "tracks/s", other=scratch.cold.other_cores),
        Figure("scratch cold ÷ floor with started workers (scratch settings)", cold_s / floors["scratch"], "×",
               "≥ 0.8", _check(cold_s / floors["scratch"], 0.8), other=scratch.cold.other_cores),
        Figure("scratch backbone, warm cache", warm_s, "tracks/s", other=scratch.warm.other_cores),
        Figure("scratch warm speed-up over cold", warm_s / cold_s, "×", "≥ 5", _check(warm_s / cold_s, 5),
               other=_other(scratch.cold, scratch.warm)),
        Figure(f"diagnostic: scratch backbone, warm cache, {PASSIVE_LABEL}", _rate(n, scratch.warm_passive),
               "tracks/s", other=scratch.warm_passive.other_cores),
        Figure("CPU time per track, default backbone cold", default.cold.cpu / n, "s"),
        Figure("CPU time per track, scratch cold", scratch.cold.cpu / n, "s"),
    ]


def floor_ratio_figures(n: int, processes: dict | None, predict: dict, settings: dict) -> list[Figure]:
    """cnngenre against the decoding floor run the same way: a fresh process, 2 workers, cold.

    End to end (everything each program pays, start-up included) and marginal
    (the cost of the tracks beyond the first :data:`HALF`, start-up cancelled).
    """
    if not processes:
        return []
    figures = []
    for name, title in (("musicnn", "default backbone"), ("scratch", "scratch backbone")):
        floor, runs = processes[name], predict[name]
        target = {"scratch": "≥ 0.8"}.get(name, "")
        floor_rate, ours = _rate(n, floor.whole), _rate(n, runs.cold)
        extra = n - HALF
        floor_marginal = extra / (floor.whole.wall - floor.half.wall)
        ours_marginal = extra / (runs.cold.wall - runs.cold_half.wall)
        figures += [
            Figure(f"decoding floor as a fresh process ({layout(settings[name])}), {n} tracks", floor_rate,
                   "tracks/s", other=floor.whole.other_cores),
            Figure(f"{title} cold ÷ fresh-process floor, end to end", ours / floor_rate, "×", target,
                   _check(ours / floor_rate, 0.8) if target else None,
                   other=_other(floor.whole, runs.cold)),
            Figure(f"decoding floor, marginal: tracks {HALF + 1}–{n} ({HALF} vs {n}-track runs)", floor_marginal,
                   "tracks/s", other=_other(floor.whole, floor.half)),
            Figure(f"{title} cold, marginal: tracks {HALF + 1}–{n}", ours_marginal, "tracks/s",
                   other=_other(runs.cold, runs.cold_half)),
            Figure(f"{title} cold ÷ floor, marginal (start-up cancelled)", ours_marginal / floor_marginal, "×",
                   target, _check(ours_marginal / floor_marginal, 0.8) if target else None),
        ]
    return figures


def resource_figures(predict: dict, one: list, one_passive: list) -> list[Figure]:
    """One-track latency, peak memory and cache size."""
    default, scratch = predict["musicnn"], predict["scratch"]
    one_run, passive_run = _median_run(one), _median_run(one_passive)
    runs = [r for p in predict.values() for r in (p.cold, p.warm)]
    peak = max(r.peak_rss for r in runs) / 2**30
    musicnn_entry = default.cache_size / max(1, default.cache_entries)
    return [
        Figure(f"one-track run (`beet cnngenre -f title:…`), cold, median of {len(one)}", one_run.wall, "s",
               "≤ 5", _check(one_run.wall, 5, False), other=one_run.other_cores),
        Figure("one-track run, fastest", min(r.wall for r in one), "s"),
        Figure(f"diagnostic: one-track run with {PASSIVE_LABEL}, median", passive_run.wall, "s",
               other=passive_run.other_cores),
        Figure("peak memory, beet + workers (sum of RSS), any predict run", peak, "GiB", "≤ 1.5",
               _check(peak, 1.5, False)),
        Figure("peak memory, default backbone cold", default.cold.peak_rss / 2**30, "GiB"),
        Figure("peak memory, scratch cold", scratch.cold.peak_rss / 2**30, "GiB"),
        Figure("cache per track, musicnn (file sizes)", musicnn_entry / 1024, "KiB", "≤ 10 KB",
               _check(musicnn_entry, 10_000, False)),
        Figure("cache per track, musicnn (disk blocks)", default.cache_disk / max(1, default.cache_entries) / 1024,
               "KiB"),
        Figure("cache per track, scratch (file sizes)", scratch.cache_size / max(1, scratch.cache_entries) / 1024,
               "KiB"),
    ]


def training_figures(plan: Plan, runs: dict) -> list[Figure]:
    """Training wall times; targets only apply to a library of at least 1,000 tracks."""
    full = plan.train_tracks >= 1000
    n = f"{plan.train_tracks:,}"
    head_cold, head_warm = runs["musicnn_cold"], runs["musicnn_warm"]
    scratch_cold, scratch_warm = runs["scratch_cold"], runs["scratch_warm"]
    epoch, epoch_cold = (statistics.median(run.epochs) if run.epochs else None
                         for run in (scratch_warm, scratch_cold))
    recipe = model_metadata(scratch_cold.model)
    shortened = any("schedule was shortened" in line for _, line in scratch_cold.result.lines)
    return [
        Figure(f"head training, {n} tracks, cold cache → saved model (wall)", head_cold.result.wall, "s",
               other=head_cold.result.other_cores),
        Figure(f"head training, {n} cached tracks (wall of `beet cnngenre -t`)", head_warm.result.wall, "s",
               "≤ 10 s", _check(head_warm.result.wall, 10, False, full), other=head_warm.result.other_cores),
        Figure("  of which the training loop (model metadata)", head_warm.train_seconds, "s"),
        *(figure for label in DIAGNOSTICS for figure in (
            Figure(f"diagnostic: head training, cached, with {label}", runs[label].result.wall, "s",
                   other=runs[label].result.other_cores),
            Figure("  of which the training loop", runs[label].train_seconds, "s"))),
        Figure(f"scratch CNN, {n} tracks, cold cache → saved model, default recipe (wall)",
               scratch_cold.result.wall, "s", "≤ 300 s", _check(scratch_cold.result.wall, 300, False, full),
               other=scratch_cold.result.other_cores),
        Figure(f"  of which the training loop ({recipe.get('steps', '?')} steps"
               f"{', schedule shortened by the time budget' if shortened else ', the whole schedule'})",
               recipe.get("train_seconds"), "s"),
        Figure("scratch epoch on cached features (median, validation included)", epoch, "s", "≤ 10 s",
               _check(epoch, 10, False, full), other=scratch_warm.result.other_cores),
        Figure("scratch epoch in the default run from a cold cache (median)", epoch_cold, "s",
               other=scratch_cold.result.other_cores),
        Figure("peak memory, scratch training (sum of RSS)", scratch_cold.result.peak_rss / 2**30, "GiB"),
    ]


def essentia_figures(essentia: dict, predict: dict, tracks: int) -> list[Figure]:
    """Essentia's MusicExtractor against cnngenre's CPU time per track."""
    if "error" in essentia:
        return []
    per_track = statistics.mean(essentia["seconds"])
    ours = predict["musicnn"].cold.cpu / tracks
    return [
        Figure(f"Essentia MusicExtractor {essentia['version']}, per track (1 thread)", per_track, "s",
               other=essentia["other_cores"]),
        Figure("Essentia ÷ cnngenre CPU time per track (default backbone, cold)", per_track / ours, "×"),
    ]


def table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _cost(stage: Stage) -> str:
    if stage.per == "track":
        return f"{stage.seconds * 1000:,.1f} ms / track"
    return f"{stage.seconds:,.2f} s / {stage.per}"


def stage_table(stages: dict) -> str:
    """The breakdown, with the per-track sum of each backbone's stages."""
    rows = []
    titles = {"fixed": "start-up", "musicnn": "default backbone (musicnn)", "scratch": "scratch backbone",
              "store": "database", "formats": "decode by format"}
    for group, items in stages.items():
        rows += [[titles[group], stage.name, _cost(stage), stage.note] for stage in items]
        if group in ("musicnn", "scratch"):
            total = sum(stage.seconds for stage in items if stage.counted)
            rows.append([titles[group], "**sum per track** (rows above, checks left out)", _cost(Stage("", total)), ""])
    return table(["part", "stage", "cost", "note"], rows)


def machine() -> str:
    model = "unknown"
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    memory = "unknown"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    return f"{model}, {os.cpu_count()} cores, {memory} RAM"


def library_summary(rows: list) -> str:
    counts = {}
    for row in rows:
        counts[row["format"]] = counts.get(row["format"], 0) + 1
    formats = ", ".join(f"{c} {fmt.upper()}" for fmt, c in sorted(counts.items(), key=lambda kv: -kv[1]))
    seconds = [r["seconds"] for r in rows]
    size = sum(os.path.getsize(r["path"]) for r in rows) / 2**20
    return (f"{len(rows)} tracks ({formats}), {min(seconds) / 60:.1f}–{max(seconds) / 60:.1f} min "
            f"(mean {statistics.mean(seconds) / 60:.1f}), 44.1 kHz stereo, {size:,.0f} MiB")


def write_report(path: Path, context: dict, figures: list, stages: dict) -> None:
    """Write the report from the measured values (see :func:`save_report`)."""
    loads = [load[0] for load in LOADS]
    essentia = context["essentia"]
    peer = (f"Essentia {essentia.get('version')} ({essentia.get('install')}): MusicExtractor set-up "
            f"{essentia.get('setup', 0):.1f} s, per-track times "
            f"{', '.join(f'{s:.1f}' for s in essentia.get('seconds', []))} s."
            if "error" not in essentia else f"Essentia could not be measured: {essentia['error']}")
    text = f"""# cnngenre speed

Written by `bench/speed.py`; every number below comes from the run it describes.

- date: {context['date']}
- machine: {machine()}; Python {platform.python_version()}, torch {context['torch']}
- load average (1 min) at start {loads[0]:.2f}, at end {loads[-1]:.2f}, highest seen {max(loads):.2f}
  (2 cores, shared with other work: figures are pessimistic when it is high)
- command: `{context['command']}`
- code: {context['git']}
- excerpts decoded per track: {context['excerpts']} (the default model's own settings for musicnn)
- run wall time: {context['wall'] / 60:.1f} min (library building {context['build'] / 60:.1f} min of it)
- prediction library: {context['library']}; `beet import -A -q` took {context['import_predict']:.1f} s
- training library: {context['train_tracks']:,} GTZAN clips (30 s, 22.05 kHz mono MP3) under distinct paths;
  `beet import -A -q` took {context['import_train']:.1f} s
- workers: 2 everywhere (`jobs: 2`, joblib loky); `device: cpu`; feature cache on local disk;
  audio files in the OS page cache (built just before)

## Figures

{table(["figure", "measured", "target", "status", "other load"], [f.cells() for f in figures])}

"other load": mean number of cores kept busy by processes outside the measured command while it ran
(from /proc/stat); on this 2-core machine anything near 1 or above means the figure is pessimistic.

## Stage breakdown

Measured in one process with one torch thread (what each of the 2 workers gets), on
{context['sample']} tracks of the prediction library; milliseconds per track unless marked.

{stage_table(stages)}

## Peer

{peer}

## How the figures are measured

- Decoding floor with started workers: `genre_cnn_core.audio.load_excerpts` alone, every track, 2 loky
  workers already started, batches of 4 tracks (as `extract_features`); the strictest yardstick, since
  `beet cnngenre` pays its own start-up (Python, beets, torch, model, workers) inside its wall time.
- Decoding floor as a fresh process: a new Python process that imports the audio module, starts 2 loky
  workers and decodes the same excerpts in batches of 4: the decoding-only program, timed like
  `beet cnngenre`. Marginal figures divide the tracks beyond the first {HALF} by the difference of the
  wall times of the {HALF}-track and whole-library runs, which cancels each program's start-up.
- `beet cnngenre -f`: wall time of the whole command (process start-up included) over the whole library;
  cold = empty feature cache, warm = the same command again. The scratch model is the one trained below.
- CPU time: user + system of the command and all its descendants.
- Peak memory: largest sum of RSS of `beet` and its worker processes seen at one 100 ms poll (psutil).
- Diagnostics (not the product as shipped) rerun a command with an environment variable for torch's
  OpenMP threads in the `beet` process: `OMP_WAIT_POLICY=PASSIVE` (waiting threads sleep instead of
  spinning) or `OMP_NUM_THREADS=1` (the core's `torch.set_num_threads` overrides it during extraction).
- Cache per track: size of the `.npy` entries after the cold run ÷ entries.
- Training: wall time of `beet -v cnngenre -t --model …` (start-up, features, training, saving, plots).
  The scratch CNN's default recipe runs from a cold cache; a second run with `-e {context['epochs']}` on
  the cached features gives the time per epoch = median gap between consecutive epoch log lines
  (short runs validate every epoch; the default recipe validates every third).
- One-track run: `beet cnngenre -f title:<one track>` with an empty cache, default model; one track is
  computed in the `beet` process itself (no worker pool).
- Status n/a: the target is for a library of 1,000 tracks and this run's training library is smaller.
{_problems()}"""
    save_report(path, text, "## Speed")


#: The benchmarks' shared report; each benchmark owns one ``##`` section of it.
RESULTS = REPO / "bench" / "RESULTS.md"


def save_report(path: Path, text: str, heading: str) -> None:
    """Write a report: as the ``heading`` section of :data:`RESULTS`, or whole to any other file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.resolve() != RESULTS.resolve():
        path.write_text(text)
        return
    from accuracy import write_section

    body = text.split("\n", 1)[1]  # the title line gives way to the section heading
    body = re.sub(r"^## ", "### ", body, flags=re.MULTILINE)
    write_section(str(RESULTS), body, heading)


def _problems() -> str:
    if not PROBLEMS:
        return ""
    return "\n## Problems seen during the run\n\n" + "\n".join(f"- {p}" for p in PROBLEMS) + "\n"


# ----------------------------------------------------------------------- main


def pick_sample(rows: list, size: int) -> list[str]:
    """Evenly spaced tracks of the library (the formats are shuffled, so they mix)."""
    indices = np.linspace(0, len(rows) - 1, size).round().astype(int)
    return [rows[i]["path"] for i in sorted(set(indices))]


def excerpt_settings() -> dict:
    """Excerpts each backbone decodes: the shipped default model's own, and the core's for scratch."""
    from genre_cnn_core import DEFAULT_MODEL, DEFAULT_SETTINGS

    return {"musicnn": model_settings(DEFAULT_MODEL, "musicnn"), "scratch": DEFAULT_SETTINGS["scratch"]}


def git_state() -> str:
    """The commit measured, and the core files changed since it (others edit the tree meanwhile)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout

    changed = git("status", "--porcelain", "--", "genre_cnn_core", "beetsplug").splitlines()
    files = ", ".join(line[3:] for line in changed) or "none"
    return f"commit {git('rev-parse', '--short', 'HEAD').strip()}; uncommitted changes in the product: {files}"


def measure(args, plan: Plan, rows: list, train_rows: list) -> dict:
    """Every measurement of the run, in an order that needs each model before it is used."""
    predict_lib, train_lib = Beets(args.root / "run" / "predict"), Beets(args.root / "run" / "train")
    log("importing the libraries")
    out = {"import_predict": import_library(predict_lib, Path(rows[0]["path"]).parent.parent, plan.tracks),
           "import_train": import_library(train_lib, Path(train_rows[0]["path"]).parents[2], plan.train_tracks)}
    settings = out["settings"] = excerpt_settings()
    log("decoding floor")
    floors = {name: decoding_floor([r["path"] for r in rows], settings[name]) for name in settings}
    out["floors"] = {name: rate for name, (rate, _) in floors.items()}
    out["floor_load"] = {name: other for name, (_, other) in floors.items()}
    predict = out["predict"] = {"musicnn": measure_predict(predict_lib, plan.tracks, [], "default model")}
    out["one"] = measure_one_track(predict_lib, rows[0]["title"])
    out["one_passive"] = measure_one_track(predict_lib, rows[0]["title"], env=PASSIVE)
    out["training"] = measure_training(train_lib, plan)
    scratch_model = train_lib.home / "scratch.pt"
    predict["scratch"] = measure_predict(predict_lib, plan.tracks, ["--model", scratch_model], "scratch model",
                                         diagnose=True)
    if plan.tracks >= 2 * HALF:
        out["floor_processes"] = measure_floor_processes(rows, settings, args.root / "run" / "floor")
        for name, model_args in (("musicnn", []), ("scratch", ["--model", scratch_model])):
            log(f"beet cnngenre -f, {name}, cold cache, first {HALF} tracks")
            predict_lib.clear_cache()
            predict[name].cold_half = predict_lib.run("cnngenre", "-f", *model_args, HALF_QUERY)
            done, failed = predicted_counts(predict[name].cold_half)
            if done != HALF or failed:
                PROBLEMS.append(f"{name} cold, first {HALF}: predicted {done}, failed {failed}")
    out["sample"] = pick_sample(rows, plan.stage_sample)
    out["stages"] = measure_stages(predict_lib, rows, out["sample"], scratch_model, settings)
    out["essentia"] = ({"error": "skipped (--no-essentia)"} if args.no_essentia
                       else measure_essentia(pick_sample(rows, plan.essentia_tracks)))
    return out


def main(argv=None) -> int:
    args, plan = parse_args(argv)
    started = time.perf_counter()
    import torch

    log(f"plan: {plan}")
    rows = build_library(args.root, plan, build_bases(args.root, plan))
    train_rows = build_training_library(args.root, plan)
    built = time.perf_counter() - started
    state = git_state()
    m = measure(args, plan, rows, train_rows)

    figures = (throughput_figures(plan.tracks, m["floors"], m["floor_load"], m["predict"], m["settings"])
               + floor_ratio_figures(plan.tracks, m.get("floor_processes"), m["predict"], m["settings"])
               + resource_figures(m["predict"], m["one"], m["one_passive"])
               + training_figures(plan, m["training"]) + essentia_figures(m["essentia"], m["predict"], plan.tracks))
    log("writing the report")
    command = [os.path.relpath(sys.executable, REPO) if sys.executable.startswith(str(REPO)) else sys.executable,
               "bench/speed.py", *(argv if argv is not None else sys.argv[1:])]
    context = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "torch": torch.__version__, "command": shlex.join(command), "git": state,
        "wall": time.perf_counter() - started, "build": built,
        "library": library_summary(rows), "train_tracks": plan.train_tracks,
        "import_predict": m["import_predict"], "import_train": m["import_train"],
        "sample": len(m["sample"]), "epochs": plan.scratch_epochs, "essentia": m["essentia"],
        "excerpts": ", ".join(f"{name} {layout(value)}" for name, value in m["settings"].items()),
    }
    write_report(args.out, context, figures, m["stages"])
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
