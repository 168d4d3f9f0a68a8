"""Tagging on import, forced CPU, and the Dask backend."""

import shutil

import mediafile
import numpy as np
import pytest
from beets.test.helper import ImportHelper, PluginMixin

from genre_cnn_core import GenreModel, RunConfig, predict_files

from torch_support import cuda_available


class ImportHookHelper(PluginMixin, ImportHelper):
    plugin = "cnngenre"

    def copy_files(self, files, folder):
        target = self.import_path / folder
        target.mkdir(parents=True, exist_ok=True)
        copies = []
        for path, _ in files:
            copies.append(target / path.name)
            shutil.copy(path, copies[-1])
        return copies


class TestImportHook(ImportHookHelper):
    def test_album_import_as_is_writes_fields_and_tags(self, library_files, scratch_model_path):
        self.config["cnngenre"]["model"] = scratch_model_path
        self.config["cnngenre"]["jobs"] = 1
        self.copy_files(library_files[:3], "album")
        self.setup_importer(autotag=False, copy=False, write=True).run()
        items = list(self.lib.items())
        assert len(items) == 3
        for item in items:
            assert item.cnn_model.startswith("scratch-") and item.cnn_genre
            assert mediafile.MediaFile(item.filepath).cnn_genre == item.cnn_genre

    def test_singleton_copy_import_tags_the_copy_only(self, library_files, scratch_model_path):
        self.config["cnngenre"]["model"] = scratch_model_path
        self.config["cnngenre"]["jobs"] = 1
        [source] = self.copy_files(library_files[8:9], "single")
        original = source.read_bytes()
        self.setup_importer(autotag=False, singletons=True, copy=True, write=True).run()
        [item] = list(self.lib.items())
        assert item.cnn_genre and item.filepath != source
        assert mediafile.MediaFile(item.filepath).cnn_genre == item.cnn_genre
        assert source.read_bytes() == original

    def test_import_without_write_leaves_files_alone(self, library_files, scratch_model_path):
        self.config["cnngenre"]["model"] = scratch_model_path
        self.config["cnngenre"]["jobs"] = 1
        [source] = self.copy_files(library_files[:1], "nowrite")
        original = source.read_bytes()
        self.setup_importer(autotag=False, copy=False, write=False).run()
        [item] = list(self.lib.items())
        assert item.cnn_genre and source.read_bytes() == original

    def test_import_goes_on_when_no_model_loads(self, library_files, tmp_path, caplog):
        broken = tmp_path / "broken.pt"
        broken.write_bytes(b"not a model")
        self.config["cnngenre"]["model"] = str(broken)
        self.copy_files(library_files[:2], "album")
        self.setup_importer(autotag=False, copy=False, write=True).run()
        items = list(self.lib.items())
        assert len(items) == 2 and not any(item.get("cnn_model") for item in items)
        warnings = [r.getMessage() for r in caplog.records if "not tagging on import" in r.getMessage()]
        assert len(warnings) == 1 and "broken.pt" in warnings[0]


class TestAutoOff(ImportHookHelper):
    def setup_beets(self):
        super().setup_beets()

    @pytest.fixture(autouse=True)
    def _auto_off(self):
        self.config["cnngenre"]["auto"] = False
        self.load_plugins()

    def test_auto_off_predicts_nothing_on_import(self, library_files, scratch_model_path):
        self.config["cnngenre"]["model"] = scratch_model_path
        self.copy_files(library_files[:1], "album")
        self.setup_importer(autotag=False, copy=False).run()
        assert not any(item.get("cnn_model") for item in self.lib.items())

    def test_importing_stores_no_empty_prediction_and_reads_none_back(self, library_files, tmp_path):
        [untagged, tagged] = self.copy_files(library_files[:2], "album")
        media = mediafile.MediaFile(tagged)
        media.cnn_genre, media.cnn_genre_score = "jazz", 0.9  # as a run of cnngenre with -w leaves a file
        media.save()
        self.setup_importer(autotag=False, copy=False).run()
        items = list(self.lib.items())
        assert len(items) == 2
        for item in items:  # neither an empty "prediction" (0.0, '') nor the file's old one, without its model
            assert "cnn_genre_score" not in item.keys(with_album=False)
            assert "cnn_genre" not in item.keys(with_album=False)
        assert not list(self.lib.items("cnn_genre_score:..0.4"))


def test_forced_cpu_and_threading_backend_match_loky(scratch_model_path, library_files):
    model = GenreModel.load(scratch_model_path)
    paths = [str(p) for p, _ in library_files[:6]]

    def run(backend):
        config = RunConfig(n_jobs=2, device="cpu", backend=backend)
        return {r.index: dict(r.ranked()) for r in predict_files(model, paths, run=config)}

    loky, threads = run(backend="loky"), run(backend="threading")
    assert loky.keys() == threads.keys() == set(range(6))
    for i in loky:
        assert loky[i].keys() == threads[i].keys()
        np.testing.assert_allclose(list(loky[i].values()), [threads[i][g] for g in loky[i]], atol=1e-5)


def test_dask_local_cluster_gives_the_same_predictions(scratch_model_path, library_files, tmp_path):
    distributed = pytest.importorskip("distributed")
    model = GenreModel.load(scratch_model_path)
    hidden = tmp_path / "not on the workers"
    hidden.mkdir()
    shutil.copy(library_files[6][0], hidden / "track.wav")
    paths = [str(p) for p, _ in library_files[:6]] + [str(tmp_path / "missing.wav"), str(hidden / "track.wav")]
    loky = {r.index: r for r in predict_files(model, paths[:7], run=RunConfig(n_jobs=2))}

    def hide_folder_on_worker():
        # The workers' storage lacks this folder, which the client has.
        import os
        real = os.path.getsize

        def getsize(path):
            if os.fsdecode(path).startswith(str(hidden)):
                raise FileNotFoundError(path)
            return real(path)
        os.path.getsize = getsize

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        client.run(hide_folder_on_worker)
        dask = {r.index: r for r in predict_files(model, paths, run=RunConfig(n_jobs=2, backend="dask"))}
    assert dask.keys() == set(range(8)) and loky.keys() == set(range(7))
    for i in range(6):
        assert [g for g, _ in dask[i].ranked()] == [g for g, _ in loky[i].ranked()]
        np.testing.assert_allclose([p for _, p in dask[i].ranked()], [p for _, p in loky[i].ranked()], atol=1e-5)
    assert dask[6].reason == loky[6].reason == "file not found"
    assert "file not found on a Dask worker, though this machine has it" in dask[7].reason
    assert "shared storage" in dask[7].reason


@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU")
def test_cuda_predictions_match_cpu(scratch_model_path, library_files):
    model = GenreModel.load(scratch_model_path)
    paths = [str(p) for p, _ in library_files[:4]]
    cpu = {r.index: dict(r.ranked()) for r in predict_files(model, paths, run=RunConfig(device="cpu"))}
    gpu = {r.index: dict(r.ranked()) for r in predict_files(model, paths, run=RunConfig(device="cuda"))}
    for i in cpu:
        for genre, score in cpu[i].items():
            assert abs(gpu[i][genre] - score) < 1e-3


def test_parallel_prediction_gives_the_genre_network_one_thread_and_restores_it(scratch_model_path,
                                                                                library_files):
    import torch

    model = GenreModel.load(scratch_model_path)
    paths = [str(p) for p, _ in library_files[:4]]
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        seen = [torch.get_num_threads() for _ in predict_files(model, paths, run=RunConfig(n_jobs=2), batch_tracks=2)]
        assert seen == [1] * 4
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU")
def test_cuda_trains_the_scratch_cnn_with_mixed_precision(library_files, feature_cache):
    from genre_cnn_core import TrainConfig, train_on_files

    paths = [str(p) for p, _ in library_files]
    model, _, failures = train_on_files(paths, [g for _, g in library_files], backbone="scratch", min_tracks=4,
                                        config=TrainConfig(epochs=3), run=RunConfig(feature_cache, device="cuda"),
                                        log=lambda line: None)
    assert not failures and model.metadata["device"] == "cuda"
    probabilities = model.predict_proba([np.zeros((1, 96, 400), np.float16)])
    assert np.isfinite(probabilities).all() and abs(probabilities.sum() - 1) < 1e-4


class TestImportAndCache(ImportHookHelper):
    def test_features_computed_on_import_are_found_after_the_copy(self, library_files, decoded_paths):
        calls = decoded_paths
        self.config["cnngenre"]["jobs"] = 1
        self.copy_files(library_files[:3], "album")
        self.setup_importer(autotag=False, copy=True, write=True).run()
        assert len(calls) == 3 and all(item.cnn_genre for item in self.lib.items())
        self.run_command("cnngenre", "-f", "-j", "1")
        assert len(calls) == 3  # the copies (tags written since) hit the cache

    def test_the_default_model_is_announced_once_per_import_session(self, library_files, caplog):
        self.config["cnngenre"]["jobs"] = 1
        for name in ("one", "two"):
            self.copy_files(library_files[:1] if name == "one" else library_files[1:2], name)
        self.setup_importer(autotag=False, copy=False, write=False).run()
        notes = [r.getMessage() for r in caplog.records if "using the default model" in r.getMessage()]
        assert len(list(self.lib.albums())) == 2 and len(notes) == 1
