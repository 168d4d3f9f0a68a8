"""The pretrained musicnn forward pass in numpy, without torch, dead filters pruned.

:class:`MusicnnNumpy` computes what :class:`genre_cnn_core.musicnn.MusicnnMSD`
computes in eval mode (see that module for the architecture), from the same
weights file (:func:`load_weights`, a safetensors file).  Two
things make it cheaper than the torch port:

Dead filters are not computed.
    Training decayed most of musicnn's front-end filters and many of its
    mid-end ones to weights that cannot move their output: a filter whose
    gain ``|batch-norm scale| * sum(|weights|)`` is at most ``dead_gain``
    changes its channel by at most ``dead_gain`` times the largest input
    magnitude.  Such a channel is the constant ``scale * relu(bias) +
    shift``; its pooled features are that constant, and the next layer
    takes it in as a bias (with "same" padding, a bias that differs in the
    first and last frames).
Convolutions are matrix products with Toeplitz weights.
    A timbral filter bank (``7 x kf`` over time x mel) is one product of
    each block of the time-unrolled input (7 frames of every mel band of
    the block, per output frame) with a banded weight matrix holding every
    filter at every frequency position of the block; a temporal bank (``k x
    1``) is one product of a banded ``(filters x frames, frames + k - 1)``
    matrix with a block of input frames of several patches side by side.
    Either way the input is copied little or not at all, and the work runs
    in wide BLAS calls on chunks of bounded size.

Only numpy (and safetensors' numpy API for the weights) is imported: scipy's import alone costs more
than a forward pass.
"""

from __future__ import annotations

import itertools
import json
from importlib import resources
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .files import read_safetensors

__all__ = ["DEAD_GAIN", "HOP_LENGTH", "MSD_TAGS", "N_FFT", "N_MELS", "PATCH_FRAMES", "SAMPLE_RATE", "WEIGHTS_FILE",
           "MusicnnNumpy", "MusicnnNumpyOutput", "load_pretrained", "load_weights"]

#: A filter whose output can move by at most this much per unit of input
#: magnitude is treated as dead.  The pretrained network's filters fall into
#: two groups many orders of magnitude apart, one on each side of it.
DEAD_GAIN = 1e-6

# The network's layout, shared with the torch port (genre_cnn_core.musicnn), which imports it from here.
SAMPLE_RATE = 16000
N_FFT = 512
HOP_LENGTH = 256
N_MELS = 96
PATCH_FRAMES = 187  # 3 s at 16 kHz / hop 256

#: Name of the converted weights file inside the ``genre_cnn_core.data`` package.
WEIGHTS_FILE = "musicnn_msd.safetensors"
#: The weights file's header metadata ``format`` (scripts/convert_musicnn.py writes it).
WEIGHTS_FORMAT = "musicnn-msd"

#: The 50 Million Song Dataset tags, in the order of the model's outputs.
MSD_TAGS = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists",
    "dance", "00s", "alternative rock", "jazz", "beautiful", "metal",
    "chillout", "male vocalists", "classic rock", "soul", "indie rock",
    "Mellow", "electronica", "80s", "folk", "90s", "chill", "instrumental",
    "punk", "oldies", "blues", "hard rock", "ambient", "acoustic",
    "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party",
    "country", "easy listening", "sexy", "catchy", "funk", "electro",
    "heavy metal", "Progressive rock", "60s", "rnb", "indie pop", "sad",
    "House", "happy",
)

_BN_EPS = 1e-3  # TensorFlow's batch_normalization default
_TIMBRAL = (("timbral74", int(0.4 * N_MELS)), ("timbral77", int(0.7 * N_MELS)))
_TEMPORAL_KERNELS = (128, 64, 32)
_PAD_BEFORE = (_TEMPORAL_KERNELS[0] - 1) // 2
_PAD_AFTER = _TEMPORAL_KERNELS[0] - 1 - _PAD_BEFORE
_TIMBRAL_FRAMES = 7
_MID_WIDTH = 7
_MID_BLOCKS = ("mid1", "mid2", "mid3")

# Rows (output frames) per matrix product: large enough for BLAS to run at
# speed, small enough for the product to stay in cache.
_ROWS_PER_CHUNK = 512
# Frequency positions per product of a timbral bank (chosen by timing).
_POSITIONS_PER_BLOCK = 16
# Output frames per product of a temporal bank: each adds kernel - 1 frames
# of input, so fewer frames waste less of the banded matrix.
_TEMPORAL_FRAMES_PER_CHUNK = 8
_TEMPORAL_PATCHES_PER_CHUNK = 8
# Patches per forward pass: bounds the memory of the intermediate features.
_MAX_BATCH = 64


class MusicnnNumpyOutput(NamedTuple):
    """Outputs of :meth:`MusicnnNumpy.forward`, as those of ``MusicnnMSD.forward``.

    Attributes
    ----------
    logits : numpy.ndarray
        ``(batch, 50)`` tag logits.
    mean_pool, max_pool : numpy.ndarray
        ``(batch, 753)`` temporal mean and max of the mid-level features.
    penultimate : numpy.ndarray
        ``(batch, 200)`` penultimate dense layer, after its batch norm.
    """

    logits: np.ndarray
    mean_pool: np.ndarray
    max_pool: np.ndarray
    penultimate: np.ndarray


class _Features(NamedTuple):
    """Per-frame features whose dead channels are constants.

    ``values`` is ``(batch, frames, live.sum())``: the live channels, in
    channel order; ``constants`` holds every channel's constant (used where
    ``live`` is False).
    """

    values: np.ndarray
    live: np.ndarray
    constants: np.ndarray

    def on(self, channels: np.ndarray) -> np.ndarray:
        """``(batch, frames, len(channels))``: the given channels, constants broadcast."""
        out = np.empty(self.values.shape[:2] + (len(channels),), dtype=self.values.dtype)
        live = self.live[channels]
        out[:, :, ~live] = self.constants[channels[~live]]
        out[:, :, live] = self.values[:, :, (np.cumsum(self.live) - 1)[channels[live]]]
        return out

    def pools(self) -> tuple[np.ndarray, np.ndarray]:
        """Temporal ``(max, mean)``, ``(batch, channels)`` each."""
        batch = self.values.shape[0]
        peak = np.broadcast_to(self.constants, (batch, self.live.size)).copy()
        mean = peak.copy()
        if self.live.any():
            peak[:, self.live] = self.values.max(axis=1)
            mean[:, self.live] = self.values.mean(axis=1)
        return peak, mean


def _bn_affine(state: dict, name: str, dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, shift)`` with ``batch_norm(x) == x * scale + shift`` (eval mode)."""
    weight, bias = state[f"{name}.weight"].astype(np.float64), state[f"{name}.bias"].astype(np.float64)
    scale = weight / np.sqrt(state[f"{name}.running_var"].astype(np.float64) + _BN_EPS)
    shift = bias - state[f"{name}.running_mean"] * scale
    return scale.astype(dtype), shift.astype(dtype)


def _gains(weight: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Largest change of each output channel per unit of input magnitude."""
    return np.abs(scale.astype(np.float64)) * np.abs(weight.astype(np.float64)).reshape(len(weight), -1).sum(1)


class _FrontEndBank:
    """Conv2d -> ReLU -> batch norm -> max over frequency, on the live filters only.

    The maximum over frequency is taken right after the convolution, on
    filters negated where the batch-norm scale is negative (as in
    ``musicnn._FrontEndBlock``): batch norm is affine and ReLU monotonic.
    """

    def __init__(self, state: dict, name: str, dead_gain: float, dtype):
        weight = state[f"{name}.conv.weight"][:, 0]  # (filters, frames, bands)
        bias = state[f"{name}.conv.bias"].astype(dtype)
        scale, shift = _bn_affine(state, f"{name}.bn", dtype)
        self.live = _gains(weight, scale) > dead_gain
        self.constants = scale * np.maximum(bias, 0) + shift
        sign = np.where(scale < 0, -1, 1).astype(dtype)
        self.sign, self.bias, self.scale, self.shift = (a[self.live] for a in (sign, bias, scale, shift))
        self.weight = (weight[self.live] * self.sign[:, None, None]).astype(dtype)

    def finish(self, peak: np.ndarray) -> np.ndarray:
        """Features of the live filters from their (sign-flipped) peaks over frequency."""
        return np.maximum((peak + self.bias * self.sign) * self.sign, 0) * self.scale + self.shift


def _max_over_positions(product: np.ndarray, out: np.ndarray, first_block: bool) -> None:
    """``out = max(out, product.max(axis=1))`` (or without ``out`` for the first block).

    One ``maximum`` per position over contiguous rows of filters: numpy's
    reduction over a short axis is several times slower.
    """
    start = 0
    if first_block:
        out[...] = product[:, 0]
        start = 1
    for position in range(start, product.shape[1]):
        np.maximum(out, product[:, position], out=out)


class _TimbralBank(_FrontEndBank):
    """A ``7 x kf`` filter bank: peaks over frequency as products with banded (Toeplitz) weights.

    Frequency positions are split into blocks of at most
    :data:`_POSITIONS_PER_BLOCK`: a block of ``P`` positions spans ``P + kf -
    1`` bands, of which each filter uses ``kf``, so shorter blocks waste less
    of the product on zeros, and longer ones copy less input and keep the
    product wide.
    """

    def __init__(self, state: dict, name: str, dead_gain: float, dtype, n_bands: int = N_MELS):
        super().__init__(state, name, dead_gain, dtype)
        n_filters, frames, width = self.weight.shape
        positions = n_bands - width + 1
        n_blocks = -(-positions // _POSITIONS_PER_BLOCK)
        edges = np.linspace(0, positions, n_blocks + 1).round().astype(int)
        self.frames = frames
        self.blocks = []  # (first band, bands, positions, (bands * frames, filters * positions) matrix)
        for first, stop in itertools.pairwise(edges):
            n_pos = stop - first
            bands = n_pos + width - 1
            matrix = np.zeros((bands, frames, n_pos, n_filters), dtype=dtype)
            for p in range(n_pos):
                matrix[p:p + width, :, p, :] = self.weight.transpose(2, 1, 0)
            self.blocks.append((first, bands, n_pos, matrix.reshape(bands * frames, n_pos * n_filters)))

    def __call__(self, window: np.ndarray) -> np.ndarray:
        """``(B, T + 6, bands)`` normalised, padded input -> ``(B, T, live filters)``."""
        batch, length, _ = window.shape
        n_frames = length - self.frames + 1
        n_filters = self.weight.shape[0]
        # all patches end to end: the frames straddling two patches are computed and dropped
        flat = window.reshape(batch * length, -1)
        n_rows = batch * length - self.frames + 1
        peak = np.empty((n_rows, n_filters), dtype=window.dtype)
        for index, (first, bands, n_pos, matrix) in enumerate(self.blocks):
            unrolled = sliding_window_view(flat[:, first:first + bands], self.frames, axis=0)  # (rows, bands, frames)
            for r0 in range(0, n_rows, _ROWS_PER_CHUNK):
                rows = unrolled[r0:r0 + _ROWS_PER_CHUNK]
                product = (rows.reshape(len(rows), bands * self.frames) @ matrix).reshape(len(rows), n_pos, n_filters)
                _max_over_positions(product, peak[r0:r0 + len(rows)], first_block=index == 0)
        starts = np.arange(batch) * length
        peak = peak[(starts[:, None] + np.arange(n_frames)).ravel()].reshape(batch, n_frames, n_filters)
        return self.finish(peak)


class _TemporalBank(_FrontEndBank):
    """A ``k x 1`` filter bank: peaks over frequency as products with a banded time matrix."""

    def __init__(self, state: dict, name: str, dead_gain: float, dtype):
        super().__init__(state, name, dead_gain, dtype)
        n_filters, self.kernel, _ = self.weight.shape
        frames = _TEMPORAL_FRAMES_PER_CHUNK
        band = np.zeros((n_filters, frames, frames + self.kernel - 1), dtype=dtype)
        for t in range(frames):
            band[:, t, t:t + self.kernel] = self.weight[:, :, 0]
        self.band = band
        self.start = _PAD_BEFORE - (self.kernel - 1) // 2

    def __call__(self, time_major: list[np.ndarray], n_frames: int) -> np.ndarray:
        """Normalised, padded input, time first, in groups of patches ``(L, patches, bands)`` -> ``(B, T, live)``."""
        n_filters = self.band.shape[0]
        batch = sum(patches.shape[1] for patches in time_major)
        peak = np.empty((batch, n_frames, n_filters), dtype=time_major[0].dtype)
        b0 = 0
        for patches in time_major:
            _, n_patches, n_bands = patches.shape
            for t0 in range(0, n_frames, _TEMPORAL_FRAMES_PER_CHUNK):
                frames = min(_TEMPORAL_FRAMES_PER_CHUNK, n_frames - t0)
                band = self.band[:, :frames, :frames + self.kernel - 1].reshape(n_filters * frames,
                                                                                frames + self.kernel - 1)
                rows = patches[self.start + t0:self.start + t0 + frames + self.kernel - 1]
                product = band @ rows.reshape(len(rows), n_patches * n_bands)  # (filters * frames, patches * bands)
                peak[b0:b0 + n_patches, t0:t0 + frames] = (
                    product.reshape(n_filters, frames, n_patches, n_bands).max(axis=3).transpose(2, 1, 0))
            b0 += n_patches
        return self.finish(peak)


class _MidBlock:
    """Conv1d over time (width 7, "same" zero padding) -> ReLU -> batch norm, on live channels.

    A constant input channel adds ``weight * constant`` at every tap that
    falls inside the patch: a bias per output frame, equal in the middle
    and smaller in the first and last three frames (the zero padding).
    """

    def __init__(self, state: dict, name: str, inputs_live: np.ndarray, input_constants: np.ndarray,
                 dead_gain: float, dtype):
        weight = state[f"{name}.conv.weight"].astype(np.float64)  # (out, in, width)
        bias = state[f"{name}.conv.bias"].astype(dtype)
        scale, shift = _bn_affine(state, f"{name}.bn", dtype)
        self.live = _gains(weight, scale) > dead_gain
        self.constants = scale * np.maximum(bias, 0) + shift
        kept = weight[self.live]
        self.bias, self.scale, self.shift = bias[self.live], scale[self.live], shift[self.live]
        # (in, tap) rows, as the time-unrolled input lays them out
        self.weight = kept[:, inputs_live].reshape(len(kept), int(inputs_live.sum()) * _MID_WIDTH).T.astype(dtype)
        self.tap_bias = np.einsum("oik,i->ko", kept[:, ~inputs_live], input_constants[~inputs_live].astype(np.float64))
        self._frame_bias: dict[int, np.ndarray] = {}

    def frame_bias(self, n_frames: int) -> np.ndarray:
        """``(T, live outputs)``: the conv bias plus what the constant inputs add to each frame."""
        if n_frames not in self._frame_bias:
            half = (_MID_WIDTH - 1) // 2
            tap_frames = np.arange(n_frames)[:, None] + np.arange(_MID_WIDTH) - half
            inside = ((tap_frames >= 0) & (tap_frames < n_frames)).astype(np.float64)
            self._frame_bias[n_frames] = (inside @ self.tap_bias + self.bias).astype(self.bias.dtype)
        return self._frame_bias[n_frames]

    def __call__(self, features: _Features) -> _Features:
        x = features.values
        batch, n_frames, n_inputs = x.shape
        half = (_MID_WIDTH - 1) // 2
        padded = np.zeros((batch, n_frames + 2 * half, n_inputs), dtype=x.dtype)
        padded[:, half:half + n_frames] = x
        flat = padded.reshape(batch * (n_frames + 2 * half), n_inputs)
        unrolled = sliding_window_view(flat, _MID_WIDTH, axis=0)  # (rows, in, taps)
        n_rows = len(unrolled)
        out = np.empty((n_rows, self.weight.shape[1]), dtype=x.dtype)
        for r0 in range(0, n_rows, _ROWS_PER_CHUNK):
            rows = unrolled[r0:r0 + _ROWS_PER_CHUNK]
            np.matmul(rows.reshape(len(rows), n_inputs * _MID_WIDTH), self.weight, out=out[r0:r0 + len(rows)])
        starts = np.arange(batch) * (n_frames + 2 * half)
        out = out[(starts[:, None] + np.arange(n_frames)).ravel()].reshape(batch, n_frames, out.shape[1])
        values = np.maximum(out + self.frame_bias(n_frames), 0) * self.scale + self.shift
        return _Features(values, self.live, self.constants)


def _residual(block: _Features, skip: _Features) -> _Features:
    """``block + skip``, live where either is."""
    live = block.live | skip.live
    channels = np.flatnonzero(live)
    return _Features(block.on(channels) + skip.on(channels), live, block.constants + skip.constants)


def _check_state(state) -> None:
    """Raise ValueError unless ``state`` holds musicnn's MSD tensors with the expected shapes."""
    if not isinstance(state, dict):
        raise ValueError(f"musicnn weights: expected a state dict, got {type(state).__name__}")
    unknown = sorted(set(state) - set(_state_shapes()))
    if unknown:
        raise ValueError(f"musicnn weights: unknown tensor {unknown[0][:40]!r}")
    for key, shape in _state_shapes().items():
        value = state.get(key)
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.shape != shape:
            found = "missing" if value is None else getattr(value, "shape", type(value).__name__)
            raise ValueError(f"musicnn weights: {key} should be a float array of shape {shape}, found {found}")
        if not np.isfinite(value).all():
            raise ValueError(f"musicnn weights: {key} holds non-finite values")
        if key.endswith("running_var") and (value < 0).any():
            raise ValueError(f"musicnn weights: {key} holds negative variances")


def _state_shapes() -> dict:
    """Name -> shape of each tensor of ``MusicnnMSD``'s state dict."""
    front = 2 * 204 + 3 * 51
    expected = {"input_bn": 1, "pool_bn": 2 * (front + 3 * 64), "dense_bn": 200}
    shapes = {}
    for name, width in _TIMBRAL:
        shapes[f"{name}.conv.weight"] = (204, 1, _TIMBRAL_FRAMES, width)
        shapes[f"{name}.conv.bias"] = (204,)
        expected[f"{name}.bn"] = 204
    for kernel in _TEMPORAL_KERNELS:
        shapes[f"temporal{kernel}.conv.weight"] = (51, 1, kernel, 1)
        shapes[f"temporal{kernel}.conv.bias"] = (51,)
        expected[f"temporal{kernel}.bn"] = 51
    for name, inputs in zip(_MID_BLOCKS, (front, 64, 64)):
        shapes[f"{name}.conv.weight"] = (64, inputs, _MID_WIDTH)
        shapes[f"{name}.conv.bias"] = (64,)
        expected[f"{name}.bn"] = 64
    for name, size in expected.items():
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{suffix}"] = (size,)
    shapes.update({"dense.weight": (200, 2 * (front + 3 * 64)), "dense.bias": (200,),
                   "output.weight": (50, 200), "output.bias": (50,)})
    return shapes


class MusicnnNumpy:
    """musicnn's MSD tagger in eval mode, in numpy, dead filters pruned.

    Parameters
    ----------
    state_dict : dict of str to numpy.ndarray
        ``MusicnnMSD``'s state dict, e.g. :func:`load_weights`.
    dead_gain : float, optional
        Filters and channels whose output moves by at most this much per
        unit of input magnitude are replaced by their constant output;
        ``0`` keeps every filter.
    dtype : numpy dtype, optional
        Precision of the computation; float64 serves to check the maths.

    Raises
    ------
    ValueError
        If ``state_dict`` lacks a tensor, or one has the wrong shape or
        non-finite values.
    """

    def __init__(self, state_dict: dict, dead_gain: float = DEAD_GAIN, dtype=np.float32):
        _check_state(state_dict)
        state = state_dict
        self.dtype = np.dtype(dtype)
        scale, shift = _bn_affine(state, "input_bn", self.dtype)
        self._input_scale, self._input_shift = scale[0], shift[0]
        self._timbral = [_TimbralBank(state, name, dead_gain, self.dtype) for name, _ in _TIMBRAL]
        self._temporal = [_TemporalBank(state, f"temporal{k}", dead_gain, self.dtype) for k in _TEMPORAL_KERNELS]
        banks = self._timbral + self._temporal
        self._front_live = np.concatenate([bank.live for bank in banks])
        self._front_constants = np.concatenate([bank.constants for bank in banks])
        self._mid = []
        live, constants = self._front_live, self._front_constants
        for name in _MID_BLOCKS:
            block = _MidBlock(state, name, live, constants, dead_gain, self.dtype)
            self._mid.append(block)
            if name == _MID_BLOCKS[0]:
                live, constants = block.live, block.constants
            else:  # the residual's inputs: block output plus block input
                live, constants = block.live | live, block.constants + constants
        self._pool_scale, self._pool_shift = _bn_affine(state, "pool_bn", self.dtype)
        self._dense_weight = state["dense.weight"].T.astype(self.dtype)
        self._dense_bias = state["dense.bias"].astype(self.dtype)
        self._dense_scale, self._dense_shift = _bn_affine(state, "dense_bn", self.dtype)
        self._output_weight = state["output.weight"].T.astype(self.dtype)
        self._output_bias = state["output.bias"].astype(self.dtype)

    @property
    def live_channels(self) -> dict[str, int]:
        """Filters or channels computed, per layer (the others are constants)."""
        names = [name for name, _ in _TIMBRAL] + [f"temporal{k}" for k in _TEMPORAL_KERNELS] + list(_MID_BLOCKS)
        return {name: int(layer.live.sum()) for name, layer in zip(names, self._timbral + self._temporal + self._mid)}

    def _front_end(self, x: np.ndarray) -> _Features:
        batch, n_frames, _ = x.shape
        padded = np.zeros((batch, _PAD_BEFORE + n_frames + _PAD_AFTER, x.shape[2]), dtype=self.dtype)
        padded[:, _PAD_BEFORE:_PAD_BEFORE + n_frames] = x * self._input_scale + self._input_shift
        timbral_start = _PAD_BEFORE - (_TIMBRAL_FRAMES - 1) // 2
        timbral_window = padded[:, timbral_start:timbral_start + n_frames + _TIMBRAL_FRAMES - 1]
        time_major = [np.ascontiguousarray(padded[b0:b0 + _TEMPORAL_PATCHES_PER_CHUNK].transpose(1, 0, 2))
                      for b0 in range(0, batch, _TEMPORAL_PATCHES_PER_CHUNK)]
        parts = [bank(np.ascontiguousarray(timbral_window)) for bank in self._timbral]
        parts += [bank(time_major, n_frames) for bank in self._temporal]
        return _Features(np.concatenate(parts, axis=2), self._front_live, self._front_constants)

    def _forward(self, x: np.ndarray) -> MusicnnNumpyOutput:
        front = self._front_end(x)
        m1 = self._mid[0](front)
        m2 = _residual(self._mid[1](m1), m1)
        m3 = _residual(self._mid[2](m2), m2)
        pools = [features.pools() for features in (front, m1, m2, m3)]
        max_pool = np.concatenate([peak for peak, _ in pools], axis=1)
        mean_pool = np.concatenate([mean for _, mean in pools], axis=1)
        pooled = np.concatenate([max_pool, mean_pool], axis=1) * self._pool_scale + self._pool_shift
        hidden = np.maximum(pooled @ self._dense_weight + self._dense_bias, 0)
        penultimate = hidden * self._dense_scale + self._dense_shift
        logits = penultimate @ self._output_weight + self._output_bias
        return MusicnnNumpyOutput(logits, mean_pool, max_pool, penultimate)

    def forward(self, patches) -> MusicnnNumpyOutput:
        """Tag a batch of log-mel patches.

        Parameters
        ----------
        patches : array_like
            ``(batch, frames, 96)`` log-mel patches, normally ``(batch, 187, 96)``.

        Returns
        -------
        MusicnnNumpyOutput
            ``logits (B, 50)``, ``mean_pool (B, 753)``, ``max_pool (B, 753)``,
            ``penultimate (B, 200)``, in the model's dtype.

        Raises
        ------
        ValueError
            If ``patches`` is not ``(batch, frames >= 1, 96)``.
        """
        x = np.asarray(patches)
        if x.ndim != 3 or x.shape[2] != N_MELS or x.shape[1] < 1:
            raise ValueError(f"expected (batch, frames, {N_MELS}) log-mel patches, got shape {x.shape}")
        x = x.astype(self.dtype, copy=False)
        chunks = [self._forward(x[i:i + _MAX_BATCH]) for i in range(0, len(x), _MAX_BATCH)]
        if not chunks:
            return MusicnnNumpyOutput(*(np.zeros((0, n), self.dtype) for n in (50, 753, 753, 200)))
        return MusicnnNumpyOutput(*(np.concatenate(parts) for parts in zip(*chunks)))

    def embed(self, patches) -> np.ndarray:
        """Per-patch embeddings, as ``MusicnnExtractor`` keeps them.

        Parameters
        ----------
        patches : array_like
            ``(batch, frames, 96)`` log-mel patches.

        Returns
        -------
        numpy.ndarray
            ``(batch, 1556)``: ``mean_pool (753)``, ``max_pool (753)`` and the
            50 tag probabilities (``sigmoid(logits)``), concatenated.
        """
        out = self.forward(patches)
        with np.errstate(over="ignore"):  # exp overflows to inf for very negative logits: probability 0
            probabilities = 1 / (1 + np.exp(-out.logits))
        return np.concatenate([out.mean_pool, out.max_pool, probabilities], axis=1)


def load_weights() -> dict:
    """The packaged MSD weights: ``MusicnnMSD``'s state dict, as read-only numpy arrays, checked.

    Raises
    ------
    RuntimeError
        If the packaged weights file is missing or not the expected one.
    """
    ref = resources.files("genre_cnn_core").joinpath("data").joinpath(WEIGHTS_FILE)
    try:
        state, header = read_safetensors(ref.read_bytes())
    except FileNotFoundError as error:
        raise RuntimeError(f"musicnn weights not found ({WEIGHTS_FILE}); regenerate them with "
                           "scripts/convert_musicnn.py") from error
    except ValueError as error:
        raise RuntimeError(f"unreadable musicnn weights file {WEIGHTS_FILE}: {error}") from None
    try:
        tags = json.loads(header.get("tags", "null"))
    except ValueError:
        tags = None
    if header.get("format") != WEIGHTS_FORMAT or tags != list(MSD_TAGS):
        raise RuntimeError(f"unexpected musicnn weights file format in {WEIGHTS_FILE}")
    try:
        _check_state(state)
    except ValueError as error:
        raise RuntimeError(f"musicnn weights file mismatch: {error}") from None
    return state


def load_pretrained(dead_gain: float = DEAD_GAIN, dtype=np.float32) -> MusicnnNumpy:
    """:class:`MusicnnNumpy` with the packaged MSD weights (no torch needed).

    Raises
    ------
    RuntimeError
        If the packaged weights file is missing or not the expected one.
    """
    return MusicnnNumpy(load_weights(), dead_gain=dead_gain, dtype=dtype)
