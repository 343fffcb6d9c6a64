"""Word statistics: what each word pushes, over every occurrence in a set of texts.

One sentence's token scores say little about what a model learned; the same word's
scores over many sentences do. :func:`token_importance` runs attribution methods
over a set of texts and aggregates every occurrence of every word (a word repeated
in a sentence counts each time) into per-word statistics, as the RNN-explainability
project did for IMDB sentiment; :func:`plot_top_words` draws the words that raise and
lower each class's logit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from explainnn.analyses.common import (
    as_numpy,
    attribute_in_batches,
    check_positive,
    method_list,
    resolve_targets,
    sample_indices,
)
from explainnn.data import Dataset
from explainnn.data.text import PAD, UNK
from explainnn.errors import UserError
from explainnn.files import save_figure, write_csv, write_npz
from explainnn.progress import progress_bar

SIGNS = ("positive", "negative")
WORD_FIELDS = ["word", "token_id", "count", "mean", "std", "consistency", "score"]


@dataclass(frozen=True)
class WordStatistics:
    """One method's token scores aggregated per word over a set of texts.

    Arrays are aligned with ``words``. ``count`` counts occurrences (a word twice in
    a sentence counts twice), ``mean``/``std`` are over those occurrences, and
    ``consistency = (n_positive - n_negative) / count`` is in [-1, 1]: 1 when every
    occurrence pushed the target up. ``score = mean * |consistency|`` ranks words by
    an effect that keeps its sign across contexts, so a word that helps in some
    sentences and hurts in others does not top the list on one large score.
    """

    method: str
    words: tuple[str, ...]
    token_ids: np.ndarray
    count: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    consistency: np.ndarray
    score: np.ndarray

    def top(self, k: int, *, sign: str = "positive", min_count: int = 1) -> np.ndarray:
        """Indices of the ``k`` words with the highest (``sign="positive"``) or lowest
        (``"negative"``) score of that sign, among words seen at least ``min_count`` times."""
        check_positive("k", k)
        check_positive("min_count", min_count)
        if sign not in SIGNS:
            raise UserError(f"unknown sign '{sign}'; valid signs: {', '.join(SIGNS)}")
        signed = self.score if sign == "positive" else -self.score
        chosen = np.nonzero((signed > 0) & (self.count >= min_count))[0]
        order = sorted(chosen, key=lambda i: (-signed[i], -self.count[i], self.words[i]))
        return np.asarray(order[:k], dtype=np.int64)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per word, highest score first."""
        order = sorted(range(len(self.words)), key=lambda i: (-self.score[i], self.words[i]))
        return [
            {"word": self.words[i], "token_id": int(self.token_ids[i]), "count": int(self.count[i]),
             "mean": float(self.mean[i]), "std": float(self.std[i]),
             "consistency": float(self.consistency[i]), "score": float(self.score[i])}
            for i in order
        ]


def word_statistics(tokens: np.ndarray | torch.Tensor, scores: np.ndarray | torch.Tensor,
                    vocab: Sequence[str], *, method: str = "", exclude: Sequence[int] = ()) -> WordStatistics:
    """Aggregate per-token ``scores`` ``(N, L)`` into per-word statistics over all occurrences.

    Token ids in ``exclude`` (the pad id, and ``<unk>``, which stands for many
    different words) are left out. Words are returned in token-id order.
    """
    ids = as_numpy(tokens).astype(np.int64)
    values = as_numpy(scores).astype(np.float64)
    if ids.ndim != 2 or values.shape != ids.shape:
        raise UserError(f"tokens and scores must both be (N, L); got {ids.shape} and {values.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= len(vocab)):
        raise UserError(f"token ids must be in 0..{len(vocab) - 1} (the vocabulary); got {ids.min()}..{ids.max()}")
    if not np.all(np.isfinite(values)):
        raise UserError(f"scores of '{method}' contain NaN or infinite values")
    keep = ~np.isin(ids, np.asarray(list(exclude), dtype=np.int64))
    ids, values = ids[keep], values[keep]
    size = len(vocab)
    count = np.bincount(ids, minlength=size)
    total = np.bincount(ids, weights=values, minlength=size)
    squares = np.bincount(ids, weights=values**2, minlength=size)
    positive = np.bincount(ids, weights=(values > 0).astype(np.float64), minlength=size)
    negative = np.bincount(ids, weights=(values < 0).astype(np.float64), minlength=size)
    present = np.nonzero(count)[0]
    n = count[present].astype(np.float64)
    mean = total[present] / n
    std = np.sqrt(np.maximum(squares[present] / n - mean**2, 0.0))
    consistency = (positive[present] - negative[present]) / n
    return WordStatistics(
        method=method, words=tuple(vocab[i] for i in present), token_ids=present, count=count[present],
        mean=mean, std=std, consistency=consistency, score=mean * np.abs(consistency),
    )


@dataclass(frozen=True)
class TokenImportance:
    """Token scores of several methods on the same texts, and their word statistics.

    ``target_name`` says whose logit the scores push: a class name, or "the
    predicted class" when each text was explained for its own prediction.
    """

    tokens: np.ndarray
    targets: np.ndarray
    vocab: tuple[str, ...]
    attributions: dict[str, np.ndarray]
    words: dict[str, WordStatistics]
    target_name: str = "the predicted class"

    def top_words(self, method: str, k: int = 15, *, sign: str = "positive",
                  min_count: int = 1) -> list[tuple[str, float, int]]:
        """``(word, score, count)`` of the ``k`` most positive or most negative words of ``method``."""
        stats = self.statistics(method)
        return [(stats.words[i], float(stats.score[i]), int(stats.count[i]))
                for i in stats.top(k, sign=sign, min_count=min_count)]

    def statistics(self, method: str) -> WordStatistics:
        if method not in self.words:
            raise UserError(f"no word statistics for '{method}'; computed: {', '.join(self.words) or 'none'}")
        return self.words[method]

    def to_csv(self, folder: str | Path) -> list[Path]:
        """``words_<method>.csv`` per method (highest score first)."""
        paths = []
        for method, stats in self.words.items():
            paths.append(write_csv(Path(folder) / f"words_{method}.csv", stats.rows(), WORD_FIELDS))
        return paths

    def to_npz(self, path: str | Path) -> Path:
        """Tokens, targets and every method's ``(N, L)`` scores (load with ``allow_pickle=False``)."""
        return write_npz(path, {"tokens": self.tokens, "targets": self.targets,
                                "vocab": np.asarray(self.vocab, dtype=str), **self.attributions})


def token_importance(
    model: nn.Module,
    data: Dataset | torch.Tensor | np.ndarray,
    vocab: Sequence[str] | None = None,
    *,
    methods: Sequence[str] = ("integrated_gradients",),
    target: str | int | Sequence[int] | np.ndarray | torch.Tensor = "predicted",
    n_samples: int | None = None,
    seed: int = 0,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = False,
    target_name: str | None = None,
) -> TokenImportance:
    """Run ``methods`` on texts and aggregate their token scores into word statistics.

    ``data`` is a token :class:`Dataset` (its test split and vocabulary are used) or
    ``(N, L)`` token ids with ``vocab``. ``n_samples`` takes a seeded random subset.
    ``target`` is ``"predicted"`` (each text's predicted class: scores then say
    what drove the decision), one class for all texts (for sentiment, the positive
    class gives polarity: positive words score high, negative words low) or one
    class per text. ``options`` maps a method to its attribution options. Pads and
    ``<unk>`` are left out of the word statistics. ``target_name`` labels the
    target in tables and pictures (default: "the predicted class" or "class k").
    """
    tokens, vocab = _texts(model, data, vocab)
    if n_samples is not None:
        tokens = tokens[sample_indices(len(tokens), n_samples, seed)]
    methods = method_list(methods)
    targets = resolve_targets(model, tokens, target)
    options = dict(options or {})
    scores = {method: attribute_in_batches(method, model, tokens, targets, seed, options.get(method, {}), progress)
              for method in progress_bar(methods, desc="token importance", unit="method", enabled=progress,
                                 leave=False)}
    exclude = [int(getattr(model, "pad_index")), *([vocab.index(UNK)] if UNK in vocab else [])]
    ids = tokens.numpy()
    words = {method: word_statistics(ids, values, vocab, method=method, exclude=exclude)
             for method, values in scores.items()}
    if target_name is None:
        target_name = target if isinstance(target, str) and target != "predicted" else (
            f"class {int(target)}" if isinstance(target, (int, np.integer)) else "the predicted class")
    return TokenImportance(ids, targets.numpy(), tuple(vocab), scores, words, str(target_name))


def plot_top_words(importance: TokenImportance | Mapping[str, TokenImportance], method: str, *, top_k: int = 15,
                   min_count: int = 1, path: str | Path | None = None, dpi: int = 120) -> Figure:
    """Bars of the ``top_k`` words of ``method`` that raise (left) and lower (right) each target's logit.

    ``importance`` is one :class:`TokenImportance` or several (one per class, as
    :func:`~explainnn.analyses.text.analyse_texts` computes them): one row of panels each, titled with the
    class a word pushes. Labels show each word's occurrence count; a panel says
    so when no word has scores of its sign (attention weights are never negative).
    """
    rows = list(importance.values()) if isinstance(importance, Mapping) else [importance]
    figure = Figure(figsize=(10, len(rows) * max(2.5, 0.28 * top_k + 1.2)), layout="constrained")
    axes = np.atleast_2d(figure.subplots(len(rows), 2))
    for row, panels in zip(rows, axes):
        for axis, sign, colour in zip(panels, SIGNS, ("#b2182b", "#2166ac")):
            direction = "raise" if sign == "positive" else "lower"
            axis.set_title(f"words that {direction} the '{row.target_name}' logit")
            _word_bars(axis, row.top_words(method, top_k, sign=sign, min_count=min_count), sign, colour)
    n = len(rows[0].tokens)
    figure.suptitle(f"{method}: what words push, over {n} texts (count in brackets, seen >= {min_count}x)")
    return save_figure(figure, path, dpi=dpi)


def _word_bars(axis: Any, top: list[tuple[str, float, int]], sign: str, colour: str) -> None:
    if not top:
        axis.text(0.5, 0.5, f"no word with a {sign} score", ha="center", va="center", transform=axis.transAxes)
        axis.set_axis_off()
        return
    axis.barh(range(len(top)), [score for _, score, _ in top], color=colour)
    axis.set_yticks(range(len(top)), [f"{word} ({count})" for word, _, count in top])
    axis.invert_yaxis()
    axis.axvline(0, color="black", linewidth=0.6)
    axis.set_xlabel("score (mean x |sign consistency|)")


def _texts(model: nn.Module, data: Any, vocab: Sequence[str] | None) -> tuple[torch.Tensor, list[str]]:
    if isinstance(data, Dataset):
        if data.info.modality != "tokens":
            raise UserError(f"dataset '{data.info.name}' holds {data.info.modality}; token importance needs token ids")
        tokens, vocab = data.x_test, vocab if vocab is not None else data.info.vocab
    else:
        tokens = torch.as_tensor(as_numpy(data))
    if tokens.dim() != 2 or tokens.is_floating_point() or len(tokens) == 0:
        raise UserError(f"texts must be non-empty (N, L) integer token ids; got shape {tuple(tokens.shape)}")
    if vocab is None or len(vocab) == 0:
        raise UserError("token importance needs the vocabulary (token id -> word); pass vocab=")
    vocab = list(vocab)
    if int(tokens.max()) >= len(vocab) or int(tokens.min()) < 0:
        raise UserError(f"token ids run to {int(tokens.max())} but the vocabulary has {len(vocab)} words")
    if not isinstance(getattr(model, "pad_index", None), int):
        raise UserError(f"{type(model).__name__} is not a token model (no int 'pad_index')")
    if PAD in vocab and vocab.index(PAD) != model.pad_index:
        raise UserError(f"the vocabulary puts '{PAD}' at {vocab.index(PAD)} but the model's pad_index is "
                        f"{model.pad_index}")
    return tokens.to(torch.int64), vocab
