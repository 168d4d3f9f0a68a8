"""Benchmark libraries built from the shared data: full-length tracks in
several formats, copies and hard links of them, beets homes with their
configuration, and the product's code before and after a change.

Audio comes from the shared data folder (never from, nor into, the
repository). A library is built once under :data:`ROOT` and found again
through its manifest by every later run (:func:`full_length_library`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import measure
import numpy as np
import results
from results import REPO


def _shared_data() -> Path:
    """The shared data: beside this checkout, or, from a git worktree, beside the main checkout."""
    if (results.DATA / "gtzan-dev").is_dir():
        return results.DATA
    common = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    beside_main = Path(common).parent.parent / "shared" / "data" if common else results.DATA
    return beside_main if (beside_main / "gtzan-dev").is_dir() else results.DATA


DATA = _shared_data()

#: Where libraries, beets homes and old checkouts live (never inside the repository).
ROOT = Path(os.environ.get("CNNGENRE_BENCH_ROOT", "/tmp/cnngenre-bench"))
BEET = Path(sys.executable).with_name("beet")
WORKERS = 2
SAMPLE_RATE = 44100
#: Bumped when the way tracks are made changes, so that no run mixes old and new ones.
BUILD_VERSION = 2
#: Share of each format among the full-length tracks.
FORMAT_SHARES = {"mp3": 0.7, "flac": 0.15, "ogg": 0.08, "m4a": 0.07}
TRACKS_PER_ALBUM = 10


# ------------------------------------------------------------- the tracks


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A full-length track: recordings of the shared data back to back, from an offset into the first."""

    index: int
    genre: str
    artist: str
    sources: tuple
    offset: float
    seconds: float
    format: str

    @property
    def title(self) -> str:
        return f"cnnbench{self.index:04d}"

    @property
    def album(self) -> str:
        return f"album-{self.index // TRACKS_PER_ALBUM:03d}"


def read_labels(collection: str) -> list[dict]:
    """Rows of a shared collection's ``labels.csv``."""
    with open(DATA / collection / "labels.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def recipe(index: int, jamendo: list, gtzan: list) -> Recipe:
    """The ``index``-th track: the same for every library size, and different from every other track.

    Every third track is a medley of Jamendo recordings, the others a medley
    of one genre's GTZAN clips; the order of the recordings and the offset
    into the first come from a generator seeded by ``index``, so no two
    tracks hold the same audio (the feature cache tells tracks apart by
    their audio).
    """
    rng = np.random.default_rng(10_000 + index)
    seconds = float(rng.uniform(180, 300))
    if index % 3 == 0:
        pool, genre, artist = jamendo, None, None
    else:
        genres = sorted({row["genre"] for row in gtzan})
        genre = genres[index % len(genres)]
        pool, artist = [row for row in gtzan if row["genre"] == genre], f"GTZAN {genre} medley {index}"
    order = rng.permutation(len(pool))
    offset = float(rng.uniform(0, 10))
    sources, total, position = [], -offset, 0
    while total < seconds:
        row = pool[order[position % len(order)]]
        sources.append(str(DATA / row["path"]))
        total += float(row.get("duration_s") or 30.0)
        position += 1
    first = pool[order[0]]
    formats = list(FORMAT_SHARES)
    fmt = formats[rng.choice(len(formats), p=list(FORMAT_SHARES.values()))]
    return Recipe(index, genre or first["genre"], artist or first["artist"], tuple(sources), offset, seconds, fmt)


def read_stereo(path: str) -> np.ndarray:
    """A whole recording as float32 ``(frames, 2)`` at :data:`SAMPLE_RATE`."""
    import soundfile
    import soxr

    with open(path, "rb") as handle:
        audio, rate = soundfile.read(handle, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)
    if audio.shape[1] == 1:
        audio = np.repeat(audio, 2, axis=1)
    return audio[:, :2]


def render(recipe: Recipe) -> np.ndarray:
    """The recipe's audio: its recordings back to back from its offset, cut to its length."""
    frames, skip = int(recipe.seconds * SAMPLE_RATE), int(recipe.offset * SAMPLE_RATE)
    parts, total = [], -skip
    while total < frames:  # a pool shorter than the track is repeated
        for source in recipe.sources:
            parts.append(read_stereo(source))
            total += len(parts[-1])
            if total >= frames:
                break
    return np.concatenate(parts)[skip:skip + frames]


def encode(audio: np.ndarray, path: Path, fmt: str) -> None:
    """Encode 44.1 kHz stereo audio: MP3, FLAC, Ogg Vorbis (libsndfile) or M4A/AAC (PyAV)."""
    if fmt == "m4a":
        _encode_aac(audio, path)
        return
    import soundfile

    container, subtype = {"mp3": ("MP3", "MPEG_LAYER_III"), "flac": ("FLAC", "PCM_16"),
                          "ogg": ("OGG", "VORBIS")}[fmt]
    # A second at a time: libsndfile's Vorbis encoder crashes on one huge write.
    with soundfile.SoundFile(path, "w", SAMPLE_RATE, 2, format=container, subtype=subtype) as out:
        for begin in range(0, len(audio), SAMPLE_RATE):
            out.write(audio[begin:begin + SAMPLE_RATE])


def _encode_aac(audio: np.ndarray, path: Path, bit_rate: int = 192_000) -> None:
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


def track_row(recipe: Recipe, path: Path) -> dict:
    """What the benchmarks know of a built track (one manifest row)."""
    return {"index": recipe.index, "path": str(path), "format": recipe.format, "title": recipe.title,
            "album": recipe.album, "genre": recipe.genre, "seconds": recipe.seconds,
            "bytes": path.stat().st_size, "mtime_ns": path.stat().st_mtime_ns}


def track_path(recipe: Recipe, folder: Path) -> Path:
    return folder / recipe.album / f"{recipe.index:04d}.{recipe.format}"


def build_track(recipe: Recipe, folder: Path) -> dict:
    """Render, encode and tag one track under a temporary name, then rename it into place."""
    final = track_path(recipe, folder)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.with_name(f".tmp-{os.getpid()}-{final.name}")  # two builds at once each write their own
    encode(render(recipe), temp, recipe.format)
    tag_file(temp, {"title": f"{recipe.title} {recipe.genre}", "artist": recipe.artist, "genre": recipe.genre,
                    "album": f"cnnbench {recipe.album}", "albumartist": "cnnbench",
                    "tracknumber": recipe.index % TRACKS_PER_ALBUM + 1})
    os.replace(temp, final)
    return track_row(recipe, final)


def _load_manifest(folder: Path) -> dict:
    """Rows of the tracks a manifest lists whose files are still there, whole, by index."""
    manifest = folder / "manifest.json"
    if not manifest.exists():
        return {}
    try:
        saved = json.loads(manifest.read_text())
    except ValueError:
        return {}
    if saved.get("version") != BUILD_VERSION:
        return {}
    return {row["index"]: row for row in saved["tracks"] if _unchanged(row)}


def _unchanged(row: dict) -> bool:
    """Whether a built track is still as built: a tag written in place (through a hard link) keeps the size."""
    try:
        stat = os.stat(row["path"])
    except OSError:
        return False
    return stat.st_size == row["bytes"] and stat.st_mtime_ns == row.get("mtime_ns", stat.st_mtime_ns)


def full_length_library(count: int, root: Path = ROOT) -> list[dict]:
    """The first ``count`` full-length tracks (3-5 min, 44.1 kHz stereo, mixed formats), 10 per album folder.

    Tracks the manifest lists are reused; the missing ones are built with
    :data:`WORKERS` processes and added to it. Every library size shares
    its first tracks with the larger ones.
    """
    import joblib

    folder = root / f"tracks-v{BUILD_VERSION}"
    folder.mkdir(parents=True, exist_ok=True)
    rows = _load_manifest(folder)
    listed = set(rows)
    jamendo, gtzan = read_labels("jamendo"), read_labels("gtzan-dev")
    recipes = {index: recipe(index, jamendo, gtzan) for index in range(count)}
    for index, planned in recipes.items():  # a build stopped before its manifest left whole files (renamed last)
        if index not in rows and track_path(planned, folder).exists():
            rows[index] = track_row(planned, track_path(planned, folder))
    missing = [index for index in recipes if index not in rows]
    if missing:
        measure.log(f"building {len(missing)} full-length tracks in {folder} (once; later runs reuse them)")
        built = joblib.Parallel(n_jobs=WORKERS)(joblib.delayed(build_track)(recipes[index], folder)
                                                for index in missing)
        rows.update((row["index"], row) for row in built)
    if set(rows) != listed:
        manifest = {"version": BUILD_VERSION, "tracks": [rows[index] for index in sorted(rows)]}
        temp = folder / f".manifest-{os.getpid()}.tmp"
        temp.write_text(json.dumps(manifest, indent=1))
        os.replace(temp, folder / "manifest.json")
    return [rows[index] for index in range(count)]


def describe(rows: list) -> str:
    """One line: how many tracks of which formats, how long, how big."""
    counts: dict = {}
    for row in rows:
        counts[row["format"]] = counts.get(row["format"], 0) + 1
    formats = ", ".join(f"{n} {fmt.upper()}" for fmt, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    minutes = [row["seconds"] / 60 for row in rows]
    size = sum(row["bytes"] for row in rows) / 2**20
    return (f"{len(rows)} tracks ({formats}), {min(minutes):.1f}–{max(minutes):.1f} min "
            f"(mean {np.mean(minutes):.1f}), 44.1 kHz stereo, {size:,.0f} MiB")


def place(rows: list, folder: Path, how: str = "copy", copies: int = 1) -> list[dict]:
    """``copies`` copies (``how="copy"``) or hard links (``"link"``) of tracks under ``folder``.

    Each copy keeps the album folders, under ``copy-NN/``; the rows of the
    placed files come back in order, copy by copy.
    """
    shutil.rmtree(folder, ignore_errors=True)
    placed = []
    for number in range(copies):
        for row in rows:
            target = folder / f"copy-{number:02d}" / row["album"] / Path(row["path"]).name
            target.parent.mkdir(parents=True, exist_ok=True)
            if how == "link":
                os.link(row["path"], target)
            else:
                shutil.copyfile(row["path"], target)
            placed.append({**row, "path": str(target)})
    return placed


# ---------------------------------------------------------------- the code


def checkout(commit: str, root: Path = ROOT) -> Path:
    """The repository at ``commit``, extracted once under ``root`` (``git archive``; no worktree)."""
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{commit}^{{commit}}"], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout.strip()
    folder = root / f"code-{sha[:12]}"
    if (folder / ".complete").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", sha], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    (folder / ".complete").write_text(sha + "\n")
    return folder


def code_in_use(code: Path) -> str:
    """Where ``beet`` finds the plugin and the core with ``PYTHONPATH=code``; raises unless both are in ``code``."""
    program = "import beetsplug.cnngenre as p, genre_cnn_core as c; print(p.__file__); print(c.__file__)"
    found = subprocess.run([sys.executable, "-c", program], env={**os.environ, "PYTHONPATH": str(code)},
                           cwd="/", capture_output=True, text=True)
    files = found.stdout.split()
    if found.returncode or len(files) != 2 or not all(Path(f).is_relative_to(code) for f in files):
        raise RuntimeError(f"PYTHONPATH={code} does not select its own plugin and core: {found.stdout}"
                           f"{found.stderr[-500:]}")
    return f"{Path(files[0]).relative_to(code)}, {Path(files[1]).parent.relative_to(code)} from {code}"


# ---------------------------------------------------------------- beets


class Beets:
    """A fresh beets library in its own ``BEETSDIR`` with cnngenre, 2 workers and the CPU.

    Parameters
    ----------
    home : Path
        Emptied, then holds the configuration, the database, the feature
        cache and the music folder.
    code : Path
        The checkout whose plugin and core ``beet`` runs (put first on ``PYTHONPATH``).
    probe : Path, optional
        A :func:`measure.module_probe` folder: every ``beet`` records its modules there.
    **cnngenre
        cnngenre settings beyond the defaults of every benchmark library.
    """

    def __init__(self, home: Path, code: Path = REPO, probe: Path | None = None, **cnngenre):
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        self.home, self.code, self.probe = home, code, probe
        self.cache, self.db = home / "cache", home / "library.db"
        self.config = {
            "directory": str(home / "music"),
            "library": str(self.db),
            "plugins": ["cnngenre"],
            "import": {"copy": False, "move": False, "write": False, "duplicate_action": "keep"},
            "cnngenre": {"auto": False, "cache_dir": str(self.cache), "jobs": WORKERS, "device": "cpu",
                         **cnngenre},
        }
        self._save()

    def _save(self) -> None:
        (self.home / "config.yaml").write_text(json.dumps(self.config, indent=1))  # JSON is YAML

    def configure(self, section: str = "cnngenre", **values) -> Beets:
        """Change settings of one section of the configuration (``cnngenre``, ``import``)."""
        self.config[section].update(values)
        self._save()
        return self

    def env(self) -> dict:
        """This process's environment with ``BEETSDIR``, the code first on ``PYTHONPATH``, and the probe."""
        probe = measure.probe_env(self.probe) if self.probe else {}
        paths = [probe.pop("PYTHONPATH")] if probe else []
        return {**os.environ, **probe, "BEETSDIR": str(self.home),
                "PYTHONPATH": os.pathsep.join([*paths, str(self.code)])}

    def run(self, *args, check: bool = True) -> measure.Measured:
        """``beet ARGS``, measured; raises on a non-zero exit when ``check``."""
        result = measure.run([BEET, *args], env=self.env(), cwd=self.home)
        if check and result.returncode != 0:
            raise RuntimeError(f"beet {' '.join(map(str, args))} failed ({result.returncode}):\n"
                               f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
        return result

    def imported_torch(self, result: measure.Measured) -> bool | None:
        """Whether the ``beet`` process of ``result`` imported torch (None without a probe or a record)."""
        return measure.imported(self.probe, result.pid, "torch") if self.probe else None

    def import_folder(self, folder: Path | list, expected: int, *flags) -> measure.Measured:
        """``beet import -A -q [FLAGS] FOLDER...`` (one folder or a list, one session); checks that
        ``expected`` items are in the library after it."""
        folders = folder if isinstance(folder, list) else [folder]
        result = self.run("import", "-A", "-q", *flags, *folders)
        found = self.item_count()
        if found != expected:
            raise RuntimeError(f"{found} items in the library after importing {folders}, expected {expected}:\n"
                               f"{result.stderr[-3000:]}")
        return result

    def item_count(self) -> int:
        with sqlite3.connect(self.db) as db:
            return db.execute("SELECT count(*) FROM items").fetchone()[0]

    def paths(self) -> list[str]:
        """Absolute paths of the library's items (``beet ls -p``; the database may hold relative ones)."""
        return self.run("ls", "-p").stdout.splitlines()

    def clear_cache(self) -> None:
        shutil.rmtree(self.cache, ignore_errors=True)

    def cache_usage(self) -> tuple[int, int]:
        """Entries of the feature cache and their bytes (any version's layout: every file but temporaries)."""
        sizes = [path.stat().st_size for path in self.cache.rglob("*")
                 if path.is_file() and not path.name.startswith(".")] if self.cache.exists() else []
        return len(sizes), sum(sizes)


SUMMARY = re.compile(r"predicted (\d+), skipped (\d+) .*?failed (\d+), ([\d.]+) s")


def _summary(result: measure.Measured) -> re.Match:
    match = SUMMARY.search(result.stdout)
    if not match:
        raise RuntimeError(f"no summary line in the output of beet cnngenre:\n{result.stdout[-2000:]}\n"
                           f"{result.stderr[-2000:]}")
    return match


def counts(result: measure.Measured) -> tuple[int, int, int]:
    """``(predicted, skipped, failed)`` from the summary line of ``beet cnngenre`` (old and new)."""
    predicted, skipped, failed, _ = _summary(result).groups()
    return int(predicted), int(skipped), int(failed)


def own_seconds(result: measure.Measured) -> float:
    """The seconds ``beet cnngenre`` says it took (its summary line): from loading the model to the summary,
    without the start-up of Python, beets and the plugin before it."""
    return float(_summary(result).group(4))


def unexpected(result: measure.Measured, predicted: int, skipped: int = 0) -> str | None:
    """What is wrong with a ``beet cnngenre`` run that should have predicted and skipped so many, or None."""
    done, passed, failed = counts(result)
    if (done, passed, failed) == (predicted, skipped, 0):
        return None
    return (f"predicted {done}, skipped {passed}, failed {failed} (expected {predicted}, {skipped}, 0): "
            f"{result.stderr[-300:]}")


def parse_run_args(parser, argv, sizes: dict):
    """Parse the arguments of a benchmark that runs beets: its own, then ``--quick``, ``--root`` and
    ``--out``. ``sizes`` maps each size option to its ``(full, quick)`` default."""
    parser.add_argument("--quick", action="store_true", help="a small run of a few minutes")
    parser.add_argument("--root", type=Path, default=ROOT, help="where libraries and runs live")
    parser.add_argument("--out", type=Path, help="report file (default bench/RESULTS.md; quick: "
                                                 "bench/out/RESULTS-quick.md)")
    args = parser.parse_args(argv)
    for name, (full, quick) in sizes.items():
        setattr(args, name, getattr(args, name) or (quick if args.quick else full))
    args.out = args.out or REPO / "bench" / ("out/RESULTS-quick.md" if args.quick else "RESULTS.md")
    return args
