"""Seeding and device selection, shared by training and every experiment.

Explanations are only comparable across runs when the trained weights are; these
two helpers are the single place where randomness and placement are decided.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from explainnn.errors import ConfigError, UserError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) and pick deterministic cuDNN kernels.

    Full ``torch.use_deterministic_algorithms`` is left off: it makes some CUDA
    operations used by attribution libraries raise, and CPU runs are already
    bit-reproducible for a fixed thread count.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer; got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda"`` (or ``"cuda:N"``) into a ``torch.device``.

    ``auto`` picks CUDA when it is available; asking for CUDA without it is a user
    error rather than a late crash inside the first ``.to()``.
    """
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str):
        raise ConfigError(f"device must be one of {', '.join(DEVICE_CHOICES)}; got {name!r}")
    choice = name.strip().lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda" or choice.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserError(
                f"device '{name}' was requested but CUDA is not available "
                f"(torch {torch.__version__}); use device: cpu or auto"
            )
        device = torch.device(choice)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"device '{name}' does not exist; this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
        return device
    raise ConfigError(f"unknown device '{name}'; valid devices: {', '.join(DEVICE_CHOICES)}")
