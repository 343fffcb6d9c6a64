"""LRP for recurrent classifiers and sensitivity analysis: forward pass, conservation, hand cases, dispatch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import explainnn.attributions.lrp  # noqa: F401  (registers lrp and sensitivity)
from explainnn.attributions import EmbeddingSpaceModel, attribute
from explainnn.attributions.lrp import lrp_relevance
from explainnn.errors import UserError
from explainnn.models import LeNet, RecurrentClassifier, images_as_rows

CELLS = ("lstm", "gru", "rnn")
POOLINGS = ("last", "mean", "attention")


def model(cell: str, layers: int = 1, pooling: str = "last", seed: int = 0, **options) -> RecurrentClassifier:
    torch.manual_seed(seed)
    net = RecurrentClassifier(cell, options.pop("input_size", 5), 3, hidden_size=6, num_layers=layers,
                              pooling=pooling, **options)
    with torch.no_grad():  # biases large enough that absorbing them matters
        for name, parameter in net.named_parameters():
            if "bias" in name:
                parameter.uniform_(-0.5, 0.5)
    return net.eval()


def batch(seed: int = 1, n: int = 4, steps: int = 7, features: int = 5) -> torch.Tensor:
    return torch.randn(n, steps, features, generator=torch.Generator().manual_seed(seed))


TARGET = torch.tensor([0, 1, 2, 1])


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("layers", (1, 2))
@pytest.mark.parametrize("cell", CELLS)
def test_own_forward_reproduces_the_module(cell, layers, pooling):
    net, x = model(cell, layers, pooling), batch()
    relevance = lrp_relevance(net, x, TARGET)
    expected = net(x).detach().double().gather(1, TARGET[:, None])[:, 0]
    torch.testing.assert_close(relevance.logits, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("layers", (1, 2))
@pytest.mark.parametrize("cell", CELLS)
def test_default_rule_conserves_the_logit_exactly(cell, layers, pooling):
    """delta = 1: biases and epsilon hand their share on, so inputs + initial states = logit for any epsilon."""
    net, x = model(cell, layers, pooling), batch()
    for epsilon in (1e-3, 0.5):
        relevance = lrp_relevance(net, x, TARGET, epsilon=epsilon)
        assert float(relevance.bias.abs().max()) == 0 and float(relevance.stabiliser.abs().max()) == 0
        total = relevance.inputs.sum(dim=(1, 2)) + relevance.initial_state
        torch.testing.assert_close(total, relevance.logits, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("layers", (1, 2))
@pytest.mark.parametrize("cell", CELLS)
def test_absorbing_biases_conserves_the_logit_as_epsilon_vanishes(cell, layers):
    net, x = model(cell, layers), batch()
    relevance = lrp_relevance(net, x, TARGET, epsilon=1e-9, bias_relevance=True)
    assert float(relevance.initial_state.abs().max()) == 0  # zero states contribute nothing of their own
    assert float(relevance.bias.abs().min()) > 1e-3
    assert float(relevance.stabiliser.abs().max()) < 1e-6
    torch.testing.assert_close(relevance.inputs.sum(dim=(1, 2)) + relevance.bias, relevance.logits,
                               rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(relevance.residual(), torch.zeros_like(relevance.logits), rtol=0, atol=1e-10)


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


def _hand_model(cell: str, w_ih: list[float], w_hh: list[float], head: float) -> RecurrentClassifier:
    """One input, one hidden unit, no biases: small enough to work LRP out by hand."""
    net = RecurrentClassifier(cell, 1, 2, hidden_size=1)
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            parameter.zero_()
        getattr(net, cell).weight_ih_l0.copy_(torch.tensor(w_ih)[:, None])
        getattr(net, cell).weight_hh_l0.copy_(torch.tensor(w_hh)[:, None])
        net.fc.weight[0, 0] = head
    return net.eval()


def _hand_relevance(net: RecurrentClassifier, x1: float, x2: float) -> tuple[np.ndarray, float]:
    relevance = lrp_relevance(net, torch.tensor([[[x1], [x2]]]), torch.tensor([0]), epsilon=1e-12,
                              bias_relevance=True)
    return relevance.inputs[0, :, 0].numpy(), float(relevance.logits[0])


def test_lstm_hand_case_shares_the_logit_like_the_cell_state():
    """Signal-take-all: x_2 gets i_2 g_2 / c_2 of the logit, x_1 (through c_1 = i_1 g_1) f_2 c_1 / c_2."""
    w_i, w_f, w_g, w_o = 0.8, -0.4, 1.5, 0.3
    net = _hand_model("lstm", [w_i, w_f, w_g, w_o], [0.6, 0.2, 0.0, -0.5], head=2.0)
    x1, x2 = 0.7, -0.3
    c1 = _sigmoid(w_i * x1) * math.tanh(w_g * x1)
    h1 = _sigmoid(w_o * x1) * math.tanh(c1)
    kept = _sigmoid(w_f * x2 + 0.2 * h1) * c1
    written = _sigmoid(w_i * x2 + 0.6 * h1) * math.tanh(w_g * x2)
    logit = 2.0 * _sigmoid(w_o * x2 - 0.5 * h1) * math.tanh(kept + written)
    scores, computed = _hand_relevance(net, x1, x2)
    assert computed == pytest.approx(logit, rel=1e-6)
    np.testing.assert_allclose(scores, [logit * kept / (kept + written), logit * written / (kept + written)],
                               rtol=1e-6)


def test_gru_hand_case_shares_the_logit_between_candidate_and_carried_state():
    w_r, w_z, w_n = 0.5, -0.7, 1.2
    net = _hand_model("gru", [w_r, w_z, w_n], [0.4, 0.9, 0.0], head=-1.5)
    x1, x2 = 0.9, 0.4
    h1 = (1 - _sigmoid(w_z * x1)) * math.tanh(w_n * x1)
    z2 = _sigmoid(w_z * x2 + 0.9 * h1)
    candidate, carried = (1 - z2) * math.tanh(w_n * x2), z2 * h1
    logit = -1.5 * (candidate + carried)
    scores, computed = _hand_relevance(net, x1, x2)
    assert computed == pytest.approx(logit, rel=1e-6)
    np.testing.assert_allclose(scores, [logit * carried / (candidate + carried),
                                        logit * candidate / (candidate + carried)], rtol=1e-6)


def test_rnn_hand_case_shares_the_pre_activation():
    w, u = 1.1, -0.8
    net = _hand_model("rnn", [w], [u], head=0.5)
    x1, x2 = 0.6, 0.5
    h1 = math.tanh(w * x1)
    pre = w * x2 + u * h1
    logit = 0.5 * math.tanh(pre)
    scores, computed = _hand_relevance(net, x1, x2)
    assert computed == pytest.approx(logit, rel=1e-6)
    np.testing.assert_allclose(scores, [logit * u * h1 / pre, logit * w * x2 / pre], rtol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_features_the_model_ignores_get_no_relevance_when_biases_absorb(cell):
    net = model(cell, 2)
    with torch.no_grad():
        net.recurrent.weight_ih_l0[:, 2:] = 0
    scores = lrp_relevance(net, batch(), TARGET, bias_relevance=True).inputs
    assert float(scores[..., 2:].abs().max()) == 0
    assert float(scores[..., :2].abs().max()) > 0


def test_images_are_explained_as_rows_in_image_shape():
    net = model("lstm", input_size=2 * 4, pooling="mean")
    images = torch.rand(3, 2, 5, 4, generator=torch.Generator().manual_seed(2))
    scores = attribute(net, images, TARGET[:3], "lrp")
    assert scores.shape == images.shape and scores.dtype == np.float32
    rows = lrp_relevance(net, images_as_rows(images), TARGET[:3]).inputs
    np.testing.assert_allclose(images_as_rows(torch.from_numpy(scores)).numpy(), rows.float().numpy(), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_array_equal(scores, attribute(net, images, TARGET[:3], "lrp"))


@pytest.mark.parametrize("pooling", ("last", "mean"))
def test_tokens_get_their_embedding_relevance_and_padding_none(pooling):
    net = model("gru", 2, pooling, input_size=None, vocab_size=12, embedding_dim=4)
    tokens = torch.tensor([[0, 0, 3, 5, 7], [2, 9, 11, 1, 4]])
    target = torch.tensor([1, 2])
    scores = attribute(net, tokens, target, "lrp", bias_relevance=True)
    assert scores.shape == tokens.shape
    assert np.all(scores[0, :2] == 0)
    embeddings = net.embedding(tokens).detach()
    relevance = lrp_relevance(net, embeddings, target, pad_mask=tokens == 0, bias_relevance=True)
    np.testing.assert_allclose(scores[1], relevance.inputs[1].sum(dim=-1).numpy(), rtol=1e-5, atol=1e-7)
    wrapper = EmbeddingSpaceModel(net)
    in_space = attribute(wrapper, wrapper.embed(tokens), target, "lrp", modality="sequence", bias_relevance=True)
    np.testing.assert_allclose(in_space[:, 0].sum(axis=-1), scores, rtol=1e-5, atol=1e-6)


def test_sensitivity_is_the_squared_gradient_not_saliency():
    net, x = model("lstm", 2), batch().float()
    squared = attribute(net, x, TARGET, "sensitivity")
    absolute = attribute(net, x, TARGET, "saliency")
    np.testing.assert_allclose(squared, absolute**2, rtol=1e-5, atol=1e-12)
    assert not np.allclose(squared, absolute)
    tokens = torch.tensor([[0, 3, 5, 7], [2, 9, 11, 1]])
    text = model("lstm", input_size=None, vocab_size=12, embedding_dim=4)
    per_token = attribute(text, tokens, torch.tensor([0, 1]), "sensitivity")
    np.testing.assert_allclose(per_token, attribute(text, tokens, torch.tensor([0, 1]), "saliency") ** 2, rtol=1e-5)
    assert per_token[0, 0] == 0


def test_invalid_models_and_options_are_user_errors():
    with pytest.raises(UserError, match="RecurrentClassifier"):
        attribute(LeNet(1, (28, 28), 10).eval(), torch.rand(1, 1, 28, 28), 0, "lrp")
    net, x = model("lstm"), batch()
    with pytest.raises(UserError, match="epsilon must be a positive number"):
        attribute(net, x, TARGET, "lrp", epsilon=0)
    with pytest.raises(UserError, match="bias_relevance must be true or false"):
        attribute(net, x, TARGET, "lrp", bias_relevance="yes")
    with pytest.raises(UserError, match="unknown option 'eps'"):
        attribute(net, x, TARGET, "lrp", eps=1e-3)
    net.lstm = nn.LSTM(5, 3, batch_first=True, bidirectional=True)
    with pytest.raises(UserError, match="bidirectional=True"):
        lrp_relevance(net, x, TARGET)


def test_a_forward_lrp_cannot_reproduce_is_refused():
    net = RecurrentClassifier("gru", 5, 3, hidden_size=6, num_layers=2, dropout=0.5).train()
    with pytest.raises(UserError, match="training mode"):
        lrp_relevance(net, batch(), TARGET)
    assert attribute(net, batch(), TARGET, "lrp").shape == (4, 7, 5)  # attribute() explains in eval mode
