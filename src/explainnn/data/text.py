"""Text datasets: GLUE SST-2, tokenized SST-style and encoded as left-padded ids."""

from __future__ import annotations

import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from explainnn.data.base import Dataset, DatasetInfo, register_dataset
from explainnn.data.download import MD5, MIRRORS, download_file
from explainnn.errors import DataError

PAD, UNK = "<pad>", "<unk>"
SST2_FILES = ("train.tsv", "dev.tsv")
SST2_ARCHIVE = "SST-2.zip"
SENTIMENT_NAMES = ("negative", "positive")

_CLITICS = r"(?:s|re|ve|ll|d|m)"
_TOKEN = re.compile(
    "|".join(
        (
            r"\w+(?=n't\b)",  # "doesn't" -> "does" + "n't", "can't" -> "ca" + "n't" (as in SST)
            r"n't\b",
            rf"'{_CLITICS}\b",  # "it's" -> "it" + "'s"
            r"'(?:\d\ds?|em|til|n'?)(?!\w)",  # '70s, '53, 'em, 'til, rock 'n' roll
            r"(?:\w\.){2,}",  # u.s., e.t.
            r"\b(?:mr|mrs|ms|dr|jr|sr|st|vs|inc|etc|al|bros|[a-z])\.",  # mr., vs., initials
            r"\d+(?:[.,:/]\d+)+",  # 1.8, 10,000, 24/7
            rf"\w+(?:(?:[-&]|'(?!{_CLITICS}\b)|/(?=[a-z]))\w+)*",  # well-made, r&b, o'fallon, writer/director
            r"\.\.\.|--|``|''|\*+|[?!]+",
            r"[^\w\s]",
        )
    )
)


def tokenize(text: str) -> list[str]:
    """Lowercase and split into words, numbers, clitics and punctuation, SST-style.

    Already-tokenized SST sentences come back as their own whitespace split
    (``"does n't"`` -> ``["does", "n't"]``), and raw text is split the same way
    (``"doesn't"`` -> ``["does", "n't"]``), so users' sentences meet the vocabulary.
    """
    return _TOKEN.findall(text.lower())


def build_vocab(token_lists: Iterable[Sequence[str]], max_vocab: int = 20000, min_freq: int = 1) -> list[str]:
    """``[<pad>, <unk>, tokens by decreasing frequency (ties alphabetical)]``.

    ``max_vocab`` bounds the whole list, the two special tokens included; tokens
    seen fewer than ``min_freq`` times are left out (they encode as ``<unk>``).
    """
    if not isinstance(max_vocab, int) or max_vocab < 3:
        raise DataError(f"max_vocab must be an integer of at least 3 (<pad>, <unk>, one token), got {max_vocab!r}")
    if not isinstance(min_freq, int) or min_freq < 1:
        raise DataError(f"min_freq must be a positive integer, got {min_freq!r}")
    counts = Counter(token for tokens in token_lists for token in tokens)
    counts.pop(PAD, None)
    counts.pop(UNK, None)
    ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
    return [PAD, UNK, *ranked[: max_vocab - 2]]


def encode(texts: Iterable[str], vocab: Sequence[str], max_len: int = 50) -> torch.Tensor:
    """Token ids, int64 ``(N, max_len)``, LEFT-padded so a recurrent model ends on the last token.

    Sentences longer than ``max_len`` tokens keep their first ``max_len`` tokens.
    Unknown tokens map to ``<unk>``; ``vocab`` must start with ``<pad>, <unk>``.
    """
    return encode_tokens([tokenize(text) for text in texts], vocab, max_len)


def encode_tokens(token_lists: Iterable[Sequence[str]], vocab: Sequence[str], max_len: int = 50) -> torch.Tensor:
    """:func:`encode` for sentences that are already tokenized."""
    if list(vocab[:2]) != [PAD, UNK]:
        raise DataError(f"vocab must start with '{PAD}', '{UNK}'; got {list(vocab[:2])}")
    if not isinstance(max_len, int) or max_len < 1:
        raise DataError(f"max_len must be a positive integer, got {max_len!r}")
    index = {token: i for i, token in enumerate(vocab)}
    rows = [[index.get(t, 1) for t in tokens[:max_len]] for tokens in token_lists]
    ids = np.zeros((len(rows), max_len), dtype=np.int64)
    for row, tokens in zip(ids, rows):
        if tokens:
            row[-len(tokens) :] = tokens
    return torch.from_numpy(ids)


def read_sst2_tsv(path: Path) -> tuple[list[str], list[int]]:
    """Sentences and 0/1 labels of a GLUE SST-2 ``sentence<TAB>label`` file with header."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {path} ({error})") from None
    header = lines[0].split("\t") if lines else []
    if "sentence" not in header or "label" not in header:
        raise DataError(f"{path} is not a GLUE SST-2 file: its header must name 'sentence' and 'label' columns")
    s_col, l_col = header.index("sentence"), header.index("label")
    sentences, labels = [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(header) or fields[l_col].strip() not in ("0", "1"):
            raise DataError(f"{path}:{number} is not 'sentence<TAB>label' with label 0 or 1")
        sentences.append(fields[s_col].strip())
        labels.append(int(fields[l_col]))
    return sentences, labels


def download_sst2(folder: Path) -> None:
    """Fetch GLUE's SST-2.zip and place its train.tsv and dev.tsv in ``folder``."""
    archive = download_file(SST2_ARCHIVE, folder, MIRRORS["sst2"], md5=MD5["sst2"].get(SST2_ARCHIVE))
    try:
        with zipfile.ZipFile(archive) as bundle:
            for name in SST2_FILES:
                if not (folder / name).is_file():
                    partial = folder / f".{name}.part"
                    partial.write_bytes(bundle.read(f"SST-2/{name}"))
                    partial.replace(folder / name)
    except (zipfile.BadZipFile, KeyError) as error:
        raise DataError(f"{archive} is not the GLUE SST-2 archive ({error})") from None
    finally:
        archive.unlink(missing_ok=True)


def _ensure_sst2_files(folder: Path, download: bool) -> None:
    """Fetch the SST-2 files into ``folder`` when missing and ``download`` is set; else a one-line error."""
    missing = [name for name in SST2_FILES if not (folder / name).is_file()]
    if missing and download:
        download_sst2(folder)
        missing = [name for name in SST2_FILES if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"sst2 files missing from {folder}: {', '.join(missing)}; put GLUE's SST-2 train.tsv and "
            "dev.tsv there or set download: true"
        )


def _seeded_subset(texts: list[str], labels: list[int], size: object, seed: int) -> tuple[list[str], list[int]]:
    """The first ``size`` sentences of a shuffle seeded with ``seed``, and their labels."""
    if not isinstance(size, int) or not 1 <= size <= len(texts):
        raise DataError(f"train_subset must be between 1 and {len(texts)}, got {size!r}")
    keep = np.random.default_rng(seed).permutation(len(texts))[:size]
    return [texts[i] for i in keep], [labels[i] for i in keep]


@register_dataset("sst2")
def load_sst2(
    root: Path,
    *,
    download: bool = False,
    seed: int = 0,
    max_vocab: int = 20000,
    min_freq: int = 1,
    max_len: int = 50,
    train_subset: int | None = None,
) -> Dataset:
    """GLUE SST-2 sentiment: train on train.tsv, test on dev.tsv (GLUE's test has no labels).

    The vocabulary comes from the training sentences used (after ``train_subset``,
    the first k of a seeded shuffle) only. ``extra`` holds the raw ``texts_*`` and
    the token ``lengths_*`` before truncation to ``max_len``.
    """
    folder = root / "sst2"
    _ensure_sst2_files(folder, download)
    train_texts, train_labels = read_sst2_tsv(folder / "train.tsv")
    test_texts, test_labels = read_sst2_tsv(folder / "dev.tsv")
    if train_subset is not None:
        train_texts, train_labels = _seeded_subset(train_texts, train_labels, train_subset, seed)
    train_tokens = [tokenize(text) for text in train_texts]
    test_tokens = [tokenize(text) for text in test_texts]
    vocab = build_vocab(train_tokens, max_vocab, min_freq)
    subset = "" if train_subset is None else f", seeded subset of {train_subset:,} (seed {seed})"
    info = DatasetInfo(
        name="sst2",
        modality="tokens",
        input_shape=(max_len,),
        n_classes=2,
        class_names=SENTIMENT_NAMES,
        source=f"GLUE SST-2 in {folder} ({len(train_texts):,} train{subset} / {len(test_texts):,} dev sentences)",
        vocab=tuple(vocab),
        pad_index=0,
        unk_index=1,
    )
    return Dataset(
        info=info,
        x_train=encode_tokens(train_tokens, vocab, max_len),
        y_train=torch.tensor(train_labels, dtype=torch.int64),
        x_test=encode_tokens(test_tokens, vocab, max_len),
        y_test=torch.tensor(test_labels, dtype=torch.int64),
        extra={
            "texts_train": train_texts,
            "texts_test": test_texts,
            "lengths_train": torch.tensor([len(t) for t in train_tokens], dtype=torch.int64),
            "lengths_test": torch.tensor([len(t) for t in test_tokens], dtype=torch.int64),
        },
    )
