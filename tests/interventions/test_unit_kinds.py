"""Unit kinds: the registry, the built-in kinds, the extending guide's example, and no kind-name branches."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from torch import nn

from explainnn.attributions import attribute
from explainnn.causal import discover
from explainnn.causal.edges import EdgeAblation, enumerate_edges
from explainnn.errors import InterventionError
from explainnn.interventions import EdgeIntervention, InterventionRunner, NodeIntervention, find_layers, reference_run
from explainnn.interventions.kinds import (
    ConvKind,
    EmbeddingKind,
    LinearKind,
    RecurrentKind,
    UnitKind,
    kind_of,
    registered_kinds,
    unregister_kind,
)

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "explainnn"
KINDS = SRC / "interventions" / "kinds"

BRANCH = re.compile(r"kind ==|\.recurrent\b|kind in \(")
IMPORT = re.compile(r"^\s*(from|import) ")
"""Module paths (``explainnn.models.recurrent``) name files, not kinds."""
EXEMPT = {
    # pydantic's error types (``error["type"]``), not unit kinds
    "config.py": re.compile(r"\bkind (==|in \()"),
    # inspect.Parameter kinds of a function signature, not unit kinds
    "causal/__init__.py": re.compile(r"parameter\.kind in \("),
    # RecurrentClassifier.recurrent: the model's own nn.LSTM/GRU/RNN submodule (a property of that model class)
    "models/recurrent.py": re.compile(r"self\.recurrent\("),
    "attributions/lrp.py": re.compile(r"model\.recurrent\b"),
}


def test_no_kind_branches_outside_the_kinds_package():
    """What a unit is lives in the kinds package: nothing else compares kind names or reads ``.recurrent``."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if KINDS in path.parents:
            continue
        relative = path.relative_to(SRC).as_posix()
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if IMPORT.match(line) or (relative in EXEMPT and EXEMPT[relative].search(line)):
                continue
            if BRANCH.search(line):
                found.append(f"{relative}:{number}: {line.strip()}")
    assert not found, "kind branches outside interventions/kinds:\n" + "\n".join(found)


@pytest.mark.parametrize(("module", "kind", "label"), [
    (nn.Linear(3, 4), LinearKind, "linear"),
    (nn.Conv1d(2, 3, 3), ConvKind, "conv1d"),
    (nn.Conv2d(2, 4, 3, groups=2), ConvKind, "conv2d"),
    (nn.Embedding(10, 4), EmbeddingKind, "embedding"),
    (nn.LSTM(3, 4), RecurrentKind, "lstm"),
    (nn.GRU(3, 4), RecurrentKind, "gru"),
    (nn.RNN(3, 4), RecurrentKind, "rnn"),
])
def test_builtin_kinds(module: nn.Module, kind: type, label: str):
    found = kind_of(module)
    assert isinstance(found, kind) and found.label(module) == label
    assert kind_of(nn.ReLU()) is None and kind_of(nn.BatchNorm1d(3)) is None


def test_layers_carry_their_kind():
    model = nn.Sequential(nn.Conv1d(2, 4, 3, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 3))
    conv, fc = find_layers(model, torch.randn(2, 2, 8))
    assert isinstance(conv.unit_kind, ConvKind) and conv.unit_kind.spatial and conv.unit_axis == 1
    assert conv.unit_kind.groups(conv) == 2 and conv.kind == "conv1d"
    assert isinstance(fc.unit_kind, LinearKind) and not fc.unit_kind.stateful and fc.unit_axis == 1
    rnn = nn.GRU(3, 5, num_layers=2, bidirectional=True, batch_first=True)
    lower, upper = find_layers(nn.Sequential(rnn), torch.randn(2, 4, 3))
    assert lower.unit_kind.stateful and lower.time_axis and lower.directions == 2 and lower.n_units == 10
    assert not lower.is_output and upper.is_output and lower.kind == "gru"


# ---------------------------------------------------------------------------------------------------------------
# The extending guide's example, run as printed


def _guide_example() -> str:
    text = (ROOT / "docs" / "extending.md").read_text()
    section = text[text.index("## Add a unit kind"):]
    return re.findall(r"```python\n(.*?)```", section, re.S)[0]


@pytest.fixture
def masked() -> Iterator[dict[str, Any]]:
    before = registered_kinds()
    namespace: dict[str, Any] = {"__name__": "extending_unit_kind"}
    exec(compile(_guide_example(), "docs/extending.md", "exec"), namespace)
    try:
        yield namespace
    finally:
        for kind in registered_kinds():
            if kind not in before:
                unregister_kind(kind)


def _masked_model(namespace: dict[str, Any]) -> nn.Module:
    torch.manual_seed(0)
    mask = (torch.rand(5, 8) > 0.4).float()
    mask[:, 0] = 1.0
    mask[0, 1:] = 0.0
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), namespace["MaskedLinear"](mask), nn.ReLU(), nn.Linear(5, 3))
    return model.eval()


def test_guide_example_unregistered_is_refused():
    namespace: dict[str, Any] = {"__name__": "extending_unit_kind"}
    source = _guide_example().replace("register_kind(MaskedLinearKind())", "")
    exec(compile(source, "docs/extending.md", "exec"), namespace)
    model = _masked_model(namespace)
    with pytest.raises(InterventionError, match="uses the weight"):
        EdgeAblation(model, torch.randn(1, 6))


def test_guide_example_unit_kind(masked: dict[str, Any]):
    """The guide's kind: a node intervention equals a forward-hook oracle, edges follow the mask, discover runs."""
    model = _masked_model(masked)
    x = torch.randn(12, 6)
    layers = {layer.name: layer for layer in find_layers(model, x[:1])}
    layer = layers["2"]
    assert isinstance(layer.unit_kind, masked["MaskedLinearKind"]) and layer.kind == "masked_linear"
    assert layer.parent == "0" and layer.n_units == 5 and layers["4"].parent == "2"

    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner = InterventionRunner(model)
    result = runner.run(x, [NodeIntervention("2", [1, 3], "constant", value=0.5)])

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        out = output.clone()
        out[:, [1, 3]] = 0.5
        return out

    handle = model[2].register_forward_hook(hook)
    try:
        with torch.no_grad():
            expected = model(x)
    finally:
        handle.remove()
    torch.testing.assert_close(result.logits[0], expected)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())

    # an edge through an unmasked weight equals the weight-edit oracle; a masked weight is no edge
    row = int(torch.nonzero(model[2].mask[:, 2])[0])
    specs = [EdgeIntervention("2", [2], [row]), EdgeIntervention("2", [0], None, 0.5, "scale")]
    got = runner.run(x, specs)
    torch.testing.assert_close(got.logits, reference_run(model, x, specs).logits)
    edges = enumerate_edges(model, x[:1])
    into = {(int(p), int(c)) for p, c, child in zip(edges.parent_unit, edges.child_unit, edges.child_layer)
            if child == "2"}
    assert len(into) == 5 * 8  # every pair is enumerated; the masked ones carry no weight
    # edge circuits: a zero-ablated edge equals the edge set to 0; a masked weight changes nothing
    ablation = EdgeAblation(model, x[:1], edges, ablation="zero")
    position = {(p, c, k, child): e for e, (p, c, k, child) in enumerate(
        zip(edges.parent_layer, edges.parent_unit.tolist(), edges.child_unit.tolist(), edges.child_layer))}
    masks = torch.ones(3, edges.n)
    masks[1, position[("0", 2, row, "2")]] = 0.0
    dead = int(torch.nonzero(model[2].mask[:, 3] == 0)[0])
    masks[2, position[("0", 3, dead, "2")]] = 0.0
    with torch.no_grad():
        logits = ablation.logits(x, masks, None)
        clean = model(x)
    torch.testing.assert_close(logits[0], clean)
    torch.testing.assert_close(logits[1], reference_run(model, x, [EdgeIntervention("2", [2], [row])]).logits[0])
    torch.testing.assert_close(logits[2], clean)

    x = torch.randn(64, 6)
    target = int(model(x).argmax(1).mode().values)
    graph = discover(model, x, target, n_samples=16, alpha=0.99, seed=0)
    assert {"0", "2"} <= set(graph.layers())
    assert tuple(attribute(model, x[:4], target, "causal", graph=graph).shape) == (4, 6)


def test_kind_of_prefers_the_latest_registration():
    class Wide(nn.Linear):
        pass

    class WideKind(UnitKind):
        name = "wide"
        module_types = (Wide,)

    from explainnn.interventions.kinds import register_kind

    kind = register_kind(WideKind())
    try:
        assert kind_of(Wide(2, 3)) is kind and isinstance(kind_of(nn.Linear(2, 3)), LinearKind)
    finally:
        unregister_kind(kind)
    assert isinstance(kind_of(Wide(2, 3)), LinearKind)


def test_register_kind_needs_an_instance():
    from explainnn.interventions.kinds import register_kind

    with pytest.raises(TypeError, match="UnitKind instance"):
        register_kind(LinearKind)  # the class, not an instance
    assert len(registered_kinds()) == 6
