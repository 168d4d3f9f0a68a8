import numpy as np
import pytest
import torch

from genre_cnn_core.features import FeatureSettings
from genre_cnn_core.model import GenreHead
from genre_cnn_core.training import TrainConfig, train_head


def test_standardisation_of_a_single_track_is_finite():
    head = GenreHead(in_dim=5, n_genres=3)
    one_track = torch.tensor([[0.5, -2.0, 3.0, 0.0, 1.0]])
    head.set_standardisation(one_track)
    assert torch.isfinite(head.mean).all() and torch.isfinite(head.scale).all()
    assert torch.isfinite(head(one_track)).all()


def test_head_trained_on_a_single_track_predicts_finite_probabilities():
    embedding = np.random.default_rng(0).normal(size=(1, 8)).astype(np.float32)
    model = train_head(embedding, [0], ["artist"], ["jazz", "rock"], FeatureSettings(),
                       TrainConfig(head_tags=0, device="cpu"), log=lambda line: None)
    assert np.isfinite(model.predict_proba(list(embedding))).all()


def test_one_cycle_schedule_warms_up_to_the_peak_then_anneals_to_zero():
    from genre_cnn_core.training import one_cycle_factor

    factors = [one_cycle_factor(p / 100) for p in range(101)]
    assert factors[0] == pytest.approx(1 / 25)
    assert max(factors) == pytest.approx(1.0) and factors[30] == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a <= b for a, b in zip(factors[:31], factors[1:31]))
    assert all(a >= b for a, b in zip(factors[30:], factors[31:]))


def test_schedule_is_shortened_only_when_the_pace_overruns_the_budget():
    from genre_cnn_core.training import _fit_to_budget

    assert _fit_to_budget(planned=100, done=0, elapsed=5.0, budget=10.0) == 100
    assert _fit_to_budget(planned=100, done=10, elapsed=1.0, budget=10.0) == 100
    assert _fit_to_budget(planned=100, done=10, elapsed=2.0, budget=10.0) == 50
    assert _fit_to_budget(planned=100, done=10, elapsed=12.0, budget=10.0) == 10
    # A slow first step (a fresh process sets up its kernels) is not taken as the pace.
    assert _fit_to_budget(planned=600, done=1, elapsed=1.65, budget=150.0) == 600
