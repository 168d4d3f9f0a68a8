"""Check the PyTorch musicnn port against the original TensorFlow graph.

``tests/fixtures/musicnn_reference.npz`` was produced by
``scripts/make_musicnn_reference.py``, which runs musicnn 0.1.0's own
``MSD_musicnn`` graph and checkpoint in TensorFlow (2.21.0) on three fixed
patches (seeded random log-mel, a synthetic chord, silence).  TensorFlow is
not needed here.

With the float32 weights the port matches to about 8e-6 on logits, 6e-7 on
probabilities, 3e-5 on mean_pool, 3e-4 on max_pool (whose values reach ~84)
and 1e-5 on the penultimate features; the tolerances below leave ~10x margin.
A wrong port (padding, channel order, pooled-feature interleaving, batch-norm
epsilon) is off by 1e-2 or (much) more.
"""

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from genre_cnn_core import musicnn
from genre_cnn_core.musicnn import MSD_TAGS, MusicnnMSD, load_pretrained

FIXTURE = Path(__file__).parent / "fixtures" / "musicnn_reference.npz"


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def model():
    return load_pretrained()


@pytest.fixture(scope="module")
def output(model, reference):
    with torch.inference_mode():
        return model(torch.from_numpy(reference["x"].astype(np.float32)))


def test_constants():
    assert (musicnn.SAMPLE_RATE, musicnn.N_FFT, musicnn.HOP_LENGTH) == (16000, 512, 256)
    assert (musicnn.N_MELS, musicnn.PATCH_FRAMES) == (96, 187)
    assert len(MSD_TAGS) == 50 and MSD_TAGS[0] == "rock" and MSD_TAGS[-1] == "happy"


def test_weights_file_loads_with_safetensors_torch_api():
    from safetensors import safe_open

    ref = resources.files("genre_cnn_core").joinpath("data").joinpath(musicnn.WEIGHTS_FILE)
    with safe_open(str(ref), framework="pt") as weights:
        assert weights.metadata()["format"] == "musicnn-msd"
        assert tuple(json.loads(weights.metadata()["tags"])) == MSD_TAGS
        expected = {k for k in MusicnnMSD().state_dict() if not k.endswith("num_batches_tracked")}
        assert set(weights.keys()) == expected
        assert all(weights.get_tensor(k).dtype == torch.float32 for k in expected)


def test_pretrained_model_state(model):
    assert not model.training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == 787_159


def test_output_shapes(output, reference):
    n = reference["x"].shape[0]
    assert output.logits.shape == (n, 50)
    assert output.mean_pool.shape == output.max_pool.shape == (n, 753)
    assert output.penultimate.shape == (n, 200)
    assert all(t.dtype == torch.float32 for t in output)


def test_logits_and_probabilities_match_tensorflow(output, reference):
    np.testing.assert_allclose(output.logits.numpy(), reference["logits"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(torch.sigmoid(output.logits).numpy(), reference["probs"],
                               rtol=0, atol=1e-5)


def test_pooled_features_match_tensorflow(output, reference):
    np.testing.assert_allclose(output.mean_pool.numpy(), reference["mean_pool"], rtol=1e-5, atol=3e-4)
    np.testing.assert_allclose(output.max_pool.numpy(), reference["max_pool"], rtol=1e-5, atol=3e-3)
    np.testing.assert_allclose(output.penultimate.numpy(), reference["penultimate"],
                               rtol=0, atol=1e-4)


def test_generic_path_matches_fast_cpu_path(model, reference, output):
    """With gradients on, the front end uses plain conv2d (the non-CPU path)."""
    x = torch.from_numpy(reference["x"][1:2].astype(np.float32)).requires_grad_(True)
    slow = model(x)
    assert slow.logits.requires_grad
    np.testing.assert_allclose(slow.logits.detach().numpy(), output.logits[1:2].numpy(),
                               rtol=0, atol=1e-4)
    np.testing.assert_allclose(slow.max_pool.detach().numpy(), output.max_pool[1:2].numpy(),
                               rtol=1e-5, atol=3e-3)


def test_batch_independence_and_other_lengths(model, reference, output):
    """Patches are processed independently; other patch lengths are accepted."""
    x = torch.from_numpy(reference["x"].astype(np.float32))
    with torch.inference_mode():
        single = model(x[2:3])
        longer = model(torch.cat([x[0], x[1]], dim=0)[None])  # (1, 374, 96)
    np.testing.assert_allclose(single.logits.numpy(), output.logits[2:3].numpy(), rtol=0, atol=1e-5)
    assert longer.logits.shape == (1, 50) and torch.isfinite(longer.logits).all()
