"""Temporary, exactly-undone changes to a model: hooks, forward overrides, eval mode.

Everything the engine does to a user's model goes through :class:`ModelPatch`, so
one ``finally`` restores hooks, instance attributes and training flags exactly as
they were, including when the patched forward raises.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn
from torch.utils.hooks import RemovableHandle

_MISSING = object()


class ModelPatch:
    """Collects temporary changes to modules and undoes them in reverse order."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def forward_hook(self, module: nn.Module, hook: Callable[..., Any], with_kwargs: bool = False) -> None:
        handle: RemovableHandle = module.register_forward_hook(hook, with_kwargs=with_kwargs)
        self._undo.append(handle.remove)

    def forward_pre_hook(self, module: nn.Module, hook: Callable[..., Any], with_kwargs: bool = False) -> None:
        handle = module.register_forward_pre_hook(hook, with_kwargs=with_kwargs)
        self._undo.append(handle.remove)

    def replace_forward(self, module: nn.Module, forward: Callable[..., Any]) -> None:
        """Make ``module(...)`` call ``forward`` (hooks still run around it)."""
        previous = module.__dict__.get("forward", _MISSING)
        module.forward = forward

        def undo() -> None:
            if previous is _MISSING:
                del module.forward
            else:
                module.forward = previous

        self._undo.append(undo)

    def eval_mode(self, model: nn.Module) -> None:
        """Switch every module to eval mode; the exact per-module flags come back."""
        flags = [(module, module.training) for module in model.modules()]
        model.eval()

        def undo() -> None:
            for module, training in flags:
                module.training = training

        self._undo.append(undo)

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()

    def __enter__(self) -> "ModelPatch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()
