"""Fixtures shared by the test modules: one torch thread, small trained models, the shared-data folder.

* ``one_thread`` (automatic): tiny models run fastest, and steadiest on a shared
  2-core machine, on one thread.
* ``train_small``: ``train_small("lenet", dataset, epochs=2, **params)`` builds
  and briefly trains a model, seeded, without progress bars.
* ``shared_data``: the folder of real data files beside the project
  (``../shared/data``); a test that asks for it is marked ``data`` (select or
  deselect with ``-m data``) and skipped when the folder is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def one_thread():
    """Every test on one torch thread (tiny models run fastest, and steadiest on a shared 2-core machine, on one),
    restored after the test so no test's setting leaks into the next."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def train_small() -> Callable[..., torch.nn.Module]:
    """A function that builds ``name`` for ``dataset`` and trains it briefly (seeded)."""
    from explainnn.models import build_model
    from explainnn.torch_utils import seed_everything
    from explainnn.training import train_model

    def train(name: str, dataset: Any, epochs: int = 2, *, seed: int = 0, lr: float = 5e-3,
              **params: Any) -> torch.nn.Module:
        seed_everything(seed)
        model = build_model(name, dataset.info, **params)
        train_model(model, dataset, epochs=epochs, batch_size=32, lr=lr, seed=seed, progress=False)
        return model

    return train


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (skips the test when it is missing)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared data folder {SHARED_DATA} is missing")
    return SHARED_DATA


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the shared data folder (directly or through a fixture) with ``data``."""
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.data)
