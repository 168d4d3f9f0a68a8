"""The benchmarks' own arithmetic: folds, held-out predictions, intervals, album consensus, planted errors.

Synthetic inputs only: the benchmarks' data (../shared/data) is never read here.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import albums  # noqa: E402
import datasets  # noqa: E402
import suspects  # noqa: E402


def track(artist, genre, album=None, n=0):
    return datasets.Track(f"/music/{artist}/{n}.mp3", "test", genre, artist, album, f"{artist} {n}")


def test_held_out_predictions_never_come_from_a_model_trained_on_their_fold():
    folds = np.array([0, 0, 1, 1, 2, 2, 2])
    targets = datasets.one_hot(np.array([0, 1, 0, 1, 0, 1, 2]), 3)
    trained_on = {}

    def fit(train, columns):
        trained_on[tuple(sorted(set(range(7)) - set(train.tolist())))] = columns.tolist()
        return lambda test: np.tile(np.arange(1, len(columns) + 1, dtype=float), (len(test), 1))

    probabilities, seconds = datasets.heldout_probabilities(fit, folds, targets)
    assert set(trained_on) == {(0, 1), (2, 3), (4, 5, 6)} and len(seconds) == 3
    # Genre 2 has its only track in fold 2: that fold cannot learn it and predicts it as 0.
    assert trained_on[(4, 5, 6)] == [0, 1]
    assert probabilities[4:, 2].tolist() == [0.0, 0.0, 0.0]
    assert probabilities[0].tolist() == [1.0, 2.0, 3.0]


def test_leave_one_group_out_gives_each_artist_its_own_fold():
    folds = datasets.leave_one_group_out(["b", "a", "b", "c"])
    assert folds[0] == folds[2] and len({folds[0], folds[1], folds[3]}) == 3


def test_resamples_draw_whole_artists():
    groups = ["a", "a", "a", "b", "c", "c"]
    for sample in datasets.group_resamples(groups, draws=50, seed=1):
        counts = np.bincount(sample, minlength=6)
        assert counts[0] == counts[1] == counts[2] and counts[4] == counts[5]
    first, again = datasets.group_resamples(groups, 5, 3), datasets.group_resamples(groups, 5, 3)
    assert all((x == y).all() for x, y in zip(first, again))


def test_wilson_interval_matches_the_formula_and_stays_inside_zero_and_one():
    low, high = datasets.wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    low, high = datasets.wilson_interval(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12) and 0 < high < 0.35


def test_albums_need_two_tracks_of_one_artist():
    tracks = datasets._with_albums([track("x", "rock", n=0), track("x", "rock", n=1), track("y", "pop", n=2)],
                                   lambda t: f"{t.artist} album")
    assert [t.album for t in tracks] == ["x album", "x album", None]
    assert datasets.albums_of(tracks) == {("x", "x album"): [0, 1]}


def test_genre_lists_start_with_the_own_genre_and_add_tree_parents():
    tracks = [track(f"artist {i}", genre, n=i) for i, genre in enumerate(["disco", "metal", "jazz", "hiphop"] * 5)]
    lists = datasets.genre_lists(tracks, two_genre_share=0.5, seed=0)
    assert [values[0] for values in lists] == [t.spelling for t in tracks]
    assert all("Electronic" in values for values, t in zip(lists, tracks) if t.genre == "disco")
    assert all("Rock" in values for values, t in zip(lists, tracks) if t.genre == "metal")
    two = [values for values, t in zip(lists, tracks) if t.genre == "jazz" and len(values) > 1]
    assert two and all(values == ["Jazz", "Blues"] for values in two)


def test_album_consensus_methods_differ_where_they_should():
    # Two tracks lean to genre 0, one rules it out and is sure of genre 1.
    p = np.array([[0.55, 0.45], [0.55, 0.45], [0.001, 0.999]])
    assert albums.consensus_vote(p) == 0
    assert albums.consensus_geometric(p) == 1
    assert albums.consensus_mean(p) == 1
    # A tied vote goes to the genre with the higher mean probability.
    assert albums.consensus_vote(np.array([[0.9, 0.1], [0.4, 0.6]])) == 0


def test_planting_marks_a_tenth_including_one_whole_artist_and_never_the_own_genre():
    tracks = [track(f"a{i // 4}", ["rock", "pop", "jazz"][i // 4 % 3], n=i) for i in range(40)]
    planting = suspects.plant(tracks, ["Rock", "Pop", "Jazz"], seed=2)
    assert planting.planted.sum() == 4
    assert planting.in_whole_artist.sum() == 4 and planting.planted[planting.in_whole_artist].all()
    assert len({planting.genres[i] for i in np.flatnonzero(planting.in_whole_artist)}) == 1
    for index in np.flatnonzero(planting.planted):
        assert planting.genres[index] != tracks[index].spelling
    assert all(planting.genres[i] == tracks[i].spelling for i in np.flatnonzero(~planting.planted))


def test_precision_and_recall_count_unjudged_items_as_not_flagged():
    scores = np.array([0.99, 0.95, 0.5, np.nan])
    planted = np.array([True, False, False, True])
    precision, recall, flagged = suspects.precision_recall(scores, planted, 0.9)
    assert (precision, recall, flagged) == (0.5, 0.5, 2)
    assert suspects.precision_recall(scores, planted, 1.0)[0] is None
