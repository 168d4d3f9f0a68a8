"""Model files: plain data, loaded without running code, and nothing in them believed unchecked."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from genre_cnn_core import FeatureSettings, GenreModel, ModelError
from genre_cnn_core.linear_head import LinearHead


def head_model(genres=("jazz", "rock", "pop")) -> GenreModel:
    rng = np.random.default_rng(0)
    n = len(genres)
    head = LinearHead(rng.normal(size=50), np.abs(rng.normal(size=50)) + 0.5, rng.normal(size=(n, 50)),
                      rng.normal(size=n), offset=1506)
    return GenreModel("musicnn", list(genres), [g.title() for g in genres],
                      FeatureSettings(excerpt_seconds=3.0, n_excerpts=4), head.weights(), head.architecture,
                      np.array([1.2, -0.3]), ["a" * 20, "b" * 20], rng.random((2, n)),
                      {"trained_on": ["a" * 20, "b" * 20, "c" * 20]})


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "model.pt"
    head_model().save(str(path))
    return path


def test_round_trip_keeps_everything_and_the_id(saved):
    model, loaded = head_model(), GenreModel.load(str(saved))
    assert loaded.model_id == model.model_id and loaded.model_id.startswith("musicnn-")
    assert loaded.genres == model.genres and loaded.spellings == model.spellings
    assert loaded.settings == model.settings and loaded.trained_on == model.trained_on
    x = np.random.default_rng(1).random((4, 1556)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict_proba(list(x)), model.predict_proba(list(x)), rtol=1e-6)
    np.testing.assert_array_equal(loaded.heldout()["a" * 20], model.heldout_probabilities[0])
    payload = torch.load(str(saved), weights_only=True)  # plain data: tensors and one JSON string
    assert isinstance(payload["metadata"], str) and json.loads(payload["metadata"])["model_id"] == model.model_id


def test_the_id_changes_with_any_weight():
    model, other = head_model(), head_model()
    other.weights["weight"][0, 0] += 1e-3
    assert model.model_id != other.model_id


def _tampered(saved, tmp_path, change):
    payload = torch.load(str(saved), weights_only=True)
    meta = json.loads(payload["metadata"])
    change(payload, meta)
    payload["metadata"] = json.dumps(meta) if not isinstance(meta, str) else meta
    path = tmp_path / "tampered.pt"
    torch.save(payload, path)
    return str(path)


def _set(key, value):
    return lambda payload, meta: meta.__setitem__(key, value)


BAD = {
    "NaN weights": (lambda p, m: p["weights"]["weight"].fill_(float("nan")), "weight weight is not finite"),
    "infinite scale": (lambda p, m: p["weights"]["scale"].__setitem__(0, float("inf")), "scale is not finite"),
    "negative scale": (lambda p, m: p["weights"]["scale"].__setitem__(0, -1.0), "scale must be positive"),
    "edited weight": (lambda p, m: p["weights"]["bias"].__setitem__(0, 5.0), "does not match its id"),
    "edited metadata": (_set("trained_at", "yesterday"), "does not match its id"),
    "zero calibration slope": (lambda p, m: p["calibration"].__setitem__(0, 0.0), "slope 0.0 must be positive"),
    "negative calibration slope": (lambda p, m: p["calibration"].__setitem__(0, -2.0), "must be positive"),
    "genres not a list": (_set("genres", "jazz"), "genres is not a non-empty list"),
    "repeated genres": (_set("genres", ["jazz", "jazz", "pop"]), "genres are not distinct"),
    "empty genre": (_set("genres", ["jazz", "", "pop"]), "is not a genre name"),
    "genre not text": (_set("genres", ["jazz", 7, "pop"]), "is not a genre name"),
    "fewer genres than outputs": (_set("genres", ["jazz", "rock"]), "spellings for 2 genres"),
    "offset out of range": (lambda p, m: m["architecture"].__setitem__("offset", 1600), "head reads features"),
    "hop 0": (lambda p, m: m["settings"].__setitem__("hop_length", 0), "hop_length must be"),
    "no excerpts": (lambda p, m: m["settings"].__setitem__("n_excerpts", 0), "n_excerpts must be"),
    "negative excerpt": (lambda p, m: m["settings"].__setitem__("excerpt_seconds", -3.0), "excerpt_seconds"),
    "sample rate as text": (lambda p, m: m["settings"].__setitem__("sample_rate", "16000"), "sample_rate must be"),
    "version not an integer": (lambda p, m: p.__setitem__("format_version", "2"), "invalid model format"),
    "negative version": (lambda p, m: p.__setitem__("format_version", -1), "invalid model format"),
    "older version": (lambda p, m: p.__setitem__("format_version", 1), "older cnngenre"),
    "newer version": (lambda p, m: p.__setitem__("format_version", 9), "newer cnngenre"),
    "model id not text": (_set("model_id", 12), "model id is not a string"),
    "unknown backbone": (_set("backbone", "vggish"), "unknown backbone 'vggish'"),
    "held-out shape": (_set("heldout_ids", ["a" * 20]), "held-out probabilities has shape"),
    "held-out above 1": (lambda p, m: p["heldout_probabilities"].__setitem__(0, 2.0), "outside 0..1"),
    "trained_on not ids": (_set("trained_on", [1, 2]), "trained_on is not a list"),
    "held-out mask not booleans": (lambda p, m: p.__setitem__("heldout_known", p["heldout_known"].float()),
                                   "heldout_known is not a boolean tensor"),
    "metadata not JSON": (lambda p, m: p.__setitem__("metadata", "{not json"), "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_invalid_content_is_refused_with_what_is_wrong(saved, tmp_path, case):
    change, message = BAD[case]

    def apply(payload, meta):
        change(payload, meta)
    path = _tampered(saved, tmp_path, apply) if case != "metadata not JSON" else None
    if path is None:
        payload = torch.load(str(saved), weights_only=True)
        change(payload, None)
        path = str(tmp_path / "tampered.pt")
        torch.save(payload, path)
    with pytest.raises(ModelError, match=message) as error:
        GenreModel.load(path)
    assert "\n" not in str(error.value) and path in str(error.value)


def test_model_file_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"format_version": 2, "x": Payload()}, handle, protocol=2)
    torch.save({"format_version": 2, "metadata": Payload()}, tmp_path / "evil2.pt")
    for candidate in (path, tmp_path / "evil2.pt"):
        with pytest.raises(ModelError, match=r"refused to load: the file asks to run code \((os|posix)\.system\)"):
            GenreModel.load(str(candidate))
    assert not marker.exists()


def test_garbage_missing_fifo_and_huge_files_are_refused(tmp_path, monkeypatch):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\0garbage")
    with pytest.raises(ModelError, match="not a readable model file"):
        GenreModel.load(str(garbage))
    with pytest.raises(ModelError, match="no model file"):
        GenreModel.load(str(tmp_path / "missing.pt"))
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    with pytest.raises(ModelError, match="not a regular file"):
        GenreModel.load(str(fifo))  # returns at once: never opened
    import genre_cnn_core.model

    monkeypatch.setattr(genre_cnn_core.model, "MAX_MODEL_BYTES", 4)
    with pytest.raises(ModelError, match="larger than any cnngenre model"):
        GenreModel.load(str(garbage))
