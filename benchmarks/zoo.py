"""Full-size definitions of two mobile vision families, for speed benchmarks (CIFAR-style 32x32 inputs).

Written after torchvision's definitions (whose compiled ops do not load with every
CPU build of PyTorch): ShuffleNetV2 x0.5 (Ma et al. 2018) and MobileNetV3-Small
(Howard et al. 2019), with the first strides set to 1 so 32x32 inputs keep a
spatial map. The small pattern tests use the tiny versions in
``tests/architectures.py``; these have the real widths and depths.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from architectures import ShuffleUnit  # noqa: E402 - the ShuffleNetV2 unit of the pattern tests


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2: stem conv, three stages of shuffle units (repeats 4, 8, 4), conv5, global pool, linear.

    ``widths`` ``(stem, stage2, stage3, stage4, conv5)``: x0.5 is ``(24, 48, 96, 192, 1024)``.
    """

    def __init__(self, n_classes: int = 10, widths: tuple[int, ...] = (24, 48, 96, 192, 1024),
                 repeats: tuple[int, ...] = (4, 8, 4)) -> None:
        super().__init__()
        stem, *stages, last = widths
        self.conv1 = nn.Sequential(nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        cin = stem
        for cout, count in zip(stages, repeats):
            blocks.append(ShuffleUnit(cin, cout, 2))
            blocks.extend(ShuffleUnit(cout, cout, 1) for _ in range(count - 1))
            cin = cout
        self.stages = nn.Sequential(*blocks)
        self.conv5 = nn.Sequential(nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU(inplace=True))
        self.fc = nn.Linear(last, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv5(self.stages(self.conv1(x))).mean((2, 3)))


class _SE(nn.Module):
    """MobileNetV3's squeeze-and-excitation: ``x * hardsigmoid(fc2(relu(fc1(pool(x)))))`` with 1x1 convs."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, reduced, 1), nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


def _divisible(v: float, divisor: int = 8) -> int:
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


class Bneck(nn.Module):
    """MobileNetV3 bottleneck: 1x1 expansion (skipped when it would not widen), depthwise kxk, optional SE,
    linear 1x1 projection, residual when the shapes match."""

    def __init__(self, cin: int, kernel: int, hidden: int, cout: int, se: bool, hardswish: bool, stride: int) -> None:
        super().__init__()
        act: type[nn.Module] = nn.Hardswish if hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if hidden != cin:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), act()]
        layers += [nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), act()]
        if se:
            layers.append(_SE(hidden, _divisible(hidden / 4)))
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.residual else out


SMALL = (  # input, kernel, expanded, output, SE, hardswish, stride (torchvision's mobilenet_v3_small; strides
    (16, 3, 16, 16, True, False, 1),  # of the stem and the first block set to 1 for 32x32 inputs)
    (16, 3, 72, 24, False, False, 2),
    (24, 3, 88, 24, False, False, 1),
    (24, 5, 96, 40, True, True, 2),
    (40, 5, 240, 40, True, True, 1),
    (40, 5, 240, 40, True, True, 1),
    (40, 5, 120, 48, True, True, 1),
    (48, 5, 144, 48, True, True, 1),
    (48, 5, 288, 96, True, True, 2),
    (96, 5, 576, 96, True, True, 1),
    (96, 5, 576, 96, True, True, 1),
)


class MobileNetV3Small(nn.Module):
    """MobileNetV3-Small: hardswish stem, 11 bottlenecks (``SMALL``), 1x1 conv to 576, pool, 1024 hidden, linear."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.blocks = nn.Sequential(*(Bneck(*row) for row in SMALL))
        self.last = nn.Sequential(nn.Conv2d(96, 576, 1, bias=False), nn.BatchNorm2d(576), nn.Hardswish())
        self.classifier = nn.Sequential(nn.Linear(576, 1024), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(1024, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.adaptive_avg_pool2d(self.last(self.blocks(self.stem(x))), 1).flatten(1))
