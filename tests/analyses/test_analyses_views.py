"""Views: filter pictures, activation maps, activation maximisation, hidden representations, the views step."""

from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from explainnn.analyses.embeddings import hidden_representations, plot_embedding, project_2d
from explainnn.analyses.views import (
    activation_maps,
    maximize_activation,
    plot_activation_maps,
    plot_filters,
    plot_maximization,
)
from explainnn.analyses.views import learned_views as compute_views
from explainnn.causal import CausalGraph
from explainnn.data import Dataset, DatasetInfo, load_dataset
from explainnn.errors import UserError
from explainnn.models import LeNet, RecurrentClassifier, build_model, images_as_rows


@pytest.fixture
def lenet() -> LeNet:
    torch.manual_seed(0)
    return LeNet(1, 32, 10)


@pytest.fixture
def lstm() -> RecurrentClassifier:
    """Reads (1, 12, 10) images as 12 rows of 10 features."""
    torch.manual_seed(0)
    return RecurrentClassifier("lstm", 10, 3, hidden_size=8, num_layers=2)


def graph_for(target: int, layers: dict[str, list[int]], output: str = "fc3") -> CausalGraph:
    """A graph whose given units of each layer all feed the output unit ``target``."""
    graph = CausalGraph({"target": target})
    graph.add_unit(output, target, kind="output", depth=len(layers) + 1)
    for depth, (layer, units) in enumerate(layers.items(), start=1):
        for unit in units:
            graph.add_unit(layer, unit, depth=depth)
            graph.add_edge(f"{layer}:{unit}", f"{output}:{target}")
    return graph


def titles(figure: Figure) -> list[str]:
    return [axis.get_title() for axis in figure.axes if axis.get_visible()]


# ----------------------------------------------------------------------- filters
def test_filters_of_lenet_show_the_first_conv_layer(lenet, tmp_path):
    figure = plot_filters(lenet, tmp_path / "filters.png")
    assert (tmp_path / "filters.png").stat().st_size > 0
    kernels = [axis.images[0].get_array() for axis in figure.axes if axis.get_visible() and axis.images]
    assert len(kernels) == 6 and all(k.shape == (5, 5) for k in kernels)
    assert "conv1" in figure._suptitle.get_text()

    grid = plot_filters(lenet, layer="conv2")
    assert sum(1 for axis in grid.axes if axis.images) == 6 * 16


def test_filters_of_an_rgb_network_are_colour_images():
    torch.manual_seed(0)
    figure = plot_filters(LeNet(3, 32, 10), example_input=torch.zeros(1, 3, 32, 32))
    kernels = [axis.images[0].get_array() for axis in figure.axes if axis.images]
    assert len(kernels) == 6
    assert all(k.shape == (5, 5, 3) and 0 <= k.min() and k.max() <= 1 for k in kernels)


def test_filters_need_a_conv_layer(lstm, lenet):
    with pytest.raises(UserError, match="no Conv1d/Conv2d layer"):
        plot_filters(lstm)
    with pytest.raises(UserError, match="conv layers: conv1, conv2"):
        plot_filters(lenet, layer="fc1")


# --------------------------------------------------------------- activation maps
def test_activation_maps_shape_and_causal_marks(lenet):
    x = torch.rand(2, 1, 32, 32)
    assert activation_maps(lenet, x, "conv1").shape == (2, 6, 28, 28)
    assert activation_maps(lenet, x, "conv2").shape == (2, 16, 10, 10)
    with pytest.raises(UserError, match="conv layers: conv1, conv2"):
        activation_maps(lenet, x, "fc2")
    with pytest.raises(UserError, match="unknown layer 'conv9'"):
        activation_maps(lenet, x, "conv9")

    figure = plot_activation_maps(lenet, x[0], "conv2", graph=graph_for(4, {"conv2": [1, 5]}))
    marked = [t for t in titles(figure) if "causal" in t]
    assert marked == ["1 causal", "5 causal"]
    assert "red: causal for class 4" in figure._suptitle.get_text()


# ------------------------------------------------------- activation maximisation
def model_state(model: torch.nn.Module) -> tuple:
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [(m.training) for m in model.modules()],
        [(p.requires_grad, None if p.grad is None else p.grad.clone()) for p in model.parameters()],
    )


def same_state(before: tuple, after: tuple) -> bool:
    weights = before[0].keys() == after[0].keys() and all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    grads = all(
        a[0] == b[0] and (a[1] is None) == (b[1] is None) and (a[1] is None or torch.equal(a[1], b[1]))
        for a, b in zip(before[2], after[2])
    )
    return weights and before[1] == after[1] and grads


@pytest.mark.parametrize(
    ("name", "layer", "units", "shape"),
    [
        ("lenet", "conv2", [0, 7], (1, 32, 32)),
        ("lenet", "fc2", [3], (1, 32, 32)),
        ("lstm", "lstm.l1", [0, 5], (1, 12, 10)),
        ("lstm", "lstm.l0", [2], (12, 10)),
    ],
)
def test_maximisation_raises_the_unit_and_leaves_the_model_alone(request, name, layer, units, shape):
    model = request.getfixturevalue(name)
    model.train()
    first = next(model.parameters())
    first.grad = torch.full_like(first, 0.5)
    list(model.parameters())[-1].requires_grad_(False)
    before = model_state(model)

    start = maximize_activation(model, layer, units, input_shape=shape, steps=0)
    found = maximize_activation(model, layer, units, input_shape=shape, steps=30, seed=0)
    assert found.shape == (len(units), *shape) and 0 <= found.min() and found.max() <= 1
    rows = np.arange(len(units))
    reached = hidden_representations(model, found, layer)[rows, units]
    initial = hidden_representations(model, start, layer)[rows, units]
    assert np.all(reached > initial)
    assert same_state(before, model_state(model))
    assert model.training

    again = maximize_activation(model, layer, units[0], input_shape=shape, steps=30, seed=0)
    assert again.shape == shape
    torch.testing.assert_close(again, found[0])


def test_maximisation_rejects_bad_requests(lenet):
    with pytest.raises(UserError, match="units 0..83; got unit 84"):
        maximize_activation(lenet, "fc2", 84, input_shape=(1, 32, 32))
    with pytest.raises(UserError, match="unknown layer 'fc9'; valid layers: conv1, conv2, fc1, fc2, fc3"):
        maximize_activation(lenet, "fc9", 0, input_shape=(1, 32, 32))
    with pytest.raises(UserError, match="value_range must have low < high"):
        maximize_activation(lenet, "fc2", 0, input_shape=(1, 32, 32), value_range=(1, 0))
    token_model = RecurrentClassifier("gru", None, 2, hidden_size=4, vocab_size=10, embedding_dim=4)
    with pytest.raises(UserError, match="token ids"):
        maximize_activation(token_model, "gru", 0, input_shape=(5,))


def test_plot_maximization_shows_the_graphs_causal_units(lenet):
    graph = graph_for(2, {"fc2": [4, 9]})
    figure = plot_maximization(lenet, "fc2", input_shape=(1, 32, 32), graph=graph, steps=3)
    assert [t.split(":")[0] for t in titles(figure)] == ["4", "9"]
    assert all(t.endswith("causal") for t in titles(figure))
    with pytest.raises(UserError, match="name the units"):
        plot_maximization(lenet, "fc2", input_shape=(1, 32, 32), steps=3)


# -------------------------------------------------------- hidden representations
def test_hidden_representations_match_the_layers(lenet, lstm):
    x = torch.rand(5, 1, 32, 32)
    fc2 = hidden_representations(lenet, x, "fc2", batch_size=2)
    assert fc2.shape == (5, 84) and fc2.dtype == np.float32
    np.testing.assert_allclose(fc2, lenet[:10](x).detach().numpy(), rtol=1e-5, atol=1e-6)
    conv2 = hidden_representations(lenet, x, "conv2")
    np.testing.assert_allclose(conv2, lenet[:4](x).mean(dim=(2, 3)).detach().numpy(), rtol=1e-5, atol=1e-6)

    rows = torch.rand(4, 1, 12, 10)
    _, (h_n, _) = lstm.lstm(images_as_rows(rows))
    for sublayer in (0, 1):
        found = hidden_representations(lstm, rows, f"lstm.l{sublayer}")
        assert found.shape == (4, 8)
        np.testing.assert_allclose(found, h_n[sublayer].detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_projection_shapes_and_determinism(method):
    features = np.random.default_rng(0).normal(size=(40, 6))
    coords = project_2d(features, method, seed=1)
    assert coords.shape == (40, 2) and np.all(np.isfinite(coords))
    np.testing.assert_array_equal(coords, project_2d(features, method, seed=1))
    assert project_2d(features[:4], method).shape == (4, 2)
    assert project_2d(features[:, :1], method).shape == (40, 2)


def test_projection_rejects_bad_input(tmp_path):
    with pytest.raises(UserError, match="valid projections: pca, tsne"):
        project_2d(np.zeros((5, 2)), "umap")
    with pytest.raises(UserError, match="N >= 3"):
        project_2d(np.zeros((2, 2)))
    figure = plot_embedding(np.zeros((4, 2)), [0, 1, 1, 2], ["a", "b", "c"], tmp_path / "e.png", "title")
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == ["a", "b", "c"]
    with pytest.raises(UserError, match="labels must lie in"):
        plot_embedding(np.zeros((2, 2)), [0, 3], ["a", "b"])


# ---------------------------------------------------------------------- the step
def small(dataset: Dataset, n_test: int) -> Dataset:
    return replace(dataset, x_train=dataset.x_train[:8], y_train=dataset.y_train[:8],
                   x_test=dataset.x_test[:n_test], y_test=dataset.y_test[:n_test])


def read_csv(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _views_step(model, dataset, run_dir, *overrides, graph=None):
    """The pipeline's views step on ``model`` and ``dataset`` (and ``graph``, as discovery's result) alone."""
    from explainnn.causal import DiscoveryResult
    from explainnn.config import build_config
    from explainnn.pipeline.context import RunContext
    from explainnn.pipeline.views import draw_views

    ctx = RunContext(build_config(overrides=["progress=false", "plots.dpi=40", *overrides]), run_dir,
                     torch.device("cpu"))
    ctx.dataset, ctx.model = dataset, model
    if graph is not None:
        ctx.discoveries[int(graph.metadata["target"])] = DiscoveryResult.of(graph)
    return ctx, draw_views(ctx, ctx.config.analyses.views)


def test_the_views_step_writes_every_view_of_lenet_on_digits(tmp_path, capsys):
    digits = small(load_dataset("digits", image_size=32), 60)
    torch.manual_seed(0)
    model = build_model("lenet", digits.info)
    graph = graph_for(int(digits.y_test[3]), {"conv2": [2], "fc2": [10, 20]})
    ctx, written = _views_step(model, digits, tmp_path, "analyses.views.n_samples=40", graph=graph)
    names = {"filters.png", "activation_maps_conv2.png", "maximization_fc2.png", "maximization_fc2.npz",
             "embedding_fc2.png", "embedding_fc2.csv"}
    folder = tmp_path / "views"
    assert {p.name for p in written.values()} == names and ctx.analyses.view_files == written
    assert {p.name for p in folder.iterdir()} == names
    rows = read_csv(folder / "embedding_fc2.csv")
    assert len(rows) == 40 and list(rows[0]) == ["index", "x", "y", "label", "class"]
    assert all(r["class"] == digits.info.class_names[int(r["label"])] for r in rows)
    with np.load(folder / "maximization_fc2.npz", allow_pickle=False) as saved:
        assert saved["units"].tolist() == [10, 20] and saved["inputs"].shape == (2, 1, 32, 32)
    views = ctx.analyses.views
    assert views is not None and views.filters == "conv1" and views.skipped == ()
    first = int(torch.nonzero(digits.y_test == digits.y_test[3])[0])  # the first test sample of the graph's class
    assert views.activation_maps is not None and views.activation_maps.sample == first
    line = capsys.readouterr().out
    assert line.startswith(f"views       filters conv1; activation maps conv2 (test #{first}, class ")
    assert "maximisation fc2 (2 causal units)" in line and "embedding fc2 (pca, 40 samples)" in line

    _views_step(model, digits, tmp_path / "fc1", "analyses.views.layer=fc1", "analyses.views.maximize=false",
                "analyses.views.n_samples=20", "plots.enabled=false")
    assert {p.name for p in (tmp_path / "fc1" / "views").iterdir()} == {"embedding_fc1.csv"}
    assert "views       filters and activation maps: skipped (they are pictures and plots are disabled)" in \
        capsys.readouterr().out
    with pytest.raises(UserError, match="unknown layer 'fc9'"):
        compute_views(model, digits, layer="fc9")


def test_learned_views_of_an_lstm_on_mnist_rows(tmp_path, capsys):
    mnist = small(load_dataset("mnist", tmp_path / "data"), 50)
    torch.manual_seed(0)
    model = build_model("lstm", mnist.info, hidden_size=8)
    views = compute_views(model, mnist, n_samples=30, projection="tsne", maximize_steps=5)
    assert capsys.readouterr() == ("", "")
    assert views.filters is None and views.activation_maps is None
    assert views.skipped == (("filters and activation maps", "the model has no convolutional layer"),)
    assert views.maximization is not None and views.maximization.layer == "lstm"
    assert views.maximization.source == "most active" and len(views.maximization.units) == 8
    assert views.maximization.inputs.shape == (8, *mnist.x_test.shape[1:])
    assert views.embedding is not None and views.embedding.coords.shape == (30, 2)
    assert views.embedding.projection == "tsne" and views.embedding.n_units == 8


def test_learned_views_skip_maximisation_for_token_models():
    vocab = ("<pad>", "<unk>", "good", "bad", "film")
    info = DatasetInfo("toy", "tokens", (4,), 2, ("neg", "pos"), "test", vocab=vocab, pad_index=0, unk_index=1)
    tokens = torch.randint(1, 5, (12, 4), generator=torch.Generator().manual_seed(0))
    labels = torch.arange(12) % 2
    toy = Dataset(info, tokens, labels, tokens, labels)
    torch.manual_seed(0)
    model = build_model("gru", info, hidden_size=4, embedding_dim=4)
    views = compute_views(model, toy, n_samples=10)
    assert views.maximization is None and views.embedding is not None and views.embedding.layer == "gru"
    assert [view for view, _ in views.skipped] == ["filters and activation maps", "maximisation"]
    assert views.skipped[1][1].startswith("token model")
