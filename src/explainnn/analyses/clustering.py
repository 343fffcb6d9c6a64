"""Clusters of explanations: which distinct strategies a model uses, and whether they are stable.

Explanations of many inputs, flattened to vectors, fall into groups when the model
decides in a few distinct ways (spectral relevance analysis clusters heatmaps the
same way). :func:`cluster_explanations` runs seeded k-means for a range of k and
picks k by silhouette; :func:`plot_clusters` draws them in 2-D (PCA or t-SNE)
coloured by cluster and marked by class. Whether such clusters are a property of
the task or an accident of one training run is what :func:`seed_agreement` asks:
the adjusted Rand index between the clusterings of the same inputs' explanations
from models trained with different seeds. :func:`explanation_clusters` does it all
for a dataset's test samples and returns an :class:`ExplanationClusters`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score
from torch import nn

from explainnn.analyses.common import attribute_in_batches, check_positive, resolve_targets, sample_indices
from explainnn.analyses.embeddings import PROJECTIONS, project_2d
from explainnn.attributions import method_info, modality_of
from explainnn.data import Dataset
from explainnn.errors import UserError
from explainnn.files import save_figure
from explainnn.progress import progress_bar

N_INIT = 10
"""k-means restarts per k (fixed, so a seed fixes the result)."""
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">")


@dataclass(frozen=True)
class ClusteringResult:
    """k-means of explanation vectors for every k tried; ``best_k`` has the highest silhouette.

    ``labels[k]`` are the cluster of each sample for ``k``; ``silhouette`` is NaN
    for a k where k-means found fewer than two distinct clusters. ``normalize``
    records whether vectors were scaled to unit length before clustering.
    """

    ks: tuple[int, ...]
    silhouette: np.ndarray
    inertia: np.ndarray
    labels: dict[int, np.ndarray]
    best_k: int
    normalize: bool
    seed: int

    @property
    def best_labels(self) -> np.ndarray:
        return self.labels[self.best_k]

    def rows(self) -> list[dict[str, Any]]:
        return [{"k": k, "silhouette": float(s), "inertia": float(i), "best": k == self.best_k}
                for k, s, i in zip(self.ks, self.silhouette, self.inertia)]


def prepare(explanations: np.ndarray | torch.Tensor, *, normalize: bool = True) -> np.ndarray:
    """``(N, ...)`` explanations as float64 ``(N, D)`` rows, scaled to unit L2 norm when ``normalize``.

    Normalising makes clusters follow *where* a model looks rather than how large
    its attributions are (which varies with each input's logit); zero rows stay zero.
    """
    array = explanations.detach().cpu().numpy() if isinstance(explanations, torch.Tensor) else np.asarray(explanations)
    if array.ndim < 2 or len(array) == 0:
        raise UserError(f"explanations must be (N, ...) with N >= 1; got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number):
        raise UserError(f"explanations must be numbers; got dtype {array.dtype}")
    rows = array.reshape(len(array), -1).astype(np.float64)
    if not np.all(np.isfinite(rows)):
        raise UserError("explanations contain NaN or infinite values")
    if normalize:
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        rows = rows / np.where(norms > 0, norms, 1.0)
    return rows


def cluster_explanations(
    explanations: np.ndarray | torch.Tensor,
    *,
    k_range: Sequence[int] | None = None,
    max_clusters: int = 8,
    seed: int = 0,
    normalize: bool = True,
) -> ClusteringResult:
    """Seeded k-means (``n_init`` fixed) of flattened explanations for each k, scored by silhouette.

    ``k_range`` defaults to ``range(2, max_clusters + 1)``; ks above the number of
    distinct vectors minus one (where silhouette is undefined) are dropped.
    """
    rows = prepare(explanations, normalize=normalize)
    ks = list(range(2, check_positive("max_clusters", max_clusters) + 1) if k_range is None else k_range)
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2 for k in ks):
        raise UserError(f"k_range must hold cluster counts >= 2; got {list(ks)}")
    distinct = len(np.unique(rows, axis=0))
    usable = sorted({int(k) for k in ks if k <= min(distinct, len(rows) - 1)})
    if not usable:
        raise UserError(
            f"cannot cluster {len(rows)} explanations ({distinct} distinct) into {min(ks)}+ clusters; "
            "explain more samples or lower the number of clusters"
        )
    silhouettes, inertias, labels = [], [], {}
    for k in usable:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = KMeans(n_clusters=k, n_init=N_INIT, random_state=seed).fit(rows)
        labels[k] = model.labels_.astype(np.int64)
        found = len(np.unique(labels[k]))
        silhouettes.append(silhouette_score(rows, labels[k], random_state=seed) if 1 < found < len(rows)
                           else np.nan)
        inertias.append(model.inertia_)
    silhouette = np.asarray(silhouettes, dtype=np.float64)
    if np.all(np.isnan(silhouette)):
        raise UserError("k-means found fewer than two distinct clusters for every k; the explanations barely differ")
    best = usable[int(np.nanargmax(silhouette))]
    return ClusteringResult(tuple(usable), silhouette, np.asarray(inertias), labels, best, normalize, seed)


def project_explanations(explanations: np.ndarray | torch.Tensor, *, projection: str = "pca", seed: int = 0,
                         normalize: bool = True) -> np.ndarray:
    """2-D coordinates of the (normalised) explanation vectors by PCA or t-SNE."""
    if projection not in PROJECTIONS:
        raise UserError(f"unknown projection '{projection}'; valid projections: {', '.join(PROJECTIONS)}")
    rows = prepare(explanations, normalize=normalize)
    if len(rows) < 3:
        raise UserError(f"a 2-D projection needs at least 3 explanations; got {len(rows)}")
    return project_2d(rows, projection, seed)


def plot_clusters(
    explanations: np.ndarray | torch.Tensor,
    result: ClusteringResult,
    *,
    classes: np.ndarray | torch.Tensor | Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    k: int | None = None,
    projection: str = "pca",
    title: str = "",
    path: str | Path | None = None,
    dpi: int = 120,
) -> Figure:
    """Left: 2-D projection coloured by cluster (``k``, default the best) and marked by class.
    Right: silhouette against k."""
    k = result.best_k if k is None else k
    if k not in result.labels:
        raise UserError(f"no clustering for k={k}; computed: {', '.join(map(str, result.ks))}")
    labels = result.labels[k]
    coords = project_explanations(explanations, projection=projection, seed=result.seed, normalize=result.normalize)
    if len(coords) != len(labels):
        raise UserError(f"{len(coords)} explanations but the clustering has {len(labels)} samples")
    groups = np.zeros(len(labels), dtype=np.int64) if classes is None else _as_int(classes)
    if groups.shape != labels.shape:
        raise UserError(f"classes must be one per explanation ({len(labels)}); got shape {groups.shape}")
    figure = Figure(figsize=(11, 4.6), layout="constrained")
    scatter_axis, k_axis = figure.subplots(1, 2, width_ratios=(1.6, 1))
    colours = [f"C{i % 10}" for i in labels]
    for group in np.unique(groups):
        chosen = groups == group
        name = None if classes is None else (class_names[group] if class_names is not None
                                             and 0 <= group < len(class_names) else str(group))
        scatter_axis.scatter(coords[chosen, 0], coords[chosen, 1], c=[colours[i] for i in np.nonzero(chosen)[0]],
                             marker=MARKERS[group % len(MARKERS)], s=22, alpha=0.8, edgecolors="none",
                             label=name)
    if classes is not None:
        legend = scatter_axis.legend(title="class (marker)", fontsize="small", loc="best", markerscale=1.2)
        for handle in legend.legend_handles:
            handle.set_color("#555555")
    scatter_axis.set_title(f"explanations ({projection.upper() if projection == 'pca' else 't-SNE'}), "
                           f"colour = cluster of {k}")
    scatter_axis.set_xticks([])
    scatter_axis.set_yticks([])
    k_axis.plot(result.ks, result.silhouette, marker="o", color="#333333")
    k_axis.axvline(result.best_k, color="#b2182b", linestyle="--", linewidth=1, label=f"best k = {result.best_k}")
    k_axis.set_xlabel("k (clusters)")
    k_axis.set_ylabel("silhouette")
    k_axis.set_xticks(result.ks)
    k_axis.legend(fontsize="small")
    if title:
        figure.suptitle(title)
    return save_figure(figure, path, dpi=dpi)


def explanation_vectors(
    model: nn.Module,
    inputs: torch.Tensor | np.ndarray,
    *,
    method: str = "integrated_gradients",
    target: str | int | Sequence[int] | np.ndarray | torch.Tensor = "predicted",
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> np.ndarray:
    """``method``'s explanations of ``inputs``, one float32 row per sample.

    Images and sequences are flattened; token models give one score per position,
    zero at padding (left padding aligns every text's end).
    """
    batch = torch.as_tensor(inputs.detach().cpu() if isinstance(inputs, torch.Tensor) else np.asarray(inputs))
    modality = modality_of(model, batch)
    info = method_info(method)
    if info.needs_graph:
        raise UserError(f"attribution method '{method}' needs a causal graph, which explanation clustering "
                        "does not have; choose a method such as integrated_gradients or saliency")
    info.implementation(modality)
    targets = resolve_targets(model, batch, target)
    values = attribute_in_batches(method, model, batch, targets, seed, dict(options or {}), progress)
    if modality == "tokens":
        values = np.where(batch.numpy() == model.pad_index, 0.0, values)
    return values.reshape(len(values), -1).astype(np.float32)


def seed_agreement(
    models: Sequence[nn.Module],
    inputs: torch.Tensor | np.ndarray,
    *,
    method: str = "integrated_gradients",
    k: int,
    seed: int = 0,
    target: str | int | Sequence[int] | np.ndarray | torch.Tensor = "predicted",
    options: Mapping[str, Any] | None = None,
    normalize: bool = True,
    progress: bool = False,
) -> np.ndarray:
    """Pairwise adjusted Rand index ``(M, M)`` of k-means clusterings (``k`` clusters, seeded
    identically) of each model's explanations of the same ``inputs``.

    1 means the models group the inputs the same way; ~0 is chance. Pass the true
    labels as ``target`` to explain the same class with every model (the default
    ``"predicted"`` lets each model explain its own decision).
    """
    if len(models) < 2:
        raise UserError(f"seed agreement compares at least 2 models; got {len(models)}")
    check_positive("k", k)
    clusterings = []
    for model in progress_bar(models, desc="seed agreement", unit="model", enabled=progress, leave=False):
        vectors = explanation_vectors(model, inputs, method=method, target=target, seed=seed, options=options)
        clusterings.append(cluster_explanations(vectors, k_range=[k], seed=seed, normalize=normalize).labels[k])
    return rand_index_matrix(clusterings)


def rand_index_matrix(clusterings: Sequence[np.ndarray]) -> np.ndarray:
    """Pairwise adjusted Rand index of clusterings of the same samples (1 on the diagonal)."""
    sizes = {len(labels) for labels in clusterings}
    if len(sizes) > 1:
        raise UserError(f"clusterings must label the same samples; got lengths {sorted(sizes)}")
    matrix = np.eye(len(clusterings))
    for i in range(len(clusterings)):
        for j in range(i + 1, len(clusterings)):
            matrix[i, j] = matrix[j, i] = adjusted_rand_score(clusterings[i], clusterings[j])
    return matrix


def plot_seed_agreement(matrix: np.ndarray, names: Sequence[str], *, title: str = "",
                        path: str | Path | None = None, dpi: int = 120) -> Figure:
    """Heatmap of pairwise adjusted Rand indices, values written in the cells."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape != (len(names), len(names)):
        raise UserError(f"the agreement matrix must be ({len(names)}, {len(names)}); got {matrix.shape}")
    side = 1.0 + 0.7 * len(names)
    figure = Figure(figsize=(side + 1.2, side), layout="constrained")
    axis = figure.subplots()
    image = axis.imshow(matrix, vmin=-0.5, vmax=1.0, cmap="viridis")
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axis.set_yticks(range(len(names)), names)
    for (i, j), value in np.ndenumerate(matrix):
        axis.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black",
                  fontsize="small")
    figure.colorbar(image, ax=axis, label="adjusted Rand index")
    axis.set_title(title or "agreement of explanation clusters across training seeds")
    return save_figure(figure, path, dpi=dpi)


@dataclass(frozen=True)
class ExplanationClusters:
    """Explanations of test samples clustered, and the clusters compared across training seeds.

    ``index`` are the test samples, ``classes`` their true classes (the target each
    was explained for), ``predicted`` this model's classes, ``vectors`` the
    explanations (one row each) and ``clustering`` their k-means. With training
    ``seeds``, ``agreement`` is the pairwise adjusted Rand index ``(S + 1, S + 1)``
    of this model's clustering (best k) and those of the models trained with them.
    """

    dataset: str
    method: str
    index: np.ndarray
    classes: np.ndarray
    predicted: np.ndarray
    vectors: np.ndarray
    clustering: ClusteringResult
    seeds: list[int]
    agreement: np.ndarray | None = None

    @property
    def agreement_names(self) -> list[str]:
        """The models the agreement matrix compares: "this model", then "seed <s>" for each seed."""
        return ["this model", *(f"seed {s}" for s in self.seeds)]

    def cluster_rows(self) -> list[dict[str, int]]:
        """One row per sample: its index, class, prediction and cluster (best k)."""
        return [{"sample": int(i), "class": int(c), "predicted": int(p), "cluster": int(k)}
                for i, c, p, k in zip(self.index, self.classes, self.predicted, self.clustering.best_labels)]

    def agreement_rows(self) -> list[dict[str, Any]]:
        """The agreement matrix as rows: ``{"model", <each model>: ARI}``; empty without seeds."""
        if self.agreement is None:
            return []
        names = self.agreement_names
        return [{"model": name, **{other: float(v) for other, v in zip(names, row)}}
                for name, row in zip(names, self.agreement)]

    def summary(self) -> dict[str, Any]:
        """Best k, silhouettes, cluster sizes, agreement with the classes and across seeds, as one record."""
        result, agreement = self.clustering, self.agreement
        return {
            "dataset": self.dataset,
            "method": self.method,
            "n_samples": len(self.classes),
            "best_k": result.best_k,
            "silhouette": dict(zip(map(str, result.ks), map(float, result.silhouette))),
            "cluster_sizes": np.bincount(result.best_labels, minlength=result.best_k).tolist(),
            "class_ari": float(adjusted_rand_score(self.classes, result.best_labels)),
            "class_nmi": float(normalized_mutual_info_score(self.classes, result.best_labels)),
            "seeds": self.seeds,
            "seed_ari_mean": None if agreement is None else float(agreement[np.triu_indices(len(agreement), 1)].mean()),
        }


def explanation_clusters(
    model: nn.Module,
    dataset: Dataset,
    *,
    method: str = "integrated_gradients",
    n_samples: int = 300,
    max_clusters: int = 8,
    seeds: Sequence[int] = (),
    retrain: Callable[[int], nn.Module] | None = None,
    seed: int = 0,
    progress: bool = False,
    options: Mapping[str, Any] | None = None,
) -> ExplanationClusters:
    """Cluster ``method``'s explanations of a seeded random subset of ``n_samples`` test samples.

    Explanations are of each sample's true class (the same target for every model).
    When ``seeds`` lists training seeds, ``retrain(seed)`` supplies a model trained
    with each, and their clusterings (this model's best k) are compared with this
    model's by the adjusted Rand index.
    """
    seeds = [int(s) for s in seeds]
    if seeds and retrain is None:
        raise UserError("clustering seeds were given but no retrain(seed) function to train those models; "
                        "pass retrain= or leave seeds empty")
    index = sample_indices(len(dataset.x_test), n_samples, seed)
    inputs, classes = dataset.x_test[index], dataset.y_test[index].numpy()
    vectors = explanation_vectors(model, inputs, method=method, target=classes, seed=seed, options=options,
                                  progress=progress)
    result = cluster_explanations(vectors, max_clusters=max_clusters, seed=seed)
    predicted = resolve_targets(model, inputs, "predicted").numpy()
    agreement = None
    if seeds:
        assert retrain is not None  # checked above
        clusterings = [result.best_labels]
        for other in progress_bar(seeds, desc="seed agreement", unit="model", enabled=progress, leave=False):
            others = explanation_vectors(retrain(other), inputs, method=method, target=classes, seed=seed,
                                         options=options)
            clusterings.append(cluster_explanations(others, k_range=[result.best_k], seed=seed).labels[result.best_k])
        agreement = rand_index_matrix(clusterings)
    return ExplanationClusters(dataset.info.name, method, index, classes, predicted, vectors, result, seeds,
                               agreement)


def _as_int(values: Any) -> np.ndarray:
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    return array.astype(np.int64)

