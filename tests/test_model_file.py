import os
import pickle

import numpy as np
import pytest
import torch

from genre_cnn_core import GenreModel, ModelError


def test_model_round_trip_gives_the_same_predictions(scratch_model, scratch_model_path, library_files):
    from genre_cnn_core.extract import extract_features

    loaded = GenreModel.load(scratch_model_path)
    assert loaded.genres == scratch_model.genres and loaded.model_id == scratch_model.model_id
    assert loaded.settings == scratch_model.settings
    features = [f for _, f, _ in extract_features([str(p) for p, _ in library_files[:3]], loaded.extractor())]
    np.testing.assert_allclose(loaded.predict_proba(features), scratch_model.predict_proba(features), atol=1e-5)
    # Plain data only: the file loads with weights_only=True, metadata is JSON.
    payload = torch.load(scratch_model_path, weights_only=True)
    assert isinstance(payload["metadata"], str)


def test_model_file_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"format_version": 1, "x": Payload()}, handle, protocol=2)
    torch.save({"format_version": 1, "metadata": Payload()}, tmp_path / "evil2.pt")
    for candidate in (path, tmp_path / "evil2.pt"):
        with pytest.raises(ModelError, match=r"refused to load: the file asks to run code \((os|posix)\.system\)"):
            GenreModel.load(str(candidate))
    assert not marker.exists()


def test_newer_format_and_garbage_are_refused(scratch_model_path, tmp_path):
    payload = torch.load(scratch_model_path, weights_only=True)
    payload["format_version"] = 99
    newer = tmp_path / "newer.pt"
    torch.save(payload, newer)
    with pytest.raises(ModelError, match="newer cnngenre"):
        GenreModel.load(str(newer))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\0garbage")
    with pytest.raises(ModelError, match="not a readable model file"):
        GenreModel.load(str(garbage))
    with pytest.raises(ModelError, match="no model file"):
        GenreModel.load(str(tmp_path / "missing.pt"))


def test_scratch_cnn_learns_the_synthetic_genres(scratch_model, heldout_files):
    from genre_cnn_core import predict_files

    paths = [str(p) for p, _ in heldout_files]
    results = {r.index: r for r in predict_files(scratch_model, paths)}
    correct = sum(results[i].genres[0][0] == genre for i, (_, genre) in enumerate(heldout_files))
    assert correct / len(paths) >= 0.8  # chance is 1/3
