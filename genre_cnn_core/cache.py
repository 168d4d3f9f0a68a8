"""On-disk cache of per-track features.

An entry is keyed by the file's absolute path, size and modification time
and by everything that shapes the features (the extractor and its
settings), so editing a file or changing a setting never serves stale
features. Entries are written atomically (temporary file, rename) and end
with a CRC-32 of their bytes. They are not fsync'ed: that cost the scratch
backbone's cold run about a third of its time (bench/RESULTS.md), and a
cache may lose entries; after a power failure an entry may be missing or
damaged, and a damaged one fails its check and is recomputed, never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import zlib

import numpy as np


def atomic_write(path: str, write, durable: bool = True) -> None:
    """Write a file through a temporary file in the same folder, then rename.

    Parameters
    ----------
    path : str
        Final location.
    write : callable
        Called with a binary file object open for writing.
    durable : bool
        Flush the data to disk (fsync) before the rename, so that a power
        failure leaves the old file or the whole new one.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes files private; keep the usual mode
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class FeatureCache:
    """Features of tracks stored as ``.npy`` files under one folder.

    Parameters
    ----------
    directory : str or None
        Where entries live; None disables the cache (every lookup misses,
        nothing is written).
    """

    def __init__(self, directory: str | None):
        self.directory = os.fspath(directory) if directory else None

    def key(self, path, namespace: dict) -> str | None:
        """The entry key of a file's features, or None if it cannot be stat'ed."""
        try:
            stat = os.stat(path)
        except OSError:
            return None
        ident = [os.fsdecode(os.path.abspath(path)), stat.st_size, stat.st_mtime_ns, namespace]
        return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def _file(self, key: str) -> str:
        return os.path.join(self.directory, key[:2], key + ".npy")

    def load(self, key: str | None) -> np.ndarray | None:
        """The cached array, or None when absent, disabled or unreadable."""
        if not self.directory or key is None:
            return None
        try:
            with open(self._file(key), "rb") as handle:
                data = handle.read()
            body, check = data[:-_CHECK_BYTES], data[-_CHECK_BYTES:]
            if len(data) <= _CHECK_BYTES or zlib.crc32(body) != int.from_bytes(check, "little"):
                raise ValueError("checksum mismatch")
            return np.load(io.BytesIO(body), allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError):
            # A damaged entry (crash, disk trouble, foreign file): drop it, recompute.
            with contextlib.suppress(OSError):
                os.unlink(self._file(key))
            return None

    def store(self, key: str | None, array: np.ndarray) -> None:
        """Save an array atomically; a full or read-only disk only costs the entry."""
        if not self.directory or key is None:
            return
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        body = buffer.getvalue()
        entry = body + zlib.crc32(body).to_bytes(_CHECK_BYTES, "little")
        with contextlib.suppress(OSError):
            atomic_write(self._file(key), lambda handle: handle.write(entry), durable=False)


_CHECK_BYTES = 4  # CRC-32 after the .npy bytes of an entry
