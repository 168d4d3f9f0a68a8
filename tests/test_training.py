"""The trainers: the linear head on embeddings and the scratch CNN's schedule."""

import numpy as np
import pytest

from genre_cnn_core.backbones.scratch import fit_to_budget, one_cycle_factor
from genre_cnn_core.linear_head import LinearHead, fit_head, standardisation, train_linear_head
from genre_cnn_core.metrics import calibrate


def test_standardisation_of_a_single_track_is_finite():
    mean, scale = standardisation(np.array([[0.5, -2.0, 3.0, 0.0, 1.0]]))
    assert np.isfinite(mean).all() and (scale == 1).all()


def test_head_trained_on_a_single_track_predicts_finite_probabilities():
    x = np.random.default_rng(0).normal(size=(1, 8))
    found = train_linear_head(x, np.array([[True, False]]), [0], ["artist"])
    assert found.folds == 0 and len(found.heldout) == 0
    assert np.isfinite(calibrate(found.head.logits(x), found.calibration)).all()


def _two_label_data(seed=0, n=240):
    """Embeddings whose first half of features says 'a', second half says 'b'; many tracks are both."""
    rng = np.random.default_rng(seed)
    truth = rng.random((n, 2)) < 0.5
    truth[~truth.any(axis=1), 0] = True
    x = rng.normal(size=(n, 8)) + np.repeat(truth * 2.0, 4, axis=1)
    return x, truth


def test_both_genres_of_multi_genre_tracks_are_learned_with_calibrated_probabilities():
    x, truth = _two_label_data()
    groups = [f"artist{i // 4}" for i in range(len(x))]
    strata = truth.argmax(axis=1)
    found = train_linear_head(x[:200], truth[:200], strata[:200], groups[:200])
    p = calibrate(found.head.logits(x[200:]), found.calibration)
    both = truth[200:].all(axis=1)
    assert both.any() and (p[both] > 0.5).all(axis=1).mean() >= 0.7  # multi-genre tracks get both
    assert ((p > 0.5) == truth[200:]).mean() >= 0.85
    assert found.folds == 5 and list(found.heldout) == list(range(200))


def test_heldout_predictions_never_come_from_a_head_that_heard_the_artist():
    # Each artist has a unique signature feature and a genre drawn at random: a head that heard the artist
    # can memorise it; one that did not can only guess.
    rng = np.random.default_rng(1)
    artists = 40
    genre_of_artist = rng.integers(0, 2, artists)
    tracks = np.repeat(np.arange(artists), 5)
    x = np.eye(artists)[tracks] * 5 + rng.normal(scale=0.01, size=(len(tracks), artists))
    truth = np.eye(2, dtype=bool)[genre_of_artist[tracks]]
    found = train_linear_head(x, truth, truth.argmax(axis=1), [f"a{t}" for t in tracks])
    heldout_accuracy = (found.heldout_probabilities.argmax(axis=1) == truth.argmax(axis=1)).mean()
    seen_accuracy = (found.head.logits(x).argmax(axis=1) == truth.argmax(axis=1)).mean()
    assert seen_accuracy == 1.0 and heldout_accuracy < 0.75


def test_linear_head_weights_round_trip():
    x, truth = _two_label_data(n=50)
    head = fit_head(x, truth, truth.argmax(axis=1), 1.0, offset=2)
    again = LinearHead.from_weights(head.weights(), head.architecture)
    np.testing.assert_array_equal(again.logits(x), head.logits(x))
    assert head.architecture == {"in_dim": 6, "n_genres": 2, "offset": 2}


def test_one_cycle_schedule_warms_up_to_the_peak_then_anneals_to_zero():
    factors = [one_cycle_factor(p / 100) for p in range(101)]
    assert factors[0] == pytest.approx(1 / 25)
    assert max(factors) == pytest.approx(1.0) and factors[30] == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a <= b for a, b in zip(factors[:31], factors[1:31]))
    assert all(a >= b for a, b in zip(factors[30:], factors[31:]))


def test_schedule_is_shortened_only_when_the_pace_overruns_the_budget():
    assert fit_to_budget(planned=100, done=0, elapsed=5.0, budget=10.0) == 100
    assert fit_to_budget(planned=100, done=10, elapsed=1.0, budget=10.0) == 100
    assert fit_to_budget(planned=100, done=10, elapsed=2.0, budget=10.0) == 50
    assert fit_to_budget(planned=100, done=10, elapsed=12.0, budget=10.0) == 10
    # A slow first step (a fresh process sets up its kernels) is not taken as the pace.
    assert fit_to_budget(planned=600, done=1, elapsed=1.65, budget=150.0) == 600


def test_a_one_artist_genre_leaves_the_other_genres_spread_and_calibrated(library_files, feature_cache):
    """A genre all of whose tracks are by one artist (over min_tracks): the head that holds that artist out
    cannot know it. Scored as certain misses, those tracks collapsed the one calibration (every score
    about the same); they are now learned but left out of the penalty choice, the calibration and the
    report of the other genres."""
    from genre_cnn_core import RunConfig, train_on_files
    from genre_cnn_core.backbones.musicnn import MusicnnBackbone, MusicnnExtractor
    from genre_cnn_core.extract import extract_features
    from genre_cnn_core.metrics import MIN_SLOPE

    paths = [str(p) for p, _ in library_files]
    genres = [g for _, g in library_files]
    lonely = genres[-1]
    artists = [f"{g} soloist" if g == lonely else f"{g} artist {i // 2}" for i, g in enumerate(genres)]
    model, _, failures = train_on_files(paths, genres, artists, backbone="musicnn", min_tracks=4,
                                        run=RunConfig(feature_cache, device="cpu"), log=lambda line: None)
    assert not failures
    meta = model.metadata
    assert meta["artists_per_genre"][lonely] == 1 and meta["tracks_per_genre"][lonely] == 8
    assert meta["validation"]["per_genre"][lonely]["support"] == 0  # not scored, rather than scored as missed
    assert meta["usability"] == ""
    assert model.calibration[0] >= MIN_SLOPE
    others = [i for i, g in enumerate(genres) if g != lonely]
    heldout = model.heldout()
    ids = model.heldout_ids
    top = np.array([np.nanmax(heldout[ids[i]]) for i in others])
    assert np.percentile(top, 90) - np.percentile(top, 10) >= 0.1 or top.min() >= 0.8
    assert meta["validation"]["top1_accuracy"] >= 0.8
    extractor = MusicnnExtractor(MusicnnBackbone.default_settings)
    found = sorted(extract_features(paths, extractor, RunConfig(feature_cache, device="cpu")), key=lambda r: r[0])
    x = np.stack([features for _, features, _ in found]).astype(np.float64)
    assert (model.predict_proba(list(x)).max(axis=1) >= 0.5).mean() >= 0.8  # -g would apply genres

    # The same tracks scored on every out-of-fold pair, as before: the collapse this guards against.
    names = sorted(set(genres))
    strata = np.array([names.index(g) for g in genres])
    before = train_linear_head(x, np.eye(len(names), dtype=bool)[strata], strata, artists, offset=x.shape[1] - 50,
                               scoring="all")
    assert before.calibration[0] < MIN_SLOPE


def test_judged_pairs_leave_out_genres_the_fold_could_not_know():
    from genre_cnn_core.linear_head import fold_known, judged_pairs

    targets = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1]], bool)
    folds = np.array([0, 1, 2, 0])  # fold 0's head learns only genres 1 and 2, fold 1's only 0 and 2
    known = fold_known(targets, folds)
    assert known.tolist() == [[False, True, True], [True, False, True], [True, True, True],
                              [False, True, True]]
    judged = judged_pairs(targets, known)
    assert judged.tolist() == [[False] * 3, [False] * 3, [True] * 3, [False] * 3]
    assert judged_pairs(targets, known, "known").tolist() == known.tolist()
    assert judged_pairs(targets, known, "all").all()


def test_head_chooses_its_input_with_its_penalty():
    # The first four features are noise, the last four carry the genre: the head reading the last four wins.
    rng = np.random.default_rng(3)
    strata = np.repeat([0, 1], 40)
    x = np.hstack([rng.normal(size=(80, 4)) * 3, rng.normal(size=(80, 4)) * 0.5 + strata[:, None]])
    truth = np.eye(2, dtype=bool)[strata]
    groups = [f"a{i // 2}" for i in range(80)]
    chosen = train_linear_head(x, truth, strata, groups, offset=[4, 0])
    assert chosen.offset == 4 and chosen.head.architecture["in_dim"] == 4


def test_many_features_are_fitted_in_the_span_of_the_tracks_to_the_same_head():
    import genre_cnn_core.linear_head as linear_head

    rng = np.random.default_rng(0)
    strata = rng.integers(0, 3, 30)
    x = rng.normal(size=(30, 80)) + strata[:, None] * 0.3
    truth = np.eye(3, dtype=bool)[strata]
    reduced = fit_head(x, truth, strata, 1.0)
    direct = linear_head.fit_head(np.vstack([x] * 3), np.vstack([truth] * 3), np.concatenate([strata] * 3), 3.0)
    # Three copies of each track with three times the penalty: the same optimum, fitted without the basis.
    np.testing.assert_allclose(reduced.logits(x), direct.logits(x), atol=0.05)  # to L-BFGS's tolerance
