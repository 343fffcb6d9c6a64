"""Batched SmoothGrad: the NoiseTunnel estimator, all samples' noisy copies in shared passes."""

import torch
from torch import nn

from explainnn.attributions import baselines
from explainnn.attributions.baselines import run_smoothgrad, value_range


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3)).eval()


def test_equals_per_copy_gradients_with_the_same_noise(monkeypatch) -> None:
    model = _model()
    x = torch.rand(3, 1, 3, 4) * torch.tensor([1.0, 2.0, 0.5]).view(3, 1, 1, 1)
    target = torch.tensor([0, 2, 1])
    monkeypatch.setattr(baselines, "SMOOTHGRAD_ROWS", 4)  # several passes
    torch.manual_seed(5)
    got = run_smoothgrad(model, x, target, nt_samples=5, noise_level=0.2)

    torch.manual_seed(5)
    rows = x.repeat_interleave(5, dim=0)
    noise = torch.randn_like(rows)
    expected = []
    for i in range(3):
        grads = []
        for k in range(5):
            copy = (x[i] + noise[5 * i + k] * 0.2 * value_range(x)[i]).unsqueeze(0).requires_grad_(True)
            model(copy)[0, target[i]].backward()
            grads.append(copy.grad.abs()[0])
        expected.append(torch.stack(grads).mean(0))
    torch.testing.assert_close(got, torch.stack(expected), rtol=1e-5, atol=1e-6)


def test_without_noise_it_is_saliency() -> None:
    model = _model()
    x = torch.rand(4, 1, 3, 4, requires_grad=True)
    target = torch.tensor([0, 1, 2, 0])
    got = run_smoothgrad(model, x.detach(), target, nt_samples=3, noise_level=0.0)
    model(x).gather(1, target[:, None]).sum().backward()
    torch.testing.assert_close(got, x.grad.abs())
