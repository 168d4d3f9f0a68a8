"""A trained genre model and its file.

A model is a backbone's name, its feature settings, the weights of the
trainable part, the calibration that turns its scores into probabilities,
the genres, and plain metadata (training report, the audio ids of the
tracks it learned from and their held-out predictions).

The file is a safetensors file: the tensors (``weights/<name>``,
``calibration``, ``heldout_probabilities``, ``heldout_known``) and, in its
header's metadata, one JSON object holding everything else. Any tool that
reads safetensors opens it; nothing in it can run code, and neither writing
nor reading it needs torch. Nothing in it is believed unchecked: the file's
type and size before it is read, its tensors' names, types, shapes and
values against the architecture, every string (type, length, no control
characters, no list delimiter where it becomes a field), the feature
settings' bounds, and an id derived from the whole content.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import unicodedata

import numpy as np

from .backbones import BACKBONES, Backbone, get_backbone
from .features import FeatureSettings
from .files import (
    atomic_write,
    describe_os_error,
    open_regular,
    read_safetensors,
    regular_file_problem,
    safetensors_bytes,
)
from .genres import MAX_GENRE_LENGTH
from .metrics import calibrate

#: Version of the model file layout; other versions are refused.
FORMAT_VERSION = 3
#: The header metadata's ``format`` of a cnngenre model file.
FILE_FORMAT = "cnngenre-model"
#: Model files larger than this are refused before being read.
MAX_MODEL_BYTES = 256 * 1024 * 1024
#: Longest string the metadata may hold other than names (dates, notes, audio ids).
MAX_TEXT_LENGTH = 1000
#: What separates the values of a beets list field: in templates and on the command line
#: (``DelimitedString.fmt_delimiter``), and in the database (``MULTI_VALUE_DSV``).
LIST_DELIMITERS = ("; ", "\\\u2400")
#: Tensors a model file holds besides ``weights/<name>``.
_TENSORS = ("calibration", "heldout_probabilities", "heldout_known")
_WEIGHTS = "weights/"
#: Unicode categories no string in a model may hold: control and format characters
#: (ANSI escapes, bidirectional overrides), line and paragraph separators, lone surrogates.
_REFUSED_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs"}
#: Deepest nesting of the metadata (a training report is 4 levels deep).
_MAX_DEPTH = 16


class ModelError(Exception):
    """A model file is missing, unreadable, unsafe or invalid (one-line reason)."""


@dataclasses.dataclass
class GenreModel:
    """A trained genre model.

    Attributes
    ----------
    backbone : Backbone
        A registered backbone (:data:`genre_cnn_core.backbones.BACKBONES`); given by its name, it is
        looked up once, when the model is made.
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

    backbone: Backbone
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
        if isinstance(self.backbone, str):  # a name: looked up once, here
            self.backbone = get_backbone(self.backbone)
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
        prefix = self.metadata.get("name") or self.backbone.name
        return f"{prefix}-{digest.hexdigest()[:10]}"

    @property
    def trained_on(self) -> set:
        """Audio ids of the tracks the model learned from."""
        return set(self.metadata.get("trained_on", []))

    def extractor(self, device: str = "cpu"):
        """The feature extractor this model reads."""
        return self.backbone.extractor(self.settings, device)

    def logits(self, features: list, device: str = "cpu") -> np.ndarray:
        """Uncalibrated genre scores, ``(tracks, genres)``."""
        return self.backbone.logits(self.weights, self.architecture, features, device)

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
        meta.update(backbone=self.backbone.name, genres=list(self.genres), spellings=list(self.spellings),
                    settings=self.settings.as_dict(), architecture=self.architecture,
                    heldout_ids=list(self.heldout_ids))
        return meta

    def _arrays(self) -> dict:
        arrays = {f"weights/{name}": value for name, value in self.weights.items()}
        arrays.update(calibration=self.calibration, heldout_probabilities=self.heldout_probabilities,
                      heldout_known=self.heldout_known)
        return arrays

    def save(self, path: str) -> None:
        """Write the model file atomically (temporary file, fsync, rename).

        Raises
        ------
        ModelError
            The model would be refused when loaded (a genre holding a control
            character or a list delimiter, ...): nothing is written.
        OSError
            The file cannot be written; the previous one is unchanged.
        """
        meta = self._metadata_json()
        meta["model_id"] = self.model_id
        header = {"format": FILE_FORMAT, "format_version": str(FORMAT_VERSION), "model": json.dumps(meta)}
        data = safetensors_bytes(self._arrays(), header)
        try:
            _from_bytes(data)
        except ModelError as error:
            raise ModelError(f"cannot save the model to {os.fsdecode(path)}: {error}") from None
        atomic_write(path, lambda handle: handle.write(data))

    @classmethod
    def load(cls, path: str) -> "GenreModel":
        """Load and check a model file; nothing stored in it ever runs.

        Raises
        ------
        ModelError
            Missing, too large, not a regular file, damaged, from another
            version (a PyTorch file of an older cnngenre), or with invalid
            content; one line naming the file and the reason.
        """
        name = os.fsdecode(path)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise ModelError(f"{name}: no model file") from None
        except OSError as error:
            raise ModelError(f"{name}: cannot read the model file ({describe_os_error(error)})") from None
        if not stat.S_ISREG(info.st_mode):  # never opened: opening a device or a FIFO can block or act
            raise ModelError(f"{name}: {regular_file_problem(path) or 'not a regular file'}")
        if info.st_size > MAX_MODEL_BYTES:
            raise ModelError(f"{name}: {info.st_size} bytes, larger than any cnngenre model "
                             f"({MAX_MODEL_BYTES // 2**20} MiB at most)")
        try:
            with open_regular(path, MAX_MODEL_BYTES) as handle:  # checked again: it may have been replaced
                data = handle.read(MAX_MODEL_BYTES + 1)
        except OSError as error:
            raise ModelError(f"{name}: cannot read the model file ({describe_os_error(error)})") from None
        if len(data) > MAX_MODEL_BYTES:
            raise ModelError(f"{name}: larger than any cnngenre model ({MAX_MODEL_BYTES // 2**20} MiB at most)")
        try:
            return _from_bytes(data)
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


def _from_bytes(data: bytes) -> GenreModel:
    """Check every part of a model file's content and build the model (ModelError names the fault)."""
    if data.startswith(b"PK\x03\x04"):  # a zip archive: the PyTorch file cnngenre 0.2 wrote; never unpickled
        raise ModelError("made by an older cnngenre (a PyTorch file); retrain with `beet cnngenre -t` "
                         "(seconds with the default backbone)")
    if data.startswith(b"\x80"):
        raise ModelError("a Python pickle, which cnngenre never loads: a model file holds only tensors and "
                         "plain data")
    try:
        tensors, header = read_safetensors(data)
    except ValueError as error:
        raise ModelError(f"not a readable model file ({error})") from None
    if header.get("format") != FILE_FORMAT:
        raise ModelError("not a cnngenre model file (a safetensors file without cnngenre's metadata)")
    version = header.get("format_version", "")
    if not (version.isascii() and version.isdigit() and len(version) < 6):
        raise ModelError(f"invalid model format version {_brief(version)}")
    if int(version) > FORMAT_VERSION:
        raise ModelError(f"made by a newer cnngenre (model format {int(version)}, this version reads "
                         f"{FORMAT_VERSION}); upgrade cnngenre or retrain with `beet cnngenre -t`")
    if int(version) < FORMAT_VERSION:
        raise ModelError(f"made by an older cnngenre (model format {int(version)}); "
                         "retrain with `beet cnngenre -t` (seconds with the default backbone)")
    unknown = sorted(key for key in tensors if key not in _TENSORS and not key.startswith(_WEIGHTS))
    if unknown:
        raise ModelError(f"unknown tensor {_brief(unknown[0])} (a model holds {_WEIGHTS}*, {', '.join(_TENSORS)})")
    if "model" not in header:
        raise ModelError("no model metadata in the file's header")
    try:
        meta = json.loads(header["model"])
    except (ValueError, RecursionError):
        raise ModelError("metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise ModelError("metadata is not a JSON object")
    _check_texts(meta)

    backbone = meta.get("backbone")
    if backbone not in BACKBONES:
        raise ModelError(f"unknown backbone {_brief(backbone)} (known: {', '.join(BACKBONES)})")
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

    weights = {key[len(_WEIGHTS):]: value for key, value in tensors.items() if key.startswith(_WEIGHTS)}
    for key, value in weights.items():
        if value.dtype not in (np.float32, np.int64):  # as saved (_stored): batch counters are integers
            raise ModelError(f"weight {_brief(key)} is neither a float32 nor an int64 tensor")
        if not np.isfinite(value).all():
            raise ModelError(f"weight {key} is not finite")
    try:
        backbone = get_backbone(backbone)
        backbone.check_weights(weights, architecture, len(genres))
    except ValueError as error:
        raise ModelError(str(error)) from None

    calibration = _array(tensors.get("calibration"), "calibration", (2,))
    if not calibration[0] > 0:
        raise ModelError(f"calibration slope {calibration[0]} must be positive")
    heldout_ids = _audio_id_list(meta, "heldout_ids")
    heldout = _array(tensors.get("heldout_probabilities"), "held-out probabilities", (len(heldout_ids), len(genres)))
    if ((heldout < 0) | (heldout > 1)).any():
        raise ModelError("held-out probabilities outside 0..1")
    known = tensors.get("heldout_known")
    if not isinstance(known, np.ndarray) or known.dtype != bool or known.shape != heldout.shape:
        raise ModelError(f"heldout_known is not a boolean tensor of shape {heldout.shape}")
    _audio_id_list(meta, "trained_on")
    if not isinstance(meta.get("model_id"), str):
        raise ModelError("model id is not a string")
    name = meta.get("name")
    if name is not None:
        _names([name], "model name")

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


def _brief(value) -> str:
    """A value read from the file, short and printable, for a message (repr escapes control characters)."""
    if isinstance(value, str):
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)[:40]
    return f"a {type(value).__name__}"


def _check_texts(value, where: str = "metadata", depth: int = 0) -> None:
    """Refuse any string in ``value`` (keys included) longer than :data:`MAX_TEXT_LENGTH` or holding a
    control character: strings of a model reach terminals, logs and the library."""
    if depth > _MAX_DEPTH:
        raise ModelError(f"{where}: nested deeper than {_MAX_DEPTH} levels")
    if isinstance(value, str):
        if len(value) > MAX_TEXT_LENGTH:
            raise ModelError(f"{where}: a string of {len(value)} characters (at most {MAX_TEXT_LENGTH})")
        # isprintable() is False for every refused category (and for a few harmless ones, such as
        # no-break spaces): the per-character look runs only on such strings.
        if not value.isprintable() and any(unicodedata.category(char) in _REFUSED_CATEGORIES for char in value):
            raise ModelError(f"{where}: {_brief(value)} holds a control character")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_texts(key, where, depth + 1)
            _check_texts(item, f"{where}.{key}" if where.count(".") < 3 and len(key) <= 40 else where, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_texts(item, where, depth + 1)


def _names(value, what: str, distinct: bool = True) -> list:
    """Genre names (or a model name): text that becomes a field value, an item of a beets list field."""
    if not isinstance(value, list) or not value:
        raise ModelError(f"{what} is not a non-empty list")
    for name in value:
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_GENRE_LENGTH:
            raise ModelError(f"{what}: {_brief(name)} is not a name (1 to {MAX_GENRE_LENGTH} characters)")
        if name != name.strip() or any(delimiter in name for delimiter in LIST_DELIMITERS):
            raise ModelError(f"{what}: {_brief(name)} has spaces around it or holds a list delimiter ('; ')")
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
