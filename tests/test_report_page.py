"""The library's report page (`beet cnngenre --report`): every matched item once, counts that match the
library, nothing loaded from the network, a missing extra said in one line."""

import os
import re
import sys
from html.parser import HTMLParser

import numpy as np
import pytest
from beets import ui
from beets.library import Item
from beets.test.helper import PluginTestHelper

from genre_cnn_core.library_report import (
    build_page,
    page_data,
    plotly_js,
    project,
    split_albums,
    summarise,
    track_vector,
)

URL = re.compile(r"(?:[a-z][a-z0-9+.-]*:)?//[^\s\"'<>]+", re.IGNORECASE)
MODEL = {"id": "musicnn-0123456789", "backbone": "musicnn", "genres": ["jazz", "rock"], "trained_at": None,
         "train_tracks": 0, "heldout_tracks": 0, "tracks_per_genre": {}, "from_children": {}, "validation": None,
         "name": None}


class Attributes(HTMLParser):
    """Every attribute value and every style text of a page."""

    def __init__(self):
        super().__init__()
        self.values, self.styles, self._in_style = [], [], False

    def handle_starttag(self, tag, attrs):
        self.values += [value or "" for _, value in attrs]
        self._in_style = tag == "style"

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)

    def handle_endtag(self, tag):
        self._in_style = False


def assert_loads_nothing(page: str) -> None:
    """Nothing in the page but plotly's own bundle names a URL; no attribute or style points anywhere; and
    its content security policy forbids every load, so the bundle's strings (map tiles, licence headers)
    could not be fetched either."""
    bundle = plotly_js().replace("</script", "<\\/script")
    assert page.count(bundle) == 1
    own = page.replace(bundle, "")
    assert URL.findall(own) == []
    parser = Attributes()
    parser.feed(page)
    assert not [v for v in parser.values if URL.search(v) or v.strip().lower().startswith(("http", "javascript:"))
                and "Content-Security-Policy" not in v]
    assert not any("url(" in style or "@import" in style for style in parser.styles)
    assert "default-src 'none'" in own


def track(number, album=None, tagged=(), known=(), predicted=(), suspect=None, model=MODEL["id"]):
    predicted = list(predicted)
    return {"id": number, "title": f"title {number}", "artist": f"artist {number % 3}", "album": album or "",
            "album_key": album, "tagged": list(tagged), "tagged_known": list(known),
            "tagged_unknown": [g for g in tagged if g.lower() not in known], "predicted": predicted,
            "genres": [g for g, p in predicted if p >= 0.5] or [g for g, _ in predicted[:1]],
            "primary": predicted[0][0] if predicted else None, "model": model if predicted else None,
            "suspect": suspect}


def small_library():
    """12 tracks: an album that agrees, an album that splits, singletons (one far from any genre), an
    unpredicted track, one without features, one tagged with a genre the model does not know."""
    tracks = [
        *(track(i, 1, ["Jazz"], ["jazz"], [("jazz", 0.9), ("rock", 0.1)]) for i in range(3)),
        track(3, 2, ["Rock"], ["rock"], [("rock", 0.8), ("jazz", 0.3)]),
        track(4, 2, ["Rock"], ["rock"], [("jazz", 0.7), ("rock", 0.4)], suspect=0.95),
        track(5, 2, ["Rock"], ["rock"], [("jazz", 0.6), ("rock", 0.5)]),
        track(6, 2, ["Rock"], ["rock"], [("rock", 0.9)]),
        track(7, None, ["Polka"], [], [("rock", 0.2), ("jazz", 0.1)]),
        track(8, None, [], [], [("jazz", 0.8)]),
        track(9, None, ["Jazz", "Rock"], ["jazz", "rock"], []),
        track(10, None, ["Jazz"], ["jazz"], [("jazz", 0.7)], model="musicnn-older"),
        track(11, None, ["Rock"], ["rock"], [("rock", 0.99)]),
    ]
    rng = np.random.default_rng(0)
    vectors = [rng.normal(size=8).astype(np.float32) for _ in tracks]
    vectors[11] = None
    return tracks, vectors


# ------------------------------------------------------------------ core


def test_page_holds_every_track_once_with_counts_that_match():
    tracks, vectors = small_library()
    page, figures = build_page(tracks, vectors, MODEL, title="everything")
    data = page_data(page)
    assert data["tracks"]["id"] == [t["id"] for t in tracks]
    assert [x is None for x in data["tracks"]["x"]] == [v is None for v in vectors]
    assert data["figures"] == figures  # plain JSON data
    assert figures["counts"] == {"matched": 12, "on_map": 11, "without_features": 1, "predicted": 11,
                                 "not_predicted": 1, "predicted_by_other_model": 1,
                                 "not_predicted_without_features": 0, "tagged": 11, "suspects": 1, "albums": 2,
                                 "singletons": 5}
    assert figures["per_genre"] == [["jazz", 5, 7], ["rock", 6, 5]]
    matrix = figures["matrix"]
    cells = {(matrix["rows"][r], matrix["columns"][c]): members for r, c, members in matrix["cells"]}
    assert cells[("jazz", "jazz")] == [0, 1, 2, 10]
    assert cells[("rock", "jazz")] == [4, 5]
    assert cells[("(other genres)", "rock")] == [7]
    assert cells[("(no genre tag)", "jazz")] == [8]
    assert cells[("jazz", "(not predicted)")] == [9] and cells[("rock", "(not predicted)")] == [9]
    assert sorted(p for members in cells.values() for p in members) == sorted(
        [p for p, t in enumerate(tracks) for _ in (t["tagged_known"] or [None])])
    assert [a["album_key"] for a in figures["split_albums"]] == [2]
    assert figures["split_albums"][0]["split"] == [["rock", 2], ["jazz", 2]]
    assert figures["far_singletons"] == [[7, 0.2]]
    assert figures["unjudged_genres"] == [["Polka", 1]]
    assert_loads_nothing(page)


def test_tags_cannot_break_out_of_the_page():
    tracks, vectors = small_library()
    tracks[0]["title"] = "</script><script>alert(1)</script>"
    tracks[1]["album"] = "<img src=https://example.com/x.png>"
    page, _ = build_page(tracks, vectors, MODEL, title="</title><b>query</b>")
    assert "alert(1)" in page and "<script>alert" not in page and "<img src=https" not in page
    assert "<b>query</b>" not in page
    assert page_data(page)["tracks"]["title"][0] == "</script><script>alert(1)</script>"


def test_albums_split_only_when_no_genre_has_more_than_half():
    tracks, _ = small_library()
    tracks[5]["primary"] = "rock"  # album 2 now 3 rock, 1 jazz
    assert split_albums(tracks) == []


def test_projection_separates_what_differs_and_repeats_itself():
    rng = np.random.default_rng(1)
    blobs = np.concatenate([rng.normal(0, 1, (300, 40)), rng.normal(0, 1, (300, 40)) + 6]).astype(np.float32)
    placed = project(blobs)
    assert placed.shape == (600, 2) and placed.dtype == np.float32
    first = placed[:, 0]
    assert min(first[:300].max(), first[300:].max()) < max(first[:300].min(), first[300:].min())
    np.testing.assert_array_equal(project(blobs), placed)
    assert np.abs(project(blobs[:, :1].repeat(3, axis=1))[:, 1]).max() < 1e-3  # one direction varies
    assert project(blobs[:2]).shape == (2, 2)


def test_scratch_features_become_one_vector_per_track():
    excerpts = np.random.default_rng(2).random((3, 16, 50)).astype(np.float16)
    vector = track_vector(excerpts)
    assert vector.shape == (32,)
    np.testing.assert_allclose(vector[:16], excerpts.astype(np.float32).transpose(1, 0, 2).reshape(16, -1).mean(1),
                               rtol=1e-5)


def test_summary_without_tracks_is_empty():
    figures = summarise([], [], MODEL)
    assert figures["counts"]["matched"] == 0 and figures["split_albums"] == [] and figures["matrix"]["cells"] == []


# ------------------------------------------------------------------ through beets


class TestReportCommand(PluginTestHelper):
    plugin = "cnngenre"

    @pytest.fixture(autouse=True)
    def _no_tag_writes(self):
        self.config["import"]["write"] = False

    def library(self, library_files, heldout_files):
        """An album of 4 tracks per genre and singletons; two more items, untagged, whose audio nothing has read."""
        items = []
        for genre in {g for _, g in library_files}:
            paths = [path for path, g in library_files if g == genre]
            album = []
            for path in paths[:4]:
                item = Item.from_path(str(path))
                item.update({"genres": [genre], "album": f"{genre} album", "albumartist": f"{genre} band"})
                album.append(item)
            self.lib.add_album(album)
            items += album
            for path in paths[4:]:
                item = Item.from_path(str(path))
                item.genres = [genre]
                self.lib.add(item)
                items.append(item)
        fresh = []
        for path, _ in heldout_files[:2]:
            item = Item.from_path(str(path))
            item.genres = []
            self.lib.add(item)
            fresh.append(item)
        return items, fresh

    def test_report_counts_every_item_and_predicts_nothing_unless_asked(self, library_files, heldout_files,
                                                                     tmp_path, capsys, monkeypatch):
        items, fresh = self.library(library_files, heldout_files)
        self.run_command("cnngenre", "-t", "-m", "4", "-j", "1")  # caches the features of the tagged items
        self.run_command("cnngenre", "-j", "1", "genres::.")  # predicts them, not the two fresh items
        self.run_command("cnngenre", "--suspects", "-j", "1")
        capsys.readouterr()
        page_file = tmp_path / "page.html"

        self.run_command("cnngenre", "--report", str(page_file))
        out = capsys.readouterr().out
        assert f"wrote {page_file} (" in out and ("26 tracks, 24 on the map, 2 without cached features, "
                                                  "2 not predicted") in out
        assert "--report --predict" in out
        data = page_data(page_file.read_text(encoding="utf-8"))
        ids = data["tracks"]["id"]
        assert sorted(ids) == sorted(item.id for item in self.lib.items()) and len(set(ids)) == len(ids)
        counts = data["figures"]["counts"]
        assert counts["matched"] == len(self.lib.items()) == 26
        assert counts["albums"] == len(self.lib.albums()) == 3 and counts["singletons"] == 14
        assert counts["predicted"] == len(self.lib.items("cnn_genre::.")) == 24
        assert counts["without_features"] == counts["not_predicted_without_features"] == 2
        assert counts["suspects"] == len(self.lib.items("cnn_suspect:0.9.."))
        for item in fresh:
            position = ids.index(item.id)
            assert data["tracks"]["x"][position] is None and data["tracks"]["primary"][position] is None
            assert not self.lib.get_item(item.id).get("cnn_genre", with_album=False)  # nothing predicted
        assert data["figures"]["per_genre"] == [
            [g, len([i for i in items if i.genres == [g]]),
             sum(g in (i.get("cnn_genres", with_album=False) or []) for i in self.lib.items())]
            for g in data["model"]["genres"]]
        assert data["model"]["validation"]["per_genre"].keys() == set(data["model"]["genres"])
        assert_loads_nothing(page_file.read_text(encoding="utf-8"))

        # A query and -a: the tracks of the matching albums only.
        self.run_command("cnngenre", "--report", str(page_file), "-a", "album:techno")
        data = page_data(page_file.read_text(encoding="utf-8"))
        assert sorted(data["tracks"]["id"]) == sorted(i.id for i in self.lib.items("album:techno"))
        assert data["figures"]["counts"]["matched"] == 4

        # --predict: predicts (and caches) the missing ones first.
        self.run_command("cnngenre", "--report", str(page_file), "--predict", "-j", "1")
        data = page_data(page_file.read_text(encoding="utf-8"))
        assert data["figures"]["counts"]["on_map"] == data["figures"]["counts"]["predicted"] == 26

    def test_default_file_and_query(self, library_files, heldout_files, tmp_path, monkeypatch, capsys,
                                    scratch_model_path):
        self.library(library_files, heldout_files)
        self.config["cnngenre"]["model"] = scratch_model_path
        monkeypatch.chdir(tmp_path)
        self.run_command("cnngenre", "--report", "album:techno")
        page = tmp_path / "cnngenre-report.html"
        data = page_data(page.read_text(encoding="utf-8"))
        assert data["figures"]["counts"]["matched"] == 4 and data["title"] == "album:techno"
        assert data["figures"]["counts"]["not_predicted"] == 4

    def test_options_that_do_not_go_with_report(self):
        with pytest.raises(ui.UserError, match="-p does not go with it"):
            self.run_command("cnngenre", "--report", "-p")
        with pytest.raises(ui.UserError, match="--predict goes with --report"):
            self.run_command("cnngenre", "--predict")
        with pytest.raises(ui.UserError, match="--suspects and --report do not go together"):
            self.run_command("cnngenre", "--suspects", "--report")

    def test_missing_plotly_is_one_line_naming_the_extra(self, tmp_path, monkeypatch):
        monkeypatch.setitem(sys.modules, "plotly", None)
        monkeypatch.setitem(sys.modules, "plotly.offline", None)
        page = tmp_path / "page.html"
        with pytest.raises(ui.UserError) as raised:
            self.run_command("cnngenre", "--report", str(page))
        message = str(raised.value)
        assert message == ("cnngenre: the report page needs plotly: pip install 'beets-cnngenre[report]'")
        assert not os.path.exists(page)
