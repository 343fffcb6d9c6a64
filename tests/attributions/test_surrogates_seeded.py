"""LIME and KernelSHAP seeded per input, and the pass sizes of the batched surrogates and Integrated Gradients.

Each sample's on/off switches come from its own generator, seeded from the method's
``seed`` and the sample's values: a sample's attributions do not depend on its
batch, the batched estimator and captum's own ``Lime``/``KernelShap`` draw the same
switches (and agree to float rounding), and the switches follow captum's distributions.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, KernelShap
from scipy.stats import chi2_contingency, chisquare
from torch import nn

from explainnn.attributions import attribute, explain_func, method_info
from explainnn.attributions.baselines import (
    _surrogate_outputs,
    input_seeds,
    pass_rows,
    run_integrated_gradients,
    surrogate_switches,
)
from explainnn.models import LeNet

SURROGATES = ("lime", "kernel_shap")
TOLERANCE = {"lime": 1e-4, "kernel_shap": 1e-2}
"""Batched vs captum's own estimator on the same switches, relative to the largest |attribution|. Captum fits its
surrogate in float32, ours in float64 (scikit-learn's estimators: ``test_surrogate_fits_are_scikit_learns``); its
KernelSHAP weights all-on and all-off by 1e6, which costs its float32 least squares about four digits of the
target logit's range, up to 1e-2 of the largest of 64 patch attributions of an untrained LeNet."""


def _images(n: int = 3) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = LeNet(1, 32, 10).eval()
    blobs = torch.rand(n, 1, 8, 8)
    x = nn.functional.interpolate(blobs, size=(32, 32), mode="bilinear", align_corners=False)  # SLIC needs shapes
    return model, x, torch.tensor([3, 1, 7, 0, 2, 5][:n])


def _tabular() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    return model, torch.randn(4, 6), torch.tensor([0, 2, 1, 2])


def _sequences() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(5 * 3, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    return model, torch.randn(3, 5, 3), torch.tensor([1, 0, 1])


CASES = {
    "image-patches": (_images, {}),
    "image-slic": (_images, {"mask": "slic", "n_segments": 12}),
    "tabular": (_tabular, {}),
    "sequence": (_sequences, {}),
}


class Words(nn.Module):
    """A token model: embedding (pad id 0), mean over the sentence, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.words = nn.Embedding(30, 6, padding_idx=0)
        self.out = nn.Linear(6, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.words(ids)).mean(dim=1))


# The seeds and the switches ---------------------------------------------------------------------------------


def test_input_seeds_are_common_random_numbers() -> None:
    """Every sample of a shape gets the same seed (a perturbed copy meets its sample's draws); the seed, dtype and
    sample shape change it, the values do not."""
    x = torch.rand(4, 1, 6, 6)
    seeds = input_seeds(x, 0)
    assert len(seeds) == 4 and len(set(seeds)) == 1
    assert input_seeds(x.flip(0), 0) == seeds and input_seeds(x[2:3], 0) == seeds[:1]
    changed = x.clone()
    changed[0, 0, 3, 3] += 1e-6
    assert input_seeds(changed, 0) == seeds
    assert set(input_seeds(x, 1)).isdisjoint(seeds)
    assert input_seeds(x.double(), 0) != seeds and input_seeds(x.reshape(4, 1, 3, 12), 0) != seeds
    assert all(0 <= s < 2**63 for s in seeds)


def test_lime_switches_are_fair_independent_coins() -> None:
    """All 16 on/off patterns of 4 groups equally likely: chi-square goodness of fit at 0.001."""
    switches = surrogate_switches("lime", 11, 16000, 4)
    patterns = (switches * torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.float64)).sum(1).long()
    counts = torch.bincount(patterns, minlength=16).numpy()
    assert chisquare(counts).pvalue > 1e-3
    assert torch.equal(switches, surrogate_switches("lime", 11, 16000, 4))
    assert not torch.equal(switches, surrogate_switches("lime", 12, 16000, 4))


def test_kernel_shap_switches_follow_captums_distribution() -> None:
    """All on, all off, then subset sizes k with probability proportional to (M-1)/(k(M-k)) (chi-square goodness
    of fit, and two-sample against captum's own ``kernel_shap_perturb_generator``), each subset of a size equally
    likely (chi-square over the 15 subsets of size 2); tests at 0.001."""
    groups, draws = 6, 20000
    ours = surrogate_switches("kernel_shap", 5, draws, groups)
    assert torch.equal(ours[0], torch.ones(groups, dtype=torch.float64)) and not ours[1].any()
    sizes = ours[2:].sum(1).long()
    k = np.arange(1, groups)
    expected = (groups - 1) / (k * (groups - k))
    counts = np.bincount(sizes.numpy(), minlength=groups)[1:]
    assert counts.sum() == draws - 2 and chisquare(counts, expected / expected.sum() * counts.sum()).pvalue > 1e-3

    torch.manual_seed(0)
    sample = torch.tensor(expected / expected.sum(), dtype=torch.float32)
    distribution = torch.distributions.Categorical(torch.cat([torch.zeros(1), sample]))
    generator = KernelShap(lambda x: x).kernel_shap_perturb_generator(
        torch.zeros(1, groups), num_select_distribution=distribution, num_interp_features=groups)
    captum = torch.cat([next(generator) for _ in range(draws)]).double()
    assert torch.equal(captum[:2], ours[:2])
    theirs = np.bincount(captum[2:].sum(1).long().numpy(), minlength=groups)[1:]
    assert chi2_contingency(np.stack([counts, theirs])).pvalue > 1e-3

    pairs = ours[2:][sizes == 2]
    subsets = {frozenset(p): 0 for p in itertools.combinations(range(groups), 2)}
    for row in pairs:
        subsets[frozenset(torch.nonzero(row)[:, 0].tolist())] += 1
    assert len(subsets) == 15 and chisquare(list(subsets.values())).pvalue > 1e-3


def test_kernel_shap_needs_two_groups() -> None:
    with pytest.raises(Exception, match="kernel_shap needs at least 2 feature groups"):
        surrogate_switches("kernel_shap", 0, 10, 1)


# Batched equals one at a time, and equals captum's own estimator ---------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("method", SURROGATES)
def test_a_samples_attributions_do_not_depend_on_its_batch(method: str, case: str) -> None:
    """A batch of N gives the N one-sample calls (the naive oracle), in any order and any pass size: the same
    switches, so the same attributions up to the float rounding of differently sized forward passes (1e-5 of the
    largest |attribution|; on this machine the first two are bit-identical)."""
    build, options = CASES[case]
    model, x, y = build()
    options = {**options, "n_perturbations": 40}
    batch = attribute(model, x, y, method, **options)
    scale = float(np.abs(batch).max())
    assert scale > 0
    one_by_one = np.concatenate([attribute(model, x[i:i + 1], y[i:i + 1], method, **options) for i in range(len(x))])
    np.testing.assert_allclose(one_by_one, batch, rtol=0, atol=1e-5 * scale)
    order = torch.arange(len(x)).flip(0)
    reordered = attribute(model, x[order], y[order], method, **options)
    np.testing.assert_allclose(reordered, batch[order.numpy()], rtol=0, atol=1e-5 * scale)
    small_passes = attribute(model, x, y, method, perturbations_per_eval=7, **options)
    np.testing.assert_allclose(small_passes, batch, rtol=0, atol=1e-5 * scale)
    other_seed = attribute(model, x, y, method, seed=1, **options)
    assert np.abs(other_seed - batch).max() > 1e-3 * scale


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("method", SURROGATES)
def test_batched_surrogates_equal_captums_own_on_the_same_switches(method: str, case: str) -> None:
    """``batched=False`` runs captum's Lime/KernelShap with the switches fed through ``perturb_func`` (more
    perturbations than the 64 patches: with fewer, KernelSHAP's fit is rank-deficient and captum's float32 solver
    drifts from the minimum-norm solution)."""
    build, options = CASES[case]
    model, x, y = build()
    batched = attribute(model, x, y, method, n_perturbations=150, seed=4, **options)
    captum = attribute(model, x, y, method, n_perturbations=150, seed=4, batched=False, **options)
    scale = float(np.abs(captum).max())
    np.testing.assert_allclose(batched, captum, rtol=0, atol=TOLERANCE[method] * scale)
    other = attribute(model, x, y, method, n_perturbations=150, seed=5, **options)
    assert np.abs(other - batched).max() > TOLERANCE[method] * scale


@pytest.mark.parametrize("method", SURROGATES)
def test_token_surrogates_are_seeded_per_sentence(method: str) -> None:
    torch.manual_seed(3)
    model = Words().eval()
    ids = torch.randint(1, 30, (3, 7))
    ids[1, 5:] = 0
    scores = attribute(model, ids, 2, method, n_perturbations=40)
    singles = np.concatenate([attribute(model, ids[i:i + 1], 2, method, n_perturbations=40) for i in range(3)])
    np.testing.assert_array_equal(scores, singles)
    np.testing.assert_array_equal(attribute(model, ids.flip(0), 2, method, n_perturbations=40), scores[::-1])
    assert (scores[1, 5:] == 0).all() and np.abs(scores).max() > 0
    assert not np.array_equal(attribute(model, ids, 2, method, n_perturbations=40, seed=1), scores)


def test_same_seed_same_result_and_the_global_generator_is_not_used() -> None:
    model, x, y = _images(2)
    torch.manual_seed(123)
    first = attribute(model, x, y, "kernel_shap", n_perturbations=30, seed=9)
    torch.manual_seed(456)
    np.testing.assert_array_equal(attribute(model, x, y, "kernel_shap", n_perturbations=30, seed=9), first)


def test_seeded_surrogates_are_deterministic_explain_funcs() -> None:
    """A function of (sample, seed) may be batched freely (the fast engine merges its calls); batch-dependent or
    globally seeded methods may not."""
    for method in SURROGATES:
        info = method_info(method)
        assert info.stochastic and info.seeded_per_input and info.deterministic
        assert explain_func(method).deterministic and explain_func("causal", base=method).deterministic
    assert not explain_func("smoothgrad").deterministic and not explain_func("feature_permutation").deterministic
    assert not explain_func("causal", base="smoothgrad").deterministic
    assert explain_func("saliency").deterministic and method_info("saliency").deterministic


# Pass sizes -------------------------------------------------------------------------------------------------


def test_surrogate_passes_fill_across_samples_and_give_each_perturbation_its_logit() -> None:
    """Passes of 7 rows over 3 samples x 5 perturbations equal a forward per perturbation; off groups take the
    baseline's values and on groups the input's, exactly (a non-zero baseline)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 4)).eval()
    x, base = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    groups = [torch.tensor([0, 0, 1, 1, 2, 2, 2, 0]), torch.tensor([1, 0, 1, 0, 1, 0, 1, 0]),
              torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])]
    switches = [surrogate_switches("lime", s, 5, int(g.max()) + 1) for s, g in zip((1, 2, 3), groups)]
    target = torch.tensor([0, 3, 2])
    seen: list[torch.Tensor] = []

    def forward(rows: torch.Tensor) -> torch.Tensor:
        seen.append(rows.clone())
        return model(rows)

    outputs = _surrogate_outputs(forward, x, target, base, switches, groups, rows=7)
    assert [len(rows) for rows in seen] == [7, 7, 1]
    fed = torch.cat(seen).reshape(3, 5, 8)
    for i in range(3):
        on = switches[i][:, groups[i]].bool()
        expected = torch.where(on, x[i].reshape(-1), base[i].reshape(-1))
        assert torch.equal(fed[i], expected)
        naive = torch.stack([model(row.reshape(1, 2, 4))[0, target[i]] for row in expected]).double()
        torch.testing.assert_close(outputs[i], naive, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("internal_batch_size", [None, 7, 3 * 16 + 5, 10**6])
def test_integrated_gradients_in_passes_equal_captums(internal_batch_size: int | None) -> None:
    """Any pass size (fewer rows than steps, a few samples per pass, everything in one pass) gives captum's
    IntegratedGradients within 1e-6 of the largest |attribution|; no pass exceeds the size asked for."""
    model, x, y = _images(5)
    base = torch.rand_like(x) * 0.1
    rows: list[int] = []

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        rows.append(len(inputs))
        return model(inputs)

    expected = IntegratedGradients(model).attribute(x, baselines=base, target=y, n_steps=16)
    got = run_integrated_gradients(forward, x, y, base, n_steps=16, internal_batch_size=internal_batch_size)
    scale = float(expected.abs().max())
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6 * scale)
    assert max(rows) <= (internal_batch_size or pass_rows(x.device)) and sum(rows) == 5 * 16
    assert pass_rows(torch.device("cpu")) == 256 and pass_rows(torch.device("cuda")) > 256
