"""Datasets for explainnn, loaded by name into one tensor convention.

``load_dataset(name, root, ...)`` returns a :class:`Dataset`: images float32
``(N, C, H, W)`` in [0, 1], sequences float32 ``(N, T, F)``, tokens int64 ``(N, L)``
left-padded, labels int64 ``(N,)``. Built in: ``mnist`` (works offline),
``fashion_mnist``, ``cifar10``, ``digits``, ``mnist_maj`` (with ground-truth
masks), ``mnist1d``, ``sst2`` and ``image_folder`` (any folder of class
sub-folders of image files). Add your own with ``@register_dataset("name")``.

Image datasets also serve recurrent models: the RNN/LSTM/GRU classifiers accept
``(N, C, H, W)`` and read the rows as time steps, so no sequence copy is needed.
"""

from explainnn.data import image_folder, images, mnist_maj, sequences, text  # noqa: F401  (register the loaders)
from explainnn.data.base import (
    DATASETS,
    Dataset,
    DatasetInfo,
    DatasetLoader,
    available_datasets,
    check_dataset,
    dataset_options,
    load_dataset,
    register_dataset,
    supports_image_size,
)
from explainnn.data.download import download_file
from explainnn.data.idx import read_idx
from explainnn.data.images import pad_images, stratified_split
from explainnn.data.text import build_vocab, encode, tokenize

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetInfo",
    "DatasetLoader",
    "available_datasets",
    "build_vocab",
    "check_dataset",
    "dataset_options",
    "download_file",
    "encode",
    "load_dataset",
    "pad_images",
    "read_idx",
    "register_dataset",
    "stratified_split",
    "supports_image_size",
    "tokenize",
]
