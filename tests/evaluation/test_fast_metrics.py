"""The batched engine gives Quantus' scores: same inputs, attributions, options and seed -> equal values.

Tolerance: ``rtol=1e-4, atol=1e-5`` (both engines compute in float32; they
differ only in how many rows share a forward pass). With ``definitions="quantus"``
(the default) every metric equals Quantus 0.6. Where ``definitions="paper"``
differs, Quantus is given the paper's choice through its own options (a
similarity or norm function, a batch of one) where it has one, and the paper's
definition is checked on a hand-computed example.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from quantus.helpers import utils as quantus_utils
from skimage.metrics import structural_similarity
from torch import nn

from explainnn.attributions import attribute, explain_func
from explainnn.attributions.baselines import fit_surrogates
from explainnn.errors import ConfigError
from explainnn.evaluation import METRICS, MetricContext, MetricSpec, metric_spec, register_metric
from explainnn.evaluation.fast import Batch, run_metric
from explainnn.evaluation.fast.common import explain_rows, prepare
from explainnn.evaluation.metrics import faithfulness as fast_faithfulness
from explainnn.evaluation.metrics import map_ssim
from explainnn.evaluation.metrics.faithfulness import irof

TOL = {"rtol": 1e-4, "atol": 1e-5}
N, SIZE, CLASSES = 5, 16, 4


@pytest.fixture(scope="module")
def case() -> dict:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * SIZE * SIZE, CLASSES)).eval()
    rng = np.random.RandomState(0)
    x = rng.uniform(size=(N, 1, SIZE, SIZE)).astype(np.float32)
    x[:, :, 0, 0] = 0.0  # every image's minimum is 0, so Quantus' batch-wide "black" equals the per-image one
    with torch.no_grad():
        y = model(torch.as_tensor(x)).argmax(1).numpy()
    a = rng.normal(size=x.shape).astype(np.float32)  # signed, continuous: no ties in any ranking
    masks = np.zeros_like(x, dtype=bool)
    masks[:, :, 4:10, 2:12] = True
    masks[1] = False
    masks[1, :, :3, :3] = True
    context = MetricContext(modality="image", sample_shape=x.shape[1:], n_classes=CLASSES, seed=3, has_masks=True)
    return {"model": model, "x": x, "y": y, "a": a, "masks": masks, "context": context}


def both(case: dict, name: str, options: dict | None = None, *, quantus_only: dict | None = None,
         batch_size: int = 3, method: str = "saliency", seed: int = 3,
         definitions: str = "quantus") -> tuple[np.ndarray, np.ndarray]:
    """Scores of ``name`` from Quantus and from the batched engine (with ``definitions``), same settings and seed."""
    spec = metric_spec(name)
    init, calls = spec.settings(case["context"], {**(options or {}), "batch_size": batch_size})
    explain = explain_func(method)
    np.random.seed(seed)
    raw = spec.create({**init, **(quantus_only or {})})(
        model=case["model"], x_batch=case["x"], y_batch=case["y"], a_batch=case["a"].copy(), s_batch=case["masks"],
        channel_first=True, explain_func=explain, explain_func_kwargs={}, device="cpu", **calls)
    batch = Batch(case["model"], case["x"], case["y"], masks=case["masks"], rows=64)
    fast = run_metric(spec, init, calls, batch, case["a"], explain, seed, definitions)
    return spec.scores(raw, len(case["x"])), spec.scores(fast, len(case["x"]))


@pytest.mark.parametrize("baseline", ["black", "mean", "uniform"])
def test_faithfulness_correlation(case, baseline) -> None:
    quantus, fast = both(case, "FaithfulnessCorrelation", {"nr_runs": 7, "subset_size": 20,
                                                           "perturb_baseline": baseline})
    np.testing.assert_allclose(fast, quantus, **TOL)


@pytest.mark.parametrize("baseline", ["black", "mean", "uniform"])
def test_pixel_flipping(case, baseline) -> None:
    quantus, fast = both(case, "PixelFlipping", {"features_in_step": 16, "perturb_baseline": baseline})
    np.testing.assert_allclose(fast, quantus, **TOL)


@pytest.mark.parametrize("order", ["morf", "lerf", "random"])
def test_region_perturbation(case, order) -> None:
    quantus, fast = both(case, "RegionPerturbation", {"patch_size": 3, "order": order, "regions_evaluation": 20,
                                                      "perturb_baseline": "mean"})
    np.testing.assert_allclose(fast, quantus, **TOL)


def test_irof_paper_equals_quantus_where_quantus_follows_the_paper(case) -> None:
    """One image per Quantus batch and a baseline every image shares: Quantus' batch quirks vanish."""
    first = {**case, **{key: case[key][:2] for key in ("x", "y", "a", "masks")}}
    quantus, fast = both(first, "IROF", {"perturb_baseline": "black"}, batch_size=1, definitions="paper")
    np.testing.assert_allclose(fast, quantus, **TOL)


@pytest.mark.parametrize("baseline", ["mean", "black", "white", 0.25])
@pytest.mark.parametrize("batch_size", [2, 3, 64])
def test_irof_quantus_definition_equals_quantus(case, baseline, batch_size, monkeypatch) -> None:
    """``definitions: quantus``: Quantus' batch-wide baseline and zero-padded curves, number for number.

    SLIC gives every small image the same number of superpixels, so both engines
    get stripes instead: 3 to 6 per image, curves of different lengths in one batch.
    """
    def stripes(img: np.ndarray, segmentation_method: str) -> np.ndarray:
        image = img
        count = 3 + int(abs(float(image.sum())) * 1000) % 4
        return np.repeat(np.arange(count), -(-image.shape[1] // count))[None, :image.shape[1]].repeat(
            image.shape[0], axis=0)

    monkeypatch.setattr(quantus_utils, "get_superpixel_segments", stripes)
    monkeypatch.setattr(fast_faithfulness, "get_superpixel_segments", stripes)
    assert len({len(np.unique(stripes(np.moveaxis(x, 0, -1), "slic"))) for x in case["x"]}) > 1
    quantus, fast = both(case, "IROF", {"perturb_baseline": baseline}, batch_size=batch_size)
    np.testing.assert_allclose(fast, quantus, **TOL)
    _, paper = both(case, "IROF", {"perturb_baseline": baseline}, batch_size=batch_size, definitions="paper")
    if batch_size > 1:  # the paper's per-image curves (and, for mean, per-image baseline) give other numbers
        assert np.abs(paper - quantus).max() > 1e-3


@pytest.mark.parametrize("value", [True, False])
def test_the_old_per_metric_switch_names_definitions(value) -> None:
    context = MetricContext(modality="image", sample_shape=(1, 8, 8), n_classes=2)
    with pytest.raises(ConfigError, match=r"quantus_batches was replaced by evaluation.definitions"):
        metric_spec("IROF").settings(context, {"quantus_batches": value})


def test_irof_follows_the_paper_by_hand() -> None:
    """Two superpixels, a linear model: replace the more relevant one by the image mean, then both."""
    model = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]]))
    x = np.array([[[[1.0, 3.0, 0.0, 4.0]]]], dtype=np.float32)  # (1, 1, 1, 4); mean 2
    flat = nn.Sequential(nn.Flatten(), model)
    batch = Batch(flat, x, np.array([0]))
    batch.cache[("superpixels", "slic")] = np.array([[[0, 0, 1, 1]]])
    a = np.array([[[[0.1, 0.1, 0.5, 0.9]]]], dtype=np.float32)  # segment 1 first
    clean = 1 + 6 + 0 + 16  # 23
    after_one = 1 + 6 + 2 * 3 + 2 * 4  # 21: segment 1 set to the mean 2
    after_two = 2 * (1 + 2 + 3 + 4)  # 20
    curve = np.array([after_one, after_two]) / clean
    expected = 2 - (curve[0] + curve[1]) / 2
    np.testing.assert_allclose(irof(batch, a, definitions="paper", softmax=False), [expected], rtol=1e-6)


@pytest.mark.parametrize("method", ["gradient_x_input", "smoothgrad"])
def test_local_lipschitz_estimate(case, method) -> None:
    """Also for a stochastic method: each copy meets the random numbers Quantus' batches give it."""
    quantus, fast = both(case, "LocalLipschitzEstimate", {"nr_samples": 4}, method=method)
    np.testing.assert_allclose(fast, quantus, **TOL)


@pytest.mark.parametrize("name", ["MaxSensitivity", "AvgSensitivity"])
def test_sensitivity_quantus_divides_by_the_attribution_norm_the_paper_does_not(case, name) -> None:
    quantus, fast = both(case, name, {"nr_samples": 3}, method="gradient_x_input")
    np.testing.assert_allclose(fast, quantus, **TOL)
    ones = {"norm_denominator": lambda a: np.ones(len(a))}
    quantus, paper = both(case, name, {"nr_samples": 3}, quantus_only=ones, method="gradient_x_input",
                          definitions="paper")
    np.testing.assert_allclose(paper, quantus, **TOL)
    assert np.abs(paper - fast).max() > 1e-3


@pytest.mark.parametrize("batch_size", [2, 64])
def test_random_logit_draws_quantus_classes_and_compares_flat_maps_or_pictures(case, batch_size) -> None:
    quantus, fast = both(case, "RandomLogit", batch_size=batch_size)
    np.testing.assert_allclose(fast, quantus, **TOL)
    shape = case["x"].shape[1:]
    pictures = {"similarity_func": lambda a, b, batched=True, **_: map_ssim(a, b, shape)}
    quantus, paper = both(case, "RandomLogit", quantus_only=pictures, batch_size=batch_size, definitions="paper")
    np.testing.assert_allclose(paper, quantus, **TOL)
    assert np.abs(paper - fast).max() > 1e-3


@pytest.mark.parametrize("shape", [(1, 16, 16), (2, 9, 12), (1, 40)])
def test_ssim_is_skimages(shape) -> None:
    rng = np.random.RandomState(1)
    a, b = rng.normal(size=(3, *shape)), rng.normal(size=(3, *shape))
    ours = map_ssim(a.reshape(3, -1), b.reshape(3, -1), shape)
    for i in range(3):
        both_maps = np.concatenate([a[i].ravel(), b[i].ravel()])
        kwargs = {"channel_axis": 0} if len(shape) == 3 else {}
        reference = structural_similarity(a[i] if len(shape) == 3 else a[i][0], b[i] if len(shape) == 3 else b[i][0],
                                          data_range=float(both_maps.max() - both_maps.min()), **kwargs)
        np.testing.assert_allclose(ours[i], reference, rtol=1e-9)


@pytest.mark.parametrize("name", ["Sparseness", "Complexity", "TopKIntersection", "RelevanceRankAccuracy",
                                  "PointingGame", "AttributionLocalisation"])
def test_attribution_only_metrics(case, name) -> None:
    options = {"k": 30} if name == "TopKIntersection" else {}
    quantus, fast = both(case, name, options)
    np.testing.assert_allclose(fast, quantus, **TOL)


def test_relevance_share_cosine(case) -> None:
    quantus, fast = both(case, "RelevanceShareCosine", {"n_blocks": 4})
    np.testing.assert_allclose(fast, quantus, **TOL)


@pytest.mark.parametrize("name, options", [("PointingGame", {}), ("AttributionLocalisation", {"weighted": True}),
                                           ("AttributionLocalisation", {})])
@pytest.mark.parametrize("batch_size", [3, 4, 64])
def test_localisation_quantus_definition_with_an_empty_mask_and_weights(case, name, options, batch_size) -> None:
    """Quantus' own values where it slips: an empty mask is a PointingGame hit, the weighted ratio divides by the
    size of its batch without two samples."""
    masks = case["masks"].copy()
    masks[2] = False
    quantus, fast = both({**case, "masks": masks}, name, options, batch_size=batch_size)
    np.testing.assert_allclose(fast, quantus, **TOL)
    if name == "PointingGame":
        assert fast[2] == 1.0


@pytest.mark.parametrize("name, options", [("TopKIntersection", {"k": 30}), ("RelevanceRankAccuracy", {})])
def test_rankings_with_ties_are_quantus_under_its_definition(case, name, options) -> None:
    """Attributions with many equal values (rounded, most of them 0): Quantus' order among ties, not positions."""
    tied = {**case, "a": np.round(np.clip(case["a"], 0, None), 0).astype(np.float32)}
    assert (tied["a"] == 0).mean() > 0.4
    quantus, fast = both(tied, name, options)
    np.testing.assert_allclose(fast, quantus, **TOL)


def test_localisation_follows_the_papers_where_quantus_slips(case) -> None:
    """Empty masks are NaN (Quantus: a hit); the weighted ratio uses the input's size (Quantus: the batch's)."""
    masks = case["masks"].copy()
    masks[2] = False
    batch = Batch(case["model"], case["x"], case["y"], masks=masks)
    a = np.abs(case["a"])
    pointing, localisation = metric_spec("PointingGame").fast, metric_spec("AttributionLocalisation").fast
    assert pointing is not None and localisation is not None
    assert np.isnan(pointing(batch, a, definitions="paper")[2])
    share = masks.reshape(N, -1).mean(axis=1)
    plain = localisation(batch, a, definitions="paper")
    weighted = localisation(batch, a, definitions="paper", weighted=True)
    np.testing.assert_allclose(weighted[[0, 1, 3, 4]], (plain * share)[[0, 1, 3, 4]], rtol=1e-12)
    inside = (a * masks).reshape(N, -1).sum(1) / a.reshape(N, -1).sum(1)
    np.testing.assert_allclose(plain[[0, 1, 3, 4]], inside[[0, 1, 3, 4]], rtol=1e-6)


def test_defaults_are_quantus_defaults() -> None:
    """Every option the batched engine shares with the Quantus metric has Quantus' default (softmax included)."""
    fixed = {("PixelFlipping", "return_auc_per_sample")}
    for name, spec in METRICS.items():
        function, cls = spec.fast, spec.quantus
        if function is None:
            continue
        quantus = {**inspect.signature(cls.__init__).parameters, **inspect.signature(cls.__call__).parameters}
        for option, parameter in inspect.signature(function).parameters.items():
            if option in quantus and parameter.default is not inspect.Parameter.empty and (name, option) not in fixed:
                assert parameter.default == quantus[option].default, (name, option)


def test_a_declaration_says_what_the_papers_definition_changes_exactly_when_it_takes_definitions() -> None:
    import quantus

    def plain(batch, a):
        return np.zeros(len(batch))

    def switched(batch, a, *, definitions="quantus"):
        return np.zeros(len(batch))

    assert [name for name, spec in METRICS.items() if spec.differs] == [
        "IROF", "MaxSensitivity", "AvgSensitivity", "RandomLogit", "PointingGame", "AttributionLocalisation",
        "TopKIntersection", "RelevanceRankAccuracy"]
    for fast, paper in ((switched, ""), (plain, "the paper differs")):
        with pytest.raises(ValueError, match="definitions"):
            register_metric(MetricSpec("Tiny", "complexity", quantus.Sparseness, fast, paper=paper))
    with pytest.raises(ValueError, match="already registered"):
        register_metric(metric_spec("Sparseness"))
    assert "Tiny" not in METRICS


def test_options_only_quantus_has_are_refused(case) -> None:
    spec = metric_spec("LocalLipschitzEstimate")
    init, calls = spec.settings(case["context"], {"similarity_func": lambda *a, **k: 0.0})
    batch = Batch(case["model"], case["x"], case["y"])
    with pytest.raises(Exception, match="not supported by the fast engine"):
        run_metric(spec, init, calls, batch, case["a"], explain_func("saliency"), 0)


# Batched LIME and KernelSHAP: captum's estimator, all samples at once -----------------------------


def test_surrogate_fits_are_scikit_learns() -> None:
    from sklearn.linear_model import LinearRegression, Ridge

    rng = np.random.RandomState(0)
    z, out, w = rng.randint(0, 2, (3, 40, 6)).astype(float), rng.normal(size=(3, 40)), rng.uniform(0.1, 1, (3, 40))
    z[1, :, 2] = 1.0  # a group always on: rank-deficient, both give the minimum-norm solution
    for alpha, reference in ((1.0, Ridge(alpha=1.0)), (0.0, LinearRegression())):
        ours = fit_surrogates(torch.tensor(z), torch.tensor(out), torch.tensor(w), alpha).numpy()
        expected = np.stack([reference.fit(z[i], out[i], sample_weight=w[i]).coef_ for i in range(3)])
        np.testing.assert_allclose(ours, expected, rtol=1e-8, atol=1e-10)


def test_kernel_shap_is_exact_on_a_linear_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    contributions = (model[1].weight.detach()[y].reshape(4, 1, 8, 8) * x).reshape(4, 1, 2, 4, 2, 4).sum((3, 5))
    for batched in (True, False):
        scores = attribute(model, x, y, "kernel_shap", n_perturbations=120, patch=4, batched=batched)
        np.testing.assert_allclose(scores.reshape(4, 1, 2, 4, 2, 4)[..., 0, :, 0], contributions.numpy(), atol=1e-4)


def test_deterministic_methods_explain_merged_batches_stochastic_ones_quantus_batches(case) -> None:
    """Merging Quantus' batches of copies changes nothing for a deterministic method (fewer calls), and a
    stochastic method still gets one call per batch, each starting from the seed."""
    x, y = case["x"], case["y"]
    inputs, targets, sizes = np.concatenate([x, x[::-1], x[:2]]), np.concatenate([y, y[::-1], y[:2]]), [5, 5, 2]
    batch = Batch(case["model"], x, y)
    for method, calls_expected in (("gradient_x_input", 1), ("smoothgrad", 3)):
        explain, calls = explain_func(method), []

        def counted(model, inputs, targets, explain=explain, calls=calls):
            calls.append(len(inputs))
            return explain(model, inputs, targets)

        counted.deterministic = explain.deterministic  # type: ignore[attr-defined]
        got = explain_rows(batch, counted, inputs, targets, sizes, normalise=True, abs=False)
        assert len(calls) == calls_expected
        one_by_one = np.concatenate([explain(case["model"], inputs[a:b], targets[a:b]).reshape(b - a, -1)
                                     for a, b in ((0, 5), (5, 10), (10, 12))])
        np.testing.assert_allclose(got, prepare(one_by_one, (12, -1), normalise=True, abs=False), rtol=1e-5,
                                   atol=1e-6)
    assert not explain_func("feature_permutation").deterministic and not explain_func("causal", base="smoothgrad").deterministic
    assert explain_func("lime").deterministic  # seeded per input: a function of (sample, seed)


@pytest.mark.parametrize("name, options", [("FaithfulnessCorrelation", {"nr_runs": 6, "subset_size": 20}),
                                           ("LocalLipschitzEstimate", {"nr_samples": 3})])
def test_perturbations_shared_by_methods_give_the_scores_of_a_fresh_batch(case, name, options) -> None:
    """The perturbations drawn once per batch and reused by later methods give the same scores as drawing anew."""
    spec = metric_spec(name)
    init, calls = spec.settings(case["context"], {**options, "batch_size": 3})
    shared = Batch(case["model"], case["x"], case["y"])
    for method in ("saliency", "gradient_x_input", "saliency"):
        fresh = Batch(case["model"], case["x"], case["y"])
        a = attribute(case["model"], case["x"], case["y"], method)
        np.testing.assert_array_equal(run_metric(spec, init, calls, shared, a, explain_func(method), 3),
                                      run_metric(spec, init, calls, fresh, a, explain_func(method), 3))
    assert len(shared.cache) >= 1
