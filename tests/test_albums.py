"""Albums of tracks with genre lists: album fields, sorting into genre folders, applied genres."""

import os
import shutil

import pytest
from beets.library import Item
from beets.test.helper import PluginTestHelper

from synth import synth_track, tag, write_audio
from torch_support import needs_torch

SR = 22050
PATHS = {"default": "%if{$cnn_sort_genre,$cnn_sort_genre,Unsorted}/$albumartist/$album/$track $title",
         "singleton": "%if{$cnn_sort_genre,$cnn_sort_genre,Unsorted}/Non-Album/$artist/$title",
         "comp": "%if{$cnn_genre,$cnn_genre,Unsorted}/Compilations/$album/$track $title"}


@pytest.fixture(scope="session")
def album_tracks(tmp_path_factory):
    """Albums whose tracks would individually disagree: 3 tracks of the album's genre, 1 of another."""
    folder = tmp_path_factory.mktemp("albums")
    plans = {"Beats": ["techno"] * 3 + ["ambient"], "Drift": ["ambient"] * 3 + ["chiptune"],
             "Bleeps": ["chiptune"] * 3 + ["techno"]}
    albums = {}
    for a, (album, genres) in enumerate(plans.items()):
        paths = []
        for t, genre in enumerate(genres):
            path = folder / f"{album}_{t}.flac"
            write_audio(path, synth_track(genre, seed=7000 + 10 * a + t, seconds=4.0), SR)
            tag(path, artist=f"{album} Artist", title=f"{album} {t + 1}")
            paths.append(path)
        albums[album] = paths
    return albums


class AlbumHelper(PluginTestHelper):
    plugin = "cnngenre"

    @pytest.fixture(autouse=True)
    def _no_tag_writes(self):
        self.config["import"]["write"] = False

    def add_album(self, name, paths, artist=None, genres=None, comp=False):
        items = []
        for number, source in enumerate(paths, 1):
            path = os.path.join(str(self.temp_path), "in", name, os.path.basename(source))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            shutil.copy(source, path)
            item = Item.from_path(path)
            item.update({"album": name, "albumartist": artist or f"{name} Artist", "track": number,
                         "genres": list(genres or []), "comp": comp})
            items.append(item)
        return self.lib.add_album(items)


class TestAlbumFields(AlbumHelper):
    def test_albums_get_their_own_prediction_and_can_be_queried(self, album_tracks, scratch_model_path, capsys):
        self.config["cnngenre"]["model"] = scratch_model_path
        albums = {name: self.add_album(name, paths) for name, paths in album_tracks.items()}
        self.run_command("cnngenre", "-a", "-j", "1")
        out = capsys.readouterr().out
        assert "changed 12 items and 3 albums" in out
        for album in albums.values():
            album = self.lib.get_album(album.id)
            assert album.cnn_album_genre and 0 < album.cnn_album_genre_score <= 1
            assert album.cnn_album_genres[0] == album.cnn_album_genre
            assert album.cnn_album_model.startswith("scratch-")
            assert all(item.cnn_model == album.cnn_album_model for item in album.items())
        genre = self.lib.get_album(albums["Beats"].id).cnn_album_genre
        found = {a.id for a in self.lib.albums(f"cnn_album_genre:{genre}")}
        assert albums["Beats"].id in found
        assert {a.id for a in self.lib.albums("cnn_album_genre_score:0.0..")} == {a.id for a in albums.values()}

    def test_album_mode_matches_albums_and_item_mode_matches_items(self, album_tracks, scratch_model_path, capsys):
        self.config["cnngenre"]["model"] = scratch_model_path
        beats = self.add_album("Beats", album_tracks["Beats"])
        self.add_album("Drift", album_tracks["Drift"])
        self.run_command("cnngenre", "-a", "-j", "1", "album:Beats")
        assert "predicted 4," in capsys.readouterr().out
        assert not any(item.get("cnn_model") for item in self.lib.items("album:Drift"))
        self.run_command("cnngenre", "-j", "1", "title:Drift 1")
        assert "predicted 1," in capsys.readouterr().out
        assert self.lib.get_album(beats.id).cnn_album_genre


    def test_a_track_added_to_a_predicted_album_is_predicted_and_a_rerun_stores_nothing(
            self, album_tracks, scratch_model_path, capsys, monkeypatch):
        self.config["cnngenre"]["model"] = scratch_model_path
        album = self.add_album("Beats", album_tracks["Beats"][:3])
        self.run_command("cnngenre", "-a", "-j", "1")
        assert self.lib.get_album(album.id).cnn_album_model
        # the new track has no cnn_model of its own; its album's must not count as the track's
        late = Item.from_path(str(album_tracks["Beats"][3]))
        late.update({"album": "Beats", "albumartist": "Beats Artist", "track": 4, "album_id": album.id})
        self.lib.add(late)
        capsys.readouterr()
        self.run_command("cnngenre", "-j", "1")
        assert "predicted 1, skipped 3" in capsys.readouterr().out
        assert self.lib.get_item(late.id).get("cnn_model", with_album=False)

        from beetsplug.cnngenre import storage
        stored = []
        monkeypatch.setattr(storage.Batch, "store_album", lambda self, album, *args: stored.append(album.id))
        self.run_command("cnngenre", "-j", "1")
        assert "predicted 0, skipped 4" in capsys.readouterr().out
        assert stored == []


class TestSortingIntoGenreFolders(AlbumHelper):
    def test_every_album_lands_in_one_folder_singletons_and_compilations_by_their_own(
            self, album_tracks, library_files, scratch_model_path):
        self.config["cnngenre"]["model"] = scratch_model_path
        self.config["paths"] = PATHS
        albums = [self.add_album(name, paths) for name, paths in album_tracks.items()]
        comp = self.add_album("Mix", [p for paths in album_tracks.values() for p in paths[2:4]],
                              artist="Various Artists", comp=True)
        single_path = self.temp_path / "single.flac"
        shutil.copy(library_files[9][0], single_path)
        single = Item.from_path(str(single_path))
        self.lib.add(single)
        self.run_command("cnngenre", "-j", "2")
        disagreeing = 0
        for album in albums:
            album = self.lib.get_album(album.id)
            disagreeing += sum(item.cnn_genre != album.cnn_album_genre for item in album.items())
        assert disagreeing, "no track disagrees with its album: the test would show nothing"
        self.run_command("move")
        root = self.lib.directory.decode()
        for album in albums:
            album = self.lib.get_album(album.id)
            folders = {os.path.relpath(item.filepath, root).split(os.sep)[0] for item in album.items()}
            assert folders == {album.cnn_album_genre}, (album.album, folders)
        for item in self.lib.get_album(comp.id).items():
            assert os.path.relpath(item.filepath, root).split(os.sep)[0] == item.cnn_genre
        single = self.lib.get_item(single.id)
        assert os.path.relpath(single.filepath, root).split(os.sep)[:2] == [single.cnn_genre, "Non-Album"]

    def test_unpredicted_items_sort_into_the_fallback_folder(self, album_tracks):
        self.config["paths"] = PATHS
        album = self.add_album("Beats", album_tracks["Beats"])
        self.run_command("move")
        root = self.lib.directory.decode()
        assert {os.path.relpath(i.filepath, root).split(os.sep)[0] for i in album.items()} == {"Unsorted"}


class TestAppliedGenres(AlbumHelper):
    def test_album_genres_go_to_the_album_and_its_items_never_overwriting(self, album_tracks, scratch_model_path,
                                                                          capsys):
        self.config["cnngenre"]["model"] = scratch_model_path
        self.config["cnngenre"]["threshold"] = 0.0
        empty = self.add_album("Beats", album_tracks["Beats"])
        tagged = self.add_album("Drift", album_tracks["Drift"], genres=["My Own"])
        self.run_command("cnngenre", "-a", "-g", "-j", "1")
        empty, tagged = self.lib.get_album(empty.id), self.lib.get_album(tagged.id)
        assert list(empty.genres) and list(empty.cnn_album_applied) == list(empty.genres)
        assert list(empty.genres)[0].lower() == empty.cnn_album_genre
        assert all(list(item.genres) == list(empty.genres) for item in empty.items())
        assert all(list(item.cnn_applied) == list(empty.genres) for item in empty.items())
        assert list(tagged.genres) == ["My Own"] and all(list(i.genres) == ["My Own"] for i in tagged.items())
        assert "applied genres to 5" in capsys.readouterr().out  # the album and its 4 tracks
        self.run_command("cnngenre", "-a", "-g", "-f", "-j", "1")
        assert list(self.lib.get_album(tagged.id).genres) != ["My Own"]  # -f replaces

    def test_applied_genres_are_spelled_as_the_library_spells_them(self, library_files, scratch_model_path):
        from genre_cnn_core import GenreModel

        model = GenreModel.load(scratch_model_path)
        self.config["cnngenre"]["model"] = scratch_model_path
        self.config["cnngenre"]["threshold"] = 0.0
        item = Item.from_path(str(library_files[0][0]))
        item.genres = []
        self.lib.add(item)
        self.run_command("cnngenre", "-g", "-j", "1")
        item = self.lib.get_item(item.id)
        spelling = dict(zip(model.genres, model.spellings))
        assert list(item.genres) == [spelling[g] for g in item.cnn_genres]

    @needs_torch  # trains the scratch CNN
    def test_genres_cnngenre_applied_are_not_learned_from(self, library_files, capsys):
        for path, _ in library_files:
            item = Item.from_path(str(path))
            item.cnn_applied = list(item.genres)  # as if cnngenre had filled them
            self.lib.add(item)
        from beets.ui import UserError

        with pytest.raises(UserError, match="no items with genres to train on"):
            self.run_command("cnngenre", "-t", "-b", "scratch", "-m", "4", "-e", "1", "-j", "1")
        self.config["cnngenre"]["train_on_applied"] = True
        self.run_command("cnngenre", "-t", "-p", "-b", "scratch", "-m", "4", "-e", "1", "-j", "1")
        assert "not saved (-p)" in capsys.readouterr().out


class TestChangeLines(AlbumHelper):
    def test_pretend_prints_exactly_the_lines_a_real_run_changes(self, album_tracks, scratch_model_path, capsys):
        self.config["cnngenre"]["model"] = scratch_model_path
        self.config["cnngenre"]["threshold"] = 0.0
        self.add_album("Beats", album_tracks["Beats"])
        self.add_album("Drift", album_tracks["Drift"], genres=["Kept"])
        before = [dict(item) for item in self.lib.items()]
        self.run_command("cnngenre", "-a", "-g", "-p", "-j", "1")
        pretend = capsys.readouterr().out.splitlines()
        assert [dict(item) for item in self.lib.items()] == before
        self.run_command("cnngenre", "-a", "-g", "-j", "1")
        real = capsys.readouterr().out.splitlines()
        # 8 items, 4 of them given their album's genres too, 2 albums, the summary
        assert pretend[:-1] == real[:-1] and len(real) == 8 + 4 + 2 + 1
        assert sum(line.endswith("(from its album)") for line in real) == 4
        assert pretend[-1].startswith("cnngenre: would change 8 items and 2 albums, applied genres to 5")
        assert real[-1].startswith("cnngenre: changed 8 items and 2 albums, applied genres to 5")
        assert all(" -> " in line for line in real[:-1])
        assert any(line.startswith("Beats Artist - Beats (album): ") and "genres (none) -> " in line for line in real)

    def test_a_run_that_changes_nothing_prints_no_change_lines_and_nothing_matched_says_so(
            self, album_tracks, scratch_model_path, capsys):
        self.config["cnngenre"]["model"] = scratch_model_path
        self.add_album("Beats", album_tracks["Beats"])
        self.run_command("cnngenre", "-j", "1")
        capsys.readouterr()
        self.run_command("cnngenre", "-f", "-j", "1")
        out = capsys.readouterr().out.splitlines()
        assert len(out) == 1 and "changed 0 items and 0 albums" in out[0] and "predicted 4" in out[0]
        self.run_command("cnngenre", "-j", "1", "title:nothing-like-this")
        assert capsys.readouterr().out.strip() == "cnngenre: nothing matched"

    def test_items_without_tags_are_named_by_their_path(self, library_files, scratch_model_path, tmp_path, capsys):
        self.config["cnngenre"]["model"] = scratch_model_path
        path = tmp_path / "untagged.wav"
        write_audio(path, synth_track("techno", 3), SR)
        self.lib.add(Item(path=str(path)))
        self.run_command("cnngenre", "-p", "-j", "1")
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].startswith(f"{path}: cnn_genre (none) -> ")
