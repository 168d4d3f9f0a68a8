"""cnngenre inside beets' data model (issue 21): an item shows its own prediction, albums from all their
predicted tracks, `beet modify FIELD!`, `--remove`, `-g` on items and albums, and the messages on the way.

These run the real commands on the default model shipped in the package: what they check is where
values go, not how good they are.
"""

import os
import shutil
import sqlite3

import confuse
import mediafile
import mutagen
import pytest
from beets.library import Item
from beets.test.helper import PluginTestHelper
from beets.ui import UserError

import genre_cnn_core
from beetsplug.cnngenre.fields import ALBUM_FIELDS, ITEM_FIELDS
from genre_cnn_core import genre_key

from synth import synth_track, write_audio

SR = 22050
PREDICTION = ("cnn_genre", "cnn_genre_score", "cnn_genres", "cnn_scores", "cnn_model")
ALBUM_PREDICTION = tuple(name.replace("cnn_", "cnn_album_") for name in PREDICTION)


@pytest.fixture(scope="module")
def tracks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("datamodel")
    paths = []
    for n, genre in enumerate(["techno", "techno", "ambient", "chiptune"]):
        path = folder / f"track{n}.flac"
        write_audio(path, synth_track(genre, seed=900 + n, seconds=3.0), SR)
        paths.append(path)
    return paths


class Helper(PluginTestHelper):
    plugin = "cnngenre"

    @pytest.fixture(autouse=True)
    def _setup(self):
        self.config["import"]["write"] = False
        self.config["cnngenre"]["jobs"] = 1
        self.config["cnngenre"]["threshold"] = 0.0  # every prediction clears it: -g always has genres to apply

    def add_album(self, paths, name="Album", genres=()):
        items = []
        for number, source in enumerate(paths, 1):
            path = os.path.join(str(self.temp_path), "in", name, f"{number}.flac")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            shutil.copy(source, path)
            item = Item.from_path(path)
            item.update({"album": name, "albumartist": f"{name} Artist", "artist": f"{name} Artist",
                         "title": f"{name} {number}", "track": number, "genres": list(genres)})
            items.append(item)
        return self.lib.add_album(items)

    def item(self, title):
        return next(iter(self.lib.items(f"title:{title}")))

    def out(self, capsys, *args):
        capsys.readouterr()
        self.run_command("cnngenre", *args)
        return capsys.readouterr().out


def own(item, name):
    return item.get(name, with_album=False)


class TestWhatAnItemShows(Helper):
    def test_a_failing_track_shows_and_matches_nothing_of_its_album(self, tracks, capsys):
        album = self.add_album(tracks[:3])
        broken = self.item("Album 3")
        with open(broken.path, "wb") as file:
            file.write(b"not audio" * 100)
        out = self.out(capsys)
        assert "changed 2 items and 1 albums" in out and "failed 1" in out
        assert "(from 2 of its 3 tracks)" in out
        broken = self.lib.get_item(broken.id)
        assert all(broken.get(name) is None for name in PREDICTION)  # not even through its album
        assert broken.evaluate_template("$cnn_genre") == "$cnn_genre"
        album = self.lib.get_album(album.id)
        assert broken.evaluate_template("$cnn_album_genre") == album.cnn_album_genre  # the album's, by its name
        genre = album.cnn_album_genre
        assert broken.id not in {i.id for i in self.lib.items("cnn_genre::.")}
        assert broken.id not in {i.id for i in self.lib.items(f"cnn_genre:{genre}")}
        assert {i.id for i in self.lib.items(f"cnn_album_genre:{genre}")} == {i.id for i in album.items()}
        assert {a.id for a in self.lib.albums(f"cnn_album_genre:{genre}")} == {album.id}

    def test_a_partial_album_run_updates_the_album_from_all_its_predicted_tracks_and_says_so(self, tracks,
                                                                                              capsys):
        album = self.add_album(tracks[:3])
        out = self.out(capsys, "title:Album 1")
        assert "Album Artist - Album (album): " in out and "(from 1 of its 3 tracks)" in out
        assert not any(own(self.item(t), "cnn_genre") or self.item(t).get("cnn_genre")
                       for t in ("Album 2", "Album 3"))
        self.run_command("cnngenre", "title:Album 2")
        out = self.out(capsys, "-p", "-f", "title:Album 3")
        assert "(from 3 of its 3 tracks, 2 of them predicted before)" in out or "(album)" not in out
        self.run_command("cnngenre", "title:Album 3")
        from beetsplug.cnngenre.fields import stored_scores
        from genre_cnn_core import album_scores

        expected = album_scores([stored_scores(item) for item in self.lib.get_album(album.id).items()])
        album = self.lib.get_album(album.id)
        best = max(expected, key=expected.get)
        assert album.cnn_album_genre == best and album.cnn_album_genre_score == pytest.approx(expected[best], abs=1e-4)

    def test_album_consensus_uses_only_checked_numbers(self, tracks, capsys, caplog):
        album = self.add_album(tracks[:3])
        self.run_command("cnngenre")
        for title, text in (("Album 1", "blues inf"), ("Album 2", "blues 1e308"), ("Album 3", "blues -5")):
            item = self.item(title)
            item.cnn_scores = [text]
            item.store()
        capsys.readouterr()
        self.run_command("modify", "-y", "-a", "album:Album", "cnn_album_genre!")
        self.out(capsys, "-a")
        assert caplog.text.count("left out of its album's prediction") == 3
        album = self.lib.get_album(album.id)
        assert album.get("cnn_album_genre") is None  # no track left to count
        item = self.item("Album 1")
        item.cnn_scores = ["blues 0.2500", "jazz 0.7500"]
        item.store()
        self.run_command("cnngenre", "-a")
        album = self.lib.get_album(album.id)
        assert album.cnn_album_genre == "jazz" and album.cnn_album_genre_score == 0.75

    def test_list_fields_are_queried_as_beets_queries_lists(self, tracks):
        self.add_album(tracks[:2])
        self.run_command("cnngenre")
        item = self.item("Album 1")
        item.cnn_genres = ["jazz", "soul music"]
        item.store()
        for query in ("cnn_genres:=jazz", "cnn_genres:=soul music", "cnn_genres:soul", "cnn_genres::^jazz"):
            assert [i.id for i in self.lib.items([query])] == [item.id], query
        assert not list(self.lib.items(["cnn_genres:=soul"])) and not list(self.lib.items(["cnn_genres:=music"]))
        assert list(self.lib.get_item(item.id).cnn_genres) == ["jazz", "soul music"]

    def test_sort_genre_on_albums_and_tracks(self, tracks):
        album = self.add_album(tracks[:2])
        self.run_command("cnngenre")
        album = self.lib.get_album(album.id)
        assert album.evaluate_template("$cnn_sort_genre") == album.cnn_album_genre
        assert all(item.evaluate_template("$cnn_sort_genre") == album.cnn_album_genre for item in album.items())

    def test_albums_of_earlier_versions_are_upgraded_once_and_it_is_said(self, tracks, capsys, caplog):
        album = self.add_album(tracks[:2])
        self.run_command("cnngenre")
        album = self.lib.get_album(album.id)
        old = {name: album[name.replace("cnn_", "cnn_album_")] for name in PREDICTION}
        for name, value in old.items():  # as 0.2 stored them: the items' names on the album
            album[name] = value
            del album[name.replace("cnn_", "cnn_album_")]
        album.store(inherit=False)
        caplog.clear()
        self.out(capsys, "-p")
        assert "upgraded 1 albums" in caplog.text
        album = self.lib.get_album(album.id)
        assert all(name not in album for name in PREDICTION)
        assert {name: album[name.replace("cnn_", "cnn_album_")] for name in PREDICTION} == old
        caplog.clear()
        self.out(capsys, "-p")
        assert "upgraded" not in caplog.text


class TestEditing(Helper):
    def test_modify_deletes_every_field_of_items_and_albums(self, tracks):
        album = self.add_album(tracks[:2])
        self.run_command("cnngenre", "-g")
        item = self.item("Album 1")
        extra = {"cnn_replaced": ["Rock"], "cnn_suspect": 0.5, "cnn_error": "x", "cnn_write_pending": True,
                 "cnn_applied": ["Techno"]}
        item.update(extra)
        item.store()
        album = self.lib.get_album(album.id)
        album.update({"cnn_album_applied": ["Techno"], "cnn_album_replaced": ["Rock"], "cnn_album_suspect": 0.5})
        album.store(inherit=False)
        for name in ITEM_FIELDS:
            assert own(self.item("Album 1"), name) is not None, name
            self.run_command("modify", "-y", "title:Album 1", f"{name}!")
            assert own(self.item("Album 1"), name) is None, name
        for name in ALBUM_FIELDS:
            assert self.lib.get_album(album.id).get(name) is not None, name
            self.run_command("modify", "-y", "-a", "album:Album", f"{name}!")
            assert self.lib.get_album(album.id).get(name) is None, name

    def test_a_deleted_prediction_is_predicted_again(self, tracks, capsys):
        self.add_album(tracks[:2])
        self.run_command("cnngenre")
        for name in PREDICTION:
            self.run_command("modify", "-y", "title:Album 1", f"{name}!")
            out = self.out(capsys)
            assert "predicted 1, skipped 1" in out, name
            assert all(own(self.item("Album 1"), n) is not None for n in PREDICTION)


class TestApplyGenres(Helper):
    def test_g_applies_to_items_predicted_before_without_predicting_again(self, tracks, capsys):
        self.add_album(tracks[:2], genres=())
        self.run_command("cnngenre")
        out = self.out(capsys, "-g")
        assert "predicted 0, skipped 2" in out and "applied genres to 2" in out
        for item in self.lib.items():
            assert [genre_key(g) for g in item.genres] == [genre_key(g) for g in item.cnn_genres]
            assert list(item.cnn_applied) == list(item.genres)

    def test_existing_genres_are_kept_replaced_or_merged_like_lastgenre(self, tracks, capsys):
        self.add_album(tracks[:1], genres=["My Own"])
        self.run_command("cnngenre")
        assert "applied genres to 0" in self.out(capsys, "-g")
        assert list(self.item("Album 1").genres) == ["My Own"]
        self.out(capsys, "-g", "-f", "-k")
        item = self.item("Album 1")
        assert list(item.genres)[0] == "My Own" and len(item.genres) > 1
        assert "My Own" not in item.cnn_applied and list(item.cnn_replaced) == ["My Own"]
        self.out(capsys, "-g", "-f", "-K")
        item = self.item("Album 1")
        assert "My Own" not in item.genres and list(item.cnn_replaced) == ["My Own"]

    def test_no_force_on_the_command_line_overrides_force_yes(self, tracks, capsys):
        self.add_album(tracks[:1], genres=["My Own"])
        self.config["cnngenre"]["force"] = True
        self.run_command("cnngenre")
        out = self.out(capsys, "-g", "-F")
        assert "predicted 0, skipped 1" in out and list(self.item("Album 1").genres) == ["My Own"]

    def test_album_genres_reach_its_tracks_with_a_line_for_each(self, tracks, capsys):
        album = self.add_album(tracks[:3])
        self.run_command("cnngenre")
        out = self.out(capsys, "-a", "-g")
        assert "changed 3 items and 1 albums, applied genres to 4" in out
        assert out.count("(from its album)") == 3
        album = self.lib.get_album(album.id)
        assert all(list(item.genres) == list(album.genres) for item in album.items())
        assert "changed 0 items and 0 albums" in self.out(capsys, "-a", "-g")


class TestRemove(Helper):
    def test_remove_after_g_restores_genres_and_removes_fields_and_file_tags(self, tracks, capsys):
        album = self.add_album(tracks[:3])
        kept = self.item("Album 3")
        kept.genres = ["Rock"]
        kept.store()
        self.run_command("cnngenre", "-a", "-g", "-f", "-w")
        changed = self.item("Album 2")  # the user edits this one's genres after -g
        changed.genres = ["Mine"]
        changed.store()
        assert mediafile.MediaFile(self.item("Album 1").path).cnn_genre
        before = {item.id: dict(item) for item in self.lib.items()}
        pretend = self.out(capsys, "--remove", "-a", "-p", "-w")
        assert {item.id: dict(item) for item in self.lib.items()} == before
        out = self.out(capsys, "--remove", "-a", "-w")
        assert out.splitlines()[:-1] == pretend.splitlines()[:-1]
        assert "took back cnngenre's fields from 3 items and 1 albums" in out
        assert "kept genres you changed since -g applied them on 1" in out
        assert list(self.item("Album 1").genres) == [] and list(self.item("Album 3").genres) == ["Rock"]
        assert list(self.item("Album 2").genres) == ["Mine"]
        for item in self.lib.items():
            assert not [k for k in item.keys(with_album=False) if k.startswith("cnn_")]
            tags = mutagen.File(item.path)
            assert "cnn_genre" not in tags and "cnn_genre_score" not in tags
            assert list(mediafile.MediaFile(item.path).genres or []) == list(item.genres)
        assert not [k for k in self.lib.get_album(album.id).keys() if k.startswith("cnn_")]

    def test_remove_of_items_only_touches_the_matched_items(self, tracks, capsys):
        self.add_album(tracks[:2])
        self.run_command("cnngenre")
        out = self.out(capsys, "--remove", "title:Album 1")
        assert "from 1 items and 0 albums" in out
        assert own(self.item("Album 1"), "cnn_genre") is None and own(self.item("Album 2"), "cnn_genre")


class TestSuspects(Helper):
    def test_suspects_after_a_deleted_genre_on_an_album_track(self, tracks, capsys):
        self.add_album(tracks[:3], genres=["Jazz"])
        album = next(iter(self.lib.albums()))
        album.genres = ["Jazz"]
        album.store(inherit=False)
        self.run_command("modify", "-y", "title:Album 2", "genres!")
        self.run_command("cnngenre", "--suspects", "-a")
        out = self.out(capsys, "--suspects")
        assert "judged items" in out and "1 (no genres)" in out
        assert own(self.item("Album 2"), "cnn_suspect") is None


class TestMessages(Helper):
    def test_unknown_key_unset_variable_and_missing_files_are_configuration_errors(self, tracks):
        self.config["cnngenre"]["threshhold"] = 0.4
        with pytest.raises(confuse.ConfigError, match=r"cnngenre.threshhold: .*did you mean threshold"):
            self.run_command("cnngenre", "-p")

    def test_cache_dir_with_an_unset_variable(self, tmp_path):
        self.config["cnngenre"]["cache_dir"] = "${UNDEFINED_FOR_CNNGENRE}/c"
        with pytest.raises(confuse.ConfigError, match=r"cache_dir: .*UNDEFINED_FOR_CNNGENRE is not"):
            self.run_command("cnngenre", "-p")
        assert not os.path.exists(os.path.join(self.config.config_dir(), "${UNDEFINED_FOR_CNNGENRE}"))

    @pytest.mark.parametrize("key", ["whitelist", "canonical"])
    def test_a_missing_taxonomy_file_is_an_error_for_every_command(self, key):
        self.config["cnngenre"][key] = "nofile.txt"
        with pytest.raises(confuse.ConfigError, match=f"cnngenre.{key}: .*does not"):
            self.run_command("cnngenre", "-p")

    def test_a_bad_option_is_named_as_the_option(self):
        with pytest.raises(UserError, match="cnngenre: --device: must be"):
            self.run_command("cnngenre", "--device", "gpu")

    def test_prune_cache_pretend_deletes_nothing_and_a_query_is_refused(self, tracks, capsys):
        self.add_album(tracks[:2])
        self.run_command("cnngenre")
        self.run_command("remove", "-f", "title:Album 1")
        cache = os.path.join(self.config.config_dir(), "cnngenre", "cache")
        files = sorted(os.path.join(d, f) for d, _, names in os.walk(cache) for f in names)
        out = self.out(capsys, "--prune-cache", "-p")
        assert "would remove 1 cached entries" in out
        assert sorted(os.path.join(d, f) for d, _, names in os.walk(cache) for f in names) == files
        with pytest.raises(UserError, match="takes no query"):
            self.run_command("cnngenre", "--prune-cache", "album:Album")

    def test_an_interrupted_forced_run_does_not_promise_to_continue(self, tracks, capsys, monkeypatch):
        self.add_album(tracks[:2])
        real = genre_cnn_core.predict_files

        def interrupted(*args, **kwargs):
            for n, result in enumerate(real(*args, **kwargs)):
                if n:
                    raise KeyboardInterrupt
                yield result

        monkeypatch.setattr(genre_cnn_core, "predict_files", interrupted)
        with pytest.raises(SystemExit):
            self.run_command("cnngenre", "-f")
        out = capsys.readouterr().out
        assert "interrupted after 1 of 2 items" in out and "without -f continues" in out

    def test_change_lines_round_like_the_stored_score(self, tracks, capsys):
        self.add_album(tracks[:2])
        out = self.out(capsys)
        for item in self.lib.items():
            shown = f"{item.cnn_genre_score:.2f}"
            line = next(line for line in out.splitlines() if line.startswith(f"Album Artist - {item.title}:"))
            assert f"cnn_genre_score (none) -> {shown}" in line and f"{item.cnn_genre} {shown}" in line

    def test_usage_names_the_query(self, capsys):
        with pytest.raises(SystemExit):
            self.run_command("cnngenre", "--no-such-option")
        assert "Usage: beet cnngenre [options] [QUERY]" in capsys.readouterr().err

    def test_only_stored_changes_are_printed_on_a_full_disk(self, tracks, capsys, monkeypatch):
        self.add_album(tracks[:2])

        def full(self, *args, **kwargs):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(Item, "store", full)
        with pytest.raises(UserError, match="cannot write the library database"):
            self.run_command("cnngenre")
        out = capsys.readouterr().out
        assert " -> " not in out

    def test_an_import_that_cannot_predict_says_why_with_one_prefix(self, tracks, caplog):
        from types import SimpleNamespace

        from beets.plugins import find_plugins

        album = self.add_album(tracks[:1])
        self.config["cnngenre"]["device"] = "cuda:97"  # no such device here
        plugin = next(p for p in find_plugins() if p.name == "cnngenre")
        task = SimpleNamespace(is_album=False, imported_items=lambda: list(album.items()))
        plugin.imported(SimpleNamespace(lib=self.lib), task)
        warning = next(r.getMessage() for r in caplog.records if "not tagging on import" in r.getMessage())
        # beets' plugin logger puts "cnngenre: " in front of the message itself
        # without PyTorch the reason is the missing extra, with it the missing device
        assert warning.startswith("not tagging on import: ") and "cnngenre:" not in warning
        assert "cuda:97" in warning
