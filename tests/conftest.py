import pytest

from genre_cnn_core import FeatureCache, RunConfig, TrainConfig, train_on_files

from synth import make_library_files
from torch_support import HAVE_TORCH

#: Modules that check the numpy networks against the torch ones import torch: without PyTorch they are not
#: collected (the numpy networks' own tests, and everything else, run either way).
collect_ignore = [] if HAVE_TORCH else ["test_musicnn_port.py", "test_dieleman_numpy.py"]

SPELLINGS = {"techno": ["Techno", "techno", "TECHNO; Electronic"], "chiptune": ["Chiptune", "chip-tune"]}


@pytest.fixture(scope="session")
def library_files(tmp_path_factory):
    """24 tagged synthetic tracks: 3 genres, messy spellings, 4 formats."""
    return make_library_files(tmp_path_factory.mktemp("music"), per_genre=8, spellings=SPELLINGS)


@pytest.fixture(scope="session")
def heldout_files(tmp_path_factory):
    """Other tracks of the same synthetic genres (other seeds), never trained on."""
    return make_library_files(tmp_path_factory.mktemp("heldout"), per_genre=3, seed=5000)


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory):
    return FeatureCache(str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def scratch_model(library_files, feature_cache):
    """A scratch CNN trained through the core API, shared by the tests (training it needs PyTorch)."""
    pytest.importorskip("torch", reason="training the scratch CNN needs PyTorch (pip install '.[torch]')")
    paths = [str(p) for p, _ in library_files]
    genres = [g for _, g in library_files]
    artists = [f"{g} artist {i // 2}" for i, (_, g) in enumerate(library_files)]
    model, _, failures = train_on_files(paths, genres, artists, backbone="scratch", min_tracks=4,
                                        config=TrainConfig(epochs=15, minutes=2), run=RunConfig(feature_cache),
                                        log=lambda line: None)
    assert not failures
    return model


@pytest.fixture(scope="session")
def scratch_model_path(scratch_model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("models") / "scratch.pt")
    scratch_model.save(path)
    return path


@pytest.fixture
def decoded_paths(monkeypatch):
    """The paths whose audio is decoded from now on (a cache hit decodes nothing), in order."""
    import genre_cnn_core.features as features

    calls = []
    real = features.load_excerpts

    def counting(path, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(features, "load_excerpts", counting)
    return calls
