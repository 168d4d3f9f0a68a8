"""Training, prediction and evaluation on plain lists of audio files.

This is the whole product without beets: the plugin maps library items
onto these functions, and a notebook can call them on a folder::

    model, choice, failures = train_on_files(paths, genres, artists)
    for result in predict_files(model, other_paths, run=RunConfig(n_jobs=2)):
        print(result.index, result.selected())
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import time
from typing import Callable, Iterator, Sequence

import numpy as np

from . import THRESHOLD, TOP_K
from .backbones import TrainConfig, TrainedHead, get_backbone
from .devices import TorchMissing, compute_threads, import_torch
from .extract import WORKER_DIED, audio_ids, extract_features
from .genres import LabelChoice, Taxonomy, choose_labels, genre_key
from .linear_head import judged_tracks
from .metrics import artist_counts, check_usability, genre_report, plural, select_genres
from .model import GenreModel
from .runtime import RunConfig, worker_count

#: The model shipped in the package, used until the user trains one.
DEFAULT_MODEL = os.path.join(os.path.dirname(__file__), "data", "default_model.safetensors")


class TrainingError(Exception):
    """Training cannot start (one-line reason with what to do)."""


@dataclasses.dataclass
class Prediction:
    """Calibrated genre probabilities of one track, and its tags.

    Attributes
    ----------
    index : int
        Position of the track in the input.
    probabilities : np.ndarray
        ``(genres,)``: probability that each of the model's genres applies.
    genres : sequence of str
        The model's genres, in the order of ``probabilities``.
    tags : list
        ``[(tag, probability), ...]`` of the backbone's tags above the
        threshold asked for, best first.
    """

    index: int
    probabilities: np.ndarray
    genres: Sequence[str]
    tags: list = dataclasses.field(default_factory=list)

    def selected(self, threshold: float = THRESHOLD, top_k: int = TOP_K) -> list[tuple[str, float]]:
        """The genres the track is given (:func:`genre_cnn_core.metrics.select_genres`), with probabilities."""
        return [(self.genres[c], float(self.probabilities[c]))
                for c in select_genres(self.probabilities, threshold, top_k)]

    def ranked(self) -> list[tuple[str, float]]:
        """Every genre with its probability, best first."""
        order = np.argsort(-self.probabilities, kind="stable")
        return [(self.genres[c], float(self.probabilities[c])) for c in order]


@dataclasses.dataclass
class Failure:
    """A track that could not be used, with a one-line reason."""

    index: int
    reason: str

    @property
    def worker_died(self) -> bool:
        """Whether reading this file killed the worker process (a crashing decoder, out of memory): a file
        better skipped by later runs until asked."""
        return self.reason.startswith(WORKER_DIED)


def train_on_files(
    paths: Sequence,
    track_genres: Sequence,
    artists: Sequence | None = None,
    backbone: str = "musicnn",
    taxonomy: Taxonomy | None = None,
    min_tracks: int = 10,
    max_genres: int | None = None,
    config: TrainConfig | None = None,
    run: RunConfig | None = None,
    log=print,
    threshold: float = THRESHOLD,
    top_k: int = TOP_K,
) -> tuple[GenreModel, LabelChoice, list[Failure]]:
    """Train a genre model on tagged audio files.

    Parameters
    ----------
    paths : sequence of str or bytes
        Audio files.
    track_genres : sequence
        Genres of each file (a list of strings or one string); every
        genre counts, the first is the track's primary one.
    artists : sequence, optional
        Artist of each file; held-out tracks never share an artist with the
        tracks their model learned from. Files without one form groups of
        their own.
    backbone : str
        A registered backbone (:data:`genre_cnn_core.backbones.BACKBONES`).
    taxonomy : Taxonomy, optional
        Aliases, genre tree and whitelist (:class:`genre_cnn_core.genres.Taxonomy`).
    min_tracks, max_genres : int
        See :func:`genre_cnn_core.genres.choose_labels`.
    config : TrainConfig, optional
    run : RunConfig, optional
        Cache, workers, device and progress bar (:class:`~genre_cnn_core.runtime.RunConfig`).
    log : callable
        Receives one line of text at a time.
    threshold, top_k
        The rule that gives a track its genres, for the held-out report.

    Returns
    -------
    (GenreModel, LabelChoice, list of Failure)
        The model's metadata holds the held-out report (``validation``),
        training tracks and artists per genre, and ``usability``: the line
        of :meth:`genre_cnn_core.metrics.Usability.line` ('' when usable).

    Raises
    ------
    TrainingError
        Unknown backbone, a backbone that trains with PyTorch where it is not
        installed, or fewer than two genres with enough tracks.
    """
    started = time.perf_counter()
    config = config or TrainConfig()
    run = run or RunConfig()
    try:
        chosen_backbone = get_backbone(backbone)
    except ValueError as error:
        raise TrainingError(str(error)) from None
    choice = choose_labels(list(track_genres), taxonomy, min_tracks, max_genres)
    _check_genres(choice, min_tracks, max_genres)
    if chosen_backbone.trains_with_torch:  # before any audio is decoded
        try:
            import_torch(f"training the {backbone} backbone")
        except TorchMissing as error:
            raise TrainingError(str(error)) from None
    chosen = choice.used()
    identities = audio_ids([paths[i] for i in chosen])
    extractor = chosen_backbone.extractor(chosen_backbone.default_settings, run.device)
    features: dict = {}
    failures = []
    for position, array, error in extract_features([paths[i] for i in chosen], extractor, run,
                                                   description="features", identities=identities):
        if error:
            failures.append(Failure(chosen[position], error))
        else:
            features[position] = array
    used = sorted(features)
    targets = choice.label_matrix([chosen[p] for p in used])
    learned = np.flatnonzero(targets.any(axis=0))
    if len(learned) < 2:
        raise TrainingError("fewer than 2 genres have decodable tracks; see the warnings above")
    targets = targets[:, learned]
    # The primary genre balances splits and sampling: a track's first learned genre.
    renumber = {int(old): new for new, old in enumerate(learned)}
    strata = np.array([renumber[next(c for c in choice.labels[chosen[p]] if c in renumber)] for p in used])
    groups = [(artists[chosen[p]] if artists is not None and artists[chosen[p]] else f"\0track{chosen[p]}")
              for p in used]
    genres = [choice.genres[c] for c in learned]
    trained = chosen_backbone.train([features[p] for p in used], targets, strata, groups, extractor.settings,
                                    config, log, run.device)
    known = (trained.heldout_known if trained.heldout_known is not None
             else np.ones(trained.heldout_probabilities.shape, dtype=bool))
    ids = [identities[p] for p in used]
    metadata = {
        "trained_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "train_tracks": len(used),
        **training_report(trained, targets, strata, groups, genres, threshold, top_k),
        "from_children": {g: choice.from_children[g] for g in genres if g in choice.from_children},
        # The scratch CNN never learns from its validation tracks, so --eval can score them.
        "trained_on": sorted(ids[p] for p in (range(len(ids)) if trained.learned_from is None
                                              else trained.learned_from) if ids[p]),
        "train_seconds": round(time.perf_counter() - started, 2),
        **trained.info,
    }
    rows = [row for row, h in enumerate(trained.heldout) if ids[h]]
    model = GenreModel(chosen_backbone, genres, [choice.spellings[c] for c in learned], extractor.settings,
                       trained.weights, trained.architecture, trained.calibration,
                       [ids[trained.heldout[row]] for row in rows], trained.heldout_probabilities[rows], metadata,
                       heldout_known=known[rows])
    return model, choice, failures


def training_report(trained: TrainedHead, targets: np.ndarray, strata: np.ndarray, groups: Sequence, genres: list,
                    threshold: float = THRESHOLD, top_k: int = TOP_K) -> dict:
    """What a model's metadata says of its training: tracks and artists per genre, the held-out report, usability.

    Only the held-out tracks whose head knew all their genres are scored:
    a genre played by the held-out artists alone cannot be predicted by
    that head, and is reported as not scored instead of as missed.

    Returns
    -------
    dict
        ``tracks_per_genre``, ``artists_per_genre``, ``heldout_tracks``
        (scored), ``validation`` (:func:`genre_cnn_core.metrics.genre_report`,
        None without scored tracks) and ``usability``
        (:meth:`genre_cnn_core.metrics.Usability.line`, '' when usable).
    """
    known = (trained.heldout_known if trained.heldout_known is not None
             else np.ones(trained.heldout_probabilities.shape, dtype=bool))
    tracks_per_genre = {g: int(n) for g, n in zip(genres, targets.sum(axis=0))}
    artists_per_genre = dict(zip(genres, artist_counts(targets, groups)))
    report, usability = None, ""
    rows = np.flatnonzero(judged_tracks(targets[trained.heldout], known))
    scored = trained.heldout[rows]
    if len(scored):
        probabilities = trained.heldout_probabilities[rows]
        report = genre_report(targets[scored], probabilities, genres, strata[scored], threshold, top_k,
                              [groups[i] for i in scored])
        usability = check_usability(targets[scored], probabilities, strata[scored], trained.calibration, genres,
                                    tracks_per_genre, artists_per_genre).line()
    return {"tracks_per_genre": tracks_per_genre, "artists_per_genre": artists_per_genre,
            "heldout_tracks": int(len(scored)), "validation": report, "usability": usability}


def _check_genres(choice: LabelChoice, min_tracks: int, max_genres: int | None = None) -> None:
    if len(choice.genres) >= 2:
        return
    found = {**{g: n for g, (n, _) in choice.dropped.items()}, **choice.counts}
    enough = len(choice.counts) + sum(1 for _, why in choice.dropped.values() if "max_genres" in why)
    if max_genres and enough >= 2:
        raise TrainingError(f"need at least 2 genres to learn, and --max-genres {max_genres} keeps only "
                            f"{plural(max_genres, 'genre')} of the {enough} with {min_tracks} or more "
                            "tagged tracks; use --max-genres 2 or more (0: all)")
    listing = ", ".join(f"{g} ({n})" for g, n in sorted(found.items(), key=lambda kv: -kv[1])[:12]) or "none"
    ranked = sorted(((g, n) for g, n in found.items() if choice.dropped.get(g, (0, ""))[1] != "not in the whitelist"),
                    key=lambda kv: -kv[1])
    if len(ranked) >= 2 and ranked[1][1] >= 2:
        second = ranked[1][1]
        learned = sum(1 for _, n in ranked if n >= second)
        advice = f"Tag more tracks or lower min_tracks (`-m {second}` would learn {plural(learned, 'genre')})"
    elif len(ranked) >= 2:
        advice = f"Tag more tracks: the second most common genre, {ranked[1][0]}, has {plural(ranked[1][1], 'track')}"
    else:
        advice = "Tag tracks with at least 2 genres"
    raise TrainingError(f"need at least 2 genres with {min_tracks} or more tagged tracks (min_tracks); found: "
                        f"{listing}. {advice}")


def known_genres(model: GenreModel, values, taxonomy: Taxonomy | None = None) -> list[int]:
    """Indices of the model's genres among a track's genre values, its own genres first."""
    index = {genre_key(g): c for c, g in enumerate(model.genres)}
    found = []
    for key, _, _ in (taxonomy or Taxonomy()).track_genres(values):
        if key in index and index[key] not in found:
            found.append(index[key])
    return found


def evaluate_files(
    model: GenreModel,
    paths: Sequence,
    track_genres: Sequence,
    taxonomy: Taxonomy | None = None,
    run: RunConfig | None = None,
    threshold: float = THRESHOLD,
    top_k: int = TOP_K,
    artists: Sequence | None = None,
) -> tuple[dict | None, dict]:
    """Evaluate a model on tagged files it was not trained on.

    A file counts when one of its genres is one of the model's genres
    (after the taxonomy) and the model did not learn from its audio,
    wherever the file lies now. With ``artists`` (each file's), the report
    counts the artists behind each genre's figures.

    Returns
    -------
    (dict or None, dict)
        The report of :func:`genre_cnn_core.metrics.genre_report` (None
        when no file counts), and counts of the files ``used``,
        ``trained_on``, ``other_genre`` and ``failed``, and ``validation``:
        of the used ones, those the model's calibration was fitted on (the
        scratch CNN's validation tracks, which its network never learned from).
    """
    run = run or RunConfig()
    seen, validation = model.trained_on, set(model.heldout_ids)
    counts = {"used": 0, "trained_on": 0, "other_genre": 0, "failed": 0, "validation": 0}
    chosen, truths = [], []
    identities = audio_ids(paths)
    for i, values in enumerate(track_genres):
        known = known_genres(model, values, taxonomy)
        if not known:
            counts["other_genre"] += 1
        elif identities[i] in seen:
            counts["trained_on"] += 1
        else:
            chosen.append(i)
            truths.append(known)
    features, rows, used = [], [], []
    for position, array, error in extract_features([paths[i] for i in chosen], model.extractor(run.device), run,
                                                   description="evaluate", identities=[identities[i] for i in chosen]):
        if error:
            counts["failed"] += 1
        else:
            features.append(array)
            rows.append(truths[position])
            counts["validation"] += identities[chosen[position]] in validation
            used.append(chosen[position])
    counts["used"] = len(features)
    if not features:
        return None, counts
    truth = np.zeros((len(rows), len(model.genres)), dtype=bool)
    for row, known in enumerate(rows):
        truth[row, known] = True
    by_artist = None if artists is None else [artists[i] or f"\0track{i}" for i in used]
    report = genre_report(truth, model.predict_proba(features, run.device), model.genres,
                          np.array([known[0] for known in rows]), threshold, top_k, by_artist)
    return report, counts


@dataclasses.dataclass
class Judgement:
    """How strongly a track's audio contradicts its genre tags.

    Attributes
    ----------
    index : int
        Position of the track in the input.
    score : float or None
        ``1 - the highest probability of any of its tagged genres`` (or of
        their relatives in the genre tree) that the model knows; None when
        the track is not judged.
    tagged : list of str
        Its tagged genres the model knows (with their relatives).
    probabilities : np.ndarray or None
        The probabilities it was judged by.
    source : str
        ``"held-out"`` (a model that never heard its artist), ``"model"``
        (the model, which did not learn from it), or why it is not judged:
        ``"no genres"``, ``"unknown genres"`` or ``"trained on"`` (learned from, with no
        held-out prediction).
    """

    index: int
    score: float | None
    tagged: list
    probabilities: np.ndarray | None
    source: str


def agreeing_genres(model: GenreModel, values, taxonomy: Taxonomy | None = None) -> list[int]:
    """Indices of the model's genres that a track's tagged genres agree with: the tagged genres
    themselves and their relatives in the genre tree."""
    taxonomy = taxonomy or Taxonomy()
    index = {genre_key(g): c for c, g in enumerate(model.genres)}
    related = set()
    for key, _, _ in taxonomy.track_genres(values):
        related |= taxonomy.relatives(key)
    return sorted({index[k] for k in related if k in index})


def _judgement(model, index, probabilities, agreeing, source) -> Judgement:
    """Judge by the agreeing genres the predicting model knows (NaN: a genre it never learned)."""
    agreeing = [c for c in agreeing if not np.isnan(probabilities[c])]
    if not agreeing:
        return Judgement(index, None, [], None, "its genres are played only by its own artist")
    score = 1.0 - float(np.max(probabilities[agreeing]))
    return Judgement(index, score, [model.genres[c] for c in agreeing], probabilities, source)


def judge_files(
    model: GenreModel,
    paths: Sequence,
    track_genres: Sequence,
    taxonomy: Taxonomy | None = None,
    run: RunConfig | None = None,
) -> Iterator[Judgement | Failure]:
    """Judge how strongly each track's audio contradicts its genre tags.

    A track the model learned from is judged by its held-out prediction
    (made by a model that never heard its artist); any other track by the
    model. Tracks whose tagged genres the model does not know, training
    tracks without a held-out prediction, and tracks whose genres only
    their own artist plays (the held-out model never learned them) are not
    judged. A tagged genre is not contradicted by its relatives in the
    genre tree (``bebop`` by ``jazz``).

    Yields
    ------
    Judgement or Failure
        One per path; tracks judged by the model in completion order, after the others.
    """
    heldout, seen = model.heldout(), model.trained_on
    identities = audio_ids(paths)
    agreeing = [agreeing_genres(model, values, taxonomy) for values in track_genres]
    to_predict = []
    for i, identity in enumerate(identities):
        if not agreeing[i]:
            yield Judgement(i, None, [], None, "unknown genres" if track_genres[i] else "no genres")
        elif identity in heldout:
            yield _judgement(model, i, heldout[identity], agreeing[i], "held-out")
        elif identity in seen:
            yield Judgement(i, None, [], None, "trained on")
        else:
            to_predict.append(i)
    for result in predict_files(model, [paths[i] for i in to_predict], run=run,
                                identities=[identities[i] for i in to_predict]):
        i = to_predict[result.index]
        if isinstance(result, Failure):
            yield Failure(i, result.reason)
            continue
        yield _judgement(model, i, result.probabilities, agreeing[i], "model")


def predict_files(
    model: GenreModel,
    paths: Sequence,
    tag_threshold: float | None = None,
    run: RunConfig | None = None,
    batch_tracks: int = 64,
    identities: Sequence | None = None,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[Prediction | Failure]:
    """Predict the genres of audio files.

    Parameters
    ----------
    model : GenreModel
    paths : sequence of str or bytes
    tag_threshold : float or None
        With a backbone that has tags (musicnn), also report the tags at
        or above this probability; None skips tags.
    run : RunConfig, optional
        Cache, workers, device and progress bar (:class:`~genre_cnn_core.runtime.RunConfig`).
    batch_tracks : int
        Tracks per evaluation of the genre head.
    identities : sequence, optional
        The files' audio ids (:func:`audio_ids`) when the caller has them; by
        default they are read as the cache needs them.
    on_wait : callable, optional
        Called with no arguments each time every prediction so far has been
        yielded and the run waits for its workers (a slow file, say): the
        moment to store them, so that none waits behind that file.

    Yields
    ------
    Prediction or Failure
        One per path, in completion order. A track whose scores are not
        finite is a Failure, never a Prediction.
    """
    run = run or RunConfig()
    backbone = model.backbone
    tag_names = backbone.tag_names() if tag_threshold is not None else []
    pending: list = []

    def flush():
        if not pending:
            return
        probabilities = model.predict_proba([f for _, f in pending], run.device)
        for (index, features), row in zip(pending, probabilities):
            if not np.isfinite(row).all():
                yield Failure(index, "the model gave non-finite scores for this audio")
                continue
            found = []
            if tag_names:
                values = np.asarray(features[-len(tag_names):], dtype=np.float32)
                found = [(tag_names[t], float(values[t])) for t in np.argsort(-values) if values[t] >= tag_threshold]
            yield Prediction(index, row, model.genres, found)
        pending.clear()

    # With workers, the genre head here gets one thread: threads waiting on each other while workers
    # hold the cores slowed it by an order of magnitude, and the workers do the heavy part.
    parallel = worker_count(run.n_jobs, len(paths)) > 1
    with compute_threads(1) if parallel and run.device == "cpu" else contextlib.nullcontext():
        for row in extract_features(paths, model.extractor(run.device), run, description="cnngenre",
                                    identities=identities, waits=True):
            if row is None:  # the workers are busy: hand over what is here, then let the caller store it
                yield from flush()
                if on_wait is not None:
                    on_wait()
                continue
            index, features, error = row
            if error:
                yield Failure(index, error)
                continue
            pending.append((index, features))
            if len(pending) >= batch_tracks:
                yield from flush()
        yield from flush()
