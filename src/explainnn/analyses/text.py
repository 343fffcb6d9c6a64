"""Dataset-level explanations of a text model: word statistics per class, word order, attention.

:func:`analyse_texts` runs the three text analyses on one seeded set of test texts
and returns them as one :class:`TextAnalysis`:

* word statistics (:mod:`~explainnn.analyses.word_importance`): what each word
  pushes over all its occurrences;
* word order (:mod:`~explainnn.analyses.word_order`): how much accuracy and the
  true-class logit drop when the words are shuffled;
* attention vs gradients (:mod:`~explainnn.analyses.attention`), for a
  ``pooling="attention"`` model.

Word scores say what a word pushes *for one class*: by default every text is
explained towards each class in turn, so "bad" is reported as raising the
"negative" logit and lowering the "positive" one, never as "most positive" because
it raised whichever class a text happened to be predicted as.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from explainnn.analyses.attention import AttentionAgreement, attention_vs_gradients
from explainnn.analyses.common import check_positive, method_list, sample_indices
from explainnn.analyses.word_importance import TokenImportance, token_importance
from explainnn.analyses.word_order import PermutationImportance, permutation_importance
from explainnn.attributions import method_info
from explainnn.data import Dataset
from explainnn.errors import UserError

EACH_CLASS = "each"
"""``analyse_texts(target=EACH_CLASS)``: explain every text towards each class in turn (the default)."""


@dataclass(frozen=True)
class TextAnalysis:
    """The text analyses of one set of texts.

    ``importance`` holds one :class:`TokenImportance` per explained target (class
    name, or "the predicted class"), ``methods`` the methods that ran and
    ``skipped`` why the others did not (``{method: reason}``, in the order asked).
    ``permutation`` is the word-order importance, ``attention`` the agreement of
    attention with gradients (None unless the model pools with attention).
    ``shown`` is each method's ``min_count`` for the top-word lists and pictures:
    the one asked for where at least ``top_k`` words are seen that often, else 1.
    """

    dataset: str
    target: str | int
    n_texts: int
    methods: list[str]
    skipped: dict[str, str]
    importance: dict[str, TokenImportance]
    permutation: PermutationImportance
    attention: AttentionAgreement | None
    top_k: int
    shown: dict[str, int]

    def top_word_lists(self, method: str) -> dict[str, Any]:
        """``{"min_count", target: {"raise": [...], "lower": [...]}}``: the ``top_k`` words of ``method``."""
        min_count = self.shown[method]
        lists: dict[str, Any] = {"min_count": min_count}
        for name, result in self.importance.items():
            lists[name] = {direction: [word for word, _, _ in result.top_words(method, self.top_k, sign=sign,
                                                                               min_count=min_count)]
                           for direction, sign in (("raise", "positive"), ("lower", "negative"))}
        return lists

    def summary(self) -> dict[str, Any]:
        """The analyses as one JSON-able record: top words per method and target, word order, attention."""
        return {"dataset": self.dataset, "n_texts": self.n_texts, "target": self.target, "methods": self.methods,
                "top_words": {method: self.top_word_lists(method) for method in self.methods},
                "permutation": self.permutation.summary(),
                "attention_agreement": self.attention.summary() if self.attention is not None else None}


def analyse_texts(
    model: nn.Module,
    dataset: Dataset,
    *,
    methods: Sequence[str],
    n_samples: int = 200,
    top_k: int = 15,
    seed: int = 0,
    progress: bool = False,
    target: str | int = EACH_CLASS,
    n_repeats: int = 5,
    min_count: int = 2,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> TextAnalysis:
    """Word statistics per class, word-order importance and (for attention models) attention vs gradients.

    On a seeded random subset of ``n_samples`` test texts of a token ``dataset``.
    ``target``: ``"each"`` explains every text towards each class in turn,
    ``"predicted"`` each text's predicted class, an int one class. Methods that
    cannot explain a token model without a causal graph are left out with their
    reason (:attr:`TextAnalysis.skipped`); an unknown method name is an error.
    """
    if dataset.info.modality != "tokens":
        raise UserError(f"{dataset.info.name} holds {dataset.info.modality}, not token ids; the text analyses "
                        "need a token dataset")
    check_positive("min_count", min_count)
    check_positive("top_k", top_k)
    index = sample_indices(len(dataset.x_test), n_samples, seed)
    tokens, labels = dataset.x_test[index], dataset.y_test[index]
    runnable, skipped = runnable_methods(model, methods)
    vocab = list(dataset.info.vocab or ())
    importances = {name: token_importance(model, tokens, vocab, methods=runnable, target=each, seed=seed,
                                          options=options, progress=progress, target_name=name)
                   for name, each in _targets_of(dataset, target).items()}
    permutation = permutation_importance(model, tokens, labels, n_repeats=n_repeats, seed=seed)
    agreement = None
    if getattr(model, "pooling", None) == "attention":
        agreement = attention_vs_gradients(model, tokens, target="predicted", seed=seed, options=options)
    counts = next(iter(importances.values())).words
    shown = {method: min_count if np.sum(counts[method].count >= min_count) >= top_k else 1 for method in runnable}
    return TextAnalysis(dataset.info.name, target if isinstance(target, str) else int(target), len(tokens), runnable,
                        skipped, importances, permutation, agreement, top_k, shown)


def runnable_methods(model: nn.Module, methods: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The methods that can explain this token model, and ``{method: why not}`` for the others."""
    runnable, skipped = [], {}
    for method in method_list(methods):
        if method == "attention" and getattr(model, "pooling", None) != "attention":
            reason = f"the model pools with '{getattr(model, 'pooling', None)}', not attention"
        else:
            reason = _unrunnable(method)
        if reason:
            skipped[method] = reason
        else:
            runnable.append(method)
    return runnable, skipped


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


def _unrunnable(method: str) -> str:
    """Why ``method`` cannot explain a token model without a causal graph ('' when it can);
    an unknown name is a UserError (a typo in the config should not pass as a skip)."""
    info = method_info(method)
    if info.needs_graph:
        return "needs a causal graph"
    if "tokens" not in info.modalities:
        return f"it supports {', '.join(info.modalities)}, not tokens"
    return ""
