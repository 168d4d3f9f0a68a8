"""Writing files so that a crash leaves the old file or the whole new one."""

from __future__ import annotations

import contextlib
import os
import tempfile


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
