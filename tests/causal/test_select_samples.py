"""Discovery's sample selection: the first n inputs, in order, that are labelled and classified as the target."""

import pytest
import torch
from torch import nn

from explainnn.causal.discovery import indices_classified_as
from explainnn.errors import UserError


def _naive(model, inputs, target, n, labels=None):
    with torch.no_grad():
        predicted = model(inputs).argmax(-1)
    hit = predicted == target
    if labels is not None:
        hit &= labels == target
    return torch.nonzero(hit).flatten()[:n]


@pytest.mark.parametrize("with_labels", [True, False])
@pytest.mark.parametrize("n", [1, 2, 7, 40, 1000])
def test_indices_classified_as_matches_the_naive_scan(with_labels: bool, n: int) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3)).eval()
    inputs = torch.randn(300, 5)
    labels = torch.randint(0, 3, (300,)) if with_labels else None
    expected = _naive(model, inputs, 1, n, labels)
    if len(expected) < 2:
        with pytest.raises(UserError, match="at least 2"):
            indices_classified_as(model, inputs, 1, n, labels=labels, batch_size=16)
        return
    got = indices_classified_as(model, inputs, 1, n, labels=labels, batch_size=16)
    assert torch.equal(got, expected)
