"""PyTorch port of the pretrained *musicnn* MSD tagger.

The network is the ``MSD_musicnn`` model of

    Jordi Pons and Xavier Serra, "musicnn: pre-trained convolutional neural
    networks for music audio tagging", Late-Breaking/Demo, ISMIR 2019.

trained on the Million Song Dataset's 50 most frequent Last.fm tags.  The
architecture is re-implemented here from the paper and from the variable
names and shapes of the released checkpoint; the weights were converted from
musicnn 0.1.0 (``MSD_musicnn``) by ``scripts/convert_musicnn.py``.  musicnn
and its weights are Copyright (c) Music Technology Group, Universitat Pompeu
Fabra 2019, released under the ISC licence (see ``data/MUSICNN_LICENSE``).

Input is a batch of log-mel patches of shape ``(batch, 187, 96)`` (time
frames x mel bands; 16 kHz audio, n_fft 512, hop 256, 96 mel bands,
``log10(10000 * mel + 1)``), i.e. 3 s of audio per patch.

Architecture
------------
front end
    batch norm of the input, then musically motivated convolutions over the
    (time, mel) plane, each followed by ReLU, batch norm and a max over the
    whole frequency axis: two *timbral* filter banks (204 filters of 7 frames
    x 38 and 7 x 67 mel bands) and three *temporal* ones (51 filters of 128,
    64 and 32 frames x 1 band).  Concatenated: 561 channels per frame.
mid end
    three 1-D convolutions over time (64 filters, width 7, ReLU, batch norm),
    the 2nd and 3rd with residual connections.  The front-end output and
    the three mid-end outputs are concatenated (dense connections): 753
    channels per frame.
back end
    temporal max and mean pooling (753 + 753), batch norm, a 200-unit dense
    layer (ReLU, batch norm: the *penultimate* features) and a 50-unit
    output layer (tag logits; apply a sigmoid for probabilities).

The module is meant for inference: in eval mode the front-end blocks use an
equivalent, cheaper evaluation order (see :class:`_FrontEndBlock`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .musicnn_numpy import (  # noqa: F401
    _BN_EPS,
    _PAD_AFTER,
    _PAD_BEFORE,
    HOP_LENGTH,
    MSD_TAGS,
    N_FFT,
    N_MELS,
    PATCH_FRAMES,
    SAMPLE_RATE,
    WEIGHTS_FILE,
    load_weights,
)

__all__ = [
    "HOP_LENGTH",
    "MSD_TAGS",
    "N_FFT",
    "N_MELS",
    "PATCH_FRAMES",
    "SAMPLE_RATE",
    "WEIGHTS_FILE",
    "MusicnnMSD",
    "MusicnnOutput",
    "load_pretrained",
]



class MusicnnOutput(NamedTuple):
    """Outputs of :meth:`MusicnnMSD.forward`.

    Attributes
    ----------
    logits : torch.Tensor
        ``(batch, 50)`` tag logits (before the sigmoid), order of
        :data:`MSD_TAGS`.
    mean_pool : torch.Tensor
        ``(batch, 753)`` temporal mean of the mid-level features.
    max_pool : torch.Tensor
        ``(batch, 753)`` temporal max of the mid-level features.
    penultimate : torch.Tensor
        ``(batch, 200)`` output of the penultimate dense layer (after its
        batch norm).
    """

    logits: torch.Tensor
    mean_pool: torch.Tensor
    max_pool: torch.Tensor
    penultimate: torch.Tensor


def _bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(scale, shift)`` with ``bn(x) == x * scale + shift`` (eval mode)."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _conv_freq_max_cpu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Max over frequency of a bias-free single-channel "valid" 2-D convolution.

    Computed as im2col + GEMM on chunks of a few frames per patch, so that
    the full ``(B, C, T, F)`` convolution output is never materialised (it
    would be ~9 MB per patch for the timbral filters) and the working set
    stays in cache.  About 1.7x faster than ``conv2d(...).amax(3)`` on CPU.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, L, F)`` input (already padded in time).
    weight : torch.Tensor
        ``(C, 1, kt, kf)`` filters.

    Returns
    -------
    torch.Tensor
        ``(B, L - kt + 1, C)``.
    """
    n_batch, length, n_freq = x.shape
    channels, _, kt, kf = weight.shape
    n_frames, n_pos = length - kt + 1, n_freq - kf + 1
    patches = x.unfold(1, kt, 1).unfold(2, kf, 1)  # (B, T, F', kt, kf) view
    w = weight.reshape(channels, kt * kf).t()
    step = max(1, (1 << 18) // (n_pos * kt * kf))  # ~1 MB of im2col per chunk
    out = x.new_empty(n_batch, n_frames, channels)
    for b in range(n_batch):
        for t0 in range(0, n_frames, step):
            cols = patches[b, t0:t0 + step].reshape(-1, kt * kf)
            torch.amax((cols @ w).view(-1, n_pos, channels), dim=1,
                       out=out[b, t0:t0 + step])
    return out


class _FrontEndBlock(nn.Module):
    """Conv2d over (time, mel) -> ReLU -> batch norm -> max over all mel bins.

    Parameters
    ----------
    out_channels : int
        Number of filters.
    kernel_size : tuple of int
        ``(frames, mel bands)``; the input window must already hold the
        ``frames - 1`` padding frames (the convolution itself is "valid").

    Notes
    -----
    In eval mode the block is evaluated as ``a * relu(s * max_f(s * conv(x)))
    + c``, where ``a, c`` is the batch norm's affine form and ``s = sign(a)``:
    batch norm is affine per channel and ReLU is monotonic, so the maximum
    over frequency can be taken right after the convolution (on sign-flipped
    filters for the few channels with negative scale, where the max becomes a
    min).  On CPU, when no gradient is needed, the convolution and the max
    are fused chunk-wise (:func:`_conv_freq_max_cpu`).
    """

    def __init__(self, out_channels: int, kernel_size: tuple[int, int]):
        super().__init__()
        self.conv = nn.Conv2d(1, out_channels, kernel_size)
        self.bn = nn.BatchNorm2d(out_channels, eps=_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a ``(B, T + kt - 1, F)`` window to ``(B, T, C)`` features."""
        if self.training:
            return self.bn(F.relu(self.conv(x.unsqueeze(1)))).amax(dim=3).transpose(1, 2)
        scale, shift = _bn_affine(self.bn)
        sign = torch.where(scale < 0, -1.0, 1.0).to(scale.dtype)
        weight = self.conv.weight * sign[:, None, None, None]
        if x.device.type == "cpu" and not (weight.requires_grad or x.requires_grad):
            peak = _conv_freq_max_cpu(x, weight)
        else:
            peak = F.conv2d(x.unsqueeze(1), weight).amax(dim=3).transpose(1, 2)
        # sign * (max_f(sign * z) + sign * bias) = max_f(z + bias) or min_f(z + bias)
        peak = F.relu((peak + self.conv.bias * sign) * sign)
        return torch.addcmul(shift, peak, scale)


class _MidEndBlock(nn.Module):
    """Conv1d over time (width 7, "same" zero padding) -> ReLU -> batch norm."""

    def __init__(self, in_channels: int, out_channels: int = 64):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, 7, padding=3)
        self.bn = nn.BatchNorm1d(out_channels, eps=_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class MusicnnMSD(nn.Module):
    """musicnn (Pons & Serra 2019) with the MSD tagger's dimensions.

    Parameters
    ----------
    n_mels : int, optional
        Number of mel bands of the input (96 for the pretrained weights).
    n_tags : int, optional
        Number of output tags (50 for the pretrained weights).

    Notes
    -----
    Use :func:`load_pretrained` for the converted MSD weights.  The network is
    fully convolutional in time, so patches of other lengths than
    :data:`PATCH_FRAMES` work too, but the model was trained on 3 s patches.
    """

    def __init__(self, n_mels: int = N_MELS, n_tags: int = len(MSD_TAGS)):
        super().__init__()
        timbral_filters, temporal_filters, mid_filters = 204, 51, 64
        self.input_bn = nn.BatchNorm2d(1, eps=_BN_EPS)
        self.timbral74 = _FrontEndBlock(timbral_filters, (7, int(0.4 * n_mels)))
        self.timbral77 = _FrontEndBlock(timbral_filters, (7, int(0.7 * n_mels)))
        self.temporal128 = _FrontEndBlock(temporal_filters, (128, 1))
        self.temporal64 = _FrontEndBlock(temporal_filters, (64, 1))
        self.temporal32 = _FrontEndBlock(temporal_filters, (32, 1))
        front_channels = 2 * timbral_filters + 3 * temporal_filters  # 561
        self.mid1 = _MidEndBlock(front_channels, mid_filters)
        self.mid2 = _MidEndBlock(mid_filters, mid_filters)
        self.mid3 = _MidEndBlock(mid_filters, mid_filters)
        self.feature_dim = front_channels + 3 * mid_filters  # 753
        self.pool_bn = nn.BatchNorm1d(2 * self.feature_dim, eps=_BN_EPS)
        self.dense = nn.Linear(2 * self.feature_dim, 200)
        self.dense_bn = nn.BatchNorm1d(200, eps=_BN_EPS)
        self.output = nn.Linear(200, n_tags)

    def _front_end(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, F)`` log-mel -> ``(B, T, 561)`` front-end features."""
        n_frames = x.shape[1]
        # normalise, then zero-pad time once for all "same"-style convolutions
        x = self.input_bn(x.unsqueeze(1)).squeeze(1)
        x = F.pad(x, (0, 0, _PAD_BEFORE, _PAD_AFTER))

        def window(kernel: int) -> torch.Tensor:
            start = _PAD_BEFORE - (kernel - 1) // 2
            return x[:, start:start + n_frames + kernel - 1]

        return torch.cat([
            self.timbral74(window(7)),
            self.timbral77(window(7)),
            self.temporal128(window(128)),
            self.temporal64(window(64)),
            self.temporal32(window(32)),
        ], dim=2)

    def forward(self, x: torch.Tensor) -> MusicnnOutput:
        """Tag a batch of log-mel patches.

        Parameters
        ----------
        x : torch.Tensor
            ``(batch, frames, mel bands)`` float32 log-mel patches, normally
            ``(batch, 187, 96)``.

        Returns
        -------
        MusicnnOutput
            ``logits (B, 50)``, ``mean_pool (B, 753)``, ``max_pool (B, 753)``,
            ``penultimate (B, 200)``.
        """
        if x.dim() != 3:
            raise ValueError(f"expected (batch, frames, mel) input, got shape {tuple(x.shape)}")
        front = self._front_end(x)  # (B, T, 561)
        m1 = self.mid1(front.transpose(1, 2))  # (B, 64, T)
        m2 = self.mid2(m1) + m1
        m3 = self.mid3(m2) + m2
        # dense connections: pool each block and concatenate the small vectors
        max_pool = torch.cat([front.amax(dim=1), m1.amax(dim=2), m2.amax(dim=2),
                              m3.amax(dim=2)], dim=1)
        mean_pool = torch.cat([front.mean(dim=1), m1.mean(dim=2), m2.mean(dim=2),
                               m3.mean(dim=2)], dim=1)
        pooled = self.pool_bn(torch.cat([max_pool, mean_pool], dim=1))
        penultimate = self.dense_bn(F.relu(self.dense(pooled)))
        return MusicnnOutput(self.output(penultimate), mean_pool, max_pool, penultimate)


def load_pretrained(device: str | torch.device = "cpu") -> MusicnnMSD:
    """Build :class:`MusicnnMSD` with the converted MSD weights.

    Parameters
    ----------
    device : str or torch.device, optional
        Device to move the model to.

    Returns
    -------
    MusicnnMSD
        Float32 model in eval mode, parameters frozen (``requires_grad`` off).
        Calling it under ``torch.inference_mode()`` saves a little more.

    Raises
    ------
    RuntimeError
        If the packaged weights file is missing or has an unexpected format.
    """
    model = MusicnnMSD()
    state = {name: torch.from_numpy(value.astype(np.float32)) for name, value in load_weights().items()}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"musicnn weights file mismatch: missing {missing}, "
                           f"unexpected {result.unexpected_keys}")
    return model.requires_grad_(False).eval().to(device)
