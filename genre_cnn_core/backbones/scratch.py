"""The scratch backbone: a Dieleman-style CNN (:mod:`genre_cnn_core.dieleman`)
trained end to end on log-mel excerpts of the user's library.

Each step sees random windows of random excerpts (class-balanced
sampling, gain and masking augmentation, mixup, label smoothing), with
AdamW and a one-cycle schedule that runs to its end; the final weights are
kept. An artist-grouped validation split only reports and calibrates:
choosing weights on it (early stopping) kept barely trained networks when a
small library leaves a dozen validation tracks (bench/RESULTS.md).
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..audio import AudioError
from ..features import FeatureSettings, track_log_mels
from ..metrics import calibrate, fit_calibration
from ..splits import grouped_split
from . import Backbone, TrainConfig, TrainedHead

#: Extractor output version: bumped whenever the features change, to retire old cache entries.
VERSION = 1
#: Length of the windows the network learns from (musicnn's patch length).
WINDOW_SECONDS = 3.0
LABEL_SMOOTHING = 0.1


class LogMelExtractor:
    """Log-mel spectrograms of a track's excerpts, stored as float16."""

    kind = "logmel"

    def __init__(self, settings: FeatureSettings, device: str = "cpu"):
        self.settings = settings

    def namespace(self) -> dict:
        return {"kind": self.kind, "version": VERSION, **self.settings.as_dict()}

    def check(self, features: np.ndarray) -> str | None:
        expected = (self.settings.n_mels, self.settings.frames(self.settings.excerpt_seconds))
        if features.ndim != 3 or features.shape[1:] != expected or not 1 <= len(features) <= self.settings.n_excerpts:
            return (f"log-mel excerpts of shape (1..{self.settings.n_excerpts}, {expected[0]}, {expected[1]}) "
                    f"expected, not {features.shape}")
        if features.dtype != np.float16 or not np.isfinite(features).all() or (features < 0).any():
            return "log-mel values must be finite, non-negative float16"
        return None

    def compute(self, paths) -> list:
        results = []
        for path in paths:
            try:
                results.append(track_log_mels(path, self.settings).astype(np.float16))
            except AudioError as error:
                results.append(error)
        return results


# ------------------------------------------------------------------ schedule


def one_cycle_factor(progress: float, warm_up: float = 0.3) -> float:
    """Share of the peak learning rate at ``progress`` (0 to 1) through a one-cycle schedule.

    Cosine warm-up from 1/25 of the peak over the first ``warm_up`` of the
    run, then cosine annealing to zero (as ``torch.optim.lr_scheduler.OneCycleLR``).
    """
    if progress < warm_up:
        return 1 / 25 + (1 - 1 / 25) * (1 - math.cos(math.pi * progress / warm_up)) / 2
    return (1 + math.cos(math.pi * min(1.0, (progress - warm_up) / (1 - warm_up)))) / 2


def fit_to_budget(planned: int, done: int, elapsed: float, budget: float) -> int:
    """Steps the schedule can have when ``done`` steps took ``elapsed`` seconds of ``budget``.

    Unchanged while the pace fits, so training within the budget is
    reproducible; else as many steps as the pace allows (``done`` when the
    budget is spent). The pace is judged only after a tenth of the budget:
    a fresh process's first step takes seconds (lazy kernel set-up).
    """
    if done == 0 or elapsed < 0.1 * budget or elapsed / done * planned <= budget:
        return planned
    return max(done, min(planned, int(budget / (elapsed / done))))


class Schedule:
    """A one-cycle learning-rate schedule that shortens itself to fit a time budget."""

    def __init__(self, steps: int, budget_seconds: float, peak: float):
        self.total, self.planned, self.done = steps, steps, 0
        self.budget, self.peak, self.start = budget_seconds, peak, time.perf_counter()

    @property
    def finished(self) -> bool:
        return self.done >= self.planned

    def next_rate(self) -> float | None:
        """Learning rate of the next step, or None when the schedule is over."""
        self.planned = fit_to_budget(self.planned, self.done, time.perf_counter() - self.start, self.budget)
        if self.finished:
            return None
        return self.peak * one_cycle_factor(self.done / self.planned)


# ------------------------------------------------------------------ training


def _augment(batch, generator):
    """Random gain and SpecAugment-style frequency and time masks."""
    import torch

    b, mels, frames = batch.shape
    gain = torch.exp(torch.empty(b, 1, 1).uniform_(-1.0, 1.0, generator=generator)).to(batch.device)
    batch = torch.log10((torch.pow(10.0, batch) - 1.0).clamp_min(0) * gain + 1.0)
    for size, axis in ((mels // 8, 1), (frames // 8, 2)):
        width = torch.randint(0, size + 1, (b,), generator=generator).to(batch.device)
        begin = (torch.rand(b, generator=generator).to(batch.device) * (batch.shape[axis] - width)).long()
        position = torch.arange(batch.shape[axis], device=batch.device)[None, :]
        mask = (position >= begin[:, None]) & (position < (begin + width)[:, None])
        batch = batch.masked_fill(mask[:, :, None] if axis == 1 else mask[:, None, :], 0.0)
    return batch


def _loss(network, batch, target, mixup, rng):
    """Label-smoothed softmax cross-entropy against the tracks' genres, of mixed pairs of windows when ``mixup`` > 0.

    A track's genres share its target, as in the linear head (:func:`genre_cnn_core.linear_head.fit_head`).
    """
    from torch.nn import functional as F

    target = target / target.sum(dim=1, keepdim=True).clamp_min(1)
    if mixup:
        share = float(rng.beta(mixup, mixup))
        import torch

        partner = torch.from_numpy(rng.permutation(len(target))).to(batch.device)
        batch = share * batch + (1 - share) * batch[partner]
        target = share * target + (1 - share) * target[partner]
    return F.cross_entropy(network(batch), target, label_smoothing=LABEL_SMOOTHING)


def _random_windows(features, indices, width, rng):
    """One random window of ``width`` frames of a random excerpt of each track in ``indices``."""
    import torch

    windows = []
    for i in indices:
        track = features[i]
        excerpt = track[rng.integers(len(track))]
        begin = rng.integers(max(1, excerpt.shape[1] - width + 1))
        windows.append(excerpt[:, begin:begin + width])
    return torch.from_numpy(np.stack(windows).astype(np.float32))


def train_one_epoch(network, optimiser, scaler, schedule: Schedule, features, targets, train, sampling, steps,
                    config: TrainConfig, rng, generator, device) -> dict | None:
    """Up to ``steps`` optimiser steps; the epoch's mean training loss, or None when the schedule was over."""
    import torch

    network.train()
    window = network.window_frames
    mixed = device == "cuda"  # float16 convolutions with float32 weights and scaled gradients
    losses = []
    for _ in range(steps):
        rate = schedule.next_rate()
        if rate is None:
            break
        for group in optimiser.param_groups:
            group["lr"] = rate
        chosen = rng.choice(train, size=config.batch_size, p=sampling)
        batch = _augment(_random_windows(features, chosen, window, rng).to(device), generator)
        target = torch.from_numpy(targets[chosen].astype(np.float32)).to(device)
        with torch.autocast(device_type=device, dtype=torch.float16, enabled=mixed):
            loss = _loss(network, batch, target, config.mixup, rng)
        optimiser.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        schedule.done += 1
        losses.append(loss.item())
    return {"train_loss": float(np.mean(losses))} if losses else None


def evaluate(network, features, targets, strata, device) -> dict:
    """Validation loss and how often the primary genre is the first tagged one."""
    from ..dieleman import track_logits
    from ..metrics import log_softmax

    logits = track_logits(network, features, device)
    y = targets / np.maximum(targets.sum(axis=1, keepdims=True), 1)
    loss = float(-(y * log_softmax(logits)).sum(axis=1).mean())
    return {"val_loss": loss, "val_accuracy": float((logits.argmax(axis=1) == strata).mean())}


def class_balanced_sampling(strata: np.ndarray) -> np.ndarray:
    """Probability of drawing each track, so every genre is drawn as often."""
    counts = np.bincount(strata)
    weights = 1.0 / counts[strata]
    return weights / weights.sum()


def train_scratch(features, targets, strata, groups, settings, config: TrainConfig, log=print,
                  device: str = "cpu") -> TrainedHead:
    """Train the scratch CNN; see the module's docstring for the recipe.

    When the pace of the steps so far would overrun ``config.minutes``, the
    rest of the schedule is shortened to fit, so a slow machine ends with an
    annealed network within the budget rather than a cut-off one; within the
    budget, training is reproducible.
    """
    import torch

    from ..dieleman import ScratchNetwork, track_logits

    targets, strata = np.asarray(targets, dtype=bool), np.asarray(strata)
    train, val = grouped_split(strata, groups, config.val_fraction, config.seed)
    architecture = {"n_mels": settings.n_mels, "n_genres": int(targets.shape[1]),
                    "window_frames": settings.frames(WINDOW_SECONDS) - 1, **config.network}
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    network = ScratchNetwork(**architecture).to(device)
    optimiser = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=1e-2)
    scaler = torch.amp.GradScaler("cuda", enabled=device == "cuda")
    # Four windows per track an epoch; a small library gets at least 16 steps an epoch,
    # as 480 steps beat 240 on 56-track training sets (bench/RESULTS.md).
    steps = max(16, math.ceil(4 * len(train) / config.batch_size))
    schedule = Schedule(steps * config.epochs, config.minutes * 60, config.learning_rate)
    sampling = class_balanced_sampling(strata[train])
    val_features = [features[i] for i in val]
    # Validation costs about a third of a step per window: only ~10 times a run, for the curve.
    validate_every = max(1, config.epochs // 10)
    history = []
    for epoch in range(1, config.epochs + 1):
        record = train_one_epoch(network, optimiser, scaler, schedule, features, targets, train, sampling, steps,
                                 config, rng, generator, device)
        if record is None:
            break
        record = {"epoch": epoch, **record}
        if len(val) and (epoch % validate_every == 0 or schedule.finished):
            record.update(evaluate(network, val_features, targets[val], strata[val], device))
        history.append(record)
        log(f"epoch {epoch:3d}: " + ", ".join(f"{k} {v:.3f}" for k, v in record.items() if k != "epoch"))
        if schedule.finished:
            break
    if schedule.done < schedule.total:
        log(f"time budget of {config.minutes:g} min: the schedule was shortened to {schedule.done} of "
            f"{schedule.total} steps")
    network.cpu().eval()
    calibration = np.array([1.0, 0.0])
    heldout_probabilities = np.zeros((0, targets.shape[1]))
    if len(val):
        val_logits = track_logits(network, val_features)
        calibration = fit_calibration(val_logits, targets[val])
        heldout_probabilities = calibrate(val_logits, calibration)
    weights = {name: value.detach().cpu().numpy() for name, value in network.state_dict().items()}
    return TrainedHead(weights, architecture, calibration, val, heldout_probabilities, None,
                       {"history": history, "device": device, "steps": schedule.done}, learned_from=train)


class ScratchBackbone(Backbone):
    name = "scratch"
    trains_with_torch = True
    heldout_tracks = "validation tracks (their artists are not in training)"
    # The network learns from random 3 s windows of longer excerpts.
    default_settings = FeatureSettings(excerpt_seconds=10.0, n_excerpts=3)

    def __init__(self):
        self._network = None  # (weights, on the CPU, network) of the weights last run

    def extractor(self, settings, device="cpu"):
        return LogMelExtractor(settings, device)

    def train(self, features, targets, strata, groups, settings, config, log, device="cpu"):
        return train_scratch(features, targets, strata, groups, settings, config, log, device)

    def network(self, weights: dict, architecture: dict, device: str = "cpu"):
        """The network of these weights, built once per set of weights: numpy on the CPU, torch elsewhere."""
        if self._network is None or self._network[0] is not weights or self._network[1] != (device == "cpu"):
            if device == "cpu":
                from ..dieleman_numpy import DielemanNumpy

                network = DielemanNumpy(weights, architecture)
            else:
                import torch

                from ..dieleman import ScratchNetwork

                network = ScratchNetwork(**architecture)
                network.load_state_dict({name: torch.from_numpy(np.array(value)) for name, value in weights.items()})
                network.eval()
            self._network = (weights, device == "cpu", network)
        return self._network[2]

    def logits(self, weights, architecture, features, device="cpu"):
        network = self.network(weights, architecture, device)
        if device == "cpu":
            return network.track_logits(features)
        from ..dieleman import track_logits

        return track_logits(network, features, device)

    def check_weights(self, weights, architecture, n_genres):
        from ..dieleman_numpy import state_shapes

        if architecture.get("n_genres") != n_genres:
            raise ValueError(f"network has {architecture.get('n_genres')} outputs for {n_genres} genres")
        try:
            expected = state_shapes(architecture)
        except (TypeError, ValueError) as error:
            raise ValueError(f"network architecture cannot be built: {error}") from None
        if set(expected) != set(weights):
            raise ValueError("network weights do not match its architecture (different layers)")
        for name, shape in expected.items():
            if shape != weights[name].shape:
                raise ValueError(f"network weight {name} has shape {weights[name].shape}, expected {shape}")
