from genre_cnn_core.labels import choose_labels, genre_key, split_genres


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


def test_first_genre_is_the_label_and_rare_genres_are_dropped():
    tags = [["Rock; Alternative"]] * 3 + [["rock"]] * 2 + [["Jazz"]] * 4 + [["Polka"]] + [[]] + [[" ; "]]
    choice = choose_labels(tags, min_tracks=4)
    assert choice.genres == ["rock", "jazz"]
    assert choice.counts == {"rock": 5, "jazz": 4}
    assert choice.dropped == {"polka": 1}
    assert choice.unlabelled == 2
    assert choice.labels[:5] == [0] * 5 and choice.labels[5:9] == [1] * 4
    assert choice.labels[9:] == [None, None, None]


def test_display_name_and_max_genres():
    tags = [["Hip-Hop"]] * 3 + [["hip hop"]] + [["R&B"]] * 2 + [["Soul"]]
    choice = choose_labels(tags, min_tracks=1, max_genres=2)
    assert choice.genres == ["hip-hop", "r&b"]
    assert choice.dropped == {"soul": 1}


def test_long_and_mixed_script_values_do_not_break_labels():
    tags = [["ロック"]] * 2 + [["x" * 300]] * 2
    choice = choose_labels(tags, min_tracks=2)
    assert len(choice.genres) == 2
    assert all(len(g) <= 64 for g in choice.genres)
