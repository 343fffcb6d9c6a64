"""The small torch helpers every part of the package shares.

Explanations are only comparable across runs when the trained weights and the
random draws are; these helpers are the single place where randomness,
placement and train/eval mode are decided:

* :func:`seed_everything` and :func:`seeded` (seed the global generators, or
  seed them for a block and give the caller its state back);
* :func:`resolve_device` (``auto``/``cpu``/``cuda``) and :func:`model_device`;
* :func:`eval_mode`, which restores *every* submodule's own training flag.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from typing import Iterator

import numpy as np
import torch
from torch import nn

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


def model_device(model: nn.Module) -> torch.device:
    """Where the model's first parameter (else buffer) lives; CPU for a model holding neither."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block, then give each submodule back its own training flag.

    ``model.train(was_training)`` would set one flag on every submodule; a model
    that keeps, say, a frozen batch-norm in eval mode inside a training model
    comes back exactly as it was, also when the block raises.
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Seed Python, NumPy and torch (and ``device``'s CUDA generator) for the block; restore their states after.

    Libraries such as captum and Quantus draw from the global generators; this
    makes each call reproducible without changing what the caller draws next.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


class Adam:
    """Adam (Kingma and Ba 2015) on one tensor, written out: ``torch.optim`` imports the compiler stack (seconds).

    ``maximize`` ascends (the Lagrange multipliers of a constrained search).
    """

    def __init__(self, parameter: torch.Tensor, lr: float, maximize: bool = False,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.parameter, self.lr, self.sign, self.betas, self.eps = parameter, lr, -1.0 if maximize else 1.0, betas, eps
        self.m = torch.zeros_like(parameter)
        self.v = torch.zeros_like(parameter)
        self.t = 0

    def step(self, grad: torch.Tensor) -> None:
        """One update of the parameter (in place) from its gradient ``grad``."""
        b1, b2 = self.betas
        self.t += 1
        self.m.mul_(b1).add_(grad, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        m_hat = self.m / (1 - b1**self.t)
        v_hat = self.v / (1 - b2**self.t)
        with torch.no_grad():
            self.parameter -= self.sign * self.lr * m_hat / (v_hat.sqrt() + self.eps)
