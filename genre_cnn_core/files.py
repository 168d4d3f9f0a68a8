"""Writing files so that a crash leaves the old file or the whole new one, and
reading only regular files, so that a FIFO or a device never blocks a run.

Model and weights files are safetensors: plain tensors and a JSON header, read with
``safetensors.numpy``. That API returns the tensors of a file's bytes but not its header's
metadata, so :func:`read_safetensors` takes the metadata from the same bytes (the header is
8 bytes of length and a JSON object, as the format's specification says) rather than opening
the file a second time.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import struct
import tempfile

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


class NotRegularFile(OSError):
    """A path names a FIFO, a device, a socket or a folder where a file of data was expected.

    ``str(error)`` is the reason alone, without an errno (a message names the file itself).
    """

    def __str__(self) -> str:
        return self.strerror


#: What ``stat`` calls each kind of file that is not a regular one.
_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
          (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder"))


def open_regular(path, max_bytes: int | None = None):
    """Open a file for reading in binary mode, only if it is a regular file.

    A FIFO would block ``open`` until a writer comes, and a device such as
    ``/dev/zero`` reads without end, so the path is opened without blocking
    (``O_NONBLOCK``: opening a FIFO then returns at once), checked on the
    open descriptor (no race with a rename), and refused unless it is a
    regular file of at most ``max_bytes``.

    Parameters
    ----------
    path : str, bytes or os.PathLike
        The file; symbolic links are followed.
    max_bytes : int, optional
        Larger files are refused.

    Returns
    -------
    io.BufferedReader

    Raises
    ------
    NotRegularFile
        When the path is not a regular file (``str(error)`` says what it is)
        or is larger than ``max_bytes``.
    OSError
        When it cannot be opened (see :func:`describe_os_error`).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        kind = next((name for test, name in _KINDS if test(info.st_mode)), None)
        if kind is not None or not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(errno.EINVAL, f"not a regular file ({kind or 'special file'})")
        if max_bytes is not None and info.st_size > max_bytes:
            raise NotRegularFile(errno.EFBIG, f"{info.st_size} bytes, more than the {max_bytes} expected")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def regular_file_problem(path) -> str | None:
    """Why ``path`` cannot be read as a regular file, in a few words, or None.

    Only looks (``stat``): a FIFO is named, never opened.
    """
    try:
        info = os.stat(path)
    except OSError as error:
        return describe_os_error(error)
    if stat.S_ISREG(info.st_mode):
        return None
    if stat.S_ISDIR(info.st_mode):
        return "is a folder, not a file"
    kind = next((name for test, name in _KINDS if test(info.st_mode)), "special file")
    return f"not a regular file ({kind})"


def describe_os_error(error: OSError) -> str:
    """A few words for an error opening or reading a file (no path: the caller names the file)."""
    if isinstance(error, NotRegularFile):
        return error.strerror or str(error)
    reasons = {errno.ENOENT: "file not found", errno.ELOOP: "symlink loop (too many levels of symbolic links)",
               errno.EACCES: "permission denied", errno.EPERM: "permission denied",
               errno.EISDIR: "is a folder, not a file", errno.ENOTDIR: "file not found (a folder on its path "
               "is a file)", errno.ENAMETOOLONG: "file name too long"}
    by_type = {FileNotFoundError: errno.ENOENT, PermissionError: errno.EACCES, IsADirectoryError: errno.EISDIR}
    number = error.errno if error.errno is not None else by_type.get(type(error))
    return reasons.get(number) or error.strerror or str(error)


def read_safetensors(data: bytes) -> tuple[dict, dict]:
    """The tensors and the header metadata of a safetensors file's bytes.

    Returns
    -------
    tensors : dict of str to numpy.ndarray
        Read-only arrays, as ``safetensors.numpy.load`` gives them.
    metadata : dict of str to str
        The header's ``__metadata__`` (empty when it has none).

    Raises
    ------
    ValueError
        The bytes are not a valid safetensors file (the message says why).
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    if len(data) < 8:
        raise ValueError("not a safetensors file (too short)")
    (header_size,) = struct.unpack_from("<Q", data)
    if header_size > len(data) - 8:
        raise ValueError("not a safetensors file (its header would be longer than the file)")
    try:
        header = json.loads(data[8:8 + header_size])
    except (ValueError, RecursionError):
        raise ValueError("not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ValueError("not a safetensors file (its header is not a JSON object)")
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("damaged safetensors header (metadata is not a mapping of strings)")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, TypeError, KeyError) as error:  # KeyError: a dtype numpy lacks
        raise ValueError(f"damaged safetensors file ({str(error).splitlines()[0] if str(error) else error!r})"
                         ) from None
    return tensors, metadata


def safetensors_bytes(tensors: dict, metadata: dict) -> bytes:
    """A safetensors file of numpy arrays and string metadata, as bytes (write it with :func:`atomic_write`)."""
    from safetensors.numpy import save

    return save({name: np.asarray(value, order="C") for name, value in tensors.items()}, metadata=metadata)
