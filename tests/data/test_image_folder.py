"""The ``image_folder`` dataset on the real CIFAR-10 JPEGs (../shared/data) and on small folders."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from explainnn.data import available_datasets, dataset_options, load_dataset, supports_image_size
from explainnn.data.image_folder import class_files
from explainnn.errors import DataError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CIFAR = SHARED / "cifar10_images"
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
needs_cifar = pytest.mark.skipif(
    not all((CIFAR / split / "truck").is_dir() for split in ("train", "test")),
    reason=f"real CIFAR-10 JPEG folders not found in {CIFAR} (test fixtures beside the project)",
)


def pixels(path: Path) -> torch.Tensor:
    """One file decoded independently of the loader: (C, H, W) float in [0, 1]."""
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1)


def write_images(folder: Path, sizes: dict[str, list[tuple[int, int]]], mode: str = "L") -> None:
    """PNG files ``folder/<class>/<i>.png`` of the given sizes, pixel value = 10 * class + i."""
    for label, (name, shapes) in enumerate(sorted(sizes.items())):
        (folder / name).mkdir(parents=True)
        for index, (width, height) in enumerate(shapes):
            Image.new(mode, (width, height), color=10 * label + index if mode == "L" else (label, index, 7)).save(
                folder / name / f"{index}.png"
            )


@needs_cifar
def test_cifar10_folders_hold_the_documented_files():
    for split in ("train", "test"):
        classes, files = class_files(CIFAR / split)
        assert classes == CIFAR10_NAMES
        assert Counter(label for _, label in files) == {label: 1000 for label in range(10)}


@needs_cifar
def test_real_cifar10_jpegs_with_the_given_split():
    data = load_dataset("image_folder", SHARED, folder="cifar10_images", train_per_class=30, test_per_class=20)
    assert data.info.name == "image_folder" and data.info.modality == "image"
    assert data.info.class_names == CIFAR10_NAMES and data.info.input_shape == (3, 32, 32)
    assert data.x_train.shape == (300, 3, 32, 32) and data.x_test.shape == (200, 3, 32, 32)
    assert data.x_train.dtype == torch.float32 and 0 <= float(data.x_train.min()) < float(data.x_train.max()) <= 1
    assert Counter(data.y_train.tolist()) == {k: 30 for k in range(10)}
    assert Counter(data.y_test.tolist()) == {k: 20 for k in range(10)}
    assert "train/ and test/ folders" in data.info.source
    # Shuffled (seeded), not in folder order.
    assert len(set(data.y_test[:10].tolist())) > 1
    # Every sample is a real file of its class, decoded the same way Pillow decodes it alone.
    for x, y, split, count in ((data.x_train, data.y_train, "train", 30), (data.x_test, data.y_test, "test", 20)):
        for index in (0, 7, len(x) - 1):
            name = CIFAR10_NAMES[int(y[index])]
            candidates = [pixels(path) for path in sorted((CIFAR / split / name).glob("*.jpg"))[:count]]
            assert any(torch.equal(x[index], candidate) for candidate in candidates)


@needs_cifar
def test_same_seed_same_order_and_other_seed_another():
    options = {"folder": "cifar10_images", "train_per_class": 5, "test_per_class": 5}
    a, b = load_dataset("image_folder", SHARED, **options), load_dataset("image_folder", SHARED, **options)
    c = load_dataset("image_folder", SHARED, seed=1, **options)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_train, c.y_train)
    assert sorted(map(bytes, a.x_train.flatten(1).numpy())) == sorted(map(bytes, c.x_train.flatten(1).numpy()))


@needs_cifar
def test_a_fraction_split_of_one_class_folder_per_class(tmp_path):
    """Three real classes, 40 files each, linked into the <class>/* layout and split 75/25."""
    for name in ("cat", "dog", "ship"):
        (tmp_path / name).mkdir()
        for path in sorted((CIFAR / "test" / name).glob("*.jpg"))[:40]:
            (tmp_path / name / path.name).symlink_to(path)
    data = load_dataset("image_folder", tmp_path, test_fraction=0.25)
    assert data.info.class_names == ("cat", "dog", "ship")
    assert Counter(data.y_test.tolist()) == {0: 10, 1: 10, 2: 10}
    assert Counter(data.y_train.tolist()) == {0: 30, 1: 30, 2: 30}
    train, test = {bytes(r) for r in data.x_train.flatten(1).numpy()}, {bytes(r) for r in data.x_test.flatten(1).numpy()}
    assert not train & test and len(train | test) == 120
    limited = load_dataset("image_folder", tmp_path, test_fraction=0.25, train_per_class=4, test_per_class=2)
    assert Counter(limited.y_train.tolist()) == {0: 4, 1: 4, 2: 4} and len(limited.y_test) == 6
    assert "stratified 75/25 split" in data.info.source


def test_greyscale_folders_give_one_channel_unless_rgb_is_asked(tmp_path):
    write_images(tmp_path, {"a": [(6, 5)] * 5, "b": [(6, 5)] * 5})
    data = load_dataset("image_folder", tmp_path, test_fraction=0.2)
    assert data.x_train.shape == (8, 1, 5, 6) and data.info.input_shape == (1, 5, 6)
    values = torch.cat([data.x_train, data.x_test]).flatten(1)[:, 0] * 255
    labels = torch.cat([data.y_train, data.y_test])
    assert torch.equal((values.round() // 10).long(), labels)  # pixel 10 * class + i
    rgb = load_dataset("image_folder", tmp_path, test_fraction=0.2, color="rgb")
    assert rgb.x_train.shape == (8, 3, 5, 6)
    assert torch.equal(rgb.x_train[:, :1], data.x_train) and torch.equal(rgb.x_train[:, 2], data.x_train[:, 0])


def test_mixed_sizes_need_resize_and_image_size_pads(tmp_path):
    write_images(tmp_path, {"a": [(8, 8), (8, 8)], "b": [(8, 8), (10, 6)]}, mode="RGB")
    with pytest.raises(DataError, match="resize"):
        load_dataset("image_folder", tmp_path, test_fraction=0.5)
    data = load_dataset("image_folder", tmp_path, test_fraction=0.5, resize=8, image_size=12)
    assert data.x_train.shape == (2, 3, 12, 12)
    assert float(data.x_train[:, :, :2].abs().sum()) == 0  # zero padding around the centred 8x8


def test_files_that_are_not_images_are_ignored_and_bad_images_named(tmp_path):
    write_images(tmp_path, {"a": [(4, 4)] * 2, "b": [(4, 4)] * 2})
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    assert load_dataset("image_folder", tmp_path, test_fraction=0.5).info.class_names == ("a", "b")
    (tmp_path / "b" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        load_dataset("image_folder", tmp_path, test_fraction=0.5)


@pytest.mark.parametrize(
    ("build", "options", "message"),
    [
        (lambda root: None, {"folder": "missing"}, "does not exist"),
        (lambda root: write_images(root, {"a": [(4, 4)] * 2}), {}, "at least 2"),
        (lambda root: (root / "a").mkdir() or (root / "b").mkdir(), {}, "holds no image files"),
        (lambda root: write_images(root, {"a": [(4, 4)] * 2, "b": [(4, 4)] * 2}), {"color": "cmyk"}, "color"),
        (lambda root: write_images(root, {"a": [(4, 4)] * 2, "b": [(4, 4)] * 2}), {"train_per_class": 0}, "train_per_class"),
        (lambda root: write_images(root, {"a": [(4, 4)] * 2, "b": [(4, 4)] * 2}), {"test_fraction": 1.5}, "test_fraction"),
    ],
)
def test_bad_folders_and_options_stop_with_one_line(tmp_path, build, options, message):
    build(tmp_path)
    with pytest.raises(DataError, match=message) as error:
        load_dataset("image_folder", tmp_path, **options)
    assert "\n" not in str(error.value)


def test_given_split_rejects_a_fraction_and_mismatched_classes(tmp_path):
    write_images(tmp_path / "train", {"a": [(4, 4)] * 2, "b": [(4, 4)] * 2})
    write_images(tmp_path / "test", {"a": [(4, 4)] * 2, "c": [(4, 4)] * 2})
    with pytest.raises(DataError, match="test_fraction does not apply"):
        load_dataset("image_folder", tmp_path, test_fraction=0.2)
    with pytest.raises(DataError, match="different class folders"):
        load_dataset("image_folder", tmp_path)


def test_registered_with_its_options():
    assert "image_folder" in available_datasets() and supports_image_size("image_folder")
    assert dataset_options("image_folder") == sorted(
        ["color", "folder", "resize", "test_fraction", "test_per_class", "train_per_class"]
    )
    with pytest.raises(DataError, match="unknown option 'size'.*valid options: color"):
        load_dataset("image_folder", ".", size=3)
