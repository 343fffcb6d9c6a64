"""Progress bars on terminals only.

Redirected to a file (CI, batch jobs, ``> log``), every update of a bar would be
written out; there the steps' own one-line messages say how far a run is.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable

from tqdm import tqdm


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **options: Any) -> tqdm:
    """A ``tqdm`` bar over ``iterable`` (or with ``total=``), drawn only when ``enabled`` and stderr is a terminal."""
    return tqdm(iterable, disable=not (enabled and sys.stderr.isatty()), **options)
