"""The default backbone: a genre head on pretrained musicnn embeddings."""

import numpy as np
import pytest
from beets.library import Item
from beets.test.helper import PluginTestHelper

from genre_cnn_core import DEFAULT_MODEL, GenreModel, RunConfig, TrainConfig, predict_files, train_on_files
from genre_cnn_core.backbones.musicnn import MusicnnBackbone, MusicnnExtractor
from genre_cnn_core.extract import extract_features

GTZAN_GENRES = {"blues", "classical", "country", "disco", "hip-hop", "jazz", "metal", "pop", "reggae", "rock"}


@pytest.fixture(scope="module")
def musicnn_model(library_files, feature_cache):
    paths = [str(p) for p, _ in library_files]
    artists = [f"{g} artist {i // 2}" for i, (_, g) in enumerate(library_files)]
    model, _, failures = train_on_files(paths, [g for _, g in library_files], artists, backbone="musicnn",
                                        min_tracks=4, config=TrainConfig(), run=RunConfig(feature_cache))
    assert not failures
    return model


def test_embeddings_are_small_and_finite(library_files):
    extractor = MusicnnExtractor(MusicnnBackbone.default_settings)
    [(_, embedding, error)] = list(extract_features([str(library_files[0][0])], extractor))
    assert error is None and embedding.shape == (753 + 753 + 50,) and embedding.dtype == np.float16
    assert np.isfinite(embedding).all() and embedding.nbytes <= 10_000
    tags = embedding[-50:].astype(np.float32)
    assert (tags >= 0).all() and (tags <= 1).all()


def test_head_learns_the_synthetic_genres(musicnn_model, heldout_files):
    assert musicnn_model.backbone.name == "musicnn"
    assert musicnn_model.metadata["validation"]["top1_accuracy"] >= 0.8
    paths = [str(p) for p, _ in heldout_files]
    results = {r.index: r for r in predict_files(musicnn_model, paths, tag_threshold=0.0)}
    correct = sum(results[i].ranked()[0][0] == g for i, (_, g) in enumerate(heldout_files))
    assert correct / len(paths) >= 0.8
    assert len(results[0].tags) == 50  # threshold 0 keeps every tag


def test_shipped_default_model_predicts_gtzan_genres(heldout_files):
    model = GenreModel.load(DEFAULT_MODEL)
    assert set(model.genres) == GTZAN_GENRES and model.model_id.startswith("default-gtzan10-")
    [result] = list(predict_files(model, [str(heldout_files[0][0])], tag_threshold=0.1))
    names, scores = zip(*result.ranked())
    assert set(names) == GTZAN_GENRES and list(scores) == sorted(scores, reverse=True)
    assert all(0 < p < 1 for p in scores)
    assert 1 <= len(result.selected(0.5, 3)) <= 3 and result.selected(0.5, 3)[0] == result.ranked()[0]
    assert len(model.trained_on) == 129 and len(model.heldout()) == 129  # every clip held out once


class TestPluginWithMusicnn(PluginTestHelper):
    plugin = "cnngenre"

    def add_files(self, files):
        for path, _ in files:
            self.lib.add(Item.from_path(str(path)))

    def test_first_run_uses_the_default_model_and_says_so(self, library_files, caplog):
        self.add_files(library_files[:2])
        self.run_command("cnngenre", "-j", "1")
        notes = [r.getMessage() for r in caplog.records if "default model" in r.getMessage()]
        assert len(notes) == 1 and "beet cnngenre -t" in notes[0]
        items = list(self.lib.items())
        assert all(item.cnn_genre in GTZAN_GENRES for item in items)
        assert all(item.cnn_model.startswith("default-gtzan10-") for item in items)

    def test_train_musicnn_head_and_query_tags(self, library_files, capsys):
        self.add_files(library_files)
        self.config["cnngenre"]["tag_threshold"] = 0.05
        self.run_command("cnngenre", "-t", "-m", "4", "-j", "1")
        assert "training a musicnn model" in capsys.readouterr().out
        self.run_command("cnngenre", "-j", "1")
        items = list(self.lib.items())
        assert all(item.cnn_model.startswith("musicnn-") for item in items)
        tagged = [item for item in items if item.cnn_tags]
        assert tagged
        tag = tagged[0].cnn_tags[0]
        assert {i.id for i in self.lib.items([f"cnn_tags:{tag}"])} >= {tagged[0].id}
