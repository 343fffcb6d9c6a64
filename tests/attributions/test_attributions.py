"""Attribution methods: registry, dispatch per modality, shapes, determinism, axioms, Quantus."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from explainnn.attributions import (
    METHODS,
    ChannelFirstSequenceModel,
    EmbeddingSpaceModel,
    attribute,
    available_methods,
    explain_func,
    method_info,
    modality_of,
    register_method,
)
from explainnn.data import Dataset, load_dataset, pad_images
from explainnn.errors import DataError, UserError
from explainnn.models import build_model
from explainnn.torch_utils import seed_everything
from explainnn.training import train_model

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BATCH = 3
FAST = {
    "integrated_gradients": {"n_steps": 8},
    "smoothgrad": {"nt_samples": 4},
    "gradient_shap": {"n_samples": 4},
    "lime": {"n_perturbations": 40},
    "kernel_shap": {"n_perturbations": 40},
}
STOCHASTIC = ("smoothgrad", "gradient_shap", "lime", "kernel_shap", "feature_permutation")


def subset(dataset: Dataset, n_train: int, n_test: int = 32) -> Dataset:
    return replace(dataset, x_train=dataset.x_train[:n_train], y_train=dataset.y_train[:n_train],
                   x_test=dataset.x_test[:n_test], y_test=dataset.y_test[:n_test])


def trained(name: str, dataset: Dataset, epochs: int = 2, **params) -> torch.nn.Module:
    seed_everything(0)
    model = build_model(name, dataset.info, **params)
    train_model(model, dataset, epochs=epochs, batch_size=32, lr=5e-3, progress=False)
    return model


@pytest.fixture(scope="module")
def mnist28(tmp_path_factory) -> Dataset:
    return subset(load_dataset("mnist", tmp_path_factory.mktemp("mnist")), 400)


@pytest.fixture(scope="module")
def mnist32(mnist28) -> Dataset:
    pad = lambda x: pad_images(x, 32, "mnist")  # noqa: E731
    info = replace(mnist28.info, input_shape=(1, 32, 32))
    return replace(mnist28, info=info, x_train=pad(mnist28.x_train), x_test=pad(mnist28.x_test))


@pytest.fixture(scope="module")
def sst2() -> Dataset:
    if not (SHARED / "sst2" / "train.tsv").is_file():
        pytest.skip(f"SST-2 files not found in {SHARED / 'sst2'}")
    return subset(load_dataset("sst2", SHARED, max_len=16, train_subset=1200), 1200)


@pytest.fixture(scope="module")
def cases(mnist28, mnist32, tmp_path_factory) -> dict:
    """name -> (model, inputs, targets) for LeNet, LSTM on image rows and LSTM on MNIST-1D."""
    mnist1d = subset(load_dataset("mnist1d", tmp_path_factory.mktemp("m1d"), num_samples=500), 400)
    found = {}
    for name, (model, data) in {
        "lenet-mnist": (trained("lenet", mnist32), mnist32),
        "lstm-rows": (trained("lstm", mnist28, hidden_size=24), mnist28),
        "lstm-mnist1d": (trained("lstm", mnist1d, epochs=3, hidden_size=24), mnist1d),
    }.items():
        found[name] = (model, data.x_test[:BATCH], data.y_test[:BATCH])
    return found


@pytest.fixture(scope="module")
def gru_text(sst2) -> tuple:
    return trained("gru", sst2, hidden_size=24, embedding_dim=16), sst2.x_test[:BATCH], sst2.y_test[:BATCH]


@pytest.fixture(scope="module")
def gru_attention(sst2) -> torch.nn.Module:
    return trained("gru", sst2, epochs=1, hidden_size=16, embedding_dim=8, pooling="attention")


def expected_methods(case: str) -> list[str]:
    modality = {"lenet-mnist": "image", "lstm-rows": "image", "lstm-mnist1d": "sequence"}[case]
    excluded = {"attention"} | ({"deeplift", "guided_backprop"} if case.startswith("lstm") else {"lrp"})
    # Methods that need a causal graph are tested in test_attributions_causal.py.
    return [m for m in available_methods(modality) if m not in excluded and not method_info(m).needs_graph]


CASES = [(case, method) for case in ("lenet-mnist", "lstm-rows", "lstm-mnist1d") for method in expected_methods(case)]


# Registry ---------------------------------------------------------------------------


def test_registry_lists_the_standard_methods_per_modality() -> None:
    standard = {"integrated_gradients", "saliency", "smoothgrad", "gradient_x_input", "gradient_shap", "lime",
                "kernel_shap", "occlusion", "feature_permutation", "deeplift", "guided_backprop"}
    assert standard <= set(available_methods("image"))
    assert {"leave_one_out", "likelihood_importance", "attention", "integrated_gradients", "lime"} <= set(
        available_methods("tokens"))
    assert "deeplift" not in available_methods("sequence") and "leave_one_out" not in available_methods("image")
    assert available_methods() == sorted(METHODS)
    info = method_info("lime")
    assert info.stochastic and not info.needs_graph and info.modalities == ("image", "sequence", "tokens", "tabular")
    assert info.options("image")["n_perturbations"] == 500 and "mask" in info.options("image")
    assert "replacement" in info.options("tokens") and info.options("tokens")["seed"] == 0
    assert method_info("integrated_gradients").options("image")["n_steps"] == 64
    assert "Integrated Gradients" in method_info("integrated_gradients").description
    with pytest.raises(UserError, match="unknown modality 'audio'"):
        available_methods("audio")


def test_unknown_method_option_and_modality_errors(cases) -> None:
    model, x, y = cases["lenet-mnist"]
    with pytest.raises(UserError, match=r"unknown attribution method 'shapley'; valid: .*integrated_gradients"):
        attribute(model, x, y, "shapley")
    with pytest.raises(UserError, match=r"unknown option 'steps' for attribution method 'integrated_gradients' "
                                        r"on image inputs; valid options: n_steps, internal_batch_size, seed"):
        attribute(model, x, y, "integrated_gradients", steps=3)
    with pytest.raises(UserError, match="'leave_one_out' does not support image inputs; it supports: tokens"):
        attribute(model, x, y, "leave_one_out")
    lstm, sequences, labels = cases["lstm-mnist1d"]
    with pytest.raises(UserError, match="'deeplift' does not support sequence inputs; it supports: image"):
        attribute(lstm, sequences, labels, "deeplift")
    with pytest.raises(UserError, match="n_steps must be a positive integer"):
        attribute(model, x, y, "integrated_gradients", n_steps=0)
    with pytest.raises(UserError, match="unknown image mask 'voronoi'; valid masks: patches, slic"):
        attribute(model, x, y, "lime", mask="voronoi")
    with pytest.raises(UserError, match="apply to images only"):
        attribute(lstm, sequences, labels, "lime", mask="slic")
    with pytest.raises(UserError, match="seed must be a non-negative integer"):
        attribute(model, x, y, "saliency", seed=-1)


def test_target_forms_and_errors(cases) -> None:
    model, x, y = cases["lenet-mnist"]
    by_int = attribute(model, x, 3, "saliency")
    assert np.array_equal(by_int, attribute(model, x, torch.full((BATCH,), 3), "saliency"))
    assert np.array_equal(by_int, attribute(model, x, np.array([3] * BATCH), "saliency"))
    assert np.array_equal(by_int, attribute(model, x, [3] * BATCH, "saliency"))
    with pytest.raises(UserError, match=r"target classes must be in 0\.\.9"):
        attribute(model, x, 10, "saliency")
    with pytest.raises(UserError, match="target must be an int or 3 integer classes"):
        attribute(model, x, torch.tensor([1, 2]), "saliency")
    with pytest.raises(UserError, match="inputs hold no samples"):
        attribute(model, x[:0], 1, "saliency")


def test_modality_detection(cases, gru_text) -> None:
    lenet, images, _ = cases["lenet-mnist"]
    lstm, sequences, _ = cases["lstm-mnist1d"]
    gru, tokens, _ = gru_text
    assert modality_of(lenet, images) == "image"
    assert modality_of(lstm, sequences) == "sequence"
    assert modality_of(lstm, sequences[:, None]) == "image"
    assert modality_of(lstm, sequences[:, None], "sequence") == "sequence"
    assert modality_of(gru, tokens) == "tokens"
    assert modality_of(EmbeddingSpaceModel(gru), torch.zeros(2, 1, 16, 16)) == "sequence"
    with pytest.raises(UserError, match="has no nn.Embedding layer"):
        modality_of(lenet, tokens)
    assert modality_of(lenet, torch.zeros(2, 5)) == "tabular"
    with pytest.raises(UserError, match="cannot tell the modality of inputs of shape"):
        modality_of(lenet, torch.zeros(2, 5, 1, 1, 1))
    with pytest.raises(UserError, match="modality 'sequence' does not fit"):
        modality_of(lenet, images.repeat(1, 3, 1, 1), "sequence")


def test_custom_and_graph_methods_plug_in(cases) -> None:
    model, x, y = cases["lenet-mnist"]
    seen = {}

    @register_method("test_graph_method", needs_graph=True, modalities=("image",))
    def graph_method(model, inputs, target, *, graph, seed, scale: float = 1.0):
        seen.update(graph=graph, seed=seed, target=target.tolist(), training=model.training)
        return inputs * scale

    try:
        with pytest.raises(UserError, match="'test_graph_method' needs a causal graph"):
            attribute(model, x, y, "test_graph_method")
        result = attribute(model, x, 2, "test_graph_method", graph="G", seed=5, scale=2.0)
        assert np.allclose(result, 2 * x.numpy())
        assert seen == {"graph": "G", "seed": 5, "target": [2] * BATCH, "training": False}
        assert method_info("test_graph_method").needs_graph
        with pytest.raises(UserError, match="already registered for image"):
            register_method("test_graph_method", needs_graph=True, modalities=("image",))(graph_method)
        with pytest.raises(UserError, match="a new implementation must agree"):
            register_method("test_graph_method", modalities=("tokens",))(graph_method)
        with pytest.raises(UserError, match="is not a keyword-only option with a default"):
            register_method("test_bad_method")(lambda model, inputs, target, steps: inputs)
        with pytest.raises(UserError, match=r"must take \(model, inputs, target, \*, option=default"):
            register_method("test_bad_method")(lambda model, inputs: inputs)
        assert "test_bad_method" not in METHODS

        @register_method("test_wrong_shape", modalities=("image",))
        def wrong_shape(model, inputs, target):
            return inputs[:, 0]

        with pytest.raises(UserError, match=r"returned shape \(3, 32, 32\) .* it must return \(3, 1, 32, 32\)"):
            attribute(model, x, y, "test_wrong_shape")
    finally:
        METHODS.pop("test_graph_method", None)
        METHODS.pop("test_wrong_shape", None)


# Every method on every modality it supports -----------------------------------------


@pytest.mark.parametrize(("case", "method"), CASES)
def test_method_shapes_and_determinism(cases, case: str, method: str) -> None:
    model, x, y = cases[case]
    options = FAST.get(method, {})
    first = attribute(model, x, y, method, seed=0, **options)
    assert first.shape == tuple(x.shape) and first.dtype == np.float32
    assert np.isfinite(first).all() and np.abs(first).sum() > 0
    assert np.array_equal(first, attribute(model, x, y, method, seed=0, **options))
    if method in STOCHASTIC:
        assert not np.array_equal(first, attribute(model, x, y, method, seed=1, **options))


@pytest.mark.parametrize("method", sorted(m for m in available_methods("tokens") if m != "attention" and not method_info(m).needs_graph))
def test_token_method_shapes_and_determinism(gru_text, method: str) -> None:
    model, tokens, labels = gru_text
    options = FAST.get(method, {})
    first = attribute(model, tokens, labels, method, seed=0, **options)
    assert first.shape == tuple(tokens.shape) and first.dtype == np.float32
    assert np.isfinite(first).all() and np.abs(first).sum() > 0
    assert (first[tokens.numpy() == model.pad_index] == 0).all(), "pads are not text"
    assert np.array_equal(first, attribute(model, tokens, labels, method, seed=0, **options))
    if method in STOCHASTIC:
        assert not np.array_equal(first, attribute(model, tokens, labels, method, seed=1, **options))


def test_model_state_inputs_and_random_state_are_left_alone(cases) -> None:
    model, x, y = cases["lstm-rows"]
    model.train()
    model.zero_grad(set_to_none=True)
    frozen, kept = list(model.parameters())[:2]
    frozen.requires_grad_(False)
    kept.grad = torch.ones_like(kept)
    original = x.clone()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    attribute(model, x, y, "smoothgrad", nt_samples=2)
    attribute(model, x, y, "integrated_gradients", n_steps=4)
    assert torch.equal(torch.rand(3), expected), "attribute must not consume the caller's random numbers"
    assert model.training and all(m.training for m in model.modules())
    assert not frozen.requires_grad and all(p.requires_grad for p in list(model.parameters())[1:])
    assert torch.equal(kept.grad, torch.ones_like(kept)) and all(p.grad is None for p in list(model.parameters())[2:])
    assert torch.equal(x, original)
    model.eval()
    model.zero_grad(set_to_none=True)
    frozen.requires_grad_(True)


def test_sequence_in_quantus_layout_matches_plain_sequence(cases) -> None:
    model, x, y = cases["lstm-mnist1d"]
    plain = attribute(model, x, y, "occlusion")
    channel = attribute(model, x[:, None], y, "occlusion", modality="sequence")
    assert channel.shape == (BATCH, 1, 40, 1) and np.array_equal(channel[:, 0], plain)


def test_integrated_gradients_completeness_on_images(cases) -> None:
    model, x, y = cases["lenet-mnist"]
    scores = attribute(model, x, y, "integrated_gradients", n_steps=128)
    with torch.no_grad():
        gap = (model(x) - model(torch.zeros_like(x))).gather(1, y[:, None])[:, 0].numpy()
    assert np.allclose(scores.reshape(BATCH, -1).sum(axis=1), gap, rtol=1e-2, atol=1e-3)


def test_integrated_gradients_completeness_on_tokens(gru_text) -> None:
    model, tokens, labels = gru_text
    scores = attribute(model, tokens, labels, "integrated_gradients", n_steps=128)
    with torch.no_grad():
        pads = torch.full_like(tokens, model.pad_index)
        gap = (model(tokens) - model(pads)).gather(1, labels[:, None])[:, 0].numpy()
    assert np.allclose(scores.sum(axis=1), gap, rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("method", ["lime", "kernel_shap"])
def test_surrogate_methods_are_not_all_zero(cases, gru_text, method: str) -> None:
    model, x, y = cases["lenet-mnist"]
    for sample in attribute(model, x, y, method, n_perturbations=60):
        assert np.count_nonzero(sample) > sample.size // 4
    gru, tokens, labels = gru_text
    scores = attribute(gru, tokens, labels, method, n_perturbations=60)
    real = tokens.numpy() != gru.pad_index
    assert (np.abs(scores[real]) > 0).mean() > 0.5


def test_lime_superpixels_and_patch_options(cases) -> None:
    model, x, y = cases["lenet-mnist"]
    slic = attribute(model, x[:1], y[:1], "lime", mask="slic", n_perturbations=40)
    patches = attribute(model, x[:1], y[:1], "lime", patch=8, n_perturbations=40)
    assert len(np.unique(patches)) <= 16 + 1 and not np.array_equal(slic, patches)


def test_perturbation_method_requirements(cases) -> None:
    model, x, y = cases["lenet-mnist"]
    with pytest.raises(UserError, match="permutes features across the batch; pass at least 2 samples"):
        attribute(model, x[:1], y[:1], "feature_permutation")
    with pytest.raises(UserError, match="occlusion window 40 is larger than the 32x32 images"):
        attribute(model, x, y, "occlusion", window=40)
    lstm, rows, labels = cases["lstm-rows"]
    for method in ("deeplift", "guided_backprop"):
        with pytest.raises(UserError, match=f"{method} cannot explain RecurrentClassifier: captum cannot look "
                                            "inside nn.LSTM; it supports feed-forward models such as lenet"):
            attribute(lstm, rows, labels, method)
    with pytest.raises(UserError, match="attention needs a recurrent model built with pooling='attention'; "
                                        "this LeNet has no attention pooling"):
        attribute(model, x, y, "attention")


# Token methods -----------------------------------------------------------------------


def test_leave_one_out_is_single_token_occlusion(gru_text) -> None:
    model, tokens, labels = gru_text
    loo = attribute(model, tokens, labels, "leave_one_out")
    assert np.allclose(loo, attribute(model, tokens, labels, "occlusion"), atol=1e-5)
    with torch.no_grad():
        position = int(tokens.shape[1]) - 2
        changed = tokens.clone()
        changed[0, position] = model.pad_index
        drop = (model(tokens[:1]) - model(changed[:1]))[0, labels[0]].item()
    assert loo[0, position] == pytest.approx(drop, abs=1e-5)
    unk = attribute(model, tokens, labels, "leave_one_out", replacement=1)
    assert not np.allclose(unk, loo)
    with pytest.raises(UserError, match="replacement must be a token id in 0.."):
        attribute(model, tokens, labels, "leave_one_out", replacement=-1)


def test_likelihood_importance_follows_its_definition(gru_text) -> None:
    model, tokens, labels = gru_text
    sample, label = tokens[:1], int(labels[0])
    real = [int(t) for t in sample[0] if t != model.pad_index]
    length, n = sample.shape[1], len(real)

    def logit(words: list[int]) -> float:
        row = torch.tensor([[model.pad_index] * (length - len(words)) + words])
        with torch.no_grad():
            return model(row)[0, label].item()

    base, i = logit(real), 1
    rest = real[:i] + real[i + 1 :]
    removal = base - logit(rest)
    position = np.mean([base - logit(rest[:j] + [real[i]] + rest[j:]) for j in range(n) if j != i])
    slot = length - n + i
    got = {c: attribute(model, sample, label, "likelihood_importance", component=c)[0, slot]
           for c in ("removal", "position", "total")}
    assert got["removal"] == pytest.approx(removal, abs=1e-5)
    assert got["position"] == pytest.approx(position, abs=1e-5)
    assert got["total"] == pytest.approx(removal + position, abs=1e-5)
    with pytest.raises(UserError, match="unknown component 'order'; valid components: total, removal, position"):
        attribute(model, sample, label, "likelihood_importance", component="order")


def test_attention_weights_per_token(sst2, gru_attention) -> None:
    tokens = sst2.x_test[:BATCH]
    weights = attribute(gru_attention, tokens, 0, "attention")
    real = tokens.numpy() != gru_attention.pad_index
    assert np.allclose(weights.sum(axis=1), 1, atol=1e-5) and (weights[~real] == 0).all()
    assert np.array_equal(weights, attribute(gru_attention, tokens, 1, "attention")), "class-independent"


def test_embedding_space_model(gru_text) -> None:
    model, tokens, labels = gru_text
    wrapper = EmbeddingSpaceModel(model)
    embeddings = wrapper.embed(tokens)
    assert embeddings.shape == (BATCH, 1, tokens.shape[1], 16)
    with torch.no_grad():
        assert torch.allclose(wrapper(embeddings), model(tokens), atol=1e-6)
    assert torch.equal(wrapper.reference(embeddings)[0, 0, 0], wrapper.pad_embedding)
    with pytest.raises(DataError, match=r"reads \(N, 1, L, 16\) or \(N, L, 16\) embeddings"):
        wrapper(torch.zeros(2, 16))
    with pytest.raises(UserError, match="is not a token model"):
        EmbeddingSpaceModel(torch.nn.Linear(2, 2))


# Quantus -----------------------------------------------------------------------------


QUANTUS_KWARGS = {"device": "cpu", "channel_first": True, "method": "ignored", "softmax": False}


def test_explain_func_with_the_quantus_calling_convention(cases, gru_text) -> None:
    lenet, images, labels = cases["lenet-mnist"]
    explain = explain_func("integrated_gradients", n_steps=8)
    result = explain(model=lenet, inputs=images.numpy(), targets=labels.numpy(), **QUANTUS_KWARGS)
    assert result.shape == images.shape
    assert np.array_equal(result, attribute(lenet, images, labels, "integrated_gradients", n_steps=8))
    overridden = explain(model=lenet, inputs=images.numpy(), targets=labels.numpy(), n_steps=4)
    assert not np.array_equal(result, overridden)

    lstm, sequences, seq_labels = cases["lstm-mnist1d"]
    quantus_layout = sequences[:, None].numpy()
    signals = sequences.transpose(1, 2).numpy()
    result = explain_func("occlusion")(ChannelFirstSequenceModel(lstm), signals, seq_labels.numpy(), **QUANTUS_KWARGS)
    assert np.array_equal(result, attribute(lstm, sequences, seq_labels, "occlusion").transpose(0, 2, 1))
    for method, options in (("lime", {"n_perturbations": 40}), ("saliency", {})):
        explain = explain_func(method, modality="sequence", **options)
        result = explain(lstm, quantus_layout, seq_labels.numpy(), **QUANTUS_KWARGS)
        assert result.shape == (BATCH, 1, 40, 1)

    gru, tokens, token_labels = gru_text
    wrapper = EmbeddingSpaceModel(gru)
    embedded = wrapper.embed(tokens).numpy()
    for method in ("integrated_gradients", "occlusion", "kernel_shap"):
        result = explain_func(method, **FAST.get(method, {}))(wrapper, embedded, token_labels.numpy(),
                                                              **QUANTUS_KWARGS)
        assert result.shape == embedded.shape and np.abs(result).sum() > 0
    with pytest.raises(UserError, match="unknown option 'n_sample' for attribution method 'lime'"):
        explain_func("lime", n_sample=3)
    with pytest.raises(UserError, match="unknown attribution method 'limes'"):
        explain_func("limes")


def test_integrated_gradients_completeness_in_embedding_space(gru_text) -> None:
    model, tokens, labels = gru_text
    wrapper = EmbeddingSpaceModel(model)
    embedded = wrapper.embed(tokens)
    scores = explain_func("integrated_gradients", n_steps=128)(wrapper, embedded.numpy(), labels.numpy())
    with torch.no_grad():
        gap = (wrapper(embedded) - wrapper(wrapper.reference(embedded))).gather(1, labels[:, None])[:, 0].numpy()
    assert np.allclose(scores.reshape(BATCH, -1).sum(axis=1), gap, rtol=1e-2, atol=1e-3)


def test_quantus_metrics_run_on_explain_func(cases, gru_text) -> None:
    quantus = pytest.importorskip("quantus")
    lenet, images, labels = cases["lenet-mnist"]
    quiet = {"disable_warnings": True, "display_progressbar": False}
    scores = quantus.Sparseness(**quiet)(model=lenet, x_batch=images.numpy(), y_batch=labels.numpy(),
                                         a_batch=None, explain_func=explain_func("saliency"), device="cpu", channel_first=True)
    assert len(scores) == BATCH and np.isfinite(scores).all()
    scores = quantus.MaxSensitivity(nr_samples=2, **quiet)(
        model=lenet, x_batch=images.numpy(), y_batch=labels.numpy(), a_batch=None,
        explain_func=explain_func("gradient_x_input"), device="cpu", channel_first=True)
    assert len(scores) == BATCH and np.isfinite(scores).all()
    lstm, sequences, seq_labels = cases["lstm-mnist1d"]
    signals = ChannelFirstSequenceModel(lstm)
    scores = quantus.Sparseness(**quiet)(model=signals, x_batch=sequences.transpose(1, 2).numpy(),
                                         y_batch=seq_labels.numpy(), a_batch=None,
                                         explain_func=explain_func("occlusion"), device="cpu", channel_first=True)
    assert len(scores) == BATCH and np.isfinite(scores).all()
    rows_model, rows, row_labels = cases["lstm-rows"]
    scores = quantus.Sparseness(**quiet)(model=rows_model, x_batch=rows.numpy(), y_batch=row_labels.numpy(),
                                         a_batch=None, explain_func=explain_func("lime", modality="sequence",
                                                                                 n_perturbations=40),
                                         device="cpu", channel_first=True)
    assert len(scores) == BATCH and np.isfinite(scores).all()
    gru, tokens, token_labels = gru_text
    wrapper = EmbeddingSpaceModel(gru)
    scores = quantus.Complexity(**quiet)(model=wrapper, x_batch=wrapper.embed(tokens).numpy(),
                                         y_batch=token_labels.numpy(), a_batch=None,
                                         explain_func=explain_func("saliency"), device="cpu", channel_first=True)
    assert len(scores) == BATCH and np.isfinite(scores).all()


@pytest.mark.parametrize("method", ["lime", "kernel_shap"])
def test_n_samples_is_not_an_option_of_lime_and_kernel_shap(cases, method: str) -> None:
    model, x, y = cases["lenet-mnist"]
    with pytest.raises(UserError, match=f"unknown option 'n_samples' for attribution method '{method}'"):
        attribute(model, x[:2], y[:2], method, n_samples=30)
    with pytest.raises(UserError, match=f"unknown option 'n_samples' for attribution method '{method}'"):
        explain_func(method, n_samples=30)


def test_the_model_comes_first(cases) -> None:
    model, x, y = cases["lenet-mnist"]
    with pytest.raises(UserError, match="model must be a torch.nn.Module; got str"):
        attribute("saliency", model, x[:2], y[:2])  # type: ignore[arg-type]
