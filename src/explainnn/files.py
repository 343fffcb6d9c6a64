"""Atomic file writes, so a crash or Ctrl-C never leaves a half-written result.

Every result of a run goes through here: text and JSON (:func:`write_text`,
:func:`write_json`), tables (:func:`write_csv`), pictures (:func:`save_figure`,
at the run's ``plots.dpi``) and anything else through :func:`atomic_path`.
Arguments follow one order: the path first, then what goes into it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (NaN is written as null)."""
    text = json.dumps(_finite(data), indent=2, sort_keys=False, default=str)
    return write_text(path, text + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_npz(path: str | Path, arrays: Mapping[str, Any]) -> Path:
    """Write ``arrays`` (name -> array) as a compressed NPZ, atomically (read back with ``allow_pickle=False``)."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **dict(arrays))
    return Path(path)


def write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]], fields: Sequence[str] | None = None) -> Path:
    """Write ``rows`` (mappings) as a CSV table with a header, atomically.

    ``fields`` picks and orders the columns (keys a row lacks stay empty, keys
    not listed are left out); by default the first row's keys.
    """
    rows = list(rows)
    columns = list(fields) if fields is not None else list(rows[0]) if rows else []
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def save_figure(figure: Figure, path: str | Path | None, *, dpi: int | None = None, tight: bool = False) -> Figure:
    """Save a matplotlib ``figure`` atomically when ``path`` is given (format from the suffix, PNG by default).

    ``dpi`` is the run's ``plots.dpi`` (None: the figure's own); ``tight`` trims
    the white margin (``bbox_inches="tight"``). A figure made without pyplot gets
    an Agg canvas, so it draws and displays anywhere. Returns the figure, so a
    plotting function can end with ``return save_figure(figure, path, dpi=dpi)``.
    """
    from matplotlib.backend_bases import FigureCanvasBase
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if type(figure.canvas) is FigureCanvasBase:
        FigureCanvasAgg(figure)
    if path is not None:
        target = Path(path)
        with atomic_path(target) as tmp:
            figure.savefig(tmp, format=target.suffix.lstrip(".") or "png", dpi=dpi if dpi is not None else "figure",
                           bbox_inches="tight" if tight else None)
    return figure
