"""Temporary, exactly-undone changes to a model: hooks, forward overrides, eval mode.

Everything the engine does to a user's model goes through :class:`ModelPatch`, so
one ``finally`` restores hooks, instance attributes and training flags exactly as
they were, including when the patched forward raises. While a patch is open,
PyTorch's fused attention fast path is off (:func:`no_fast_path`), so
``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` run the submodules and
the code the engine hooks and traces. A module whose unit kind keeps its units out
of its output (attention heads before their output projection) runs a forward
that exposes them (``UnitKind.exposing_forward``) while the patch hooks it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

_MISSING = object()


@contextmanager
def no_fast_path() -> Iterator[None]:
    """PyTorch's fused attention fast path off for the block; the previous setting comes back, also on exceptions."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


class ModelPatch:
    """Collects temporary changes to modules and undoes them in reverse order."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []
        self._exposed: set[int] = set()
        self._fast_path = no_fast_path()
        self._fast_path.__enter__()
        self._undo.append(self._restore_fast_path)

    def _restore_fast_path(self) -> None:
        self._fast_path.__exit__(None, None, None)

    def forward_hook(self, module: nn.Module, hook: Callable[..., Any], with_kwargs: bool = False) -> None:
        """Hook ``module``'s output (a module whose kind exposes hidden units returns them with its output)."""
        self._expose(module)
        handle: RemovableHandle = module.register_forward_hook(hook, with_kwargs=with_kwargs)
        self._undo.append(handle.remove)

    def _expose(self, module: nn.Module) -> None:
        if id(module) in self._exposed or "forward" in module.__dict__:
            return
        from explainnn.interventions.kinds import kind_of

        kind = kind_of(module)
        forward = None if kind is None else kind.exposing_forward(module)
        if forward is not None:
            self._exposed.add(id(module))
            self.replace_forward(module, forward)

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
