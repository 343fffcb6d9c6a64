"""Tabular (N, F) float rows: a modality of their own, one group per feature for the perturbation methods."""

import numpy as np
import pytest
import torch

from architectures import build
from explainnn.attributions import attribute, modality_of
from explainnn.causal import discover

METHODS = ["integrated_gradients", "saliency", "smoothgrad", "gradient_x_input", "gradient_shap", "lime",
           "kernel_shap", "occlusion", "feature_permutation"]


@pytest.fixture(scope="module")
def mlp():
    model, inputs = build("bn_mlp")
    return model.eval(), inputs(40)


def test_float_rows_are_tabular(mlp) -> None:
    model, x = mlp
    assert modality_of(model, x) == "tabular"


@pytest.mark.parametrize("method", METHODS)
def test_every_float_method_gives_one_score_per_feature(mlp, method: str) -> None:
    model, x = mlp
    torch.manual_seed(0)
    maps = attribute(model, x[:4], 1, method)
    assert maps.shape == (4, x.shape[1]) and np.isfinite(maps).all()


def test_occlusion_of_one_feature_is_the_logit_drop_to_the_reference(mlp) -> None:
    """Occlusion's score of feature f is logit(x) - logit(x with f set to the reference, zero here)."""
    model, x = mlp
    maps = attribute(model, x[:2], 1, "occlusion")
    with torch.no_grad():
        clean = model(x[:2])[:, 1]
        for f in range(x.shape[1]):
            cut = x[:2].clone()
            cut[:, f] = 0.0
            np.testing.assert_allclose(maps[:, f], (clean - model(cut)[:, 1]).numpy(), rtol=1e-4, atol=1e-5)


def test_causal_attributions_of_a_tabular_model(mlp) -> None:
    model, x = mlp
    target = int(model(x).argmax(-1).mode().values)
    graph = discover(model, x, target, n_samples=10)
    maps = attribute(model, x[:3], target, "causal", graph=graph)
    assert maps.shape == (3, x.shape[1])
