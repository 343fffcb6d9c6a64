"""Dataset-level explanations of text models: word statistics, word order, attention.

One sentence's token scores say little about what a model learned; the same word's
scores over many sentences do. :func:`token_importance` runs attribution methods
over a set of texts and aggregates every occurrence of every word (a word repeated
in a sentence counts each time) into per-word statistics, as the RNN-explainability
project did for IMDB sentiment. :func:`permutation_importance` asks whether the
model reads word order at all: how much accuracy and the true-class logit drop when
the words of each text are shuffled, and how much each position matters.
:func:`attention_vs_gradients` repeats the attention-reproducibility study: do a
model's attention weights rank the inputs as gradient explanations do (Kendall tau,
Spearman) and put their mass in the same places (Jensen-Shannon divergence)?
:func:`text_step` runs all three and writes CSV, PNG and JSON.

Word scores say what a word pushes *for one class*: by default :func:`text_step`
explains every text towards each class in turn, so "bad" is reported as raising
the "negative" logit and lowering the "positive" one, never as "most positive"
because it raised whichever class a text happened to be predicted as.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.special import rel_entr
from scipy.stats import kendalltau, spearmanr
from torch import nn

from explainnn.attributions import attribute, method_info, modality_of
from explainnn.data import Dataset
from explainnn.data.text import PAD, UNK
from explainnn.errors import UserError
from explainnn.files import atomic_path, save_figure, write_csv, write_json
from explainnn.progress import progress_bar
from explainnn.torch_utils import eval_mode, model_device

SIGNS = ("positive", "negative")
EACH_CLASS = "each"
"""``text_step(target=EACH_CLASS)``: explain every text towards each class in turn (the default)."""
WORD_FIELDS = ["word", "token_id", "count", "mean", "std", "consistency", "score"]
GRADIENT_METHODS = ("saliency", "integrated_gradients")
"""The explanations attention is compared with (as in the attention-reproducibility paper)."""
BATCH = 64
"""Texts per attribution call: bounds memory (IG holds n_steps copies of a batch)."""


# Word statistics ----------------------------------------------------------------------


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
        _check_positive("k", k)
        _check_positive("min_count", min_count)
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
    ids = _numpy(tokens).astype(np.int64)
    values = _numpy(scores).astype(np.float64)
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
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, tokens=self.tokens, targets=self.targets,
                                vocab=np.asarray(self.vocab, dtype=str), **self.attributions)
        return Path(path)


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
    methods = _method_list(methods)
    targets = resolve_targets(model, tokens, target)
    options = dict(options or {})
    scores = {method: attribute_in_batches(method, model, tokens, targets, seed, options.get(method, {}), progress)
              for method in progress_bar(methods, desc="token importance", unit="method", enabled=progress,
                                 leave=False)}
    exclude = [int(model.pad_index), *([vocab.index(UNK)] if UNK in vocab else [])]
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
    :func:`text_step` computes them): one row of panels each, titled with the
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


# Word order ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PermutationImportance:
    """How much a model relies on word order.

    Whole-text: ``permuted_accuracy`` and ``logit_drop`` (mean drop of the true
    class's logit) per repeat when each text's words are shuffled in place (pads
    stay). Per position (columns of the left-padded ids, so column ``L - 1`` is
    every text's last word): the accuracy and logit drop, over all texts, when that
    column's words are shuffled among the texts that have a word there
    (``position_count``; the others are unchanged; NaN where fewer than two do).
    """

    accuracy: float
    permuted_accuracy: np.ndarray
    logit_drop: np.ndarray
    position_accuracy_drop: np.ndarray
    position_logit_drop: np.ndarray
    position_count: np.ndarray

    @property
    def accuracy_drop(self) -> float:
        return float(self.accuracy - self.permuted_accuracy.mean())

    def summary(self) -> dict[str, float | int]:
        return {"accuracy": self.accuracy, "permuted_accuracy": float(self.permuted_accuracy.mean()),
                "accuracy_drop": self.accuracy_drop, "logit_drop": float(self.logit_drop.mean()),
                "logit_drop_std": float(self.logit_drop.std()), "n_repeats": len(self.logit_drop)}

    def to_csv(self, folder: str | Path) -> list[Path]:
        """``permutation.csv`` (one row per repeat) and ``permutation_positions.csv``."""
        folder = Path(folder)
        repeats = [{"repeat": r, "accuracy": self.accuracy, "permuted_accuracy": float(a), "logit_drop": float(d)}
                   for r, (a, d) in enumerate(zip(self.permuted_accuracy, self.logit_drop))]
        length = len(self.position_count)
        positions = [{"column": c, "from_end": length - 1 - c, "texts": int(self.position_count[c]),
                      "accuracy_drop": float(self.position_accuracy_drop[c]),
                      "logit_drop": float(self.position_logit_drop[c])} for c in range(length)]
        write_csv(folder / "permutation.csv", repeats, ["repeat", "accuracy", "permuted_accuracy", "logit_drop"])
        write_csv(folder / "permutation_positions.csv", positions,
                   ["column", "from_end", "texts", "accuracy_drop", "logit_drop"])
        return [folder / "permutation.csv", folder / "permutation_positions.csv"]


def permutation_importance(
    model: nn.Module,
    tokens: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | Sequence[int],
    *,
    n_repeats: int = 5,
    seed: int = 0,
    pad_index: int | None = None,
    batch_size: int = 512,
) -> PermutationImportance:
    """Accuracy and true-class logit drops when word order is shuffled (see :class:`PermutationImportance`).

    An order-independent model (e.g. mean-pooled embeddings and a linear head)
    scores ~0 whole-text; one that reads only the last word scores high, and all its
    per-position importance sits in the last column. ``pad_index`` defaults to the
    model's. The caller's random state is untouched (a seeded NumPy generator).
    """
    ids = _numpy(tokens).astype(np.int64)
    truth = _numpy(labels).astype(np.int64)
    if ids.ndim != 2 or len(ids) == 0:
        raise UserError(f"tokens must be non-empty (N, L) token ids; got shape {ids.shape}")
    if truth.shape != (len(ids),):
        raise UserError(f"labels must be ({len(ids)},) classes, one per text; got shape {truth.shape}")
    _check_positive("n_repeats", n_repeats)
    pad = getattr(model, "pad_index", None) if pad_index is None else pad_index
    if not isinstance(pad, int):
        raise UserError(f"{type(model).__name__} has no int 'pad_index'; pass pad_index=")
    rng = np.random.default_rng(seed)
    real = ids != pad
    base = _logits(model, ids, batch_size)
    if base.shape[1] <= truth.max() or truth.min() < 0:
        raise UserError(f"labels must be classes in 0..{base.shape[1] - 1}; got {truth.min()}..{truth.max()}")
    rows = np.arange(len(ids))
    base_true = base[rows, truth]
    accuracy = float((base.argmax(1) == truth).mean())

    permuted_accuracy, logit_drop = np.zeros(n_repeats), np.zeros(n_repeats)
    columns = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
    slots = np.argsort(np.where(real, columns, ids.shape[1]), axis=1, kind="stable")
    for repeat in range(n_repeats):
        order = np.argsort(np.where(real, rng.random(ids.shape), 2.0), axis=1)
        shuffled = ids.copy()
        np.put_along_axis(shuffled, slots, np.take_along_axis(ids, order, axis=1), axis=1)
        logits = _logits(model, shuffled, batch_size)
        permuted_accuracy[repeat] = (logits.argmax(1) == truth).mean()
        logit_drop[repeat] = (base_true - logits[rows, truth]).mean()

    position_accuracy, position_logit = _position_importance(model, ids, truth, base, rng, n_repeats, batch_size,
                                                             real=real)
    return PermutationImportance(accuracy, permuted_accuracy, logit_drop, position_accuracy, position_logit,
                                 real.sum(axis=0))


def _position_importance(model: nn.Module, ids: np.ndarray, truth: np.ndarray, base: np.ndarray,
                         rng: np.random.Generator, n_repeats: int, batch_size: int, *,
                         real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per position: the mean accuracy and true-class logit drops when that column's words are shuffled
    among the texts that have a word there (the others count with zero drop)."""
    length = ids.shape[1]
    base_true = base[np.arange(len(ids)), truth]
    position_accuracy, position_logit = np.full(length, np.nan), np.full(length, np.nan)
    for column in range(length):
        holders = np.nonzero(real[:, column])[0]
        if len(holders) < 2:
            continue
        accuracy_drops, logit_drops = [], []
        for _ in range(n_repeats):
            shuffled = ids[holders].copy()
            shuffled[:, column] = shuffled[rng.permutation(len(holders)), column]
            logits = _logits(model, shuffled, batch_size)
            changed_true = logits[np.arange(len(holders)), truth[holders]]
            # Texts without a word here are unchanged: they count with zero drop.
            accuracy_drops.append(((base.argmax(1)[holders] == truth[holders]).sum()
                                   - (logits.argmax(1) == truth[holders]).sum()) / len(ids))
            logit_drops.append((base_true[holders] - changed_true).sum() / len(ids))
        position_accuracy[column] = np.mean(accuracy_drops)
        position_logit[column] = np.mean(logit_drops)
    return position_accuracy, position_logit


def plot_permutation(result: PermutationImportance, *, path: str | Path | None = None, dpi: int = 120) -> Figure:
    """Per-position logit and accuracy drops against the distance from the last word."""
    length = len(result.position_count)
    from_end = length - 1 - np.arange(length)
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    logit_axis, accuracy_axis = figure.subplots(2, 1, sharex=True)
    logit_axis.bar(from_end, np.nan_to_num(result.position_logit_drop), color="#4d4d4d")
    logit_axis.set_ylabel("true-class logit drop")
    accuracy_axis.bar(from_end, np.nan_to_num(result.position_accuracy_drop), color="#b2182b")
    accuracy_axis.set_ylabel("accuracy drop")
    accuracy_axis.set_xlabel("position (words before the last; 0 = last word)")
    for axis in (logit_axis, accuracy_axis):
        axis.axhline(0, color="black", linewidth=0.6)
    summary = result.summary()
    figure.suptitle(f"shuffling each text's words: accuracy {summary['accuracy']:.3f} -> "
                    f"{summary['permuted_accuracy']:.3f}, logit drop {summary['logit_drop']:.3f}")
    return save_figure(figure, path, dpi=dpi)


# Attention vs gradients ---------------------------------------------------------------


@dataclass(frozen=True)
class AttentionAgreement:
    """Per-sample agreement between attention weights and each gradient explanation.

    ``kendall_tau`` and ``spearman`` rank-correlate attention with ``|attribution|``
    over a sample's real steps; ``js_divergence`` is the Jensen-Shannon divergence
    (base 2, in [0, 1]) between the two normalised to sum to one. NaN where a
    sample has fewer than two steps or either side is constant (no ranking) or zero.
    """

    methods: tuple[str, ...]
    kendall_tau: dict[str, np.ndarray]
    spearman: dict[str, np.ndarray]
    js_divergence: dict[str, np.ndarray]
    n_steps: np.ndarray

    STATISTICS = ("kendall_tau", "spearman", "js_divergence")

    def summary(self) -> list[dict[str, Any]]:
        """Per method: mean and median of each statistic over the samples where it is defined."""
        rows = []
        for method in self.methods:
            row: dict[str, Any] = {"method": method}
            for name in self.STATISTICS:
                values = getattr(self, name)[method]
                finite = values[np.isfinite(values)]
                row[f"{name}_mean"] = float(finite.mean()) if len(finite) else float("nan")
                row[f"{name}_median"] = float(np.median(finite)) if len(finite) else float("nan")
            row["n"] = int(np.isfinite(self.kendall_tau[method]).sum())
            rows.append(row)
        return rows

    def rows(self) -> list[dict[str, Any]]:
        return [{"sample": i, "method": method, "steps": int(self.n_steps[i]),
                 **{name: float(getattr(self, name)[method][i]) for name in self.STATISTICS}}
                for method in self.methods for i in range(len(self.n_steps))]

    def to_csv(self, folder: str | Path) -> list[Path]:
        """``attention_agreement.csv`` (per sample) and ``attention_agreement_summary.csv``."""
        folder = Path(folder)
        write_csv(folder / "attention_agreement.csv", self.rows(), ["sample", "method", "steps", *self.STATISTICS])
        summary = self.summary()
        write_csv(folder / "attention_agreement_summary.csv", summary, list(summary[0]) if summary else ["method"])
        return [folder / "attention_agreement.csv", folder / "attention_agreement_summary.csv"]


def agreement_statistics(attention: np.ndarray | torch.Tensor, attributions: Mapping[str, np.ndarray | torch.Tensor],
                         mask: np.ndarray | torch.Tensor | None = None) -> AttentionAgreement:
    """Kendall tau, Spearman and JS divergence of ``(N, T)`` attention vs each ``(N, T)`` attribution.

    ``mask`` (bool ``(N, T)``, True at real steps) leaves padding out; attributions
    are compared by magnitude.
    """
    weights = _numpy(attention).astype(np.float64)
    if weights.ndim != 2:
        raise UserError(f"attention must be (N, T) weights; got shape {weights.shape}")
    keep = np.ones(weights.shape, dtype=bool) if mask is None else _numpy(mask).astype(bool)
    if keep.shape != weights.shape:
        raise UserError(f"mask must have the attention's shape {weights.shape}; got {keep.shape}")
    if not attributions:
        raise UserError("attributions must name at least one method: method -> (N, T) array")
    tau, rho, js = {}, {}, {}
    for method, values in attributions.items():
        magnitude = np.abs(_numpy(values).astype(np.float64))
        if magnitude.shape != weights.shape:
            raise UserError(f"attributions of '{method}' have shape {magnitude.shape}; attention has {weights.shape}")
        tau[method], rho[method], js[method] = (np.full(len(weights), np.nan) for _ in range(3))
        for i, (a, g, k) in enumerate(zip(weights, magnitude, keep)):
            a, g = a[k], g[k]
            if len(a) >= 2 and np.ptp(a) > 0 and np.ptp(g) > 0:
                tau[method][i] = kendalltau(a, g).statistic
                rho[method][i] = spearmanr(a, g).statistic
            if a.sum() > 0 and g.sum() > 0:
                js[method][i] = js_divergence(a / a.sum(), g / g.sum())
    return AttentionAgreement(tuple(attributions), tau, rho, js, keep.sum(axis=1))


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (0 for equal distributions, at most 1)."""
    middle = (p + q) / 2
    return float(max(0.0, (rel_entr(p, middle).sum() + rel_entr(q, middle).sum()) / (2 * np.log(2))))


def attention_vs_gradients(
    model: nn.Module,
    inputs: torch.Tensor | np.ndarray,
    *,
    methods: Sequence[str] = GRADIENT_METHODS,
    target: str | int | Sequence[int] | np.ndarray | torch.Tensor = "predicted",
    seed: int = 0,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    attributions: Mapping[str, np.ndarray] | None = None,
) -> AttentionAgreement:
    """Compare a ``pooling="attention"`` model's weights with gradient explanations.

    Works on token ids (padding left out), ``(N, T, F)`` sequences and images read
    as rows (attributions summed in magnitude over each step's features).
    ``attributions`` may hand in already computed token/input-shaped arrays of some
    ``methods`` for the same inputs and target.
    """
    batch = torch.as_tensor(_numpy(inputs))
    modality = modality_of(model, batch)
    targets = resolve_targets(model, batch, target)
    weights = _per_step(attribute(model, batch, targets, "attention", seed=seed), modality, magnitude=False)
    known = dict(attributions or {})
    options = dict(options or {})
    per_step = {}
    for method in _method_list(methods):
        values = known.get(method)
        if values is None:
            values = attribute_in_batches(method, model, batch, targets, seed, options.get(method, {}), False)
        per_step[method] = _per_step(values, modality, magnitude=True)
    pad = getattr(model, "pad_index", None)
    mask = batch.ne(pad).numpy() if modality == "tokens" else None
    return agreement_statistics(weights, per_step, mask)


def plot_attention_agreement(agreement: AttentionAgreement, *, path: str | Path | None = None,
                             dpi: int = 120) -> Figure:
    """Histograms of Kendall tau, Spearman and JS divergence per method."""
    figure = Figure(figsize=(12, 3.6), layout="constrained")
    axes = figure.subplots(1, 3)
    ranges = {"kendall_tau": (-1, 1), "spearman": (-1, 1), "js_divergence": (0, 1)}
    titles = {"kendall_tau": "Kendall tau", "spearman": "Spearman rho", "js_divergence": "JS divergence"}
    for axis, name in zip(axes, AttentionAgreement.STATISTICS):
        for method in agreement.methods:
            values = getattr(agreement, name)[method]
            values = values[np.isfinite(values)]
            label = f"{method} (mean {values.mean():.2f})" if len(values) else f"{method} (undefined)"
            axis.hist(values, bins=20, range=ranges[name], alpha=0.55, label=label)
        axis.set_title(f"attention vs gradients: {titles[name]}")
        axis.set_xlabel(titles[name])
        axis.legend(fontsize="small")
    axes[0].set_ylabel("samples")
    return save_figure(figure, path, dpi=dpi)


# The step -----------------------------------------------------------------------------


def text_step(
    model: nn.Module,
    dataset: Dataset,
    out_dir: str | Path,
    *,
    methods: Sequence[str],
    n_samples: int = 200,
    top_k: int = 15,
    seed: int = 0,
    plots: bool = True,
    dpi: int = 120,
    progress: bool = True,
    target: str | int = EACH_CLASS,
    n_repeats: int = 5,
    min_count: int = 2,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Word statistics per class, word-order importance and (for attention models) attention vs gradients.

    On a seeded random subset of ``n_samples`` test texts writes to ``out_dir``: ``words_<method>.csv``
    (rows per target class), ``token_scores.npz``, ``permutation.csv``, ``permutation_positions.csv``,
    ``summary.json``; with ``plots`` ``top_words_<method>.png`` (per class, the words that raise and
    lower its logit, seen at least ``min_count`` times when enough are) and ``permutation_positions.png``;
    for a ``pooling="attention"`` model ``attention_agreement.csv``, ``attention_agreement_summary.csv``
    and ``.png``. ``target``: ``"each"`` explains every text towards each class in turn, ``"predicted"``
    each text's predicted class, an int one class. Methods that cannot run here and non-token data are
    skipped, saying why. Returns ``{"importance": {class name: TokenImportance}, "permutation",
    "attention", "summary"}`` (empty when skipped).
    """
    if dataset.info.modality != "tokens":
        print(f"text        skipped ({dataset.info.name} holds {dataset.info.modality}, not token ids)")
        return {}
    _check_positive("min_count", min_count)
    out_dir = Path(out_dir)
    index = sample_indices(len(dataset.x_test), n_samples, seed)
    tokens, labels = dataset.x_test[index], dataset.y_test[index]
    runnable = _runnable(model, methods)
    vocab = list(dataset.info.vocab or ())
    importances = {name: token_importance(model, tokens, vocab, methods=runnable, target=each, seed=seed,
                                          options=options, progress=progress, target_name=name)
                   for name, each in _targets_of(dataset, target).items()}
    _write_scores(importances, runnable, out_dir)
    permutation = permutation_importance(model, tokens, labels, n_repeats=n_repeats, seed=seed)
    permutation.to_csv(out_dir)
    agreement = None
    if getattr(model, "pooling", None) == "attention":
        agreement = attention_vs_gradients(model, tokens, target="predicted", seed=seed, options=options)
        agreement.to_csv(out_dir)
    counts = next(iter(importances.values())).words
    shown = {method: min_count if np.sum(counts[method].count >= min_count) >= top_k else 1 for method in runnable}
    if plots:
        _draw(importances, permutation, agreement, out_dir, top_k=top_k, shown=shown, dpi=dpi)
    summary = {"dataset": dataset.info.name, "n_texts": len(tokens),
               "target": target if isinstance(target, str) else int(target), "methods": runnable,
               "top_words": {method: _top_word_lists(importances, method, top_k, shown[method]) for method in runnable},
               "permutation": permutation.summary(),
               "attention_agreement": agreement.summary() if agreement is not None else None}
    write_json(out_dir / "summary.json", summary)
    print(_describe(summary))
    return {"importance": importances, "permutation": permutation, "attention": agreement, "summary": summary}


def _draw(importances: Mapping[str, TokenImportance], permutation: PermutationImportance,
          agreement: AttentionAgreement | None, out_dir: Path, *, top_k: int, shown: Mapping[str, int],
          dpi: int) -> None:
    """The text step's pictures: top words per method (``shown`` is each one's ``min_count``), word order, attention."""
    for method, min_count in shown.items():
        plot_top_words(importances, method, top_k=top_k, min_count=min_count, path=out_dir / f"top_words_{method}.png",
                       dpi=dpi)
    plot_permutation(permutation, path=out_dir / "permutation_positions.png", dpi=dpi)
    if agreement is not None:
        plot_attention_agreement(agreement, path=out_dir / "attention_agreement.png", dpi=dpi)


def _targets_of(dataset: Dataset, target: str | int) -> dict[str, str | int]:
    """``{name: target}`` of the explanations to compute: every class, the predicted one, or one class."""
    names = dataset.info.class_names
    if target == EACH_CLASS:
        return {str(name): k for k, name in enumerate(names)}
    if target == "predicted":
        return {"the predicted class": "predicted"}
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool) and 0 <= target < len(names):
        return {str(names[int(target)]): int(target)}
    raise UserError(f"target must be '{EACH_CLASS}', 'predicted' or a class index 0-{len(names) - 1}; got {target!r}")


def _runnable(model: nn.Module, methods: Sequence[str]) -> list[str]:
    """The methods that can explain this token model; the others are skipped, saying why."""
    runnable = []
    for method in _method_list(methods):
        if method == "attention" and getattr(model, "pooling", None) != "attention":
            reason = f"the model pools with '{getattr(model, 'pooling', None)}', not attention"
        else:
            reason = _unrunnable(method)
        if reason:
            print(f"text        {method}: skipped ({reason})")
        else:
            runnable.append(method)
    return runnable


def _write_scores(importances: Mapping[str, TokenImportance], methods: Sequence[str], out_dir: Path) -> None:
    """``words_<method>.csv`` (a ``target`` column first) and ``token_scores.npz`` (``<method>`` for one
    target, ``<method>__<target>`` for several, plus ``targets__<target>``)."""
    for method in methods:
        rows = [{"target": name, **row} for name, result in importances.items()
                for row in result.statistics(method).rows()]
        write_csv(out_dir / f"words_{method}.csv", rows, ["target", *WORD_FIELDS])
    first = next(iter(importances.values()))
    several = len(importances) > 1
    arrays = {f"{method}__{name}" if several else method: values
              for name, result in importances.items() for method, values in result.attributions.items()}
    arrays.update({f"targets__{name}" if several else "targets": result.targets
                   for name, result in importances.items()})
    with atomic_path(out_dir / "token_scores.npz") as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, tokens=first.tokens, vocab=np.asarray(first.vocab, dtype=str), **arrays)


def _top_word_lists(importances: Mapping[str, TokenImportance], method: str, k: int, min_count: int) -> dict:
    """``{"min_count", target: {"raise": [...], "lower": [...]}}`` for the summary."""
    lists: dict[str, Any] = {"min_count": min_count}
    for name, result in importances.items():
        lists[name] = {direction: [word for word, _, _ in result.top_words(method, k, sign=sign, min_count=min_count)]
                       for direction, sign in (("raise", "positive"), ("lower", "negative"))}
    return lists


def _unrunnable(method: str) -> str:
    """Why ``method`` cannot explain a token model without a causal graph ('' when it can);
    an unknown name is a UserError (a typo in the config should not pass as a skip)."""
    info = method_info(method)
    if info.needs_graph:
        return "needs a causal graph"
    if "tokens" not in info.modalities:
        return f"it supports {', '.join(info.modalities)}, not tokens"
    return ""


def _describe(summary: dict[str, Any]) -> str:
    perm = summary["permutation"]
    line = (f"text        {summary['dataset']}: {len(summary['methods'])} methods on {summary['n_texts']} texts; "
            f"shuffling word order: accuracy {perm['accuracy']:.3f} -> {perm['permuted_accuracy']:.3f}")
    if summary["methods"]:
        first = summary["methods"][0]
        pushes = [f"{name} <- {', '.join(lists['raise'][:3]) or '-'}"
                  for name, lists in summary["top_words"][first].items() if name != "min_count"]
        line += f"; words that raise each class ({first}): {'; '.join(pushes)}"
    for row in summary["attention_agreement"] or []:
        line += f"; attention vs {row['method']}: tau {row['kendall_tau_mean']:.2f}, JS {row['js_divergence_mean']:.2f}"
    return line


# Helpers (clustering uses them too) ---------------------------------------------------


def _numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _check_positive(label: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserError(f"{label} must be a positive integer; got {value!r}")
    return int(value)


def sample_indices(total: int, n: int, seed: int) -> np.ndarray:
    """A seeded random choice of ``min(n, total)`` indices, in increasing order."""
    _check_positive("n_samples", n)
    if total == 0:
        raise UserError("there are no samples to explain")
    return np.sort(np.random.default_rng(seed).permutation(total)[: min(n, total)])


def _method_list(methods: Sequence[str]) -> list[str]:
    if isinstance(methods, str) or not all(isinstance(m, str) for m in methods):
        raise UserError(f"methods must be a list of method names; got {methods!r}")
    return list(dict.fromkeys(methods))


def _texts(model: nn.Module, data: Any, vocab: Sequence[str] | None) -> tuple[torch.Tensor, list[str]]:
    if isinstance(data, Dataset):
        if data.info.modality != "tokens":
            raise UserError(f"dataset '{data.info.name}' holds {data.info.modality}; token importance needs token ids")
        tokens, vocab = data.x_test, vocab if vocab is not None else data.info.vocab
    else:
        tokens = torch.as_tensor(_numpy(data))
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


def _logits(model: nn.Module, inputs: np.ndarray | torch.Tensor, batch_size: int) -> np.ndarray:
    """Logits as float64 numpy, in eval mode and batches; the model's mode is restored."""
    batch = torch.as_tensor(inputs)
    device = model_device(model)
    with eval_mode(model), torch.no_grad():
        parts = [model(batch[i : i + batch_size].to(device)).double().cpu() for i in range(0, len(batch), batch_size)]
    return torch.cat(parts).numpy()


def resolve_targets(model: nn.Module, inputs: torch.Tensor, target: Any) -> torch.Tensor:
    """``"predicted"`` -> the model's classes; an int -> that class for all; else one class per sample."""
    if isinstance(target, str):
        if target != "predicted":
            raise UserError(f"target must be 'predicted', a class index or one class per sample; got '{target}'")
        return torch.from_numpy(_logits(model, inputs, BATCH * 4).argmax(axis=1)).to(torch.int64)
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return torch.full((len(inputs),), int(target), dtype=torch.int64)
    targets = torch.as_tensor(_numpy(target)).to(torch.int64)
    if targets.shape != (len(inputs),):
        raise UserError(f"target must be one class per sample ({len(inputs)}); got shape {tuple(targets.shape)}")
    return targets


def attribute_in_batches(method: str, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, seed: int,
                       options: Mapping[str, Any], progress: bool) -> np.ndarray:
    """:func:`attribute` over ``inputs`` in chunks; the chunk's seed is ``seed + chunk index``.

    Methods that compare samples within a batch (``feature_permutation``) see
    ``BATCH`` texts at a time.
    """
    starts = range(0, len(inputs), BATCH)
    parts = [attribute(model, inputs[s : s + BATCH], targets[s : s + BATCH], method, seed=seed + n, **options)
             for n, s in enumerate(progress_bar(starts, desc=method, unit="batch", enabled=progress, leave=False))]
    return np.concatenate(parts)


def _per_step(values: np.ndarray, modality: str, *, magnitude: bool) -> np.ndarray:
    """One value per time step: tokens as they are; sequences ``(N, T, F)`` and image rows
    ``(N, C, T, W)`` summed in magnitude over features (or, for the per-step attention
    broadcast over them, its first feature)."""
    values = np.abs(values) if magnitude else values
    if modality == "tokens":
        return values
    if modality == "sequence":
        return values.sum(axis=2) if magnitude else values[:, :, 0]
    return values.sum(axis=(1, 3)) if magnitude else values[:, 0, :, 0]

