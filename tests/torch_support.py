"""Which tests need PyTorch, the ``[torch]`` extra: the suite passes with and without it installed."""

import importlib.util

import pytest

HAVE_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="needs PyTorch (pip install '.[torch]')")


def cuda_available() -> bool:
    """Whether PyTorch is installed and sees a CUDA GPU."""
    if not HAVE_TORCH:
        return False
    import torch

    return torch.cuda.is_available()
