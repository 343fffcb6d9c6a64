"""ResNet-18, CIFAR variant (He et al. 2016 with a 3x3 stem and no max-pool), and its registry entry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explainnn.data import DatasetInfo, load_dataset
from explainnn.errors import ConfigError
from explainnn.models import BasicBlock, ResNet18, build_model, model_parameters

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CIFAR = SHARED / "cifar10_images"
needs_cifar = pytest.mark.skipif(
    not all((CIFAR / split / "truck").is_dir() for split in ("train", "test")),
    reason=f"real CIFAR-10 JPEG folders not found in {CIFAR} (test fixtures beside the project)",
)
CIFAR_INFO = DatasetInfo("image_folder", "image", (3, 32, 32), 10, tuple("abcdefghij"), "test")


def test_the_paper_width_has_the_known_size_and_layout():
    model = ResNet18(3, 10)
    assert sum(p.numel() for p in model.parameters()) == 11_173_962  # the CIFAR ResNet-18's weights
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    main_path = [m for n, m in convs if "shortcut" not in n]
    assert len(main_path) + 1 == 18, "17 convolutions and one fully connected layer"
    stem = model.conv1
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1) and stem.padding == (1, 1)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in model.modules())
    assert all(m.bias is None for _, m in convs)
    assert [model.get_submodule(f"layer{s}.0.conv1").out_channels for s in range(1, 5)] == [64, 128, 256, 512]


def test_projection_shortcuts_exactly_where_the_shape_changes():
    model = ResNet18(3, 10, width=8)
    for stage in range(1, 5):
        for index in range(2):
            block = model.get_submodule(f"layer{stage}.{index}")
            assert isinstance(block, BasicBlock)
            if stage > 1 and index == 0:
                conv, norm = block.shortcut
                assert conv.kernel_size == (1, 1) and conv.stride == (2, 2) and isinstance(norm, nn.BatchNorm2d)
                assert (conv.in_channels, conv.out_channels) == (8 * 2 ** (stage - 2), 8 * 2 ** (stage - 1))
            else:
                assert isinstance(block.shortcut, nn.Identity)


def test_stages_see_32_16_8_and_4_pixels():
    model = ResNet18(3, 10, width=4).eval()
    shapes = {}
    for stage in range(1, 5):
        model.get_submodule(f"layer{stage}").register_forward_hook(
            lambda module, args, output, stage=stage: shapes.__setitem__(stage, tuple(output.shape[1:]))
        )
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert shapes == {1: (4, 32, 32), 2: (8, 16, 16), 3: (16, 8, 8), 4: (32, 4, 4)}


@pytest.mark.parametrize("stride, channels", [(1, 6), (2, 12)])
def test_basic_block_computes_the_residual_function(stride, channels):
    """out = relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x)), written out with functional ops."""
    torch.manual_seed(0)
    block = BasicBlock(6, channels, stride).eval()
    for norm in [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]:
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
        nn.init.uniform_(norm.weight, 0.5, 1.5)
        nn.init.uniform_(norm.bias, -0.5, 0.5)
    x = torch.randn(3, 6, 10, 10)

    def norm(y: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return (y - bn.running_mean[:, None, None]) * scale[:, None, None] + bn.bias[:, None, None]

    hidden = F.relu(norm(F.conv2d(x, block.conv1.weight, stride=stride, padding=1), block.bn1))
    residual = norm(F.conv2d(hidden, block.conv2.weight, padding=1), block.bn2)
    if stride == 1:
        shortcut = x
    else:
        conv, bn = block.shortcut
        shortcut = norm(F.conv2d(x, conv.weight, stride=2), bn)
    with torch.no_grad():
        assert torch.allclose(block(x), F.relu(residual + shortcut), atol=1e-5)


def test_registered_with_a_width_option():
    assert model_parameters("resnet18") == {"width": 64}
    model = build_model("resnet18", CIFAR_INFO, width=8)
    assert isinstance(model, ResNet18) and model.explainnn_spec == {"name": "resnet18", "params": {"width": 8}}
    grey = build_model("resnet18", DatasetInfo("digits", "image", (1, 20, 20), 4, tuple("abcd"), "test"), width=4)
    assert grey.conv1.in_channels == 1 and grey(torch.rand(2, 1, 20, 20)).shape == (2, 4)


@pytest.mark.parametrize(
    ("info", "params", "message"),
    [
        (DatasetInfo("mnist1d", "sequence", (40, 1), 10, tuple("abcdefghij"), "test"), {}, "needs image data"),
        (CIFAR_INFO, {"width": 0}, "width must be a positive integer"),
        (CIFAR_INFO, {"depth": 34}, "unknown parameter 'depth'"),
    ],
)
def test_bad_data_or_parameters_stop_with_one_line(info, params, message):
    with pytest.raises(ConfigError, match=message):
        build_model("resnet18", info, **params)


@needs_cifar
def test_a_narrow_resnet_fits_a_batch_of_real_cifar10_images():
    """Width 4, 20 real images (2 per class): 15 Adam steps lower the training loss to a fraction."""
    data = load_dataset("image_folder", SHARED, folder="cifar10_images", train_per_class=2, test_per_class=1)
    torch.manual_seed(0)
    model = build_model("resnet18", data.info, width=4).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(15):
        optimiser.zero_grad()
        loss = F.cross_entropy(model(data.x_train), data.y_train)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
