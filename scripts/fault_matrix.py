"""Run the fault matrix (issue 22) through the real ``beet`` command and print a table.

Each case builds its own small beets library in a temporary folder, two
synthesised good tracks and the odd thing (a FIFO named ``x.mp3``, 20 GB of
sparse zeros, a damaged cache entry, a forged model, ...), runs
``beet cnngenre ...`` in a subprocess (``BEETSDIR`` set, this checkout on
``PYTHONPATH``) under a time limit, and compares what happened with what
should: one clear line naming the file and the reason, the run going on,
nothing unchecked stored, no traceback, nothing blocking::

    python scripts/fault_matrix.py              # every case
    python scripts/fault_matrix.py fifo cache   # the cases whose name holds a word
    python scripts/fault_matrix.py --timeout 60 --keep

It prints ``case | expected | observed | verdict`` rows (Markdown), and
exits 1 when a case fails. It is how anyone checks a release: no unit test
can stand in for the whole command with its workers, its database and its
terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np
import soundfile as sf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SR = 22050
VERBOSE = False
PREDICTION = ("cnn_genre", "cnn_genre_score", "cnn_genres", "cnn_scores", "cnn_model")


@dataclasses.dataclass
class Run:
    """What one ``beet`` command did."""

    args: tuple
    returncode: int | None
    out: str
    err: str
    seconds: float

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    @property
    def text(self) -> str:
        return self.out + self.err

    def summary(self) -> str:
        """The run's last ``cnngenre:`` line, or its last line."""
        lines = [line for line in self.out.splitlines() if line.startswith("cnngenre:")]
        lines = lines or self.text.strip().splitlines() or [""]
        return lines[-1].strip()

    def noise(self) -> list:
        """Things a user must never see: a traceback (a line that starts one, not a quoted name that
        holds the word), a numpy warning, loky's leak warnings."""
        lines = [line.strip() for line in self.text.splitlines()]
        found = []
        if any(line.startswith("Traceback (most recent call last)") for line in lines):
            found.append("Traceback")
        if any(line.startswith("KeyError") for line in lines):
            found.append("KeyError")
        found += [word for word in ("RuntimeWarning", "leaked semlock") if word in self.text]
        return found

    def describe(self) -> str:
        if self.timed_out:
            return f"TIMED OUT after {self.seconds:.0f} s"
        return f"exit {self.returncode}, {self.seconds:.0f} s"


class Library:
    """A beets configuration folder and library of a few files, for one case."""

    def __init__(self, root: str, model: str | None, extra_config: str = ""):
        self.root = root
        self.music = os.path.join(root, "music")
        self.beetsdir = os.path.join(root, "beets")
        self.cache = os.path.join(root, "cache")
        os.makedirs(self.music)
        os.makedirs(self.beetsdir)
        self.db = os.path.join(self.beetsdir, "library.db")
        model_line = f"  model: {model}\n" if model else ""
        with open(os.path.join(self.beetsdir, "config.yaml"), "w") as handle:
            handle.write(f"directory: {self.music}\nlibrary: {self.db}\nplugins: [cnngenre]\n"
                         f"cnngenre:\n{model_line}  cache_dir: {self.cache}\n  jobs: 2\n{extra_config}")
        self.ids = {}

    def tone(self, name: str, seconds: float = 4.0, seed: int = 0, **write) -> str:
        path = os.path.join(self.music, name)
        sf.write(path, _music(seconds, seed), SR, **write)
        return path

    def add(self, path: str, album: str | None = None, genre: str = "Rock") -> int:
        """Add ``path`` (read from its tags when they can be read) to the library."""
        from beets.library import Item
        from beets.library import Library as BeetsLibrary

        with contextlib.redirect_stdout(io.StringIO()):  # the backups before schema migrations of a new database
            lib = BeetsLibrary(self.db, self.music)
        try:
            item = Item.from_path(path) if os.path.isfile(path) and not os.path.islink(path) else None
        except Exception:
            item = None
        item = item or Item(path=os.fsencode(path))
        # The title is not the file's name: the lines that name the file are then the warnings about it.
        item.title, item.genres, item.artist = os.path.splitext(os.path.basename(path))[0], [genre], "Artist"
        if album:
            item.album, item.albumartist = album, "Album Artist"
            existing = lib.albums(f"album:{album}").get()
            if existing:
                item.album_id = existing.id
                lib.add(item)
            else:
                lib.add_album([item])
        else:
            lib.add(item)
        self.ids[os.path.basename(path)] = item.id
        lib._close()
        return item.id

    def good(self, count: int = 2, album: str | None = None) -> list:
        paths = []
        for n in range(count):
            path = self.tone(f"good{n}.flac", seed=n, format="FLAC")
            self.add(path, album, genre=("Rock", "Jazz")[n % 2])
            paths.append(path)
        return paths

    def beet(self, *args, timeout: float = 90.0, during=None) -> Run:
        env = {**os.environ, "BEETSDIR": self.beetsdir, "PYTHONWARNINGS": "default",
               "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, "-c", "import sys; from beets.ui import main; sys.exit(main())", *args]
        start = time.monotonic()
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   stdin=subprocess.DEVNULL, text=True, errors="replace", start_new_session=True)
        if during is not None:
            during(process)
        try:
            out, err = process.communicate(timeout=timeout)
            code = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            code = None
        run = Run(args, code, out, err, time.monotonic() - start)
        if VERBOSE:
            print(f"--- beet {' '.join(args)}: {run.describe()}\n{run.text[-3000:]}", file=sys.stderr)
        return run

    def stored(self, item_id: int) -> dict:
        """The item's non-empty cnn_* fields."""
        with sqlite3.connect(self.db) as connection:
            rows = connection.execute("SELECT key, value FROM item_attributes WHERE entity_id = ? "
                                      "AND key LIKE 'cnn_%'", (item_id,)).fetchall()
        return {key: value for key, value in rows if value not in (None, "", "0.0")}

    @staticmethod
    def lines_about(run: Run, name: str) -> list:
        """The lines of a run that name a file (titles are not file names: see :meth:`add`)."""
        return [line for line in run.text.splitlines() if name in line]

    def predicted(self, item_id: int) -> bool:
        return all(self.stored(item_id).get(name) for name in PREDICTION)

    def cache_entries(self) -> list:
        found = []
        for folder, _, names in os.walk(self.cache):
            found += [os.path.join(folder, n) for n in names if n.endswith(".npy") and not n.startswith(".")]
        return sorted(found)


def _music(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    y = sum(0.2 * np.sin(2 * np.pi * f * t) for f in rng.uniform(110, 880, 4))
    y = y * (1 + 0.5 * np.sin(2 * np.pi * 2 * t)) + 0.01 * rng.standard_normal(len(t))
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


# -- Verdicts ---------------------------------------------------------------


def fails_with_line(lib: Library, run: Run, name: str, reason: str | tuple = ()) -> tuple[bool, str]:
    """The odd file gives one line naming it (and the reason), the others are predicted, no noise."""
    reasons = (reason,) if isinstance(reason, str) else reason
    lines = lib.lines_about(run, name)
    good = [i for n, i in lib.ids.items() if n.startswith("good")]
    good_done = sum(lib.predicted(i) for i in good)
    odd_stored = lib.predicted(lib.ids[name]) if name in lib.ids else False
    ok = (not run.timed_out and run.returncode == 0 and len(lines) == 1
          and all(r.lower() in lines[0].lower() for r in reasons)
          and good_done == len(good) and not odd_stored and not run.noise())
    line = lines[0].split(": ", 1)[-1] if lines else "(no line)"
    observed = f"{run.describe()}; {len(lines)} line(s): {line!r}; good {good_done}/{len(good)} predicted"
    if odd_stored:
        observed += "; ODD FILE STORED AS A PREDICTION"
    return ok, _with_noise(observed, run)


def predicted(lib: Library, run: Run, name: str) -> tuple[bool, str]:
    """The odd-but-valid file is predicted, no noise."""
    done = lib.predicted(lib.ids[name])
    lines = lib.lines_about(run, name)
    ok = not run.timed_out and run.returncode == 0 and done and not run.noise()
    observed = f"{run.describe()}; {'predicted' if done else 'NOT predicted'}"
    if lines:
        observed += f"; {lines[0].split(': ', 1)[-1]!r}"
    return ok, _with_noise(observed, run)


def finishes(lib: Library, run: Run, expect_all: bool = True) -> tuple[bool, str]:
    """The run ends by itself, exit 0, no noise (and every good item predicted)."""
    good = [i for n, i in lib.ids.items() if n.startswith("good")]
    done = sum(lib.predicted(i) for i in good)
    ok = not run.timed_out and run.returncode == 0 and not run.noise() and (done == len(good) or not expect_all)
    observed = f"{run.describe()}; {run.summary()[:90]!r}"
    if expect_all:
        observed += f"; good {done}/{len(good)} predicted"
    return ok, _with_noise(observed, run)


def refused(lib: Library, run: Run, words: tuple) -> tuple[bool, str]:
    """A one-line error naming the problem; nothing stored."""
    stored = sum(lib.predicted(i) for i in lib.ids.values())
    error_lines = [line for line in run.err.strip().splitlines() if line.strip()]
    ok = (not run.timed_out and run.returncode not in (0, None) and len(error_lines) == 1
          and all(w.lower() in error_lines[0].lower() for w in words) and stored == 0 and not run.noise())
    shown = error_lines[0][:110] if error_lines else run.summary()[:110]
    observed = f"{run.describe()}; {len(error_lines)} stderr line(s): {shown!r}; {stored} items stored"
    return ok, _with_noise(observed, run)


def _with_noise(observed: str, run: Run) -> str:
    noise = run.noise()
    return observed + (f"; PRINTS {', '.join(noise)}" if noise else "")


# -- Cases -------------------------------------------------------------------

CASES = []


def case(name: str, expected: str):
    def register(function):
        CASES.append((name, expected, function))
        return function
    return register


def _fifo(lib: Library, name: str = "x.mp3") -> str:
    path = os.path.join(lib.music, name)
    os.mkfifo(path)
    lib.add(path)
    return path


@case("fifo x.mp3, cache on", "one line 'not a regular file (FIFO)'; the good files predicted")
def fifo_cached(lib, timeout):
    lib.good()
    _fifo(lib)
    return fails_with_line(lib, lib.beet("cnngenre", timeout=timeout), "x.mp3", "FIFO")


@case("fifo x.mp3, --no-cache", "one line 'not a regular file (FIFO)'; the good files predicted")
def fifo_uncached(lib, timeout):
    lib.good()
    _fifo(lib)
    return fails_with_line(lib, lib.beet("cnngenre", "--no-cache", timeout=timeout), "x.mp3", "FIFO")


def _fifo_finishes(option):
    def run(lib, timeout):
        lib.good()
        _fifo(lib)
        return finishes(lib, lib.beet("cnngenre", option, timeout=timeout), expect_all=False)
    return run


for _option in ("--suspects", "--prune-cache"):
    case(f"fifo x.mp3, {_option}", "finishes, exit 0, no traceback")(_fifo_finishes(_option))


@case("fifo x.mp3, --eval", "finishes (or one-line refusal: too few items), no traceback")
def fifo_eval(lib, timeout):
    lib.good()
    _fifo(lib)
    run = lib.beet("cnngenre", "--eval", timeout=timeout)
    ok = not run.timed_out and not run.noise() and run.returncode in (0, 1)
    return ok, _with_noise(f"{run.describe()}; {run.summary()[:100]!r}", run)


@case("20 GB sparse zeros .mp3", "one line, fails in seconds; the good files predicted")
def sparse_zeros(lib, timeout):
    lib.good()
    path = os.path.join(lib.music, "zeros.mp3")
    with open(path, "wb") as handle:
        handle.truncate(20 * 2**30)  # sparse: no disk used
    lib.add(path)
    run = lib.beet("cnngenre", timeout=timeout)
    ok, observed = fails_with_line(lib, run, "zeros.mp3")
    return ok and run.seconds < timeout / 2, observed


def _tamper_cache(lib: Library, replace) -> tuple[bool, str]:
    lib.good()
    first = lib.beet("cnngenre", "-j", "1", timeout=90)
    entries = lib.cache_entries()
    if first.returncode != 0 or not entries:
        return False, f"setup run failed ({first.describe()}, {len(entries)} entries)"
    replace(entries[0])
    run = lib.beet("cnngenre", "-f", timeout=lib.timeout)
    return finishes(lib, run)


@case("FIFO in place of a cache entry", "entry skipped and recomputed; run finishes")
def cache_fifo(lib, timeout):
    def replace(entry):
        os.unlink(entry)
        os.mkfifo(entry)
    return _tamper_cache(lib, replace)


@case("symlink to /dev/zero as a cache entry", "entry skipped and recomputed; run finishes")
def cache_dev_zero(lib, timeout):
    def replace(entry):
        os.unlink(entry)
        os.symlink("/dev/zero", entry)
    return _tamper_cache(lib, replace)


def _entry_with_header(header: bytes):
    def replace(entry):
        with open(entry, "rb") as handle:
            data = handle.read()
        magic = b"cnngenre-features-1\n"
        length = int.from_bytes(data[len(magic):len(magic) + 4], "little")
        rest = data[len(magic) + 4 + length:-4]
        body = magic + len(header).to_bytes(4, "little") + header + rest
        with open(entry, "wb") as handle:
            handle.write(body + zlib.crc32(body).to_bytes(4, "little"))
    return replace


@case("cache entry, valid checksum, JSON header a list", "one recomputation; run finishes")
def cache_header_list(lib, timeout):
    return _tamper_cache(lib, _entry_with_header(b"[1, 2, 3]"))


@case("cache entry, valid checksum, JSON header null", "one recomputation; run finishes")
def cache_header_null(lib, timeout):
    return _tamper_cache(lib, _entry_with_header(b"null"))


@case("cache entry, valid checksum, header not JSON", "one recomputation; run finishes")
def cache_header_garbage(lib, timeout):
    return _tamper_cache(lib, _entry_with_header(b"\xff\xfe{"))


def _float_wav(lib, name, values, subtype):
    path = os.path.join(lib.music, name)
    sf.write(path, values, SR, subtype=subtype)
    lib.add(path)


@case("float WAV of NaN", "one line naming the file; nothing stored")
def nan_wav(lib, timeout):
    lib.good()
    _float_wav(lib, "nan.wav", np.full(4 * SR, np.nan, np.float32), "FLOAT")
    return fails_with_line(lib, lib.beet("cnngenre", timeout=timeout), "nan.wav")


@case("float WAV of +inf", "one line naming the file; nothing stored")
def inf_wav(lib, timeout):
    lib.good()
    _float_wav(lib, "inf.wav", np.full(4 * SR, np.inf, np.float32), "FLOAT")
    return fails_with_line(lib, lib.beet("cnngenre", timeout=timeout), "inf.wav")


@case("double WAV of 1e300", "one line naming the file; nothing stored")
def huge_double_wav(lib, timeout):
    lib.good()
    _float_wav(lib, "huge.wav", np.full(4 * SR, 1e300, np.float64), "DOUBLE")
    return fails_with_line(lib, lib.beet("cnngenre", timeout=timeout), "huge.wav")


@case("float WAV near float32's limit", "one line, no numpy RuntimeWarning")
def float32_limit(lib, timeout):
    lib.good()
    t = np.arange(4 * SR) / SR
    _float_wav(lib, "limit.wav", (3e38 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), "FLOAT")
    return fails_with_line(lib, lib.beet("cnngenre", timeout=timeout), "limit.wav")


def _edit(path: str, change) -> None:
    """Rewrite a file with ``change`` applied to its bytes (a bytearray, changed in place)."""
    with open(path, "rb") as handle:
        data = bytearray(handle.read())
    change(data)
    with open(path, "wb") as handle:
        handle.write(data)


@case("streaming WAV, data size 0", "predicted (FFmpeg reads it)")
def streaming_wav(lib, timeout):
    lib.good()
    path = lib.tone("stream.wav", seconds=30, subtype="PCM_16")

    def no_sizes(data):
        found = data.find(b"data")
        data[4:8] = data[found + 4:found + 8] = bytes(4)  # RIFF and data sizes, as a stream leaves them
    _edit(path, no_sizes)
    lib.add(path)
    return predicted(lib, lib.beet("cnngenre", timeout=timeout), "stream.wav")


@case("FLAC whose STREAMINFO claims 1000 samples", "predicted where the audio really is")
def flac_lying(lib, timeout):
    lib.good()
    path = lib.tone("liar.flac", seconds=60, format="FLAC")

    def claim_1000_samples(data):
        # STREAMINFO's total samples: the low 36 bits of bytes 13..17 of its body, which starts at 8.
        offset = 8 + 13
        packed = int.from_bytes(data[offset:offset + 5], "big")
        data[offset:offset + 5] = ((packed & ~((1 << 36) - 1)) | 1000).to_bytes(5, "big")
    _edit(path, claim_1000_samples)
    lib.add(path)
    return predicted(lib, lib.beet("cnngenre", timeout=timeout), "liar.flac")


@case("symlink loop named loop.mp3", "one line 'symlink loop'")
def symlink_loop(lib, timeout):
    lib.good()
    path = os.path.join(lib.music, "loop.mp3")
    os.symlink("loop.mp3", path)
    lib.add(path)
    return fails_with_line(lib, lib.beet("cnngenre", timeout=timeout), "loop.mp3", "symlink loop")


@case("read-only file, -w twice", "one line per file per run")
def read_only(lib, timeout):
    if os.geteuid() == 0:
        return None, "SKIPPED: running as root, which writes read-only files"
    paths = lib.good()
    os.chmod(paths[0], 0o444)
    runs = [lib.beet("cnngenre", "-w", timeout=timeout), lib.beet("cnngenre", "-w", timeout=timeout)]
    counts = [len(lib.lines_about(run, "good0.flac")) for run in runs]
    ok = all(not r.timed_out and r.returncode == 0 and not r.noise() for r in runs) and all(c <= 1 for c in counts)
    observed = f"{runs[0].describe()}; lines naming the file per run: {counts}"
    return ok, _with_noise(observed, runs[0])


@case("leftover .X.cnngenre-tmp.ext", "removed by the next run, and said")
def leftover_temp(lib, timeout):
    paths = lib.good()
    leftover = os.path.join(lib.music, ".good0.flac.cnngenre-tmp.flac")
    shutil.copy(paths[0], leftover)
    run = lib.beet("cnngenre", timeout=timeout)
    gone = not os.path.exists(leftover)
    ok = gone and not run.timed_out and run.returncode == 0 and not run.noise()
    observed = f"{run.describe()}; leftover {'removed' if gone else 'STILL THERE'}"
    return ok, _with_noise(observed, run)


@case("cache_dir: ${UNDEFINED}/c", "configuration error naming the variable; no such folder made")
def undefined_variable(lib, timeout):
    lib.good()
    with open(os.path.join(lib.beetsdir, "config.yaml")) as handle:
        text = handle.read().replace(f"cache_dir: {lib.cache}", "cache_dir: ${UNDEFINED}/c")
    with open(os.path.join(lib.beetsdir, "config.yaml"), "w") as handle:
        handle.write(text)
    run = lib.beet("cnngenre", timeout=timeout)
    made = [p for p in (os.path.join(lib.beetsdir, "${UNDEFINED}"), os.path.join(ROOT, "${UNDEFINED}"),
                        os.path.join(os.getcwd(), "${UNDEFINED}")) if os.path.exists(p)]
    ok = run.returncode not in (0, None) and "UNDEFINED" in run.err and not made and not run.noise()
    observed = f"{run.describe()}; {run.err.strip()[-100:]!r}; {'FOLDER MADE' if made else 'no folder'}"
    return ok, _with_noise(observed, run)


@case("album score from an edited cnn_scores 'blues inf'", "album score finite, in [0, 1]")
def album_from_edited_text(lib, timeout):
    lib.good(album="A")
    first = lib.beet("cnngenre", timeout=timeout)
    if first.returncode != 0:
        return False, f"setup run: {first.describe()}"
    with sqlite3.connect(lib.db) as connection:
        connection.execute("UPDATE item_attributes SET value = 'blues inf' WHERE key = 'cnn_scores' "
                           "AND entity_id = ?", (lib.ids["good0.flac"],))
    run = lib.beet("cnngenre", timeout=timeout)
    with sqlite3.connect(lib.db) as connection:
        # The album's own field (cnn_album_genre_score), or the name it shared with items before.
        row = connection.execute("SELECT value FROM album_attributes WHERE key IN ('cnn_album_genre_score', "
                                 "'cnn_genre_score') ORDER BY key").fetchone()
    try:
        score = float(row[0]) if row else None
    except ValueError:
        score = None
    ok = score is not None and 0.0 <= score <= 1.0 and not run.noise() and run.returncode == 0
    return ok, _with_noise(f"{run.describe()}; album score {row[0] if row else None!r}", run)


@case("worker killed mid-run (SIGKILL)", "that file's batch lost at most; no tracebacks, no leak warnings")
def worker_killed(lib, timeout):
    for n in range(12):
        path = lib.tone(f"good{n}.wav", seconds=30, seed=n)
        lib.add(path)
    killed = []

    def kill_a_worker(process):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None and not killed:
            for pid in _descendants(process.pid):
                cmdline = _cmdline(pid)
                if "resource_tracker" not in cmdline and ("loky" in cmdline or "multiprocessing" in cmdline):
                    time.sleep(3.0)  # let it start on a batch
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
            time.sleep(0.1)

    run = lib.beet("cnngenre", "--no-cache", timeout=timeout, during=kill_a_worker)
    done = sum(lib.predicted(i) for i in lib.ids.values())
    ok = bool(killed) and not run.timed_out and not run.noise() and done >= len(lib.ids) - 4
    observed = f"{run.describe()}; killed {len(killed)} worker(s); {done}/{len(lib.ids)} predicted"
    return ok, _with_noise(observed, run)


def _descendants(pid: int) -> list:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as handle:
                children = [int(c) for c in handle.read().split()]
        except OSError:
            children = []
        found += children
        todo += children
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _forged_model(lib: Library, change) -> str:
    """The default model with ``change(model)`` applied, saved next to the library.

    A forger does not run cnngenre's checks: the check ``save`` makes of what it
    writes (the loader's, ``model._from_bytes``) is skipped here, so the file tests
    the loader that ``beet`` runs.
    """
    import copy
    from unittest import mock

    from genre_cnn_core import DEFAULT_MODEL, GenreModel
    from genre_cnn_core import model as model_module

    model = copy.deepcopy(GenreModel.load(DEFAULT_MODEL))
    change(model)
    path = os.path.join(lib.root, "forged" + os.path.splitext(DEFAULT_MODEL)[1])
    unchecked = (mock.patch.object(model_module, "_from_bytes", lambda data: None)
                 if hasattr(model_module, "_from_bytes") else contextlib.nullcontext())
    with unchecked:
        model.save(path)
    with open(os.path.join(lib.beetsdir, "config.yaml"), "a") as handle:
        handle.write(f"  model: {path}\n")
    return path


def _model_case(lib, timeout, change, words=("forged",)):
    lib.good()
    try:
        _forged_model(lib, change)
    except Exception as error:  # this version's writer refuses to write such a model: nothing to load
        return None, f"this version's model writer refuses it ({type(error).__name__}: {str(error)[:80]})"
    run = lib.beet("cnngenre", timeout=timeout)
    return refused(lib, run, words)


def _set_name(value):
    def change(model):
        model.metadata["name"] = value
    return change


def _set_genre(value):
    def change(model):
        model.genres = [value, *model.genres[1:]]
        model.spellings = [value, *model.spellings[1:]]
    return change


def _forged_string_case(change, word):
    return lambda lib, timeout: _model_case(lib, timeout, change, (word,))


for _name, _change, _word in [
    ("model name a dict", _set_name({"a": 1}), "name"),
    ("model name 100,000 characters", _set_name("x" * 100_000), "name"),
    ("model name with newline and fake Traceback", _set_name("m\nTraceback (most recent call last):\n"), "name"),
    ("model name with ANSI escapes", _set_name("m\x1b[2J\x1b[31m"), "name"),
    ("model genre 'rock; pop'", _set_genre("rock; pop"), "genre"),
    ("model genre with ESC[2J", _set_genre("rock\x1b[2J"), "genre"),
]:
    case(_name, "model refused, one line; nothing stored")(_forged_string_case(_change, _word))


@case("model settings: 64 excerpts of 600 s", "model refused, one line; nothing stored")
def model_settings(lib, timeout):

    def change(model):
        model.settings = dataclasses.replace(model.settings, n_excerpts=64, excerpt_seconds=600.0)
    return _model_case(lib, timeout, change, ())


@case("model with an extra 8 MB tensor", "model refused, one line (or the id covers it)")
def model_extra_tensor(lib, timeout):
    def change(model):
        model.weights["extra"] = np.zeros(2 * 2**20, np.float32)
    return _model_case(lib, timeout, change, ())


@case("full disk (64-item database)", "change lines only for what was stored")
def full_disk(lib, timeout):
    return None, ("SKIPPED: a full disk needs a small file system (mount, loop device or tmpfs with a size: "
                  "root); the datamodel unit test covers it")


# -- Main --------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("words", nargs="*", help="run only the cases whose name holds one of these")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds a case's command may run")
    parser.add_argument("--model", help="model file for the cases that do not forge one (default: shipped)")
    parser.add_argument("--keep", action="store_true", help="keep each case's folder")
    parser.add_argument("--verbose", action="store_true", help="show what each command printed (stderr)")
    args = parser.parse_args(argv)
    global VERBOSE
    VERBOSE = args.verbose
    sys.path.insert(0, ROOT)

    chosen = [c for c in CASES if not args.words or any(w.lower() in c[0].lower() for w in args.words)]
    rows, failures = [], 0
    print("| case | expected | observed | verdict |\n|---|---|---|---|", flush=True)
    for name, expected, function in chosen:
        root = tempfile.mkdtemp(prefix="cnngenre-faults-")
        lib = Library(root, args.model)
        lib.timeout = args.timeout
        try:
            ok, observed = function(lib, args.timeout)
        except Exception as error:
            ok, observed = False, f"the matrix itself failed: {type(error).__name__}: {error}"
        finally:
            if not args.keep:
                _remove(root)
        verdict = "skip" if ok is None else "PASS" if ok else "FAIL"
        failures += ok is False
        row = f"| {name} | {expected} | {observed.replace('|', '/')} | {verdict} |"
        rows.append(row)
        print(row, flush=True)
    print(f"\n{len(chosen) - failures} of {len(chosen)} cases pass (or are skipped)", flush=True)
    return 1 if failures else 0


def _remove(root: str) -> None:
    """Remove a case's folder: FIFOs, loops and read-only files included."""
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = os.path.join(folder, name)
            try:
                if not os.path.islink(path) and stat.S_ISDIR(os.lstat(path).st_mode):
                    os.chmod(path, 0o755)
            except OSError:
                pass
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
