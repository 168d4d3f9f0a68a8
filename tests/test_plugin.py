"""The real `beet cnngenre` commands on a temporary library of synthetic tracks."""

import os
import shutil
import sys

import confuse
import pytest
from beets.library import Item
from beets.test.helper import PluginTestHelper
from beets.ui import UserError

import genre_cnn_core

from torch_support import needs_torch

FIELDS = ("cnn_genre", "cnn_genre_score", "cnn_genres", "cnn_scores", "cnn_model")


class CnnGenreHelper(PluginTestHelper):
    plugin = "cnngenre"

    @pytest.fixture(autouse=True)
    def _no_tag_writes(self):
        # beets writes tags by default; the shared synthetic files must stay as they are.
        self.config["import"]["write"] = False

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
    @needs_torch  # trains the scratch CNN
    def test_train_predict_and_query(self, library_files, capsys):
        items = self.add_files(library_files)
        assert {tuple(i.genres) for i in items} >= {("TECHNO", "Electronic"), ("chip-tune",)}
        self.run_command("cnngenre", "-t", "-b", "scratch", "-m", "4", "-e", "15", "-j", "2")
        out = capsys.readouterr().out
        model_path = os.path.join(self.config.config_dir(), "cnngenre", "model.safetensors")
        assert os.path.exists(model_path)
        assert "tracks (artists) per genre: " in out and "techno 8 (4)" in out and "chiptune 8 (4)" in out
        assert "micro-F1" in out and "mAP" in out and "saved scratch-" in out
        assert "24 tracks trained on" in out

        self.run_command("cnngenre")
        out = capsys.readouterr().out
        assert "predicted 24, skipped 0" in out and "failed 0" in out
        truth = {item.id: genre for item, (_, genre) in zip(items, library_files)}
        stored = {item.id: item for item in self.lib.items()}
        assert all(all(item.get(f) for f in FIELDS) for item in stored.values())
        correct = sum(stored[i].cnn_genre == g for i, g in truth.items())
        assert correct / len(truth) >= 0.8
        assert all(1 <= len(item.cnn_genres) <= 3 and item.cnn_genres[0] == item.cnn_genre
                   for item in stored.values())

        techno = {item.id for item in self.lib.items("cnn_genre:techno")}
        assert techno == {i for i, item in stored.items() if item.cnn_genre == "techno"} and techno
        confident = {item.id for item in self.lib.items("cnn_genre_score:0.8..")}
        assert confident == {i for i, item in stored.items() if item.cnn_genre_score >= 0.8}

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
        assert "would change 4 items" in out and sum(" -> " in line for line in out.splitlines()) == 4
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
        self.run_command("cnngenre", "-g", "-j", "1")
        assert list(self.lib.get_item(tagged.id).genres) == ["Techno"]
        filled = self.lib.get_item(untagged.id)
        assert [g.lower() for g in filled.genres] == list(filled.cnn_genres) and list(filled.cnn_applied)

    def test_write_puts_the_prediction_into_file_tags(self, library_files, scratch_model_path, tmp_path):
        import mediafile

        self.use_model(scratch_model_path)
        copy = tmp_path / "copy.flac"
        shutil.copy(library_files[1][0], copy)
        [item] = self.add_files([(copy, "techno")])
        self.run_command("cnngenre", "-w", "-j", "1")
        stored = self.lib.get_item(item.id)
        assert mediafile.MediaFile(str(copy)).cnn_genre == stored.cnn_genre
        assert not stored.get("cnn_write_pending") and stored.mtime == pytest.approx(os.path.getmtime(copy))


class TestErrors(CnnGenreHelper):
    def test_no_model_yet(self, library_files, monkeypatch):
        monkeypatch.setattr(genre_cnn_core, "DEFAULT_MODEL", "/nonexistent/default.pt")
        self.add_files(library_files[:1])
        with pytest.raises(UserError, match=r"no model yet at .*: train one with `beet cnngenre -t`"):
            self.run_command("cnngenre")

    def test_explicit_model_that_does_not_exist_is_an_error(self, library_files, tmp_path):
        self.add_files(library_files[:1])
        missing = str(tmp_path / "nowhere" / "model.pt")
        for command in (["cnngenre", "--model", missing], ["cnngenre", "--eval", "--model", missing]):
            with pytest.raises(UserError, match="no model file"):
                self.run_command(*command)
        with pytest.raises(UserError, match="no folder"):
            self.run_command("cnngenre", "-t", "-b", "scratch", "-m", "4", "--model", missing)
        assert not os.path.exists(tmp_path / "nowhere")

    def test_too_few_genres(self, library_files):
        self.add_files(library_files[:9])  # 8 techno (2 of them also electronic), 1 ambient
        with pytest.raises(UserError, match=r"need at least 2 genres with 10 or more .*min_tracks.*techno \(8\)"
                                            r".*`-m 2` would learn 2 genres"):
            self.run_command("cnngenre", "-t", "-b", "scratch")
        self.lib.items("genres:electronic").get().remove()
        with pytest.raises(UserError, match=r"the second most common genre, \w+, has 1 track$"):
            self.run_command("cnngenre", "-t", "-b", "scratch")

    def test_min_tracks_advice_names_a_value_that_would_work(self, library_files):
        self.add_files(library_files)  # 8 tracks of each of 3 genres
        with pytest.raises(UserError, match=r"`-m 8` would learn 3 genres"):
            self.run_command("cnngenre", "-t", "-b", "scratch", "-m", "200")

    def test_max_genres_1_names_max_genres_as_the_cause(self, library_files):
        self.add_files(library_files)
        with pytest.raises(UserError, match=r"--max-genres 1 keeps only 1 genre of the 3 with 4 or more .*"
                                            r"--max-genres 2 or more"):
            self.run_command("cnngenre", "-t", "-b", "scratch", "-m", "4", "--max-genres", "1")

    @needs_torch  # trains the scratch CNN
    def test_threshold_and_top_k_reach_the_training_report(self, library_files, capsys):
        self.add_files(library_files)
        self.config["cnngenre"]["threshold"] = 0.9
        self.config["cnngenre"]["top_k"] = 1
        self.run_command("cnngenre", "-t", "-p", "-b", "scratch", "-m", "4", "-e", "1", "-j", "1")
        out = capsys.readouterr().out
        assert "threshold 0.9, at most 1 (top_k)" in out

    @needs_torch  # trains the scratch CNN
    def test_a_model_that_looks_unusable_is_not_saved_without_f(self, library_files, capsys, caplog,
                                                                monkeypatch):
        import genre_cnn_core.pipeline as pipeline

        line = "the model looks unusable: scores hardly spread. Likely cause: x: 12 tracks, all by one artist"
        real = pipeline.training_report
        monkeypatch.setattr(pipeline, "training_report", lambda *a, **k: {**real(*a, **k), "usability": line})
        self.add_files(library_files)
        model_path = os.path.join(self.config.config_dir(), "cnngenre", "model.safetensors")
        with pytest.raises(UserError, match=r"not saved: the model looks unusable .* -f saves it anyway"):
            self.run_command("cnngenre", "-t", "-b", "scratch", "-m", "4", "-e", "1", "-j", "1")
        assert not os.path.exists(model_path)
        assert line in caplog.text
        # -f: a model of an epoch or two is one the usability check calls unusable; -t saves it only when forced
        self.run_command("cnngenre", "-t", "-f", "-b", "scratch", "-m", "4", "-e", "1", "-j", "1")
        assert os.path.exists(model_path) and "saved scratch-" in capsys.readouterr().out

    def test_incompatible_model(self, library_files, tmp_path):
        from safetensors.numpy import save_file

        path = tmp_path / "future.safetensors"
        save_file({}, path, metadata={"format": "cnngenre-model", "format_version": "7", "model": "{}"})
        self.use_model(str(path))
        self.add_files(library_files[:1])
        with pytest.raises(UserError, match="newer cnngenre"):
            self.run_command("cnngenre")

    def test_a_model_of_the_previous_version_at_the_default_location_asks_for_retraining(self, library_files):
        import zipfile

        folder = os.path.join(self.config.config_dir(), "cnngenre")
        os.makedirs(folder, exist_ok=True)
        with zipfile.ZipFile(os.path.join(folder, "model.pt"), "w") as archive:  # as torch.save wrote it
            archive.writestr("model/data.pkl", b"\x80\x02}q\x00.")
        self.add_files(library_files[:1])
        with pytest.raises(UserError, match=r"model.pt: made by an older cnngenre \(a PyTorch file\); retrain with "
                                             r"`beet cnngenre -t`"):
            self.run_command("cnngenre")

    def test_what_needs_pytorch_says_which_extra_where_it_is_missing(self, library_files, monkeypatch):
        monkeypatch.setitem(sys.modules, "torch", None)  # as if not installed: importing it fails
        self.add_files(library_files[:9])  # two genres
        with pytest.raises(UserError, match=r"^training the scratch backbone needs PyTorch, which is not installed: "
                                            r"pip install 'beets-cnngenre\[torch\]'"):
            self.run_command("cnngenre", "-t", "-b", "scratch", "-m", "1")
        with pytest.raises(UserError, match=r"--device cuda needs PyTorch, .*beets-cnngenre\[torch\]"):
            self.run_command("cnngenre", "--device", "cuda")

    def test_modes_that_make_no_sense_together_are_refused(self, library_files, scratch_model_path):
        self.use_model(scratch_model_path)
        self.add_files(library_files[:1])
        with pytest.raises(UserError, match="-t and --eval do not go together"):
            self.run_command("cnngenre", "-t", "--eval")
        with pytest.raises(UserError, match="-p does not go with it"):
            self.run_command("cnngenre", "--eval", "-p")

    @needs_torch  # trains the scratch CNN
    def test_train_pretend_reports_and_saves_nothing(self, library_files, capsys):
        self.add_files(library_files)
        self.run_command("cnngenre", "-t", "-p", "-b", "scratch", "-m", "4", "-e", "1", "-j", "1")
        out = capsys.readouterr().out
        assert "micro-F1" in out and "not saved (-p)" in out
        assert not os.path.exists(os.path.join(self.config.config_dir(), "cnngenre", "model.safetensors"))

    @needs_torch  # trains the scratch CNN
    def test_max_genres_gives_the_real_reason(self, library_files, capsys):
        self.add_files(library_files)
        self.run_command("cnngenre", "-t", "-p", "-b", "scratch", "-m", "4", "-e", "1", "-j", "1",
                         "--max-genres", "2")
        out = capsys.readouterr().out
        assert "(8 tracks, only the 2 most common genres are learned (max_genres))" in out
        assert "(8 tracks, fewer than" not in out


BAD_SETTINGS = [("jobs", "two"), ("jobs", -5), ("top_k", 0), ("top_k", -1), ("threshold", 2), ("threshold", "x"),
                ("tag_threshold", -0.1), ("min_tracks", 0), ("max_genres", -1), ("epochs", 0), ("minutes", 0),
                ("backbone", "vgg"), ("backend", "mpi"), ("device", "gpu0"), ("force", "banana"),
                ("apply_genres", 2), ("cache", "maybe"), ("aliases", ["a"]), ("canonical", 3)]


class TestSettings(CnnGenreHelper):
    @pytest.mark.parametrize("key, value", BAD_SETTINGS)
    def test_bad_value_is_one_error_naming_the_key(self, library_files, scratch_model_path, key, value):
        self.use_model(scratch_model_path)
        self.add_files(library_files[:1])
        self.config["cnngenre"][key] = value
        with pytest.raises(confuse.ConfigError, match=f"cnngenre.{key}: "):
            self.run_command("cnngenre", "-p")

    def test_bad_jobs_on_the_command_line(self, library_files, scratch_model_path):
        self.use_model(scratch_model_path)
        self.add_files(library_files[:1])
        with pytest.raises(UserError, match="cnngenre: --jobs: must be a whole number from 0"):
            self.run_command("cnngenre", "-j", "-3")

    def test_more_jobs_than_cores_are_capped_with_a_note(self, library_files, scratch_model_path, caplog):
        self.use_model(scratch_model_path)
        self.add_files(library_files[:2])
        from genre_cnn_core import available_cores

        self.run_command("cnngenre", "-p", "-j", str(available_cores() + 14))
        assert any("more workers than the" in r.getMessage() for r in caplog.records)

    def test_cache_dir_expands_home_and_variables(self, library_files, scratch_model_path, tmp_path, monkeypatch):
        monkeypatch.setenv("CNNGENRE_TEST_ROOT", str(tmp_path))
        self.use_model(scratch_model_path)
        self.add_files(library_files[:1])
        self.config["cnngenre"]["cache_dir"] = "${CNNGENRE_TEST_ROOT}/features"
        self.run_command("cnngenre", "-j", "1")
        assert list((tmp_path / "features").rglob("*.npy"))
        assert not os.path.exists("${CNNGENRE_TEST_ROOT}")

    def test_cache_dir_that_is_a_file_is_said_once(self, library_files, scratch_model_path, tmp_path, caplog):
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("x")
        self.use_model(scratch_model_path)
        self.add_files(library_files[:2])
        self.config["cnngenre"]["cache_dir"] = str(blocker)
        self.run_command("cnngenre", "-j", "1")
        notes = [r.getMessage() for r in caplog.records if "feature cache cannot be used" in r.getMessage()]
        assert len(notes) == 1 and "not-a-folder" in notes[0]
        assert all(item.get("cnn_model") for item in self.lib.items())


class TestFeatureCacheUnderBeetsDefaults(CnnGenreHelper):
    def test_tag_writes_and_moves_keep_hitting_the_cache(self, library_files, scratch_model_path, tmp_path,
                                                         decoded_paths):
        self.use_model(scratch_model_path)
        copies = []
        for path, _ in library_files[:4]:
            copies.append(tmp_path / path.name)
            shutil.copy(path, copies[-1])
        self.add_files([(p, None) for p in copies])
        calls = decoded_paths
        self.run_command("cnngenre", "-w", "-j", "1")  # writes CNN_GENRE into every file
        assert len(calls) == 4
        self.run_command("cnngenre", "-f", "-w", "-j", "1")
        assert len(calls) == 4  # tags written since: still cached
        for item in self.lib.items():
            item.move(operation=__import__("beets.util", fromlist=["MoveOperation"]).MoveOperation.MOVE)
            item.store()
        self.run_command("cnngenre", "-f", "-j", "1")
        assert len(calls) == 4  # moved: still cached
        moved = next(iter(self.lib.items())).filepath
        assert not any(os.path.exists(p) for p in copies)
        with open(moved, "r+b") as handle:  # a change to the audio must miss
            handle.seek(-2000, os.SEEK_END)
            handle.write(os.urandom(1000))
        self.run_command("cnngenre", "-f", "-j", "1")
        assert len(calls) == 5

    @needs_torch  # trains the scratch CNN
    def test_eval_recognises_training_tracks_after_a_move(self, library_files, heldout_files, capsys):
        items = self.add_files(library_files)
        self.run_command("cnngenre", "-t", "-f", "-b", "scratch", "-m", "4", "-e", "2", "-j", "1")
        from beets.util import MoveOperation

        for item in items:
            item.move(operation=MoveOperation.COPY)
            item.store()
        self.add_files(heldout_files)
        capsys.readouterr()
        self.run_command("cnngenre", "--eval", "-j", "1")
        stem = os.path.join(self.config.config_dir(), "cnngenre", "model")
        learned = genre_cnn_core.GenreModel.load(stem + ".safetensors")
        assert 0 < len(learned.trained_on) < len(items)  # the scratch CNN never learns from its validation tracks
        assert f"left out: {len(learned.trained_on)} it was trained on" in capsys.readouterr().out

    def test_prune_cache_drops_entries_of_audio_no_item_has(self, library_files, scratch_model_path, capsys):
        self.use_model(scratch_model_path)
        items = self.add_files(library_files[:3])
        self.run_command("cnngenre", "-j", "1")
        items[0].remove()
        capsys.readouterr()
        self.run_command("cnngenre", "--prune-cache")
        out = capsys.readouterr().out
        assert "removed 1 cached entries" in out and "holds 2 entries" in out


class TestEvaluateAndPlots(CnnGenreHelper):
    @needs_torch  # trains the scratch CNN
    def test_training_writes_plots_and_eval_skips_training_tracks(self, library_files, heldout_files, capsys):
        train_items = self.add_files(library_files)
        self.run_command("cnngenre", "-t", "-f", "-b", "scratch", "-m", "4", "-e", "8", "-j", "1")
        out = capsys.readouterr().out
        stem = os.path.join(self.config.config_dir(), "cnngenre", "model")
        assert os.path.getsize(stem + ".confusion.png") > 1000 and os.path.getsize(stem + ".training.png") > 1000
        assert "plots: " in out

        model = genre_cnn_core.GenreModel.load(stem + ".safetensors")
        validation = len(model.heldout_ids)
        assert validation and len(model.trained_on) == len(train_items) - validation
        self.run_command("cnngenre", "--eval", "-j", "1")  # the validation tracks: its network never learned them
        out = capsys.readouterr().out
        assert (f"on {validation} items ({validation} of them its validation tracks" in out
                and f"left out: {len(train_items) - validation} it was trained on" in out)

        held = self.add_files(heldout_files)
        self.run_command("cnngenre", "--eval", "-j", "1")
        out = capsys.readouterr().out
        assert "evaluating scratch-" in out and f"on {len(held) + validation} items (" in out
        assert "micro-F1" in out and "expected calibration error" in out and "confusion" in out
        header = next(line for line in out.splitlines() if line.startswith("genre "))
        assert header.split()[-1] == "artists"  # 3 held-out tracks of 2 artists per genre: all marked
        assert "* scored on tracks of fewer than 3 artists" in out

    @needs_torch  # trains the scratch CNN
    def test_a_plot_that_cannot_be_written_is_a_warning(self, library_files, monkeypatch, caplog, capsys):
        def full_disk(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(genre_cnn_core, "save_confusion_matrix", full_disk)
        self.add_files(library_files)
        self.run_command("cnngenre", "-t", "-f", "-b", "scratch", "-m", "4", "-e", "1", "-j", "1")
        assert "saved scratch-" in capsys.readouterr().out
        assert any("plot could not be written" in r.getMessage() for r in caplog.records)


class TestMoreDefaults(CnnGenreHelper):
    def test_relative_cache_dir_in_the_config_file_is_under_the_config_folder(self, library_files,
                                                                              scratch_model_path):
        config_file = os.path.join(self.config.config_dir(), "extra.yaml")
        with open(config_file, "w") as handle:
            handle.write("cnngenre:\n  cache_dir: features-here\n")
        self.config.set_file(config_file)
        self.use_model(scratch_model_path)
        self.add_files(library_files[:1])
        self.run_command("cnngenre", "-j", "1")
        assert os.listdir(os.path.join(self.config.config_dir(), "features-here"))
        assert not os.path.exists("features-here")

    @needs_torch  # trains the scratch CNN
    def test_the_save_line_counts_the_tracks_trained_on(self, library_files, capsys):
        self.add_files(library_files)
        self.run_command("cnngenre", "-t", "-p", "-b", "scratch", "-m", "4", "-e", "1", "-j", "1",
                         "--max-genres", "2")
        assert "16 tracks trained on" in capsys.readouterr().out  # 24 tagged, 8 of a genre not learned

    def test_items_are_stored_in_few_transactions(self, library_files, scratch_model_path):
        from beetsplug.cnngenre import Batch

        items = [Item(path=f"/music/{i}.mp3", title=str(i)) for i in range(450)]
        for item in items:
            self.lib.add(item)
        statements = []
        self.lib._connection().set_trace_callback(statements.append)
        batch = Batch(self.lib, write=False, log=None)
        for item in items:
            batch.add(item, {"cnn_genre": "jazz", "cnn_model": "m"})
        batch.flush()
        self.lib._connection().set_trace_callback(None)
        assert statements.count("COMMIT") == 3 and batch.stored == 450  # 200 + 200 + 50
        assert all(i.cnn_genre == "jazz" for i in self.lib.items())
