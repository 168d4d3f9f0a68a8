"""The genre network: a backbone that turns audio features into an
embedding, and a genre head that turns the embedding into genre scores.

* ``scratch``: a 1-D CNN after Sander Dieleman's 2014 Spotify
  recommendation network ("Recommending music on Spotify with deep
  learning"; Dieleman & Schrauwen, "End-to-end learning for music audio",
  ICASSP 2014): mel bands are input channels, convolutions run along time,
  and global mean, max and L2 pooling summarise a window. Trained end to
  end with its head on the user's library.
* ``musicnn``: the pretrained musicnn network (Pons & Serra 2019), frozen;
  its embeddings are computed once per track by
  :class:`genre_cnn_core.extract.MusicnnExtractor`, and only the head is
  trained.

A model file holds the weights of the trainable part and, as JSON, the
genres, feature settings and training report. It loads with
``torch.load(weights_only=True)``: opening a model file never runs code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pickle
import re

import numpy as np
import torch
from torch import nn

from .cache import atomic_write
from .extract import EXTRACTORS
from .features import FeatureSettings

#: Version of the model file layout; files of a newer one are refused.
FORMAT_VERSION = 1
BACKBONES = ("musicnn", "scratch")


class ModelError(Exception):
    """A model file is missing, unreadable or incompatible (one-line reason)."""


class GlobalPooling(nn.Module):
    """Mean, max and L2 norm over time, concatenated: ``(B, C, T) -> (B, 3C)``."""

    def forward(self, x):
        return torch.cat([x.mean(dim=2), x.amax(dim=2), x.square().mean(dim=2).add(1e-8).sqrt()], dim=1)


class DielemanBackbone(nn.Module):
    """1-D convolutions along time with mel bands as channels.

    Parameters
    ----------
    n_mels : int
        Input channels.
    channels : tuple of int
        Output channels of each convolution block.
    kernel_size : int
        Frames each convolution spans.
    pools : tuple of int
        Max pooling after each block but the last (length ``len(channels) - 1``).
    """

    def __init__(self, n_mels=96, channels=(128, 128, 256), kernel_size=4, pools=(4, 2)):
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
        self.out_dim = 3 * previous

    def forward(self, x):
        return self.pool(self.blocks(x))


class GenreHead(nn.Module):
    """Standardise an embedding, then a linear layer or a one-hidden-layer MLP.

    Parameters
    ----------
    in_dim : int
        Embedding size.
    n_genres : int
        Output classes.
    hidden : int
        Hidden units; 0 makes the head a logistic regression.
    dropout : float
        Dropout before each linear layer.
    offset : int
        Index of the first embedding feature the head reads: the head sees
        ``x[:, offset:offset + in_dim]`` (e.g. only musicnn's tag probabilities).
    """

    def __init__(self, in_dim, n_genres, hidden=0, dropout=0.0, offset=0):
        super().__init__()
        self.offset = offset
        self.in_dim = in_dim
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(in_dim))
        if hidden:
            self.layers = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.ReLU(),
                                        nn.Dropout(dropout), nn.Linear(hidden, n_genres))
        else:
            self.layers = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, n_genres))

    def _features(self, x):
        return x[:, self.offset:self.offset + self.in_dim]

    def set_standardisation(self, embeddings: torch.Tensor) -> None:
        """Centre and scale each feature by its mean and spread over ``embeddings``.

        A single row has no spread (its sample standard deviation is NaN):
        it is only centred.
        """
        used = self._features(embeddings)
        self.mean.copy_(used.mean(dim=0))
        if len(used) > 1:
            self.scale.copy_(1.0 / used.std(dim=0).clamp_min(1e-4))
        else:
            self.scale.fill_(1.0)

    def forward(self, x):
        return self.layers((self._features(x) - self.mean) * self.scale)


class ScratchNetwork(nn.Module):
    """Dieleman backbone and genre head, trained together."""

    def __init__(self, n_mels, n_genres, channels=(128, 128, 256), kernel_size=4, pools=(4, 2),
                 hidden=256, dropout=0.5, window_frames=187):
        super().__init__()
        self.backbone = DielemanBackbone(n_mels, tuple(channels), kernel_size, tuple(pools))
        self.head = GenreHead(self.backbone.out_dim, n_genres, hidden, dropout)
        self.window_frames = window_frames

    def forward(self, x):
        return self.head(self.backbone(x))


def build_network(backbone: str, architecture: dict) -> nn.Module:
    """The trainable network of a backbone, from its saved constructor arguments."""
    if backbone == "scratch":
        return ScratchNetwork(**architecture)
    if backbone == "musicnn":
        return GenreHead(**architecture)
    raise ModelError(f"unknown backbone {backbone!r} (known: {', '.join(BACKBONES)})")


def sliding_windows(spectrograms: np.ndarray, width: int) -> np.ndarray:
    """Half-overlapping windows of ``width`` frames from ``(E, M, T)`` excerpts."""
    frames = spectrograms.shape[-1]
    if frames <= width:
        return spectrograms[:, :, :width]
    starts = range(0, frames - width + 1, width // 2)
    return np.concatenate([spectrograms[:, :, s:s + width] for s in starts])


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclasses.dataclass
class GenreModel:
    """A trained genre model: the trainable network and what it needs to run.

    Attributes
    ----------
    backbone : str
        ``"musicnn"`` or ``"scratch"``.
    genres : list of str
        Class names, in output order.
    settings : FeatureSettings
        Feature settings the model was trained with; prediction uses them.
    network : torch.nn.Module
        Maps one track's features to genre logits.
    architecture : dict
        Constructor arguments of ``network``.
    temperature : float
        Logits are divided by it before the softmax (calibration).
    metadata : dict
        Plain data: training report, dates, library size.
    """

    backbone: str
    genres: list
    settings: FeatureSettings
    network: nn.Module
    architecture: dict
    temperature: float = 1.0
    metadata: dict = dataclasses.field(default_factory=dict)

    @property
    def model_id(self) -> str:
        """Short identifier of these weights, written beside each prediction."""
        return self.metadata.get("model_id", "unknown")

    def extractor(self):
        """The feature extractor this model reads."""
        kind = "musicnn" if self.backbone == "musicnn" else "logmel"
        return EXTRACTORS[kind](self.settings)

    def logits(self, features: list, device: str = "cpu") -> np.ndarray:
        """Genre logits per track, averaged over its windows for the scratch CNN."""
        self.network.eval().to(device)
        with torch.inference_mode():
            if self.backbone != "scratch":
                batch = torch.from_numpy(np.stack(features).astype(np.float32)).to(device)
                return self.network(batch).float().cpu().numpy()
            rows = []
            for track in features:
                windows = sliding_windows(np.asarray(track, np.float32), self.network.window_frames)
                rows.append(self.network(torch.from_numpy(windows).to(device)).float().cpu().numpy())
        # Windows vote with their probabilities; the mean logit keeps the
        # temperature calibration meaningful.
        return np.stack([r.mean(axis=0) for r in rows])

    def predict_proba(self, features: list, device: str = "cpu") -> np.ndarray:
        """Calibrated genre probabilities, shape ``(tracks, genres)``."""
        if not features:
            return np.zeros((0, len(self.genres)), np.float32)
        return softmax(self.logits(features, device), self.temperature)

    def save(self, path: str) -> None:
        """Write the model file atomically (temporary file, fsync, rename)."""
        state = {k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()}
        meta = dict(self.metadata)
        meta.update(backbone=self.backbone, genres=list(self.genres), settings=self.settings.as_dict(),
                    architecture=self.architecture, temperature=float(self.temperature))
        if "model_id" not in meta:
            digest = hashlib.sha1()
            for name in sorted(state):
                digest.update(name.encode())
                digest.update(state[name].numpy().tobytes())
            meta["model_id"] = f"{meta.get('name', self.backbone)}-{digest.hexdigest()[:10]}"
            self.metadata["model_id"] = meta["model_id"]
        payload = {"format_version": FORMAT_VERSION, "metadata": json.dumps(meta), "state_dict": state}
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        atomic_write(path, lambda handle: handle.write(buffer.getvalue()))

    @classmethod
    def load(cls, path: str) -> "GenreModel":
        """Load a model file without running any code stored in it.

        Raises
        ------
        ModelError
            Missing, damaged, unsafe or incompatible file.
        """
        name = os.fsdecode(path)
        if not os.path.exists(path):
            raise ModelError(f"{name}: no model file")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            code = re.search(r"(?:Unsupported global: |unsupported )GLOBAL ([\w.]+)", str(error))
            if code:
                raise ModelError(f"{name}: refused to load: the file asks to run code ({code.group(1)}); "
                                 "a cnngenre model holds only weights and plain data") from None
            raise ModelError(f"{name}: not a readable model file (damaged, or not a cnngenre model)") from None
        except Exception as error:
            raise ModelError(f"{name}: not a readable model file ({type(error).__name__}: {error})") from None
        if not isinstance(payload, dict) or "format_version" not in payload:
            raise ModelError(f"{name}: not a cnngenre model file")
        version = payload["format_version"]
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ModelError(f"{name}: made by a newer cnngenre (model format {version}, this version reads "
                             f"up to {FORMAT_VERSION}); upgrade cnngenre or retrain with `beet cnngenre -t`")
        try:
            meta = json.loads(payload["metadata"])
            settings = FeatureSettings.from_dict(meta["settings"])
            network = build_network(meta["backbone"], meta["architecture"])
            network.load_state_dict(payload["state_dict"])
        except ModelError as error:
            raise ModelError(f"{name}: {error}") from None
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise ModelError(f"{name}: incompatible model file ({type(error).__name__}: "
                             f"{str(error).splitlines()[0]}); retrain with `beet cnngenre -t`") from None
        network.eval()
        return cls(backbone=meta["backbone"], genres=list(meta["genres"]), settings=settings,
                   network=network, architecture=meta["architecture"],
                   temperature=float(meta.get("temperature", 1.0)), metadata=meta)
