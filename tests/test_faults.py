"""Faults: dying workers, signals, a failing database or file, hostile audio; nothing lost or half-written."""

import os
import shutil
import signal
import sqlite3
import uuid

import numpy as np
import pytest
import soundfile as sf
from beets.library import Item
from beets.test.helper import ImportHelper, PluginMixin, PluginTestHelper
from beets.ui import UserError
from special_files import fifo_at

from genre_cnn_core.backbones.scratch import LogMelExtractor, ScratchBackbone

from torch_support import cuda_available

PREDICTION = {"cnn_genre", "cnn_genre_score", "cnn_genres", "cnn_scores", "cnn_model"}


class PoisonLogMel(LogMelExtractor):
    """Kills its own worker process on a file named like a poison, as a crashing decoder would."""

    def compute(self, paths):
        if any("poison" in os.fsdecode(p) for p in paths) and os.getpid() != self.parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().compute(paths)


class FaultHelper(PluginTestHelper):
    plugin = "cnngenre"

    @pytest.fixture(autouse=True)
    def _setup(self, scratch_model_path):
        self.config["import"]["write"] = False
        self.config["cnngenre"]["model"] = scratch_model_path

    def add_copies(self, files, folder, names=None):
        items = []
        for i, (path, _) in enumerate(files):
            target = folder / (names[i] if names else path.name)
            shutil.copy(path, target)
            item = Item.from_path(str(target))
            self.lib.add(item)
            items.append(item)
        return items


class TestDyingWorkers(FaultHelper):
    def test_a_file_that_kills_its_worker_costs_that_file_and_is_remembered(self, library_files, tmp_path,
                                                                           monkeypatch, caplog, capsys):
        def poisoned(self, settings, device="cpu"):
            extractor = PoisonLogMel(settings, device)
            extractor.parent = os.getpid()
            return extractor

        monkeypatch.setattr(ScratchBackbone, "extractor", poisoned)
        names = [f"t{i}.flac" if i != 3 else "poison.flac" for i in range(8)]
        flac = [f for f in library_files if str(f[0]).endswith(".flac")]
        items = self.add_copies((flac * 8)[:8], tmp_path, names)
        self.run_command("cnngenre", "-j", "2", "--no-cache")
        out = capsys.readouterr().out
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert any("poison.flac" in w and "worker process died" in w for w in warnings)
        assert "predicted 7," in out and "failed 1" in out
        stored = {item.id: self.lib.get_item(item.id) for item in items}
        poison = stored[items[3].id]
        assert poison.get("cnn_error") and not poison.get("cnn_model")
        assert all(stored[i.id].get("cnn_model") for n, i in enumerate(items) if n != 3)
        self.run_command("cnngenre", "-j", "2", "--no-cache")
        out = capsys.readouterr().out
        assert "skipped 8" in out and "1 items whose files crashed a worker before were skipped" in out
        monkeypatch.undo()  # the decoder no longer crashes: -f tries again, and it is no longer skipped
        self.run_command("cnngenre", "-f", "-j", "1", "title:" + poison.title)
        poison = self.lib.get_item(poison.id)
        assert poison.get("cnn_model") and not poison.get("cnn_error")


class TestDatabaseAndFiles(FaultHelper):
    def test_a_full_database_disk_is_one_line_and_no_file_is_written(self, library_files, tmp_path, monkeypatch):
        items = self.add_copies(library_files[:2], tmp_path)
        before = [open(i.filepath, "rb").read() for i in items]

        def full(self, *args, **kwargs):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(Item, "store", full)
        with pytest.raises(UserError, match=r"cannot write the library database \(database or disk is full\)"):
            self.run_command("cnngenre", "-w", "-j", "1")
        assert [open(i.filepath, "rb").read() for i in items] == before

    def test_an_error_while_storing_leaves_every_item_whole_or_untouched(self, library_files, tmp_path,
                                                                         monkeypatch):
        self.add_copies(library_files[:6], tmp_path)
        real, calls = Item.store, []

        def flaky(self, *args, **kwargs):
            calls.append(self.id)
            if len(calls) == 4:
                raise RuntimeError("injected")
            return real(self, *args, **kwargs)

        monkeypatch.setattr(Item, "store", flaky)
        with pytest.raises(RuntimeError, match="injected"):
            self.run_command("cnngenre", "-j", "1")
        monkeypatch.setattr(Item, "store", real)
        for item in self.lib.items():
            assert {k for k in PREDICTION if item.get(k)} in (set(), PREDICTION)

    def test_database_first_then_file_and_a_failed_write_is_retried(self, library_files, tmp_path, monkeypatch,
                                                                   caplog):
        import mediafile

        import genre_cnn_core

        [item] = self.add_copies(library_files[1:2], tmp_path)

        def refuse(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(genre_cnn_core, "write_tags", refuse)
        self.run_command("cnngenre", "-w", "-j", "1")
        stored = self.lib.get_item(item.id)
        assert stored.cnn_genre and stored.cnn_write_pending
        assert mediafile.MediaFile(str(item.filepath)).cnn_genre is None
        assert any("tags not written" in r.getMessage() for r in caplog.records)
        monkeypatch.undo()
        self.run_command("cnngenre", "-w", "-j", "1")  # skipped for prediction, written now
        stored = self.lib.get_item(item.id)
        assert not stored.get("cnn_write_pending")
        assert mediafile.MediaFile(str(item.filepath)).cnn_genre == stored.cnn_genre

    def test_a_wav_whose_header_lies_is_not_written_to(self, tmp_path, caplog):
        path = tmp_path / "liar.wav"
        t = np.arange(4 * 22050) / 22050
        sf.write(str(path), (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 22050, subtype="PCM_16")
        data = bytearray(path.read_bytes())
        data[4:8] = (len(data) * 3).to_bytes(4, "little")  # RIFF size: three times the file
        path.write_bytes(bytes(data))
        item = Item(path=str(path), title="liar")
        self.lib.add(item)
        self.run_command("cnngenre", "-w", "-j", "1")
        assert path.read_bytes() == bytes(data)
        stored = self.lib.get_item(item.id)
        assert stored.cnn_genre and stored.cnn_write_pending
        assert any("liar.wav" in r.getMessage() and "inconsistent container" in r.getMessage()
                   for r in caplog.records)

    def test_audio_whose_features_are_not_finite_is_a_failure_not_a_prediction(self, tmp_path, caplog, capsys):
        path = tmp_path / "huge.wav"
        sf.write(str(path), np.full(4 * 22050, 1e38, np.float32), 22050, subtype="FLOAT")
        item = Item(path=str(path), title="huge", genres=["Keep"])
        self.lib.add(item)
        self.run_command("cnngenre", "-j", "1")
        stored = self.lib.get_item(item.id)
        assert not stored.get("cnn_model") and list(stored.genres) == ["Keep"]
        assert any("huge.wav" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
        assert "failed 1" in capsys.readouterr().out


class TestDevice(FaultHelper):
    @pytest.mark.skipif(cuda_available(), reason="a CUDA GPU is present")
    def test_cuda_without_a_gpu_is_one_clear_error(self, library_files, tmp_path):
        self.add_copies(library_files[:1], tmp_path)
        with pytest.raises(UserError, match="device 'cuda' asked for, but PyTorch sees no CUDA GPU"):
            self.run_command("cnngenre", "--device", "cuda")


class TestImportNeverBreaks(PluginMixin, ImportHelper):
    plugin = "cnngenre"

    @pytest.mark.parametrize("key, value", [("device", "cuda"), ("top_k", 0), ("model", "/nonexistent/x.pt")])
    def test_an_error_in_cnngenre_is_one_warning_and_the_import_completes(self, library_files, scratch_model_path,
                                                                         caplog, key, value):
        if key == "device" and cuda_available():
            pytest.skip("a CUDA GPU is present")
        self.config["cnngenre"]["model"] = scratch_model_path
        self.config["cnngenre"][key] = value
        folder = self.import_path / f"album-{uuid.uuid4().hex[:6]}"
        folder.mkdir(parents=True)
        for path, _ in library_files[:3]:
            shutil.copy(path, folder / path.name)
        self.setup_importer(autotag=False, copy=True, write=True).run()
        items = list(self.lib.items())
        assert len(items) == 3 and all(os.path.exists(item.filepath) for item in items)
        assert all(str(item.filepath).startswith(str(self.lib_path)) for item in items)
        warnings = [r.getMessage() for r in caplog.records if "not tagging on import" in r.getMessage()]
        assert len(warnings) == 1 and "\n" not in warnings[0]


# ------------------------------------------------------- the feature cache


def _entry(cache_dir, array=None):
    """A cache with one entry, its key and namespace, and the entry's path."""
    from genre_cnn_core import FeatureCache

    cache = FeatureCache(str(cache_dir))
    namespace = {"kind": "test", "version": 1}
    key = cache.key("0123456789abcdef0123", namespace)
    cache.store(key, namespace, np.arange(12, dtype=np.float32).reshape(3, 4) if array is None else array)
    [path] = [p for p in cache_dir.rglob("*.npy")]
    return cache, key, namespace, path


def _with_header(path, header: bytes):
    """The entry at ``path`` with another JSON header, its checksum made valid again."""
    import zlib

    from genre_cnn_core import cache as cache_module

    data = path.read_bytes()
    start = len(cache_module._MAGIC)
    length = int.from_bytes(data[start:start + 4], "little")
    body = cache_module._MAGIC + len(header).to_bytes(4, "little") + header + data[start + 4 + length:-4]
    path.write_bytes(body + zlib.crc32(body).to_bytes(4, "little"))


@pytest.mark.parametrize("header", [b"[1, 2, 3]", b"null", b"42", b'"key"', b"\xff\xfe{", b'{"key": [1]}'])
def test_a_cache_entry_whose_header_is_not_a_mapping_costs_one_recomputation(tmp_path, header):
    cache, key, namespace, path = _entry(tmp_path)
    _with_header(path, header)
    assert cache.load(key, namespace) is None
    assert not path.exists()  # removed: the next run recomputes it once, then hits the new entry
    cache.store(key, namespace, np.ones(3, np.float32))
    assert cache.load(key, namespace).tolist() == [1.0, 1.0, 1.0]


def test_a_fifo_or_a_device_in_place_of_a_cache_entry_is_never_read(tmp_path):
    cache, key, namespace, path = _entry(tmp_path)
    path.unlink()
    with fifo_at(path):
        assert cache.load(key, namespace) is None
        assert not path.exists()
    os.symlink("/dev/zero", path)  # reading it would not end
    assert cache.load(key, namespace) is None
    assert not os.path.lexists(path)


def test_a_cache_entry_larger_than_any_is_not_read(tmp_path, monkeypatch):
    from genre_cnn_core import cache as cache_module

    cache, key, namespace, path = _entry(tmp_path)
    monkeypatch.setattr(cache_module, "MAX_ENTRY_BYTES", path.stat().st_size - 1)
    assert cache.load(key, namespace) is None and not path.exists()
    cache.store(key, namespace, np.zeros((3, 8), np.float32))  # nor written
    assert not list(tmp_path.rglob("*.npy"))


class TestFilesThatAreNotFiles(FaultHelper):
    @pytest.fixture
    def fifo_item(self, tmp_path):
        with fifo_at(tmp_path / "x.mp3") as path:
            item = Item(path=str(path), title="fifo", genres=["Keep"])
            self.lib.add(item)
            yield item

    @pytest.mark.parametrize("cache", [True, False], ids=["cache", "no-cache"])
    def test_a_fifo_in_the_library_is_one_line_and_the_rest_is_predicted(self, library_files, tmp_path, fifo_item,
                                                                          caplog, capsys, cache):
        items = self.add_copies(library_files[:2], tmp_path)
        self.config["cnngenre"]["cache_dir"] = str(tmp_path / "cache")
        self.run_command("cnngenre", "-j", "1", *([] if cache else ["--no-cache"]))
        lines = [r.getMessage() for r in caplog.records if "x.mp3" in r.getMessage()]
        assert len(lines) == 1 and lines[0].endswith("x.mp3: not a regular file (FIFO)"), lines
        assert all(self.lib.get_item(i.id).get("cnn_model") for i in items)
        assert not self.lib.get_item(fifo_item.id).get("cnn_model")
        assert "failed 1" in capsys.readouterr().out

    def test_prune_cache_passes_a_fifo_by(self, library_files, tmp_path, fifo_item, capsys):
        self.add_copies(library_files[:1], tmp_path)
        self.config["cnngenre"]["cache_dir"] = str(tmp_path / "cache")
        self.run_command("cnngenre", "-j", "1")
        capsys.readouterr()
        self.run_command("cnngenre", "--prune-cache")
        assert "removed 0 cached entries" in capsys.readouterr().out
