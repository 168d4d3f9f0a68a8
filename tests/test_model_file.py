"""Model files: safetensors (plain data), read and written without torch, nothing in them believed unchecked."""

import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from genre_cnn_core import FeatureSettings, GenreModel, ModelError
from genre_cnn_core.files import read_safetensors
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
    path = tmp_path / "model.safetensors"
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
    tensors, header = read_safetensors(saved.read_bytes())  # any safetensors reader: tensors and one JSON string
    assert set(tensors) == {"weights/mean", "weights/scale", "weights/weight", "weights/bias", "calibration",
                            "heldout_probabilities", "heldout_known"}
    assert header["format_version"] == "3" and json.loads(header["model"])["model_id"] == model.model_id


def scratch_model(n_genres=3) -> GenreModel:
    """A scratch CNN model with random weights (made without torch)."""
    from genre_cnn_core.dieleman_numpy import state_shapes

    rng = np.random.default_rng(0)
    settings = FeatureSettings(excerpt_seconds=10.0, n_excerpts=3)
    architecture = {"n_mels": 96, "n_genres": n_genres, "window_frames": settings.frames(3.0) - 1}
    weights = {name: (rng.random(shape) + 0.5).astype(np.float32) if shape else np.array(5, np.int64)
               for name, shape in state_shapes(architecture).items()}
    genres = ["jazz", "rock", "pop"][:n_genres]
    return GenreModel("scratch", genres, genres, settings, weights, architecture, np.array([1.0, 0.0]))


def test_saving_loading_and_predicting_with_both_backbones_never_import_torch(tmp_path):
    scratch_model().save(str(tmp_path / "scratch.safetensors"))
    code = f"""if True:
        import sys
        sys.modules["torch"] = None  # as if not installed: importing it fails
        import numpy as np
        from genre_cnn_core import DEFAULT_MODEL, GenreModel
        GenreModel.load(DEFAULT_MODEL).save({str(tmp_path / 'm.safetensors')!r})
        musicnn = GenreModel.load({str(tmp_path / 'm.safetensors')!r})
        scratch = GenreModel.load({str(tmp_path / 'scratch.safetensors')!r})
        for model in (musicnn, scratch):
            features = model.extractor("cpu").compute([{str(tmp_path / 'noise.wav')!r}])
            probabilities = model.predict_proba(features)
            assert probabilities.shape == (1, len(model.genres)) and np.isfinite(probabilities).all()
        """
    import soundfile

    soundfile.write(tmp_path / "noise.wav", np.random.default_rng(0).random(16000 * 40) - 0.5, 16000)
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_id_changes_with_any_weight():
    model, other = head_model(), head_model()
    other.weights["weight"][0, 0] += 1e-3
    assert model.model_id != other.model_id


class Payload:
    """A model file's content, editable: its tensors (writable copies) and its metadata."""

    def __init__(self, path):
        self.tensors = {name: np.array(value) for name, value in load_file(path).items()}
        self.header = read_safetensors(open(path, "rb").read())[1]
        self.meta = json.loads(self.header["model"])

    def __getitem__(self, name):
        return self.tensors[f"weights/{name}"] if f"weights/{name}" in self.tensors else self.tensors[name]

    def save(self, path):
        header = dict(self.header)
        if self.meta is not None:
            header["model"] = json.dumps(self.meta)
        save_file(self.tensors, path, metadata=header)
        return str(path)


def _tampered(saved, tmp_path, change):
    payload = Payload(str(saved))
    change(payload, payload.meta)
    return payload.save(tmp_path / "tampered.safetensors")


def _set(key, value):
    return lambda payload, meta: meta.__setitem__(key, value)


def _header(key, value):
    return lambda payload, meta: payload.header.__setitem__(key, value)


def _tensor(key, value):
    return lambda payload, meta: payload.tensors.__setitem__(key, value)


def _setting(key, value):
    return lambda payload, meta: meta["settings"].__setitem__(key, value)


BAD = {
    "NaN weights": (lambda p, m: p["weight"].fill(np.nan), "weight weight is not finite"),
    "infinite scale": (lambda p, m: p["scale"].__setitem__(0, np.inf), "scale is not finite"),
    "negative scale": (lambda p, m: p["scale"].__setitem__(0, -1.0), "scale must be positive"),
    "float64 weights": (_tensor("weights/bias", np.zeros(3, np.float64)), "'bias' is neither a float32 nor an int64"),
    "edited weight": (lambda p, m: p["bias"].__setitem__(0, 5.0), "does not match its id"),
    "edited metadata": (_set("trained_at", "yesterday"), "does not match its id"),
    "zero calibration slope": (lambda p, m: p["calibration"].__setitem__(0, 0.0), "slope 0.0 must be positive"),
    "negative calibration slope": (lambda p, m: p["calibration"].__setitem__(0, -2.0), "must be positive"),
    "genres not a list": (_set("genres", "jazz"), "genres is not a non-empty list"),
    "repeated genres": (_set("genres", ["jazz", "jazz", "pop"]), "genres are not distinct"),
    "empty genre": (_set("genres", ["jazz", "", "pop"]), "is not a name"),
    "genre not text": (_set("genres", ["jazz", 7, "pop"]), "is not a name"),
    "genre too long": (_set("genres", ["jazz", "x" * 65, "pop"]), "is not a name .1 to 64 characters"),
    "genre with a list delimiter": (_set("genres", ["jazz", "rock; pop", "pop"]), "holds a list delimiter"),
    "genre with beets' database delimiter": (_set("genres", ["jazz", "rock\\\u2400pop", "pop"]), "list delimiter"),
    "spelling with a list delimiter": (_set("spellings", ["Jazz", "Rock; Pop", "Pop"]), "list delimiter"),
    "genre with spaces around": (_set("genres", ["jazz", " rock", "pop"]), "spaces around it"),
    "genre with an ANSI escape": (_set("genres", ["jazz", "\x1b[2Jrock", "pop"]), "holds a control character"),
    "genre with a newline": (_set("genres", ["jazz", "rock\nTraceback", "pop"]), "holds a control character"),
    "genre with a bidi override": (_set("genres", ["jazz", "ro\u202eck", "pop"]), "holds a control character"),
    "name not text": (_set("name", {"a": 1}), "model name: a dict is not a name"),
    "name too long": (_set("name", "n" * 100_000), "a string of 100000 characters"),
    "name with a newline": (_set("name", "mine\nTraceback (most recent call last):"), "control character"),
    "metadata string with an escape": (_set("notes", {"x": ["ok", "\x1b]0;title\x07"]}), "metadata.notes.x:"),
    "metadata key with an escape": (_set("notes", {"\x1b[31m": 1}), "holds a control character"),
    "metadata nested too deep": (_set("notes", json.loads("[" * 40 + "]" * 40)), "nested deeper than"),
    "fewer genres than outputs": (_set("genres", ["jazz", "rock"]), "spellings for 2 genres"),
    "offset out of range": (lambda p, m: m["architecture"].__setitem__("offset", 1600), "head reads features"),
    "hop 0": (_setting("hop_length", 0), "hop_length must be"),
    "no excerpts": (_setting("n_excerpts", 0), "n_excerpts must be"),
    "64 excerpts": (_setting("n_excerpts", 64), "n_excerpts must be an integer from 1 to 16"),
    "600 s excerpts": (_setting("excerpt_seconds", 600.0), "excerpt_seconds must be a number from 0.5 to 30"),
    "too much audio per track": (lambda p, m: m["settings"].update(n_excerpts=16, excerpt_seconds=30.0),
                                 "16 excerpts of 30.0 s: 480 s of audio per track, more than 120 s"),
    "a huge FFT for its hop": (lambda p, m: m["settings"].update(n_fft=4096, hop_length=256),
                               "n_fft 4096 must be a power of two, from hop_length 256 to 4 times it"),
    "sample rate too high": (_setting("sample_rate", 192000), "sample_rate must be an integer from 8000 to 48000"),
    "negative excerpt": (_setting("excerpt_seconds", -3.0), "excerpt_seconds"),
    "sample rate as text": (_setting("sample_rate", "16000"), "sample_rate must be"),
    "version not an integer": (_header("format_version", "2.5"), "invalid model format"),
    "negative version": (_header("format_version", "-1"), "invalid model format"),
    "older version": (_header("format_version", "2"), "older cnngenre"),
    "newer version": (_header("format_version", "9"), "newer cnngenre"),
    "another safetensors file": (_header("format", "something-else"), "not a cnngenre model file"),
    "no model metadata": (lambda p, m: (p.header.pop("model"), setattr(p, "meta", None)), "no model metadata"),
    "model id not text": (_set("model_id", 12), "model id is not a string"),
    "unknown backbone": (_set("backbone", "vggish"), "unknown backbone 'vggish'"),
    "held-out shape": (_set("heldout_ids", ["a" * 20]), "held-out probabilities has shape"),
    "held-out above 1": (lambda p, m: p["heldout_probabilities"].__setitem__(0, 2.0), "outside 0..1"),
    "trained_on not ids": (_set("trained_on", [1, 2]), "trained_on is not a list"),
    "held-out mask not booleans": (_tensor("heldout_known", np.ones((2, 3), np.float32)),
                                   "heldout_known is not a boolean tensor"),
    "an extra tensor": (_tensor("payload", np.zeros(1000, np.float32)), "unknown tensor 'payload'"),
    "an extra weight": (_tensor("weights/extra", np.zeros(10, np.float32)), "head weights .*'extra'"),
    "metadata not JSON": (lambda p, m: (p.header.__setitem__("model", "{not json"), setattr(p, "meta", None)),
                          "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_invalid_content_is_refused_with_what_is_wrong(saved, tmp_path, case):
    change, message = BAD[case]
    path = _tampered(saved, tmp_path, change)
    with pytest.raises(ModelError, match=message) as error:
        GenreModel.load(path)
    assert "\n" not in str(error.value) and "\x1b" not in str(error.value) and path in str(error.value)
    assert len(str(error.value)) < 300


def test_a_model_that_would_not_load_is_not_saved(tmp_path):
    model = head_model(genres=("jazz", "rock; pop", "soul"))
    with pytest.raises(ModelError, match="list delimiter"):
        model.save(str(tmp_path / "model.safetensors"))
    assert not os.listdir(tmp_path)


def test_files_of_the_previous_version_and_pickles_are_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    pickled = tmp_path / "evil.pt"
    with open(pickled, "wb") as handle:
        pickle.dump({"format_version": 2, "x": Payload()}, handle, protocol=2)
    with pytest.raises(ModelError, match="a Python pickle, which cnngenre never loads"):
        GenreModel.load(str(pickled))
    # what torch.save wrote for cnngenre 0.2: a zip archive holding a pickle (this one asks to run code)
    older = tmp_path / "model.pt"
    with zipfile.ZipFile(older, "w") as archive:
        archive.writestr("model/data.pkl", pickle.dumps({"format_version": 2, "metadata": Payload()}, protocol=2))
    with pytest.raises(ModelError) as error:
        GenreModel.load(str(older))
    assert str(error.value) == (f"{older}: made by an older cnngenre (a PyTorch file); retrain with "
                                "`beet cnngenre -t` (seconds with the default backbone)")
    assert not marker.exists()


def test_garbage_truncated_missing_fifo_and_huge_files_are_refused(saved, tmp_path, monkeypatch):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\0garbage")
    with pytest.raises(ModelError, match="not a readable model file"):
        GenreModel.load(str(garbage))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(saved.read_bytes()[:-10])
    with pytest.raises(ModelError, match=r"not a readable model file \(damaged safetensors file"):
        GenreModel.load(str(truncated))
    lying = tmp_path / "lying.safetensors"
    lying.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(ModelError, match="header would be longer than the file"):
        GenreModel.load(str(lying))
    with pytest.raises(ModelError, match="no model file"):
        GenreModel.load(str(tmp_path / "missing.safetensors"))
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(ModelError, match=r"not a regular file \(FIFO\)"):
        GenreModel.load(str(fifo))  # returns at once: never opened
    with pytest.raises(ModelError, match="is a folder, not a file"):
        GenreModel.load(str(tmp_path))
    import genre_cnn_core.model

    monkeypatch.setattr(genre_cnn_core.model, "MAX_MODEL_BYTES", 4)
    with pytest.raises(ModelError, match="larger than any cnngenre model"):
        GenreModel.load(str(garbage))
