"""Reports, calibration and artist-grouped splits: numpy only."""

import numpy as np
import pytest

from genre_cnn_core.metrics import (
    average_precision,
    calibrate,
    check_usability,
    expected_calibration_error,
    fit_calibration,
    format_report,
    genre_report,
    select_genres,
)
from genre_cnn_core.splits import grouped_folds, grouped_split


def test_select_genres_keeps_those_over_the_threshold_best_first_and_never_none():
    p = np.array([0.2, 0.9, 0.6, 0.55])
    assert select_genres(p, 0.5, 3) == [1, 2, 3]
    assert select_genres(p, 0.5, 2) == [1, 2]
    assert select_genres(np.array([0.3, 0.4]), 0.5, 3) == [1]  # the primary genre even under the threshold


def test_genre_report_by_hand():
    genres = ["a", "b", "c"]
    truth = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 1, 0]], bool)
    p = np.array([[0.9, 0.1, 0.2], [0.8, 0.3, 0.1], [0.6, 0.7, 0.1], [0.2, 0.4, 0.1]])
    report = genre_report(truth, p, genres, first=np.array([0, 1, 1, 1]), threshold=0.5, top_k=3)
    # chosen: {a}, {a}, {b, a}, {b}
    assert report["per_genre"]["a"] == {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2,
                                        "artists": None, "average_precision": 1.0}
    assert report["per_genre"]["b"]["precision"] == 1.0 and report["per_genre"]["b"]["recall"] == 2 / 3
    assert report["per_genre"]["c"] == {"precision": None, "recall": None, "f1": None, "support": 0,
                                        "artists": None, "average_precision": None}
    assert report["micro_f1"] == pytest.approx(2 * (4 / 5) * (4 / 5) / (8 / 5))
    assert report["macro_f1"] == pytest.approx((0.8 + 0.8) / 2)
    assert report["top1_accuracy"] == 0.75 and report["top1_tracks"] == 4
    assert report["confusion"] == [[1, 0, 0], [1, 2, 0], [0, 0, 0]]


def test_format_report_says_na_and_numbers_columns_unambiguously():
    genres = ["classical", "class", "count"]
    truth = np.array([[1, 0, 0], [0, 1, 0]], bool)
    p = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]])
    text = format_report(genre_report(truth, p, genres, np.array([0, 1])), genres)
    lines = text.splitlines()
    assert "n/a" in next(line for line in lines if "count" in line and "1 classical" not in line)
    assert any(line.split() == ["1", "2", "3"] for line in lines)  # columns numbered as the rows
    assert "1 classical" in text and "2 class" in text and "3 count" in text


def test_average_precision_and_ece():
    assert average_precision(np.array([0.9, 0.8, 0.1]), np.array([1, 0, 1], bool)) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(np.array([0.5]), np.array([False])) is None
    assert expected_calibration_error(np.array([0.8] * 10), np.array([1] * 8 + [0] * 2)) == pytest.approx(0.0)
    assert expected_calibration_error(np.array([0.9] * 10), np.array([1] * 5 + [0] * 5)) == pytest.approx(0.4)


def test_calibration_recovers_a_known_scale_and_keeps_the_order():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(4000, 5)) * 3
    from genre_cnn_core.metrics import log_softmax, sigmoid

    truth = rng.random((4000, 5)) < sigmoid(0.5 * log_softmax(scores) + 1.0)
    a, b = fit_calibration(scores, truth)
    assert a == pytest.approx(0.5, abs=0.05) and b == pytest.approx(1.0, abs=0.1)
    p = calibrate(scores, (a, b))
    assert (p.argmax(axis=1) == scores.argmax(axis=1)).all()
    assert list(fit_calibration(np.zeros((0, 5)), np.zeros((0, 5), bool))) == [1.0, 0.0]


@pytest.mark.parametrize("seed", range(20))
def test_grouped_splits_never_put_an_artist_on_both_sides(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 200))
    groups = [f"artist{g}" for g in rng.integers(0, max(2, n // 3), size=n)]
    strata = rng.integers(0, int(rng.integers(2, 6)), size=n)
    train, val = grouped_split(strata, groups, 0.2, seed)
    assert sorted([*train, *val]) == list(range(n))
    assert not {groups[i] for i in train} & {groups[i] for i in val}
    for genre in set(strata.tolist()):  # every genre keeps training tracks
        assert any(strata[i] == genre for i in train)
    folds = grouped_folds(strata, groups, 5, seed)
    assert len(folds) == n and set(folds.tolist()) <= set(range(5))
    for group in set(groups):
        assert len({folds[i] for i in range(n) if groups[i] == group}) == 1


def test_grouped_folds_spread_each_genre():
    groups = [f"a{i // 2}" for i in range(100)]  # 50 artists of 2 tracks
    strata = np.array([i // 20 for i in range(100)])  # 5 genres of 10 artists
    folds = grouped_folds(strata, groups, 5)
    for genre in range(5):
        assert np.bincount(folds[strata == genre], minlength=5).tolist() == [4] * 5


def test_report_counts_artists_per_genre_and_marks_genres_of_few_artists():
    genres = ["rock", "jazz", "soundtrack"]
    truth = np.array([[1, 0, 0]] * 3 + [[0, 1, 0]] * 3, bool)
    p = np.where(truth, 0.8, 0.1)
    artists = ["r1", "r2", "r3", "j1", "j1", "j2"]
    report = genre_report(truth, p, genres, truth.argmax(axis=1), 0.7, 1, artists)
    assert [report["per_genre"][g]["artists"] for g in genres] == [3, 2, 0]
    assert report["threshold"] == 0.7 and report["top_k"] == 1
    text = format_report(report, genres, {"rock": 3, "jazz": 3, "soundtrack": 12}, "held-out tracks",
                         {"rock": 3, "jazz": 2, "soundtrack": 1})
    rows = {line.split()[1]: line for line in text.splitlines() if line.split()[0].isdigit() and "tracks" in line}
    assert "12 tracks, 1 artist" in rows["soundtrack"] and "3 tracks, 2 artists" in rows["jazz*"]
    assert "rock*" not in text and "jazz*" in text
    assert "not scored: soundtrack (played by one artist only" in text
    assert "threshold 0.7, at most 1 (top_k)" in text


def test_usability_check_fires_on_a_collapsed_head_and_names_the_one_artist_genre():
    genres = ["rock", "jazz", "pop", "soundtrack"]
    first = np.repeat([0, 1, 2], 20)
    truth = np.eye(4, dtype=bool)[first]
    guessed = np.where(np.arange(60) % 3 == 0, first, (first + 1) % 3)  # right for a third of the tracks
    collapsed = np.full((60, 4), 0.28) + np.eye(4)[guessed] * 0.03
    tracks, artists = {"rock": 20, "jazz": 20, "pop": 20, "soundtrack": 12}, {"rock": 6, "jazz": 5, "pop": 7,
                                                                             "soundtrack": 1}
    found = check_usability(truth, collapsed, first, [0.136, -0.5], genres, tracks, artists)
    assert not found.usable and len(found.problems) == 3  # spread, slope, no better than the biggest genre
    assert found.cause == "soundtrack: 12 tracks, all by one artist"
    line = found.line()
    assert "\n" not in line and "calibration slope 0.136" in line and "train again" in line

    healthy = np.where(truth, 0.9, 0.05)
    healthy[::5] = np.where(truth[::5], 0.4, 0.3)  # some unsure tracks
    assert check_usability(truth, healthy, first, [1.5, 1.0], genres, tracks, artists).usable
