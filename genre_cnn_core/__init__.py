"""Genre tagging of audio files with convolutional neural networks.

The core of cnngenre; it knows nothing of beets. Typical use::

    from genre_cnn_core import GenreModel, FeatureCache, predict_files
    model = GenreModel.load(DEFAULT_MODEL)
    for result in predict_files(model, paths, n_jobs=2):
        ...
"""

from .audio import AudioError, load_excerpts
from .cache import FeatureCache
from .features import FeatureSettings, log_mel
from .labels import choose_labels, genre_key, split_genres
from .model import GenreModel, ModelError
from .pipeline import (DEFAULT_MODEL, DEFAULT_SETTINGS, Failure, Prediction, TrainingError, evaluate_files,
                       predict_files, train_on_files)
from .training import TrainConfig, format_report

__version__ = "0.1.0"

__all__ = [
    "AudioError", "DEFAULT_MODEL", "DEFAULT_SETTINGS", "Failure", "FeatureCache", "FeatureSettings",
    "GenreModel", "ModelError", "Prediction", "evaluate_files", "TrainConfig", "TrainingError", "choose_labels",
    "format_report", "genre_key", "load_excerpts", "log_mel", "predict_files", "split_genres",
    "train_on_files",
]
