"""Training: artist-grouped validation split, the two training loops
(scratch CNN end to end, or a genre head on pretrained embeddings),
temperature calibration and the validation report.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import time
from collections import Counter

import numpy as np
import torch
from torch.nn import functional as F

from .extract import torch_threads
from .features import FeatureSettings
from .model import GenreHead, GenreModel, ScratchNetwork, softmax


@dataclasses.dataclass
class TrainConfig:
    """Knobs of both training loops.

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
        Share of tracks held out for validation, whole artists at a time.
    hidden : int
        Hidden units of the head on pretrained embeddings; 0 is a logistic
        regression.
    head_tags : int
        The head reads only the last ``head_tags`` embedding features
        (musicnn's 50 tag probabilities); 0 reads the whole embedding.
    seed : int
        Seed of the split, initialisation and sampling.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    mixup : float
        Alpha of the Beta distribution of mixup (scratch CNN); 0 disables it.
    network : dict
        Constructor arguments of :class:`ScratchNetwork` beyond its defaults
        (saved in the model file); by default narrower convolutions
        (32, 64, 128 channels), as accurate on small libraries and 2.5x
        cheaper a step than ScratchNetwork's (128, 128, 256).
    """

    # bench/RESULTS.md, "Scratch CNN recipe search": these defaults train 1,000 tracks in about
    # 100 s of one CPU core; the budget leaves room for slower machines.
    epochs: int = 30
    minutes: float = 2.5
    batch_size: int = 32
    learning_rate: float = 3e-3
    val_fraction: float = 0.2
    hidden: int = 0
    head_tags: int = 50
    seed: int = 0
    device: str = "auto"
    mixup: float = 0.4
    network: dict = dataclasses.field(default_factory=lambda: {"channels": [32, 64, 128]})


#: L2 penalties tried for the head; the artist-grouped validation picks one.
HEAD_PENALTIES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def resolve_device(name: str = "auto") -> str:
    """``"cuda"`` when asked for (or ``"auto"`` and available), else ``"cpu"``."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but PyTorch sees no CUDA GPU")
    return name


def grouped_split(labels, groups, val_fraction: float = 0.2, seed: int = 0):
    """Split tracks into training and validation with no group on both sides.

    Groups (artists) are drawn in random order into the validation side
    while their genre still needs validation tracks, so each genre gets
    about ``val_fraction`` of its tracks held out; a genre with a single
    artist stays wholly in training.

    Parameters
    ----------
    labels : sequence of int
        Class per track.
    groups : sequence of hashable
        Group (artist) per track.
    val_fraction : float
    seed : int

    Returns
    -------
    (np.ndarray, np.ndarray)
        Indices of training and validation tracks.
    """
    labels = np.asarray(labels)
    members: dict = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    order = list(members)
    np.random.default_rng(seed).shuffle(order)
    totals = Counter(labels.tolist())
    artists_per_genre = Counter()
    for group in order:
        for c in set(labels[members[group]].tolist()):
            artists_per_genre[c] += 1
    held, held_artists = Counter(), Counter()
    val = []
    for group in order:
        index = members[group]
        genre = Counter(labels[index].tolist()).most_common(1)[0][0]
        wanted = math.floor(val_fraction * totals[genre] + 0.5)
        fits = held[genre] == 0 or held[genre] + len(index) <= wanted
        if (held[genre] < wanted and fits and held_artists[genre] + 1 < artists_per_genre[genre]
                and held[genre] + len(index) < totals[genre]):
            val.extend(index)
            held[genre] += len(index)
            held_artists[genre] += 1
    val_set = set(val)
    train = [i for i in range(len(labels)) if i not in val_set]
    return np.asarray(train, dtype=int), np.asarray(sorted(val), dtype=int)


def classification_report(y_true, y_pred, genres) -> dict:
    """Per-genre precision, recall, F1 and support; accuracy, macro-F1, confusion.

    Returns
    -------
    dict
        Plain data (JSON-compatible), as stored in the model file.
    """
    n = len(genres)
    confusion = np.zeros((n, n), dtype=int)
    for t, p in zip(y_true, y_pred):
        confusion[t, p] += 1
    per_genre = {}
    f1s = []
    for c, name in enumerate(genres):
        tp = confusion[c, c]
        predicted, support = confusion[:, c].sum(), confusion[c].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_genre[name] = {"precision": float(precision), "recall": float(recall), "f1": float(f1),
                           "support": int(support)}
        if support:
            f1s.append(f1)
    total = confusion.sum()
    return {
        "per_genre": per_genre,
        "accuracy": float(np.trace(confusion) / total) if total else 0.0,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "tracks": int(total),
        "confusion": confusion.tolist(),
    }


def format_report(report: dict, genres, tracks_per_genre: dict | None = None,
                  scope: str = "validation tracks (their artists are not in training)") -> str:
    """A report as a terminal table, with the confusion matrix.

    Parameters
    ----------
    report : dict
        From :func:`classification_report`.
    genres : list of str
    tracks_per_genre : dict, optional
        Training tracks per genre, shown as a column when given.
    scope : str
        What the evaluated tracks are, for the summary line.
    """
    width = max([len(g) for g in genres] + [5])
    trained = tracks_per_genre is not None
    lines = [f"{'genre':<{width}}  precision  recall     f1  support" + ("  trained on" if trained else "")]
    for name in genres:
        row = report["per_genre"][name]
        lines.append(f"{name:<{width}}  {row['precision']:9.2f}  {row['recall']:6.2f}  {row['f1']:5.2f}"
                     f"  {row['support']:7d}" + (f"  {tracks_per_genre.get(name, 0):10d}" if trained else ""))
    lines.append(f"accuracy {report['accuracy']:.1%}, macro-F1 {report['macro_f1']:.3f} "
                 f"on {report['tracks']} {scope}")
    if "ece" in report:
        lines.append(f"expected calibration error {report['ece']:.3f}")
    lines.append("confusion matrix (rows: tagged genre, columns: predicted):")
    abbreviations = [g[:5] for g in genres]
    lines.append(" " * (width + 2) + " ".join(f"{a:>5}" for a in abbreviations))
    for name, row in zip(genres, report["confusion"]):
        lines.append(f"{name:<{width}}  " + " ".join(f"{v:5d}" for v in row))
    return "\n".join(lines)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature that minimises the validation log loss (Guo et al., 2017)."""
    if len(labels) == 0:
        return 1.0
    candidates = np.exp(np.linspace(np.log(0.05), np.log(20.0), 121))
    losses = [-np.log(softmax(logits, t)[np.arange(len(labels)), labels] + 1e-12).mean() for t in candidates]
    return float(candidates[int(np.argmin(losses))])


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Gap between confidence and accuracy, averaged over confidence bins."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        chosen = (confidence > low) & (confidence <= high)
        if chosen.any():
            error += chosen.mean() * abs(confidence[chosen].mean() - correct[chosen].mean())
    return float(error)


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, so every genre counts the same in the loss."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


# ---------------------------------------------------------------- genre head


def _fit_head(x, y, n_classes, penalty, hidden, seed, offset=0):
    torch.manual_seed(seed)
    head = GenreHead(x.shape[1] - offset, n_classes, hidden=hidden, dropout=0.0, offset=offset)
    head.set_standardisation(x)
    weights = class_weights(y.numpy(), n_classes)
    parameters = [p for name, p in head.named_parameters() if name.endswith("weight")]
    optimiser = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=300, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = F.cross_entropy(head(x), y, weight=weights)
        loss = loss + penalty * sum(p.square().sum() for p in parameters) / len(y) * n_classes
        loss.backward()
        return loss

    optimiser.step(closure)
    return head.eval()


def train_head(embeddings, labels, groups, genres, settings: FeatureSettings, config: TrainConfig,
               log=print) -> GenreModel:
    """Train a genre head on pretrained embeddings.

    The L2 penalty is chosen on an artist-grouped validation split, and
    the report comes from that split; the temperature is fitted on the
    held-out logits of that and further artist-grouped splits (the saved
    head is refit on every track, so no one split's head is the one
    shipped).
    """
    start = time.perf_counter()
    x = torch.tensor(np.asarray(embeddings, dtype=np.float32))
    # bench/accuracy: the 50 tag probabilities alone beat the pooled features (+4 to +7 points).
    offset = x.shape[1] - config.head_tags if config.head_tags else 0
    y = torch.tensor(np.asarray(labels, dtype=np.int64))
    train, val = grouped_split(y.numpy(), groups, config.val_fraction, config.seed)
    # Small problems: one thread is fastest, and it does not fight the
    # spinning OpenMP threads of idle extraction workers (5x faster, bench/RESULTS.md, Speed).
    with torch_threads(1):
        return _train_head(x, y, train, val, groups, genres, settings, config, offset, start, labels)


#: Artist-grouped splits whose held-out logits the head's temperature is fitted on.
CALIBRATION_SPLITS = 5


def _cross_fitted_temperature(x, y, groups, n_classes, val_logits, val_labels, penalty, config, offset):
    """Temperature fitted on the held-out logits of several artist-grouped splits.

    The shipped head is refit on every track, so one split's head and its
    few held-out tracks calibrate it poorly; heads with the chosen penalty
    are trained on ``CALIBRATION_SPLITS`` splits (the first gave
    ``val_logits``) and the temperature fits their pooled held-out logits.
    """
    logits, truth = [val_logits], [val_labels]
    for extra in range(1, CALIBRATION_SPLITS):
        train, val = grouped_split(y.numpy(), groups, config.val_fraction, config.seed + extra)
        if len(val):
            head = _fit_head(x[train], y[train], n_classes, penalty, config.hidden, config.seed, offset)
            with torch.no_grad():
                logits.append(head(x[val]).numpy())
            truth.append(y[val].numpy())
    return fit_temperature(np.concatenate(logits), np.concatenate(truth))


def _train_head(x, y, train, val, groups, genres, settings, config, offset, start, labels):
    n_classes = len(genres)
    report, temperature, penalty = None, 1.0, 1e-2
    if len(val):
        best = None
        for candidate in HEAD_PENALTIES:
            head = _fit_head(x[train], y[train], n_classes, candidate, config.hidden, config.seed, offset)
            with torch.no_grad():
                loss = F.cross_entropy(head(x[val]), y[val]).item()
            if best is None or loss < best[0]:
                best = (loss, candidate, head)
        _, penalty, head = best
        with torch.no_grad():
            val_logits = head(x[val]).numpy()
        temperature = _cross_fitted_temperature(x, y, groups, n_classes, val_logits, y[val].numpy(), penalty,
                                                config, offset)
        report = classification_report(y[val].numpy(), val_logits.argmax(axis=1), genres)
        report["ece"] = expected_calibration_error(softmax(val_logits, temperature), y[val].numpy())
    head = _fit_head(x, y, n_classes, penalty, config.hidden, config.seed, offset)
    architecture = {"in_dim": int(x.shape[1]) - offset, "n_genres": n_classes, "hidden": config.hidden,
                    "dropout": 0.0, "offset": offset}
    extra = {"l2_penalty": penalty}
    return _finish("musicnn", head, architecture, genres, settings, temperature, report,
                   labels, train, val, start, extra)


# --------------------------------------------------------------- scratch CNN


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random gain and SpecAugment-style frequency and time masks."""
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
    """Label-smoothed cross-entropy, of mixed pairs of windows when ``mixup`` > 0."""
    if not mixup:
        return F.cross_entropy(network(batch), target, label_smoothing=0.1)
    share = float(rng.beta(mixup, mixup))
    partner = torch.from_numpy(rng.permutation(len(target))).to(batch.device)
    logits = network(share * batch + (1 - share) * batch[partner])
    return (share * F.cross_entropy(logits, target, label_smoothing=0.1)
            + (1 - share) * F.cross_entropy(logits, target[partner], label_smoothing=0.1))


def _random_windows(features, indices, width, rng):
    """One random window of ``width`` frames per track in ``indices``."""
    windows = []
    for i in indices:
        track = features[i]
        excerpt = track[rng.integers(len(track))]
        begin = rng.integers(max(1, excerpt.shape[1] - width + 1))
        windows.append(excerpt[:, begin:begin + width])
    return torch.from_numpy(np.stack(windows).astype(np.float32))


def one_cycle_factor(progress: float, warm_up: float = 0.3) -> float:
    """Share of the peak learning rate at ``progress`` (0 to 1) through a one-cycle schedule.

    Cosine warm-up from 1/25 of the peak over the first ``warm_up`` of the
    run, then cosine annealing to zero (as ``torch.optim.lr_scheduler.OneCycleLR``).
    """
    if progress < warm_up:
        return 1 / 25 + (1 - 1 / 25) * (1 - math.cos(math.pi * progress / warm_up)) / 2
    return (1 + math.cos(math.pi * min(1.0, (progress - warm_up) / (1 - warm_up)))) / 2


def _fit_to_budget(planned: int, done: int, elapsed: float, budget: float) -> int:
    """Steps the schedule can have when ``done`` steps took ``elapsed`` seconds of ``budget``.

    Unchanged while the pace fits, so training within the budget is
    reproducible; else as many steps as the pace allows (``done`` when the
    budget is spent). The pace is judged only after a tenth of the budget:
    a fresh process's first step takes seconds (lazy kernel set-up), which
    projected over the whole schedule cut it to a sixth (`bench/speed.py --quick`).
    """
    if done == 0 or elapsed < 0.1 * budget or elapsed / done * planned <= budget:
        return planned
    return max(done, min(planned, int(budget / (elapsed / done))))


def _validation_scores(model, val_features, val_labels, device) -> dict:
    logits = model.logits(val_features, device)
    loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(val_labels))
    return {"val_loss": float(loss), "val_accuracy": float((logits.argmax(axis=1) == val_labels).mean())}


def train_scratch(features, labels, groups, genres, settings: FeatureSettings, config: TrainConfig,
                  log=print) -> GenreModel:
    """Train the Dieleman-style CNN end to end on log-mel excerpts.

    Each step sees random windows of random excerpts (class-balanced
    sampling, gain and masking augmentation, mixup, label smoothing);
    AdamW with a one-cycle schedule that runs to its end, and the final
    weights are kept. When the pace of the steps so far would overrun
    ``config.minutes``, the rest of the schedule is shortened to fit, so a
    slow machine ends with an annealed network within the budget rather
    than a cut-off one; within the budget, training is reproducible.

    The artist-grouped validation tracks only report and calibrate: choosing
    weights on them (early stopping) kept barely trained networks when a
    small library leaves a dozen validation tracks (bench/RESULTS.md).
    """
    start = time.perf_counter()
    device = resolve_device(config.device)
    labels_np = np.asarray(labels, dtype=np.int64)
    train, val = grouped_split(labels_np, groups, config.val_fraction, config.seed)
    n_classes = len(genres)
    window = settings.frames(3.0) - 1
    architecture = {"n_mels": settings.n_mels, "n_genres": n_classes, "window_frames": window, **config.network}
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    network = ScratchNetwork(**architecture).to(device)
    model = GenreModel("scratch", list(genres), settings, network, architecture)

    # Four windows per track an epoch; a small library gets at least 16 steps an epoch,
    # as 480 steps beat 240 on 56-track training sets (bench/RESULTS.md).
    steps = max(16, math.ceil(4 * len(train) / config.batch_size))
    total_steps, budget = steps * config.epochs, config.minutes * 60
    sampling = class_weights(labels_np[train], n_classes).numpy()[labels_np[train]]
    sampling /= sampling.sum()
    optimiser = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=1e-2)
    # Mixed precision on a GPU (float16 convolutions, float32 weights, scaled
    # gradients); the CPU trains in float32.
    mixed = device == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=mixed)
    val_features = [features[i] for i in val]
    # Validating costs about a third of a step per window: only ~10 times a run, for the curve.
    validate_every = max(1, config.epochs // 10)
    history, done, planned = [], 0, total_steps
    for epoch in range(1, config.epochs + 1):
        network.train()
        losses = []
        for _ in range(steps):
            planned = _fit_to_budget(planned, done, time.perf_counter() - start, budget)
            if done >= planned:
                break
            for group in optimiser.param_groups:
                group["lr"] = config.learning_rate * one_cycle_factor(done / planned)
            chosen = rng.choice(train, size=config.batch_size, p=sampling)
            batch = _augment(_random_windows(features, chosen, window, rng).to(device), generator)
            target = torch.from_numpy(labels_np[chosen]).to(device)
            with torch.autocast(device_type=device, dtype=torch.float16, enabled=mixed):
                loss = _loss(network, batch, target, config.mixup, rng)
            optimiser.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            done += 1
            losses.append(loss.item())
        if not losses:
            break
        finished = done >= planned
        record = {"epoch": epoch, "train_loss": float(np.mean(losses))}
        if len(val) and (epoch % validate_every == 0 or finished):
            record.update(_validation_scores(model, val_features, labels_np[val], device))
        history.append(record)
        log(f"epoch {epoch:3d}: " + ", ".join(f"{k} {v:.3f}" for k, v in record.items() if k != "epoch"))
        if finished:
            break
    if done < total_steps:
        log(f"time budget of {config.minutes:g} min: the schedule was shortened to {done} of {total_steps} steps")
    network.cpu().eval()
    report, temperature = None, 1.0
    if len(val):
        val_logits = model.logits(val_features)
        temperature = fit_temperature(val_logits, labels_np[val])
        report = classification_report(labels_np[val], val_logits.argmax(axis=1), genres)
        report["ece"] = expected_calibration_error(softmax(val_logits, temperature), labels_np[val])
    return _finish("scratch", network, architecture, genres, settings, temperature, report,
                   labels, train, val, start, {"history": history, "device": device, "steps": done})


def _finish(backbone, network, architecture, genres, settings, temperature, report, labels, train, val,
            start, extra) -> GenreModel:
    counts = Counter(np.asarray(labels).tolist())
    metadata = {
        "trained_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "library_size": len(labels),
        "tracks_per_genre": {genres[c]: int(counts[c]) for c in range(len(genres))},
        "train_tracks": int(len(train)),
        "validation_tracks": int(len(val)),
        "validation": report,
        "train_seconds": round(time.perf_counter() - start, 2),
        **extra,
    }
    return GenreModel(backbone, list(genres), settings, network.cpu().eval(), architecture,
                      temperature=temperature, metadata=metadata)
