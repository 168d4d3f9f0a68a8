"""On-disk cache of per-track features, keyed by the audio itself.

An entry's key is the track's audio id (:func:`genre_cnn_core.container.
audio_identity`: the audio payload, not the tags, the path or the mtime)
and everything that shapes the features (the extractor and its settings).
So tag writes, ``beet move``, ``beet write`` and copy-imports keep hitting
the cache, and a change to the audio or a setting misses it.

Each entry records what it is for (key, extractor namespace, shape, dtype)
and ends with a CRC-32 of its bytes; a read checks all of it, and an entry
that fails any check (damaged, copied from another track, from another
extractor) is removed and recomputed, never used. Nothing in an entry is
believed: only a regular file of at most :data:`MAX_ENTRY_BYTES` is read (a
FIFO or a link to ``/dev/zero`` in its place would block or read without
end), and any failure to decode it, whatever its header holds, costs one
recomputation, never the run. Entries are written atomically (temporary
file, rename) but not fsync'ed: a cache may lose entries, and after a power
failure a damaged one fails its check.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import zlib

import numpy as np

from .files import atomic_write, open_regular

_MAGIC = b"cnngenre-features-1\n"
_CHECK_BYTES = 4  # CRC-32 of everything before it
_HEADER_BYTES = 4  # length of the JSON header
_SUFFIX = ".npy"

#: Entries larger than this are neither written nor read: the features of
#: one track under any settings a model may ask for are far smaller.
MAX_ENTRY_BYTES = 64 * 2**20


def namespace_digest(namespace: dict) -> str:
    """Short digest of an extractor's namespace (its kind, version and settings)."""
    return hashlib.sha1(json.dumps(namespace, sort_keys=True).encode()).hexdigest()[:12]


class FeatureCache:
    """Features of tracks stored as files under one folder.

    Parameters
    ----------
    directory : str or None
        Where entries live; None disables the cache (every lookup misses,
        nothing is written).

    Attributes
    ----------
    problem : str or None
        Why the folder cannot be used (it is then disabled), for the caller
        to say once.
    """

    def __init__(self, directory: str | None):
        self.directory = os.fspath(directory) if directory else None
        self.problem = None
        if self.directory:
            try:
                os.makedirs(self.directory, exist_ok=True)
                if not os.access(self.directory, os.W_OK | os.X_OK):
                    raise PermissionError("not writable")
            except OSError as error:
                self.problem = f"{self.directory}: {error.strerror or error}"
                self.directory = None

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    @staticmethod
    def key(identity: str | None, namespace: dict) -> str | None:
        """The entry key of a track's features: its audio id and the extractor's namespace."""
        return None if identity is None else f"{identity}-{namespace_digest(namespace)}"

    def _file(self, key: str) -> str:
        return os.path.join(self.directory, key[:2], key + _SUFFIX)

    def load(self, key: str | None, namespace: dict) -> np.ndarray | None:
        """The cached array, or None when absent, disabled, or failing any check."""
        if not self.directory or key is None:
            return None
        path = self._file(key)
        try:
            with open_regular(path, MAX_ENTRY_BYTES) as handle:
                data = handle.read(MAX_ENTRY_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError:
            self.discard(key)
            return None
        try:
            return _decode(data, key, namespace)
        except Exception:  # whatever a damaged or forged entry holds, it is recomputed, never the run's end
            self.discard(key)
            return None

    def discard(self, key: str) -> None:
        """Remove an entry (a damaged one, or one its extractor rejects)."""
        if self.directory:
            with contextlib.suppress(OSError):
                os.unlink(self._file(key))

    def store(self, key: str | None, namespace: dict, array: np.ndarray) -> None:
        """Save an array atomically; a full or read-only disk only costs the entry."""
        if not self.directory or key is None:
            return
        entry = _encode(array, key, namespace)
        if len(entry) > MAX_ENTRY_BYTES:
            return
        with contextlib.suppress(OSError):
            atomic_write(self._file(key), lambda handle: handle.write(entry), durable=False)

    def entries(self):
        """``(audio id, path, bytes)`` of every entry."""
        if not self.directory:
            return
        for folder, _, names in os.walk(self.directory):
            for name in names:
                if name.endswith(_SUFFIX) and not name.startswith("."):
                    path = os.path.join(folder, name)
                    with contextlib.suppress(OSError):
                        yield name[:-len(_SUFFIX)].rsplit("-", 1)[0], path, os.path.getsize(path)

    def size(self) -> tuple[int, int]:
        """Number of entries and their bytes."""
        count = total = 0
        for _, _, size in self.entries():
            count += 1
            total += size
        return count, total

    def prune(self, keep: set, pretend: bool = False) -> tuple[int, int]:
        """Remove the entries of every audio id not in ``keep`` (with ``pretend``, only count them); the number
        removed and their bytes."""
        count = total = 0
        for identity, path, size in list(self.entries()):
            if identity not in keep:
                with contextlib.suppress(OSError):
                    if not pretend:
                        os.unlink(path)
                    count += 1
                    total += size
        return count, total


def _encode(array: np.ndarray, key: str, namespace: dict) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    header = json.dumps({"key": key, "namespace": namespace, "shape": list(array.shape),
                         "dtype": array.dtype.str}, sort_keys=True).encode()
    body = _MAGIC + len(header).to_bytes(_HEADER_BYTES, "little") + header + buffer.getvalue()
    return body + zlib.crc32(body).to_bytes(_CHECK_BYTES, "little")


def _decode(data: bytes, key: str, namespace: dict) -> np.ndarray:
    """The array of an entry, after checking its checksum and that it is the entry asked for."""
    body, check = data[:-_CHECK_BYTES], data[-_CHECK_BYTES:]
    if len(data) <= len(_MAGIC) + _HEADER_BYTES + _CHECK_BYTES or not body.startswith(_MAGIC):
        raise ValueError("not a cache entry")
    if zlib.crc32(body) != int.from_bytes(check, "little"):
        raise ValueError("checksum mismatch")
    start = len(_MAGIC) + _HEADER_BYTES
    length = int.from_bytes(body[len(_MAGIC):start], "little")
    header = json.loads(body[start:start + length])
    if not isinstance(header, dict):
        raise ValueError("the entry's header is not a mapping")
    if header.get("key") != key or header.get("namespace") != namespace:
        raise ValueError("entry of another track or extractor")
    array = np.load(io.BytesIO(body[start + length:]), allow_pickle=False)
    if list(array.shape) != header.get("shape") or array.dtype.str != header.get("dtype"):
        raise ValueError("entry does not match its header")
    return array
