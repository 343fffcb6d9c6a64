"""Fetching dataset files from their canonical mirrors, verified and atomic.

:data:`MIRRORS` lists base URLs per dataset (tried in order; a file's URL is base
plus file name) and :data:`MD5` the published checksums. Both are plain module
dictionaries so tests and offline sites can point them at ``file://`` folders.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path

from tqdm import tqdm

from explainnn.errors import DataError

MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    "fashion_mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
    "sst2": ("https://dl.fbaipublicfiles.com/glue/data/",),
}

MD5: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "cifar10": {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"},
    "sst2": {"SST-2.zip": "9f81648d4199384278b86e315dac217c"},
}

TIMEOUT_S = 60.0
"""Seconds to wait for a mirror to answer (or stall) before trying the next."""

_CHUNK = 1 << 20


def file_md5(path: str | Path) -> str:
    """Hex md5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(dataset: str, folder: Path, filenames: Iterable[str]) -> list[Path]:
    """Download each of ``filenames`` missing from ``folder`` using ``dataset``'s mirrors."""
    checksums = MD5.get(dataset, {})
    paths = []
    for filename in filenames:
        path = folder / filename
        if not path.is_file():
            download_file(filename, folder, MIRRORS[dataset], md5=checksums.get(filename))
        paths.append(path)
    return paths


def download_file(
    filename: str,
    folder: Path,
    mirrors: Sequence[str],
    *,
    md5: str | None = None,
    timeout: float | None = None,
) -> Path:
    """Fetch ``filename`` into ``folder`` from the first mirror that delivers it intact.

    The file is streamed into a hidden temporary file in ``folder`` and renamed only
    after its md5 matches, so an interrupted or corrupt download never leaves a file
    a loader would pick up. Raises DataError when every mirror fails.
    """
    folder.mkdir(parents=True, exist_ok=True)
    urls = [mirror + filename for mirror in mirrors]
    reasons = []
    for url in urls:
        try:
            return _download_one(url, folder / filename, md5, TIMEOUT_S if timeout is None else timeout)
        except (urllib.error.URLError, OSError, ValueError) as error:
            reasons.append(str(getattr(error, "reason", None) or error))
    reason = "; ".join(dict.fromkeys(reasons)) or "no mirrors configured"
    raise DataError(
        f"could not download {filename} from {', '.join(urls) or 'nowhere'} ({reason}); "
        f"place the files in {folder} yourself or check your connection"
    )


def _download_one(url: str, target: Path, md5: str | None, timeout: float) -> Path:
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        digest = hashlib.md5()
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name, disable=None) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if md5 is not None and digest.hexdigest() != md5:
            raise ValueError(f"md5 mismatch for {url}: got {digest.hexdigest()}, expected {md5}")
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
        return target
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
