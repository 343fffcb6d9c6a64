"""Explanation-cluster agreement across training seeds: the adjusted Rand index between runs.

Runs that differ only in ``seed`` and cluster their explanations
(``analyses.clustering.enabled``) are compared on the *same* inputs: each run's
trained model (read from its folder) explains the first run's clustering samples
for their true class, the explanations are clustered with the first run's best
k, and :func:`~explainnn.analyses.clustering.seed_agreement` gives the pairwise
ARI (1: the models group the inputs the same way; about 0: chance). The seed
also draws the data split, so the inputs are those of the first run's split.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from explainnn.config import Config, read_yaml
from explainnn.data import Dataset
from explainnn.files import write_csv
from explainnn.sweep.results import RunResult


@dataclass
class AgreementGroup:
    """Runs that differ only in their seed, and the ARI matrix of their explanation clusters."""

    fixed: str
    runs: list[RunResult]
    names: list[str]
    matrix: np.ndarray
    method: str
    k: int
    n_samples: int
    picture: Path | None = None

    @property
    def mean(self) -> float:
        return float(self.matrix[np.triu_indices(len(self.runs), 1)].mean())


def seed_groups(runs: Sequence[RunResult]) -> list[list[RunResult]]:
    """Completed runs with a clustering summary, one per seed, grouped by every setting but ``seed`` and the
    discovery options (which the clustering does not use); groups of 2 or more."""
    buckets: dict[str, dict[Any, RunResult]] = {}
    for run in runs:
        if run.folder is None or not (run.folder / "clustering" / "summary.json").is_file():
            continue
        setting = {key: value for key, value in run.settings.items()
                   if key != "seed" and not key.startswith("discovery.")}
        buckets.setdefault(json.dumps(setting, sort_keys=True), {}).setdefault(run.settings["seed"], run)
    return [list(members.values()) for members in buckets.values() if len(members) >= 2]


def agreement(members: Sequence[RunResult], configs: Mapping[str, Config]) -> AgreementGroup:
    """The pairwise ARI of the members' explanation clusters on the first member's clustering samples."""
    from explainnn.analyses.clustering import seed_agreement
    from explainnn.analyses.common import sample_indices
    from explainnn.checkpoint import load_checkpoint
    from explainnn.models import build_model

    first = configs[members[0].key]
    summary = json.loads((_folder(members[0]) / "clustering" / "summary.json").read_text(encoding="utf-8"))
    dataset = _dataset(first)
    index = sample_indices(len(dataset.x_test), int(summary["n_samples"]), first.seed)
    models = []
    for run in members:
        config = configs[run.key]
        model = build_model(config.model.name, dataset.info, **config.model.params)
        used = read_yaml(_folder(run) / "config.yaml").get("model", {}).get("checkpoint")  # maybe a shared model
        checkpoint = Path(used) if used else _folder(run) / "model.pt"
        load_checkpoint(checkpoint, model)
        models.append(model.eval())
    matrix = seed_agreement(models, dataset.x_test[index], method=summary["method"], k=int(summary["best_k"]),
                            seed=first.seed, target=dataset.y_test[index])
    shared = {k: v for k, v in members[0].values.items() if k != "seed" and not k.startswith("discovery.")
              and all(m.values.get(k) == v for m in members)}
    return AgreementGroup(", ".join(f"{k}={v}" for k, v in shared.items()), list(members),
                          [f"seed {configs[run.key].seed}" for run in members], matrix, summary["method"],
                          int(summary["best_k"]), len(index))


def _dataset(config: Config) -> Dataset:
    """The run's dataset, loaded as the pipeline's data step loads it (same split seed), without its message."""
    from explainnn.data import load_dataset, supports_image_size

    options = config.data
    return load_dataset(options.name, options.root, download=options.download,
                        image_size=options.image_size if supports_image_size(options.name) else None,
                        seed=config.seed, **options.options)


def write_agreement(groups: Sequence[AgreementGroup], sweep_dir: Path, *, plots: bool = True,
                    dpi: int = 120) -> Path:
    """``agreement.csv`` (one row per pair of runs) and ``agreement/*.png`` (one heatmap per group)."""
    from explainnn.analyses.clustering import plot_seed_agreement

    rows = []
    for number, group in enumerate(groups, 1):
        rows += [{"group": group.fixed, "a": group.names[i], "b": group.names[j], "ari": float(group.matrix[i, j]),
                  "method": group.method, "k": group.k, "n_samples": group.n_samples}
                 for i in range(len(group.runs)) for j in range(i + 1, len(group.runs))]
        if plots:
            group.picture = sweep_dir / "agreement" / f"seeds_{number}.png"
            plot_seed_agreement(group.matrix, group.names, path=group.picture, dpi=dpi,
                                title=f"{group.method} clusters (k={group.k}) across seeds"
                                + (f"\n{group.fixed}" if group.fixed else ""))
    return write_csv(sweep_dir / "agreement.csv", rows, ("group", "a", "b", "ari", "method", "k", "n_samples"))


def _folder(run: RunResult) -> Path:
    """A finished run's folder (the callers keep only runs that have one)."""
    assert run.folder is not None
    return run.folder
