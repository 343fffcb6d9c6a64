"""File formats, downloads and errors of the data layer, on tiny files written to tmp dirs."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from explainnn.data import download, load_dataset, read_idx
from explainnn.data.download import download_file, file_md5
from explainnn.data.images import CIFAR10_BATCHES, CIFAR10_NAMES, FASHION_NAMES, IDX_FILES
from explainnn.errors import DataError

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}


def idx_bytes(array: np.ndarray) -> bytes:
    array = array.astype(array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype)
    header = bytes([0, 0, IDX_CODES[array.dtype], array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    data = idx_bytes(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_idx_set(folder: Path, n_train: int = 30, n_test: int = 20, gz: bool = True, seed: int = 0) -> dict:
    """The four MNIST-style IDX files with random pixels and labels 0..9 cycling."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, array in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), array)
    return arrays


def cifar_batch(n: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    records = np.concatenate([labels[:, None], images.reshape(n, -1)], axis=1)
    return records.tobytes(), images, labels


def write_cifar(folder: Path, layout: str, skip: str | None = None) -> dict:
    """Six tiny batches as a tar.gz ("archive"), or extracted ("extracted")."""
    batches = {name: cifar_batch(3 if name != "test_batch.bin" else 4, seed) for seed, name in enumerate(CIFAR10_BATCHES)}
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "archive":
        with tarfile.open(folder / "cifar-10-binary.tar.gz", "w:gz") as tar:
            for name, (data, _, _) in batches.items():
                if name == skip:
                    continue
                member = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
    else:
        (folder / "cifar-10-batches-bin").mkdir()
        for name, (data, _, _) in batches.items():
            (folder / "cifar-10-batches-bin" / name).write_bytes(data)
    return batches


# --- IDX ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("dtype", [np.uint8, ">i4", ">f4"])
def test_read_idx_round_trips_dtypes_and_compression(tmp_path, suffix, dtype):
    array = (np.arange(24).reshape(2, 3, 4) * 3).astype(dtype)
    result = read_idx(write_idx(tmp_path / f"x.idx{suffix}", array))
    assert result.shape == (2, 3, 4)
    assert result.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(result, array)
    assert result.flags.writeable


def test_read_idx_rejects_bad_magic_truncation_and_missing_files(tmp_path):
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x01\x02\x08\x01" + bytes(8))
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(bad)
    truncated = tmp_path / "short.idx"
    truncated.write_bytes(idx_bytes(np.zeros((4, 5), np.uint8))[:-3])
    with pytest.raises(DataError, match="damaged"):
        read_idx(truncated)
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "missing.idx")
    not_gzip = tmp_path / "fake.idx.gz"
    not_gzip.write_bytes(b"plain bytes")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(not_gzip)


def test_mnist_reads_four_idx_files_gzipped_or_plain(tmp_path):
    for gz in (True, False):
        root = tmp_path / ("gz" if gz else "plain")
        arrays = write_idx_set(root / "mnist", gz=gz)
        data = load_dataset("mnist", root)
        assert "IDX" in data.info.source and "30 train / 20 test" in data.info.source
        assert data.x_train.shape == (30, 1, 28, 28) and data.x_test.shape == (20, 1, 28, 28)
        expected = torch.from_numpy(arrays["train-images-idx3-ubyte"]).float() / 255
        torch.testing.assert_close(data.x_train[:, 0], expected)
        assert data.y_test.tolist() == (np.arange(20) % 10).tolist()


def test_mnist_idx_source_names_missing_files_and_download_option(tmp_path):
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(DataError) as error:
        load_dataset("mnist", tmp_path, source="idx")
    message = str(error.value)
    assert str(tmp_path / "mnist") in message and "download: true" in message
    assert "train-images-idx3-ubyte.gz" in message and "t10k-images-idx3-ubyte.gz" in message
    assert "t10k-labels" not in message
    assert "\n" not in message


def test_mismatched_idx_pair_is_an_error(tmp_path):
    arrays = write_idx_set(tmp_path / "mnist")
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", arrays["t10k-labels-idx1-ubyte"][:5])
    with pytest.raises(DataError, match="do not match"):
        load_dataset("mnist", tmp_path)


def test_fashion_mnist_has_class_names_and_pads(tmp_path):
    write_idx_set(tmp_path / "fashion_mnist", gz=False)
    data = load_dataset("fashion_mnist", tmp_path, image_size=32)
    assert data.info.class_names == FASHION_NAMES and data.info.class_names[0] == "T-shirt/top"
    assert data.info.input_shape == (1, 32, 32)
    with pytest.raises(DataError, match="fashion_mnist files missing"):
        load_dataset("fashion_mnist", tmp_path / "elsewhere")


# --- CIFAR-10 binary ------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["archive", "extracted"])
def test_cifar10_binary_archive_and_extracted(tmp_path, layout):
    batches = write_cifar(tmp_path / "cifar10", layout)
    data = load_dataset("cifar10", tmp_path)
    assert data.info.class_names == CIFAR10_NAMES
    assert data.x_train.shape == (15, 3, 32, 32) and data.x_test.shape == (4, 3, 32, 32)
    _, images, labels = batches["data_batch_2.bin"]
    torch.testing.assert_close(data.x_train[3:6], torch.from_numpy(images).float() / 255)
    assert data.y_train[3:6].tolist() == labels.tolist()
    _, images, labels = batches["test_batch.bin"]
    torch.testing.assert_close(data.x_test, torch.from_numpy(images).float() / 255)
    assert ("tar.gz" in data.info.source) == (layout == "archive")


def test_cifar10_errors(tmp_path):
    with pytest.raises(DataError, match="download: true"):
        load_dataset("cifar10", tmp_path)
    write_cifar(tmp_path / "partial" / "cifar10", "archive", skip="data_batch_3.bin")
    with pytest.raises(DataError, match="lacks data_batch_3.bin"):
        load_dataset("cifar10", tmp_path / "partial")
    broken = tmp_path / "broken" / "cifar10"
    broken.mkdir(parents=True)
    (broken / "cifar-10-binary.tar.gz").write_bytes(b"not a tar file")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset("cifar10", tmp_path / "broken")
    odd = tmp_path / "odd" / "cifar10"
    write_cifar(odd, "extracted")
    (odd / "cifar-10-batches-bin" / "test_batch.bin").write_bytes(bytes(100))
    with pytest.raises(DataError, match="not a multiple of 3073"):
        load_dataset("cifar10", tmp_path / "odd")


# --- downloads -------------------------------------------------------------------------------


@pytest.fixture()
def mirror(tmp_path):
    folder = tmp_path / "mirror"
    folder.mkdir()
    return folder


def test_download_file_verifies_md5_and_leaves_no_partial_files(tmp_path, mirror):
    payload = b"dataset bytes" * 1000
    (mirror / "file.bin").write_bytes(payload)
    target = tmp_path / "target"
    good = hashlib.md5(payload).hexdigest()
    path = download_file("file.bin", target, [mirror.as_uri() + "/"], md5=good)
    assert path.read_bytes() == payload and file_md5(path) == good
    with pytest.raises(DataError) as error:
        download_file("file.bin", tmp_path / "other", [mirror.as_uri() + "/"], md5="0" * 32)
    assert "md5 mismatch" in str(error.value)
    assert list((tmp_path / "other").iterdir()) == []


def test_download_falls_back_to_the_next_mirror(tmp_path, mirror):
    (mirror / "file.bin").write_bytes(b"abc")
    dead = (tmp_path / "dead").as_uri() + "/"
    path = download_file("file.bin", tmp_path / "target", [dead, mirror.as_uri() + "/"], md5=hashlib.md5(b"abc").hexdigest())
    assert path.read_bytes() == b"abc"


def test_download_failure_message_names_file_urls_and_folder(tmp_path):
    urls = [(tmp_path / "nowhere").as_uri() + "/", "http://127.0.0.1:9/"]
    with pytest.raises(DataError) as error:
        download_file("t10k-labels-idx1-ubyte.gz", tmp_path / "mnist", urls, timeout=2)
    message = str(error.value)
    assert message.startswith("could not download t10k-labels-idx1-ubyte.gz from ")
    assert all(url + "t10k-labels-idx1-ubyte.gz" in message for url in urls)
    assert f"place the files in {tmp_path / 'mnist'} yourself" in message
    assert list((tmp_path / "mnist").iterdir()) == []


def test_mnist_download_fetches_missing_files_from_mirror(tmp_path, mirror, monkeypatch):
    arrays = write_idx_set(mirror)
    checksums = {f"{name}.gz": file_md5(mirror / f"{name}.gz") for name in IDX_FILES}
    monkeypatch.setitem(download.MIRRORS, "mnist", ((tmp_path / "dead").as_uri() + "/", mirror.as_uri() + "/"))
    monkeypatch.setitem(download.MD5, "mnist", checksums)
    root = tmp_path / "root"
    write_idx(root / "mnist" / "t10k-images-idx3-ubyte", arrays["t10k-images-idx3-ubyte"])
    data = load_dataset("mnist", root, download=True)
    assert "IDX" in data.info.source and len(data.y_train) == 30
    assert not (root / "mnist" / "t10k-images-idx3-ubyte.gz").exists()
    monkeypatch.setitem(download.MD5, "mnist", {**checksums, "train-labels-idx1-ubyte.gz": "f" * 32})
    with pytest.raises(DataError, match="md5 mismatch"):
        load_dataset("mnist", tmp_path / "fresh", download=True)
    assert not (tmp_path / "fresh" / "mnist" / "train-labels-idx1-ubyte.gz").exists()


def test_cifar10_and_fashion_download_from_mirror(tmp_path, mirror, monkeypatch):
    write_cifar(mirror, "archive")
    write_idx_set(mirror)
    monkeypatch.setitem(download.MIRRORS, "cifar10", (mirror.as_uri() + "/",))
    monkeypatch.setitem(download.MIRRORS, "fashion_mnist", (mirror.as_uri() + "/",))
    monkeypatch.setitem(download.MD5, "cifar10", {"cifar-10-binary.tar.gz": file_md5(mirror / "cifar-10-binary.tar.gz")})
    monkeypatch.setitem(download.MD5, "fashion_mnist", {})
    assert load_dataset("cifar10", tmp_path / "root", download=True).x_test.shape == (4, 3, 32, 32)
    assert load_dataset("fashion_mnist", tmp_path / "root", download=True).x_train.shape == (30, 1, 28, 28)


def test_sst2_download_extracts_the_glue_zip(tmp_path, mirror, monkeypatch):
    tsv = "sentence\tlabel\nit 's good \t1\nbad , bad film \t0\n"
    with zipfile.ZipFile(mirror / "SST-2.zip", "w") as bundle:
        for name in ("train.tsv", "dev.tsv", "test.tsv"):
            bundle.writestr(f"SST-2/{name}", tsv)
    monkeypatch.setitem(download.MIRRORS, "sst2", (mirror.as_uri() + "/",))
    monkeypatch.setitem(download.MD5, "sst2", {"SST-2.zip": file_md5(mirror / "SST-2.zip")})
    data = load_dataset("sst2", tmp_path, download=True, max_len=4)
    assert sorted(p.name for p in (tmp_path / "sst2").iterdir()) == ["dev.tsv", "train.tsv"]
    assert data.y_train.tolist() == [1, 0]
    assert data.info.vocab[:3] == ("<pad>", "<unk>", "bad")


def test_known_checksums_are_complete():
    for dataset in ("mnist", "fashion_mnist"):
        assert sorted(download.MD5[dataset]) == sorted(f"{name}.gz" for name in IDX_FILES)
    assert download.MD5["mnist"]["t10k-images-idx3-ubyte.gz"] == "9fb629c4189551a2d022fa330f9573f3"
    assert download.MD5["cifar10"]["cifar-10-binary.tar.gz"] == "c32a1d4ab5d03f1284b67883e8d87530"
