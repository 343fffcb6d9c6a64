"""Old public names kept for one release: calling one works, with a ``DeprecationWarning`` naming the new one."""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def deprecated_alias(function: F, old_name: str, *, removed_in: str = "0.3") -> F:
    """``function`` under its old name ``old_name``: same behaviour, plus a warning that says what to use."""

    @functools.wraps(function)
    def alias(*args: Any, **kwargs: Any) -> Any:
        warnings.warn(f"{old_name} is deprecated and will be removed in {removed_in}; use "
                      f"{function.__module__}.{function.__qualname__}", DeprecationWarning, stacklevel=2)
        return function(*args, **kwargs)

    alias.__doc__ = f"Deprecated alias of :func:`{function.__module__}.{function.__qualname__}`."
    return alias  # type: ignore[return-value]
