"""Genre tagging of audio files with convolutional neural networks.

The core of cnngenre; it knows nothing of beets. Typical use::

    from genre_cnn_core import GenreModel, FeatureCache, predict_files
    model = GenreModel.load(DEFAULT_MODEL)
    for result in predict_files(model, paths, n_jobs=2):
        ...
"""

import importlib

#: Public names and the submodule that defines each. They are imported on
#: first use, so a feature-extraction worker that needs only audio and
#: numpy never pays for importing torch (PEP 562).
_EXPORTS = {
    "AudioError": "audio", "load_excerpts": "audio",
    "FeatureCache": "cache",
    "FeatureSettings": "features", "log_mel": "features",
    "choose_labels": "labels", "genre_key": "labels", "split_genres": "labels",
    "GenreModel": "model", "ModelError": "model",
    "DEFAULT_MODEL": "pipeline", "DEFAULT_SETTINGS": "pipeline", "Failure": "pipeline", "Prediction": "pipeline",
    "TrainingError": "pipeline", "evaluate_files": "pipeline", "predict_files": "pipeline",
    "train_on_files": "pipeline",
    "TrainConfig": "training", "format_report": "training",
}


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))


__version__ = "0.1.0"

__all__ = sorted(_EXPORTS)
