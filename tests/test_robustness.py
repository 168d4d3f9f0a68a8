"""Bad files, interruptions and concurrent runs lose nothing (issue: robustness)."""

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import tracemalloc
import uuid

import numpy as np
import pytest
import soundfile as sf
from beets.library import Item, Library
from beets.test.helper import PluginTestHelper
from processes import processes_with
from special_files import CountingFile, fifo_at

from genre_cnn_core.audio import AudioError, load_excerpts

from synth import synth_track, write_audio
from torch_support import needs_torch

SR = 22050


def _tone(seconds, sr=SR, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 2 * t))
    return np.repeat(y[:, None], channels, axis=1).astype(np.float32) if channels > 1 else y.astype(np.float32)


def _bad_files(folder):
    """name -> path of files that must each give one warning line."""
    good = folder / "good.flac"
    write_audio(good, synth_track("techno", 1), SR)
    flac_bytes = good.read_bytes()
    mp3 = folder / "good.mp3"
    write_audio(mp3, synth_track("techno", 2), SR)
    bad = {
        "zero-byte": (folder / "zero.mp3", b""),
        "text named .mp3": (folder / "text.mp3", b"just some text, not audio\n" * 100),
        "random bytes": (folder / "noise.ogg", os.urandom(5000)),
        "truncated FLAC header": (folder / "trunc_head.flac", flac_bytes[:30]),
        "truncated MP3 header": (folder / "trunc_head.mp3", mp3.read_bytes()[:20]),
    }
    paths = {}
    for name, (path, content) in bad.items():
        path.write_bytes(content)
        paths[name] = path
    paths["missing on disk"] = folder / "missing.mp3"
    directory = folder / "directory.mp3"
    directory.mkdir()
    paths["a directory"] = directory
    return paths


def _odd_but_valid_files(folder):
    """name -> path of unusual files that must be predicted."""
    files = {}

    def add(name, filename, data, sr, **kw):
        path = folder / filename
        sf.write(str(path), data, sr, **kw)
        files[name] = path

    for sr in (8000, 44100, 96000, 192000):
        add(f"{sr} Hz", f"rate{sr}.wav", _tone(4, sr), sr)
    add("6 channels", "six.wav", _tone(4, SR, 6), SR)
    add("stereo", "stereo.flac", _tone(4, SR, 2), SR)
    for subtype in ("PCM_U8", "PCM_16", "PCM_24", "FLOAT"):
        add(f"{subtype} WAV", f"depth_{subtype}.wav", _tone(4), SR, subtype=subtype)
    add("silence", "silence.wav", np.zeros(SR * 4, np.float32), SR)
    add("noise", "noise.wav", np.random.default_rng(0).uniform(-1, 1, SR * 4).astype(np.float32), SR)
    add("0.5 s", "half_second.wav", _tone(0.5), SR)
    add("exactly one excerpt", "one_excerpt.wav", _tone(10.0), SR)
    add("FLAC named .mp3", "flac_inside.mp3", _tone(4), SR, format="FLAC")
    long_name = folder / ("long_" + "x" * 230 + ".wav")
    sf.write(str(long_name), _tone(4), SR)
    files["very long name"] = long_name
    raw_name = os.fsencode(str(folder)) + b"/caf\xe9_latin1.wav"  # not UTF-8
    sf.write(str(folder / "latin1.wav"), _tone(4), SR)
    os.rename(folder / "latin1.wav", raw_name)
    files["non-UTF-8 name"] = raw_name
    full = folder / "truncated_mid.flac"
    write_audio(full, _tone(60), SR)
    data = full.read_bytes()
    full.write_bytes(data[: len(data) // 2])  # cut mid-frame: the first half still plays
    files["truncated mid-stream FLAC"] = full
    return files


class TestBadInput(PluginTestHelper):
    plugin = "cnngenre"

    def test_bad_and_odd_files(self, scratch_model_path, tmp_path, caplog, capsys):
        self.config["cnngenre"]["model"] = scratch_model_path
        bad = _bad_files(tmp_path)
        odd = _odd_but_valid_files(tmp_path)
        items = {}
        for name, path in {**bad, **odd}.items():
            item = Item(path=os.fsencode(path), title=name, genres=["Keep Me"], comments="untouched")
            self.lib.add(item)
            items[name] = item
        before = {name: dict(self.lib.get_item(item.id)) for name, item in items.items() if name in bad}
        file_bytes = {name: p.read_bytes() for name, p in bad.items() if p.is_file()}

        self.run_command("cnngenre", "-w", "-j", "2")  # exit status 0: the run completed

        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        for name, path in bad.items():
            lines = [w for w in warnings if os.fsdecode(path) in w]
            assert len(lines) == 1, (name, warnings)
            assert "\n" not in lines[0] and "Traceback" not in lines[0]
            assert dict(self.lib.get_item(items[name].id)) == before[name], name
            if name in file_bytes:
                assert path.read_bytes() == file_bytes[name], name
        for name in odd:
            item = self.lib.get_item(items[name].id)
            assert item.get("cnn_model"), (name, warnings)
            assert 0.0 <= item.cnn_genre_score <= 1.0 and list(item.genres) == ["Keep Me"]
        assert f"failed {len(bad)}" in capsys.readouterr().out

    @pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
    def test_unreadable_file(self, scratch_model_path, tmp_path, caplog):
        self.config["cnngenre"]["model"] = scratch_model_path
        path = tmp_path / "secret.wav"
        sf.write(str(path), _tone(2), SR)
        path.chmod(0)
        self.lib.add(Item(path=os.fsencode(path), title="secret"))
        self.run_command("cnngenre", "-j", "1")
        assert any("permission denied" in r.getMessage() for r in caplog.records)

    @needs_torch  # trains the scratch CNN
    def test_odd_genres_in_training(self, library_files, caplog, capsys):
        for path, _ in library_files:
            self.lib.add(Item.from_path(str(path)))
        for value in ([""], [" ; / "], ["x" * 300], ["ロック", "Rock"], ["Ελληνικά"]):
            item = Item.from_path(str(library_files[0][0]))
            item.genres = value
            self.lib.add(item)
        # -f: a model of an epoch or two is one the usability check calls unusable; -t saves it only when forced
        self.run_command("cnngenre", "-t", "-f", "-b", "scratch", "-m", "4", "-e", "2", "-j", "1")
        out = capsys.readouterr().out
        assert "saved scratch-" in out and "left out: " in out and "fewer than 4 tracks" in out


def test_two_hour_file_is_not_loaded_whole(tmp_path):
    path = tmp_path / "two_hours.flac"
    with sf.SoundFile(str(path), "w", 8000, 1, format="FLAC") as f:
        block = np.zeros(8000 * 60, np.float32)
        for minute in range(120):
            block[:100] = minute / 200  # not pure silence, so the encoder does some work
            f.write(block)
    tracemalloc.start()
    excerpts = load_excerpts(str(path), 16000, 10.0, 3)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(excerpts) == 3 and all(len(e) == 160000 for e in excerpts)
    assert peak < 20_000_000  # the whole file decoded would be 230 MB of float32


# ------------------------------------------------------- real processes


def _beets_dir(tmp_path, files, model_path):
    """A beets config dir with a library of ``files``, for `beet` subprocesses."""
    folder = tmp_path / "beets"
    folder.mkdir()
    (folder / "config.yaml").write_text(
        f"directory: {tmp_path}\nlibrary: {folder / 'library.db'}\nplugins: [cnngenre]\n"
        f"cnngenre:\n  model: {model_path}\n"
    )
    lib = Library(str(folder / "library.db"), str(tmp_path))
    for path in files:
        lib.add(Item.from_path(str(path)))
    lib._close()
    return folder


def _run_beet(beetsdir, *args, mark=None):
    env = {**os.environ, "BEETSDIR": str(beetsdir), "CNNGENRE_TEST_MARK": mark or ""}
    # As in a terminal: Ctrl-C raises KeyboardInterrupt, whatever SIGINT handling the test runner left behind.
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from beets.ui import main; sys.exit(main())")
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _prediction_rows(db):
    with sqlite3.connect(str(db)) as connection:
        # Reading tags may store empty cnn_* fields (the plugin registers media fields): count values only.
        rows = connection.execute("SELECT entity_id, key FROM item_attributes WHERE key LIKE 'cnn_%' "
                                  "AND value IS NOT NULL AND value != '' AND value != '0.0'").fetchall()
        total = connection.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    fields = {}
    for item_id, key in rows:
        fields.setdefault(item_id, set()).add(key)
    return fields, total


@pytest.fixture
def many_files(tmp_path):
    folder = tmp_path / "music"
    folder.mkdir()
    files = []
    for i in range(40):
        path = folder / f"track{i:02d}.wav"
        write_audio(path, synth_track(("techno", "ambient", "chiptune")[i % 3], 1000 + i, seconds=12), SR)
        files.append(path)
    return files


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_interrupt_keeps_whole_items_and_a_rerun_continues(many_files, scratch_model_path, tmp_path, signum, status):
    beetsdir = _beets_dir(tmp_path, many_files, scratch_model_path)
    db = beetsdir / "library.db"
    mark = uuid.uuid4().hex
    process = _run_beet(beetsdir, "cnngenre", "-j", "2", "--no-cache", mark=mark)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and not _prediction_rows(db)[0]:
        time.sleep(0.05)
    process.send_signal(signum)
    out, err = process.communicate(timeout=30)
    assert "interrupted after" in out and "continues with the rest" in out, (process.returncode, err[-2000:])
    assert process.returncode == status  # interrupted: not a success
    assert "Traceback" not in err
    time.sleep(1.0)
    assert processes_with(mark) == []  # no orphan workers
    fields, total = _prediction_rows(db)
    complete = {"cnn_genre", "cnn_genre_score", "cnn_genres", "cnn_scores", "cnn_model"}
    # all fields of an item, or none (a file's tags may still be pending: written by the next run)
    assert all(keys - {"cnn_write_pending"} == complete for keys in fields.values())
    assert 0 < len(fields) <= total

    rerun = _run_beet(beetsdir, "cnngenre", "-j", "2")
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert f"predicted {total - len(fields)}, skipped {len(fields)}" in out
    assert len(_prediction_rows(db)[0]) == total


def test_two_runs_at_once_share_library_and_cache(many_files, scratch_model_path, tmp_path):
    beetsdir = _beets_dir(tmp_path, many_files[:16], scratch_model_path)
    runs = [_run_beet(beetsdir, "cnngenre", "-f", "-j", "1") for _ in range(2)]
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        assert "predicted 16" in out and "failed 0" in out
    fields, total = _prediction_rows(beetsdir / "library.db")
    assert len(fields) == total == 16
    with sqlite3.connect(str(beetsdir / "library.db")) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    cache = beetsdir / "cnngenre" / "cache"
    entries = list(cache.rglob("*.npy"))
    assert len(entries) == 16 and not list(cache.rglob(".tmp-*"))
    assert all(entry.read_bytes().startswith(b"cnngenre-features-1\n") for entry in entries)


class TestSaving(PluginTestHelper):
    plugin = "cnngenre"

    def test_unwritable_model_folder_is_one_clear_error(self, library_files, tmp_path):
        from beets.ui import UserError

        for path, _ in library_files:
            self.lib.add(Item.from_path(str(path)))
        blocker = tmp_path / "not_a_folder"
        blocker.write_text("a file where the model folder should be")
        self.config["cnngenre"]["model"] = str(blocker / "model.pt")
        with pytest.raises(UserError, match="cannot save the model to .*model.pt: "):
            self.run_command("cnngenre", "-t", "-f", "-b", "scratch", "-m", "4", "-e", "1", "-j", "1")
        assert blocker.read_text() == "a file where the model folder should be"


def test_interrupted_save_keeps_the_previous_model(scratch_model, tmp_path, monkeypatch):
    from genre_cnn_core import GenreModel

    path = tmp_path / "model.pt"
    scratch_model.save(str(path))
    original = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", crash)  # dies after writing, before the rename
    with pytest.raises(KeyboardInterrupt):
        scratch_model.save(str(path))
    assert path.read_bytes() == original and os.listdir(tmp_path) == ["model.pt"]
    assert GenreModel.load(str(path)).model_id == scratch_model.model_id


# ------------------------------------------------- files that are not files


@pytest.mark.parametrize("kind", ["FIFO", "character device"])
def test_a_fifo_or_a_device_is_never_read_as_audio(tmp_path, kind):
    from genre_cnn_core import audio_identity, audio_ids
    from genre_cnn_core.files import NotRegularFile

    path = tmp_path / "x.mp3"
    with contextlib.ExitStack() as stack:
        if kind == "FIFO":
            stack.enter_context(fifo_at(path))
        else:
            os.symlink("/dev/zero", path)  # reading it would never end
        with pytest.raises(NotRegularFile, match=rf"^not a regular file \({kind}\)$"):
            audio_identity(str(path))
        assert audio_ids([str(path)]) == [None]
        with pytest.raises(AudioError, match=rf"^not a regular file \({kind}\)$"):
            load_excerpts(str(path), 16000, 10.0, 3)


def test_a_symlink_loop_is_called_one(tmp_path):
    path = tmp_path / "loop.mp3"
    os.symlink("loop.mp3", path)
    with pytest.raises(AudioError, match=r"^symlink loop"):
        load_excerpts(str(path), 16000, 10.0, 3)


def test_a_huge_file_of_zeros_is_given_up_after_a_bounded_read(tmp_path, monkeypatch):
    from genre_cnn_core import audio

    path = tmp_path / "zeros.mp3"
    with open(path, "wb") as handle:
        handle.truncate(4 << 30)  # sparse: costs no disk
    monkeypatch.setattr(audio, "MAX_PROBE_BYTES", 2 << 20)
    monkeypatch.setattr(audio, "MAX_READ_BYTES", 8 << 20)
    read = []
    real_open = audio.open_regular
    monkeypatch.setattr(audio, "open_regular", lambda *args: CountingFile(real_open(*args), read))
    with pytest.raises(AudioError, match=r"no audio found in the \d+ MiB read"):
        load_excerpts(str(path), 16000, 10.0, 3)
    assert 0 < sum(read) <= 8 << 20


@pytest.mark.parametrize("name, values, subtype, reason", [
    ("nan.wav", np.full(SR, np.nan, np.float32), "FLOAT", "not finite"),
    ("inf.wav", np.full(SR, -np.inf, np.float32), "FLOAT", "not finite"),
    ("huge.wav", np.full(SR, 1e300), "DOUBLE", "not finite"),
    ("limit.wav", 3e38 * np.sin(np.arange(SR) / 10.0).astype(np.float32), "FLOAT", "far beyond full scale"),
    ("limit_stereo.wav", np.full((SR, 2), 3.4e38, np.float32), "FLOAT", "far beyond full scale"),
])
def test_audio_that_is_not_numbers_fails_without_a_warning(tmp_path, name, values, subtype, reason):
    import warnings

    path = tmp_path / name
    sf.write(str(path), values, SR, subtype=subtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy RuntimeWarning would reach the user's terminal
        with pytest.raises(AudioError, match=reason):
            load_excerpts(str(path), 16000, 10.0, 3)


def test_a_streaming_wav_without_a_data_size_is_read(tmp_path):
    path = tmp_path / "stream.wav"
    sf.write(str(path), _tone(30), SR, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    found = data.find(b"data")
    data[4:8] = data[found + 4:found + 8] = bytes(4)  # as a recorder writing a stream leaves them
    path.write_bytes(bytes(data))
    assert sf.info(str(path)).frames == 0  # libsndfile sees no audio in it
    excerpts = load_excerpts(str(path), 16000, 10.0, 3)
    assert [len(e) for e in excerpts] == [160000] * 3
    assert all(np.abs(e).max() > 0.1 for e in excerpts)


@pytest.mark.parametrize("claim", [1000, 20 * SR], ids=["1000 samples", "20 s"])
def test_a_flac_whose_streaminfo_claims_too_few_samples_is_read_where_its_audio_is(tmp_path, claim):
    path = tmp_path / "liar.flac"
    t = np.arange(60 * SR) / SR
    loudness = np.where(t < 20, 0.01, 0.5)  # quiet within the claim, loud after it
    noise = np.random.default_rng(0).uniform(-1, 1, len(t))  # compresses as little as music
    sf.write(str(path), (loudness * noise).astype(np.float32), SR, format="FLAC")
    data = bytearray(path.read_bytes())
    offset = 8 + 13  # STREAMINFO's total samples: the low 36 bits of these 5 bytes
    packed = int.from_bytes(data[offset:offset + 5], "big")
    data[offset:offset + 5] = ((packed & ~((1 << 36) - 1)) | claim).to_bytes(5, "big")
    path.write_bytes(bytes(data))
    assert sf.info(str(path)).frames == claim
    excerpts = load_excerpts(str(path), 16000, 10.0, 3)
    assert [len(e) for e in excerpts] == [160000] * 3
    assert np.abs(excerpts[-1]).max() > 0.4  # spread over the minute, not within the claim
