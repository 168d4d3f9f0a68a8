"""A 1-D CNN after Sander Dieleman's 2014 Spotify recommendation network
("Recommending music on Spotify with deep learning"; Dieleman & Schrauwen,
"End-to-end learning for music audio", ICASSP 2014): mel bands are input
channels, convolutions run along time, and global mean, max and L2
pooling summarise a window. The scratch backbone trains it end to end.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .dieleman_numpy import DEFAULT_ARCHITECTURE, sliding_windows


class GlobalPooling(nn.Module):
    """Mean, max and L2 norm over time, concatenated: ``(B, C, T) -> (B, 3C)``."""

    def forward(self, x):
        return torch.cat([x.mean(dim=2), x.amax(dim=2), x.square().mean(dim=2).add(1e-8).sqrt()], dim=1)


class ScratchNetwork(nn.Module):
    """Convolutions along time, global pooling and dense layers: log-mel window -> genre logits.

    Parameters
    ----------
    n_mels : int
        Input channels (mel bands).
    n_genres : int
        Outputs: one logit per genre.
    channels : sequence of int
        Output channels of each convolution block.
    kernel_size : int
        Frames each convolution spans.
    pools : sequence of int
        Max pooling after each block but the last (length ``len(channels) - 1``).
    hidden : int
        Units of the dense layer.
    dropout : float
        Dropout before each dense layer.
    window_frames : int
        Frames of the windows the network was trained on; prediction
        slides windows of this length over each excerpt.
    """

    def __init__(self, n_mels, n_genres, channels=DEFAULT_ARCHITECTURE["channels"],
                 kernel_size=DEFAULT_ARCHITECTURE["kernel_size"], pools=DEFAULT_ARCHITECTURE["pools"],
                 hidden=DEFAULT_ARCHITECTURE["hidden"], dropout=DEFAULT_ARCHITECTURE["dropout"],
                 window_frames=DEFAULT_ARCHITECTURE["window_frames"]):
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm1d(n_mels)]  # learns per-band scaling
        previous = n_mels
        for i, width in enumerate(channels):
            layers += [nn.Conv1d(previous, width, kernel_size, bias=False), nn.BatchNorm1d(width), nn.ReLU()]
            if i < len(pools):
                layers.append(nn.MaxPool1d(pools[i]))
            previous = width
        self.blocks = nn.Sequential(*layers)
        self.pool = GlobalPooling()
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(3 * previous, hidden), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(hidden, n_genres))
        self.window_frames = window_frames

    def forward(self, x):
        return self.head(self.pool(self.blocks(x)))


def track_logits(network: ScratchNetwork, features: list, device: str = "cpu") -> np.ndarray:
    """Genre logits per track: the mean over the windows of its excerpts (on a GPU; the CPU runs
    :class:`genre_cnn_core.dieleman_numpy.DielemanNumpy`).

    The mean logit (not the mean probability) keeps the calibration, fitted
    on these same track logits, meaningful.
    """
    network.eval().to(device)
    rows = []
    with torch.inference_mode():
        for track in features:
            windows = sliding_windows(np.asarray(track, np.float32), network.window_frames)
            rows.append(network(torch.from_numpy(windows).to(device)).float().cpu().numpy().mean(axis=0))
    return np.stack(rows)
