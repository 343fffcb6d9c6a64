"""``mnist_maj``: a majority-vote task with a known ground-truth explanation.

Each sample is three MNIST digits side by side (1 x 28 x 84): two of class ``a``
and one of class ``b != a`` in random order, labelled ``a``. Only the two majority
digits carry the evidence, so ``mask_*`` (True on their 28x28 blocks) is the
region a faithful explanation should highlight. Built after the "majority"
problem used to evaluate RNN explanations: read as 28 rows of 84 pixels or as
84 columns, a recurrent model has to integrate information across the digits.

``image_size`` does not apply (the samples are not square and padding would move
the ground-truth blocks); asking for it is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from explainnn.data.base import Dataset, DatasetInfo, register_dataset
from explainnn.data.images import DIGIT_NAMES, load_mnist
from explainnn.errors import DataError

DIGITS_PER_SAMPLE = 3


def compose_majority(
    images: torch.Tensor, labels: torch.Tensor, n: int, rng: np.random.Generator
) -> dict[str, torch.Tensor]:
    """Draw ``n`` majority samples from a pool of ``(N, 1, H, W)`` digit images.

    Returns ``x`` (n, 1, H, 3W), ``y``, ``mask``, the per-sample ``blocks`` of the
    majority digits (n, 3) bool, and the pool ``indices`` and ``labels`` (n, 3) of
    the three digits. Labels are balanced: each class is the majority n/10 times
    (up to rounding); the two majority digits are always distinct images.
    """
    labels_np = labels.numpy()
    classes, sizes = np.unique(labels_np, return_counts=True)
    if len(classes) < 2 or sizes.min() < 2:
        raise DataError("mnist_maj needs at least two digits of each of at least two classes")
    by_class = np.argsort(labels_np, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    majority = rng.permutation(np.arange(n) % len(classes))
    minority = (majority + rng.integers(1, len(classes), size=n)) % len(classes)
    first = rng.integers(0, sizes[majority])
    second = (first + rng.integers(1, sizes[majority])) % sizes[majority]
    other = rng.integers(0, sizes[minority])
    odd_slot = rng.integers(0, DIGITS_PER_SAMPLE, size=n)
    blocks = np.ones((n, DIGITS_PER_SAMPLE), dtype=bool)
    blocks[np.arange(n), odd_slot] = False
    indices = np.empty((n, DIGITS_PER_SAMPLE), dtype=np.int64)
    pairs = np.stack([starts[majority] + first, starts[majority] + second], axis=1)
    indices[blocks] = by_class[pairs.ravel()]
    indices[~blocks] = by_class[starts[minority] + other]
    index_tensor = torch.from_numpy(indices)
    height, width = images.shape[-2:]
    x = torch.cat([images[index_tensor[:, k]] for k in range(DIGITS_PER_SAMPLE)], dim=-1)
    block_mask = torch.from_numpy(blocks).repeat_interleave(width, dim=1)
    mask = block_mask[:, None, None, :].expand(n, images.shape[1], height, DIGITS_PER_SAMPLE * width).clone()
    return {
        "x": x,
        "y": torch.from_numpy(classes[majority].astype(np.int64)),
        "mask": mask,
        "blocks": torch.from_numpy(blocks),
        "indices": index_tensor,
        "labels": labels[index_tensor],
    }


@register_dataset("mnist_maj")
def load_mnist_maj(
    root: Path,
    *,
    download: bool = False,
    seed: int = 0,
    n_train: int = 6000,
    n_test: int = 1000,
    source: str = "auto",
) -> Dataset:
    """Majority-of-three MNIST digits, (N, 1, 28, 84), with ground-truth masks.

    Train samples use only digits of mnist's train part and test samples only its
    test part (``source`` as for ``mnist``). ``extra`` holds, per split,
    ``majority_blocks_*`` (N, 3) bool, ``digit_indices_*`` (N, 3) into the mnist
    split the digits came from, and ``digit_labels_*`` (N, 3).
    """
    for option, value in (("n_train", n_train), ("n_test", n_test)):
        if not isinstance(value, int) or value < 1:
            raise DataError(f"mnist_maj option {option} must be a positive integer, got {value!r}")
    mnist = load_mnist(root, download=download, seed=seed, source=source)
    rng = np.random.default_rng(seed)
    train = compose_majority(mnist.x_train, mnist.y_train, n_train, rng)
    test = compose_majority(mnist.x_test, mnist.y_test, n_test, rng)
    info = DatasetInfo(
        name="mnist_maj",
        modality="image",
        input_shape=tuple(train["x"].shape[1:]),
        n_classes=len(DIGIT_NAMES),
        class_names=DIGIT_NAMES,
        source=f"majority of 3 MNIST digits (seed {seed}) from {mnist.info.source}",
    )
    extra = {}
    for split, part in (("train", train), ("test", test)):
        extra[f"majority_blocks_{split}"] = part["blocks"]
        extra[f"digit_indices_{split}"] = part["indices"]
        extra[f"digit_labels_{split}"] = part["labels"]
    return Dataset(
        info=info,
        x_train=train["x"],
        y_train=train["y"],
        x_test=test["x"],
        y_test=test["y"],
        mask_train=train["mask"],
        mask_test=test["mask"],
        extra=extra,
    )
