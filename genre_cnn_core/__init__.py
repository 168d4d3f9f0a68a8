"""Genre tagging of audio files with convolutional neural networks.

The core of cnngenre; it knows nothing of beets. Typical use::

    from genre_cnn_core import DEFAULT_MODEL, FeatureCache, GenreModel, RunConfig, predict_files
    model = GenreModel.load(DEFAULT_MODEL)
    for result in predict_files(model, paths, run=RunConfig(n_jobs=2, cache=FeatureCache("/tmp/cache"))):
        print(result.index, result.selected())
"""

import importlib

#: The rule that decides the genres a track is given (:func:`select_genres`),
#: by default: those at or above ``THRESHOLD``, at most ``TOP_K``. Here, not
#: in :mod:`.metrics`, so that the plugin's defaults read them without numpy.
THRESHOLD = 0.5
TOP_K = 3

#: Public names and the submodule that defines each. They are imported on
#: first use, so a feature-extraction worker that needs only audio and
#: numpy never pays for importing torch (PEP 562).
_EXPORTS = {
    "album_probabilities": "albums", "album_scores": "albums", "checked_scores": "albums", "judge_album": "albums",
    "AudioError": "audio", "load_excerpts": "audio",
    "BACKBONES": "backbones", "TrainConfig": "backbones", "get_backbone": "backbones",
    "FeatureCache": "cache",
    "audio_identity": "container",
    "FeatureSettings": "features", "log_mel": "features",
    "Taxonomy": "genres", "choose_labels": "genres", "display_name": "genres", "genre_key": "genres",
    "load_alias_patterns": "genres", "load_tree": "genres", "load_whitelist": "genres", "split_genres": "genres",
    "format_report": "metrics", "genre_report": "metrics", "select_genres": "metrics",
    "GenreModel": "model", "ModelError": "model",
    "DEFAULT_MODEL": "pipeline", "Failure": "pipeline", "Judgement": "pipeline", "Prediction": "pipeline",
    "TrainingError": "pipeline", "audio_ids": "extract", "evaluate_files": "pipeline",
    "judge_files": "pipeline", "predict_files": "pipeline", "train_on_files": "pipeline",
    "matplotlib_available": "plots", "save_confusion_matrix": "plots", "save_training_curve": "plots",
    "available_cores": "devices", "is_device_name": "devices", "resolve_device": "devices",
    "BACKENDS": "runtime", "RunConfig": "runtime", "dask_client": "runtime", "worker_count": "runtime",
    "TagWriteRefused": "tagwrite", "remove_leftover_copies": "tagwrite", "write_tags": "tagwrite",
}


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))


__version__ = "0.2.0"

__all__ = sorted(_EXPORTS)
