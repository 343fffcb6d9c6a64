"""Sequence datasets: MNIST-1D, procedurally generated 40-step signals."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from explainnn.data.base import Dataset, DatasetInfo, register_dataset
from explainnn.data.images import DIGIT_NAMES
from explainnn.errors import DataError


def generate_mnist1d(num_samples: int, seed: int) -> dict[str, np.ndarray]:
    """Run the ``mnist1d`` package's generator (no download, no pickle).

    The generator reseeds Python's and NumPy's global random state; both are
    restored afterwards so loading data does not change a caller's randomness.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        return make_dataset(args)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


@register_dataset("mnist1d")
def load_mnist1d(
    root: Path, *, seed: int = 0, num_samples: int = 5000, generator_seed: int | None = None
) -> Dataset:
    """MNIST-1D (Greydanus, 2020): (N, 40, 1) signals of the ten digit templates.

    Generated, not downloaded; the package's 80/20 split (4,000/1,000 by default).
    The generator is seeded with ``generator_seed`` if given, else the project seed.
    """
    if not isinstance(num_samples, int) or num_samples < 20 or num_samples % 10:
        raise DataError(
            f"mnist1d option num_samples must be a multiple of 10 (equal counts per class) "
            f"and at least 20, got {num_samples!r}"
        )
    generator = seed if generator_seed is None else generator_seed
    data = generate_mnist1d(num_samples, generator)

    def signals(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(x, dtype=np.float32))[..., None]

    x_train, x_test = signals(data["x"]), signals(data["x_test"])
    info = DatasetInfo(
        name="mnist1d",
        modality="sequence",
        input_shape=tuple(x_train.shape[1:]),
        n_classes=len(DIGIT_NAMES),
        class_names=DIGIT_NAMES,
        source=f"mnist1d generator ({num_samples:,} signals, seed {generator}, "
        f"{len(x_train):,} train / {len(x_test):,} test)",
    )
    return Dataset(
        info=info,
        x_train=x_train,
        y_train=torch.as_tensor(data["y"], dtype=torch.int64),
        x_test=x_test,
        y_test=torch.as_tensor(data["y_test"], dtype=torch.int64),
    )
