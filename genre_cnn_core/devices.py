"""Where the networks run, and how many threads a block of work gets.

:func:`resolve_device` turns a device name into the one the networks use,
once per run (:class:`genre_cnn_core.runtime.RunConfig` calls it);
:func:`compute_threads` limits torch's and the native libraries' thread
pools for a block of work.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys

_CUDA = r"cuda(?::(\d+))?"


def is_device_name(name) -> bool:
    """Whether ``name`` is one :func:`resolve_device` takes: auto, cpu, cuda or cuda:N."""
    return isinstance(name, str) and (name in ("auto", "cpu") or re.fullmatch(_CUDA, name) is not None)


def resolve_device(name: str = "auto") -> str:
    """Where the networks run: ``"cpu"``, or ``"cuda"``/``"cuda:N"``.

    ``"auto"`` is CUDA when PyTorch is installed and sees a GPU. It imports
    torch only on a machine with an NVIDIA driver, so that prediction on a
    CPU-only machine never pays for importing torch.

    Raises
    ------
    ValueError
        An unknown device name.
    RuntimeError
        CUDA asked for, and PyTorch sees no such GPU or is not installed
        (:class:`TorchMissing`).
    """
    if not is_device_name(name):
        raise ValueError(f"unknown device {name!r}; choose auto, cpu, cuda or cuda:N")
    if name == "cpu":
        return "cpu"
    if name == "auto":
        if not _nvidia_driver():
            return "cpu"
        try:
            import torch
        except ImportError:  # the plain install: the CPU
            return "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"
    match = re.fullmatch(_CUDA, name)
    torch = import_torch(f"--device {name}")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
    if match.group(1) and int(match.group(1)) >= torch.cuda.device_count():
        raise RuntimeError(f"device {name!r} asked for, but PyTorch sees {torch.cuda.device_count()} GPU(s)")
    return name


#: What installs PyTorch with cnngenre (setup.py's extra).
TORCH_EXTRA = "beets-cnngenre[torch]"


class TorchMissing(RuntimeError):
    """Something asked for needs PyTorch, which is not installed (one line naming the extra)."""


def import_torch(purpose: str):
    """The torch module, or :class:`TorchMissing` saying that ``purpose`` needs the ``[torch]`` extra.

    PyTorch is an extra: the plain install predicts with both backbones on the
    CPU and trains musicnn's head in numpy; training the scratch CNN and
    running on a GPU need torch.
    """
    try:
        import torch
    except ImportError:
        raise TorchMissing(f"{purpose} needs PyTorch, which is not installed: pip install '{TORCH_EXTRA}' "
                           "(on a GPU, install PyTorch's CUDA build first)") from None
    return torch


def _nvidia_driver() -> bool:
    if sys.platform.startswith("linux"):
        return os.path.exists("/proc/driver/nvidia/version")
    import shutil

    return shutil.which("nvidia-smi") is not None


def set_torch_threads(threads: int) -> int | None:
    """Set torch's thread count if this process uses torch; the previous count, else None.

    Log-mel workers never import torch (it costs seconds per process).
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    before = torch.get_num_threads()
    if before != threads:
        torch.set_num_threads(threads)
    return before


@contextlib.contextmanager
def compute_threads(threads: int):
    """Run a block with ``threads`` threads for torch and for the native thread pools (BLAS, OpenMP),
    then restore the caller's counts.

    On a machine whose cores are busy (with worker processes, or anything
    else), a second thread of a pool spin-waits for the first and slows the
    block by an order of magnitude or more (bench/RESULTS.md); one thread
    costs little on an idle machine.
    """
    from threadpoolctl import threadpool_limits

    before = set_torch_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        if before is not None:
            set_torch_threads(before)


def available_cores() -> int:
    """Cores this process may use: affinity, container limits and ``LOKY_MAX_CPU_COUNT`` included."""
    from joblib.externals.loky import cpu_count

    return cpu_count()
