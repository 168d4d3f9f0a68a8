"""Backbones: how audio becomes a track's features, and how a genre head
on them is trained and run.

One registry, in the style of beets' replaygain backends: each backbone
declares its feature extractor and default feature settings, its trainer,
how its trained weights are checked and run, and whether it has tags.
Adding a backbone means adding one entry to :data:`BACKBONES`.

Nothing here imports torch at import time: prediction with the default
backbone never needs it.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Callable, ClassVar, Protocol, Sequence

import numpy as np

from ..features import FeatureSettings


class Extractor(Protocol):
    """Computes one track's features from its audio file, in a worker process.

    An extractor is pickled to the workers, so it holds only plain settings.
    """

    settings: FeatureSettings

    def namespace(self) -> dict:
        """Everything that shapes the features (kind, version, settings): part of the cache key."""

    def compute(self, paths: Sequence) -> list:
        """Features of each path, or the :class:`~genre_cnn_core.audio.AudioError` that stopped it."""

    def check(self, features: np.ndarray) -> str | None:
        """Why ``features`` cannot be this extractor's output (shape, dtype, values); None if they can."""


@dataclasses.dataclass
class TrainConfig:
    """Knobs of the trainers.

    Attributes
    ----------
    epochs : int
        Passes over the training tracks (scratch CNN); each pass is
        ``max(16, ceil(4 * training tracks / batch_size))`` steps.
    minutes : float
        Wall-clock budget of the scratch CNN's loop: when the steps would
        take longer, the one-cycle schedule is compressed to fit.
    batch_size : int
        Windows per optimiser step (scratch CNN).
    learning_rate : float
        Peak learning rate of the one-cycle schedule (scratch CNN).
    val_fraction : float
        Share of tracks the scratch CNN holds out, whole artists at a time.
    folds : int
        Artist-grouped folds of the pretrained backbones' head: every
        track is predicted once by a head that never heard its artist.
    head_tags : int
        The musicnn head's ``"tags"`` input: the last ``head_tags`` embedding
        features (musicnn's 50 tag probabilities).
    head_inputs : tuple of str
        The inputs the musicnn head chooses among, with its penalty, on the
        artist-grouped folds: ``"tags"``, ``"tags+pooled"`` (the whole embedding).
    seed : int
        Seed of the splits, initialisation and sampling.
    mixup : float
        Alpha of the Beta distribution of mixup (scratch CNN); 0 disables it.
    network : dict
        Constructor arguments of the scratch network beyond its defaults
        (saved in the model file).
    """

    # bench/RESULTS.md, "Scratch CNN recipe search": how these were chosen.
    epochs: int = 30
    minutes: float = 2.5
    batch_size: int = 32
    learning_rate: float = 3e-3
    val_fraction: float = 0.2
    folds: int = 5
    head_tags: int = 50
    head_inputs: tuple = ("tags", "tags+pooled")
    seed: int = 0
    mixup: float = 0.4
    network: dict = dataclasses.field(default_factory=lambda: {"channels": [32, 64, 128]})


@dataclasses.dataclass
class TrainedHead:
    """What a backbone's trainer returns.

    Attributes
    ----------
    weights : dict
        Name -> numpy array: everything the head (or network) needs to run.
    architecture : dict
        Plain data that shapes ``weights`` (saved in the model file).
    calibration : np.ndarray
        ``(genres, 2)`` Platt parameters (see :func:`genre_cnn_core.metrics.calibrate`).
    heldout : np.ndarray
        Indices of the tracks predicted by a model that never heard their artist.
    heldout_probabilities : np.ndarray
        Those predictions, calibrated: ``(len(heldout), genres)``.
    heldout_known : np.ndarray or None
        Booleans of that shape: whether the model that made a held-out
        prediction learned the genre at all; None: every genre.
    info : dict
        Plain data for the model's metadata (chosen penalty, history, ...).
    learned_from : np.ndarray or None
        Indices of the tracks the returned weights learned from; None: every
        track (a head refitted on all of them after cross-validation).
    """

    weights: dict
    architecture: dict
    calibration: np.ndarray
    heldout: np.ndarray
    heldout_probabilities: np.ndarray
    heldout_known: np.ndarray | None = None
    info: dict = dataclasses.field(default_factory=dict)
    learned_from: np.ndarray | None = None


class Backbone(abc.ABC):
    """One way of turning audio into genre scores."""

    name: ClassVar[str]
    #: Whether the features end with tag probabilities worth storing (``cnn_tags``).
    has_tags: ClassVar[bool] = False
    #: Whether training needs PyTorch (the ``[torch]`` extra); predicting on the CPU never does.
    trains_with_torch: ClassVar[bool] = False
    #: Which tracks the training report scores, and how they were kept from the head that scored them.
    heldout_tracks: ClassVar[str]
    default_settings: ClassVar[FeatureSettings]

    @abc.abstractmethod
    def extractor(self, settings: FeatureSettings, device: str = "cpu") -> Extractor:
        """The feature extractor of a model with these settings."""

    @abc.abstractmethod
    def train(self, features: list, targets: np.ndarray, strata: np.ndarray, groups: list,
              settings: FeatureSettings, config: TrainConfig, log: Callable[[str], None],
              device: str = "cpu") -> TrainedHead:
        """Train a genre head on the tracks' features and ``(tracks, genres)`` boolean targets, on a
        resolved ``device`` (:func:`genre_cnn_core.devices.resolve_device`)."""

    @abc.abstractmethod
    def logits(self, weights: dict, architecture: dict, features: list, device: str = "cpu") -> np.ndarray:
        """Uncalibrated genre scores, ``(tracks, genres)``."""

    @abc.abstractmethod
    def check_weights(self, weights: dict, architecture: dict, n_genres: int) -> None:
        """Raise ValueError naming what is wrong when weights do not fit their architecture."""

    def tag_names(self) -> list[str]:
        """Names of the tag probabilities at the end of the features (``has_tags``)."""
        return []


def _registry() -> dict:
    from .musicnn import MusicnnBackbone
    from .scratch import ScratchBackbone

    return {backbone.name: backbone for backbone in (MusicnnBackbone(), ScratchBackbone())}


BACKBONES: dict[str, Backbone] = _registry()


def get_backbone(name: str) -> Backbone:
    """The registered backbone called ``name``.

    Raises
    ------
    ValueError
        No backbone has that name.
    """
    try:
        return BACKBONES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}") from None
