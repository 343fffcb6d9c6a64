"""The dataset container shared by every loader, and the dataset registry."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch

from explainnn.errors import DataError

Modality = Literal["image", "sequence", "tokens"]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and an explainer need to know about a dataset.

    ``input_shape`` is the shape of one sample without the batch dimension:
    ``(C, H, W)`` for images, ``(T, F)`` for sequences and ``(L,)`` for token ids.
    """

    name: str
    modality: Modality
    input_shape: tuple[int, ...]
    n_classes: int
    class_names: tuple[str, ...]
    source: str
    vocab: tuple[str, ...] | None = None
    pad_index: int | None = None
    unk_index: int | None = None


@dataclass
class Dataset:
    """Train/test tensors plus metadata.

    Images are float32 ``(N, C, H, W)`` in [0, 1]; sequences float32 ``(N, T, F)``;
    tokens int64 ``(N, L)`` left-padded with ``info.pad_index``. Labels are int64
    ``(N,)``. ``mask_*`` (same shape as ``x_*``, bool) marks the ground-truth
    relevant input region where the task has one (``mnist_maj``).
    """

    info: DatasetInfo
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mask_train: torch.Tensor | None = None
    mask_test: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)


DatasetLoader = Callable[..., Dataset]

DATASETS: dict[str, DatasetLoader] = {}
"""Registry: dataset name -> loader. Fill it with :func:`register_dataset`."""

COMMON_PARAMETERS = ("download", "image_size", "seed")
"""Arguments :func:`load_dataset` gives every loader that declares them.

A loader is called as ``loader(root, **common, **options)``; its other keyword
parameters are its dataset-specific options. A loader without an ``image_size``
parameter declares that padding does not apply to it.
"""

_DTYPES = {"image": torch.float32, "sequence": torch.float32, "tokens": torch.int64}


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Add a loader to :data:`DATASETS` under ``name`` (use as a decorator)."""

    def decorator(loader: DatasetLoader) -> DatasetLoader:
        if name in DATASETS:
            raise DataError(f"dataset '{name}' is already registered; choose another name")
        DATASETS[name] = loader
        return loader

    return decorator


def available_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(DATASETS)


def dataset_options(name: str) -> list[str]:
    """The dataset-specific options a registered loader accepts."""
    return sorted(p for p in _keyword_parameters(_loader(name)) if p not in COMMON_PARAMETERS)


def supports_image_size(name: str) -> bool:
    """Whether dataset ``name`` accepts ``image_size`` (square image datasets do)."""
    loader = _loader(name)
    return "image_size" in _keyword_parameters(loader) or _takes_any(loader)


def load_dataset(
    name: str,
    root: str | Path = "data",
    *,
    download: bool = False,
    image_size: int | None = None,
    seed: int = 0,
    **options,
) -> Dataset:
    """Load a registered dataset from ``root`` and check it follows the conventions.

    ``image_size`` zero-pads square images, centred, to ``image_size x image_size``
    (LeNet's classic input is MNIST padded to 32x32); it is an error for datasets
    it does not apply to, so a config never silently means something else.
    """
    loader = _loader(name)
    parameters = _keyword_parameters(loader)
    takes_any = _takes_any(loader)
    if not takes_any:
        unknown = sorted(set(options) - set(parameters))
        if unknown:
            valid = ", ".join(dataset_options(name)) or "none"
            raise DataError(f"unknown option '{unknown[0]}' for dataset '{name}'; valid options: {valid}")
    if image_size is not None and not supports_image_size(name):
        padded = ", ".join(n for n in available_datasets() if supports_image_size(n))
        raise DataError(
            f"image_size applies to square image datasets only ({padded}), not to '{name}'; remove it"
        )
    common = {"download": download, "image_size": image_size, "seed": seed}
    kwargs = {k: v for k, v in common.items() if takes_any or k in parameters}
    dataset = loader(Path(root).expanduser(), **kwargs, **options)
    check_dataset(dataset, name)
    return dataset


def check_dataset(dataset: Dataset, name: str) -> None:
    """Raise DataError if ``dataset`` breaks the tensor conventions (guards user loaders)."""

    def fail(problem: str) -> None:
        raise DataError(f"dataset '{name}' breaks the data conventions: {problem}")

    if not isinstance(dataset, Dataset):
        fail(f"its loader returned {type(dataset).__name__}, not explainnn.data.Dataset")
    info = dataset.info
    if info.modality not in _DTYPES:
        fail(f"modality '{info.modality}' is not one of {', '.join(_DTYPES)}")
    if len(info.class_names) != info.n_classes:
        fail(f"{len(info.class_names)} class names for {info.n_classes} classes")
    for split in ("train", "test"):
        x, y = getattr(dataset, f"x_{split}"), getattr(dataset, f"y_{split}")
        mask = getattr(dataset, f"mask_{split}")
        if x.dtype != _DTYPES[info.modality]:
            fail(f"x_{split} is {x.dtype}, {info.modality} data must be {_DTYPES[info.modality]}")
        if tuple(x.shape[1:]) != tuple(info.input_shape):
            fail(f"x_{split} samples have shape {tuple(x.shape[1:])}, info.input_shape is {info.input_shape}")
        if y.dtype != torch.int64 or y.dim() != 1 or len(y) != len(x):
            fail(f"y_{split} must be int64 of shape ({len(x)},), got {y.dtype} {tuple(y.shape)}")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= info.n_classes):
            fail(f"y_{split} has labels outside 0..{info.n_classes - 1}")
        if mask is not None and (mask.dtype != torch.bool or mask.shape != x.shape):
            fail(f"mask_{split} must be bool with the shape of x_{split}")


def _loader(name: str) -> DatasetLoader:
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; valid datasets: {', '.join(available_datasets())}")
    return DATASETS[name]


def _keyword_parameters(loader: DatasetLoader) -> list[str]:
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters = list(inspect.signature(loader).parameters.values())[1:]
    return [p.name for p in parameters if p.kind in kinds]


def _takes_any(loader: DatasetLoader) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(loader).parameters.values())
