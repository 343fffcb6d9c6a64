"""Edges into and out of attention heads: edge ablation against a hand-written oracle, and planted transformer circuits.

The oracle computes an ``nn.MultiheadAttention`` pooling model head by head, each
head reading its own mixture of current and ablated inputs and the classifier's
units their own mixture of current and ablated heads. The planted models write
on a residual stream with hand-set weights, so the units and edges that carry
the target logit are known exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from explainnn.causal import circuit, discover
from explainnn.causal.edges import EdgeAblation, enumerate_edges
from explainnn.interventions.hooks import no_fast_path

TARGET = 1


class AttentionPool(nn.Module):
    """Linear, self-attention over the positions, mean pool, Linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(3, 4)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        return self.fc(self.attn(h, h, h, need_weights=False)[0].mean(1))


def _heads(attn: nn.MultiheadAttention, x_per_head: list[torch.Tensor]) -> torch.Tensor:
    """``(N, T, heads, d)``: head ``h`` computed on its own input ``x_per_head[h]`` (no masks)."""
    embed, heads = attn.embed_dim, attn.num_heads
    d = embed // heads
    w, b = attn.in_proj_weight.detach(), attn.in_proj_bias.detach()
    outs = []
    for h in range(heads):
        x = x_per_head[h]
        rows = [slice(part * embed + h * d, part * embed + (h + 1) * d) for part in range(3)]
        q, k, v = (x @ w[r].T + b[r] for r in rows)
        p = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d), -1)
        outs.append(p @ v)
    return torch.stack(outs, 2)


def _oracle(model: AttentionPool, x: torch.Tensor, abl_x: torch.Tensor, abl_proj: torch.Tensor,
            abl_heads: torch.Tensor, edges, keep: np.ndarray) -> torch.Tensor:
    """The model with the edges where ``keep`` is False ablated, written out unit by unit."""
    kept = {(p, int(i), c, int(j)): bool(k) for p, i, c, j, k in
            zip(edges.parent_layer, edges.parent_unit, edges.child_layer, edges.child_unit, keep)}
    w1, b1 = model.proj.weight.detach(), model.proj.bias.detach()
    h = torch.stack([
        sum((x[..., i] if kept[("input", i, "proj", j)] else abl_x[..., i]) * w1[j, i] for i in range(3)) + b1[j]
        for j in range(4)], -1)
    per_head = []
    for head in range(2):
        per_head.append(torch.stack([h[..., i] if kept[("proj", i, "attn", head)] else abl_proj[..., i]
                                     for i in range(4)], -1))
    clean_heads = _heads(model.attn, [h, h])
    heads = _heads(model.attn, per_head)
    w_o, b_o = model.attn.out_proj.weight.detach(), model.attn.out_proj.bias.detach()
    w2, b2 = model.fc.weight.detach(), model.fc.bias.detach()
    logits = []
    for c in range(2):
        mixed = torch.stack([heads[:, :, g] if kept[("attn", g, "fc", c)] else abl_heads[:, :, g]
                             for g in range(2)], 2)
        pooled = (mixed.flatten(2) @ w_o.T + b_o).mean(1)
        logits.append(pooled @ w2[c] + b2[c])
    del clean_heads
    return torch.stack(logits, -1)


@pytest.mark.parametrize("ablation", ["patch", "mean", "zero"])
def test_edge_ablation_through_heads_equals_the_oracle(ablation):
    model = AttentionPool().eval()
    torch.manual_seed(1)
    x, cf = torch.randn(5, 4, 3), torch.randn(5, 4, 3)
    edges = enumerate_edges(model, x[:1])
    assert set(zip(edges.parent_layer, edges.child_layer, edges.kind)) == {
        ("input", "proj", "input"), ("proj", "attn", "weights"), ("attn", "fc", "path")}
    engine = EdgeAblation(model, x[:1], edges, ablation=ablation, reference=cf)
    keep = np.random.default_rng(0).random((4, edges.n)) > 0.4
    keep[0] = True
    out = engine.logits(x, torch.from_numpy(keep.astype(np.float32)), cf if ablation == "patch" else None)
    with torch.no_grad():
        source = cf if ablation == "patch" else cf
        h_src = model.proj(source)
        heads_src = _heads(model.attn, [h_src, h_src])
        if ablation == "patch":
            abl = (source, h_src, heads_src)
        elif ablation == "mean":
            abl = (source.mean(0, keepdim=True), h_src.mean(0, keepdim=True), heads_src.mean(0, keepdim=True))
        else:
            abl = (torch.zeros(()), torch.zeros(()), torch.zeros(()))
        for k in range(len(keep)):
            expected = _oracle(model, x, *(a.expand_as(b) for a, b in zip(abl, (x, model.proj(x), heads_src))),
                               edges, keep[k])
            torch.testing.assert_close(out[k], expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out[0], model(x), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("ablation", ["patch", "mean", "zero"])
def test_masks_through_a_transformer_are_differentiable_and_equal_the_batched_forward(ablation):
    model, x = _text_transformer()
    cf = x.flip(0)
    edges = enumerate_edges(model, x[:1])
    kinds = set(zip(edges.parent_layer, edges.child_layer, edges.kind))
    assert ("enc.layers.0.self_attn", "enc.layers.1.self_attn", "path") in kinds
    assert ("enc.layers.1.self_attn", "fc", "path") in kinds
    engine = EdgeAblation(model, x[:1], edges, ablation=ablation, reference=x)
    masks = (torch.rand(3, edges.n, generator=torch.Generator().manual_seed(0)) > 0.3).float()
    masks[0] = 1.0
    counterfactuals = cf if ablation == "patch" else None
    plain = engine.logits(x, masks, counterfactuals)
    with torch.no_grad():
        torch.testing.assert_close(plain[0], model(x), atol=1e-5, rtol=1e-4)
        if ablation == "patch":
            everything = engine.logits(x, torch.zeros(edges.n), counterfactuals)[0]
            torch.testing.assert_close(everything, model(cf), atol=1e-5, rtol=1e-4)
    learned = masks.clone().requires_grad_(True)
    out = engine.logits(x, learned, counterfactuals)
    torch.testing.assert_close(out.detach(), plain, atol=1e-5, rtol=1e-4)
    out[..., TARGET].sum().backward()
    assert learned.grad is not None and bool(learned.grad.abs().sum() > 0)


def _text_transformer():
    torch.manual_seed(0)
    emb, pos = nn.Embedding(12, 8), nn.Embedding(5, 8)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    fc = nn.Linear(8, 2)

    class Text(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.pos, self.enc, self.fc = emb, pos, encoder, fc

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            positions = torch.arange(x.shape[1]).expand(x.shape[0], -1)
            return self.fc(self.enc(self.emb(x) + self.pos(positions)).mean(1))

    return Text().eval(), torch.randint(0, 12, (6, 5))


# ---------------------------------------------------------------------------------------------------------------
# Planted circuits on a residual stream: attention layers and an MLP, every weight zero but the planted ones


class Planted(nn.Module):
    """``h = proj(x)``; ``h += attn1(h)``; ``h += attn2(h)``; ``h += linear2(relu(linear1(h)))``; ``fc(mean(h))``.

    Both attention layers read every position from token 0 only (an additive mask),
    so a head copies token 0's value to every position.
    """

    def __init__(self, scenario: str) -> None:
        super().__init__()
        self.proj = nn.Linear(2, 6)
        self.attn1 = nn.MultiheadAttention(6, 2, batch_first=True)
        self.attn2 = nn.MultiheadAttention(6, 2, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(6, 4), nn.Linear(4, 6)
        self.fc = nn.Linear(6, 2)
        mask = torch.full((4, 4), float("-inf"))
        mask[:, 0] = 0.0
        self.register_buffer("mask", mask)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.zero_()
            # noise that must not count: heads and neurons with inputs but no way out
            self.attn1.in_proj_weight[12:] = torch.randn(6, 6)
            self.attn2.in_proj_weight[12:] = torch.randn(6, 6)
            self.linear1.weight.copy_(torch.randn(4, 6))
            if scenario == "copy":  # (a) head attn1:0 copies token 0's feature 0 to the output
                self.proj.weight[0, 0] = 1.0
                self.attn1.out_proj.weight[5, 0] = 1.0  # head 0's first value dim (value row 12 reads h_0)
                self.attn1.in_proj_weight[12] = torch.tensor([1.0, 0, 0, 0, 0, 0])
                self.fc.weight[1, 5], self.fc.weight[0, 5] = 2.0, -2.0
            elif scenario == "neuron":  # (b) neuron linear1:2 detects feature 1 and alone drives the logit
                self.proj.weight[1, 1] = 1.0
                self.linear1.weight[2] = torch.tensor([0, 3.0, 0, 0, 0, 0])
                self.linear2.weight[4, 2] = 1.0
                self.fc.weight[1, 4], self.fc.bias[1] = 2.0, -1.0
            else:  # (c) head attn1:0 reaches the output only through head attn2:1
                self.proj.weight[0, 0] = 1.0
                self.attn1.in_proj_weight[12] = torch.tensor([1.0, 0, 0, 0, 0, 0])
                self.attn1.out_proj.weight[2, 0] = 1.0
                self.attn2.in_proj_weight[15] = torch.tensor([0, 0, 1.0, 0, 0, 0])  # head 1's value reads h_2
                self.attn2.out_proj.weight[3, 3] = 1.0
                self.fc.weight[1, 3], self.fc.weight[0, 3] = 2.0, -2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        h = h + self.attn1(h, h, h, attn_mask=self.mask, need_weights=False)[0]
        h = h + self.attn2(h, h, h, attn_mask=self.mask, need_weights=False)[0]
        h = h + self.linear2(torch.relu(self.linear1(h)))
        return self.fc(h.mean(1))


PLANTED = {
    "copy": ({"proj:0", "attn1:0"}, {("input:0", "proj:0"), ("proj:0", "attn1:0"), ("attn1:0", "fc:1")}),
    "neuron": ({"proj:1", "linear1:2", "linear2:4"},
               {("input:1", "proj:1"), ("proj:1", "linear1:2"), ("linear1:2", "linear2:4"), ("linear2:4", "fc:1")}),
    "through": ({"proj:0", "attn1:0", "attn2:1"},
                {("input:0", "proj:0"), ("proj:0", "attn1:0"), ("attn1:0", "attn2:1"), ("attn2:1", "fc:1")}),
}


def _planted(scenario: str):
    torch.manual_seed(3)
    model = Planted(scenario).eval()
    x = torch.randn(60, 4, 2)
    with torch.no_grad(), no_fast_path():
        labels = model(x).argmax(-1)
    return model, x, labels


@pytest.mark.parametrize("scenario", list(PLANTED))
def test_planted_transformer_circuits_are_recovered_by_discovery(scenario):
    model, x, _ = _planted(scenario)
    units, _ = PLANTED[scenario]
    result = discover(model, x, TARGET, n_samples=20, on="nodes")
    hidden = {node for node in result.graph.nodes if not node.startswith(("input:", "fc:"))}
    assert hidden == units


@pytest.mark.parametrize("scenario", list(PLANTED))
def test_planted_transformer_circuits_are_recovered_as_node_circuits(scenario):
    model, x, labels = _planted(scenario)
    units, _ = PLANTED[scenario]
    graph = circuit(model, x, TARGET, level="nodes", labels=labels, n_samples=20, steps=60)
    hidden = {node for node in graph.digraph.nodes if not node.startswith(("input:", "fc:"))}
    assert hidden == units


@pytest.mark.parametrize("scenario", list(PLANTED))
def test_planted_transformer_circuits_are_recovered_as_edge_circuits(scenario):
    model, x, labels = _planted(scenario)
    _, planted_edges = PLANTED[scenario]
    graph = circuit(model, x, TARGET, level="edges", ablation="zero", labels=labels, n_samples=20, steps=60)
    assert set(graph.digraph.edges) == planted_edges
