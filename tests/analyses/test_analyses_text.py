"""Dataset-level text analyses: word statistics, word-order importance, attention vs gradients, and the text step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from explainnn.analyses.attention import agreement_statistics, attention_vs_gradients
from explainnn.analyses.text import TextAnalysis, analyse_texts, runnable_methods
from explainnn.analyses.word_importance import plot_top_words, token_importance, word_statistics
from explainnn.analyses.word_order import permutation_importance
from explainnn.config import build_config
from explainnn.data import Dataset, DatasetInfo, load_dataset
from explainnn.errors import UserError
from explainnn.models import RecurrentClassifier, build_model
from explainnn.torch_utils import seed_everything
from explainnn.training import train_model

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
VOCAB = ["<pad>", "<unk>", "good", "bad", "movie", "plot"]


class TokenModel(nn.Module):
    """A token model with a known reading: ``"last"`` sees only the last token, ``"bag"`` the
    mean of the real tokens' embeddings through a linear head (blind to order)."""

    def __init__(self, reading: str, vocab_size: int = 40, n_classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.reading, self.pad_index = reading, 0
        self.embedding = nn.Embedding(vocab_size, 8, padding_idx=0)
        self.head = nn.Linear(8, n_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.forward_embedded(self.embedding(tokens), pad_mask=tokens == self.pad_index)

    def forward_embedded(self, embeddings: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.reading == "last":
            return self.head(embeddings[:, -1])
        keep = (~pad_mask).to(embeddings.dtype).unsqueeze(-1)
        return self.head((embeddings * keep).sum(1) / keep.sum(1).clamp(min=1.0))


def left_padded(n: int, length: int, vocab_size: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, length), dtype=np.int64)
    for row in ids:
        size = rng.integers(2, length + 1)
        row[length - size :] = rng.integers(2, vocab_size, size)
    return torch.from_numpy(ids)


# Word statistics -----------------------------------------------------------------------


def test_every_occurrence_of_a_repeated_word_counts_and_pads_are_left_out():
    tokens = np.array([[0, 2, 2, 4], [0, 0, 3, 2], [1, 5, 2, 4]])
    scores = np.array([[9.0, 1.0, 3.0, 0.5], [9.0, 9.0, -2.0, -1.0], [7.0, 0.0, 2.0, 1.5]])
    stats = word_statistics(tokens, scores, VOCAB, method="m", exclude=[0, 1])
    table = {row["word"]: row for row in stats.rows()}
    assert set(table) == {"good", "bad", "movie", "plot"}
    good = table["good"]
    assert good["count"] == 4
    assert good["mean"] == pytest.approx((1 + 3 - 1 + 2) / 4)
    assert good["std"] == pytest.approx(np.std([1, 3, -1, 2]))
    assert good["consistency"] == pytest.approx((3 - 1) / 4)
    assert good["score"] == pytest.approx(1.25 * 0.5)
    assert table["movie"]["count"] == 2 and table["movie"]["mean"] == pytest.approx(1.0)
    assert table["bad"]["mean"] == pytest.approx(-2.0) and table["bad"]["consistency"] == -1.0
    assert table["plot"]["consistency"] == 0.0 and table["plot"]["score"] == 0.0
    with_unk = word_statistics(tokens, scores, VOCAB, exclude=[0])
    assert "<unk>" in with_unk.words and "<pad>" not in with_unk.words


def test_top_words_order_sign_and_min_count():
    tokens = np.array([[2, 3, 4, 5], [2, 3, 4, 0], [0, 0, 0, 5]])
    scores = np.array([[1.0, -3.0, 2.0, 0.5], [1.0, -1.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.5]])
    stats = word_statistics(tokens, scores, VOCAB, exclude=[0, 1])
    words = lambda idx: [stats.words[i] for i in idx]  # noqa: E731
    assert words(stats.top(10)) == ["movie", "good", "plot"]
    assert words(stats.top(2)) == ["movie", "good"]
    assert words(stats.top(10, sign="negative")) == ["bad"]
    assert words(stats.top(10, min_count=2)) == ["movie", "good", "plot"]
    assert words(stats.top(10, sign="negative", min_count=3)) == []
    with pytest.raises(UserError, match="valid signs"):
        stats.top(3, sign="up")


def test_token_importance_aggregates_attributions_of_every_text():
    model = TokenModel("bag", vocab_size=len(VOCAB))
    tokens = torch.tensor([[0, 2, 2, 4], [0, 0, 3, 2], [1, 5, 2, 4]])
    result = token_importance(model, tokens, VOCAB, methods=["leave_one_out", "saliency"], target=1)
    assert set(result.words) == {"leave_one_out", "saliency"}
    assert result.attributions["leave_one_out"].shape == (3, 4)
    assert (result.targets == 1).all()
    expected = word_statistics(tokens, result.attributions["saliency"], VOCAB, exclude=[0, 1])
    np.testing.assert_allclose(result.words["saliency"].mean, expected.mean)
    good = result.words["saliency"].words.index("good")
    assert result.words["saliency"].count[good] == 4
    figure = plot_top_words(result, "saliency", top_k=3)
    assert len(figure.axes) == 2
    with pytest.raises(UserError, match="vocabulary"):
        token_importance(model, tokens, None, methods=["saliency"])
    with pytest.raises(UserError, match="target"):
        token_importance(model, tokens, VOCAB, methods=["saliency"], target="label")


# Word order ----------------------------------------------------------------------------


def test_permutation_importance_separates_order_reading_from_order_blind_models():
    tokens = left_padded(60, 6, 40)
    last, bag = TokenModel("last"), TokenModel("bag")
    with torch.no_grad():
        labels_last, labels_bag = last(tokens).argmax(1), bag(tokens).argmax(1)

    reads_order = permutation_importance(last, tokens, labels_last, n_repeats=3, seed=0)
    assert reads_order.accuracy == 1.0
    assert reads_order.accuracy_drop > 0.2 and reads_order.logit_drop.mean() > 0
    assert reads_order.position_logit_drop[-1] > 0 and reads_order.position_accuracy_drop[-1] > 0
    np.testing.assert_array_equal(reads_order.position_logit_drop[:-1], 0.0)

    blind = permutation_importance(bag, tokens, labels_bag, n_repeats=3, seed=0)
    assert blind.accuracy_drop == 0.0
    assert np.abs(blind.logit_drop).max() < 1e-5
    assert np.nanmax(blind.position_logit_drop) > 0  # other texts' words change the content
    assert blind.position_count[-1] == 60 and blind.position_count[0] <= 60


def test_permutation_importance_is_seeded_and_writes_csv(tmp_path):
    tokens = left_padded(20, 5, 40, seed=3)
    model = TokenModel("last")
    labels = torch.zeros(20, dtype=torch.int64)
    first = permutation_importance(model, tokens, labels, n_repeats=2, seed=7)
    again = permutation_importance(model, tokens, labels, n_repeats=2, seed=7)
    np.testing.assert_array_equal(first.logit_drop, again.logit_drop)
    paths = first.to_csv(tmp_path)
    assert [p.name for p in paths] == ["permutation.csv", "permutation_positions.csv"]
    assert (tmp_path / "permutation_positions.csv").read_text().splitlines()[0].startswith("column,from_end")
    with pytest.raises(UserError, match="labels"):
        permutation_importance(model, tokens, labels[:3])


# Attention vs gradients ----------------------------------------------------------------


def test_agreement_statistics_on_hand_made_arrays():
    attention = np.array([[0.1, 0.2, 0.3, 0.4], [0.0, 0.5, 0.3, 0.2], [0.25, 0.25, 0.25, 0.25]])
    same = 3.0 * attention
    opposite = np.array([[0.4, 0.3, 0.2, 0.1], [9.0, 0.2, 0.3, 0.5], [1.0, 2.0, 3.0, 4.0]])
    mask = np.array([[1, 1, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]], dtype=bool)
    result = agreement_statistics(attention, {"same": -same, "opposite": opposite}, mask)
    np.testing.assert_allclose(result.kendall_tau["same"][:2], 1.0)
    np.testing.assert_allclose(result.spearman["same"][:2], 1.0)
    np.testing.assert_allclose(result.js_divergence["same"], 0.0, atol=1e-12)
    np.testing.assert_allclose(result.kendall_tau["opposite"][:2], -1.0)  # the masked 9.0 is ignored
    assert np.isnan(result.kendall_tau["same"][2])  # constant attention has no ranking
    assert 0 < result.js_divergence["opposite"][0] <= 1
    assert result.n_steps.tolist() == [4, 3, 4]
    summary = {row["method"]: row for row in result.summary()}
    assert summary["same"]["kendall_tau_mean"] == pytest.approx(1.0) and summary["same"]["n"] == 2
    with pytest.raises(UserError, match="shape"):
        agreement_statistics(attention, {"bad": attention[:, :3]})


@pytest.mark.parametrize("shape", [(5, 7, 3), (5, 1, 6, 4)], ids=["sequence", "image rows"])
def test_attention_vs_gradients_on_sequences_and_image_rows(shape):
    torch.manual_seed(0)
    features = shape[-1] if len(shape) == 3 else shape[1] * shape[3]
    model = RecurrentClassifier("lstm", features, 2, hidden_size=8, pooling="attention")
    result = attention_vs_gradients(model, torch.randn(shape), options={"integrated_gradients": {"n_steps": 8}})
    assert result.methods == ("saliency", "integrated_gradients")
    steps = shape[1] if len(shape) == 3 else shape[2]
    assert result.n_steps.tolist() == [steps] * 5
    for method in result.methods:
        assert np.all(np.abs(result.kendall_tau[method]) <= 1)
        assert np.all((result.js_divergence[method] >= 0) & (result.js_divergence[method] <= 1))


def test_attention_vs_gradients_needs_attention_pooling():
    model = RecurrentClassifier("gru", 3, 2, hidden_size=4, pooling="mean")
    with pytest.raises(UserError, match="pooling='attention'"):
        attention_vs_gradients(model, torch.randn(2, 5, 3))


# The step ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sst2_gru():
    if not (SHARED / "sst2" / "train.tsv").is_file():
        pytest.skip(f"SST-2 files not found in {SHARED / 'sst2'}")
    dataset = load_dataset("sst2", SHARED, max_len=10, train_subset=200)
    seed_everything(0)
    model = build_model("gru", dataset.info, hidden_size=12, embedding_dim=12, pooling="attention")
    train_model(model, dataset, epochs=1, batch_size=32, lr=5e-3, progress=False)
    return model, dataset


def _text_step(model, dataset, run_dir, *overrides):
    """The pipeline's text step on ``model`` and ``dataset`` alone, writing ``run_dir/text``."""
    from explainnn.pipeline.context import RunContext
    from explainnn.pipeline.text import analyse_text

    ctx = RunContext(build_config(overrides=["progress=false", "plots.dpi=40", *overrides]), run_dir, torch.device("cpu"))
    ctx.dataset, ctx.model = dataset, model
    return ctx, analyse_text(ctx, ctx.config.analyses.text)


def test_the_text_step_writes_word_tables_permutation_and_attention_files(sst2_gru, tmp_path, capsys):
    model, dataset = sst2_gru
    ctx, result = _text_step(model, dataset, tmp_path, "analyses.text.methods=[leave_one_out, attention, causal]",
                             "analyses.text.n_samples=16", "analyses.text.top_k=4")
    printed = capsys.readouterr().out
    assert "text        causal: skipped (needs a causal graph)" in printed
    last = printed.strip().splitlines()[-1]
    assert last.startswith("text        sst2: 2 methods on 16 texts")
    assert "words that raise each class (leave_one_out): negative <- " in last and "; positive <- " in last
    folder = tmp_path / "text"
    for method in ("leave_one_out", "attention"):
        table = (folder / f"words_{method}.csv").read_text().splitlines()
        assert table[0].startswith("target,word,token_id,count,mean")
        assert {row.split(",")[0] for row in table[1:]} == {"negative", "positive"}
        assert (folder / f"top_words_{method}.png").stat().st_size > 0
    for name in ("token_scores.npz", "permutation.csv", "permutation_positions.csv", "permutation_positions.png",
                 "attention_agreement.csv", "attention_agreement_summary.csv", "attention_agreement.png"):
        assert (folder / name).is_file(), name
    summary = json.loads((folder / "summary.json").read_text())
    assert summary == json.loads(json.dumps(result.summary()))
    assert summary["methods"] == ["leave_one_out", "attention"] and summary["target"] == "each"
    assert set(summary["top_words"]["leave_one_out"]) == {"min_count", "negative", "positive"}
    assert set(summary["top_words"]["leave_one_out"]["positive"]) == {"raise", "lower"}
    assert [row["method"] for row in summary["attention_agreement"]] == ["saliency", "integrated_gradients"]
    with np.load(folder / "token_scores.npz", allow_pickle=False) as stored:
        assert stored["tokens"].shape == (16, 10) and stored["leave_one_out__positive"].shape == (16, 10)
        assert np.all(stored["targets__negative"] == 0) and np.all(stored["targets__positive"] == 1)
        assert np.all(stored["attention__negative"][stored["tokens"] == 0] == 0)
    assert ctx.analyses.text is result and isinstance(result, TextAnalysis)
    assert result.skipped == {"causal": "needs a causal graph"}
    assert set(result.importance) == {"negative", "positive"}
    assert result.importance["positive"].words["attention"].score.min() >= 0
    assert result.importance["positive"].target_name == "positive"


def test_analyse_texts_returns_the_analyses_and_writes_nothing(sst2_gru, tmp_path, monkeypatch, capsys):
    model, dataset = sst2_gru
    monkeypatch.chdir(tmp_path)
    result = analyse_texts(model, dataset, methods=["leave_one_out", "attention"], n_samples=8, top_k=3,
                           target="predicted", n_repeats=1, min_count=1)
    assert capsys.readouterr() == ("", "") and not any(tmp_path.iterdir())
    assert result.methods == ["leave_one_out", "attention"] and result.skipped == {}
    assert list(result.importance) == ["the predicted class"] and result.n_texts == 8
    assert result.permutation.permuted_accuracy.shape == (1,) and result.attention is not None
    assert result.shown == {"leave_one_out": 1, "attention": 1}
    lists = result.top_word_lists("leave_one_out")
    assert lists["min_count"] == 1 and set(lists["the predicted class"]) == {"raise", "lower"}


def test_runnable_methods_name_why_a_method_cannot_explain_tokens():
    model = TokenModel("bag")
    runnable, skipped = runnable_methods(model, ["saliency", "causal", "attention", "saliency"])
    assert runnable == ["saliency"]
    assert skipped == {"causal": "needs a causal graph", "attention": "the model pools with 'None', not attention"}


def test_word_scores_say_which_class_a_word_pushes(tmp_path):
    """A word that raises class 1's logit is listed as raising class 1 and lowering class 0, whatever is predicted."""
    class Polarity(torch.nn.Module):
        """Logits (−s, s) with s = sum of word polarities: 'good' (+1) raises class 1, 'bad' (−1) class 0."""

        pad_index = 0

        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(4, 1, padding_idx=0)
            with torch.no_grad():
                self.embedding.weight.copy_(torch.tensor([[0.0], [1.0], [-1.0], [0.0]]))

        def forward(self, tokens):
            score = self.embedding(tokens).sum(dim=(1, 2))
            return torch.stack([-score, score], dim=1)

    vocab = ["<pad>", "good", "bad", "film"]
    info = DatasetInfo("toy", "tokens", (3,), 2, ("negative", "positive"), "hand-made", vocab=tuple(vocab),
                       pad_index=0)
    texts = torch.tensor([[1, 3, 3], [2, 3, 3], [1, 1, 3], [2, 2, 3]] * 3)
    labels = torch.tensor([1, 0, 1, 0] * 3)
    dataset = Dataset(info, texts, labels, texts, labels)
    result = analyse_texts(Polarity(), dataset, methods=["leave_one_out"], n_samples=12, top_k=2, min_count=1,
                           n_repeats=1)
    lists = result.summary()["top_words"]["leave_one_out"]
    assert lists["positive"]["raise"][0] == "good" and lists["positive"]["lower"][0] == "bad"
    assert lists["negative"]["raise"][0] == "bad" and lists["negative"]["lower"][0] == "good"


def test_the_text_step_skips_non_token_data_and_the_analyses_refuse_it(tmp_path, capsys):
    info = DatasetInfo("toy", "sequence", (4, 2), 2, ("a", "b"), "hand-made")
    x, y = torch.zeros(4, 4, 2), torch.zeros(4, dtype=torch.int64)
    dataset = Dataset(info, x, y, x, y)
    model = RecurrentClassifier("rnn", 2, 2, hidden_size=3)
    ctx, result = _text_step(model, dataset, tmp_path)
    assert result is None and ctx.analyses.text is None
    assert capsys.readouterr().out == "" and not any(tmp_path.iterdir())
    with pytest.raises(UserError, match="toy holds sequence, not token ids"):
        analyse_texts(model, dataset, methods=["saliency"])


def test_analyse_texts_rejects_unknown_methods(sst2_gru):
    model, dataset = sst2_gru
    with pytest.raises(UserError, match="unknown attribution method 'integrated_gradient'"):
        analyse_texts(model, dataset, methods=["integrated_gradient"], n_samples=4)
