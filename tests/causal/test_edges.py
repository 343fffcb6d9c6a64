"""Edge ablation (``explainnn.causal.edges``) against the per-edge oracle of ``test_edges_oracle``."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from architectures import build, seeded
from explainnn.causal import EdgeAblation, ablated_logits, enumerate_edges
from explainnn.errors import InterventionError
from explainnn.models.lenet import LeNet
from explainnn.models.recurrent import RecurrentClassifier
from test_edges_oracle import Oracle as PlainOracle
from test_edges_oracle import _cell

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")


class Oracle(PlainOracle):
    """The hand-written oracle, with LSTMs that have ``proj_size`` written out per edge too: the cell's recurrent
    edge ``i -> j`` is ``(W_hh W_hr)[j rows, i]`` times ``m_{t-1, i}`` (kept) or the source's (ablated), the
    projection's edge ``i -> k`` is ``W_hr[k, i]`` times ``m_{t, i}`` or the source's."""

    def _recurrent(self, group, values, source, record):
        module = group[0].module
        if isinstance(module, nn.RNNCellBase):
            return self._cell_loop(group[0], values, source, record)
        if not getattr(module, "proj_size", 0):
            return super()._recurrent(group, values, source, record)
        cell_layer, proj_layer = group

        def forward(x, hx=None):
            assert module.batch_first and hx is None
            seq = x[0].numpy()
            w_ih, w_hh, b_ih, b_hh, w_hr = (getattr(module, f"{name}_l0").detach().numpy() for name in
                                            ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"))
            w_eff = w_hh @ w_hr
            length, hidden, width = seq.shape[0], module.hidden_size, module.proj_size
            name = cell_layer.name
            xa = np.zeros_like(seq) if source is None else source[name + "/x"].numpy()
            prev_abl = np.zeros((length, hidden)) if source is None else source[name + "/prev"].numpy()
            m_abl = np.zeros((length, hidden)) if source is None else source[name + "/m"].numpy()
            m, c = np.zeros(hidden), np.zeros(hidden)
            prevs, cells, out = [], [], np.zeros((length, width))
            for t in range(length):
                prevs.append(m.copy())
                gi = self._gates_in(cell_layer, w_ih, b_ih, seq[t], xa[t], values, 0)
                gh = b_hh.copy()
                for row in range(4 * hidden):
                    for i in range(hidden):
                        keep = self._mask(values, name, i, name, row % hidden, True)
                        gh[row] += keep * w_eff[row, i] * m[i] + (1 - keep) * w_eff[row, i] * prev_abl[t, i]
                m, c = _cell("lstm", "tanh", gi, gh, None, c, hidden)
                cells.append(m.copy())
                for k in range(width):
                    for i in range(hidden):
                        keep = self._mask(values, name, i, proj_layer.name, k)
                        out[t, k] += keep * w_hr[k, i] * m[i] + (1 - keep) * w_hr[k, i] * m_abl[t, i]
            if record is not None:
                record[name + "/x"] = torch.from_numpy(seq.copy())
                record[name + "/prev"] = torch.from_numpy(np.stack(prevs))
                record[name + "/m"] = torch.from_numpy(np.stack(cells))
            h_n = torch.from_numpy(out[-1])[None, None]
            return torch.from_numpy(out)[None], (h_n, torch.from_numpy(c)[None, None])

        return forward

    def _cell_loop(self, layer, values, source, record):
        """A cell called once per step: call ``t`` with its input and recurrent edges written out per edge, reading the
        call's ``x_t`` and received ``h_{t-1}`` (or the source's)."""
        module = layer.module
        kind = type(module).__name__.lower().removesuffix("cell")
        w_ih, w_hh, b_ih, b_hh = (getattr(module, name).detach().numpy() for name in
                                  ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        hidden, count = module.hidden_size, [0]

        def forward(x, hx=None):
            t = count[0]
            count[0] += 1
            h, c = (hx if isinstance(hx, tuple) else (hx, None)) if hx is not None else (torch.zeros(1, hidden), None)
            h_np, c_np = h[0].numpy(), (np.zeros(hidden) if c is None else c[0].numpy())
            xa = np.zeros(x.shape[1]) if source is None else source[f"{layer.name}/x{t}"].numpy()[0]
            h_abl = np.zeros(hidden) if source is None else source[f"{layer.name}/prev{t}"].numpy()[0]
            if record is not None:
                record[f"{layer.name}/x{t}"] = x.clone()
                record[f"{layer.name}/prev{t}"] = h.clone()
            gi = self._gates_in(layer, w_ih, b_ih, x[0].numpy(), xa, values, 0)
            gh = self._gates_hidden(layer, w_hh, b_hh, h_np, h_abl, values, 0)
            h_new, c_new = _cell(kind, getattr(module, "nonlinearity", "tanh"), gi, gh, h_np, c_np, hidden)
            out = torch.from_numpy(h_new)[None]
            return (out, torch.from_numpy(c_new)[None]) if isinstance(module, nn.LSTMCell) else out

        return forward


class GroupedNet(nn.Module):
    """A pointwise conv, a depthwise conv (groups = channels), a grouped conv (2 groups) and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 1)
        self.depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.grouped = nn.Conv2d(4, 6, 3, groups=2)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.depthwise(x))
        x = torch.relu(self.grouped(x))
        return self.fc(x.mean((2, 3)))


class BiStackedLSTM(nn.Module):
    """A 2-layer bidirectional LSTM with a head on the last step or on the mean over steps."""

    def __init__(self, pooling: str = "last") -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 2, num_layers=2, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(4, 3)
        self.pooling = pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lstm(x)[0]
        return self.fc(out[:, -1] if self.pooling == "last" else out.mean(1))


class AttentionLSTM(nn.Module):
    """An LSTM whose head reads an attention-weighted sum of the steps (the scores come from a Linear)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 3, batch_first=True)
        self.score = nn.Linear(3, 1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lstm(x)[0]
        weights = torch.softmax(self.score(out).squeeze(-1), 1)
        return self.fc((out * weights.unsqueeze(-1)).sum(1))


class CrossAttention(nn.Module):
    """Attention with its own input per role (``kdim`` and ``vdim`` apart from ``embed_dim``): the query, the key and
    the value from three Linears of the steps, a causal mask, the last key padded, mean pool, Linear. Its heads'
    incoming edges are weights edges through each role's projection."""

    def __init__(self) -> None:
        super().__init__()
        self.query, self.key, self.value = nn.Linear(3, 4), nn.Linear(3, 3), nn.Linear(3, 5)
        self.attn = nn.MultiheadAttention(4, 2, kdim=3, vdim=5, batch_first=True)
        self.fc = nn.Linear(4, 2)
        self.register_buffer("causal", torch.ones(4, 4, dtype=torch.bool).triu(1))
        self.register_buffer("padded", torch.arange(4) == 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding = (x[:, :, 0] != x[:, :, 0]) | self.padded
        out = self.attn(self.query(x), self.key(x), self.value(x), key_padding_mask=padding, attn_mask=self.causal)[0]
        return self.fc(torch.relu(out).mean(1))


def _images(n: int, side: int, channels: int, seed: int) -> torch.Tensor:
    return torch.rand(n, channels, side, side, generator=torch.Generator().manual_seed(seed))


def _seq(n: int, steps: int, features: int, seed: int) -> torch.Tensor:
    return torch.randn(n, steps, features, generator=torch.Generator().manual_seed(seed))


def _model(name: str) -> tuple[nn.Module, callable]:
    if name == "lenet":
        return seeded(LeNet(1, 16, 4), 1, 2.0), lambda n, seed=0: _images(n, 16, 1, seed)
    if name == "grouped":
        return seeded(GroupedNet(), 2, 2.0), lambda n, seed=0: _images(n, 5, 3, seed)
    if name in ("rnn", "gru", "lstm"):
        model = RecurrentClassifier(name, 3, 3, hidden_size=3, num_layers=2 if name == "gru" else 1,
                                    pooling="mean" if name == "rnn" else "last")
        return seeded(model, 3, 2.0), lambda n, seed=0: _seq(n, 4, 3, seed)
    if name in ("bilstm_last", "bilstm_mean"):
        return seeded(BiStackedLSTM(name.split("_")[1]), 4, 2.0), lambda n, seed=0: _seq(n, 3, 3, seed)
    if name == "attention_lstm":
        return seeded(AttentionLSTM(), 5, 2.0), lambda n, seed=0: _seq(n, 4, 3, seed)
    if name == "cross_attention":
        return seeded(CrossAttention(), 6, 2.0), lambda n, seed=0: _seq(n, 4, 3, seed)
    model, inputs = build(name)
    return model, inputs


MODELS = ["bn_mlp", "lenet", "grouped", "densenet", "textcnn", "rnn", "gru", "lstm", "bilstm_last", "bilstm_mean",
          "bilstm", "gru2", "resnet", "preact_resnet", "mobilenetv2", "attention_lstm", "shufflenetv2", "squeezenet",
          "se_mbconv", "inception", "resnext", "convnext", "attention_bigru", "lstm_proj",
          "grucell_loop", "lstmcell_loop", "rnncell_loop", "text_transformer", "vit", "cross_attention"]


def _masks(n_edges: int, count: int, seed: int) -> torch.Tensor:
    """Masks with hard 0/1 entries and some soft ones."""
    rng = np.random.default_rng(seed)
    masks = (rng.random((count, n_edges)) < 0.6).astype(np.float32)
    soft = rng.random((count, n_edges)) < 0.2
    masks[soft] = rng.random(int(soft.sum())).astype(np.float32)
    return torch.from_numpy(masks)


def _state_bytes(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("ablation", ["patch", "mean", "zero"])
@pytest.mark.parametrize("name", MODELS + ["vgg"])
def test_equals_the_oracle(name: str, ablation: str) -> None:
    model, inputs = _model(name)
    x, cf, reference = inputs(2), inputs(2, seed=1), inputs(3, seed=2)
    edges = enumerate_edges(model, x[:1])
    masks = _masks(edges.n, 2, seed=len(name))
    engine = EdgeAblation(model, x[:1], edges, ablation=ablation, reference=reference)
    counterfactuals = cf if ablation == "patch" else None
    got = engine.logits(x, masks, counterfactuals)
    oracle = Oracle(model, x, edges, ablation, reference)
    for k in range(len(masks)):
        expected = oracle.logits(x, masks[k].numpy(), counterfactuals).float()
        torch.testing.assert_close(got[k], expected, rtol=1e-4, atol=1e-4)
    # the ablation must change something, or the comparison proves nothing
    assert (got - model(x)).abs().max() > 1e-2


@pytest.mark.parametrize("name", MODELS + ["vgg", "research_lenet"])
def test_all_kept_is_the_model_and_all_ablated_is_the_counterfactual(name: str) -> None:
    model, inputs = _model(name)
    x, cf = inputs(3), inputs(3, seed=1)
    edges = enumerate_edges(model, x[:1])
    engine = EdgeAblation(model, x[:1], edges, ablation="patch")
    with torch.no_grad():
        clean, counterfactual = model(x), model(cf)
    torch.testing.assert_close(engine.logits(x, torch.ones(edges.n), cf)[0], clean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(engine.logits(x, torch.zeros(2, edges.n), cf), counterfactual.expand(2, -1, -1),
                               rtol=1e-5, atol=1e-5)
    assert (clean - counterfactual).abs().max() > 1e-2


@pytest.mark.parametrize("name", ["lenet", "lstm", "bilstm_mean", "gru2"])
def test_gradients_match_finite_differences(name: str) -> None:
    model, inputs = _model(name)
    model = model.double()
    x, cf = inputs(2).double(), inputs(2, seed=1).double()
    edges = enumerate_edges(model, x[:1])
    engine = EdgeAblation(model, x[:1], edges, ablation="patch")
    base = _masks(edges.n, 1, seed=5)[0].double()
    masks = base.clone().requires_grad_(True)
    out = engine.logits(x, masks, cf)
    weights = torch.linspace(-1.0, 1.0, out[0].numel(), dtype=torch.float64).view_as(out[0])
    (out[0] * weights).sum().backward()
    rng = np.random.default_rng(0)
    picked = rng.choice(edges.n, size=min(12, edges.n), replace=False)
    eps = 1e-6
    for e in picked:
        up, down = base.clone(), base.clone()
        up[e] += eps
        down[e] -= eps
        with torch.no_grad():
            diff = ((engine.logits(x, up, cf)[0] - engine.logits(x, down, cf)[0]) * weights).sum() / (2 * eps)
        assert abs(float(diff) - float(masks.grad[e])) < 1e-6 * max(1.0, abs(float(diff)))
    assert masks.grad.abs().max() > 0
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", ["lenet", "bilstm_last", "gru2"])
def test_many_masks_equal_single_calls_and_chunks(name: str) -> None:
    model, inputs = _model(name)
    x, cf = inputs(3), inputs(3, seed=1)
    edges = enumerate_edges(model, x[:1])
    engine = EdgeAblation(model, x[:1], edges, ablation="patch")
    masks = _masks(edges.n, 5, seed=7)
    together = engine.logits(x, masks, cf)
    assert together.shape == (5, 3, model(x).shape[1])
    for k in range(5):
        torch.testing.assert_close(together[k], engine.logits(x, masks[k], cf)[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(engine.logits(x, masks, cf, chunk_rows=2), together, rtol=1e-5, atol=1e-5)


def _shared_masks(edges, count: int, seed: int) -> torch.Tensor:
    """Masks that agree on most layers: copies of one mask, each changed on the edges into one child layer (the
    same change twice for some), in shuffled order, plus the all-kept mask."""
    rng = np.random.default_rng(seed)
    base = _masks(edges.n, 1, seed)[0]
    children = list(dict.fromkeys(edges.child_layer))
    out = [base.clone(), torch.ones(edges.n)]
    for k in range(count):
        child = children[k % len(children)]
        mask = base.clone()
        into = torch.from_numpy(np.asarray([c == child for c in edges.child_layer]))
        mask[into] = torch.from_numpy(rng.random(int(into.sum())).astype(np.float32).round())
        out += [mask, mask.clone()] if k % 3 == 0 else [mask]
    return torch.stack([out[i] for i in rng.permutation(len(out))])


@pytest.mark.parametrize("ablation", ["patch", "mean", "zero"])
@pytest.mark.parametrize("name", ["lenet", "research_lenet", "grouped", "bn_mlp", "resnet", "gru2", "bilstm_mean",
                                  "attention_lstm", "text_transformer", "vit", "cross_attention"])
def test_masks_sharing_layers_equal_the_oracle(name: str, ablation: str) -> None:
    """Blocks that agree on the layers run so far share their values; every block still equals the oracle."""
    model, inputs = _model(name)
    x, cf, reference = inputs(2), inputs(2, seed=1), inputs(3, seed=2)
    edges = enumerate_edges(model, x[:1])
    masks = _shared_masks(edges, 7, seed=len(name))
    engine = EdgeAblation(model, x[:1], edges, ablation=ablation, reference=reference)
    counterfactuals = cf if ablation == "patch" else None
    got = engine.logits(x, masks, counterfactuals)
    again = engine.logits(x, masks, counterfactuals)  # the first layer's cached contributions
    oracle = Oracle(model, x, edges, ablation, reference)
    for k in range(len(masks)):
        expected = oracle.logits(x, masks[k].numpy(), counterfactuals).float()
        torch.testing.assert_close(got[k], expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(again, got, rtol=0, atol=0)
    assert (got - got[:1]).abs().amax((1, 2)).max() > 1e-2
    # masks equal up to the last child layer, all different there (one class per block, not in block order)
    last = torch.from_numpy(np.asarray([c == edges.child_layer[-1] for c in edges.child_layer]))
    tail = masks[:1].repeat(4, 1)
    tail[:, last] = torch.linspace(1.0, 0.0, 4)[:, None]
    got = engine.logits(x, tail, counterfactuals)
    for k in range(len(tail)):
        expected = oracle.logits(x, tail[k].numpy(), counterfactuals).float()
        torch.testing.assert_close(got[k], expected, rtol=1e-4, atol=1e-4)


def test_model_unchanged_also_after_an_exception() -> None:
    model, inputs = _model("lenet")
    model.train()
    model.fc2.weight.requires_grad_(False)
    x, cf = inputs(2), inputs(2, seed=1)
    before = _state_bytes(model)
    flags = [(m, m.training) for m in model.modules()]
    grads = [p.requires_grad for p in model.parameters()]
    edges = enumerate_edges(model, x[:1])
    engine = EdgeAblation(model, x[:1], edges, ablation="patch")
    masks = _masks(edges.n, 2, seed=1).requires_grad_(True)
    engine.logits(x, masks, cf).sum().backward()
    engine.logits(x, masks.detach(), cf)

    def fail(module, args, output):
        raise RuntimeError("stop")

    handle = model.relu3.register_forward_hook(fail)
    with pytest.raises(RuntimeError, match="stop"):
        engine.logits(x, masks, cf)
    handle.remove()
    assert _state_bytes(model) == before
    assert [(m, m.training) for m in model.modules()] == flags
    assert [p.requires_grad for p in model.parameters()] == grads
    assert all(p.grad is None for p in model.parameters())
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_edges_enumeration_and_ids() -> None:
    model, inputs = _model("lenet")
    edges = enumerate_edges(model, inputs(1))
    # input (1) -> conv1 (6), conv1 -> conv2 (6 x 16), conv2 -> fc1 (16 x 120), fc1 -> fc2, fc2 -> fc3 (84 x 4)
    assert edges.n == 6 + 96 + 16 * 120 + 120 * 84 + 84 * 4
    ids = edges.ids()
    assert ids[0] == "input:0->conv1:0" and ids[6] == "conv1:0->conv2:0" and ids[7] == "conv1:0->conv2:1"
    assert len(set(ids)) == edges.n
    keep = edges.into_target("fc3", 2)
    assert keep.sum() == edges.n - 84 * 3
    assert set(edges.child_unit[~keep]) == {0, 1, 3}
    assert edges.into_target("fc3", [1, 2]).sum() == edges.n - 84 * 2
    with pytest.raises(InterventionError, match="no edges run into layer 'nope'"):
        edges.into_target("nope", 0)
    grouped = enumerate_edges(*(lambda m, i: (m, i(1)))(*_model("grouped")))
    depthwise = [(p, c) for p, c, name in zip(grouped.parent_unit, grouped.child_unit, grouped.child_layer)
                 if name == "depthwise"]
    assert sorted(depthwise) == [(i, i) for i in range(4)]
    assert sum(name == "grouped" for name in grouped.child_layer) == 2 * (2 * 3)


def test_recurrent_edges_stay_within_a_direction() -> None:
    model, inputs = _model("bilstm_last")
    edges = enumerate_edges(model, inputs(1))
    rec = [(int(p), int(c), name) for p, c, name, kind in zip(edges.parent_unit, edges.child_unit, edges.child_layer,
                                                                 edges.kind) if kind == "recurrent"]
    assert len(rec) == 2 * (2 * 2 * 2)
    assert all((p < 2) == (c < 2) for p, c, _ in rec)
    assert "lstm.l0:3->lstm.l0:2" in edges.ids()
    assert "input:2->lstm.l0:3" in edges.ids() and "lstm.l0:1->lstm.l1:3" in edges.ids()


def test_subset_of_edges_keeps_the_rest() -> None:
    model, inputs = _model("lenet")
    x, cf = inputs(2), inputs(2, seed=1)
    edges = enumerate_edges(model, x[:1])
    only = edges.subset(np.asarray([c == "fc2" for c in edges.child_layer]))
    full_mask = np.ones(edges.n, dtype=bool)
    full_mask[[c == "fc2" for c in edges.child_layer]] = False
    expected = ablated_logits(model, x, edges, full_mask, "patch", cf)
    torch.testing.assert_close(ablated_logits(model, x, only, np.zeros(only.n, dtype=bool), "patch", cf), expected)


def test_one_line_errors() -> None:
    model, inputs = _model("lenet")
    x = inputs(2)
    edges = enumerate_edges(model, x[:1])
    engine = EdgeAblation(model, x[:1], edges, ablation="patch")
    with pytest.raises(InterventionError, match="needs counterfactuals"):
        engine.logits(x, torch.ones(edges.n))
    with pytest.raises(InterventionError, match=r"masks must be \(K, "):
        engine.logits(x, torch.ones(3), x)
    with pytest.raises(InterventionError, match="needs reference inputs"):
        EdgeAblation(model, x[:1], ablation="mean")
    with pytest.raises(InterventionError, match="unknown ablation"):
        EdgeAblation(model, x[:1], ablation="resample")
    with pytest.raises(InterventionError, match="unknown layer 'fc9'"):
        enumerate_edges(model, x[:1], layers=["fc9"])
    assert enumerate_edges(model, x[:1], layers=["fc3"]).n == 84 * 4

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.fc(x)))

    class Projected(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(3, 4, num_layers=2, proj_size=2, batch_first=True)
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            return self.fc(self.lstm(x)[0][:, -1])

    for bad, example, module in [(Twice(), torch.randn(2, 3), "fc"), (Projected(), torch.randn(2, 4, 3), "lstm")]:
        with pytest.raises(InterventionError, match=f"cannot handle module '{module}'") as info:
            enumerate_edges(bad, example)
        assert "\n" not in str(info.value)


def test_untraceable_shared_path_is_refused_in_one_line() -> None:
    model = RecurrentClassifier("lstm", 3, 3, hidden_size=3, pooling="attention").eval()
    example = torch.randn(1, 4, 3)
    edges = enumerate_edges(model, example)
    assert {"path"} <= set(edges.kind)
    with pytest.raises(InterventionError, match="cannot handle module 'fc': parents share its inputs") as info:
        EdgeAblation(model, example, edges)
    assert "\n" not in str(info.value)


def test_path_edges_change_only_their_child_unit() -> None:
    model, inputs = _model("resnet")
    x, cf = inputs(2), inputs(2, seed=1)
    edges = enumerate_edges(model, x[:1])
    engine = EdgeAblation(model, x[:1], edges, ablation="patch")
    # ablate the identity-shortcut edge conv1:0 -> layers.1.0.conv1:5: only unit 5 of that child changes
    picked = [e for e, (p, i, c, j) in enumerate(zip(edges.parent_layer, edges.parent_unit, edges.child_layer,
                                                     edges.child_unit)) if c == "layers.1.0.conv1" and p == "conv1"
              and i == 0 and j == 5]
    assert len(picked) == 1 and edges.kind[picked[0]] == "path"
    masks = torch.ones(edges.n)
    masks[picked[0]] = 0.0
    with torch.no_grad():
        engine.logits(x, masks, cf)  # the counterfactual's pass is cached from here on
        captured = {}
        handle = model.layers[1][0].conv1.register_forward_hook(lambda m, a, o: captured.setdefault("y", o))
        engine.logits(x, masks, cf)
        handle.remove()
        clean = model.layers[1][0].conv1(model.layers[0](torch.relu(model.bn1(model.conv1(x)))))
    changed = (captured["y"] - clean).abs().flatten(2).amax(2).amax(0)
    assert changed[5] > 1e-3
    assert float(changed[torch.arange(16) != 5].max()) < 1e-5


def test_a_freed_counterfactual_never_serves_a_stale_ablation_source():
    """Counterfactuals made and freed one after another (their memory reused) each patch their own values."""
    from explainnn.causal.edges import EdgeAblation, enumerate_edges

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)).eval()
    x = torch.randn(4, 6)
    ablation = EdgeAblation(model, x[:1], enumerate_edges(model, x[:1]), ablation="patch")
    cut = torch.zeros(ablation.edges.n)
    for seed in range(20):
        counterfactual = torch.randn(4, 6, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            expected = model(counterfactual)
        torch.testing.assert_close(ablation.logits(x, cut, counterfactual)[0], expected, rtol=1e-5, atol=1e-6)
        del counterfactual


def test_input_gradients_flow_through_a_convolution_that_reads_the_input():
    """The first layer's cached per-channel contributions are bypassed when the inputs need a gradient."""
    from explainnn.causal.edges import EdgeAblation, enumerate_edges
    from explainnn.models.lenet import LeNet

    torch.manual_seed(0)
    model = LeNet().eval()
    x = torch.rand(2, 1, 32, 32)
    ablation = EdgeAblation(model, x[:1], enumerate_edges(model, x[:1]), ablation="mean", reference=torch.rand(8, 1, 32, 32))
    keep = torch.ones(ablation.edges.n)
    ablation.logits(x, keep)  # fills the cache on these inputs
    leaf = x.clone().requires_grad_(True)
    ablation.logits(leaf, keep)[0, :, 3].sum().backward()
    plain = x.clone().requires_grad_(True)
    model(plain)[:, 3].sum().backward()
    assert leaf.grad is not None
    torch.testing.assert_close(leaf.grad, plain.grad, rtol=1e-4, atol=1e-6)
