"""genre_cnn_core.musicnn_numpy computes what the torch port computes, without torch.

Tolerances.  In float64 both implementations do the same maths and agree to
rounding (1e-9 relative here, ~1e-12 measured); pruning the dead filters
moves the outputs by far less than float32 can resolve.  In float32 the two
sum in different orders, so they differ by float32 rounding amplified by the
network (max_pool reaches ~84 after batch-norm scales up to ~30): the test
asks ours to be as close to the float64 result as torch's float32 is, and
bounds the direct difference with the tolerances that ``test_musicnn_port``
uses against TensorFlow.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from genre_cnn_core import musicnn_numpy
from genre_cnn_core.features import FeatureSettings, fixed_frames, log_mel
from genre_cnn_core.musicnn_numpy import MusicnnNumpy

from synth import GENRES, synth_track

FIXTURE = Path(__file__).parent / "fixtures" / "musicnn_reference.npz"
OUTPUTS = ("logits", "mean_pool", "max_pool", "penultimate")
# atol against torch float32 (as test_musicnn_port's against TensorFlow)
TOLERANCE = {"logits": 1e-4, "mean_pool": 3e-4, "max_pool": 3e-3, "penultimate": 1e-4}


@pytest.fixture(scope="module")
def patches():
    """The TensorFlow reference patches (random log-mel, a chord, silence) and log-mels of synthetic music."""
    with np.load(FIXTURE) as data:
        reference = data["x"].astype(np.float32)
    settings = FeatureSettings()
    synthetic = [fixed_frames(log_mel(synth_track(genre, seed, seconds=3.0, sr=16000), settings), 187).T
                 for genre in GENRES for seed in (1, 2)]
    return np.concatenate([reference, np.stack(synthetic).astype(np.float32)])


@pytest.fixture(scope="module")
def state_dict():
    return musicnn_numpy.load_weights()


def torch_outputs(patches, dtype="float32"):
    torch = pytest.importorskip("torch", reason="compared with the torch port: needs PyTorch")
    from genre_cnn_core import musicnn

    dtype = getattr(torch, dtype)
    network = musicnn.load_pretrained().to(dtype)
    with torch.inference_mode():
        out = network(torch.from_numpy(patches).to(dtype))
    return {name: getattr(out, name).numpy() for name in OUTPUTS}


@pytest.fixture(scope="module")
def torch64(patches):
    return torch_outputs(patches, "float64")


@pytest.fixture(scope="module")
def torch32(patches):
    return torch_outputs(patches)


@pytest.fixture(scope="module")
def model():
    return musicnn_numpy.load_pretrained()


def test_float64_maths_equal_torch_and_pruning_changes_nothing_measurable(state_dict, patches, torch64):
    unpruned = MusicnnNumpy(state_dict, dead_gain=0, dtype=np.float64).forward(patches)
    pruned = MusicnnNumpy(state_dict, dtype=np.float64).forward(patches)
    for name in OUTPUTS:
        scale = max(1.0, np.abs(torch64[name]).max())
        np.testing.assert_allclose(getattr(unpruned, name), torch64[name], rtol=0, atol=1e-9 * scale, err_msg=name)
        # float32 cannot tell these apart: its spacing at `scale` is ~1.2e-7 * scale
        np.testing.assert_allclose(getattr(pruned, name), getattr(unpruned, name), rtol=0, atol=1e-8 * scale,
                                   err_msg=name)


def test_pruning_keeps_the_live_filters_only(state_dict):
    live = MusicnnNumpy(state_dict).live_channels
    assert live == {"timbral74": 23, "timbral77": 14, "temporal128": 3, "temporal64": 7, "temporal32": 17,
                    "mid1": 20, "mid2": 61, "mid3": 63}
    assert set(MusicnnNumpy(state_dict, dead_gain=0).live_channels.values()) == {204, 51, 64}


def test_float32_matches_torch_float32(model, patches, torch32, torch64):
    ours, theirs = model.forward(patches), torch32
    for name in OUTPUTS:
        assert getattr(ours, name).dtype == np.float32
        ours_error = np.abs(getattr(ours, name) - torch64[name]).max()
        torch_error = np.abs(theirs[name] - torch64[name]).max()
        assert ours_error <= 2 * torch_error + 1e-7 * np.abs(torch64[name]).max(), (name, ours_error, torch_error)
        np.testing.assert_allclose(getattr(ours, name), theirs[name], rtol=0, atol=TOLERANCE[name], err_msg=name)


def test_embedding_is_the_extractors_per_patch_vector(model, patches, torch32):
    theirs = torch32
    expected = np.concatenate([theirs["mean_pool"], theirs["max_pool"],
                               1 / (1 + np.exp(-theirs["logits"]))], axis=1)
    embedding = model.embed(patches)
    assert embedding.shape == (len(patches), 753 + 753 + 50) and embedding.dtype == np.float32
    np.testing.assert_allclose(embedding[:, -50:], expected[:, -50:], rtol=0, atol=1e-5)
    np.testing.assert_allclose(embedding[:, :753], expected[:, :753], rtol=0, atol=TOLERANCE["mean_pool"])
    np.testing.assert_allclose(embedding[:, 753:1506], expected[:, 753:1506], rtol=0, atol=TOLERANCE["max_pool"])


def test_batch_size_does_not_change_a_patchs_output(model, patches):
    """Up to float32 rounding: BLAS sums in another order for other matrix sizes (torch's port varies as much)."""
    rng = np.random.default_rng(7)
    # 65 patches: more than one internal chunk of 64
    batch = np.concatenate([patches, rng.uniform(0, 4, (65 - len(patches), 187, 96)).astype(np.float32)])
    together = model.embed(batch)
    for index in (0, 2, 5, 63, 64):
        alone = model.embed(batch[index:index + 1])
        np.testing.assert_allclose(alone[0], together[index], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.embed(batch[:64]), together[:64], rtol=1e-4, atol=1e-4)
    assert model.embed(batch[:0]).shape == (0, 1556)


@pytest.mark.parametrize("frames", [1, 20, 374])
def test_other_patch_lengths_match_torch(frames, model, patches):
    x = np.concatenate([patches[0], patches[4]])[:frames][None]
    ours = model.forward(x)
    theirs = torch_outputs(x)
    for name in OUTPUTS:
        np.testing.assert_allclose(getattr(ours, name), theirs[name], rtol=0, atol=TOLERANCE[name], err_msg=name)


def test_with_every_filter_pruned_the_output_is_the_constant_one(state_dict, patches):
    everything_dead = MusicnnNumpy(state_dict, dead_gain=np.inf)
    assert set(everything_dead.live_channels.values()) == {0}
    embeddings = everything_dead.embed(patches)
    assert np.isfinite(embeddings).all()
    # the same for every input, up to the rounding of BLAS kernels that differ between rows
    np.testing.assert_allclose(embeddings, np.broadcast_to(embeddings[0], embeddings.shape), rtol=1e-5, atol=1e-7)


def test_bad_input_and_bad_weights_give_one_line_errors(state_dict):
    model = MusicnnNumpy(state_dict)
    for shape in [(187, 96), (2, 187, 95), (2, 0, 96)]:
        with pytest.raises(ValueError, match=r"expected \(batch, frames, 96\) log-mel patches"):
            model.forward(np.zeros(shape, np.float32))
    broken = dict(state_dict)
    broken["mid2.conv.weight"] = broken["mid2.conv.weight"][:, :10]
    with pytest.raises(ValueError, match=r"mid2.conv.weight should be a float array of shape \(64, 64, 7\)"):
        MusicnnNumpy(broken)
    del broken["mid2.conv.weight"]
    with pytest.raises(ValueError, match="mid2.conv.weight .* found missing"):
        MusicnnNumpy(broken)
    broken = dict(state_dict, **{"dense.bias": np.full(200, np.nan, np.float32)})
    with pytest.raises(ValueError, match="dense.bias holds non-finite values"):
        MusicnnNumpy(broken)


def test_importing_and_predicting_never_imports_torch():
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from genre_cnn_core.musicnn_numpy import load_pretrained
        embedding = load_pretrained().embed(np.random.default_rng(0).uniform(0, 3, (2, 187, 96)))
        assert embedding.shape == (2, 1556) and np.isfinite(embedding).all()
        print("torch" in sys.modules, "scipy" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
