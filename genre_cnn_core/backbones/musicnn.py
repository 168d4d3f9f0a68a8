"""The default backbone: the pretrained musicnn network (Pons & Serra
2019), frozen, and a multi-label linear head trained on the user's genres.

A track's features are musicnn's outputs averaged over a few 3 s patches
spread over the track: the temporal mean and max of its mid-level
features and its 50 tag probabilities. Only the head is trained; it reads the tag
probabilities, or the whole embedding where that predicts the held-out
artists better (chosen with its penalty, bench/RESULTS.md).
"""

from __future__ import annotations

import numpy as np

from ..audio import AudioError
from ..features import FeatureSettings, fixed_frames, track_log_mels
from ..linear_head import LinearHead, train_linear_head
from . import Backbone, TrainConfig, TrainedHead

#: Extractor output version: bumped whenever the features change, to retire old cache entries.
VERSION = 1
POOLED = 753  # musicnn's mid-level features, pooled by mean and by max
TAGS = 50
EMBEDDING_SIZE = 2 * POOLED + TAGS


class MusicnnExtractor:
    """Track embeddings from the pretrained musicnn network."""

    kind = "musicnn"
    #: Patches in one forward pass: large enough to keep the CPU busy, small enough to bound memory.
    max_batch = 64

    def __init__(self, settings: FeatureSettings, device: str = "cpu"):
        self.settings = settings
        self.device = device

    def namespace(self) -> dict:
        return {"kind": self.kind, "version": VERSION, **self.settings.as_dict()}

    def check(self, features: np.ndarray) -> str | None:
        if features.shape != (EMBEDDING_SIZE,) or features.dtype != np.float16:
            return f"a musicnn embedding is {EMBEDDING_SIZE} float16 values, not {features.shape} {features.dtype}"
        values = features.astype(np.float32)
        if not np.isfinite(values).all():
            return "not finite"
        tags = values[-TAGS:]
        if (tags <= 0).any() or (tags >= 1).any():
            return "tag probabilities outside (0, 1)"
        return None

    def compute(self, paths) -> list:
        from ..musicnn_numpy import PATCH_FRAMES

        results, patches, owners = [], [], []
        for path in paths:
            try:
                spectrograms = track_log_mels(path, self.settings)
            except AudioError as error:
                results.append(error)
                continue
            results.append(None)
            for spectrogram in spectrograms:
                patches.append(fixed_frames(spectrogram, PATCH_FRAMES).T)
                owners.append(len(results) - 1)
        if not patches:
            return results
        per_patch = _embed(np.stack(patches), self.device, self.max_batch)
        owners = np.asarray(owners)
        for index in np.unique(owners):
            results[index] = per_patch[owners == index].mean(axis=0).astype(np.float16)
        return results


_NETWORKS: dict = {}


def _embed(patches: np.ndarray, device: str, max_batch: int) -> np.ndarray:
    """Per-patch embeddings: numpy on the CPU (no torch), the torch port on a GPU.

    The networks are loaded once per process and device.
    """
    if device == "cpu":
        if device not in _NETWORKS:
            from ..musicnn_numpy import load_pretrained

            _NETWORKS[device] = load_pretrained()
        return _NETWORKS[device].embed(patches)
    import torch

    from .. import musicnn

    if device not in _NETWORKS:
        _NETWORKS[device] = musicnn.load_pretrained(device)
    outputs = []
    with torch.inference_mode():
        for chunk in torch.split(torch.from_numpy(patches), max_batch):
            out = _NETWORKS[device](chunk.to(device))
            outputs.append(torch.cat([out.mean_pool, out.max_pool, torch.sigmoid(out.logits)], dim=1))
    return torch.cat(outputs).float().cpu().numpy()


class MusicnnBackbone(Backbone):
    name = "musicnn"
    has_tags = True
    heldout_tracks = "held-out tracks (each predicted by a head that never heard its artist)"
    # 3 s patches (what musicnn was trained on) spread over the track: 4 beat 1, 2 and 8 (bench/RESULTS.md).
    default_settings = FeatureSettings(excerpt_seconds=3.0, n_excerpts=4)

    def extractor(self, settings, device="cpu"):
        return MusicnnExtractor(settings, device)

    def train(self, features, targets, strata, groups, settings, config: TrainConfig, log,
              device="cpu") -> TrainedHead:
        from ..devices import compute_threads

        x = np.asarray(np.stack(features), dtype=np.float32)
        offsets = {"tags": x.shape[1] - config.head_tags, "tags+pooled": 0}
        unknown = set(config.head_inputs) - set(offsets)
        if unknown or not config.head_inputs:
            raise ValueError(f"head inputs {sorted(unknown) or '()'}: choose among {', '.join(offsets)}")
        with compute_threads(1):  # small problems: one thread is fastest, and idle workers' threads may spin
            found = train_linear_head(x, targets, strata, groups, config.folds,
                                      [offsets[name] for name in config.head_inputs], config.seed)
        head_input = next(name for name in config.head_inputs if offsets[name] == found.offset)
        log(f"head: input {head_input}, L2 penalty {found.penalty:g}, chosen on {found.folds} artist-grouped folds")
        return TrainedHead(found.head.weights(), found.head.architecture, found.calibration, found.heldout,
                           found.heldout_probabilities, found.heldout_known,
                           {"l2_penalty": found.penalty, "folds": found.folds, "head_input": head_input})

    def logits(self, weights, architecture, features, device="cpu"):
        return LinearHead.from_weights(weights, architecture).logits(np.stack(features))

    def check_weights(self, weights, architecture, n_genres):
        if set(weights) != {"mean", "scale", "weight", "bias"}:
            raise ValueError(f"head weights {sorted(weights)}, expected bias, mean, scale, weight")
        in_dim, offset = architecture.get("in_dim"), architecture.get("offset")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (in_dim, offset)):
            raise ValueError("head architecture: in_dim and offset must be integers")
        if in_dim < 1 or offset < 0 or offset + in_dim > EMBEDDING_SIZE:
            raise ValueError(f"head reads features {offset}..{offset + in_dim} of {EMBEDDING_SIZE}")
        shapes = {"mean": (in_dim,), "scale": (in_dim,), "weight": (n_genres, in_dim), "bias": (n_genres,)}
        for name, shape in shapes.items():
            if weights[name].shape != shape:
                raise ValueError(f"head weight {name} has shape {weights[name].shape}, expected {shape}")
        if not (weights["scale"] > 0).all():
            raise ValueError("head scale must be positive")

    def tag_names(self):
        from ..musicnn_numpy import MSD_TAGS

        return list(MSD_TAGS)
