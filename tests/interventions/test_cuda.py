"""On CUDA (skipped without a GPU): interventions on every zoo architecture and the attribution methods
give the CPU's results, and prefix reuse is not rejected for the GPU's rounding."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from architectures import build
from explainnn.attributions import attribute
from explainnn.interventions import InterventionRunner, find_layers, reference_run
from explainnn.models import LeNet
from test_architectures import _names, _specs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")


@pytest.mark.parametrize("name", _names("interventions"))
def test_interventions_on_cuda_equal_the_cpu_oracle_without_falling_back(name: str) -> None:
    model, inputs = build(name)
    x = inputs(6)
    specs = _specs(find_layers(model, x[:1]))
    naive = reference_run(model, x, specs)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*does not reproduce.*")  # no fallback to full forwards
        ours = InterventionRunner(model.cuda()).run(x.cuda(), specs)
    model.cpu()
    scale = float(naive.logits.abs().max())
    torch.testing.assert_close(ours.logits.cpu(), naive.logits, rtol=1e-2, atol=1e-3 * max(1.0, scale))


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency", "gradient_x_input", "occlusion", "lime",
                                    "kernel_shap"])
def test_attributions_on_cuda_equal_the_cpu_ones(method: str) -> None:
    torch.manual_seed(0)
    model = LeNet(1, 32, 10).eval()
    x = torch.rand(3, 1, 32, 32)
    torch.manual_seed(1)
    cpu = attribute(model, x, 3, method)
    torch.manual_seed(1)  # LIME/KernelSHAP draw on the CPU generator: the same draws on both devices
    gpu = attribute(model.cuda(), x.cuda(), 3, method)
    model.cpu()
    assert gpu.shape == cpu.shape
    np.testing.assert_allclose(gpu, cpu, rtol=1e-2, atol=1e-3 * max(1.0, float(np.abs(cpu).max())))
