#!/usr/bin/env python
"""SIGKILLs during ``beet cnngenre -w`` on large files without padding: the ``## Tag writes under SIGKILL``
section of ``bench/RESULTS.md``.

Usage (from the repository root)::

    python bench/tagwrite_kills.py [--kills 60] [--quick]

Two fresh beets libraries (``bench/library.py``), one holding a large MP3, the
other a large FLAC, made here from synthetic audio and tagged with no padding
left, so that cnngenre's tags cannot fit in place and each write goes through
a copy. ``beet cnngenre -W`` predicts first; then, for each kill, the file is
put back as it was, marked as lagging, and ``beet cnngenre -w`` (which then
only writes the lagging tags) is started; once its temporary copy appears,
the process is killed with SIGKILL after a delay drawn uniformly from the time
from the copy's appearance to its rename over the file in an unkilled run
(times 1.2, so that some kills land just after the rename). The formats take turns. A
file counts as damaged unless it is byte for byte the old file or the new one
(the new one: what an unkilled run writes) and mediafile reads it. A copy left
by a kill must be gone once the next run has started. Only runs the kill
ended count as kills.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import library
import measure
import numpy as np
import results
import soundfile as sf

SAMPLE_RATE = library.SAMPLE_RATE
PROBLEMS: list = []


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, help="kills that land (default 60; quick 6)")
    parser.add_argument("--megabytes", type=int, help="size of each file (default 40; quick 10)")
    return library.parse_run_args(parser, argv, {"kills": (60, 6), "megabytes": (40, 10)})


def sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def noise_tones(seconds: float, seed: int) -> np.ndarray:
    """Stereo tones in noise: audio that neither MP3 nor FLAC makes small."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tone = 0.3 * np.sin(2 * np.pi * rng.uniform(110, 440) * t)
    return np.stack([tone + 0.2 * rng.standard_normal(len(t)) for _ in range(2)], axis=1).astype(np.float32)


def large_file(folder: Path, ext: str, megabytes: int) -> Path:
    """A file of about ``megabytes`` MB whose tags fill their room exactly (no padding)."""
    import mutagen

    path = folder / f"large.{ext}"
    if ext == "flac":
        seconds = megabytes * 1e6 / (SAMPLE_RATE * 2 * 2 * 0.85)  # noise compresses to about 85%
        sf.write(path, noise_tones(seconds, seed=1), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    else:
        sf.write(path, noise_tones(120, seed=2), SAMPLE_RATE, format="MP3")  # about 2 MB
        data = path.read_bytes()
        path.write_bytes(data * max(1, round(megabytes * 1e6 / len(data))))  # MPEG frames: still decodes
    media = mutagen.File(path, easy=True)
    if media.tags is None:
        media.add_tags()
    media["title"], media["artist"], media["album"] = "Large", "Someone", "Kills"
    media.save(padding=lambda info: 0)
    return path


def set_lagging(beets: library.Beets) -> None:
    """Mark every item's tags as lagging the database (what ``beet cnngenre -W`` leaves)."""
    with sqlite3.connect(beets.db) as db:
        db.execute("DELETE FROM item_attributes WHERE key = 'cnn_write_pending'")
        db.execute("INSERT INTO item_attributes (entity_id, key, value) SELECT id, 'cnn_write_pending', '1' "
                   "FROM items")


def temp_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.cnngenre-tmp{path.suffix}")


def start_write(beets: library.Beets) -> subprocess.Popen:
    return subprocess.Popen([str(library.BEET), "cnngenre", "-w"], env=beets.env(), cwd=beets.home,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_copy(process: subprocess.Popen, temp: Path, stale: bool) -> float | None:
    """The moment a new temporary copy appears (None if the process ended first).

    A ``stale`` copy (left by the last kill) must go first: the new one may get its inode number.
    """
    while process.poll() is None:
        if temp.exists() != stale:
            if stale:
                stale = False
            else:
                return time.perf_counter()
        time.sleep(0.0005)
    return None


class Library:
    """One format's library: the file, its old and new bytes, how long a write takes after its copy appears."""

    def __init__(self, ext: str, home: Path, megabytes: int):
        self.ext = ext
        self.beets = library.Beets(home / ext)
        music = self.beets.home / "music"
        music.mkdir()
        self.path = large_file(music, ext, megabytes)
        self.master = home / f"old.{ext}"
        shutil.copyfile(self.path, self.master)
        self.old = sha(self.master)
        self.beets.import_folder(music, 1)
        self.beets.run("cnngenre", "-W")
        process = start_write(self.beets)
        temp = temp_of(self.path)
        appeared = wait_for_copy(process, temp, False)
        while temp.exists():  # until it has taken the file's place
            time.sleep(0.0005)
        self.window = time.perf_counter() - appeared if appeared else 0.0
        process.communicate()
        if appeared is None or process.returncode != 0:
            raise RuntimeError(f"{ext}: the unkilled write did not go through a copy ({process.returncode})")
        self.new = sha(self.path)
        self.size = self.path.stat().st_size

    def restore(self) -> None:
        shutil.copyfile(self.master, self.path)
        set_lagging(self.beets)

    def check(self) -> str:
        """``old``, ``new`` or ``damaged``."""
        import mediafile

        digest = sha(self.path)
        try:
            mediafile.MediaFile(str(self.path))
        except Exception as error:  # noqa: BLE001 -- any failure to read is damage
            PROBLEMS.append(f"{self.ext}: mediafile cannot read the file after a kill: {error}")
            return "damaged"
        return {self.old: "old", self.new: "new"}.get(digest, "damaged")


def run(kills: int, megabytes: int, root: Path) -> dict:
    rng = random.Random(19)
    libraries = [Library(ext, root, megabytes) for ext in ("mp3", "flac")]
    counts = {lib.ext: {"kills": 0, "old": 0, "new": 0, "damaged": 0, "copy left": 0, "copy removed": 0,
                        "not killed": 0} for lib in libraries}
    turn = 0
    while sum(c["kills"] for c in counts.values()) < kills:
        lib = libraries[turn % len(libraries)]
        turn += 1
        count = counts[lib.ext]
        temp = temp_of(lib.path)
        stale = temp.exists()
        lib.restore()
        process = start_write(lib.beets)
        appeared = wait_for_copy(process, temp, stale)
        if stale and (appeared is not None or process.returncode == 0):
            count["copy removed"] += 1  # the run got past its start: the old copy is gone or replaced
        if appeared is None:
            process.communicate()
            count["not killed"] += 1
            continue
        delay = rng.uniform(0, lib.window * 1.2)
        time.sleep(max(0.0, appeared + delay - time.perf_counter()))
        process.send_signal(signal.SIGKILL)
        process.communicate()
        if process.returncode != -signal.SIGKILL:
            count["not killed"] += 1
            continue
        count["kills"] += 1
        count[lib.check()] += 1
        count["copy left"] += temp.exists()
        measure.log(f"kill {sum(c['kills'] for c in counts.values())}: {lib.ext} after {delay * 1000:.0f} ms")
    for lib in libraries:  # a last run removes what the last kill left and writes the file
        left = temp_of(lib.path).exists()
        lib.beets.run("cnngenre", "-w")
        counts[lib.ext]["copy removed"] += left and not temp_of(lib.path).exists()
        if lib.check() != "new":
            PROBLEMS.append(f"{lib.ext}: the run after the last kill did not write the file")
    return {"counts": counts, "libraries": libraries}


def render(found: dict, kills: int) -> str:
    rows = []
    for lib in found["libraries"]:
        c = found["counts"][lib.ext]
        rows.append([lib.ext.upper(), f"{lib.size / 1e6:.0f} MB", f"{lib.window * 1000:.0f} ms", c["kills"],
                     c["damaged"], c["old"], c["new"], c["copy left"], c["copy removed"], c["not killed"]])
    damaged = sum(c["damaged"] for c in found["counts"].values())
    landed = sum(c["kills"] for c in found["counts"].values())
    return (f"{damaged} damaged files of {landed} SIGKILLs during `beet cnngenre -w` ({kills} asked for), "
            "each file without padding, so every write goes through a copy renamed over the file.\n\n"
            + results.table(["format", "size", "copy appears to rename", "kills", "damaged",
                             "old file", "new file", "copy left", "copy removed by the next run",
                             "runs that ended before the kill"], rows)
            + "\n\nA kill lands at a uniform moment of the time from the temporary copy's appearance to its "
              "rename over the file (times 1.2), measured in an unkilled run of the same library. "
              "\"Damaged\": neither the old bytes nor the new ones, or not readable by mediafile.\n")


def main(argv=None) -> None:
    results.use_this_checkout()
    started = time.perf_counter()
    args = parse_args(argv)
    root = args.root / "tagwrite-kills"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    found = run(args.kills, args.megabytes, root)
    filesystem = subprocess.run(["df", "--output=fstype", str(root)], capture_output=True, text=True).stdout
    context = results.context(results.command_line("tagwrite_kills.py", argv), started).rstrip("\n")
    body = (f"{context}\n- file system: {filesystem.split()[-1] if filesystem.split() else 'unknown'}; "
            "the machine was shared with other work\n\n" + render(found, args.kills))
    section = results.write_section("## Tag writes under SIGKILL", body, args.out, PROBLEMS)
    print(section)
    shutil.rmtree(root, ignore_errors=True)
    if PROBLEMS or any(c["damaged"] for c in found["counts"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
