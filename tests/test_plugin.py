"""The real `beet cnngenre` commands on a temporary library of synthetic tracks."""

import os

import pytest
from beets.library import Item
from beets.test.helper import PluginTestHelper
from beets.ui import UserError

import genre_cnn_core

FIELDS = ("cnn_genre", "cnn_genre_score", "cnn_genres", "cnn_model")


class CnnGenreHelper(PluginTestHelper):
    plugin = "cnngenre"

    def add_files(self, files):
        items = []
        for path, _ in files:
            item = Item.from_path(str(path))
            self.lib.add(item)
            items.append(item)
        return items

    def use_model(self, path):
        self.config["cnngenre"]["model"] = path


class TestTrainAndPredict(CnnGenreHelper):
    def test_train_predict_and_query(self, library_files, capsys):
        items = self.add_files(library_files)
        assert {tuple(i.genres) for i in items} >= {("TECHNO", "Electronic"), ("chip-tune",)}
        self.run_command("cnngenre", "-t", "-b", "scratch", "-m", "4", "-e", "15", "-j", "2")
        out = capsys.readouterr().out
        model_path = os.path.join(self.config.config_dir(), "cnngenre", "model.pt")
        assert os.path.exists(model_path)
        assert "tracks per genre: " in out and "techno 8" in out and "chiptune 8" in out
        assert "accuracy" in out and "macro-F1" in out and "saved scratch-" in out

        self.run_command("cnngenre")
        out = capsys.readouterr().out
        assert "predicted 24, skipped 0" in out and "failed 0" in out
        truth = {item.id: genre for item, (_, genre) in zip(items, library_files)}
        stored = {item.id: item for item in self.lib.items()}
        assert all(all(item.get(f) for f in FIELDS) for item in stored.values())
        correct = sum(stored[i].cnn_genre == g for i, g in truth.items())
        assert correct / len(truth) >= 0.8
        assert all(len(item.cnn_genres) == 3 and item.cnn_genres[0] == item.cnn_genre for item in stored.values())

        techno = {item.id for item in self.lib.items("cnn_genre:techno")}
        assert techno == {i for i, item in stored.items() if item.cnn_genre == "techno"} and techno
        confident = {item.id for item in self.lib.items("cnn_genre_score:0.8..")}
        assert confident == {i for i, item in stored.items() if item.cnn_genre_score >= 0.8}
        assert 0 < len(confident) < len(stored) or all(item.cnn_genre_score >= 0.8 for item in stored.values())

        # Already predicted by this model: skipped unless forced.
        self.run_command("cnngenre")
        assert "predicted 0, skipped 24" in capsys.readouterr().out
        self.run_command("cnngenre", "-f", "cnn_genre:techno")
        assert f"predicted {len(techno)}, skipped 0" in capsys.readouterr().out


class TestPredictOptions(CnnGenreHelper):
    def test_pretend_changes_nothing(self, library_files, scratch_model_path, capsys):
        self.use_model(scratch_model_path)
        self.add_files(library_files[:4])
        self.run_command("cnngenre", "-p", "-j", "1")
        out = capsys.readouterr().out
        assert "would predict 4" in out and out.count(": ") >= 4
        assert not any(item.get("cnn_model") for item in self.lib.items())

    def test_bad_file_is_skipped_and_left_untouched(self, library_files, scratch_model_path, tmp_path, caplog):
        self.use_model(scratch_model_path)
        self.add_files(library_files[:3])
        broken = tmp_path / "broken.mp3"
        broken.write_bytes(b"ID3" + os.urandom(2000))
        bad = Item(path=str(broken), title="broken", genres=["Rock"])
        self.lib.add(bad)
        self.run_command("cnngenre", "-j", "1")
        assert any("broken.mp3" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
        reloaded = self.lib.get_item(bad.id)
        assert not reloaded.get("cnn_model") and list(reloaded.genres) == ["Rock"]
        assert sum(bool(item.get("cnn_model")) for item in self.lib.items()) == 3

    def test_apply_genres_fills_only_empty_genres(self, library_files, scratch_model_path):
        self.use_model(scratch_model_path)
        tagged, untagged = self.add_files(library_files[:2])
        untagged.genres = []
        untagged.store()
        self.config["cnngenre"]["threshold"] = 0.0
        self.run_command("cnngenre", "-a", "-j", "1")
        assert list(self.lib.get_item(tagged.id).genres) == ["Techno"]
        filled = self.lib.get_item(untagged.id)
        assert list(filled.genres) == [filled.cnn_genre]

    def test_write_puts_the_prediction_into_file_tags(self, library_files, scratch_model_path, tmp_path):
        import shutil

        import mediafile

        self.use_model(scratch_model_path)
        copy = tmp_path / "copy.flac"
        shutil.copy(library_files[1][0], copy)
        [item] = self.add_files([(copy, "techno")])
        self.run_command("cnngenre", "-w", "-j", "1")
        assert mediafile.MediaFile(str(copy)).cnn_genre == self.lib.get_item(item.id).cnn_genre


class TestErrors(CnnGenreHelper):
    def test_no_model_yet(self, library_files, monkeypatch):
        monkeypatch.setattr(genre_cnn_core, "DEFAULT_MODEL", "/nonexistent/default.pt")
        self.add_files(library_files[:1])
        with pytest.raises(UserError, match=r"no model yet at .*: train one with `beet cnngenre -t`"):
            self.run_command("cnngenre")

    def test_too_few_genres(self, library_files):
        self.add_files(library_files[:9])  # 8 techno, 1 ambient
        with pytest.raises(UserError, match=r"need at least 2 genres with 10 or more .*techno \(8\).*min_tracks"):
            self.run_command("cnngenre", "-t", "-b", "scratch")

    def test_incompatible_model(self, library_files, tmp_path):
        import torch

        path = tmp_path / "future.pt"
        torch.save({"format_version": 7, "metadata": "{}", "state_dict": {}}, path)
        self.use_model(str(path))
        self.add_files(library_files[:1])
        with pytest.raises(UserError, match="newer cnngenre"):
            self.run_command("cnngenre")


class TestEvaluateAndPlots(CnnGenreHelper):
    def test_training_writes_plots_and_eval_skips_training_tracks(self, library_files, heldout_files, capsys):
        train_items = self.add_files(library_files)
        self.run_command("cnngenre", "-t", "-b", "scratch", "-m", "4", "-e", "8", "-j", "1")
        out = capsys.readouterr().out
        stem = os.path.join(self.config.config_dir(), "cnngenre", "model")
        assert os.path.getsize(stem + ".confusion.png") > 1000 and os.path.getsize(stem + ".training.png") > 1000
        assert "plots: " in out

        with pytest.raises(UserError, match="no items to evaluate on"):
            self.run_command("cnngenre", "--eval", "-j", "1")
        assert f"left out: {len(train_items)} it was trained on" in capsys.readouterr().out

        held = self.add_files(heldout_files)
        self.run_command("cnngenre", "--eval", "-j", "1")
        out = capsys.readouterr().out
        assert "evaluating scratch-" in out and f"on {len(held)} items;" in out
        assert "accuracy" in out and "expected calibration error" in out and "confusion matrix" in out
