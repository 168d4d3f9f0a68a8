"""A trained genre model and its file.

A model is a backbone's name, its feature settings, the weights of the
trainable part, the calibration that turns its scores into probabilities,
the genres, and plain metadata (training report, the audio ids of the
tracks it learned from and their held-out predictions).

The file is a PyTorch file of tensors and one JSON string: it opens with
``torch.load(weights_only=True)``, and cnngenre reads it with
:func:`genre_cnn_core.torchfile.read_torch_file`, which accepts the same
plain data without importing torch. Nothing in it is believed unchecked:
types, ranges, shapes against the architecture, finite values, and an id
derived from the whole content.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import stat

import numpy as np

from .backbones import BACKBONES, get_backbone
from .features import FeatureSettings
from .files import atomic_write
from .metrics import calibrate

#: Version of the model file layout; other versions are refused.
FORMAT_VERSION = 2
#: Model files larger than this are refused before being read.
MAX_MODEL_BYTES = 256 * 1024 * 1024
MAX_GENRE_LENGTH = 64


class ModelError(Exception):
    """A model file is missing, unreadable, unsafe or invalid (one-line reason)."""


@dataclasses.dataclass
class GenreModel:
    """A trained genre model.

    Attributes
    ----------
    backbone : str
        Name of a registered backbone (:data:`genre_cnn_core.backbones.BACKBONES`).
    genres : list of str
        Genre names (lower case), in output order.
    spellings : list of str
        How the library spells each genre, for writing them into ``genres``.
    settings : FeatureSettings
        Feature settings the model was trained with; prediction uses them.
    weights : dict
        Name -> numpy array of the trainable part.
    architecture : dict
        Plain data that shapes ``weights``.
    calibration : np.ndarray
        ``[a, b]`` of :func:`genre_cnn_core.metrics.calibrate`.
    heldout_ids : list of str
        Audio ids of the training tracks predicted by a model that never
        heard their artist, ...
    heldout_probabilities : np.ndarray
        ... and those predictions, ``(len(heldout_ids), genres)``.
    metadata : dict
        Plain data: training report, dates, library size, ``trained_on``.
    heldout_known : np.ndarray
        Booleans of the shape of ``heldout_probabilities``: whether the model
        that made a held-out prediction learned that genre (a genre only one
        artist plays is unknown to the model that held that artist out).
    """

    backbone: str
    genres: list
    spellings: list
    settings: FeatureSettings
    weights: dict
    architecture: dict
    calibration: np.ndarray
    heldout_ids: list = dataclasses.field(default_factory=list)
    heldout_probabilities: np.ndarray | None = None
    metadata: dict = dataclasses.field(default_factory=dict)
    heldout_known: np.ndarray | None = None

    def __post_init__(self):
        # Stored as they are saved, so the id of a model is the same before and after a round trip.
        self.weights = {name: _stored(value) for name, value in self.weights.items()}
        self.calibration = np.asarray(self.calibration, dtype=np.float32)
        if self.heldout_probabilities is None:
            self.heldout_probabilities = np.zeros((0, len(self.genres)), np.float32)
        self.heldout_probabilities = np.asarray(self.heldout_probabilities, dtype=np.float32)
        if self.heldout_known is None:
            self.heldout_known = np.ones(self.heldout_probabilities.shape, dtype=bool)
        self.heldout_known = np.asarray(self.heldout_known, dtype=bool)

    # ------------------------------------------------------------ use

    @property
    def model_id(self) -> str:
        """Short identifier of this model's whole content, written beside each prediction.

        A hash over the weights, calibration and metadata: any change of the
        weights gives another id, so predictions of a damaged or retrained
        model never pass for those of the original.
        """
        digest = hashlib.sha1(json.dumps(self._metadata_json(), sort_keys=True).encode())
        for name, value in sorted(self._arrays().items()):
            digest.update(f"{name}:{value.dtype.str}:{value.shape}".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        prefix = self.metadata.get("name") or self.backbone
        return f"{prefix}-{digest.hexdigest()[:10]}"

    @property
    def trained_on(self) -> set:
        """Audio ids of the tracks the model learned from."""
        return set(self.metadata.get("trained_on", []))

    def extractor(self, device: str = "cpu"):
        """The feature extractor this model reads."""
        return get_backbone(self.backbone).extractor(self.settings, device)

    def logits(self, features: list, device: str = "cpu") -> np.ndarray:
        """Uncalibrated genre scores, ``(tracks, genres)``."""
        return get_backbone(self.backbone).logits(self.weights, self.architecture, features, device)

    def predict_proba(self, features: list, device: str = "cpu") -> np.ndarray:
        """Calibrated probability that each genre applies, ``(tracks, genres)``."""
        if not features:
            return np.zeros((0, len(self.genres)), np.float64)
        return calibrate(self.logits(features, device), self.calibration)

    def heldout(self) -> dict:
        """Audio id -> held-out probabilities of each training track that has them; NaN for a genre the
        model that made the prediction never learned."""
        masked = np.where(self.heldout_known, self.heldout_probabilities, np.nan)
        return dict(zip(self.heldout_ids, masked))

    # ------------------------------------------------------------ file

    def _metadata_json(self) -> dict:
        meta = {k: v for k, v in self.metadata.items() if k != "model_id"}
        meta.update(backbone=self.backbone, genres=list(self.genres), spellings=list(self.spellings),
                    settings=self.settings.as_dict(), architecture=self.architecture,
                    heldout_ids=list(self.heldout_ids))
        return meta

    def _arrays(self) -> dict:
        arrays = {f"weights/{name}": value for name, value in self.weights.items()}
        arrays.update(calibration=self.calibration, heldout_probabilities=self.heldout_probabilities,
                      heldout_known=self.heldout_known)
        return arrays

    def save(self, path: str) -> None:
        """Write the model file atomically (temporary file, fsync, rename)."""
        import torch

        meta = self._metadata_json()
        meta["model_id"] = self.model_id
        payload = {
            "format_version": FORMAT_VERSION,
            "metadata": json.dumps(meta),
            "weights": {name: torch.from_numpy(np.array(value)) for name, value in self.weights.items()},
            "calibration": torch.from_numpy(self.calibration.copy()),
            "heldout_probabilities": torch.from_numpy(self.heldout_probabilities.copy()),
            "heldout_known": torch.from_numpy(self.heldout_known.copy()),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        atomic_write(path, lambda handle: handle.write(buffer.getvalue()))

    @classmethod
    def load(cls, path: str) -> "GenreModel":
        """Load and check a model file; no code stored in it ever runs.

        Raises
        ------
        ModelError
            Missing, too large, not a regular file, damaged, unsafe, from
            another version, or with invalid content.
        """
        from .torchfile import TorchFileError, UnsafeTorchFileError, read_torch_file

        name = os.fsdecode(path)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise ModelError(f"{name}: no model file") from None
        except OSError as error:
            raise ModelError(f"{name}: cannot read the model file ({error.strerror or error})") from None
        if not stat.S_ISREG(info.st_mode):
            raise ModelError(f"{name}: not a regular file")
        if info.st_size > MAX_MODEL_BYTES:
            raise ModelError(f"{name}: {info.st_size} bytes, larger than any cnngenre model "
                             f"({MAX_MODEL_BYTES // 2**20} MiB at most)")
        try:
            payload = read_torch_file(path, max_bytes=MAX_MODEL_BYTES)
        except UnsafeTorchFileError as error:
            raise ModelError(f"{name}: refused to load: the file asks to run code ({error.global_name}); "
                             "a cnngenre model holds only weights and plain data") from None
        except TorchFileError as error:
            raise ModelError(f"{name}: not a readable model file ({error})") from None
        except OSError as error:
            raise ModelError(f"{name}: cannot read the model file ({error.strerror or error})") from None
        try:
            return _from_payload(payload)
        except ModelError as error:
            raise ModelError(f"{name}: {error}") from None


def _stored(value) -> np.ndarray:
    value = np.asarray(value)
    if value.dtype.kind == "f":
        return value.astype(np.float32)
    if value.dtype.kind in "iu":
        return value.astype(np.int64)
    return value


# ------------------------------------------------------------------- checks


def _from_payload(payload) -> GenreModel:
    """Check every part of a model file's content and build the model (ModelError names the fault)."""
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise ModelError("not a cnngenre model file")
    version = payload["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelError(f"invalid model format version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelError(f"made by a newer cnngenre (model format {version}, this version reads "
                         f"{FORMAT_VERSION}); upgrade cnngenre or retrain with `beet cnngenre -t`")
    if version < FORMAT_VERSION:
        raise ModelError(f"made by an older cnngenre (model format {version}, single-genre); "
                         "retrain with `beet cnngenre -t` (seconds with the default backbone)")
    if not isinstance(payload.get("metadata"), str):
        raise ModelError("metadata is not a JSON string")
    try:
        meta = json.loads(payload["metadata"])
    except ValueError:
        raise ModelError("metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise ModelError("metadata is not a JSON object")

    backbone = meta.get("backbone")
    if backbone not in BACKBONES:
        raise ModelError(f"unknown backbone {backbone!r} (known: {', '.join(BACKBONES)})")
    genres = _names(meta.get("genres"), "genres")
    spellings = _names(meta.get("spellings"), "spellings", distinct=False)
    if len(spellings) != len(genres):
        raise ModelError(f"{len(spellings)} spellings for {len(genres)} genres")
    try:
        settings = FeatureSettings.from_dict(meta.get("settings"))
    except (TypeError, ValueError) as error:
        raise ModelError(f"feature settings: {error}") from None
    architecture = meta.get("architecture")
    if not isinstance(architecture, dict):
        raise ModelError("architecture is not a mapping")

    weights = payload.get("weights")
    if not isinstance(weights, dict) or not all(isinstance(v, np.ndarray) for v in weights.values()):
        raise ModelError("weights are not a mapping of tensors")
    for key, value in weights.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ModelError(f"weight {key} is not finite")
    try:
        get_backbone(backbone).check_weights(weights, architecture, len(genres))
    except ValueError as error:
        raise ModelError(str(error)) from None

    calibration = _array(payload.get("calibration"), "calibration", (2,))
    if not calibration[0] > 0:
        raise ModelError(f"calibration slope {calibration[0]} must be positive")
    heldout_ids = _audio_id_list(meta, "heldout_ids")
    heldout = _array(payload.get("heldout_probabilities"), "held-out probabilities", (len(heldout_ids), len(genres)))
    if ((heldout < 0) | (heldout > 1)).any():
        raise ModelError("held-out probabilities outside 0..1")
    known = payload.get("heldout_known")
    if not isinstance(known, np.ndarray) or known.dtype != bool or known.shape != heldout.shape:
        raise ModelError(f"heldout_known is not a boolean tensor of shape {heldout.shape}")
    _audio_id_list(meta, "trained_on")
    if not isinstance(meta.get("model_id"), str):
        raise ModelError("model id is not a string")

    model = GenreModel(backbone, genres, spellings, settings, weights, architecture, calibration,
                       heldout_ids, heldout, {k: v for k, v in meta.items() if k not in _STRUCTURE}, known)
    if model.model_id != meta["model_id"]:
        raise ModelError(f"its content does not match its id {meta['model_id']} (damaged or edited); "
                         "retrain with `beet cnngenre -t`")
    return model


def _audio_id_list(meta: dict, key: str) -> list:
    value = meta.get(key, [])
    if not isinstance(value, list) or not all(isinstance(i, str) and i for i in value):
        raise ModelError(f"{key} is not a list of audio ids")
    return value


_STRUCTURE = {"backbone", "genres", "spellings", "settings", "architecture", "heldout_ids"}


def _names(value, what: str, distinct: bool = True) -> list:
    if not isinstance(value, list) or not value:
        raise ModelError(f"{what} is not a non-empty list")
    for name in value:
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_GENRE_LENGTH:
            raise ModelError(f"{what}: {name!r} is not a genre name (1 to {MAX_GENRE_LENGTH} characters)")
    if distinct and len(set(value)) != len(value):
        raise ModelError(f"{what} are not distinct")
    return list(value)


def _array(value, what: str, shape: tuple) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
        raise ModelError(f"{what} is not a floating-point tensor")
    if value.shape != shape:
        raise ModelError(f"{what} has shape {value.shape}, expected {shape}")
    if not np.isfinite(value).all():
        raise ModelError(f"{what} is not finite")
    return value
