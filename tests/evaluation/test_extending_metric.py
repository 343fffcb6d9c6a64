"""The metric example of docs/extending.md, as printed: one registration, then scored by both engines."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from explainnn.config import build_config
from explainnn.evaluation import METRICS, EvaluationInputs, evaluate

ROOT = Path(__file__).resolve().parents[2]


def _metric_example() -> str:
    text = (ROOT / "docs" / "extending.md").read_text()
    section = text[text.index("## A metric"):text.index("## A model")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    return blocks[0]


@pytest.fixture
def registered():
    exec(compile(_metric_example(), "docs/extending.md", "exec"), {})
    try:
        yield METRICS["EffectiveComplexity"]
    finally:
        METRICS.pop("EffectiveComplexity", None)


def test_the_docs_metric_is_one_registration_and_both_engines_agree(registered) -> None:
    assert registered.family == "complexity" and registered.direction == "lower" and registered.fast is not None
    assert build_config(overrides=["evaluation.metrics=[EffectiveComplexity]", "evaluation.options={}"])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3)).eval()
    x = torch.rand(5, 1, 6, 6).numpy()
    inputs = EvaluationInputs(model=model, x=x, y=np.zeros(5, dtype=np.int64), samples=np.arange(5),
                              modality="image")
    runs = {engine: evaluate(model, inputs, ["saliency", "gradient_x_input"], ["EffectiveComplexity"],
                             reference="saliency", engine=engine, progress=False) for engine in ("fast", "quantus")}
    values = {engine: [row["value"] for row in run.scores] for engine, run in runs.items()}
    assert len(values["fast"]) == 10 and values["fast"] == values["quantus"]
    assert all(0 < value <= 36 for value in values["fast"])
    assert {row["engine"] for row in runs["fast"].timings if row["metric"] == "EffectiveComplexity"} == {"fast"}
