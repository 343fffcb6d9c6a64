"""``image_folder``: any folder of image files with one sub-folder per class, read with Pillow.

Two layouts are understood (the common one-folder-per-class convention):

* ``<folder>/train/<class>/*`` and ``<folder>/test/<class>/*``: the given split;
* ``<folder>/<class>/*``: a stratified, seeded split with ``test_fraction`` of each
  class held out for testing (default 0.2).

Class names are the sub-folder names in sorted order (class ``k`` is the ``k``-th
name). Images become float32 ``(N, C, H, W)`` in [0, 1]: colour (3 channels) unless
every file is greyscale (1 channel), or as ``color`` says. All images must have one
size, or be resized to a square with ``resize``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from explainnn.data.base import Dataset, register_dataset
from explainnn.data.images import image_dataset, stratified_split
from explainnn.errors import DataError

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
"""File endings read as images (case-insensitive); other files are ignored."""

COLORS = ("auto", "rgb", "gray")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
"""Pillow modes that hold one intensity per pixel."""

DEFAULT_TEST_FRACTION = 0.2

Files = list[tuple[Path, int]]


def class_files(folder: Path, per_class: int | None = None) -> tuple[tuple[str, ...], Files]:
    """The sorted class sub-folders of ``folder`` and their image files as ``(path, label)``.

    Files are taken in name order; ``per_class`` keeps the first ``per_class`` of each class.
    """
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist; set data.root (and data.options.folder) to it")
    classes = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")))
    files: Files = []
    for label, name in enumerate(classes):
        images = sorted(
            p for p in (folder / name).iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not images:
            raise DataError(f"class folder {folder / name} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        files += [(path, label) for path in images[:per_class]]
    if len(classes) < 2:
        raise DataError(
            f"{folder} must hold one sub-folder per class (at least 2), or train/ and test/ folders "
            f"that do; found {len(classes)}"
        )
    return classes, files


def read_images(files: Files, color: str, resize: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``files`` into uint8 ``(N, C, H, W)`` images (C = 3 for ``rgb``, 1 for ``gray``) and labels."""
    if color not in ("rgb", "gray"):
        raise DataError(f"color must be one of {', '.join(COLORS)}; got {color!r}")
    mode = "RGB" if color == "rgb" else "L"
    arrays, size = [], None
    for path, _ in files:
        with _opened(path) as image:
            image = image.convert(mode)
            if resize is not None:
                image = image.resize((resize, resize), Image.Resampling.BILINEAR)
            if size is None:
                size = image.size
            elif image.size != size:
                raise DataError(
                    f"{path} is {image.size[0]}x{image.size[1]} pixels, the images before it "
                    f"{size[0]}x{size[1]}; set data.options.resize to give them one size"
                )
            arrays.append(np.asarray(image, dtype=np.uint8))
    images = np.stack(arrays)
    images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    return images, np.array([label for _, label in files], dtype=np.int64)


def detect_color(files: Files) -> str:
    """``gray`` when every file is greyscale (read from the headers only), else ``rgb``."""
    for path, _ in files:
        with _opened(path) as image:
            if image.mode not in GRAY_MODES:
                return "rgb"
    return "gray"


def _opened(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"cannot read image {path} ({error})") from None


def _check_count(label: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise DataError(f"{label} must be a positive integer or null; got {value!r}")


def _first_per_class(indices: np.ndarray, labels: np.ndarray, per_class: int | None) -> np.ndarray:
    if per_class is None:
        return indices
    kept: list[int] = []
    counts: dict[int, int] = {}
    for index in indices:
        label = int(labels[index])
        if counts.get(label, 0) < per_class:
            kept.append(index)
            counts[label] = counts.get(label, 0) + 1
    return np.array(kept, dtype=np.int64)


def _given_split_files(base: Path, test_fraction: float | None, train_per_class: int | None,
                       test_per_class: int | None) -> tuple[tuple[str, ...], Files, Files]:
    """The classes and the train and test files of a folder with ``train/`` and ``test/`` sub-folders."""
    if test_fraction is not None:
        raise DataError(f"{base} already holds train/ and test/ folders, so test_fraction does not apply; remove it")
    classes, train_files = class_files(base / "train", train_per_class)
    test_classes, test_files = class_files(base / "test", test_per_class)
    if test_classes != classes:
        differ = sorted(set(classes) ^ set(test_classes))
        raise DataError(
            f"{base}/train and {base}/test hold different class folders (e.g. '{differ[0]}'); "
            "they must hold the same classes"
        )
    return classes, train_files, test_files


@register_dataset("image_folder")
def load_image_folder(
    root: Path,
    *,
    image_size: int | None = None,
    seed: int = 0,
    folder: str | None = None,
    test_fraction: float | None = None,
    color: str = "auto",
    resize: int | None = None,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
) -> Dataset:
    """Images from ``root/folder`` (``root`` itself when ``folder`` is None), one sub-folder per class.

    With ``train/`` and ``test/`` sub-folders those are the split (then
    ``test_fraction`` must stay unset); otherwise ``test_fraction`` (default 0.2) of
    each class is held out, stratified and seeded. ``train_per_class`` and
    ``test_per_class`` keep that many images of each class (the first by file name
    in a given split; the first of the shuffled split otherwise). ``color``:
    ``auto`` (greyscale only when every file is), ``rgb`` or ``gray``; ``resize``:
    resize every image to ``resize x resize`` (bilinear). Both sides come in a
    seeded random order.
    """
    base = root / folder if folder is not None else root
    if color not in COLORS:
        raise DataError(f"color must be one of {', '.join(COLORS)}; got {color!r}")
    for label, value in (("resize", resize), ("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        _check_count(label, value)
    given_split = (base / "train").is_dir() and (base / "test").is_dir()
    if given_split:
        classes, train_files, test_files = _given_split_files(base, test_fraction, train_per_class, test_per_class)
        files = train_files + test_files
    else:
        classes, files = class_files(base)
    if color == "auto":
        color = detect_color(files)
    images, labels = read_images(files, color, resize)
    if given_split:
        rng = np.random.default_rng(seed)
        train_idx = rng.permutation(len(train_files))
        test_idx = len(train_files) + rng.permutation(len(test_files))
        layout = "train/ and test/ folders"
    else:
        fraction = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
        train_idx, test_idx = stratified_split(labels, fraction, seed)
        train_idx = _first_per_class(train_idx, labels, train_per_class)
        test_idx = _first_per_class(test_idx, labels, test_per_class)
        layout = f"stratified {round(100 * (1 - fraction))}/{round(100 * fraction)} split, seed {seed}"
    height, width = images.shape[-2:]
    return image_dataset(
        "image_folder",
        (images[train_idx], labels[train_idx]),
        (images[test_idx], labels[test_idx]),
        class_names=classes,
        source=(
            f"image folder {base} ({layout}; {len(train_idx):,} train / {len(test_idx):,} test "
            f"{color} {height}x{width} images, {len(classes)} classes)"
        ),
        image_size=image_size,
    )
