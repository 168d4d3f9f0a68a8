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
