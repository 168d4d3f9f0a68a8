"""The scratch backbone's network (:class:`genre_cnn_core.dieleman.ScratchNetwork`) in eval mode, in numpy.

Predicting with a scratch model on the CPU then never imports torch, whose
import costs seconds per ``beet`` run; torch stays for training and GPUs.
The layer names and shapes are those of the torch network's state dict, so
a model file's weights are checked against its architecture without torch.
"""

from __future__ import annotations

import numpy as np

#: The network's shape unless a model's architecture says otherwise (``ScratchNetwork``'s defaults).
DEFAULT_ARCHITECTURE = {"channels": (128, 128, 256), "kernel_size": 4, "pools": (4, 2), "hidden": 256,
                        "dropout": 0.5, "window_frames": 187}
_REQUIRED = ("n_mels", "n_genres")
_BN_EPS = 1e-5  # torch's BatchNorm1d default


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a whole number from 1 up, not {value!r}")
    return int(value)


def full_architecture(architecture: dict) -> dict:
    """``architecture`` with the defaults filled in, every value checked.

    Raises
    ------
    ValueError
        For an unknown or missing key, or a value the network cannot have.
    """
    unknown = set(architecture) - set(DEFAULT_ARCHITECTURE) - set(_REQUIRED)
    if unknown:
        raise ValueError(f"unknown architecture keys: {', '.join(sorted(map(str, unknown)))}")
    missing = [key for key in _REQUIRED if key not in architecture]
    if missing:
        raise ValueError(f"architecture lacks {', '.join(missing)}")
    full = {**DEFAULT_ARCHITECTURE, **architecture}
    for key in ("n_mels", "n_genres", "kernel_size", "hidden", "window_frames"):
        full[key] = _positive_int(full[key], key)
    for key in ("channels", "pools"):
        if not isinstance(full[key], (list, tuple)):
            raise ValueError(f"{key} must be a list of whole numbers, not {full[key]!r}")
        full[key] = tuple(_positive_int(value, key) for value in full[key])
    if not full["channels"] or len(full["pools"]) != len(full["channels"]) - 1:
        raise ValueError("there must be one pooling size per convolution block but the last")
    dropout = full["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be from 0 up to 1, not {dropout!r}")
    frames = full["window_frames"]
    for pool in full["pools"]:
        frames = (frames - full["kernel_size"] + 1) // pool
    if frames - full["kernel_size"] + 1 < 1:
        raise ValueError(f"a window of {full['window_frames']} frames is too short for these layers")
    return full


def _layer_indices(architecture: dict) -> tuple[list[int], list[int]]:
    """Indices in ``blocks`` of each convolution and of the batch norm after it (as ``nn.Sequential`` numbers
    them: batch norm, then per block convolution, batch norm, ReLU and a max pooling but after the last)."""
    convolutions, norms, index = [], [], 1
    for block in range(len(architecture["channels"])):
        convolutions.append(index)
        norms.append(index + 1)
        index += 4 if block < len(architecture["pools"]) else 3
    return convolutions, norms


def state_shapes(architecture: dict) -> dict[str, tuple]:
    """Name -> shape of every tensor of the network's state dict."""
    arch = full_architecture(architecture)
    shapes: dict[str, tuple] = {}

    def norm(prefix, width):
        shapes.update({f"{prefix}.{name}": (width,) for name in ("weight", "bias", "running_mean", "running_var")})
        shapes[f"{prefix}.num_batches_tracked"] = ()

    norm("blocks.0", arch["n_mels"])
    previous = arch["n_mels"]
    for conv, bn, width in zip(*_layer_indices(arch), arch["channels"]):
        shapes[f"blocks.{conv}.weight"] = (width, previous, arch["kernel_size"])
        norm(f"blocks.{bn}", width)
        previous = width
    shapes.update({"head.1.weight": (arch["hidden"], 3 * previous), "head.1.bias": (arch["hidden"],),
                   "head.4.weight": (arch["n_genres"], arch["hidden"]), "head.4.bias": (arch["n_genres"],)})
    return shapes


def sliding_windows(spectrograms: np.ndarray, width: int) -> np.ndarray:
    """Half-overlapping windows of ``width`` frames from ``(E, M, T)`` excerpts."""
    frames = spectrograms.shape[-1]
    if frames <= width:
        return spectrograms[:, :, :width]
    starts = range(0, frames - width + 1, width // 2)
    return np.concatenate([spectrograms[:, :, s:s + width] for s in starts])


class DielemanNumpy:
    """The scratch network of a model's weights, eval mode, float32.

    Parameters
    ----------
    weights : dict of str to numpy.ndarray
        The torch network's state dict (shapes as :func:`state_shapes`).
    architecture : dict
        The model's saved architecture.
    """

    def __init__(self, weights: dict, architecture: dict):
        arch = full_architecture(architecture)
        self.window_frames = arch["window_frames"]
        self.pools = arch["pools"]

        def affine(prefix):  # batch norm in eval mode as x * scale + shift
            scale = np.asarray(weights[f"{prefix}.weight"], np.float64) / np.sqrt(
                np.asarray(weights[f"{prefix}.running_var"], np.float64) + _BN_EPS)
            shift = np.asarray(weights[f"{prefix}.bias"], np.float64) - np.asarray(
                weights[f"{prefix}.running_mean"], np.float64) * scale
            return scale.astype(np.float32)[:, None], shift.astype(np.float32)[:, None]

        self.input_norm = affine("blocks.0")
        self.blocks = [(np.asarray(weights[f"blocks.{conv}.weight"], np.float32), *affine(f"blocks.{bn}"))
                       for conv, bn in zip(*_layer_indices(arch))]
        self.dense = [(np.asarray(weights[f"head.{i}.weight"], np.float32).T,
                       np.asarray(weights[f"head.{i}.bias"], np.float32)) for i in (1, 4)]

    def window_logits(self, windows: np.ndarray) -> np.ndarray:
        """``(windows, mel bands, frames)`` log-mel windows -> ``(windows, genres)`` logits."""
        scale, shift = self.input_norm
        # time-major (windows, frames, channels): each convolution is one matrix product of the
        # windows' frames (im2col) and max pooling reduces contiguous rows
        x = np.ascontiguousarray((np.asarray(windows, np.float32) * scale + shift).transpose(0, 2, 1))
        for i, (weight, scale, shift) in enumerate(self.blocks):
            n_windows, frames, channels = x.shape
            kernel = weight.shape[2]
            columns = np.lib.stride_tricks.sliding_window_view(x, kernel, axis=1)  # (B, T', C, K) view
            out_frames = frames - kernel + 1
            x = (columns.reshape(n_windows * out_frames, channels * kernel) @ weight.reshape(len(weight), -1).T)
            x = np.maximum(x * scale[:, 0] + shift[:, 0], 0.0, out=x).reshape(n_windows, out_frames, -1)
            if i < len(self.pools):
                pool = self.pools[i]
                length = out_frames // pool * pool
                x = x[:, :length].reshape(n_windows, length // pool, pool, -1).max(axis=2)
        pooled = np.concatenate([x.mean(axis=1), x.max(axis=1), np.sqrt(np.square(x).mean(axis=1) + 1e-8)], axis=1)
        (w1, b1), (w2, b2) = self.dense
        return np.maximum(pooled @ w1 + b1, 0.0) @ w2 + b2

    def track_logits(self, features: list) -> np.ndarray:
        """Genre logits per track: the mean over the windows of its excerpts (as ``dieleman.track_logits``)."""
        return np.stack([self.window_logits(sliding_windows(np.asarray(track, np.float32), self.window_frames))
                         .mean(axis=0) for track in features])
