"""Token attributions for any model that reads token ids through an nn.Embedding.

The models here are plain user modules: the embedding has no agreed name, there is
no ``pad_index`` attribute and no ``forward_embedded``. Gradient methods and
``causal`` work on the embedding's output (a forward hook) and give one score per
token.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerIntegratedGradients
from torch import nn

from explainnn.attributions import attribute, method_info
from explainnn.attributions.tokens import token_model
from explainnn.causal import CausalGraph
from explainnn.errors import UserError
from explainnn.models import RecurrentClassifier

GRADIENT_METHODS = ("integrated_gradients", "saliency", "smoothgrad", "gradient_x_input", "gradient_shap", "sensitivity")
VOCAB, LENGTH, PAD = 40, 12, 0


class TextCNN(nn.Module):
    """Kim-style text CNN: two parallel Conv1d branches (widths 3 and 5), max over time, concatenated."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.words = nn.Embedding(VOCAB, 8, padding_idx=PAD)
        self.c3 = nn.Conv1d(8, 6, 3, padding=1)
        self.c5 = nn.Conv1d(8, 5, 5, padding=2)
        self.out = nn.Linear(11, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.words(ids))

    def head(self, embedded: torch.Tensor) -> torch.Tensor:
        """The rest of the forward from the embedding output (only the tests use it, as an oracle)."""
        x = embedded.transpose(1, 2)
        branches = [F.relu(self.c3(x)).amax(dim=2), F.relu(self.c5(x)).amax(dim=2)]
        return self.out(torch.cat(branches, dim=1))


class BagOfWords(nn.Module):
    """A plain user model: an embedding without padding_idx, mean over tokens, a two-layer head."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.table = nn.Embedding(VOCAB, 6)
        self.hidden = nn.Linear(6, 10)
        self.classify = nn.Linear(10, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.table(ids))

    def head(self, embedded: torch.Tensor) -> torch.Tensor:
        return self.classify(torch.tanh(self.hidden(embedded.mean(dim=1))))


class WithPositions(nn.Module):
    """Token and position embeddings added: the token embedding is the one fed the ids."""

    def __init__(self) -> None:
        super().__init__()
        self.positions = nn.Embedding(LENGTH, 4)
        self.tokens = nn.Embedding(VOCAB, 4, padding_idx=PAD)
        self.out = nn.Linear(4, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        where = self.positions(torch.arange(ids.shape[1], device=ids.device))
        return self.out((self.tokens(ids) + where).mean(dim=1))


class TwoLookups(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.words = nn.Embedding(VOCAB, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out((self.words(ids) + self.words(ids.flip(1))).mean(dim=1))


def tokens(seed: int = 0, n: int = 5) -> torch.Tensor:
    """Left-padded token ids: sample i has 3 + i pads."""
    ids = torch.randint(1, VOCAB, (n, LENGTH), generator=torch.Generator().manual_seed(seed))
    for i in range(n):
        ids[i, : 3 + i] = PAD
    return ids


def built(model_type: type[nn.Module], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return model_type().eval()


def full_graph(units: dict[str, int], target: int, keep: dict[str, list[int]] | None = None) -> CausalGraph:
    """A graph whose hidden units all cause the target (or only those in ``keep``)."""
    graph = CausalGraph()
    graph.add_unit("input", 0, kind="input", depth=0)
    output = graph.add_unit("out", target, kind="output", depth=2)
    for layer, count in units.items():
        for index in range(count):
            unit = graph.add_unit(layer, index, depth=1)
            if keep is None or index in keep.get(layer, range(count)):
                graph.add_edge(unit, output)
    return graph


@pytest.mark.parametrize("model_type", [TextCNN, BagOfWords])
@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_every_gradient_method_scores_each_token(model_type, method):
    model, ids = built(model_type), tokens()
    scores = attribute(model, ids, 1, method)
    assert scores.shape == (5, LENGTH) and scores.dtype == np.float32 and np.isfinite(scores).all()
    if model_type is TextCNN:  # the embedding's padding_idx is the pad id: pads are not text
        assert (scores[ids.numpy() == PAD] == 0).all()
    real = scores[ids.numpy() != PAD]
    assert np.abs(real).max() > 0
    if method_info(method).stochastic:
        assert np.array_equal(scores, attribute(model, ids, 1, method, seed=0))


@pytest.mark.parametrize("model_type", [TextCNN, BagOfWords])
def test_saliency_is_the_gradient_norm_of_each_tokens_embedding(model_type):
    model, ids = built(model_type), tokens()
    embedded = model.words(ids) if model_type is TextCNN else model.table(ids)
    embedded = embedded.detach().requires_grad_(True)
    model.head(embedded)[:, 2].sum().backward()
    expected = embedded.grad.norm(dim=-1)
    if model_type is TextCNN:
        expected = expected.masked_fill(ids == PAD, 0.0)
    assert np.allclose(attribute(model, ids, 2, "saliency"), expected.numpy(), atol=1e-6)
    assert np.allclose(attribute(model, ids, 2, "sensitivity"), expected.square().numpy(), atol=1e-6)


def test_integrated_gradients_is_layer_ig_on_the_embedding_from_all_pads():
    model, ids = built(TextCNN), tokens()
    expected = LayerIntegratedGradients(model, model.words).attribute(
        ids, baselines=torch.full_like(ids, PAD), target=1, n_steps=32
    ).sum(-1).masked_fill(ids == PAD, 0.0)
    scores = attribute(model, ids, 1, "integrated_gradients", n_steps=32)
    assert np.allclose(scores, expected.detach().numpy(), atol=1e-5)


def test_integrated_gradients_completeness_without_a_pad_id():
    """No pad id: the reference is the zero embedding, and the scores add up to f(x) - f(zero embedding)."""
    model, ids = built(BagOfWords), tokens()
    scores = attribute(model, ids, 0, "integrated_gradients", n_steps=256)
    with torch.no_grad():
        embedded = model.table(ids)
        gap = (model.head(embedded) - model.head(torch.zeros_like(embedded)))[:, 0]
    assert np.allclose(scores.sum(axis=1), gap.numpy(), atol=2e-3)


def test_recurrent_models_give_the_same_scores_as_their_forward_embedded():
    """The built-in GRU keeps working: hooking its embedding equals explaining forward_embedded."""
    torch.manual_seed(0)
    gru = RecurrentClassifier("gru", None, 2, hidden_size=8, vocab_size=VOCAB, embedding_dim=6, pad_index=PAD,
                              pooling="mean").eval()
    ids = tokens()
    embedded = gru.embedding(ids).detach().requires_grad_(True)
    gru.forward_embedded(embedded, pad_mask=ids == PAD)[:, 1].sum().backward()
    expected = (embedded.grad * embedded).sum(-1).masked_fill(ids == PAD, 0.0)
    assert np.allclose(attribute(gru, ids, 1, "gradient_x_input"), expected.detach().numpy(), atol=1e-6)
    expected_ig = LayerIntegratedGradients(gru, gru.embedding).attribute(
        ids, baselines=torch.full_like(ids, PAD), target=1, n_steps=16
    ).sum(-1).masked_fill(ids == PAD, 0.0)
    assert np.allclose(attribute(gru, ids, 1, "integrated_gradients", n_steps=16), expected_ig.detach().numpy(), atol=1e-5)


@pytest.mark.parametrize(
    ("model_type", "units"),
    [(TextCNN, {"c3": 6, "c5": 5}), (BagOfWords, {"hidden": 10})],
)
@pytest.mark.parametrize("base", ["integrated_gradients", "saliency", "gradient_x_input"])
def test_causal_with_a_full_graph_equals_the_base_method(model_type, units, base):
    model, ids = built(model_type), tokens()
    before = copy.deepcopy(model.state_dict())
    causal = attribute(model, ids, 1, "causal", graph=full_graph(units, 1), base=base)
    assert causal.shape == (5, LENGTH)
    assert np.array_equal(causal, attribute(model, ids, 1, base))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_causal_holds_a_non_causal_branch_of_the_text_cnn():
    """With only c5 unit 1 causal in its branch, causal IG equals IG on the model whose other c5 units are cut."""
    model, ids = built(TextCNN), tokens()
    before = copy.deepcopy(model.state_dict())
    graph = full_graph({"c3": 6, "c5": 5}, 1, keep={"c5": [1]})
    causal = attribute(model, ids, 1, "causal", graph=graph)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "bit-identical afterwards"
    cut = copy.deepcopy(model)
    with torch.no_grad():
        held = [0, 2, 3, 4]
        cut.c5.weight[held] = 0
        cut.c5.bias[held] = 0
    assert np.allclose(causal, attribute(cut, ids, 1, "integrated_gradients"), atol=1e-6)
    assert not np.allclose(causal, attribute(model, ids, 1, "integrated_gradients"), atol=1e-3)


def test_the_token_embedding_is_found_among_several():
    model, ids = built(WithPositions), tokens()
    assert token_model(model, ids).embedding is model.tokens
    scores = attribute(model, ids, 0, "gradient_x_input")
    where = model.positions(torch.arange(LENGTH))
    embedded = model.tokens(ids).detach().requires_grad_(True)
    model.out((embedded + where).mean(dim=1))[:, 0].sum().backward()
    expected = (embedded.grad * embedded).sum(-1).masked_fill(ids == PAD, 0.0)
    assert np.allclose(scores, expected.detach().numpy(), atol=1e-6)


def test_what_cannot_be_scored_per_token_stops_with_one_line():
    ids = tokens()
    with pytest.raises(UserError, match="called more than once") as error:
        attribute(built(TwoLookups), ids, 0, "saliency")
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="no nn.Embedding layer"):
        attribute(nn.Sequential(nn.Linear(LENGTH, 2)), ids, 0, "saliency")
    # Without a pad id, switching tokens off needs an id to switch them to.
    with pytest.raises(UserError, match="replacement=<token id>"):
        attribute(built(BagOfWords), ids, 0, "leave_one_out")
    assert attribute(built(BagOfWords), ids, 0, "leave_one_out", replacement=1).shape == (5, LENGTH)


@pytest.mark.parametrize("method", ["lime", "occlusion", "feature_permutation", "leave_one_out"])
def test_perturbation_methods_on_the_text_cnn(method):
    model, ids = built(TextCNN), tokens()
    options = {"n_perturbations": 40} if method == "lime" else {}
    scores = attribute(model, ids, 1, method, **options)
    assert scores.shape == (5, LENGTH) and (scores[ids.numpy() == PAD] == 0).all()
