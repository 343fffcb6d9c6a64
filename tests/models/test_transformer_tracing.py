"""The registry's transformers trace with torch.fx, so the engine reuses their clean prefix (interventions/fxsplit.py).

Their input checks are ``torch.fx.wrap`` leaves: the traced graph still refuses a
wrong input in one line, and runs the model's function exactly.
"""

from __future__ import annotations

import pytest
import torch

from explainnn.data import DatasetInfo
from explainnn.errors import DataError
from explainnn.interventions.fxsplit import GraphSplit
from explainnn.models import build_model

VOCAB = ("<pad>", "<unk>", "good", "bad", "film", "plot", "the", "a", "very", "not")


def _models() -> dict[str, tuple[torch.nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    text = DatasetInfo("text", "tokens", (12,), 2, ("negative", "positive"), "test", vocab=VOCAB, pad_index=0)
    images = DatasetInfo("images", "image", (1, 28, 28), 10, tuple(str(i) for i in range(10)), "test")
    tokens = torch.tensor([[0, 0, 0, 6, 4, 8, 2, 5, 7, 3, 2, 9], [0] * 8 + [7, 5, 3, 2]])
    return {
        "transformer": (build_model("transformer", text, d_model=16, num_heads=2).eval(), tokens),
        "transformer_cls": (build_model("transformer", text, d_model=16, num_heads=2, pooling="cls").eval(), tokens),
        "vit": (build_model("vit", images, patch_size=7, d_model=16, num_heads=2, num_layers=1).eval(),
                torch.rand(2, 1, 28, 28)),
    }


@pytest.mark.parametrize("name", ["transformer", "transformer_cls", "vit"])
def test_the_model_traces_and_its_graph_computes_the_model(name: str) -> None:
    model, x = _models()[name]
    split = GraphSplit.trace(model)
    assert split is not None
    with torch.no_grad():
        torch.testing.assert_close(split.graph_module(x), model(x), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["transformer", "vit"])
def test_the_traced_graph_still_refuses_a_wrong_input_in_one_line(name: str) -> None:
    model, x = _models()[name]
    split = GraphSplit.trace(model)
    assert split is not None
    wrong = x.float() if name == "transformer" else x[:, :, :14]
    with pytest.raises(DataError) as error:
        split.graph_module(wrong)
    assert "\n" not in str(error.value)
