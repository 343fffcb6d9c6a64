"""``evaluation.definitions``: with ``quantus`` the fast engine equals the Quantus engine on the default config's
metrics, for a causal and a gradient method; ``paper`` is the papers' definitions, fast engine only.

The model is a LeNet trained briefly on the offline digits; the metrics and their
options are those of the default config (``EvaluationConfig()``, which
``config.yaml`` repeats), on a few held-out samples. Scores are compared with
``rtol=1e-4, atol=1e-5``: both engines compute in float32 and differ only in how
many rows share a forward pass.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from explainnn.causal import discover
from explainnn.config import EvaluationConfig, build_config, load_config
from explainnn.data import load_dataset, pad_images
from explainnn.errors import ConfigError
from explainnn.evaluation import evaluate, evaluate_class, prepare_inputs

ROOT = Path(__file__).resolve().parents[2]
METHODS = ["causal", "integrated_gradients"]
N = 4


@pytest.fixture(scope="module")
def setting(train_small, tmp_path_factory) -> tuple:
    mnist = load_dataset("mnist", tmp_path_factory.mktemp("mnist"))
    mnist = replace(mnist, x_train=mnist.x_train[:400], y_train=mnist.y_train[:400], x_test=mnist.x_test[:60],
                    y_test=mnist.y_test[:60])
    padded = replace(mnist, info=replace(mnist.info, input_shape=(1, 32, 32)),
                     x_train=pad_images(mnist.x_train, 32, "mnist"), x_test=pad_images(mnist.x_test, 32, "mnist"))
    model = train_small("lenet", padded)
    target = 1
    graph = discover(model, padded.x_test, target, labels=padded.y_test, n_samples=4, layers=["fc2", "fc1"])
    return model, padded, target, graph


def _scores(results) -> dict[tuple, float]:
    return {(row["method"], row["metric"], row["sample"]): row["value"] for row in results.scores}


def test_the_default_is_quantus_and_config_yaml_says_so() -> None:
    assert EvaluationConfig().definitions == "quantus"
    assert load_config(ROOT / "config.yaml").evaluation.definitions == "quantus"


def test_default_metrics_fast_engine_equals_quantus_engine(setting) -> None:
    model, dataset, target, graph = setting
    defaults = EvaluationConfig()
    runs = {engine: evaluate_class(model, dataset, target, graph, methods=METHODS, metrics=defaults.metrics,
                                   n_samples=N, options=defaults.options, seed=0, progress=False, engine=engine,
                                   definitions="quantus")
            for engine in ("fast", "quantus")}
    fast, quantus = _scores(runs["fast"]), _scores(runs["quantus"])
    assert not runs["fast"].skipped and not runs["quantus"].skipped
    assert fast.keys() == quantus.keys()
    assert {key[1] for key in fast} == set(defaults.metrics) and {key[0] for key in fast} == set(METHODS)
    assert {row["engine"] for row in runs["fast"].timings if row["metric"] != "attributions"} == {"fast"}
    for key in sorted(fast):
        np.testing.assert_allclose(fast[key], quantus[key], rtol=1e-4, atol=1e-5, err_msg=str(key))
    assert runs["fast"].settings["definitions"] == runs["quantus"].settings["definitions"] == "quantus"

    paper = evaluate_class(model, dataset, target, graph, methods=METHODS, metrics=["IROF", "RandomLogit"],
                           n_samples=N, seed=0, progress=False, definitions="paper")
    assert paper.definitions == "paper" and paper.settings["definitions"] == "paper"
    differ = {metric for (method, metric, sample), value in _scores(paper).items()
              if abs(value - quantus[(method, metric, sample)]) > 1e-3}
    assert "RandomLogit" in differ  # 2-D windows instead of one 1-D window over the flattened map


def test_paper_needs_the_fast_engine_and_the_old_switch_is_refused(setting) -> None:
    model, dataset, target, _ = setting
    inputs = prepare_inputs(model, dataset, target, 2)
    with pytest.raises(ConfigError, match="definitions: paper is computed by the fast engine only"):
        evaluate(model, inputs, ["saliency"], ["Sparseness"], engine="quantus", definitions="paper", progress=False)
    with pytest.raises(ConfigError, match="evaluation.definitions must be one of quantus, paper"):
        evaluate(model, inputs, ["saliency"], ["Sparseness"], definitions="papers", progress=False)
    with pytest.raises(ConfigError, match="definitions: paper is computed by the fast engine only"):
        build_config(overrides=["evaluation.engine=quantus", "evaluation.definitions=paper"])
    with pytest.raises(ConfigError, match=r"quantus_batches was replaced by evaluation.definitions"):
        build_config(overrides=["evaluation.metrics=[IROF]", "evaluation.options={IROF: {quantus_batches: true}}"])
