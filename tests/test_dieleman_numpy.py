"""The scratch network in numpy against the torch network it mirrors."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from genre_cnn_core.dieleman import ScratchNetwork, track_logits
from genre_cnn_core.dieleman_numpy import DielemanNumpy, state_shapes

ARCHITECTURES = [
    {"n_mels": 96, "n_genres": 10, "window_frames": 187},
    {"n_mels": 40, "n_genres": 3, "channels": [16, 24], "kernel_size": 3, "pools": [2], "hidden": 8,
     "dropout": 0.0, "window_frames": 60},
    {"n_mels": 8, "n_genres": 2, "channels": [4], "pools": [], "kernel_size": 5, "hidden": 4, "window_frames": 20},
]


def random_network(architecture, seed):
    """A torch network with random weights and random batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    network = ScratchNetwork(**architecture)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.2, 3)
                module.weight.uniform_(-2, 2)  # negative scales too
                module.bias.uniform_(-1, 1)
    return network.eval()


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_state_shapes_are_the_torch_networks(architecture):
    expected = {name: tuple(t.shape) for name, t in ScratchNetwork(**architecture).state_dict().items()}
    assert state_shapes(architecture) == expected


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_logits_equal_the_torch_networks(architecture):
    network = random_network(architecture, seed=3)
    weights = {name: t.numpy() for name, t in network.state_dict().items()}
    rng = np.random.default_rng(0)
    # excerpts longer and shorter than a window, as real tracks give
    tracks = [rng.uniform(0, 3, (3, architecture["n_mels"], 5 * architecture["window_frames"] // 2)),
              rng.uniform(0, 3, (1, architecture["n_mels"], architecture["window_frames"])),
              rng.uniform(0, 3, (2, architecture["n_mels"], architecture["window_frames"] + 7))]
    tracks = [t.astype(np.float16) for t in tracks]
    reference = track_logits(network, tracks)
    ours = DielemanNumpy(weights, architecture).track_logits(tracks)
    assert ours.shape == reference.shape == (3, architecture["n_genres"])
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


@pytest.mark.parametrize("change, message", [
    ({"colour": 3}, "unknown architecture keys"),
    ({"n_mels": None}, "n_mels"),
    ({"n_genres": 0}, "n_genres"),
    ({"kernel_size": True}, "kernel_size"),
    ({"channels": "128"}, "channels"),
    ({"channels": [128, -1, 256]}, "channels"),
    ({"pools": [4]}, "one pooling size per convolution block"),
    ({"dropout": 1.5}, "dropout"),
    ({"window_frames": 20}, "too short"),
])
def test_architectures_that_cannot_be_built_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        state_shapes({**ARCHITECTURES[0], **change})


def test_predicting_with_a_scratch_model_on_the_cpu_never_imports_torch(scratch_model_path):
    program = (
        "import sys\n"
        "import numpy as np\n"
        "from genre_cnn_core import GenreModel\n"
        f"model = GenreModel.load({scratch_model_path!r})\n"
        "n_mels = model.settings.n_mels\n"
        "frames = model.settings.frames(model.settings.excerpt_seconds)\n"
        "p = model.predict_proba([np.ones((3, n_mels, frames), np.float16)])\n"
        "assert p.shape == (1, len(model.genres)) and np.isfinite(p).all()\n"
        "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_scratch_model_predicts_as_its_torch_network(scratch_model, library_files, feature_cache):
    from genre_cnn_core.dieleman import ScratchNetwork

    network = ScratchNetwork(**scratch_model.architecture)
    network.load_state_dict({name: torch.from_numpy(np.array(v)) for name, v in scratch_model.weights.items()})
    extractor = scratch_model.extractor()
    features = extractor.compute([str(p) for p, _ in library_files[:4]])
    np.testing.assert_allclose(scratch_model.logits(features), track_logits(network.eval(), features),
                               rtol=1e-4, atol=1e-4)
