"""Tracks whose genre tags the audio contradicts (`beet cnngenre --suspects`)."""

import numpy as np
import pytest
from beets.library import Item
from beets.test.helper import PluginTestHelper

from genre_cnn_core import GenreModel, Taxonomy, audio_ids, judge_files
from genre_cnn_core.pipeline import agreeing_genres

WRONG = {"techno": "ambient", "ambient": "chiptune", "chiptune": "techno"}


class TestSuspects(PluginTestHelper):
    plugin = "cnngenre"

    @pytest.fixture(autouse=True)
    def _no_tag_writes(self):
        self.config["import"]["write"] = False

    def test_planted_mislabels_are_found_and_judged_only_by_models_that_never_heard_them(self, library_files,
                                                                                      capsys):
        planted = {0, 9, 18}  # one track of one artist in each genre
        items = []
        for i, (path, genre) in enumerate(library_files):
            item = Item.from_path(str(path))
            item.genres = [WRONG[genre] if i in planted else genre]
            self.lib.add(item)
            items.append(item)
        self.run_command("cnngenre", "-t", "-m", "4", "-j", "1")  # musicnn head: every track held out once
        capsys.readouterr()
        self.run_command("cnngenre", "--suspects", "-j", "1")
        out = capsys.readouterr().out
        scores = {item.id: self.lib.get_item(item.id).cnn_suspect for item in items}
        planted_ids = {items[i].id for i in planted}
        flagged = {i for i, s in scores.items() if s >= 0.9}
        assert planted_ids <= flagged and len(flagged - planted_ids) <= 2
        assert min(scores[i] for i in planted_ids) > np.median(list(scores.values()))
        assert f"cnngenre: flagged {len(flagged)} of 24 judged items at cnn_suspect >= 0.9" in out
        lines = [line for line in out.splitlines() if "tagged" in line]
        assert len(lines) == len(flagged) and "(held-out)" in lines[0]
        assert [line.split()[0] for line in lines] == [f"{s:.2f}" for s in sorted((scores[i] for i in flagged),
                                                                                  reverse=True)]
        assert {i.id for i in self.lib.items("cnn_suspect:0.9..")} == flagged

        # Training tracks are judged by their held-out predictions, never by the model that learned from them.
        model = GenreModel.load(f"{self.config.config_dir()}/cnngenre/model.safetensors")
        paths = [str(p) for p, _ in library_files]
        heldout = model.heldout()
        judgements = list(judge_files(model, paths, [list(i.genres) for i in items]))
        assert {j.source for j in judgements} == {"held-out"}
        for judgement, identity in zip(sorted(judgements, key=lambda j: j.index), audio_ids(paths)):
            np.testing.assert_array_equal(judgement.probabilities, heldout[identity])

    def test_albums_are_judged_by_their_tracks(self, library_files, capsys):
        """One album per genre (the first 4 tracks, 2 artists) and the rest singletons; the techno album and
        its tracks are tagged ambient."""
        albums = {}
        for genre in WRONG:
            paths = [path for path, g in library_files if g == genre]
            tagged = [WRONG[genre]] if genre == "techno" else [genre]
            tracks = []
            for path in paths[:4]:
                item = Item.from_path(str(path))
                item.update({"genres": tagged, "album": f"{genre} album", "albumartist": f"{genre} band"})
                tracks.append(item)
            albums[genre] = self.lib.add_album(tracks)
            for path in paths[4:]:
                item = Item.from_path(str(path))
                item.genres = [genre]
                self.lib.add(item)
        self.run_command("cnngenre", "-t", "-m", "4", "-j", "1")
        capsys.readouterr()
        self.config["cnngenre"]["suspect_threshold"] = 0.5  # four synthetic tracks make a less sure album
        self.run_command("cnngenre", "--suspects", "-a", "-j", "1")
        out = capsys.readouterr().out
        scores = {genre: self.lib.get_album(album.id).get("cnn_album_suspect") for genre, album in albums.items()}
        assert scores["techno"] >= 0.5 and scores["ambient"] < 0.5 and scores["chiptune"] < 0.5
        lines = [line for line in out.splitlines() if "tagged" in line]
        assert len(lines) == 1 and "(album)" in lines[0] and "tagged ambient" in lines[0]
        assert "cnngenre: flagged 1 of 3 judged albums at cnn_album_suspect >= 0.5" in out

    def test_pretend_changes_nothing_and_unknown_genres_are_not_judged(self, library_files, capsys):
        for i, (path, genre) in enumerate(library_files):
            item = Item.from_path(str(path))
            item.genres = [genre] if i else ["Polka"]
            self.lib.add(item)
        self.run_command("cnngenre", "-t", "-m", "4", "-j", "1")
        capsys.readouterr()
        self.run_command("cnngenre", "--suspects", "-p", "-j", "1")
        out = capsys.readouterr().out
        assert "1 (unknown genres)" in out and "of 23 judged items" in out
        assert not any(item.get("cnn_suspect") is not None and "cnn_suspect" in item for item in self.lib.items())


def test_a_genre_is_not_contradicted_by_its_relatives_in_the_tree(scratch_model):
    tree = {"techno": ["electronic"], "electronic": [], "detroit techno": ["techno", "electronic"]}
    taxonomy = Taxonomy(tree=tree)
    genres = scratch_model.genres
    assert agreeing_genres(scratch_model, ["Detroit Techno"], taxonomy) == [genres.index("techno")]
    assert agreeing_genres(scratch_model, ["Detroit Techno"]) == []  # without the tree: unknown to the model
    assert agreeing_genres(scratch_model, ["Electronic"], taxonomy) == [genres.index("techno")]  # a child


def test_tracks_not_trained_on_are_judged_by_the_model(scratch_model, heldout_files):
    paths = [str(p) for p, _ in heldout_files]
    judgements = {j.index: j for j in judge_files(scratch_model, paths, [[g] for _, g in heldout_files])}
    assert {j.source for j in judgements.values()} == {"model"}
    correct = [j.score for i, j in judgements.items()]
    assert np.median(correct) < 0.5  # their tags are right: little disagreement
    swapped = {j.index: j for j in judge_files(scratch_model, paths, [[WRONG[g]] for _, g in heldout_files])}
    assert np.median([j.score for j in swapped.values()]) > 0.5


def test_a_genre_only_one_artist_plays_is_not_judged_by_the_head_that_never_learned_it():
    from genre_cnn_core.linear_head import train_linear_head

    rng = np.random.default_rng(0)
    strata = np.array([0] * 20 + [1] * 20 + [2] * 4)
    groups = [f"a{i // 2}" for i in range(40)] + ["lonely"] * 4  # genre 2: one artist
    x = rng.normal(size=(44, 6)) + np.eye(3)[strata].repeat(2, axis=1) * 3
    from genre_cnn_core.splits import grouped_folds

    found = train_linear_head(x, np.eye(3, dtype=bool)[strata], strata, groups)
    lonely_fold = grouped_folds(strata, groups, 5, 0) == grouped_folds(strata, groups, 5, 0)[40]
    assert (found.heldout_known[:, 2] == ~lonely_fold).all()  # that fold's head never saw genre 2
    assert found.heldout_known[:, :2].all()
