"""Progress bars on terminals only.

Redirected to a file (CI, batch jobs, ``> log``), every update of a bar would be
written out; there the steps' own one-line messages say how far a run is.
:func:`bar_shown` tells a caller which of the two it gets, so a loop whose steps
print nothing of their own can print one line per step instead of the bar.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable

from tqdm import tqdm


def bar_shown(enabled: bool = True) -> bool:
    """Whether :func:`progress_bar` draws a bar: ``enabled`` and stderr is a terminal."""
    return enabled and sys.stderr.isatty()


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **options: Any) -> tqdm:
    """A ``tqdm`` bar over ``iterable`` (or with ``total=``), drawn only when ``enabled`` and stderr is a terminal."""
    return tqdm(iterable, disable=not bar_shown(enabled), **options)
