"""Clustering of explanation vectors: planted clusters, seed agreement, and the clustering step."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import adjusted_rand_score

from explainnn.analyses.clustering import (
    ExplanationClusters,
    cluster_explanations,
    explanation_clusters,
    explanation_vectors,
    plot_clusters,
    prepare,
    seed_agreement,
)
from explainnn.data import Dataset, DatasetInfo
from explainnn.errors import UserError
from explainnn.models import RecurrentClassifier, build_model
from explainnn.torch_utils import seed_everything
from explainnn.training import train_model


def planted(k: int, per_cluster: int = 25, dims: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``k`` tight groups of vectors pointing in different directions, with random magnitudes."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dims))
    truth = np.repeat(np.arange(k), per_cluster)
    vectors = centres[truth] + 0.05 * rng.normal(size=(len(truth), dims))
    return vectors * rng.uniform(0.5, 5.0, size=(len(truth), 1)), truth


@pytest.fixture(scope="module")
def digits() -> Dataset:
    """sklearn's 8x8 digits (bundled, no download) as a small image dataset."""
    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(labels, dtype=torch.int64)
    info = DatasetInfo("digits", "image", (1, 8, 8), 10, tuple(map(str, range(10))), "sklearn digits")
    return Dataset(info, x[:400], y[:400], x[1500:1560], y[1500:1560])


def trained_lstm(dataset: Dataset, seed: int) -> torch.nn.Module:
    seed_everything(seed)
    model = build_model("lstm", dataset.info, hidden_size=12)
    train_model(model, dataset, epochs=1, batch_size=32, lr=1e-2, seed=seed, progress=False)
    return model


@pytest.mark.parametrize("k", [3, 5])
def test_clustering_recovers_planted_clusters(k):
    vectors, truth = planted(k)
    result = cluster_explanations(vectors, max_clusters=7, seed=0)
    assert result.best_k == k
    assert result.ks == tuple(range(2, 8))
    assert adjusted_rand_score(truth, result.best_labels) == pytest.approx(1.0)
    assert np.nanargmax(result.silhouette) == result.ks.index(k)
    again = cluster_explanations(vectors, max_clusters=7, seed=0)
    np.testing.assert_array_equal(again.best_labels, result.best_labels)


def test_normalisation_makes_clusters_follow_direction_not_size():
    vectors, truth = planted(3)
    assert adjusted_rand_score(truth, cluster_explanations(vectors, k_range=[3]).labels[3]) == 1.0
    raw = cluster_explanations(vectors, k_range=[3], normalize=False).labels[3]
    assert adjusted_rand_score(truth, raw) < 1.0
    rows = prepare(np.zeros((2, 2, 2)))
    assert rows.shape == (2, 4) and not rows.any()


def test_cluster_explanations_rejects_what_cannot_be_clustered():
    vectors, _ = planted(2, per_cluster=3)
    assert cluster_explanations(vectors, max_clusters=20).ks == (2, 3, 4, 5)
    with pytest.raises(UserError, match="cannot cluster 3 explanations"):
        cluster_explanations(vectors[:3], k_range=[3, 4])
    with pytest.raises(UserError, match="k_range"):
        cluster_explanations(vectors, k_range=[1, 2])
    with pytest.raises(UserError, match="NaN"):
        cluster_explanations(np.full((4, 3), np.nan))


def test_plot_clusters_pca_and_tsne():
    vectors, truth = planted(3, per_cluster=8)
    result = cluster_explanations(vectors, max_clusters=4)
    for projection in ("pca", "tsne"):
        figure = plot_clusters(vectors, result, classes=truth, class_names=["a", "b", "c"], projection=projection)
        assert len(figure.axes) == 2
    with pytest.raises(UserError, match="valid projections"):
        plot_clusters(vectors, result, projection="umap")


def test_seed_agreement_is_one_for_identical_models_and_lower_for_different_ones(digits):
    inputs = digits.x_test[:40]
    first, second = trained_lstm(digits, 0), trained_lstm(digits, 1)
    same = seed_agreement([first, copy.deepcopy(first)], inputs, method="saliency", k=4, target=digits.y_test[:40])
    np.testing.assert_allclose(same, 1.0)
    different = seed_agreement([first, second], inputs, method="saliency", k=4, target=digits.y_test[:40])
    assert different.shape == (2, 2) and different[0, 1] == different[1, 0] < 1.0
    with pytest.raises(UserError, match="at least 2 models"):
        seed_agreement([first], inputs, method="saliency", k=3)


def test_token_explanations_are_zero_at_padding():
    torch.manual_seed(0)
    model = RecurrentClassifier("gru", None, 2, hidden_size=4, vocab_size=20, embedding_dim=4)
    tokens = torch.tensor([[0, 0, 5, 6], [0, 7, 8, 9], [3, 4, 5, 6]])
    vectors = explanation_vectors(model, tokens, method="integrated_gradients", options={"n_steps": 4})
    assert vectors.shape == (3, 4) and vectors.dtype == np.float32
    assert not vectors[0, :2].any() and not vectors[1, 0]
    with pytest.raises(UserError, match="needs a causal graph"):
        explanation_vectors(model, tokens, method="causal")


def _clustering_step(model, dataset, run_dir, *overrides, retrain=None):
    """The pipeline's clustering step on ``model`` and ``dataset`` alone (``retrain``: the model step's seed models)."""
    from explainnn.config import build_config
    from explainnn.pipeline.clustering import analyse_clusters as clustering_step
    from explainnn.pipeline.context import RunContext, SeedModels

    ctx = RunContext(build_config(overrides=["progress=false", "plots.dpi=40", *overrides]), run_dir,
                     torch.device("cpu"))
    ctx.dataset, ctx.model = dataset, model
    if retrain is not None:
        ctx.seed_models = SeedModels(retrain)
    return ctx, clustering_step(ctx, ctx.config.analyses.clustering)


def test_the_clustering_step_writes_files_and_seed_agreement(digits, tmp_path, capsys):
    model = trained_lstm(digits, 0)
    retrained = []

    def retrain(seed: int) -> torch.nn.Module:
        retrained.append(seed)
        return trained_lstm(digits, seed)

    ctx, result = _clustering_step(model, digits, tmp_path, "analyses.clustering.method=saliency",
                                   "analyses.clustering.n_samples=30", "analyses.clustering.max_clusters=4",
                                   "analyses.clustering.seeds=[1]", retrain=retrain)
    assert retrained == [1] and ctx.analyses.clustering is result
    folder = tmp_path / "clustering"
    for name in ("explanations.npz", "clusters.csv", "silhouette.csv", "summary.json", "clusters.png",
                 "seed_agreement.csv", "seed_agreement.png"):
        assert (folder / name).is_file(), name
    summary = json.loads((folder / "summary.json").read_text())
    assert summary == json.loads(json.dumps(result.summary()))
    assert summary["n_samples"] == 30 and summary["best_k"] in (2, 3, 4)
    assert sum(summary["cluster_sizes"]) == 30 and -1 <= summary["seed_ari_mean"] <= 1
    assert result.vectors.shape == (30, 64)
    assert result.agreement is not None and result.agreement.shape == (2, 2)
    assert result.agreement_names == ["this model", "seed 1"]
    assert len((folder / "clusters.csv").read_text().splitlines()) == 31
    assert (folder / "seed_agreement.csv").read_text().splitlines()[0] == "model,this model,seed 1"
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("clustering  saliency on 30 samples")


def test_explanation_clusters_without_seeds_leave_agreement_out(digits, tmp_path, monkeypatch, capsys):
    model = trained_lstm(digits, 0)
    monkeypatch.chdir(tmp_path)
    result = explanation_clusters(model, digits, method="saliency", n_samples=20, max_clusters=3)
    assert isinstance(result, ExplanationClusters) and result.agreement is None and result.agreement_rows() == []
    assert capsys.readouterr() == ("", "") and not any(tmp_path.iterdir())
    assert [row["sample"] for row in result.cluster_rows()] == result.index.tolist()
    assert result.summary()["seed_ari_mean"] is None
    with pytest.raises(UserError, match="retrain"):
        explanation_clusters(model, digits, method="saliency", n_samples=20, seeds=[1], retrain=None)
    _, stepped = _clustering_step(model, digits, tmp_path / "run", "analyses.clustering.method=saliency",
                                  "analyses.clustering.n_samples=20", "analyses.clustering.max_clusters=3",
                                  "plots.enabled=false")
    assert "clustering  seed agreement: skipped" in capsys.readouterr().out
    folder = tmp_path / "run" / "clustering"
    assert not (folder / "seed_agreement.csv").exists() and not (folder / "clusters.png").exists()
    assert np.array_equal(stepped.clustering.best_labels, result.clustering.best_labels)
