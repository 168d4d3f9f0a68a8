"""Genre values, the taxonomy (aliases, tree, whitelist) and the choice of training labels."""

import pytest

from genre_cnn_core.genres import (
    Taxonomy,
    choose_labels,
    genre_key,
    load_alias_patterns,
    load_tree,
    load_whitelist,
    split_genres,
)


def test_spellings_of_one_genre_share_a_key():
    assert len({genre_key(v) for v in ["Hip-Hop", "hip hop", "hiphop", "HIP_HOP", " Hip–Hop "]}) == 1
    assert len({genre_key(v) for v in ["R&B", "rnb", "R & B", "Rhythm and Blues"]}) == 1
    assert genre_key("Rock") != genre_key("Pop")
    assert genre_key("Drum & Bass") == genre_key("drum and bass")


def test_multi_genre_values_are_split():
    assert split_genres(["Rock; Alternative"]) == ["Rock", "Alternative"]
    assert split_genres("Jazz / Fusion, Funk") == ["Jazz", "Fusion", "Funk"]
    assert split_genres(["", " ; ", "///"]) == []
    assert split_genres(None) == []


def test_every_genre_of_a_track_is_learned_and_rare_ones_are_dropped_with_a_reason():
    tags = [["Rock; Alternative"]] * 3 + [["rock"]] * 2 + [["Jazz", "Alternative"]] * 4 + [["Polka"]] + [[]] + [[" ; "]]
    choice = choose_labels(tags, min_tracks=4)
    assert choice.genres == ["alternative", "rock", "jazz"]
    assert choice.counts == {"alternative": 7, "rock": 5, "jazz": 4}
    assert choice.dropped == {"polka": (1, "fewer than 4 tracks")}
    assert choice.unlabelled == 3
    assert choice.labels[:3] == [(1, 0)] * 3  # the track's first genre first
    assert choice.labels[3:5] == [(1,)] * 2 and choice.labels[5:9] == [(2, 0)] * 4
    assert choice.labels[9:] == [(), (), ()]
    matrix = choice.label_matrix([0, 5])
    assert matrix.tolist() == [[True, True, False], [True, False, True]]


def test_a_genre_that_only_ever_comes_second_is_learned():
    tags = [["Rock", "Shoegaze"]] * 5 + [["Pop"]] * 5
    choice = choose_labels(tags, min_tracks=5)
    assert "shoegaze" in choice.genres and choice.counts["shoegaze"] == 5


def test_display_name_spelling_and_max_genres():
    tags = ([["Hip-Hop"]] * 3 + [["hip hop"]] + [["R&B"]] * 2 + [["Soul"]]
            + [["soundtrack"], ["Soundtrack"], ["Soundtrack"]])
    choice = choose_labels(tags, min_tracks=1, max_genres=2)
    assert choice.genres == ["hip-hop", "soundtrack"]
    assert choice.spellings == ["Hip-Hop", "Soundtrack"]  # the library's most common spelling
    assert choice.dropped["soul"] == (1, "only the 2 most common genres are learned (max_genres)")


def test_long_and_mixed_script_values_do_not_break_labels():
    choice = choose_labels([["ロック"]] * 2 + [["x" * 300]] * 2, min_tracks=2)
    assert len(choice.genres) == 2 and all(len(g) <= 64 for g in choice.genres)


TREE = {"jazz": [], "bebop": ["jazz"], "swing": ["jazz"], "rock": [], "post-rock": ["rock"], "math rock": ["rock"]}


def test_tree_teaches_parents_and_reports_genres_learned_from_children():
    tags = [["Bebop"]] * 3 + [["Swing"]] * 3 + [["Post-Rock"]] * 3 + [["Rock"]] * 3
    plain = choose_labels(tags, min_tracks=4)
    assert plain.genres == []  # without the tree, each genre has 3 tracks: too few
    choice = choose_labels(tags, Taxonomy(tree=TREE, learn_parents=True), min_tracks=4)
    assert choice.genres == ["jazz", "rock"]  # equal counts: by name
    assert choice.counts == {"jazz": 6, "rock": 6}
    assert choice.from_children == {"jazz": ["bebop", "swing"]}  # rock is also tagged itself
    assert choice.spellings == ["Jazz", "Rock"]
    assert choice.labels[0] == (0,) and choice.labels[6] == (1,)


def test_aliases_merge_spellings_the_key_cannot_know():
    taxonomy = Taxonomy(aliases={"NYHC": "New York Hardcore", "hiphop": "Hip-Hop"})
    choice = choose_labels([["nyhc"]] * 2 + [["New York Hardcore"]] * 2, taxonomy, min_tracks=4)
    assert choice.genres == ["new york hardcore"] and choice.counts == {"new york hardcore": 4}
    patterns = Taxonomy(alias_patterns={"drum and bass": [r"d(rum)?[ &n/]*b(ass)?"], r"\1 \2": [r"(nu)[ -]*(jazz)"]})
    assert patterns.resolve("DnB") == "drum and bass" and patterns.resolve("nu-jazz") == "nu jazz"


def test_whitelist_limits_learned_genres():
    tags = [["Rock"]] * 4 + [["Dadrock"]] * 4 + [["Jazz"]] * 4
    choice = choose_labels(tags, Taxonomy(whitelist=["rock", "jazz"]), min_tracks=4)
    assert choice.genres == ["jazz", "rock"] and choice.dropped == {"dadrock": (4, "not in the whitelist")}


def test_predicted_parents_get_the_best_probability_of_their_children():
    taxonomy = Taxonomy(tree=TREE)
    scores = taxonomy.with_parents({"bebop": 0.8, "swing": 0.3, "rock": 0.1})
    assert scores == {"bebop": 0.8, "swing": 0.3, "rock": 0.1, "jazz": 0.8}
    assert taxonomy.with_parents({"jazz": 0.5, "bebop": 0.7})["jazz"] == 0.7


def test_lastgenre_files_of_the_installed_beets_load():
    import importlib.util
    import os

    spec = importlib.util.find_spec("beetsplug.lastgenre")
    folder = list(spec.submodule_search_locations)[0]
    tree = load_tree(os.path.join(folder, "genres-tree.yaml"))
    assert tree["bebop"] == ["jazz"] and "jazz" in tree
    assert {"jazz", "bebop"} <= load_whitelist(os.path.join(folder, "genres.txt"))
    taxonomy = Taxonomy(alias_patterns=load_alias_patterns(os.path.join(folder, "aliases.yaml")), tree=tree)
    assert taxonomy.resolve("alt rock") == "alternative rock"
    assert taxonomy.ancestors(genre_key("bebop")) == ["jazz"]


def test_bad_tree_and_pattern_are_errors(tmp_path):
    path = tmp_path / "tree.yaml"
    path.write_text("just a string\n")
    with pytest.raises(ValueError, match="not a genre tree"):
        load_tree(str(path))
    with pytest.raises(ValueError, match="alias pattern"):
        Taxonomy(alias_patterns={"x": ["(unclosed"]})


def test_a_genre_comes_before_its_ancestors():
    taxonomy = Taxonomy(tree=TREE)
    assert taxonomy.specific_first(["rock", "post-rock", "jazz", "bebop"]) == ["post-rock", "rock", "bebop", "jazz"]
    assert taxonomy.specific_first(["jazz", "rock"]) == ["jazz", "rock"]
